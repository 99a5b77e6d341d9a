// Type-checked with no ambient types at all (no DOM, no @types/node): the root entry's
// declarations must stand on their own.

import { DspeakClient, ErrorCode, type DspeakClientOptions, type Event } from "@dspeak/sdk";

export const options: DspeakClientOptions = { url: "ws://127.0.0.1:8080", reconnect: { maxAttempts: 3 } };
export const client: DspeakClient = new DspeakClient(options);
export const describe = (event: Event): string => (event.type === "broadcast" ? `from ${event.from}` : event.type);
export const roomFull: number = ErrorCode.roomFull;
