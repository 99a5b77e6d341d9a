//! The cheap WebSocket client of the `ping` scenario: a plain TCP stream, the upgrade
//! written by hand, one pre-encoded masked request frame per connection whose id
//! digits are rewritten (and re-masked) in place, and answers matched by their `"id":`
//! digits without parsing the JSON. So the load client spends its CPU on the socket
//! calls, not on framing and JSON, and bounds a closed-loop measurement less.

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::target::Kind;

/// Request ids are `FIRST_ID..`: ten digits, so the frame keeps its length.
const FIRST_ID: u64 = 1_000_000_000;
const ID_DIGITS: usize = 10;
/// The client's masking key (any key is valid; the server unmasks every byte).
const MASK: [u8; 4] = [0x5a, 0x13, 0xc7, 0x8e];
/// How long one answer may take before the run fails.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// One connection that sends pings and waits for their answers.
pub(crate) struct PingConn {
    io: TcpStream,
    /// The masked request frame; the id digits are at `id_at..id_at + ID_DIGITS`
    /// (frame offsets).
    frame: Vec<u8>,
    id_at: usize,
    id: u64,
    /// Bytes read and not consumed yet.
    rbuf: Vec<u8>,
}

impl PingConn {
    /// Connects to `url` (`ws://host:port/path`) with Nagle's algorithm off and
    /// upgrades.
    pub(crate) async fn connect(url: &str, kind: Kind) -> anyhow::Result<PingConn> {
        let rest = url.strip_prefix("ws://").with_context(|| format!("not a ws:// url: {url}"))?;
        let (host, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
        let mut io = TcpStream::connect(host).await.with_context(|| format!("connecting to {url}"))?;
        io.set_nodelay(true)?;
        let upgrade = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        io.write_all(upgrade.as_bytes()).await?;
        let mut rbuf = Vec::with_capacity(4096);
        let head_end = loop {
            if let Some(at) = rbuf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            ensure!(rbuf.len() < 16 * 1024, "upgrade answer too long");
            if io.read_buf(&mut rbuf).await? == 0 {
                bail!("connection closed during the upgrade");
            }
        };
        ensure!(rbuf.starts_with(b"HTTP/1.1 101"), "upgrade refused: {}", String::from_utf8_lossy(&rbuf[..head_end]));
        rbuf.drain(..head_end);
        let (frame, id_at) = request_frame(kind);
        Ok(PingConn { io, frame, id_at, id: FIRST_ID, rbuf })
    }

    /// Sends the next ping and waits for its answer (skipping other messages).
    pub(crate) async fn ping(&mut self) -> anyhow::Result<()> {
        self.id += 1;
        set_id(&mut self.frame, self.id_at, self.id);
        self.io.write_all(&self.frame).await.context("send")?;
        let id = self.id;
        tokio::time::timeout(ANSWER_TIMEOUT, self.answer(id))
            .await
            .with_context(|| format!("no answer to ping {id} in {ANSWER_TIMEOUT:?}"))?
    }

    async fn answer(&mut self, id: u64) -> anyhow::Result<()> {
        loop {
            while let Some((opcode, start, end)) = next_frame(&self.rbuf)? {
                let payload = &self.rbuf[start..end];
                let found = match opcode {
                    TEXT => answer_id(payload) == Some(id),
                    CLOSE => bail!("the server closed the connection"),
                    _ => false,
                };
                if found && payload.windows(8).any(|w| w == b"\"error\":") {
                    bail!("ping {id} failed: {}", String::from_utf8_lossy(payload));
                }
                self.rbuf.drain(..end);
                if found {
                    return Ok(());
                }
            }
            if self.io.read_buf(&mut self.rbuf).await.context("receive")? == 0 {
                bail!("connection closed while waiting for ping {id}");
            }
        }
    }

    /// Sends a close frame (best effort).
    pub(crate) async fn close(mut self) {
        let mut close = vec![0x88, 0x82];
        close.extend_from_slice(&MASK);
        close.extend(1000u16.to_be_bytes().iter().zip(MASK).map(|(b, m)| b ^ m));
        let _ = self.io.write_all(&close).await;
    }
}

const TEXT: u8 = 0x1;
const CLOSE: u8 = 0x8;

/// The masked ping request of `kind`'s protocol and where its id digits are.
fn request_frame(kind: Kind) -> (Vec<u8>, usize) {
    let (before, after) = match kind {
        Kind::Dspeak => (r#"{"jsonrpc":"2.0","id":"#, r#","method":"ping"}"#),
        Kind::Node => (r#"{"type":"ping","id":"#, "}"),
    };
    let len = before.len() + ID_DIGITS + after.len();
    assert!(len < 126, "a ping fits a short frame");
    let mut frame = vec![0x80 | TEXT, 0x80 | len as u8];
    frame.extend_from_slice(&MASK);
    let payload_at = frame.len();
    frame.extend_from_slice(before.as_bytes());
    frame.extend_from_slice(&[b'0'; ID_DIGITS]);
    frame.extend_from_slice(after.as_bytes());
    for (i, b) in frame[payload_at..].iter_mut().enumerate() {
        *b ^= MASK[i % 4];
    }
    // The id's frame offset; its mask position follows from the payload offset.
    (frame, payload_at + before.len())
}

/// Writes `id` (ten digits) masked into `frame` at `at`.
fn set_id(frame: &mut [u8], at: usize, id: u64) {
    let payload_at = 6;
    let mut n = id;
    for i in (0..ID_DIGITS).rev() {
        let digit = b'0' + (n % 10) as u8;
        n /= 10;
        frame[at + i] = digit ^ MASK[(at + i - payload_at) % 4];
    }
}

/// The next whole (unmasked, server-sent) frame in `buf`: opcode and payload range.
fn next_frame(buf: &[u8]) -> anyhow::Result<Option<(u8, usize, usize)>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    ensure!(buf[1] & 0x80 == 0, "the server masked a frame");
    let (len, header) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (buf[2..10].iter().fold(0usize, |n, &b| (n << 8) | usize::from(b)), 10),
        126 | 127 => return Ok(None),
        n => (n as usize, 2),
    };
    if buf.len() < header + len {
        return Ok(None);
    }
    Ok(Some((buf[0] & 0x0f, header, header + len)))
}

/// The number after the first `"id":` of a message.
fn answer_id(text: &[u8]) -> Option<u64> {
    let at = text.windows(5).position(|w| w == b"\"id\":")? + 5;
    let digits = &text[at..];
    let end = digits.iter().position(|b| !b.is_ascii_digit()).unwrap_or(digits.len());
    if end == 0 || end > 19 {
        return None;
    }
    Some(digits[..end].iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unmasked(frame: &[u8]) -> String {
        let payload: Vec<u8> = frame[6..].iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]).collect();
        String::from_utf8(payload).expect("utf-8")
    }

