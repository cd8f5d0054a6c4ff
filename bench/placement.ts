// Benchmark: the placement solver places 10,000 operator instances on 1,000 simulated peers with mixed annotations.
//
//   npm run bench -- placement [--instances N] [--peers N] [--rounds N] [--seed N]
//
// The program and the peers are generated once from a seed: peers with regions, ssd and gpu tags,
// names and (for most) cpu and memory capacities; operators with parallelism 1–9, of which some
// are pinned by name, need tags, consume cpu and memory, spread, avoid a peer, or are co-located
// with the operator before them. One untimed warm-up, then `rounds` timed `solve` calls; the
// median is reported, and every plan is checked against every annotation (outside the timing).
// Progress goes to stderr; the last line of stdout is one JSON object:
// `{"bench":"placement","ms":<median ms of solve>,"ratio":<ms ÷ 1000>, …}` (target: ratio < 1).

import { parseArgs } from 'node:util'
import { link, map, program, sink, source, t, type Operator, type PeerDescription, type Program } from 'lamina'
import { applyPlan, avoid, colocate, explain, pin, requireTags, resources, solve, spread, type PlacementPlan } from '../layers/placement/index.js'
import { BenchCheckError, BenchUsageError, collectGarbage, median, peakRssMiB, positiveInteger, progress, round3, runMain, seededRandom, timed } from './_harness.js'

const REGIONS = ['eu', 'us', 'ap'] as const

/** `count` peers with random hex ids (so id order says nothing about generation order), tags and capacities. */
function generatePeers(count: number, random: () => number): PeerDescription[] {
  const peers: PeerDescription[] = []
  const seen = new Set<string>()
  for (let i = 0; i < count; i++) {
    let id: string
    do
      id = `12D3Koo${Math.floor(random() * 2 ** 48)
        .toString(16)
        .padStart(12, '0')}`
    while (seen.has(id))
    seen.add(id)
    const tags: Record<string, string> = { name: `node-${i}`, region: REGIONS[Math.floor(random() * REGIONS.length)]! }
    if (random() < 0.3) tags['ssd'] = ''
    if (random() < 0.1) tags['gpu'] = 'a100'
    const capacity: Record<string, number> = {}
    if (random() < 0.7) capacity['cpu'] = 8 + Math.floor(random() * 25)
    if (random() < 0.5) capacity['memoryMb'] = 4096 * (1 + Math.floor(random() * 8))
    peers.push(Object.keys(capacity).length === 0 ? { id, tags } : { id, tags, capacity })
  }
  return peers
}

interface Mix {
  pinned: number
  tagged: number
  resourced: number
  spread: number
  avoiding: number
  colocated: number
  plain: number
}

/** A source, transforms with mixed annotations up to `instances` instances in all, and a sink, linked in a chain. */
function generateProgram(instances: number, peers: readonly PeerDescription[], random: () => number): { program: Program; mix: Mix } {
  const mix: Mix = { pinned: 0, tagged: 0, resourced: 0, spread: 0, avoiding: 0, colocated: 0, plain: 0 }
  const numbers = source('numbers', t.number, [1]) as unknown as Operator
  const out = sink('out', t.number, []) as unknown as Operator
  const operators: Operator[] = [numbers]
  let left = instances - 2
  for (let i = 0; left > 0; i++) {
    const previous = operators[operators.length - 1]!
    const kind = random()
    const colocating = kind < 0.15 && i > 0
    let parallelism = colocating ? (previous.annotations.parallelism ?? 1) : 1 + Math.floor(random() * 9)
    if (parallelism > left) parallelism = left
    let op = map(`op${i}`, t.number, t.number, (n) => n, { parallelism }) as unknown as Operator
    if (colocating) {
      op = colocate(op, previous)
      mix.colocated++
    } else if (kind < 0.25) {
      op = pin(op, peers[Math.floor(random() * peers.length)]!.tags['name']!)
      mix.pinned++
    } else if (kind < 0.45) {
      op = requireTags(op, random() < 0.5 ? `region=${REGIONS[Math.floor(random() * REGIONS.length)]}` : 'ssd')
      if (random() < 0.2) op = requireTags(op, 'gpu')
      mix.tagged++
    } else if (kind < 0.7) {
      op = resources(op, random() < 0.5 ? { cpu: 1 } : { cpu: 2, memoryMb: 1024 })
      mix.resourced++
    } else if (kind < 0.85) {
      op = spread(op)
      mix.spread++
    } else if (kind < 0.9) {
      op = avoid(op, peers[Math.floor(random() * peers.length)]!.id)
      mix.avoiding++
    } else mix.plain++
    operators.push(op)
    left -= parallelism
  }
  operators.push(out)
  const links = operators.slice(1).map((to, i) => link(operators[i]!.outputs['out']!, to.inputs['in']!))
  return { program: program('placement-bench', { operators, links }), mix }
}

