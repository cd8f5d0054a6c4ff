// The kernel's error contract: every error of Lamina, the native core's included, is a LaminaError with a code.
import { describe, expect, it } from 'vitest'
import { NativeBatchError } from '../native/ts/errors.js'
import { JobAbortedError, JobFailedError, LaminaError } from './errors.js'

describe('LaminaError', () => {
  it('counts the native core errors (which cannot import the kernel) by their brand', () => {
    const native = new NativeBatchError('s.data', 0, 'not valid UTF-8')
    expect(native).toBeInstanceOf(LaminaError)
    expect((native as LaminaError).code).toBe('ERR_NATIVE_BAD_BATCH')
  })

  it('does not count other errors, coded or not, and subclasses check their own prototype', () => {
    expect(Object.assign(new Error('x'), { code: 'ENOENT' })).not.toBeInstanceOf(LaminaError)
    expect({ code: 'ERR_X', message: 'x' }).not.toBeInstanceOf(LaminaError)
    const failed = new JobFailedError('job', new Error('boom'))
    expect(failed).toBeInstanceOf(LaminaError)
    expect(failed).toBeInstanceOf(JobFailedError)
    expect(failed).not.toBeInstanceOf(JobAbortedError)
    expect(new NativeBatchError('s', 0, 'x')).not.toBeInstanceOf(JobFailedError)
  })
})
