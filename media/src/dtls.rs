//! DTLS certificate, fingerprints, and verification of the client's certificate.
//!
//! mediasoup clients may announce any of sha-1…sha-512 (pymediasoup sends sha-512),
//! while str0m itself verifies only sha-1 and sha-256. So every `Rtc` is built with
//! str0m's verification off and a DTLS provider wrapper that captures the peer's
//! certificate; [`verify`] then checks it against the fingerprint the client sent,
//! before any media flows.
//!
//! The same wrapper captures the SRTP keying material and the negotiated profile
//! (RFC 5764 §4.2), which the worker needs to seal forwarded RTP itself
//! ([`crate::srtp::SrtpSender`]).
//!
//! The wrapper also builds the DTLS instances itself (dimpl, as str0m's aws-lc-rs
//! provider does) from one shared, once-validated dimpl `Config`: str0m's provider
//! builds and self-validates a new one for every `Rtc` (a few ECDH and ECDSA operations,
//! most of the worker's time when many clients create transports at once). The load
//! tool's synthetic clients use the same provider ([`crypto_provider`]).

use std::cell::RefCell;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use aws_lc_rs::digest;
use dspeak_schema::ortc::{DtlsFingerprint, FingerprintAlgorithm};
use str0m::config::{CryptoProvider, DtlsCert, DtlsVersion};
use str0m::crypto::CryptoError;
use str0m::crypto::dtls::{DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, ProtocolVersion};

use crate::error::MediaError;

/// What a transport's DTLS instance reports besides str0m's own use of it.
#[derive(Default)]
pub(crate) struct Captured {
    /// The peer's certificate (DER).
    pub(crate) peer_cert: Option<Vec<u8>>,
    /// The exported SRTP keying material.
    pub(crate) keying: Option<Keying>,
}

/// SRTP keying material exported by DTLS, with what is needed to use it.
pub(crate) struct Keying {
    /// Client write key, server write key, client salt, server salt (RFC 5764 §4.2).
    pub(crate) material: Vec<u8>,
    /// The negotiated profile.
    pub(crate) profile: dimpl::SrtpProfile,
    /// Whether we were the DTLS client (we then send with the client halves).
    pub(crate) active: bool,
}

impl std::fmt::Debug for Keying {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key bytes.
        f.debug_struct("Keying").field("profile", &self.profile).field("active", &self.active).finish_non_exhaustive()
    }
}

/// Where a transport's DTLS instance leaves the peer's certificate and the keying
/// material.
pub(crate) type PeerCertSlot = Arc<Mutex<Captured>>;

thread_local! {
    /// The slot for the next DTLS instance created on this thread. `RtcConfig::build`
    /// creates the instance synchronously, so [`with_peer_cert_slot`] can hand it over.
    static NEXT_SLOT: RefCell<Option<PeerCertSlot>> = const { RefCell::new(None) };
}

/// The server's certificate, shared by every transport, with its fingerprints.
#[derive(Debug)]
pub(crate) struct Identity {
    pub(crate) cert: DtlsCert,
    pub(crate) provider: Arc<CryptoProvider>,
    /// Fingerprints for every algorithm, as sent in `createTransport`.
    pub(crate) fingerprints: Vec<DtlsFingerprint>,
}

impl Identity {
    /// Generates a certificate and a crypto provider that captures peer certificates.
    pub(crate) fn generate() -> Result<Identity, MediaError> {
        let provider = crypto_provider();
        let cert = provider
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| MediaError::Internal("the crypto provider cannot generate certificates".into()))?;
        let fingerprints = FingerprintAlgorithm::ALL
            .iter()
            .map(|&algorithm| DtlsFingerprint { algorithm, value: to_hex(&hash(algorithm, &cert.certificate)) })
            .collect();
        Ok(Identity { cert, provider, fingerprints })
    }
}

