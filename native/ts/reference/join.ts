// Inner hash join of the reference on one key column each; mirrors native/src/join.rs.

import { NativeBatchError, NativePlanError } from '../errors.js'
import { gather, getCol, keyAt, type KeyValue, type RBatch, type RCol } from './batch.js'

/**
 * Joins `l` and `r` where `l[lk] == r[rk]` (keys compared as a `Map` does): the joined batch and,
 * per output row, the left and right row it came from, in left row order then right row order.
 */
export function joinBatches(l: RBatch, r: RBatch, lk: string, rk: string, prefix: string): { batch: RBatch; left: number[]; right: number[] } {
  const lkc = getCol(l, lk)
  if (lkc === undefined) throw new NativeBatchError(lk, undefined, 'missing key column on the left')
  const rkc = getCol(r, rk)
  if (rkc === undefined) throw new NativeBatchError(rk, undefined, 'missing key column on the right')
  if (lkc.kind !== rkc.kind) throw new NativeBatchError(rk, undefined, `key kinds differ: left has ${lkc.kind}, right has ${rkc.kind}`)
  const names = l.cols.map(([n]) => n)
  for (const [n] of r.cols) {
    if (n === rk) continue
    const renamed = prefix + n
    if (names.includes(renamed)) throw new NativePlanError(`join output would have two columns named ${JSON.stringify(renamed)}; pass a rightPrefix`)
    names.push(renamed)
  }
  const table = new Map<KeyValue, number[]>()
  for (let i = 0; i < r.rows; i++) {
    const key = keyAt(rkc, i)
    const rows = table.get(key)
    if (rows === undefined) table.set(key, [i])
    else rows.push(i)
  }
  const lrows: number[] = []
  const rrows: number[] = []
  for (let i = 0; i < l.rows; i++) {
    for (const j of table.get(keyAt(lkc, i)) ?? []) {
      lrows.push(i)
      rrows.push(j)
    }
  }
  const cols: Array<readonly [string, RCol]> = l.cols.map(([n, c]) => [n, gather(c, lrows)] as const)
  for (const [n, c] of r.cols) if (n !== rk) cols.push([prefix + n, gather(c, rrows)])
  return { batch: { cols, rows: lrows.length }, left: lrows, right: rrows }
}
