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

mod dtls;
mod ice;
mod police;
pub(crate) mod router;
mod transport;
mod udp;
mod worker;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use dspeak_schema::ortc::{DtlsFingerprint, IceCandidate, IceCandidateType, Protocol};

pub(crate) use dtls::expected_fingerprint;
pub(crate) use worker::{ClosedConsumer, WorkerHandle};

use crate::StartError;
use crate::config::{Config, Environment};

/// Priority of the host candidate (mediasoup's value for a UDP host candidate).
const CANDIDATE_PRIORITY: u32 = 1_076_558_079;

/// All media workers.
#[derive(Debug)]
pub(crate) struct Engine {
    workers: Vec<WorkerHandle>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    announced_ip: IpAddr,
    identity: Arc<dtls::Identity>,
}

/// Live media counts over all workers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct MediaCounts {
    pub(crate) transports: usize,
    pub(crate) producers: usize,
    pub(crate) consumers: usize,
}

impl Engine {
    /// Binds the workers' sockets and starts their threads.
    pub(crate) fn start(config: &Config) -> Result<Engine, StartError> {
        let announced_ip = announced_ip(config)?;
        let identity =
            Arc::new(dtls::Identity::generate().map_err(|e| StartError::Config(format!("DTLS certificate: {e:?}")))?);
        let count = match config.workers {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        };
        let mut workers = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for index in 0..count {
            let port = match config.rtc_port {
                0 => 0,
                base => base
                    .checked_add(index as u16)
                    .ok_or_else(|| StartError::Config(format!("--rtc-port {base} + {index} workers exceeds 65535")))?,
            };
            let addr = SocketAddr::new(config.rtc_listen_ip, port);
            let socket = std::net::UdpSocket::bind(addr).map_err(|source| StartError::Bind { addr, source })?;
            let local = SocketAddr::new(announced_ip, socket.local_addr()?.port());
            let (handle, thread) = worker::spawn(index, socket, local, identity.clone())?;
            tracing::info!(worker = index, port = handle.port, announced = %announced_ip, "media worker started");
            workers.push(handle);
            threads.push(thread);
        }
        Ok(Engine { workers, threads: Mutex::new(threads), announced_ip, identity })
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

    /// The host candidate clients send a worker's media to.
    pub(crate) fn candidate(&self, worker: &WorkerHandle) -> IceCandidate {
        IceCandidate {
            foundation: "udpcandidate".into(),
            priority: CANDIDATE_PRIORITY,
            ip: self.announced_ip.to_string(),
            address: self.announced_ip.to_string(),
            protocol: Protocol::Udp,
            port: worker.port,
            kind: IceCandidateType::Host,
        }
    }

    /// The server certificate's fingerprints, sha-1 to sha-512.
    pub(crate) fn fingerprints(&self) -> Vec<DtlsFingerprint> {
        self.identity.fingerprints.clone()
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

/// The IP clients send media to: `--announced-address` (an IP, or a hostname resolved
/// now), else in development the listen IP or loopback.
fn announced_ip(config: &Config) -> Result<IpAddr, StartError> {
    match &config.announced_address {
        Some(address) => {
            if let Ok(ip) = address.parse::<IpAddr>() {
                return Ok(ip);
            }
            let resolved: Vec<SocketAddr> = (address.as_str(), 0)
                .to_socket_addrs()
                .map_err(|e| StartError::Config(format!("cannot resolve --announced-address {address}: {e}")))?
                .collect();
            resolved
                .iter()
                .find(|a| a.is_ipv4())
                .or(resolved.first())
                .map(|a| a.ip())
                .ok_or_else(|| StartError::Config(format!("--announced-address {address} resolves to no address")))
        }
        None if config.environment() == Environment::Production => Err(StartError::Config(
            "production needs the address clients send media to: set --announced-address \
             (or DSPEAK_ANNOUNCED_ADDRESS), e.g. api.darelisme.my.id"
                .into(),
        )),
        None if config.rtc_listen_ip.is_unspecified() => Ok(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        None => Ok(config.rtc_listen_ip),
    }
}
