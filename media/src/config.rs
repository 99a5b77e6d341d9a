//! [`EngineConfig`]: what the media engine needs to start, independent of how the
//! server reads its flags.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crate::speaker::SpeakerEvents;

/// The media engine's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Media workers (threads), each with one UDP port; 0 = one per CPU core.
    pub workers: usize,
    /// First media port; worker i listens on `port + i`. 0 picks free ports.
    pub port: u16,
    /// IP address the media sockets bind to. On a wildcard, replies leave from the
    /// address each client sent to; the IPv4 wildcard becomes the dual-stack `::` when
    /// an IPv6 address is announced.
    pub listen_ip: IpAddr,
    /// Addresses clients send media to (IPs or hostnames, resolved at start), the
    /// first with the highest priority. Empty: the listen IP, or loopback when the
    /// listen IP is a wildcard.
    pub announced: Vec<String>,
    /// Offer passive ICE-TCP on the same ports.
    pub tcp: bool,
    /// Pin worker i to the i-th CPU the process may run on (modulo their number).
    pub pin_workers: bool,
    /// Stop sending to a client address that has sent no valid ICE check for this
    /// long (consent freshness, RFC 7675: 30 s; clients check every few seconds).
    pub consent_timeout: Duration,
    /// Which voice-activity events rooms get (`Off`: levels are not parsed).
    pub speaker_events: SpeakerEvents,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            workers: 0,
            port: 0,
            listen_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            announced: Vec::new(),
            tcp: true,
            pin_workers: false,
            consent_timeout: CONSENT_TIMEOUT,
            speaker_events: SpeakerEvents::All,
        }
    }
}

/// RFC 7675 §5.1: consent expires 30 s after the last successful check.
pub const CONSENT_TIMEOUT: Duration = Duration::from_secs(30);
