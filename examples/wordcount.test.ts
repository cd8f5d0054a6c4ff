import { execFile } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { kernel } from 'lamina'
import { byCountThenWord, generatedText, wordcount, words, type WordCount } from './wordcount.js'

const run = promisify(execFile)
const cli = join(import.meta.dirname, '..', 'dist', 'examples', 'wordcount.js')

/** The answer computed the plainest way: no kernel, no operators. */
function reference(lines: Iterable<string>, top = 10): WordCount[] {
  const counts = new Map<string, number>()
  for (const line of lines) for (const w of line.match(/[\p{L}\p{N}]+/gu) ?? []) counts.set(w.toLowerCase(), (counts.get(w.toLowerCase()) ?? 0) + 1)
  return [...counts]
    .map(([word, count]) => ({ word, count }))
    .sort(byCountThenWord)
    .slice(0, top)
}

describe('wordcount', () => {
  it('splits words on Unicode letters and digits, lowercased', () => {
    expect(words('Hello, WORLD! café-au-lait 42x ÉCOLE 東京 😀 naïve')).toEqual(['hello', 'world', 'café', 'au', 'lait', '42x', 'école', '東京', 'naïve'])
  })

  it('gives the same top 10 as a plain count, at any parallelism', async () => {
    const expected = reference(generatedText(50_000))
    for (const parallelism of [1, 3]) {
      const rows: WordCount[] = []
      const report = await kernel.run(wordcount({ lines: generatedText(50_000), out: (r) => rows.push(r), parallelism })).done
      expect(rows).toEqual(expected)
      expect(report.deadLetters).toEqual([])
    }
  })

  it('breaks ties by word, ascending', async () => {
    const rows: WordCount[] = []
    await kernel.run(wordcount({ lines: ['b a c', 'c b a', 'd'], out: (r) => rows.push(r), top: 3 })).done
    expect(rows).toEqual([
      { word: 'a', count: 2 },
      { word: 'b', count: 2 },
      { word: 'c', count: 2 },
    ])
  })

  describe('command line', () => {
    let dir: string
    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'lamina-wordcount-'))
    })
    afterAll(async () => {
      await rm(dir, { recursive: true, force: true })
    })

    it('counts a FILE and prints `<word> <count>` lines', async () => {
      const file = join(dir, 'text.txt')
      const text = 'The cat and the hat.\nTHE END, the end?\r\nÉté été ÉTÉ 2024 2024\n'
      await writeFile(file, text)
      const { stdout } = await run(process.execPath, [cli, file])
      expect(stdout).toBe('the 4 été 3 2024 2 end 2 and 1 cat 1 hat 1\n'.replace(/ (\d+) /g, ' $1\n'))
    })

    it('counts its generated text with no argument', async () => {
      const { stdout } = await run(process.execPath, [cli])
      const expected = reference(generatedText())
      expect(stdout).toBe(expected.map((r) => `${r.word} ${r.count}\n`).join(''))
    })

    it('says why when the file cannot be read', async () => {
      const failure = await run(process.execPath, [cli, join(dir, 'missing.txt')]).catch((error: { code: number; stderr: string }) => error)
      expect(failure).toMatchObject({ code: 1 })
      expect((failure as { stderr: string }).stderr).toContain('cannot read')
      expect((failure as { stderr: string }).stderr).toContain('ENOENT')
    })
  })
})
