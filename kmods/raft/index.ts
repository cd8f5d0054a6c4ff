// kmods/raft: the consensus core of the replicated log (a deterministic Raft node; no I/O).

export { RaftNode, type Entry, type HardState, type Message, type NodeId, type Persist, type RaftOptions, type Ready, type Role } from './raft.js'
export { RaftArgumentError, RaftInvariantError, RaftNotLeaderError } from './errors.js'
