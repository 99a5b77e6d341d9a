import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 20_000,
    hookTimeout: 30_000,
    // Each file starts its own server(s); two cores, so keep the file parallelism low.
    maxWorkers: 2,
  },
});
