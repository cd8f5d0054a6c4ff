// The file source: emits the lines of a UTF-8 text file, read as a stream, and resumes at a line after a restore.

import { isUtf8 } from 'node:buffer'
import { open, type FileHandle } from 'node:fs/promises'
import * as t from 'io-ts'
import type { Annotations, Operator } from '../contracts.js'
import { InvalidOptionError, SourceFileError, SourceFileFormatError } from '../errors.js'
import { source, type SourcePart } from './source.js'

/** Options of `fileSource`. All optional. */
export interface FileSourceOptions {
  /** Bytes read from the file at a time (what `fs.createReadStream` reads by default). @default 65536 */
  readonly chunkBytes?: number
  /**
   * The longest line accepted, in bytes: a longer one fails the source (SourceFileFormatError)
   * rather than a file without line breaks being read whole into memory. @default 16777216 (16 MiB)
   */
  readonly maxLineBytes?: number
  /** Milliseconds a partial batch may wait for more lines before it is sent. @default 5 */
  readonly lingerMs?: number
  readonly annotations?: Annotations
}

/**
 * A source emitting the lines of the UTF-8 text file at `path`, read a chunk at a time only as
 * fast as the job takes them (backpressure), on the peer where the source runs (the file is opened
 * there, when the job starts; a missing file is a dead letter ERR_SOURCE whose cause is
 * SourceFileError, ERR_SOURCE_FILE).
 *
 * Lines end at `\n`; a `\r` just before it (or before the end of the file) is dropped, so CRLF
 * files read like LF files; a final line without a line break is emitted, and a leading UTF-8 byte
 * order mark is dropped. A file ending in a line break has no empty last line.
 *
 * Replay is `seek`: after a restore from a checkpoint, instance i resumes at its line `offset`
 * without emitting an earlier line again. The offset is a count of lines (a source's state counts
 * records, see SourcePart), so seeking finds that line by counting line breaks in the raw bytes
 * (no decoding, no strings). Within one process the byte positions of every 65,536th line are
 * remembered per version of the file (device, inode, size, modification and change times), so a
 * restore after the file was read once starts reading near its line. (A byte offset as the state
 * would seek at once in any process, but the state of a `source` is its record count; the index
 * gives most of that without a second kind of source state.) The file must not change
 * while the job runs; between runs, appending whole lines keeps every line's number (but starts a
 * new index).
 *
 * With parallelism n, instance i emits lines i, i + n, i + 2n …: every instance scans the whole
 * file for line breaks, and decodes only its own lines.
 *
 * ```ts
 * const lines = fileSource('lines', '/data/input.txt')
 * const p = program('wc', { operators: [lines, count], links: [link(lines.outputs.out, count.inputs.in)] })
 * ```
 */
export function fileSource(name: string, path: string, options: FileSourceOptions = {}): Operator<Record<never, never>, { out: t.StringC }> {
  const chunkBytes = positiveInteger(name, 'chunkBytes', options.chunkBytes, 65_536)
  const maxLineBytes = positiveInteger(name, 'maxLineBytes', options.maxLineBytes, 16 * 1024 * 1024)
  return source(name, t.string, (part) => new FileLines(path, part, chunkBytes, maxLineBytes), {
    replay: 'seek',
    lingerMs: options.lingerMs,
    annotations: options.annotations,
  })
}

function positiveInteger(where: string, option: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback
  if (!Number.isSafeInteger(value) || value <= 0) throw new InvalidOptionError(`fileSource ${where}`, option, `must be a positive integer, got ${String(value)}`)
  return value
}

const LF = 0x0a
const CR = 0x0d
const DONE: IteratorResult<string> = { value: undefined, done: true }

/**
 * This part's lines of the file, from its line `part.offset` on, parsed a chunk at a time: `next` answers from the parsed lines
 * of the current chunk without reading (the source awaits `next` once per line, so this is what
 * keeps a line cheap), and reads the next chunk only when they are used up (backpressure).
 */
