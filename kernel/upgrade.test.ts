// Upgrades of a program's state: which operators keep, migrate, gain or lose state, the typed
// refusal when a codec changed without a migration, and migrations applied by StateStore.restore.
import { describe, expect, it } from 'vitest'
import { atom, checkUpgrade, link, migration, program, source, StateStore, t, UpgradeStateError } from './index.js'

const Rec = t.type({ key: t.string })
const V1 = t.type({ count: t.number })
const V2 = t.type({ count: t.number, doubled: t.number })

const from = source('from', Rec, () => [{ key: 'a' }])
const counter = (state: object) =>
  atom({
    name: 'count',
    inputs: { in: Rec },
    outputs: { out: Rec },
    key: (r) => r.key,
    ...state,
    on: { in: (r, ctx) => ctx.emit('out', r) },
  })
const version = (state: object, extra = false) => {
  const count = counter(state)
  const tag = atom({ name: 'tag', inputs: { in: Rec }, outputs: { out: Rec }, on: { in: (r, ctx) => ctx.emit('out', r) } })
  return program('v', {
    operators: extra ? [from, count, tag] : [from, count],
    links: extra ? [link(from.outputs.out, count.inputs.in), link(count.outputs.out, tag.inputs.in)] : [link(from.outputs.out, count.inputs.in)],
  })
}

describe('checkUpgrade', () => {
  const v1 = version({ state: { codec: V1, init: () => ({ count: 0 }) } })
  it('keeps state whose codec is the same, and names operators added and removed', () => {
    const next = version({ state: { codec: V1, init: () => ({ count: 0 }) } }, true)
    expect(checkUpgrade(v1, next)).toEqual({ kept: ['from', 'count'], migrated: [], added: ['tag'], removed: [] })
    expect(checkUpgrade(next, v1).removed).toEqual(['tag'])
  })

  it('refuses a changed codec without a migration, naming the operator and both codecs', () => {
    const next = version({ state: { codec: V2, init: () => ({ count: 0, doubled: 0 }) } })
    const error = (() => {
      try {
        checkUpgrade(v1, next)
      } catch (e) {
        return e
      }
    })()
    expect(error).toBeInstanceOf(UpgradeStateError)
    expect(error).toMatchObject({ code: 'ERR_UPGRADE_STATE', operator: 'count', fromCodec: V1.name, toCodec: V2.name, message: expect.stringContaining('needs a migration from') })
  })

  it('accepts a migration from the old codec; refuses one from another, and keyed state becoming unkeyed', () => {
    const migrated = version({ state: { codec: V2, init: () => ({ count: 0, doubled: 0 }), migrate: migration(V1, (old) => ({ ...old, doubled: old.count * 2 })) } })
    expect(checkUpgrade(v1, migrated).migrated).toEqual([{ operator: 'count', from: V1.name, to: V2.name }])
    const wrong = version({ state: { codec: V2, init: () => ({ count: 0, doubled: 0 }), migrate: migration(t.type({ n: t.number }), () => ({ count: 0, doubled: 0 })) } })
    expect(() => checkUpgrade(v1, wrong)).toThrow(/its migration is from \{ n: number \}/)
    const plain = atom({ name: 'count', inputs: { in: Rec }, outputs: { out: Rec }, state: { codec: V1, init: () => ({ count: 0 }) }, on: { in: () => undefined } })
    const unkeyed = program('v', { operators: [from, plain], links: [link(from.outputs.out, plain.inputs.in)] })
    expect(() => checkUpgrade(v1, unkeyed)).toThrow(expect.objectContaining({ code: 'ERR_UPGRADE_STATE', message: expect.stringContaining('keyed') }))
  })
})

describe('state migration on restore', () => {
  it('a snapshot names its codec; restored under a new codec it goes through the migration, and a bad one fails naming the key', () => {
    const old = new StateStore<t.TypeOf<typeof V1>>('count', { codec: V1, init: () => ({ count: 0 }) }, true)
    old.setOf('a', { count: 3 })
    old.setOf('b', { count: 5 })
    const snapshot = old.snapshot()
    expect(snapshot.codec).toBe(V1.name)
    const next = new StateStore<t.TypeOf<typeof V2>>(
      'count',
      { codec: V2, init: () => ({ count: 0, doubled: 0 }), migrate: migration(V1, (o) => ({ ...o, doubled: o.count * 2 })) },
      true,
    )
    next.restore(snapshot)
    expect([next.of('a'), next.of('b')]).toEqual([
      { count: 3, doubled: 6 },
      { count: 5, doubled: 10 },
    ])
    const without = new StateStore('count', { codec: V2, init: () => ({ count: 0, doubled: 0 }) }, true)
    expect(() => without.restore(snapshot)).toThrow(expect.objectContaining({ code: 'ERR_STATE_RESTORE', message: expect.stringContaining('no migration') }))
    const broken = new StateStore('count', { codec: V2, init: () => ({ count: 0, doubled: 0 }), migrate: migration(V1, (o) => ({ count: o.count })) as never }, true)
    expect(() => broken.restore(snapshot)).toThrow(/key "a": the migration made a value/)
  })
})
