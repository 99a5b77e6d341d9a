//! The media engine: a pure-Rust SFU on str0m that speaks mediasoup's ORTC protocol.
//!
//! [`Engine`] owns the media workers (one thread and one UDP port each, one per core
//! by default). A room is pinned to one worker, so all of a room's forwarding
//! happens on one thread with no locks. Sessions talk to workers only through
//! [`WorkerHandle::call`].
//!
//! - `router`: capabilities and ORTC negotiation (what producers may send, what
//!   consumers receive).
//! - `transport`: one ICE-lite `Rtc` per WebRTC transport.
//! - `worker`: the worker actor: demultiplexing, forwarding, the commands.
//! - `dtls`: certificate, fingerprints, peer-certificate verification.
//! - `udp`: batched datagram output (`sendmmsg`).
//! - `traffic`: per-worker packet counters, published for scrapes.

mod dtls;
mod ice;
mod police;
pub(crate) mod router;
mod tcp;
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

use dspeak_schema::ortc::{DtlsFingerprint, IceCandidate, IceCandidateType, Protocol, TcpType};

pub(crate) use dtls::expected_fingerprint;
pub(crate) use traffic::{DropReason, TrafficSnapshot};
pub(crate) use worker::{ClosedConsumer, WorkerHandle};

use crate::StartError;
use crate::config::{Config, Environment};

/// ICE type preference of a host candidate (RFC 8445 §5.1.2.1).
const HOST_TYPE_PREFERENCE: u32 = 64;
/// Local preferences as mediasoup assigns them: 10000 for the first listen info, 100
/// less for each next one, and 1000 more for UDP.
const LOCAL_PREFERENCE: u32 = 10_000;
const LOCAL_PREFERENCE_STEP: u32 = 100;
const UDP_EXTRA_PREFERENCE: u32 = 1_000;

/// All media workers.
#[derive(Debug)]
pub(crate) struct Engine {
    workers: Vec<WorkerHandle>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// The addresses clients send media to, in the order they are announced.
    announced: Vec<IpAddr>,
    /// ICE-TCP is offered on the same ports.
    tcp: bool,
    identity: Arc<dtls::Identity>,
}

/// Live media counts over all workers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct MediaCounts {
    pub(crate) transports: usize,
    pub(crate) producers: usize,
    pub(crate) consumers: usize,
    pub(crate) tcp_connections: usize,
}

impl Engine {
    /// Binds the workers' sockets and starts their threads.
    pub(crate) fn start(config: &Config) -> Result<Engine, StartError> {
        let (listen_ip, announced) = media_addresses(config)?;
        let identity =
            Arc::new(dtls::Identity::generate().map_err(|e| StartError::Config(format!("DTLS certificate: {e:?}")))?);
        let count = worker_count(config);
        let mut workers = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for index in 0..count {
            let port = worker_port(config, index)?;
            let (socket, listener) = bind_sockets(SocketAddr::new(listen_ip, port), !config.no_rtc_tcp)?;
            let port = socket.local_addr()?.port();
            let locals = announced.iter().map(|&ip| SocketAddr::new(ip, port)).collect();
            let (handle, thread) = worker::spawn(index, socket, listener, locals, identity.clone())?;
            tracing::info!(worker = index, port = handle.port, listen = %listen_ip, announced = ?announced, "media worker started");
            workers.push(handle);
            threads.push(thread);
        }
        Ok(Engine { workers, threads: Mutex::new(threads), announced, tcp: !config.no_rtc_tcp, identity })
    }

    /// The worker for a new room: the one with the fewest rooms.
    pub(crate) fn pick_worker(&self) -> WorkerHandle {
        // `start` creates at least one worker.
        let worker = self
            .workers
            .iter()
            .min_by_key(|w| w.counts.rooms.load(Ordering::Relaxed))
            .expect("the engine has at least one worker");
        worker.clone()
    }

