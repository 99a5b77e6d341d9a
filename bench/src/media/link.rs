//! How a synthetic client's transport reaches the server: its own UDP socket, or an
//! ICE-TCP connection to the server's passive TCP candidate (RFC 4571 frames: a 2-byte
//! length, then the packet). Both read one packet at a time with the same calls, so the
//! client tasks do not care which one they drive.

use std::io;
use std::net::SocketAddr;

use tokio::io::AsyncReadExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpStream, UdpSocket};

/// A transport's connection to the server.
pub(crate) enum Link {
    Udp(UdpSocket),
    Tcp(TcpLink),
}

/// An ICE-TCP connection with its partial input and unsent output.
pub(crate) struct TcpLink {
    read: OwnedReadHalf,
    write: OwnedWriteHalf,
    server: SocketAddr,
    /// Bytes read but not yet returned as frames.
    input: Vec<u8>,
    /// Framed bytes the kernel has not taken yet.
    output: Vec<u8>,
}

impl Link {
    /// A UDP socket on the loopback address of the server's family.
    pub(crate) async fn udp(server: SocketAddr) -> io::Result<Link> {
        let local: SocketAddr = if server.is_ipv4() { "127.0.0.1:0" } else { "[::1]:0" }.parse().expect("an address");
        Ok(Link::Udp(UdpSocket::bind(local).await?))
    }

    /// A TCP connection to the server's candidate.
    pub(crate) async fn tcp(server: SocketAddr) -> io::Result<Link> {
        let stream = TcpStream::connect(server).await?;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        Ok(Link::Tcp(TcpLink { read, write, server, input: Vec::new(), output: Vec::new() }))
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Link::Udp(s) => s.local_addr(),
            Link::Tcp(t) => t.read.local_addr(),
        }
    }

    /// Waits for the next packet (cancel-safe: partial frames stay buffered).
    pub(crate) async fn recv(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        match self {
            Link::Udp(s) => s.recv_from(buf).await,
            Link::Tcp(t) => loop {
                if let Some(n) = t.take_frame(buf) {
                    return Ok((n, t.server));
                }
                let mut chunk = [0u8; 4096];
                let n = t.read.read(&mut chunk).await?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                t.input.extend_from_slice(&chunk[..n]);
            },
        }
    }

    /// The next packet if one is already there.
    pub(crate) fn try_recv(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        match self {
            Link::Udp(s) => s.try_recv_from(buf),
            Link::Tcp(t) => loop {
                if let Some(n) = t.take_frame(buf) {
                    return Ok((n, t.server));
                }
                let mut chunk = [0u8; 4096];
                match t.read.try_read(&mut chunk)? {
                    0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                    n => t.input.extend_from_slice(&chunk[..n]),
                }
            },
        }
    }

    /// Sends one packet; UDP drops it when the kernel refuses, TCP keeps what the
    /// kernel did not take for the next send.
    pub(crate) fn send(&mut self, data: &[u8], to: SocketAddr) {
        match self {
            Link::Udp(s) => {
                let _ = s.try_send_to(data, to);
            }
            Link::Tcp(t) => {
                let Ok(len) = u16::try_from(data.len()) else { return };
                t.output.extend_from_slice(&len.to_be_bytes());
                t.output.extend_from_slice(data);
                if let Ok(n) = t.write.try_write(&t.output) {
                    t.output.drain(..n);
                }
            }
        }
    }

    /// The protocol str0m is told.
    pub(crate) fn protocol(&self) -> str0m::net::Protocol {
        match self {
            Link::Udp(_) => str0m::net::Protocol::Udp,
            Link::Tcp(_) => str0m::net::Protocol::Tcp,
        }
    }
}

impl TcpLink {
    /// Moves one complete frame from the input into `buf` (a frame longer than
    /// `buf` is cut).
    fn take_frame(&mut self, buf: &mut [u8]) -> Option<usize> {
        let len = usize::from(u16::from_be_bytes([*self.input.first()?, *self.input.get(1)?]));
        let frame = self.input.get(2..2 + len)?;
        let n = len.min(buf.len());
        buf[..n].copy_from_slice(&frame[..n]);
        self.input.drain(..2 + len);
        Some(n)
    }
}
