// Benchmark `link`: a remote channel between two peer processes against a raw libp2p stream carrying
// the same records (100-byte records packed into 64 KiB writes with drain backpressure), and 64 KiB payloads.
// Run: npm run bench -- link [records=1000000] [runs=3]
// Prints the frame codec's cost, one JSON line per run, and last a summary line: {"bench":"link","ratio":…,"ratio_64k":…,"records_per_s":…}.

import '../kmods/transport/polyfill.js'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { ChannelInfo } from '../kernel/index.js'
import { decodeRecords, encodeRecords } from '../kernel/internal.js'
import { DATA_HEADROOM, dataFrameInPlace, decodeFrames, type DataFrame } from '../kmods/transport/frames.js'
import { generatePsk, writePskFile } from '../kmods/transport/psk.js'
import { startTransportPeer, type TransportPeerProcess } from '../testing/index.js'

const records = Number(process.argv[2] ?? 1_000_000)
const runs = Number(process.argv[3] ?? 3)
const batch = Number(process.env.LAMINA_BATCH ?? 1024)
const capacity = Number(process.env.LAMINA_CAPACITY ?? 4096)
const dir = mkdtempSync(join(tmpdir(), 'lamina-measure-'))
const peers: TransportPeerProcess[] = []

/** Channel capacity and batch size (records) for a record size: large records get a window of about 16 MiB in batches of about 1 MiB. */
function shape(recordBytes: number): { capacity: number; batch: number } {
  if (recordBytes <= 1024) return { capacity, batch }
  return { capacity: Math.max(4, Math.floor((16 * 2 ** 20) / recordBytes)), batch: Math.max(1, Math.floor(2 ** 20 / recordBytes)) }
}

function info(job: string, capacity: number): ChannelInfo {
  const link = { from: { operator: 'source', port: 'out' }, to: { operator: 'sink', port: 'in' }, partitioning: undefined, capacity, id: 'source.out -> sink.in' }
  return { job, link, from: { operator: 'source', port: 'out', instance: 0 }, to: { operator: 'sink', port: 'in', instance: 0 } }
}

let job = 0
/** One transfer: wall time (ms, sender's start to its end, END acknowledged) and CPU of both processes (ms). */
interface Run {
  readonly ms: number
  readonly cpuMs: number
}

async function lamina(producer: TransportPeerProcess, consumer: TransportPeerProcess, count: number, recordBytes: number): Promise<Run> {
  const id = `lamina-${job++}`
  const started = performance.now()
  const received = consumer.next('received', id, 600_000)
  const { capacity, batch } = shape(recordBytes)
  consumer.send({ cmd: 'receive', id, info: info(id, capacity), capacity, codec: 'string' })
  producer.send({ cmd: 'send', id, target: consumer.address, info: info(id, capacity), count, recordBytes, batch })
  const [report, sent] = await Promise.race([Promise.all([received, producer.next('sent', id, 600_000)]), brokenOn(producer, id), brokenOn(consumer, id)])
  if (report.count !== count || !report.ordered) throw new Error(`channel delivered ${report.count}/${count} records, ordered: ${report.ordered}`)
  return { ms: performance.now() - started, cpuMs: sent.cpuMs + report.cpuMs }
}

/** Rejects when a peer reports the channel broken. */
function brokenOn(peer: TransportPeerProcess, id: string): Promise<never> {
  const broken = peer.next('broken', id, 600_000).then((report) => Promise.reject(new Error(`channel ${id} broke: ${report.message}`)))
  broken.catch(() => undefined)
  return broken
}

async function raw(producer: TransportPeerProcess, consumer: TransportPeerProcess, count: number, recordBytes: number): Promise<Run> {
  const id = `raw-${job++}`
  const started = performance.now()
  const received = consumer.next('raw-received', undefined, 600_000)
  producer.send({ cmd: 'raw-send', id, target: consumer.address, count, recordBytes, writeBytes: 64 * 1024 })
  const [report, sent] = await Promise.all([received, producer.next('sent', id, 600_000)])
  if (report.bytes !== count * recordBytes) throw new Error(`raw stream delivered ${report.bytes}/${count * recordBytes} bytes`)
  return { ms: performance.now() - started, cpuMs: sent.cpuMs + report.cpuMs }
}

