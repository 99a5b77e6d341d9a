//! One WebSocket connection: our own frame loop, on the connection's one task.
//!
//! [`Socket::run`] reads frames (`frame`), calls the connection's [`WsService`] for each
//! request and polls the request's future once right away, in wire order (which is
//! where a request is queued on its session). Answers that are not ready yet wait in
//! the loop's own set, at most `--max-in-flight` of them: while it is full the loop does
//! not read. Answers and events go into one output buffer, written with as few writes
//! as the socket takes; an event is copied from the one serialized copy every recipient
//! shares. Buffers start empty, grow with what passes through them and are freed when
//! they empty. A connection whose unsent output would exceed `--max-outbound-bytes`, that
//! has not joined within `--join-timeout`, or that stops answering pings is closed with
//! close code 1008 and the reason.

use std::borrow::Cow;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use jsonrpsee::MethodResponse;
use jsonrpsee::core::middleware::RpcServiceT;
use jsonrpsee::types::error::{
    BATCHES_NOT_SUPPORTED_CODE, BATCHES_NOT_SUPPORTED_MSG, ErrorCode, reject_too_big_request,
};
use jsonrpsee::types::{ErrorObject, Id, Notification, Request, TwoPointZero};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::api::{EndStream, EventStream, NewStream, Next, WsService};
use crate::conn::Conn;
use crate::frame::{self, CLOSE, CONTINUATION, PING, PONG, TEXT};

/// The most one connection reads per read call.
const READ_CHUNK: usize = 2048;
/// Reads per wake-up before the connection yields to the others.
const READS_PER_TURN: usize = 4;
/// Events are taken from the session's queue only while less than this is unsent (a
/// slow reader's events wait in its bounded queue, whose overflow evicts it).
const EVENTS_HIGH_WATER: usize = 64 * 1024;
/// How long a closing connection may take to take its close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Pings without an answer (or any other frame) before the connection is closed.
const MAX_MISSED_PINGS: u8 = 3;

/// The bounds of one connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) max_message: usize,
    pub(crate) max_in_flight: usize,
    pub(crate) max_outbound: usize,
    pub(crate) ping_interval: Duration,
    pub(crate) join_timeout: Duration,
}

/// Why the loop closes the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    /// The unsent output would exceed `--max-outbound-bytes`.
    Outbound,
    JoinTimeout,
    PingTimeout,
    /// The session resumed on another connection.
    Superseded,
    Shutdown,
    Protocol(&'static str),
    InvalidUtf8,
    /// The client sent a close frame (with this code).
    ClientClosed(Option<u16>),
}

impl Reason {
    fn close_frame(self) -> (u16, &'static str) {
        match self {
            Reason::Outbound => (frame::CLOSE_POLICY, "too much unread output: read your answers and events"),
            Reason::JoinTimeout => (frame::CLOSE_POLICY, "no room joined in time"),
            Reason::PingTimeout => (frame::CLOSE_POLICY, "no answer to pings"),
            Reason::Superseded => (frame::CLOSE_POLICY, "the session resumed on another connection"),
            Reason::Shutdown => (frame::CLOSE_GOING_AWAY, "server shutting down"),
            Reason::Protocol(why) => (frame::CLOSE_PROTOCOL, why),
            Reason::InvalidUtf8 => (frame::CLOSE_INVALID_DATA, "text message is not UTF-8"),
            Reason::ClientClosed(code) => (code.unwrap_or(frame::CLOSE_NORMAL), ""),
        }
    }
}

/// Where the connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Open,
    /// A close frame is queued; after it is written the socket is shut down and read
    /// until the client closes too, or until the deadline.
    Closing {
        deadline: Instant,
        shut_down: bool,
    },
}

/// Output waiting for the socket: whole frames, of which the first may be partly
/// written.
#[derive(Default)]
struct Outbox {
    buf: Vec<u8>,
    /// Bytes of `buf` written to the socket.
    written: usize,
    /// A frame start at or before the end of the partly written frame.
    boundary: usize,
}

impl Outbox {
    fn unsent(&self) -> usize {
        self.buf.len() - self.written
    }

