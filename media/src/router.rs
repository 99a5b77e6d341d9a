//! The router's RTP capabilities and ORTC negotiation.
//!
//! One capability set serves every room: Opus only, mediasoup's default shape
//! (preferred payload type 100, 48 kHz, 2 channels, `useinbandfec: 1`). Only what the
//! engine really does is listed: the `mid` header extension, `ssrc-audio-level` (RFC 6464)
//! as `sendrecv` like mediasoup (producers send it and the engine reads it for
//! active-speaker detection; consumers that negotiate it get each packet's level as
//! the producer sent it, on the router's id), and no RTCP feedback (audio is not
//! retransmitted and transport-wide congestion control is not run).
//! Producers keep their client's payload type; consumers get the router's, and the
//! engine rewrites it per packet, as mediasoup does.

use dspeak_schema::ortc::{
    CodecParameters, MediaKind, ParameterValue, RtcpParameters, RtpCapabilities, RtpCodecCapability,
    RtpEncodingParameters, RtpHeaderExtension, RtpHeaderExtensionDirection, RtpHeaderExtensionParameters,
    RtpParameters,
};

use crate::error::MediaError;

/// The router's Opus payload type (what consumers receive).
pub(crate) const OPUS_PT: u8 = 100;
/// Opus clock rate.
pub(crate) const OPUS_CLOCK_RATE: u32 = 48_000;
/// Payload types a producer may use for Opus (the dynamic range).
pub(crate) const PRODUCER_PTS: std::ops::RangeInclusive<u8> = 96..=127;
/// `urn:ietf:params:rtp-hdrext:sdes:mid` and its router id.
pub(crate) const MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
pub(crate) const MID_EXT_ID: u8 = 1;
/// `urn:ietf:params:rtp-hdrext:ssrc-audio-level` (RFC 6464) and its router id
/// (mediasoup's preferred id).
pub(crate) const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
pub(crate) const AUDIO_LEVEL_EXT_ID: u8 = 6;
/// Highest header-extension id of the one-byte form (RFC 8285), the form clients use
/// for audio.
pub(crate) const MAX_ONE_BYTE_EXT_ID: u8 = 14;
const OPUS_MIME: &str = "audio/opus";
/// Longest MID str0m accepts.
const MAX_MID_LEN: usize = 16;

/// The capabilities every router has (for `device.load()`).
pub fn capabilities() -> RtpCapabilities {
    RtpCapabilities {
        codecs: vec![RtpCodecCapability {
            kind: MediaKind::Audio,
            mime_type: OPUS_MIME.into(),
            preferred_payload_type: Some(OPUS_PT),
            clock_rate: OPUS_CLOCK_RATE,
            channels: Some(2),
            parameters: CodecParameters::from([("useinbandfec".to_owned(), ParameterValue::Integer(1))]),
            rtcp_feedback: vec![],
        }],
        header_extensions: vec![
            RtpHeaderExtension {
                kind: MediaKind::Audio,
                uri: MID_URI.into(),
                preferred_id: MID_EXT_ID,
                preferred_encrypt: false,
                direction: Some(RtpHeaderExtensionDirection::Sendrecv),
            },
            // Read on producers, forwarded to consumers (`egress::RtpHeader`).
            RtpHeaderExtension {
                kind: MediaKind::Audio,
                uri: AUDIO_LEVEL_URI.into(),
                preferred_id: AUDIO_LEVEL_EXT_ID,
                preferred_encrypt: false,
                direction: Some(RtpHeaderExtensionDirection::Sendrecv),
            },
        ],
    }
}

/// What the engine needs to know of a producer's stream.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ProducerStream {
    pub(crate) mid: String,
    pub(crate) ssrc: u32,
    pub(crate) payload_type: u8,
    pub(crate) codec_parameters: CodecParameters,
    pub(crate) cname: Option<String>,
    pub(crate) msid: Option<String>,
    /// The producer's id for `ssrc-audio-level`, when it sends the levels (one-byte
    /// form ids only).
    pub(crate) audio_level_id: Option<u8>,
}

