import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { t } from 'lamina'
import { guardOf } from './codec.js'

describe('guardOf', () => {
  const codecs = [
    t.string,
    t.number,
    t.boolean,
    t.type({ id: t.number, user: t.string, ok: t.boolean }),
    t.type({}),
    t.array(t.number),
    t.type({ nested: t.type({ a: t.string }) }),
  ]

  it('agrees with io-ts `is` on arbitrary values', () => {
    for (const codec of codecs) {
      const guard = guardOf(codec)
      fc.assert(fc.property(fc.anything({ withObjectString: true, withNullPrototype: true, withMap: true, withDate: true }), (value) => guard(value) === codec.is(value)))
      fc.assert(
        fc.property(
          fc.record({ id: fc.oneof(fc.integer(), fc.string()), user: fc.oneof(fc.string(), fc.constant(undefined)), ok: fc.boolean() }),
          (value) => guard(value) === codec.is(value),
        ),
      )
    }
  })

  it('escapes field names', () => {
    const odd = t.type({ 'a"b': t.string, "c'); throw 1; ('": t.number })
    const guard = guardOf(odd)
    expect(guard({ 'a"b': 'x', "c'); throw 1; ('": 1 })).toBe(true)
    expect(guard({ 'a"b': 1 })).toBe(false)
  })
})
