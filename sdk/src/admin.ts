/**
 * `AdminClient`: the admin API for an application's backend, over HTTP POST (one
 * JSON-RPC request per call). Needs an admin token (`dspeak token --admin`, or claims
 * with `admin: true` signed by the backend); works in Node (global `fetch`, Node 18+)
 * and anywhere else with a `fetch`.
 *
 * ```ts
 * const admin = new AdminClient({ url: "http://127.0.0.1:8080", token: adminToken });
 * const { rooms } = await admin.listRooms();
 * await admin.mutePeer("lobby", peerId, true);
 * ```
 */

import type { CallOptions } from "./call.js";
import { DspeakConnectionError, DspeakError, DspeakTimeoutError } from "./errors.js";
import type { MethodName, Methods } from "./generated/api.js";
import type { AdminPeers, AdminRooms, BroadcastResult, Empty } from "./generated/types.js";

/**
 * The part of `fetch` the admin client uses (Node's and the browser's both fit). The
 * client also passes an abort `signal` for its timeout.
 */
export type FetchLike = (
  url: string,
  init: { method: "POST"; headers: Record<string, string>; body: string },
) => Promise<{ ok: boolean; status: number; text(): Promise<string> }>;

/** Options of `new AdminClient(…)`. */
export interface AdminClientOptions {
  /** The server's address: `http(s)://host:port` (a `ws(s)://` URL is turned into it). */
  url: string;
  /** An admin access token; sent with every call. */
  token: string;
  /** Milliseconds before a call rejects with `DspeakTimeoutError` (default 10 000). */
  requestTimeoutMs?: number | undefined;
  /** `fetch` to use (default: the global one). */
  fetch?: FetchLike | undefined;
}

/** The admin methods, whose params all carry `token`. */
export type AdminMethod = Extract<MethodName, `admin${string}`>;

/**
 * A client of the admin API. Each method is one HTTP POST; errors reject with a
 * `DspeakError` (`unauthorized` for a token that is not an admin token, `notFound` for
 * an unknown room or peer, `forbidden` for a room the token does not cover).
 */
export class AdminClient {
  /** The HTTP URL calls are posted to. */
  readonly url: string;
  readonly #token: string;
  readonly #timeoutMs: number;
  readonly #fetch: FetchLike;
  #nextId = 1;

  constructor(options: AdminClientOptions) {
    this.url = options.url.replace(/^ws(s?):\/\//, "http$1://");
    this.#token = options.token;
    this.#timeoutMs = options.requestTimeoutMs ?? 10_000;
    const globalFetch = (globalThis as { fetch?: FetchLike }).fetch;
    const fetch = options.fetch ?? globalFetch;
    if (!fetch) throw new TypeError("no global fetch: pass `fetch` in the options");
    this.#fetch = fetch;
  }

  /** Every room the token may see, with its peer and producer counts. */
  listRooms(options?: CallOptions): Promise<AdminRooms> {
    return this.call("adminListRooms", { token: this.#token }, options);
  }

  /** The peers of `room` with identity, metadata, producers and server-mute state. */
  listPeers(room: string, options?: CallOptions): Promise<AdminPeers> {
    return this.call("adminListPeers", { token: this.#token, room }, options);
  }

  /** Removes a peer from `room`; its client gets `sessionEnded` with reason `removed`. */
  removePeer(room: string, peerId: string, options?: CallOptions): Promise<Empty> {
    return this.call("adminRemovePeer", { token: this.#token, room, peerId }, options);
  }

  /** Server-mutes (`true`: producers paused, resuming forbidden) or unmutes a peer. */
  mutePeer(room: string, peerId: string, muted: boolean, options?: CallOptions): Promise<Empty> {
    return this.call("adminMutePeer", { token: this.#token, room, peerId, muted }, options);
  }

  /** Removes every peer of `room` (reason `roomClosed`); the room is gone. */
  closeRoom(room: string, options?: CallOptions): Promise<Empty> {
    return this.call("adminCloseRoom", { token: this.#token, room }, options);
  }

  /** Sends a `broadcast` event with `from: null` to every peer of `room`. */
  broadcast(room: string, payload: unknown, options?: CallOptions): Promise<BroadcastResult> {
    return this.call("adminBroadcast", { token: this.#token, room, payload }, options);
  }

  /** Sends one admin request (prefer the named methods). */
  async call<M extends AdminMethod>(
    method: M,
    params: Methods[M]["params"],
    options: CallOptions = {},
  ): Promise<Methods[M]["result"]> {
    const timeoutMs = options.timeoutMs ?? this.#timeoutMs;
    const body = JSON.stringify({ jsonrpc: "2.0", id: this.#nextId++, method, params });
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), timeoutMs);
    const onAbort = () => controller.abort();
    options.signal?.addEventListener("abort", onAbort, { once: true });
    let text: string;
    try {
      if (options.signal?.aborted) throw options.signal.reason ?? new Error("aborted");
      const init = { method: "POST" as const, headers: { "content-type": "application/json" }, body, signal: controller.signal };
      const response = await this.#fetch(this.url, init);
      text = await response.text();
      if (!response.ok) throw new DspeakConnectionError(`HTTP ${response.status}: ${text.slice(0, 200)}`, method);
    } catch (error) {
      if (options.signal?.aborted) throw options.signal.reason ?? new Error("aborted");
      if (controller.signal.aborted) throw new DspeakTimeoutError(method, timeoutMs);
      if (error instanceof DspeakConnectionError) throw error;
      throw new DspeakConnectionError(`cannot reach ${this.url}: ${String(error)}`, method);
    } finally {
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
    }
    const answer = JSON.parse(text) as { result?: unknown; error?: { code: number; message: string; data?: unknown } };
    if (answer.error) throw new DspeakError(answer.error, method);
    return answer.result as Methods[M]["result"];
  }
}
