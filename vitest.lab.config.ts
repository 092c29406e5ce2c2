import { defineConfig } from 'vitest/config';
import { LAB_TESTS } from './vitest.config.ts';

// The lab: real depots in network namespaces, failover timings measured by a 10 ms prober.
// One file at a time so measured outages reflect Navigator, not a neighbouring test suite.
export default defineConfig({
  test: {
    include: LAB_TESTS,
    globalSetup: ['test/helpers/build-global-setup.ts'],
    pool: 'forks',
    fileParallelism: false,
    testTimeout: 240_000,
    hookTimeout: 120_000,
    reporters: ['default'],
  },
});
