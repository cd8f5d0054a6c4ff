// A transport peer in its own process, for cross-process tests and benchmarks of remote channels:
// it receives or sends on remote channels (kmods/transport under the kernel's adapter), or on raw
// libp2p streams for comparison, as its parent asks over IPC. Started by startTransportPeer
// (transport-peer-process.ts); it exits when its parent goes away.

// lamina/transport first: it loads the Promise.withResolvers polyfill before libp2p.
import {
  createPeerNode,
  createReceiverRegistry,
  openFrameSender,
  readPskFile,
  type PeerNode,
  type ReceiverRegistry,
  type StreamFrameReceiver,
  type StreamFrameSender,
} from '../kmods/transport/index.js'
import * as t from 'io-ts'
import type { ChannelInfo, LaminaError } from '../kernel/index.js'
import { remoteReceiver, remoteSender, type RemoteReceiver, type RemoteSender } from '../kernel/internal.js'

/** A command from the parent. */
export type TransportPeerCommand =
  | {
      readonly cmd: 'receive'
      readonly id: string
      readonly info: ChannelInfo
      readonly capacity: number
      readonly codec: 'string' | 'number' | 'unknown'
      readonly paused?: boolean
    }
  | { readonly cmd: 'consume'; readonly id: string; readonly batches?: number }
  | {
      readonly cmd: 'send'
      readonly id: string
      readonly target: string
      readonly info: ChannelInfo
      readonly count: number
      readonly recordBytes: number
      readonly batch: number
      readonly end?: boolean
    }
  | { readonly cmd: 'stats'; readonly id: string }
  /** Counts bytes arriving on raw `/lamina/raw-bench/1.0.0` streams (the transport's own limit, for comparison). */
  | { readonly cmd: 'raw-receive'; readonly id: string }
  /** Writes `count` records of `recordBytes` packed into writes of `writeBytes`, waiting for 'drain' when the stream is full. */
  | { readonly cmd: 'raw-send'; readonly id: string; readonly target: string; readonly count: number; readonly recordBytes: number; readonly writeBytes: number }
  | { readonly cmd: 'stop' }

/** A report to the parent. */
export type TransportPeerReport =
  | { readonly type: 'ready'; readonly peerId: string; readonly addresses: string[]; readonly pid: number }
  | { readonly type: 'received'; readonly id: string; readonly count: number; readonly ordered: boolean; readonly ms: number; readonly cpuMs: number; readonly heapPeakMb: number }
  | { readonly type: 'sent'; readonly id: string; readonly count: number; readonly ms: number; readonly cpuMs: number }
  | { readonly type: 'progress'; readonly id: string; readonly count: number }
  | { readonly type: 'broken'; readonly id: string; readonly code: string; readonly message: string }
  | { readonly type: 'stats'; readonly id: string; readonly stats: unknown; readonly heapUsedMb: number; readonly rssMb: number }
  | { readonly type: 'raw-received'; readonly id: string; readonly bytes: number; readonly ms: number; readonly cpuMs: number }

const [workdir, pskFile] = process.argv.slice(2)
if (workdir === undefined || pskFile === undefined) throw new Error('usage: transport-peer.ts <workdir> <psk file>')

const report = (message: TransportPeerReport): void => void process.send?.(message)
const node: PeerNode = await createPeerNode({ workdir, psk: await readPskFile(pskFile) })
const registry: ReceiverRegistry = createReceiverRegistry(node)
await registry.start()
const receivers = new Map<string, { receiver: RemoteReceiver; frames: StreamFrameReceiver; consume: (batches?: number) => void }>()
const senders = new Map<string, { sender: RemoteSender; frames: StreamFrameSender }>()

// No orphans: when the parent goes away, so does this peer.
process.on('disconnect', () => void shutdown())
process.on('SIGTERM', () => void shutdown())

process.on('message', (message: TransportPeerCommand) => {
  switch (message.cmd) {
    case 'receive':
      return receive(message)
    case 'consume':
      return receivers.get(message.id)?.consume(message.batches)
    case 'send':
      return void send(message)
    case 'stats': {
      const memory = process.memoryUsage()
      const receiving = receivers.get(message.id)
      const sending = senders.get(message.id)
      // The transport's counters (credit, bytes) and the channel's (queue, dead letters) together.
      const stats =
        receiving !== undefined
          ? { ...receiving.frames.stats(), ...receiving.receiver.stats() }
          : sending !== undefined
            ? { ...sending.frames.stats(), ...sending.sender.stats() }
            : undefined
      return report({ type: 'stats', id: message.id, stats, heapUsedMb: memory.heapUsed / 2 ** 20, rssMb: memory.rss / 2 ** 20 })
    }
    case 'raw-receive':
      return void rawReceive(message.id)
    case 'raw-send':
      return void rawSend(message)
    case 'stop':
      return void shutdown()
  }
})

/** The protocol of raw measurement streams. */
const RAW_PROTOCOL = '/lamina/raw-bench/1.0.0'

