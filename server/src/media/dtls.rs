//! DTLS certificate, fingerprints, and verification of the client's certificate.
//!
//! mediasoup clients may announce any of sha-1…sha-512 (pymediasoup sends sha-512),
//! while str0m itself verifies only sha-1 and sha-256. So every `Rtc` is built with
//! str0m's verification off and a DTLS provider wrapper that captures the peer's
//! certificate; [`verify`] then checks it against the fingerprint the client sent,
//! before any media flows.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use aws_lc_rs::digest;
use dspeak_schema::ortc::{DtlsFingerprint, FingerprintAlgorithm};
use str0m::config::{CryptoProvider, DtlsCert, DtlsVersion};
use str0m::crypto::CryptoError;
use str0m::crypto::dtls::{DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, ProtocolVersion};

use crate::error::Error;

/// Where a transport's DTLS instance leaves the peer's certificate (DER).
pub(crate) type PeerCertSlot = Arc<Mutex<Option<Vec<u8>>>>;

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
    pub(crate) fn generate() -> Result<Identity, Error> {
        let base = str0m::crypto::from_feature_flags();
        let cert = base
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| Error::Internal("the crypto provider cannot generate certificates".into()))?;
        // One provider for the whole process: leaking it once is how str0m's
        // `&'static dyn DtlsProvider` field is meant to be filled.
        let capturing: &'static CapturingDtls = Box::leak(Box::new(CapturingDtls { inner: base.dtls_provider }));
        let provider = Arc::new(CryptoProvider { dtls_provider: capturing, ..base });
        let fingerprints = FingerprintAlgorithm::ALL
            .iter()
            .map(|&algorithm| DtlsFingerprint { algorithm, value: to_hex(&hash(algorithm, &cert.certificate)) })
            .collect();
        Ok(Identity { cert, provider, fingerprints })
    }
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
pub(crate) fn expected_fingerprint(fingerprints: &[DtlsFingerprint]) -> Result<Expected, Error> {
    if fingerprints.is_empty() {
        return Err(Error::InvalidParams("dtlsParameters.fingerprints must not be empty".into()));
    }
    let mut best: Option<Expected> = None;
    for fp in fingerprints {
        let digest = parse_hex(&fp.value).ok_or_else(|| {
            Error::InvalidParams(format!("fingerprint {} is not colon-separated hex", fp.algorithm.as_str()))
        })?;
        if digest.len() != fp.algorithm.digest_len() {
            return Err(Error::InvalidParams(format!(
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
    best.ok_or_else(|| Error::Internal("no fingerprint chosen".into()))
}

/// Whether the captured peer certificate matches what the client announced.
pub(crate) fn verify(expected: &Expected, peer_cert: &[u8]) -> bool {
    hash(expected.algorithm, peer_cert) == expected.digest
}

fn parse_hex(value: &str) -> Option<Vec<u8>> {
    value.split(':').map(|pair| if pair.len() == 2 { u8::from_str_radix(pair, 16).ok() } else { None }).collect()
}

/// Wraps str0m's DTLS provider to capture the peer certificate.
#[derive(Debug)]
struct CapturingDtls {
    inner: &'static dyn DtlsProvider,
}

#[derive(Debug)]
struct CapturingInstance {
    inner: Box<dyn DtlsInstance>,
    slot: Option<PeerCertSlot>,
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
        let inner = self.inner.new_dtls(cert, now, version, mtu)?;
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
        if let (DtlsOutput::PeerCert(der), Some(slot)) = (&out, &self.slot) {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(der.to_vec());
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
