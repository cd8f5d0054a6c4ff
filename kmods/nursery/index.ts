// kmods/nursery: supervised child processes (start, readiness, restart by policy, no orphans).

export * from './errors.js'
export { Nursery, watchParent, reportReady, type NurseryOptions, type NurseryEvent, type RestartPolicy, type ReadyMessage } from './nursery.js'
