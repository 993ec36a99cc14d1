//! HS256 access tokens. A token names the user, their role and the user's token epoch (a
//! random number kept with the user); redrawing the epoch (password change, logout from
//! every device) revokes every older token, and a deleted user's token matches no row.
//!
//! [`TokenKeys::identity`] remembers the tokens it verified (issue 19): a client sends the
//! same token with every request, and jsonwebtoken's check of it is two base64 decodes, the
//! header parsed as JSON, the claims parsed twice, and an HMAC whose key schedule is redone
//! each time; on every authenticated request, before the one database read. What is
//! remembered is only what the signature proves, which never changes for a given token and
//! key; the expiry is checked on every use. Whether the user still exists, is active and
//! still has the token's epoch is the caller's check, against the database, on every
//! request: nothing here can keep a revoked token alive.

use std::sync::Mutex;
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

/// What a valid token proves, as the server uses it: whose it is and the epoch it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub user_id: i64,
    pub epoch: i64,
    /// Seconds since the epoch after which the token is expired (`exp`).
    expires: i64,
}

/// How many verified tokens are remembered. Direct-mapped: a token has one slot, chosen by
/// its signature, and a newer token in that slot replaces it, so the memory is bounded
/// (48 bytes a slot, 192 KiB up front, plus the token's ~200 bytes once a slot is used:
/// under 1 MiB however many clients there are) with no eviction bookkeeping. With 1,024
/// active tokens about one in five shares its slot with another, and the two are verified
/// again whenever they alternate: a miss costs what every request cost before.
const REMEMBERED: usize = 4096;

/// A remembered token and what it proved.
type Slot = Mutex<Option<(Box<str>, Identity)>>;

pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
    verified: Box<[Slot]>,
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
            verified: (0..REMEMBERED).map(|_| Mutex::new(None)).collect(),
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

    /// The identity a token proves, as [`TokenKeys::verify`] would find it (with a `sub`
    /// that is a user id), from the tokens verified before when it is one of them. The
    /// caller still checks the user's row: see the module doc.
    pub fn identity(&self, token: &str) -> Result<Identity, TokenError> {
        self.identity_at(token, chrono::Utc::now().timestamp())
    }

    fn identity_at(&self, token: &str, now: i64) -> Result<Identity, TokenError> {
        let slot = slot_of(token).map(|i| &self.verified[i]);
        let remembered = slot.and_then(|slot| {
            let held = slot.lock().unwrap_or_else(|p| p.into_inner());
            held.as_ref()
                .filter(|(seen, _)| same_bytes(seen.as_bytes(), token.as_bytes()))
                .map(|(_, identity)| *identity)
        });
        if let Some(identity) = remembered {
            // As jsonwebtoken decides with no leeway: expired once `exp` is in the past.
            return if identity.expires < now {
                Err(TokenError::Expired)
            } else {
                Ok(identity)
            };
        }
        let claims = self.verify(token)?;
        let identity = Identity {
            user_id: claims.user_id().ok_or(TokenError::Invalid)?,
            epoch: claims.epoch,
            expires: claims.exp,
        };
        if let Some(slot) = slot {
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some((token.into(), identity));
        }
        Ok(identity)
    }
}

/// A token's slot among the remembered ones: from the last 8 bytes of its signature (HMAC
/// output in base64, so already uniform for the tokens worth remembering). A forged token
/// can pick any slot, but it is compared in full there and never stored, so all it gets
/// is a signature check. `None` for what is too short to be a token.
fn slot_of(token: &str) -> Option<usize> {
    let tail = token.as_bytes().last_chunk::<8>()?;
    let mixed = u64::from_le_bytes(*tail).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    Some((mixed >> 32) as usize % REMEMBERED)
}

/// Byte equality in time that depends on the length only, not on where the first
/// difference is: a remembered token is a credential, and a client guessing one byte at a
/// time must learn nothing from how long a wrong guess took to refuse. Not subtle's
/// `ct_eq`: its optimisation barrier per byte cost 2,500 instructions per request (4% of
/// `/api/auth/me`, examples/insn_bench.sh) for a ~200-byte token.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
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

    #[test]
    fn a_remembered_token_proves_what_verify_proves() {
        let k = keys();
        let token = k.issue(7, Role::Trainer, 3);
        for _ in 0..2 {
            let identity = k.identity(&token).unwrap();
            assert_eq!((identity.user_id, identity.epoch), (7, 3));
        }
        let foreign = TokenKeys::new(b"another-secret-another-secret-xx", Duration::from_secs(60));
        assert_eq!(
            k.identity(&foreign.issue(7, Role::Trainer, 3)),
            Err(TokenError::Invalid)
        );
        assert_eq!(k.identity("garbage"), Err(TokenError::Invalid));
        assert_eq!(k.identity(""), Err(TokenError::Invalid));
    }

    // A remembered token must still expire: only the signature is remembered.
    #[test]
    fn a_remembered_token_still_expires() {
        let k = keys();
        let now = chrono::Utc::now().timestamp();
        let token = k.issue_at(1, Role::Client, 0, now);
        let exp = now + 60;
        assert!(k.identity_at(&token, now).is_ok());
        assert!(
            k.identity_at(&token, exp).is_ok(),
            "valid up to its exp second"
        );
        assert_eq!(k.identity_at(&token, exp + 1), Err(TokenError::Expired));
    }

    // A token that lands in a remembered token's slot (here: the same signature, other
    // claims) must be compared in full and verified, not taken for the remembered one.
    #[test]
    fn a_token_in_a_remembered_tokens_slot_is_verified() {
        let k = keys();
        let token = k.issue(1, Role::Client, 5);
        assert!(k.identity(&token).is_ok());
        let (_, signature) = token.rsplit_once('.').unwrap();
        let forged_claims = k.issue(2, Role::Admin, 5);
        let (forged_message, _) = forged_claims.rsplit_once('.').unwrap();
        let forged = format!("{forged_message}.{signature}");
        assert_eq!(slot_of(&forged), slot_of(&token));
        assert_eq!(k.identity(&forged), Err(TokenError::Invalid));
        // Same length, one byte off.
        let mut near = token.clone().into_bytes();
        near[10] ^= 1;
        let near = String::from_utf8(near).unwrap();
        assert_eq!(slot_of(&near), slot_of(&token));
        assert_eq!(k.identity(&near), Err(TokenError::Invalid));
        assert_eq!(k.identity(&token).unwrap().user_id, 1);
    }
}
