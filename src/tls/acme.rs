//! ACME (RFC 8555) through instant-acme: the stored account and its key thumbprint,
//! HTTP-01 orders answered from the stack's webroot or statelessly by nginx itself (swarm
//! mode, issue 21), and the CA's renewal window (ARI, RFC 9773).
//!
//! Owns talking to the CA and the account file. It does not install certificates
//! (`install`), decide when to renew (`plan::certs`) or check reachability
//! (`preflight`).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use instant_acme::{
    Account, AccountBuilder, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse,
    CertificateIdentifier, ChallengeType, HttpClient, Identifier, NewAccount, NewOrder,
    OrderStatus, RetryPolicy,
};
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use super::files::{self, write_atomic, PUBLIC_MODE, SECRET_MODE};
use super::selfsigned::Issued;
use crate::plan::certs::AriWindow;

/// How long the CA may take to validate and to issue.
const ORDER_TIMEOUT: Duration = Duration::from_secs(90);

/// Where to find the CA and how to reach it.
#[derive(Debug, Clone)]
pub struct CaSettings {
    pub directory: String,
    pub email: Option<String>,
    /// PEM roots for the CA's HTTPS endpoint (private CAs); system roots otherwise.
    pub ca_file: Option<PathBuf>,
}

/// The account file: one account per directory URL, so switching between staging and
/// production keeps both.
#[derive(Default, Serialize, Deserialize)]
struct AccountFile {
    accounts: BTreeMap<String, AccountCredentials>,
}

/// Loads the account stored for `ca.directory` from `path`, or registers a new one and
/// stores it (mode 0600) before using it.
pub async fn account(path: &Path, ca: &CaSettings) -> Result<Account> {
    let mut stored = read_account_file(path)?;
    if let Some(credentials) = stored.accounts.remove(&ca.directory) {
        return builder(ca)?
            .from_credentials(credentials)
            .await
            .map_err(|e| ca_error(e, ca, "failed to load the ACME account"));
    }
    let contact = ca.email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = builder(ca)?
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            ca.directory.clone(),
            None,
        )
        .await
        .map_err(|e| ca_error(e, ca, "the CA refused to register an account"))?;
    // Read again: only the entry for this directory changes.
    let mut file: AccountFile = if path.exists() {
        serde_json::from_slice(&files::read(path)?).unwrap_or_default()
    } else {
        AccountFile::default()
    };
    file.accounts.insert(ca.directory.clone(), credentials);
    write_atomic(path, &serde_json::to_vec_pretty(&file)?, SECRET_MODE)?;
    Ok(account)
}

/// The RFC 7638 thumbprint (base64url) of the account key stored for `ca.directory`,
/// read offline from the account file; with no stored account, one is registered first
/// (which needs the CA).
pub async fn account_thumbprint(path: &Path, ca: &CaSettings) -> Result<String> {
    match stored_thumbprint(path, ca)? {
        Some(thumbprint) => Ok(thumbprint),
        None => Ok(account(path, ca).await?.key_thumbprint().to_string()),
    }
}

/// The thumbprint of the account stored for `ca.directory`, if there is one; offline.
pub fn stored_thumbprint(path: &Path, ca: &CaSettings) -> Result<Option<String>> {
    read_account_file(path)?
        .accounts
        .get(&ca.directory)
        .map(thumbprint)
        .transpose()
}

/// The stored accounts, none when there is no file yet; a file that does not parse is
/// refused with what to do.
fn read_account_file(path: &Path) -> Result<AccountFile> {
    if !path.exists() {
        return Ok(AccountFile::default());
    }
    serde_json::from_slice(&files::read(path)?).with_context(|| {
        format!(
            "account file {} is corrupt\nmove it away to register a new account",
            path.display()
        )
    })
}

/// The JWK thumbprint (RFC 7638, SHA-256, base64url) of an account's key: instant-acme
/// makes ECDSA P-256 keys, whose JWK members in lexical order are crv, kty, x, y.
pub fn thumbprint(credentials: &AccountCredentials) -> Result<String> {
    use base64::Engine as _;
    use sha2::Digest as _;
    let key = rcgen::KeyPair::try_from(credentials.private_key())
        .map_err(|e| anyhow!("the stored ACME account key is unreadable: {e}"))?;
    // The uncompressed point: 0x04, then x and y, 32 bytes each.
    let point = key.public_key_raw();
    if !key.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256) || point.len() != 65 || point[0] != 4 {
        bail!("the stored ACME account key is not ECDSA P-256\nmove .elior/acme/account.json away to register a new account");
    }
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let jwk = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        b64(&point[1..33]),
        b64(&point[33..])
    );
    Ok(b64(&sha2::Sha256::digest(jwk.as_bytes())))
}