    /// The host candidates clients send a worker's media to, as mediasoup announces
    /// them: UDP on every announced address, then TCP (passive) on each, with
    /// decreasing priority.
    pub(crate) fn candidates(&self, worker: &WorkerHandle) -> Vec<IceCandidate> {
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
                    port: worker.port,
                    kind: IceCandidateType::Host,
                    tcp_type,
                }
            })
            .collect()
    }

    /// The server certificate's fingerprints, sha-1 to sha-512.
    pub(crate) fn fingerprints(&self) -> Vec<DtlsFingerprint> {
        self.identity.fingerprints.clone()
    }

    /// The workers, in index order (for monitoring).
    pub(crate) fn workers(&self) -> &[WorkerHandle] {
        &self.workers
    }

    /// UDP ports of the workers, in order.
    pub(crate) fn ports(&self) -> Vec<u16> {
        self.workers.iter().map(|w| w.port).collect()
    }

    /// Live counts over all workers.
    pub(crate) fn counts(&self) -> MediaCounts {
        let mut c = MediaCounts::default();
        for w in &self.workers {
            c.transports += w.counts.transports.load(Ordering::Relaxed);
            c.producers += w.counts.producers.load(Ordering::Relaxed);
            c.consumers += w.counts.consumers.load(Ordering::Relaxed);
            c.tcp_connections += w.counts.tcp_connections.load(Ordering::Relaxed);
        }
        c
    }

    /// Stops every worker and waits for its thread.
    pub(crate) fn stop(&self) {
        for w in &self.workers {
            w.stop();
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

/// Binds and releases every worker's UDP (and ICE-TCP) port (`dspeak check`); returns them as text.
pub(crate) fn check_ports(config: &Config) -> Result<String, StartError> {
    let (listen_ip, _) = media_addresses(config)?;
    let count = worker_count(config);
    let mut sockets = Vec::with_capacity(count);
    for index in 0..count {
        let addr = SocketAddr::new(listen_ip, worker_port(config, index)?);
        sockets.push(bind_sockets(addr, !config.no_rtc_tcp)?);
    }
    Ok(match config.rtc_port {
        0 => format!("({count}, picked by the system)"),
        base => format!("{base}-{} on {listen_ip}", base as usize + count - 1),
    })
}

fn worker_count(config: &Config) -> usize {
    match config.workers {
        0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        n => n,
    }
}

/// Worker `index`'s UDP port: `--rtc-port` + index, or 0 (any).
fn worker_port(config: &Config, index: usize) -> Result<u16, StartError> {
    match config.rtc_port {
        0 => Ok(0),
        base => base
            .checked_add(index as u16)
            .ok_or_else(|| StartError::Config(format!("--rtc-port {base} + {index} workers exceeds 65535"))),
    }
}

/// The IP the media sockets bind to and the IPs announced to clients (those of
/// [`announced_ips`] the sockets can receive on).
pub(crate) fn media_addresses(config: &Config) -> Result<(IpAddr, Vec<IpAddr>), StartError> {
    let wanted = announced_ips(config)?;
    let listen_ip = listen_ip(config.rtc_listen_ip, &wanted);
    let announced: Vec<IpAddr> = wanted.iter().copied().filter(|ip| reachable(listen_ip, *ip)).collect();
    for ip in wanted.iter().filter(|ip| !announced.contains(ip)) {
        tracing::warn!(announced = %ip, listen = %listen_ip, "not announced: the media sockets cannot reach it");
    }
    if announced.is_empty() {
        return Err(StartError::Config(format!(
            "no announced address ({wanted:?}) is reachable on --rtc-listen-ip {listen_ip}"
        )));
    }
    Ok((listen_ip, announced))
}

/// The IPs clients send media to: every `--announced-address` (an IP, or a hostname
/// resolved now to all its addresses), else in development the listen IP or loopback.
fn announced_ips(config: &Config) -> Result<Vec<IpAddr>, StartError> {
    if config.announced_address.is_empty() {
        return match config.environment() {
            Environment::Production => Err(StartError::Config(
                "production needs the address clients send media to: set --announced-address \
                 (or DSPEAK_ANNOUNCED_ADDRESS), e.g. api.darelisme.my.id"
                    .into(),
            )),
            _ if config.rtc_listen_ip.is_unspecified() => Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]),
            _ => Ok(vec![config.rtc_listen_ip]),
        };
    }
    let mut ips = Vec::new();
    for address in &config.announced_address {
        let resolved: Vec<IpAddr> = match address.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => (address.as_str(), 0)
                .to_socket_addrs()
                .map_err(|e| StartError::Config(format!("cannot resolve --announced-address {address}: {e}")))?
                .map(|a| a.ip())
                .collect(),
        };
        if resolved.is_empty() {
            return Err(StartError::Config(format!("--announced-address {address} resolves to no address")));
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
) -> Result<(std::net::UdpSocket, Option<std::net::TcpListener>), StartError> {
    let attempts = if addr.port() == 0 { 16 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let udp = bind(addr, SockType::Datagram).map_err(|source| StartError::Bind { addr, source })?;
        if !tcp {
            return Ok((udp.into(), None));
        }
        let at = SocketAddr::new(addr.ip(), std::net::UdpSocket::from(udp.try_clone()?).local_addr()?.port());
        match bind(at, SockType::Stream).and_then(|fd| {
            listen(&fd, Backlog::new(1024).map_err(std::io::Error::from)?)?;
            Ok(fd)
        }) {
            Ok(listener) => return Ok((udp.into(), Some(listener.into()))),
            Err(source) => last = Some(StartError::Bind { addr: at, source }),
        }
    }
    Err(last.unwrap_or(StartError::Config(format!("no port for UDP and TCP at {addr}"))))
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
    }
    nix::sys::socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    Ok(fd)
}
