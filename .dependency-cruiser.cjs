// Import rules of Lamina's tiers (docs: ARCHITECTURE.md's tier table), checked by `npm run lint:imports` in `npm test`.
//
// Each rule is a forbidden arrow: `from` a tier `to` something its row of the table does not name. A
// new arrow that breaks one fails the run and prints `rule: from → to`. There is no list of known
// violations: every arrow in the tree keeps the rules (the ones found when the check came in were fixed).
//
// Type-only imports count (`import type` of a private kernel file is still a dependency on it), and
// so do dynamic `import()`s. The `lamina`, `lamina/layers` … self-references resolve through
// package.json's "exports" with the `source` condition, as tsc and vitest resolve them.

/** Tiers above the kernel (everything the kernel must not import). */
const aboveKernel = '^(kmods|layers|services|cli|testing|examples|bench)/'
/** Packages that belong to kernel modules, never to the kernel: libp2p and SQLite. */
const kmodPackages = '(^|/)node_modules/(@libp2p/|libp2p/|@chainsafe/|@multiformats/|better-sqlite3/)'
/**
 * The kernel's two entries: kernel/index.ts (`lamina`, the public API) and kernel/internal.ts
 * (`lamina/internal`: deployment, the remote-channel adapter and wire encoders, for Lamina's own
 * tiers). What they re-export is reached through them.
 */
const kernelEntries = '^kernel/(index|internal)\\.ts$'
/**
 * Public entry points of the tiers above the kernel: the top index.ts of layers/ and testing/
 * (`lamina/layers`, `lamina/testing`), and each kmod's, layer's and service's own index.ts
 * (`lamina/transport` is kmods/transport/index.ts, `lamina/cluster` is services/jobs/index.ts).
 */
const upperPublic = '^(layers|testing)/index\\.ts$|^(kmods|layers|services)/[^/]+/index\\.ts$'
/** Tests and their fixtures (never shipped: tsconfig.build.json leaves them out of dist/). */
const testOrFixture = '\\.test\\.ts$|/fixtures/'

/** The testing kit's public entry, `lamina/testing`: tests of every tier may import it. */
const testingKit = '^testing/index\\.ts$'
/** A service's public entry (`lamina/cluster` is services/jobs/index.ts). */
const servicePublic = '^services/[^/]+/index\\.ts$'

/**
 * The rule that a tier imports only what its row names, as two rules. Its shipped files may not
 * import `forbidden` at all. Its tests and fixtures get one narrow, documented exemption: they may
 * import the public entries matched by `allowedInTests` (always `lamina/testing`, whose in-memory
 * transport, fake channel, cluster fixture and compliance suites exist for them), never a private
 * file of a tier above.
 */
function tier(name, from, forbidden, allowedInTests, comment) {
  return [
    { name, comment, severity: 'error', from: { path: from, pathNot: testOrFixture }, to: { path: forbidden } },
    {
      name: `${name}-in-tests`,
      comment: `${comment} Tests and fixtures may also import: ${allowedInTests.join(', ')}.`,
      severity: 'error',
      from: { path: `(${from})(.*)(${testOrFixture})` },
      to: { path: forbidden, pathNot: allowedInTests },
    },
  ]
}

