//! The media UDP socket: datagrams in with the local address they arrived on, and
//! batched datagrams out from the address each client talks to.
//!
//! A socket bound to a wildcard address (`0.0.0.0`, `::`) asks the kernel for the
//! destination of every datagram (`IP_PKTINFO` / `IPV6_RECVPKTINFO`). Replies carry
//! that address back as their source, so ICE, DTLS and SRTP answers leave from the
//! address the client sent to, not from the kernel's preferred source for the client
//! (RFC 8445 §7.2.5.2.1: strict ICE agents drop asymmetric responses).
//!
//! While the worker handles one wake-up, everything str0m wants to send is queued as
//! [`Outgoing`], and what the worker seals itself (forwarded RTP, its sender reports)
//! is written into an [`Arena`]: one reused byte buffer, no allocation per packet.
//! [`MediaSocket::send_all`] and [`MediaSocket::send_arena`] hand them to the kernel
//! with one `sendmmsg(2)` per run of up to 64 datagrams from the same source address.
//!
//! On a dual-stack socket (`::`), IPv4 peers show up as IPv4-mapped IPv6 addresses;
//! they are unmapped on the way in and mapped again on the way out, so the rest of the
//! engine sees plain IPv4 addresses.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// One packet to send.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) data: Vec<u8>,
    pub(crate) to: SocketAddr,
    pub(crate) route: Route,
}

/// How a packet reaches its client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// A datagram from the given local address: where the client's datagrams arrived.
    /// `None`: the kernel picks (the socket is bound to one address, or nothing was
    /// received from the client yet).
    Udp(Option<IpAddr>),
    /// A frame on an ICE-TCP connection (`tcp`).
    Tcp(super::tcp::ConnId),
}

impl Route {
    /// The local address a datagram leaves from (`None` for TCP or the kernel's pick).
    fn source(self) -> Option<IpAddr> {
        match self {
            Route::Udp(from) => from,
            Route::Tcp(_) => None,
        }
    }
}

/// Packets the worker sealed itself in one wake-up, back to back in one buffer that
/// keeps its capacity from one wake-up to the next.
#[derive(Debug, Default)]
pub(crate) struct Arena {
    bytes: Vec<u8>,
    packets: Vec<ArenaPacket>,
}

/// Where one packet of an [`Arena`] lies and where it goes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ArenaPacket {
    start: usize,
    len: usize,
    pub(crate) to: SocketAddr,
    pub(crate) route: Route,
}

impl Arena {
    /// Appends a packet: `fill` gets `max` zeroed bytes to write into and returns the
    /// length it used (`None`: nothing is added).
    pub(crate) fn push(
        &mut self,
        to: SocketAddr,
        route: Route,
        max: usize,
        fill: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> Option<usize> {
        let start = self.bytes.len();
        self.bytes.resize(start + max, 0);
        let len = fill(&mut self.bytes[start..]).filter(|&len| len <= max);
        self.bytes.truncate(start + len.unwrap_or(0));
        let len = len?;
        self.packets.push(ArenaPacket { start, len, to, route });
        Some(len)
    }

    /// Packets queued.
    pub(crate) fn len(&self) -> usize {
        self.packets.len()
    }

    /// Whether nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// The queued packets.
    pub(crate) fn packets(&self) -> &[ArenaPacket] {
        &self.packets
    }

    /// The bytes of a queued packet.
    pub(crate) fn data(&self, packet: &ArenaPacket) -> &[u8] {
        &self.bytes[packet.start..packet.start + packet.len]
    }

    /// Forgets every packet (the buffer keeps its capacity).
    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.packets.clear();
    }
}

/// A datagram received into the caller's buffer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Received {
    pub(crate) len: usize,
    pub(crate) source: SocketAddr,
    /// The local address it was sent to, when the socket is bound to a wildcard.
    pub(crate) local: Option<IpAddr>,
}

/// A worker's UDP socket.
#[derive(Debug)]
pub(crate) struct MediaSocket {
    socket: UdpSocket,
    /// Bound to a wildcard address: sources are chosen per datagram.
    wildcard: bool,
    /// Bound to an IPv6 address: IPv4 peers are IPv4-mapped on the wire.
    v6: bool,
    /// Datagrams the kernel refused (send buffer full, `EAGAIN`, or any other error)
    /// and that were dropped.
    dropped: AtomicU64,
}

