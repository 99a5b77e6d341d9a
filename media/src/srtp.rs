//! SRTP and SRTCP sealing with keys from the DTLS exchange, for forwarding outside
//! str0m's per-packet path (issue #15, item 2).
//!
//! One [`SrtpSender`] per transport holds the session keys of one direction, derived
//! once from the DTLS keying material (RFC 5764 §4.2, RFC 3711 §4.3); sealing works in
//! place on a caller's buffer (a per-wake-up arena), with no allocation per packet.
//! Profiles: `AES128_CM_HMAC_SHA1_80` (RFC 3711, what aiortc negotiates) and
//! `AEAD_AES_128_GCM` / `AEAD_AES_256_GCM` (RFC 7714, what browsers negotiate).
//!
//! The worker seals every forwarded packet and its own sender reports with it
//! (`worker::forward`). A listener transport that no longer keeps a str0m `Rtc`
//! (`crate::lite`) opens the SRTCP its client sends (receiver reports) with an
//! [`SrtcpReceiver`]: the other direction's keys, tags checked before anything is
//! decrypted, and a replay window. The tests check the key derivation against RFC 3711's vectors
//! and every profile's sealed packets byte for byte against str0m's own SRTP.

use aws_lc_rs::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{AES_128, AES_256, EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;

use crate::error::MediaError;

/// An SRTP protection profile (the ones str0m and dimpl negotiate).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Profile {
    /// `SRTP_AES128_CM_HMAC_SHA1_80`: AES-128 counter mode, 80-bit HMAC-SHA1 tag.
    Aes128CmSha1_80,
    /// `AEAD_AES_128_GCM`.
    AeadAes128Gcm,
    /// `AEAD_AES_256_GCM`.
    AeadAes256Gcm,
}

impl Profile {
    /// The profile DTLS negotiated, if it is one of ours.
    pub(crate) fn from_dtls(profile: dimpl::SrtpProfile) -> Option<Profile> {
        match profile {
            dimpl::SrtpProfile::AES128_CM_SHA1_80 => Some(Profile::Aes128CmSha1_80),
            dimpl::SrtpProfile::AEAD_AES_128_GCM => Some(Profile::AeadAes128Gcm),
            dimpl::SrtpProfile::AEAD_AES_256_GCM => Some(Profile::AeadAes256Gcm),
            _ => None,
        }
    }

    fn key_len(self) -> usize {
        match self {
            Profile::Aes128CmSha1_80 | Profile::AeadAes128Gcm => 16,
            Profile::AeadAes256Gcm => 32,
        }
    }

    fn salt_len(self) -> usize {
        match self {
            Profile::Aes128CmSha1_80 => 14,
            Profile::AeadAes128Gcm | Profile::AeadAes256Gcm => 12,
        }
    }

    /// Bytes of DTLS keying material: both directions' master keys, then both salts.
    pub(crate) fn keying_material_len(self) -> usize {
        2 * (self.key_len() + self.salt_len())
    }

    /// Bytes a sealed RTP packet grows by.
    pub(crate) fn rtp_overhead(self) -> usize {
        match self {
            Profile::Aes128CmSha1_80 => HMAC_TAG_LEN,
            Profile::AeadAes128Gcm | Profile::AeadAes256Gcm => GCM_TAG_LEN,
        }
    }

    /// Bytes a sealed RTCP packet grows by (tag and the E-flag + SRTCP index word).
    pub(crate) fn rtcp_overhead(self) -> usize {
        self.rtp_overhead() + 4
    }
}

/// Truncated HMAC-SHA1 tag of `AES128_CM_HMAC_SHA1_80`.
const HMAC_TAG_LEN: usize = 10;
/// HMAC-SHA1 session key length.
const HMAC_KEY_LEN: usize = 20;
/// AES-GCM tag length (RFC 7714 §14.2).
const GCM_TAG_LEN: usize = 16;
/// The SRTCP index is 31 bits; the top bit of its word is the E (encrypted) flag.
const SRTCP_E_FLAG: u32 = 0x8000_0000;

/// Key derivation labels (RFC 3711 §4.3.1; RTCP's are RTP's + 3).
const LABEL_ENCRYPTION: u8 = 0;
const LABEL_AUTHENTICATION: u8 = 1;
const LABEL_SALT: u8 = 2;
const LABEL_RTCP: u8 = 3;

