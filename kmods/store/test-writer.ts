// A child process for store tests: writes `count` keys into a store shared with its parent, then exits.
// Usage: node --import tsx kmods/store/test-writer.ts <path> <ns> <count>

import { openStore } from './store.js'

const [path, ns, count] = process.argv.slice(2)
if (path === undefined || ns === undefined || count === undefined) throw new Error('usage: test-writer.ts <path> <ns> <count>')
const store = openStore(path)
for (let i = 0; i < Number(count); i++) {
  // Alternate single puts and small transactions so the parent's writes interleave with both.
  if (i % 2 === 0) store.put(ns, `k${String(i).padStart(6, '0')}`, `child-${i}`)
  else store.transaction((tx) => tx.put(ns, `k${String(i).padStart(6, '0')}`, `child-${i}`))
}
store.close()
process.send?.({ type: 'done' })
