#!/usr/bin/env node
// The `lamina` command: `lamina peer …` runs one peer; `lamina run PROGRAM --peers N [-- args]`
// starts a local cluster, runs the program on it with live progress, and prints a summary;
// `lamina plan PROGRAM --peers FILE` previews where its instances would run.

// The transport entry first: it loads the Promise.withResolvers polyfill before libp2p (Node 20).
import { loadOrCreateIdentity, PEER_DB } from '../kmods/transport/index.js'
import { existsSync, readFileSync } from 'node:fs'
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { createInterface, type Interface } from 'node:readline'
import { parseArgs } from 'node:util'
import { register } from 'tsx/esm/api'
import { loadProgram, packProgram, parsePeerCommand, ProgressDisplay, runPeer, startCluster, totals, type Cluster, type SubmittedJob } from '../services/jobs/index.js'
import { kernel, LaminaError, type PeerDescription, type Program } from '../kernel/index.js'
import { CHECKPOINT_EVENTS, decodePeers, explain, placement, PlacementUnsatisfiableError, planOf, RETRIED, type PlacementPlan } from '../layers/index.js'
import { OPERATOR_USAGE, operatorCommand } from './cluster-commands.js'
import { KV_USAGE, kvCommand } from './kv-command.js'
import { REQUESTS_USAGE, requestsCommand } from './requests-command.js'
import { TXKV_USAGE, txkvCommand } from './txkv-command.js'
import { UsageError } from './errors.js'

const RUN_USAGE = `usage: lamina run PROGRAM [--peers N] [--workdir DIR] [--quiet] [--console] [--] [ARGS…]
  Starts N local peer processes (default 3), runs PROGRAM's default export on them, shows
  progress on stderr, and stops every peer at the end. Exit status 0 when the job finished
  with no dead letters, 1 otherwise.
  --peers N      peer processes to start, 1 to 64 (default 3)
  --workdir DIR  keep the peers' work directories there (default: a temporary directory, removed)
  --quiet        no progress and no log lines on stderr
  --console      read commands from stdin while the job runs: \`rescale OPERATOR N\`
                 (needs the checkpoints layer), \`plan\`
  ARGS           handed to the program's default export`

const PEER_USAGE = `usage: lamina peer --workdir DIR --psk FILE [--create-psk] [--listen ADDR]… [--bootstrap ADDR]… [--allow FILE] [--submitters FILE] [--tag k=v]…
  Runs one peer (for clusters over several hosts) until SIGINT or SIGTERM.
  --workdir DIR     the peer's identity and durable state live there
  --psk FILE        the private network's swarm key; --create-psk writes a new one if FILE is absent
  --listen ADDR     multiaddr to listen on (default /ip4/127.0.0.1/tcp/0); repeatable
  --bootstrap ADDR  a member to join through; repeatable (tried with backoff until --join-timeout)
  --join-timeout MS how long to keep trying to join before exiting 1 with the reason (default 60000)
  --allow FILE      admit only the peer ids listed in FILE (one per line)
  --submitters FILE accept jobs only from the peer ids listed in FILE (default: every admitted peer)
  --tag k=v         a tag placement annotations can match (e.g. name=peer-0); repeatable`

const ID_USAGE = `usage: lamina id --workdir DIR [--create]
  Prints the peer id kept in DIR/peer.db (what other peers put on their --allow and --submitters
  lists, and what a bootstrap address ends with). Fails when DIR holds no identity, unless --create.
  --workdir DIR  the peer's work directory
  --create       create the identity when DIR has none (as lamina peer would on its first start)`

