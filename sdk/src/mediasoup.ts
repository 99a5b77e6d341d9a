/**
 * `@dspeak/sdk/mediasoup`: the voice flow on top of
 * [mediasoup-client](https://mediasoup.org/documentation/v3/mediasoup-client/).
 *
 * - `joinVoiceRoom`: join, load the device, create the transports, produce the
 *   microphone, consume everyone else.
 * - The ORTC bridges between dspeak's wire types and mediasoup-client's types
 *   (`toTransportOptions`, `toConsumerOptions`, …), for apps that drive
 *   mediasoup-client themselves.
 *
 * Needs `mediasoup-client` (a peer dependency) and DOM types; the signaling client
 * (`DspeakClient`) comes from `@dspeak/sdk`.
 *
 * @packageDocumentation
 */

export * from "./ortc.js";
export {
  joinVoiceRoom,
  SPEAKING_TIMEOUT_MS,
  type JoinVoiceRoomOptions,
  type VoicePeer,
  type VoiceRoom,
  type VoiceRoomEvents,
} from "./voice.js";
