//! One WebRTC transport: a str0m `Rtc` in ICE-lite mode, driven through its direct API.
//!
//! The worker feeds it datagrams and timeouts; [`Transport::drain`] sends what str0m
//! wants sent and hands received RTP back to the worker for forwarding. The peer's
//! DTLS certificate is checked against the client's fingerprint on `Connected`,
//! before any RTP is let through; the DTLS keying material then becomes the
//! transport's [`SrtpSender`], with which the worker seals forwarded RTP and its own
//! sender reports itself (str0m never sends RTP on a consumer's SSRC: it has no
//! stream for it).
//!
//! Consent freshness (RFC 7675, as an ICE-lite agent sees it): a client address that
//! has sent no valid ICE check for the consent timeout is not sent to any more.
//!
//! A listener (`recv`) transport drops its `Rtc` as soon as DTLS is connected and
//! verified, and goes on with [`Lite`] (ICE answers, SRTCP in, the last DTLS flight):
//! str0m is only needed for the handshake there (`crate::lite`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use crate::dtls::{self, Expected, Identity, PeerCertSlot};
use crate::error::MediaError;
use crate::lite::{Flight, Lite, Reply};
use crate::router::{MAX_ONE_BYTE_EXT_ID, MID_EXT_ID, OPUS_CLOCK_RATE, OPUS_PT, PRODUCER_PTS};
use crate::speaker::LevelCapture;
use crate::srtp::{Profile, SrtcpReceiver, SrtpSender};
use crate::udp::{Outgoing, Route};
use dspeak_schema::media::Direction;
use dspeak_schema::ortc::{DtlsRole, IceParameters};
use dspeak_schema::{PeerId, ProducerId, TransportId};
use rustc_hash::FxHashMap;
use str0m::config::Fingerprint;
use str0m::crypto::Sha1HmacProvider;
use str0m::format::{Codec, FormatParams};
use str0m::ice::StunMessage;
use str0m::media::{Frequency, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::rtp::{Extension, ExtensionMap, RtpPacket, Ssrc};
use str0m::{Candidate, Event, IceConnectionState, IceCreds, Input, Output, Rtc, RtcConfig};

/// DTLS progress of a transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DtlsState {
    /// `connectTransport` not called yet.
    New,
    /// Handshake under way.
    Connecting,
    /// Handshake done and the peer certificate verified.
    Connected,
    /// Handshake failed, fingerprint mismatch, or the peer closed.
    Failed,
}

impl DtlsState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DtlsState::New => "new",
            DtlsState::Connecting => "connecting",
            DtlsState::Connected => "connected",
            DtlsState::Failed => "failed",
        }
    }
}

/// Datagram and byte counters of a transport.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TransportCounters {
    pub(crate) packets_received: u64,
    pub(crate) packets_sent: u64,
    pub(crate) bytes_received: u64,
    pub(crate) bytes_sent: u64,
}

impl TransportCounters {
    /// Counts one packet of `bytes` sent on the transport.
    pub(crate) fn count_sent(&mut self, bytes: usize) {
        self.packets_sent += 1;
        self.bytes_sent += bytes as u64;
    }
}

/// What sending to the client needs, kept together in one part of the transport's slab
/// entry: the fan-out reads it for every packet to every consumer on this transport,
/// so it costs one or two cache lines instead of a walk through the transport (and
/// its list of client addresses) per consumer.
#[derive(Debug, Default)]
pub(crate) struct Outbound {
    /// Seals what the worker sends itself; set once DTLS is connected and verified,
    /// and cleared when DTLS fails: `Some` means media may flow.
    srtp: Option<SrtpSender>,
    /// The client address media goes to and until when its consent holds, cached from
    /// the transport's `remotes` (recomputed when they change or the consent runs out).
    to: Option<(SocketAddr, Route, Instant)>,
    /// The SRTCP index of the next RTCP packet the worker sends (31 bits).
    pub(crate) srtcp_index: u32,
    pub(crate) counters: TransportCounters,
}

impl Outbound {
    /// The sealing context (`None` until connected, or after DTLS failed).
    #[cfg(test)]
    pub(crate) fn srtp(&self) -> Option<&SrtpSender> {
        self.srtp.as_ref()
    }

    /// Loads the fields a send reads (see `worker::forward::warm_up`).
    #[inline]
    pub(crate) fn warm_up(&self) {
        std::hint::black_box((self.srtp.is_some(), self.to.map(|(_, _, until)| until), self.counters.packets_sent));
    }
}

/// One send to a connected client with consent ([`Transport::outbound`]): the sealing
/// context, the SRTCP index and the counters to update, and where the packet goes.
pub(crate) struct Sending<'a> {
    pub(crate) srtp: &'a SrtpSender,
    /// The SRTCP index of the next RTCP packet the worker sends (31 bits).
    pub(crate) srtcp_index: &'a mut u32,
    /// Counts what the worker sent itself (forwarded RTP, its own sender reports), so
    /// the transport's stats include it.
    pub(crate) counters: &'a mut TransportCounters,
    pub(crate) addr: SocketAddr,
    pub(crate) route: Route,
}

