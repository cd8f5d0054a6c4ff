// The layer compliance suite on the fault tolerance layers: checkpoints (taking checkpoints while the suite runs) and supervision.
import { describeLayerCompliance } from 'lamina/testing'
import { checkpoints, supervision } from './index.js'

describeLayerCompliance('checkpoints', ({ dir }) => checkpoints({ dir, intervalMs: 20 }))
describeLayerCompliance('supervision', () => supervision())
