//! Batched UDP output. While the worker handles one wake-up (a batch of datagrams, a
//! timer, a command), everything its transports want to send is queued as
//! [`Outgoing`]; [`send_all`] then hands the queue to the kernel with one
//! `sendmmsg(2)` per 64 datagrams on Linux (one `sendto` each elsewhere).

use std::net::SocketAddr;

use tokio::net::UdpSocket;

/// One datagram to send.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) data: Vec<u8>,
    pub(crate) to: SocketAddr,
}

/// Sends and clears `out`. UDP: a datagram the kernel refuses (full buffer) is dropped,
/// as the network would drop it.
pub(crate) fn send_all(socket: &UdpSocket, out: &mut Vec<Outgoing>) {
    if out.is_empty() {
        return;
    }
    #[cfg(target_os = "linux")]
    linux::send_all(socket, out);
    #[cfg(not(target_os = "linux"))]
    for o in out.iter() {
        let _ = socket.try_send_to(&o.data, o.to);
    }
    out.clear();
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io::IoSlice;
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, sendmmsg};
    use tokio::net::UdpSocket;

    use super::Outgoing;

    /// Datagrams per `sendmmsg` call.
    const BATCH: usize = 64;

    pub(super) fn send_all(socket: &UdpSocket, out: &[Outgoing]) {
        let fd = socket.as_raw_fd();
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(out.len().min(BATCH), None);
        let mut slices: Vec<[IoSlice<'_>; 1]> = Vec::with_capacity(out.len().min(BATCH));
        let mut addrs: Vec<Option<SockaddrStorage>> = Vec::with_capacity(out.len().min(BATCH));
        let no_control: [ControlMessage<'_>; 0] = [];
        let mut rest = out;
        while !rest.is_empty() {
            let chunk = &rest[..rest.len().min(BATCH)];
            slices.clear();
            addrs.clear();
            slices.extend(chunk.iter().map(|o| [IoSlice::new(&o.data)]));
            addrs.extend(chunk.iter().map(|o| Some(SockaddrStorage::from(o.to))));
            let sent = sendmmsg(fd, &mut headers, &slices, &addrs, no_control, MsgFlags::MSG_DONTWAIT)
                .map(|r| r.count())
                .unwrap_or(0);
            // The kernel stops at the first datagram it refuses: drop that one, go on.
            rest = &rest[sent.max(1).min(rest.len())..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sends_every_datagram_in_order() {
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let mut out: Vec<Outgoing> = (0..150u8).map(|i| Outgoing { data: vec![i; 10], to }).collect();
        send_all(&tx, &mut out);
        assert!(out.is_empty());
        let mut buf = [0u8; 64];
        for i in 0..150u8 {
            let (n, _) = rx.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[i; 10]);
        }
    }
}
