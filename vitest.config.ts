// Test runner configuration: tests import `lamina` the way users do, resolved to the sources.
import { defineConfig } from 'vitest/config'

export default defineConfig({
  resolve: { conditions: ['source'] },
  test: {
    include: ['kernel/**/*.test.ts', 'layers/**/*.test.ts', 'kmods/**/*.test.ts', 'services/**/*.test.ts', 'native/ts/**/*.test.ts', 'examples/**/*.test.ts', 'test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
})
