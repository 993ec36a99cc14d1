//! The stack's public name (`DOMAIN`): validation and conversion to the ASCII form that
//! nginx, certificates and URLs use.
//!
//! Owns the rule for what counts as a hostname (RFC 1123 labels, RFC 3696's "the last
//! label is not all digits", total length at most 253) and IDNA conversion of Unicode
//! names to punycode. It must not look anything up (no DNS) and must not decide what a
//! command does with an IP literal; it only says which kind of name it got.
//!
//! Why this is strict: the name is rendered into nginx.conf and compose files, so a value
//! such as `example.com;` or `example.com\nserver {` must never get that far (the original
//! deploy script ran `sed "s/yourdomain.com/$DOMAIN/g"` over nginx.conf).

use std::fmt;
use std::net::IpAddr;

/// The longest hostname DNS can carry in presentation form (RFC 1035 §2.3.4).
pub const MAX_HOSTNAME_LEN: usize = 253;
/// The longest label (RFC 1035 §2.3.4).
pub const MAX_LABEL_LEN: usize = 63;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DomainKind {
    /// A public DNS name: can get a certificate from an ACME CA.
    Hostname,
    /// `localhost`: self-signed certificates only.
    Localhost,
    /// An IPv4 or IPv6 literal: self-signed certificates only.
    IpLiteral,
}

/// A validated name, always lower-case ASCII (punycode for Unicode input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    ascii: String,
    kind: DomainKind,
}

impl Domain {
    pub fn as_str(&self) -> &str {
        &self.ascii
    }

    pub fn kind(&self) -> DomainKind {
        self.kind
    }

    /// True when a public CA can issue for this name; `localhost` and IP literals are for
    /// self-signed use only.
    pub fn is_public(&self) -> bool {
        self.kind == DomainKind::Hostname
    }

    /// The name as it appears in a URL authority: IPv6 literals get brackets.
    pub fn url_host(&self) -> String {
        if self.ascii.contains(':') {
            format!("[{}]", self.ascii)
        } else {
            self.ascii.clone()
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.ascii)
    }
}

/// Validates a domain as the user typed it. The error names the value and the rule that it
/// breaks, without the key: callers add `DOMAIN (origin): ` in front.
pub fn parse(input: &str) -> Result<Domain, String> {
    let shown = Shown(input);
    if input.is_empty() {
        return Err("is empty; use the public name of the server, such as example.com".into());
    }
    if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{shown} is not a hostname: it contains whitespace or control characters; use letters, digits, '-' and '.'"
        ));
    }
    let bare = input
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(input);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(Domain {
            ascii: ip.to_string(),
            kind: DomainKind::IpLiteral,
        });
    }
    if !input
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || !c.is_ascii())
    {
        let bad = input
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.' || !c.is_ascii()))
            .unwrap_or_default();
        return Err(format!(
            "{shown} is not a hostname: {bad:?} is not allowed; use letters, digits, '-' and '.'"
        ));
    }
    let ascii = if input.is_ascii() {
        let lower = input.to_ascii_lowercase();
        // An ACE label (`xn--…`) must be valid punycode of a valid Unicode label, in its
        // canonical form: otherwise two spellings could name one stack (issue 14).
        if lower.split('.').any(|l| l.starts_with("xn--")) {
            match idna::domain_to_ascii_strict(&lower) {
                Ok(canonical) if canonical == lower => {}
                _ => {
                    return Err(format!(
                        "{shown} is not a hostname: it has an xn-- label that is not valid punycode"
                    ))
                }
            }
        }
        lower
    } else {
        // Strict UTS 46 processing (STD3 rules): the result is LDH-only or an error.
        idna::domain_to_ascii_strict(input)
            .map_err(|_| format!("{shown} is not a valid internationalised domain name"))?
    };
    check_ldh(&ascii).map_err(|rule| format!("{shown} is not a hostname: {rule}"))?;
    let kind = if ascii == "localhost" {
        DomainKind::Localhost
    } else {
        DomainKind::Hostname
    };
    Ok(Domain { ascii, kind })
}

