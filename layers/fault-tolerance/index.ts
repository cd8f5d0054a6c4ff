// The fault tolerance layer: supervision of operator instances, retries with backoff, and
// exactly-once recovery from aligned checkpoints when a peer dies. Built on the public layer API.

export { checkpoints, guaranteeOf, CHECKPOINT_MARKER, CheckpointMissingError, CheckpointProtocolError, type CheckpointOptions, type Guarantee } from './checkpoint.js'
