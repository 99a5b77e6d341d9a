//! What the worker writes itself for a consumer before sealing it: the RTP header,
//! prebuilt once per consumer and patched per packet, and the consumer's RTCP sender
//! report + SDES (RFC 3550 §6.4.1, §6.5), consistent with what it sent.
//!
//! Nothing here allocates per packet: the header is a fixed array, and both writers
//! write into a caller's buffer (the worker's per-wake-up arena).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// RTP version 2, as the first byte's top bits.
const VERSION: u8 = 0x80;
/// The X bit: a header extension follows the fixed header.
const EXTENSION: u8 = 0x10;
/// The marker bit of the second byte.
const MARKER: u8 = 0x80;
/// RFC 8285 one-byte header extension profile.
const ONE_BYTE_PROFILE: [u8; 2] = [0xBE, 0xDE];
/// The longest value a one-byte extension element holds.
const ONE_BYTE_MAX: usize = 16;
/// The one-byte elements a consumer's header may carry: the `mid` (1–16 bytes) and
/// the audio level (RFC 6464: one byte).
const ELEMENTS_MAX: usize = (1 + ONE_BYTE_MAX) + (1 + 1);
/// The longest prebuilt header: 12 fixed bytes, 4 of extension header, the elements
/// padded to 32 bits.
const HEADER_MAX: usize = 12 + 4 + ELEMENTS_MAX.div_ceil(4) * 4;

/// RTCP packet types (RFC 3550 §12.1).
const RTCP_SR: u8 = 200;
const RTCP_SDES: u8 = 202;
/// SDES item CNAME.
const SDES_CNAME: u8 = 1;
/// Seconds from 1900 (NTP) to 1970 (Unix).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// A consumer's RTP header with its SSRC, payload type and `mid` extension in place;
/// sequence number, timestamp, marker and the audio level are patched per packet.
///
/// When the consumer negotiated `ssrc-audio-level`, the header holds a two-byte
/// element for it after the `mid`, and each packet gets the producer packet's level
/// byte (V bit and level, as received). A producer packet without a level (a client
/// that does not send it, or `--speaker-events off`, when levels are not read) gets
/// no level: the element's two bytes become padding (RFC 8285 §4.2), so the header
/// keeps its length and receivers see no level rather than an invented one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RtpHeader {
    bytes: [u8; HEADER_MAX],
    len: u8,
    /// Offset of the audio-level element (0: not negotiated).
    level_at: u8,
}

/// Whether `id` is a one-byte extension id (1–14; 15 is reserved).
fn one_byte_id(id: u8) -> bool {
    (1..=crate::router::MAX_ONE_BYTE_EXT_ID).contains(&id)
}

impl RtpHeader {
    /// The header of a stream with `ssrc` and `payload_type`, carrying the `mid` in a
    /// one-byte extension with id `mid_ext` and room for the audio level on id
    /// `level_ext`, each when the consumer negotiated it (ids 1–14, a MID of 1–16
    /// bytes; anything else is left out).
    pub(crate) fn new(payload_type: u8, ssrc: u32, mid_ext: Option<(u8, &str)>, level_ext: Option<u8>) -> RtpHeader {
        let mut bytes = [0u8; HEADER_MAX];
        bytes[0] = VERSION;
        bytes[1] = payload_type & 0x7f;
        bytes[8..12].copy_from_slice(&ssrc.to_be_bytes());
        // The elements start after the 4-byte extension header.
        let mut end = 16;
        if let Some((id, mid)) = mid_ext.filter(|(id, mid)| one_byte_id(*id) && (1..=ONE_BYTE_MAX).contains(&mid.len()))
        {
            bytes[end] = (id << 4) | (mid.len() - 1) as u8;
            bytes[end + 1..end + 1 + mid.len()].copy_from_slice(mid.as_bytes());
            end += 1 + mid.len();
        }
        let mut level_at = 0;
        if let Some(id) = level_ext.filter(|id| one_byte_id(*id)) {
            // One byte of value: length field 0; the value is written per packet.
            bytes[end] = id << 4;
            level_at = end;
            end += 2;
        }
        let mut len = 12;
        if end > 16 {
            bytes[0] |= EXTENSION;
            let words = (end - 16).div_ceil(4);
            bytes[12..14].copy_from_slice(&ONE_BYTE_PROFILE);
            bytes[14..16].copy_from_slice(&(words as u16).to_be_bytes());
            len = 16 + 4 * words;
        }
        RtpHeader { bytes, len: len as u8, level_at: level_at as u8 }
    }

