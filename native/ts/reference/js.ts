// Reading JavaScript values the way the native binding does; mirrors native/src/js.rs.

/** The kind of a value as the native core classifies it: a typeof name, `array`, `object`, or a typed array's name. */
export function kindOf(v: unknown): string {
  if (v === null) return 'null'
  const t = typeof v
  if (t !== 'object') return t
  if (Array.isArray(v)) return 'array'
  if (ArrayBuffer.isView(v) && !(v instanceof DataView)) return Object.prototype.toString.call(v).slice(8, -1)
  return 'object'
}

/** A kind with its article, as error messages name it (`a string`, `an Int8Array`). */
export function describeKind(k: string): string {
  if (k === 'undefined' || k === 'null') return k
  if (k.endsWith('Array')) return /^[AEIOU]/.test(k) ? `an ${k}` : `a ${k}`
  return /^[aeiou]/.test(k) ? `an ${k}` : `a ${k}`
}

/** Reads property `name` of an object (running any getter, as the native core does). */
export function field(obj: unknown, name: string): unknown {
  return (obj as Record<string, unknown>)[name]
}

/** A JavaScript value read into plain data (a chain spec), as the native core's `JsVal`. */
export type JsVal =
  | { readonly t: 'undefined' | 'null' }
  | { readonly t: 'bool'; readonly v: boolean }
  | { readonly t: 'num'; readonly v: number }
  | { readonly t: 'str'; readonly v: string }
  | { readonly t: 'arr'; readonly v: readonly JsVal[] }
  | { readonly t: 'obj'; readonly v: ReadonlyArray<readonly [string, JsVal]> }
  | { readonly t: 'other'; readonly d: string }

/** Reads `v` into a {@link JsVal}, descending at most `depth` levels of arrays and objects. */
export function readJsVal(v: unknown, depth: number): JsVal {
  const k = kindOf(v)
  switch (k) {
    case 'undefined':
    case 'null':
      return { t: k }
    case 'boolean':
      return { t: 'bool', v: v as boolean }
    case 'number':
      return { t: 'num', v: v as number }
    case 'string':
      return { t: 'str', v: v as string }
    case 'array':
      if (depth > 0) return { t: 'arr', v: Array.from({ length: (v as unknown[]).length }, (_, i) => readJsVal((v as unknown[])[i], depth - 1)) }
      break
    case 'object':
      if (depth > 0) return { t: 'obj', v: Object.keys(v as object).map((name) => [name, readJsVal(field(v, name), depth - 1)] as const) }
      break
  }
  return { t: 'other', d: describeKind(k) }
}

/** A read value's kind with its article, as error messages name it. */
export function describeVal(v: JsVal): string {
  switch (v.t) {
    case 'bool':
      return 'a boolean'
    case 'num':
      return 'a number'
    case 'str':
      return 'a string'
    case 'arr':
      return 'an array'
    case 'obj':
      return 'an object'
    case 'other':
      return v.d
    default:
      return v.t
  }
}
