//! A synthetic WebRTC client: a str0m peer (ICE controlling, DTLS client, SRTP) that
//! does what a mediasoup client does over dspeak's typed JSON-RPC client: `join`,
//! `createTransport`, `connectTransport` (sha-256 fingerprint, role `client`), then
//! `produce` with pymediasoup's rtpParameters or `consume` + `resumeConsumer`.
//!
//! Every transport has its own UDP socket (the server demultiplexes by address), or
//! with `--tcp` its own ICE-TCP connection (`link`), and runs as one task ([`drive`]). Speakers write Opus-sized RTP at 50 packets/s whose
//! payload carries the send time; listeners count every RTP packet from its cleartext
//! header (sequence numbers give loss), and *probe* listeners also decrypt through
//! str0m and read the send time back (end-to-end delay) and the audio level the
//! server forwarded (`ssrc-audio-level`, on the id the consumer negotiated).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use dspeak_schema::client::{DspeakClient, connect};
use dspeak_schema::media::{
    ConnectTransportParams, ConsumeParams, ConsumerParams, CreateTransportParams, CreateTransportResult, Direction,
    ProduceParams,
};
use dspeak_schema::ortc::{DtlsFingerprint, DtlsParameters, DtlsRole, FingerprintAlgorithm, RtpCapabilities};
use dspeak_schema::rooms::JoinParams;
use dspeak_schema::{ProducerId, TransportId};
use jsonrpsee::ws_client::WsClient;
use str0m::config::{DtlsCert, Fingerprint};
use str0m::format::{Codec, FormatParams};
use str0m::media::{Frequency, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::rtp::{Extension, ExtensionMap, ExtensionValues, RtpWrite, SeqNo, Ssrc};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

use super::link::Link;

/// pymediasoup 1.5's `produce` params, as recorded against real mediasoup.
const PRODUCE_FIXTURE: &str =
    include_str!("../../../fixtures/reference/pymediasoup-1.5-aiortc-1.16/produce.params.json");
/// pymediasoup 1.5's `consume` params (its receive capabilities).
const CONSUME_FIXTURE: &str =
    include_str!("../../../fixtures/reference/pymediasoup-1.5-aiortc-1.16/consume.params.json");

/// Bytes of RTP payload per packet (an Opus frame of 20 ms at about 40 kbit/s).
pub(crate) const PAYLOAD_BYTES: usize = 100;
/// The RFC 6464 level every speaker sends (dBov, with the voice-activity bit set).
const SPEAKER_LEVEL: i8 = -30;
/// `ssrc-audio-level`'s URI.
const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
/// Marks the payloads the load tool wrote.
const MAGIC: u32 = 0xd5be_4c4b;

/// Shared by every synthetic client of a run.
pub(crate) struct Shared {
    /// One certificate for all clients (a browser also reuses its certificate).
    pub(crate) cert: DtlsCert,
    /// Crypto with one shared DTLS configuration: the engine's own provider
    /// (`dspeak_media::crypto_provider`), so a load-client core does not build and
    /// validate a dimpl configuration per client.
    pub(crate) crypto: Arc<str0m::config::CryptoProvider>,
    /// Send times in payloads are nanoseconds since this instant.
    pub(crate) epoch: Instant,
    /// Probe listeners record delays while this is set.
    pub(crate) recording: AtomicBool,
    /// Tasks stop when this is set.
    pub(crate) stop: AtomicBool,
    /// Transports use ICE-TCP instead of UDP.
    pub(crate) tcp: bool,
}

impl Shared {
    pub(crate) fn new(tcp: bool) -> anyhow::Result<Arc<Shared>> {
        let cert = str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            .context("generating the client certificate")?;
        Ok(Arc::new(Shared {
            cert,
            crypto: dspeak_media::crypto_provider(),
            epoch: Instant::now(),
            recording: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            tcp,
        }))
    }
}

/// Counters of one received stream (one consumer), readable from other tasks.
#[derive(Debug, Default)]
pub(crate) struct StreamStats {
    pub(crate) ssrc: u32,
    /// RTP packets received.
    pub(crate) received: AtomicU64,
    /// Highest extended sequence number seen (0 = none yet).
    pub(crate) highest: AtomicU64,
}

/// What a listener transport measured.
#[derive(Debug, Default)]
pub(crate) struct ListenerStats {
    pub(crate) streams: Vec<StreamStats>,
    pub(crate) connected: AtomicBool,
    /// When the first RTP packet arrived (ns since the epoch; 0 = not yet).
    pub(crate) first_rtp: AtomicU64,
    /// When str0m first handed out a decrypted RTP packet (probes; ns since the epoch).
    pub(crate) first_audio: AtomicU64,
    /// When ICE + DTLS completed (ns since the epoch; 0 = not yet).
    pub(crate) connected_at: AtomicU64,
    /// End-to-end delays in µs (probe listeners, while recording).
    pub(crate) delays: Mutex<Vec<u32>>,
    /// Sender reports str0m decrypted (SRTCP) with a packet count that is neither zero
    /// nor more than this listener received on that stream (probe listeners).
    pub(crate) sender_reports: AtomicU64,
    /// Decrypted RTP packets (probe listeners) carrying the speakers' level and V bit.
    pub(crate) levels: AtomicU64,
    /// Decrypted RTP packets (probe listeners) carrying no level or another one.
    pub(crate) other_levels: AtomicU64,
}

/// What a speaker measured.
#[derive(Debug, Default)]
pub(crate) struct SpeakerStats {
    pub(crate) connected: AtomicBool,
    /// Packets written.
    pub(crate) sent: AtomicU64,
    /// Ticks that ran more than 5 ms late (the load client was too busy).
    pub(crate) late: AtomicU64,
}

/// A signaling connection joined to a room.
pub(crate) async fn join(url: &str, room: &str, name: &str) -> anyhow::Result<WsClient> {
    let client = connect(url).await.context("connecting")?;
    client.join(JoinParams { room: room.into(), display_name: name.into(), token: None }).await.context("join")?;
    Ok(client)
}

/// A client-side WebRTC transport: the str0m peer and its link to the server.
pub(crate) struct ClientTransport {
    pub(crate) id: TransportId,
    /// Boxed: a listener that only counts headers never touches it, and inline it
    /// would spread the task's hot fields over a 20 KiB future (a cache miss each).
    rtc: Box<Rtc>,
    link: Link,
    local: SocketAddr,
    next_timeout: Instant,
}

/// `createTransport` + the client's str0m peer + `connectTransport`; the peer reads
/// and writes the audio level on `level_id`.
pub(crate) async fn transport(
    client: &WsClient,
    shared: &Shared,
    direction: Direction,
    payload_type: u8,
    level_id: u8,
) -> anyhow::Result<ClientTransport> {
    let created = client.create_transport(CreateTransportParams { direction }).await.context("createTransport")?;
    let protocol = if shared.tcp { dspeak_schema::ortc::Protocol::Tcp } else { dspeak_schema::ortc::Protocol::Udp };
    let server = created.ice_candidates.iter().find(|c| c.protocol == protocol).context("no candidate")?;
    let server = SocketAddr::new(server.ip.parse::<IpAddr>()?, server.port);
    let link = if shared.tcp { Link::tcp(server).await? } else { Link::udp(server).await? };
    let local = link.local_addr()?;
    let mut t = ClientTransport::new(&created, shared, link, local, server, payload_type, level_id)?;
    let fingerprint = t.rtc.direct_api().local_dtls_fingerprint().clone();
    client
        .connect_transport(ConnectTransportParams {
            transport_id: created.id.clone(),
            dtls_parameters: DtlsParameters {
                role: DtlsRole::Client,
                fingerprints: vec![DtlsFingerprint {
                    algorithm: FingerprintAlgorithm::Sha256,
                    value: hex_colons(&fingerprint.bytes),
                }],
            },
        })
        .await
        .context("connectTransport")?;
    t.drain(Instant::now(), &mut |_| {});
    Ok(t)
}

impl ClientTransport {
    fn new(
        created: &CreateTransportResult,
        shared: &Shared,
        link: Link,
        local: SocketAddr,
        server: SocketAddr,
        payload_type: u8,
        level_id: u8,
    ) -> anyhow::Result<ClientTransport> {
        let now = Instant::now();
        let mut exts = ExtensionMap::empty();
        // pymediasoup's id for `mid`, which is also the router's.
        exts.set(1, Extension::RtpMid);
        exts.set(level_id, Extension::AudioLevel);
        let mut config = RtcConfig::new()
            .set_rtp_mode(true)
            .set_crypto_provider(shared.crypto.clone())
            .set_dtls_cert(shared.cert.clone())
            .clear_codecs()
            .set_extension_map(exts);
        config.codec_config().add_config(
            Pt::from(payload_type),
            None,
            Codec::Opus,
            Frequency::FORTY_EIGHT_KHZ,
            Some(2),
            FormatParams { min_p_time: Some(10), use_inband_fec: Some(true), ..Default::default() },
        );
        let mut rtc = config.build(now);
        let (ours, theirs) = match link.protocol() {
            Protocol::Tcp => (
                Candidate::builder().tcp().host(local).tcptype(TcpType::Active).build()?,
                Candidate::builder().tcp().host(server).tcptype(TcpType::Passive).build()?,
            ),
            _ => (Candidate::host(local, "udp")?, Candidate::host(server, "udp")?),
        };
        rtc.add_local_candidate(ours);
        rtc.add_remote_candidate(theirs);
        let sha256 = created
            .dtls_parameters
            .fingerprints
            .iter()
            .find(|f| f.algorithm == FingerprintAlgorithm::Sha256)
            .context("no sha-256 fingerprint")?;
        let mut api = rtc.direct_api();
        api.set_remote_ice_credentials(str0m::IceCreds {
            ufrag: created.ice_parameters.username_fragment.clone(),
            pass: created.ice_parameters.password.clone(),
        });
        api.set_ice_controlling(true);
        api.set_remote_fingerprint(Fingerprint {
            hash_func: "sha-256".into(),
            bytes: parse_hex_colons(&sha256.value)?,
        });
        // role `client` for the server means we are the DTLS client (active).
        api.start_dtls(true)?;
        Ok(ClientTransport { id: created.id.clone(), rtc: Box::new(rtc), link, local, next_timeout: now })
    }

    /// Sends what str0m wants sent; passes events to `on_event`.
    fn drain(&mut self, now: Instant, on_event: &mut dyn FnMut(Event)) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.next_timeout = t.max(now);
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    self.link.send(&t.contents, t.destination);
                }
                Ok(Output::Event(e)) => on_event(e),
                Err(e) => {
                    tracing::warn!(error = %e, "client transport failed");
                    self.next_timeout = now + Duration::from_secs(3600);
                    return;
                }
            }
        }
    }

    fn input(&mut self, now: Instant, source: SocketAddr, data: &[u8]) -> bool {
        let Ok(receive) = Receive::new(self.link.protocol(), source, self.local, data) else {
            return false;
        };
        self.rtc.handle_input(Input::Receive(now, receive)).is_ok()
    }

    fn timeout(&mut self, now: Instant) {
        let _ = self.rtc.handle_input(Input::Timeout(now));
    }
}

