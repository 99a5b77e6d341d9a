//! A media worker: one thread, one UDP socket, the transports of its rooms.
//!
//! The worker is an actor. The signaling side sends it closures over a channel
//! ([`WorkerHandle::call`]); the worker runs them with exclusive access to its state,
//! between datagrams and timers, on its own single-threaded runtime. Nothing here is
//! shared or locked.
//!
//! Demultiplexing: STUN binding requests are routed by the server ufrag in their
//! USERNAME, which also teaches the worker the client's address; every other
//! datagram is routed by its source address.
//!
//! The per-packet path: a wake-up reads up to [`RECV_BATCH`] datagrams; RTP from
//! producers is written to every consumer's transport (a slab index, no id hashing);
//! then each transport written to gets one str0m timeout, which encrypts and queues
//! everything written to it, and the queued datagrams leave in `sendmmsg` batches
//! (`udp`). Timers sit in a heap, so a wake-up touches only the transports due.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dspeak_schema::media::{Direction, Stats};
use dspeak_schema::ortc::{DtlsRole, IceParameters};
use dspeak_schema::{ConsumerId, PeerId, ProducerId, TransportId};
use rustc_hash::FxHashMap;
use slab::Slab;
use str0m::ice::StunMessage;
use str0m::net::Protocol;
use str0m::rtp::RtpPacket;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use super::dtls::{Expected, Identity};
use super::router::ProducerStream;
use super::tcp::{ConnId, TcpConns, TcpEvent};
use super::traffic::{DropReason, LocalTraffic, Traffic};
use super::transport::{Remote, Sink, Transport};
use super::udp::{MediaSocket, Outgoing, Route};
use crate::error::MediaError as Error;

type Command = Box<dyn FnOnce(&mut Worker) + Send>;

/// Live counts of one worker, readable without asking it.
#[derive(Debug, Default)]
pub(crate) struct WorkerCounts {
    pub(crate) transports: AtomicUsize,
    pub(crate) producers: AtomicUsize,
    pub(crate) consumers: AtomicUsize,
    /// Rooms pinned to this worker (maintained by the room registry).
    pub(crate) rooms: AtomicUsize,
    /// Packet and byte totals, for monitoring.
    pub(crate) traffic: Traffic,
    /// Open ICE-TCP connections, attached or not.
    pub(crate) tcp_connections: AtomicUsize,
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
        f: impl FnOnce(&mut Worker) -> Result<R, Error> + Send + 'static,
    ) -> Result<R, Error> {
        let (tx, rx) = oneshot::channel();
        let command: Command = Box::new(move |w| {
            let _ = tx.send(f(w));
        });
        self.commands.send(command).map_err(|_| Error::Unavailable)?;
        rx.await.unwrap_or(Err(Error::Unavailable))
    }

    /// Whether the worker's thread is still running.
    pub(crate) fn is_running(&self) -> bool {
        !self.commands.is_closed()
    }

    /// Asks the worker to close everything and stop.
    pub(crate) fn stop(&self) {
        let _ = self.commands.send(Box::new(|w| w.stopping = true));
    }
}

/// A consumer closed because its producer closed; its owner must be told.
#[derive(Debug)]
pub(crate) struct ClosedConsumer {
    pub(crate) consumer: ConsumerId,
    pub(crate) producer: ProducerId,
    pub(crate) owner: PeerId,
}

/// A transport's index in the worker's slab.
type TransportKey = usize;

/// A producer as the worker sees it.
struct Producer {
    transport: TransportKey,
    stream: ProducerStream,
    paused: bool,
    consumers: Vec<ConsumerId>,
    packets: u64,
    bytes: u64,
    policer: super::police::Policer,
}

/// A consumer as the worker sees it.
struct Consumer {
    owner: PeerId,
    transport: TransportKey,
    producer: ProducerId,
    mid: String,
    ssrc: u32,
    paused: bool,
    seq: SeqRewriter,
    timestamp_offset: u32,
    packets: u64,
    bytes: u64,
}

/// Rewrites a producer's sequence numbers into a consumer's continuous sequence: the
/// first packet after a (re)start continues right after the last one sent, and gaps
/// from upstream loss are kept.
#[derive(Debug)]
struct SeqRewriter {
    last_out: u64,
    offset: i64,
    /// Lowest output number of the current run; older packets are dropped.
    run_start: u64,
    synced: bool,
}

