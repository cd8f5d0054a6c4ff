// Round-robin placement: which peer runs each operator instance, until the placement layer lands.

import type { Program } from '../../kernel/index.js'

/** Operator instance (`name#i`) -> peer id. Plain data, so it travels with a job submission. */
export type Plan = { readonly [instance: string]: string }

/** The key of an operator instance in a plan. */
export function instanceKey(operator: string, instance: number): string {
  return `${operator}#${instance}`
}

/**
 * Spreads operator instances over `peers` in turn. Sources and sinks run on the submitter (its
 * files are read there and results stream back to it), unless `endpoints` is `placed` (a failover
 * job): then they take their turn like transforms. Deterministic for the same program and peers
 * (peers are taken in sorted order), so every peer can check the plan it is given.
 */
export function roundRobinPlan(program: Program, peers: readonly string[], submitter: string, endpoints: 'submitter' | 'placed' = 'submitter'): Plan {
  const sorted = [...new Set(peers)].sort()
  const plan: Record<string, string> = {}
  let turn = 0
  for (const operator of program.operators) {
    const role = operator.describe().role
    const assigned = operator.annotations.assignment?.peers
    for (let i = 0; i < (operator.annotations.parallelism ?? 1); i++) {
      // A placement layer's assignment decides; round robin fills in where there is none.
      plan[instanceKey(operator.name, i)] = assigned?.[i] ?? ((role === 'transform' || endpoints === 'placed') && sorted.length > 0 ? sorted[turn++ % sorted.length]! : submitter)
    }
  }
  return plan
}
