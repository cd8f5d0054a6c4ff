// Properties of the hash ring: rendezvous owners are deterministic, balanced and move minimally
// when a node comes or goes; key groups partition evenly and agree with the kernel's partitioner.
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { instanceOfKey, KEY_GROUPS } from 'lamina'
import { KeyGroups, keyGroups, Ring, RingArgumentError } from './index.js'

/** 1 to 12 distinct node names (peer-id-like and arbitrary ones). */
const nodeNames = fc.uniqueArray(fc.oneof(fc.string({ minLength: 1, maxLength: 12 }), fc.stringMatching(/^12D3KooW[A-Za-z0-9]{8}$/)), { minLength: 1, maxLength: 12 })
const keys = fc.uniqueArray(fc.string({ maxLength: 16 }), { minLength: 1, maxLength: 200 })

describe('Ring (rendezvous hashing)', () => {
  it('is deterministic: the same nodes, in any order, give the same owners', () => {
    fc.assert(
      fc.property(nodeNames, keys, fc.integer({ min: 0, max: 4 }), fc.integer(), (nodes, ks, n, seed) => {
        const shuffled = [...nodes].sort((a, b) => ((a.length * 31 + seed) % 7) - ((b.length * 31 + seed) % 7))
        const a = new Ring(nodes)
        const b = new Ring([...shuffled, ...nodes.slice(0, 1)])
        for (const key of ks) {
          expect(b.owners(key, n)).toEqual(a.owners(key, n))
          expect(a.owner(key)).toBe(a.owners(key, 1)[0])
        }
      }),
    )
  })

  it('returns n distinct owners (all nodes when fewer), best first', () => {
    fc.assert(
      fc.property(nodeNames, fc.string(), fc.integer({ min: 0, max: 20 }), (nodes, key, n) => {
        const owners = new Ring(nodes).owners(key, n)
        expect(owners.length).toBe(Math.min(n, nodes.length))
        expect(new Set(owners).size).toBe(owners.length)
        for (const owner of owners) expect(nodes).toContain(owner)
      }),
    )
  })

  it('moves only what it must when a node is added: each changed owner is the new node', () => {
    fc.assert(
      fc.property(nodeNames, fc.string({ minLength: 1 }), keys, (nodes, added, ks) => {
        fc.pre(!nodes.includes(added))
        const before = new Ring(nodes)
        const after = before.with(added)
        for (const key of ks) {
          const was = before.owner(key)
          const now = after.owner(key)
          if (now !== was) expect(now).toBe(added)
          // Replica sets change by at most the new node coming in (and the last one leaving).
          const sets = [before.owners(key, 2), after.owners(key, 2)]
          expect(sets[1]!.filter((n) => !sets[0]!.includes(n)).every((n) => n === added)).toBe(true)
        }
      }),
    )
  })

  it('moves only what it must when a node is removed: only its keys change owner', () => {
    fc.assert(
      fc.property(
        nodeNames.filter((n) => n.length >= 2),
        fc.nat(),
        keys,
        (nodes, pick, ks) => {
          const removed = nodes[pick % nodes.length]!
          const before = new Ring(nodes)
          const after = before.without(removed)
          for (const key of ks) {
            const was = before.owner(key)
            if (was !== removed) expect(after.owner(key)).toBe(was)
            else expect(after.owner(key)).not.toBe(removed)
          }
        },
      ),
    )
  })

  it('is balanced: every node owns close to its share of many keys', () => {
    fc.assert(
      fc.property(
        nodeNames.filter((n) => n.length >= 2),
        fc.string({ maxLength: 6 }),
        (nodes, prefix) => {
          const ring = new Ring(nodes)
          const total = 4000
          const owned = new Map<string, number>(nodes.map((n) => [n, 0]))
          for (let i = 0; i < total; i++) {
            const owner = ring.owner(`${prefix}/${i}`)!
            owned.set(owner, owned.get(owner)! + 1)
          }
          const share = total / nodes.length
          // Binomial spread: about sqrt(share) per node; 6 of those (and 25%) is far out.
          const slack = Math.max(6 * Math.sqrt(share), share * 0.25)
          for (const count of owned.values()) expect(Math.abs(count - share)).toBeLessThan(slack)
        },
      ),
      { numRuns: 40 },
    )
  })

  it('refuses empty node names and a negative count', () => {
    expect(() => new Ring(['a', ''])).toThrow(RingArgumentError)
    expect(() => new Ring(['a']).owners('k', -1)).toThrow(expect.objectContaining({ code: 'ERR_RING_ARGUMENT' }))
    expect(new Ring([]).owner('k')).toBeUndefined()
  })
})

describe('KeyGroups', () => {
  const parallelism = fc.integer({ min: 1, max: KEY_GROUPS })

  it('agree with the kernel: a key is owned by the instance the hash partitioner sends it to', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.integer(), fc.double({ noNaN: true })), parallelism, (key, p) => {
        expect(keyGroups.ownerOfKey(key, p)).toBe(instanceOfKey(key, p))
        expect(keyGroups.owner(keyGroups.of(key), p)).toBe(instanceOfKey(key, p))
      }),
    )
  })

  it('partition the groups into contiguous ranges whose sizes differ by at most one (balance)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 512 }), fc.nat(), (count, pick) => {
        const groups = new KeyGroups(count)
        const p = 1 + (pick % count)
        let next = 0
        const sizes: number[] = []
        for (let i = 0; i < p; i++) {
          const { start, end } = groups.range(i, p)
          expect(start).toBe(next)
          for (let g = start; g < end; g++) expect(groups.owner(g, p)).toBe(i)
          sizes.push(end - start)
          next = end
        }
        expect(next).toBe(count)
        expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1)
      }),
    )
  })

  it('list as moves exactly the groups whose owner changes, and none for the same parallelism', () => {
    fc.assert(
      fc.property(parallelism, parallelism, (from, to) => {
        const moves = keyGroups.moves(from, to)
        const moved = new Set(moves.map((m) => m.group))
        for (let g = 0; g < KEY_GROUPS; g++) expect(moved.has(g)).toBe(keyGroups.owner(g, from) !== keyGroups.owner(g, to))
        for (const m of moves) expect([m.from, m.to]).toEqual([keyGroups.owner(m.group, from), keyGroups.owner(m.group, to)])
        if (from === to) expect(moves).toEqual([])
      }),
    )
  })

  it('are deterministic across instances of the class', () => {
    fc.assert(
      fc.property(fc.string(), parallelism, (key, p) => {
        expect(new KeyGroups().ownerOfKey(key, p)).toBe(keyGroups.ownerOfKey(key, p))
      }),
    )
  })

  it('refuse a parallelism above the key groups', () => {
    expect(() => keyGroups.ownerOfKey('k', KEY_GROUPS + 1)).toThrow(expect.objectContaining({ code: 'ERR_RING_ARGUMENT' }))
    expect(() => new KeyGroups(0)).toThrow(RingArgumentError)
  })
})
