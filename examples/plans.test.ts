// The compiled plan of every example, snapshotted: a change in placement or fusion shows in review (as Hydro snapshots its compiled graphs).
// Each example is loaded the way `lamina run` loads it, planned under its own layers for a fixed
// set of peers (the submitter and three peers tagged like the launcher's), deployed the way the
// cluster deploys (the layers' assignments, round robin where there is none) and fused.
import { readdirSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { fuseChains, kernel, type Link, type PeerDescription, type Program } from 'lamina'
import { loadProgram, roundRobinPlan, instanceKey, type Plan } from 'lamina/cluster'
import { explain, planOf } from 'lamina/layers'

const SUBMITTER = 'submitter'
const PEERS: readonly PeerDescription[] = [{ id: SUBMITTER, tags: {} }, ...[0, 1, 2].map((i) => ({ id: `peer-${i}`, tags: { name: `peer-${i}` } }))]
const WORKERS = PEERS.map((p) => p.id).filter((id) => id !== SUBMITTER)

const examples = readdirSync(import.meta.dirname)
  .filter((file) => file.endsWith('.ts') && !file.endsWith('.test.ts'))
  .sort()

/** The instance pairs a link becomes channels between, by the kernel's routing: forward at equal parallelism pairs instance i with i; one receiver takes everything; else every pair. */
function channelsOf(program: Program, l: Link): [number, number][] {
  const np = program.operator(l.from.operator)!.annotations.parallelism ?? 1
  const consumer = program.operator(l.to.operator)!
  const nc = consumer.annotations.parallelism ?? 1
  const keyed = consumer.body.form === 'atom' && consumer.body.key !== undefined
  const kind = l.partitioning?.kind ?? (keyed ? 'hash' : 'forward')
  const pairs: [number, number][] = []
  for (let p = 0; p < np; p++) {
    if (kind === 'forward' && np === nc) pairs.push([p, p])
    else if (nc === 1 && kind !== 'broadcast') pairs.push([p, 0])
    else for (let c = 0; c < nc; c++) pairs.push([p, c])
  }
  return pairs
}

/** The plan as text: the planned program, where each instance runs, what fused, each link's channels, and placement's explanation. */
function render(file: string, layers: readonly string[], planned: Program, plan: Plan, fused: Program): string {
  const peerOf = (operator: string, instance: number): string => plan[instanceKey(operator, instance)] ?? fusedPeer(operator, instance)
  // A fused operator runs where the first operator of its chain runs.
  const fusedPeer = (operator: string, instance: number): string => plan[instanceKey(operator.split('+')[0]!, instance)] ?? '?'
  const lines = [
    `# examples/${file}, planned under [${layers.join(', ')}] for ${PEERS.map(
      (p) =>
        `${p.id}${
          Object.keys(p.tags).length > 0
            ? ` (${Object.entries(p.tags)
                .map(([k, v]) => `${k}=${v}`)
                .join(', ')})`
            : ''
        }`,
    ).join(', ')}`,
    '',
  ]
  lines.push('## program', planned.toString(), '')
  lines.push('## instances')
  for (const operator of fused.operators) {
    const n = operator.annotations.parallelism ?? 1
    lines.push(`${operator.name}: ${Array.from({ length: n }, (_, i) => `#${i} ${peerOf(operator.name, i)}`).join(', ')}`)
  }
  lines.push('', '## fused chains')
  const chains = fused.operators.filter((o) => planned.operator(o.name) === undefined).map((o) => o.name)
  lines.push(...(chains.length === 0 ? ['none'] : chains), '')
  lines.push('## links (channels: producer -> consumer instance, `=` on one peer, `~` across peers)')
  for (const l of fused.links) {
    const channels = channelsOf(fused, l).map(([p, c]) => {
      const from = peerOf(l.from.operator, p)
      const to = peerOf(l.to.operator, c)
      return `${p}${from === to ? '=' : '~'}${c}`
    })
    lines.push(`${l.id} [${l.partitioning?.kind ?? 'default'}]: ${channels.join(' ')}`)
  }
  const placement = planOf(planned)
  if (placement !== undefined) lines.push('', '## placement', explain(placement).text)
  return lines.join('\n') + '\n'
}

describe('compiled plans of the examples', () => {
  it('finds the examples', () => {
    expect(examples.length).toBeGreaterThan(0)
  })

  for (const file of examples) {
    it(`${file}: operators, instances, assignments, fused chains and links`, async () => {
      const module = new URL(`./${file}`, import.meta.url).pathname
      const loaded = await loadProgram(module, [], { submitter: true, peer: SUBMITTER })
      const stack = kernel.with(...loaded.layers)
      const planned = await stack.plan(loaded.program, { job: 'plan', self: SUBMITTER, peers: PEERS })
      const plan = roundRobinPlan(planned, WORKERS, SUBMITTER)
      const deployment = { self: SUBMITTER, peerOf: (operator: string, instance: number) => plan[instanceKey(operator, instance)] ?? SUBMITTER }
      // fuseChains reads only where instances run from the deployment.
      const fused = fuseChains(planned, deployment as unknown as Parameters<typeof fuseChains>[1])
      await expect(render(file, stack.describe(), planned, plan, fused)).toMatchFileSnapshot(`./__snapshots__/${file.replace(/\.ts$/, '')}.plan.txt`)
    })
  }
})
