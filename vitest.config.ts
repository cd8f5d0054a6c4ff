// Test runner configuration: tests import `lamina` the way users do, resolved to the sources (not dist/).
import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vitest/config'

const here = (path: string): string => fileURLToPath(new URL(path, import.meta.url))

export default defineConfig({
  resolve: {
    alias: [
      { find: /^lamina$/, replacement: here('./kernel/index.ts') },
      { find: /^lamina\/internal$/, replacement: here('./kernel/internal.ts') },
      { find: /^lamina\/layers$/, replacement: here('./layers/index.ts') },
      { find: /^lamina\/transport$/, replacement: here('./kmods/transport/index.ts') },
      { find: /^lamina\/cluster$/, replacement: here('./services/jobs/index.ts') },
      { find: /^lamina\/testing$/, replacement: here('./testing/index.ts') },
    ],
  },
  test: {
    include: [
      'kernel/**/*.test.ts',
      'layers/**/*.test.ts',
      'kmods/**/*.test.ts',
      'services/**/*.test.ts',
      'native/ts/**/*.test.ts',
      'examples/**/*.test.ts',
      'cli/**/*.test.ts',
      'testing/**/*.test.ts',
      'test/**/*.test.ts',
    ],
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
})
