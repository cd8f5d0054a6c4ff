// Roles held through the store, with fencing tokens (a leader election in the manner of etcd's
// concurrency package, and of Kleppmann's fencing tokens in "How to do distributed locking").
//
// A candidate claims role `name` by a compare-and-set that creates `_lamina/role/<name>` under
// a lease it keeps alive; only one claim can create the key, and it goes when the lease expires
// (its holder died, or was cut off past the TTL) or is revoked (`resign`). The claim's revision is
// the holder's **fencing token**: every later claim is a later write to the same key, so a later
// holder's token is greater. A holder may lose its role without knowing at once (a pause, a
// partition): whoever acts on its orders therefore checks the token, either against the newest it
// has admitted (`Fence`, no round trip) or against the store (`isHolder`).

import type { KvClient, KvLease } from './client.js'
import { KvFencedError } from './errors.js'

/** A role this candidate holds (`campaign`). */
export interface Leadership {
  readonly role: string
  /** Who holds it (the candidate's name, e.g. its peer id). */
  readonly holder: string
  /** The fencing token: the revision of this holder's claim. Every later holder's is greater. */
  readonly token: number
  /**
   * Resolves, with the reason, once the holder cannot be sure it still holds the role (its lease
   * could not be kept alive). It stops acting as the holder then; its token fences the rest.
   */
  readonly lost: Promise<Error>
  /** Gives the role up: the lease is revoked, so the next candidate can win at once. */
  resign(): Promise<void>
}

/** Options of `campaign`. */
export interface CampaignOptions {
  /** Milliseconds the role outlives its holder's last keep-alive. @default 3000 */
  readonly ttlMs?: number
  /** Stops campaigning (rejects with the signal's reason). */
  readonly signal?: AbortSignal
}

/** The key a role is claimed at. */
export function roleKey(role: string): string {
  return `_lamina/role/${role}`
}

/** The role's holder and token, or undefined when nobody holds it. */
export async function holderOf(kv: KvClient, role: string): Promise<{ holder: string; token: number } | undefined> {
  const entry = await kv.get(roleKey(role))
  return entry === undefined ? undefined : { holder: entry.value, token: entry.modRevision }
}

/** Whether `token` is the role's current holder's (a linearizable read of the store). */
export async function isHolder(kv: KvClient, role: string, token: number): Promise<boolean> {
  return (await holderOf(kv, role))?.token === token
}

/**
 * Campaigns for `role` as `holder`: resolves once it holds the role, which may be at once or after
 * the current holder resigns or its lease expires. Candidates are served in no particular order.
 */
export async function campaign(kv: KvClient, role: string, holder: string, options: CampaignOptions = {}): Promise<Leadership> {
  const ttlMs = options.ttlMs ?? 3000
  for (;;) {
    options.signal?.throwIfAborted()
    const won = await claim(kv, role, holder, { ttlMs })
    if (won !== undefined) return won
    // Held by another: wait until the key goes (a delete, or the lease's expiry), then claim again.
    await vacated(kv, roleKey(role), Math.max(250, ttlMs / 2), options.signal)
  }
}

/** Claims `role` as `holder` once: the leadership when nobody held it, undefined when another does. */
export async function claim(kv: KvClient, role: string, holder: string, options: { readonly ttlMs?: number } = {}): Promise<Leadership | undefined> {
  const lease = await kv.grant(options.ttlMs ?? 3000)
  let claimed = false
  try {
    const result = await kv.cas(roleKey(role), holder, { ifModRevision: 0, lease })
    if (!result.ok) return undefined
    claimed = true
    return held(role, holder, result.revision, lease)
  } finally {
    if (!claimed) await lease.revoke().catch(() => undefined)
  }
}

/**
 * Resolves once `role` is free (its key deleted: resigned, or its lease expired), or after `pollMs`
 * whichever is first: the caller looks again either way (a missed event costs a look, not a hang).
 */
export function roleVacated(kv: KvClient, role: string, pollMs: number, signal?: AbortSignal): Promise<void> {
  return vacated(kv, roleKey(role), pollMs, signal)
}

function held(role: string, holder: string, token: number, lease: KvLease): Leadership {
  const { lost } = lease.keepAliveForever()
  return { role, holder, token, lost, resign: () => lease.revoke() }
}

/** Resolves when `key` is deleted, or after `pollMs` (a missed event costs one more try, not a hang). */
function vacated(kv: KvClient, key: string, pollMs: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const done = (): void => {
      clearTimeout(timer)
      subscription.unsubscribe()
      signal?.removeEventListener('abort', abort)
      resolve()
    }
    const abort = (): void => {
      done()
      reject(signal!.reason)
    }
    const timer = setTimeout(done, pollMs)
    const subscription = kv.watch(key).subscribe({
      next: (event) => {
        if (event.key === key && event.type === 'delete') done()
      },
      error: done,
    })
    signal?.addEventListener('abort', abort, { once: true })
  })
}

/**
 * What a peer acting on a role holder's orders keeps: the newest token it admitted. An order
 * stamped with an older token comes from a holder that lost the role, and is refused.
 */
export class Fence {
  private newest = 0

  constructor(readonly role: string) {}

  /** The newest token admitted so far (0: none). */
  get token(): number {
    return this.newest
  }

  /**
   * Admits `token` (the same or a newer one than any before).
   *
   * @throws KvFencedError when a newer token was admitted already.
   */
  admit(token: number): void {
    if (token < this.newest) throw new KvFencedError(this.role, token, this.newest)
    this.newest = token
  }
}
