// The `lamina` command as users run it: the compiled CLI (npm test builds dist/ first).
import { execFile, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { alive, until } from 'lamina/testing'

const root = join(import.meta.dirname, '..')
const cli = join(root, 'dist', 'cli', 'lamina.js')
const exec = promisify(execFile)

function pidsIn(stderr: string): number[] {
  return [...stderr.matchAll(/pid (\d+)/g)].map((m) => Number(m[1]))
}

describe('lamina run', () => {
  let dir: string
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lamina-cli-'))
  })
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('runs wordcount on a local cluster and prints the same lines as in-process', async () => {
    const file = join(dir, 'text.txt')
    await writeFile(file, 'The cat and the hat.\nTHE END, the end?\nÉté été ÉTÉ 2024 2024\n')
    const { stdout, stderr } = await exec(process.execPath, [cli, 'run', 'examples/wordcount.ts', '--peers', '3', file], { cwd: root })
    expect(stdout).toBe(['the 4', 'été 3', '2024 2', 'end 2', 'and 1', 'cat 1', 'hat 1', ''].join('\n'))
    expect(stderr).toContain('finished in')
    const pids = pidsIn(stderr)
    expect(pids).toHaveLength(3)
    expect(pids.filter(alive)).toEqual([])
  })

  /** Starts `lamina run` on the endless program; resolves once its 2 peers are up, with its work directory. */
  async function endless(): Promise<{ run: ReturnType<typeof spawn>; pids: number[]; workdir: string; exited: Promise<number | null>; stderr: () => string }> {
    const run = spawn(process.execPath, [cli, 'run', 'services/jobs/fixtures/endless-program.ts', '--peers', '2'], { cwd: root, stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    run.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
    const exited = new Promise<number | null>((resolve) => run.once('exit', (code, signal) => resolve(code ?? (signal === 'SIGKILL' ? 137 : null))))
    await until(() => pidsIn(stderr).length === 2, 30_000, 'the cluster to come up')
    const workdir = /starting 2 peers in (\S+)…/.exec(stderr)?.[1]
    expect(workdir, stderr).toBeDefined()
    return { run, pids: pidsIn(stderr), workdir: workdir!, exited, stderr: () => stderr }
  }

  for (const [signal, status] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const) {
    it(`on ${signal}: stops every peer process (no orphans), removes its temporary directory, exits ${status}`, async () => {
      const { run, pids, workdir, exited, stderr } = await endless()
      expect(pids.every(alive)).toBe(true)
      expect(existsSync(workdir)).toBe(true)
      run.kill(signal)
      expect(await exited, stderr()).toBe(status)
      await until(() => !pids.some(alive), 10_000, 'the peer processes to exit')
      expect(existsSync(workdir)).toBe(false)
    })
  }

  it('after a SIGKILL, whose directory nothing could remove, the next run removes it', async () => {
    const { run, pids, workdir, exited } = await endless()
    run.kill('SIGKILL')
    expect(await exited).toBe(137)
    // The peers notice their parent is gone and exit; its temporary directory stays behind.
    await until(() => !pids.some(alive), 15_000, 'the peer processes to exit')
    expect(existsSync(workdir)).toBe(true)
    const next = await exec(process.execPath, [cli, 'run', 'examples/wordcount.ts', '--peers', '1'], { cwd: root })
    expect(next.stderr).toMatch(/removed \d+ temporary work director(y|ies) left by runs that were killed/)
    expect(existsSync(workdir)).toBe(false)
  }, 60_000)

  it('--console: `rescale OPERATOR N` typed while the job runs rescales it', async () => {
    const run = spawn(process.execPath, [cli, 'run', 'testing/keyed-totals.ts', '--peers', '2', '--console', '--', '4000000', '200', '1'], {
      cwd: root,
      stdio: ['pipe', 'ignore', 'pipe'],
    })
    let stderr = ''
    run.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
    const exited = new Promise<number | null>((resolve) => run.once('exit', (code) => resolve(code)))
    await until(() => pidsIn(stderr).length === 2, 30_000, 'the cluster to come up')
    run.stdin!.write('rescale totals 2\n')
    await until(() => stderr.includes('rescaled totals 1 -> 2'), 60_000, 'the rescale to be reported')
    run.stdin!.end()
    expect(await exited, stderr).toBe(0)
    expect(stderr).toMatch(/attempt 1: totals to 2 instances \(by hand\); restarting from checkpoint \d+/)
    expect(stderr).toContain('finished in')
  }, 90_000)

  it('lamina peer that cannot join exits 1 at its --join-timeout, saying why (a supervisor can restart it)', async () => {
    const workdir = join(dir, 'lonely-peer')
    const failure = await exec(
      process.execPath,
      [
        cli,
        'peer',
        '--workdir',
        workdir,
        '--psk',
        join(dir, 'lonely.key'),
        '--create-psk',
        '--join-timeout',
        '1500',
        '--bootstrap',
        '/ip4/127.0.0.1/tcp/1/p2p/12D3KooWA3XCnW6AfWP624hCRS1ezruYhbqYBGpwGtA5gh12NaBJ',
      ],
      { cwd: root, timeout: 30_000 },
    ).catch((e: { code: number; stderr: string }) => e)
    expect(failure).toMatchObject({ code: 1 })
    expect((failure as { stderr: string }).stderr).toMatch(/cannot join through any of 1 bootstrap address\(es\) after \d+ rounds:[\s\S]*ECONNREFUSED/)
  })

  it('lamina id prints the peer id of a work directory, creating it only with --create', async () => {
    const workdir = join(dir, 'id-peer')
    const missing = await exec(process.execPath, [cli, 'id', '--workdir', workdir], { cwd: root }).catch((e: { code: number; stderr: string }) => e)
    expect(missing).toMatchObject({ code: 1 })
    expect((missing as { stderr: string }).stderr).toContain('no identity in')
    const created = await exec(process.execPath, [cli, 'id', '--workdir', workdir, '--create'], { cwd: root })
    expect(created.stdout).toMatch(/^12D3KooW\w+\n$/)
    const again = await exec(process.execPath, [cli, 'id', '--workdir', workdir], { cwd: root })
    expect(again.stdout).toBe(created.stdout)
  })

  it('says what is wrong with bad arguments', async () => {
    const failure = await exec(process.execPath, [cli, 'run', 'examples/wordcount.ts', '--peers', 'many'], { cwd: root }).catch((e: { code: number; stderr: string }) => e)
    expect(failure).toMatchObject({ code: 2 })
    expect((failure as { stderr: string }).stderr).toContain('lamina run: --peers must be an integer')
    const unknown = await exec(process.execPath, [cli, 'run', '--frobnicate', 'examples/wordcount.ts'], { cwd: root }).catch((e: { code: number; stderr: string }) => e)
    expect(unknown).toMatchObject({ code: 2 })
    expect((unknown as { stderr: string }).stderr).toMatch(/lamina run: Unknown option '--frobnicate'[\s\S]*usage: lamina run PROGRAM/)
  })

  it('checks the program before it starts any peer: one that does not bundle, or builds no program, fails at once naming it', async () => {
    const broken = join(dir, 'broken.ts')
    await writeFile(broken, "import { program } from 'lamina'\nexport default () => program('x', {\n")
    const syntax = await exec(process.execPath, [cli, 'run', broken, '--peers', '2'], { cwd: root }).catch((e: { code: number; stderr: string }) => e)
    expect(syntax).toMatchObject({ code: 1 })
    expect((syntax as { stderr: string }).stderr).toMatch(/program module \S*broken\.ts cannot be shipped: \S*broken\.ts:3:\d+: /)
    expect((syntax as { stderr: string }).stderr).not.toContain('starting 2 peers')
    // A .ts file outside a package of "type": "module" does not load: the error says what to do.
    const loose = join(dir, 'loose.ts')
    await writeFile(loose, 'export default () => 42\n')
    const commonjs = await exec(process.execPath, [cli, 'run', loose, '--peers', '2'], { cwd: root }).catch((e: { code: number; stderr: string }) => e)
    expect(commonjs).toMatchObject({ code: 1 })
    expect((commonjs as { stderr: string }).stderr).toContain('add {"type": "module"} to the package.json of its directory, or name it .mts')
    await mkdir(join(dir, 'project'), { recursive: true })
    await writeFile(join(dir, 'project', 'package.json'), '{"type": "module"}\n')
    const empty = join(dir, 'project', 'empty.ts')
    await writeFile(empty, 'export default () => 42\n')
    const notProgram = await exec(process.execPath, [cli, 'run', empty, '--peers', '2'], { cwd: root }).catch((e: { code: number; stderr: string }) => e)
    expect(notProgram).toMatchObject({ code: 1 })
    expect((notProgram as { stderr: string }).stderr).toContain('its default export did not return a program')
    expect((notProgram as { stderr: string }).stderr).not.toContain('starting 2 peers')
  })

  it('has --help for every command, and exits 2 with a hint on a missing or unknown command', async () => {
    for (const command of ['run', 'peer', 'id', 'submit', 'jobs', 'status', 'cancel', 'rescale', 'upgrade', 'savepoint', 'members']) {
      const help = await exec(process.execPath, [cli, command, '--help'], { cwd: root })
      expect(help.stdout).toContain(`usage: lamina ${command}`)
    }
    expect((await exec(process.execPath, [cli, '--help'], { cwd: root })).stdout).toContain('usage: lamina COMMAND')
    for (const argv of [[], ['frobnicate']]) {
      const failure = await exec(process.execPath, [cli, ...argv], { cwd: root }).catch((e: { code: number; stderr: string }) => e)
      expect(failure).toMatchObject({ code: 2 })
      expect((failure as { stderr: string }).stderr).toContain('lamina COMMAND --help')
    }
    const typo = await exec(process.execPath, [cli, 'jobz'], { cwd: root }).catch((e: { code: number; stderr: string }) => e)
    expect(typo).toMatchObject({ code: 2 })
    expect((typo as { stderr: string }).stderr).toContain('unknown command "jobz" (did you mean `lamina jobs`?)')
  })
})