impl SeqRewriter {
    fn new(start: u64) -> Self {
        SeqRewriter { last_out: start, offset: 0, run_start: start, synced: false }
    }

    fn rewrite(&mut self, seq_in: u64) -> Option<u64> {
        if !self.synced {
            self.offset = (self.last_out + 1) as i64 - seq_in as i64;
            self.run_start = self.last_out + 1;
            self.synced = true;
        }
        let out = u64::try_from(seq_in as i64 + self.offset).ok()?;
        if out < self.run_start {
            return None;
        }
        self.last_out = self.last_out.max(out);
        Some(out)
    }

    fn resync(&mut self) {
        self.synced = false;
    }
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
    consumers: FxHashMap<ConsumerId, Consumer>,
    counts: Arc<WorkerCounts>,
    traffic: LocalTraffic,
    /// Received RTP waiting to be forwarded, with the transport it came on (reused).
    rtp: Vec<(TransportKey, RtpPacket)>,
    /// Scratch for one transport's drain (reused).
    drained: Vec<RtpPacket>,
    /// Transports written to since their last timeout.
    written: Vec<TransportKey>,
    /// Datagrams to send at the end of the wake-up.
    out: Vec<Outgoing>,
    /// Transports by deadline. An entry whose deadline is no longer the transport's
    /// `scheduled` one is stale and skipped.
    timers: BinaryHeap<Reverse<(Instant, TransportKey)>>,
    stopping: bool,
}

