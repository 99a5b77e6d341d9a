//! A media worker: one thread, one UDP socket, the transports of its rooms.
//!
//! The worker is an actor. A [`RouterHandle`](super::RouterHandle) sends it commands
//! over a channel ([`WorkerHandle::call`], private to the engine); the worker runs them
//! with exclusive access to its state, between datagrams, timers and hand-offs from
//! other workers, on its own single-threaded runtime. Nothing here is locked; only the
//! `cross` rings are shared, each with one writer and one reader. The worker owns the
//! media facts: which peer owns a transport, its direction, what is paused.
//!
//! This file holds the state and the event loop; by concern:
//! - `io`: demultiplexing. STUN binding requests are routed by the server ufrag in
//!   their USERNAME, which also teaches the worker the client's address; every other
//!   datagram is routed by its source address (UDP) or its connection (ICE-TCP).
//! - `forward`: the per-packet path, outside str0m. A wake-up reads up to
//!   [`RECV_BATCH`] datagrams; str0m decrypts what producers send; for every consumer
//!   of it the worker writes the consumer's prebuilt header (patched sequence number,
//!   timestamp, marker) and the payload into a per-wake-up arena, seals it in place
//!   with the consumer transport's SRTP context, and the arena leaves in `sendmmsg`
//!   batches (`udp`): no str0m call, allocation or hash per forwarded packet. Each
//!   consumer's sender report + SDES is also the worker's (`send_reports`, about once
//!   a second, SRTCP).
//! - `commands`: what the router handle asks for (create, connect, produce, …).
//! - `remote`: producers of other workers. A producer's packets go once to each
//!   worker with consumers of it, through the `cross` rings; the worker drains its
//!   rings when woken (`drain_inbound`) and fans them out like its own producers'.
//! - `speakers`: voice activity of the rooms at home on this worker: each producer
//!   packet's audio level feeds its room's detector (one call on the per-packet path,
//!   or one ring record from another worker); a tick every 100 ms sends the room's
//!   events up to the server.
//!
//! Timers sit in a heap, so a wake-up touches only the transports due.

mod commands;
mod forward;
mod io;
mod remote;
mod speakers;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dspeak_schema::{ConsumerId, PeerId, ProducerId, TransportId};
use rustc_hash::FxHashMap;
use slab::Slab;
use str0m::rtp::RtpPacket;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::cross::Links;
use crate::dtls::Identity;
use crate::egress::{RtpHeader, SentClock};
use crate::error::MediaError;
use crate::router::ProducerStream;
use crate::speaker::{RoomSpeakers, SpeakerEvents};
use crate::tcp::{ConnId, TcpConns, TcpEvent, push_frame};
use crate::traffic::{LocalTraffic, Traffic};
use crate::transport::{Sink, Transport};
use crate::udp::{Arena, MediaSocket, Outgoing, Route};
use forward::SeqRewriter;
pub(crate) use remote::Subscription;

pub(crate) type Command = Box<dyn FnOnce(&mut Worker) + Send>;

/// Live counts of one worker, readable without asking it.
#[derive(Debug, Default)]
pub(crate) struct WorkerCounts {
    pub(crate) transports: AtomicUsize,
    pub(crate) producers: AtomicUsize,
    pub(crate) consumers: AtomicUsize,
    /// Rooms whose home this worker is (live router handles): it runs their speaker
    /// detectors.
    pub(crate) rooms: AtomicUsize,
    /// Packet and byte totals, for monitoring.
    pub(crate) traffic: Traffic,
    /// Open ICE-TCP connections, attached or not.
    pub(crate) tcp_connections: AtomicUsize,
    /// Datagrams and ICE-TCP frames dropped because the kernel's send buffer or a
    /// connection's queue was full.
    pub(crate) send_drops: AtomicU64,
    /// Packets forwarded to consumers per second, over the last second or so: the
    /// worker's load, by which rooms are placed.
    pub(crate) forwarded_per_sec: AtomicU64,
}

