// Tests of the file source: every line exactly once, in order; replay from a restored line offset; typed errors.
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { fileSource, kernel, link, program, sink, t, type FileSourceOptions, type JobReport } from 'lamina'
import { restoreOffsets, until } from 'lamina/testing'

const dir = mkdtempSync(join(tmpdir(), 'lamina-file-source-test-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))
let files = 0
function file(content: string | Buffer): string {
  const path = join(dir, `input-${files++}.txt`)
  writeFileSync(path, content)
  return path
}

/** The lines a text is defined to have (see fileSource): split at LF, a CR before it dropped, no empty last line. */
function linesOf(text: string): string[] {
  const lines = text.split('\n').map((l) => l.replace(/\r$/, ''))
  if (lines.at(-1) === '') lines.pop()
  return lines
}

interface Run {
  readonly out: string[]
  readonly report: JobReport
}

async function run(path: string, options: FileSourceOptions & { offsets?: readonly number[]; batchSize?: number } = {}): Promise<Run> {
  const lines = fileSource('lines', path, options)
  const out: string[] = []
  const into = sink('out', t.string, out)
  const p = program('file', { operators: [lines, into], links: [link(lines.outputs.out, into.inputs.in)] })
  const k = options.offsets === undefined ? kernel : kernel.with(restoreOffsets('lines', options.offsets))
  const report = await k.run(p, { batchSize: options.batchSize ?? 16 }).done
  return { out, report }
}

const MIXED = 'first line\r\nsecond: ünïcødé ✓ 𝄞\n\n  indented\r\n\r\nemoji 🎉 at the end\nno newline at the end'

describe('fileSource', () => {
  it('emits every line exactly once, in order: CRLF, empty lines, multi-byte characters across chunk edges, no final newline', async () => {
    const path = file(MIXED)
    for (const chunkBytes of [1, 2, 3, 7, 64, 65_536]) {
      const { out, report } = await run(path, { chunkBytes })
      expect(report.deadLetters).toEqual([])
      expect(out).toEqual(linesOf(MIXED))
    }
    expect(linesOf(MIXED)).toHaveLength(7)
  })

  it('reads a file ending in a line break without an empty last line, an empty file as nothing, and drops a byte order mark', async () => {
    expect((await run(file('a\nb\n'))).out).toEqual(['a', 'b'])
    expect((await run(file('a\r\nb\r\n'))).out).toEqual(['a', 'b'])
    expect((await run(file(''))).out).toEqual([])
    expect((await run(file('\n'))).out).toEqual([''])
    expect((await run(file('\ufeffa\nb'))).out).toEqual(['a', 'b'])
    expect((await run(file('last\r'))).out).toEqual(['last'])
  })

  it('declares replay by seeking', () => {
    expect(fileSource('lines', '/nowhere').annotations.replay).toBe('seek')
  })

  it('after a restore at line k, emits exactly lines k.. (nothing earlier again)', async () => {
    const text = Array.from({ length: 100 }, (_, i) => `line ${i} ${'x'.repeat(i % 13)}`).join('\r\n') + '\r\n'
    const path = file(text)
    const all = linesOf(text)
    for (const k of [0, 1, 2, 17, 50, 99, 100, 150]) {
      for (const chunkBytes of [5, 4096]) {
        const { out, report } = await run(path, { offsets: [k], chunkBytes })
        expect(report.deadLetters).toEqual([])
        expect(out).toEqual(all.slice(k))
      }
    }
  })

  it('splits lines by stride over parallel instances, each resuming at its own offset', async () => {
    const text = Array.from({ length: 103 }, (_, i) => `l${i}`).join('\n')
    const path = file(text)
    const all = linesOf(text)
    const annotations = { parallelism: 3 }
    const whole = await run(path, { annotations, chunkBytes: 10 })
    expect([...whole.out].sort()).toEqual([...all].sort())
    // Instance i emits lines i, i + 3 …; restored at offset k it starts at its k-th: line i + 3k.
    const offsets = [5, 0, 34]
    const resumed = await run(path, { annotations, chunkBytes: 10, offsets })
    const expected = all.filter((_, line) => (line % 3 === 0 ? line >= 15 : line % 3 === 1 ? true : line >= 2 + 3 * 34))
    expect([...resumed.out].sort()).toEqual([...expected].sort())
    // Each instance's share arrives in file order.
    for (let i = 0; i < 3; i++) {
      const share = resumed.out.filter((l) => Number(l.slice(1)) % 3 === i)
      expect(share).toEqual(expected.filter((l) => Number(l.slice(1)) % 3 === i))
    }
  })

  it('seeks in a big file, near its line once the file was read (sparse index), and not from a stale index after the file changed', async () => {
    const count = 200_000
    const version = (v: string): string => Array.from({ length: count }, (_, i) => `${v}${i}`).join('\n') + '\n'
    const path = file(version('a'))
    // A first seek scans from the start; a full read records every 65,536th line's position.
    const k = 150_001
    expect((await run(path, { offsets: [k], batchSize: 4096 })).out).toEqual(Array.from({ length: count - k }, (_, i) => `a${k + i}`))
    expect((await run(path, { batchSize: 4096 })).out).toHaveLength(count)
    for (const offset of [k, 131_072, 131_071, 65_536, count - 1]) {
      const { out } = await run(path, { offsets: [offset], batchSize: 4096 })
      expect(out).toHaveLength(count - offset)
      expect([out[0], out.at(-1)]).toEqual([`a${offset}`, `a${count - 1}`])
    }
    // Lines of another length move every line's position: the old index must not be used.
    writeFileSync(path, version('bb'))
    const { out } = await run(path, { offsets: [k], batchSize: 4096 })
    expect(out).toEqual(Array.from({ length: count - k }, (_, i) => `bb${k + i}`))
  })

  it('reads as a stream: a graceful stop after some lines ends the job with a prefix of the file', async () => {
    const all = Array.from({ length: 50_000 }, (_, i) => `n${i}`)
    const path = file(all.join('\n'))
    const out: string[] = []
    const lines = fileSource('lines', path, { chunkBytes: 1024 })
    const into = sink('out', t.string, (line: string) => {
      out.push(line)
      if (out.length === 100) void job.stop()
    })
    const job = kernel.run(program('file', { operators: [lines, into], links: [link(lines.outputs.out, into.inputs.in)] }), { batchSize: 10, capacity: 20 })
    await job.done
    expect(out.length).toBeGreaterThanOrEqual(100)
    expect(out.length).toBeLessThan(all.length)
    expect(out).toEqual(all.slice(0, out.length))
  })

  it('reports a missing file, a directory, bad UTF-8 and an over-long line as typed errors', async () => {
    const missing = join(dir, 'missing.txt')
    const badUtf8 = file(Buffer.concat([Buffer.from('good\nalso good\n'), Buffer.from([0x62, 0x61, 0xff, 0x64]), Buffer.from('\nnever\n')]))
    const cases: [string, FileSourceOptions, string, Record<string, unknown>, string[]][] = [
      [missing, {}, 'ERR_SOURCE_FILE', { path: missing, systemCode: 'ENOENT' }, []],
      [dir, {}, 'ERR_SOURCE_FILE', { path: dir }, []],
      [badUtf8, { chunkBytes: 3 }, 'ERR_SOURCE_FILE_FORMAT', { line: 2, position: 15 }, ['good', 'also good']],
      [badUtf8, {}, 'ERR_SOURCE_FILE_FORMAT', { line: 2, position: 15 }, ['good', 'also good']],
      // A multi-byte character cut short at the end of the file.
      [file(Buffer.concat([Buffer.from('ok\n'), Buffer.from('€').subarray(0, 2)])), {}, 'ERR_SOURCE_FILE_FORMAT', { line: 1, position: 3 }, ['ok']],
      [file('short\n' + 'y'.repeat(100) + '\nafter'), { chunkBytes: 8, maxLineBytes: 50 }, 'ERR_SOURCE_FILE_FORMAT', { line: 1, position: 6 }, ['short']],
      [file('short\n' + 'y'.repeat(100) + '\nafter'), { chunkBytes: 4096, maxLineBytes: 50 }, 'ERR_SOURCE_FILE_FORMAT', { line: 1, position: 6 }, ['short']],
    ]
    for (const [path, options, code, fields, emitted] of cases) {
      const { out, report } = await run(path, options)
      expect(out).toEqual(emitted)
      expect(report.deadLetters.map((d) => [d.code, d.where.operator])).toEqual([['ERR_SOURCE', 'lines']])
      expect(report.deadLetters[0]!.error.cause).toMatchObject({ code, ...fields })
    }
  })

  it('refuses options out of range when built', () => {
    expect(() => fileSource('lines', '/x', { chunkBytes: 0 })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_OPTION' }))
    expect(() => fileSource('lines', '/x', { maxLineBytes: 1.5 })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_OPTION' }))
  })
})

describe('fileSource and its file descriptor', () => {
  /** Descriptors this process has open now (Linux: /proc/self/fd). */
  const openFds = (): number => readdirSync('/proc/self/fd').length

  it.skipIf(!existsSync('/proc/self/fd'))('closes the file when the job is aborted mid-read, without waiting for the garbage collector', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lamina-file-fd-'))
    try {
      const path = join(dir, 'big.txt')
      writeFileSync(path, Array.from({ length: 200_000 }, (_, i) => `line ${i}`).join('\n'))
      const before = openFds()
      let seen = 0
      const abort = new AbortController()
      const lines = fileSource('lines', path, { chunkBytes: 4096 })
      const out = sink('out', t.string, () => {
        if (++seen === 1000) abort.abort(new Error('enough'))
      })
      const job = kernel.run(program('fd', { operators: [lines, out], links: [link(lines.outputs.out, out.inputs.in)] }), { signal: abort.signal })
      await job.done.catch(() => undefined)
      expect(seen).toBeGreaterThanOrEqual(1000)
      await until(() => openFds() <= before, 5_000, 'the file descriptor to be closed')
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
