// Operator chaining: fusible operators joined by a forward link on one peer become one operator.

import type { Deployment, Link, Operator, Program } from './contracts.js'
import { makeLink } from './link.js'
import { parallelismOf } from './operator.js'

/** The link `a -> b` can be chained away: the only link out of a and the only link into b, forward, same parallelism, same peers. */
function chainable(program: Program, l: Link, deployment: Deployment | undefined): [Operator, Operator] | undefined {
  const a = program.operator(l.from.operator)!
  const b = program.operator(l.to.operator)!
  if (a === b || a.body.form !== 'atom' || b.body.form !== 'atom') return undefined
  const fa = a.body.fusible
  const fb = b.body.fusible
  if (fa === undefined || fb === undefined || fa.kind !== fb.kind) return undefined
  if (Object.keys(a.outputs).length !== 1 || Object.keys(b.inputs).length !== 1) return undefined
  if (program.links.filter((x) => x.from.operator === a.name).length !== 1) return undefined
  if (program.links.filter((x) => x.to.operator === b.name).length !== 1) return undefined
  const n = parallelismOf(a)
  if (parallelismOf(b) !== n) return undefined
  const partitioning = l.partitioning?.kind
  // With one instance each, every partitioning delivers everything to the one receiver.
  if (n > 1 && partitioning !== 'forward' && !(partitioning === undefined && b.body.key === undefined)) return undefined
  if (deployment !== undefined) for (let i = 0; i < n; i++) if (deployment.peerOf(a.name, i) !== deployment.peerOf(b.name, i)) return undefined
  return [a, b]
}

/**
 * Repeatedly replaces a chainable pair `a -> b` by `a.fuse(a, b)`, re-pointing the links into a and
 * out of b. The fused operator keeps a's inputs and b's outputs. Returns the program unchanged when
 * nothing fuses. (Flink's operator chaining; the fused operator runs both in one call per batch.)
 */
export function fuseChains(program: Program, deployment?: Deployment): Program {
  let current = program
  for (let changed = true; changed; ) {
    changed = false
    for (const l of current.links) {
      const pair = chainable(current, l, deployment)
      if (pair === undefined) continue
      const [a, b] = pair
      const fused = a.body.form === 'atom' ? a.body.fusible!.fuse(a, b) : undefined
      if (fused === undefined) continue
      const links = current.links
        .filter((x) => x !== l)
        .map((x) => {
          if (x.to.operator === a.name) return makeLink(x.from, { operator: fused.name, port: x.to.port }, optionsOf(x))
          if (x.from.operator === b.name) return makeLink({ operator: fused.name, port: x.from.port }, x.to, optionsOf(x))
          return x
        })
      const operators = current.operators.filter((o) => o !== a && o !== b).concat([fused])
      current = current.with({ operators, links })
      changed = true
      break
    }
  }
  return current
}

function optionsOf(l: Link): { partitioning?: Link['partitioning']; capacity?: number } {
  return { ...(l.partitioning === undefined ? {} : { partitioning: l.partitioning }), ...(l.capacity === undefined ? {} : { capacity: l.capacity }) }
}