impl MediaSocket {
    /// Wraps a bound socket (inside a tokio runtime); on a wildcard address, asks
    /// for every datagram's destination address.
    pub(crate) fn new(socket: std::net::UdpSocket) -> io::Result<MediaSocket> {
        let bound = socket.local_addr()?;
        let wildcard = bound.ip().is_unspecified();
        socket.set_nonblocking(true)?;
        if wildcard {
            sys::enable_pktinfo(&socket, bound.is_ipv6())?;
        }
        Ok(MediaSocket {
            socket: UdpSocket::from_std(socket)?,
            wildcard,
            v6: bound.is_ipv6(),
            dropped: AtomicU64::new(0),
        })
    }

    /// Waits for the next datagram.
    pub(crate) async fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        loop {
            self.socket.readable().await?;
            match self.try_recv(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return result,
            }
        }
    }

    /// The next datagram if one is waiting (`WouldBlock` otherwise).
    pub(crate) fn try_recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        let mut received = if self.wildcard {
            self.socket.try_io(Interest::READABLE, || sys::recv_with_local(&self.socket, buf))?
        } else {
            let (len, source) = self.socket.try_recv_from(buf)?;
            Received { len, source, local: None }
        };
        received.source = unmap(received.source);
        received.local = received.local.map(|ip| ip.to_canonical());
        Ok(received)
    }

    /// Sends and clears `out` (datagrams only: TCP frames go to their connection
    /// first). A datagram the kernel refuses (full buffer) is dropped, as the network
    /// would drop it, and counted ([`MediaSocket::dropped`]).
    pub(crate) fn send_all(&self, out: &mut Vec<Outgoing>) {
        if out.is_empty() {
            return;
        }
        let dropped =
            sys::send_all(&self.socket, out.len(), |i| (&out[i].data, out[i].to, out[i].route), self.v6, self.wildcard);
        self.count_dropped(dropped);
        out.clear();
    }

    /// Sends the arena's datagrams and clears it, counting what the kernel refuses as
    /// [`MediaSocket::send_all`] does. The arena holds datagrams only (ICE-TCP frames
    /// go to their connections).
    pub(crate) fn send_arena(&self, arena: &mut Arena) {
        if arena.is_empty() {
            return;
        }
        let packets = &arena.packets;
        let item = |i: usize| (arena.data(&packets[i]), packets[i].to, packets[i].route);
        let dropped = sys::send_all(&self.socket, packets.len(), item, self.v6, self.wildcard);
        self.count_dropped(dropped);
        arena.clear();
    }

    fn count_dropped(&self, dropped: u64) {
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
    }

    /// Datagrams dropped so far because the kernel refused them.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// `::ffff:a.b.c.d` → `a.b.c.d`; anything else unchanged.
fn unmap(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// The address to put on the wire from a socket of the given family.
fn on_wire(addr: SocketAddr, v6: bool) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if v6 => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), addr.port()),
        _ => addr,
    }
}

#[cfg(target_os = "linux")]
mod sys {
    use std::io::{self, IoSlice, IoSliceMut};
    use std::net::{IpAddr, Ipv6Addr, SocketAddr};
    use std::os::fd::AsRawFd;

    use nix::libc;
    use nix::sys::socket::{
        ControlMessage, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage, recvmsg, sendmmsg, setsockopt,
        sockopt,
    };
    use tokio::net::UdpSocket;

    use super::{Received, Route, on_wire};

    /// Datagrams per `sendmmsg` call.
    const BATCH: usize = 64;

    pub(super) fn enable_pktinfo(socket: &std::net::UdpSocket, v6: bool) -> io::Result<()> {
        if v6 {
            setsockopt(socket, sockopt::Ipv6RecvPacketInfo, &true)?;
        } else {
            setsockopt(socket, sockopt::Ipv4PacketInfo, &true)?;
        }
        Ok(())
    }