    /// Queues one text (or other) frame made of `parts`, unless that would put more
    /// than `budget` bytes unsent.
    fn frame(&mut self, opcode: u8, parts: &[&[u8]], budget: usize) -> Result<(), Reason> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let frame_len = frame::header_len(len) + len;
        if self.unsent() + frame_len > budget {
            return Err(Reason::Outbound);
        }
        self.buf.reserve(frame_len);
        frame::write_header(&mut self.buf, opcode, len);
        for part in parts {
            self.buf.extend_from_slice(part);
        }
        Ok(())
    }

    /// Moves `boundary` to the end of the frame being written.
    fn advance_boundary(&mut self) {
        while self.boundary < self.written {
            self.boundary += frame::our_frame_len(&self.buf[self.boundary..]);
        }
    }

    /// Drops every queued frame but the one being written.
    fn discard_unsent(&mut self) {
        self.advance_boundary();
        self.buf.truncate(self.boundary);
    }

    /// Writes until everything is out or the socket is full.
    fn poll_flush(&mut self, io: &mut TcpStream, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            match Pin::new(&mut *io).poll_write(cx, &self.buf[self.written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    if self.written >= self.buf.len() / 2 {
                        // Keep the buffer from growing with what is already out.
                        self.advance_boundary();
                        self.buf.drain(..self.written);
                        self.boundary -= self.written;
                        self.written = 0;
                    }
                    return Poll::Pending;
                }
            }
        }
        // Freed: an idle connection holds no buffer.
        self.buf = Vec::new();
        self.written = 0;
        self.boundary = 0;
        Poll::Ready(Ok(()))
    }
}

/// A request as jsonrpsee's [`Request`] reads it, but with its id left raw: the id is
/// an untagged enum there, which tries `null` first and so builds (and formats) an
/// error for every numeric id.
#[derive(Deserialize)]
struct LeanRequest<'a> {
    #[expect(dead_code, reason = "checked by parsing it")]
    jsonrpc: TwoPointZero,
    #[serde(borrow)]
    id: &'a RawValue,
    #[serde(borrow)]
    method: Cow<'a, str>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
}

impl LeanRequest<'_> {
    /// The owned request; `None` for an id this does not read itself (a string, or
    /// anything jsonrpsee would refuse), which then goes the [`Request`] way.
    fn into_request(self) -> Option<Request<'static>> {
        let id = match self.id.get() {
            "null" => Id::Null,
            digits if digits.bytes().all(|b| b.is_ascii_digit()) => Id::Number(digits.parse().ok()?),
            _ => return None,
        };
        Some(Request::owned(self.method.into_owned(), self.params.map(ToOwned::to_owned), id))
    }
}

/// A request whose answer is not ready yet.
type Pending = BoxFuture<'static, MethodResponse>;

/// One WebSocket connection after the upgrade.
pub(crate) struct Socket {
    io: TcpStream,
    /// The connection's RPC service and session; `None` once the connection closes.
    rpc: Option<WsService>,
    conn: Arc<Conn>,
    limits: Limits,
    state: State,
    /// Bytes read and not consumed yet (part of a frame); unallocated when empty.
    rbuf: Vec<u8>,
    /// The payload so far of a fragmented message, and its opcode.
    message: Vec<u8>,
    assembling: Option<u8>,
    /// Payload bytes of the current frame still to skip (of an oversized message).
    skip: u64,
    /// The rest of the current (oversized) message is skipped.
    discarding: bool,
    out: Outbox,
    in_flight: FuturesUnordered<Pending>,
    stream: Option<EventStream>,
    /// Any frame arrived since the last ping.
    heard: bool,
    missed_pings: u8,
    next_ping: Instant,
    join_deadline: Option<Instant>,
}

