//! The media engine: a pure-Rust SFU on str0m that speaks mediasoup's ORTC protocol.
//!
//! [`Engine`] owns the media workers (one thread and one UDP port each, one per core
//! by default), started from an [`EngineConfig`]. [`Engine::router`] opens a room and
//! returns its [`RouterHandle`], the typed API of the engine: async methods to create,
//! connect, produce, consume, pause, close and inspect, failing with [`MediaError`].
//! A room spans the workers: each transport is placed on the worker forwarding the
//! fewest packets per second, and a producer's packets reach its consumers on other
//! workers through lock-free single-producer/single-consumer rings, once per worker
//! and one wake-up per batch, so one room can use every core. Within a worker nothing
//! is locked. The engine knows nothing of sessions, rooms' announcements, the JSON-RPC
//! layer or the server's flags.
//!
//! - `router`: capabilities and ORTC negotiation (what producers may send, what
//!   consumers receive); `handle`: [`RouterHandle`], the typed engine API, which
//!   places transports and routes each command to the worker holding its object.
//! - `cross`: the rings between workers and their records (packets, level samples).
//! - `transport`: one ICE-lite `Rtc` per WebRTC transport; `lite`: what a listener
//!   transport keeps instead once connected (ICE answers, SRTCP in).
//! - `worker`: the worker actor: I/O loop and demultiplexing (`worker::io`),
//!   forwarding (`worker::forward`), the commands (`worker::commands`), producers of
//!   other workers (`worker::remote`), the rooms' speaker detectors (`worker::speakers`).
//! - `dtls`: certificate, fingerprints, peer-certificate verification.
//! - `udp`: batched datagram output (`sendmmsg`); `tcp`: ICE-TCP connections.
//! - `traffic`: per-worker packet/byte/drop counters, published once per wake-up and
//!   read by [`Engine::workers`] for scrapes.
//! - `srtp`: SRTP/SRTCP sealing from DTLS keying material; `egress`: the consumers'
//!   prebuilt RTP headers and sender reports, which the worker seals and sends itself.
//! - `speaker`: active-speaker detection from RFC 6464 audio levels (smoothed level,
//!   hysteresis, minimum hold), the per-room state the worker feeds, and the upward
//!   channel ([`RouterEvent`]s) a router's room gets from [`Engine::router`].
//! - `config`: [`EngineConfig`]; `error`: [`MediaError`].

mod config;
mod cross;
mod dtls;
mod egress;
mod error;
mod handle;
mod ice;
mod lite;
mod police;
pub mod router;
mod speaker;
mod srtp;
mod tcp;
#[cfg(test)]
mod test_client;
mod traffic;
mod transport;
mod udp;
mod worker;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, listen, setsockopt, socket, sockopt,
};

use dspeak_schema::ortc::{IceCandidate, IceCandidateType, Protocol, TcpType};

pub use config::{CONSENT_TIMEOUT, EngineConfig};
pub use dtls::crypto_provider;
pub use error::MediaError;
pub use handle::{ClosedConsumer, RouterHandle};
pub use speaker::{ProducerLevel, RouterEvent, RouterEvents, SpeakerEvents};
pub use traffic::{DropReason, TrafficSnapshot};
use worker::{WorkerCounts, WorkerHandle};

/// ICE type preference of a host candidate (RFC 8445 §5.1.2.1).
const HOST_TYPE_PREFERENCE: u32 = 64;
/// Local preferences as mediasoup assigns them: 10000 for the first listen info, 100
/// less for each next one, and 1000 more for UDP.
const LOCAL_PREFERENCE: u32 = 10_000;
const LOCAL_PREFERENCE_STEP: u32 = 100;
const UDP_EXTRA_PREFERENCE: u32 = 1_000;

/// All media workers.
#[derive(Debug)]
pub struct Engine {
    workers: Arc<[WorkerHandle]>,
    /// The host candidates of each worker's port, in worker order.
    candidates: Arc<[Arc<[IceCandidate]>]>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// The addresses clients send media to, in the order they are announced.
    announced: Vec<IpAddr>,
    /// ICE-TCP is offered on the same ports.
    tcp: bool,
    identity: Arc<dtls::Identity>,
}

/// One worker's figures, for monitoring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerStats {
    /// The worker's index (worker i listens on the first media port + i).
    pub index: usize,
    /// Whether its thread still runs.
    pub running: bool,
    /// Rooms at home on it (it runs their speaker detectors; their transports may be
    /// on any worker).
    pub rooms: usize,
    /// WebRTC transports.
    pub transports: usize,
    /// Producers.
    pub producers: usize,
    /// Consumers.
    pub consumers: usize,
    /// Packet and byte totals since start, as last published by the worker.
    pub traffic: TrafficSnapshot,
    /// Datagrams and ICE-TCP frames dropped since start because the kernel's send
    /// buffer or a connection's queue was full.
    pub send_drops: u64,
    /// The worker thread's kernel thread id, once it runs (Linux), for its CPU time.
    pub thread_id: Option<i32>,
}

