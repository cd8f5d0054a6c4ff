// Peer descriptions from JSON (a `lamina plan --peers` file, a config): checked, with the path of each problem.

import { renderProblem, type DecodeProblem, type PeerDescription } from '../../kernel/index.js'
import { PlacementInputError } from './errors.js'

const SHOWN_PROBLEMS = 10

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/** The problems of a `{ [name]: string }` (or number) map at `path`. */
function mapProblems(value: unknown, path: string, kind: 'string' | 'number', problems: DecodeProblem[]): void {
  if (value === undefined) return
  if (!isObject(value)) return void problems.push({ path, expected: `{ [name]: ${kind} }`, actual: value })
  for (const [key, entry] of Object.entries(value)) {
    if (typeof entry !== kind || (kind === 'number' && !Number.isFinite(entry))) problems.push({ path: `${path}.${key}`, expected: kind, actual: entry })
  }
}

/**
 * Reads peer descriptions from parsed JSON: an array of `{ id, tags?, capacity? }`, tags string to
 * string (`{ "zone": "eu", "name": "peer-0" }`), capacities string to number. Missing tags are
 * none. Throws PlacementInputError naming `source` and the path of every problem
 * (`peers.json: [1].tags.zone expected string, got 3`), and for an empty list.
 *
 * ```ts
 * const peers = decodePeers(JSON.parse(await readFile('peers.json', 'utf8')), 'peers.json')
 * const planned = await kernel.with(placement()).plan(program, { peers })
 * ```
 */
export function decodePeers(value: unknown, source = 'peers'): PeerDescription[] {
  const problems: DecodeProblem[] = []
  if (!Array.isArray(value)) problems.push({ path: '', expected: 'an array of { id, tags?, capacity? }', actual: value })
  else if (value.length === 0) throw new PlacementInputError(`${source}: lists no peer (expected [{ "id": "…", "tags": { … } }, …])`)
  else
    value.forEach((peer: unknown, i) => {
      if (!isObject(peer)) return void problems.push({ path: `[${i}]`, expected: '{ id, tags?, capacity? }', actual: peer })
      if (typeof peer.id !== 'string' || peer.id === '') problems.push({ path: `[${i}].id`, expected: 'a non-empty string', actual: peer.id })
      mapProblems(peer.tags, `[${i}].tags`, 'string', problems)
      mapProblems(peer.capacity, `[${i}].capacity`, 'number', problems)
    })
  if (problems.length > 0) {
    const shown = problems.slice(0, SHOWN_PROBLEMS).map(renderProblem)
    if (problems.length > SHOWN_PROBLEMS) shown.push(`… and ${problems.length - SHOWN_PROBLEMS} more`)
    throw new PlacementInputError(`${source}: ${shown.join('; ')}`)
  }
  return (value as Record<string, unknown>[]).map((peer): PeerDescription => {
    const tags = { ...((peer.tags as Record<string, string> | undefined) ?? {}) }
    const capacity = peer.capacity as Record<string, number> | undefined
    return capacity === undefined ? { id: peer.id as string, tags } : { id: peer.id as string, tags, capacity: { ...capacity } }
  })
}
