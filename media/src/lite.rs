//! A listener transport after its handshake: what a receive-only transport keeps once
//! str0m's `Rtc` is dropped.
//!
//! A `recv` transport never receives media; once ICE and DTLS are done, all str0m did
//! for it was answer ICE checks, take the client's receiver reports and be ready to
//! repeat its last DTLS flight. [`Lite`] does those three with a few hundred bytes
//! instead of an `Rtc` (~37 KiB of heap once connected):
//!
//! - ICE-lite binding answers ([`stun_answer`]): XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY
//!   with our password, FINGERPRINT (RFC 8445 §7.3, RFC 8489). Consent, nomination and
//!   routing stay where they were: the worker verifies each check and the transport's
//!   remotes keep their times (RFC 7675).
//! - Incoming SRTCP ([`SrtcpReceiver`]): authenticated, decrypted and counted; what
//!   fails is dropped and counted. str0m had nothing to do with listeners' receiver
//!   reports either (a consumer's SSRC has no str0m stream), so no figure changes.
//! - The last DTLS flight ([`Flight`]): when we are the DTLS server, the client may
//!   not have our final flight (ChangeCipherSpec, Finished) when we are already
//!   connected; if that flight was lost it retransmits its own, and we send ours again
//!   (RFC 6347 §4.2.4). The first authenticated SRTCP packet proves the client has the
//!   keys, and the flight is freed. As the DTLS client, our Finished was answered by
//!   the server's before we connected, so there is nothing to repeat.
//!
//! DTLS records after the drop cannot be authenticated any more (their keys went with
//! the `Rtc`), so an alert is ignored: the transport ends with `closeTransport`, its
//! session, or consent expiry, as before.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::crypto::Sha1HmacProvider;
use str0m::ice::StunMessage;

use crate::srtp::SrtcpReceiver;

/// What a datagram is, by its first byte (RFC 7983).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// STUN: 0..=3.
    Stun,
    /// DTLS: 20..=63; the byte is the record's content type.
    Dtls(u8),
    /// RTCP: RTP version 2 with a payload type byte of 192..=223 (RFC 5761 §4).
    Rtcp,
    /// Anything else (RTP, TURN channel data, garbage).
    Other,
}

/// Classifies a datagram.
pub(crate) fn kind(data: &[u8]) -> Kind {
    match data.first() {
        Some(0..=3) => Kind::Stun,
        Some(&b @ 20..=63) => Kind::Dtls(b),
        Some(128..=191) if data.len() >= 8 && (192..=223).contains(&data[1]) => Kind::Rtcp,
        _ => Kind::Other,
    }
}

/// DTLS content types that carry a handshake (RFC 6347): a retransmitted flight.
const CHANGE_CIPHER_SPEC: u8 = 20;
const HANDSHAKE: u8 = 22;

/// How soon the saved flight may be sent again: a retransmitted client flight spans
/// several datagrams, and one answer per flight is enough.
const FLIGHT_RESEND_GAP: Duration = Duration::from_millis(250);

/// The DTLS datagrams of our last flight, recorded while str0m does the handshake.
#[derive(Debug, Default)]
pub(crate) struct Flight {
    datagrams: Vec<Box<[u8]>>,
    /// Whether the current drain already started a new flight.
    current: bool,
}

impl Flight {
    /// A drain of str0m's output starts: the next DTLS datagram begins a new flight.
    pub(crate) fn begin(&mut self) {
        self.current = false;
    }

    /// Records a datagram str0m sends, if it is DTLS.
    pub(crate) fn record(&mut self, data: &[u8]) {
        if !matches!(kind(data), Kind::Dtls(_)) {
            return;
        }
        if !self.current {
            self.datagrams.clear();
            self.current = true;
        }
        self.datagrams.push(data.into());
    }
}

/// Counts of what a client sent after the drop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LiteCounters {
    /// SRTCP packets authenticated and decrypted.
    pub(crate) rtcp: u64,
    /// SRTCP packets dropped: forged, garbled, replayed or too short.
    pub(crate) rtcp_rejected: u64,
    /// Datagrams ignored: DTLS records other than a retransmitted handshake, RTP.
    pub(crate) ignored: u64,
}