impl Socket {
    /// A connection over `io`, where `read` is what was read past the upgrade request.
    pub(crate) fn new(io: TcpStream, read: &[u8], rpc: WsService, conn: Arc<Conn>, limits: Limits) -> Socket {
        let now = Instant::now();
        Socket {
            io,
            rpc: Some(rpc),
            conn,
            limits,
            state: State::Open,
            rbuf: read.to_vec(),
            message: Vec::new(),
            assembling: None,
            skip: 0,
            discarding: false,
            out: Outbox::default(),
            in_flight: FuturesUnordered::new(),
            stream: None,
            heard: false,
            missed_pings: 0,
            next_ping: now + limits.ping_interval,
            join_deadline: Some(now + limits.join_timeout),
        }
    }

    /// Serves the connection until it closes or `stopped` completes (the server stops).
    pub(crate) async fn run(mut self, stopped: impl Future<Output = ()>) {
        let timer = tokio::time::sleep_until(self.next_deadline());
        tokio::pin!(timer, stopped);
        std::future::poll_fn(|cx| self.poll(cx, timer.as_mut(), stopped.as_mut())).await;
        self.end_session();
    }

    /// The connection is over for the session layer (it is closing or closed): answers
    /// nobody will read are dropped (their jobs still run on the session), the event
    /// stream goes back to the session, and the session layer is told, once.
    fn end_session(&mut self) {
        self.in_flight = FuturesUnordered::new();
        self.stream = None;
        if let Some(rpc) = self.rpc.take() {
            rpc.connection_closed();
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>, mut timer: Pin<&mut Sleep>, stopped: Pin<&mut impl Future>) -> Poll<()> {
        if self.poll_turn(cx, timer.as_mut(), stopped).is_ready() {
            return Poll::Ready(());
        }
        // A close started outside the timer (budget, client, shutdown) arms its deadline.
        if let State::Closing { deadline, .. } = self.state
            && timer.deadline() > deadline
        {
            timer.as_mut().reset(deadline);
            if timer.as_mut().poll(cx).is_ready() {
                cx.waker().wake_by_ref();
            }
        }
        Poll::Pending
    }

    /// One turn of the connection: timers, answers, reading, events, writing.
    fn poll_turn(
        &mut self,
        cx: &mut Context<'_>,
        mut timer: Pin<&mut Sleep>,
        stopped: Pin<&mut impl Future>,
    ) -> Poll<()> {
        if self.state == State::Open && stopped.poll(cx).is_ready() {
            self.close(Reason::Shutdown);
        }
        if self.state == State::Open && self.conn.poll_superseded(cx) {
            self.close(Reason::Superseded);
        }
        while timer.as_mut().poll(cx).is_ready() {
            if self.on_timer(Instant::now()) {
                return Poll::Ready(());
            }
            timer.as_mut().reset(self.next_deadline());
        }
        for _ in 0..READS_PER_TURN {
            let mut again = false;
            while let Poll::Ready(Some(answer)) = self.in_flight.poll_next_unpin(cx) {
                self.answer(answer);
            }
            match self.state {
                State::Open => {
                    match self.poll_read(cx) {
                        Poll::Ready(Ok(true)) => again = true,
                        Poll::Ready(Ok(false)) | Poll::Ready(Err(_)) => return Poll::Ready(()),
                        Poll::Pending => {}
                    }
                    if let Err(reason) = self.poll_events(cx) {
                        self.close(reason);
                    }
                }
                State::Closing { shut_down: true, .. } => {
                    // Waiting for the client's close: what it sends is dropped.
                    let mut chunk = [0u8; READ_CHUNK];
                    let mut buf = ReadBuf::new(&mut chunk);
                    match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                        Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(()),
                        Poll::Ready(Ok(())) => again = true,
                        Poll::Ready(Err(_)) => return Poll::Ready(()),
                        Poll::Pending => {}
                    }
                }
                State::Closing { shut_down: false, .. } => {}
            }
            match self.out.poll_flush(&mut self.io, cx) {
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(())) => {
                    if let State::Closing { deadline, shut_down: false } = self.state {
                        if ready!(Pin::new(&mut self.io).poll_shutdown(cx)).is_err() {
                            return Poll::Ready(());
                        }
                        self.state = State::Closing { deadline, shut_down: true };
                        again = true;
                    }
                }
                Poll::Pending => {}
            }
            if !again {
                return Poll::Pending;
            }
        }
        // Enough for one turn: let the other connections run.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// The next timer: the close deadline, or the next ping or the join deadline.
    fn next_deadline(&self) -> Instant {
        match self.state {
            State::Closing { deadline, .. } => deadline,
            State::Open => self.join_deadline.map_or(self.next_ping, |j| j.min(self.next_ping)),
        }
    }

