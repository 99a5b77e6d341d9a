//! ORTC wire types, shaped exactly like mediasoup's JSON.
//!
//! These are what `mediasoup-client` and `pymediasoup` send and expect: RTP
//! capabilities and parameters, ICE parameters and candidates, DTLS parameters.
//! Deserialization is lenient where real clients send extra fields (Chromium adds
//! `msid`, `dtx`, header-extension `parameters`); serialization never emits a value
//! a client would reject (codec parameter values are numbers or strings, never
//! booleans).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Media kind of a track, producer or consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    /// Audio.
    Audio,
    /// Video (not forwarded by this server; accepted in capabilities).
    Video,
}

impl MediaKind {
    /// The lower-case wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        }
    }
}

/// A codec parameter value (`a=fmtp` entry): a number or a string.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ParameterValue {
    /// An integer, e.g. `useinbandfec: 1`.
    Integer(i64),
    /// A non-integer number.
    Number(f64),
    /// A string, e.g. `profile-level-id: "42e01f"`.
    String(String),
}

/// Codec parameters (`a=fmtp`), ordered by name.
pub type CodecParameters = BTreeMap<String, ParameterValue>;

/// One RTCP feedback mechanism of a codec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RtcpFeedback {
    /// `nack`, `transport-cc`, `ccm`, `goog-remb`…
    #[serde(rename = "type")]
    pub kind: String,
    /// e.g. `pli` for `nack pli`; empty when none.
    #[serde(default)]
    pub parameter: String,
}

impl RtcpFeedback {
    /// Feedback of the given type with no parameter.
    pub fn new(kind: &str) -> Self {
        Self { kind: kind.to_owned(), parameter: String::new() }
    }
}

/// What an endpoint can send or receive: codecs and header extensions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RtpCapabilities {
    /// Supported codecs.
    #[serde(default)]
    pub codecs: Vec<RtpCodecCapability>,
    /// Supported RTP header extensions.
    #[serde(default)]
    pub header_extensions: Vec<RtpHeaderExtension>,
}

/// A codec an endpoint supports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RtpCodecCapability {
    /// Media kind.
    pub kind: MediaKind,
    /// e.g. `audio/opus` (case-insensitive on input).
    pub mime_type: String,
    /// The payload type the endpoint would like to use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_payload_type: Option<u8>,
    /// Clock rate in Hz.
    pub clock_rate: u32,
    /// Audio channels (missing means 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<u8>,
    /// Codec parameters.
    #[serde(default)]
    pub parameters: CodecParameters,
    /// RTCP feedback mechanisms.
    #[serde(default)]
    pub rtcp_feedback: Vec<RtcpFeedback>,
}

/// Direction of a header extension capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RtpHeaderExtensionDirection {
    /// Sent and received.
    Sendrecv,
    /// Only sent.
    Sendonly,
    /// Only received.
    Recvonly,
    /// Neither.
    Inactive,
}

/// A header extension an endpoint supports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RtpHeaderExtension {
    /// Media kind it applies to.
    pub kind: MediaKind,
    /// Extension URI.
    pub uri: String,
    /// The id the endpoint would like to use.
    pub preferred_id: u8,
    /// Whether it should be encrypted (never, here).
    #[serde(default)]
    pub preferred_encrypt: bool,
    /// Direction, `sendrecv` when missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<RtpHeaderExtensionDirection>,
}

/// Parameters of one RTP stream (what a producer sends or a consumer receives).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RtpParameters {
    /// The MID (`a=mid`) of the stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mid: Option<String>,
    /// Codecs, the first one being the media codec in use.
    pub codecs: Vec<RtpCodecParameters>,
    /// Header extensions with their negotiated ids.
    #[serde(default)]
    pub header_extensions: Vec<RtpHeaderExtensionParameters>,
    /// Encodings (one for audio) with their SSRCs.
    #[serde(default)]
    pub encodings: Vec<RtpEncodingParameters>,
    /// RTCP parameters.
    #[serde(default)]
    pub rtcp: RtcpParameters,
    /// `a=msid` value, "streamId trackId" (sent by browsers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msid: Option<String>,
}

/// One negotiated codec.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RtpCodecParameters {
    /// e.g. `audio/opus`.
    pub mime_type: String,
    /// Payload type on the wire.
    pub payload_type: u8,
    /// Clock rate in Hz.
    pub clock_rate: u32,
    /// Audio channels (missing means 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<u8>,
    /// Codec parameters.
    #[serde(default)]
    pub parameters: CodecParameters,
    /// RTCP feedback mechanisms.
    #[serde(default)]
    pub rtcp_feedback: Vec<RtcpFeedback>,
}

