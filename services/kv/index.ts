// services/kv: the distributed key-value store (issue 13). So far: its replicated state machine.

export { KvState, KV_LIMITS, type KvCommand, type KvEntry, type KvEvent, type KvResult, type KvScan } from './state.js'
export { KvCommandError, KvCompactedError, KvLimitError } from './errors.js'
export { startKvReplica, type KvConsistency, type KvReplica, type KvReplicaOptions } from './replica.js'