    /// Acts on the timer; `true` when the connection is done.
    fn on_timer(&mut self, now: Instant) -> bool {
        if let State::Closing { deadline, .. } = self.state {
            return now >= deadline;
        }
        if let Some(deadline) = self.join_deadline {
            if self.conn.is_joined() {
                self.join_deadline = None;
            } else if now >= deadline {
                tracing::debug!("closing a connection that did not join in time");
                self.close(Reason::JoinTimeout);
                return false;
            }
        }
        if now >= self.next_ping {
            self.next_ping = now + self.limits.ping_interval;
            if std::mem::take(&mut self.heard) {
                self.missed_pings = 0;
            } else {
                self.missed_pings += 1;
                if self.missed_pings >= MAX_MISSED_PINGS {
                    self.close(Reason::PingTimeout);
                    return false;
                }
            }
            if let Err(reason) = self.out.frame(PING, &[], self.limits.max_outbound) {
                self.close(reason);
            }
        }
        false
    }

    /// Queues the close frame for `reason` and stops reading requests and events.
    fn close(&mut self, reason: Reason) {
        if self.state != State::Open {
            return;
        }
        if reason == Reason::Outbound {
            tracing::info!(unsent = self.out.unsent(), "closing a connection that does not read its answers");
            self.out.discard_unsent();
        }
        let (code, text) = reason.close_frame();
        let mut close = Vec::with_capacity(2 + 2 + text.len());
        frame::write_close(&mut close, code, text);
        self.out.buf.extend_from_slice(&close);
        self.state = State::Closing { deadline: Instant::now() + CLOSE_GRACE, shut_down: false };
        self.end_session();
        self.rbuf = Vec::new();
        self.message = Vec::new();
    }

