// The child process side of an isolated request handler (isolated.ts): imports the handler's
// module, answers each call the worker sends, and reports what it threw with its code. Anything
// that takes this process down (an exit, a crash, a heap out of memory) fails only the attempts
// running in it; the worker's peer goes on.
import { pathToFileURL } from 'node:url'

interface Call {
  readonly t: 'call'
  readonly seq: number
  readonly input: unknown
  readonly ctx: { readonly name: string; readonly id: string; readonly idempotencyKey: string; readonly attempt: number; readonly worker: string }
}

const [module, exportName] = process.argv.slice(2) as [string, string]
const send = (message: unknown): void => void process.send?.(message)
const loaded = (await import(module.startsWith('file:') ? module : pathToFileURL(module).href)) as Record<string, unknown>
const handler = loaded[exportName]
if (typeof handler !== 'function') {
  send({ t: 'fatal', message: `module ${module} has no function export ${JSON.stringify(exportName)} (it exports ${Object.keys(loaded).join(', ') || 'nothing'})` })
  process.exit(70)
}
// The worker aborts an attempt by stopping this process; here the signal never aborts.
const signal = new AbortController().signal
process.on('message', (message: Call) => {
  if (message?.t !== 'call') return
  Promise.resolve()
    .then(() => (handler as (input: unknown, ctx: unknown) => unknown)(message.input, { ...message.ctx, signal }))
    .then(
      (value) => send({ t: 'ok', seq: message.seq, value: value === undefined ? null : value }),
      (error: unknown) =>
        send({
          t: 'err',
          seq: message.seq,
          code: typeof (error as { code?: unknown })?.code === 'string' ? (error as { code: string }).code : 'ERR_HANDLER',
          message: error instanceof Error ? error.message : String(error),
        }),
    )
})
// The worker going away (its IPC channel closing) ends this process: no orphans.
process.on('disconnect', () => process.exit(0))
send({ t: 'ready' })
