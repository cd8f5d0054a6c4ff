// In-process tests of the elasticity layer: its stack must provide savepoints, its decisions say
// how many key groups move, and each layer value keeps its own cooldowns.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { filter, firstValueFrom } from 'rxjs'
import { afterAll, describe, expect, it } from 'vitest'
import { atom, kernel, LayerStackError, link, program, SAVEPOINTS, sink, source, t, type Job } from 'lamina'
import { checkpoints, elasticity, ELASTICITY_EVENTS, RESCALE_CONTROL, type ScaleDecision } from 'lamina/layers'

const dirs: string[] = []
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
})
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'lamina-elasticity-test-'))
  dirs.push(dir)
  return dir
}

/** numbers (one every few ms, until aborted) -> count (keyed) -> out. */
function counting(): ReturnType<typeof program> {
  async function* numbers(): AsyncGenerator<number> {
    for (let i = 0; ; i++) {
      await new Promise<void>((resolve) => setTimeout(resolve, 2))
      yield i
    }
  }
  const nums = source('nums', t.number, numbers())
  const count = atom({
    name: 'count',
    inputs: { in: t.number },
    outputs: { out: t.number },
    key: (n: number) => n % 10,
    state: { codec: t.number, init: () => 0 },
    on: { in: (_n: number, ctx) => void ctx.state.update((c) => c + 1) },
  })
  const out = sink('out', t.number, () => undefined)
  return program('elastic', { operators: [nums, count, out], links: [link(nums.outputs.out, count.inputs.in), link(count.outputs.out, out.inputs.in)] })
}

async function stopped(job: Job): Promise<void> {
  job.abort('test over')
  await job.done.catch(() => undefined)
}

describe('the elasticity layer', () => {
  it('is refused, when the stack is built, without a layer providing savepoints', () => {
    let error: unknown
    try {
      kernel.with(elasticity())
    } catch (e) {
      error = e
    }
    expect(error).toBeInstanceOf(LayerStackError)
    expect(error).toMatchObject({ code: 'ERR_LAYER_STACK', layers: ['elasticity'], capability: 'savepoints' })
    expect(kernel.with(checkpoints({ dir: tempDir() }), elasticity()).capability(SAVEPOINTS)).toBeDefined()
  })

  it('keeps cooldowns per layer value: a rescale in one stack does not cool another running a job of the same id', async () => {
    // Stack A rescales job `same` by hand (in one process there is no cluster to do it, so it
    // fails, but the cooldown has started); stack B's policy on its own job `same` must still act.
    const a = kernel.with(checkpoints({ dir: tempDir(), intervalMs: 3_600_000 }), elasticity())
    const jobA = a.run(counting(), { id: 'same' })
    await within(firstValueFrom(jobA.events.pipe(filter((e) => e.type === 'started'))), 10_000, 'job A did not start')
    await expect(jobA.control(RESCALE_CONTROL, { operator: 'count', parallelism: 2 })).rejects.toMatchObject({ code: 'ERR_RESCALE' })
    const decisions: ScaleDecision[] = []
    let decided!: () => void
    const first = new Promise<void>((resolve) => (decided = resolve))
    const policy = { operator: 'count', max: 2, intervalMs: 20, samples: 1, scaleOutAbove: 0, cooldownMs: 3_600_000 }
    const b = kernel.with(
      checkpoints({ dir: tempDir(), intervalMs: 3_600_000 }),
      elasticity({
        policies: [policy],
        onDecision: (d) => {
          decisions.push(d)
          decided()
        },
      }),
    )
    const jobB = b.run(counting(), { id: 'same' })
    const events: string[] = []
    jobB.events.subscribe((e) => {
      if (ELASTICITY_EVENTS.decided.is(e)) events.push(`${e.data.from}->${e.data.to}`)
    })
    try {
      await within(first, 10_000, "stack B's policy did not decide: it saw stack A's cooldown")
      expect(decisions[0]).toMatchObject({ operator: 'count', from: 1, to: 2 })
      // 1 -> 2 instances: the upper half of the key groups moves to the new instance.
      expect(decisions[0]!.movedKeyGroups).toBe(64)
      expect(events).toEqual(['1->2'])
    } finally {
      await Promise.all([stopped(jobA), stopped(jobB)])
    }
  })
})

/** `promise`, or a rejection with `message` after `ms`. */
async function within<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([promise, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(message)), ms)))])
  } finally {
    clearTimeout(timer)
  }
}
