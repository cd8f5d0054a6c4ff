// The frame-channel compliance suite over libp2p streams: two real peer nodes on loopback, a fresh channel stream per case.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll } from 'vitest'
import type { ChannelInfo, Link } from '../../kernel/index.js'
import { describeFrameChannelCompliance } from '../../testing/index.js'
import { memoryLogger } from './logger.js'
import { createPeerNode, type PeerNode } from './node.js'
import { generatePsk } from './psk.js'
import { createReceiverRegistry, type ReceiverRegistry } from './remote-receiver.js'
import { openFrameSender } from './remote-sender.js'

let dir: string
let producer: PeerNode
let consumer: PeerNode
let receivers: ReceiverRegistry

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'lamina-frame-compliance-'))
  const psk = generatePsk()
  const node = (name: string): Promise<PeerNode> => createPeerNode({ workdir: join(dir, name), psk, logger: memoryLogger() })
  ;[producer, consumer] = await Promise.all([node('producer'), node('consumer')])
  receivers = createReceiverRegistry(consumer)
  await receivers.start()
})

afterAll(async () => {
  await receivers?.stop()
  await Promise.all([producer?.stop(), consumer?.stop()])
  rmSync(dir, { recursive: true, force: true })
})

/** A channel of its own per case: the registry matches the stream to its receiver by job and instances. */
function channelInfo(job: string): ChannelInfo {
  const link: Link = { from: { operator: 'source', port: 'out' }, to: { operator: 'sink', port: 'in' }, partitioning: undefined, capacity: undefined, id: 'source.out -> sink.in' }
  return { job, link, from: { operator: 'source', port: 'out', instance: 0 }, to: { operator: 'sink', port: 'in', instance: 0 } }
}

describeFrameChannelCompliance('libp2p streams', ({ id }) => {
  const info = channelInfo(id)
  const receiver = receivers.receive({ info })
  const sender = openFrameSender(producer, consumer.multiaddrs()[0]!, info)
  return { sender, receiver, producerPeer: producer.peerId, consumerPeer: consumer.peerId }
})
