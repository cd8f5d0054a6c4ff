// Fused chains of the reference: step specs compiled once, run batch by batch; mirrors native/src/plan.rs.

import { NativeArgError, NativeBatchError, NativeExprError, NativePlanError, NativeStateError } from '../errors.js'
import { bindExpr, parseExpr, type Ast, type ExprColumns } from '../expr.js'
import type { Batch, Chain, StepSpec } from '../types.js'
import { KeyedAgg, checkKeyKind } from './agg.js'
import { colLen, decodeBatch, encodeBatch, gather, gatherBatch, getCol, requireCol, type RBatch, type RCol } from './batch.js'
import { describeKind, describeVal, kindOf, readJsVal, type JsVal } from './js.js'
import { MAX_PARTITIONS, partitionBatch } from './partition.js'
import { tokenizeStrings } from './tokenize.js'
import { readRows } from './state.js'
import { Sessions, Windows } from './window.js'

type Stage =
  | { readonly k: 'tokenize'; readonly input: string; readonly output: string }
  | { readonly k: 'filter'; readonly ast: Ast }
  | { readonly k: 'map'; readonly ast: Ast; readonly name: string | undefined }

type Sink =
  | { readonly k: 'pass' }
  | { readonly k: 'partition'; readonly key: string; readonly n: number }
  | { readonly k: 'agg'; readonly key: string; readonly value: string | undefined; state: KeyedAgg | undefined }
  | { readonly k: 'window'; readonly key: string; readonly value: string | undefined; readonly time: string; readonly state: Windows | Sessions }

class StepFields {
  constructor(
    private readonly step: number,
    private readonly op: string,
    private readonly fields: ReadonlyArray<readonly [string, JsVal]>,
  ) {}

  bad(message: string): NativePlanError {
    return new NativePlanError(`step ${this.step} (${this.op}): ${message}`)
  }

  allow(names: readonly string[]): void {
    for (const [name, value] of this.fields) {
      if (name !== 'op' && !names.includes(name) && value.t !== 'undefined') throw this.bad(`unknown field ${JSON.stringify(name)}`)
    }
  }

  private get(name: string): JsVal | undefined {
    return this.fields.find(([n, v]) => n === name && v.t !== 'undefined')?.[1]
  }

  string(name: string): string | undefined {
    const v = this.get(name)
    if (v === undefined) return undefined
    if (v.t === 'str') return v.v
    throw this.bad(`field ${JSON.stringify(name)} must be a string, got ${describeVal(v)}`)
  }

  requiredString(name: string): string {
    const s = this.string(name)
    if (s === undefined) throw this.bad(`missing field ${JSON.stringify(name)}`)
    return s
  }

  number(name: string): number | undefined {
    const v = this.get(name)
    if (v === undefined) return undefined
    if (v.t === 'num') return v.v
    throw this.bad(`field ${JSON.stringify(name)} must be a number, got ${describeVal(v)}`)
  }
}

