// The layer compliance suite on the isolation layer, with the relay and the tally in worker threads, then in child processes.
import { describeLayerCompliance } from 'lamina/testing'
import { isolate, isolation } from './index.js'

describeLayerCompliance('isolation (worker)', () => isolation(), { prepare: (operator, from) => isolate(operator, { mode: 'worker', from }) })
describeLayerCompliance('isolation (process)', () => isolation(), { prepare: (operator, from) => isolate(operator, { mode: 'process', from }) })