/// Checks a `produce` request against the router and extracts the stream.
pub(crate) fn producer_stream(kind: MediaKind, rtp: &RtpParameters) -> Result<ProducerStream, MediaError> {
    if kind != MediaKind::Audio {
        return Err(MediaError::Unsupported("only audio producers are supported".into()));
    }
    let codec =
        rtp.codecs.first().ok_or_else(|| MediaError::InvalidParams("rtpParameters.codecs must not be empty".into()))?;
    if !codec.mime_type.eq_ignore_ascii_case(OPUS_MIME)
        || codec.clock_rate != OPUS_CLOCK_RATE
        || codec.channels.unwrap_or(1) != 2
    {
        return Err(MediaError::Unsupported(format!(
            "codec {} {}/{} is not supported; the router takes audio/opus 48000/2",
            codec.mime_type,
            codec.clock_rate,
            codec.channels.unwrap_or(1)
        )));
    }
    if !PRODUCER_PTS.contains(&codec.payload_type) {
        return Err(MediaError::Unsupported(format!(
            "payload type {} is outside the dynamic range 96-127",
            codec.payload_type
        )));
    }
    let ssrc = rtp
        .encodings
        .first()
        .and_then(|e| e.ssrc)
        .ok_or_else(|| MediaError::InvalidParams("rtpParameters.encodings[0].ssrc is required".into()))?;
    let mid = rtp.mid.clone().ok_or_else(|| MediaError::InvalidParams("rtpParameters.mid is required".into()))?;
    if mid.is_empty() || mid.len() > MAX_MID_LEN || !mid.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(MediaError::InvalidParams(format!(
            "rtpParameters.mid must be 1-{MAX_MID_LEN} letters, digits, '-', '_' or '.'"
        )));
    }
    Ok(ProducerStream {
        mid,
        ssrc,
        payload_type: codec.payload_type,
        codec_parameters: codec.parameters.clone(),
        cname: rtp.rtcp.cname.clone(),
        msid: rtp.msid.clone(),
        audio_level_id: rtp
            .header_extensions
            .iter()
            .find(|e| e.uri == AUDIO_LEVEL_URI && (1..=MAX_ONE_BYTE_EXT_ID).contains(&e.id))
            .map(|e| e.id),
    })
}

/// Fails unless a device with `caps` can receive the router's Opus.
pub fn check_can_consume(caps: &RtpCapabilities) -> Result<(), MediaError> {
    let can_receive = caps.codecs.iter().any(|c| {
        c.kind == MediaKind::Audio
            && c.mime_type.eq_ignore_ascii_case(OPUS_MIME)
            && c.clock_rate == OPUS_CLOCK_RATE
            && c.channels.unwrap_or(1) == 2
    });
    if can_receive {
        Ok(())
    } else {
        Err(MediaError::Unsupported("rtpCapabilities cannot receive audio/opus 48000/2".into()))
    }
}