/// Spawns a worker thread on a bound socket (and a listening TCP socket on the same
/// port for ICE-TCP). `locals` are the host candidate addresses.
pub(crate) fn spawn(
    index: usize,
    socket: std::net::UdpSocket,
    listener: Option<std::net::TcpListener>,
    locals: Vec<SocketAddr>,
    identity: Arc<Identity>,
) -> Result<(WorkerHandle, std::thread::JoinHandle<()>), std::io::Error> {
    let port = socket.local_addr()?.port();
    let locals: Arc<[SocketAddr]> = locals.into();
    let (commands, rx) = mpsc::unbounded_channel();
    let counts = Arc::new(WorkerCounts::default());
    let handle = WorkerHandle { index, port, commands, counts: counts.clone() };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let thread = std::thread::Builder::new().name(format!("dspeak-media-{index}")).spawn(move || {
        counts.traffic.set_current_thread();
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
                consumers: FxHashMap::default(),
                counts,
                traffic: LocalTraffic::default(),
                rtp: Vec::new(),
                drained: Vec::new(),
                written: Vec::new(),
                out: Vec::new(),
                timers: BinaryHeap::new(),
                stopping: false,
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

impl Worker {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut tcp_events: Option<mpsc::Receiver<TcpEvent>>,
    ) {
        let socket = self.socket.clone();
        let listener = self.tcp.as_ref().map(TcpConns::listener);
        let mut buf = vec![0u8; 2048];
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
                () = tokio::time::sleep_until(wakeup) => self.on_timers(),
            }
            self.flush();
            self.update_counts();
        }
        self.transports.clear();
        self.transport_keys.clear();
        self.producers.clear();
        self.consumers.clear();
        self.update_counts();
    }

    /// Hands the queued packets over: TCP frames to their connections, datagrams to
    /// the kernel.
    fn flush(&mut self) {
        flush(&self.socket, self.tcp.as_ref(), &mut self.out);
    }

    fn update_counts(&self) {
        let tcp = self.tcp.as_ref().map_or(0, |t| t.counts().0);
        self.counts.tcp_connections.store(tcp, Ordering::Relaxed);
        self.counts.transports.store(self.transports.len(), Ordering::Relaxed);
        self.counts.producers.store(self.producers.len(), Ordering::Relaxed);
        self.counts.consumers.store(self.consumers.len(), Ordering::Relaxed);
        self.traffic.publish(&self.counts.traffic);
    }

    /// The earliest transport deadline (at most a second away, so idle TCP
    /// connections are looked for every second).
    fn next_wakeup(&self) -> Instant {
        let idle = Instant::now() + Duration::from_secs(1);
        self.timers.peek().map_or(idle, |Reverse((t, _))| (*t).min(idle))
    }

    /// Puts a transport's current deadline in the timer heap, if it changed.
    fn schedule(timers: &mut BinaryHeap<Reverse<(Instant, TransportKey)>>, key: TransportKey, t: &mut Transport) {
        if t.scheduled != Some(t.next_timeout) {
            t.scheduled = Some(t.next_timeout);
            timers.push(Reverse((t.next_timeout, key)));
        }
    }

    /// Routes one datagram to its transport; received RTP waits in `self.rtp` for
    /// [`Worker::forward_all`]. `local` is the address it arrived on (wildcard sockets).
    fn on_datagram(&mut self, now: Instant, source: SocketAddr, local: Option<IpAddr>, data: &[u8]) {
        let key = match self.by_addr.get(&source) {
            Some(&key) if !is_stun(data) => key,
            _ if !is_stun(data) => return self.traffic.drop(DropReason::Unroutable),
            _ => match self.authenticate(data) {
                Some(key) => {
                    if self.transports.get_mut(key).is_some_and(|t| t.learn_remote(source, Route::Udp(local))) {
                        self.by_addr.insert(source, key);
                    }
                    key
                }
                // Not a valid check: only a known client's other STUN goes on.
                None => match self.by_addr.get(&source) {
                    Some(&key) if !is_binding_request(data) => key,
                    _ => return self.traffic.drop(DropReason::Unroutable),
                },
            },
        };
        self.feed(now, key, Protocol::Udp, source, local, data);
    }

    /// Feeds one packet to a transport, and keeps the RTP it yields for forwarding.
    fn feed(
        &mut self,
        now: Instant,
        key: TransportKey,
        protocol: Protocol,
        source: SocketAddr,
        local: Option<IpAddr>,
        data: &[u8],
    ) {
        let Some(transport) = self.transports.get_mut(key) else {
            return;
        };
        // A datagram is peer input: should str0m panic on one, only its transport fails,
        // not the worker and every room on it.
        let received = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let sink = &mut Sink { out: &mut self.out, rtp: &mut self.drained };
            transport.receive(now, protocol, source, local, data, sink)
        }));
        if received.is_err() {
            tracing::error!(transport = %transport.id, %source, "str0m panicked on a datagram; the transport is failed");
            transport.poison();
            let remotes = std::mem::take(&mut transport.remotes);
            self.detach(remotes);
            self.drained.clear();
            return;
        }
        Self::schedule(&mut self.timers, key, transport);
        self.rtp.extend(self.drained.drain(..).map(|p| (key, p)));
    }

    /// Forgets a transport's client addresses: UDP routes, and its TCP connections,
    /// which are closed.
    fn detach(&mut self, remotes: Vec<Remote>) {
        for remote in remotes {
            match remote.route {
                Route::Udp(_) => {
                    self.by_addr.remove(&remote.addr);
                }
                Route::Tcp(conn) => {
                    if let Some(tcp) = &mut self.tcp {
                        tcp.remove(conn);
                    }
                }
            }
        }
    }

    /// The transport an ICE check is for, if it is a binding request signed with
    /// that transport's password (routed by the server ufrag in its USERNAME); the
    /// transport learns the client's ufrag. Anything else is `None`.
    fn authenticate(&mut self, data: &[u8]) -> Option<TransportKey> {
        let message = StunMessage::parse(data).ok()?;
        if !message.is_binding_request() {
            return None;
        }
        let (server_ufrag, client_ufrag) = message.split_username()?;
        let key = *self.by_ufrag.get(server_ufrag)?;
        let transport = self.transports.get_mut(key)?;
        // Only a check signed with this transport's password may teach it the client's
        // ufrag and address.
        if !transport.verify_stun(&message) {
            return None;
        }
        transport.learn_remote_ufrag(client_ufrag);
        Some(key)
    }

    /// Takes a new TCP connection; after an error, stops accepting for a moment.
    fn on_accept(&mut self, accepted: std::io::Result<(TcpStream, SocketAddr)>) {
        let now = Instant::now();
        match (accepted, &mut self.tcp) {
            (Ok((stream, remote)), Some(tcp)) => tcp.add(stream, remote, now),
            (Ok(_), None) => {}
            (Err(e), _) => {
                tracing::warn!(error = %e, "cannot accept an ICE-TCP connection");
                self.accept_paused_until = now + Duration::from_millis(100);
            }
        }
    }

    /// A frame or the end of an ICE-TCP connection. The first frame must be a valid
    /// check, which attaches the connection to its transport; anything else closes it.
    fn on_tcp_event(&mut self, now: Instant, event: TcpEvent) {
        let (conn, data) = match event {
            TcpEvent::Frame(conn, data) => (conn, data),
            TcpEvent::Closed(conn) => return self.close_connection(conn),
        };
        let Some((remote, local, attached)) =
            self.tcp.as_ref().and_then(|t| t.get(conn)).map(|c| (c.remote, c.local, c.transport))
        else {
            return;
        };
        let key = match attached {
            Some(key) => {
                if is_binding_request(&data)
                    && self.authenticate(&data) == Some(key)
                    && let Some(tcp) = &mut self.tcp
                {
                    tcp.refresh(conn, now);
                }
                key
            }
            None => match self.authenticate(&data) {
                Some(key) => {
                    if let Some(t) = self.transports.get_mut(key) {
                        t.learn_remote(remote, Route::Tcp(conn));
                    }
                    if let Some(tcp) = &mut self.tcp {
                        tcp.attach(conn, key, now);
                    }
                    key
                }
                None => return self.close_connection(conn),
            },
        };
        self.feed(now, key, Protocol::Tcp, remote, Some(local.ip()), &data);
    }

    /// Closes an ICE-TCP connection; its transport forgets it.
    fn close_connection(&mut self, conn: ConnId) {
        let closed = self.tcp.as_mut().and_then(|t| t.remove(conn));
        if let Some(t) = closed.and_then(|c| c.transport).and_then(|key| self.transports.get_mut(key)) {
            t.forget_connection(conn);
        }
    }

    /// Forwards the RTP received in this wake-up, then lets every transport written to
    /// send what it got (one str0m timeout each, however many packets).
    fn forward_all(&mut self, now: Instant) {
        let mut rtp = std::mem::take(&mut self.rtp);
        for (from, packet) in rtp.drain(..) {
            self.forward(from, &packet, now);
        }
        self.rtp = rtp;
        for key in self.written.drain(..) {
            if let Some(t) = self.transports.get_mut(key) {
                t.timeout(now, &mut Sink { out: &mut self.out, rtp: &mut self.drained });
                Self::schedule(&mut self.timers, key, t);
            }
            // Send as we go, so the first consumers do not wait for the last ones.
            if self.out.len() >= SEND_BATCH {
                flush(&self.socket, self.tcp.as_ref(), &mut self.out);
            }
        }
        // Consumer transports never yield RTP; drop anything unexpected.
        self.drained.clear();
    }

    /// Writes one producer packet to every active consumer of it.
    fn forward(&mut self, from: TransportKey, packet: &RtpPacket, now: Instant) {
        let Some(transport) = self.transports.get(from) else {
            return;
        };
        let Some(producer_id) = transport.producers.get(&*packet.header.ssrc) else {
            return;
        };
        let Some(producer) = self.producers.get_mut(producer_id) else {
            return;
        };
        producer.packets += 1;
        producer.bytes += packet.payload.len() as u64;
        self.traffic.packets_received += 1;
        self.traffic.bytes_received += packet.payload.len() as u64;
        if producer.paused {
            return self.traffic.drop(DropReason::ProducerPaused);
        }
        if *packet.header.payload_type != producer.stream.payload_type {
            return self.traffic.drop(DropReason::PayloadType);
        }
        if !producer.policer.admit(now, packet.payload.len()) {
            let dropped = producer.policer.dropped;
            if dropped.is_power_of_two() {
                tracing::debug!(producer = %producer_id, dropped, "policing a producer over its rate");
            }
            return self.traffic.drop(DropReason::Policed);
        }
        for consumer_id in &producer.consumers {
            let Some(consumer) = self.consumers.get_mut(consumer_id) else {
                continue;
            };
            if consumer.paused {
                self.traffic.drop(DropReason::ConsumerPaused);
                continue;
            }
            let Some(target) = self.transports.get_mut(consumer.transport) else {
                continue;
            };
            if !target.is_connected() {
                self.traffic.drop(DropReason::NotConnected);
                continue;
            }
            let Some(seq) = consumer.seq.rewrite(*packet.seq_no) else {
                self.traffic.drop(DropReason::Stale);
                continue;
            };
            let timestamp = packet.header.timestamp.wrapping_add(consumer.timestamp_offset);
            let first = !target.written;
            if target.write_rtp(now, consumer.ssrc, seq, timestamp, packet.header.marker, packet.payload.clone()) {
                consumer.packets += 1;
                consumer.bytes += packet.payload.len() as u64;
                self.traffic.packets_sent += 1;
                self.traffic.bytes_sent += packet.payload.len() as u64;
                if first {
                    self.written.push(consumer.transport);
                }
            }
        }
    }

    /// Runs the timeouts of the transports that are due, and closes idle TCP
    /// connections (once a second).
    fn on_timers(&mut self) {
        let now = Instant::now();
        if now >= self.next_sweep {
            self.next_sweep = now + Duration::from_secs(1);
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
    }

    fn key_of(&self, id: &TransportId, owner: &PeerId) -> Result<TransportKey, Error> {
        match self.transport_keys.get(id) {
            Some(&key) if self.transports.get(key).is_some_and(|t| &t.owner == owner) => Ok(key),
            _ => Err(Error::not_found("transport", id)),
        }
    }

    fn transport_of(&mut self, id: &TransportId, owner: &PeerId) -> Result<&mut Transport, Error> {
        let key = self.key_of(id, owner)?;
        self.transports.get_mut(key).ok_or_else(|| Error::not_found("transport", id))
    }

    // ---- commands (run through `WorkerHandle::call`) ----

    /// Creates a transport and returns its ICE parameters.
    pub(crate) fn create_transport(
        &mut self,
        id: TransportId,
        owner: PeerId,
        direction: Direction,
    ) -> Result<IceParameters, Error> {
        let now = Instant::now();
        let tcp = self.tcp.is_some();
        let mut transport = Transport::new(id.clone(), owner, direction, &self.identity, &self.locals, tcp, now)?;
        transport.timeout(now, &mut Sink { out: &mut self.out, rtp: &mut self.drained });
        let ice = transport.ice_parameters();
        let ufrag = transport.local_ufrag.clone();
        let key = self.transports.insert(transport);
        if let Some(t) = self.transports.get_mut(key) {
            Self::schedule(&mut self.timers, key, t);
        }
        self.by_ufrag.insert(ufrag, key);
        self.transport_keys.insert(id, key);
        Ok(ice)
    }

    /// Starts DTLS with the client's fingerprint and role.
    pub(crate) fn connect_transport(
        &mut self,
        id: &TransportId,
        owner: &PeerId,
        expected: Expected,
        role: DtlsRole,
    ) -> Result<(), Error> {
        let key = self.key_of(id, owner)?;
        let Some(transport) = self.transports.get_mut(key) else {
            return Err(Error::not_found("transport", id));
        };
        let result = transport.connect(expected, role, &mut Sink { out: &mut self.out, rtp: &mut self.drained });
        Self::schedule(&mut self.timers, key, transport);
        result
    }

    /// New server ICE credentials for a transport.
    pub(crate) fn restart_ice(&mut self, id: &TransportId, owner: &PeerId) -> Result<IceParameters, Error> {
        let key = self.key_of(id, owner)?;
        let Some(transport) = self.transports.get_mut(key) else {
            return Err(Error::not_found("transport", id));
        };
        let old = transport.local_ufrag.clone();
        let ice = transport.restart_ice(&mut Sink { out: &mut self.out, rtp: &mut self.drained });
        let new = transport.local_ufrag.clone();
        Self::schedule(&mut self.timers, key, transport);
        self.by_ufrag.remove(&old);
        self.by_ufrag.insert(new, key);
        Ok(ice)
    }

    /// Adds a producer on a send transport.
    pub(crate) fn produce(
        &mut self,
        id: ProducerId,
        transport_id: &TransportId,
        owner: &PeerId,
        stream: ProducerStream,
    ) -> Result<(), Error> {
        let key = self.key_of(transport_id, owner)?;
        let transport = self.transport_of(transport_id, owner)?;
        if transport.direction != Direction::Send {
            return Err(Error::InvalidState(format!(
                "transport '{transport_id}' is a recv transport; produce needs a send transport"
            )));
        }
        if transport.producers.contains_key(&stream.ssrc) {
            return Err(Error::InvalidState(format!("ssrc {} is already produced on this transport", stream.ssrc)));
        }
        let mid = transport.declare_mid(&stream.mid)?;
        transport.expect_stream(mid, stream.ssrc);
        transport.producers.insert(stream.ssrc, id.clone());
        let producer = Producer {
            transport: key,
            stream,
            paused: false,
            consumers: Vec::new(),
            packets: 0,
            bytes: 0,
            policer: Default::default(),
        };
        self.producers.insert(id, producer);
        Ok(())
    }

    /// Adds a (paused) consumer of `producer` on a recv transport.
    pub(crate) fn consume(
        &mut self,
        id: ConsumerId,
        transport_id: &TransportId,
        owner: &PeerId,
        producer_id: &ProducerId,
        ssrc: u32,
    ) -> Result<(ProducerStream, String, bool), Error> {
        let producer = self.producers.get(producer_id).ok_or_else(|| Error::not_found("producer", producer_id))?;
        let (stream, producer_paused) = (producer.stream.clone(), producer.paused);
        let key = self.key_of(transport_id, owner)?;
        let transport = self.transport_of(transport_id, owner)?;
        if transport.direction != Direction::Recv {
            return Err(Error::InvalidState(format!(
                "transport '{transport_id}' is a send transport; consume needs a recv transport"
            )));
        }
        let mid = (0u32..).map(|n| n.to_string()).find(|m| !transport.mids.contains(m)).unwrap_or_default();
        let declared = transport.declare_mid(&mid)?;
        transport.declare_stream(declared, ssrc);
        let random = uuid::Uuid::new_v4().as_u128();
        let consumer = Consumer {
            owner: owner.clone(),
            transport: key,
            producer: producer_id.clone(),
            mid: mid.clone(),
            ssrc,
            paused: true,
            seq: SeqRewriter::new((random & 0x3fff) as u64),
            timestamp_offset: (random >> 32) as u32,
            packets: 0,
            bytes: 0,
        };
        self.consumers.insert(id.clone(), consumer);
        if let Some(p) = self.producers.get_mut(producer_id) {
            p.consumers.push(id);
        }
        Ok((stream, mid, producer_paused))
    }

    /// Pauses or resumes a producer.
    pub(crate) fn set_producer_paused(&mut self, id: &ProducerId, paused: bool) -> Result<(), Error> {
        let producer = self.producers.get_mut(id).ok_or_else(|| Error::not_found("producer", id))?;
        if producer.paused && !paused {
            for c in &producer.consumers {
                if let Some(c) = self.consumers.get_mut(c) {
                    c.seq.resync();
                }
            }
        }
        producer.paused = paused;
        Ok(())
    }

    /// Pauses or resumes a consumer of `owner`.
    pub(crate) fn set_consumer_paused(&mut self, id: &ConsumerId, owner: &PeerId, paused: bool) -> Result<(), Error> {
        let consumer = match self.consumers.get_mut(id) {
            Some(c) if &c.owner == owner => c,
            _ => return Err(Error::not_found("consumer", id)),
        };
        if consumer.paused && !paused {
            consumer.seq.resync();
        }
        consumer.paused = paused;
        Ok(())
    }

    /// Closes a producer and its consumers; returns the consumers closed.
    pub(crate) fn close_producer(&mut self, id: &ProducerId) -> Vec<ClosedConsumer> {
        let Some(producer) = self.producers.remove(id) else {
            return Vec::new();
        };
        if let Some(t) = self.transports.get_mut(producer.transport) {
            t.producers.remove(&producer.stream.ssrc);
            t.remove_mid(&producer.stream.mid);
        }
        producer
            .consumers
            .into_iter()
            .filter_map(|c| {
                let owner = self.remove_consumer(&c)?;
                Some(ClosedConsumer { consumer: c, producer: id.clone(), owner })
            })
            .collect()
    }

    /// Closes a consumer; returns its owner if it existed.
    pub(crate) fn remove_consumer(&mut self, id: &ConsumerId) -> Option<PeerId> {
        let consumer = self.consumers.remove(id)?;
        if let Some(p) = self.producers.get_mut(&consumer.producer) {
            p.consumers.retain(|c| c != id);
        }
        if let Some(t) = self.transports.get_mut(consumer.transport) {
            t.remove_mid(&consumer.mid);
        }
        Some(consumer.owner)
    }

    /// Closes a consumer of `owner`.
    pub(crate) fn close_consumer(&mut self, id: &ConsumerId, owner: &PeerId) -> Result<(), Error> {
        match self.consumers.get(id) {
            Some(c) if &c.owner == owner => {
                self.remove_consumer(id);
                Ok(())
            }
            _ => Err(Error::not_found("consumer", id)),
        }
    }

    /// Closes a transport with everything on it; returns consumers of other peers that
    /// were closed because a producer on this transport closed.
    pub(crate) fn close_transport(&mut self, id: &TransportId) -> Vec<ClosedConsumer> {
        let Some(key) = self.transport_keys.remove(id) else {
            return Vec::new();
        };
        let Some(transport) = self.transports.try_remove(key) else {
            return Vec::new();
        };
        self.by_ufrag.remove(&transport.local_ufrag);
        self.detach(transport.remotes);
        let producers: Vec<ProducerId> = transport.producers.values().cloned().collect();
        let mut closed = Vec::new();
        for p in producers {
            closed.extend(self.close_producer(&p));
        }
        let consumers: Vec<ConsumerId> =
            self.consumers.iter().filter(|(_, c)| c.transport == key).map(|(k, _)| k.clone()).collect();
        for c in consumers {
            self.remove_consumer(&c);
        }
        closed
    }

    /// Statistics of a transport, producer or consumer of `owner`.
    pub(crate) fn stats(&self, id: &str, owner: &PeerId) -> Result<Stats, Error> {
        let transport = self.transport_keys.get(&TransportId::from(id)).and_then(|&k| self.transports.get(k));
        if let Some(t) = transport.filter(|t| &t.owner == owner) {
            return Ok(Stats::Transport {
                id: t.id.clone(),
                ice_state: format!("{:?}", t.ice).to_lowercase(),
                dtls_state: t.dtls.as_str().into(),
                packets_received: t.counters.packets_received as u32,
                packets_sent: t.counters.packets_sent as u32,
                bytes_received: t.counters.bytes_received as f64,
                bytes_sent: t.counters.bytes_sent as f64,
            });
        }
        if let Some(p) = self.producers.get(&ProducerId::from(id)) {
            let owned = self.transports.get(p.transport).is_some_and(|t| &t.owner == owner);
            if owned {
                return Ok(Stats::Producer {
                    id: ProducerId::from(id),
                    paused: p.paused,
                    ssrc: p.stream.ssrc,
                    packets_received: p.packets as u32,
                    bytes_received: p.bytes as f64,
                });
            }
        }
        if let Some(c) = self.consumers.get(&ConsumerId::from(id)).filter(|c| &c.owner == owner) {
            let producer_paused = self.producers.get(&c.producer).is_some_and(|p| p.paused);
            return Ok(Stats::Consumer {
                id: ConsumerId::from(id),
                paused: c.paused,
                producer_paused,
                ssrc: c.ssrc,
                packets_sent: c.packets as u32,
                bytes_sent: c.bytes as f64,
            });
        }
        Err(Error::not_found("transport, producer or consumer", id))
    }
}

