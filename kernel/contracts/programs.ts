// Contracts of programs: operators and links as one value.
// This file imports no implementation.

import type { Operator, OperatorDescription } from './operators.js'
import type { Link } from './links.js'

/** What `describe()` tells about a program. */
export interface ProgramDescription {
  readonly name: string
  readonly operators: readonly OperatorDescription[]
  readonly links: readonly { readonly from: string; readonly to: string; readonly partitioning: string; readonly capacity?: number }[]
}

/** A validated program: operators + links. Immutable; every change returns a new program. */
export interface Program {
  readonly name: string
  readonly operators: readonly Operator[]
  readonly links: readonly Link[]
  operator(name: string): Operator | undefined
  /** A copy with operators and/or links replaced, validated once (for edits that touch both). */
  with(parts: { readonly operators?: readonly Operator[]; readonly links?: readonly Link[] }): Program
  /** A copy with an operator added, replaced (same name) or removed. */
  withOperator(operator: Operator): Program
  withoutOperator(name: string): Program
  withLinks(links: readonly Link[]): Program
  /** A copy in which `fn` may replace each operator (names must stay the same). */
  mapOperators(fn: (operator: Operator) => Operator): Program
  describe(): ProgramDescription
  toJSON(): ProgramDescription
  /** The program as a Graphviz dot graph. */
  toDot(): string
  /** The program as indented text, one operator and its links per line. */
  toString(): string
}
