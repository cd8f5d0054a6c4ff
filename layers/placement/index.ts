// The placement layer: annotations that decide where operator instances run, a deterministic solver, explanations and re-placement.

export { avoid, colocate, pin, placementOf, requireTags, resources, spread, type PlacementAnnotation } from './annotations.js'
export { PlacementAnnotationError, PlacementInputError, PlacementUnsatisfiableError, type ConstraintRef, type RejectedPeer } from './errors.js'
export { PLACEMENT_EVENTS, placement, type PlacementIgnored, type PlacementInit } from './layer.js'
export { decodePeers } from './peers.js'
export {
  applyPlan,
  assignmentOf,
  explain,
  planOf,
  type ExplanationEntry,
  type MoveReason,
  type PlacedInstance,
  type PlacementExplanation,
  type PlacementPlan,
  type PlacementRecord,
  type PlacementRule,
} from './plan.js'
export { replace, type Move, type Replacement, type ReplaceOptions } from './replace.js'
export { CAPACITY_TAG_PREFIX, NAME_TAG, solve, type PlacementOptions, type SolveContext } from './solver.js'