/// A speaker: `produce` with pymediasoup's parameters (Opus on payload type 96).
pub(crate) struct Speaker {
    pub(crate) producer: ProducerId,
    pub(crate) transport: ClientTransport,
    /// Time between two packets (20 ms: a voice stream).
    pub(crate) period: Duration,
    ssrc: u32,
    mid: Mid,
    payload_type: u8,
}

/// Joins, creates a send transport and produces.
pub(crate) async fn speaker(
    url: &str,
    room: &str,
    name: &str,
    shared: &Shared,
    ssrc: u32,
) -> anyhow::Result<(WsClient, Speaker)> {
    let client = join(url, room, name).await?;
    let mut params: ProduceParams = serde_json::from_str(PRODUCE_FIXTURE)?;
    let payload_type = params.rtp_parameters.codecs[0].payload_type;
    let level_id = params
        .rtp_parameters
        .header_extensions
        .iter()
        .find(|e| e.uri == AUDIO_LEVEL_URI)
        .map(|e| e.id)
        .context("the produce fixture has no audio level")?;
    let mut transport = transport(&client, shared, Direction::Send, payload_type, level_id).await?;
    params.transport_id = transport.id.clone();
    params.rtp_parameters.encodings[0].ssrc = Some(ssrc);
    let mid_text = params.rtp_parameters.mid.clone().context("fixture mid")?;
    let mid = Mid::from(mid_text.as_str());
    {
        let mut api = transport.rtc.direct_api();
        api.declare_media(mid, MediaKind::Audio);
        api.declare_stream_tx(Ssrc::from(ssrc), None, mid, None);
    }
    let produced = client.produce(params).await.context("produce")?;
    Ok((
        client,
        Speaker { producer: produced.id, transport, period: Duration::from_millis(20), ssrc, mid, payload_type },
    ))
}

