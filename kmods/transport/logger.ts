// A small logger for peers: one clear line per event, prefixed with the peer's short id.

/** Where a peer writes its log lines (admission refusals, broken links, protocol errors). */
export interface Logger {
  info(message: string): void
  warn(message: string): void
  error(message: string): void
}

/** The short form of a peer id used in log lines: its last 8 characters (Ed25519 ids all start alike). */
export function shortId(peerId: string): string {
  return peerId.length <= 8 ? peerId : `…${peerId.slice(-8)}`
}

/** A logger writing `lamina <short id> <level>: <message>` lines to stderr. */
export function stderrLogger(peerId: string): Logger {
  const prefix = `lamina ${shortId(peerId)}`
  const write = (level: string, message: string): void => void process.stderr.write(`${prefix} ${level}: ${message}\n`)
  return {
    info: (message) => write('info', message),
    warn: (message) => write('warn', message),
    error: (message) => write('error', message),
  }
}

/** A logger that keeps its lines in memory (`lines` as `level: message`): for tests. */
export function memoryLogger(): Logger & { readonly lines: string[] } {
  const lines: string[] = []
  return {
    lines,
    info: (message) => void lines.push(`info: ${message}`),
    warn: (message) => void lines.push(`warn: ${message}`),
    error: (message) => void lines.push(`error: ${message}`),
  }
}