/// What a connected listener transport keeps instead of str0m's `Rtc`.
#[derive(Debug)]
pub(crate) struct Lite {
    srtcp: SrtcpReceiver,
    /// Our final DTLS flight, until the client shows it has the keys (`None` as the
    /// DTLS client, or once freed).
    flight: Option<Box<[Box<[u8]>]>>,
    flight_sent: Option<Instant>,
    pub(crate) counters: LiteCounters,
}

/// The largest SRTCP packet opened (a listener sends receiver reports, SDES, perhaps
/// a BYE: far less); a larger one is dropped.
const RTCP_MAX: usize = 1500;

thread_local! {
    /// Where one SRTCP packet is opened: one buffer per worker thread, not per
    /// transport.
    static SCRATCH: std::cell::RefCell<[u8; RTCP_MAX]> = const { std::cell::RefCell::new([0; RTCP_MAX]) };
}

/// What to do with a datagram on a lite transport.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reply<'a> {
    /// Nothing to send.
    None,
    /// Send one datagram back.
    Answer(Vec<u8>),
    /// Send our last DTLS flight again.
    Flight(&'a [Box<[u8]>]),
}

impl Lite {
    /// `repeats_flight`: whether we were the DTLS server, whose final flight may have
    /// to be sent again ([`Lite::keep_flight`]).
    pub(crate) fn new(srtcp: SrtcpReceiver, repeats_flight: bool) -> Lite {
        let flight = repeats_flight.then(Box::default);
        Lite { srtcp, flight, flight_sent: None, counters: LiteCounters::default() }
    }

    /// Keeps our last DTLS flight, when it may have to be repeated.
    pub(crate) fn keep_flight(&mut self, flight: Flight) {
        if self.flight.is_some() && !flight.datagrams.is_empty() {
            self.flight = Some(flight.datagrams.into_boxed_slice());
        } else {
            self.flight = None;
        }
    }

    /// Takes one datagram from the client at `source`: answers a binding request
    /// signed with `password`, opens SRTCP, repeats the final DTLS flight when the
    /// client retransmits its own.
    pub(crate) fn receive(
        &mut self,
        now: Instant,
        source: SocketAddr,
        data: &[u8],
        password: &str,
        hmac: &dyn Sha1HmacProvider,
    ) -> Reply<'_> {
        match kind(data) {
            Kind::Stun => match stun_answer(data, source, password, hmac) {
                Some(answer) => Reply::Answer(answer),
                None => {
                    self.counters.ignored += 1;
                    Reply::None
                }
            },
            Kind::Rtcp if data.len() <= RTCP_MAX => {
                let opened = SCRATCH.with_borrow_mut(|scratch| {
                    let buf = &mut scratch[..data.len()];
                    buf.copy_from_slice(data);
                    self.srtcp.open_rtcp(buf).map(|_| ())
                });
                match opened {
                    Ok(_) => {
                        self.counters.rtcp += 1;
                        // The client has the keys: it got our final flight.
                        self.flight = None;
                    }
                    Err(e) => {
                        tracing::trace!(error = %e, %source, "SRTCP dropped");
                        self.counters.rtcp_rejected += 1;
                    }
                }
                Reply::None
            }
            Kind::Rtcp => {
                self.counters.rtcp_rejected += 1;
                Reply::None
            }
            Kind::Dtls(CHANGE_CIPHER_SPEC | HANDSHAKE) => {
                let due = self.flight_sent.is_none_or(|at| now.saturating_duration_since(at) >= FLIGHT_RESEND_GAP);
                match &self.flight {
                    Some(flight) if due => {
                        self.flight_sent = Some(now);
                        Reply::Flight(flight)
                    }
                    _ => {
                        self.counters.ignored += 1;
                        Reply::None
                    }
                }
            }
            Kind::Dtls(_) | Kind::Other => {
                self.counters.ignored += 1;
                Reply::None
            }
        }
    }

    /// Whether the final DTLS flight is still kept.
    #[cfg(test)]
    pub(crate) fn keeps_flight(&self) -> bool {
        self.flight.is_some()
    }
}

