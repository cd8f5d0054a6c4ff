// The operator's commands against a running cluster: `lamina submit`, `jobs`, `status`, `cancel`,
// `rescale`, `savepoint` and `members`. Each connects as a client (an identity of its own, admitted
// by the swarm key and the peers' --allow lists), asks over the admin protocol, and exits.

import { readFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { readPskFile } from '../kmods/transport/index.js'
import { AdminClient, type JobStatus, type JobSummary, loadProgram, packProgram, type PackedProgram, ProgressDisplay } from '../services/jobs/index.js'
import { UsageError } from './errors.js'

const CONNECTION_USAGE = `connection (flags, or a JSON config file with the same keys: {"cluster": [ADDR…], "psk": FILE, "workdir": DIR}):
  --cluster ADDR   a member's multiaddr, ending in /p2p/<peer id>; repeatable (the first that answers is used)
  --psk FILE       the cluster's swarm key file
  --workdir DIR    this client's identity (default ~/.lamina/client); peers must list its id
                   (lamina id --workdir DIR --create) in their --allow file, and in --submitters to change things
  --config FILE    read the above from FILE (default: $LAMINA_CONFIG, if set); flags take precedence
  --timeout MS     how long to wait for a peer to answer (default 10000)`

/** Usage of each operator command. */
export const OPERATOR_USAGE: Readonly<Record<string, string>> = {
  submit: `usage: lamina submit PROGRAM [--on PEER] [--detach] [--failover] [--from-savepoint ID] [connection…] [--] [ARGS…]
  Bundles PROGRAM and the local files it imports, checks that it builds a program, and submits it
  to a member (the one answering first, or --on PEER), which coordinates the job: its sources and
  sinks run there. Follows the job's progress until it ends (exit 0 when it finished with no dead
  letters, 1 otherwise); Ctrl-C stops following and leaves the job running.
  --on PEER            the member to coordinate the job (a peer id, or its last characters)
  --detach             print the job id and exit once the job started
  --from-savepoint ID  start from a savepoint (LINEAGE@CHECKPOINT, printed by lamina savepoint)
  --failover           the job outlives its coordinator: its state is kept in the cluster's KV
                       service, sources and sinks are placed like any operator, and when the
                       coordinator dies another peer takes the job over from its last checkpoint
${CONNECTION_USAGE}`,
  jobs: `usage: lamina jobs [--json] [connection…]
  Lists the jobs every live member coordinates, running and recently ended, newest first.
${CONNECTION_USAGE}`,
  status: `usage: lamina status JOB [--json] [--follow] [connection…]
  Shows a job: state, attempts, records per operator, where its instances run, savepoints, and
  what happened lately (recoveries, rescales, upgrades, layer events).
  --follow   follow the job's progress and events until it ends, as lamina submit does (exit 0
             when it finished with no dead letters, 1 otherwise; Ctrl-C stops following)
${CONNECTION_USAGE}`,
  cancel: `usage: lamina cancel JOB [connection…]
  Cancels a running job and waits until it has stopped on every peer.
${CONNECTION_USAGE}`,
  rescale: `usage: lamina rescale JOB OPERATOR N [connection…]
  Runs OPERATOR of a running job with N instances: a savepoint, then the job runs again with its
  keyed state moved by key group (needs the checkpoints layer).
${CONNECTION_USAGE}`,
  upgrade: `usage: lamina upgrade JOB PROGRAM [connection…] [--] [ARGS…]
  Replaces a running job's program with PROGRAM, a new version of it, without losing or repeating
  a record: a savepoint, then the new version runs from it. Each operator takes over the state of
  the operator of the same name; one whose state codec changed needs a migration in PROGRAM
  (state: { …, migrate: migration(OldCodec, (old) => …) }), or the upgrade is refused before
  anything stops. ARGS default to the job's. Needs the checkpoints layer.
${CONNECTION_USAGE}`,
  savepoint: `usage: lamina savepoint JOB [connection…]
  Takes a checkpoint of a running job and keeps it as a savepoint (it is not collected when the
  job ends). Prints its id, LINEAGE@CHECKPOINT, for lamina submit --from-savepoint.
${CONNECTION_USAGE}`,
  members: `usage: lamina members [--json] [connection…]
  Lists the cluster's members as one of them sees them: peer id, status, address, tags.
${CONNECTION_USAGE}`,
}

/** The flags every command against a running cluster takes (and `--json`). */
export const CONNECTION_OPTIONS = {
  cluster: { type: 'string', multiple: true },
  psk: { type: 'string' },
  workdir: { type: 'string' },
  config: { type: 'string' },
  timeout: { type: 'string' },
  json: { type: 'boolean' },
} as const

/** Where and as whom to connect, from flags over the config file. */
export interface Connection {
  readonly cluster: readonly string[]
  readonly psk: string
  readonly workdir: string
  readonly timeoutMs: number
}

/** Reads the connection settings: flags, then the config file (`--config` or $LAMINA_CONFIG). */
export function connectionOf(values: { cluster?: string[]; psk?: string; workdir?: string; config?: string; timeout?: string }, env: NodeJS.ProcessEnv = process.env): Connection {
  const configPath = values.config ?? env.LAMINA_CONFIG
  let config: { cluster?: unknown; psk?: unknown; workdir?: unknown } = {}
  if (configPath !== undefined) {
    let text: string
    try {
      text = readFileSync(configPath, 'utf8')
    } catch (error) {
      throw new Error(`cannot read the config file ${configPath}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`)
    }
    try {
      config = JSON.parse(text) as typeof config
    } catch (error) {
      throw new Error(`the config file ${configPath} is not JSON: ${error instanceof Error ? error.message : String(error)}`)
    }
    if (typeof config !== 'object' || config === null) throw new Error(`the config file ${configPath} must hold a JSON object`)
    if (config.cluster !== undefined && (!Array.isArray(config.cluster) || !config.cluster.every((a) => typeof a === 'string')))
      throw new Error(`${configPath}: "cluster" must be an array of multiaddrs`)
    for (const key of ['psk', 'workdir'] as const) if (config[key] !== undefined && typeof config[key] !== 'string') throw new Error(`${configPath}: "${key}" must be a string`)
  }
  const cluster = values.cluster ?? (config.cluster as string[] | undefined) ?? []
  if (cluster.length === 0) throw new Error('no cluster address: --cluster ADDR (a member multiaddr ending in /p2p/<peer id>), or "cluster" in the config file')
  const psk = values.psk ?? (config.psk as string | undefined)
  if (psk === undefined) throw new Error('no swarm key: --psk FILE, or "psk" in the config file')
  const timeoutMs = Number(values.timeout ?? 10_000)
  if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) throw new Error(`--timeout must be a positive number of milliseconds, got ${values.timeout}`)
  return { cluster, psk, workdir: values.workdir ?? (config.workdir as string | undefined) ?? join(homedir(), '.lamina', 'client'), timeoutMs }
}

