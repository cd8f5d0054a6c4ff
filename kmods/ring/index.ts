// kmods/ring: the one hash ring: rendezvous hashing (which nodes own a key) and key groups (which instance owns a key).

export { Ring, KeyGroups, keyGroups, weight, type KeyGroupMove } from './ring.js'
export { RingArgumentError } from './errors.js'
