//! Password hashing with argon2id.
//!
//! Parameters are OWASP's m=9 MiB, t=4, p=1, which it rates equal to the crate's default
//! m=19 MiB, t=2: the same work in time, half the memory per concurrent login, which keeps
//! the API's peak memory small. Stored hashes carry their own parameters, so hashes made
//! with other settings still verify.

use std::sync::OnceLock;

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::{Algorithm, Argon2, Params, Version};

fn hasher() -> Argon2<'static> {
    let params = Params::new(9 * 1024, 4, 1, None).expect("constant argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

pub const MIN_LEN: usize = 8;
pub const MAX_LEN: usize = 128;

pub fn hash(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters cannot fail on a bounded password")
        .to_string()
}

/// True when `password` matches the PHC-format `stored` hash. A malformed hash never matches.
pub fn verify(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .map(|parsed| {
            hasher()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Spends the same work as a real check when the account does not exist, so response
/// time does not tell an attacker which usernames are registered.
pub fn verify_against_dummy(password: &str) {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash("elior-dummy-password"));
    let _ = verify(password, dummy);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let h = hash("correct horse");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse", &h));
        assert!(!verify("wrong horse", &h));
        assert!(!verify("correct horse", "not-a-hash"));
        assert_ne!(hash("same"), hash("same"), "salts differ");
        assert!(h.contains("m=9216,t=4,p=1"), "{h}");
    }

    #[test]
    fn hashes_made_with_other_parameters_still_verify() {
        let salt = SaltString::generate(&mut OsRng);
        let old = Argon2::default()
            .hash_password(b"legacy", &salt)
            .unwrap()
            .to_string();
        assert!(old.contains("m=19456"));
        assert!(verify("legacy", &old));
    }
}
