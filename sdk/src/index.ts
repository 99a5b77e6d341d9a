/**
 * `@dspeak/sdk`: a typed client for the dspeak voice SFU.
 *
 * - `DspeakClient`: one typed async function per JSON-RPC method, typed events,
 *   `DspeakError` with stable codes (`ErrorCode`), timeouts, optional reconnect.
 * - `joinVoiceRoom`: the mediasoup-client flow (join, transports, produce, consume).
 * - Wire types (`JoinResult`, `Event`, …) and the method table, generated from the
 *   server's Rust contract by `cargo xtask sdk`.
 *
 * @packageDocumentation
 */

export type { CallOptions } from "./call.js";
export {
  DspeakClient,
  type ClientEventMap,
  type ClientState,
  type DisconnectedInfo,
  type DspeakClientOptions,
  type EventOf,
  type EventType,
  type LifecycleEvents,
  type ReconnectOptions,
  type ReconnectedInfo,
  type WebSocketConstructor,
  type WebSocketLike,
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
export {
  fromDeviceRtpCapabilities,
  fromDtlsParameters,
  fromProducerRtpParameters,
  toConsumerOptions,
  toDeviceRtpCapabilities,
  toTransportOptions,
} from "./mediasoup.js";
export { joinVoiceRoom, type JoinVoiceRoomOptions, type VoiceRoom } from "./voice.js";
