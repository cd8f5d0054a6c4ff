// The fault tolerance layer: supervision of operator instances, retries with backoff, and
// exactly-once recovery from aligned checkpoints when a peer dies. Built on the public layer API.

export { checkpoints, guaranteeOf, CHECKPOINT_MARKER, CheckpointMissingError, CheckpointProtocolError, RescaleStateError, type CheckpointOptions, type Guarantee } from './checkpoint.js'
export {
  supervision,
  supervise,
  SupervisionEscalatedError,
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
  seededRandom,
  RetryBudget,
  RetriesExhaustedError,
  RetryBudgetExceededError,
  registerRetryEvents,
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