/// AES-CM and HMAC-SHA1 keys (boxed: an HMAC key keeps its precomputed states).
struct CmKeys {
    key: EncryptingKey,
    auth: hmac::Key,
}

/// The cipher of one stream kind (RTP or RTCP) in one direction.
enum Cipher {
    /// AES-CM and HMAC-SHA1.
    Cm(Box<CmKeys>),
    /// AES-GCM.
    Gcm(LessSafeKey),
}

/// Session keys of one stream kind: cipher and session salt.
struct SessionKeys {
    cipher: Cipher,
    /// The session salt, left-aligned (14 bytes for AES-CM, 12 for GCM).
    salt: [u8; 14],
}

/// The sending half of a transport's SRTP: seals RTP and RTCP for the client.
pub(crate) struct SrtpSender {
    profile: Profile,
    rtp: SessionKeys,
    rtcp: SessionKeys,
}

impl std::fmt::Debug for SrtpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpSender").field("profile", &self.profile).finish_non_exhaustive()
    }
}

fn crypto_failed(what: &str) -> MediaError {
    MediaError::Internal(format!("SRTP: {what} failed"))
}

/// An AES counter-mode key (AES-128 or AES-256 by length).
fn ctr_key(key: &[u8]) -> Result<EncryptingKey, MediaError> {
    let algorithm = if key.len() == 32 { &AES_256 } else { &AES_128 };
    let unbound = UnboundCipherKey::new(algorithm, key).map_err(|_| crypto_failed("AES key"))?;
    EncryptingKey::ctr(unbound).map_err(|_| crypto_failed("AES-CTR key"))
}

/// XORs `data` with the AES-CM keystream starting at counter block `iv`.
fn ctr_apply(key: &EncryptingKey, iv: [u8; 16], data: &mut [u8]) -> Result<(), MediaError> {
    key.less_safe_encrypt(data, EncryptionContext::Iv128(FixedLength::from(iv)))
        .map(|_| ())
        .map_err(|_| crypto_failed("AES-CTR"))
}

/// RFC 3711 §4.3 with key derivation rate 0: the AES-CM keystream of the master key,
/// from the master salt with the label XORed into its eighth byte.
fn derive(master: &EncryptingKey, master_salt: &[u8], label: u8, out: &mut [u8]) -> Result<(), MediaError> {
    let mut iv = [0u8; 16];
    iv[..master_salt.len()].copy_from_slice(master_salt);
    iv[7] ^= label;
    out.fill(0);
    ctr_apply(master, iv, out)
}

impl SessionKeys {
    fn derive(profile: Profile, master: &EncryptingKey, master_salt: &[u8], base: u8) -> Result<Self, MediaError> {
        let mut key = [0u8; 32];
        let key = &mut key[..profile.key_len()];
        derive(master, master_salt, base + LABEL_ENCRYPTION, key)?;
        let mut salt = [0u8; 14];
        derive(master, master_salt, base + LABEL_SALT, &mut salt[..profile.salt_len()])?;
        let cipher = match profile {
            Profile::Aes128CmSha1_80 => {
                let mut auth = [0u8; HMAC_KEY_LEN];
                derive(master, master_salt, base + LABEL_AUTHENTICATION, &mut auth)?;
                let auth = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &auth);
                Cipher::Cm(Box::new(CmKeys { key: ctr_key(key)?, auth }))
            }
            Profile::AeadAes128Gcm | Profile::AeadAes256Gcm => {
                let algorithm = if profile == Profile::AeadAes256Gcm { &AES_256_GCM } else { &AES_128_GCM };
                let unbound = UnboundKey::new(algorithm, key).map_err(|_| crypto_failed("AES-GCM key"))?;
                Cipher::Gcm(LessSafeKey::new(unbound))
            }
        };
        Ok(SessionKeys { cipher, salt })
    }

    /// The AES-CM counter block of an SRTCP packet (RFC 3711 §4.1.1: salt · 2^16 ⊕
    /// SSRC · 2^64 ⊕ index · 2^16).
    fn rtcp_cm_iv(&self, ssrc: [u8; 4], index: u32) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(&self.salt);
        xor(&mut iv[4..8], &ssrc);
        xor(&mut iv[10..14], &index.to_be_bytes());
        iv
    }

    /// The AES-GCM nonce of an SRTCP packet (RFC 7714 §9.1: (0x0000 ‖ SSRC ‖ 0x0000 ‖
    /// index) ⊕ salt).
    fn rtcp_gcm_iv(&self, ssrc: [u8; 4], index: u32) -> [u8; 12] {
        let mut iv = [0u8; 12];
        iv[2..6].copy_from_slice(&ssrc);
        iv[8..12].copy_from_slice(&index.to_be_bytes());
        xor(&mut iv, &self.salt[..12]);
        iv
    }
}