const PLAN_USAGE = `usage: lamina plan PROGRAM --peers FILE [--self ID] [--json] [--] [ARGS…]
  Plans PROGRAM for an imagined cluster, starting nothing, and prints where each operator
  instance would run and which annotation decided it (the placement layer's explanation).
  PROGRAM runs under its own layers, as with lamina run, over placement() when it has no
  placement layer of its own. Exit status 0 when every instance has a place, 1 when the
  annotations cannot be satisfied (the error names the constraint and every peer considered).
  --peers FILE  the peers, JSON: [{"id": "peer-a", "tags": {"zone": "eu", "name": "peer-0"}}, …]
                (tags optional; "capacity": {"cpu": 4} optional, for resources annotations)
  --self ID     the submitting peer, where sources and sinks stay (default "local": this
                process, a peer with no tags, unless FILE lists it)
  --json        print the plan as JSON: {job, self, peers, names, instances: {"OP#i": {peer,
                rule, by, reason, constraints}}}; a placement error as {"error": {code, …}}
  ARGS          handed to the program's default export`

const USAGE = `usage: lamina COMMAND [OPTIONS]   (lamina COMMAND --help for each)
on this machine:
  run PROGRAM …       run a program on a local cluster of peer processes
  plan PROGRAM …      show where a program's instances would run on given peers
  peer …              run one peer of a cluster
  id …                print the peer id of a work directory
against a running cluster (--cluster ADDR --psk FILE, or --config FILE):
  submit PROGRAM …    submit a program; follow it until it ends (or --detach)
  jobs                list the jobs of every member
  status JOB          show a job in detail
  cancel JOB          cancel a running job
  rescale JOB OP N    run operator OP of a job with N instances
  upgrade JOB PROGRAM replace a running job's program with a new version, from a savepoint
  savepoint JOB       keep a checkpoint of a job to start another from
  members             list the cluster's members
  kv get|put|del|scan|watch …   the cluster's KV store (started by startKv)
  requests ls|show|cancel|retry   durable requests journaled in the KV store (lamina/durable)
  txkv get|put|del|if … OP…     one transaction on the cluster's transactional store (startTxKv)`

const COMMANDS = ['run', 'plan', 'peer', 'id', 'help', 'kv', 'txkv', 'requests', ...Object.keys(OPERATOR_USAGE)]

/** The command closest to a mistyped one (at most two edits away), for the hint. */
function closest(command: string): string | undefined {
  const distance = (a: string, b: string): number => {
    let row = Array.from({ length: b.length + 1 }, (_, j) => j)
    for (let i = 1; i <= a.length; i++) {
      const next = [i]
      for (let j = 1; j <= b.length; j++) next[j] = Math.min(row[j]! + 1, next[j - 1]! + 1, row[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1))
      row = next
    }
    return row[b.length]!
  }
  const [best] = COMMANDS.map((c) => [c, distance(command, c)] as const).sort((x, y) => x[1] - y[1])
  return best !== undefined && best[1] <= 2 ? best[0] : undefined
}

const wantsHelp = (argv: readonly string[]): boolean => argv.includes('--help') || argv.includes('-h')

/** Node's parseArgs errors ("Unknown option '--x'") as a usage error of `command`. */
function parsing<T>(command: string, usage: string, parse: () => T): T {
  try {
    return parse()
  } catch (error) {
    throw new UsageError(`lamina ${command}: ${error instanceof Error ? error.message : String(error)}`, usage)
  }
}

/** Splits `lamina run` arguments: options before the program, the program's own after it (or after `--`). */
export function parseRun(argv: readonly string[]): { program: string; peers: number; workdir: string | undefined; quiet: boolean; console: boolean; args: string[] } {
  const dashes = argv.indexOf('--')
  const own = dashes < 0 ? argv : argv.slice(0, dashes)
  const { values, positionals } = parseArgs({
    args: [...own],
    options: { peers: { type: 'string' }, workdir: { type: 'string' }, quiet: { type: 'boolean' }, console: { type: 'boolean' } },
    allowPositionals: true,
    strict: true,
  })
  const [program, ...rest] = positionals
  if (program === undefined) throw new Error('PROGRAM is missing')
  const peers = Number(values.peers ?? 3)
  if (!Number.isInteger(peers) || peers < 1 || peers > 64) throw new Error(`--peers must be an integer from 1 to 64, got ${values.peers}`)
  return { program, peers, workdir: values.workdir, quiet: values.quiet ?? false, console: values.console ?? false, args: [...rest, ...(dashes < 0 ? [] : argv.slice(dashes + 1))] }
}