/// RFC 7983: STUN messages start with 0 or 1 and are at least 20 bytes.
fn is_stun(data: &[u8]) -> bool {
    data.len() >= 20 && data[0] < 2
}

/// A STUN binding request (message type 0x0001), before parsing it.
fn is_binding_request(data: &[u8]) -> bool {
    is_stun(data) && data[0] == 0 && data[1] == 1
}

/// Sends and clears `out`: TCP frames to their connections, datagrams to the kernel.
fn flush(socket: &MediaSocket, tcp: Option<&TcpConns>, out: &mut Vec<Outgoing>) {
    if let Some(tcp) = tcp {
        out.retain_mut(|o| match o.route {
            Route::Tcp(conn) => {
                tcp.send(conn, std::mem::take(&mut o.data));
                false
            }
            Route::Udp(_) => true,
        });
    }
    socket.send_all(out);
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
mod tests {
    use super::SeqRewriter;

    #[test]
    fn sequence_continues_across_pauses_and_keeps_gaps() {
        let mut s = SeqRewriter::new(100);
        assert_eq!(s.rewrite(5000), Some(101));
        assert_eq!(s.rewrite(5001), Some(102));
        assert_eq!(s.rewrite(5003), Some(104), "upstream loss stays a gap");
        assert_eq!(s.rewrite(5002), Some(103), "reordered packets pass");
        s.resync();
        assert_eq!(s.rewrite(9000), Some(105), "after a pause the stream continues");
        assert_eq!(s.rewrite(8999), None, "packets from before the pause are dropped");
        assert_eq!(s.rewrite(9001), Some(106));
    }
}