/// Why a transport cannot be sent to now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unsendable {
    /// DTLS is not connected (yet, or any more).
    NotConnected,
    /// No client address has consent.
    NoConsent,
}

/// Where drained output goes: the worker's queue of datagrams to send (flushed once
/// per wake-up), and received RTP for forwarding.
pub(crate) struct Sink<'a> {
    pub(crate) out: &'a mut Vec<Outgoing>,
    pub(crate) rtp: &'a mut Vec<RtpPacket>,
}

/// A client address that sent a valid ICE check, and how to reach it: over UDP from
/// the local address its check arrived on, or on the TCP connection it came on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Remote {
    pub(crate) addr: SocketAddr,
    pub(crate) route: Route,
    /// When its last valid check arrived (consent, RFC 7675).
    pub(crate) checked: Instant,
    /// When a check from it last carried USE-CANDIDATE (the client nominated it).
    pub(crate) nominated: Option<Instant>,
}

impl Remote {
    fn protocol(&self) -> Protocol {
        match self.route {
            Route::Udp(_) => Protocol::Udp,
            Route::Tcp(_) => Protocol::Tcp,
        }
    }
}

/// What a transport needs only until DTLS is connected.
#[derive(Default)]
struct Handshake {
    /// Where the DTLS instance leaves the peer certificate and the keying material.
    peer_cert: PeerCertSlot,
    /// The client's fingerprint (`connectTransport`).
    expected: Option<Expected>,
    /// Our last DTLS flight (recorded on listener transports only).
    flight: Flight,
}

/// One WebRTC transport.
pub(crate) struct Transport {
    pub(crate) id: TransportId,
    pub(crate) owner: PeerId,
    pub(crate) direction: Direction,
    /// Boxed: str0m's `Rtc` is ~10 KiB inline. Out of line, the transports' slab
    /// entries that the fan-out reads (keys, counters, destination) stay small and
    /// dense, and the slab's spare capacity holds no `Rtc`s. `None` once a listener
    /// transport is connected ([`Transport::lite`] does the rest).
    rtc: Option<Box<Rtc>>,
    /// What a connected listener keeps instead of the `Rtc`.
    lite: Option<Box<Lite>>,
    /// Our host candidates' addresses (announced address and port).
    locals: Arc<[SocketAddr]>,
    pub(crate) local_ufrag: String,
    local_password: Box<str>,
    /// HMAC-SHA1 for checking ICE messages' integrity.
    hmac: &'static dyn Sha1HmacProvider,
    remote_ufrag: Option<Box<str>>,
    /// What DTLS needs until it is connected; freed then.
    handshake: Option<Box<Handshake>>,
    pub(crate) dtls: DtlsState,
    /// str0m panicked inside this transport: its state is not to be trusted again, so
    /// it is never driven again (the session can still close it).
    poisoned: bool,
    ice: IceConnectionState,
    pub(crate) next_timeout: Instant,
    /// The deadline the worker's timer queue holds for this transport.
    pub(crate) scheduled: Option<Instant>,
    /// Keys, destination and counters of what the worker sends (the fan-out's part).
    pub(crate) out: Outbound,
    /// How long a client address keeps consent without a valid check.
    consent_timeout: Duration,
    /// Client addresses seen in valid ICE checks (the worker routes them here).
    remotes: Vec<Remote>,
    /// MIDs declared on this transport.
    pub(crate) mids: Vec<String>,
    /// Producers on this transport, by SSRC.
    // Only the client's own producers' SSRCs (a few): a fast hasher is safe here.
    pub(crate) producers: FxHashMap<u32, ProducerId>,
    /// The id on which the producers of a send transport send `ssrc-audio-level` (0:
    /// none known); read by its [`LevelCapture`]s.
    audio_level_id: Arc<AtomicU8>,
}

