import { defineConfig } from "vitest/config";

// `npm run test:browser`: the voice-room page in headless Chromium (see e2e/).
export default defineConfig({
  test: {
    include: ["e2e/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    fileParallelism: false,
  },
});