/// A listener transport consuming `producers`.
pub(crate) struct Listener {
    pub(crate) transport: ClientTransport,
    pub(crate) stats: Arc<ListenerStats>,
    pub(crate) consumers: Vec<dspeak_schema::ConsumerId>,
    /// Decrypt every packet through str0m (and measure delay).
    pub(crate) probe: bool,
}

/// The receive capabilities pymediasoup sends to `consume`.
fn recv_capabilities() -> anyhow::Result<RtpCapabilities> {
    let params: ConsumeParams = serde_json::from_str(CONSUME_FIXTURE)?;
    Ok(params.rtp_capabilities)
}

/// Creates a recv transport on `client` and consumes every producer (paused).
pub(crate) async fn listener(
    client: &WsClient,
    shared: &Shared,
    producers: &[ProducerId],
    probe: bool,
) -> anyhow::Result<Listener> {
    let caps = recv_capabilities()?;
    // The device's id, which consumers get when the router's is the same (as with
    // mediasoup); checked for every consumer below.
    let level_id = caps
        .header_extensions
        .iter()
        .find(|e| e.uri == AUDIO_LEVEL_URI)
        .map(|e| e.preferred_id)
        .context("the consume fixture has no audio level")?;
    let mut transport = transport(client, shared, Direction::Recv, 100, level_id).await?;
    let mut streams = Vec::new();
    let mut consumers = Vec::new();
    for p in producers {
        let consumed = client
            .consume(ConsumeParams {
                transport_id: transport.id.clone(),
                producer_id: p.clone(),
                rtp_capabilities: caps.clone(),
            })
            .await
            .context("consume")?;
        let ssrc = consumed.rtp_parameters.encodings.first().and_then(|e| e.ssrc).context("consumer without ssrc")?;
        let level = consumed.rtp_parameters.header_extensions.iter().find(|e| e.uri == AUDIO_LEVEL_URI);
        if level.is_some_and(|e| e.id != level_id) {
            bail!("consumer's audio level id {:?} is not the device's {level_id}", level.map(|e| e.id));
        }
        let mid = consumed.rtp_parameters.mid.clone().context("no mid")?;
        let mid = Mid::from(mid.as_str());
        let mut api = transport.rtc.direct_api();
        api.declare_media(mid, MediaKind::Audio);
        api.expect_stream_rx(Ssrc::from(ssrc), None, mid, None).suppress_nack(true);
        streams.push(StreamStats { ssrc, ..Default::default() });
        consumers.push(consumed.id);
    }
    transport.drain(Instant::now(), &mut |_| {});
    Ok(Listener { transport, stats: Arc::new(ListenerStats { streams, ..Default::default() }), consumers, probe })
}

