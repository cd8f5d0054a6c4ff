// kmods/raft: the consensus core of the replicated log (a deterministic Raft node; no I/O).

export { RaftNode, type Entry, type HardState, type Message, type NodeId, type Persist, type RaftOptions, type Ready, type Role } from './raft.js'
export { RaftStorage } from './storage.js'
export { RaftArgumentError, RaftInvariantError, RaftNotLeaderError, RaftStorageError } from './errors.js'