/// A handle to send work to a worker.
#[derive(Clone, Debug)]
pub(crate) struct WorkerHandle {
    pub(crate) index: usize,
    pub(crate) port: u16,
    commands: mpsc::UnboundedSender<Command>,
    pub(crate) counts: Arc<WorkerCounts>,
}

impl WorkerHandle {
    /// Runs `f` on the worker and returns its result.
    pub(crate) async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Worker) -> Result<R, MediaError> + Send + 'static,
    ) -> Result<R, MediaError> {
        let (tx, rx) = oneshot::channel();
        let command: Command = Box::new(move |w| {
            let _ = tx.send(f(w));
        });
        self.commands.send(command).map_err(|_| MediaError::Unavailable)?;
        rx.await.unwrap_or(Err(MediaError::Unavailable))
    }

    /// Whether the worker's thread is still running.
    pub(crate) fn is_running(&self) -> bool {
        !self.commands.is_closed()
    }

    /// Runs `f` on the worker without waiting for it.
    pub(crate) fn post(&self, f: impl FnOnce(&mut Worker) + Send + 'static) {
        let _ = self.commands.send(Box::new(f));
    }

    /// The worker's command channel, held weakly (by the other workers).
    pub(crate) fn weak(&self) -> crate::cross::Peer<Command> {
        self.commands.downgrade()
    }

    /// Asks the worker to close everything and stop.
    pub(crate) fn stop(&self) {
        let _ = self.commands.send(Box::new(|w| w.stopping = true));
    }
}

/// A transport's index in the worker's slab.
type TransportKey = usize;

/// A room (router) on a worker, chosen by its [`RouterHandle`](crate::RouterHandle).
pub(crate) type RoomKey = u64;

/// A producer as the worker sees it.
struct Producer {
    transport: TransportKey,
    stream: ProducerStream,
    paused: bool,
    /// Its consumers, as keys into the worker's consumer slab (no hashing per packet).
    consumers: Vec<ConsumerKey>,
    packets: u64,
    bytes: u64,
    /// Holds the producer to its packet and bit rate (no amplification).
    policer: crate::police::Policer,
    /// Its room, its key in the room's speaker detector, and the worker that runs it.
    room: RoomKey,
    speaker_key: u32,
    home: usize,
    /// Its engine-wide key (in the records handed to other workers).
    key: u64,
    /// Workers with consumers of it, each with its count of them (`remote`).
    subscribers: Vec<(usize, u32)>,
    /// Resumes so far: tells other workers' consumers to resynchronize.
    epoch: u32,
}

/// A consumer's index in the worker's slab.
type ConsumerKey = usize;

/// A consumer as the worker sees it.
///
/// Laid out for the fan-out (`repr(C)`, in this order): what one forwarded packet
/// reads and writes (counters, sequence state, transport, timestamp offset, prebuilt
/// header, pause) comes first and fills the entry's first cache lines together; the
/// ids, MID and CNAME that commands, stats and sender reports read come after. Its
/// owner is its transport's.
#[repr(C)]
struct Consumer {
    /// What it sent, for its stats and sender reports.
    sent: SentClock,
    seq: SeqRewriter,
    transport: TransportKey,
    timestamp_offset: u32,
    /// The RTP header it sends, prebuilt.
    header: RtpHeader,
    paused: bool,
    ssrc: u32,
    id: ConsumerId,
    producer: ProducerId,
    mid: Box<str>,
    /// The CNAME of its SDES.
    cname: Box<str>,
}

