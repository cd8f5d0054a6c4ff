// A child process for log tests: appends `batches` batches of 3 values to a topic shared with its parent, then exits.
// It starts when the parent says so, so the two processes append at the same time.
// Usage: node --import tsx kmods/log/test-appender.ts <path> <topic> <batches>

import { setTimeout as pace } from 'node:timers/promises'
import { openLog } from './log.js'

const [path, topic, batches] = process.argv.slice(2)
if (path === undefined || topic === undefined || batches === undefined) throw new Error('usage: test-appender.ts <path> <topic> <batches>')
const log = openLog(path, topic)
process.send?.({ type: 'ready' })
await new Promise<void>((resolve) => process.once('message', () => resolve()))
for (let i = 0; i < Number(batches); i++) {
  log.append([0, 1, 2].map((j) => ({ who: 'child', batch: i, j })))
  // Leave the lock free for a moment: SQLite's busy wait is not a queue, so back-to-back appends
  // would starve the parent's (which paces the same way).
  await pace(1)
}
log.close()
process.send?.({ type: 'done' })
