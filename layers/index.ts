// Lamina's built-in runtime layers. Each is built only on the public layer API of `lamina`.
// (The five built-in layers arrive with their issues; this entry point exists so imports are stable.)

export {}
export * from './placement/index.js'
export * from './metadata/index.js'
export * from './fault-tolerance/index.js'
export * from './elasticity/index.js'
export * from './isolation/index.js'
