// kmods/store: the embedded durable store (peer identity, checkpoints, KV shards).

export { openStore, prefixEnd, type Store, type StoreEntry, type StoreOps, type StoreOptions, type StoreValue } from './store.js'
export { StoreArgumentError, StoreAsyncTransactionError, StoreClosedError, StoreError, StoreIOError, StoreOpenError } from './errors.js'
