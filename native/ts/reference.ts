// Pure TypeScript reference implementations of every native operator, with the same semantics,
// the same validation order and the same error codes; property tests hold the two equal.
//
// The code lives in reference/, one file per file of the Rust core (reference/agg.ts mirrors
// native/src/agg.rs, and so on); this entry re-exports what callers use.

export { hashKey } from './reference/hash.js'
export { hashJoin, hashPartition, referenceEngine, tokenize, wordcount } from './reference/lib.js'
export { ReferenceChain } from './reference/plan.js'
export { words } from './reference/tokenize.js'
