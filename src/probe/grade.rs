//! A TLS grade following the published SSL Labs rating guide, on what one client can
//! observe: protocol support, forward secrecy, AEAD, key size, trust, name match and
//! HSTS. Pure: facts in, a grade with every deduction (and the nginx directive that
//! removes it) out.
//!
//! The caps applied (SSL Labs rating guide, 2020 revision):
//! - untrusted or expired certificate: T; name mismatch: M (both replace the letter);
//! - neither TLS 1.2 nor 1.3: C;
//! - TLS 1.0 or 1.1 accepted: B;
//! - no forward secrecy, or no AEAD cipher: B;
//! - RSA key under 2048 bits: B;
//! - A+ needs a clean A and HSTS with max-age of at least 6 months (15552000 s).

use serde::Serialize;

/// HSTS max-age needed for A+: 180 days.
pub const HSTS_A_PLUS_SECS: u64 = 15_552_000;

const PROTOCOLS_FIX: &str = "ssl_protocols TLSv1.2 TLSv1.3;";
const CIPHERS_FIX: &str = "ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305;";
const HSTS_FIX: &str =
    "add_header Strict-Transport-Security \"max-age=63072000; includeSubDomains\" always;";

/// What the probe saw.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Observed {
    pub handshake_ok: bool,
    pub trusted: bool,
    pub expired: bool,
    pub name_matches: bool,
    pub tls1_0: bool,
    pub tls1_1: bool,
    pub tls1_2: bool,
    pub tls1_3: bool,
    pub forward_secrecy: bool,
    pub aead: bool,
    pub key_type: String,
    pub key_bits: usize,
    /// `None` when no HSTS header was sent.
    pub hsts_max_age: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Letter {
    F,
    C,
    B,
    A,
    #[serde(rename = "A+")]
    APlus,
}

impl Letter {
    pub fn as_str(self) -> &'static str {
        match self {
            Letter::F => "F",
            Letter::C => "C",
            Letter::B => "B",
            Letter::A => "A",
            Letter::APlus => "A+",
        }
    }
}

/// One reason the grade is lower than A+, with its fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deduction {
    pub reason: String,
    /// The best grade possible with this problem (`T`, `M`, `B`...).
    pub cap: String,
    /// The nginx directive (or command) that removes it.
    pub fix: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grade {
    /// `A+`, `A`, `B`, `C`, `F`, or `T` / `M` for trust and name problems.
    pub grade: String,
    /// The letter the configuration earns if trust and name were fixed.
    pub if_trusted: String,
    pub deductions: Vec<Deduction>,
}

impl Grade {
    /// A or A+: what a script should accept.
    pub fn is_good(&self) -> bool {
        self.grade == "A" || self.grade == "A+"
    }
}

pub fn grade(o: &Observed) -> Grade {
    let mut deductions = Vec::new();
    let mut cap = Letter::APlus;
    let mut deduct = |letter: Letter, reason: &str, fix: &str| {
        cap = cap.min(letter);
        deductions.push(Deduction {
            reason: reason.to_string(),
            cap: letter.as_str().to_string(),
            fix: fix.to_string(),
        });
    };
    if !o.handshake_ok {
        deduct(
            Letter::F,
            "no TLS 1.2 or 1.3 handshake with a modern client succeeded",
            "ssl_protocols TLSv1.2 TLSv1.3; with a valid ssl_certificate and ssl_certificate_key",
        );
    } else if !o.tls1_2 && !o.tls1_3 {
        deduct(
            Letter::C,
            "neither TLS 1.2 nor TLS 1.3 is offered",
            PROTOCOLS_FIX,
        );
    }
    if o.tls1_0 {
        deduct(
            Letter::B,
            "TLS 1.0 is accepted (deprecated by RFC 8996)",
            PROTOCOLS_FIX,
        );
    }
    if o.tls1_1 {
        deduct(
            Letter::B,
            "TLS 1.1 is accepted (deprecated by RFC 8996)",
            PROTOCOLS_FIX,
        );
    }
    if o.handshake_ok && !o.forward_secrecy {
        deduct(
            Letter::B,
            "no forward secrecy (no ECDHE/DHE key exchange)",
            CIPHERS_FIX,
        );
    }
    if o.handshake_ok && !o.aead {
        deduct(
            Letter::B,
            "no AEAD cipher (GCM or ChaCha20-Poly1305)",
            CIPHERS_FIX,
        );
    }
    if o.key_type == "RSA" && o.key_bits > 0 && o.key_bits < 2048 {
        deduct(
            Letter::B,
            &format!("RSA key of {} bits (under 2048)", o.key_bits),
            "ssl_certificate_key with an RSA 2048+ or ECDSA P-256 key: elior cert renew --force",
        );
    }
    match o.hsts_max_age {
        Some(age) if age >= HSTS_A_PLUS_SECS => {}
        Some(age) => deduct(
            Letter::A,
            &format!("HSTS max-age is {age} s, under 6 months ({HSTS_A_PLUS_SECS} s)"),
            HSTS_FIX,
        ),
        None => deduct(
            Letter::A,
            "no HSTS header (Strict-Transport-Security)",
            HSTS_FIX,
        ),
    }
    let letter = cap.as_str().to_string();
    let mut grade = letter.clone();
    if o.handshake_ok && (!o.trusted || o.expired) {
        grade = "T".into();
        deductions.push(Deduction {
            reason: if o.expired {
                "the certificate has expired".into()
            } else {
                "the certificate is not trusted (unknown issuer or incomplete chain)".into()
            },
            cap: "T".into(),
            fix: "ssl_certificate with the full chain from a trusted CA: elior cert issue".into(),
        });
    }
    if o.handshake_ok && !o.name_matches {
        if grade != "T" {
            grade = "M".into();
        }
        deductions.push(Deduction {
            reason: "the certificate does not cover this host name".into(),
            cap: "M".into(),
            fix: "ssl_certificate for a certificate whose SANs include this name: elior cert renew --force".into(),
        });
    }
    Grade {
        grade,
        if_trusted: letter,
        deductions,
    }
}

