// The deployment a kernel run gets on a peer: where each instance runs, channels to other peers
// through the remote-channel adapter, control calls to the job's other shares, members' addresses.

import type { Stream } from '@libp2p/interface'
import type { ChannelReceiver, ChannelSender, RescaleReport, RescaleRequest } from '../../kernel/index.js'
import type { Deployment, RemoteEnd } from '../../kernel/internal.js'
import { remoteReceiver, remoteSender } from '../../kernel/internal.js'
import type { PeerNode } from '../../kmods/transport/node.js'
import type { ReceiverRegistry } from '../../kmods/transport/remote-receiver.js'
import { openFrameSender } from '../../kmods/transport/remote-sender.js'
import { CONTROL_PROTOCOL, callOver } from './control-protocol.js'
import { instanceKey, type Plan } from './placement.js'

/** Who the peer's members are: a peer learns them from membership (gossip) or is told them. */
export interface Members {
  /** Live members (this peer included), with addresses to reach them and their tags. */
  list(): readonly { readonly peerId: string; readonly multiaddrs: readonly string[]; readonly tags?: Readonly<Record<string, string>> }[]
}

/** Where members are reached: the addresses membership sees them at, and the ones a job was told. */
export class AddressBook {
  constructor(private readonly members: Members) {}

  /** The address to dial `peerId` at: where the job was told it is, else where membership sees it. */
  addressOf(peerId: string, addresses?: { readonly [peer: string]: readonly string[] }): string {
    const member = this.members.list().find((m) => m.peerId === peerId)
    return addresses?.[peerId]?.[0] ?? member?.multiaddrs[0] ?? peerId
  }

  /**
   * Every address known for `peerId`, freshest first: where membership sees it alive now (a
   * restarted peer's new address arrives by gossip), then where the attempt was told it was.
   */
  addressesOf(peerId: string, addresses?: { readonly [peer: string]: readonly string[] }): string[] {
    const member = this.members.list().find((m) => m.peerId === peerId)
    const known = [member?.multiaddrs[0], addresses?.[peerId]?.[0]].filter((a): a is string => a !== undefined)
    return known.length === 0 ? [peerId] : [...new Set(known)]
  }

  /** Every live member's addresses, by peer id: what a submission tells the shares. */
  addresses(): Record<string, string[]> {
    return Object.fromEntries(this.members.list().map((m) => [m.peerId, [...m.multiaddrs]]))
  }
}

/** What a deployment needs of its peer. */
export interface DeploymentComponents {
  /** The node channels and control calls leave from. */
  readonly node: PeerNode
  /** Where channels from other peers arrive. */
  readonly registry: ReceiverRegistry
  readonly addressBook: AddressBook
  /** The work directory layers keep durable state in. */
  readonly workdir: string
}

/** One share's place in its job (one attempt of it). */
export interface ShareLayout {
  /** The job id (an attempt's id after the first). */
  readonly job: string
  readonly plan: Plan
  readonly submitter: string
  /** Where the submitter was told each peer is. */
  readonly addresses: { readonly [peer: string]: readonly string[] }
  /** Aborts every channel and control call of the share. */
  readonly signal: AbortSignal
  /** The peers running a share of the attempt. */
  readonly members: readonly string[]
  /** How a layer reshapes the job (the submitter's share only). */
  readonly rescale?: (change: RescaleRequest) => Promise<RescaleReport>
  /** How a complete checkpoint is recorded for a successor (a failover job's coordinator only). */
  readonly recordCheckpoint?: (checkpoint: { readonly id: number; readonly record: unknown }) => Promise<void>
}

/** The deployment of one share of a job on this peer: what `kernel.run` gets. */
export function deployment(components: DeploymentComponents, share: ShareLayout): Deployment {
  const { node, registry, addressBook, workdir } = components
  const { job, plan, submitter, addresses, signal, members, rescale, recordCheckpoint } = share
  const peers = [...new Set([submitter, ...Object.values(plan), ...members])]
  return {
    self: node.peerId,
    submitter,
    ...(rescale === undefined ? {} : { rescale }),
    ...(recordCheckpoint === undefined ? {} : { recordCheckpoint }),
    workDir: workdir,
    peers: () => peers,
    call: (peer, kind, payload, options) =>
      callPeer(node, job, peer, addressBook.addressesOf(peer, addresses), kind, payload, {
        ...options,
        signal: options?.signal === undefined ? signal : AbortSignal.any([signal, options.signal]),
      }),
    // Fused operators are named `a+b…`; the kernel fuses only co-located operators, so the first part decides.
    peerOf: (operator, instance) => plan[instanceKey(operator, instance)] ?? plan[instanceKey(operator.split('+')[0]!, instance)] ?? submitter,
    // The kernel's typed halves over the transport's frame channels: each side gets its own half.
    connect: ((end: RemoteEnd): ChannelSender | ChannelReceiver =>
      end.side === 'sender'
        ? remoteSender(openFrameSender(node, addressBook.addressOf(end.peer, addresses), end.info, { signal }), end)
        : remoteReceiver(registry.receive({ info: end.info, expectPeer: end.peer }), end)) as Deployment['connect'],
  }
}

/** Calls a control handler of `job`'s share on `peer` over the control protocol. */
async function callPeer(
  node: PeerNode,
  job: string,
  peer: string,
  addresses: readonly string[],
  kind: string,
  payload: unknown,
  options?: { readonly signal?: AbortSignal; readonly timeoutMs?: number },
): Promise<unknown> {
  const signals = [AbortSignal.timeout(options?.timeoutMs ?? 30_000), ...(options?.signal === undefined ? [] : [options.signal])]
  const signal = AbortSignal.any(signals)
  // A peer that restarted listens elsewhere: when one known address refuses, try the next.
  let stream: Stream | undefined
  for (let i = 0; stream === undefined; i++) {
    try {
      stream = await node.dialProtocol(addresses[i]!, CONTROL_PROTOCOL, { signal, maxOutboundStreams: 1024 })
    } catch (error) {
      if (i + 1 >= addresses.length || signal.aborted) throw error
    }
  }
  try {
    const value = await callOver(stream, peer, job, kind, payload, signal)
    await stream.close().catch(() => stream.abort(new Error('control stream closed')))
    return value
  } catch (error) {
    stream.abort(error instanceof Error ? error : new Error(String(error)))
    throw error
  }
}