impl Transport {
    /// Builds the `Rtc` for a new transport; `levels`: whether a send transport reads
    /// its producers' audio levels.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: TransportId,
        owner: PeerId,
        direction: Direction,
        identity: &Identity,
        locals: &Arc<[SocketAddr]>,
        tcp: bool,
        levels: bool,
        now: Instant,
    ) -> Result<Transport, MediaError> {
        let creds = super::ice::random_credentials();
        let audio_level_id = Arc::new(AtomicU8::new(0));
        let mut config = RtcConfig::new()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .set_crypto_provider(identity.provider.clone())
            .set_dtls_cert(identity.cert.clone())
            .set_local_ice_credentials(creds.clone())
            // Verified by us on `Connected`, for every hash algorithm (see `dtls`).
            .set_fingerprint_verification(false)
            .clear_codecs()
            .set_extension_map(extension_map(direction, levels.then_some(&audio_level_id)))
            .set_rtcp_report_interval_audio(Duration::from_secs(5));
        let pts: Vec<u8> = match direction {
            // The producer's payload type is only known at `produce`, after the Rtc
            // exists: accept Opus on every dynamic payload type; the worker only
            // forwards the one the producer declared.
            Direction::Send => PRODUCER_PTS.collect(),
            Direction::Recv => vec![OPUS_PT],
        };
        for pt in pts {
            config.codec_config().add_config(
                Pt::from(pt),
                None,
                Codec::Opus,
                Frequency::FORTY_EIGHT_KHZ,
                Some(2),
                FormatParams { min_p_time: Some(10), use_inband_fec: Some(true), ..Default::default() },
            );
        }
        let handshake = Box::<Handshake>::default();
        let mut rtc = dtls::with_peer_cert_slot(handshake.peer_cert.clone(), || config.build(now));
        for &local in locals.iter() {
            let bad = |e| MediaError::Internal(format!("host candidate {local}: {e}"));
            rtc.add_local_candidate(Candidate::host(local, "udp").map_err(bad)?);
            if tcp {
                let passive = Candidate::builder().tcp().host(local).tcptype(TcpType::Passive).build().map_err(bad)?;
                rtc.add_local_candidate(passive);
            }
        }
        Ok(Transport {
            id,
            owner,
            direction,
            rtc: Some(Box::new(rtc)),
            lite: None,
            locals: locals.clone(),
            local_ufrag: creds.ufrag,
            local_password: creds.pass.into(),
            hmac: identity.provider.sha1_hmac_provider,
            remote_ufrag: None,
            handshake: Some(handshake),
            dtls: DtlsState::New,
            poisoned: false,
            ice: IceConnectionState::New,
            next_timeout: now,
            scheduled: None,
            out: Outbound::default(),
            consent_timeout: crate::config::CONSENT_TIMEOUT,
            remotes: Vec::new(),
            mids: Vec::new(),
            producers: FxHashMap::default(),
            audio_level_id,
        })
    }

    /// Sets how long a client address keeps consent without a valid check.
    pub(crate) fn with_consent_timeout(mut self, timeout: Duration) -> Transport {
        self.consent_timeout = timeout;
        self
    }

    /// The server's ICE parameters for the client.
    pub(crate) fn ice_parameters(&self) -> IceParameters {
        IceParameters {
            username_fragment: self.local_ufrag.clone(),
            password: self.local_password.to_string(),
            ice_lite: true,
        }
    }

    /// Whether DTLS is up and verified: media may flow.
    pub(crate) fn is_connected(&self) -> bool {
        self.dtls == DtlsState::Connected
    }

    /// `connectTransport`: the client's fingerprint and role; starts DTLS.
    pub(crate) fn connect(
        &mut self,
        expected: Expected,
        role: DtlsRole,
        sink: &mut Sink<'_>,
    ) -> Result<(), MediaError> {
        let (Some(rtc), Some(handshake), DtlsState::New) = (&mut self.rtc, &mut self.handshake, self.dtls) else {
            return Err(MediaError::InvalidState(format!("transport '{}' is already connected", self.id)));
        };
        // The client's role decides ours; with `auto` the ICE-lite side is the DTLS
        // server, as mediasoup's is.
        let active = role == DtlsRole::Server;
        let mut api = rtc.direct_api();
        // str0m requires a remote fingerprint before DTLS even with its own check off;
        // the real check is `dtls::verify` on `Connected`.
        api.set_remote_fingerprint(Fingerprint { hash_func: "sha-256".into(), bytes: vec![0; 32] });
        api.start_dtls(active).map_err(|e| MediaError::Internal(format!("start_dtls: {e}")))?;
        handshake.expected = Some(expected);
        self.dtls = DtlsState::Connecting;
        self.drain(Instant::now(), sink);
        Ok(())
    }

    /// New local ICE credentials (ICE restart).
    pub(crate) fn restart_ice(&mut self, sink: &mut Sink<'_>) -> IceParameters {
        let creds = super::ice::random_credentials();
        // A lite transport answers checks with the new password from now on.
        if let Some(rtc) = &mut self.rtc {
            rtc.direct_api().set_local_ice_credentials(creds.clone());
        }
        self.local_ufrag = creds.ufrag;
        self.local_password = creds.pass.into();
        self.drain(Instant::now(), sink);
        self.ice_parameters()
    }

    /// Marks the transport failed for good after str0m panicked inside it.
    pub(crate) fn poison(&mut self) {
        self.poisoned = true;
        self.stop_sending();
    }

    /// Whether an ICE check carries a valid MESSAGE-INTEGRITY for our password.
    pub(crate) fn verify_stun(&self, message: &StunMessage<'_>) -> bool {
        message.verify(self.local_password.as_bytes(), |key, parts| self.hmac.sha1_hmac(key, parts))
    }

    /// An ICE-lite agent only answers checks once it knows the remote ufrag; the
    /// client never signals it, so it is learnt from the checks' USERNAME.
    /// (A lite transport needs no remote ufrag: its answers carry none.)
    pub(crate) fn learn_remote_ufrag(&mut self, ufrag: &str) {
        let Some(rtc) = &mut self.rtc else {
            return;
        };
        if self.remote_ufrag.as_deref() != Some(ufrag) {
            self.remote_ufrag = Some(ufrag.into());
            // An ICE-lite agent never uses the remote password.
            rtc.direct_api().set_remote_ice_credentials(IceCreds { ufrag: ufrag.to_owned(), pass: String::new() });
        }
    }

    /// The ICE state for stats: str0m's while it has the `Rtc`; after that the state
    /// it last reported while some client address has consent, else `disconnected`.
    pub(crate) fn ice_state(&self, now: Instant) -> IceConnectionState {
        if self.rtc.is_none() && self.destination(now).is_none() {
            return IceConnectionState::Disconnected;
        }
        self.ice
    }

    /// Whether this transport runs without a str0m `Rtc` (a connected listener).
    #[cfg(test)]
    pub(crate) fn is_lite(&self) -> bool {
        self.rtc.is_none()
    }

    /// What the client sent a lite transport (SRTCP accepted and rejected, ignored).
    pub(crate) fn lite_counters(&self) -> Option<crate::lite::LiteCounters> {
        self.lite.as_ref().map(|l| l.counters)
    }

    /// The lite state, once connected (listener transports).
    #[cfg(test)]
    pub(crate) fn lite(&self) -> Option<&Lite> {
        self.lite.as_deref()
    }

    /// Remembers a client address that sent a valid check at `now` and how to reach it
    /// (a later UDP check may arrive on another local address); `nominated`: the check
    /// carried USE-CANDIDATE. Returns whether the address is new.
    pub(crate) fn learn_remote(&mut self, addr: SocketAddr, route: Route, now: Instant, nominated: bool) -> bool {
        let learnt = Remote { addr, route, checked: now, nominated: nominated.then_some(now) };
        self.out.to = None;
        match self.remotes.iter_mut().find(|r| r.addr == addr && r.protocol() == learnt.protocol()) {
            Some(known) => {
                known.route = route;
                known.checked = now;
                if nominated {
                    known.nominated = Some(now);
                }
                false
            }
            None => {
                self.remotes.push(learnt);
                true
            }
        }
    }

    /// Whether a remote still has the client's consent at `now` (RFC 7675).
    fn has_consent(&self, remote: &Remote, now: Instant) -> bool {
        now.saturating_duration_since(remote.checked) < self.consent_timeout
    }

    /// Where the worker sends this transport's media at `now`: the client address
    /// nominated last (else the one checked last) among those that still have consent;
    /// `None` once every address has gone quiet for the consent timeout.
    pub(crate) fn destination(&self, now: Instant) -> Option<Remote> {
        self.remotes.iter().filter(|r| self.has_consent(r, now)).max_by_key(|r| (r.nominated, r.checked)).copied()
    }

    /// Forgets a closed TCP connection.
    pub(crate) fn forget_connection(&mut self, conn: crate::tcp::ConnId) {
        self.remotes.retain(|r| r.route != Route::Tcp(conn));
        self.out.to = None;
    }

    /// Forgets every client address (the transport failed or closes); returns them.
    pub(crate) fn take_remotes(&mut self) -> Vec<Remote> {
        self.out.to = None;
        std::mem::take(&mut self.remotes)
    }

    /// What the worker needs to send to the client at `now` ([`Sending`]). The
    /// destination is [`Transport::destination`], cached until a check changes the
    /// client addresses or its consent runs out, so the per-packet path reads only
    /// [`Outbound`].
    pub(crate) fn outbound(&mut self, now: Instant) -> Result<Sending<'_>, Unsendable> {
        // Not connected goes first: a transport can have client addresses before DTLS.
        if self.out.srtp.is_none() {
            return Err(Unsendable::NotConnected);
        }
        let (addr, route) = self.cached_destination(now).ok_or(Unsendable::NoConsent)?;
        let Outbound { srtp: Some(srtp), srtcp_index, counters, .. } = &mut self.out else {
            return Err(Unsendable::NotConnected);
        };
        Ok(Sending { srtp, srtcp_index, counters, addr, route })
    }

    /// [`Transport::destination`]'s address and route, from the cache while it holds.
    /// The cache is exact: which address wins changes only with a check (which clears
    /// it) or when the winner's consent runs out (its `until`).
    fn cached_destination(&mut self, now: Instant) -> Option<(SocketAddr, Route)> {
        match self.out.to {
            Some((addr, route, until)) if now < until => Some((addr, route)),
            _ => {
                let remote = self.destination(now)?;
                self.out.to = Some((remote.addr, remote.route, remote.checked + self.consent_timeout));
                Some((remote.addr, remote.route))
            }
        }
    }

    /// The host candidate a datagram from `source` to the local address `local` was
    /// meant for: the announced address equal to `local`, else the first of the
    /// client's address family (an announced address behind NAT), else the first.
    fn candidate_for(&self, source: SocketAddr, local: Option<IpAddr>) -> Option<SocketAddr> {
        let exact = local.and_then(|ip| self.locals.iter().find(|c| c.ip() == ip));
        let same_family = || self.locals.iter().find(|c| c.is_ipv4() == source.is_ipv4());
        exact.or_else(same_family).or(self.locals.first()).copied()
    }

    /// Feeds one datagram (or TCP frame) from `source`, received on the local address
    /// `local`.
    pub(crate) fn receive(
        &mut self,
        now: Instant,
        protocol: Protocol,
        source: SocketAddr,
        local: Option<IpAddr>,
        data: &[u8],
        sink: &mut Sink<'_>,
    ) {
        if self.poisoned {
            return;
        }
        self.out.counters.packets_received += 1;
        self.out.counters.bytes_received += data.len() as u64;
        let Some(destination) = self.candidate_for(source, local) else {
            return;
        };
        let Some(rtc) = &mut self.rtc else {
            return self.receive_lite(now, protocol, source, data, sink);
        };
        let Ok(receive) = Receive::new(protocol, source, destination, data) else {
            return;
        };
        if let Err(e) = rtc.handle_input(Input::Receive(now, receive)) {
            tracing::debug!(transport = %self.id, error = %e, "input rejected");
        }
        self.drain(now, sink);
    }

    /// A datagram on a lite transport: answers go back the way it came.
    fn receive_lite(&mut self, now: Instant, protocol: Protocol, source: SocketAddr, data: &[u8], sink: &mut Sink<'_>) {
        let Some(lite) = &mut self.lite else {
            return;
        };
        let route = match self.remotes.iter().find(|r| r.addr == source && r.protocol() == protocol) {
            Some(remote) => remote.route,
            None if protocol == Protocol::Udp => Route::Udp(None),
            None => return,
        };
        let mut send = |data: Vec<u8>| {
            self.out.counters.count_sent(data.len());
            sink.out.push(Outgoing { data, to: source, route });
        };
        match lite.receive(now, source, data, &self.local_password, self.hmac) {
            Reply::None => {}
            Reply::Answer(answer) => send(answer),
            Reply::Flight(flight) => flight.iter().for_each(|d| send(d.to_vec())),
        }
    }

    /// Drives timers (and sends what was written).
    pub(crate) fn timeout(&mut self, now: Instant, sink: &mut Sink<'_>) {
        let Some(rtc) = self.rtc.as_mut().filter(|_| !self.poisoned) else {
            // Poisoned, or lite: no timers (consent is judged from the checks' times).
            self.next_timeout = now + Duration::from_secs(3600);
            return;
        };
        if let Err(e) = rtc.handle_input(Input::Timeout(now)) {
            tracing::debug!(transport = %self.id, error = %e, "timeout failed");
        }
        self.drain(now, sink);
    }

    /// Declares a media section (MID) for a producer or consumer. Only a producer's
    /// exists in str0m (which receives it); a consumer's is the worker's alone.
    pub(crate) fn declare_mid(&mut self, mid: &str) -> Result<Mid, MediaError> {
        // str0m maps characters other than letters and digits to '_': compare as it does.
        if self.mids.iter().any(|m| Mid::from(m.as_str()) == Mid::from(mid)) {
            return Err(MediaError::InvalidState(format!("mid '{mid}' is already used on transport '{}'", self.id)));
        }
        let m = Mid::from(mid);
        if let (Direction::Send, Some(rtc)) = (self.direction, &mut self.rtc) {
            rtc.direct_api().declare_media(m, MediaKind::Audio);
        }
        self.mids.push(mid.to_owned());
        Ok(m)
    }

    /// Frees a MID.
    pub(crate) fn remove_mid(&mut self, mid: &str) {
        self.mids.retain(|m| m != mid);
        if let (Direction::Send, Some(rtc)) = (self.direction, &mut self.rtc) {
            rtc.direct_api().remove_media(Mid::from(mid));
        }
    }

    /// The id on which this send transport's producers send `ssrc-audio-level`: str0m
    /// parses the level on it from now on. (One client sends every producer of a
    /// transport with the same ids.)
    pub(crate) fn set_audio_level_id(&self, id: u8) {
        self.audio_level_id.store(id, Ordering::Relaxed);
    }

    /// Starts receiving a producer's stream.
    pub(crate) fn expect_stream(&mut self, mid: Mid, ssrc: u32) {
        if let Some(rtc) = &mut self.rtc {
            rtc.direct_api().expect_stream_rx(Ssrc::from(ssrc), None, mid, None).suppress_nack(true);
        }
    }

    /// Sends all pending output and handles events until str0m wants a timeout.
    fn drain(&mut self, now: Instant, sink: &mut Sink<'_>) {
        if let Some(h) = &mut self.handshake {
            h.flight.begin();
        }
        loop {
            let Some(rtc) = &mut self.rtc else {
                return;
            };
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.next_timeout = t.max(now);
                    self.finish_handshake(now);
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    let known = self.remotes.iter().find(|r| r.addr == t.destination && r.protocol() == t.proto);
                    let route = match known {
                        // Consent expired: nothing more goes there (RFC 7675).
                        Some(remote) if !self.has_consent(remote, now) => continue,
                        Some(remote) => remote.route,
                        // TCP needs a connection; UDP may leave with the kernel's pick.
                        None if t.proto == Protocol::Udp => Route::Udp(None),
                        None => continue,
                    };
                    self.out.counters.count_sent(t.contents.len());
                    if let (Direction::Recv, Some(h)) = (self.direction, &mut self.handshake) {
                        h.flight.record(&t.contents);
                    }
                    sink.out.push(Outgoing { data: t.contents.into(), to: t.destination, route });
                }
                Ok(Output::Event(event)) => self.on_event(event, sink),
                Err(e) => {
                    tracing::info!(transport = %self.id, error = %e, "transport failed");
                    self.stop_sending();
                    self.next_timeout = now + Duration::from_secs(3600);
                    return;
                }
            }
        }
    }

    fn on_event(&mut self, event: Event, sink: &mut Sink<'_>) {
        match event {
            Event::Connected => {
                let captured = match &self.handshake {
                    Some(h) => std::mem::take(&mut *h.peer_cert.lock().unwrap_or_else(|e| e.into_inner())),
                    None => dtls::Captured::default(),
                };
                let expected = self.handshake.as_ref().and_then(|h| h.expected.as_ref());
                let verified = match (expected, captured.peer_cert) {
                    (Some(expected), Some(cert)) => dtls::verify(expected, &cert),
                    _ => false,
                };
                let keys = captured.keying.as_ref().map(|k| Ok((sender(k)?, self.receiver(k)?)));
                match keys {
                    Some(Ok((srtp, lite))) if verified => {
                        tracing::debug!(transport = %self.id, profile = ?srtp.profile(), "DTLS connected");
                        self.out.srtp = Some(srtp);
                        self.lite = lite;
                        self.dtls = DtlsState::Connected;
                    }
                    _ if !verified => {
                        tracing::warn!(transport = %self.id, "peer certificate does not match the fingerprint; closing");
                        self.fail_dtls();
                    }
                    failed => {
                        let error = failed.and_then(Result::err).map(|e: MediaError| e.to_string());
                        tracing::warn!(transport = %self.id, ?error, "no usable SRTP keys after DTLS; closing");
                        self.fail_dtls();
                    }
                }
            }
            Event::IceConnectionStateChange(state) => self.ice = state,
            Event::RtpPacket(packet) if self.is_connected() => sink.rtp.push(packet),
            _ => {}
        }
    }
}