/// The AES-GCM additional data of an SRTCP packet (RFC 7714 §9.1): its first 8 bytes,
/// then E ‖ index.
fn rtcp_gcm_aad(header: &[u8], e_index: [u8; 4]) -> [u8; 12] {
    let mut aad = [0u8; 12];
    aad[..8].copy_from_slice(&header[..8]);
    aad[8..].copy_from_slice(&e_index);
    aad
}

/// One side's master key and salt from the DTLS keying material (client key, server
/// key, client salt, server salt: RFC 5764 §4.2); `client`: the DTLS client's side
/// (the "left" halves).
fn master_key(profile: Profile, material: &[u8], client: bool) -> Result<(EncryptingKey, &[u8]), MediaError> {
    let (key_len, salt_len) = (profile.key_len(), profile.salt_len());
    if material.len() != profile.keying_material_len() {
        return Err(MediaError::Internal(format!(
            "SRTP: {} bytes of keying material for {profile:?}, expected {}",
            material.len(),
            profile.keying_material_len()
        )));
    }
    let (key_at, salt_at) = if client { (0, 2 * key_len) } else { (key_len, 2 * key_len + salt_len) };
    Ok((ctr_key(&material[key_at..key_at + key_len])?, &material[salt_at..salt_at + salt_len]))
}

impl SrtpSender {
    /// The keys for what we send, from the DTLS keying material (client key, server
    /// key, client salt, server salt: RFC 5764 §4.2). `client` is whether we were the
    /// DTLS client, which sends with the client ("left") halves.
    pub(crate) fn new(profile: Profile, material: &[u8], client: bool) -> Result<SrtpSender, MediaError> {
        let (master, master_salt) = master_key(profile, material, client)?;
        Ok(SrtpSender {
            profile,
            rtp: SessionKeys::derive(profile, &master, master_salt, 0)?,
            rtcp: SessionKeys::derive(profile, &master, master_salt, LABEL_RTCP)?,
        })
    }

    /// The negotiated profile.
    pub(crate) fn profile(&self) -> Profile {
        self.profile
    }

    /// Seals the RTP packet in `buf[..len]` (header of `header_len` bytes, then the
    /// payload) in place with SRTP index `index` (ROC << 16 | sequence number), and
    /// returns the sealed length. `buf` needs [`Profile::rtp_overhead`] spare bytes.
    pub(crate) fn seal_rtp(
        &self,
        buf: &mut [u8],
        len: usize,
        header_len: usize,
        index: u64,
    ) -> Result<usize, MediaError> {
        let sealed = len + self.profile.rtp_overhead();
        if header_len < 12 || header_len > len || sealed > buf.len() {
            return Err(MediaError::Internal("SRTP: buffer too small for the packet".into()));
        }
        let ssrc = [buf[8], buf[9], buf[10], buf[11]];
        let roc = ((index >> 16) as u32).to_be_bytes();
        let (packet, rest) = buf.split_at_mut(len);
        let (header, payload) = packet.split_at_mut(header_len);
        match &self.rtp.cipher {
            Cipher::Cm(cm) => {
                let CmKeys { key, auth } = &**cm;
                // RFC 3711 §4.1.1: IV = salt · 2^16 ⊕ SSRC · 2^64 ⊕ index · 2^16.
                let mut iv = [0u8; 16];
                iv[..14].copy_from_slice(&self.rtp.salt);
                xor(&mut iv[4..8], &ssrc);
                xor(&mut iv[8..14], &index.to_be_bytes()[2..8]);
                ctr_apply(key, iv, payload)?;
                // RFC 3711 §4.2: the tag covers the packet and the ROC.
                let mut mac = hmac::Context::with_key(auth);
                mac.update(header);
                mac.update(payload);
                mac.update(&roc);
                rest[..HMAC_TAG_LEN].copy_from_slice(&mac.sign().as_ref()[..HMAC_TAG_LEN]);
            }
            Cipher::Gcm(key) => {
                // RFC 7714 §8.1: IV = (0x0000 ‖ SSRC ‖ ROC ‖ SEQ) ⊕ salt; AAD = header.
                let mut iv = [0u8; 12];
                iv[2..6].copy_from_slice(&ssrc);
                iv[6..10].copy_from_slice(&roc);
                iv[10..12].copy_from_slice(&(index as u16).to_be_bytes());
                xor(&mut iv, &self.rtp.salt[..12]);
                let tag = key
                    .seal_in_place_separate_tag(Nonce::assume_unique_for_key(iv), Aad::from(&*header), payload)
                    .map_err(|_| crypto_failed("AES-GCM seal"))?;
                rest[..GCM_TAG_LEN].copy_from_slice(tag.as_ref());
            }
        }
        Ok(sealed)
    }