/// The state of one worker thread.
pub(crate) struct Worker {
    socket: Arc<MediaSocket>,
    /// Host candidate addresses (the announced addresses with this worker's port).
    locals: Arc<[SocketAddr]>,
    /// ICE-TCP on the same port, when enabled.
    tcp: Option<TcpConns>,
    /// When idle TCP connections are next looked for.
    next_sweep: Instant,
    /// Accepting is paused until then after an error (e.g. out of file descriptors).
    accept_paused_until: Instant,
    identity: Arc<Identity>,
    transports: Slab<Transport>,
    transport_keys: HashMap<TransportId, TransportKey>,
    by_ufrag: HashMap<String, TransportKey>,
    by_addr: HashMap<SocketAddr, TransportKey>,
    // Ids are generated by the server (random UUIDs), so a fast hasher is safe here.
    producers: FxHashMap<ProducerId, Producer>,
    consumers: Slab<Consumer>,
    consumer_keys: FxHashMap<ConsumerId, ConsumerKey>,
    counts: Arc<WorkerCounts>,
    traffic: LocalTraffic,
    /// Received RTP waiting to be forwarded, with the transport it came on (reused).
    rtp: Vec<(TransportKey, RtpPacket)>,
    /// Scratch for one transport's drain (reused).
    drained: Vec<RtpPacket>,
    /// Datagrams str0m wants sent, sent at the end of the wake-up.
    out: Vec<Outgoing>,
    /// Datagrams the worker sealed itself (forwarded RTP, sender reports).
    arena: Arena,
    /// The same, for consumers reached over ICE-TCP.
    tcp_arena: Arena,
    /// How long a client address keeps consent without a valid ICE check.
    consent_timeout: Duration,
    /// When consumers' sender reports are next looked at.
    next_reports: Instant,
    /// Transports by deadline. An entry whose deadline is no longer the transport's
    /// `scheduled` one is stale and skipped.
    timers: BinaryHeap<Reverse<(Instant, TransportKey)>>,
    /// ICE-TCP frames dropped on full connection queues.
    tcp_dropped: u64,
    /// Scratch for grouping a wake-up's ICE-TCP packets by connection (reused).
    tcp_runs: Vec<(ConnId, usize)>,
    /// When the forwarding rate was last taken, and the packets sent to consumers then.
    rate_mark: (Instant, u64),
    stopping: bool,
    /// Which voice-activity events rooms get.
    speaker_events: SpeakerEvents,
    /// Voice activity of the rooms on this worker (none with [`SpeakerEvents::Off`]).
    rooms: FxHashMap<RoomKey, RoomSpeakers>,
    /// The rings to and from the other workers (`cross`).
    links: Links<Command>,
    /// Producers of other workers with consumers here, by key, and their keys by id.
    remote: FxHashMap<u64, remote::RemoteProducer>,
    remote_keys: FxHashMap<ProducerId, u64>,
    /// When the rooms' detectors next decide.
    next_speaker_tick: Instant,
}

/// What every worker does the same way (from the [`crate::EngineConfig`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    /// Consent freshness: how long a client address may stay silent (RFC 7675).
    pub(crate) consent_timeout: Duration,
    /// Which voice-activity events rooms get.
    pub(crate) speaker_events: SpeakerEvents,
}