impl Transport {
    /// Marks DTLS failed and drops the sealing keys with it: `out.srtp` is `Some` only
    /// while connected, so nothing more is sent.
    fn stop_sending(&mut self) {
        self.dtls = DtlsState::Failed;
        self.out.srtp = None;
    }

    /// DTLS failed for good: tell the client and stop.
    fn fail_dtls(&mut self) {
        self.stop_sending();
        if let Some(rtc) = &mut self.rtc {
            rtc.disconnect();
        }
    }

    /// What a listener transport goes on with once connected (the opening half of
    /// the SRTP keys); `None` for a send transport, which keeps its `Rtc`.
    fn receiver(&self, keying: &dtls::Keying) -> Result<Option<Box<Lite>>, MediaError> {
        if self.direction != Direction::Recv {
            return Ok(None);
        }
        let profile = profile(keying)?;
        let srtcp = SrtcpReceiver::new(profile, &keying.material, keying.active)?;
        // As the DTLS client we got the server's Finished: nothing of ours to repeat.
        Ok(Some(Box::new(Lite::new(srtcp, !keying.active))))
    }

    /// At the end of a drain: once DTLS is connected the handshake's state goes, and a
    /// listener transport drops its `Rtc`, keeping our last DTLS flight (`crate::lite`).
    fn finish_handshake(&mut self, now: Instant) {
        if self.dtls != DtlsState::Connected {
            return;
        }
        let Some(handshake) = self.handshake.take() else {
            return;
        };
        if let Some(lite) = &mut self.lite {
            lite.keep_flight(handshake.flight);
            self.rtc = None;
            self.remote_ufrag = None;
            self.next_timeout = now + Duration::from_secs(3600);
            tracing::debug!(transport = %self.id, "listener transport connected; str0m's Rtc dropped");
        }
    }
}

