//! The one throttling policy: failed logins per account and per client address, and
//! public registrations per client address (issue 15).
//!
//! Every throttled thing is a [`Key`] with its [`Policy`]: after `limit` events within
//! `window` the key is locked for `lockout`. A lock answers 429 with `Retry-After`
//! ([`crate::server::error::ApiError::TooManyRequests`]) before any password is hashed or
//! checked, so a locked key costs no argon2 work.
//!
//! The login lock is keyed by the *resolved* account (its id), not the string typed: the
//! username and the email of one account share one budget. A login that names no account
//! is keyed by the lower-cased string, so probing unknown names is throttled too. A
//! success clears the account's failures but not the address's: one good password must not
//! reset a password-spraying client. Pure bookkeeping: no I/O, time passed in.
//!
//! What an attacker controls cannot grow a key: an address is counted by the network one
//! client holds ([`client_network`]), and an unknown login by at most [`LONGEST_LOGIN`]
//! bytes of it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::net::canonical;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub limit: usize,
    pub window: Duration,
    pub lockout: Duration,
}

/// What is being counted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// Failed logins of one account, whichever of its names was typed.
    Account(i64),
    /// Failed logins naming no account (lower-cased).
    UnknownLogin(String),
    /// Failed logins from one client network ([`client_network`]), whatever account they
    /// tried.
    LoginAddress(IpAddr),
    /// Public registrations (and first-admin setups) from one client network.
    Registration(IpAddr),
}

/// The longest login that can name an account: an email address (usernames are shorter).
pub const LONGEST_LOGIN: usize = 254;

impl Key {
    pub fn login(account: Option<i64>, typed: &str) -> Key {
        match account {
            Some(id) => Key::Account(id),
            None => Key::UnknownLogin(clip(typed.trim(), LONGEST_LOGIN).to_lowercase()),
        }
    }

    pub fn login_address(client: IpAddr) -> Key {
        Key::LoginAddress(client_network(client))
    }

    pub fn registration(client: IpAddr) -> Key {
        Key::Registration(client_network(client))
    }

    /// The key as the shared (PostgreSQL) throttle stores it.
    pub fn db_key(&self) -> String {
        match self {
            Key::Account(id) => format!("account:{id}"),
            Key::UnknownLogin(s) => format!("login:{s}"),
            Key::LoginAddress(net) => format!("addr:{}", network_name(*net)),
            Key::Registration(net) => format!("reg:{}", network_name(*net)),
        }
    }

    pub fn policy(&self) -> Policy {
        match self {
            Key::Account(_) | Key::UnknownLogin(_) => PER_ACCOUNT,
            Key::LoginAddress(_) => PER_ADDRESS,
            Key::Registration(_) => REGISTRATIONS,
        }
    }
}

/// The block of addresses one client holds, by its first address: an IPv4 address, or
/// an IPv6 /64. Every IPv6 subscriber and server is given at least a /64 and may use any
/// address in it, so counting single IPv6 addresses would hand one client 2^64 budgets.
pub fn client_network(client: IpAddr) -> IpAddr {
    // An IPv4 client seen through a dual-stack socket is still one IPv4 address.
    let client = canonical(client);
    match client {
        IpAddr::V4(_) => client,
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::MAX >> 64))),
    }
}

