// kmods/raft: the replicated log's consensus: a deterministic Raft node, its SQLite storage, and a group over libp2p.

export { RaftNode, type Entry, type HardState, type Message, type NodeId, type Persist, type RaftOptions, type Ready, type ReadState, type Role, type Snapshot } from './raft.js'
export { RaftStorage } from './storage.js'
export { startRaftGroup, RAFT_PROTOCOL, MAX_RAFT_FRAME_BYTES, type RaftGroup, type RaftGroupOptions } from './group.js'
export { RaftArgumentError, RaftConfigChangeError, RaftInvariantError, RaftNotLeaderError, RaftProposalLostError, RaftStoppedError, RaftStorageError } from './errors.js'
