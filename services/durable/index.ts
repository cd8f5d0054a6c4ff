// Durable requests (`lamina/durable`): calls to work done elsewhere, journaled in the cluster's KV
// store, retried with backoff, redelivered when a worker dies, and dead letters when they fail.

export * from './errors.js'
export {
  durable,
  Durable,
  requestKey,
  RequestRecordCodec,
  type CallOptions,
  type FinalState,
  type RequestContext,
  type RequestHandler,
  type RequestRecord,
  type RequestRetry,
  type ServeOptions,
  type Worker,
} from './durable.js'
export { workflowRequest, workflowSteps, type WorkflowContext } from './workflow.js'
export { RequestHandlerCrashedError, type IsolatedHandler } from './isolated.js'