/// The negotiated SRTP profile, if we support it.
fn profile(keying: &dtls::Keying) -> Result<Profile, MediaError> {
    Profile::from_dtls(keying.profile)
        .ok_or_else(|| MediaError::Internal(format!("SRTP profile {:?} is not supported", keying.profile)))
}

/// The sealing half of the SRTP keys DTLS exported.
fn sender(keying: &dtls::Keying) -> Result<SrtpSender, MediaError> {
    SrtpSender::new(profile(keying)?, &keying.material, keying.active)
}

/// Header extensions str0m parses and writes on a transport. Consumers get the
/// router's ids. Producers' ids are the client's own and arrive only with `produce`,
/// after the `Rtc` is built: a send transport with `levels` gets a [`LevelCapture`] on
/// every one-byte id, which parses the audio level on the id `produce` stores in
/// `levels` (the engine forwards no header extension values).
fn extension_map(direction: Direction, levels: Option<&Arc<AtomicU8>>) -> ExtensionMap {
    let mut map = ExtensionMap::empty();
    match (direction, levels) {
        (Direction::Recv, _) => map.set(MID_EXT_ID, Extension::RtpMid),
        (Direction::Send, Some(wanted)) => {
            for id in 1..=MAX_ONE_BYTE_EXT_ID {
                let capture = LevelCapture::new(id, wanted.clone());
                map.set(id, Extension::with_serializer(&LevelCapture::uri(id), capture));
            }
        }
        (Direction::Send, None) => {}
    }
    map
}

