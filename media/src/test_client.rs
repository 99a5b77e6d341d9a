//! A real str0m client for a transport, driven in the test's thread: ICE (controlling,
//! with consent checks), DTLS, SRTP; the datagrams between them go through what the
//! worker does (a signed check teaches the transport the client's ufrag and address).
//! Its allocations are not counted by `allocation-counter`.
#![cfg(test)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dspeak_schema::media::Direction;
use dspeak_schema::ortc::DtlsRole;
use dspeak_schema::{PeerId, TransportId};
use str0m::config::Fingerprint;
use str0m::format::{Codec, FormatParams};
use str0m::ice::StunMessage;
use str0m::media::{Frequency, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{Extension, ExtensionMap, Ssrc};
use str0m::{Candidate, Event, IceConnectionState, IceCreds, Input, Output, Rtc, RtcConfig};

use crate::dtls::{Expected, Identity};
use crate::router::{MID_EXT_ID, OPUS_PT};
use crate::transport::{Sink, Transport};
use crate::udp::{Outgoing, Route};

/// A field of what pymediasoup sent real mediasoup (`fixtures/reference`).
pub(crate) fn pymediasoup(name: &str, field: &str) -> serde_json::Value {
    let path = format!("{}/../fixtures/reference/pymediasoup-1.5-aiortc-1.16/{name}", env!("CARGO_MANIFEST_DIR"));
    let value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    value[field].clone()
}

/// An engine of `workers` workers on loopback, UDP only.
pub(crate) fn engine(workers: usize) -> crate::Engine {
    let config = crate::EngineConfig {
        workers,
        listen_ip: std::net::Ipv4Addr::LOCALHOST.into(),
        tcp: false,
        ..crate::EngineConfig::default()
    };
    crate::Engine::start(&config).unwrap()
}

/// Runs `f` without counting its allocations.
pub(crate) fn opt_out<R>(f: impl FnOnce() -> R) -> R {
    let mut r = None;
    allocation_counter::opt_out(|| r = Some(f()));
    r.expect("opt_out ran the closure")
}

/// A new listener transport on 127.0.0.1:40000.
pub(crate) fn listener(identity: &Identity, now: Instant) -> Transport {
    let locals: Arc<[SocketAddr]> = vec!["127.0.0.1:40000".parse().unwrap()].into();
    Transport::new(TransportId::from("t"), PeerId::from("p"), Direction::Recv, identity, &locals, true, false, now)
        .unwrap()
}

/// A str0m client in RTP mode (Opus on `pt`, `mid` on the router's id, receiver
/// reports every 300 ms) at `local`, ICE controlling towards `server` with the
/// server's ICE `credentials`, DTLS started in the given role; with its certificate's
/// sha-256 digest.
pub(crate) fn str0m_client(
    pt: u8,
    now: Instant,
    local: SocketAddr,
    server: SocketAddr,
    credentials: (&str, &str),
    dtls_client: bool,
) -> (Rtc, Vec<u8>) {
    let mut exts = ExtensionMap::empty();
    exts.set(MID_EXT_ID, Extension::RtpMid);
    let mut config = RtcConfig::new()
        .set_rtp_mode(true)
        .set_fingerprint_verification(false)
        .clear_codecs()
        .set_extension_map(exts)
        .set_rtcp_report_interval_audio(Duration::from_millis(300));
    let opus = FormatParams::default();
    config.codec_config().add_config(Pt::from(pt), None, Codec::Opus, Frequency::FORTY_EIGHT_KHZ, Some(2), opus);
    let mut rtc = config.build(now);
    rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
    rtc.add_remote_candidate(Candidate::host(server, "udp").unwrap());
    let mut api = rtc.direct_api();
    api.set_ice_controlling(true);
    let (ufrag, pass) = credentials;
    api.set_remote_ice_credentials(IceCreds { ufrag: ufrag.into(), pass: pass.into() });
    api.set_remote_fingerprint(Fingerprint { hash_func: "sha-256".into(), bytes: vec![0; 32] });
    api.start_dtls(dtls_client).unwrap();
    let digest = api.local_dtls_fingerprint().bytes.clone();
    (rtc, digest)
}

/// The client's side.
pub(crate) struct Client {
    pub(crate) rtc: Rtc,
    pub(crate) addr: SocketAddr,
    server: SocketAddr,
    pub(crate) now: Instant,
    pub(crate) connected: bool,
    pub(crate) ice: IceConnectionState,
    /// RTP packets str0m decrypted for the client.
    pub(crate) rtp: usize,
    /// What the client sent, in order (the tests replay and garble some).
    pub(crate) sent: Vec<Vec<u8>>,
}

impl Client {
    /// A client for `t` that calls `connectTransport` at once (`dtls_client`: its
    /// DTLS role is client, as Chromium's; else server, as aiortc's).
    pub(crate) fn new(t: &mut Transport, now: Instant, dtls_client: bool) -> Client {
        let server: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let addr: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let (rtc, fingerprint) = opt_out(|| {
            let ice = t.ice_parameters();
            str0m_client(OPUS_PT, now, addr, server, (&ice.username_fragment, &ice.password), dtls_client)
        });
        let expected = Expected { algorithm: dspeak_schema::ortc::FingerprintAlgorithm::Sha256, digest: fingerprint };
        let role = if dtls_client { DtlsRole::Client } else { DtlsRole::Server };
        let (mut out, mut rtp) = (Vec::new(), Vec::new());
        t.connect(expected, role, &mut Sink { out: &mut out, rtp: &mut rtp }).unwrap();
        let mut client =
            Client { rtc, addr, server, now, connected: false, ice: IceConnectionState::New, rtp: 0, sent: Vec::new() };
        client.hand_over(t, out, |_, _| false);
        client
    }

    /// Delivers datagrams from the transport, but those `lose` drops.
    fn hand_over(&mut self, t: &Transport, out: Vec<Outgoing>, mut lose: impl FnMut(&Transport, &[u8]) -> bool) {
        for o in out {
            if lose(t, &o.data) {
                continue;
            }
            opt_out(|| {
                let receive = Receive::new(Protocol::Udp, self.server, self.addr, &o.data).unwrap();
                self.rtc.handle_input(Input::Receive(self.now, receive)).unwrap();
            });
        }
    }

    /// One datagram from the client to `t`, as the worker routes it.
    pub(crate) fn deliver(&self, t: &mut Transport, data: &[u8], out: &mut Vec<Outgoing>) {
        if let Ok(m) = StunMessage::parse(data)
            && m.is_binding_request()
        {
            let Some((_, client_ufrag)) = m.split_username() else { return };
            if !t.verify_stun(&m) {
                return;
            }
            t.learn_remote_ufrag(client_ufrag);
            t.learn_remote(self.addr, Route::Udp(None), self.now, m.use_candidate());
        }
        let mut rtp = Vec::new();
        t.receive(self.now, Protocol::Udp, self.addr, None, data, &mut Sink { out, rtp: &mut rtp });
    }

    /// What the client wants to send now, and when it next wants a timeout.
    fn poll(&mut self) -> (Vec<Vec<u8>>, Instant) {
        opt_out(|| {
            let mut sent = Vec::new();
            loop {
                match self.rtc.poll_output().unwrap() {
                    Output::Transmit(x) => sent.push(x.contents.to_vec()),
                    Output::Timeout(at) => return (sent, at),
                    Output::Event(Event::Connected) => self.connected = true,
                    Output::Event(Event::IceConnectionStateChange(s)) => self.ice = s,
                    Output::Event(Event::RtpPacket(_)) => self.rtp += 1,
                    Output::Event(_) => {}
                }
            }
        })
    }

    /// Exchanges datagrams and advances time until `done` or 10,000 rounds;
    /// datagrams from `t` that `lose` picks (seeing `t` after it sent them) are lost.
    pub(crate) fn run(
        &mut self,
        t: &mut Transport,
        mut done: impl FnMut(&Transport, &Client) -> bool,
        mut lose: impl FnMut(&Transport, &[u8]) -> bool,
    ) {
        for _ in 0..10_000 {
            if done(t, self) {
                return;
            }
            let (sent, client_timeout) = self.poll();
            let mut out = Vec::new();
            for data in &sent {
                self.deliver(t, data, &mut out);
            }
            opt_out(|| self.sent.extend(sent));
            let moved = !out.is_empty();
            self.hand_over(t, out, &mut lose);
            if !moved && !done(t, self) {
                self.now = client_timeout.min(t.next_timeout).max(self.now + Duration::from_millis(1));
                opt_out(|| self.rtc.handle_input(Input::Timeout(self.now)).unwrap());
                let mut out = Vec::new();
                t.timeout(self.now, &mut Sink { out: &mut out, rtp: &mut Vec::new() });
                self.hand_over(t, out, &mut lose);
            }
        }
    }

    /// Runs until simulated time reaches `until`.
    pub(crate) fn run_until(&mut self, t: &mut Transport, until: Instant) {
        self.run(t, |_, c| c.now >= until, |_, _| false);
    }

    /// The consumer packet `seq` on `ssrc` with MID `mid`, sealed with `t`'s keys as
    /// the worker seals it.
    pub(crate) fn rtp_from(t: &Transport, ssrc: u32, mid: &str, seq: u16) -> Vec<u8> {
        let header = crate::egress::RtpHeader::new(OPUS_PT, ssrc, Some((MID_EXT_ID, mid)), None);
        let mut buf = vec![0u8; 200];
        let n = header.write(&mut buf, seq, u32::from(seq) * 960, false, None);
        buf[n..n + 40].fill(0x5A);
        let srtp = t.out.srtp().expect("connected");
        let sealed = srtp.seal_rtp(&mut buf, n + 40, n, u64::from(seq)).unwrap();
        buf.truncate(sealed);
        buf
    }

    /// Lets the client expect a consumer's stream.
    pub(crate) fn expect(&mut self, ssrc: u32, mid: &str) {
        let mut api = self.rtc.direct_api();
        api.declare_media(Mid::from(mid), MediaKind::Audio);
        api.expect_stream_rx(Ssrc::from(ssrc), None, Mid::from(mid), None).suppress_nack(true);
    }

    /// Hands a datagram the worker sent to the client.
    pub(crate) fn receive(&mut self, data: &[u8]) {
        let receive = Receive::new(Protocol::Udp, self.server, self.addr, data).unwrap();
        self.rtc.handle_input(Input::Receive(self.now, receive)).unwrap();
        self.poll();
    }
}
