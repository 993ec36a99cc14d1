//! HS256 access tokens. A token names the user, their role and the user's token epoch (a
//! random number kept with the user); redrawing the epoch (password change, logout from
//! every device) revokes every older token, and a deleted user's token matches no row.

use std::time::Duration;

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::db::users::Role;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user id, as a string per RFC 7519.
    pub sub: String,
    pub role: Role,
    /// The user's token epoch when this token was issued.
    pub epoch: i64,
    pub iat: i64,
    pub exp: i64,
}

impl Claims {
    pub fn user_id(&self) -> Option<i64> {
        self.sub.parse().ok()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("token invalid")]
    Invalid,
}

pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl TokenKeys {
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // An expired token is expired: no grace period.
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        TokenKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn issue(&self, user_id: i64, role: Role, epoch: i64) -> String {
        self.issue_at(user_id, role, epoch, chrono::Utc::now().timestamp())
    }

    pub fn issue_at(&self, user_id: i64, role: Role, epoch: i64, now: i64) -> String {
        let claims = Claims {
            sub: user_id.to_string(),
            role,
            epoch,
            iat: now,
            exp: now + self.ttl.as_secs() as i64,
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 encoding of plain claims cannot fail")
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new(b"0123456789abcdef0123456789abcdef", Duration::from_secs(60))
    }

    #[test]
    fn round_trip() {
        let k = keys();
        let claims = k.verify(&k.issue(7, Role::Trainer, 3)).unwrap();
        assert_eq!(
            (claims.user_id(), claims.role, claims.epoch),
            (Some(7), Role::Trainer, 3)
        );
    }

    #[test]
    fn expired_and_tampered_and_foreign() {
        let k = keys();
        let old = k.issue_at(1, Role::Client, 0, chrono::Utc::now().timestamp() - 120);
        assert_eq!(k.verify(&old), Err(TokenError::Expired));

        let token = k.issue(1, Role::Client, 0);
        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        parts[1] = k
            .issue(1, Role::Admin, 0)
            .split('.')
            .nth(1)
            .unwrap()
            .to_string();
        assert_eq!(k.verify(&parts.join(".")), Err(TokenError::Invalid));

        let other = TokenKeys::new(b"another-secret-another-secret-xx", Duration::from_secs(60));
        assert_eq!(
            k.verify(&other.issue(1, Role::Client, 0)),
            Err(TokenError::Invalid)
        );
        assert_eq!(k.verify("garbage"), Err(TokenError::Invalid));
    }
}