    pub(super) fn recv_with_local(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Received> {
        let mut control = nix::cmsg_space!(libc::in6_pktinfo);
        let mut iov = [IoSliceMut::new(buf)];
        let msg = recvmsg::<SockaddrStorage>(socket.as_raw_fd(), &mut iov, Some(&mut control), MsgFlags::MSG_DONTWAIT)?;
        let source = msg.address.as_ref().and_then(to_socket_addr).ok_or_else(|| io::Error::other("no source"))?;
        let mut local = None;
        if let Ok(cmsgs) = msg.cmsgs() {
            for cmsg in cmsgs {
                match cmsg {
                    ControlMessageOwned::Ipv4PacketInfo(info) => {
                        local = Some(IpAddr::from(u32::from_be(info.ipi_addr.s_addr).to_be_bytes()));
                    }
                    ControlMessageOwned::Ipv6PacketInfo(info) => {
                        local = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                    }
                    _ => {}
                }
            }
        }
        Ok(Received { len: msg.bytes, source, local })
    }

    fn to_socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
        if let Some(v4) = addr.as_sockaddr_in() {
            return Some(SocketAddr::V4((*v4).into()));
        }
        addr.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
    }

    /// The source-address control message for `from`, in the socket's family.
    enum PacketInfo {
        V4(libc::in_pktinfo),
        V6(libc::in6_pktinfo),
    }

    impl PacketInfo {
        fn new(from: IpAddr, v6: bool) -> PacketInfo {
            match from {
                IpAddr::V4(ip) if !v6 => PacketInfo::V4(libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr { s_addr: u32::from(ip).to_be() },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                }),
                ip => {
                    let ip = match ip {
                        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                        IpAddr::V6(v6) => v6,
                    };
                    PacketInfo::V6(libc::in6_pktinfo {
                        ipi6_addr: libc::in6_addr { s6_addr: ip.octets() },
                        ipi6_ifindex: 0,
                    })
                }
            }
        }