/// str0m's crypto (aws-lc-rs) with DTLS instances built from one shared, validated
/// dimpl configuration: what the engine's transports use, and what a process running
/// many str0m peers (the load tool's synthetic clients) wants too. An instance built
/// inside [`with_peer_cert_slot`] also reports the peer certificate.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    let base = str0m::crypto::from_feature_flags();
    // One provider per call, leaked once: str0m's field is a `&'static dyn DtlsProvider`.
    // The engine and the load tool each call this once per process.
    let capturing: &'static CapturingDtls =
        Box::leak(Box::new(CapturingDtls { inner: base.dtls_provider, configs: Mutex::new(Vec::new()) }));
    Arc::new(CryptoProvider { dtls_provider: capturing, ..base })
}

/// Runs `build` (which must build one `Rtc`) so that its DTLS instance reports the
/// peer certificate into `slot`.
pub(crate) fn with_peer_cert_slot<R>(slot: PeerCertSlot, build: impl FnOnce() -> R) -> R {
    NEXT_SLOT.with(|s| *s.borrow_mut() = Some(slot));
    let r = build();
    NEXT_SLOT.with(|s| s.borrow_mut().take());
    r
}

/// The digest of `data` with `algorithm`.
pub(crate) fn hash(algorithm: FingerprintAlgorithm, data: &[u8]) -> Vec<u8> {
    let alg = match algorithm {
        FingerprintAlgorithm::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
        FingerprintAlgorithm::Sha224 => &digest::SHA224,
        FingerprintAlgorithm::Sha256 => &digest::SHA256,
        FingerprintAlgorithm::Sha384 => &digest::SHA384,
        FingerprintAlgorithm::Sha512 => &digest::SHA512,
    };
    digest::digest(alg, data).as_ref().to_vec()
}

/// Upper-case hex with colons, as in SDP and mediasoup.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push_str(&format!("{b:02X}"));
    }
    s
}

/// A fingerprint the client expects our peer certificate check to use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Expected {
    pub(crate) algorithm: FingerprintAlgorithm,
    pub(crate) digest: Vec<u8>,
}

/// Parses the client's fingerprints and picks the strongest one to verify.
pub(crate) fn expected_fingerprint(fingerprints: &[DtlsFingerprint]) -> Result<Expected, MediaError> {
    if fingerprints.is_empty() {
        return Err(MediaError::InvalidParams("dtlsParameters.fingerprints must not be empty".into()));
    }
    let mut best: Option<Expected> = None;
    for fp in fingerprints {
        let digest = parse_hex(&fp.value).ok_or_else(|| {
            MediaError::InvalidParams(format!("fingerprint {} is not colon-separated hex", fp.algorithm.as_str()))
        })?;
        if digest.len() != fp.algorithm.digest_len() {
            return Err(MediaError::InvalidParams(format!(
                "a {} fingerprint has {} bytes, not {}",
                fp.algorithm.as_str(),
                digest.len(),
                fp.algorithm.digest_len()
            )));
        }
        if best.as_ref().is_none_or(|b| fp.algorithm.digest_len() > b.algorithm.digest_len()) {
            best = Some(Expected { algorithm: fp.algorithm, digest });
        }
    }
    // Non-empty input and every entry valid, so `best` is set.
    best.ok_or_else(|| MediaError::Internal("no fingerprint chosen".into()))
}

/// Whether the captured peer certificate matches what the client announced.
pub(crate) fn verify(expected: &Expected, peer_cert: &[u8]) -> bool {
    hash(expected.algorithm, peer_cert) == expected.digest
}

fn parse_hex(value: &str) -> Option<Vec<u8>> {
    value.split(':').map(|pair| if pair.len() == 2 { u8::from_str_radix(pair, 16).ok() } else { None }).collect()
}

/// str0m's DTLS provider, building instances from a shared dimpl configuration and
/// capturing the peer certificate.
#[derive(Debug)]
struct CapturingDtls {
    /// str0m's provider, for certificates.
    inner: &'static dyn DtlsProvider,
    /// Validated dimpl configurations by MTU (str0m passes one MTU for every `Rtc`).
    configs: Mutex<Vec<(Option<usize>, Arc<dimpl::Config>)>>,
}