    /// Header length in bytes.
    pub(crate) fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Writes the header with this packet's sequence number, timestamp, marker and
    /// RFC 6464 level byte (see [`level_byte`]) into the start of `buf` (at least
    /// [`RtpHeader::len`] bytes); returns its length.
    pub(crate) fn write(&self, buf: &mut [u8], seq: u16, timestamp: u32, marker: bool, level: Option<u8>) -> usize {
        let len = self.len();
        buf[..len].copy_from_slice(&self.bytes[..len]);
        if marker {
            buf[1] |= MARKER;
        }
        buf[2..4].copy_from_slice(&seq.to_be_bytes());
        buf[4..8].copy_from_slice(&timestamp.to_be_bytes());
        let at = usize::from(self.level_at);
        if at != 0 {
            match level {
                Some(byte) => buf[at + 1] = byte,
                // Both bytes zero: padding (the value byte is zero in `bytes`).
                None => buf[at] = 0,
            }
        }
        len
    }
}

/// The RFC 6464 byte (V bit, then the level as -dBov) of a received packet's level, as
/// str0m parsed it (`audio_level` in -127..=0 dBov, `voice_activity`).
pub(crate) fn level_byte(audio_level: Option<i8>, voice_activity: Option<bool>) -> Option<u8> {
    let level = audio_level?.unsigned_abs().min(127);
    Some(if voice_activity == Some(true) { 0x80 | level } else { level })
}

/// What a consumer has sent, for its sender reports.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SentClock {
    /// RTP timestamp of the last packet sent, and when it was sent.
    last: Option<(u32, Instant)>,
    /// Packets and payload octets sent (RFC 3550 §6.4.1: the counts wrap).
    pub(crate) packets: u64,
    pub(crate) octets: u64,
    /// When the next sender report is due.
    next_report: Instant,
}

/// How often each consumer sends a sender report.
pub(crate) const REPORT_INTERVAL: Duration = Duration::from_secs(1);

impl SentClock {
    pub(crate) fn new(now: Instant) -> SentClock {
        SentClock { last: None, packets: 0, octets: 0, next_report: now + REPORT_INTERVAL }
    }

    /// Notes one packet of `payload` bytes sent with RTP timestamp `timestamp`.
    pub(crate) fn sent(&mut self, now: Instant, timestamp: u32, payload: usize) {
        self.last = Some((timestamp, now));
        self.packets += 1;
        self.octets += payload as u64;
    }

    /// Whether a report is due at `now` (something was sent, and a second passed since
    /// the last report); if so, the next one is scheduled.
    pub(crate) fn report_due(&mut self, now: Instant) -> bool {
        if self.last.is_none() || now < self.next_report {
            return false;
        }
        self.next_report = now + REPORT_INTERVAL;
        true
    }

    /// The RTP timestamp that corresponds to `now`: the last one sent plus the time
    /// since, at `clock_rate`.
    fn rtp_time(&self, now: Instant, clock_rate: u32) -> u32 {
        let Some((timestamp, at)) = self.last else { return 0 };
        let elapsed = now.saturating_duration_since(at);
        let ticks = elapsed.as_nanos() * u128::from(clock_rate) / 1_000_000_000;
        timestamp.wrapping_add(ticks as u32)
    }
}

/// The 64-bit NTP timestamp of `wall`.
fn ntp_time(wall: SystemTime) -> u64 {
    let since = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs() + NTP_UNIX_OFFSET;
    let fraction = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
    (seconds << 32) | fraction
}