async function rawReceive(id: string): Promise<void> {
  await node.libp2p.handle(RAW_PROTOCOL, (stream) => {
    let bytes = 0
    let started = 0
    let cpu = process.cpuUsage()
    stream.addEventListener('message', (event) => {
      if (bytes === 0) {
        started = performance.now()
        cpu = process.cpuUsage()
      }
      bytes += event.data.byteLength
    })
    stream.addEventListener('remoteCloseWrite', () => {
      report({ type: 'raw-received', id, bytes, ms: performance.now() - started, cpuMs: cpuMsSince(cpu) })
      stream.close().catch(() => undefined)
    })
  })
  report({ type: 'stats', id, stats: 'raw receiver ready', heapUsedMb: 0, rssMb: 0 })
}

async function rawSend(command: Extract<TransportPeerCommand, { cmd: 'raw-send' }>): Promise<void> {
  const stream = await node.dialProtocol(command.target, RAW_PROTOCOL)
  const pad = 'x'.repeat(Math.max(0, command.recordBytes - 12))
  const perWrite = Math.max(1, Math.floor(command.writeBytes / command.recordBytes))
  const started = performance.now()
  const cpu = process.cpuUsage()
  let i = 0
  while (i < command.count) {
    // The same records as the channel sends, packed into one buffer per write.
    const n = Math.min(perWrite, command.count - i)
    const buffer = Buffer.allocUnsafe(n * command.recordBytes)
    for (let k = 0; k < n; k++, i++) buffer.write(String(i).padStart(12, '0') + pad, k * command.recordBytes, 'latin1')
    if (!stream.send(buffer)) await new Promise<void>((resolve) => stream.addEventListener('drain', () => resolve(), { once: true }))
  }
  await stream.close()
  report({ type: 'sent', id: command.id, count: command.count, ms: performance.now() - started, cpuMs: cpuMsSince(cpu) })
}

function receive(command: Extract<TransportPeerCommand, { cmd: 'receive' }>): void {
  const codec = command.codec === 'string' ? t.string : command.codec === 'number' ? t.number : t.unknown
  const frames = registry.receive({ info: command.info })
  const receiver = remoteReceiver(frames, { info: command.info, capacity: command.capacity, codec, deadLetter: () => undefined })
  // `allowance`: batches the parent lets this consumer take (Infinity when not paused).
  let allowance = command.paused === true ? 0 : Infinity
  let count = 0
  let ordered = true
  let last = -1
  let started = 0
  let cpu = process.cpuUsage()
  let heapPeak = process.memoryUsage().heapUsed
  const drain = (): void => {
    try {
      while (allowance > 0) {
        const batch = receiver.take()
        if (batch === undefined) return
        if (batch === 'end') {
          report({ type: 'received', id: command.id, count, ordered, ms: performance.now() - started, cpuMs: cpuMsSince(cpu), heapPeakMb: heapPeak / 2 ** 20 })
          return
        }
        if (count === 0) {
          started = performance.now()
          cpu = process.cpuUsage()
        }
        allowance--
        // Records carry their sequence number first: check each batch's ends (a batch is one frame, decoded in order).
        const first = sequenceOf(batch.values[0])
        const lastOfBatch = sequenceOf(batch.values[batch.values.length - 1])
        if (first !== last + 1 || lastOfBatch !== last + batch.values.length) ordered = false
        last = lastOfBatch
        count += batch.values.length
        if ((count & 0xffff) < batch.values.length) {
          heapPeak = Math.max(heapPeak, process.memoryUsage().heapUsed)
          report({ type: 'progress', id: command.id, count })
        }
      }
    } catch (error) {
      report({ type: 'broken', id: command.id, code: (error as LaminaError).code, message: (error as Error).message })
    }
  }
  receiver.onReadable(drain)
  receivers.set(command.id, {
    receiver,
    frames,
    consume: (batches) => {
      allowance = batches === undefined ? Infinity : allowance + batches
      drain()
    },
  })
}

/** Milliseconds of CPU (user + system) this process used since `start`. */
function cpuMsSince(start: NodeJS.CpuUsage): number {
  const used = process.cpuUsage(start)
  return (used.user + used.system) / 1000
}

function sequenceOf(value: unknown): number {
  return typeof value === 'number' ? value : Number.parseInt((value as string).slice(0, 12), 10)
}

async function send(command: Extract<TransportPeerCommand, { cmd: 'send' }>): Promise<void> {
  const frames = openFrameSender(node, command.target, command.info)
  const sender = remoteSender(frames, { info: command.info, deadLetter: () => undefined })
  senders.set(command.id, { sender, frames })
  const pad = 'x'.repeat(Math.max(0, command.recordBytes - 12))
  const started = performance.now()
  const cpu = process.cpuUsage()
  try {
    let i = 0
    while (i < command.count) {
      if (!sender.ready()) await sender.whenReady()
      const values: string[] = []
      for (let k = 0; k < command.batch && i < command.count; k++, i++) values.push(String(i).padStart(12, '0') + pad)
      sender.send({ values })
    }
    if (command.end !== false) {
      sender.end()
      await sender.done
    }
    report({ type: 'sent', id: command.id, count: command.count, ms: performance.now() - started, cpuMs: cpuMsSince(cpu) })
  } catch (error) {
    report({ type: 'broken', id: command.id, code: (error as LaminaError).code, message: (error as Error).message })
  }
}

let stopping: Promise<void> | undefined
function shutdown(): Promise<void> {
  stopping ??= (async () => {
    await registry.stop()
    await node.stop()
    process.exit(0)
  })()
  return stopping
}

report({ type: 'ready', peerId: node.peerId, addresses: node.multiaddrs(), pid: process.pid })
