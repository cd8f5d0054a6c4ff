// services/kv: the distributed key-value store (issue 13): shards replicated by Raft groups
// (kmods/raft), hosted on every peer, started by `startKv(cluster, { shards, replicas })`.

export { KvState, KV_LIMITS, type KvCommand, type KvEntry, type KvEvent, type KvLease as KvLeaseState, type KvResult, type KvScan } from './state.js'
export { campaign, claim, Fence, holderOf, isHolder, roleKey, roleVacated, type CampaignOptions, type Leadership } from './election.js'
export {
  KvCommandError,
  KvCompactedError,
  KvFencedError,
  KvLeaseNotFoundError,
  KvLimitError,
  KvNotHereError,
  KvProtocolError,
  KvRemoteError,
  KvUnavailableError,
} from './errors.js'
export { startKvReplica, type KvConsistency, type KvReplica, type KvReplicaOptions, type KvReplicaWatch } from './replica.js'
export { startKvHost, type KvHost, type KvHostOptions } from './host.js'
export { KvClient, type KvClientOptions, type KvLease, type KvShardLayout, type KvWatchEvent, type KvWatchOptions } from './client.js'
export { KV_PROTOCOL, MAX_KV_FRAME_BYTES, type KvShardStatus } from './protocol.js'
export { startKv, type Kv, type KvCluster, type StartKvOptions } from './service.js'
export { kvLookup, kvWrite, kvLayoutArg, parseKvLayout, type KvLookupOptions, type KvWriteOptions } from './operators.js'
