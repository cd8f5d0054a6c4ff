// The expression language of `filter` and `map` in TypeScript: the reference for native/src/expr.rs.
//
// Same grammar, limits, types, evaluation and error kinds as the Rust version (see its module doc).

import { NativeBatchError, NativeExprError } from './errors.js'

/** Deepest allowed expression tree, and deepest nesting while parsing. */
export const MAX_HEIGHT = 64

type Tok =
  | { readonly t: 'num'; readonly v: number }
  | { readonly t: 'str'; readonly v: string }
  | { readonly t: 'ident'; readonly v: string }
  | { readonly t: 'op'; readonly v: string }
  | { readonly t: 'end' }

const OPS2 = ['||', '&&', '==', '!=', '<=', '>=']
const OPS1 = ['<', '>', '+', '-', '*', '/', '%', '!', '(', ')', ',']
const FUNCS: ReadonlyMap<string, number> = new Map([
  ['len', 1],
  ['lower', 1],
  ['abs', 1],
  ['floor', 1],
  ['ceil', 1],
  ['sqrt', 1],
  ['min', 2],
  ['max', 2],
])
const LEVELS: readonly (readonly string[])[] = [['||'], ['&&'], ['==', '!='], ['<', '<=', '>', '>='], ['+', '-'], ['*', '/', '%']]

const isDigit = (c: string | undefined): boolean => c !== undefined && c >= '0' && c <= '9'
const isAlpha = (c: string | undefined): boolean => c !== undefined && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))

function lex(src: string): Array<[Tok, number]> {
  const chars = [...src]
  const pos: number[] = []
  let p = 0
  for (const c of chars) {
    pos.push(p)
    p += c.length
  }
  pos.push(p)
  const at = (i: number): number => pos[i] ?? p
  const out: Array<[Tok, number]> = []
  let i = 0
  while (i < chars.length) {
    const c = chars[i] as string
    const start = i
    if (c === ' ' || c === '\t' || c === '\n' || c === '\r') {
      i++
      continue
    }
    if (isDigit(c) || (c === '.' && isDigit(chars[i + 1]))) {
      while (isDigit(chars[i])) i++
      if (chars[i] === '.') {
        i++
        while (isDigit(chars[i])) i++
      }
      if (chars[i] === 'e' || chars[i] === 'E') {
        let j = i + 1
        if (chars[j] === '+' || chars[j] === '-') j++
        if (isDigit(chars[j])) {
          i = j
          while (isDigit(chars[i])) i++
        }
      }
      out.push([{ t: 'num', v: Number(chars.slice(start, i).join('')) }, at(start)])
      continue
    }
    if (isAlpha(c) || c === '_') {
      while (isAlpha(chars[i]) || isDigit(chars[i]) || chars[i] === '_') i++
      out.push([{ t: 'ident', v: chars.slice(start, i).join('') }, at(start)])
      continue
    }
    if (c === '"' || c === "'") {
      i++
      let s = ''
      for (;;) {
        const d = chars[i]
        if (d === undefined) throw new NativeExprError(at(start), 'unterminated string')
        if (d === c) {
          i++
          break
        }
        if (d === '\\') {
          const e = chars[i + 1]
          const map: Record<string, string> = { '\\': '\\', '"': '"', "'": "'", n: '\n', t: '\t' }
          const un = e === undefined ? undefined : map[e]
          if (un === undefined) throw new NativeExprError(at(i), 'unknown escape')
          s += un
          i += 2
        } else {
          s += d
          i++
        }
      }
      out.push([{ t: 'str', v: s }, at(start)])
      continue
    }
    const two = (chars[i] ?? '') + (chars[i + 1] ?? '')
    if (i + 1 < chars.length && OPS2.includes(two)) {
      out.push([{ t: 'op', v: two }, at(start)])
      i += 2
      continue
    }
    if (OPS1.includes(c)) {
      out.push([{ t: 'op', v: c }, at(start)])
      i++
      continue
    }
    throw new NativeExprError(at(start), `unexpected character ${JSON.stringify(c)}`)
  }
  out.push([{ t: 'end' }, p])
  return out
}

/** A parsed, not yet typed, expression. */
export type Ast = { readonly pos: number; readonly height: number } & (
  | { readonly k: 'num'; readonly v: number }
  | { readonly k: 'str'; readonly v: string }
  | { readonly k: 'bool'; readonly v: boolean }
  | { readonly k: 'col'; readonly name: string }
  | { readonly k: 'neg' | 'not'; readonly inner: Ast }
  | { readonly k: 'bin'; readonly op: string; readonly l: Ast; readonly r: Ast }
  | { readonly k: 'call'; readonly f: string; readonly args: readonly Ast[] }
)

type AstBody = Ast extends infer A ? (A extends Ast ? Omit<A, 'pos' | 'height'> : never) : never