/** Parses one operator command's arguments; a bad command line is a UsageError (exit 2). */
function parse<O extends Record<string, { type: 'string' | 'boolean'; multiple?: boolean }>>(command: string, argv: readonly string[], options: O, positionals: readonly string[]) {
  const usage = OPERATOR_USAGE[command]!
  try {
    const parsed = parseArgs({ args: [...argv], options: { ...CONNECTION_OPTIONS, ...options }, allowPositionals: true, strict: true })
    if (parsed.positionals.length < positionals.length) throw new Error(`${positionals[parsed.positionals.length]} is missing`)
    if (command !== 'submit' && parsed.positionals.length > positionals.length) throw new Error(`unexpected argument "${parsed.positionals[positionals.length]}"`)
    return {
      values: parsed.values as Record<string, string | string[] | boolean | undefined>,
      positionals: parsed.positionals,
      connection: connectionOf(parsed.values as Parameters<typeof connectionOf>[0]),
    }
  } catch (error) {
    throw new UsageError(`lamina ${command}: ${error instanceof Error ? error.message : String(error)}`, usage)
  }
}

async function connect(connection: Connection): Promise<AdminClient> {
  return AdminClient.connect({ cluster: connection.cluster, psk: await readPskFile(connection.psk), workdir: connection.workdir, timeoutMs: connection.timeoutMs })
}

