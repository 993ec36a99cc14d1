//! Where uploads are kept, from the settings (issue 16): the local UPLOAD_DIR, the default,
//! or an S3-compatible bucket named by `UPLOADS_URL=s3://BUCKET/PREFIX` with `S3_ENDPOINT`,
//! `S3_REGION`, `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
//!
//! Pure: it validates values and never connects (the store's start check does, see
//! [`super::store::Store::verify`]). Every error is one line that names the key, where its
//! value came from, and the fix, like the rest of `elior serve`'s settings.

use anyhow::{bail, Result};

use crate::config::Secret;

/// The keys read here, all of them in [`crate::config::SERVE_KEYS`].
pub const KEYS: [&str; 5] = [
    "UPLOADS_URL",
    "S3_ENDPOINT",
    "S3_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
];

/// The region when S3_REGION is unset (MinIO, Garage and Ceph accept any name).
pub const DEFAULT_REGION: &str = "us-east-1";

/// Where uploads live.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum UploadsSettings {
    /// In UPLOAD_DIR on this host: one API process, as before issue 16.
    #[default]
    Local,
    /// In a bucket every replica shares.
    S3(S3Settings),
}

/// A validated S3 location and its credentials. `Debug` never shows the secret key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    pub bucket: String,
    /// Key prefix without a leading or trailing `/`; empty for the bucket's root.
    pub prefix: String,
    /// `http(s)://HOST[:PORT]` without a trailing slash; `None` means AWS for the region.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: Secret,
}

impl S3Settings {
    /// The endpoint requests go to, as shown in messages.
    pub fn endpoint_url(&self) -> String {
        match &self.endpoint {
            Some(e) => e.clone(),
            None => format!("https://s3.{}.amazonaws.com", self.region),
        }
    }

    /// `s3://bucket/prefix`, as the user wrote it (normalised).
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// A value of one key and where it came from (`environment`, `FILE line N`).
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<(String, String)>;

impl S3Settings {
    /// Validates `url` (the value of `url_key`, from `url_origin`) and the S3_* and AWS_*
    /// keys read through `get`. `purpose` completes "UPLOADS_URL (origin) ..." in the
    /// message of a missing credential; `unset_hint` ends the message of a bad URL.
    pub fn parse(
        url_key: &str,
        url: &str,
        url_origin: &str,
        purpose: &str,
        unset_hint: &str,
        get: Lookup<'_>,
    ) -> Result<S3Settings> {
        let bad = |message: String| anyhow::anyhow!("{url_key} ({url_origin}): {message}");
        let Some(rest) = url.strip_prefix("s3://") else {
            bail!(bad(format!(
                "{url:?} is not an s3:// URL; use s3://BUCKET/PREFIX, {unset_hint}"
            )));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        check_bucket(bucket).map_err(|m| bad(format!("bucket {bucket:?} {m}")))?;
        let prefix = check_prefix(prefix).map_err(|m| bad(format!("prefix {prefix:?} {m}")))?;

        let endpoint = match get("S3_ENDPOINT") {
            None => None,
            Some((v, o)) => {
                Some(check_endpoint(&v).map_err(|m| anyhow::anyhow!("S3_ENDPOINT ({o}): {m}"))?)
            }
        };
        let region = match get("S3_REGION") {
            None => DEFAULT_REGION.to_string(),
            Some((v, o)) => {
                let ok = v.len() <= 32
                    && v.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                if !ok {
                    bail!("S3_REGION ({o}): {v:?} is not a region name; use one such as eu-west-1 (MinIO and Garage accept their own, e.g. garage)");
                }
                v
            }
        };
        let credential = |key: &str| {
            get(key).map(|(v, _)| v).ok_or_else(|| {
                anyhow::anyhow!(
                    "{key} is not set; {url_key} ({url_origin}) {purpose}, which needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (the bucket's key pair)"
                )
            })
        };
        let access_key_id = credential("AWS_ACCESS_KEY_ID")?;
        let secret_access_key = Secret::new(credential("AWS_SECRET_ACCESS_KEY")?);
        Ok(S3Settings {
            bucket: bucket.to_string(),
            prefix,
            endpoint,
            region,
            access_key_id,
            secret_access_key,
        })
    }
}

impl UploadsSettings {
    /// Reads the keys through `get`, which returns a non-blank value and its origin.
    pub fn from_lookup(get: Lookup<'_>) -> Result<Self> {
        let Some((url, url_origin)) = get("UPLOADS_URL") else {
            // S3_* keys are elior's own: set without UPLOADS_URL, the user meant S3 and
            // would otherwise see uploads land on the local disk without a word. Unless
            // BACKUP_OFFSITE (issue 17) is what they are for.
            if get("BACKUP_OFFSITE").is_some() {
                return Ok(UploadsSettings::Local);
            }
            for key in ["S3_ENDPOINT", "S3_REGION"] {
                if let Some((_, origin)) = get(key) {
                    bail!(
                        "{key} ({origin}) is set but UPLOADS_URL is not; set UPLOADS_URL=s3://BUCKET/PREFIX to keep uploads on S3, or remove {key} to keep them in UPLOAD_DIR"
                    );
                }
            }
            return Ok(UploadsSettings::Local);
        };
        S3Settings::parse(
            "UPLOADS_URL",
            &url,
            &url_origin,
            "keeps uploads on S3",
            "or leave UPLOADS_URL unset to keep uploads in UPLOAD_DIR",
            get,
        )
        .map(UploadsSettings::S3)
    }