/// Spawns a worker thread on a bound socket (and a listening TCP socket on the same
/// port for ICE-TCP). `locals` are the host candidate addresses; `cpu`, the CPU to pin
/// the thread to, if any; `links`, its rings to the other workers (`cross`), which
/// also give its index.
pub(crate) fn spawn(
    socket: std::net::UdpSocket,
    listener: Option<std::net::TcpListener>,
    locals: Vec<SocketAddr>,
    identity: Arc<Identity>,
    cpu: Option<usize>,
    settings: Settings,
    links: Links<Command>,
) -> Result<(WorkerHandle, std::thread::JoinHandle<()>), std::io::Error> {
    let index = links.index;
    let port = socket.local_addr()?.port();
    let locals: Arc<[SocketAddr]> = locals.into();
    let (commands, rx) = mpsc::unbounded_channel();
    let counts = Arc::new(WorkerCounts::default());
    let handle = WorkerHandle { index, port, commands, counts: counts.clone() };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let thread = std::thread::Builder::new().name(format!("dspeak-media-{index}")).spawn(move || {
        counts.traffic.set_current_thread();
        if let Some(cpu) = cpu {
            match crate::pin_current_thread(cpu) {
                Ok(()) => tracing::info!(worker = index, cpu, "media worker pinned"),
                Err(e) => tracing::warn!(worker = index, cpu, error = %e, "cannot pin the media worker"),
            }
        }
        runtime.block_on(async move {
            let socket = match MediaSocket::new(socket) {
                Ok(s) => Arc::new(s),
                Err(e) => {
                    tracing::error!(worker = index, error = %e, "cannot use the media socket");
                    return;
                }
            };
            let (tcp, tcp_events) = match listener.map(TcpConns::new).transpose() {
                Ok(Some((tcp, events))) => (Some(tcp), Some(events)),
                Ok(None) => (None, None),
                Err(e) => {
                    tracing::error!(worker = index, error = %e, "cannot use the media TCP socket");
                    return;
                }
            };
            let now = Instant::now();
            let worker = Worker {
                socket,
                locals,
                tcp,
                next_sweep: now,
                accept_paused_until: now,
                identity,
                transports: Slab::new(),
                transport_keys: HashMap::new(),
                by_ufrag: HashMap::new(),
                by_addr: HashMap::new(),
                producers: FxHashMap::default(),
                consumers: Slab::new(),
                consumer_keys: FxHashMap::default(),
                counts,
                traffic: LocalTraffic::default(),
                rtp: Vec::new(),
                drained: Vec::new(),
                out: Vec::new(),
                arena: Arena::default(),
                tcp_arena: Arena::default(),
                consent_timeout: settings.consent_timeout,
                next_reports: now,
                timers: BinaryHeap::new(),
                tcp_dropped: 0,
                tcp_runs: Vec::new(),
                rate_mark: (now, 0),
                stopping: false,
                speaker_events: settings.speaker_events,
                rooms: FxHashMap::default(),
                links,
                remote: FxHashMap::default(),
                remote_keys: FxHashMap::default(),
                next_speaker_tick: now,
            };
            worker.run(rx, tcp_events).await;
        });
    })?;
    Ok((handle, thread))
}

/// Datagrams read per wakeup before commands and timers get a turn.
const RECV_BATCH: usize = 64;
/// Forwarded datagrams queued before they are handed to the kernel.
const SEND_BATCH: usize = 32;
/// How often consumers are looked at for a due sender report.
const REPORT_TICK: Duration = Duration::from_millis(200);

