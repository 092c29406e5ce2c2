import { defineConfig } from 'vitest/config';

// Unit and integration tests. Integration tests start real servers (mariadbd, sshd, depot
// processes); forks keep each file in its own process so a crash or a leaked handle stays
// contained. The network-namespace lab runs after these, alone (vitest.lab.config.ts): its
// timings must not compete with other suites for the two cores.
export const LAB_TESTS = ['test/lab/**/*.test.ts', 'test/browser/live-cluster.test.ts', 'test/integration/demo.test.ts'];

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['**/node_modules/**', ...LAB_TESTS],
    globalSetup: ['test/helpers/build-global-setup.ts'],
    pool: 'forks',
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
    testTimeout: 30_000,
    hookTimeout: 60_000,
    reporters: ['default'],
  },
});
