// kmods/log: an append-only durable log in the embedded store, and a replayable source reading it.

export { openLog, type Log, type LogEntry } from './log.js'
export { logSource, type LogSourceOptions } from './log-source.js'
export { LogArgumentError, LogClosedError, LogCorruptError, LogValueError } from './errors.js'