/// The RFC 1123 rules on an ASCII name.
fn check_ldh(ascii: &str) -> Result<(), String> {
    if ascii.len() > MAX_HOSTNAME_LEN {
        return Err(format!(
            "it is {} characters long; the limit is {MAX_HOSTNAME_LEN}",
            ascii.len()
        ));
    }
    if ascii.ends_with('.') {
        return Err("it ends with '.'; drop the trailing dot".into());
    }
    let labels: Vec<&str> = ascii.split('.').collect();
    for label in &labels {
        if label.is_empty() {
            return Err("it has an empty label (\"..\" or a leading '.')".into());
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(format!(
                "the label {} is {} characters long; the limit is {MAX_LABEL_LEN}",
                Shown(label),
                label.len()
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "the label {label:?} starts or ends with '-'; a label must begin and end with a letter or digit"
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(format!(
                "the label {label:?} has characters other than letters, digits and '-'"
            ));
        }
    }
    let last = labels.last().expect("split yields at least one label");
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "the last label {last:?} is all digits, which is neither a hostname nor an IP address"
        ));
    }
    Ok(())
}

/// Shows user input in messages quoted, escaped and shortened, so a hostile value cannot
/// forge lines in the terminal.
struct Shown<'a>(&'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 70;
        let short: String = self.0.chars().take(MAX).collect();
        if self.0.chars().count() > MAX {
            write!(f, "{:?}...", short)
        } else {
            write!(f, "{short:?}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_hostnames_localhost_and_ips() {
        let d = parse("Example.COM").unwrap();
        assert_eq!(
            (d.as_str(), d.kind()),
            ("example.com", DomainKind::Hostname)
        );
        assert_eq!(parse("localhost").unwrap().kind(), DomainKind::Localhost);
        assert_eq!(parse("a-b.c0.io").unwrap().as_str(), "a-b.c0.io");
        let ip = parse("192.0.2.7").unwrap();
        assert_eq!(ip.kind(), DomainKind::IpLiteral);
        assert!(!ip.is_public());
        let v6 = parse("[2001:DB8::1]").unwrap();
        assert_eq!(
            (v6.as_str(), v6.url_host()),
            ("2001:db8::1", "[2001:db8::1]".into())
        );
        let longest_label = format!("{}.com", "a".repeat(63));
        assert!(parse(&longest_label).is_ok());
    }

    #[test]
    fn invalid_punycode_is_refused() {
        for bad in [
            "xn--zz.test",
            "xn--a.test",
            "XN--99999999.test",
            "xn--.test",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(
                err.contains("punycode") || err.contains("hostname"),
                "{bad}: {err}"
            );
        }
        assert_eq!(
            parse("XN--BCHER-KVA.example").unwrap().as_str(),
            "xn--bcher-kva.example"
        );
    }

    #[test]
    fn unicode_becomes_punycode() {
        assert_eq!(
            parse("bücher.example").unwrap().as_str(),
            "xn--bcher-kva.example"
        );
        assert_eq!(parse("אליאור.com").unwrap().as_str(), "xn--4dbapoo9e.com");
    }

    #[test]
    fn refuses_what_the_issue_lists() {
        let over_63 = format!("{}.com", "a".repeat(64));
        for bad in [
            "",
            "a b",
            "example.com;",
            "ex$ample.com",
            "-bad.com",
            "bad-.com",
            "../etc",
            "example.com\nserver {",
            over_63.as_str(),
            "example.com.",
            "a..b",
            "1.2.3",
            "exa_mple.com",
            "ex/ample.com",
        ] {
            let err = parse(bad).expect_err(bad);
            assert!(
                !err.contains('\n'),
                "{bad:?}: message must stay on one line: {err}"
            );
        }
    }

    #[test]
    fn messages_name_the_value_and_the_rule() {
        assert_eq!(
            parse("ex$ample.com").unwrap_err(),
            "\"ex$ample.com\" is not a hostname: '$' is not allowed; use letters, digits, '-' and '.'"
        );
        assert!(parse("-bad.com")
            .unwrap_err()
            .contains("starts or ends with '-'"));
        assert!(parse(&"a.".repeat(127))
            .unwrap_err()
            .contains("limit is 253"));
        assert!(parse(&format!("{}.com", "b".repeat(64)))
            .unwrap_err()
            .contains("limit is 63"));
    }
}
