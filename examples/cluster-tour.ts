// A tour of a peer-to-peer cluster on one machine: three `lamina peer` processes on loopback,
// admitted by a swarm key and an allowlist; the orders program (examples/orders.ts) submitted to
// them with `lamina submit`; the jobs listed with `lamina jobs`; the peers stopped. These are the
// steps of docs/cluster.md for three hosts, with 127.0.0.1 as every host (docs/guide-cluster.md).
//
//   node --import tsx examples/cluster-tour.ts              10,000 orders, in a temporary directory
//   node --import tsx examples/cluster-tour.ts -- 50000     50,000 orders
//
// stdout is the job's output: what the orders program's sink printed on the peer that coordinated
// the job. stderr tells each step and shows what the commands answered.

import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { promisify } from 'node:util'

// Every example is also a program module (examples/plans.test.ts plans each): this one is the program the tour submits.
export { default, layers, planned } from './orders.js'

const run = promisify(execFile)

/** A `lamina peer` process the tour started, and what it printed. */
interface PeerProcess {
  readonly name: string
  readonly process: ChildProcess
  /** Its first `listening on` address (ends in /p2p/<its id>). */
  readonly address: string
  readonly exited: Promise<unknown>
  stdout: string
  stderr: string
}

function step(text: string): void {
  process.stderr.write(`\ntour: ${text}\n`)
}

async function main(argv: readonly string[]): Promise<void> {
  const count = argv[0] ?? '10000'
  // The installed package's `lamina` command (its bin, dist/cli/lamina.js, beside the entry `lamina` resolves to).
  const cli = fileURLToPath(new URL('../cli/lamina.js', import.meta.resolve('lamina')))
  const program = fileURLToPath(new URL('./orders.ts', import.meta.url))
  const dir = await mkdtemp(join(tmpdir(), 'lamina-tour-'))
  const config = join(dir, 'lamina.json')
  const psk = join(dir, 'swarm.key')
  const peers: PeerProcess[] = []

  /** Runs `lamina ARGS` as a client (LAMINA_CONFIG names the cluster); resolves with its stdout, rejects with its stderr. */
  const lamina = async (...args: string[]): Promise<{ stdout: string; stderr: string }> => {
    try {
      return await run(process.execPath, [cli, ...args], { env: { ...process.env, LAMINA_CONFIG: config }, timeout: 120_000 })
    } catch (error) {
      const failed = error as { stderr?: string; message: string }
      throw new Error(`lamina ${args[0]} failed: ${failed.stderr?.trim() || failed.message}`)
    }
  }

  /** Starts `lamina peer FLAGS`; resolves once it listens. */
  const startPeer = async (name: string, flags: readonly string[]): Promise<PeerProcess> => {
    const child = spawn(process.execPath, [cli, 'peer', ...flags], { stdio: ['ignore', 'pipe', 'pipe'] })
    const exited = once(child, 'exit')
    const peer = { name, process: child, exited, address: '', stdout: '', stderr: '' }
    peers.push(peer)
    child.stdout!.on('data', (chunk: Buffer) => (peer.stdout += chunk.toString()))
    const address = await new Promise<string>((resolve, reject) => {
      child.stderr!.on('data', (chunk: Buffer) => {
        peer.stderr += chunk.toString()
        const listening = /listening on (\S+)/.exec(peer.stderr)
        if (listening !== null) resolve(listening[1]!)
      })
      void exited.then(([code]) => reject(new Error(`${name} exited with ${String(code)} before it listened:\n${peer.stderr}`)))
    })
    process.stderr.write(`${name} (pid ${child.pid}) listening on ${address}\n`)
    return Object.assign(peer, { address })
  }

  /** SIGTERM to every peer (each leaves membership first), then wait until all have exited. */
  const stopPeers = async (): Promise<void> => {
    for (const peer of peers) if (peer.process.exitCode === null) peer.process.kill('SIGTERM')
    await Promise.all(peers.map((peer) => peer.exited))
  }
  const interrupted = (): void => void stopPeers().finally(() => rm(dir, { recursive: true, force: true }).finally(() => process.exit(130)))
  process.once('SIGINT', interrupted)
  process.once('SIGTERM', interrupted)

  try {
    step(`1. an identity for each peer and for the client, and the lists that admit them (in ${dir})`)
    const names = ['peer-0', 'peer-1', 'peer-2', 'client']
    const ids: Record<string, string> = {}
    for (const name of names) ids[name] = (await lamina('id', '--workdir', join(dir, name), '--create')).stdout.trim()
    for (const name of names) process.stderr.write(`${name}: ${ids[name]}\n`)
    // Every id may connect; the client and the peers may submit (a coordinating peer hands the others their shares).
    await writeFile(join(dir, 'allow'), `${names.map((name) => ids[name]).join('\n')}\n`)
    await writeFile(join(dir, 'submitters'), `${names.map((name) => ids[name]).join('\n')}\n`)

    step('2. start the peers: peer-0 creates the swarm key, the others join through it')
    for (const [i, name] of ['peer-0', 'peer-1', 'peer-2'].entries()) {
      const joining = i === 0 ? ['--create-psk'] : ['--bootstrap', peers[0]!.address]
      const flags = ['--workdir', join(dir, name), '--psk', psk, '--allow', join(dir, 'allow'), '--submitters', join(dir, 'submitters')]
      // Tags are what placement annotations match: the orders program keeps its windows on name=peer-0.
      await startPeer(name, [...flags, '--listen', '/ip4/127.0.0.1/tcp/0', '--tag', `name=${name}`, ...joining])
    }

    step('3. a config file for the client, and `lamina members` until all three are alive')
    await writeFile(config, JSON.stringify({ cluster: [peers[0]!.address], psk, workdir: join(dir, 'client') }, null, 2))
    for (const deadline = Date.now() + 30_000; ; ) {
      const members = JSON.parse((await lamina('members', '--json')).stdout) as { status: string }[]
      if (members.filter((m) => m.status === 'alive').length === 3) break
      if (Date.now() > deadline) throw new Error(`the peers did not all become alive: ${JSON.stringify(members)}`)
    }
    process.stderr.write((await lamina('members')).stdout)

    step(`4. \`lamina submit examples/orders.ts --on peer-0 -- ${count}\`: it follows the job to its end`)
    const submitted = await lamina('submit', program, '--on', ids['peer-0']!, '--', count)
    process.stderr.write(submitted.stderr + submitted.stdout)

    step('5. `lamina jobs`, and `lamina status JOB`: where its instances ran, records per operator')
    const job = submitted.stdout.trim().split(' ')[0]!
    process.stderr.write((await lamina('jobs')).stdout)
    process.stderr.write((await lamina('status', job)).stdout)

    step('6. stop the peers')
    await stopPeers()
    // The sink ran on the coordinator (peer-0) and printed there; everything it printed is in now that it exited.
    process.stdout.write(peers[0]!.stdout)
  } catch (error) {
    for (const peer of peers) process.stderr.write(`--- ${peer.name} stderr ---\n${peer.stderr}`)
    throw error
  } finally {
    await stopPeers()
    await rm(dir, { recursive: true, force: true })
    process.stderr.write(`tour: removed ${dir}\n`)
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main(process.argv.slice(2).filter((arg) => arg !== '--')).catch((error: unknown) => {
    process.stderr.write(`cluster-tour: ${error instanceof Error ? error.message : String(error)}\n`)
    process.exitCode = 1
  })
}