/// Writes a compound RTCP packet, a sender report (no report blocks) and an SDES
/// CNAME chunk, for `ssrc` into `buf`; returns its length. `now` and `wall` are the
/// same moment on the monotonic and the wall clock. The CNAME is cut to 255 bytes.
pub(crate) fn write_sender_report(
    buf: &mut [u8],
    ssrc: u32,
    clock: &SentClock,
    clock_rate: u32,
    cname: &str,
    now: Instant,
    wall: SystemTime,
) -> usize {
    // Sender report: 28 bytes, length 6 words after the first.
    buf[0] = VERSION;
    buf[1] = RTCP_SR;
    buf[2..4].copy_from_slice(&6u16.to_be_bytes());
    buf[4..8].copy_from_slice(&ssrc.to_be_bytes());
    buf[8..16].copy_from_slice(&ntp_time(wall).to_be_bytes());
    buf[16..20].copy_from_slice(&clock.rtp_time(now, clock_rate).to_be_bytes());
    buf[20..24].copy_from_slice(&(clock.packets as u32).to_be_bytes());
    buf[24..28].copy_from_slice(&(clock.octets as u32).to_be_bytes());
    // SDES: one chunk with the CNAME, ended by at least one null octet, padded to 32
    // bits (RFC 3550 §6.5).
    let cname = &cname.as_bytes()[..cname.len().min(255)];
    let chunk = (4 + 2 + cname.len() + 1).div_ceil(4) * 4;
    let sdes = &mut buf[28..28 + 4 + chunk];
    sdes[0] = VERSION | 1;
    sdes[1] = RTCP_SDES;
    sdes[2..4].copy_from_slice(&((chunk / 4) as u16).to_be_bytes());
    sdes[4..8].copy_from_slice(&ssrc.to_be_bytes());
    sdes[8] = SDES_CNAME;
    sdes[9] = cname.len() as u8;
    sdes[10..10 + cname.len()].copy_from_slice(cname);
    sdes[10 + cname.len()..].fill(0);
    28 + 4 + chunk
}

