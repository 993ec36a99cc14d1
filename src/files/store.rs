//! Where stored uploads live (issue 16): the local folder (UPLOAD_DIR, the default) or an
//! S3-compatible bucket, behind one [`Store`] that every upload, download and delete goes
//! through. The same relative layout on both: `{kind}/[{size}/]{name}`, under the folder
//! or under the bucket's prefix.
//!
//! This module does not authorize (the API checks who may read or delete a file before
//! calling it), never makes an object public (no ACL is ever sent: objects get the
//! bucket's private default), and builds keys only from a [`Kind`], a [`Size`] and a name
//! that passed [`is_stored_name`], under a prefix the settings validated.
//!
//! Failures of the S3 store are [`StoreError::Unavailable`]: the API answers 503 with a
//! generic body, and the detail (endpoint, key) goes to the log only.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::{ObjectStoreExt, PutPayload};

use super::settings::{S3Settings, UploadsSettings};
use super::{is_stored_name, path_of, Kind, Prepared, Size};

/// How long `/health` waits for the store.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the start check may take in all (a refused connection fails at once, an
/// address that never answers after the connect timeout).
pub const VERIFY_TIMEOUT: Duration = Duration::from_secs(5);
/// The object the start check writes and `/health` reads, under the prefix.
pub const CHECK_OBJECT: &str = ".elior/store-check";
/// Request retries for uploads, downloads and deletes (idempotent, so a dropped
/// connection is retried). Health and the start check never retry.
const REQUEST_RETRIES: usize = 2;

const SIZES: [Size; 3] = [Size::Original, Size::Thumbnail, Size::Medium];

/// The store of uploaded files. Cheap to clone.
#[derive(Clone)]
pub struct Store(Arc<Backend>);

enum Backend {
    Local {
        root: PathBuf,
    },
    S3(S3Store),
    /// S3 settings a client could not be built from (no trusted CA certificates for an
    /// https endpoint, say): every operation fails with `reason`, and the start check
    /// prints it.
    Unusable {
        reason: String,
    },
}

struct S3Store {
    /// Uploads, downloads and deletes, with retries.
    client: AmazonS3,
    /// Health and the start check: no retries, so the timeouts mean what they say.
    probe: AmazonS3,
    settings: S3Settings,
    prefix: Key,
    /// Whether the last health check failed, so a store that stays down is logged once,
    /// not at every probe.
    failing: std::sync::atomic::AtomicBool,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The S3 store failed or could not be reached. The text is for the log.
    #[error("the upload store is unavailable: {0}")]
    Unavailable(String),
    /// The local folder failed (a full disk, permissions): as before issue 16, a 500.
    #[error(transparent)]
    Local(#[from] anyhow::Error),
}

/// A stored file's bytes, read whole (the local folder) or streamed (S3).
pub enum Download {
    Bytes(Vec<u8>),
    Stream {
        len: u64,
        body: BoxStream<'static, Result<Bytes, std::io::Error>>,
    },
}

impl Store {
    /// The store the settings name. No I/O: S3 is reached only by [`Store::verify`] and
    /// the operations.
    pub fn new(settings: &UploadsSettings, upload_dir: &Path) -> Store {
        let backend = match settings {
            UploadsSettings::Local => Backend::Local {
                root: upload_dir.to_path_buf(),
            },
            UploadsSettings::S3(s3) => match S3Store::new(s3) {
                Ok(store) => Backend::S3(store),
                Err(reason) => Backend::Unusable { reason },
            },
        };
        Store(Arc::new(backend))
    }

    /// A store in a local folder.
    pub fn local(root: &Path) -> Store {
        Store::new(&UploadsSettings::Local, root)
    }

    /// `local` or `s3`, as `/health` reports it.
    pub fn kind(&self) -> &'static str {
        match &*self.0 {
            Backend::Local { .. } => "local",
            Backend::S3(_) | Backend::Unusable { .. } => "s3",
        }
    }

    /// The folder, when files are on this host's disk (nginx can then serve them itself).
    pub fn local_root(&self) -> Option<&Path> {
        match &*self.0 {
            Backend::Local { root } => Some(root),
            _ => None,
        }
    }

    /// Where uploads go, for the start log line (never the credentials).
    pub fn describe(&self) -> String {
        match &*self.0 {
            Backend::Local { root } => root.display().to_string(),
            Backend::S3(s) => format!("{} at {}", s.settings.url(), s.settings.endpoint_url()),
            Backend::Unusable { .. } => "s3 (unusable)".to_string(),
        }
    }

