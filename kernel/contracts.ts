// Every contract of the kernel, for the kernel's own files: the types live in kernel/contracts/, one
// file per concept, each importing no implementation. `lamina` re-exports all but the internal
// ones (contracts/deployment.ts), which `lamina/internal` exports.

export type * from './contracts/ports.js'
export type * from './contracts/operators.js'
export type * from './contracts/channels.js'
export type * from './contracts/links.js'
export type * from './contracts/programs.js'
export type * from './contracts/layers.js'
export type * from './contracts/jobs.js'
export type * from './contracts/deployment.js'
export type * from './contracts/frames.js'
