// Reconnecting without leaving, in headless Chromium with the voice-room page against a
// real dspeak server. Alice and Bob talk; Alice's page drops its WebSocket: the page
// resumes the same session (same peer id, Bob never sees her leave) and audio keeps
// flowing both ways. Then an nftables rule cuts the media port both ways until the
// pages' transports go disconnected: the SDK restarts ICE, and once the port is open
// again audio flows again.
//
//   cargo build -p dspeak-server && npm run test:browser    (as root, for nft)


import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, expect, it } from "vitest";

import type { VoiceRoomHooks } from "../examples/voice-room/hooks.js";
import { startServer, type TestServer } from "../test/support.js";
import { launchChromium } from "./chromium.js";
import { NftBlock } from "./nft.js";

declare global {
  interface Window {
    dspeak: VoiceRoomHooks;
  }
}

const ROOM = `resume-${Date.now().toString(36)}`;
/** Opus at 20 ms is 50 packets/s: a 2 s window must see at least half of that. */
const WINDOW_MS = 2000;
const MIN_PACKETS = 50;

let server: TestServer | undefined;
let browser: Browser | undefined;
const pages = new Map<string, Page>();
/** The media block, while it exists. */
let block: NftBlock | undefined;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `probe` until it returns something other than `undefined`/`false`. */
async function until<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(100);
  }
}

const page = (name: string): Page => {
  const p = pages.get(name);
  if (!p) throw new Error(`${name} has no page`);
  return p;
};
const state = (name: string) => page(name).evaluate(() => window.dspeak.state());
const selfId = (name: string) => page(name).evaluate(() => window.dspeak.selfId());

/** Packets `who` received from `from` over one window. */
async function packetsOver(who: string, from: string): Promise<number> {
  const count = async () => {
    const stats = await page(who).evaluate(() => window.dspeak.inboundStats());
    return stats.find((s) => s.displayName === from)?.packetsReceived;
  };
  const before = await until(`${who} to receive ${from}`, count);
  await sleep(WINDOW_MS);
  return (await until(`${who} to still receive ${from}`, count)) - before;
}

async function join(name: string, url: string): Promise<void> {
  if (!browser) throw new Error("no browser");
  const context = await browser.newContext();
  const p = await context.newPage();
  pages.set(name, p);
  await p.goto(url);
  await p.fill("#name", name);
  await p.fill("#room", ROOM);
  await p.click("#join");
  await until(`${name} to join`, async () => (await state(name)) === "joined");
}

/** Drops every packet from and to the media `port` (UDP and TCP), so ICE loses the path. */
function cutMedia(port: number): void {
  const matches = ["udp dport", "udp sport", "tcp dport", "tcp sport"].map((m) => `${m} ${port}`);
  block = new NftBlock(`dspeak_e2e_ice_${port}`, matches);
}

beforeAll(async () => {
  server = await startServer(["--resume-grace", "20s"]);
  browser = await launchChromium();
  const url = `${server.url.replace(/^ws/, "http")}/`;
  await join("Alice", url);
  await join("Bob", url);
}, 60_000);

afterAll(async () => {
  block?.remove();
  await browser?.close();
  await server?.stop();
}, 30_000);

it("a page whose WebSocket drops resumes the same session and keeps playing", async () => {
  expect(await packetsOver("Bob", "Alice")).toBeGreaterThanOrEqual(MIN_PACKETS);
  const alice = await selfId("Alice");
  await page("Alice").evaluate(() => window.dspeak.dropConnection());
  await until("Alice's page to resume", async () => (await state("Alice")) === "joined" && (await selfId("Alice")));
  expect(await selfId("Alice"), "the same peer").toBe(alice);
  const bobSees = await page("Bob").evaluate(() => window.dspeak.peers().map((p) => p.peerId));
  expect(bobSees, "Bob never saw Alice leave").toContain(alice);
  const [bobHears, aliceHears] = await Promise.all([packetsOver("Bob", "Alice"), packetsOver("Alice", "Bob")]);
  expect(bobHears).toBeGreaterThanOrEqual(MIN_PACKETS);
  expect(aliceHears).toBeGreaterThanOrEqual(MIN_PACKETS);
  expect(server?.log()).toMatch(/resumed/);
}, 60_000);

it("a forced ICE failure triggers an ICE restart, and audio resumes", async () => {
  if (process.getuid?.() !== 0) throw new Error("needs root for nftables (see README: browser test)");
  const paths = await page("Alice").evaluate(() => window.dspeak.paths());
  const port = paths[0]?.remotePort;
  if (!port) throw new Error(`no selected candidate pair: ${JSON.stringify(paths)}`);
  cutMedia(port);
  await until("Alice's page to restart ICE", () => page("Alice").evaluate(() => window.dspeak.iceRestarts() > 0), 40_000);
  expect(await packetsOver("Alice", "Bob"), "nothing flows while the port is cut").toBeLessThan(5);
  block?.remove();
  await until("audio from Bob again at Alice", async () => (await packetsOver("Alice", "Bob")) >= MIN_PACKETS, 30_000);
  expect(await packetsOver("Bob", "Alice")).toBeGreaterThanOrEqual(MIN_PACKETS);
  expect(await selfId("Alice")).toBeDefined();
}, 90_000);