/// Live media counts over all workers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MediaCounts {
    /// WebRTC transports.
    pub transports: usize,
    /// Producers.
    pub producers: usize,
    /// Consumers.
    pub consumers: usize,
    /// Open ICE-TCP connections, attached or not.
    pub tcp_connections: usize,
    /// Datagrams and ICE-TCP frames dropped since start because the kernel's send
    /// buffer (`EAGAIN`) or a connection's queue was full.
    pub send_drops: u64,
    /// Packets forwarded to consumers per second (over about the last second).
    pub forwarded_per_sec: u64,
}

impl Engine {
    /// Binds the workers' sockets and starts their threads.
    pub fn start(config: &EngineConfig) -> Result<Engine, MediaError> {
        let (listen_ip, announced) = media_addresses(config)?;
        let identity =
            Arc::new(dtls::Identity::generate().map_err(|e| MediaError::Config(format!("DTLS certificate: {e:?}")))?);
        let count = worker_count(config);
        let cpus = if config.pin_workers { allowed_cpus()? } else { Vec::new() };
        let mut workers = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        let (links, peers) = cross::mesh(count);
        for (index, links) in links.into_iter().enumerate() {
            let port = worker_port(config, index)?;
            let (socket, listener) = bind_sockets(SocketAddr::new(listen_ip, port), config.tcp)?;
            let port = socket.local_addr()?.port();
            let locals = announced.iter().map(|&ip| SocketAddr::new(ip, port)).collect();
            let (handle, thread) = worker::spawn(
                socket,
                listener,
                locals,
                identity.clone(),
                cpus.get(index % cpus.len().max(1)).copied(),
                worker::Settings { consent_timeout: config.consent_timeout, speaker_events: config.speaker_events },
                links,
            )?;
            tracing::info!(worker = index, port = handle.port, listen = %listen_ip, announced = ?announced, "media worker started");
            workers.push(handle);
            threads.push(thread);
        }
        // The workers reach each other's command channels only once all exist.
        let _ = peers.set(workers.iter().map(WorkerHandle::weak).collect());
        let mut engine = Engine {
            workers: workers.into(),
            candidates: Arc::new([]),
            threads: Mutex::new(threads),
            announced,
            tcp: config.tcp,
            identity,
        };
        engine.candidates = engine.workers.iter().map(|w| engine.candidates(w.port).into()).collect();
        Ok(engine)
    }

    /// A router for a new room, over every worker: its transports are placed one by
    /// one on the worker forwarding the fewest packets per second. Its home (the worker
    /// that runs its speaker detector) is the worker with the fewest rooms at home.
    /// With it comes the room's upward channel: its `activeSpeaker`/`audioLevels` (per
    /// [`EngineConfig::speaker_events`]), one stream whatever the placement.
    pub fn router(&self) -> (RouterHandle, RouterEvents) {
        let home = fewest_rooms(self.workers.iter().map(|w| &*w.counts)).unwrap_or(0);
        RouterHandle::new(
            self.workers.clone(),
            home,
            self.candidates.clone(),
            self.identity.fingerprints.clone().into(),
        )
    }

    /// The host candidates clients send a worker's media to, as mediasoup announces
    /// them: UDP on every announced address, then TCP (passive) on each, with
    /// decreasing priority.
    fn candidates(&self, port: u16) -> Vec<IceCandidate> {
        let udp = self.announced.iter().map(|ip| (Protocol::Udp, ip));
        let tcp = self.announced.iter().filter(|_| self.tcp).map(|ip| (Protocol::Tcp, ip));
        udp.chain(tcp)
            .enumerate()
            .map(|(i, (protocol, ip))| {
                let (foundation, extra, tcp_type) = match protocol {
                    Protocol::Udp => ("udpcandidate", UDP_EXTRA_PREFERENCE, None),
                    Protocol::Tcp => ("tcpcandidate", 0, Some(TcpType::Passive)),
                };
                let local_preference = LOCAL_PREFERENCE - LOCAL_PREFERENCE_STEP * i as u32 + extra;
                IceCandidate {
                    foundation: foundation.into(),
                    priority: (HOST_TYPE_PREFERENCE << 24) + (local_preference << 8) + 255,
                    ip: ip.to_string(),
                    address: ip.to_string(),
                    protocol,
                    port,
                    kind: IceCandidateType::Host,
                    tcp_type,
                }
            })
            .collect()
    }