/// The success answer to an ICE check signed with `password` (binding request,
/// MESSAGE-INTEGRITY verified), as an ICE-lite agent sends it: the client's address
/// as XOR-MAPPED-ADDRESS, signed with the same password, with a FINGERPRINT.
pub(crate) fn stun_answer(
    data: &[u8],
    source: SocketAddr,
    password: &str,
    hmac: &dyn Sha1HmacProvider,
) -> Option<Vec<u8>> {
    let message = StunMessage::parse(data).ok()?;
    let sign = |key: &[u8], parts: &[&[u8]]| hmac.sha1_hmac(key, parts);
    if !message.is_binding_request() || !message.verify(password.as_bytes(), sign) {
        return None;
    }
    // Header 20 + XOR-MAPPED-ADDRESS (IPv6) 24 + MESSAGE-INTEGRITY 24 + FINGERPRINT 8.
    let mut buf = vec![0; 96];
    let len =
        StunMessage::binding_reply(message.trans_id(), source).to_bytes(Some(password.as_bytes()), &mut buf, sign);
    buf.truncate(len.ok()?);
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::IceConnectionState;
    use str0m::ice::TransId;

    use crate::dtls::Identity;
    use crate::test_client::{Client, listener};
    use crate::transport::Transport;

    /// A listener transport connected to a str0m client (`dtls_client`: the client's
    /// DTLS role).
    fn connected(dtls_client: bool) -> (Transport, Client) {
        let identity = Identity::generate().unwrap();
        let start = Instant::now();
        let mut t = listener(&identity, start);
        let mut client = Client::new(&mut t, start, dtls_client);
        client.run(&mut t, |t, c| t.is_connected() && c.connected, |_, _| false);
        assert!(t.is_connected() && client.connected, "connected (client is DTLS client: {dtls_client})");
        (t, client)
    }

    /// Runs the pair for a simulated minute: the client (which gives up on a pair
    /// whose checks go unanswered) stays connected, and the transport's consent is
    /// fresh.
    fn stays_alive_for_a_minute(t: &mut Transport, client: &mut Client) {
        let until = client.now + Duration::from_secs(60);
        client.run_until(t, until);
        let alive = matches!(client.ice, IceConnectionState::Connected | IceConnectionState::Completed);
        assert!(alive, "the client's ICE state: {:?}", client.ice);
        assert!(t.destination(client.now).is_some(), "consent is fresh");
    }

    /// Chromium's case (it is the DTLS client, we the server) and aiortc's (the
    /// reverse): the `Rtc` goes once connected, and forwarded audio still reaches the
    /// client, sealed with the transport's keys.
    #[test]
    fn audio_arrives_after_the_rtc_is_dropped() {
        for dtls_client in [true, false] {
            let (t, mut client) = connected(dtls_client);
            assert!(t.is_lite(), "no Rtc once connected");
            assert_eq!(t.lite().unwrap().keeps_flight(), dtls_client, "a flight to repeat only as the server");
            client.expect(0x1234, "0");
            for seq in 1..=20 {
                client.receive(&Client::rtp_from(&t, 0x1234, "0", seq));
            }
            assert_eq!(client.rtp, 20, "every packet decrypted by the client");
        }
    }

    /// The client's consent checks (str0m sends one every few seconds and gives up on
    /// a pair that stops answering) are answered by the lite transport: after a
    /// minute the client is still connected and the transport still has a
    /// destination; without answers the client would have declared the pair dead.
    /// The client's receiver reports are opened and counted, and the first one frees
    /// our final DTLS flight.
    #[test]
    fn consent_checks_keep_a_lite_transport_alive_and_its_receiver_reports_are_read() {
        let (mut t, mut client) = connected(true);
        assert!(t.is_lite());
        client.expect(0x1234, "0");
        client.receive(&Client::rtp_from(&t, 0x1234, "0", 1));
        stays_alive_for_a_minute(&mut t, &mut client);
        assert!(matches!(t.ice_state(client.now), IceConnectionState::Connected | IceConnectionState::Completed));
        let counters = t.lite_counters().unwrap();
        assert!(counters.rtcp >= 10, "receiver reports opened: {counters:?}");
        assert_eq!(counters.rtcp_rejected, 0);
        assert!(!t.lite().unwrap().keeps_flight(), "the client's SRTCP freed our flight");
        // Once the client is gone for the consent timeout, nothing more goes there.
        let later = client.now + crate::config::CONSENT_TIMEOUT;
        assert_eq!(t.destination(later), None);
        assert_eq!(t.ice_state(later), IceConnectionState::Disconnected);
    }

    /// A forged or garbled SRTCP packet, and a replayed one, are dropped and counted;
    /// the real ones keep being accepted.
    #[test]
    fn forged_garbled_and_replayed_srtcp_is_dropped_and_counted() {
        let (mut t, mut client) = connected(false);
        client.expect(0x1234, "0");
        client.receive(&Client::rtp_from(&t, 0x1234, "0", 1));
        let until = client.now + Duration::from_secs(3);
        client.run_until(&mut t, until);
        let before = t.lite_counters().unwrap();
        assert!(before.rtcp >= 1, "{before:?}");
        let report = client.sent.iter().rev().find(|d| kind(d) == Kind::Rtcp).unwrap().clone();
        let mut out = Vec::new();
        client.deliver(&mut t, &report, &mut out);
        let mut garbled = report.clone();
        garbled[10] ^= 1;
        client.deliver(&mut t, &garbled, &mut out);
        let mut forged = report.clone();
        let n = forged.len();
        forged[n - 1] ^= 0x80;
        client.deliver(&mut t, &forged, &mut out);
        client.deliver(&mut t, &report[..12], &mut out);
        let after = t.lite_counters().unwrap();
        assert_eq!(after.rtcp, before.rtcp, "nothing more accepted");
        assert_eq!(after.rtcp_rejected, before.rtcp_rejected + 4, "replayed, garbled, forged, short");
        assert!(out.is_empty(), "no answer to any of them");
        let until = client.now + Duration::from_secs(3);
        client.run_until(&mut t, until);
        assert!(t.lite_counters().unwrap().rtcp > after.rtcp, "the client's next reports are accepted");
    }

    /// ICE restart on a lite transport: checks signed with the new password are
    /// answered, the old password's are not, and the client, told the new
    /// credentials, stays connected.
    #[test]
    fn ice_restart_on_a_lite_transport() {
        let (mut t, mut client) = connected(true);
        assert!(t.is_lite());
        let old = t.ice_parameters().password;
        let ice = t.restart_ice(&mut crate::transport::Sink { out: &mut Vec::new(), rtp: &mut Vec::new() });
        assert_ne!(ice.password, old);
        let hmac = str0m::crypto::from_feature_flags().sha1_hmac_provider;
        let sign = |key: &[u8], parts: &[&[u8]]| hmac.sha1_hmac(key, parts);
        let check = |password: &str| {
            let username = format!("{}:client", ice.username_fragment);
            let request = StunMessage::binding_request(&username, TransId::new(), true, 7, 100, true);
            let mut buf = vec![0; 200];
            let n = request.to_bytes(Some(password.as_bytes()), &mut buf, sign).unwrap();
            buf.truncate(n);
            buf
        };
        let mut out = Vec::new();
        client.deliver(&mut t, &check(&old), &mut out);
        assert!(out.is_empty(), "the old password no longer works");
        client.deliver(&mut t, &check(&ice.password), &mut out);
        assert_eq!(out.len(), 1, "answered");
        assert!(StunMessage::parse(&out[0].data).unwrap().verify(ice.password.as_bytes(), sign));
        client.rtc.direct_api().set_remote_ice_credentials(str0m::IceCreds {
            ufrag: ice.username_fragment.clone(),
            pass: ice.password.clone(),
        });
        stays_alive_for_a_minute(&mut t, &mut client);
    }

    /// Our final DTLS flight (we are the server) is lost: the client retransmits its
    /// own, and the lite transport, which no longer has str0m's DTLS, sends the saved
    /// flight again; the client connects.
    #[test]
    fn a_lost_final_flight_is_sent_again_after_the_drop() {
        let identity = Identity::generate().unwrap();
        let start = Instant::now();
        let mut t = listener(&identity, start);
        let mut client = Client::new(&mut t, start, true);
        // The first flight-sized batch of DTLS the lite transport sends is lost.
        let mut to_lose: Option<usize> = None;
        client.run(
            &mut t,
            |t, c| t.is_lite() && c.connected,
            |t, data| {
                if !t.is_lite() || !matches!(kind(data), Kind::Dtls(_)) {
                    return false;
                }
                let left =
                    to_lose.get_or_insert_with(|| t.lite().and_then(|l| l.flight.as_ref()).map_or(0, |f| f.len()));
                let lose = *left > 0;
                *left = left.saturating_sub(1);
                lose
            },
        );
        assert_eq!(to_lose, Some(0), "the final flight was lost, then sent again");
        assert!(t.is_lite());
        assert!(client.connected, "the client connected after the flight was sent again");
    }

    #[test]
    fn datagrams_are_told_apart_by_their_first_byte() {
        assert_eq!(kind(&[0, 1, 0, 0]), Kind::Stun);
        assert_eq!(kind(&[22, 254, 253]), Kind::Dtls(22));
        assert_eq!(kind(&[0x81, 201, 0, 7, 1, 2, 3, 4]), Kind::Rtcp);
        assert_eq!(kind(&[0x80, 100, 0, 7, 1, 2, 3, 4]), Kind::Other, "RTP");
        assert_eq!(kind(&[0x81, 201]), Kind::Other, "too short for RTCP");
        assert_eq!(kind(&[]), Kind::Other);
    }

    /// A check signed with our password gets a success answer that a client can
    /// verify with the same password, carrying its own address; a check signed
    /// otherwise, or a non-request, gets nothing.
    #[test]
    fn checks_signed_with_our_password_are_answered() {
        let hmac = str0m::crypto::from_feature_flags().sha1_hmac_provider;
        let sign = |key: &[u8], parts: &[&[u8]]| hmac.sha1_hmac(key, parts);
        let check = |password: &str| {
            let request = StunMessage::binding_request("server:client", TransId::new(), true, 7, 100, false);
            let mut buf = vec![0; 200];
            let n = request.to_bytes(Some(password.as_bytes()), &mut buf, sign).unwrap();
            buf.truncate(n);
            buf
        };
        for source in ["192.0.2.7:5000", "[2001:db8::7]:6000"] {
            let source: SocketAddr = source.parse().unwrap();
            let answer = stun_answer(&check("ours"), source, "ours", hmac).unwrap();
            let parsed = StunMessage::parse(&answer).unwrap();
            assert!(parsed.is_successful_binding_response());
            assert!(parsed.verify(b"ours", sign), "signed with our password");
            assert_eq!(parsed.mapped_address(), Some(source));
            assert_eq!(stun_answer(&check("theirs"), source, "ours", hmac), None);
            assert_eq!(stun_answer(&answer, source, "ours", hmac), None, "not a request");
        }
    }

    #[test]
    fn a_flight_is_the_dtls_of_the_last_drain_that_sent_any() {
        let mut flight = Flight::default();
        flight.begin();
        flight.record(&[22, 1]);
        flight.record(&[22, 2]);
        flight.begin();
        flight.record(&[0, 1]);
        assert_eq!(flight.datagrams.len(), 2, "STUN is not part of it");
        flight.begin();
        flight.record(&[20, 3]);
        assert_eq!(&flight.datagrams[..], &[Box::from(&[20u8, 3][..])]);
    }
}

