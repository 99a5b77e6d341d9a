//! Params and results of the media area: transports, producers and consumers.
//!
//! The shapes follow mediasoup-demo's protocol so that `mediasoup-client` and
//! `pymediasoup` can be wired to these methods unchanged.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::{ConsumerId, ProducerId, TransportId};
use crate::ortc::{DtlsParameters, IceCandidate, IceParameters, MediaKind, RtpCapabilities, RtpParameters};

/// Which way media flows on a transport, seen from the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The client sends (produces) on it.
    Send,
    /// The client receives (consumes) on it.
    Recv,
}

/// Params of `createTransport`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CreateTransportParams {
    /// Direction of the transport.
    pub direction: Direction,
}

/// Result of `createTransport`: what the client passes to `device.createSendTransport()`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateTransportResult {
    /// Transport id.
    pub id: TransportId,
    /// Server ICE parameters (ICE-lite).
    pub ice_parameters: IceParameters,
    /// Server ICE candidates.
    pub ice_candidates: Vec<IceCandidate>,
    /// Server DTLS parameters (`role: auto`, fingerprints sha-1…sha-512).
    pub dtls_parameters: DtlsParameters,
}

/// Params of `connectTransport`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectTransportParams {
    /// Transport id.
    pub transport_id: TransportId,
    /// The client's DTLS parameters.
    pub dtls_parameters: DtlsParameters,
}

/// Params of methods addressing one transport (`restartIce`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransportParams {
    /// Transport id.
    pub transport_id: TransportId,
}

/// Params of `produce`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProduceParams {
    /// A send transport of this session.
    pub transport_id: TransportId,
    /// Media kind (only `audio` is accepted).
    pub kind: MediaKind,
    /// What the client will send.
    pub rtp_parameters: RtpParameters,
    /// Application data, kept with the producer (size-capped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_data: Option<serde_json::Value>,
}

/// Result of `produce`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProduceResult {
    /// The new producer's id.
    pub id: ProducerId,
}

/// Params of methods addressing one producer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProducerParams {
    /// Producer id.
    pub producer_id: ProducerId,
}

/// Params of `consume`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumeParams {
    /// A recv transport of this session.
    pub transport_id: TransportId,
    /// A producer of another peer of the same room.
    pub producer_id: ProducerId,
    /// The client's receive capabilities (`device.recvRtpCapabilities`).
    pub rtp_capabilities: RtpCapabilities,
}

/// Result of `consume`: what the client passes to `transport.consume()`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumeResult {
    /// The consumer's id. The consumer starts paused: call `resumeConsumer` when ready.
    pub id: ConsumerId,
    /// The consumed producer.
    pub producer_id: ProducerId,
    /// Media kind.
    pub kind: MediaKind,
    /// What the server will send.
    pub rtp_parameters: RtpParameters,
    /// Whether the producer is currently paused.
    pub producer_paused: bool,
}

/// Params of methods addressing one consumer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerParams {
    /// Consumer id.
    pub consumer_id: ConsumerId,
}

/// Params of `getStats`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GetStatsParams {
    /// Id of one of this session's transports, producers or consumers.
    pub id: String,
}

/// Statistics of one transport, producer or consumer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Stats {
    /// A WebRTC transport.
    Transport {
        /// Transport id.
        id: TransportId,
        /// ICE state: `new`, `connected`, `disconnected`, `closed`.
        ice_state: String,
        /// DTLS state: `new`, `connecting`, `connected`, `closed`.
        dtls_state: String,
        /// UDP datagrams received.
        packets_received: u32,
        /// UDP datagrams sent.
        packets_sent: u32,
        /// Bytes received.
        bytes_received: f64,
        /// Bytes sent.
        bytes_sent: f64,
    },
    /// A producer (RTP received from the client).
    Producer {
        /// Producer id.
        id: ProducerId,
        /// Whether it is paused.
        paused: bool,
        /// SSRC of the stream.
        ssrc: u32,
        /// RTP packets received.
        packets_received: u32,
        /// RTP payload bytes received.
        bytes_received: f64,
    },
    /// A consumer (RTP sent to the client).
    Consumer {
        /// Consumer id.
        id: ConsumerId,
        /// Whether the consumer itself is paused.
        paused: bool,
        /// Whether its producer is paused.
        producer_paused: bool,
        /// SSRC of the stream.
        ssrc: u32,
        /// RTP packets sent.
        packets_sent: u32,
        /// RTP payload bytes sent.
        bytes_sent: f64,
    },
}

/// Result of `getRouterRtpCapabilities`.
pub type RouterRtpCapabilities = RtpCapabilities;