/** `lamina plan` arguments: options before the program, the program's own after it (or after `--`); the peers file read and checked. */
export function parsePlan(argv: readonly string[]): { program: string; peers: PeerDescription[]; self: string; json: boolean; args: string[] } {
  const dashes = argv.indexOf('--')
  const own = dashes < 0 ? argv : argv.slice(0, dashes)
  const { values, positionals } = parseArgs({
    args: [...own],
    options: { peers: { type: 'string' }, self: { type: 'string' }, json: { type: 'boolean' } },
    allowPositionals: true,
    strict: true,
  })
  const [program, ...rest] = positionals
  if (program === undefined) throw new Error('PROGRAM is missing')
  if (values.peers === undefined) throw new Error('--peers FILE is required')
  if (values.self === '') throw new Error('--self must be a peer id, got ""')
  let text: string
  try {
    text = readFileSync(values.peers, 'utf8')
  } catch (error) {
    throw new Error(`cannot read the peers file ${values.peers}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`)
  }
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (error) {
    throw new Error(`the peers file ${values.peers} is not JSON: ${error instanceof Error ? error.message : String(error)}`)
  }
  // A malformed file is a bad argument: PlacementInputError's message names the path of each problem.
  const peers = decodePeers(json, values.peers)
  return { program, peers, self: values.self ?? 'local', json: values.json ?? false, args: [...rest, ...(dashes < 0 ? [] : argv.slice(dashes + 1))] }
}

/** A plan as `lamina plan --json` prints it: each instance (`OP#i`) with its peer and the reasons. */
function planJson(plan: PlacementPlan): unknown {
  const instances: Record<string, unknown> = {}
  for (const p of plan.instances) {
    const name = plan.names[p.peer]
    instances[`${p.operator}#${p.instance}`] = {
      peer: p.peer,
      ...(name === undefined ? {} : { peerName: name }),
      rule: p.rule,
      by: p.by,
      reason: p.reason,
      constraints: p.constraints,
    }
  }
  return { job: plan.job, self: plan.self, peers: plan.peers, names: plan.names, instances, ...(plan.ignored === undefined ? {} : { ignored: plan.ignored }) }
}

/** `lamina plan`: plans the program for the peers of a file and prints the explanation; returns the exit status. */
async function plan(argv: readonly string[]): Promise<number> {
  const options = parsing('plan', PLAN_USAGE, () => parsePlan(argv))
  register() // program modules may be TypeScript
  const loaded = await loadProgram(resolve(options.program), options.args, { submitter: true, peer: options.self })
  // The program's layers over placement(), as over a cluster's kernel: a placement layer of its own takes that one's place.
  const stack = kernel.with(placement()).withOverrides(loaded.layers)
  let planned: Program
  try {
    planned = await stack.plan(loaded.program, { job: loaded.program.name, self: options.self, peers: options.peers })
  } catch (error) {
    if (!(error instanceof LaminaError) || !error.code.startsWith('ERR_PLACEMENT_')) throw error
    // The placement error in full: for an unsatisfiable one, the constraint and every peer considered.
    process.stderr.write(`lamina plan: ${error.code}: ${error.message}\n`)
    if (options.json) {
      const details =
        error instanceof PlacementUnsatisfiableError
          ? { operator: error.operator, instance: error.instance, constraint: error.constraint, considered: error.considered, colocated: error.colocated }
          : {}
      process.stdout.write(`${JSON.stringify({ error: { code: error.code, message: error.message, ...details } }, null, 2)}\n`)
    }
    return 1
  }
  const result = planOf(planned)
  if (result === undefined) throw new Error(`the layers of ${options.program} (${stack.describe().join(', ')}) made no placement plan`)
  process.stdout.write(options.json ? `${JSON.stringify(planJson(result), null, 2)}\n` : `${explain(result).text}\n`)
  return 0
}

/** Prefix of the temporary work directories of `lamina run`, in the system's temporary directory. */
const RUN_DIR_PREFIX = 'lamina-run-'
/** The file in a temporary work directory naming the pid of the `lamina run` that owns it. */
const OWNER_FILE = 'owner.pid'

