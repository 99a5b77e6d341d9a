//! ICE over TCP, passive (RFC 6544): each worker also listens on TCP at its UDP port,
//! and every frame on a connection (RFC 4571: a 2-byte big-endian length, then the
//! packet) is handled like a datagram.
//!
//! A connection belongs to nobody until an ICE check with a valid MESSAGE-INTEGRITY
//! for some transport arrives on it (the worker checks that); anything else first
//! closes it. Unauthenticated connections are capped per worker (the oldest is closed
//! when a new one would exceed [`MAX_UNAUTHENTICATED`]), frames longer than
//! [`MAX_FRAME`] close the connection, and a connection that has not carried a valid
//! check for [`IDLE`] is closed. So a flood of silent or garbage connections costs
//! bounded memory and does not keep legitimate clients out.
//!
//! Each connection has a reader task that hands frames to the worker over one bounded
//! channel (a fast sender waits, it does not queue without bound) and a writer task
//! fed through a bounded queue; what does not fit is dropped, as UDP would. The worker
//! frames what it sends itself ([`push_frame`]) and hands a connection all its frames
//! of one wake-up in one buffer, so the queue carries one allocation per connection
//! and wake-up, not one per packet.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

/// Identifies a connection of one worker; never reused.
pub(crate) type ConnId = u64;

/// Unauthenticated connections a worker keeps at most.
pub(crate) const MAX_UNAUTHENTICATED: usize = 512;
/// A connection without a valid ICE check for this long is closed.
pub(crate) const IDLE: Duration = Duration::from_secs(10);
/// The longest frame accepted: what the UDP path reads at most. Media and DTLS
/// packets stay under the path MTU.
pub(crate) const MAX_FRAME: usize = 2048;
/// Buffers of frames queued for one connection's writer.
const WRITE_QUEUE: usize = 256;
/// Frames queued from all readers to the worker.
const READ_QUEUE: usize = 1024;

/// What reader tasks tell the worker.
#[derive(Debug)]
pub(crate) enum TcpEvent {
    /// One framed packet.
    Frame(ConnId, Vec<u8>),
    /// The connection ended (closed by the peer, an error, or an invalid frame).
    Closed(ConnId),
}

/// One connection as the worker sees it.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) remote: SocketAddr,
    pub(crate) local: SocketAddr,
    /// The transport a valid check attached it to (the worker's slab key).
    pub(crate) transport: Option<usize>,
    /// Closed when reached; moved on by every valid check.
    pub(crate) deadline: Instant,
    writer: mpsc::Sender<Vec<u8>>,
    tasks: [AbortHandle; 2],
}

impl Drop for Conn {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A worker's TCP listener and connections.
#[derive(Debug)]
pub(crate) struct TcpConns {
    listener: Arc<TcpListener>,
    conns: FxHashMap<ConnId, Conn>,
    /// Unauthenticated connections, oldest first (ids of attached or closed ones are
    /// skipped when met).
    pending: VecDeque<ConnId>,
    unauthenticated: usize,
    next_id: ConnId,
    events: mpsc::Sender<TcpEvent>,
}

impl TcpConns {
    /// Wraps a bound, listening socket (inside the worker's runtime); returns the
    /// receiving end of the frame channel.
    pub(crate) fn new(listener: std::net::TcpListener) -> io::Result<(TcpConns, mpsc::Receiver<TcpEvent>)> {
        listener.set_nonblocking(true)?;
        let (events, rx) = mpsc::channel(READ_QUEUE);
        let conns = TcpConns {
            listener: Arc::new(TcpListener::from_std(listener)?),
            conns: FxHashMap::default(),
            pending: VecDeque::new(),
            unauthenticated: 0,
            next_id: 0,
            events,
        };
        Ok((conns, rx))
    }

    /// The listening socket (the worker awaits connections on it).
    pub(crate) fn listener(&self) -> Arc<TcpListener> {
        self.listener.clone()
    }

