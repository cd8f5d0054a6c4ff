// Errors of the cluster runtime: launching, supervising and joining peers, and running jobs on them.

import { LaminaError } from '../../kernel/index.js'

/** Thrown when a program module cannot be imported or does not build a program. */
export class ProgramModuleError extends LaminaError {
  readonly code = 'ERR_PROGRAM_MODULE'
  override readonly name = 'ProgramModuleError'
  constructor(
    readonly module: string,
    reason: string,
    cause?: unknown,
  ) {
    super(`program module ${module} ${reason}`, { cause })
  }
}

/** Thrown when a job stream carries something that is not the job protocol, or ends too early. */
export class JobProtocolError extends LaminaError {
  readonly code = 'ERR_JOB_PROTOCOL'
  override readonly name = 'JobProtocolError'
  constructor(
    readonly peer: string,
    reason: string,
    cause?: unknown,
  ) {
    super(`job protocol with peer ${peer}: ${reason}`, { cause })
  }
}

/** Thrown when a peer refuses or fails its share of a job. */
export class RemoteJobError extends LaminaError {
  readonly code = 'ERR_REMOTE_JOB'
  override readonly name = 'RemoteJobError'
  constructor(
    readonly peer: string,
    readonly remoteCode: string,
    message: string,
  ) {
    super(`peer ${peer}: [${remoteCode}] ${message}`)
  }
}

/** Thrown when peers do not all show up in membership in time. */
export class ClusterJoinError extends LaminaError {
  readonly code = 'ERR_CLUSTER_JOIN'
  override readonly name = 'ClusterJoinError'
  constructor(
    readonly missing: readonly string[],
    timeoutMs: number,
  ) {
    super(`peers not seen alive within ${timeoutMs} ms: ${missing.join(', ')}`)
  }
}

/** Thrown when a control call (JobCluster.call) to another peer's share of a job fails. */
export class ControlCallError extends LaminaError {
  readonly code = 'ERR_CONTROL_CALL'
  override readonly name = 'ControlCallError'
  constructor(
    readonly peer: string,
    readonly kind: string,
    reason: string,
    readonly remoteCode?: string,
  ) {
    super(`control call ${kind} to peer ${peer}: ${reason}`)
  }
}

/** Thrown when a cluster job cannot recover from a failure: no recovery layer, attempts used up, or no peer left. */
export class RecoveryFailedError extends LaminaError {
  readonly code = 'ERR_RECOVERY_FAILED'
  override readonly name = 'RecoveryFailedError'
  constructor(
    readonly job: string,
    readonly attempts: number,
    reason: string,
    cause: unknown,
  ) {
    super(`job ${job} cannot recover after ${attempts} attempt(s): ${reason}${cause instanceof Error ? `; last failure: ${cause.message}` : ''}`, { cause })
  }
}

/** Thrown when a plan hook changed a program in a way that cannot travel to other peers (operators or links added or removed, annotations that are not plain data). */
export class UnshippablePlanError extends LaminaError {
  readonly code = 'ERR_PLAN_UNSHIPPABLE'
  override readonly name = 'UnshippablePlanError'
  constructor(
    readonly program: string,
    reason: string,
  ) {
    super(`the plan of ${program} cannot be shipped to other peers: ${reason} (plan hooks run once, on the submitter, and may change annotations only)`)
  }
}

/** Thrown when the program, built on a peer from the same code and arguments, has other operators than the submitter's plan names. */
export class PlanMismatchError extends LaminaError {
  readonly code = 'ERR_PLAN_MISMATCH'
  override readonly name = 'PlanMismatchError'
  constructor(
    readonly program: string,
    readonly peer: string,
    reason: string,
  ) {
    super(
      `peer ${peer} built a different ${program} than the submitter planned: ${reason} (the code is the same everywhere, by hash: does the program build its operators from something that differs by host, such as files, the environment or ProgramEnvironment?)`,
    )
  }
}

/**
 * A peer running a share of the job stopped answering: membership declared it dead (no heartbeat
 * for `silentMs`), as for a frozen process, a hung host or a pulled cable, whose TCP streams may
 * stay open for minutes. The attempt fails as if the peer's stream had broken, and a job with
 * recovery runs again on the survivors.
 */
export class PeerDeadError extends LaminaError {
  readonly code = 'ERR_PEER_DEAD'
  constructor(
    readonly peer: string,
    readonly silentMs: number,
  ) {
    super(`peer ${peer} was declared dead by membership: no heartbeat for ${silentMs} ms`)
  }
}

/**
 * Thrown on the submitter when a peer refused its share before running anything: the submitter
 * is not authorized there (`remoteCode` ERR_NOT_AUTHORIZED), or the peer cannot load the program.
 * A refusal is final for the job: recovery does not try again, since another attempt would be
 * refused the same way.
 */
export class SubmissionRefusedError extends LaminaError {
  readonly code = 'ERR_SUBMISSION_REFUSED'
  constructor(
    readonly peer: string,
    readonly remoteCode: string,
    readonly reason: string,
  ) {
    super(`peer ${peer} refused its share: [${remoteCode}] ${reason}`)
  }
}

/** What a peer answers a submitter it does not authorize (the `refused` answer's code). */
export const NOT_AUTHORIZED = 'ERR_NOT_AUTHORIZED'

