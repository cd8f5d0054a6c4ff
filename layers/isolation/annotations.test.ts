import { describe, expect, it } from 'vitest'
import { kernel, link, program, sink, source, stream, t, type Operator } from 'lamina'
import { map as rxMap } from 'rxjs'
import { isolate, isolated, isolation, isolationOf, loadOperator, type IsolateOptions } from './index.js'
import { HERE, scale, whereAmI } from './fixtures/operators.js'

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i)

/** The error a call throws. */
function thrown(fn: () => unknown): unknown {
  try {
    fn()
  } catch (error) {
    return error
  }
  throw new Error('it did not throw')
}

describe('isolate', () => {
  it('writes the annotation, with mode worker by default', () => {
    const op = isolate(scale(), { from: { module: HERE, export: 'scale' }, memoryMb: 64 })
    expect(op.annotations.isolation).toEqual({ mode: 'worker', from: { module: HERE, export: 'scale' }, memoryMb: 64 })
    expect(isolationOf(op)).toEqual(op.annotations.isolation)
    expect(isolationOf(scale())).toBeUndefined()
    expect(isolationOf(isolate(scale(), { mode: 'in-process' }))).toBeUndefined()
  })

  it.each([
    ['an unknown mode', { mode: 'thread', from: { module: HERE } }, 'mode'],
    ['no module', {}, 'from'],
    ['a relative module path', { from: { module: './ops.ts' } }, 'from.module'],
    ['an empty export name', { from: { module: HERE, export: '' } }, 'from.export'],
    ['args that are not JSON', { from: { module: HERE, args: { n: 1n } } }, 'from.args'],
    ['a tiny memory limit', { from: { module: HERE }, memoryMb: 1 }, 'memoryMb'],
    ['a negative watchdog', { from: { module: HERE }, watchdogMs: -1 }, 'watchdogMs'],
  ])('refuses %s with IsolationAnnotationError naming the option', (_what, options, option) => {
    expect(thrown(() => isolate(scale(), options as unknown as IsolateOptions))).toMatchObject({ code: 'ERR_ISOLATION_ANNOTATION', operator: 'scale', option })
  })

  it('refuses a stream-form operator', () => {
    const s = stream({ name: 's', inputs: { in: t.number }, outputs: { out: t.number }, body: ({ in: xs }) => ({ out: xs.pipe(rxMap((x) => x)) }) })
    expect(thrown(() => isolate(s, { from: { module: HERE } }))).toMatchObject({ code: 'ERR_ISOLATION_ANNOTATION', option: 'mode' })
  })

  it('isolated() builds the operator from the module on this side too', async () => {
    const op = await isolated({ module: HERE, export: 'scale', args: { factor: 5 } }, { mode: 'process' })
    expect(op.name).toBe('scale')
    expect(op.annotations.isolation).toMatchObject({ mode: 'process', from: { export: 'scale', args: { factor: 5 } } })
  })

  it.each([
    ['a module that does not load', { module: new URL('./fixtures/missing.ts', HERE).href }, 'does not load'],
    ['a missing export', { module: HERE, export: 'nothing' }, 'has no export "nothing"'],
    ['an export that is not an operator', { module: HERE, export: 'notAnOperator' }, 'neither an operator'],
  ])('loadOperator refuses %s with IsolationModuleError', async (_what, from, reason) => {
    const error = await loadOperator(from, 'op').then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(error).toMatchObject({ code: 'ERR_ISOLATION_MODULE', operator: 'op' })
    expect((error as Error).message).toContain(reason)
  })
})

describe('the isolation layer', () => {
  function run(op: Operator, out: number[] = []): Promise<unknown> {
    const src = source('src', t.number, range(10))
    const into = sink('out', t.number, out)
    const p = program('p', { operators: [src, op, into], links: [link(src.outputs.out, op.inputs['in']!), link(op.outputs['out']!, into.inputs.in)] })
    return kernel
      .with(isolation())
      .run(p)
      .done.then(
        () => undefined,
        (error: unknown) => error,
      )
  }

  it.each([
    ['a missing export', 'nothing', 'has no export "nothing"'],
    ['an operator with other ports', 'otherPorts', 'inputs [data]'],
  ])('fails the job with IsolationModuleError for %s (a restart would not help)', async (_what, exportName, reason) => {
    for (const mode of ['worker', 'process'] as const) {
      const error = await run(isolate(scale(), { mode, from: { module: HERE, export: exportName } }))
      expect(error).toMatchObject({ code: 'ERR_JOB_FAILED' })
      const cause = (error as Error).cause as Error
      expect(cause).toMatchObject({ code: 'ERR_ISOLATION_MODULE', operator: 'scale', exportName })
      expect(cause.message).toContain(reason)
    }
  })

  it('leaves operators without the annotation (or in-process) on the main thread', async () => {
    const places: number[] = []
    const op = isolate(whereAmI(), { mode: 'in-process' })
    const src = source('src', t.number, range(10))
    const into = sink('out', t.number, [])
    const where = sink('places', t.number, places)
    const p = program('p', {
      operators: [src, op, into, where],
      links: [link(src.outputs.out, op.inputs.in), link(op.outputs.out, into.inputs.in), link(op.outputs.thread, where.inputs.in)],
    })
    await kernel.with(isolation()).run(p).done
    expect(places).toEqual([process.pid, process.pid])
  })

  it('refuses bad layer options with InvalidOptionError', () => {
    expect(thrown(() => isolation({ memoryMb: 2 }))).toMatchObject({ code: 'ERR_INVALID_OPTION', option: 'memoryMb' })
    expect(thrown(() => isolation({ watchdogMs: Number.NaN }))).toMatchObject({ code: 'ERR_INVALID_OPTION', option: 'watchdogMs' })
  })

  it('sits below supervision, checkpoints and metadata', () => {
    expect(kernel.with(isolation(), { name: 'supervision' }, { name: 'metadata' }).describe()).toEqual(['supervision', 'metadata', 'isolation'])
  })
})