/// The most bytes [`write_sender_report`] writes.
pub(crate) const SENDER_REPORT_MAX: usize = 28 + 4 + 4 + 2 + 255 + 1 + 3;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_carries_ssrc_pt_mid_and_the_patched_fields() {
        let header = RtpHeader::new(100, 0xCAFE_BABE, Some((1, "12")), None);
        assert_eq!(header.len(), 20);
        let mut buf = [0xFFu8; 32];
        assert_eq!(header.write(&mut buf, 0x1234, 0xDEAD_BEEF, true, Some(0x89)), 20, "no level negotiated");
        assert_eq!(
            &buf[..20],
            &[
                0x90,
                0x80 | 100,
                0x12,
                0x34,
                0xDE,
                0xAD,
                0xBE,
                0xEF,
                0xCA,
                0xFE,
                0xBA,
                0xBE,
                0xBE,
                0xDE,
                0,
                1,
                0x11,
                b'1',
                b'2',
                0
            ]
        );
        let plain = RtpHeader::new(100, 7, None, None);
        assert_eq!(plain.write(&mut buf, 1, 2, false, None), 12);
        assert_eq!(&buf[..12], &[0x80, 100, 0, 1, 0, 0, 0, 2, 0, 0, 0, 7]);
        assert_eq!(RtpHeader::new(100, 7, Some((15, "1")), Some(15)).len(), 12, "id 15 is reserved");
    }

    #[test]
    fn header_carries_the_level_after_the_mid_or_padding_without_one() {
        // `mid` "0" (2 bytes) + level (2 bytes): exactly one word.
        let header = RtpHeader::new(100, 7, Some((1, "0")), Some(6));
        let mut buf = [0xFFu8; 32];
        assert_eq!(header.write(&mut buf, 1, 2, false, Some(0x89)), 20);
        assert_eq!(&buf[12..20], &[0xBE, 0xDE, 0, 1, 0x10, b'0', 0x60, 0x89]);
        assert_eq!(header.write(&mut buf, 1, 2, false, None), 20);
        assert_eq!(&buf[12..20], &[0xBE, 0xDE, 0, 1, 0x10, b'0', 0, 0], "no level: padding");
        // `mid` "12" + level: 5 bytes, padded to two words.
        let header = RtpHeader::new(100, 7, Some((1, "12")), Some(6));
        assert_eq!(header.write(&mut buf, 1, 2, false, Some(0x2b)), 24);
        assert_eq!(&buf[12..24], &[0xBE, 0xDE, 0, 2, 0x11, b'1', b'2', 0x60, 0x2b, 0, 0, 0]);
        // The level alone; and the longest header fits.
        let header = RtpHeader::new(100, 7, None, Some(14));
        assert_eq!(header.write(&mut buf, 1, 2, false, Some(0x7f)), 20);
        assert_eq!(&buf[12..20], &[0xBE, 0xDE, 0, 1, 0xE0, 0x7f, 0, 0]);
        let longest = RtpHeader::new(100, 7, Some((1, "0123456789abcdef")), Some(6));
        assert_eq!(longest.len(), HEADER_MAX);
        assert_eq!(level_byte(Some(-9), Some(true)), Some(0x89), "Chromium: V bit set");
        assert_eq!(level_byte(Some(-127), Some(false)), Some(0x7f), "aiortc: V bit off");
        assert_eq!(level_byte(None, Some(true)), None);
    }

    /// str0m parses the header we build, with the MID and the level where the
    /// extension map says, and no level when the element is padding.
    #[test]
    fn str0m_parses_the_header() {
        use str0m::rtp::{Extension, ExtensionMap, RtpHeader as Parsed};
        let mut exts = ExtensionMap::empty();
        exts.set(3, Extension::RtpMid);
        exts.set(6, Extension::AudioLevel);
        let mut buf = [0u8; 40];
        let len = RtpHeader::new(100, 42, Some((3, "abc")), None).write(&mut buf, 65_000, 960, false, Some(0x89));
        let parsed = Parsed::_parse(&buf[..len], &exts).unwrap();
        assert_eq!(parsed.header_len, len);
        assert_eq!(*parsed.ssrc, 42);
        assert_eq!(parsed.sequence_number, 65_000);
        assert_eq!(parsed.timestamp, 960);
        assert_eq!(parsed.ext_vals.mid.map(|m| m.to_string()).as_deref(), Some("abc"));
        assert_eq!(parsed.ext_vals.audio_level, None, "not negotiated: not sent");
        for mid in ["0", "abc", "0123456789abcdef"] {
            let header = RtpHeader::new(100, 42, Some((3, mid)), Some(6));
            for (level, expected) in [(Some(0x89), (Some(-9), Some(true))), (Some(0x2b), (Some(-43), Some(false)))] {
                let len = header.write(&mut buf, 1, 960, true, level);
                let parsed = Parsed::_parse(&buf[..len], &exts).unwrap();
                assert_eq!(parsed.header_len, len, "{mid}");
                assert!(parsed.marker);
                assert_eq!(parsed.ext_vals.mid.map(|m| m.to_string()).as_deref(), Some(mid));
                assert_eq!((parsed.ext_vals.audio_level, parsed.ext_vals.voice_activity), expected, "{mid}");
            }
            let len = header.write(&mut buf, 2, 960, false, None);
            let parsed = Parsed::_parse(&buf[..len], &exts).unwrap();
            assert_eq!(parsed.ext_vals.mid.map(|m| m.to_string()).as_deref(), Some(mid), "padding after the mid");
            assert_eq!(parsed.ext_vals.audio_level, None, "{mid}: no level in, none out");
        }
    }

    #[test]
    fn sender_report_is_consistent_with_what_was_sent() {
        let t0 = Instant::now();
        let mut clock = SentClock::new(t0);
        assert!(!clock.report_due(t0 + REPORT_INTERVAL), "nothing sent: no report");
        clock.sent(t0, 1_000, 100);
        clock.sent(t0 + Duration::from_millis(20), 1_960, 120);
        let now = t0 + Duration::from_millis(520);
        assert!(clock.report_due(t0 + REPORT_INTERVAL));
        assert!(!clock.report_due(t0 + REPORT_INTERVAL), "one report a second");
        let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_millis(500);
        let mut buf = [0u8; SENDER_REPORT_MAX];
        let len = write_sender_report(&mut buf, 9, &clock, 48_000, "cname", now, wall);
        assert_eq!(len, 28 + 4 + 12);
        assert_eq!(&buf[..8], &[0x80, 200, 0, 6, 0, 0, 0, 9]);
        assert_eq!(u32::from_be_bytes(buf[8..12].try_into().unwrap()), (1_700_000_000 + NTP_UNIX_OFFSET) as u32);
        assert_eq!(u32::from_be_bytes(buf[12..16].try_into().unwrap()), 1 << 31, "half a second");
        assert_eq!(u32::from_be_bytes(buf[16..20].try_into().unwrap()), 1_960 + 24_000, "500 ms after the last");
        assert_eq!(u32::from_be_bytes(buf[20..24].try_into().unwrap()), 2);
        assert_eq!(u32::from_be_bytes(buf[24..28].try_into().unwrap()), 220);
        assert_eq!(&buf[28..len], &[0x81, 202, 0, 3, 0, 0, 0, 9, 1, 5, b'c', b'n', b'a', b'm', b'e', 0]);
    }
}