/** Thrown on the submitter when a program module cannot be bundled for shipping (esbuild's messages, with file:line), or on a peer when a bundle cannot be linked. */
export class ProgramPackError extends LaminaError {
  readonly code = 'ERR_PROGRAM_PACK'
  override readonly name = 'ProgramPackError'
  constructor(
    readonly module: string,
    reason: string,
    cause?: unknown,
  ) {
    super(`program module ${module} cannot be shipped: ${reason}`, { cause })
  }
}

/** Thrown on a peer when the code a submission names is not what it received: a malformed hash, or bytes with another hash. The peer runs nothing. */
export class CodeHashError extends LaminaError {
  readonly code = 'ERR_CODE_HASH'
  override readonly name = 'CodeHashError'
  constructor(
    readonly peer: string,
    readonly hash: string,
    reason: string,
  ) {
    super(`peer ${peer}: the code hash ${JSON.stringify(hash.slice(0, 80))} ${reason}`)
  }
}

/** A package a program imports that a peer lacks or has at another version. */
export interface DependencyProblem {
  readonly name: string
  /** The version the submitter bundled against. */
  readonly wanted: string
  /** The version this peer has; undefined when it has none. */
  readonly found: string | undefined
}

/**
 * Thrown on a peer (and, in the refusal, on the submitter) when the program imports lamina or an
 * npm package that the peer does not have at the version the submitter bundled against. Versions
 * must match exactly; a peer looks for packages in `<workdir>/node_modules`, then in lamina's own.
 */
export class DependencyMismatchError extends LaminaError {
  readonly code = 'ERR_DEPENDENCY_MISMATCH'
  override readonly name = 'DependencyMismatchError'
  constructor(
    readonly peer: string,
    readonly module: string,
    readonly problems: readonly DependencyProblem[],
  ) {
    super(
      `peer ${peer} cannot run ${module}: ${problems
        .map((p) => (p.found === undefined ? `${p.name} ${p.wanted} is not installed here` : `${p.name} is ${p.found} here, the program was bundled against ${p.wanted}`))
        .join('; ')}`,
    )
  }
}

/** A request names a job this peer does not know: no share of it runs here, or (admin) no job by that id is coordinated here. */
export class UnknownJobError extends LaminaError {
  readonly code = 'ERR_UNKNOWN_JOB'
  override readonly name = 'UnknownJobError'
  constructor(
    readonly job: string,
    reason = 'no share of it runs on this peer',
  ) {
    super(`job ${job}: ${reason}`)
  }
}

/** Thrown on a peer when another peer asks for something only the peers allowed to submit may do (submit, cancel, rescale, savepoint). */
export class NotAuthorizedError extends LaminaError {
  readonly code = NOT_AUTHORIZED
  override readonly name = 'NotAuthorizedError'
  constructor(
    readonly peer: string,
    readonly refusedBy: string,
    readonly action: string,
  ) {
    super(`${peer} may not ${action} on ${refusedBy}: it is not one of the peers allowed to submit`)
  }
}

/** Thrown by the admin client when a peer cannot be reached, refuses a command, or answers something that is not the admin protocol. */
export class AdminCallError extends LaminaError {
  readonly code = 'ERR_ADMIN_CALL'
  override readonly name = 'AdminCallError'
  constructor(
    readonly peer: string,
    readonly command: string,
    reason: string,
    /** The code the peer answered with, when it answered (ERR_NOT_AUTHORIZED, ERR_UNKNOWN_JOB…). */
    readonly remoteCode?: string,
  ) {
    super(`${command} on ${peer}: ${reason}`)
  }
}

/** Thrown by the admin client when no cluster address it was given answers. */
export class ClusterUnreachableError extends LaminaError {
  readonly code = 'ERR_CLUSTER_UNREACHABLE'
  override readonly name = 'ClusterUnreachableError'
  constructor(
    /** The client's peer id: the peers' --allow file must list it. */
    readonly client: string,
    readonly failures: readonly { readonly address: string; readonly reason: string }[],
  ) {
    super(
      failures.length === 0
        ? 'no cluster address given (--cluster ADDR, or "cluster" in the config file)'
        : `no member of the cluster answers this client (${client}): ${failures.map((f) => `${f.address}: ${f.reason}`).join('; ')}`,
    )
  }
}

/**
 * A failover job's coordinator lost its role (its lease could not be kept alive, or another peer
 * holds the role with a newer fencing token): it stops coordinating, and its orders are refused.
 */
export class CoordinatorFencedError extends LaminaError {
  readonly code = 'ERR_COORDINATOR_FENCED'
  override readonly name = 'CoordinatorFencedError'
  constructor(
    readonly job: string,
    readonly peer: string,
    readonly token: number,
    reason: string,
  ) {
    super(`job ${job}: peer ${peer} no longer coordinates it (fencing token ${token}): ${reason}`)
  }
}

/** A failover job's record in the KV store is missing or does not have the record's shape. */
export class JobRecordError extends LaminaError {
  readonly code = 'ERR_JOB_RECORD'
  override readonly name = 'JobRecordError'
  constructor(
    readonly job: string,
    readonly key: string,
    reason: string,
  ) {
    super(`job ${job}: its record at ${key} ${reason}`)
  }
}