/** Throws BenchCheckError unless the plan places every instance and honours every annotation. */
function check(program: Program, peers: readonly PeerDescription[], plan: PlacementPlan, instances: number): void {
  if (plan.instances.length !== instances) throw new BenchCheckError(`placed ${plan.instances.length} instances, expected ${instances}`)
  const byId = new Map(peers.map((p) => [p.id, p]))
  const used = new Map<string, Map<string, number>>()
  const at = new Map(plan.instances.map((p) => [`${p.operator}#${p.instance}`, p.peer]))
  for (const op of program.operators) {
    const placement = op.annotations.placement ?? {}
    const n = op.annotations.parallelism ?? 1
    const mine: string[] = []
    for (let i = 0; i < n; i++) {
      const peer = at.get(`${op.name}#${i}`)
      if (peer === undefined) throw new BenchCheckError(`${op.name}#${i} was not placed`)
      mine.push(peer)
      const tags = byId.get(peer)?.tags ?? {}
      if (placement.pin !== undefined && tags['name'] !== placement.pin) throw new BenchCheckError(`${op.name}#${i} is not on its pinned peer ${placement.pin}`)
      for (const tag of placement.tags ?? []) {
        const [k, v] = tag.split('=') as [string, string | undefined]
        if (!Object.hasOwn(tags, k) || (v !== undefined && tags[k] !== v)) throw new BenchCheckError(`${op.name}#${i} is on ${peer}, which lacks tag ${tag}`)
      }
      if ((placement.avoid ?? []).includes(peer)) throw new BenchCheckError(`${op.name}#${i} is on the peer it avoids`)
      for (const [resource, amount] of Object.entries(placement.resources ?? {})) {
        const perPeer = used.get(resource) ?? new Map<string, number>()
        perPeer.set(peer, (perPeer.get(peer) ?? 0) + amount)
        used.set(resource, perPeer)
      }
    }
    for (const other of placement.colocate ?? []) {
      for (let i = 0; i < n; i++) if (at.get(`${other}#${i}`) !== mine[i]) throw new BenchCheckError(`${op.name}#${i} is not beside ${other}#${i}`)
    }
  }
  for (const [resource, perPeer] of used) {
    for (const [peer, amount] of perPeer) {
      const capacity = byId.get(peer)?.capacity?.[resource] ?? Infinity
      if (amount > capacity) throw new BenchCheckError(`${peer} holds ${amount} ${resource}, more than its ${capacity}`)
    }
  }
}

async function main(argv: readonly string[]): Promise<void> {
  let values: { [option: string]: string | boolean | undefined }
  try {
    values = parseArgs({
      args: [...argv],
      options: { instances: { type: 'string' }, peers: { type: 'string' }, rounds: { type: 'string' }, seed: { type: 'string' } },
      strict: true,
    }).values
  } catch (error) {
    throw new BenchUsageError(`${error instanceof Error ? error.message : String(error)}\nusage: placement [--instances N] [--peers N] [--rounds N] [--seed N]`)
  }
  const option = (name: string): string | undefined => values[name] as string | undefined
  const instances = positiveInteger('instances', option('instances')) ?? 10_000
  const peerCount = positiveInteger('peers', option('peers')) ?? 1_000
  const rounds = positiveInteger('rounds', option('rounds')) ?? 5
  const seed = positiveInteger('seed', option('seed')) ?? 42
  if (instances < 3) throw new BenchUsageError('--instances must be at least 3 (a source, a transform, a sink)')

  const random = seededRandom(seed)
  const peers = generatePeers(peerCount, random)
  const { program, mix } = generateProgram(instances, peers, random)
  const self = peers[0]!.id
  progress(
    `placement: ${instances.toLocaleString('en')} instances of ${program.operators.length.toLocaleString('en')} operators on ${peerCount.toLocaleString('en')} peers, seed ${seed}; ` +
      `operators: ${Object.entries(mix)
        .map(([k, v]) => `${v} ${k}`)
        .join(', ')}`,
  )

  const context = { peers, self, job: 'bench' }
  const warm = await timed(async () => solve(program, context))
  check(program, peers, warm.result, instances)
  progress(`warm-up: ${warm.ms.toFixed(1)} ms (plan checked against every annotation)`)

  const samples: number[] = []
  let plan = warm.result
  for (let round = 0; round < rounds; round++) {
    collectGarbage()
    const run = await timed(async () => solve(program, context))
    samples.push(run.ms)
    plan = run.result
    progress(`round ${round + 1}/${rounds}: ${run.ms.toFixed(1)} ms`)
  }
  check(program, peers, plan, instances)
  // Determinism, checked once: the same plan from the peers in reverse order.
  const reversed = solve(program, { ...context, peers: [...peers].reverse() })
  if (JSON.stringify(reversed) !== JSON.stringify(plan)) throw new BenchCheckError('the plan changed when the peers were listed in another order')
  const apply = await timed(async () => applyPlan(program, plan))
  const explained = await timed(async () => explain(plan).text)
  const used = new Set(plan.instances.map((p) => p.peer)).size
  const ms = median(samples)
  progress(
    `median of ${rounds}: ${ms.toFixed(1)} ms (${((ms * 1e3) / instances).toFixed(2)} µs per instance); ${used} peers used; applyPlan ${apply.ms.toFixed(1)} ms, explain ${explained.ms.toFixed(1)} ms`,
  )
  const result = {
    bench: 'placement',
    ms: round3(ms),
    ratio: round3(ms / 1000),
    instances,
    operators: program.operators.length,
    peers: peerCount,
    peers_used: used,
    min_ms: round3(Math.min(...samples)),
    max_ms: round3(Math.max(...samples)),
    apply_ms: round3(apply.ms),
    explain_ms: round3(explained.ms),
    rounds,
    seed,
    peak_rss_mb: Math.round(peakRssMiB()),
    node: process.version,
  }
  process.stdout.write(`${JSON.stringify(result)}\n`)
}

runMain('placement', () => main(process.argv.slice(2)))