    /// Each worker's figures, in index order (for monitoring), read without asking
    /// the workers.
    pub fn workers(&self) -> Vec<WorkerStats> {
        self.workers
            .iter()
            .map(|w| WorkerStats {
                index: w.index,
                running: w.is_running(),
                rooms: w.counts.rooms.load(Ordering::Relaxed),
                transports: w.counts.transports.load(Ordering::Relaxed),
                producers: w.counts.producers.load(Ordering::Relaxed),
                consumers: w.counts.consumers.load(Ordering::Relaxed),
                traffic: w.counts.traffic.snapshot(),
                send_drops: w.counts.send_drops.load(Ordering::Relaxed),
                thread_id: w.counts.traffic.thread_id(),
            })
            .collect()
    }

    /// UDP ports of the workers, in order.
    pub fn ports(&self) -> Vec<u16> {
        self.workers.iter().map(|w| w.port).collect()
    }

    /// Live counts over all workers.
    pub fn counts(&self) -> MediaCounts {
        let mut c = MediaCounts::default();
        for w in self.workers.iter() {
            c.transports += w.counts.transports.load(Ordering::Relaxed);
            c.producers += w.counts.producers.load(Ordering::Relaxed);
            c.consumers += w.counts.consumers.load(Ordering::Relaxed);
            c.tcp_connections += w.counts.tcp_connections.load(Ordering::Relaxed);
            c.send_drops += w.counts.send_drops.load(Ordering::Relaxed);
            c.forwarded_per_sec += w.counts.forwarded_per_sec.load(Ordering::Relaxed);
        }
        c
    }

