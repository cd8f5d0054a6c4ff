// Programs as validated, immutable values: operators + links, inspectable and printable.

import type { Link, Operator, Program, ProgramDescription } from './contracts.js'
import { compatible } from './codec.js'
import {
  DanglingInputError,
  DuplicateOperatorError,
  InvalidOptionError,
  InvalidProgramError,
  type LaminaError,
  PortTypeMismatchError,
  UnknownOperatorError,
  UnknownPortError,
} from './errors.js'
import { describePartitioning } from './link.js'
import { isKeyed, parallelismOf } from './operator.js'

/** The parts of a program. */
export interface ProgramDefinition {
  readonly operators: readonly Operator[]
  readonly links: readonly Link[]
}

/**
 * Builds a program and validates it: unique operator names, links between existing ports of
 * agreeing types, every input fed, partitionings that fit their receivers. Throws
 * InvalidProgramError listing every problem, each a typed error naming operators and ports.
 *
 * ```ts
 * const wordcount = program('wordcount', { operators: [lines, words, count, print], links: [...] })
 * ```
 */
export function program(name: string, definition: ProgramDefinition): Program {
  return new ProgramValue(name, definition.operators, definition.links)
}

/** Every problem of a would-be program; empty when it is valid. */
export function validateProgram(operators: readonly Operator[], links: readonly Link[]): LaminaError[] {
  const problems: LaminaError[] = []
  const byName = new Map<string, Operator>()
  for (const operator of operators) {
    if (byName.has(operator.name)) problems.push(new DuplicateOperatorError(operator.name))
    else byName.set(operator.name, operator)
  }
  const fed = new Set<string>()
  for (const l of links) {
    const from = byName.get(l.from.operator)
    const to = byName.get(l.to.operator)
    if (from === undefined) problems.push(new UnknownOperatorError(l.from.operator, l.id))
    if (to === undefined) problems.push(new UnknownOperatorError(l.to.operator, l.id))
    if (from === undefined || to === undefined) continue
    const out = from.outputs[l.from.port]
    const input = to.inputs[l.to.port]
    if (out === undefined) problems.push(new UnknownPortError(from.name, l.from.port, 'out', Object.keys(from.outputs)))
    if (input === undefined) problems.push(new UnknownPortError(to.name, l.to.port, 'in', Object.keys(to.inputs)))
    if (out === undefined || input === undefined) continue
    fed.add(`${to.name}.${l.to.port}`)
    if (!compatible(out.codec, input.codec)) {
      problems.push(new PortTypeMismatchError({ operator: from.name, port: l.from.port, type: out.codec.name }, { operator: to.name, port: l.to.port, type: input.codec.name }))
    }
    const partitioning = l.partitioning
    if (partitioning?.kind === 'hash' && partitioning.key === undefined && !isKeyed(to)) {
      problems.push(new InvalidOptionError(`link ${l.id}`, 'partitioning', `hashes by the receiver's key, but ${to.name} is not keyed: pass hash(keyFn)`))
    }
    if (isKeyed(to) && parallelismOf(to) > 1 && partitioning !== undefined && partitioning.kind !== 'hash') {
      problems.push(
        new InvalidOptionError(
          `link ${l.id}`,
          'partitioning',
          `is ${partitioning.kind}, but ${to.name} is keyed with parallelism ${parallelismOf(to)}: records of one key must reach one instance, use hash()`,
        ),
      )
    }
  }
  for (const operator of byName.values()) {
    for (const port of Object.keys(operator.inputs)) {
      if (!fed.has(`${operator.name}.${port}`)) problems.push(new DanglingInputError(operator.name, port))
    }
  }
  return problems
}

class ProgramValue implements Program {
  private readonly byName: ReadonlyMap<string, Operator>

  constructor(
    readonly name: string,
    operators: readonly Operator[],
    links: readonly Link[],
  ) {
    const problems = validateProgram(operators, links)
    if (problems.length > 0) throw new InvalidProgramError(name, problems)
    this.operators = Object.freeze([...operators])
    this.links = Object.freeze([...links])
    this.byName = new Map(operators.map((o) => [o.name, o]))
    Object.freeze(this)
  }

  readonly operators: readonly Operator[]
  readonly links: readonly Link[]

  operator(name: string): Operator | undefined {
    return this.byName.get(name)
  }

  with(parts: { readonly operators?: readonly Operator[]; readonly links?: readonly Link[] }): Program {
    return new ProgramValue(this.name, parts.operators ?? this.operators, parts.links ?? this.links)
  }

  withOperator(operator: Operator): Program {
    const replaced = this.byName.has(operator.name)
    const operators = replaced ? this.operators.map((o) => (o.name === operator.name ? operator : o)) : [...this.operators, operator]
    return new ProgramValue(this.name, operators, this.links)
  }

  withoutOperator(name: string): Program {
    return new ProgramValue(
      this.name,
      this.operators.filter((o) => o.name !== name),
      this.links.filter((l) => l.from.operator !== name && l.to.operator !== name),
    )
  }

  withLinks(links: readonly Link[]): Program {
    return new ProgramValue(this.name, this.operators, links)
  }

  mapOperators(fn: (operator: Operator) => Operator): Program {
    const operators = this.operators.map((o) => {
      const mapped = fn(o)
      if (mapped.name !== o.name) throw new InvalidOptionError(`mapOperators(${o.name})`, 'name', `changed to ${mapped.name}: rename with withOperator/withLinks instead`)
      return mapped
    })
    return new ProgramValue(this.name, operators, this.links)
  }

  describe(): ProgramDescription {
    return {
      name: this.name,
      operators: this.operators.map((o) => o.describe()),
      links: this.links.map((l) => ({
        from: `${l.from.operator}.${l.from.port}`,
        to: `${l.to.operator}.${l.to.port}`,
        partitioning: describePartitioning(l.partitioning),
        ...(l.capacity === undefined ? {} : { capacity: l.capacity }),
      })),
    }
  }

  toJSON(): ProgramDescription {
    return this.describe()
  }

  toDot(): string {
    const lines = [`digraph ${JSON.stringify(this.name)} {`, '  rankdir=LR;']
    for (const o of this.operators) {
      const d = o.describe()
      const parallel = parallelismOf(o) > 1 ? ` x${parallelismOf(o)}` : ''
      lines.push(`  ${JSON.stringify(o.name)} [label=${JSON.stringify(`${o.name}${parallel}\n${d.form}${d.keyed ? ', keyed' : ''}`)}];`)
    }
    for (const l of this.links) {
      const label = `${l.from.port} -> ${l.to.port} (${describePartitioning(l.partitioning)})`
      lines.push(`  ${JSON.stringify(l.from.operator)} -> ${JSON.stringify(l.to.operator)} [label=${JSON.stringify(label)}];`)
    }
    lines.push('}')
    return lines.join('\n')
  }

  toString(): string {
    const lines = [`program ${this.name}`]
    for (const o of this.operators) {
      const d = o.describe()
      const ports = (ps: { readonly [p: string]: string }) =>
        Object.entries(ps)
          .map(([p, type]) => `${p}: ${type}`)
          .join(', ')
      lines.push(`  ${o.name} (${d.role}, ${d.form}${d.keyed ? ', keyed' : ''}, x${parallelismOf(o)})  in(${ports(d.inputs)})  out(${ports(d.outputs)})`)
      for (const l of this.links.filter((x) => x.from.operator === o.name)) {
        lines.push(`    ${l.from.port} -> ${l.to.operator}.${l.to.port} [${describePartitioning(l.partitioning)}]`)
      }
    }
    return lines.join('\n')
  }
}