    /// Seals the compound RTCP packet in `buf[..len]` in place with SRTCP index
    /// `index` (31 bits, one per packet sent), and returns the sealed length. `buf`
    /// needs [`Profile::rtcp_overhead`] spare bytes.
    pub(crate) fn seal_rtcp(&self, buf: &mut [u8], len: usize, index: u32) -> Result<usize, MediaError> {
        let sealed = len + self.profile.rtcp_overhead();
        if len < 8 || sealed > buf.len() {
            return Err(MediaError::Internal("SRTCP: buffer too small for the packet".into()));
        }
        let ssrc = [buf[4], buf[5], buf[6], buf[7]];
        let index = index & !SRTCP_E_FLAG;
        let e_index = (SRTCP_E_FLAG | index).to_be_bytes();
        let (packet, rest) = buf.split_at_mut(len);
        let (header, payload) = packet.split_at_mut(8);
        match &self.rtcp.cipher {
            Cipher::Cm(cm) => {
                let CmKeys { key, auth } = &**cm;
                // RFC 3711 §3.4 and §4.1.1: encrypted after the first 8 bytes, then
                // E ‖ index, then the tag over all of it.
                ctr_apply(key, self.rtcp.rtcp_cm_iv(ssrc, index), payload)?;
                rest[..4].copy_from_slice(&e_index);
                let mut mac = hmac::Context::with_key(auth);
                mac.update(header);
                mac.update(payload);
                mac.update(&e_index);
                rest[4..4 + HMAC_TAG_LEN].copy_from_slice(&mac.sign().as_ref()[..HMAC_TAG_LEN]);
            }
            Cipher::Gcm(key) => {
                // RFC 7714 §9.1: IV = (0x0000 ‖ SSRC ‖ 0x0000 ‖ index) ⊕ salt;
                // AAD = the first 8 bytes ‖ E ‖ index; the tag, then E ‖ index.
                let (iv, aad) = (self.rtcp.rtcp_gcm_iv(ssrc, index), rtcp_gcm_aad(header, e_index));
                let tag = key
                    .seal_in_place_separate_tag(Nonce::assume_unique_for_key(iv), Aad::from(&aad), payload)
                    .map_err(|_| crypto_failed("AES-GCM seal"))?;
                rest[..GCM_TAG_LEN].copy_from_slice(tag.as_ref());
                rest[GCM_TAG_LEN..GCM_TAG_LEN + 4].copy_from_slice(&e_index);
            }
        }
        Ok(sealed)
    }
}

/// Why an incoming SRTCP packet was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OpenError {
    /// Shorter than a header, the index word and the tag.
    #[error("SRTCP packet too short")]
    TooShort,
    /// The tag does not authenticate the packet (forged, garbled, or other keys).
    #[error("SRTCP authentication failed")]
    Unauthenticated,
    /// An index already received, or one older than the replay window.
    #[error("SRTCP packet replayed")]
    Replayed,
    /// Not encrypted (E flag clear): no client we support sends that.
    #[error("unencrypted SRTCP is not accepted")]
    Unencrypted,
}

/// SRTCP indices remembered behind the highest one (RFC 3711 §3.3.2 asks for ≥ 64).
const REPLAY_WINDOW: u32 = 64;