/// One negotiated header extension.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RtpHeaderExtensionParameters {
    /// Extension URI.
    pub uri: String,
    /// Extension id (1–14 for one-byte headers).
    pub id: u8,
    /// Whether it is encrypted.
    #[serde(default)]
    pub encrypt: bool,
    /// Extension parameters (browsers send `{}`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: CodecParameters,
}

/// An RTX stream of an encoding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RtxParameters {
    /// SSRC of the retransmission stream.
    pub ssrc: u32,
}

/// One encoding (for audio: the single stream and its SSRC).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RtpEncodingParameters {
    /// SSRC of the stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssrc: Option<u32>,
    /// RID (simulcast), unused for audio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rid: Option<String>,
    /// Payload type of the codec this encoding uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codec_payload_type: Option<u8>,
    /// RTX stream, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtx: Option<RtxParameters>,
    /// Discontinuous transmission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtx: Option<bool>,
    /// Maximum bitrate in bps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bitrate: Option<u32>,
}

/// RTCP parameters of a stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RtcpParameters {
    /// The CNAME of the stream's sender.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cname: Option<String>,
    /// Reduced-size RTCP (RFC 5506).
    #[serde(default = "default_true")]
    pub reduced_size: bool,
    /// RTCP multiplexed with RTP (always, with WebRTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mux: Option<bool>,
}

impl Default for RtcpParameters {
    fn default() -> Self {
        Self { cname: None, reduced_size: true, mux: None }
    }
}

fn default_true() -> bool {
    true
}

/// ICE parameters of the server side of a transport.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IceParameters {
    /// ICE username fragment.
    pub username_fragment: String,
    /// ICE password.
    pub password: String,
    /// Always `true`: the server is an ICE-lite agent.
    #[serde(default)]
    pub ice_lite: bool,
}

/// Transport protocol of an ICE candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

/// The role of a TCP candidate (RFC 6544); the server's are passive: clients connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TcpType {
    /// Accepts connections.
    Passive,
}

/// ICE candidate type (the server only has host candidates).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum IceCandidateType {
    /// A host candidate.
    Host,
}

/// A server ICE candidate. The address is sent as both `ip` (required by pymediasoup)
/// and `address` (what mediasoup sends and mediasoup-client prefers).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IceCandidate {
    /// Candidate foundation.
    pub foundation: String,
    /// Candidate priority.
    pub priority: u32,
    /// IP address (same as `address`).
    pub ip: String,
    /// IP address or hostname.
    pub address: String,
    /// Transport protocol.
    pub protocol: Protocol,
    /// Port.
    pub port: u16,
    /// Candidate type.
    #[serde(rename = "type")]
    pub kind: IceCandidateType,
    /// TCP candidates only: `passive`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_type: Option<TcpType>,
}

/// DTLS role.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DtlsRole {
    /// Decided by the other side (the server's answer in `createTransport`).
    #[default]
    Auto,
    /// DTLS client (initiates the handshake).
    Client,
    /// DTLS server.
    Server,
}

/// Hash function of a certificate fingerprint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum FingerprintAlgorithm {
    /// SHA-1.
    #[serde(rename = "sha-1")]
    Sha1,
    /// SHA-224.
    #[serde(rename = "sha-224")]
    Sha224,
    /// SHA-256.
    #[serde(rename = "sha-256")]
    Sha256,
    /// SHA-384.
    #[serde(rename = "sha-384")]
    Sha384,
    /// SHA-512.
    #[serde(rename = "sha-512")]
    Sha512,
}

impl FingerprintAlgorithm {
    /// Every algorithm, weakest first.
    pub const ALL: [FingerprintAlgorithm; 5] = [
        FingerprintAlgorithm::Sha1,
        FingerprintAlgorithm::Sha224,
        FingerprintAlgorithm::Sha256,
        FingerprintAlgorithm::Sha384,
        FingerprintAlgorithm::Sha512,
    ];