/// How HTTP-01 challenges reach the CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Http01 {
    /// Token files written under this folder, which nginx serves (one host).
    Webroot(PathBuf),
    /// nginx answers any token as `TOKEN.THUMBPRINT` from its config (swarm mode: every
    /// nginx task on every node answers, with no file to copy); nothing is written.
    Stateless { thumbprint: String },
}

fn builder(ca: &CaSettings) -> Result<AccountBuilder> {
    let roots = match &ca.ca_file {
        Some(ca_file) => super::inspect::load_roots(ca_file)?,
        None => {
            let roots = super::inspect::system_roots();
            if roots.is_empty() {
                bail!(
                    "found no trusted CA certificates on this system to reach {}\n\
                     install the ca-certificates package, or set ACME_CA_FILE to a PEM bundle",
                    ca.directory
                );
            }
            roots
        }
    };
    // RFC 8555 section 6.1: ACME is HTTPS only. The CA may take its time to validate,
    // but each single request is answered promptly.
    let client = crate::http::ClientBuilder::new(crate::http::Trust::Roots(Arc::new(roots)))
        .https_only()
        .build()?;
    Ok(Account::builder_with_http(Box::new(AcmeHttp(client))))
}

/// instant-acme's transport: elior's one HTTP client. Its own (feature `hyper-rustls`)
/// always brings HTTP/2 (h2) and rustls-platform-verifier, about 1 MB of the binary and
/// so of the API image (issue 4), for a few requests per certificate; system roots through
/// rustls-native-certs are what the platform verifier trusts on Linux anyway.
struct AcmeHttp(crate::http::Client<BodyWrapper<bytes::Bytes>>);

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: axum::http::Request<BodyWrapper<bytes::Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.0.clone();
        Box::pin(async move {
            match client.request(req).await {
                Ok(response) => Ok(BytesResponse::from(response)),
                Err(e) => Err(instant_acme::Error::Other(Box::new(e))),
            }
        })
    }
}

/// Names the CA and adds a hint to an instant-acme error.
fn ca_error(err: instant_acme::Error, ca: &CaSettings, what: &str) -> anyhow::Error {
    let hint = match &err {
        instant_acme::Error::Api(problem) => match problem.r#type.as_deref() {
            Some(t) if t.ends_with(":rateLimited") => {
                "the CA's rate limit was hit; wait before retrying, or test with --staging"
            }
            Some(t) if t.ends_with(":invalidContact") || t.ends_with(":unsupportedContact") => {
                "fix ACME_EMAIL in .env.production"
            }
            Some(t) if t.ends_with(":accountDoesNotExist") => {
                "the CA no longer knows the stored account; move .elior/acme/account.json away to register again"
            }
            Some(t) if t.ends_with(":rejectedIdentifier") => {
                "the CA will not issue for this name (policy); check DOMAIN"
            }
            _ => "see the CA's problem type and detail above; retry once it is fixed",
        },
        _ => "check ACME_DIRECTORY and that the CA is reachable (ACME_CA_FILE for a private CA)",
    };
    anyhow!("{what} at {}: {err}\n{hint}", ca.directory)
}

/// Orders a certificate for `names` (the first is the main name) and answers HTTP-01
/// challenges as `http01` says. `replaces` marks the order as a renewal of that
/// certificate (ARI). Returns the full chain and a new ECDSA P-256 key.
pub async fn obtain(
    account: &Account,
    ca: &CaSettings,
    names: &[String],
    http01: &Http01,
    replaces: Option<CertificateIdentifier<'static>>,
) -> Result<Issued> {
    let identifiers: Vec<Identifier> = names.iter().cloned().map(Identifier::Dns).collect();
    let mut request = NewOrder::new(&identifiers);
    if let Some(replaces) = replaces {
        request = request.replaces(replaces);
    }
    let mut order = account
        .new_order(&request)
        .await
        .map_err(|e| ca_error(e, ca, "the CA refused the order"))?;

    let mut tokens = TokenFiles {
        dir: match http01 {
            Http01::Webroot(dir) => Some(dir.clone()),
            Http01::Stateless { .. } => None,
        },
        written: Vec::new(),
    };
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.map_err(|e| ca_error(e, ca, "failed to fetch an authorization"))?;
        if authz.status == AuthorizationStatus::Valid {
            continue; // validated recently for this account; nothing to answer
        }
        let mut challenge = authz.challenge(ChallengeType::Http01).ok_or_else(|| {
            anyhow!("the CA offers no HTTP-01 challenge for {names:?}\nelior only answers HTTP-01")
        })?;
        let key_authorization = challenge.key_authorization();
        if let Http01::Stateless { thumbprint } = http01 {
            // nginx answers with the thumbprint in its config: it must be this account's.
            if key_authorization.as_str() != format!("{}.{thumbprint}", challenge.token) {
                bail!("nginx answers ACME challenges for another account than the one in .elior/acme/account.json ({})\nrun `elior deploy` again so nginx carries this account's thumbprint", ca.directory);
            }
        }
        tokens.write(&challenge.token, key_authorization.as_str())?;
        challenge
            .set_ready()
            .await
            .map_err(|e| ca_error(e, ca, "failed to start the challenge"))?;
    }

    let retry = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .backoff(1.5)
        .timeout(ORDER_TIMEOUT);
    let not_validated = |detail: String| {
        anyhow!(
            "the CA did not validate {}: {detail}\nthe CA must reach http://NAME/.well-known/acme-challenge/ on this host's HTTP port; check DNS, the firewall and port forwarding",
            names.join(", ")
        )
    };
    let status = match order.poll_ready(&retry).await {
        Ok(status) => status,
        Err(instant_acme::Error::Api(problem)) => {
            return Err(not_validated(
                problem
                    .detail
                    .clone()
                    .unwrap_or_else(|| problem.to_string()),
            ))
        }
        Err(err) => return Err(ca_error(err, ca, "the order did not become ready")),
    };
    if status != OrderStatus::Ready {
        let mut reasons = Vec::new();
        let mut authorizations = order.authorizations();
        while let Some(Ok(authz)) = authorizations.next().await {
            for challenge in &authz.challenges {
                if let Some(problem) = &challenge.error {
                    reasons.push(format!("{}: {problem}", authz.identifier()));
                }
            }
        }
        if reasons.is_empty() {
            reasons.push(format!("the order is {status:?}"));
        }
        return Err(not_validated(reasons.join("; ")));
    }
    let key_pem = order
        .finalize()
        .await
        .map_err(|e| ca_error(e, ca, "the CA refused to finalize the order"))?;
    let cert_pem = order
        .poll_certificate(&retry)
        .await
        .map_err(|e| ca_error(e, ca, "the CA did not deliver the certificate"))?;
    Ok(Issued { cert_pem, key_pem })
}

