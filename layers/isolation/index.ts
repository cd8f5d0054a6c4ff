// The isolation layer: operator instances in worker threads or child processes, with memory limits, a watchdog and contained faults.

export {
  checkAnnotation,
  isolate,
  isolated,
  isolationOf,
  loadOperator,
  type IsolateOptions,
  type IsolationAnnotation,
  type IsolationMode,
  type JsonValue,
  type ModuleRef,
} from './annotations.js'
export { decodeBatch, encodeBatch, type BatchLayout, type EncodedBatch } from './batch-codec.js'
export {
  IsolatedOperatorError,
  IsolationAnnotationError,
  IsolationFaultError,
  IsolationModuleError,
  IsolationUnsupportedError,
  type FaultReason,
  type IsolatedMode,
} from './errors.js'
export { isolation, type FaultEventData, type IsolationInit, type IsolationLayer } from './layer.js'