function describe(t: Tok): string {
  switch (t.t) {
    case 'num':
      return 'number'
    case 'str':
      return 'string'
    case 'ident':
      return `identifier ${JSON.stringify(t.v)}`
    case 'op':
      return JSON.stringify(t.v)
    case 'end':
      return 'end of expression'
  }
}

class Parser {
  private i = 0
  private depth = 0
  constructor(private readonly toks: Array<[Tok, number]>) {}

  peek(): [Tok, number] {
    return this.toks[this.i] as [Tok, number]
  }

  private node(body: AstBody, pos: number, heights: readonly number[]): Ast {
    const height = 1 + Math.max(0, ...heights)
    if (height > MAX_HEIGHT) throw new NativeExprError(pos, `expression is nested more than ${MAX_HEIGHT} levels deep`)
    return { ...body, pos, height } as Ast
  }

  private enter(pos: number): void {
    this.depth++
    if (this.depth > MAX_HEIGHT) throw new NativeExprError(pos, `expression is nested more than ${MAX_HEIGHT} levels deep`)
  }

  private isOp(t: Tok, v: string): boolean {
    return t.t === 'op' && t.v === v
  }

  binary(level: number): Ast {
    const ops = LEVELS[level]
    if (ops === undefined) return this.unary()
    let left = this.binary(level + 1)
    for (;;) {
      const [tok, pos] = this.peek()
      if (tok.t === 'op' && ops.includes(tok.v)) {
        this.i++
        const right = this.binary(level + 1)
        left = this.node({ k: 'bin', op: tok.v, l: left, r: right }, pos, [left.height, right.height])
      } else {
        return left
      }
    }
  }

  private unary(): Ast {
    const [tok, pos] = this.peek()
    if (this.isOp(tok, '-') || this.isOp(tok, '!')) {
      this.i++
      this.enter(pos)
      const inner = this.unary()
      this.depth--
      return this.node({ k: this.isOp(tok, '-') ? 'neg' : 'not', inner }, pos, [inner.height])
    }
    return this.primary()
  }

  private expect(op: string): void {
    const [tok, pos] = this.peek()
    if (!this.isOp(tok, op)) throw new NativeExprError(pos, `expected ${JSON.stringify(op)}, found ${describe(tok)}`)
    this.i++
  }

  private primary(): Ast {
    const [tok, pos] = this.peek()
    this.i++
    switch (tok.t) {
      case 'num':
        return this.node({ k: 'num', v: tok.v }, pos, [])
      case 'str':
        return this.node({ k: 'str', v: tok.v }, pos, [])
      case 'ident': {
        if (tok.v === 'true' || tok.v === 'false') return this.node({ k: 'bool', v: tok.v === 'true' }, pos, [])
        if (!this.isOp(this.peek()[0], '(')) return this.node({ k: 'col', name: tok.v }, pos, [])
        const arity = FUNCS.get(tok.v)
        if (arity === undefined) throw new NativeExprError(pos, `unknown function ${JSON.stringify(tok.v)}`)
        this.i++
        this.enter(pos)
        const args: Ast[] = []
        if (!this.isOp(this.peek()[0], ')')) {
          for (;;) {
            args.push(this.binary(0))
            if (this.isOp(this.peek()[0], ',')) this.i++
            else break
          }
        }
        this.expect(')')
        this.depth--
        if (args.length !== arity) throw new NativeExprError(pos, `${tok.v} takes ${arity} argument(s), got ${args.length}`)
        return this.node(
          { k: 'call', f: tok.v, args },
          pos,
          args.map((a) => a.height),
        )
      }
      case 'op':
        if (tok.v === '(') {
          this.enter(pos)
          const inner = this.binary(0)
          this.expect(')')
          this.depth--
          return inner
        }
        throw new NativeExprError(pos, `unexpected ${describe(tok)}`)
      case 'end':
        throw new NativeExprError(pos, `unexpected ${describe(tok)}`)
    }
  }
}

/** Parses an expression (column types are not known yet). Throws {@link NativeExprError}. */
export function parseExpr(src: string): Ast {
  const p = new Parser(lex(src))
  const ast = p.binary(0)
  const [tok, pos] = p.peek()
  if (tok.t !== 'end') throw new NativeExprError(pos, `unexpected ${describe(tok)} after the expression`)
  return ast
}

/** Values of the columns an expression reads, by position: numbers or strings. */
export type ExprColumns = ReadonlyArray<Float64Array | readonly string[]>

/** A typed expression, evaluated row by row. */
export type Bound =
  | { readonly ty: 'number'; readonly eval: (cols: ExprColumns, row: number) => number }
  | { readonly ty: 'string'; readonly eval: (cols: ExprColumns, row: number) => string }
  | { readonly ty: 'boolean'; readonly eval: (cols: ExprColumns, row: number) => boolean }