    /// Writes a prepared upload: the original and its derivatives. On failure nothing of
    /// it is left behind (what was written is removed again).
    pub async fn put(&self, kind: Kind, prepared: &Prepared) -> Result<(), StoreError> {
        match &*self.0 {
            Backend::Local { root } => {
                let root = root.clone();
                let prepared = prepared.clone();
                tokio::task::spawn_blocking(move || super::write_local(&root, kind, &prepared))
                    .await
                    .map_err(|e| StoreError::Local(e.into()))??;
                Ok(())
            }
            Backend::S3(s3) => s3.put(kind, prepared).await,
            Backend::Unusable { reason } => Err(StoreError::Unavailable(reason.clone())),
        }
    }

    /// A stored file, or `None` when it is not there.
    pub async fn get(
        &self,
        kind: Kind,
        size: Size,
        name: &str,
    ) -> Result<Option<Download>, StoreError> {
        if !is_stored_name(name) {
            return Ok(None);
        }
        match &*self.0 {
            Backend::Local { root } => {
                let path = path_of(root, kind, size, name);
                match tokio::fs::read(&path).await {
                    Ok(bytes) => Ok(Some(Download::Bytes(bytes))),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(StoreError::Local(
                        anyhow::Error::new(e)
                            .context(format!("failed to read upload {}", path.display())),
                    )),
                }
            }
            Backend::S3(s3) => s3.get(kind, size, name).await,
            Backend::Unusable { reason } => Err(StoreError::Unavailable(reason.clone())),
        }
    }

    /// Removes stored files and their derivatives; a file already gone is fine, and a
    /// failure is logged (the database no longer points at the file either way).
    pub async fn remove(&self, files: &[(Kind, String)]) {
        match &*self.0 {
            Backend::Local { root } => super::remove_stored(root, files).await,
            Backend::S3(s3) => s3.remove(files).await,
            Backend::Unusable { .. } => {}
        }
    }

    /// Whether the store can be reached now, for `/health`. The local folder is this
    /// host's disk: it is reachable unless it is something other than a folder.
    pub async fn check(&self) -> Result<(), &'static str> {
        match &*self.0 {
            Backend::Local { root } => match tokio::fs::metadata(root).await {
                Ok(m) if !m.is_dir() => Err("not a directory"),
                _ => Ok(()),
            },
            Backend::S3(s3) => match tokio::time::timeout(PROBE_TIMEOUT, s3.check()).await {
                Ok(verdict) => verdict,
                Err(_) => Err("timed out"),
            },
            Backend::Unusable { .. } => Err("misconfigured"),
        }
    }

    /// The start check: writes and reads back a small object under the prefix, so a
    /// missing bucket, refused credentials or an unreachable endpoint stop `elior serve`
    /// before it serves, with one line that names the key to fix.
    pub async fn verify(&self) -> anyhow::Result<()> {
        match &*self.0 {
            Backend::Local { .. } => Ok(()),
            Backend::Unusable { reason } => Err(anyhow::anyhow!("{reason}")),
            Backend::S3(s3) => match tokio::time::timeout(VERIFY_TIMEOUT, s3.verify()).await {
                Ok(result) => result,
                Err(_) => Err(anyhow::anyhow!(
                    "{}: {} did not answer within {}s; check the address and that the store is running",
                    s3.endpoint_key(),
                    s3.settings.endpoint_url(),
                    VERIFY_TIMEOUT.as_secs()
                )),
            },
        }
    }
}

/// The one S3 client builder (issue 16; backups' BACKUP_OFFSITE uses it too, issue 17):
/// this crate's HTTP/1.1 + rustls transport, the system's CA roots for https, path-style
/// requests to a custom endpoint, and `retries` retries of idempotent requests. `url_key`
/// is the setting named in messages.
pub fn client(settings: &S3Settings, url_key: &str, retries: usize) -> Result<AmazonS3, String> {
    client_on(settings, connector(settings, url_key)?, url_key, retries)
}

/// The transport of [`client`]: reading the system's CA roots is the costly part, so a
/// caller that needs two clients (the store's and its probe's) builds it once.
fn connector(settings: &S3Settings, url_key: &str) -> Result<super::http::Connector, String> {
    let endpoint = settings.endpoint_url();
    let roots = if endpoint.starts_with("https://") {
        let roots = crate::tls::inspect::system_roots();
        if roots.is_empty() {
            return Err(format!(
                "S3_ENDPOINT: found no trusted CA certificates on this host to reach {endpoint}; install the ca-certificates package, or set SSL_CERT_FILE to a PEM bundle"
            ));
        }
        roots
    } else {
        rustls::RootCertStore::empty()
    };
    super::http::Connector::new(roots, super::http::RESPONSE_TIMEOUT)
        .map_err(|e| format!("{url_key}: failed to set up TLS for {endpoint}: {e}"))
}

