// Defines Promise.withResolvers where it is missing (Node 20): libp2p v3 and its helpers call it.
// Import this module first in every entry point, or preload it: `node --import <POLYFILL_URL>`.

interface Resolvers<T> {
  promise: Promise<T>
  resolve: (value: T | PromiseLike<T>) => void
  reject: (reason?: unknown) => void
}

const PromiseConstructor = Promise as unknown as { withResolvers?: <T>() => Resolvers<T> }

if (typeof PromiseConstructor.withResolvers !== 'function') {
  // A plain function property like the native one: non-enumerable, writable, configurable.
  Object.defineProperty(Promise, 'withResolvers', {
    configurable: true,
    writable: true,
    enumerable: false,
    value: function withResolvers<T>(this: PromiseConstructor): Resolvers<T> {
      let resolve!: (value: T | PromiseLike<T>) => void
      let reject!: (reason?: unknown) => void
      const promise = new (this ?? Promise)<T>((res, rej) => {
        resolve = res
        reject = rej
      })
      return { promise, resolve, reject }
    },
  })
}

/**
 * The URL of this module, for child processes: `fork(script, { execArgv: ['--import', POLYFILL_URL] })`
 * (with `--import tsx` before it when running the TypeScript sources).
 */
export const POLYFILL_URL: string = import.meta.url