const out = (line: string): void => void process.stdout.write(`${line}\n`)
const err = (line: string): void => void process.stderr.write(`lamina: ${line}\n`)

/** `12D3KooW…abcdefgh`: the end of a peer id, which is what differs. */
const short = (peer: string): string => (peer.length > 12 ? `…${peer.slice(-8)}` : peer)

function age(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000))
  return s < 120 ? `${s}s` : s < 7200 ? `${Math.round(s / 60)}m` : `${Math.round(s / 3600)}h`
}

/** Renders rows as columns aligned on their widest cell. */
function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
  return [header, ...rows].map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ')).join('\n')
}

/** Parses a savepoint id, LINEAGE@CHECKPOINT. */
export function parseSavepoint(id: string): { lineage: string; checkpoint: number } {
  const at = id.lastIndexOf('@')
  const checkpoint = Number(id.slice(at + 1))
  if (at <= 0 || !Number.isInteger(checkpoint) || checkpoint < 1) throw new Error(`--from-savepoint ${JSON.stringify(id)} is not LINEAGE@CHECKPOINT (what lamina savepoint prints)`)
  return { lineage: id.slice(0, at), checkpoint }
}

/** Runs an operator command; returns the exit status. */
export async function operatorCommand(command: string, argv: readonly string[]): Promise<number> {
  if (command === 'submit') return submit(argv)
  if (command === 'upgrade') return upgrade(argv)
  const shape: Record<string, readonly string[]> = { jobs: [], members: [], status: ['JOB'], cancel: ['JOB'], savepoint: ['JOB'], rescale: ['JOB', 'OPERATOR', 'N'] }
  const { values, positionals, connection } = parse(command, argv, command === 'status' ? { follow: { type: 'boolean' } } : {}, shape[command]!)
  if (command === 'rescale' && !(Number.isInteger(Number(positionals[2])) && Number(positionals[2]) >= 1))
    throw new UsageError(`lamina rescale: N must be a positive integer, got ${positionals[2]}`, OPERATOR_USAGE.rescale!)
  const client = await connect(connection)
  try {
    const json = values.json === true
    if (command === 'members') {
      const members = await client.members()
      if (json) return (out(JSON.stringify(members, null, 2)), 0)
      out(
        table(
          ['PEER', 'STATUS', 'ADDRESS', 'TAGS'],
          members.map((m) => [
            m.peerId + (m.self ? ' (contact)' : ''),
            m.status,
            m.multiaddrs[0] ?? '-',
            Object.entries(m.tags)
              .map(([k, v]) => `${k}=${v}`)
              .join(',') || '-',
          ]),
        ),
      )
      return 0
    }
    if (command === 'jobs') {
      const { jobs, unreachable } = await client.jobs()
      for (const u of unreachable) err(`member ${u.peer} did not answer: ${u.reason}`)
      if (json) return (out(JSON.stringify(jobs, null, 2)), 0)
      if (jobs.length === 0) out('no jobs')
      else
        out(
          table(
            ['JOB', 'STATE', 'PROGRAM', 'COORDINATOR', 'ATTEMPTS', 'RECORDS', 'AGE'],
            jobs.map((j) => [j.id, j.state, j.program, short(j.coordinator), String(j.attempts), String(j.records), age(Date.now() - j.submittedAt)]),
          ),
        )
      return unreachable.length > 0 ? 1 : 0
    }
    const job = positionals[0]!
    if (command === 'status') {
      // Reattach to a job (one submitted with --detach, or by another client): follow it to its end.
      if ((values as { follow?: boolean }).follow === true) return await follow(client, await client.status(job))
      const status = await client.status(job)
      if (json) return (out(JSON.stringify(status, null, 2)), 0)
      out(renderStatus(status))
      return 0
    }
    if (command === 'cancel') {
      const summary = await client.cancel(job)
      out(`${summary.id}: ${summary.state}${summary.state === 'running' ? ' (still stopping after 30 s)' : ''}`)
      return summary.state === 'running' ? 1 : 0
    }
    if (command === 'rescale') {
      const report = await client.rescale(job, positionals[1]!, Number(positionals[2]))
      out(
        `${job}: ${Object.entries(report.changes)
          .map(([name, c]) => `${name} ${c.from} -> ${c.to}`)
          .join(', ')} from checkpoint ${report.checkpoint}, paused ${report.pauseMs} ms (attempt ${report.attempt})`,
      )
      return 0
    }
    const taken = await client.savepoint(job)
    out(`${taken.lineage}@${taken.checkpoint}`)
    err(`savepoint kept by ${taken.coordinator}; start a job from it: lamina submit PROGRAM --from-savepoint ${taken.lineage}@${taken.checkpoint}`)
    return 0
  } finally {
    await client.close()
  }
}