/**
 * Removes the temporary work directories of earlier runs whose process is gone (killed with
 * SIGKILL, or its machine crashed: no handler of theirs could run). A directory without an owner
 * file, or whose owner is alive, is left alone. Returns how many were removed.
 */
async function removeStaleRunDirs(): Promise<number> {
  let removed = 0
  for (const name of await readdir(tmpdir()).catch(() => [] as string[])) {
    if (!name.startsWith(RUN_DIR_PREFIX)) continue
    const dir = join(tmpdir(), name)
    const owner = Number.parseInt(await readFile(join(dir, OWNER_FILE), 'utf8').catch(() => ''), 10)
    if (!Number.isInteger(owner) || owner <= 0 || processAlive(owner)) continue
    await rm(dir, { recursive: true, force: true })
    removed++
  }
  return removed
}

/** Whether process `pid` exists (signal 0 checks without sending anything). */
function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}

async function run(argv: readonly string[]): Promise<number> {
  const options = parsing('run', RUN_USAGE, () => parseRun(argv))
  register() // program modules may be TypeScript
  // Check the program before starting anything: it bundles, and its default export builds a program.
  const module = resolve(options.program)
  const checked = await packProgram(module)
  const built = await loadProgram(module, options.args, { submitter: true, peer: 'lamina run' })
  const display = new ProgressDisplay(process.stderr)
  const log = (line: string): void => void (options.quiet || process.stderr.write(`lamina: ${line}\n`))
  const stale = options.workdir === undefined ? await removeStaleRunDirs() : 0
  if (stale > 0) log(`removed ${stale} temporary work director${stale === 1 ? 'y' : 'ies'} left by runs that were killed`)
  const temporary = options.workdir === undefined
  const workdir = options.workdir ?? (await mkdtemp(join(tmpdir(), RUN_DIR_PREFIX)))
  if (temporary) await writeFile(join(workdir, OWNER_FILE), `${process.pid}\n`)
  // SIGINT (Ctrl-C) and SIGTERM stop the peers and remove the temporary directory before exiting
  // (130 and 143, as a shell reports a death by those signals); a second signal exits at once.
  let interrupted: NodeJS.Signals | undefined
  const onSignal = (signal: NodeJS.Signals): void => {
    if (interrupted !== undefined) process.exit(signal === 'SIGINT' ? 130 : 143)
    interrupted = signal
    log(`${signal}: stopping the peers…`)
    void cleanUp().finally(() => process.exit(signal === 'SIGINT' ? 130 : 143))
  }
  let cluster: Cluster | undefined
  let cleaning: Promise<void> | undefined
  const cleanUp = (): Promise<void> =>
    (cleaning ??= (async () => {
      await cluster?.stop().catch((error: unknown) => log(`stopping the peers failed: ${error instanceof Error ? error.message : String(error)}`))
      if (temporary) await rm(workdir, { recursive: true, force: true })
    })())
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  log(`${built.program.name}: ${built.program.operators.length} operators, code ${checked.manifest.hash.slice(0, 12)}; starting ${options.peers} peers in ${workdir}…`)
  // Peers that die are restarted; a job whose layers can recover (checkpoints) carries on without them.
  try {
    const up = await startCluster({
      peers: options.peers,
      workdir,
      policy: { kind: 'restart', max: 5, withinMs: 60_000 },
      logger: { info: () => undefined, warn: (m) => log(m), error: (m) => log(m) },
    })
    cluster = up
    let stopping = false
    up.events?.subscribe((event) => {
      if (stopping || interrupted !== undefined) return
      if (event.type === 'exit') log(`peer ${event.index} (pid ${event.pid}) exited (${event.signal ?? `code ${event.code}`})`)
      else if (event.type === 'restart') log(`restarting peer ${event.index} (restart ${event.attempt})`)
    })
    try {
      return await runJob(up, options, display, log)
    } finally {
      stopping = true
    }
  } finally {
    // The handlers stay until the process exits: while they are installed the nursery does not
    // re-raise the signal (it would kill this process before the directory is removed).
    await cleanUp()
  }
}