/** Types `ast` against a schema (column names and kinds, by position). */
export function bindExpr(ast: Ast, schema: ReadonlyArray<readonly [string, 'f64' | 'utf8']>): Bound {
  const pos = ast.pos
  switch (ast.k) {
    case 'num': {
      const v = ast.v
      return { ty: 'number', eval: () => v }
    }
    case 'str': {
      const v = ast.v
      return { ty: 'string', eval: () => v }
    }
    case 'bool': {
      const v = ast.v
      return { ty: 'boolean', eval: () => v }
    }
    case 'col': {
      const i = schema.findIndex(([n]) => n === ast.name)
      const entry = schema[i]
      if (entry === undefined) throw new NativeBatchError(ast.name, undefined, `missing column (used by the expression at position ${pos})`)
      return entry[1] === 'f64'
        ? { ty: 'number', eval: (cols, row) => (cols[i] as Float64Array)[row] as number }
        : { ty: 'string', eval: (cols, row) => (cols[i] as readonly string[])[row] as string }
    }
    case 'neg': {
      const e = bindExpr(ast.inner, schema)
      if (e.ty !== 'number') throw new NativeExprError(pos, `'-' needs a number, got a ${e.ty}`)
      return { ty: 'number', eval: (c, r) => -e.eval(c, r) }
    }
    case 'not': {
      const e = bindExpr(ast.inner, schema)
      if (e.ty !== 'boolean') throw new NativeExprError(pos, `'!' needs a boolean, got a ${e.ty}`)
      return { ty: 'boolean', eval: (c, r) => !e.eval(c, r) }
    }
    case 'bin': {
      const l = bindExpr(ast.l, schema)
      const r = bindExpr(ast.r, schema)
      const op = ast.op
      if ((op === '||' || op === '&&') && l.ty === 'boolean' && r.ty === 'boolean') {
        return op === '||' ? { ty: 'boolean', eval: (c, w) => l.eval(c, w) || r.eval(c, w) } : { ty: 'boolean', eval: (c, w) => l.eval(c, w) && r.eval(c, w) }
      }
      if ((op === '==' || op === '!=') && l.ty === r.ty) {
        const eq = op === '=='
        return { ty: 'boolean', eval: (c, w) => (l.eval(c, w) === r.eval(c, w)) === eq }
      }
      if (l.ty === 'number' && r.ty === 'number') {
        const a = l.eval
        const b = r.eval
        switch (op) {
          case '<':
            return { ty: 'boolean', eval: (c, w) => a(c, w) < b(c, w) }
          case '<=':
            return { ty: 'boolean', eval: (c, w) => a(c, w) <= b(c, w) }
          case '>':
            return { ty: 'boolean', eval: (c, w) => a(c, w) > b(c, w) }
          case '>=':
            return { ty: 'boolean', eval: (c, w) => a(c, w) >= b(c, w) }
          case '+':
            return { ty: 'number', eval: (c, w) => a(c, w) + b(c, w) }
          case '-':
            return { ty: 'number', eval: (c, w) => a(c, w) - b(c, w) }
          case '*':
            return { ty: 'number', eval: (c, w) => a(c, w) * b(c, w) }
          case '/':
            return { ty: 'number', eval: (c, w) => a(c, w) / b(c, w) }
          case '%':
            return { ty: 'number', eval: (c, w) => a(c, w) % b(c, w) }
        }
      }
      throw new NativeExprError(pos, `operator ${op} does not apply to a ${l.ty} and a ${r.ty}`)
    }
    case 'call': {
      const args = ast.args.map((a) => bindExpr(a, schema))
      const [a, b] = args
      const f = ast.f
      if ((f === 'len' || f === 'lower') && a?.ty === 'string' && b === undefined) {
        const s = a.eval
        return f === 'len' ? { ty: 'number', eval: (c, w) => s(c, w).length } : { ty: 'string', eval: (c, w) => s(c, w).toLowerCase() }
      }
      if (a?.ty === 'number' && b === undefined) {
        const x = a.eval
        switch (f) {
          case 'abs':
            return { ty: 'number', eval: (c, w) => Math.abs(x(c, w)) }
          case 'floor':
            return { ty: 'number', eval: (c, w) => Math.floor(x(c, w)) }
          case 'ceil':
            return { ty: 'number', eval: (c, w) => Math.ceil(x(c, w)) }
          case 'sqrt':
            return { ty: 'number', eval: (c, w) => Math.sqrt(x(c, w)) }
        }
      }
      if ((f === 'min' || f === 'max') && a?.ty === 'number' && b?.ty === 'number') {
        const x = a.eval
        const y = b.eval
        return f === 'min' ? { ty: 'number', eval: (c, w) => Math.min(x(c, w), y(c, w)) } : { ty: 'number', eval: (c, w) => Math.max(x(c, w), y(c, w)) }
      }
      throw new NativeExprError(pos, `${f} takes ${f === 'len' || f === 'lower' ? 'a string' : 'numbers'}`)
    }
  }
}