/// `max-age` of a Strict-Transport-Security value.
pub fn hsts_max_age(value: &str) -> Option<u64> {
    value.split(';').find_map(|part| {
        let (k, v) = part.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("max-age")
            .then(|| v.trim().trim_matches('"').parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean() -> Observed {
        Observed {
            handshake_ok: true,
            trusted: true,
            expired: false,
            name_matches: true,
            tls1_2: true,
            tls1_3: true,
            forward_secrecy: true,
            aead: true,
            key_type: "ECDSA P-256".into(),
            key_bits: 256,
            hsts_max_age: Some(63_072_000),
            ..Default::default()
        }
    }

    fn letter(o: &Observed) -> String {
        grade(o).grade
    }

    #[test]
    fn a_clean_server_with_long_hsts_is_a_plus() {
        let g = grade(&clean());
        assert_eq!((g.grade.as_str(), g.deductions.len()), ("A+", 0));
        assert!(g.is_good());
    }

    #[test]
    fn short_or_missing_hsts_is_a() {
        let short = Observed {
            hsts_max_age: Some(86_400),
            ..clean()
        };
        assert_eq!(letter(&short), "A");
        let none = Observed {
            hsts_max_age: None,
            ..clean()
        };
        let g = grade(&none);
        assert_eq!(g.grade, "A");
        assert_eq!(g.deductions[0].fix, HSTS_FIX);
        assert_eq!(
            letter(&Observed {
                hsts_max_age: Some(HSTS_A_PLUS_SECS),
                ..clean()
            }),
            "A+"
        );
    }

    #[test]
    fn old_protocols_weak_ciphers_and_small_rsa_cap_at_b() {
        let tls10 = Observed {
            tls1_0: true,
            ..clean()
        };
        let g = grade(&tls10);
        assert_eq!(g.grade, "B");
        assert_eq!(g.deductions[0].fix, PROTOCOLS_FIX);
        assert_eq!(
            letter(&Observed {
                tls1_1: true,
                ..clean()
            }),
            "B"
        );
        assert_eq!(
            letter(&Observed {
                forward_secrecy: false,
                ..clean()
            }),
            "B"
        );
        assert_eq!(
            letter(&Observed {
                aead: false,
                ..clean()
            }),
            "B"
        );
        let rsa = Observed {
            key_type: "RSA".into(),
            key_bits: 1024,
            ..clean()
        };
        assert_eq!(letter(&rsa), "B");
        let rsa_ok = Observed {
            key_type: "RSA".into(),
            key_bits: 2048,
            ..clean()
        };
        assert_eq!(letter(&rsa_ok), "A+");
        // B and no HSTS: still B, with both deductions listed.
        let both = Observed {
            tls1_0: true,
            hsts_max_age: None,
            ..clean()
        };
        let g = grade(&both);
        assert_eq!((g.grade.as_str(), g.deductions.len()), ("B", 2));
    }

    #[test]
    fn trust_and_name_problems_replace_the_letter() {
        let untrusted = grade(&Observed {
            trusted: false,
            ..clean()
        });
        assert_eq!(
            (untrusted.grade.as_str(), untrusted.if_trusted.as_str()),
            ("T", "A+")
        );
        assert_eq!(
            letter(&Observed {
                expired: true,
                ..clean()
            }),
            "T"
        );
        assert_eq!(
            letter(&Observed {
                name_matches: false,
                ..clean()
            }),
            "M"
        );
        assert!(!grade(&Observed {
            name_matches: false,
            ..clean()
        })
        .is_good());
        assert_eq!(
            letter(&Observed {
                tls1_2: false,
                tls1_3: false,
                ..clean()
            }),
            "C"
        );
        assert_eq!(
            letter(&Observed {
                handshake_ok: false,
                ..clean()
            }),
            "F"
        );
    }

    #[test]
    fn reads_hsts_max_age() {
        assert_eq!(
            hsts_max_age("max-age=63072000; includeSubDomains"),
            Some(63_072_000)
        );
        assert_eq!(
            hsts_max_age("includeSubDomains; Max-Age=\"300\""),
            Some(300)
        );
        assert_eq!(hsts_max_age("includeSubDomains"), None);
    }
}