/// [`client`] over a transport already built.
fn client_on(
    settings: &S3Settings,
    connector: super::http::Connector,
    url_key: &str,
    retries: usize,
) -> Result<AmazonS3, String> {
    let retry = object_store::RetryConfig {
        max_retries: retries,
        retry_timeout: Duration::from_secs(30),
        backoff: object_store::BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
        },
    };
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(&settings.bucket)
        .with_region(&settings.region)
        .with_access_key_id(&settings.access_key_id)
        .with_secret_access_key(settings.secret_access_key.expose())
        .with_retry(retry)
        .with_http_connector(connector);
    if let Some(endpoint) = &settings.endpoint {
        // Path-style requests (`endpoint/bucket/key`): what MinIO, Garage, Ceph and moto
        // expect, with no DNS name per bucket.
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"))
            .with_virtual_hosted_style_request(false);
    }
    builder
        .build()
        .map_err(|e| format!("{url_key}: cannot use {}: {e}", settings.url()))
}

impl S3Store {
    fn new(settings: &S3Settings) -> Result<S3Store, String> {
        let prefix = Key::parse(&settings.prefix)
            .map_err(|e| format!("UPLOADS_URL: prefix {:?}: {e}", settings.prefix))?;
        let connector = connector(settings, "UPLOADS_URL")?;
        Ok(S3Store {
            client: client_on(settings, connector.clone(), "UPLOADS_URL", REQUEST_RETRIES)?,
            probe: client_on(settings, connector, "UPLOADS_URL", 0)?,
            settings: settings.clone(),
            prefix,
            failing: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// `{prefix}/{kind}/[{size}/]{name}`. Only names we could have made get a key; the
    /// key is parsed back and must still sit under the prefix.
    fn key(&self, kind: Kind, size: Size, name: &str) -> Result<Key, StoreError> {
        if !is_stored_name(name) {
            return Err(StoreError::Unavailable(format!(
                "refused a key for {name:?}"
            )));
        }
        self.under_prefix(&super::relative_path(kind, size, name))
    }

    fn under_prefix(&self, relative: &str) -> Result<Key, StoreError> {
        let full = if self.settings.prefix.is_empty() {
            relative.to_string()
        } else {
            format!("{}/{relative}", self.settings.prefix)
        };
        let key = Key::parse(&full)
            .map_err(|e| StoreError::Unavailable(format!("refused key {full:?}: {e}")))?;
        if key.prefix_match(&self.prefix).is_none() {
            return Err(StoreError::Unavailable(format!(
                "refused key {full:?} outside the prefix"
            )));
        }
        Ok(key)
    }

    fn unavailable(&self, what: &str, e: object_store::Error) -> StoreError {
        StoreError::Unavailable(format!(
            "{what} in {} at {}: {}",
            self.settings.url(),
            self.settings.endpoint_url(),
            one_line(&e)
        ))
    }

    async fn put(&self, kind: Kind, prepared: &Prepared) -> Result<(), StoreError> {
        let mut keys = Vec::with_capacity(prepared.files.len());
        for (size, _) in &prepared.files {
            keys.push(self.key(kind, *size, &prepared.name)?);
        }
        let writes = keys
            .iter()
            .zip(&prepared.files)
            .map(|(key, (_, bytes))| self.client.put(key, PutPayload::from(bytes.clone())));
        let results = futures_util::future::join_all(writes).await;
        if results.iter().all(Result::is_ok) {
            return Ok(());
        }
        // Leave nothing half-stored: remove whatever did get written.
        let written: Vec<&Key> = keys
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|(k, _)| k)
            .collect();
        for key in written {
            if let Err(e) = self.client.delete(key).await {
                tracing::warn!(key = %key, error = %one_line(&e), "failed to remove a partly stored upload");
            }
        }
        let error = results
            .into_iter()
            .find_map(Result::err)
            .expect("one write failed");
        Err(self.unavailable("failed to store an upload", error))
    }

    async fn get(
        &self,
        kind: Kind,
        size: Size,
        name: &str,
    ) -> Result<Option<Download>, StoreError> {
        let key = self.key(kind, size, name)?;
        match self.client.get(&key).await {
            Ok(result) => {
                let len = result.meta.size;
                let body = result
                    .into_stream()
                    .map(|chunk| chunk.map_err(std::io::Error::other))
                    .boxed();
                Ok(Some(Download::Stream { len, body }))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.unavailable("failed to read an upload", e)),
        }
    }

    async fn remove(&self, files: &[(Kind, String)]) {
        let mut keys = Vec::new();
        for (kind, name) in files {
            for size in SIZES {
                if let Ok(key) = self.key(*kind, size, name) {
                    keys.push(key);
                }
            }
        }
        let deletes = keys.iter().map(|key| async move {
            match self.client.delete(key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    tracing::warn!(key = %key, error = %one_line(&e), "failed to remove upload");
                }
            }
        });
        futures_util::future::join_all(deletes).await;
    }

    fn check_key(&self) -> Result<Key, StoreError> {
        self.under_prefix(CHECK_OBJECT)
    }

    /// HEAD of the check object; when someone removed it, writing it again proves the
    /// same (reachable, bucket there, credentials good).
    async fn check(&self) -> Result<(), &'static str> {
        let key = self.check_key().map_err(|_| "misconfigured")?;
        let result = match self.probe.head(&key).await {
            Err(object_store::Error::NotFound { .. }) => self
                .probe
                .put(&key, PutPayload::from_static(b"elior"))
                .await
                .map(drop),
            other => other.map(drop),
        };
        let was_failing = self
            .failing
            .swap(result.is_err(), std::sync::atomic::Ordering::Relaxed);
        match result {
            Ok(()) => {
                if was_failing {
                    tracing::info!(store = %self.settings.url(), "upload store reachable again");
                }
                Ok(())
            }
            Err(e) => {
                if !was_failing {
                    tracing::warn!(store = %self.settings.url(), endpoint = %self.settings.endpoint_url(), error = %one_line(&e), "upload store health check failed");
                }
                Err(short_reason(&e))
            }
        }
    }