    /// Stops every worker and waits for its thread.
    pub fn stop(&self) {
        for w in self.workers.iter() {
            w.stop();
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

/// Binds and releases every worker's UDP (and ICE-TCP) port, as [`Engine::start`]
/// would (`dspeak check`); returns them as text.
pub fn check_ports(config: &EngineConfig) -> Result<String, MediaError> {
    let (listen_ip, _) = media_addresses(config)?;
    let count = worker_count(config);
    let mut sockets = Vec::with_capacity(count);
    for index in 0..count {
        let addr = SocketAddr::new(listen_ip, worker_port(config, index)?);
        sockets.push(bind_sockets(addr, config.tcp)?);
    }
    Ok(match config.port {
        0 => format!("({count}, picked by the system)"),
        base => format!("{base}-{} on {listen_ip}", base as usize + count - 1),
    })
}

/// Workers to start: the configured number, or one per CPU core; at least one.
fn worker_count(config: &EngineConfig) -> usize {
    match config.workers {
        0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        n => n,
    }
}

/// Worker `index`'s UDP port: the first media port + index, or 0 (any).
fn worker_port(config: &EngineConfig, index: usize) -> Result<u16, MediaError> {
    match config.port {
        0 => Ok(0),
        base => base
            .checked_add(index as u16)
            .ok_or_else(|| MediaError::Config(format!("media port {base} + {index} workers exceeds 65535"))),
    }
}

/// The IP the media sockets bind to and the IPs announced to clients (those of the
/// configured announced addresses the sockets can receive on).
pub fn media_addresses(config: &EngineConfig) -> Result<(IpAddr, Vec<IpAddr>), MediaError> {
    let wanted = announced_ips(config)?;
    let listen_ip = listen_ip(config.listen_ip, &wanted);
    let announced: Vec<IpAddr> = wanted.iter().copied().filter(|ip| reachable(listen_ip, *ip)).collect();
    for ip in wanted.iter().filter(|ip| !announced.contains(ip)) {
        tracing::warn!(announced = %ip, listen = %listen_ip, "not announced: the media sockets cannot reach it");
    }
    if announced.is_empty() {
        return Err(MediaError::Config(format!(
            "no announced address ({wanted:?}) is reachable from the media listen IP {listen_ip}"
        )));
    }
    Ok((listen_ip, announced))
}

/// The IPs clients send media to: every announced address (an IP, or a hostname
/// resolved now to all its addresses), else the listen IP or loopback.
fn announced_ips(config: &EngineConfig) -> Result<Vec<IpAddr>, MediaError> {
    if config.announced.is_empty() {
        return Ok(vec![if config.listen_ip.is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            config.listen_ip
        }]);
    }
    let mut ips = Vec::new();
    for address in &config.announced {
        let resolved: Vec<IpAddr> = match address.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => (address.as_str(), 0)
                .to_socket_addrs()
                .map_err(|e| MediaError::Config(format!("cannot resolve the announced address {address}: {e}")))?
                .map(|a| a.ip())
                .collect(),
        };
        if resolved.is_empty() {
            return Err(MediaError::Config(format!("the announced address {address} resolves to no address")));
        }
        // IPv4 first: the first candidate has the highest priority.
        let (v4, v6): (Vec<IpAddr>, Vec<IpAddr>) = resolved.into_iter().partition(IpAddr::is_ipv4);
        for ip in v4.into_iter().chain(v6) {
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
    }
    Ok(ips)
}

/// The address the media sockets bind to: `--rtc-listen-ip`, except that the default
/// IPv4 wildcard becomes the dual-stack `::` when an IPv6 address is announced.
fn listen_ip(configured: IpAddr, announced: &[IpAddr]) -> IpAddr {
    if configured == IpAddr::V4(Ipv4Addr::UNSPECIFIED) && announced.iter().any(IpAddr::is_ipv6) {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        configured
    }
}

/// Whether a socket bound to `listen` can receive media sent to `announced` (a
/// specific IP may be a NAT's public address, so only the family is checked).
fn reachable(listen: IpAddr, announced: IpAddr) -> bool {
    match listen {
        IpAddr::V6(v6) if v6.is_unspecified() => true, // dual-stack
        _ => listen.is_ipv4() == announced.is_ipv4(),
    }
}

/// Binds a worker's UDP socket and, with ICE-TCP, a listening TCP socket on the same
/// port. With port 0 the TCP port must be free too: a few free UDP ports are tried.
fn bind_sockets(
    addr: SocketAddr,
    tcp: bool,
) -> Result<(std::net::UdpSocket, Option<std::net::TcpListener>), MediaError> {
    let attempts = if addr.port() == 0 { 16 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let udp = bind(addr, SockType::Datagram).map_err(|source| MediaError::Bind { addr, source })?;
        if !tcp {
            return Ok((udp.into(), None));
        }
        let at = SocketAddr::new(addr.ip(), std::net::UdpSocket::from(udp.try_clone()?).local_addr()?.port());
        match bind(at, SockType::Stream).and_then(|fd| {
            listen(&fd, Backlog::new(1024).map_err(std::io::Error::from)?)?;
            Ok(fd)
        }) {
            Ok(listener) => return Ok((udp.into(), Some(listener.into()))),
            Err(source) => last = Some(MediaError::Bind { addr: at, source }),
        }
    }
    Err(last.unwrap_or(MediaError::Config(format!("no port for UDP and TCP at {addr}"))))
}

/// The worker a new transport goes to: fewest forwarded packets per second, then
/// fewest transports, then fewest consumers, then the first.
fn least_loaded<'a>(workers: impl Iterator<Item = &'a WorkerCounts>) -> Option<usize> {
    let load = |c: &WorkerCounts| {
        let get = |a: &std::sync::atomic::AtomicUsize| a.load(Ordering::Relaxed);
        (c.forwarded_per_sec.load(Ordering::Relaxed), get(&c.transports), get(&c.consumers))
    };
    workers.enumerate().min_by_key(|(_, c)| load(c)).map(|(i, _)| i)
}

/// The home of a new room: the worker with the fewest rooms at home, then the first.
fn fewest_rooms<'a>(workers: impl Iterator<Item = &'a WorkerCounts>) -> Option<usize> {
    workers.enumerate().min_by_key(|(_, c)| c.rooms.load(Ordering::Relaxed)).map(|(i, _)| i)
}

/// Send buffer asked for on media sockets: a fan-out wake-up hands the kernel
/// thousands of datagrams at once, far more than the default (~200 KiB) holds.
const SEND_BUFFER: usize = 4 << 20;

/// The CPUs this process may run on, in order.
fn allowed_cpus() -> Result<Vec<usize>, MediaError> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .map_err(|e| MediaError::Config(format!("cannot read the CPU affinity: {e}")))?;
    Ok((0..nix::sched::CpuSet::count()).filter(|&cpu| set.is_set(cpu).unwrap_or(false)).collect())
}

/// Pins the calling thread to one CPU.
fn pin_current_thread(cpu: usize) -> nix::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
}

/// Raises a UDP socket's send buffer to [`SEND_BUFFER`]: beyond the system limit
/// (`net.core.wmem_max`) when privileged, else up to it. Failure leaves the default.
fn raise_send_buffer(fd: &std::os::fd::OwnedFd) {
    if setsockopt(fd, sockopt::SndBufForce, &SEND_BUFFER).is_err() {
        let _ = setsockopt(fd, sockopt::SndBuf, &SEND_BUFFER);
    }
    let size = nix::sys::socket::getsockopt(fd, sockopt::SndBuf).unwrap_or(0);
    tracing::debug!(send_buffer = size, "media socket send buffer");
}