/// Resumes every consumer of a listener.
pub(crate) async fn resume(client: &WsClient, consumers: &[dspeak_schema::ConsumerId]) -> anyhow::Result<()> {
    for c in consumers {
        client.resume_consumer(ConsumerParams { consumer_id: c.clone() }).await.context("resumeConsumer")?;
    }
    Ok(())
}

/// How often an idle client task looks at `shared.stop`.
const STOP_CHECK: Duration = Duration::from_millis(250);

/// Runs a listener until `shared.stop`.
///
/// The task keeps one timer for its life and moves it only when its deadline changes,
/// and polls its branches in a fixed order: a timer made and dropped per wake-up, and
/// `select!`'s random branch order, cost the load client more than reading the
/// datagram did (their share of the client's profile was about a fifth), and a client
/// that is slower than the server adds its own queueing to the measured delay.
pub(crate) async fn drive_listener(mut l: Listener, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 2048];
    let stats = l.stats.clone();
    let probe = l.probe;
    let mut unwrap: Vec<SeqUnwrap> = stats.streams.iter().map(|_| SeqUnwrap::default()).collect();
    let mut stop_check = Instant::now() + STOP_CHECK;
    let timer = tokio::time::sleep_until(tokio::time::Instant::from_std(l.transport.next_timeout.min(stop_check)));
    tokio::pin!(timer);
    while !shared.stop.load(Ordering::Relaxed) {
        let wake = tokio::time::Instant::from_std(l.transport.next_timeout.min(stop_check));
        if timer.deadline() != wake {
            timer.as_mut().reset(wake);
        }
        tokio::select! {
            biased;
            () = &mut timer => {
                let now = Instant::now();
                stop_check = now + STOP_CHECK;
                if now >= l.transport.next_timeout {
                    l.transport.timeout(now);
                    let recording = shared.recording.load(Ordering::Relaxed);
                    let epoch = shared.epoch;
                    l.transport.drain(now, &mut |e| on_listener_event(e, &stats, recording, epoch));
                }
            }
            r = l.transport.link.recv(&mut buf) => {
                let Ok((n, source)) = r else { continue };
                let now = Instant::now();
                let mut datagram = Some((n, source));
                while let Some((n, source)) = datagram {
                    let data = &buf[..n];
                    let connected = stats.connected.load(Ordering::Relaxed);
                    if let (true, Some((ssrc, seq))) = (connected, rtp_header(data)) {
                        if stats.first_rtp.load(Ordering::Relaxed) == 0 {
                            let at = shared.epoch.elapsed().as_nanos() as u64;
                            stats.first_rtp.store(at.max(1), Ordering::Relaxed);
                        }
                        if let Some(i) = stats.streams.iter().position(|s| s.ssrc == ssrc) {
                            let ext = unwrap[i].extend(seq);
                            let s = &stats.streams[i];
                            s.received.fetch_add(1, Ordering::Relaxed);
                            s.highest.fetch_max(ext, Ordering::Relaxed);
                        }
                        if !probe {
                            datagram = l.transport.link.try_recv(&mut buf).ok();
                            continue;
                        }
                    }
                    if l.transport.input(now, source, data) {
                        let recording = shared.recording.load(Ordering::Relaxed);
                        let epoch = shared.epoch;
                        l.transport.drain(now, &mut |e| on_listener_event(e, &stats, recording, epoch));
                    }
                    datagram = l.transport.link.try_recv(&mut buf).ok();
                }
            }
        }
    }
}