/// The engine over real UDP sockets on loopback: a str0m speaker and a str0m
/// listener (as the load tool's peers), the listener's transport lite once connected.
#[cfg(test)]
mod over_udp {
    use std::net::UdpSocket;
    use std::time::{Duration, Instant};

    use dspeak_schema::media::{CreateTransportResult, Direction};
    use dspeak_schema::ortc::{
        DtlsFingerprint, DtlsParameters, DtlsRole, FingerprintAlgorithm, MediaKind as Kind, RtpCapabilities,
        RtpParameters,
    };
    use dspeak_schema::{ConsumerId, PeerId, ProducerId, TransportId};
    use str0m::media::{MediaKind, Mid, Pt};
    use str0m::net::{Protocol, Receive};
    use str0m::rtp::{ExtensionValues, SeqNo, Ssrc};
    use str0m::{Event, Input, Output, Rtc};

    use crate::RouterHandle;
    use crate::test_client::pymediasoup as fixture;

    /// A str0m peer on its own UDP socket.
    struct Peer {
        rtc: Rtc,
        socket: UdpSocket,
        connected: bool,
        rtp: usize,
        /// The last SRTCP datagram it sent.
        last_rtcp: Option<Vec<u8>>,
    }

    impl Peer {
        /// A peer for `created` (payload type `pt`, `mid` on extension id 1); returns
        /// the `connectTransport` DTLS parameters for it.
        fn new(created: &CreateTransportResult, pt: u8, dtls_client: bool) -> (Peer, DtlsParameters) {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            let local = socket.local_addr().unwrap();
            let candidate = &created.ice_candidates[0];
            let server = format!("{}:{}", candidate.ip, candidate.port).parse().unwrap();
            let ice = &created.ice_parameters;
            let credentials = (ice.username_fragment.as_str(), ice.password.as_str());
            let (rtc, digest) =
                crate::test_client::str0m_client(pt, Instant::now(), local, server, credentials, dtls_client);
            let fingerprint =
                DtlsFingerprint { algorithm: FingerprintAlgorithm::Sha256, value: crate::dtls::to_hex(&digest) };
            let role = if dtls_client { DtlsRole::Client } else { DtlsRole::Server };
            let peer = Peer { rtc, socket, connected: false, rtp: 0, last_rtcp: None };
            (peer, DtlsParameters { role, fingerprints: vec![fingerprint] })
        }