/// Socket options nix does not name.
mod sockopts {
    use nix::libc;
    use nix::{getsockopt_impl, setsockopt_impl, sockopt_impl};

    sockopt_impl!(
        /// `IP_MTU_DISCOVER`: how IPv4 datagrams treat the Don't Fragment bit.
        IpMtuDiscover,
        Both,
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::c_int
    );
}
use sockopts::IpMtuDiscover;

/// Sets the Don't Fragment bit on a UDP socket's IPv4 datagrams without following path
/// MTU updates (`IP_PMTUDISC_PROBE`, as QUIC stacks do). Media packets are far below
/// any path MTU, and a DF datagram needs no IP identification: the kernel skips the
/// shared ID generator it would otherwise run for every datagram. Failure leaves the
/// default.
fn set_dont_fragment(fd: &std::os::fd::OwnedFd) {
    if let Err(error) = setsockopt(fd, IpMtuDiscover, &nix::libc::IP_PMTUDISC_PROBE) {
        tracing::debug!(%error, "media socket: cannot set IP_MTU_DISCOVER");
    }
}

/// Binds a socket; an IPv6 wildcard also serves IPv4 (dual-stack).
fn bind(addr: SocketAddr, kind: SockType) -> std::io::Result<std::os::fd::OwnedFd> {
    let family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd = socket(family, kind, SockFlag::SOCK_CLOEXEC, None)?;
    if addr.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &false)?;
    }
    if kind == SockType::Stream {
        setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    } else {
        raise_send_buffer(&fd);
        set_dont_fragment(&fd);
    }
    nix::sys::socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_sockets_get_a_larger_send_buffer() {
        let fd = bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), SockType::Datagram).unwrap();
        let size = nix::sys::socket::getsockopt(&fd, sockopt::SndBuf).unwrap();
        // Linux reports twice the size set. Beyond `net.core.wmem_max` only a
        // privileged process may go (SO_SNDBUFFORCE; the tests run as root in CI).
        let probe = bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), SockType::Datagram).unwrap();
        if setsockopt(&probe, sockopt::SndBufForce, &(1 << 16)).is_ok() {
            assert!(size >= SEND_BUFFER, "send buffer {size} < {SEND_BUFFER}");
        }
    }

    /// IPv4 media datagrams, also those of a dual-stack socket, leave with DF set.
    #[test]
    fn media_sockets_set_dont_fragment() {
        for addr in [SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), "[::]:0".parse().unwrap()] {
            let fd = bind(addr, SockType::Datagram).unwrap();
            assert_eq!(
                nix::sys::socket::getsockopt(&fd, IpMtuDiscover).unwrap(),
                nix::libc::IP_PMTUDISC_PROBE,
                "{addr}"
            );
        }
    }

    #[test]
    fn transports_go_to_the_worker_forwarding_least_then_with_fewest_transports() {
        let worker = |rate: u64, transports: usize, consumers: usize| {
            let c = WorkerCounts::default();
            c.forwarded_per_sec.store(rate, Ordering::Relaxed);
            c.transports.store(transports, Ordering::Relaxed);
            c.consumers.store(consumers, Ordering::Relaxed);
            c.rooms.store(transports / 2, Ordering::Relaxed);
            c
        };
        // One busy worker outweighs many quiet transports.
        let busy = [worker(50_000, 1, 0), worker(0, 300, 300)];
        assert_eq!(least_loaded(busy.iter()), Some(1));
        // Equal load: fewer transports, then fewer consumers; all equal: the first.
        let idle = [worker(0, 2, 0), worker(0, 1, 5), worker(0, 1, 4)];
        assert_eq!(least_loaded(idle.iter()), Some(2));
        assert_eq!(least_loaded(std::iter::empty()), None);
        // A room's home: fewest rooms.
        assert_eq!(fewest_rooms(idle.iter()), Some(1));
    }

    #[test]
    fn a_pinned_thread_runs_on_its_cpu_only() {
        let cpus = allowed_cpus().unwrap();
        let cpu = *cpus.last().unwrap();
        let set = std::thread::spawn(move || {
            pin_current_thread(cpu).unwrap();
            nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).unwrap()
        })
        .join()
        .unwrap();
        let on: Vec<usize> = (0..nix::sched::CpuSet::count()).filter(|&c| set.is_set(c).unwrap()).collect();
        assert_eq!(on, vec![cpu]);
    }
}
