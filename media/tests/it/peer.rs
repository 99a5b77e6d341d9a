//! A str0m client peer on its own UDP socket, as a mediasoup client would be: ICE
//! controlling, DTLS client (`connect` with role `client` and a sha-256 fingerprint),
//! SRTP. A speaker writes Opus-sized RTP every 20 ms with a fixed RFC 6464 level; a
//! listener records every RTP packet str0m decrypts (SSRC, extended sequence number).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use dspeak_media::RouterHandle;
use dspeak_schema::media::Direction;
use dspeak_schema::ortc::{
    DtlsFingerprint, DtlsParameters, DtlsRole, FingerprintAlgorithm, MediaKind as Kind, RtpCapabilities, RtpParameters,
};
use dspeak_schema::{ConsumerId, PeerId, ProducerId, TransportId};
use str0m::config::Fingerprint;
use str0m::format::{Codec, FormatParams};
use str0m::media::{Frequency, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{Extension, ExtensionMap, ExtensionValues, RtpWrite, SeqNo, Ssrc};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;

/// pymediasoup's payload type and header-extension ids (`fixtures/reference`).
const PRODUCER_PT: u8 = 96;
const MID_ID: u8 = 1;
const PRODUCER_LEVEL_ID: u8 = 2;
/// The router's level id, which pymediasoup's consumers negotiate.
const CONSUMER_LEVEL_ID: u8 = 6;

fn fixture(name: &str) -> serde_json::Value {
    let path = format!("{}/../fixtures/reference/pymediasoup-1.5-aiortc-1.16/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// A new random id.
pub(crate) fn id<T: for<'a> From<&'a str>>() -> T {
    T::from(uuid::Uuid::new_v4().to_string().as_str())
}

/// What a client peer saw; shared with its task.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    pub(crate) connected: AtomicBool,
    /// Extended sequence numbers received, per SSRC, in arrival order.
    pub(crate) packets: Mutex<HashMap<u32, Vec<u64>>>,
    /// RTP packets written (speakers).
    pub(crate) sent: AtomicU64,
}

impl Seen {
    pub(crate) fn received(&self, ssrc: u32) -> Vec<u64> {
        self.packets.lock().unwrap().get(&ssrc).cloned().unwrap_or_default()
    }
}

/// One client transport, not yet running.
pub(crate) struct Client {
    pub(crate) transport: TransportId,
    pub(crate) worker: usize,
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    /// What a speaker sends: SSRC, MID and RFC 6464 level.
    speak: Option<(u32, Mid, i8)>,
}

/// A running client: its counters, and the switches of its task.
pub(crate) struct Running {
    pub(crate) seen: Arc<Seen>,
    /// A speaker sends while this is set.
    pub(crate) speaking: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Creates and connects a transport of `owner` in `router`.
pub(crate) async fn client(router: &RouterHandle, owner: &PeerId, direction: Direction) -> anyhow::Result<Client> {
    let transport: TransportId = id();
    let created = router.create_transport(transport.clone(), owner.clone(), direction).await?;
    let worker = router.transport_worker(&transport).context("placed")?;
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let local = socket.local_addr()?;
    let server = SocketAddr::from((Ipv4Addr::LOCALHOST, created.ice_candidates[0].port));
    let mut exts = ExtensionMap::empty();
    exts.set(MID_ID, Extension::RtpMid);
    let level_id = if direction == Direction::Send { PRODUCER_LEVEL_ID } else { CONSUMER_LEVEL_ID };
    exts.set(level_id, Extension::AudioLevel);
    let pt = if direction == Direction::Send { PRODUCER_PT } else { 100 };
    let mut config = RtcConfig::new()
        .set_rtp_mode(true)
        .set_crypto_provider(dspeak_media::crypto_provider())
        .clear_codecs()
        .set_extension_map(exts);
    config.codec_config().add_config(
        Pt::from(pt),
        None,
        Codec::Opus,
        Frequency::FORTY_EIGHT_KHZ,
        Some(2),
        FormatParams { use_inband_fec: Some(true), ..Default::default() },
    );
    let now = Instant::now();
    let mut rtc = config.build(now);
    rtc.add_local_candidate(Candidate::host(local, "udp")?);
    rtc.add_remote_candidate(Candidate::host(server, "udp")?);
    let sha256 = created.dtls_parameters.fingerprints.iter().find(|f| f.algorithm == FingerprintAlgorithm::Sha256);
    let sha256 = sha256.context("sha-256 fingerprint")?;
    let mut api = rtc.direct_api();
    api.set_remote_ice_credentials(str0m::IceCreds {
        ufrag: created.ice_parameters.username_fragment.clone(),
        pass: created.ice_parameters.password.clone(),
    });
    api.set_ice_controlling(true);
    let bytes = sha256.value.split(':').map(|h| u8::from_str_radix(h, 16)).collect::<Result<Vec<u8>, _>>()?;
    api.set_remote_fingerprint(Fingerprint { hash_func: "sha-256".into(), bytes });
    api.start_dtls(true)?;
    let ours = api.local_dtls_fingerprint().clone();
    let value = ours.bytes.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":");
    let dtls = DtlsParameters {
        role: DtlsRole::Client,
        fingerprints: vec![DtlsFingerprint { algorithm: FingerprintAlgorithm::Sha256, value }],
    };
    router.connect(transport.clone(), owner.clone(), dtls).await?;
    Ok(Client { transport, worker, rtc, socket, local, speak: None })
}

impl Client {
    /// Produces pymediasoup's Opus stream with SSRC `ssrc`, sending RFC 6464 `level`.
    pub(crate) async fn produce(
        &mut self,
        router: &RouterHandle,
        owner: &PeerId,
        ssrc: u32,
        level: i8,
    ) -> anyhow::Result<ProducerId> {
        let mut rtp: RtpParameters = serde_json::from_value(fixture("produce.params.json")["rtpParameters"].clone())?;
        rtp.encodings[0].ssrc = Some(ssrc);
        let mid = Mid::from(rtp.mid.as_deref().context("mid")?);
        let mut api = self.rtc.direct_api();
        api.declare_media(mid, MediaKind::Audio);
        api.declare_stream_tx(Ssrc::from(ssrc), None, mid, None);
        let producer: ProducerId = id();
        router.produce(producer.clone(), self.transport.clone(), owner.clone(), Kind::Audio, &rtp).await?;
        self.speak = Some((ssrc, mid, level));
        Ok(producer)
    }

    /// Consumes `producer` (resumed at once); returns the consumer and its SSRC.
    pub(crate) async fn consume(
        &mut self,
        router: &RouterHandle,
        owner: &PeerId,
        producer: &ProducerId,
    ) -> anyhow::Result<(ConsumerId, u32)> {
        let caps: RtpCapabilities = serde_json::from_value(fixture("consume.params.json")["rtpCapabilities"].clone())?;
        let consumer: ConsumerId = id();
        let consumed =
            router.consume(consumer.clone(), self.transport.clone(), owner.clone(), producer.clone(), caps).await?;
        let ssrc = consumed.rtp_parameters.encodings[0].ssrc.context("ssrc")?;
        let mid = Mid::from(consumed.rtp_parameters.mid.as_deref().context("mid")?);
        let mut api = self.rtc.direct_api();
        api.declare_media(mid, MediaKind::Audio);
        api.expect_stream_rx(Ssrc::from(ssrc), None, mid, None).suppress_nack(true);
        router.set_consumer_paused(consumer.clone(), owner.clone(), false).await?;
        Ok((consumer, ssrc))
    }

    /// Runs the client on its own task.
    pub(crate) fn run(self) -> Running {
        let seen = Arc::new(Seen::default());
        let speaking = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        tokio::spawn(drive(self, seen.clone(), speaking.clone(), stop.clone()));
        Running { seen, speaking, stop }
    }
}

async fn drive(mut c: Client, seen: Arc<Seen>, speaking: Arc<AtomicBool>, stop: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 2048];
    let mut next_send = tokio::time::Instant::now();
    let mut seq = 1000u64;
    let mut rtp_time = 0u32;
    let mut next_timeout = drain(&mut c.rtc, &c.socket, &seen, Instant::now()).await;
    while !stop.load(Ordering::Relaxed) {
        tokio::select! {
            r = c.socket.recv_from(&mut buf) => {
                let Ok((n, source)) = r else { continue };
                let now = Instant::now();
                if let Ok(receive) = Receive::new(Protocol::Udp, source, c.local, &buf[..n]) {
                    let _ = c.rtc.handle_input(Input::Receive(now, receive));
                }
                next_timeout = drain(&mut c.rtc, &c.socket, &seen, now).await;
            }
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(next_timeout)) => {
                let now = Instant::now();
                let _ = c.rtc.handle_input(Input::Timeout(now));
                next_timeout = drain(&mut c.rtc, &c.socket, &seen, now).await;
            }
            () = tokio::time::sleep_until(next_send), if c.speak.is_some() => {
                next_send += Duration::from_millis(20);
                let Some((ssrc, mid, level)) = c.speak else { continue };
                if !speaking.load(Ordering::Relaxed) || !seen.connected.load(Ordering::Relaxed) {
                    continue;
                }
                let now = Instant::now();
                let ext = ExtensionValues {
                    mid: Some(mid),
                    audio_level: Some(level),
                    voice_activity: Some(level > -127),
                    ..Default::default()
                };
                let payload = vec![0x5a; 100];
                if let Some(tx) = c.rtc.direct_api().stream_tx(&Ssrc::from(ssrc)) {
                    let write = RtpWrite::new(Pt::from(PRODUCER_PT), SeqNo::from(seq), rtp_time, now, payload);
                    tx.write_rtp(write.ext_vals(ext));
                    seen.sent.fetch_add(1, Ordering::Relaxed);
                }
                seq += 1;
                rtp_time = rtp_time.wrapping_add(960);
                let _ = c.rtc.handle_input(Input::Timeout(now));
                next_timeout = drain(&mut c.rtc, &c.socket, &seen, now).await;
            }
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}

/// Sends what str0m wants sent and records its events; returns its next deadline.
async fn drain(rtc: &mut Rtc, socket: &UdpSocket, seen: &Seen, now: Instant) -> Instant {
    loop {
        match rtc.poll_output() {
            Ok(Output::Timeout(t)) => return t.max(now),
            Ok(Output::Transmit(t)) => {
                let _ = socket.send_to(&t.contents, t.destination).await;
            }
            Ok(Output::Event(Event::Connected)) => seen.connected.store(true, Ordering::Relaxed),
            Ok(Output::Event(Event::RtpPacket(p))) => {
                let mut packets = seen.packets.lock().unwrap();
                packets.entry(*p.header.ssrc).or_default().push(*p.seq_no);
            }
            Ok(Output::Event(_)) => {}
            Err(_) => return now + Duration::from_secs(3600),
        }
    }
}

/// Waits until `check` holds, or fails after `secs` seconds with `what`.
pub(crate) async fn wait_for(what: &str, secs: u64, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