    /// Takes a new connection: starts its tasks, and closes the oldest unauthenticated
    /// one if there are too many.
    pub(crate) fn add(&mut self, stream: TcpStream, remote: SocketAddr, now: Instant) {
        let Ok(local) = stream.local_addr() else {
            return;
        };
        let _ = stream.set_nodelay(true);
        while self.unauthenticated >= MAX_UNAUTHENTICATED {
            let Some(oldest) = self.pending.pop_front() else {
                break;
            };
            if self.conns.get(&oldest).is_some_and(|c| c.transport.is_none()) {
                self.remove(oldest);
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        let (read, write) = stream.into_split();
        let (writer, queue) = mpsc::channel(WRITE_QUEUE);
        let reader = tokio::spawn(read_frames(id, read, self.events.clone())).abort_handle();
        let writing = tokio::spawn(write_frames(write, queue)).abort_handle();
        let remote = SocketAddr::new(remote.ip().to_canonical(), remote.port());
        let local = SocketAddr::new(local.ip().to_canonical(), local.port());
        let conn = Conn { remote, local, transport: None, deadline: now + IDLE, writer, tasks: [reader, writing] };
        self.conns.insert(id, conn);
        self.pending.push_back(id);
        self.unauthenticated += 1;
    }

    pub(crate) fn get(&self, id: ConnId) -> Option<&Conn> {
        self.conns.get(&id)
    }

    /// Attaches a connection to the transport whose check it carried.
    pub(crate) fn attach(&mut self, id: ConnId, transport: usize, now: Instant) {
        if let Some(conn) = self.conns.get_mut(&id) {
            if conn.transport.is_none() {
                self.unauthenticated -= 1;
            }
            conn.transport = Some(transport);
            conn.deadline = now + IDLE;
        }
    }

    /// A valid check arrived on an attached connection: it is not idle.
    pub(crate) fn refresh(&mut self, id: ConnId, now: Instant) {
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.deadline = now + IDLE;
        }
    }

    /// Closes a connection; returns it so its transport can forget it.
    pub(crate) fn remove(&mut self, id: ConnId) -> Option<Conn> {
        let conn = self.conns.remove(&id)?;
        if conn.transport.is_none() {
            self.unauthenticated -= 1;
        }
        if self.pending.len() > 2 * MAX_UNAUTHENTICATED {
            let conns = &self.conns;
            self.pending.retain(|id| conns.get(id).is_some_and(|c| c.transport.is_none()));
        }
        Some(conn)
    }

    /// Closes the connections past their deadline; returns them.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<(ConnId, Conn)> {
        let due: Vec<ConnId> = self.conns.iter().filter(|(_, c)| c.deadline <= now).map(|(&id, _)| id).collect();
        due.into_iter().filter_map(|id| Some((id, self.remove(id)?))).collect()
    }

    /// Queues frames (one or more, each written by [`push_frame`]) for a connection's
    /// writer; `false` when its queue is full and they are dropped (a connection that is
    /// gone drops them silently).
    pub(crate) fn send(&self, id: ConnId, frames: Vec<u8>) -> bool {
        match self.conns.get(&id) {
            Some(conn) => conn.writer.try_send(frames).is_ok(),
            None => true,
        }
    }

    /// Open connections, and how many of them are unauthenticated.
    pub(crate) fn counts(&self) -> (usize, usize) {
        (self.conns.len(), self.unauthenticated)
    }
}

/// Reads RFC 4571 frames until the connection ends or a frame is too long.
async fn read_frames(id: ConnId, mut read: OwnedReadHalf, events: mpsc::Sender<TcpEvent>) {
    while let Ok(len) = read.read_u16().await {
        let len = usize::from(len);
        if len == 0 || len > MAX_FRAME {
            break;
        }
        let mut frame = vec![0u8; len];
        if read.read_exact(&mut frame).await.is_err() {
            break;
        }
        if events.send(TcpEvent::Frame(id, frame)).await.is_err() {
            return;
        }
    }
    let _ = events.send(TcpEvent::Closed(id)).await;
}

/// Appends `packet` to `buf` as one RFC 4571 frame (a 2-byte length, then the packet).
/// A packet too long for a frame is left out (never expected: packets stay under the
/// path MTU); returns whether it was added.
pub(crate) fn push_frame(buf: &mut Vec<u8>, packet: &[u8]) -> bool {
    let Ok(len) = u16::try_from(packet.len()) else {
        return false;
    };
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(packet);
    true
}

/// Writes queued frames, flushing when the queue runs dry.
async fn write_frames(write: OwnedWriteHalf, mut queue: mpsc::Receiver<Vec<u8>>) {
    let mut out = BufWriter::new(write);
    while let Some(mut frames) = queue.recv().await {
        loop {
            if out.write_all(&frames).await.is_err() {
                return;
            }
            match queue.try_recv() {
                Ok(next) => frames = next,
                Err(_) => break,
            }
        }
        if out.flush().await.is_err() {
            return;
        }
    }
}