    /// The wire name, e.g. `sha-256`.
    pub fn as_str(self) -> &'static str {
        match self {
            FingerprintAlgorithm::Sha1 => "sha-1",
            FingerprintAlgorithm::Sha224 => "sha-224",
            FingerprintAlgorithm::Sha256 => "sha-256",
            FingerprintAlgorithm::Sha384 => "sha-384",
            FingerprintAlgorithm::Sha512 => "sha-512",
        }
    }

    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            FingerprintAlgorithm::Sha1 => 20,
            FingerprintAlgorithm::Sha224 => 28,
            FingerprintAlgorithm::Sha256 => 32,
            FingerprintAlgorithm::Sha384 => 48,
            FingerprintAlgorithm::Sha512 => 64,
        }
    }
}

/// A certificate fingerprint: upper-case hex bytes separated by colons.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DtlsFingerprint {
    /// Hash function.
    pub algorithm: FingerprintAlgorithm,
    /// e.g. `2C:6D:8F:…`.
    pub value: String,
}

/// DTLS parameters of one side of a transport.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DtlsParameters {
    /// DTLS role.
    #[serde(default)]
    pub role: DtlsRole,
    /// Certificate fingerprints (at least one).
    pub fingerprints: Vec<DtlsFingerprint>,
}

/// Round trips of real client and server payloads through these types and through
/// `mediasoup-types` (the official mediasoup wire types), which must agree.
#[cfg(test)]
mod oracle {
    use serde::Serialize;
    use serde::de::DeserializeOwned;
    use serde_json::Value;

    use super::*;

    fn fixture(path: &str) -> Value {
        let file = format!("{}/../fixtures/reference/{path}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}"))).unwrap()
    }

    /// Parses `input` with ours (`O`) and the oracle (`M`); what we serialize must read
    /// back through the oracle as the same value it read from the original.
    fn agree<O, M>(what: &str, input: &Value)
    where
        O: Serialize + DeserializeOwned,
        M: Serialize + DeserializeOwned,
    {
        let theirs: M = serde_json::from_value(input.clone()).unwrap_or_else(|e| panic!("oracle rejects {what}: {e}"));
        let ours: O = serde_json::from_value(input.clone()).unwrap_or_else(|e| panic!("we reject {what}: {e}"));
        let ours_json = serde_json::to_value(&ours).unwrap();
        let reread: M = serde_json::from_value(ours_json.clone())
            .unwrap_or_else(|e| panic!("oracle rejects our serialization of {what}: {e}\n{ours_json:#}"));
        assert_eq!(
            serde_json::to_value(&reread).unwrap(),
            serde_json::to_value(&theirs).unwrap(),
            "{what}: the oracle reads our serialization differently from the original"
        );
    }

    use mediasoup_types::data_structures as ms;
    use mediasoup_types::rtp_parameters as msrtp;

    #[test]
    fn rtp_parameters_of_real_clients_and_mediasoup_agree() {
        for client in ["chromium-mediasoup-client-3.24", "pymediasoup-1.5-aiortc-1.16"] {
            let produce = fixture(&format!("{client}/produce.params.json"));
            agree::<RtpParameters, msrtp::RtpParameters>(&format!("{client} produce"), &produce["rtpParameters"]);
            let consumed = fixture(&format!("{client}/consume.result-from-mediasoup.json"));
            agree::<RtpParameters, msrtp::RtpParameters>(
                &format!("{client} consume result"),
                &consumed["rtpParameters"],
            );
            let consume = fixture(&format!("{client}/consume.params.json"));
            agree::<RtpCapabilities, msrtp::RtpCapabilities>(&format!("{client} caps"), &consume["rtpCapabilities"]);
            let connect = fixture(&format!("{client}/connectTransport.params.json"));
            agree::<DtlsParameters, ms::DtlsParameters>(&format!("{client} dtls"), &connect["dtlsParameters"]);
        }
    }

    #[test]
    fn mediasoup_router_and_transport_answers_agree() {
        let caps = fixture("mediasoup-wire/getRouterRtpCapabilities.result.json");
        agree::<RtpCapabilities, msrtp::RtpCapabilitiesFinalized>("router capabilities", &caps);
        let transport = fixture("mediasoup-wire/createTransport.result.json");
        agree::<IceParameters, ms::IceParameters>("ice parameters", &transport["iceParameters"]);
        agree::<DtlsParameters, ms::DtlsParameters>("dtls parameters", &transport["dtlsParameters"]);
        agree::<IceCandidate, ms::IceCandidate>("udp candidate", &transport["iceCandidates"][0]);
        agree::<IceCandidate, ms::IceCandidate>("tcp candidate", &transport["iceCandidates"][1]);
    }
}