fn on_listener_event(e: Event, stats: &ListenerStats, recording: bool, epoch: Instant) {
    match e {
        Event::Connected => {
            stats.connected_at.store((epoch.elapsed().as_nanos() as u64).max(1), Ordering::Relaxed);
            stats.connected.store(true, Ordering::Relaxed);
        }
        Event::SenderFeedback(f) => {
            let info = f.sender_info;
            let received =
                stats.streams.iter().find(|s| s.ssrc == *info.ssrc).map(|s| s.received.load(Ordering::Relaxed));
            // The report may count a packet still on its way here.
            if received.is_some_and(|r| info.sender_packet_count > 0 && u64::from(info.sender_packet_count) <= r + 5) {
                stats.sender_reports.fetch_add(1, Ordering::Relaxed);
            }
        }
        Event::RtpPacket(p) => {
            let ext = &p.header.ext_vals;
            if (ext.audio_level, ext.voice_activity) == (Some(SPEAKER_LEVEL), Some(true)) {
                stats.levels.fetch_add(1, Ordering::Relaxed);
            } else {
                stats.other_levels.fetch_add(1, Ordering::Relaxed);
            }
            if stats.first_audio.load(Ordering::Relaxed) == 0 {
                let at = epoch.elapsed().as_nanos() as u64;
                stats.first_audio.store(at.max(1), Ordering::Relaxed);
            }
            if !recording {
                return;
            }
            if let Some(sent) = sent_at(&p.payload) {
                let delay = epoch.elapsed().saturating_sub(sent);
                let us = delay.as_micros().min(u32::MAX as u128) as u32;
                stats.delays.lock().unwrap_or_else(|e| e.into_inner()).push(us);
            }
        }
        _ => {}
    }
}