/** Nanoseconds per record to encode and decode a DATA frame of 1024 100-character strings (the kernel's payload in the transport's frame), against JSON of the same batch. */
function measureFrames(): { frames_ns_per_record: number; json_ns_per_record: number } {
  const pad = 'x'.repeat(88)
  const values = Array.from({ length: 1024 }, (_, i) => String(i).padStart(12, '0') + pad)
  const time = (fn: () => void): number => {
    for (let i = 0; i < 200; i++) fn()
    const start = process.hrtime.bigint()
    for (let i = 0; i < 2000; i++) fn()
    return Number(process.hrtime.bigint() - start) / 2000 / values.length
  }
  const frames = time(() => {
    const frame = decodeFrames(dataFrameInPlace(encodeRecords(values, undefined, undefined, DATA_HEADROOM), values.length))[0] as DataFrame
    void decodeRecords(frame.payload, frame.records)
  })
  const json = time(() => void JSON.parse(Buffer.from(JSON.stringify(values)).toString('utf8')))
  return { frames_ns_per_record: +frames.toFixed(1), json_ns_per_record: +json.toFixed(1) }
}

try {
  console.log(JSON.stringify({ codec: 'frames', ...measureFrames() }))
  const pskFile = join(dir, 'swarm.key')
  await writePskFile(pskFile, generatePsk())
  const [producer, consumer] = await Promise.all([startTransportPeer(dir, 'producer', pskFile), startTransportPeer(dir, 'consumer', pskFile)])
  peers.push(producer, consumer)
  consumer.send({ cmd: 'raw-receive', id: 'raw' })
  await consumer.next('stats', 'raw')
  const big = Math.max(200, Math.floor((records * 100) / 65536))
  // Warm up both paths once, then alternate so that both see the same machine load; keep each one's best run.
  await lamina(producer, consumer, Math.min(records, 100_000), 100)
  await raw(producer, consumer, Math.min(records, 100_000), 100)
  const best = (runs: Run[]): Run => runs.reduce((a, b) => (b.ms < a.ms ? b : a))
  const results = { lamina: [] as Run[], raw: [] as Run[], lamina64k: [] as Run[], raw64k: [] as Run[] }
  const perSecond = (n: number, run: Run): number => (n / run.ms) * 1000
  const mb = (bytes: number, run: Run): number => +(bytes / 2 ** 20 / (run.ms / 1000)).toFixed(1)
  for (let run = 0; run < runs; run++) {
    const l = await lamina(producer, consumer, records, 100)
    const r = await raw(producer, consumer, records, 100)
    const l64 = await lamina(producer, consumer, big, 65536)
    const r64 = await raw(producer, consumer, big, 65536)
    results.lamina.push(l)
    results.raw.push(r)
    results.lamina64k.push(l64)
    results.raw64k.push(r64)
    console.log(
      JSON.stringify({
        run,
        lamina_records_per_s: Math.round(perSecond(records, l)),
        raw_records_per_s: Math.round(perSecond(records, r)),
        lamina_64k_mb_s: mb(big * 65536, l64),
        raw_64k_mb_s: mb(big * 65536, r64),
      }),
    )
  }
  const [l, r, l64, r64] = [best(results.lamina), best(results.raw), best(results.lamina64k), best(results.raw64k)]
  console.log(
    JSON.stringify({
      bench: 'link',
      ratio: +(r.ms / l.ms).toFixed(3),
      ratio_64k: +(r64.ms / l64.ms).toFixed(3),
      records_per_s: Math.round(perSecond(records, l)),
      raw_records_per_s: Math.round(perSecond(records, r)),
      mb_per_s: mb(records * 100, l),
      raw_mb_per_s: mb(records * 100, r),
      mb_per_s_64k: mb(big * 65536, l64),
      raw_mb_per_s_64k: mb(big * 65536, r64),
      // CPU of both processes per record, ours over raw: what framing, codecs and credits cost, whatever the machine's load.
      cpu_ratio: +(l.cpuMs / r.cpuMs).toFixed(3),
      cpu_ratio_64k: +(l64.cpuMs / r64.cpuMs).toFixed(3),
      records,
      record_bytes: 100,
      batch,
      capacity,
      capacity_64k: shape(65536).capacity,
      batch_64k: shape(65536).batch,
      runs,
    }),
  )
} finally {
  await Promise.all(peers.map((peer) => peer.kill()))
  rmSync(dir, { recursive: true, force: true })
}
