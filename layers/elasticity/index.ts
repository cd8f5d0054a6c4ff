// The elasticity layer: rescale running keyed operators by key group, by hand or by policy.

export { elasticity, inputLoad, ELASTICITY_EVENTS, RESCALE_CONTROL, type AutoscalePolicy, type ElasticityOptions, type ScaleDecision } from './elasticity.js'
export { RescaleError } from './errors.js'