class FileLines implements AsyncIterableIterator<string> {
  private handle: FileHandle | undefined
  private index: LineIndex | undefined
  private finished = false
  /** The number of the next line this part emits. */
  private wanted: number
  /** The number of the line being read, the byte it starts at, and the file position of the next read. */
  private line = 0
  private lineStart = 0
  private position = 0
  /** The bytes so far of a wanted line that runs past its chunk (copied: the buffer is reused). */
  private carry: Buffer[] = []
  private carried = 0
  /** Lines of the last chunk, and how many were taken. */
  private ready: string[] = []
  private taken = 0
  /** A format error met while parsing, thrown once the lines before it were taken. */
  private failure: SourceFileFormatError | undefined
  private readonly buffer: Buffer

  constructor(
    private readonly path: string,
    private readonly part: SourcePart,
    private readonly chunkBytes: number,
    private readonly maxLineBytes: number,
  ) {
    this.wanted = part.instance + part.offset * part.parallelism
    this.buffer = Buffer.allocUnsafe(chunkBytes)
    // A job that stops (an abort, a recovery) may never call `return`: close the file then, so its
    // descriptor is not left to the garbage collector.
    part.signal.addEventListener('abort', () => void this.close().catch(() => undefined), { once: true })
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<string> {
    return this
  }

  next(): Promise<IteratorResult<string>> {
    if (this.taken < this.ready.length) return Promise.resolve({ value: this.ready[this.taken++]!, done: false })
    return this.fill()
  }

  async return(): Promise<IteratorResult<string>> {
    await this.close()
    return DONE
  }

  /** Reads chunks until one has a line of this part (or the file ends, or the job stops). */
  private async fill(): Promise<IteratorResult<string>> {
    try {
      this.ready = []
      this.taken = 0
      while (this.ready.length === 0) {
        if (this.failure !== undefined) throw this.failure
        if (this.finished || this.part.signal.aborted) {
          await this.close()
          return DONE
        }
        if (this.handle === undefined) await this.open()
        if (this.handle === undefined) return DONE // stopped while opening
        let read: number
        try {
          read = (await this.handle!.read(this.buffer, 0, this.chunkBytes, this.position)).bytesRead
        } catch (error) {
          throw new SourceFileError(this.path, error)
        }
        if (read === 0) this.end()
        else this.parse(this.buffer.subarray(0, read))
        this.position += read
      }
      return { value: this.ready[this.taken++]!, done: false }
    } catch (error) {
      await this.close()
      // A read cut short by the job's stop (the file closed under it) is the end, not a failure.
      if (this.part.signal.aborted) return DONE
      throw error
    }
  }

  private async open(): Promise<void> {
    let handle: FileHandle
    try {
      handle = await open(this.path, 'r')
    } catch (error) {
      throw new SourceFileError(this.path, error)
    }
    // The job may have stopped while the file was being opened.
    if (this.finished) {
      await handle.close()
      return
    }
    this.handle = handle
    this.index = await indexOf(this.path, this.handle)
    const start = this.index.seek(this.wanted)
    this.line = start.line
    this.lineStart = this.position = start.position
  }

  /** Adds the part's lines that end in `chunk` to `ready`; keeps the start of a line that does not. */
  private parse(chunk: Buffer): void {
    const { parallelism } = this.part
    // Every line of the chunk is wanted: check its whole lines as UTF-8 at once (far cheaper than
    // line by line). When that fails, lines are checked one by one to find the bad one.
    let checkedTo = -1
    if (parallelism === 1 && this.line === this.wanted) {
      // The tail of a carried line (up to the first line break) is checked with the rest of it.
      const begin = this.carried === 0 ? 0 : chunk.indexOf(LF) + 1
      const last = chunk.lastIndexOf(LF)
      if (last > begin && isUtf8(chunk.subarray(begin, last))) checkedTo = last
    }
    try {
      let from = 0
      for (;;) {
        const lf = chunk.indexOf(LF, from)
        if (lf === -1) {
          if (this.line === this.wanted) {
            this.carried += chunk.length - from
            if (this.carried > this.maxLineBytes) throw this.tooLong()
            this.carry.push(Buffer.from(chunk.subarray(from)))
          }
          return
        }
        if (this.line === this.wanted) {
          if (this.carry.length === 0) this.ready.push(this.decode(chunk, from, lf, lf <= checkedTo))
          else {
            const bytes = Buffer.concat([...this.carry, chunk.subarray(from, lf)])
            this.carry = []
            this.carried = 0
            this.ready.push(this.decode(bytes, 0, bytes.length, false))
          }
          this.wanted += parallelism
        }
        this.line++
        this.lineStart = this.position + lf + 1
        this.index!.passed(this.line, this.lineStart)
        from = lf + 1
      }
    } catch (error) {
      if (!(error instanceof SourceFileFormatError)) throw error
      this.failure = error
    }
  }

  /** The end of the file: a last line without a line break is a line. */
  private end(): void {
    this.finished = true
    if (this.line !== this.wanted || this.carried === 0) return
    const bytes = Buffer.concat(this.carry)
    this.carry = []
    try {
      this.ready.push(this.decode(bytes, 0, bytes.length, false))
    } catch (error) {
      if (!(error instanceof SourceFileFormatError)) throw error
      this.failure = error
    }
  }

  /** The text of the current line, bytes `begin` to `end` of `bytes` (`checked`: known to be UTF-8). */
  private decode(bytes: Buffer, begin: number, end: number, checked: boolean): string {
    if (end - begin > this.maxLineBytes) throw this.tooLong()
    if (end > begin && bytes[end - 1] === CR) end--
    // A byte order mark is not text.
    if (this.line === 0 && end - begin >= 3 && bytes[begin] === 0xef && bytes[begin + 1] === 0xbb && bytes[begin + 2] === 0xbf) begin += 3
    if (!checked && !isUtf8(bytes.subarray(begin, end))) throw new SourceFileFormatError(this.path, this.line, this.lineStart, 'not valid UTF-8')
    return bytes.toString('utf8', begin, end)
  }

  private tooLong(): SourceFileFormatError {
    return new SourceFileFormatError(this.path, this.line, this.lineStart, `longer than maxLineBytes (${this.maxLineBytes})`)
  }

  private async close(): Promise<void> {
    this.finished = true
    const handle = this.handle
    this.handle = undefined
    await handle?.close()
  }
}

/** Lines between two remembered positions of a file's sparse index. */
const INDEX_EVERY = 65_536
/** Files whose index is kept (the least recently opened is dropped first). */
const INDEXED_FILES = 64

/**
 * The sparse index of one version of a file: `marks[j]` is the byte where line j * INDEX_EVERY
 * starts. Readers fill it as they pass those lines; all of them read the same bytes, so whichever
 * passes a line first records the same position.
 */
class LineIndex {
  private readonly marks: number[] = [0]