    /// `local` or `s3`, as `/health` reports it.
    pub fn kind(&self) -> &'static str {
        match self {
            UploadsSettings::Local => "local",
            UploadsSettings::S3(_) => "s3",
        }
    }
}

/// S3's bucket naming rules (the strict, virtual-host-safe ones every S3 clone accepts).
fn check_bucket(bucket: &str) -> Result<(), &'static str> {
    const FIX: &str = "is not a valid bucket name; use 3 to 63 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit";
    let edge_ok = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && edge_ok(bucket.as_bytes().first())
        && edge_ok(bucket.as_bytes().last())
        && !bucket.contains("..");
    if ok {
        Ok(())
    } else {
        Err(FIX)
    }
}

/// A prefix of plain segments: every key elior writes stays under it, so it must not
/// climb (`..`) or hide (`.`, empty segments), and it keeps to characters that need no
/// escaping in a URL or a signature.
fn check_prefix(prefix: &str) -> Result<String, &'static str> {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return Ok(String::new());
    }
    for segment in prefix.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err("has an empty, '.' or '..' segment; use plain names such as s3://bucket/elior/uploads");
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err("has characters other than letters, digits, '-', '_', '.' and '/'; use plain names such as s3://bucket/elior/uploads");
        }
    }
    Ok(prefix.to_string())
}