module.exports = {
  forbidden: [
    ...tier(
      'kernel-imports-no-upper-tier',
      '^kernel/',
      aboveKernel,
      [testingKit],
      "The kernel imports native's binding and nothing else of the tiers: no kmods/, layers/, services/, cli/, testing/, examples/ or bench/.",
    ),
    {
      name: 'kernel-imports-no-libp2p-or-sqlite',
      comment: 'libp2p (@libp2p/*, libp2p, @chainsafe/*, @multiformats/*) and better-sqlite3 live in kmods/ (transport, store), not in the kernel.',
      severity: 'error',
      from: { path: '^kernel/' },
      to: { path: kmodPackages },
    },
    {
      name: 'kernel-imports-no-child-process',
      comment: "Child processes are the nursery's (kmods/nursery) and the isolation layer's, not the kernel's.",
      severity: 'error',
      from: { path: '^kernel/' },
      to: { dependencyTypes: ['core'], path: '^(node:)?child_process$' },
    },
    ...tier(
      'kmods-import-only-the-kernel',
      '^kmods/',
      '^(layers|services|cli|testing|examples|bench|native)/',
      [testingKit],
      "Kernel modules are libraries on the kernel's syscalls and contracts: they import the kernel and other kmods only.",
    ),
    ...tier(
      'layers-import-kernel-and-kmods',
      '^layers/',
      '^(services|cli|testing|examples|bench|native)/',
      // A layer's cluster tests run it on the job service.
      [testingKit, servicePublic],
      "Runtime layers import the kernel's public API and kmods only.",
    ),
    ...tier('services-import-kernel-kmods-layers', '^services/', '^(cli|testing|examples|bench|native)/', [testingKit], 'Services import the kernel, kmods and layers only.'),
    {
      name: 'native-imports-no-kernel',
      comment: 'native/ts is below the kernel (its errors and types do not import it, so there is no cycle).',
      severity: 'error',
      from: { path: '^native/' },
      to: { path: '^(kernel|kmods|layers|services|cli|testing|examples|bench)/' },
    },
    {
      name: 'kernel-private-file',
      comment:
        'Outside kernel/, the kernel is imported only through its entries kernel/index.ts (`lamina`) and kernel/internal.ts (`lamina/internal`), tests included. If a layer needs a hook the public API lacks, the API grows.',
      severity: 'error',
      from: { path: aboveKernel },
      to: { path: '^kernel/', pathNot: kernelEntries },
    },
    {
      name: 'kernel-internal-entry',
      comment:
        "`lamina/internal` (kernel/internal.ts) is for the tiers that deploy jobs and move frames: kmods, services, the testing kit and benches. Layers, the CLI and examples use the public API only (a layer's tests may build a deployment by hand).",
      severity: 'error',
      from: { path: '^(layers|cli|examples)/', pathNot: testOrFixture },
      to: { path: '^kernel/internal\\.ts$' },
    },
    {
      name: 'entry-points-use-public-entries',
      comment:
        'The CLI, the testing kit and examples reach kmods, layers and services through their index.ts (lamina/layers, lamina/transport, lamina/cluster). Benches may measure internals of kmods, layers and services (not of the kernel).',
      severity: 'error',
      from: { path: '^(cli|testing|examples)/' },
      to: { path: '^(kmods|layers|services)/', pathNot: upperPublic },
    },
    {
      name: 'testing-kit-private-file',
      comment: 'Outside testing/, the testing kit is imported only through testing/index.ts (`lamina/testing`).',
      severity: 'error',
      from: { pathNot: '^testing/' },
      to: { path: '^testing/', pathNot: '^testing/index\\.ts$' },
    },
    {
      name: 'testing-kit-imports-no-entry-points',
      comment: 'The testing kit is imported by tests of every tier, so it imports no CLI, example or bench.',
      severity: 'error',
      from: { path: '^testing/' },
      to: { path: '^(cli|examples|bench)/' },
    },
    {
      name: 'nothing-resolves-to-dist',
      comment: 'Sources import sources: an import resolving into dist/ means a `lamina` entry resolved to build output (or a relative path reaches into it).',
      severity: 'error',
      from: {},
      to: { path: '^dist/' },
    },
    {
      name: 'not-to-unresolvable',
      comment: 'An import this check cannot resolve could hide a forbidden arrow.',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    // Only the project's sources are cruised; packages are leaves (their names are what the rules match).
    exclude: { path: '^(dist|native/target|native/generated|node_modules|docs|\\.lamina)/' },
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      // `source` first: package.json's "exports" list `types` (dist/*.d.ts) before it.
      conditionNames: ['source', 'import', 'node', 'default'],
      extensions: ['.ts', '.d.ts', '.js', '.mjs', '.cjs', '.json'],
      mainFields: ['module', 'main', 'types'],
    },
    skipAnalysisNotInRules: true,
    reporterOptions: {
      text: { highlightFocused: true },
    },
  },
}
