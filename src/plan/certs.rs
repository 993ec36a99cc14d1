//! When a certificate should be (re)issued. Pure: the facts of the current certificate,
//! the clock and the CA's ARI window go in; a decision with its reason comes out.
//!
//! The rule (issue 5): renew when a third or less of the lifetime is left, which scales
//! with the CA's lifetime (30 of 90 days, 15 of 45), or earlier when the CA's ACME
//! Renewal Information window (RFC 9773) says so.

use serde::Serialize;

/// What is known about the certificate currently in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Current {
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// The bootstrap certificate rather than one from a CA.
    pub self_signed: bool,
    /// Its SANs cover every name the stack serves now.
    pub covers_names: bool,
}

/// The renewal window a CA suggested through ARI, in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AriWindow {
    pub start: i64,
    pub end: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Missing,
    Forced,
    SelfSigned,
    NamesChanged,
    Expired,
    LifetimeThird,
    AriWindow,
}

impl Reason {
    pub fn describe(self) -> &'static str {
        match self {
            Reason::Missing => "no certificate yet",
            Reason::Forced => "renewal forced",
            Reason::SelfSigned => "the self-signed bootstrap certificate is in place",
            Reason::NamesChanged => "the certificate does not cover the configured names",
            Reason::Expired => "the certificate has expired",
            Reason::LifetimeThird => "a third or less of the lifetime is left",
            Reason::AriWindow => "the CA's renewal window (ARI) has opened",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Renewal {
    pub due: bool,
    /// Why it is due; `None` when it is not.
    pub reason: Option<Reason>,
    /// When renewal becomes due (Unix seconds), when there is a certificate.
    pub due_at: Option<i64>,
}

/// Decides whether to renew now. `ari_jitter` in `[0, 1)` picks the moment inside the ARI
/// window, as RFC 9773 section 4.2 asks clients to, so a fleet doesn't renew at once.
pub fn renewal(
    current: Option<&Current>,
    now: i64,
    ari: Option<AriWindow>,
    ari_jitter: f64,
    force: bool,
) -> Renewal {
    let Some(cert) = current else {
        return due(Reason::Missing, None);
    };
    let lifetime_due = cert.not_after - (cert.not_after - cert.not_before).max(0) / 3;
    let ari_due = ari.map(|w| {
        let span = (w.end - w.start).max(0) as f64;
        w.start + (span * ari_jitter.clamp(0.0, 1.0)) as i64
    });
    let (due_at, timed_reason) = match ari_due {
        Some(at) if at < lifetime_due => (at, Reason::AriWindow),
        _ => (lifetime_due, Reason::LifetimeThird),
    };
    let reason = if force {
        Some(Reason::Forced)
    } else if cert.self_signed {
        Some(Reason::SelfSigned)
    } else if !cert.covers_names {
        Some(Reason::NamesChanged)
    } else if now >= cert.not_after {
        Some(Reason::Expired)
    } else if now >= due_at {
        Some(timed_reason)
    } else {
        None
    };
    match reason {
        Some(reason) => due(reason, Some(due_at)),
        None => Renewal {
            due: false,
            reason: None,
            due_at: Some(due_at),
        },
    }
}

fn due(reason: Reason, due_at: Option<i64>) -> Renewal {
    Renewal {
        due: true,
        reason: Some(reason),
        due_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    fn ca_cert(days: i64) -> Current {
        Current {
            not_before: 0,
            not_after: days * DAY,
            self_signed: false,
            covers_names: true,
        }
    }

    #[test]
    fn a_third_of_the_lifetime_left_is_due() {
        let cert = ca_cert(90);
        let r = renewal(Some(&cert), 59 * DAY, None, 0.0, false);
        assert_eq!(
            r,
            Renewal {
                due: false,
                reason: None,
                due_at: Some(60 * DAY)
            }
        );
        let r = renewal(Some(&cert), 60 * DAY, None, 0.0, false);
        assert_eq!(r.reason, Some(Reason::LifetimeThird));
        // A 45-day certificate is due with 15 days left, not a fixed 30.
        let r = renewal(Some(&ca_cert(45)), 29 * DAY, None, 0.0, false);
        assert_eq!((r.due, r.due_at), (false, Some(30 * DAY)));
    }

    #[test]
    fn an_earlier_ari_window_wins() {
        let cert = ca_cert(90);
        let ari = AriWindow {
            start: 10 * DAY,
            end: 12 * DAY,
        };
        let r = renewal(Some(&cert), 11 * DAY, Some(ari), 0.5, false);
        assert_eq!(
            r,
            Renewal {
                due: true,
                reason: Some(Reason::AriWindow),
                due_at: Some(11 * DAY)
            }
        );
        let r = renewal(Some(&cert), 10 * DAY, Some(ari), 0.5, false);
        assert!(!r.due);
        // A later window does not postpone the lifetime rule.
        let late = AriWindow {
            start: 80 * DAY,
            end: 85 * DAY,
        };
        let r = renewal(Some(&cert), 60 * DAY, Some(late), 0.0, false);
        assert_eq!(r.reason, Some(Reason::LifetimeThird));
    }

    #[test]
    fn bootstrap_missing_renamed_expired_and_forced_are_due_now() {
        let fresh = ca_cert(90);
        let cases = [
            (None, false, Reason::Missing),
            (
                Some(Current {
                    self_signed: true,
                    ..fresh
                }),
                false,
                Reason::SelfSigned,
            ),
            (
                Some(Current {
                    covers_names: false,
                    ..fresh
                }),
                false,
                Reason::NamesChanged,
            ),
            (Some(fresh), true, Reason::Forced),
        ];
        for (cert, force, reason) in cases {
            let r = renewal(cert.as_ref(), DAY, None, 0.0, force);
            assert_eq!((r.due, r.reason), (true, Some(reason)));
        }
        let r = renewal(Some(&fresh), 91 * DAY, None, 0.0, false);
        assert_eq!(r.reason, Some(Reason::Expired));
    }
}