const _: () = assert!(OPUS_CLOCK_RATE == 48_000, "str0m is configured with FORTY_EIGHT_KHZ");

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener transport created at `t0` with a consent timeout of `timeout` (and a
    /// TCP candidate when `tcp`).
    fn listener(t0: Instant, timeout: Duration, tcp: bool) -> Transport {
        let identity = Identity::generate().unwrap();
        let locals: Arc<[SocketAddr]> = vec!["127.0.0.1:40000".parse().unwrap()].into();
        let (id, owner) = (TransportId::from("t"), PeerId::from("p"));
        Transport::new(id, owner, Direction::Recv, &identity, &locals, tcp, false, t0)
            .unwrap()
            .with_consent_timeout(timeout)
    }

    /// Consent freshness (RFC 7675) with a short timeout: media goes to the address the
    /// client nominated last, falls back to another one that still checks in, and
    /// stops once every address has been quiet for the timeout.
    #[test]
    fn media_goes_only_where_consent_is_fresh() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(2);
        let mut t = listener(t0, timeout, false);
        assert_eq!(t.destination(t0), None, "no check yet");
        let (a, b): (SocketAddr, SocketAddr) = ("127.0.0.1:5000".parse().unwrap(), "127.0.0.1:6000".parse().unwrap());
        assert!(t.learn_remote(a, Route::Udp(None), t0, true));
        assert!(t.learn_remote(b, Route::Udp(None), t0 + Duration::from_secs(1), false));
        assert_eq!(t.destination(t0 + Duration::from_secs(1)).map(|r| r.addr), Some(a), "the nominated one");
        let later = t0 + timeout + Duration::from_millis(500);
        assert_eq!(t.destination(later).map(|r| r.addr), Some(b), "a's consent expired");
        assert!(!t.learn_remote(a, Route::Udp(None), later, false), "a known address");
        assert_eq!(t.destination(later).map(|r| r.addr), Some(a), "a checked in again and is still nominated");
        assert_eq!(t.destination(later + timeout), None, "every address quiet for the timeout");
    }

    /// The fan-out's cached destination is the exact one at every moment: across
    /// checks, nominations, expiries, and a TCP connection that goes away.
    #[test]
    fn the_cached_destination_follows_consent() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(2);
        let mut t = listener(t0, timeout, true);
        let exact = |t: &Transport, now| t.destination(now).map(|r| (r.addr, r.route));
        let (a, b): (SocketAddr, SocketAddr) = ("127.0.0.1:5000".parse().unwrap(), "127.0.0.1:6000".parse().unwrap());
        let ms = |n| t0 + Duration::from_millis(n);
        // (at, what happens first: 0 nothing, 1 a nominates, 2 b checks, 3 b over TCP
        // nominates, 4 the TCP connection closes)
        let steps = [
            (0, 0),
            (0, 1),
            (100, 0),
            (900, 2),
            (1_999, 0),
            (2_000, 0),
            (2_500, 0),
            (2_899, 0),
            (2_900, 0),
            (3_000, 1),
        ];
        let steps = steps.into_iter().chain([(3_500, 3), (3_600, 0), (3_700, 4), (3_800, 0), (9_000, 0), (9_100, 2)]);
        let tcp: crate::tcp::ConnId = 7;
        for (at, event) in steps {
            let now = ms(at);
            match event {
                1 => drop(t.learn_remote(a, Route::Udp(None), now, true)),
                2 => drop(t.learn_remote(b, Route::Udp(None), now, false)),
                3 => drop(t.learn_remote(b, Route::Tcp(tcp), now, true)),
                4 => t.forget_connection(tcp),
                _ => {}
            }
            for probe in [now, now + Duration::from_millis(1)] {
                assert_eq!(t.cached_destination(probe), exact(&t, probe), "at {at} ms (+{:?})", probe - now);
            }
        }
        assert_eq!(t.cached_destination(ms(9_100)).map(|(addr, _)| addr), Some(b));
        drop(t.take_remotes());
        assert_eq!(t.cached_destination(ms(9_100)), None, "no address left");
    }
}