/// Runs a speaker until `shared.stop`: one packet per `period` (50 packets/s unless
/// changed).
pub(crate) async fn drive_speaker(mut s: Speaker, shared: Arc<Shared>, stats: Arc<SpeakerStats>) {
    let mut buf = vec![0u8; 2048];
    let period = s.period;
    let mut next_send = tokio::time::Instant::now() + period;
    let mut seq: u64 = 1 + u64::from(s.ssrc % 1000);
    let mut rtp_time: u32 = s.ssrc;
    let mut index: u64 = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        let wake = tokio::time::Instant::from_std(s.transport.next_timeout);
        tokio::select! {
            r = s.transport.link.recv(&mut buf) => {
                let Ok((n, source)) = r else { continue };
                let now = Instant::now();
                if s.transport.input(now, source, &buf[..n]) {
                    s.transport.drain(now, &mut |e| if matches!(e, Event::Connected) {
                        stats.connected.store(true, Ordering::Relaxed);
                    });
                }
            }
            () = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                s.transport.timeout(now);
                s.transport.drain(now, &mut |e| if matches!(e, Event::Connected) {
                    stats.connected.store(true, Ordering::Relaxed);
                });
            }
            () = tokio::time::sleep_until(next_send) => {
                let late = tokio::time::Instant::now().saturating_duration_since(next_send);
                if late > Duration::from_millis(5) {
                    stats.late.fetch_add(1, Ordering::Relaxed);
                }
                next_send += period;
                if !stats.connected.load(Ordering::Relaxed) {
                    continue;
                }
                let now = Instant::now();
                let payload = payload(shared.epoch, now, index);
                index += 1;
                let mut api = s.transport.rtc.direct_api();
                let Some(tx) = api.stream_tx(&Ssrc::from(s.ssrc)) else { continue };
                tx.write_rtp(
                    RtpWrite::new(Pt::from(s.payload_type), SeqNo::from(seq), rtp_time, now, payload)
                        .ext_vals(ExtensionValues {
                            mid: Some(s.mid),
                            audio_level: Some(SPEAKER_LEVEL),
                            voice_activity: Some(true),
                            ..Default::default()
                        }),
                );
                seq += 1;
                rtp_time = rtp_time.wrapping_add(960);
                s.transport.timeout(now);
                s.transport.drain(now, &mut |_| {});
                stats.sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A payload: magic, send time (ns since `epoch`), packet index, padding.
fn payload(epoch: Instant, now: Instant, index: u64) -> Vec<u8> {
    let mut p = vec![0u8; PAYLOAD_BYTES];
    p[..4].copy_from_slice(&MAGIC.to_be_bytes());
    let ns = now.duration_since(epoch).as_nanos() as u64;
    p[4..12].copy_from_slice(&ns.to_be_bytes());
    p[12..20].copy_from_slice(&index.to_be_bytes());
    p
}

/// The send time written by [`payload`].
fn sent_at(payload: &[u8]) -> Option<Duration> {
    if payload.len() < 20 || payload[..4] != MAGIC.to_be_bytes() {
        return None;
    }
    let ns = u64::from_be_bytes(payload[4..12].try_into().ok()?);
    Some(Duration::from_nanos(ns))
}

/// SSRC and sequence number of an SRTP packet (its header is not encrypted); `None`
/// for anything else (STUN, DTLS, RTCP).
fn rtp_header(data: &[u8]) -> Option<(u32, u16)> {
    if data.len() < 12 || data[0] >> 6 != 2 {
        return None;
    }
    // RTCP packet types 192–223 share the first byte's range (RFC 5761).
    if (192..=223).contains(&data[1]) {
        return None;
    }
    let seq = u16::from_be_bytes([data[2], data[3]]);
    let ssrc = u32::from_be_bytes([data[8], data[9], data[10], data[11]]);
    Some((ssrc, seq))
}

/// Extends 16-bit sequence numbers (starting above 0 so 0 can mean "none").
#[derive(Default)]
struct SeqUnwrap {
    last: Option<u64>,
}

impl SeqUnwrap {
    fn extend(&mut self, seq: u16) -> u64 {
        let ext = match self.last {
            None => (1 << 16) + u64::from(seq),
            Some(last) => {
                let base = last & !0xffff;
                let candidates = [base.wrapping_sub(1 << 16), base, base + (1 << 16)];
                candidates.iter().map(|b| b + u64::from(seq)).min_by_key(|c| c.abs_diff(last)).unwrap_or(last)
            }
        };
        self.last = Some(self.last.map_or(ext, |l| l.max(ext)));
        ext
    }
}

fn hex_colons(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

fn parse_hex_colons(s: &str) -> anyhow::Result<Vec<u8>> {
    s.split(':').map(|h| u8::from_str_radix(h, 16).map_err(Into::into)).collect::<anyhow::Result<Vec<u8>>>().and_then(
        |v| {
            if v.is_empty() {
                bail!("empty fingerprint")
            }
            Ok(v)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_extend_across_wraps() {
        let mut u = SeqUnwrap::default();
        let a = u.extend(65534);
        assert_eq!(u.extend(65535), a + 1);
        assert_eq!(u.extend(0), a + 2);
        assert_eq!(u.extend(65535), a + 1, "a late packet keeps its place");
        assert_eq!(u.extend(1), a + 3);
    }

    #[test]
    fn payload_round_trips_the_send_time() {
        let epoch = Instant::now();
        let now = epoch + Duration::from_millis(1234);
        let p = payload(epoch, now, 7);
        assert_eq!(p.len(), PAYLOAD_BYTES);
        assert_eq!(sent_at(&p), Some(Duration::from_millis(1234)));
    }

    #[test]
    fn rtp_headers_are_read_and_rtcp_skipped() {
        let mut rtp = [0u8; 12];
        rtp[0] = 0x80;
        rtp[1] = 100;
        rtp[2..4].copy_from_slice(&513u16.to_be_bytes());
        rtp[8..12].copy_from_slice(&7u32.to_be_bytes());
        assert_eq!(rtp_header(&rtp), Some((7, 513)));
        rtp[1] = 200;
        assert_eq!(rtp_header(&rtp), None);
        assert_eq!(rtp_header(&[0u8; 20]), None);
    }
}
