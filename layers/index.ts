// Lamina's built-in runtime layers (`lamina/layers`). Each is built only on the public layer API of `lamina`.

export * from './placement/index.js'
export * from './metadata/index.js'
export * from './fault-tolerance/index.js'
export * from './elasticity/index.js'
export * from './isolation/index.js'
