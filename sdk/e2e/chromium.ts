// Headless Chromium for the browser tests: Debian's package (or DSPEAK_CHROMIUM) with
// fake media devices, autoplay allowed and loopback candidates.

import { existsSync } from "node:fs";

import { chromium, type Browser } from "playwright-core";

/** The Chromium binary the tests drive. */
export const CHROMIUM = process.env.DSPEAK_CHROMIUM ?? "/usr/bin/chromium";

/**
 * Launches headless Chromium with fake microphone and camera (`extraArgs` adds flags,
 * e.g. a WAV file for the fake microphone). Fails at once, saying how to install it,
 * when the binary is missing. playwright-core gives every launch a fresh temporary
 * profile (user-data-dir).
 */
export async function launchChromium(extraArgs: string[] = []): Promise<Browser> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `Chromium is missing: no ${CHROMIUM}. Install Debian's package with ` +
        "`apt-get update && apt-get install -y chromium` (as root), or point DSPEAK_CHROMIUM at a Chromium binary.",
    );
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--autoplay-policy=no-user-gesture-required",
      "--use-fake-ui-for-media-stream",
      "--use-fake-device-for-media-stream",
      "--allow-loopback-in-peer-connection",
      ...extraArgs,
    ],
  });
}
