// The consensus core's error classes, each with a stable `code`.

import { LaminaError } from '../../kernel/index.js'

/** Thrown when a node is created with an option out of range; names the node and the option. */
export class RaftArgumentError extends LaminaError {
  readonly code = 'ERR_RAFT_ARGUMENT'
  override readonly name = 'RaftArgumentError'
  constructor(
    readonly node: string,
    readonly option: string,
    reason: string,
  ) {
    super(`raft node ${JSON.stringify(node)}: ${option} ${reason}`)
  }
}

/** Thrown by `propose` on a node that is not the leader; `leader` is the one it knows of, if any. Retryable there. */
export class RaftNotLeaderError extends LaminaError {
  readonly code = 'ERR_RAFT_NOT_LEADER'
  override readonly name = 'RaftNotLeaderError'
  readonly retryable = true
  constructor(
    readonly node: string,
    readonly leader: string | undefined,
  ) {
    super(`raft node ${JSON.stringify(node)} is not the leader${leader === undefined ? ' and knows of none yet' : `: ask ${JSON.stringify(leader)}`}`)
  }
}

/** A broken safety invariant (a leader overwriting a committed entry): a bug or a corrupted store, never normal operation. */
export class RaftInvariantError extends LaminaError {
  readonly code = 'ERR_RAFT_INVARIANT'
  override readonly name = 'RaftInvariantError'
  constructor(
    readonly node: string,
    details: string,
  ) {
    super(`raft node ${JSON.stringify(node)}: safety invariant broken: ${details}`)
  }
}

/** Thrown when a group's stored state cannot be read back (a gap in the log, a record that is not JSON): names the group. */
export class RaftStorageError extends LaminaError {
  readonly code = 'ERR_RAFT_STORAGE'
  override readonly name = 'RaftStorageError'
  constructor(
    readonly group: string,
    details: string,
    options?: { cause?: unknown },
  ) {
    super(`raft group ${JSON.stringify(group)}: stored state unreadable: ${details}`, options)
  }
}

/** A proposal's entry was replaced by another leader's before it committed: propose it again (to the new leader). */
export class RaftProposalLostError extends LaminaError {
  readonly code = 'ERR_RAFT_PROPOSAL_LOST'
  override readonly name = 'RaftProposalLostError'
  readonly retryable = true
  constructor(
    readonly group: string,
    readonly index: number,
  ) {
    super(`raft group ${JSON.stringify(group)}: the proposal at index ${index} was lost to a change of leader before it committed; propose it again`)
  }
}

/** A call on a member that was stopped. */
export class RaftStoppedError extends LaminaError {
  readonly code = 'ERR_RAFT_STOPPED'
  override readonly name = 'RaftStoppedError'
  constructor(readonly group: string) {
    super(`raft group ${JSON.stringify(group)}: this member was stopped`)
  }
}

/** A membership change refused for now: an earlier change is not committed yet, or a new leader has not committed an entry of its term. Retryable. */
export class RaftConfigChangeError extends LaminaError {
  readonly code = 'ERR_RAFT_CONFIG_CHANGE'
  override readonly name = 'RaftConfigChangeError'
  readonly retryable = true
  constructor(
    readonly node: string,
    reason: string,
  ) {
    super(`raft node ${JSON.stringify(node)}: cannot change the membership yet: ${reason}`)
  }
}
