// The layer compliance suite on the placement layer.
import { describeLayerCompliance } from 'lamina/testing'
import { placement } from './index.js'

describeLayerCompliance('placement', () => placement())
