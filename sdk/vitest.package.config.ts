import { defineConfig } from "vitest/config";

// `npm run test:package`: the packed tarball installed into fresh ESM and CommonJS
// projects (see package-test/).
export default defineConfig({
  test: {
    include: ["package-test/**/*.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 240_000,
  },
});