function renderStatus(s: JobStatus): string {
  const lines = [
    `job ${s.id} (${s.program}): ${s.state}${s.error === null ? '' : ` [${s.error.code}] ${s.error.message}`}`,
    `  coordinator ${s.coordinator}, submitted by ${s.submittedBy} ${age(Date.now() - s.submittedAt)} ago${s.endedAt === null ? '' : `, ended after ${age(s.endedAt - s.submittedAt)}`}`,
    `  code ${s.code}`,
    `  attempts ${s.attempts} (recoveries ${s.recoveries}, rescales ${s.rescales}, upgrades ${s.upgrades}); records from sources ${s.records}; dead letters ${s.deadLetters}`,
    `  checkpoints ${s.checkpoints.completed}${s.checkpoints.last === null ? '' : ` (last: ${s.checkpoints.last})`}`,
    '  operators:',
    ...s.operators.map((o) => `    ${o.operator.padEnd(24)} x${o.instances}  in ${o.recordsIn}  out ${o.recordsOut}${o.deadLetters > 0 ? `  dead letters ${o.deadLetters}` : ''}`),
    '  plan:',
    ...Object.entries(s.plan).map(([instance, peer]) => `    ${instance.padEnd(24)} ${peer}`),
  ]
  if (s.savepoints.length > 0) lines.push('  savepoints:', ...s.savepoints.map((p) => `    ${p.lineage}@${p.checkpoint}  (${age(Date.now() - p.at)} ago)`))
  if (s.events.length > 0) lines.push('  events:', ...s.events.slice(-10).map((e) => `    ${new Date(e.at).toISOString()}  ${e.message}`))
  if (s.deadLetterSamples.length > 0) lines.push('  dead letters:', ...s.deadLetterSamples.map((d) => `    [${d.code}] ${d.message}`))
  return lines.join('\n')
}

/** Bundles a program module and checks that it builds a program, before anything is sent. */
async function packChecked(module: string, args: readonly string[], peer: string): Promise<PackedProgram> {
  const code = await packProgram(module)
  const { register } = await import('tsx/esm/api')
  register()
  const built = await loadProgram(module, args, { submitter: true, peer })
  err(`${built.program.name}: ${built.program.operators.length} operators, code ${code.manifest.hash.slice(0, 12)} (${code.manifest.size} bytes)`)
  return code
}

async function upgrade(argv: readonly string[]): Promise<number> {
  const dashes = argv.indexOf('--')
  const own = dashes < 0 ? argv : argv.slice(0, dashes)
  const { positionals, connection } = parse('upgrade', own, {}, ['JOB', 'PROGRAM'])
  const [job, program, ...rest] = positionals as [string, string, ...string[]]
  const given = [...rest, ...(dashes < 0 ? [] : argv.slice(dashes + 1))]
  const client = await connect(connection)
  try {
    const code = await packChecked(resolve(program), given, 'lamina upgrade')
    const report = await client.upgrade(job, code, given.length === 0 ? {} : { args: given })
    const { kept, migrated, added, removed } = report.state
    err(
      `state: kept ${kept.join(', ') || 'none'}; migrated ${migrated.map((m) => `${m.operator} (${m.from} -> ${m.to})`).join(', ') || 'none'}; ` +
        `added ${added.join(', ') || 'none'}; removed ${removed.join(', ') || 'none'}`,
    )
    out(
      `${job}: code ${report.from.hash.slice(0, 12)} -> ${report.to.hash.slice(0, 12)} from checkpoint ${report.checkpoint}, paused ${report.pauseMs} ms (attempt ${report.attempt})`,
    )
    return 0
  } finally {
    await client.close()
  }
}

