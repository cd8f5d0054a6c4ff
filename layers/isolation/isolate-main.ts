// Entry point of an isolated instance's worker thread or child process: rebuilds the operator from its module and runs it for the host.
//
// Loaded by the isolation layer, never imported by programs. The same file serves both modes: in
// a worker thread it talks over `parentPort` (batches transferred), in a child process over the
// IPC channel (advanced serialization: batches copied once). It says `hello`, receives `init`,
// imports the module, checks that the operator it builds has the annotated operator's ports, says
// `ready`, then answers the host's calls. A child process exits when its parent goes away.

import { parentPort, Worker } from 'node:worker_threads'
import type { Operator } from '../../kernel/index.js'
import { loadOperator } from './annotations.js'
import { IsolationModuleError } from './errors.js'
import { serializeError, type HostMessage, type InitMessage } from './protocol.js'
import { IsolateRuntime, type SendToHost } from './runtime.js'

/** Exit code of an isolated side that died of an uncaught error (the host reports a `crash`). */
const FATAL_EXIT = 70

const send: SendToHost =
  parentPort !== null
    ? (message, transfer) => parentPort!.postMessage(message, transfer as ArrayBuffer[])
    : (message) => {
        process.send!(message)
      }

/**
 * A child's guard: a thread of its own that kills the child once its parent is gone (it was
 * adopted by another process), even while the operator's code holds the main thread in a busy
 * loop and the IPC channel's `disconnect` event cannot run.
 */
const GUARD = `
const { workerData } = require('node:worker_threads');
setInterval(() => { if (process.ppid !== workerData.parent) process.kill(process.pid, 'SIGKILL') }, 250);
`

function listen(handler: (message: HostMessage) => void): void {
  if (parentPort !== null) parentPort.on('message', handler)
  else {
    process.on('message', (message) => handler(message as HostMessage))
    // No orphans: the child goes when its parent does.
    process.on('disconnect', () => process.exit(0))
    new Worker(GUARD, { eval: true, workerData: { parent: process.ppid }, resourceLimits: { maxOldGenerationSizeMb: 8 } }).unref()
  }
}

/** Reports an error nothing caught (a floating promise of the operator …) and exits: the host records a crash. */
function fatal(error: unknown): void {
  try {
    send({ t: 'fatal', error: serializeError(error) }, [])
  } catch {
    // The channel may be gone already.
  }
  if (parentPort !== null) process.exit(FATAL_EXIT)
  // A child's IPC send is asynchronous: give it a moment to leave.
  setTimeout(() => process.exit(FATAL_EXIT), 50).unref()
  process.exitCode = FATAL_EXIT
}
process.on('uncaughtException', fatal)
process.on('unhandledRejection', fatal)

let runtime: IsolateRuntime | undefined
const early: HostMessage[] = []

listen((message) => {
  if (message.t === 'ping') return send({ t: 'pong', n: message.n }, [])
  if (message.t === 'init') return void init(message)
  if (runtime === undefined) early.push(message)
  else runtime.receive(message)
})
send({ t: 'hello' }, [])

async function init(message: InitMessage): Promise<void> {
  const name = message.info.operator
  let operator: Operator
  try {
    operator = await loadOperator(message.from, name)
    samePorts(name, message, operator)
    runtime = new IsolateRuntime(
      operator,
      message.info,
      message.crashes,
      send,
      message.progress === undefined ? undefined : new Int32Array(message.progress),
      message.watched === true,
    )
  } catch (error) {
    const reason = error instanceof IsolationModuleError ? error.reason : error instanceof Error ? `${error.name}: ${error.message}` : String(error)
    send({ t: 'init-failed', reason }, [])
    return
  }
  send({ t: 'ready' }, [])
  for (const queued of early.splice(0)) runtime.receive(queued)
}

function samePorts(name: string, message: InitMessage, operator: Operator): void {
  const inputs = Object.keys(operator.inputs).sort()
  const outputs = Object.keys(operator.outputs).sort()
  const want = { inputs: [...message.inputs].sort(), outputs: [...message.outputs].sort() }
  if (inputs.join(',') !== want.inputs.join(',') || outputs.join(',') !== want.outputs.join(',')) {
    throw new IsolationModuleError(
      name,
      message.from.module,
      message.from.export ?? 'default',
      `it builds operator ${operator.name} with inputs [${inputs.join(', ')}] and outputs [${outputs.join(', ')}], but the annotated operator has inputs [${want.inputs.join(', ')}] and outputs [${want.outputs.join(', ')}]`,
    )
  }
}
