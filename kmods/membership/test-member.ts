// A member in its own process, for membership tests that kill it: starts a peer node and joins through its bootstrap addresses.
// Run: fork('kmods/membership/test-member.ts', [workdir, pskFile, heartbeatMs, suspectAfterMs, deadAfterMs, ...bootstrap], { execArgv: ['--import', 'tsx'] })

import '../transport/polyfill.js'
import { createPeerNode, readPskFile } from '../transport/index.js'
import { startMembership } from './membership.js'

const [workdir, pskFile, heartbeatMs, suspectAfterMs, deadAfterMs, ...bootstrap] = process.argv.slice(2)
if (workdir === undefined || pskFile === undefined) throw new Error('usage: test-member.ts <workdir> <psk file> <heartbeatMs> <suspectAfterMs> <deadAfterMs> [bootstrap…]')
const node = await createPeerNode({ workdir, psk: await readPskFile(pskFile), tags: { role: 'child' } })
const membership = await startMembership(node, { bootstrap, heartbeatMs: Number(heartbeatMs), suspectAfterMs: Number(suspectAfterMs), deadAfterMs: Number(deadAfterMs) })
const shutdown = async (): Promise<void> => {
  await membership.stop()
  await node.stop()
  process.exit(0)
}
// No orphans: when the parent goes away, so does this member.
process.on('disconnect', () => void shutdown())
process.on('message', (message: { cmd: string }) => {
  if (message.cmd === 'leave') void membership.leave().then(shutdown)
})
process.send?.({ type: 'ready', peerId: node.peerId, address: node.multiaddrs()[0], pid: process.pid })