/** Submits the program to the started cluster, shows progress, and returns the exit status. */
async function runJob(cluster: Cluster, options: ReturnType<typeof parseRun>, display: ProgressDisplay, log: (line: string) => void): Promise<number> {
  log(
    `cluster up: ${cluster
      .members()
      .map((m) => `${m.peerId.slice(-8)} (pid ${m.pid})`)
      .join(', ')}`,
  )
  const job = await cluster.submit(resolve(options.program), { args: options.args })
  const peers = Object.keys(job.stats()).length || options.peers
  const ticker = options.quiet ? undefined : setInterval(() => display.update(totals(Object.values(job.stats())), peers + 1), process.stderr.isTTY ? 500 : 2000)
  let checkpoints = 0
  let retries = 0
  let lastCheckpoint = ''
  job.events.subscribe((event) => {
    if (event.type === 'rescaling') log(`attempt ${event.attempt}: ${event.reason}; restarting from checkpoint ${event.checkpoint}`)
    else if (event.type === 'recovering')
      log(`attempt ${event.attempt}: lost ${event.lost.map((p) => p.slice(-8)).join(', ') || 'no peer'} (${event.reason}); resuming from the last checkpoint`)
    else if (event.type === 'layer') {
      // Checkpoints come every interval: counted, and summed up at the end; everything else is shown.
      if (CHECKPOINT_EVENTS.completed.is(event)) {
        checkpoints++
        lastCheckpoint = event.message
      } else if (RETRIED.is(event)) retries++
      else if (!CHECKPOINT_EVENTS.started.is(event)) log(`[${event.layer}] ${event.kind} on ${event.peer.slice(-8)}: ${event.message}`)
    }
  })
  const console_ = options.console ? commands(job, log) : undefined
  try {
    const report = await job.done
    if (!options.quiet) process.stderr.write(display.summary(totals(Object.values(report.stats)), report.elapsedMs, report.deadLetters.length) + '\n')
    if (checkpoints > 0) log(`${checkpoints} checkpoints; last: ${lastCheckpoint}`)
    if (retries > 0) log(`${retries} retries of calls that failed`)
    if (report.recoveries > 0) log(`the job recovered from lost peers ${report.recoveries} time(s)`)
    if (report.rescales > 0) log(`the job was rescaled ${report.rescales} time(s)`)
    const abandoned = report.abandonedDeadLetters
    if (abandoned.length > 0) {
      // Not the job's (the exit status does not count them), but never dropped silently.
      log(`${abandoned.length} dead letter(s) of attempts given up (not the job's); first: [${abandoned[0]!.code}] ${abandoned[0]!.message}`)
    }
    for (const letter of report.deadLetters.slice(0, 10)) process.stderr.write(`  dead letter [${letter.code}] ${letter.message}\n`)
    return report.deadLetters.length > 0 ? 1 : 0
  } finally {
    console_?.close()
    clearInterval(ticker)
  }
}

/** `--console`: commands typed (or piped) on stdin while the job runs. */
function commands(job: SubmittedJob, log: (line: string) => void): Interface {
  const lines = createInterface({ input: process.stdin, terminal: false })
  lines.on('line', (line) => {
    const [command, ...rest] = line.trim().split(/\s+/)
    if (command === undefined || command === '') return
    if (command === 'rescale' && rest.length === 2) {
      const [operator, n] = rest as [string, string]
      log(`rescaling ${operator} to ${n}…`)
      job.rescale(operator, Number(n)).then(
        (report) =>
          log(
            `rescaled ${Object.entries(report.changes)
              .map(([name, c]) => `${name} ${c.from} -> ${c.to}`)
              .join(', ')} from checkpoint ${report.checkpoint}; paused ${report.pauseMs} ms`,
          ),
        (error: unknown) => log(`rescale failed: ${error instanceof Error ? error.message : String(error)}`),
      )
    } else if (command === 'plan') {
      log(
        Object.entries(job.plan)
          .map(([instance, peer]) => `${instance} -> ${peer.slice(-8)}`)
          .join(', '),
      )
    } else log(`unknown command "${line.trim()}": try \`rescale OPERATOR N\` or \`plan\``)
  })
  return lines
}

