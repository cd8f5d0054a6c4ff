// The compliance suite on the simplest layers: none at all, and one that wraps every hook and changes nothing.
import { wrapChannel, wrapInstance, type Layer } from 'lamina'
import { describeLayerCompliance } from 'lamina/testing'

describeLayerCompliance('no layer', () => [])

describeLayerCompliance(
  'a pass-through layer',
  (): Layer => ({
    name: 'pass-through',
    channel: (channel, next) => {
      const inner = next(channel)
      return 'send' in inner ? wrapChannel(inner, { send: (batch) => inner.send(batch) }) : inner
    },
    instance: (spec, next) => wrapInstance(next(spec), {}),
  }),
)
