import type * as ms from "mediasoup-client/types";
import type {
  ConsumeResult,
  CreateTransportResult,
  DtlsParametersInput,
  RtpCapabilities,
  RtpCapabilitiesInput,
  RtpParameters,
  RtpParametersInput,
} from "./generated/types.js";

// The bridge between dspeak's wire types and mediasoup-client's, in one place.
//
// The shapes are the same (checked both ways by test/types-compat.ts), except for two
// places where mediasoup-client's TypeScript types are narrower or looser than the
// wire contract, which is why these functions exist instead of plain assignments:
// - header extension `uri`: a string on the wire, a union of known URIs in
//   mediasoup-client (the server only sends URIs mediasoup-client knows);
// - codec `parameters`: numbers or strings on the wire, `Record<string, unknown>` in
//   mediasoup-client (browsers only put numbers and strings there).
// None of them copies or changes a value.

/** Router capabilities (from `join` or `getRouterRtpCapabilities`) for `device.load()`. */
export function toDeviceRtpCapabilities(caps: RtpCapabilities): ms.RtpCapabilities {
  return caps as ms.RtpCapabilities;
}

/** A `createTransport` result as `device.createSendTransport()` / `createRecvTransport()` options. */
export function toTransportOptions(result: CreateTransportResult): ms.TransportOptions {
  const { id, iceParameters, iceCandidates, dtlsParameters } = result;
  return { id, iceParameters, iceCandidates, dtlsParameters };
}

/** A `consume` result as `transport.consume()` options. */
export function toConsumerOptions(result: ConsumeResult): ms.ConsumerOptions {
  const { id, producerId, kind, rtpParameters } = result;
  return { id, producerId, kind, rtpParameters: rtpParameters as RtpParameters as ms.RtpParameters };
}

/** `device.recvRtpCapabilities` for `consume`. */
export function fromDeviceRtpCapabilities(caps: ms.RtpCapabilities): RtpCapabilitiesInput {
  return caps as RtpCapabilitiesInput;
}

/** The `rtpParameters` of a transport's `produce` event for `produce`. */
export function fromProducerRtpParameters(params: ms.RtpParameters): RtpParametersInput {
  return params as RtpParametersInput;
}

/** The `dtlsParameters` of a transport's `connect` event for `connectTransport`. */
export function fromDtlsParameters(params: ms.DtlsParameters): DtlsParametersInput {
  return params;
}
