// The layer compliance suite on the metadata layer, tracing every record.
import { describeLayerCompliance } from 'lamina/testing'
import { metadata } from './index.js'

describeLayerCompliance('metadata', () => metadata({ sampling: 1 }))
