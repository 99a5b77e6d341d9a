//! Access tokens: checking `join`'s token and minting tokens (`dspeak token`).
//!
//! Tokens are JWTs signed with HS256 and the server's `--auth-secret`; their claims
//! are [`TokenClaims`]. Without a secret (development only) every join is anonymous
//! with every grant.

use dspeak_schema::auth::TokenClaims;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

use crate::error::AuthError;

/// What a joined session may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Grants {
    /// The token's identity; `None` for anonymous sessions.
    pub(crate) identity: Option<String>,
    /// A display name the token imposes.
    pub(crate) name: Option<String>,
    pub(crate) publish: bool,
    pub(crate) subscribe: bool,
    pub(crate) broadcast: bool,
}

impl Grants {
    fn anonymous() -> Self {
        Grants { identity: None, name: None, publish: true, subscribe: true, broadcast: true }
    }
}

/// Checks the token presented to join `room`; a token valid for longer than
/// `max_ttl_secs` (from `iat`, or `nbf`, or now, to `exp`) is refused.
pub(crate) fn admit(
    secret: Option<&str>,
    token: Option<&str>,
    room: &str,
    max_ttl_secs: u64,
) -> Result<Grants, AuthError> {
    let Some(secret) = secret else { return Ok(Grants::anonymous()) };
    let token = token.ok_or(AuthError::Missing)?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 5;
    validation.validate_nbf = true;
    let claims = jsonwebtoken::decode::<TokenClaims>(token, &DecodingKey::from_secret(secret.as_bytes()), &validation)
        .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            _ => AuthError::Invalid(e.to_string()),
        })?
        .claims;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let start = claims.iat.or(claims.nbf).unwrap_or(now).min(now);
    let lifetime = claims.exp.saturating_sub(start);
    if lifetime > i64::try_from(max_ttl_secs).unwrap_or(i64::MAX) {
        return Err(AuthError::TooLong { lifetime, max: max_ttl_secs });
    }
    if claims.room != room {
        return Err(AuthError::WrongRoom { granted: claims.room, asked: room.to_owned() });
    }
    Ok(Grants {
        identity: Some(claims.sub),
        name: claims.name,
        publish: claims.can_publish,
        subscribe: claims.can_subscribe,
        broadcast: claims.can_broadcast,
    })
}

/// Signs `claims` with `secret` (HS256).
pub fn mint(secret: &str, claims: &TokenClaims) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 24 * 3600;

    #[test]
    fn tokens_living_longer_than_the_limit_are_refused() {
        let week = mint("s3cret", &claims("r", 7 * 24 * 3600)).unwrap();
        assert!(matches!(admit(Some("s3cret"), Some(&week), "r", DAY), Err(AuthError::TooLong { .. })));
        let mut no_iat = claims("r", 2 * 24 * 3600);
        no_iat.iat = None;
        let no_iat = mint("s3cret", &no_iat).unwrap();
        assert!(matches!(admit(Some("s3cret"), Some(&no_iat), "r", DAY), Err(AuthError::TooLong { .. })));
        let hour = mint("s3cret", &claims("r", 3600)).unwrap();
        assert!(admit(Some("s3cret"), Some(&hour), "r", DAY).is_ok());
    }

    fn claims(room: &str, exp_offset: i64) -> TokenClaims {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        TokenClaims {
            sub: "ann".into(),
            room: room.into(),
            name: None,
            can_publish: false,
            can_subscribe: true,
            can_broadcast: true,
            exp: now + exp_offset,
            nbf: None,
            iat: Some(now),
        }
    }

    #[test]
    fn tokens_are_checked() {
        let token = mint("s3cret", &claims("r", 60)).unwrap();
        let grants = admit(Some("s3cret"), Some(&token), "r", DAY).unwrap();
        assert_eq!(grants.identity.as_deref(), Some("ann"));
        assert!(!grants.publish && grants.subscribe);
        assert!(matches!(admit(Some("other"), Some(&token), "r", DAY), Err(AuthError::Invalid(_))));
        assert!(matches!(admit(Some("s3cret"), Some(&token), "x", DAY), Err(AuthError::WrongRoom { .. })));
        assert!(matches!(admit(Some("s3cret"), None, "r", DAY), Err(AuthError::Missing)));
        assert!(matches!(admit(Some("s3cret"), Some("not.a.jwt"), "r", DAY), Err(AuthError::Invalid(_))));
        let old = mint("s3cret", &claims("r", -3600)).unwrap();
        assert!(matches!(admit(Some("s3cret"), Some(&old), "r", DAY), Err(AuthError::Expired)));
        assert_eq!(admit(None, None, "r", DAY).unwrap(), Grants::anonymous());
    }
}