impl Worker {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut tcp_events: Option<mpsc::Receiver<TcpEvent>>,
    ) {
        let socket = self.socket.clone();
        let listener = self.tcp.as_ref().map(TcpConns::listener);
        let mut buf = vec![0u8; 2048];
        let handed_over = self.links.wake.clone();
        while !self.stopping {
            let wakeup = tokio::time::Instant::from_std(self.next_wakeup());
            let accepting = Instant::now() >= self.accept_paused_until;
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => command(&mut self),
                    None => break,
                },
                received = socket.recv(&mut buf) => {
                    if let Ok(first) = received {
                        let now = Instant::now();
                        self.on_datagram(now, first.source, first.local, &buf[..first.len]);
                        for _ in 1..RECV_BATCH {
                            match socket.try_recv(&mut buf) {
                                Ok(r) => self.on_datagram(now, r.source, r.local, &buf[..r.len]),
                                Err(_) => break,
                            }
                        }
                        self.forward_all(now);
                    }
                }
                accepted = accept(listener.as_deref()), if accepting => self.on_accept(accepted),
                Some(event) = next_tcp_event(&mut tcp_events) => {
                    let now = Instant::now();
                    self.on_tcp_event(now, event);
                    for _ in 1..RECV_BATCH {
                        match tcp_events.as_mut().map(mpsc::Receiver::try_recv) {
                            Some(Ok(event)) => self.on_tcp_event(now, event),
                            _ => break,
                        }
                    }
                    self.forward_all(now);
                }
                () = handed_over.notified() => self.drain_inbound(Instant::now()),
                () = tokio::time::sleep_until(wakeup) => self.on_timers(),
            }
            if !self.rooms.is_empty() {
                self.tick_speakers(Instant::now());
            }
            self.flush();
            self.links.wake_pending();
            self.update_counts();
        }
        self.transports.clear();
        self.transport_keys.clear();
        self.producers.clear();
        self.consumers.clear();
        self.consumer_keys.clear();
        self.remote.clear();
        self.remote_keys.clear();
        self.rooms.clear();
        self.update_counts();
    }

    /// Hands the queued packets over: TCP frames to their connections, datagrams to
    /// the kernel; str0m's first (handshakes), then the worker's own.
    fn flush(&mut self) {
        self.tcp_dropped += flush(&self.socket, self.tcp.as_ref(), &mut self.out);
        self.flush_arenas();
    }

    /// Hands the worker's own sealed packets over.
    fn flush_arenas(&mut self) {
        self.socket.send_arena(&mut self.arena);
        if self.tcp_arena.is_empty() {
            return;
        }
        if let Some(tcp) = &self.tcp {
            // Each connection's frames of this wake-up, in their order, in one buffer.
            let runs = &mut self.tcp_runs;
            runs.clear();
            let packets = self.tcp_arena.packets();
            runs.extend(packets.iter().enumerate().filter_map(|(i, p)| match p.route {
                Route::Tcp(conn) => Some((conn, i)),
                Route::Udp(_) => None,
            }));
            runs.sort_unstable();
            for run in runs.chunk_by(|a, b| a.0 == b.0) {
                let data = |i: usize| self.tcp_arena.data(&packets[i]);
                let mut frames = Vec::with_capacity(run.iter().map(|&(_, i)| 2 + data(i).len()).sum());
                let mut count = 0;
                for &(_, i) in run {
                    count += u64::from(push_frame(&mut frames, data(i)));
                }
                if !tcp.send(run[0].0, frames) {
                    self.tcp_dropped += count;
                }
            }
        }
        self.tcp_arena.clear();
    }

    fn update_counts(&self) {
        let tcp = self.tcp.as_ref().map_or(0, |t| t.counts().0);
        self.counts.tcp_connections.store(tcp, Ordering::Relaxed);
        self.counts.transports.store(self.transports.len(), Ordering::Relaxed);
        self.counts.producers.store(self.producers.len(), Ordering::Relaxed);
        self.counts.consumers.store(self.consumers.len(), Ordering::Relaxed);
        self.counts.send_drops.store(self.socket.dropped() + self.tcp_dropped, Ordering::Relaxed);
        self.traffic.publish(&self.counts.traffic);
    }

    /// The earliest transport deadline, sender reports or speaker tick (at most a second
    /// away, so idle TCP connections are looked for every second).
    fn next_wakeup(&self) -> Instant {
        let idle = (Instant::now() + Duration::from_secs(1)).min(self.next_reports);
        let idle = self.speaker_deadline().map_or(idle, |t| t.min(idle));
        self.timers.peek().map_or(idle, |Reverse((t, _))| (*t).min(idle))
    }

    /// Puts a transport's current deadline in the timer heap, if it changed.
    fn schedule(timers: &mut BinaryHeap<Reverse<(Instant, TransportKey)>>, key: TransportKey, t: &mut Transport) {
        if t.scheduled != Some(t.next_timeout) {
            t.scheduled = Some(t.next_timeout);
            timers.push(Reverse((t.next_timeout, key)));
        }
    }

    /// Runs the timeouts of the transports that are due; once a second, closes idle
    /// TCP connections and takes the forwarding rate.
    fn on_timers(&mut self) {
        let now = Instant::now();
        if now >= self.next_sweep {
            self.next_sweep = now + Duration::from_secs(1);
            let forwarded = self.traffic.packets_sent;
            let (since, then) = std::mem::replace(&mut self.rate_mark, (now, forwarded));
            let secs = now.duration_since(since).as_secs_f64().max(1e-3);
            let rate = ((forwarded - then) as f64 / secs) as u64;
            self.counts.forwarded_per_sec.store(rate, Ordering::Relaxed);
            let expired = self.tcp.as_mut().map(|t| t.expire(now)).unwrap_or_default();
            for (conn, closed) in expired {
                if let Some(t) = closed.transport.and_then(|key| self.transports.get_mut(key)) {
                    t.forget_connection(conn);
                }
            }
        }
        while let Some(&Reverse((at, key))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(t) = self.transports.get_mut(key) else {
                continue;
            };
            if t.scheduled != Some(at) {
                continue; // stale: the transport's deadline moved
            }
            t.scheduled = None;
            t.timeout(now, &mut Sink { out: &mut self.out, rtp: &mut self.drained });
            Self::schedule(&mut self.timers, key, t);
        }
        // Timers never yield RTP; drop anything unexpected rather than forward late.
        self.drained.clear();
        if now >= self.next_reports {
            self.next_reports = now + REPORT_TICK;
            self.send_reports(now);
        }
    }

    fn key_of(&self, id: &TransportId, owner: &PeerId) -> Result<TransportKey, MediaError> {
        match self.transport_keys.get(id) {
            Some(&key) if owned_by(&self.transports, key, owner) => Ok(key),
            _ => Err(MediaError::not_found("transport", id)),
        }
    }

    fn transport_of(&mut self, id: &TransportId, owner: &PeerId) -> Result<&mut Transport, MediaError> {
        let key = self.key_of(id, owner)?;
        self.transports.get_mut(key).ok_or_else(|| MediaError::not_found("transport", id))
    }
}