    async fn verify(&self) -> anyhow::Result<()> {
        let key = self.check_key().map_err(|e| anyhow::anyhow!("{e}"))?;
        let write = self
            .probe
            .put(&key, PutPayload::from_static(b"elior"))
            .await;
        let read = match write {
            Ok(_) => self.probe.get(&key).await.map(drop),
            Err(e) => Err(e),
        };
        read.map_err(|e| anyhow::anyhow!("{}", self.explain(&e)))
    }

    /// The key a user fixes when the endpoint cannot be reached.
    fn endpoint_key(&self) -> &'static str {
        endpoint_key(&self.settings)
    }

    /// One line for a failed start check: what is wrong and which key fixes it.
    fn explain(&self, e: &object_store::Error) -> String {
        explain(&self.settings, "UPLOADS_URL", "the start check", e)
    }
}

/// One line for a failed request: what is wrong and which key fixes it. `url_key` names
/// the setting of the bucket (UPLOADS_URL, BACKUP_OFFSITE), `what` the request.
pub fn explain(s: &S3Settings, url_key: &str, what: &str, e: &object_store::Error) -> String {
    let endpoint = s.endpoint_url();
    if let Some(cause) = find_cause::<super::http::Unreachable>(e) {
        return format!(
                "{}: cannot reach {endpoint} ({cause}); check the address and that the store is running",
                endpoint_key(s)
            );
    }
    let code = s3_code(e);
    let code_text = code.as_deref().unwrap_or("no error code");
    match (code.as_deref(), e) {
            (Some("NoSuchBucket"), _) | (None, object_store::Error::NotFound { .. }) => format!(
                "{url_key}: bucket {:?} does not exist at {endpoint}; create it first (e.g. `aws s3 mb s3://{}` or `mc mb`), or fix the bucket name",
                s.bucket, s.bucket
            ),
            (
                Some(
                    "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied"
                    | "InvalidToken" | "ExpiredToken" | "AllAccessDisabled",
                ),
                _,
            )
            | (
                None,
                object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. },
            ) => format!(
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY: {endpoint} refused the credentials ({code_text}); check the key pair and that it may read and write {}",
                s.url()
            ),
            (Some("PermanentRedirect" | "AuthorizationHeaderMalformed" | "IllegalLocationConstraintException"), _) => format!(
                "S3_REGION: bucket {:?} is not in region {:?} ({code_text}); set S3_REGION to the bucket's region",
                s.bucket, s.region
            ),
            _ => format!(
                "{url_key}: {what} of {} at {endpoint} failed ({}); check the bucket and S3_ENDPOINT",
                s.url(),
                code.unwrap_or_else(|| one_line(e))
            ),
        }
}

