// `lamina plan PROGRAM --peers FILE` as users run it: the compiled CLI (npm test builds dist/ first).
import { execFile } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

const root = join(import.meta.dirname, '..')
const cli = join(root, 'dist', 'cli', 'lamina.js')
const exec = promisify(execFile)

interface Run {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

/** Runs `lamina ARGS`; resolves with its exit status and output whatever the status. */
async function lamina(args: readonly string[]): Promise<Run> {
  try {
    const { stdout, stderr } = await exec(process.execPath, [cli, ...args], { cwd: root, timeout: 60_000 })
    return { code: 0, stdout, stderr }
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string }
    return { code: e.code, stdout: e.stdout, stderr: e.stderr }
  }
}

const PEERS = [
  { id: 'peer-a', tags: { zone: 'eu', name: 'peer-0' } },
  { id: 'peer-b', tags: { zone: 'eu', name: 'peer-1' } },
  { id: 'peer-c', tags: { zone: 'us', name: 'peer-2' } },
]

describe('lamina plan', () => {
  let dir: string
  const file = (name: string): string => join(dir, name)

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lamina-plan-'))
    await writeFile(file('peers.json'), JSON.stringify(PEERS))
    await writeFile(file('no-peer-0.json'), JSON.stringify(PEERS.filter((p) => p.tags.name !== 'peer-0')))
    await writeFile(file('bad-tags.json'), JSON.stringify([{ id: 'peer-a', tags: { zone: 3 } }]))
    await writeFile(file('not-json.json'), '[{"id": ')
  })
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it("prints where each of wordcount's instances would run and why: count on the peer tagged name=peer-0", async () => {
    const run = await lamina(['plan', 'examples/wordcount.ts', '--peers', file('peers.json')])
    expect(run.code, run.stderr).toBe(0)
    expect(run.stdout).toBe(
      [
        'placement of job wordcount: 7 instances on 4 of 4 peers (submitter local)',
        'lines#0 -> local  [submitter] sources and sinks stay on the submitter',
        'words#0 -> peer-b (peer-1)  [spread] spread: no other instance of it there; least-loaded of 4 peers that fit',
        'words#1 -> peer-c (peer-2)  [spread] spread: no other instance of it there; least-loaded of 4 peers that fit',
        'count#0 -> peer-a (peer-0)  [tags] needs tag name=peer-0; the only peer that fits',
        'count#1 -> peer-a (peer-0)  [tags] needs tag name=peer-0; the only peer that fits',
        'top#0   -> peer-b (peer-1)  [least-loaded] least-loaded of 4 peers that fit',
        'print#0 -> local  [submitter] sources and sinks stay on the submitter',
        '',
      ].join('\n'),
    )
    // Nothing ran: the program's `planned` hook (its explanation on stderr) is `lamina run`'s, not called here.
    expect(run.stderr).toBe('')
  })

  it('--json: each instance with its peer and the reasons; --self moves the sources and sinks; arguments after -- are accepted', async () => {
    const run = await lamina(['plan', 'examples/wordcount.ts', '--peers', file('peers.json'), '--json', '--self', 'peer-c', '--', 'some-file.txt'])
    expect(run.code, run.stderr).toBe(0)
    const plan = JSON.parse(run.stdout) as {
      self: string
      peers: string[]
      instances: Record<string, { peer: string; peerName?: string; rule: string; reason: string; constraints: string[] }>
    }
    expect(plan.self).toBe('peer-c')
    expect(plan.peers).toEqual(['peer-a', 'peer-b', 'peer-c'])
    expect(Object.keys(plan.instances)).toEqual(['lines#0', 'words#0', 'words#1', 'count#0', 'count#1', 'top#0', 'print#0'])
    expect(plan.instances['count#1']).toEqual({
      peer: 'peer-a',
      peerName: 'peer-0',
      rule: 'tags',
      by: 'count',
      reason: 'needs tag name=peer-0; the only peer that fits',
      constraints: ['tag name=peer-0'],
    })
    expect(plan.instances['lines#0']).toMatchObject({ peer: 'peer-c', rule: 'submitter' })
    expect(plan.instances['print#0']).toMatchObject({ peer: 'peer-c', rule: 'submitter' })
  })

  it('unsatisfiable annotations (no peer-0): exits 1 with the placement error, naming the constraint and every peer considered', async () => {
    const run = await lamina(['plan', 'examples/wordcount.ts', '--peers', file('no-peer-0.json')])
    expect(run.code).toBe(1)
    expect(run.stdout).toBe('')
    expect(run.stderr).toContain('lamina plan: ERR_PLACEMENT_UNSATISFIABLE: cannot place count#0: no peer satisfies tag name=peer-0')
    expect(run.stderr).toContain('3 peers considered')
    expect(run.stderr).toContain('  - local: lacks tag name=peer-0')
    expect(run.stderr).toContain('  - peer-b (peer-1): lacks tag name=peer-0 (has name=peer-1)')
    expect(run.stderr).toContain('  - peer-c (peer-2): lacks tag name=peer-0 (has name=peer-2)')
    const json = await lamina(['plan', 'examples/wordcount.ts', '--peers', file('no-peer-0.json'), '--json'])
    expect(json.code).toBe(1)
    expect(JSON.parse(json.stdout)).toMatchObject({
      error: { code: 'ERR_PLACEMENT_UNSATISFIABLE', operator: 'count', instance: 0, constraint: { kind: 'tags', text: 'tag name=peer-0' } },
    })
  })

  it('bad arguments exit 2 with what is wrong and the usage', async () => {
    const cases: [readonly string[], string][] = [
      [['plan', 'examples/wordcount.ts'], 'lamina plan: --peers FILE is required'],
      [['plan', '--peers', file('peers.json')], 'lamina plan: PROGRAM is missing'],
      [['plan', 'examples/wordcount.ts', '--peers', file('peers.json'), '--frobnicate'], "lamina plan: Unknown option '--frobnicate'"],
      [['plan', 'examples/wordcount.ts', '--peers', file('missing.json')], `lamina plan: cannot read the peers file ${file('missing.json')}: ENOENT`],
      [['plan', 'examples/wordcount.ts', '--peers', file('not-json.json')], `lamina plan: the peers file ${file('not-json.json')} is not JSON`],
      [['plan', 'examples/wordcount.ts', '--peers', file('bad-tags.json')], `${file('bad-tags.json')}: [0].tags.zone expected string, got 3`],
    ]
    for (const [args, message] of cases) {
      const run = await lamina(args)
      expect(run.code, args.join(' ')).toBe(2)
      expect(run.stderr).toContain(message)
      expect(run.stderr).toContain('usage: lamina plan PROGRAM --peers FILE')
    }
  })

  it('has --help, is in the command list, and is the hint for a typo', async () => {
    const help = await lamina(['plan', '--help'])
    expect(help.code).toBe(0)
    expect(help.stdout).toContain('usage: lamina plan PROGRAM --peers FILE')
    expect((await lamina(['--help'])).stdout).toMatch(/^ {2}plan PROGRAM …/m)
    const typo = await lamina(['plna'])
    expect(typo.code).toBe(2)
    expect(typo.stderr).toContain('unknown command "plna" (did you mean `lamina plan`?)')
  })
})