    /// Reads what the socket has (one chunk) and handles it; `Ok(false)` at the end of
    /// the stream.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        if !self.rbuf.is_empty() && !self.full() {
            // Left over from a turn that stopped at `--max-in-flight`.
            self.consume_buffered(cx, &[]);
        }
        if self.full() || self.state != State::Open {
            return Poll::Pending;
        }
        let mut chunk = [0u8; READ_CHUNK];
        let mut buf = ReadBuf::new(&mut chunk);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
        let n = buf.filled().len();
        if n == 0 {
            return Poll::Ready(Ok(false));
        }
        if self.rbuf.is_empty() {
            let data = &mut chunk[..n];
            let used = self.consume(cx, data);
            if self.state == State::Open {
                self.rbuf.extend_from_slice(&data[used..]);
            }
        } else {
            self.consume_buffered(cx, &chunk[..n]);
        }
        Poll::Ready(Ok(true))
    }

    /// Appends `more` to the buffered bytes and handles what is complete.
    fn consume_buffered(&mut self, cx: &mut Context<'_>, more: &[u8]) {
        let mut data = std::mem::take(&mut self.rbuf);
        data.extend_from_slice(more);
        let used = self.consume(cx, &mut data);
        if self.state == State::Open && used < data.len() {
            data.drain(..used);
            self.rbuf = data;
        }
    }

    /// Whether `--max-in-flight` requests wait for their answers.
    fn full(&self) -> bool {
        self.in_flight.len() >= self.limits.max_in_flight
    }

    /// Handles the frames at the start of `data` (unmasking them in place) and returns
    /// how many bytes it used; stops at an incomplete frame, when `--max-in-flight`
    /// requests wait, or when the connection closes.
    fn consume(&mut self, cx: &mut Context<'_>, data: &mut [u8]) -> usize {
        match self.consume_frames(cx, data) {
            Ok(used) => used,
            Err(reason) => {
                self.close(reason);
                data.len()
            }
        }
    }

    fn consume_frames(&mut self, cx: &mut Context<'_>, data: &mut [u8]) -> Result<usize, Reason> {
        let mut pos = 0;
        while self.state == State::Open {
            if self.skip > 0 {
                let n = self.skip.min((data.len() - pos) as u64);
                pos += n as usize;
                self.skip -= n;
                if self.skip > 0 {
                    break;
                }
                continue;
            }
            if self.full() {
                break;
            }
            let Some(header) = frame::parse_header(&data[pos..]).map_err(|e| Reason::Protocol(e.0))? else {
                break;
            };
            self.heard = true;
            let start = pos + header.header_len;
            if !header.is_control() {
                match (header.opcode, self.assembling.is_some() || self.discarding) {
                    (CONTINUATION, false) => return Err(Reason::Protocol("continuation without a message")),
                    (CONTINUATION, true) | (_, false) => {}
                    (_, true) => return Err(Reason::Protocol("a new message inside a fragmented one")),
                }
                if self.discarding {
                    self.skip = header.len;
                    self.discarding = !header.fin;
                    pos = start;
                    continue;
                }
                if self.message.len() as u64 + header.len > self.limits.max_message as u64 {
                    // Like jsonrpsee: an oversized message gets -32007 with id null, and
                    // the connection goes on.
                    self.message = Vec::new();
                    self.assembling = None;
                    let error = reject_too_big_request(self.limits.max_message as u32);
                    self.answer(MethodResponse::error(Id::Null, error));
                    self.skip = header.len;
                    self.discarding = !header.fin;
                    pos = start;
                    continue;
                }
            }
            let end = start + header.len as usize;
            if data.len() < end {
                break;
            }
            let payload = &mut data[start..end];
            frame::unmask(payload, header.mask, 0);
            pos = end;
            if header.is_control() {
                self.on_control(header.opcode, payload)?;
            } else if header.fin && self.assembling.is_none() {
                self.on_message(cx, header.opcode, payload)?;
            } else {
                let opcode = *self.assembling.get_or_insert(header.opcode);
                self.message.extend_from_slice(payload);
                if header.fin {
                    self.assembling = None;
                    let message = std::mem::take(&mut self.message);
                    self.on_message(cx, opcode, &message)?;
                }
            }
        }
        Ok(pos)
    }

    fn on_control(&mut self, opcode: u8, payload: &[u8]) -> Result<(), Reason> {
        match opcode {
            PING => self.out.frame(PONG, &[payload], self.limits.max_outbound),
            CLOSE => {
                let code = payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
                // Codes a peer may not send are answered with a protocol error.
                let code = code.filter(|c| matches!(c, 1000..=1003 | 1007..=1011 | 3000..=4999));
                Err(Reason::ClientClosed(code))
            }
            _ => Ok(()),
        }
    }

    /// One whole message: a JSON-RPC request, a notification (not answered) or garbage
    /// (answered with jsonrpsee's error for it).
    fn on_message(&mut self, cx: &mut Context<'_>, opcode: u8, data: &[u8]) -> Result<(), Reason> {
        if opcode == TEXT && std::str::from_utf8(data).is_err() {
            return Err(Reason::InvalidUtf8);
        }
        let start = data.iter().take(128).position(|b| !b.is_ascii_whitespace());
        let body = match start.map(|i| (i, data[i])) {
            Some((i, b'{')) => &data[i..],
            Some((_, b'[')) => {
                let error = ErrorObject::borrowed(BATCHES_NOT_SUPPORTED_CODE, BATCHES_NOT_SUPPORTED_MSG, None);
                self.answer(MethodResponse::error(Id::Null, error));
                return Ok(());
            }
            _ => {
                self.answer(MethodResponse::error(Id::Null, ErrorObject::from(ErrorCode::ParseError)));
                return Ok(());
            }
        };
        let request = serde_json::from_slice::<LeanRequest<'_>>(body).ok().and_then(LeanRequest::into_request);
        let request = match request {
            Some(request) => Ok(request),
            // What the lean parse does not take, jsonrpsee's own type parses (or refuses).
            None => serde_json::from_slice::<Request<'_>>(body).map(|request| {
                Request::owned(
                    request.method.into_owned(),
                    request.params.map(|p| p.into_owned()),
                    request.id.into_owned(),
                )
            }),
        };
        match request {
            Ok(request) => {
                let Some(rpc) = &self.rpc else { return Ok(()) };
                let mut call: Pending = Box::pin(rpc.call(request));
                // The first poll queues the request on its session: now, in wire order.
                match call.as_mut().poll(cx) {
                    Poll::Ready(answer) => self.answer(answer),
                    Poll::Pending => self.in_flight.push(call),
                }
            }
            // A notification is not answered.
            Err(_) if serde_json::from_slice::<Notification<'_, Option<&RawValue>>>(body).is_ok() => {}
            Err(_) => {
                let (id, code) = jsonrpsee::server::prepare_error(body);
                self.answer(MethodResponse::error(id, ErrorObject::from(code)));
            }
        }
        Ok(())
    }

    /// Queues an answer (and starts or ends the event stream it carries).
    fn answer(&mut self, answer: MethodResponse) {
        if self.state != State::Open {
            return;
        }
        let stream = answer.extensions().get::<NewStream>().and_then(NewStream::take);
        if answer.extensions().get::<EndStream>().is_some() {
            self.stream = None;
        }
        if answer.is_method_call()
            && let Err(reason) = self.out.frame(TEXT, &[answer.as_json().get().as_bytes()], self.limits.max_outbound)
        {
            self.close(reason);
            return;
        }
        if let Some(stream) = stream {
            self.conn.stream_started(stream.subscription());
            self.stream = Some(stream);
        }
    }

    /// Moves events from the session's queue to the output while it has room.
    fn poll_events(&mut self, cx: &mut Context<'_>) -> Result<(), Reason> {
        while self.out.unsent() < EVENTS_HIGH_WATER {
            let Some(stream) = &mut self.stream else { return Ok(()) };
            match stream.poll_next(cx) {
                Poll::Pending => return Ok(()),
                Poll::Ready(Some(Next::Event(event))) => {
                    let (head, members) = crate::events::with_seq(event.seq, &event.event);
                    self.out.frame(TEXT, &stream.notification(&head, members), self.limits.max_outbound)?;
                }
                Poll::Ready(Some(Next::End(error))) => {
                    self.out.frame(TEXT, &[error.get().as_bytes()], self.limits.max_outbound)?;
                    self.end_stream();
                }
                Poll::Ready(None) => self.end_stream(),
            }
        }
        Ok(())
    }

    fn end_stream(&mut self) {
        if let Some(stream) = self.stream.take() {
            self.conn.end_subscription(stream.subscription());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lean parse gives what jsonrpsee's `Request` gives, or leaves it to it.
    #[test]
    fn lean_requests_read_like_jsonrpsee_requests() {
        let texts = [
            r#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"ping","params":null}"#,
            r#"{"jsonrpc":"2.0","id":18446744073709551615,"method":"join","params":{"room":"r"},"x":1}"#,
            r#"{"id":3,"method":"p\u0069ng","params":[1],"jsonrpc":"2.0"}"#,
            r#"{"jsonrpc":"2.0","id":"a\"b","method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":18446744073709551616,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":-1,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
            r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1}"#,
        ];
        for text in texts {
            let theirs =
                serde_json::from_str::<Request<'_>>(text).ok().map(|r| (r.id.into_owned(), r.method, r.params));
            let ours = serde_json::from_str::<LeanRequest<'_>>(text).ok().and_then(LeanRequest::into_request);
            if let Some(ours) = ours {
                let theirs = theirs.unwrap_or_else(|| panic!("jsonrpsee refuses {text}"));
                assert_eq!(ours.id, theirs.0, "{text}");
                assert_eq!(ours.method, theirs.1, "{text}");
                assert_eq!(ours.params.map(|p| p.get().to_owned()), theirs.2.map(|p| p.get().to_owned()), "{text}");
            }
        }
        // The common case takes the lean way.
        assert!(serde_json::from_str::<LeanRequest<'_>>(texts[0]).ok().and_then(LeanRequest::into_request).is_some());
    }
}
