// Summarizes a V8 .cpuprofile: self time by function and by file, split by whose stack it ran in.
//
//   node --cpu-prof --cpu-prof-dir=prof --expose-gc dist/bench/pipeline.js
//   node bench/cpuprofile-summary.mjs prof/*.cpuprofile [top=25]
//
// A sample counts as `lamina` when its stack passes through dist/kernel/, as `rxjs` when it passes
// through an rxjs operator (the kernel's own Subjects aside), else `other` (GC, idle, set-up). Self
// time of inlined functions is charged to the function they were inlined into; run with
// `--no-turbo-inlining` for a finer (slower, less faithful) split.

import { readFileSync } from 'node:fs'

const [file, topArg] = process.argv.slice(2)
if (file === undefined) {
  process.stderr.write('usage: node bench/cpuprofile-summary.mjs FILE.cpuprofile [top]\n')
  process.exit(2)
}
const top = Number(topArg ?? 25)
const profile = JSON.parse(readFileSync(file, 'utf8'))
const nodes = new Map(profile.nodes.map((node) => [node.id, node]))
const parentOf = new Map()
for (const node of profile.nodes) for (const child of node.children ?? []) parentOf.set(child, node.id)

const selfMicros = new Map()
profile.samples.forEach((id, i) => selfMicros.set(id, (selfMicros.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)))

const shortUrl = (url) => url.replace(/^file:\/\/.*?\/(dist|node_modules)\//, (_, dir) => (dir === 'dist' ? 'dist/' : '')).replace(/^file:\/\//, '')
const label = (frame) => `${frame.functionName || '(anonymous)'} ${shortUrl(frame.url)}:${frame.lineNumber + 1}`

function groupOf(id) {
  let group = 'other'
  for (let at = id; at !== undefined; at = parentOf.get(at)) {
    const url = nodes.get(at).callFrame.url
    if (url.includes('/rxjs/') && url.includes('/operators/')) return 'rxjs'
    if (url.includes('/dist/kernel/')) group = 'lamina'
  }
  return group
}

const groups = new Map()
for (const [id, micros] of selfMicros) {
  const group = groupOf(id)
  const entry = groups.get(group) ?? { total: 0, functions: new Map() }
  entry.total += micros
  const key = label(nodes.get(id).callFrame)
  entry.functions.set(key, (entry.functions.get(key) ?? 0) + micros)
  groups.set(group, entry)
}

const ms = (micros) => `${(micros / 1000).toFixed(1).padStart(9)} ms`
const pct = (part, whole) => `${((100 * part) / whole).toFixed(1).padStart(5)}%`
const all = [...groups.values()].reduce((sum, g) => sum + g.total, 0)
console.log(`total ${ms(all)}: ${[...groups].map(([name, g]) => `${name} ${(g.total / 1000).toFixed(0)} ms`).join(', ')}`)
for (const [name, group] of [...groups].sort((a, b) => b[1].total - a[1].total)) {
  console.log(`\n== ${name}: self time by function (${(group.total / 1000).toFixed(0)} ms)`)
  const sorted = [...group.functions].sort((a, b) => b[1] - a[1])
  for (const [fn, micros] of sorted.slice(0, top)) console.log(`${ms(micros)} ${pct(micros, group.total)}  ${fn}`)
  const files = new Map()
  for (const [fn, micros] of group.functions) {
    const where = fn.slice(fn.lastIndexOf(' ') + 1).replace(/:\d+$/, '') || '(native)'
    files.set(where, (files.get(where) ?? 0) + micros)
  }
  console.log(`-- by file`)
  for (const [where, micros] of [...files].sort((a, b) => b[1] - a[1]).slice(0, 12)) console.log(`${ms(micros)} ${pct(micros, group.total)}  ${where}`)
}
