// A FIFO of batches that counts the records it holds: the queue inside every channel half.

import type { Batch } from './contracts.js'

const EMPTY: Batch = Object.freeze({ values: Object.freeze([]) })

/**
 * Batches in arrival order. `shift` is O(1): taken slots are blanked and the array is compacted
 * only once more than half of it is spent, so a long-lived channel neither leaks nor copies often.
 */
export class BatchQueue {
  private readonly batches: Batch[] = []
  private head = 0
  /** Records in the queued batches. */
  records = 0

  /** Batches queued (marker batches, which hold no records, included). */
  get length(): number {
    return this.batches.length - this.head
  }

  push(batch: Batch): void {
    this.batches.push(batch)
    this.records += batch.values.length
  }

  /** The oldest batch, or undefined when empty. */
  shift(): Batch | undefined {
    if (this.head >= this.batches.length) return undefined
    const batch = this.batches[this.head]!
    this.batches[this.head++] = EMPTY
    if (this.head > 64 && this.head * 2 > this.batches.length) {
      this.batches.splice(0, this.head)
      this.head = 0
    }
    this.records -= batch.values.length
    return batch
  }
}
