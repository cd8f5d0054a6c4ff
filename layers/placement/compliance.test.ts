// The layer compliance suite on the placement layer, enforcing and ignoring its annotations in one process.
import { describeLayerCompliance } from 'lamina/testing'
import { placement } from './index.js'

describeLayerCompliance('placement', () => placement())
describeLayerCompliance("placement({ inProcess: 'ignore' })", () => placement({ inProcess: 'ignore' }))