        fn message(&self) -> ControlMessage<'_> {
            match self {
                PacketInfo::V4(info) => ControlMessage::Ipv4PacketInfo(info),
                PacketInfo::V6(info) => ControlMessage::Ipv6PacketInfo(info),
            }
        }
    }

    /// Sends the `count` datagrams `item(i)` gives (bytes, destination, route);
    /// returns how many the kernel refused (they are dropped).
    pub(super) fn send_all<'a>(
        socket: &UdpSocket,
        count: usize,
        item: impl Fn(usize) -> (&'a [u8], SocketAddr, Route),
        v6: bool,
        wildcard: bool,
    ) -> u64 {
        let fd = socket.as_raw_fd();
        let n = count.min(BATCH);
        // `sendmmsg` shares one set of control messages over a call, and a header
        // with control space always sends it: one set of headers per kind.
        let mut plain = MultiHeaders::<SockaddrStorage>::preallocate(n, None);
        let space = if v6 { nix::cmsg_space!(libc::in6_pktinfo) } else { nix::cmsg_space!(libc::in_pktinfo) };
        let mut with_source = wildcard.then(|| MultiHeaders::<SockaddrStorage>::preallocate(n, Some(space)));
        let mut slices: Vec<[IoSlice<'_>; 1]> = Vec::with_capacity(n);
        let mut addrs: Vec<Option<SockaddrStorage>> = Vec::with_capacity(n);
        let mut next = 0;
        let mut dropped = 0;
        let source = |i: usize| if wildcard { item(i).2.source() } else { None };
        while next < count {
            let from = source(next);
            let run = (next..count.min(next + BATCH)).take_while(|&i| source(i) == from).count();
            slices.clear();
            addrs.clear();
            for i in next..next + run {
                let (data, to, _) = item(i);
                slices.push([IoSlice::new(data)]);
                addrs.push(Some(SockaddrStorage::from(on_wire(to, v6))));
            }
            let sent = match (from, with_source.as_mut()) {
                (Some(from), Some(headers)) => {
                    let info = PacketInfo::new(from, v6);
                    let cmsgs = [info.message()];
                    sendmmsg(fd, headers, &slices, &addrs, cmsgs, MsgFlags::MSG_DONTWAIT).map(|r| r.count())
                }
                _ => {
                    let no_control: [ControlMessage<'_>; 0] = [];
                    sendmmsg(fd, &mut plain, &slices, &addrs, no_control, MsgFlags::MSG_DONTWAIT).map(|r| r.count())
                }
            };
            // The kernel stops at the first datagram it refuses: drop that one, go on.
            let sent = sent.unwrap_or(0);
            dropped += u64::from(sent == 0);
            next += sent.clamp(1, run);
        }
        dropped
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use std::io;

    use tokio::net::UdpSocket;

    use std::net::SocketAddr;

    use super::{Received, Route, on_wire};

    pub(super) fn enable_pktinfo(_: &std::net::UdpSocket, _: bool) -> io::Result<()> {
        Ok(())
    }

    pub(super) fn recv_with_local(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Received> {
        let (len, source) = socket.try_recv_from(buf)?;
        Ok(Received { len, source, local: None })
    }

    pub(super) fn send_all<'a>(
        socket: &UdpSocket,
        count: usize,
        item: impl Fn(usize) -> (&'a [u8], SocketAddr, Route),
        v6: bool,
        _: bool,
    ) -> u64 {
        (0..count)
            .filter(|&i| {
                let (data, to, _) = item(i);
                socket.try_send_to(data, on_wire(to, v6)).is_err()
            })
            .count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn socket(addr: &str) -> MediaSocket {
        MediaSocket::new(std::net::UdpSocket::bind(addr).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn sends_every_datagram_in_order() {
        let tx = socket("127.0.0.1:0").await;
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let mut out: Vec<Outgoing> =
            (0..150u8).map(|i| Outgoing { data: vec![i; 10], to, route: Route::Udp(None) }).collect();
        tx.send_all(&mut out);
        assert!(out.is_empty());
        let mut buf = [0u8; 64];
        for i in 0..150u8 {
            let (n, _) = rx.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[i; 10]);
        }
    }

    #[tokio::test]
    async fn a_refused_datagram_is_dropped_and_counted_and_the_rest_still_go() {
        let tx = socket("127.0.0.1:0").await;
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        // An IPv4 socket cannot send to an IPv6 address: the kernel refuses that one.
        let refused: SocketAddr = "[::1]:9".parse().unwrap();
        let mut out: Vec<Outgoing> = [(1u8, to), (2, refused), (3, to)]
            .into_iter()
            .map(|(i, to)| Outgoing { data: vec![i; 4], to, route: Route::Udp(None) })
            .collect();
        assert_eq!(tx.dropped(), 0);
        tx.send_all(&mut out);
        assert_eq!(tx.dropped(), 1);
        let mut buf = [0u8; 16];
        for i in [1u8, 3] {
            let (n, _) = rx.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[i; 4]);
        }
    }

    /// A wildcard socket learns where a datagram arrived and answers from there, even
    /// when the kernel would pick another source: a client on 127.0.0.1 that sends to
    /// 127.0.0.5 gets its answer from 127.0.0.5, not from the kernel's choice 127.0.0.1.
    #[tokio::test]
    async fn wildcard_socket_replies_from_the_address_it_was_reached_on() {
        let cases =
            [("0.0.0.0:0", "127.0.0.1", "127.0.0.5"), ("[::]:0", "127.0.0.1", "127.0.0.5"), ("[::]:0", "::1", "::1")];
        for (wildcard, client_ip, reached) in cases {
            let server = socket(wildcard).await;
            let port = server.socket.local_addr().unwrap().port();
            let local: IpAddr = reached.parse().unwrap();
            let client = std::net::UdpSocket::bind((client_ip, 0)).unwrap();
            client.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
            client.send_to(b"check", SocketAddr::new(local, port)).unwrap();
            let mut buf = [0u8; 64];
            let got =
                tokio::time::timeout(std::time::Duration::from_secs(5), server.recv(&mut buf)).await.unwrap().unwrap();
            assert_eq!(&buf[..got.len], b"check");
            assert_eq!(got.source, client.local_addr().unwrap(), "{wildcard}: source unmapped");
            assert_eq!(got.local, Some(local), "{wildcard}: the address the client reached");
            let mut out = vec![Outgoing { data: b"answer".to_vec(), to: got.source, route: Route::Udp(got.local) }];
            server.send_all(&mut out);
            let (n, from) = client.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"answer");
            assert_eq!(from, SocketAddr::new(local, port), "{wildcard}: the answer comes from where the check went");
        }
    }
}
