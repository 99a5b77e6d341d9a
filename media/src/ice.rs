//! Local ICE credentials from the OS CSPRNG.
//!
//! str0m's `IceCreds::new()` draws from a fast non-cryptographic generator seeded
//! from the clock; an ICE-lite server's credentials are what keeps others from
//! speaking for a client, so they come from the system's CSPRNG here: a ufrag of
//! 40 bits and a password of 130 bits (RFC 8445 asks for at least 24 and 128).

use str0m::IceCreds;

/// Base32 letters: every one is an `ice-char`, and 32 divides 256, so `byte % 32`
/// is uniform.
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Fresh local credentials: 8 characters of ufrag, 26 of password.
pub(crate) fn random_credentials() -> IceCreds {
    let mut bytes = [0u8; 8 + 26];
    aws_lc_rs::rand::fill(&mut bytes).expect("the OS CSPRNG does not fail");
    let text = |b: &[u8]| b.iter().map(|b| char::from(ALPHABET[usize::from(b % 32)])).collect::<String>();
    IceCreds { ufrag: text(&bytes[..8]), pass: text(&bytes[8..]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_long_enough_and_differ() {
        let (a, b) = (random_credentials(), random_credentials());
        assert_eq!((a.ufrag.len(), a.pass.len()), (8, 26));
        assert!(a.pass.len() * 5 >= 128, "at least 128 bits of password");
        assert_ne!(a.ufrag, b.ufrag);
        assert_ne!(a.pass, b.pass);
        assert!(a.pass.bytes().all(|c| ALPHABET.contains(&c)));
    }
}