/// The receiving half for RTCP: opens the SRTCP packets a client sends, with the
/// session keys of the client's direction.
pub(crate) struct SrtcpReceiver {
    profile: Profile,
    rtcp: SessionKeys,
    /// The highest index accepted, and which of the [`REPLAY_WINDOW`] below it were
    /// (bit `n`: index `highest - n`); `None` before the first packet.
    replay: Option<(u32, u64)>,
}

impl std::fmt::Debug for SrtcpReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtcpReceiver").field("profile", &self.profile).finish_non_exhaustive()
    }
}

impl SrtcpReceiver {
    /// The keys for what the client sends; `client` is whether *we* were the DTLS
    /// client (the peer then sends with the server halves).
    pub(crate) fn new(profile: Profile, material: &[u8], client: bool) -> Result<SrtcpReceiver, MediaError> {
        let (master, master_salt) = master_key(profile, material, !client)?;
        Ok(SrtcpReceiver {
            profile,
            rtcp: SessionKeys::derive(profile, &master, master_salt, LABEL_RTCP)?,
            replay: None,
        })
    }

    /// Authenticates and decrypts the SRTCP packet `buf` in place; returns the length
    /// of the plain compound RTCP packet at its start. The replay window only moves
    /// when the tag is right. After a failure `buf` holds no plaintext but is not
    /// necessarily intact (aws-lc clears a GCM packet that fails): open a copy.
    pub(crate) fn open_rtcp(&mut self, buf: &mut [u8]) -> Result<usize, OpenError> {
        let overhead = self.profile.rtcp_overhead();
        if buf.len() < 8 + overhead {
            return Err(OpenError::TooShort);
        }
        let len = buf.len() - overhead;
        let ssrc = [buf[4], buf[5], buf[6], buf[7]];
        let word_at = match self.profile {
            Profile::Aes128CmSha1_80 => len,
            Profile::AeadAes128Gcm | Profile::AeadAes256Gcm => len + GCM_TAG_LEN,
        };
        let e_index: [u8; 4] = [buf[word_at], buf[word_at + 1], buf[word_at + 2], buf[word_at + 3]];
        let word = u32::from_be_bytes(e_index);
        if word & SRTCP_E_FLAG == 0 {
            return Err(OpenError::Unencrypted);
        }
        let index = word & !SRTCP_E_FLAG;
        self.check_replay(index)?;
        match &self.rtcp.cipher {
            Cipher::Cm(cm) => {
                let CmKeys { key, auth } = &**cm;
                // RFC 3711 §3.4: the tag covers the packet and E ‖ index.
                let tag = hmac::sign(auth, &buf[..len + 4]);
                verify_slices_are_equal(&tag.as_ref()[..HMAC_TAG_LEN], &buf[len + 4..len + 4 + HMAC_TAG_LEN])
                    .map_err(|_| OpenError::Unauthenticated)?;
                let iv = self.rtcp.rtcp_cm_iv(ssrc, index);
                ctr_apply(key, iv, &mut buf[8..len]).map_err(|_| OpenError::Unauthenticated)?;
            }
            Cipher::Gcm(key) => {
                // RFC 7714 §9.1, as `SrtpSender::seal_rtcp` writes it.
                let (iv, aad) = (self.rtcp.rtcp_gcm_iv(ssrc, index), rtcp_gcm_aad(&buf[..8], e_index));
                key.open_in_place(Nonce::assume_unique_for_key(iv), Aad::from(&aad), &mut buf[8..word_at])
                    .map_err(|_| OpenError::Unauthenticated)?;
            }
        }
        self.accept(index);
        Ok(len)
    }

    /// Whether `index` may still be accepted (RFC 3711 §3.3.2).
    fn check_replay(&self, index: u32) -> Result<(), OpenError> {
        let Some((highest, seen)) = self.replay else {
            return Ok(());
        };
        if index > highest {
            return Ok(());
        }
        let behind = highest - index;
        if behind >= REPLAY_WINDOW || seen & (1 << behind) != 0 {
            return Err(OpenError::Replayed);
        }
        Ok(())
    }