/// Whether the transport at `key` exists and belongs to `owner` (a consumer belongs to
/// its transport's owner). A free function, so that it can be asked while another
/// part of the worker is borrowed.
fn owned_by(transports: &Slab<Transport>, key: TransportKey, owner: &PeerId) -> bool {
    transports.get(key).is_some_and(|t| &t.owner == owner)
}

/// Sends and clears `out`: TCP frames to their connections, datagrams to the kernel
/// (which counts its own drops). Returns the TCP frames dropped on full queues.
fn flush(socket: &MediaSocket, tcp: Option<&TcpConns>, out: &mut Vec<Outgoing>) -> u64 {
    let mut dropped = 0;
    if let Some(tcp) = tcp {
        out.retain_mut(|o| match o.route {
            Route::Tcp(conn) => {
                let mut frame = Vec::with_capacity(2 + o.data.len());
                if push_frame(&mut frame, &o.data) {
                    dropped += u64::from(!tcp.send(conn, frame));
                }
                false
            }
            Route::Udp(_) => true,
        });
    }
    socket.send_all(out);
    dropped
}

/// The next connection on the ICE-TCP listener (never, without one).
async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// The next frame or close from ICE-TCP readers (never, without TCP).
async fn next_tcp_event(events: &mut Option<mpsc::Receiver<TcpEvent>>) -> Option<TcpEvent> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod memory {
    use super::*;

    /// What the worker keeps per consumer (its slab entry, its heap, its id's map entry,
    /// its key in the producer's list and its MID in its transport's), averaged over a
    /// thousand.
    #[test]
    fn a_consumer_fits_its_heap_budget() {
        const N: usize = 1000;
        let uuid = || uuid::Uuid::new_v4().to_string();
        let mut consumers = Slab::new();
        let mut keys = FxHashMap::default();
        let mut fan_out = Vec::new();
        let mut mids = Vec::new();
        let producer = ProducerId::from(uuid().as_str());
        let now = Instant::now();
        let info = allocation_counter::measure(|| {
            for _ in 0..N {
                let id = ConsumerId::from(uuid().as_str());
                let key = consumers.insert(Consumer {
                    id: id.clone(),
                    transport: 0,
                    producer: producer.clone(),
                    mid: "0".into(),
                    ssrc: 1,
                    paused: true,
                    seq: SeqRewriter::new(0),
                    timestamp_offset: 0,
                    header: RtpHeader::new(crate::router::OPUS_PT, 1, Some((1, "0")), None),
                    cname: uuid().into(),
                    sent: SentClock::new(now),
                });
                keys.insert(id, key);
                fan_out.push(key);
                mids.push(key.to_string());
            }
        });
        let per = info.bytes_current as usize / N;
        println!("consumer: {per} bytes ({} inline)", std::mem::size_of::<Consumer>());
        assert!(per <= 1024, "a consumer keeps {per} bytes in the worker; the budget is 1 KiB");
    }
}
