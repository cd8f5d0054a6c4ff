// The layer compliance suite on the elasticity layer, stacked with the checkpoints it requires.
import { describeLayerCompliance } from 'lamina/testing'
import { checkpoints } from '../fault-tolerance/index.js'
import { elasticity } from './index.js'

describeLayerCompliance('elasticity', ({ dir }) => [checkpoints({ dir, intervalMs: 20 }), elasticity()])