  constructor(readonly version: string) {}

  /** The remembered line at or before `line`, with the byte it starts at. */
  seek(line: number): { line: number; position: number } {
    const j = Math.min(Math.floor(line / INDEX_EVERY), this.marks.length - 1)
    return { line: j * INDEX_EVERY, position: this.marks[j]! }
  }

  /** Called when a reader reaches the start of `line`, at byte `position`. */
  passed(line: number, position: number): void {
    if (line % INDEX_EVERY === 0 && line / INDEX_EVERY === this.marks.length) this.marks.push(position)
  }
}

/** Indexes by file (device and inode), in insertion order, so the oldest is dropped first. */
const indexes = new Map<string, LineIndex>()

/** The index of the version of the file `handle` has open: a changed file gets a fresh one. */
async function indexOf(path: string, handle: FileHandle): Promise<LineIndex> {
  let stats
  try {
    stats = await handle.stat({ bigint: true })
  } catch (error) {
    throw new SourceFileError(path, error)
  }
  if (!stats.isFile()) throw new SourceFileError(path, 'not a regular file')
  const file = `${stats.dev}:${stats.ino}`
  // The change time moves on every write and cannot be set back (unlike the modification time).
  const version = `${stats.size}:${stats.mtimeNs}:${stats.ctimeNs}`
  const known = indexes.get(file)
  indexes.delete(file)
  const index = known !== undefined && known.version === version ? known : new LineIndex(version)
  indexes.set(file, index)
  if (indexes.size > INDEXED_FILES) indexes.delete(indexes.keys().next().value!)
  return index
}