fn network_name(net: IpAddr) -> String {
    match net {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("{v6}/64"),
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn clip(s: &str, max: usize) -> &str {
    let end = (0..=max.min(s.len()))
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0);
    &s[..end]
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

/// Each registration costs an argon2 hash and a row; a person signs up once.
pub const REGISTRATIONS: Policy = Policy {
    limit: 10,
    window: Duration::from_secs(60 * 60),
    lockout: Duration::from_secs(60 * 60),
};

/// Above this many tracked keys, expired ones are swept on the next event.
const SWEEP_ABOVE: usize = 10_000;

#[derive(Default)]
struct Record {
    events: Vec<Instant>,
    locked_until: Option<Instant>,
}

#[derive(Default)]
pub struct Throttle {
    records: Mutex<HashMap<Key, Record>>,
}

impl Throttle {
    /// `Err(retry_after)` when any of `keys` is locked now (the longest wait).
    pub fn check(&self, keys: &[&Key], now: Instant) -> Result<(), Duration> {
        let records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let wait = keys
            .iter()
            .filter_map(|k| records.get(*k)?.locked_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max();
        wait.map_or(Ok(()), Err)
    }

    /// Counts one event (a failed login, a registration) against each of `keys`.
    pub fn record(&self, keys: &[&Key], now: Instant) {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if records.len() > SWEEP_ABOVE {
            records.retain(|k, r| {
                r.locked_until.is_some_and(|u| u > now)
                    || r.events
                        .last()
                        .is_some_and(|t| now.duration_since(*t) < k.policy().window)
            });
        }
        for key in keys {
            let policy = key.policy();
            let record = records.entry((*key).clone()).or_default();
            record
                .events
                .retain(|t| now.duration_since(*t) < policy.window);
            record.events.push(now);
            if record.events.len() >= policy.limit {
                record.locked_until = Some(now + policy.lockout);
                record.events.clear();
            }
        }
    }

    /// Forgets `key` (a successful login clears its account's failures).
    pub fn clear(&self, key: &Key) {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        records.remove(key);
    }

    /// Checks `key` and, when it is not locked, counts one event against it: for things
    /// limited whether or not they succeed (registrations).
    pub fn take(&self, key: &Key, now: Instant) -> Result<(), Duration> {
        self.check(&[key], now)?;
        self.record(&[key], now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn locks_after_limit_and_expires() {
        let t = Throttle::default();
        let addr = Key::login_address(ip("198.51.100.1"));
        let alice = Key::Account(7);
        let start = Instant::now();
        for _ in 0..PER_ACCOUNT.limit - 1 {
            t.record(&[&alice, &addr], start);
        }
        assert!(t.check(&[&alice, &addr], start).is_ok());
        t.record(&[&alice, &addr], start);
        assert_eq!(t.check(&[&alice], start), Err(PER_ACCOUNT.lockout));
        assert!(t
            .check(
                &[&Key::Account(8), &Key::login_address(ip("198.51.100.2"))],
                start
            )
            .is_ok());
        assert!(t.check(&[&alice], start + PER_ACCOUNT.lockout).is_ok());
    }

    #[test]
    fn unknown_logins_share_a_key_whatever_the_case() {
        assert_eq!(
            Key::login(None, " Alice@Example.com"),
            Key::UnknownLogin("alice@example.com".into())
        );
        assert_eq!(Key::login(Some(3), "alice"), Key::Account(3));
    }

    #[test]
    fn an_unknown_login_key_keeps_at_most_the_longest_login() {
        let long = "é".repeat(1000);
        let Key::UnknownLogin(kept) = Key::login(None, &long) else {
            panic!("an unknown login");
        };
        assert_eq!(kept, "é".repeat(LONGEST_LOGIN / 2));
        let Key::UnknownLogin(kept) = Key::login(None, &format!("a{long}")) else {
            panic!("an unknown login");
        };
        assert_eq!(
            kept.len(),
            LONGEST_LOGIN - 1,
            "cut before a split character"
        );
        assert_eq!(
            Key::login(None, &"B".repeat(LONGEST_LOGIN)),
            Key::UnknownLogin("b".repeat(LONGEST_LOGIN))
        );
    }

    #[test]
    fn one_ipv6_network_is_one_client_and_ipv4_addresses_are_apart() {
        let key = |s: &str| Key::login_address(ip(s));
        assert_eq!(
            key("2001:db8:1:2::1"),
            key("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_ne!(key("198.51.100.1"), key("198.51.100.2"));
        assert_ne!(key("::ffff:198.51.100.1"), key("::ffff:198.51.100.2"));
        assert_eq!(key("2001:db8:1:2::7").db_key(), "addr:2001:db8:1:2::/64");
        assert_eq!(
            Key::registration(ip("198.51.100.1")).db_key(),
            "reg:198.51.100.1"
        );
    }

    #[test]
    fn success_clears_account_but_not_address() {
        let t = Throttle::default();
        let addr = Key::login_address(ip("198.51.100.1"));
        let now = Instant::now();
        for i in 0..PER_ADDRESS.limit {
            t.record(&[&Key::Account(i as i64), &addr], now);
        }
        t.clear(&Key::Account(0));
        assert!(
            t.check(&[&Key::Account(99), &addr], now).is_err(),
            "address stays locked"
        );
    }

    #[test]
    fn registrations_are_limited_per_address() {
        let t = Throttle::default();
        let here = Key::registration(ip("203.0.113.5"));
        let there = Key::registration(ip("203.0.113.6"));
        let now = Instant::now();
        for _ in 0..REGISTRATIONS.limit {
            assert!(t.take(&here, now).is_ok());
        }
        assert_eq!(t.take(&here, now), Err(REGISTRATIONS.lockout));
        assert!(t.take(&there, now).is_ok());
        assert!(t.take(&here, now + REGISTRATIONS.lockout).is_ok());
    }
}
