/**
 * `@dspeak/sdk`: a typed signaling client for the dspeak voice SFU.
 *
 * - `DspeakClient`: one typed async function per JSON-RPC method, typed events,
 *   `DspeakError` with stable codes (`ErrorCode`), timeouts, optional reconnect.
 * - `AdminClient`: the admin API (list rooms and peers, remove, server-mute, close,
 *   broadcast) for an application's backend, over HTTP POST with an admin token.
 * - Wire types (`JoinResult`, `Event`, …) and the method table, generated from the
 *   server's Rust contract by `cargo xtask sdk`.
 *
 * This entry point needs neither mediasoup-client nor DOM types: it suits Node
 * backends and bots as well as browsers. The media side (`joinVoiceRoom`, the ORTC
 * bridges) is in `@dspeak/sdk/mediasoup`.
 *
 * @packageDocumentation
 */

export { AdminClient, type AdminClientOptions, type AdminMethod, type FetchLike } from "./admin.js";
export type { AbortSignalLike, CallOptions } from "./call.js";
export {
  DspeakClient,
  type ClientEventMap,
  type ClientState,
  type DisconnectedInfo,
  type DspeakClientOptions,
  type EventOf,
  type EventMark,
  type EventType,
  type LifecycleEvents,
  type ReconnectOptions,
  type ReconnectedInfo,
  type ReconnectingInfo,
  type RejoinedInfo,
  type ResumedInfo,
  type RedirectedInfo,
  MAX_JOIN_REDIRECTS,
  type SessionEndedInfo,
  type WebSocketConstructor,
  type WebSocketLike,
  type WaitForOptions,
  type WireTrace,
} from "./client.js";
export { DspeakConnectionError, DspeakError, DspeakTimeoutError } from "./errors.js";
export {
  CONTRACT_VERSION,
  ERROR_CODE_INFO,
  EVENT_TYPES,
  ErrorCode,
  METHODS,
  SUBSCRIPTION,
  type ErrorCodeName,
  type ErrorCodeValue,
  type MethodName,
  type Methods,
} from "./generated/api.js";
export type * from "./generated/types.js";
