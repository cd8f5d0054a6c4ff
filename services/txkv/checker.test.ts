// The checker the transaction tests use (adya, through fixtures/elle.ts): it accepts a
// serializable history, and finds the anomalies serializability forbids. The first run installs
// adya 0.1.0 with cargo (from the crate registry) into a cache directory.

import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { adya, checkHistory, ElleRecorder } from './fixtures/elle.js'

let dir = ''
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'lamina-elle-'))
  await adya()
}, 600_000)
afterAll(async () => {
  if (dir !== '') await rm(dir, { recursive: true, force: true })
})

describe('checkHistory (adya)', () => {
  it('accepts a serializable list-append history, unknown outcomes included', async () => {
    const h = new ElleRecorder()
    h.invoke(0, [['append', 'x', 1]]).ok([['append', 'x', 1]])
    const t1 = h.invoke(1, [
      ['r', 'x', null],
      ['append', 'y', 1],
    ])
    const t2 = h.invoke(2, [['append', 'x', 2]])
    t1.ok([
      ['r', 'x', [1]],
      ['append', 'y', 1],
    ])
    t2.info()
    h.invoke(3, [
      ['r', 'x', null],
      ['r', 'y', null],
    ]).ok([
      ['r', 'x', [1, 2]],
      ['r', 'y', [1]],
    ])
    const file = join(dir, 'valid.jsonl')
    await h.write(file)
    expect(await checkHistory(file, 'list-append')).toMatchObject({ valid: true })
  })

  it('finds write skew (G2) and a stale read after a commit (strict serializability)', async () => {
    const skew = new ElleRecorder()
    const a = skew.invoke(0, [
      ['r', 'y', null],
      ['append', 'x', 1],
    ])
    const b = skew.invoke(1, [
      ['r', 'x', null],
      ['append', 'y', 1],
    ])
    a.ok([
      ['r', 'y', null],
      ['append', 'x', 1],
    ])
    b.ok([
      ['r', 'x', null],
      ['append', 'y', 1],
    ])
    skew
      .invoke(2, [
        ['r', 'x', null],
        ['r', 'y', null],
      ])
      .ok([
        ['r', 'x', [1]],
        ['r', 'y', [1]],
      ])
    const skewFile = join(dir, 'skew.jsonl')
    await skew.write(skewFile)
    const verdict = await checkHistory(skewFile, 'list-append', 'serializable')
    expect(verdict.valid).toBe(false)
    expect(verdict.report).toMatch(/G2|G-single/)

    const stale = new ElleRecorder()
    stale.invoke(0, [['append', 'x', 1]]).ok([['append', 'x', 1]])
    stale.invoke(1, [['r', 'x', null]]).ok([['r', 'x', null]])
    const staleFile = join(dir, 'stale.jsonl')
    await stale.write(staleFile)
    expect(await checkHistory(staleFile, 'list-append', 'serializable')).toMatchObject({ valid: true })
    expect(await checkHistory(staleFile, 'list-append', 'strict-serializable')).toMatchObject({ valid: false })
  })
})
