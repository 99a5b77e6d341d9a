// Compile-time checks (run by `npm run typecheck`): dspeak's generated wire types and
// mediasoup-client's types agree structurally where values flow between them. Nothing
// here runs; a broken assignment is a type error.
//
// Where they do not agree, a `@ts-expect-error` line documents the difference and fails
// the check the day it disappears. src/ortc.ts bridges exactly these differences.

import type * as ms from "mediasoup-client/types";
import { WebSocket as NodeWebSocket } from "ws";

import type {
  AbortSignalLike,
  ConnectTransportParams,
  ConsumeResult,
  CreateTransportResult,
  DtlsParameters,
  DtlsParametersInput,
  DspeakError,
  ErrorCodeValue,
  IceCandidate,
  IceParameters,
  JoinParams,
  MediaKind,
  ProduceParams,
  RtpCapabilities,
  RtpCapabilitiesInput,
  RtpCodecCapability,
  RtpHeaderExtension,
  RtpParameters,
  RtpParametersInput,
  WebSocketConstructor,
} from "../src/index.js";

/** `T` with the header-extension `uri` widened to `string` (at any depth we use). */
type WideUri<T> = T extends { uri: string }
  ? Omit<T, "uri"> & { uri: string }
  : T extends Array<infer E>
    ? Array<WideUri<E>>
    : T extends object
      ? { [K in keyof T]: WideUri<T[K]> }
      : T;

/** `T` with codec `parameters` typed as on the dspeak wire (numbers or strings). */
type WireParameters<T> = T extends { parameters?: unknown }
  ? Omit<T, "parameters"> & { parameters?: Record<string, number | string> }
  : T extends Array<infer E>
    ? Array<WireParameters<E>>
    : T extends object
      ? { [K in keyof T]: WireParameters<T[K]> }
      : T;

function check<T>(value: T): T {
  return value;
}

// --- server → mediasoup-client -------------------------------------------------------

// createTransport result → device.createSendTransport / createRecvTransport options.
export function transportOptions(r: CreateTransportResult): ms.TransportOptions {
  return { id: r.id, iceParameters: r.iceParameters, iceCandidates: r.iceCandidates, dtlsParameters: r.dtlsParameters };
}
check<ms.IceParameters>({} as IceParameters);
check<ms.IceCandidate>({} as IceCandidate);
check<ms.DtlsParameters>({} as DtlsParameters);
check<ms.MediaKind>({} as MediaKind);

// Router capabilities → device.load(): equal except that `uri` is a plain string here,
// and that `preferredPayloadType` is optional in the wire type (the Rust type serves
// client capabilities too) while mediasoup-client requires it. The router always sends it.
type RouterCodec = RtpCodecCapability & { preferredPayloadType: number };
type RouterCapabilities = Omit<RtpCapabilities, "codecs"> & { codecs: RouterCodec[] };
check<WideUri<ms.RtpCapabilities>>({} as RouterCapabilities);
check<WideUri<ms.RtpCodecCapability>>({} as RouterCodec);
check<WideUri<ms.RtpHeaderExtension>>({} as RtpHeaderExtension);
// @ts-expect-error header extension `uri` is a string on the wire, a union of known URIs in mediasoup-client
check<ms.RtpCapabilities>({} as RouterCapabilities);
// @ts-expect-error `preferredPayloadType` may be missing in the wire type; mediasoup-client requires it
check<WideUri<ms.RtpCodecCapability>>({} as RtpCodecCapability);

// consume result → transport.consume() options: same, `uri` again.
export function consumerOptions(r: ConsumeResult): WideUri<ms.ConsumerOptions> {
  return { id: r.id, producerId: r.producerId, kind: r.kind, rtpParameters: r.rtpParameters };
}
check<WideUri<ms.RtpParameters>>({} as RtpParameters);
// @ts-expect-error header extension `uri` is a string on the wire
check<ms.RtpParameters>({} as RtpParameters);

// --- mediasoup-client → server -------------------------------------------------------

// The transport's `connect` event → connectTransport.
export function connectParams(transportId: string, dtls: ms.DtlsParameters): ConnectTransportParams {
  return { transportId, dtlsParameters: dtls };
}
check<DtlsParametersInput>({} as ms.DtlsParameters);

// The transport's `produce` event → produce: equal once codec parameters are numbers or
// strings, which is all that browsers put there (and all the server accepts).
export function produceParams(
  transportId: string,
  e: { kind: ms.MediaKind; rtpParameters: WireParameters<ms.RtpParameters>; appData: ms.AppData },
): ProduceParams {
  return { transportId, kind: e.kind, rtpParameters: e.rtpParameters, appData: e.appData };
}
check<RtpParametersInput>({} as WireParameters<ms.RtpParameters>);
// @ts-expect-error codec parameters are Record<string, unknown> in mediasoup-client
check<RtpParametersInput>({} as ms.RtpParameters);

// device.recvRtpCapabilities → consume.
check<RtpCapabilitiesInput>({} as WireParameters<ms.RtpCapabilities>);
// @ts-expect-error codec parameters are Record<string, unknown> in mediasoup-client
check<RtpCapabilitiesInput>({} as ms.RtpCapabilities);

// --- our output is valid input -------------------------------------------------------

// What the server sends can be sent back (e.g. router capabilities as consume capabilities).
check<RtpCapabilitiesInput>({} as RtpCapabilities);
check<RtpParametersInput>({} as RtpParameters);
check<DtlsParametersInput>({} as DtlsParameters);

// --- WebSockets ----------------------------------------------------------------------

// Node 20: the `ws` package; browsers: the global WebSocket.
check<WebSocketConstructor>(NodeWebSocket);
check<WebSocketConstructor>(globalThis.WebSocket);

// --- what apps write -----------------------------------------------------------------

// The browser's and Node's AbortSignal fit the one calls take.
check<AbortSignalLike>(new AbortController().signal);

// DspeakError.code: the documented codes as literal types, and any other number.
check<ErrorCodeValue | number>({} as DspeakError["code"]);
check<DspeakError["code"]>(1000 as ErrorCodeValue);
check<DspeakError["code"]>(4242);
// @ts-expect-error a code is a number
check<DspeakError["code"]>("1000");

// Optional params take `undefined` under exactOptionalPropertyTypes (this tsconfig sets it).
check<JoinParams>({ room: "r", displayName: "Ann", token: undefined as string | undefined });
