//! Demultiplexing: which transport a datagram or an ICE-TCP frame belongs to.
//!
//! Only a binding request signed with a transport's ICE password attaches a client
//! address (UDP) or connection (TCP) to that transport; everything else from an
//! unknown source is dropped, and an ICE-TCP connection whose first frame is not such
//! a check is closed.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use str0m::ice::StunMessage;
use str0m::net::Protocol;
use tokio::net::TcpStream;

use super::{TransportKey, Worker};
use crate::tcp::{ConnId, TcpEvent};
use crate::traffic::DropReason;
use crate::transport::{Remote, Sink};
use crate::udp::Route;

impl Worker {
    /// Routes one datagram to its transport; received RTP waits in `self.rtp` for
    /// [`Worker::forward_all`]. `local` is the address it arrived on (wildcard sockets).
    pub(super) fn on_datagram(&mut self, now: Instant, source: SocketAddr, local: Option<IpAddr>, data: &[u8]) {
        let key = match self.by_addr.get(&source) {
            Some(&key) if !is_stun(data) => key,
            _ if !is_stun(data) => return self.traffic.drop(DropReason::Unroutable),
            _ => match self.authenticate(data) {
                Some((key, nominated)) => {
                    self.learn(key, source, Route::Udp(local), now, nominated);
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

    /// Transport `key` got a valid check from `source`: if the address is new to it,
    /// datagrams from there now route to it (also when another transport had it).
    fn learn(&mut self, key: TransportKey, source: SocketAddr, route: Route, now: Instant, nominated: bool) {
        if self.transports.get_mut(key).is_some_and(|t| t.learn_remote(source, route, now, nominated)) {
            self.by_addr.insert(source, key);
        }
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
        let rejected = transport.lite_counters().map_or(0, |c| c.rtcp_rejected);
        let received = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let sink = &mut Sink { out: &mut self.out, rtp: &mut self.drained };
            transport.receive(now, protocol, source, local, data, sink)
        }));
        if received.is_err() {
            tracing::error!(transport = %transport.id, %source, "str0m panicked on a datagram; the transport is failed");
            transport.poison();
            let remotes = transport.take_remotes();
            self.detach(key, remotes);
            self.drained.clear();
            return;
        }
        if transport.lite_counters().is_some_and(|c| c.rtcp_rejected != rejected) {
            self.traffic.drop(DropReason::SrtcpRejected);
        }
        Self::schedule(&mut self.timers, key, transport);
        self.rtp.extend(self.drained.drain(..).map(|p| (key, p)));
    }

    /// Forgets the client addresses of transport `key`: its UDP routes (only where an
    /// address still routes to it: another transport may have learnt the same address
    /// since, and keeps its route), and its TCP connections, which are closed.
    pub(super) fn detach(&mut self, key: TransportKey, remotes: Vec<Remote>) {
        for remote in remotes {
            match remote.route {
                Route::Udp(_) => {
                    if self.by_addr.get(&remote.addr) == Some(&key) {
                        self.by_addr.remove(&remote.addr);
                    }
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
    /// that transport's password (routed by the server ufrag in its USERNAME), and
    /// whether it nominates its pair (USE-CANDIDATE); the transport learns the client's
    /// ufrag. Anything else is `None`.
    fn authenticate(&mut self, data: &[u8]) -> Option<(TransportKey, bool)> {
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
        Some((key, message.use_candidate()))
    }

    /// Takes a new TCP connection; after an error, stops accepting for a moment.
    pub(super) fn on_accept(&mut self, accepted: std::io::Result<(TcpStream, SocketAddr)>) {
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
    pub(super) fn on_tcp_event(&mut self, now: Instant, event: TcpEvent) {
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
                    && let Some((checked, nominated)) = self.authenticate(&data)
                    && checked == key
                {
                    if let Some(tcp) = &mut self.tcp {
                        tcp.refresh(conn, now);
                    }
                    if let Some(t) = self.transports.get_mut(key) {
                        t.learn_remote(remote, Route::Tcp(conn), now, nominated);
                    }
                }
                key
            }
            None => match self.authenticate(&data) {
                Some((key, nominated)) => {
                    if let Some(t) = self.transports.get_mut(key) {
                        t.learn_remote(remote, Route::Tcp(conn), now, nominated);
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
    pub(super) fn close_connection(&mut self, conn: ConnId) {
        let closed = self.tcp.as_mut().and_then(|t| t.remove(conn));
        if let Some(t) = closed.and_then(|c| c.transport).and_then(|key| self.transports.get_mut(key)) {
            t.forget_connection(conn);
        }
    }
}

#[cfg(test)]
impl Worker {
    /// Transport `id` learns `source` as if a valid nominating check came from there.
    pub(crate) fn learn_for_test(&mut self, id: &dspeak_schema::TransportId, source: SocketAddr) {
        let key = self.transport_keys[id];
        self.learn(key, source, Route::Udp(None), Instant::now(), true);
    }

    /// The transport datagrams from `source` go to.
    pub(crate) fn route_of(&self, source: SocketAddr) -> Option<dspeak_schema::TransportId> {
        self.by_addr.get(&source).and_then(|&key| self.transports.get(key)).map(|t| t.id.clone())
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