        /// Sends and receives until `until`.
        fn pump(&mut self, until: Instant) {
            let local = self.socket.local_addr().unwrap();
            let mut buf = vec![0u8; 2000];
            loop {
                let timeout = match self.rtc.poll_output().unwrap() {
                    Output::Transmit(t) => {
                        if super::kind(&t.contents) == super::Kind::Rtcp {
                            self.last_rtcp = Some(t.contents.to_vec());
                        }
                        self.socket.send_to(&t.contents, t.destination).unwrap();
                        continue;
                    }
                    Output::Event(Event::Connected) => {
                        self.connected = true;
                        continue;
                    }
                    Output::Event(Event::RtpPacket(_)) => {
                        self.rtp += 1;
                        continue;
                    }
                    Output::Event(_) => continue,
                    Output::Timeout(t) => t,
                };
                let now = Instant::now();
                if now >= until {
                    return;
                }
                let wait = timeout.min(until).saturating_duration_since(now).max(Duration::from_millis(1));
                self.socket.set_read_timeout(Some(wait)).unwrap();
                let input = match self.socket.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        let receive = Receive::new(Protocol::Udp, from, local, &buf[..n]).unwrap();
                        self.rtc.handle_input(Input::Receive(Instant::now(), receive))
                    }
                    Err(_) => self.rtc.handle_input(Input::Timeout(Instant::now())),
                };
                input.unwrap();
            }
        }
    }

    async fn lite_counters(router: &RouterHandle, id: &str) -> Option<super::LiteCounters> {
        router.lite_counters(TransportId::from(id)).await
    }

    /// Audio from a speaker reaches a listener whose transport has dropped its `Rtc`,
    /// the listener's receiver reports are opened and counted, and a garbled copy of
    /// one sent from the listener's own address is dropped and counted (by the
    /// transport, and by its worker as the drop reason `srtcp_rejected`).
    #[tokio::test]
    async fn audio_reaches_a_lite_listener_over_udp_and_its_reports_are_read() {
        let engine = crate::test_client::engine(1);
        let (router, _events) = engine.router();
        let (a, b) = (PeerId::from("a"), PeerId::from("b"));
        let send = router.create_transport(TransportId::from("s"), a.clone(), Direction::Send).await.unwrap();
        let recv = router.create_transport(TransportId::from("l"), b.clone(), Direction::Recv).await.unwrap();
        let rtp: RtpParameters = serde_json::from_value(fixture("produce.params.json", "rtpParameters")).unwrap();
        let caps: RtpCapabilities = serde_json::from_value(fixture("consume.params.json", "rtpCapabilities")).unwrap();
        let (pt, ssrc) = (rtp.codecs[0].payload_type, rtp.encodings[0].ssrc.unwrap());
        let (mut speaker, dtls) = Peer::new(&send, pt, true);
        router.connect(send.id.clone(), a.clone(), dtls).await.unwrap();
        let (mut listener, dtls) = Peer::new(&recv, crate::router::OPUS_PT, false);
        router.connect(recv.id.clone(), b.clone(), dtls).await.unwrap();
        let producer = ProducerId::from("p");
        router.produce(producer.clone(), send.id.clone(), a.clone(), Kind::Audio, &rtp).await.unwrap();
        let consumer = ConsumerId::from("c");
        let consumed = router.consume(consumer.clone(), recv.id.clone(), b.clone(), producer, caps).await.unwrap();
        let (their_ssrc, their_mid) = (consumed.rtp_parameters.encodings[0].ssrc.unwrap(), consumed.rtp_parameters.mid);
        router.set_consumer_paused(consumer, b.clone(), false).await.unwrap();
        let mid = Mid::from(rtp.mid.as_deref().unwrap());
        let mut api = speaker.rtc.direct_api();
        api.declare_media(mid, MediaKind::Audio);
        api.declare_stream_tx(Ssrc::from(ssrc), None, mid, None);
        let their_mid = Mid::from(their_mid.as_deref().unwrap());
        let mut api = listener.rtc.direct_api();
        api.declare_media(their_mid, MediaKind::Audio);
        api.expect_stream_rx(Ssrc::from(their_ssrc), None, their_mid, None).suppress_nack(true);
        let start = Instant::now();
        let mut seq = 0u64;
        while start.elapsed() < Duration::from_secs(10) && (listener.rtp < 50 || listener.last_rtcp.is_none()) {
            if speaker.connected {
                seq += 1;
                let now = Instant::now();
                let values = ExtensionValues { mid: Some(mid), ..Default::default() };
                let mut api = speaker.rtc.direct_api();
                let tx = api.stream_tx(&Ssrc::from(ssrc)).unwrap();
                let write =
                    str0m::rtp::RtpWrite::new(Pt::from(pt), SeqNo::from(seq), (seq * 960) as u32, now, vec![0x5A; 40]);
                tx.write_rtp(write.ext_vals(values));
            }
            let slice = Instant::now() + Duration::from_millis(10);
            speaker.pump(slice);
            listener.pump(slice + Duration::from_millis(10));
        }
        assert!(listener.connected, "the listener connected");
        assert!(listener.rtp >= 50, "audio reached the listener: {} packets", listener.rtp);
        let counters = lite_counters(&router, "l").await.expect("the listener's transport is lite");
        assert!(counters.rtcp >= 1, "its receiver reports were opened: {counters:?}");
        assert_eq!(counters.rtcp_rejected, 0);
        assert_eq!(lite_counters(&router, "s").await, None, "a send transport keeps its Rtc");
        let mut garbled = listener.last_rtcp.clone().unwrap();
        garbled[9] ^= 1;
        let server = format!("{}:{}", recv.ice_candidates[0].ip, recv.ice_candidates[0].port);
        listener.socket.send_to(&garbled, server).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while lite_counters(&router, "l").await.unwrap().rtcp_rejected == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(lite_counters(&router, "l").await.unwrap().rtcp_rejected, 1, "the garbled report was dropped");
        // The worker counts it too, as a drop reason (published once per wake-up).
        let srtcp_rejected = || engine.workers()[0].traffic.dropped[crate::DropReason::SrtcpRejected as usize];
        while srtcp_rejected() == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(srtcp_rejected(), 1, "counted as `srtcp_rejected`");
        engine.stop();
    }
}