function compile(spec: JsVal): { stages: Stage[]; sink: Sink } {
  if (spec.t !== 'arr') throw new NativePlanError(`a chain spec must be an array of steps, got ${describeVal(spec)}`)
  const stages: Stage[] = []
  let sink: Sink = { k: 'pass' }
  spec.v.forEach((step, i) => {
    if (step.t !== 'obj') throw new NativePlanError(`step ${i} must be an object, got ${describeVal(step)}`)
    const opField = step.v.find(([n]) => n === 'op')?.[1]
    if (opField?.t !== 'str') throw new NativePlanError(`step ${i} needs a string field "op"`)
    const op = opField.v
    const f = new StepFields(i, op, step.v)
    if (sink.k !== 'pass') throw f.bad('no step may follow a partition, count, aggregate or window step')
    switch (op) {
      case 'tokenize': {
        f.allow(['input', 'output'])
        const input = f.string('input') ?? 's'
        stages.push({ k: 'tokenize', input, output: f.string('output') ?? input })
        break
      }
      case 'filter':
        f.allow(['expr'])
        stages.push({ k: 'filter', ast: parseExpr(f.requiredString('expr')) })
        break
      case 'map': {
        f.allow(['expr', 'as'])
        const ast = parseExpr(f.requiredString('expr'))
        stages.push({ k: 'map', ast, name: f.string('as') })
        break
      }
      case 'partition': {
        f.allow(['key', 'n'])
        const n = f.number('n')
        if (n === undefined) throw f.bad('missing field "n"')
        if (!(Number.isInteger(n) && n >= 1 && n <= MAX_PARTITIONS)) throw f.bad(`"n" must be an integer from 1 to ${MAX_PARTITIONS}, got ${n}`)
        sink = { k: 'partition', key: f.string('key') ?? 's', n }
        break
      }
      case 'count':
        f.allow(['key'])
        sink = { k: 'agg', key: f.string('key') ?? 's', value: undefined, state: undefined }
        break
      case 'aggregate':
        f.allow(['key', 'value'])
        sink = { k: 'agg', key: f.string('key') ?? 's', value: f.string('value') ?? 'x', state: undefined }
        break
      case 'window': {
        f.allow(['key', 'value', 'time', 'size', 'slide', 'gap', 'allowedLatenessMs'])
        const gap = f.number('gap')
        const size = f.number('size')
        const slide = f.number('slide')
        const lateness = f.number('allowedLatenessMs') ?? 0
        const value = f.string('value')
        const bad = (m: string) => f.bad(m)
        let state: Windows | Sessions
        if (gap !== undefined) {
          if (size !== undefined || slide !== undefined) throw f.bad('"gap" (session windows) cannot be combined with "size" or "slide"')
          state = new Sessions(gap, lateness, value !== undefined, bad)
        } else {
          if (size === undefined) throw f.bad('missing field "size" (or "gap" for session windows)')
          state = new Windows(size, slide ?? size, lateness, value !== undefined, bad)
        }
        sink = { k: 'window', key: f.string('key') ?? 's', value, time: f.string('time') ?? 't', state }
        break
      }
      default:
        throw f.bad(`unknown op ${JSON.stringify(op)}`)
    }
  })
  return { stages, sink }
}

function schemaOf(b: RBatch): Array<[string, 'f64' | 'utf8']> {
  return b.cols.map(([n, c]) => [n, c.kind])
}

function exprColumns(b: RBatch): ExprColumns {
  return b.cols.map(([, c]) => (c.kind === 'f64' ? c.values : c.strings))
}

function applyStage(stage: Stage, cur: RBatch): RBatch {
  switch (stage.k) {
    case 'tokenize': {
      const text = requireCol(cur, stage.input, 'utf8') as { strings: readonly string[] }
      const t = tokenizeStrings(text.strings)
      const cols: Array<readonly [string, RCol]> = cur.cols.filter(([n]) => n !== stage.input && n !== stage.output).map(([n, c]) => [n, gather(c, t.rows)] as const)
      cols.push([stage.output, { kind: 'utf8', strings: t.words }])
      return { cols, rows: t.rows.length }
    }
    case 'filter': {
      const pred = bindExpr(stage.ast, schemaOf(cur))
      if (pred.ty !== 'boolean') throw new NativeExprError(0, 'filter needs a boolean expression')
      const values = exprColumns(cur)
      const keep: number[] = []
      for (let r = 0; r < cur.rows; r++) if (pred.eval(values, r)) keep.push(r)
      return keep.length === cur.rows ? cur : gatherBatch(cur, keep)
    }
    case 'map': {
      const e = bindExpr(stage.ast, schemaOf(cur))
      const values = exprColumns(cur)
      let col: RCol
      let defaultName: string
      if (e.ty === 'number') {
        col = { kind: 'f64', values: Float64Array.from({ length: cur.rows }, (_, r) => e.eval(values, r)) }
        defaultName = 'x'
      } else if (e.ty === 'string') {
        col = { kind: 'utf8', strings: Array.from({ length: cur.rows }, (_, r) => e.eval(values, r)) }
        defaultName = 's'
      } else {
        throw new NativeExprError(0, 'map needs a number or string expression, got a boolean')
      }
      const name = stage.name ?? defaultName
      const cols = [...cur.cols]
      const at = cols.findIndex(([n]) => n === name)
      if (at >= 0) cols[at] = [name, col]
      else cols.push([name, col])
      return { cols, rows: cur.rows }
    }
  }
}

function f64Column(b: RBatch, name: string): Float64Array {
  return (requireCol(b, name, 'f64') as { values: Float64Array }).values
}

/** The reference implementation of a fused chain; see {@link Chain}. */
export class ReferenceChain implements Chain {
  private readonly stages: Stage[]
  private readonly sink: Sink
  private done = false
  private lateRows: RBatch | undefined