/// The CA's suggested renewal window for `leaf` (ARI). `Ok(None)` when the CA does not
/// support ARI or the certificate has no Authority Key Identifier.
pub async fn renewal_window(
    account: &Account,
    leaf: &CertificateDer<'_>,
) -> Result<Option<AriWindow>> {
    let Ok(id) = certificate_id(leaf) else {
        return Ok(None);
    };
    match account.renewal_info(&id).await {
        Ok((info, _retry_after)) => Ok(Some(AriWindow {
            start: info.suggested_window.start.unix_timestamp(),
            end: info.suggested_window.end.unix_timestamp(),
        })),
        Err(instant_acme::Error::Unsupported(_)) => Ok(None),
        Err(err) => Err(anyhow!("failed to fetch the renewal window (ARI): {err}")),
    }
}

/// The ARI identifier of a certificate (AKI + serial), for `renewal_window` and `replaces`.
pub fn certificate_id(leaf: &CertificateDer<'_>) -> Result<CertificateIdentifier<'static>> {
    CertificateIdentifier::try_from(leaf)
        .map(CertificateIdentifier::into_owned)
        .map_err(|e| anyhow!("{e}"))
}

/// HTTP-01 token files written for one order; removed when it ends, however it ends.
/// With no folder (stateless answers) nothing is written, but tokens are still checked.
struct TokenFiles {
    dir: Option<PathBuf>,
    written: Vec<PathBuf>,
}

impl TokenFiles {
    fn write(&mut self, token: &str, key_authorization: &str) -> Result<()> {
        // Tokens are base64url (RFC 8555 section 8.3); anything else could escape the dir.
        if token.is_empty()
            || !token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!("the CA sent a malformed challenge token {token:?}");
        }
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let path = dir.join(token);
        // World-readable: nginx workers do not run as root.
        write_atomic(&path, key_authorization.as_bytes(), PUBLIC_MODE)?;
        self.written.push(path);
        Ok(())
    }
}

impl Drop for TokenFiles {
    fn drop(&mut self) {
        for path in &self.written {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The expected value was computed apart from this code: openssl extracted the public
    /// point and Python hashed the RFC 7638 JWK (`{"crv","kty","x","y"}`, no spaces).
    #[test]
    fn the_thumbprint_is_rfc_7638_of_the_account_key() {
        let credentials: AccountCredentials = serde_json::from_str(
            r#"{"id":"id","key_pkcs8":"MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgJVWC_QzOTCS5vtsJp2IG-UDc8cdDfeoKtxSZxaznM-mhRANCAAQenCPoGgPFTdPJ7VLLKt56RxPlYT1wNXnHc54PEyBg3LxKaH0-sJkX0mL8LyPEdsfL_Oz4TxHkWLJGrXVtNhfH","directory":"https://ca.test/dir"}"#,
        )
        .unwrap();
        assert_eq!(
            thumbprint(&credentials).unwrap(),
            "CdiznY-cyjYqyzhZlrR9EFX3c04SnJV4BuzDtyNklsQ"
        );
    }
}