#[cfg(test)]
mod memory {
    use super::*;

    /// What a listener (receive-only) transport keeps right after `createTransport`:
    /// our `Transport` (its slab entry) and everything it owns on the heap, str0m's
    /// boxed `Rtc` included, split into str0m's part and ours (`BENCHMARKS.md` §9).
    /// The handshake adds more to the `Rtc`, which a listener drops once connected
    /// (the next test). The budget holds today's figure, so growth fails here.
    #[test]
    fn a_listener_transport_stays_within_its_heap_budget() {
        const N: usize = 50;
        let identity = Identity::generate().unwrap();
        let locals: Arc<[SocketAddr]> = vec!["127.0.0.1:40000".parse().unwrap()].into();
        let now = Instant::now();
        let mut kept = Vec::with_capacity(N);
        let transport = allocation_counter::measure(|| {
            for i in 0..N {
                let id = TransportId::from(format!("t{i}").as_str());
                let t = Transport::new(id, PeerId::from("p"), Direction::Recv, &identity, &locals, true, false, now);
                kept.push(t.unwrap());
            }
        });
        let mut rtcs = Vec::with_capacity(N);
        let rtc = allocation_counter::measure(|| {
            for _ in 0..N {
                let config = RtcConfig::new()
                    .set_ice_lite(true)
                    .set_rtp_mode(true)
                    .clear_codecs()
                    .set_extension_map(extension_map(Direction::Recv, None))
                    .set_crypto_provider(identity.provider.clone())
                    .set_dtls_cert(identity.cert.clone());
                rtcs.push(Box::new(config.build(now)));
            }
        });
        let per = |bytes: i64| bytes as usize / N;
        let (total, rtc) = (per(transport.bytes_current) + size_of::<Transport>(), per(rtc.bytes_current));
        println!(
            "listener transport: {total} bytes: str0m's Rtc {rtc} ({} inline), host candidates, \
             credentials and the rest {}, ours {} inline",
            size_of::<Rtc>(),
            total - rtc - size_of::<Transport>(),
            size_of::<Transport>()
        );
        assert!(size_of::<Transport>() <= 512, "the transports' slab entries stay small");
        assert!(total <= 25 * 1024, "a new listener transport keeps {total} bytes");
    }

