// Lamina's testing kit (`lamina/testing`): an in-memory transport, a fake channel, the cluster fixture, waiting helpers, the layer compliance suite, and test programs and layers.

export * from './errors.js'
export { alive, until, waitFor } from './processes.js'
export { createNetnsHosts, netnsUnavailable, sh, type NetnsHost, type NetnsHosts } from './netns.js'
export {
  memoryFrameChannel,
  type MemoryFrameChannel,
  type MemoryFrameChannelOptions,
  type MemoryFrameReceiver,
  type MemoryFrameSender,
  type MemoryReceiverStats,
  type MemorySenderStats,
} from './memory-transport.js'
export { runOnTwoPeers, PEERS, type PeerId, type TwoPeersOptions, type TwoPeersResult } from './two-peers.js'
export { FakeChannel, channelInfo, type FakeChannelOptions, type SentItem } from './fake-channel.js'
export { startTestCluster, useCluster, untilMembersAlive, type ClusterFixture, type TestCluster, type TestClusterOptions } from './cluster.js'
export {
  describeLayerCompliance,
  COMPLIANCE_MARKER,
  type ComplianceContext,
  type ComplianceOperatorSource,
  type LayerComplianceOptions,
  type LayerFactory,
} from './layer-compliance.js'
export {
  describeFrameChannelCompliance,
  type FrameChannelComplianceOptions,
  type FrameChannelContext,
  type FrameChannelFactory,
  type FrameChannelPair,
} from './frame-channel-compliance.js'
export {
  COMPLIANCE_MODULE,
  complianceProgram,
  expectedTotals,
  relay,
  tally,
  KEYS,
  type ComplianceOperator,
  type ComplianceOutput,
  type KeyTotals,
  type SeenNumber,
  type TaggedNumber,
} from './compliance-program.js'
export { restoreOffsets } from './restoring.js'
/** A keyed aggregation over replayable events, for tests and benches of fault tolerance and elasticity: `keyedTotals.MODULE` is its path, `keyedTotals.reference(n)` what a fault-free run emits. */
export * as keyedTotals from './keyed-totals.js'
export * as failoverJob from './failover-job.js'
export { startTransportPeer, type TransportPeerProcess } from './transport-peer-process.js'
export type { TransportPeerCommand, TransportPeerReport } from './transport-peer.js'