/// `http(s)://HOST[:PORT]` with nothing after it but an optional `/`.
fn check_endpoint(value: &str) -> Result<String, String> {
    let fix = || {
        format!("{value:?} is not an endpoint URL; use http(s)://HOST[:PORT] such as http://minio:9000, or leave S3_ENDPOINT unset for AWS")
    };
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"))
        .ok_or_else(fix)?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = match authority.rsplit_once(':') {
        // An IPv6 literal without a port ends with ']'.
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (authority, None),
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    if !host_ok || !port_ok {
        return Err(fix());
    }
    Ok(value.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<UploadsSettings> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        UploadsSettings::from_lookup(&|key| {
            pairs
                .iter()
                .find(|(k, v)| k == key && !v.trim().is_empty())
                .map(|(_, v)| (v.trim().to_string(), "environment".to_string()))
        })
    }

    fn err(pairs: &[(&str, &str)]) -> String {
        format!("{:#}", parse(pairs).unwrap_err())
    }

    const KEYS_OK: [(&str, &str); 2] = [
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        (
            "AWS_SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        ),
    ];

    fn with_keys<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut all = KEYS_OK.to_vec();
        all.extend_from_slice(extra);
        all
    }

    #[test]
    fn unset_means_the_local_folder() {
        assert_eq!(parse(&[]).unwrap(), UploadsSettings::Local);
        // Credentials alone belong to whatever else the host runs.
        assert_eq!(parse(&KEYS_OK).unwrap(), UploadsSettings::Local);
        assert_eq!(
            parse(&[("UPLOADS_URL", "  ")]).unwrap(),
            UploadsSettings::Local
        );
    }

    #[test]
    fn an_s3_url_with_endpoint_region_and_keys() {
        let s = parse(&with_keys(&[
            ("UPLOADS_URL", "s3://elior-uploads/prod/files/"),
            ("S3_ENDPOINT", "http://127.0.0.1:9000/"),
            ("S3_REGION", "eu-west-1"),
        ]))
        .unwrap();
        let UploadsSettings::S3(s) = s else {
            panic!("not s3")
        };
        assert_eq!(
            (
                s.bucket.as_str(),
                s.prefix.as_str(),
                s.endpoint.as_deref(),
                s.region.as_str()
            ),
            (
                "elior-uploads",
                "prod/files",
                Some("http://127.0.0.1:9000"),
                "eu-west-1"
            )
        );
        assert_eq!(s.url(), "s3://elior-uploads/prod/files");
        assert!(
            !format!("{s:?}").contains("wJalr"),
            "the secret is redacted"
        );

        let UploadsSettings::S3(aws) = parse(&with_keys(&[("UPLOADS_URL", "s3://b12")])).unwrap()
        else {
            panic!("not s3")
        };
        assert_eq!(aws.prefix, "");
        assert_eq!(aws.endpoint_url(), "https://s3.us-east-1.amazonaws.com");
    }

    #[test]
    fn each_bad_value_names_its_key_and_the_fix() {
        let e = err(&with_keys(&[("UPLOADS_URL", "gs://bucket/x")]));
        assert!(
            e.starts_with("UPLOADS_URL (environment): \"gs://bucket/x\" is not an s3:// URL; use s3://BUCKET/PREFIX"),
            "{e}"
        );
        for bucket in ["Upper", "a_b", "ab", "-ab", "a..b", ""] {
            let e = err(&with_keys(&[("UPLOADS_URL", &format!("s3://{bucket}/p"))]));
            assert!(e.contains("is not a valid bucket name; use 3 to 63"), "{e}");
        }
        for prefix in ["a/../b", "..", "a//b", "./a", "a b", "a?x=1", "a%2F"] {
            let e = err(&with_keys(&[(
                "UPLOADS_URL",
                &format!("s3://bucket/{prefix}"),
            )]));
            assert!(e.starts_with("UPLOADS_URL (environment): prefix"), "{e}");
        }
        for endpoint in [
            "minio:9000",
            "ftp://x",
            "http://",
            "http://h:0",
            "http://h/path",
        ] {
            let e = err(&with_keys(&[
                ("UPLOADS_URL", "s3://bucket"),
                ("S3_ENDPOINT", endpoint),
            ]));
            assert!(
                e.starts_with("S3_ENDPOINT (environment)") && e.contains("http(s)://HOST[:PORT]"),
                "{e}"
            );
        }
        let e = err(&with_keys(&[
            ("UPLOADS_URL", "s3://bucket"),
            ("S3_REGION", "EU West"),
        ]));
        assert!(e.starts_with("S3_REGION (environment)"), "{e}");
        let e = err(&[
            ("UPLOADS_URL", "s3://bucket"),
            ("AWS_ACCESS_KEY_ID", "AKID"),
        ]);
        assert!(e.starts_with("AWS_SECRET_ACCESS_KEY is not set"), "{e}");
        // S3_ENDPOINT for BACKUP_OFFSITE (issue 17) is no uploads setting.
        assert_eq!(
            parse(&[
                ("S3_ENDPOINT", "http://minio:9000"),
                ("BACKUP_OFFSITE", "s3://backups/gym")
            ])
            .unwrap(),
            UploadsSettings::Local
        );
        let e = err(&[("S3_ENDPOINT", "http://minio:9000")]);
        assert!(
            e.starts_with("S3_ENDPOINT (environment) is set but UPLOADS_URL is not"),
            "{e}"
        );
        for e in [
            err(&with_keys(&[("UPLOADS_URL", "s3://UP")])),
            err(&with_keys(&[
                ("UPLOADS_URL", "s3://bucket"),
                ("S3_ENDPOINT", "x"),
            ])),
        ] {
            assert_eq!(e.lines().count(), 1, "one line: {e}");
        }
    }

    /// `serve` reads only SERVE_KEYS from the environment, and the stack knows only them.
    #[test]
    fn every_key_is_a_serve_key() {
        for key in KEYS {
            assert!(crate::config::SERVE_KEYS.contains(&key), "{key}");
        }
    }

    #[test]
    fn ipv6_endpoints() {
        assert_eq!(
            check_endpoint("http://[::1]:9000").unwrap(),
            "http://[::1]:9000"
        );
        assert_eq!(check_endpoint("https://[::1]").unwrap(), "https://[::1]");
    }
}
