// Measures a remote channel between two peer processes against a raw libp2p stream carrying the same records (to become bench/link.ts).
// Run: node --import tsx kernel/transport/measure-link.ts [records=1000000] [runs=3]
// Prints one JSON line per measurement, and last a summary line: {"bench":"link","ratio":…,"ratio_64k":…,"records_per_s":…}.

import './polyfill.js'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { ChannelInfo } from '../contracts.js'
import { generatePsk, writePskFile } from './psk.js'
import { startTestPeer, type TestPeerProcess } from './test-peer-process.js'

const records = Number(process.argv[2] ?? 1_000_000)
const runs = Number(process.argv[3] ?? 3)
const batch = Number(process.env.LAMINA_BATCH ?? 1024)
const capacity = Number(process.env.LAMINA_CAPACITY ?? 4096)
const dir = mkdtempSync(join(tmpdir(), 'lamina-measure-'))
const peers: TestPeerProcess[] = []

/** Channel capacity and batch size (records) for a record size: large records get a window of about 4 MiB. */
function shape(recordBytes: number): { capacity: number; batch: number } {
  if (recordBytes <= 1024) return { capacity, batch }
  const big = Math.max(4, Math.floor((4 * 2 ** 20) / recordBytes))
  return { capacity: big, batch: Math.max(1, big >> 2) }
}

function info(job: string, capacity: number): ChannelInfo {
  const link = { from: { operator: 'source', port: 'out' }, to: { operator: 'sink', port: 'in' }, partitioning: undefined, capacity, id: 'source.out -> sink.in' }
  return { job, link, from: { operator: 'source', port: 'out', instance: 0 }, to: { operator: 'sink', port: 'in', instance: 0 } }
}

let job = 0
async function lamina(producer: TestPeerProcess, consumer: TestPeerProcess, count: number, recordBytes: number): Promise<number> {
  const id = `lamina-${job++}`
  const received = consumer.next('received', id, 600_000)
  const { capacity, batch } = shape(recordBytes)
  consumer.send({ cmd: 'receive', id, info: info(id, capacity), capacity, codec: 'string' })
  producer.send({ cmd: 'send', id, target: consumer.address, info: info(id, capacity), count, recordBytes, batch })
  const [report] = await Promise.race([Promise.all([received, producer.next('sent', id, 600_000)]), brokenOn(producer, id), brokenOn(consumer, id)])
  if (report.count !== count || !report.ordered) throw new Error(`channel delivered ${report.count}/${count} records, ordered: ${report.ordered}`)
  return report.ms
}

/** Rejects when a peer reports the channel broken. */
function brokenOn(peer: TestPeerProcess, id: string): Promise<never> {
  const broken = peer.next('broken', id, 600_000).then((report) => Promise.reject(new Error(`channel ${id} broke: ${report.message}`)))
  broken.catch(() => undefined)
  return broken
}

async function raw(producer: TestPeerProcess, consumer: TestPeerProcess, count: number, recordBytes: number): Promise<number> {
  const id = `raw-${job++}`
  const received = consumer.next('raw-received', undefined, 600_000)
  producer.send({ cmd: 'raw-send', id, target: consumer.address, count, recordBytes, writeBytes: 64 * 1024 })
  const [report] = await Promise.all([received, producer.next('sent', id, 600_000)])
  if (report.bytes !== count * recordBytes) throw new Error(`raw stream delivered ${report.bytes}/${count * recordBytes} bytes`)
  return report.ms
}

try {
  const pskFile = join(dir, 'swarm.key')
  await writePskFile(pskFile, generatePsk())
  const [producer, consumer] = await Promise.all([startTestPeer(dir, 'producer', pskFile), startTestPeer(dir, 'consumer', pskFile)])
  peers.push(producer, consumer)
  consumer.send({ cmd: 'raw-receive', id: 'raw' })
  await consumer.next('stats', 'raw')
  const best = { lamina: Infinity, raw: Infinity, lamina64k: Infinity, raw64k: Infinity }
  const big = Math.max(200, Math.floor((records * 100) / 65536))
  // Warm up both paths once, then alternate so that both see the same machine load.
  await lamina(producer, consumer, Math.min(records, 100_000), 100)
  await raw(producer, consumer, Math.min(records, 100_000), 100)
  for (let run = 0; run < runs; run++) {
    const l = await lamina(producer, consumer, records, 100)
    const r = await raw(producer, consumer, records, 100)
    const l64 = await lamina(producer, consumer, big, 65536)
    const r64 = await raw(producer, consumer, big, 65536)
    best.lamina = Math.min(best.lamina, l)
    best.raw = Math.min(best.raw, r)
    best.lamina64k = Math.min(best.lamina64k, l64)
    best.raw64k = Math.min(best.raw64k, r64)
    console.log(JSON.stringify({ run, lamina_records_per_s: Math.round((records / l) * 1000), raw_records_per_s: Math.round((records / r) * 1000), lamina_64k_mb_s: +((big * 65536) / 2 ** 20 / (l64 / 1000)).toFixed(1), raw_64k_mb_s: +((big * 65536) / 2 ** 20 / (r64 / 1000)).toFixed(1) }))
  }
  const perSecond = (n: number, ms: number) => (n / ms) * 1000
  console.log(
    JSON.stringify({
      bench: 'link',
      ratio: +(best.raw / best.lamina).toFixed(3),
      ratio_64k: +(best.raw64k / best.lamina64k).toFixed(3),
      records_per_s: Math.round(perSecond(records, best.lamina)),
      raw_records_per_s: Math.round(perSecond(records, best.raw)),
      mb_per_s: +((perSecond(records, best.lamina) * 100) / 2 ** 20).toFixed(1),
      raw_mb_per_s: +((perSecond(records, best.raw) * 100) / 2 ** 20).toFixed(1),
      mb_per_s_64k: +(perSecond(big * 65536, best.lamina64k) / 2 ** 20).toFixed(1),
      raw_mb_per_s_64k: +(perSecond(big * 65536, best.raw64k) / 2 ** 20).toFixed(1),
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