impl CapturingDtls {
    /// The configuration str0m's aws-lc-rs provider would build (no server cookie: ICE
    /// already proved the client's address), built and validated once per MTU.
    fn config(&self, mtu: Option<usize>) -> Result<Arc<dimpl::Config>, CryptoError> {
        let mut configs = self.configs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, config)) = configs.iter().find(|(m, _)| *m == mtu) {
            return Ok(config.clone());
        }
        let mut builder = dimpl::Config::builder().use_server_cookie(false);
        if let Some(mtu) = mtu {
            builder = builder.mtu(mtu);
        }
        let config =
            Arc::new(builder.build().map_err(|e| CryptoError::Other(format!("dimpl config creation failed: {e}")))?);
        configs.push((mtu, config.clone()));
        Ok(config)
    }
}

struct CapturingInstance {
    inner: dimpl::Dtls,
    slot: Option<PeerCertSlot>,
}

impl std::fmt::Debug for CapturingInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CapturingInstance").finish_non_exhaustive()
    }
}

impl DtlsProvider for CapturingDtls {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        self.inner.generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let config = self.config(mtu)?;
        let cert =
            dimpl::DtlsCertificate { certificate: cert.certificate.clone(), private_key: cert.private_key.clone() };
        let inner = match version {
            DtlsVersion::Dtls12 => dimpl::Dtls::new_12(config, cert, now),
            DtlsVersion::Dtls13 => dimpl::Dtls::new_13(config, cert, now),
            DtlsVersion::Auto => dimpl::Dtls::new_auto(config, cert, now),
            other => return Err(CryptoError::Other(format!("unsupported DTLS version: {other}"))),
        };
        let slot = NEXT_SLOT.with(|s| s.borrow_mut().take());
        Ok(Box::new(CapturingInstance { inner, slot }))
    }
}

impl DtlsInstance for CapturingInstance {
    fn set_active(&mut self, active: bool) {
        self.inner.set_active(active)
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.inner.handle_packet(packet)
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        let out = self.inner.poll_output(buf);
        if let Some(slot) = &self.slot {
            match &out {
                DtlsOutput::PeerCert(der) => {
                    slot.lock().unwrap_or_else(|e| e.into_inner()).peer_cert = Some(der.to_vec());
                }
                DtlsOutput::KeyingMaterial(material, profile) => {
                    let keying =
                        Keying { material: material.to_vec(), profile: *profile, active: self.inner.is_active() };
                    slot.lock().unwrap_or_else(|e| e.into_inner()).keying = Some(keying);
                }
                _ => {}
            }
        }
        out
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.inner.handle_timeout(now)
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.inner.send_application_data(data)
    }

    fn is_active(&self) -> bool {
        self.inner.is_active()
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.inner.protocol_version()
    }

    fn is_closing(&self) -> bool {
        self.inner.is_closing()
    }

    fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.inner.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strongest_valid_fingerprint_is_expected_and_bad_ones_are_refused() {
        let der = b"certificate";
        let fps: Vec<_> = [FingerprintAlgorithm::Sha256, FingerprintAlgorithm::Sha512]
            .iter()
            .map(|&a| DtlsFingerprint { algorithm: a, value: to_hex(&hash(a, der)) })
            .collect();
        let e = expected_fingerprint(&fps).unwrap();
        assert_eq!(e.algorithm, FingerprintAlgorithm::Sha512);
        assert!(verify(&e, der));
        assert!(!verify(&e, b"other"));

        let short = DtlsFingerprint { algorithm: FingerprintAlgorithm::Sha256, value: "AB:CD".into() };
        assert!(expected_fingerprint(&[short]).is_err());
        let junk = DtlsFingerprint { algorithm: FingerprintAlgorithm::Sha1, value: "zz".repeat(20) };
        assert!(expected_fingerprint(&[junk]).is_err());
        assert!(expected_fingerprint(&[]).is_err());
    }
}
