// The fault tolerance layer: supervision of operator instances, retries with backoff, and
// exactly-once recovery from aligned checkpoints when a peer dies. Built on the public layer API.

export { checkpoints, guaranteeOf, type CheckpointOptions, type Guarantee } from './checkpoint.js'
export { CHECKPOINT_EVENTS, CHECKPOINT_MARKER } from './protocol.js'
export { SAVEPOINTS, seededRandom, type Savepoints } from '../../kernel/index.js'
export {
  supervision,
  supervise,
  type SupervisionInit,
  type SupervisionLayer,
  type SupervisionAnnotation,
  type SupervisorPolicy,
  type SupervisionStrategy,
  type RestartState,
  type InstanceRef,
  type RestartEventData,
  type EscalateEventData,
} from './supervision.js'
export {
  retry,
  retrying,
  backoffDelay,
  RetryBudget,
  registerRetryEvents,
  RETRIED,
  RETRY_SYSCALL,
  type Jitter,
  type RetryPolicy,
  type RetryBudgetInit,
  type RetryBudgetStats,
  type RetryEvent,
  type RetryContext,
  type RetryOptions,
  type RetryStats,
  type RetryingHandler,
} from './retry.js'
export { CheckpointMissingError, CheckpointProtocolError, RescaleStateError, RetriesExhaustedError, RetryBudgetExceededError, SupervisionEscalatedError } from './errors.js'