/** `lamina id`: prints the peer id of a work directory. */
async function id(argv: readonly string[]): Promise<void> {
  const { workdir, create } = parsing('id', ID_USAGE, () => {
    const { values } = parseArgs({ args: [...argv], options: { workdir: { type: 'string' }, create: { type: 'boolean' } }, strict: true, allowPositionals: false })
    if (values.workdir === undefined) throw new Error('--workdir DIR is required')
    return { workdir: values.workdir, create: values.create ?? false }
  })
  if (!create && !existsSync(join(workdir, PEER_DB))) throw new Error(`${join(workdir, PEER_DB)} does not exist: no identity in ${workdir} (--create makes one)`)
  process.stdout.write(`${(await loadOrCreateIdentity(workdir)).peerId}\n`)
}

async function peer(argv: readonly string[]): Promise<void> {
  const command = parsing('peer', PEER_USAGE, () => parsePeerCommand(argv))
  register() // the program modules this peer is handed may be TypeScript
  const running = await runPeer(command)
  process.stderr.write(
    `lamina peer ${running.id}\n${running
      .multiaddrs()
      .map((a) => `  listening on ${a}`)
      .join('\n')}\n`,
  )
}

async function main(argv: readonly string[]): Promise<void> {
  const [command, ...rest] = argv
  if (command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(`${USAGE}\n`)
  } else if (command === 'run') {
    if (wantsHelp(rest.slice(0, rest.includes('--') ? rest.indexOf('--') : rest.length))) return void process.stdout.write(`${RUN_USAGE}\n`)
    // Exit when the job is done: every peer process is stopped by then, nothing else should keep us.
    process.exit(await run(rest))
  } else if (command === 'plan') {
    if (wantsHelp(rest.slice(0, rest.includes('--') ? rest.indexOf('--') : rest.length))) return void process.stdout.write(`${PLAN_USAGE}\n`)
    process.exitCode = await plan(rest)
  } else if (command === 'peer') {
    if (wantsHelp(rest)) return void process.stdout.write(`${PEER_USAGE}\n`)
    await peer(rest)
  } else if (command === 'id') {
    if (wantsHelp(rest)) return void process.stdout.write(`${ID_USAGE}\n`)
    await id(rest)
  } else if (command === 'kv') {
    if (wantsHelp(rest)) return void process.stdout.write(`${KV_USAGE}\n`)
    process.exit(await kvCommand(rest))
  } else if (command === 'requests') {
    if (wantsHelp(rest)) return void process.stdout.write(`${REQUESTS_USAGE}\n`)
    process.exit(await requestsCommand(rest))
  } else if (command === 'txkv') {
    if (wantsHelp(rest)) return void process.stdout.write(`${TXKV_USAGE}\n`)
    process.exit(await txkvCommand(rest))
  } else if (command !== undefined && OPERATOR_USAGE[command] !== undefined) {
    if (wantsHelp(rest.slice(0, rest.includes('--') ? rest.indexOf('--') : rest.length))) return void process.stdout.write(`${OPERATOR_USAGE[command]}\n`)
    process.exit(await operatorCommand(command, rest))
  } else {
    // A bare `lamina` did nothing asked of it: that is a usage error too.
    const hint = command === undefined ? undefined : closest(command)
    throw new UsageError(
      command === undefined ? 'lamina: a command is missing' : `lamina: unknown command "${command}"${hint === undefined ? '' : ` (did you mean \`lamina ${hint}\`?)`}`,
      USAGE,
    )
  }
}

main(process.argv.slice(2)).catch((error: unknown) => {
  if (error instanceof UsageError) {
    process.stderr.write(`${error.message}\n${error.usage}\n`)
    process.exitCode = 2
    return
  }
  process.stderr.write(`lamina: ${error instanceof Error ? error.message : String(error)}\n`)
  process.exitCode = 1
})