    #[test]
    fn request_frames_carry_the_id() {
        let (mut frame, at) = request_frame(Kind::Dspeak);
        set_id(&mut frame, at, 1_234_567_890);
        assert_eq!(unmasked(&frame), r#"{"jsonrpc":"2.0","id":1234567890,"method":"ping"}"#);
        assert_eq!(frame[1] & 0x7f, (frame.len() - 6) as u8);
        let (mut frame, at) = request_frame(Kind::Node);
        set_id(&mut frame, at, FIRST_ID + 7);
        assert_eq!(unmasked(&frame), r#"{"type":"ping","id":1000000007}"#);
    }

    #[test]
    fn answers_are_matched_by_id() {
        assert_eq!(answer_id(br#"{"jsonrpc":"2.0","id":1000000011,"result":{"type":"pong"}}"#), Some(1_000_000_011));
        assert_eq!(answer_id(br#"{"type":"pong","id":1000000011,"timestamp":5}"#), Some(1_000_000_011));
        assert_eq!(answer_id(br#"{"type":"welcome","peerId":"7"}"#), None);
        let mut buf = vec![0x81, 3, b'a', b'b', b'c', 0x81, 126, 0, 200];
        assert_eq!(next_frame(&buf).unwrap(), Some((TEXT, 2, 5)));
        buf.drain(..5);
        assert_eq!(next_frame(&buf).unwrap(), None);
    }
}