async function submit(argv: readonly string[]): Promise<number> {
  const dashes = argv.indexOf('--')
  const own = dashes < 0 ? argv : argv.slice(0, dashes)
  const { values, positionals, connection } = parse(
    'submit',
    own,
    { on: { type: 'string' }, detach: { type: 'boolean' }, failover: { type: 'boolean' }, 'from-savepoint': { type: 'string' } },
    ['PROGRAM'],
  )
  const [program, ...rest] = positionals as [string, ...string[]]
  const args = [...rest, ...(dashes < 0 ? [] : argv.slice(dashes + 1))]
  let fromSavepoint: { lineage: string; checkpoint: number } | undefined
  try {
    fromSavepoint = values['from-savepoint'] === undefined ? undefined : parseSavepoint(String(values['from-savepoint']))
  } catch (error) {
    throw new UsageError(`lamina submit: ${error instanceof Error ? error.message : String(error)}`, OPERATOR_USAGE.submit!)
  }
  // Check before sending: the module bundles, and its default export builds a program.
  const code = await packChecked(resolve(program), args, 'lamina submit')
  const client = await connect(connection)
  try {
    // A savepoint lives with the peer that coordinated its job: the new job starts there.
    let on = values.on === undefined ? undefined : String(values.on)
    if (on === undefined && fromSavepoint !== undefined) on = (await client.jobs()).jobs.find((j) => j.id === fromSavepoint.lineage)?.coordinator
    const summary = await client.submit(code, {
      args,
      ...(fromSavepoint === undefined ? {} : { fromSavepoint }),
      ...(on === undefined ? {} : { on }),
      ...(values.failover === true ? { failover: true } : {}),
    })
    err(`job ${summary.id} submitted to ${summary.coordinator}`)
    if (values.detach === true) return (out(summary.id), 0)
    return await follow(client, summary)
  } finally {
    await client.close()
  }
}

/** Shows a job's progress until it ends; Ctrl-C stops following (the job keeps running). */
async function follow(client: AdminClient, summary: JobSummary): Promise<number> {
  const display = new ProgressDisplay(process.stderr)
  let stopped = false
  const onSignal = (): void => {
    stopped = true
    err(`stopped following; job ${summary.id} keeps running on ${summary.coordinator} (lamina status ${summary.id}, lamina cancel ${summary.id})`)
  }
  process.once('SIGINT', onSignal)
  try {
    let seen = 0
    let lostSince: number | undefined
    for (;;) {
      let status: JobStatus
      try {
        status = await client.status(summary.id)
        lostSince = undefined
      } catch (error) {
        // A failover job's coordinator died: another peer takes it over within seconds; ask again.
        if (lostSince === undefined) {
          lostSince = Date.now()
          err(`no answer about job ${summary.id} (${error instanceof Error ? error.message : String(error)}); asking the members again for 30 s`)
        }
        if (Date.now() - lostSince > 30_000) throw error
        await new Promise((resolve) => setTimeout(resolve, 1000))
        continue
      }
      for (const event of status.events.filter((e) => e.at > seen)) err(event.message)
      seen = Math.max(seen, ...status.events.map((e) => e.at))
      if (status.state !== 'running') {
        process.stderr.write(`${display.summary(status.operators, (status.endedAt ?? Date.now()) - status.submittedAt, status.deadLetters)}\n`)
        for (const letter of status.deadLetterSamples) process.stderr.write(`  dead letter [${letter.code}] ${letter.message}\n`)
        if (status.error !== null) err(`job ${status.id} ${status.state}: [${status.error.code}] ${status.error.message}`)
        out(`${status.id} ${status.state}`)
        return status.state === 'finished' && status.deadLetters === 0 ? 0 : 1
      }
      display.update(status.operators, new Set(Object.values(status.plan)).size)
      await new Promise((resolve) => setTimeout(resolve, process.stderr.isTTY ? 500 : 2000))
      if (stopped) return 130
    }
  } finally {
    process.removeListener('SIGINT', onSignal)
  }
}
