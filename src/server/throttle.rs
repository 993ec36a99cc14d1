//! Throttling of failed logins, per account and per client address.
//!
//! After `limit` failures within `window`, the key is locked for `lockout`; the lock answers
//! 429 with `Retry-After` before any password is checked, so a locked account costs no
//! argon2 work. A success clears the account's failures (not the address's: one good
//! password must not reset a password-spraying client).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub limit: usize,
    pub window: Duration,
    pub lockout: Duration,
}

pub const PER_ACCOUNT: Policy = Policy {
    limit: 5,
    window: Duration::from_secs(15 * 60),
    lockout: Duration::from_secs(5 * 60),
};

pub const PER_ADDRESS: Policy = Policy {
    limit: 20,
    window: Duration::from_secs(15 * 60),
    lockout: Duration::from_secs(15 * 60),
};

/// Above this many tracked keys, expired ones are swept on the next failure.
const SWEEP_ABOVE: usize = 10_000;

#[derive(Default)]
struct Record {
    failures: Vec<Instant>,
    locked_until: Option<Instant>,
}

#[derive(Default)]
pub struct Throttle {
    records: Mutex<HashMap<Key, Record>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Account(String),
    Address(IpAddr),
}

impl Throttle {
    /// `Err(retry_after)` when either the account or the address is locked now.
    pub fn check(&self, account: &str, address: IpAddr, now: Instant) -> Result<(), Duration> {
        let records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let wait = [Key::Account(account.to_lowercase()), Key::Address(address)]
            .iter()
            .filter_map(|k| records.get(k)?.locked_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max();
        wait.map_or(Ok(()), Err)
    }

    pub fn record_failure(&self, account: &str, address: IpAddr, now: Instant) {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if records.len() > SWEEP_ABOVE {
            records.retain(|_, r| {
                r.locked_until.is_some_and(|u| u > now)
                    || r.failures
                        .last()
                        .is_some_and(|t| now.duration_since(*t) < PER_ADDRESS.window)
            });
        }
        for (key, policy) in [
            (Key::Account(account.to_lowercase()), PER_ACCOUNT),
            (Key::Address(address), PER_ADDRESS),
        ] {
            let record = records.entry(key).or_default();
            record
                .failures
                .retain(|t| now.duration_since(*t) < policy.window);
            record.failures.push(now);
            if record.failures.len() >= policy.limit {
                record.locked_until = Some(now + policy.lockout);
                record.failures.clear();
            }
        }
    }

    pub fn record_success(&self, account: &str) {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        records.remove(&Key::Account(account.to_lowercase()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_limit_and_expires() {
        let t = Throttle::default();
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        let start = Instant::now();
        for _ in 0..PER_ACCOUNT.limit - 1 {
            t.record_failure("Alice", ip, start);
        }
        assert!(t.check("alice", ip, start).is_ok());
        t.record_failure("alice", ip, start);
        assert_eq!(t.check("ALICE", ip, start), Err(PER_ACCOUNT.lockout));
        assert!(t
            .check("bob", "198.51.100.2".parse().unwrap(), start)
            .is_ok());
        assert!(t.check("alice", ip, start + PER_ACCOUNT.lockout).is_ok());
    }

    #[test]
    fn success_clears_account_but_not_address() {
        let t = Throttle::default();
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        let now = Instant::now();
        for i in 0..PER_ADDRESS.limit {
            t.record_failure(&format!("user{i}"), ip, now);
        }
        t.record_success("user0");
        assert!(
            t.check("someone-else", ip, now).is_err(),
            "address stays locked"
        );
    }
}