    /// Marks an authenticated `index` as received.
    fn accept(&mut self, index: u32) {
        self.replay = Some(match self.replay {
            None => (index, 1),
            Some((highest, seen)) if index > highest => {
                let shift = index - highest;
                (index, if shift >= REPLAY_WINDOW { 1 } else { (seen << shift) | 1 })
            }
            Some((highest, seen)) => (highest, seen | (1 << (highest - index))),
        });
    }
}

fn xor(into: &mut [u8], with: &[u8]) {
    for (a, b) in into.iter_mut().zip(with) {
        *a ^= b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// RFC 3711 Appendix B.3: session keys from a master key and salt.
    #[test]
    fn key_derivation_matches_rfc_3711() {
        let master = ctr_key(&hex("E1F97A0D3E018BE0D64FA32C06DE4139")).unwrap();
        let salt = hex("0EC675AD498AFEEBB6960B3AABE6");
        let mut key = [0u8; 16];
        derive(&master, &salt, LABEL_ENCRYPTION, &mut key).unwrap();
        assert_eq!(key.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        let mut session_salt = [0u8; 14];
        derive(&master, &salt, LABEL_SALT, &mut session_salt).unwrap();
        assert_eq!(session_salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
        let mut auth = [0u8; 20];
        derive(&master, &salt, LABEL_AUTHENTICATION, &mut auth).unwrap();
        assert_eq!(auth.to_vec(), hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4"));
    }

    /// RFC 3711 Appendix B.2: the AES-CM keystream of a session key and salt.
    #[test]
    fn counter_mode_keystream_matches_rfc_3711() {
        let key = ctr_key(&hex("2B7E151628AED2A6ABF7158809CF4F3C")).unwrap();
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000"));
        let mut stream = [0u8; 48];
        ctr_apply(&key, iv, &mut stream).unwrap();
        let expected =
            "E03EAD0935C95E80E166B16DD92B4EB4D23513162B02D0F72A43A2FE4A5F97AB41E95B3BB0A2E8DD477901E4FCA894C0";
        assert_eq!(stream.to_vec(), hex(expected));
    }

    /// A header as a consumer sends it: version 2, marker, PT 100, the `mid`
    /// one-byte extension (id 1), then the Opus payload.
    fn packet(seq: u16, payload: &[u8]) -> (Vec<u8>, usize) {
        let mut p = vec![0x90, 0x80 | 100];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        p.extend_from_slice(&0xCAFE_BABEu32.to_be_bytes());
        p.extend_from_slice(&[0xBE, 0xDE, 0x00, 0x01, 0x10, b'0', 0x00, 0x00]);
        let header_len = p.len();
        p.extend_from_slice(payload);
        (p, header_len)
    }

    fn str0m_profile(profile: Profile) -> str0m::crypto::dtls::SrtpProfile {
        match profile {
            Profile::Aes128CmSha1_80 => str0m::crypto::dtls::SrtpProfile::AES128_CM_SHA1_80,
            Profile::AeadAes128Gcm => str0m::crypto::dtls::SrtpProfile::AEAD_AES_128_GCM,
            Profile::AeadAes256Gcm => str0m::crypto::dtls::SrtpProfile::AEAD_AES_256_GCM,
        }
    }

    /// Every profile seals exactly what str0m's own SRTP produces for the same keys,
    /// header and index, across a rollover of the sequence number.
    #[test]
    fn sealed_rtp_is_what_str0m_seals() {
        use str0m::_internal_test_exports::TestSrtp;
        use str0m::rtp::{Extension, ExtensionMap, RtpHeader};
        let mut exts = ExtensionMap::empty();
        exts.set(1, Extension::RtpMid);
        for profile in [Profile::Aes128CmSha1_80, Profile::AeadAes128Gcm, Profile::AeadAes256Gcm] {
            let material: Vec<u8> = (0..profile.keying_material_len()).map(|i| (i * 7 + 3) as u8).collect();
            let crypto = str0m::crypto::from_feature_flags();
            let km = str0m::crypto::dtls::KeyingMaterial::new(&material);
            let mut theirs = TestSrtp::new(&crypto, str0m_profile(profile), &km);
            let ours = SrtpSender::new(profile, &material, true).unwrap();
            let payload: Vec<u8> = (0..80u8).collect();
            for index in [1u64, 65_535, 65_536 + 7, (3 << 16) | 40_000] {
                let (plain, header_len) = packet(index as u16, &payload);
                let header = RtpHeader::_parse(&plain, &exts).unwrap();
                // str0m writes the header itself: compare from its bytes.
                let expected = theirs.protect(header, index, &payload, &exts);
                let mut buf = expected[..header_len].to_vec();
                buf.extend_from_slice(&payload);
                let len = buf.len();
                buf.resize(len + profile.rtp_overhead(), 0);
                let sealed = ours.seal_rtp(&mut buf, len, header_len, index).unwrap();
                assert_eq!(sealed, expected.len(), "{profile:?} index {index}: length");
                assert_eq!(buf, expected, "{profile:?} index {index}");
            }
        }
    }

    #[test]
    fn sealing_refuses_a_buffer_without_room_for_the_tag() {
        let profile = Profile::AeadAes128Gcm;
        let material = vec![1u8; profile.keying_material_len()];
        let sender = SrtpSender::new(profile, &material, false).unwrap();
        let (mut p, header_len) = packet(1, &[1, 2, 3]);
        let len = p.len();
        assert!(sender.seal_rtp(&mut p, len, header_len, 1).is_err());
        assert!(SrtpSender::new(profile, &material[1..], false).is_err());
    }

    /// What one side seals with `SrtpSender::seal_rtcp`, the other opens with
    /// `SrtcpReceiver` (for each profile and DTLS role); a flipped bit, another
    /// key, a replay and a short packet are refused.
    #[test]
    fn sealed_rtcp_opens_on_the_other_side_only_when_authentic() {
        for profile in [Profile::Aes128CmSha1_80, Profile::AeadAes128Gcm, Profile::AeadAes256Gcm] {
            let material: Vec<u8> = (0..profile.keying_material_len()).map(|i| (i * 11 + 5) as u8).collect();
            for we_are_client in [true, false] {
                // The peer sends with its halves: the DTLS role opposite ours.
                let peer = SrtpSender::new(profile, &material, !we_are_client).unwrap();
                let mut ours = SrtcpReceiver::new(profile, &material, we_are_client).unwrap();
                let plain: Vec<u8> = [0x81, 201, 0, 7, 0xCA, 0xFE, 0xBA, 0xBE].into_iter().chain(1..=28).collect();
                let seal = |index: u32| {
                    let mut buf = plain.clone();
                    buf.resize(plain.len() + profile.rtcp_overhead(), 0);
                    let n = peer.seal_rtcp(&mut buf, plain.len(), index).unwrap();
                    buf.truncate(n);
                    buf
                };
                let mut first = seal(5);
                assert_ne!(first[8..plain.len()], plain[8..], "{profile:?}: encrypted");
                assert_eq!(ours.open_rtcp(&mut first), Ok(plain.len()), "{profile:?}");
                assert_eq!(first[..plain.len()], plain[..], "{profile:?}: decrypted");
                assert_eq!(ours.open_rtcp(&mut seal(5)), Err(OpenError::Replayed), "{profile:?}: replay");
                assert_eq!(ours.open_rtcp(&mut seal(3)), Ok(plain.len()), "{profile:?}: late, in the window");
                for at in [0, 9, plain.len() + 2] {
                    let mut garbled = seal(6);
                    garbled[at] ^= 0x10;
                    assert_eq!(ours.open_rtcp(&mut garbled), Err(OpenError::Unauthenticated), "{profile:?} byte {at}");
                }
                assert_eq!(ours.open_rtcp(&mut seal(6)), Ok(plain.len()), "{profile:?}: the real one still opens");
                assert_eq!(ours.open_rtcp(&mut seal(6 + 1000)), Ok(plain.len()));
                assert_eq!(ours.open_rtcp(&mut seal(6)), Err(OpenError::Replayed), "{profile:?}: behind the window");
                let ourselves = SrtpSender::new(profile, &material, we_are_client).unwrap();
                let mut own = plain.clone();
                own.resize(plain.len() + profile.rtcp_overhead(), 0);
                ourselves.seal_rtcp(&mut own, plain.len(), 2000).unwrap();
                assert_eq!(ours.open_rtcp(&mut own), Err(OpenError::Unauthenticated), "{profile:?}: our own keys");
                assert_eq!(ours.open_rtcp(&mut [0x81; 12]), Err(OpenError::TooShort));
            }
        }
    }
}
