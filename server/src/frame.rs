//! RFC 6455 WebSocket frames, server side: the opening handshake's accept key, parsing
//! the client's (masked) frame headers, and writing the server's (unmasked) frames.
//!
//! Sans-IO and allocation-free: `socket` reads and writes the bytes. Only what the
//! server needs is here: no extensions (a frame with an RSV bit set is a protocol
//! error), no masking on our side.

use base64::Engine as _;

/// Text data frame.
pub(crate) const TEXT: u8 = 0x1;
/// Binary data frame.
pub(crate) const BINARY: u8 = 0x2;
/// Continuation of a fragmented message.
pub(crate) const CONTINUATION: u8 = 0x0;
/// Close control frame.
pub(crate) const CLOSE: u8 = 0x8;
/// Ping control frame.
pub(crate) const PING: u8 = 0x9;
/// Pong control frame.
pub(crate) const PONG: u8 = 0xA;

/// Close code: normal closure.
pub(crate) const CLOSE_NORMAL: u16 = 1000;
/// Close code: the server is going away.
pub(crate) const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code: protocol error.
pub(crate) const CLOSE_PROTOCOL: u16 = 1002;
/// Close code: a text message that is not UTF-8.
pub(crate) const CLOSE_INVALID_DATA: u16 = 1007;
/// Close code: policy violation (a bound of the connection was hit).
pub(crate) const CLOSE_POLICY: u16 = 1008;

/// The `Sec-WebSocket-Accept` value for a client's `Sec-WebSocket-Key`.
pub(crate) fn accept_key(key: &[u8]) -> String {
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key);
    ctx.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(ctx.finish().as_ref())
}

/// A client frame's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) fin: bool,
    pub(crate) opcode: u8,
    pub(crate) mask: [u8; 4],
    /// Payload length.
    pub(crate) len: u64,
    /// Bytes of the header itself.
    pub(crate) header_len: usize,
}

impl Header {
    /// Whether this is a control frame (close, ping, pong).
    pub(crate) fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// A frame that breaks the protocol; the connection is closed with 1002.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ProtocolError(pub(crate) &'static str);

/// Parses the header of a client frame at the start of `buf`; `None` until enough
/// bytes are there.
pub(crate) fn parse_header(buf: &[u8]) -> Result<Option<Header>, ProtocolError> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    if b0 & 0x70 != 0 {
        return Err(ProtocolError("reserved bits set (no extension was negotiated)"));
    }
    let opcode = b0 & 0x0F;
    if !matches!(opcode, CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG) {
        return Err(ProtocolError("reserved opcode"));
    }
    let fin = b0 & 0x80 != 0;
    if b1 & 0x80 == 0 {
        return Err(ProtocolError("client frames must be masked"));
    }
    let (len, at) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut n = [0u8; 8];
                n.copy_from_slice(b);
                (u64::from_be_bytes(n), 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if len >> 63 != 0 {
        return Err(ProtocolError("the most significant bit of a 64-bit length must be 0"));
    }
    let header = Header { fin, opcode, mask: [0; 4], len, header_len: at + 4 };
    if header.is_control() && (!fin || len > 125) {
        return Err(ProtocolError("control frames must be whole and at most 125 bytes"));
    }
    let Some(mask) = buf.get(at..at + 4) else { return Ok(None) };
    Ok(Some(Header { mask: [mask[0], mask[1], mask[2], mask[3]], ..header }))
}

/// Unmasks a payload in place; `offset` is the position of `payload[0]` in its frame's
/// payload.
pub(crate) fn unmask(payload: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut rotated = [0u8; 4];
    for (i, r) in rotated.iter_mut().enumerate() {
        *r = mask[(offset + i) % 4];
    }
    let word = u32::from_ne_bytes(rotated);
    let mut chunks = payload.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let value = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= rotated[i];
    }
}

/// The length of a server frame header for a payload of `len` bytes.
pub(crate) fn header_len(len: usize) -> usize {
    match len {
        ..126 => 2,
        126..=0xFFFF => 4,
        _ => 10,
    }
}

/// Appends the header of a whole (FIN) server frame.
pub(crate) fn write_header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    out.push(0x80 | opcode);
    match len {
        ..126 => out.push(len as u8),
        126..=0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

/// The total length of the server frame at the start of `buf` (written by
/// [`write_header`]).
pub(crate) fn our_frame_len(buf: &[u8]) -> usize {
    match buf[1] {
        126 => 4 + usize::from(u16::from_be_bytes([buf[2], buf[3]])),
        127 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(&buf[2..10]);
            10 + u64::from_be_bytes(n) as usize
        }
        n => 2 + usize::from(n),
    }
}

/// Appends a close frame with `code` and `reason` (cut to fit a control frame).
pub(crate) fn write_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    write_header(out, CLOSE, 2 + end);
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&reason.as_bytes()[..end]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_key_matches_rfc_6455() {
        // RFC 6455 §1.3.
        assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    fn masked(opcode: u8, fin: bool, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut frame = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n @ ..126 => frame.push(0x80 | n as u8),
            n @ 126..=0xFFFF => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        frame
    }

    #[test]
    fn client_frames_parse_at_every_length_and_unmask_in_pieces() {
        for len in [0, 5, 125, 126, 1000, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let frame = masked(TEXT, true, &payload, [9, 8, 7, 6]);
            for cut in 0..frame.len().min(14) {
                let partial = parse_header(&frame[..cut]).unwrap();
                assert!(partial.is_none() || cut >= partial.unwrap().header_len, "len {len}, cut {cut}");
            }
            let h = parse_header(&frame).unwrap().unwrap();
            assert_eq!((h.fin, h.opcode, h.len), (true, TEXT, len as u64));
            let mut body = frame[h.header_len..].to_vec();
            // Unmasked in two pieces, the second at an odd offset.
            let split = body.len() / 3;
            let (a, b) = body.split_at_mut(split);
            unmask(a, h.mask, 0);
            unmask(b, h.mask, split);
            assert_eq!(body, payload);
        }
    }

    #[test]
    fn protocol_errors_are_refused() {
        let mut rsv = masked(TEXT, true, b"x", [1, 2, 3, 4]);
        rsv[0] |= 0x40;
        assert!(parse_header(&rsv).is_err());
        assert!(parse_header(&masked(0x3, true, b"x", [1, 2, 3, 4])).is_err(), "reserved opcode");
        assert!(parse_header(&[0x81, 0x01, b'x']).is_err(), "unmasked");
        assert!(parse_header(&masked(PING, false, b"x", [1, 2, 3, 4])).is_err(), "fragmented control");
        assert!(parse_header(&masked(PING, true, &[0; 126], [1, 2, 3, 4])).is_err(), "long control");
    }

    #[test]
    fn server_frames_say_their_own_length() {
        for len in [0, 125, 126, 65535, 65536] {
            let mut out = Vec::new();
            write_header(&mut out, TEXT, len);
            assert_eq!(out.len(), header_len(len));
            out.resize(out.len() + len, b'a');
            assert_eq!(our_frame_len(&out), out.len());
        }
        let mut close = Vec::new();
        write_close(&mut close, CLOSE_POLICY, &"é".repeat(100));
        assert_eq!(our_frame_len(&close), close.len());
        assert!(close.len() <= 2 + 125);
        assert_eq!(u16::from_be_bytes([close[2], close[3]]), CLOSE_POLICY);
        assert!(std::str::from_utf8(&close[4..]).is_ok(), "the reason is cut at a character boundary");
    }
}