  constructor(steps: readonly StepSpec[]) {
    const plan = compile(readJsVal(steps, 4))
    this.stages = plan.stages
    this.sink = plan.sink
  }

  get late(): number {
    return this.sink.k === 'window' ? this.sink.state.late : 0
  }

  get finished(): boolean {
    return this.done
  }

  private usable(call: string): void {
    if (this.done) throw new NativeStateError(`${call} after finish`)
  }

  push(batch: Batch): Batch[] {
    this.usable('push')
    let cur = decodeBatch(batch, 'batch')
    for (const stage of this.stages) cur = applyStage(stage, cur)
    const sink = this.sink
    switch (sink.k) {
      case 'pass':
        return [encodeBatch(cur)]
      case 'partition':
        return partitionBatch(cur, sink.key, sink.n).map(encodeBatch)
      case 'agg': {
        const keys = getCol(cur, sink.key)
        if (keys === undefined) throw new NativeBatchError(sink.key, undefined, 'missing column')
        const values = sink.value === undefined ? undefined : f64Column(cur, sink.value)
        checkKeyKind(sink.state?.kind, sink.key, keys)
        sink.state ??= new KeyedAgg(keys.kind, sink.value !== undefined)
        sink.state.push(keys, values)
        return []
      }
      case 'window': {
        const keys = getCol(cur, sink.key)
        if (keys === undefined) throw new NativeBatchError(sink.key, undefined, 'missing column')
        const values = sink.value === undefined ? undefined : f64Column(cur, sink.value)
        const times = f64Column(cur, sink.time)
        sink.state.checkTimes(sink.time, times)
        const refired = sink.state.push(sink.key, keys, values, times)
        const late = sink.state.takeLateRows()
        this.lateRows = late.length === 0 ? undefined : gatherBatch(cur, late)
        return refired === undefined ? [] : [encodeBatch(toBatch(refired))]
      }
    }
  }

  takeLate(): Batch[] {
    const rows = this.lateRows
    this.lateRows = undefined
    return rows === undefined ? [] : [encodeBatch(rows)]
  }

  snapshot(): Batch[] {
    this.usable('snapshot')
    const sink = this.sink
    const cols = sink.k === 'agg' && sink.state !== undefined ? sink.state.snapshot() : sink.k === 'window' && sink.state.keyKind !== undefined ? sink.state.snapshot() : undefined
    return cols === undefined ? [] : [encodeBatch(toBatch(cols))]
  }

  restore(batch: Batch): void {
    this.usable('restore')
    const sink = this.sink
    if (sink.k !== 'agg' && sink.k !== 'window') throw new NativeArgError('restore: this chain keeps no state (it has no count, aggregate or window step)')
    const decoded = decodeBatch(batch, 'state')
    if (sink.k === 'window') return sink.state.restore(readRows(decoded, sink.value !== undefined, true))
    const rows = readRows(decoded, sink.value !== undefined, false)
    checkKeyKind(sink.state?.kind, 'key', rows.keys)
    sink.state ??= new KeyedAgg(rows.keys.kind, sink.value !== undefined)
    for (let row = 0; row < rows.count.length; row++) sink.state.merge(rows, row)
  }

  advance(watermark: number): Batch[] {
    this.usable('advance')
    const k = kindOf(watermark)
    if (k !== 'number') throw new NativeArgError(`watermark must be a number, got ${describeKind(k)}`)
    if (Number.isNaN(watermark)) throw new NativeArgError('the watermark must be a number, got NaN')
    if (this.sink.k !== 'window') return []
    const closed = toBatch(this.sink.state.advance(watermark))
    return closed.rows === 0 ? [] : [encodeBatch(closed)]
  }

  finish(): Batch[] {
    this.usable('finish')
    let out: Batch[] = []
    if (this.sink.k === 'agg') {
      const state = this.sink.state ?? new KeyedAgg('utf8', this.sink.value !== undefined)
      this.sink.state = undefined
      out = [encodeBatch(toBatch(state.finish()))]
    } else if (this.sink.k === 'window') {
      out = [encodeBatch(toBatch(this.sink.state.finish()))]
    }
    this.done = true
    return out
  }
}

function toBatch(cols: Array<[string, RCol]>): RBatch {
  return { cols, rows: cols[0] === undefined ? 0 : colLen(cols[0][1]) }
}
