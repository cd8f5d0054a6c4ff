// Whether a new version of a program can take over a running one's state (an upgrade without
// downtime): every operator the two versions share by name must be able to restore the old
// version's snapshots. Same state codec (by name) -> the snapshot restores as it is; another
// codec -> the new operator must declare a migration from the old one (StateSpec.migrate).
// Operators only in the new version start empty; those only in the old one are dropped.

import type { AtomBody, Operator, Program } from './contracts.js'
import { UpgradeStateError } from './errors.js'

/** What an upgrade does to each operator's state. */
export interface UpgradePlan {
  /** Operators whose state restores as it is. */
  readonly kept: readonly string[]
  /** Operators whose state goes through their migration: old codec -> new codec. */
  readonly migrated: readonly { readonly operator: string; readonly from: string; readonly to: string }[]
  /** Operators of the new version only: they start with empty state. */
  readonly added: readonly string[]
  /** Operators of the old version only: their state is dropped. */
  readonly removed: readonly string[]
}

/**
 * Checks that `next` can take over `running`'s state, and says how.
 *
 * @throws UpgradeStateError naming the operator and both codecs when it cannot.
 */
export function checkUpgrade(running: Program, next: Program): UpgradePlan {
  const before = new Map(running.operators.map((o) => [o.name, o] as const))
  const after = new Map(next.operators.map((o) => [o.name, o] as const))
  const kept: string[] = []
  const migrated: { operator: string; from: string; to: string }[] = []
  for (const [name, now] of after) {
    const was = before.get(name)
    if (was === undefined) continue
    const old = stateOf(was)
    const state = stateOf(now)
    const from = old?.codec.name ?? 'none'
    const to = state?.codec.name ?? 'none'
    if (old !== undefined && state !== undefined && keyed(was) !== keyed(now))
      throw new UpgradeStateError(name, from, to, `its state was ${keyed(was) ? 'keyed' : 'not keyed'} and would be ${keyed(now) ? 'keyed' : 'not keyed'}`)
    if (old === undefined || state === undefined || from === to) {
      kept.push(name)
      continue
    }
    if (state.migrate === undefined)
      throw new UpgradeStateError(name, from, to, `the new version needs a migration from ${from} (state: { …, migrate: migration(OldCodec, (old) => …) })`)
    if (state.migrate.from.name !== from) throw new UpgradeStateError(name, from, to, `its migration is from ${state.migrate.from.name}, not from ${from}`)
    migrated.push({ operator: name, from, to })
  }
  return {
    kept,
    migrated,
    added: [...after.keys()].filter((name) => !before.has(name)),
    removed: [...before.keys()].filter((name) => !after.has(name)),
  }
}

function stateOf(operator: Operator): AtomBody['state'] {
  return operator.body.form === 'atom' ? operator.body.state : undefined
}

function keyed(operator: Operator): boolean {
  return operator.body.form === 'atom' && operator.body.key !== undefined
}
