//! Access tokens: checking `join`'s token and minting tokens (`dspeak token`).
//!
//! Tokens are JWTs signed with HS256 and the server's `--auth-secret`; their claims
//! are [`TokenClaims`]. Without a secret (development only) every join is anonymous
//! with every grant, and the admin API is disabled. An admin token (`admin: true`)
//! authorizes the admin methods for its room (or every room, `*`) and cannot join.

use dspeak_schema::auth::TokenClaims;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

use crate::error::{AdminAuthError, AuthError, TokenError, TooLarge};

/// Largest `metadata` claim, in bytes.
pub(crate) const MAX_METADATA_BYTES: usize = 4096;

/// The room an admin token may act on: `*` for every room.
pub(crate) const EVERY_ROOM: &str = "*";

/// What a joined session may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Grants {
    /// The token's identity; `None` for anonymous sessions.
    pub(crate) identity: Option<String>,
    /// A display name the token imposes.
    pub(crate) name: Option<String>,
    /// The token's `metadata`.
    pub(crate) metadata: Option<String>,
    pub(crate) publish: bool,
    pub(crate) subscribe: bool,
    pub(crate) broadcast: bool,
}

impl Grants {
    fn anonymous() -> Self {
        Grants { identity: None, name: None, metadata: None, publish: true, subscribe: true, broadcast: true }
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
    let claims = decode(secret, token, max_ttl_secs)?;
    if claims.admin {
        return Err(AuthError::AdminToken);
    }
    if claims.room != room {
        return Err(AuthError::WrongRoom { granted: claims.room, asked: room.to_owned() });
    }
    if let Some(metadata) = &claims.metadata
        && metadata.len() > MAX_METADATA_BYTES
    {
        return Err(TooLarge { what: "metadata", size: metadata.len(), limit: MAX_METADATA_BYTES }.into());
    }
    Ok(Grants {
        identity: Some(claims.sub),
        name: claims.name,
        metadata: claims.metadata,
        publish: claims.can_publish,
        subscribe: claims.can_subscribe,
        broadcast: claims.can_broadcast,
    })
}

/// Checks an admin method's token; returns the room it may act on (`*`: every room).
pub(crate) fn admit_admin(secret: Option<&str>, token: &str, max_ttl_secs: u64) -> Result<String, AdminAuthError> {
    let secret = secret.ok_or(AdminAuthError::Disabled)?;
    let claims = decode(secret, Some(token), max_ttl_secs)?;
    if !claims.admin {
        return Err(AdminAuthError::NotAdmin);
    }
    Ok(claims.room)
}

/// Verifies a token's signature and validity period; a token valid for longer than
/// `max_ttl_secs` (from `iat`, or `nbf`, or now, to `exp`) is refused.
fn decode(secret: &str, token: Option<&str>, max_ttl_secs: u64) -> Result<TokenClaims, TokenError> {
    let token = token.ok_or(TokenError::Missing)?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 5;
    validation.validate_nbf = true;
    let key = DecodingKey::from_secret(secret.as_bytes());
    let claims =
        jsonwebtoken::decode::<TokenClaims>(token, &key, &validation).map(|t| t.claims).map_err(|e| {
            match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                _ => TokenError::Invalid(e.to_string()),
            }
        })?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let start = claims.iat.or(claims.nbf).unwrap_or(now).min(now);
    let lifetime = claims.exp.saturating_sub(start);
    if lifetime > i64::try_from(max_ttl_secs).unwrap_or(i64::MAX) {
        return Err(TokenError::TooLong { lifetime, max: max_ttl_secs });
    }
    Ok(claims)
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
        assert!(matches!(
            admit(Some("s3cret"), Some(&week), "r", DAY),
            Err(AuthError::Token(TokenError::TooLong { .. }))
        ));
        let mut no_iat = claims("r", 2 * 24 * 3600);
        no_iat.iat = None;
        let no_iat = mint("s3cret", &no_iat).unwrap();
        assert!(matches!(
            admit(Some("s3cret"), Some(&no_iat), "r", DAY),
            Err(AuthError::Token(TokenError::TooLong { .. }))
        ));
        let hour = mint("s3cret", &claims("r", 3600)).unwrap();
        assert!(admit(Some("s3cret"), Some(&hour), "r", DAY).is_ok());
        let admin_week = mint("s3cret", &TokenClaims { admin: true, ..claims("*", 7 * 24 * 3600) }).unwrap();
        assert!(matches!(
            admit_admin(Some("s3cret"), &admin_week, DAY),
            Err(AdminAuthError::Token(TokenError::TooLong { .. }))
        ));
    }

    fn claims(room: &str, exp_offset: i64) -> TokenClaims {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        TokenClaims {
            sub: "ann".into(),
            room: room.into(),
            name: None,
            metadata: Some("{\"avatar\":1}".into()),
            admin: false,
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
        assert_eq!(grants.metadata.as_deref(), Some("{\"avatar\":1}"));
        let invalid = |r| matches!(r, Err(AuthError::Token(TokenError::Invalid(_))));
        assert!(invalid(admit(Some("other"), Some(&token), "r", DAY)));
        assert!(matches!(admit(Some("s3cret"), Some(&token), "x", DAY), Err(AuthError::WrongRoom { .. })));
        assert!(matches!(admit(Some("s3cret"), None, "r", DAY), Err(AuthError::Token(TokenError::Missing))));
        assert!(invalid(admit(Some("s3cret"), Some("not.a.jwt"), "r", DAY)));
        let old = mint("s3cret", &claims("r", -3600)).unwrap();
        assert!(matches!(admit(Some("s3cret"), Some(&old), "r", DAY), Err(AuthError::Token(TokenError::Expired))));
        assert_eq!(admit(None, None, "r", DAY).unwrap(), Grants::anonymous());
        let big = TokenClaims { metadata: Some("x".repeat(MAX_METADATA_BYTES + 1)), ..claims("r", 60) };
        let big = mint("s3cret", &big).unwrap();
        assert!(matches!(admit(Some("s3cret"), Some(&big), "r", DAY), Err(AuthError::TooLarge(_))));
    }

    #[test]
    fn admin_tokens_authorize_the_admin_api_and_cannot_join() {
        let admin = mint("s3cret", &TokenClaims { admin: true, room: "*".into(), ..claims("*", 60) }).unwrap();
        let user = mint("s3cret", &claims("r", 60)).unwrap();
        assert_eq!(admit_admin(Some("s3cret"), &admin, DAY).unwrap(), EVERY_ROOM);
        assert!(matches!(admit(Some("s3cret"), Some(&admin), "*", DAY), Err(AuthError::AdminToken)));
        assert!(matches!(admit_admin(Some("s3cret"), &user, DAY), Err(AdminAuthError::NotAdmin)));
        assert!(matches!(admit_admin(None, &admin, DAY), Err(AdminAuthError::Disabled)));
        assert!(matches!(admit_admin(Some("other"), &admin, DAY), Err(AdminAuthError::Token(TokenError::Invalid(_)))));
    }
}
