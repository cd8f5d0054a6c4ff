// Hosts for tests that need several machines: network namespaces, each joined by a veth pair to a
// bridge in this one (the test process is a host on the bridge too). Needs root; cut a host off
// with `ip link set <veth> down`, or with blackhole routes between namespaces.

import { execFileSync } from 'node:child_process'

/** One host: its namespace, the veth end on the bridge side, and its address. */
export interface NetnsHost {
  readonly ns: string
  readonly veth: string
  readonly ip: string
}

/** Hosts on a bridge; `remove()` deletes the namespaces and the bridge (idempotent). */
export interface NetnsHosts {
  readonly hosts: readonly NetnsHost[]
  readonly bridge: string
  /** This process's address on the bridge. */
  readonly gateway: string
  remove(): void
}

/** Runs a command, throwing with its stderr when it fails. */
export function sh(...args: string[]): void {
  execFileSync(args[0]!, args.slice(1), { stdio: 'pipe' })
}

/** Why network namespaces cannot be used here (not root, no `ip netns`), or undefined when they can. */
export function netnsUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'not running as root'
  const probe = `lamina-probe-${process.pid}`
  try {
    sh('ip', 'netns', 'add', probe)
    sh('ip', 'netns', 'del', probe)
    return undefined
  } catch (error) {
    return `ip netns failed: ${error instanceof Error ? error.message.split('\n')[0] : String(error)}`
  }
}

/**
 * Creates `count` hosts named after `prefix` (2 or 3 letters: interface names stay under 15
 * characters) on subnet `10.<octet>.<pid % 200>.0/24`: this process is .1, host i is .(11 + i).
 */
export function createNetnsHosts(prefix: string, count: number, octet: number): NetnsHosts {
  const tag = `${process.pid % 10000}`
  const subnet = `10.${octet}.${process.pid % 200}`
  const bridge = `${prefix}br${tag}`
  const hosts = Array.from({ length: count }, (_, i) => ({ ns: `lamina-${prefix}-${tag}-${i + 1}`, veth: `${prefix}v${tag}h${i + 1}`, ip: `${subnet}.${11 + i}` }))
  const remove = (): void => {
    for (const h of hosts) {
      try {
        sh('ip', 'netns', 'del', h.ns)
      } catch {
        // already gone
      }
    }
    try {
      sh('ip', 'link', 'del', bridge)
    } catch {
      // already gone
    }
  }
  try {
    sh('ip', 'link', 'add', bridge, 'type', 'bridge')
    sh('ip', 'addr', 'add', `${subnet}.1/24`, 'dev', bridge)
    sh('ip', 'link', 'set', bridge, 'up')
    for (const h of hosts) {
      sh('ip', 'netns', 'add', h.ns)
      sh('ip', 'link', 'add', h.veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', h.ns)
      sh('ip', 'link', 'set', h.veth, 'master', bridge)
      sh('ip', 'link', 'set', h.veth, 'up')
      sh('ip', 'netns', 'exec', h.ns, 'ip', 'addr', 'add', `${h.ip}/24`, 'dev', 'eth0')
      sh('ip', 'netns', 'exec', h.ns, 'ip', 'link', 'set', 'eth0', 'up')
      sh('ip', 'netns', 'exec', h.ns, 'ip', 'link', 'set', 'lo', 'up')
    }
  } catch (error) {
    remove()
    throw error
  }
  return { hosts, bridge, gateway: `${subnet}.1`, remove }
}