/// The key a user fixes when the endpoint cannot be reached.
pub fn endpoint_key(s: &S3Settings) -> &'static str {
    if s.endpoint.is_some() {
        "S3_ENDPOINT"
    } else {
        "S3_REGION"
    }
}

/// A short, fixed reason for `/health` (the detail is logged).
fn short_reason(e: &object_store::Error) -> &'static str {
    if let Some(cause) = find_cause::<super::http::Unreachable>(e) {
        return match cause {
            super::http::Unreachable::TimedOut(_) => "timed out",
            super::http::Unreachable::Connect(_) => "unreachable",
        };
    }
    match s3_code(e).as_deref() {
        Some("NoSuchBucket") => "bucket not found",
        Some("InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied") => "access denied",
        _ => match e {
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => "access denied",
            _ => "request failed",
        },
    }
}

/// The first error of type `T` in `e`'s chain.
fn find_cause<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(t) = c.downcast_ref::<T>() {
            return Some(t);
        }
        cause = c.source();
    }
    None
}

/// S3's `<Code>` from an error response body somewhere in the chain.
fn s3_code(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause = Some(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if let Some(start) = text.find("<Code>") {
            let rest = &text[start + "<Code>".len()..];
            if let Some(end) = rest.find("</Code>") {
                return Some(rest[..end].to_string());
            }
        }
        cause = c.source();
    }
    None
}

/// An error chain on one line, for logs (S3 error bodies are XML over several lines).
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let next = c.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = c.source();
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(prefix: &str) -> Store {
        Store::new(
            &UploadsSettings::S3(S3Settings {
                bucket: "bucket".into(),
                prefix: prefix.into(),
                endpoint: Some("http://127.0.0.1:9".into()),
                region: "us-east-1".into(),
                access_key_id: "a".into(),
                secret_access_key: crate::config::Secret::new("b"),
            }),
            Path::new("unused"),
        )
    }

    #[test]
    fn keys_mirror_the_local_layout_under_the_prefix() {
        let store = s3("elior/uploads");
        let s = store.0.s3();
        let name = super::super::random_name(super::super::Detected::Png);
        assert_eq!(
            s.key(Kind::MealPhotos, Size::Thumbnail, &name)
                .unwrap()
                .as_ref(),
            format!("elior/uploads/meal_photos/thumbnail/{name}")
        );
        assert_eq!(
            s.check_key().unwrap().as_ref(),
            "elior/uploads/.elior/store-check"
        );
        let bare = s3("");
        assert_eq!(
            bare.0
                .s3()
                .key(Kind::Documents, Size::Original, &name)
                .unwrap()
                .as_ref(),
            format!("documents/{name}")
        );
        assert_eq!(store.kind(), "s3");
        assert!(store.local_root().is_none());
        assert_eq!(Store::local(Path::new("up")).kind(), "local");
    }

    /// A name from a request never becomes a key unless it is one we made (issue 16).
    #[test]
    fn hostile_names_get_no_key() {
        let store = s3("p");
        let s = store.0.s3();
        for hostile in [
            "../../etc/passwd",
            "../x.png",
            "..%2Fx.png",
            "0123456789abcdef0123456789abcdef.png/../../x",
            "/abs.png",
        ] {
            assert!(
                s.key(Kind::MealPhotos, Size::Original, hostile).is_err(),
                "{hostile}"
            );
        }
        assert!(s.under_prefix("../outside").is_err());
    }

    #[test]
    fn errors_read_on_one_line_with_the_s3_code() {
        let body = "Server returned non-2xx status code: 404 Not Found: <?xml version=\"1.0\"?>\n<Error><Code>NoSuchBucket</Code>\n<Message>x</Message></Error>";
        let e = object_store::Error::Generic {
            store: "S3",
            source: body.into(),
        };
        assert_eq!(s3_code(&e).as_deref(), Some("NoSuchBucket"));
        assert!(!one_line(&e).contains('\n'));
        assert_eq!(short_reason(&e), "bucket not found");
    }

    impl Backend {
        fn s3(&self) -> &S3Store {
            match self {
                Backend::S3(s) => s,
                _ => panic!("not s3"),
            }
        }
    }
}