/// The parameters a consumer of `producer` receives, given the consuming device's
/// capabilities (checked with [`check_can_consume`]).
pub(crate) fn consumer_parameters(
    producer: &ProducerStream,
    caps: &RtpCapabilities,
    mid: String,
    ssrc: u32,
) -> RtpParameters {
    let header_extensions = capabilities()
        .header_extensions
        .into_iter()
        // What the router only receives is never sent to consumers.
        .filter(|ours| ours.direction != Some(RtpHeaderExtensionDirection::Recvonly))
        .filter(|ours| caps.header_extensions.iter().any(|theirs| theirs.kind == ours.kind && theirs.uri == ours.uri))
        .map(|ext| RtpHeaderExtensionParameters {
            uri: ext.uri,
            id: ext.preferred_id,
            encrypt: false,
            parameters: Default::default(),
        })
        .collect();
    let codec = dspeak_schema::ortc::RtpCodecParameters {
        mime_type: OPUS_MIME.into(),
        payload_type: OPUS_PT,
        clock_rate: OPUS_CLOCK_RATE,
        channels: Some(2),
        parameters: producer.codec_parameters.clone(),
        rtcp_feedback: vec![],
    };
    RtpParameters {
        mid: Some(mid),
        codecs: vec![codec],
        header_extensions,
        encodings: vec![RtpEncodingParameters { ssrc: Some(ssrc), ..Default::default() }],
        rtcp: RtcpParameters {
            cname: Some(producer.cname.clone().unwrap_or_else(|| format!("dspeak-{ssrc}"))),
            reduced_size: true,
            mux: None,
        },
        msid: producer.msid.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> serde_json::Value {
        let path = format!("{}/../fixtures/reference/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap()
    }

    /// What a real client sent to `produce`, and its receive capabilities at `consume`.
    fn client_fixtures(client: &str) -> (RtpParameters, RtpCapabilities) {
        let produce = fixture(&format!("{client}/produce.params.json"))["rtpParameters"].clone();
        let caps = fixture(&format!("{client}/consume.params.json"))["rtpCapabilities"].clone();
        (serde_json::from_value(produce).unwrap(), serde_json::from_value(caps).unwrap())
    }

    #[test]
    fn real_clients_produce_params_are_accepted() {
        for (client, pt) in [("chromium-mediasoup-client-3.24", 111), ("pymediasoup-1.5-aiortc-1.16", 96)] {
            let params = fixture(&format!("{client}/produce.params.json"));
            let rtp: RtpParameters = serde_json::from_value(params["rtpParameters"].clone()).unwrap();
            let stream = producer_stream(MediaKind::Audio, &rtp).unwrap();
            assert_eq!(stream.payload_type, pt, "{client}");
            assert_eq!(stream.mid, "0");
            // Chromium puts the level on id 1, aiortc on 2 (after its `mid` on 1).
            assert_eq!(stream.audio_level_id, Some(if pt == 111 { 1 } else { 2 }), "{client}");
        }
    }

    #[test]
    fn consumer_parameters_match_what_mediasoup_answered() {
        for client in ["chromium-mediasoup-client-3.24", "pymediasoup-1.5-aiortc-1.16"] {
            let (produce, caps) = client_fixtures(client);
            let theirs: RtpParameters = serde_json::from_value(
                fixture(&format!("{client}/consume.result-from-mediasoup.json"))["rtpParameters"].clone(),
            )
            .unwrap();
            let stream = producer_stream(MediaKind::Audio, &produce).unwrap();
            check_can_consume(&caps).unwrap();
            let ours = consumer_parameters(&stream, &caps, "0".into(), 1234);
            assert_eq!(ours.codecs[0].payload_type, theirs.codecs[0].payload_type, "{client}");
            assert_eq!(ours.codecs[0].channels, theirs.codecs[0].channels);
            assert_eq!(ours.codecs[0].parameters, theirs.codecs[0].parameters, "{client}: producer's parameters");
            assert_eq!(ours.mid, theirs.mid);
            assert_eq!(ours.rtcp.cname, stream.cname, "{client}: the producer's CNAME, as mediasoup does");
            assert!(
                ours.header_extensions
                    .iter()
                    .all(|e| { theirs.header_extensions.iter().any(|t| t.uri == e.uri && t.id == e.id) })
            );
        }
    }

    #[test]
    fn the_audio_level_extension_has_mediasoups_id_and_direction() {
        let theirs = fixture("mediasoup-wire/getRouterRtpCapabilities.result.json");
        let theirs = theirs["headerExtensions"].as_array().unwrap();
        let mediasoup = theirs.iter().find(|e| e["kind"] == "audio" && e["uri"] == AUDIO_LEVEL_URI).unwrap();
        let ours = capabilities();
        let ours = ours.header_extensions.iter().find(|e| e.uri == AUDIO_LEVEL_URI).unwrap();
        assert_eq!(mediasoup["preferredId"], u64::from(ours.preferred_id));
        assert_eq!(ours.direction, Some(RtpHeaderExtensionDirection::Sendrecv));
        assert_eq!(mediasoup["direction"], "sendrecv");
    }

    /// Consumers get the level on the router's id when their device can receive it,
    /// as mediasoup answered both real clients.
    #[test]
    fn consumers_that_can_receive_the_level_get_it_on_the_routers_id() {
        for client in ["chromium-mediasoup-client-3.24", "pymediasoup-1.5-aiortc-1.16"] {
            let (produce, mut caps) = client_fixtures(client);
            let stream = producer_stream(MediaKind::Audio, &produce).unwrap();
            let ours = consumer_parameters(&stream, &caps, "0".into(), 1);
            let level = ours.header_extensions.iter().find(|e| e.uri == AUDIO_LEVEL_URI);
            assert_eq!(level.map(|e| e.id), Some(AUDIO_LEVEL_EXT_ID), "{client}");
            caps.header_extensions.retain(|e| e.uri != AUDIO_LEVEL_URI);
            let ours = consumer_parameters(&stream, &caps, "0".into(), 1);
            assert!(ours.header_extensions.iter().all(|e| e.uri != AUDIO_LEVEL_URI), "{client}: not negotiated");
        }
    }

    #[test]
    fn incompatible_capabilities_and_codecs_are_refused() {
        let no_opus = RtpCapabilities::default();
        assert!(matches!(check_can_consume(&no_opus), Err(MediaError::Unsupported(_))));
        let mut rtp: RtpParameters =
            serde_json::from_value(fixture("pymediasoup-1.5-aiortc-1.16/produce.params.json")["rtpParameters"].clone())
                .unwrap();
        rtp.codecs[0].mime_type = "audio/PCMU".into();
        assert!(matches!(producer_stream(MediaKind::Audio, &rtp), Err(MediaError::Unsupported(_))));
        assert!(matches!(producer_stream(MediaKind::Video, &rtp), Err(MediaError::Unsupported(_))));
    }
}
