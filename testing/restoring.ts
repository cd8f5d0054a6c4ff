// A test layer for replayable sources: starts each source instance at a given offset.
import type { Layer } from '../kernel/index.js'

/**
 * A layer that restores each instance of the source `operator` to the offset `offsets[instance]`
 * (0 where none is given), as the checkpoints layer does from a snapshot: a test of a replayable
 * source checks that it resumes there.
 *
 * ```ts
 * const job = kernel.with(restoreOffsets('lines', [2, 0])).run(program)
 * ```
 */
export function restoreOffsets(operator: string, offsets: readonly number[]): Layer {
  return {
    name: 'restore-offsets',
    instance: (spec, next) => {
      const inner = next(spec)
      if (spec.operator.name === operator) inner.restore({ operator, entries: [[null, offsets[spec.info.instance] ?? 0]] })
      return inner
    },
  }
}