    /// What a connected listener transport keeps once it has dropped str0m's `Rtc`: our
    /// `Transport`, its ICE credentials and remote, the SRTP sender, the SRTCP receiver
    /// and our final DTLS flight (we are the DTLS server here, as with Chromium; the
    /// flight goes with the client's first SRTCP packet). Rust allocations only:
    /// aws-lc's own (the AES and HMAC contexts) are not counted here; the RSS figures
    /// include them. The target is 16 KiB.
    #[test]
    fn a_connected_listener_transport_stays_within_its_heap_budget() {
        const N: usize = 10;
        let identity = Identity::generate().unwrap();
        let locals: Arc<[SocketAddr]> = vec!["127.0.0.1:40000".parse().unwrap()].into();
        let mut now = Instant::now();
        let mut kept = Vec::with_capacity(N);
        let mut new = 0;
        let info = allocation_counter::measure(|| {
            for i in 0..N {
                let id = TransportId::from(format!("t{i}").as_str());
                let before = allocation_counter::measure(|| {
                    let t =
                        Transport::new(id, PeerId::from("p"), Direction::Recv, &identity, &locals, true, false, now);
                    kept.push(t.unwrap());
                });
                new += before.bytes_current;
                let t = kept.last_mut().unwrap();
                let mut client = crate::test_client::Client::new(t, now, true);
                client.run(t, |t, c| t.is_connected() && c.connected, |_, _| false);
                assert!(t.is_connected() && client.connected, "the handshake completes");
                assert!(t.is_lite(), "the Rtc is dropped");
                now = client.now;
                crate::test_client::opt_out(|| drop(client));
            }
        });
        let per = |bytes: i64| bytes as usize / N + size_of::<Transport>();
        let (total, new) = (per(info.bytes_current), per(new));
        let lite = kept[0].lite.as_ref().map_or(0, |l| size_of_val(&**l));
        println!(
            "connected listener transport: {total} bytes ({new} when created, with str0m's Rtc); \
             {} inline, Lite {lite} inline",
            size_of::<Transport>()
        );
        assert!(total <= 2 * 1024, "a connected listener transport keeps {total} bytes");
    }
}
