//! The one HTTP client (issue 20): hyper-util's pooled client over hyper-rustls (ring),
//! HTTP/1.1 only. S3 (`files::http`), ACME (`tls::acme`), the probes, deploy's HTTPS proof
//! and the ACME preflight all send their requests through it; only the TLS probes that
//! shape their own ClientHello (`probe::ssl`, `probe::hello`) and the handshake-only look
//! at a served chain (`tls::served`) open raw TLS connections.
//!
//! Each use builds a client with the settings it needs: whom to trust ([`Trust`]), where
//! to connect ([`ClientBuilder::connect_to`]: reach 127.0.0.1 while SNI and Host stay
//! DOMAIN), and the timeouts. It owns the network timeouts, a cap on answer bodies, and
//! the facts about each connection ([`ConnectionFacts`]: address, TCP and TLS times, TLS
//! version) that `probe health` reports. It never adds credentials of its own.
//!
//! Not reqwest: its client always links h2 and a second TLS set-up, about 1 MB of the
//! API image (issue 4), for a few requests per deploy.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Incoming};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;
use tokio::net::TcpStream;
use tower::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long a TCP connection may take (per address tried).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a server may take to answer once asked (connection and TLS included).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer body [`Client::send`] reads; more is an error, not a truncation.
pub const BODY_LIMIT: usize = 1 << 20;
/// Idle connections are dropped before servers drop them (AWS after about 20 s).
const POOL_IDLE: Duration = Duration::from_secs(15);
const USER_AGENT: &str = concat!("elior/", env!("CARGO_PKG_VERSION"));

/// Whom to believe about a server's certificate.
#[derive(Clone)]
pub enum Trust {
    /// These roots: the system's, a CA file (pebble's, a private CA), or both.
    Roots(Arc<RootCertStore>),
    /// Exactly this leaf certificate: deploy's proof that nginx serves the file elior
    /// installed (the bootstrap certificate is self-signed, so no CA vouches for it).
    Pinned(CertificateDer<'static>),
    /// Any certificate (`--insecure`, doctor's look at a bad certificate): for reading a
    /// page, never for sending secrets. Handshake signatures are still checked.
    Insecure,
}

impl Trust {
    /// The system's roots plus every certificate in `ca` (a PEM file).
    pub fn system_plus(ca: Option<&Path>) -> anyhow::Result<Trust> {
        Ok(Trust::Roots(Arc::new(system_roots_plus(ca)?)))
    }

    /// Pins the first certificate (the leaf) of the PEM file at `cert_path`.
    pub fn pinned_pem_file(cert_path: &Path) -> anyhow::Result<Trust> {
        use anyhow::Context as _;
        use rustls::pki_types::pem::PemObject;
        let leaf = CertificateDer::pem_file_iter(cert_path)
            .with_context(|| format!("failed to read certificate {}", cert_path.display()))?
            .next()
            .ok_or_else(|| anyhow::anyhow!("{} holds no certificate", cert_path.display()))?
            .with_context(|| format!("{} is not a PEM certificate", cert_path.display()))?;
        Ok(Trust::Pinned(leaf))
    }

    fn tls_config(&self) -> anyhow::Result<rustls::ClientConfig> {
        use crate::tls::served::{observing_config, ObserveOnly};
        let versions = rustls::DEFAULT_VERSIONS;
        Ok(match self {
            Trust::Roots(roots) => rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_protocol_versions(versions)?
            .with_root_certificates(roots.clone())
            .with_no_client_auth(),
            Trust::Pinned(leaf) => observing_config(versions, ObserveOnly::pinned(leaf.clone()))?,
            Trust::Insecure => observing_config(versions, ObserveOnly::any())?,
        })
    }
}

/// The system's roots plus every certificate in `ca` (a PEM file).
pub fn system_roots_plus(ca: Option<&Path>) -> anyhow::Result<RootCertStore> {
    let mut roots = crate::tls::inspect::system_roots();
    if let Some(path) = ca {
        for der in crate::tls::inspect::load_roots(path)?.roots {
            roots.roots.push(der);
        }
    }
    Ok(roots)
}

/// The settings of one [`Client`].
#[derive(Clone)]
pub struct ClientBuilder {
    trust: Trust,
    connect_to: Option<IpAddr>,
    connect_timeout: Duration,
    response_timeout: Duration,
    body_limit: usize,
    https_only: bool,
    reuse_connections: bool,
}

impl ClientBuilder {
    /// https and plain http URLs, DNS, pooled connections, the default timeouts.
    pub fn new(trust: Trust) -> ClientBuilder {
        ClientBuilder {
            trust,
            connect_to: None,
            connect_timeout: CONNECT_TIMEOUT,
            response_timeout: RESPONSE_TIMEOUT,
            body_limit: BODY_LIMIT,
            https_only: false,
            reuse_connections: true,
        }
    }

    /// Connects every name to `ip` instead of resolving it; SNI and Host stay the URL's
    /// name (a stack's nginx on 127.0.0.1 asked for DOMAIN). URLs naming an IP connect
    /// to that IP.
    pub fn connect_to(mut self, ip: IpAddr) -> Self {
        self.connect_to = Some(ip);
        self
    }

    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Bounds the wait for an answer's head (connection and TLS included) and, for
    /// [`Client::send`], the whole exchange.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Refuses plain http URLs (ACME: RFC 8555 requires HTTPS).
    pub fn https_only(mut self) -> Self {
        self.https_only = true;
        self
    }

    /// A fresh connection for every request, so each one measures what a new visitor
    /// sees (probes) and no idle connection outlives the command.
    pub fn fresh_connections(mut self) -> Self {
        self.reuse_connections = false;
        self
    }

    pub fn build<B>(&self) -> anyhow::Result<Client<B>>
    where
        B: Body + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let tls = self.trust.tls_config()?;
        let resolver = match self.connect_to {
            Some(ip) => Resolver::Fixed(ip),
            None => Resolver::System(GaiResolver::new()),
        };
        let mut tcp = HttpConnector::new_with_resolver(resolver);
        tcp.enforce_http(false);
        tcp.set_connect_timeout(Some(self.connect_timeout));
        tcp.set_nodelay(true);
        let schemes = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls);
        let https = if self.https_only {
            schemes.https_only()
        } else {
            schemes.https_or_http()
        }
        .enable_http1()
        .wrap_connector(TcpConnector { tcp });
        let mut builder = hyper_util::client::legacy::Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(POOL_IDLE)
            .pool_timer(TokioTimer::new());
        if !self.reuse_connections {
            builder.pool_max_idle_per_host(0);
        }
        Ok(Client {
            inner: builder.build(Connector { https }),
            response_timeout: self.response_timeout,
            body_limit: self.body_limit,
        })
    }
}

/// An HTTP/1.1 client; clones share one connection pool.
pub struct Client<B = Full<Bytes>> {
    inner: hyper_util::client::legacy::Client<Connector, B>,
    response_timeout: Duration,
    body_limit: usize,
}

impl<B> Clone for Client<B> {
    fn clone(&self) -> Self {
        Client {
            inner: self.inner.clone(),
            response_timeout: self.response_timeout,
            body_limit: self.body_limit,
        }
    }
}

impl<B> std::fmt::Debug for Client<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("elior::http::Client")
            .field("response_timeout", &self.response_timeout)
            .finish_non_exhaustive()
    }
}

impl<B> Client<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// Sends `request` and returns the answer's head once it arrives; the body streams
    /// for as long as it flows (S3 downloads). A `User-Agent` is added when missing.
    pub async fn request(&self, mut request: Request<B>) -> Result<Response<Incoming>, Error> {
        request
            .headers_mut()
            .entry(hyper::header::USER_AGENT)
            .or_insert(HeaderValue::from_static(USER_AGENT));
        match tokio::time::timeout(self.response_timeout, self.inner.request(request)).await {
            Err(_) => Err(Unreachable::TimedOut(self.response_timeout).into()),
            Ok(Err(e)) if e.is_connect() => Err(match find::<TlsFailed>(&e) {
                Some(TlsFailed(why)) => Error::Tls(why.clone()),
                None => Unreachable::Connect(root_cause(&e)).into(),
            }),
            Ok(Err(e)) => Err(Error::Request(root_cause(&e))),
            Ok(Ok(response)) => Ok(response),
        }
    }
}

impl Client<Full<Bytes>> {
    /// `GET url`.
    pub async fn get(&self, url: &str) -> Result<Reply, Error> {
        self.send(Method::GET, url, &[], Bytes::new()).await
    }

    /// `POST url` with `value` as a JSON body.
    pub async fn post_json(
        &self,
        url: &str,
        value: &impl serde::Serialize,
    ) -> Result<Reply, Error> {
        let body = serde_json::to_vec(value).map_err(|e| Error::Invalid(e.to_string()))?;
        self.send(
            Method::POST,
            url,
            &[("content-type", "application/json")],
            body.into(),
        )
        .await
    }

    /// `method url` with extra headers and a body (empty: none); the whole exchange is
    /// bounded by the response timeout and the body by the body limit.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Reply, Error> {
        let uri: Uri = url
            .parse()
            .map_err(|e| Error::Invalid(format!("{url:?} is not a URL: {e}")))?;
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            let name = HeaderName::try_from(*name)
                .map_err(|e| Error::Invalid(format!("header name {name:?}: {e}")))?;
            let value = HeaderValue::try_from(*value)
                .map_err(|e| Error::Invalid(format!("header {name}: {value:?}: {e}")))?;
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let exchange = async {
            let response = self.request(request).await?;
            let head_at = Instant::now();
            let connection = response.extensions().get::<ConnectionFacts>().cloned();
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, self.body_limit)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        Error::TooLarge(self.body_limit)
                    } else {
                        Error::Body(root_cause(&*e))
                    }
                })?
                .to_bytes();
            Ok(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
                connection,
                head_at,
            })
        };
        tokio::time::timeout(self.response_timeout, exchange)
            .await
            .map_err(|_| Error::from(Unreachable::TimedOut(self.response_timeout)))?
    }
}

/// A whole answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The connection it came on (absent only for a server that answered on a pooled
    /// connection made by another kind of client, which cannot happen here).
    pub connection: Option<ConnectionFacts>,
    /// When the head arrived.
    pub head_at: Instant,
}

impl Reply {
    /// The first value of header `name`, when it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The headers with lower-case names, in the order received.
    pub fn header_pairs(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect()
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::Body(format!("the answer is not the JSON expected: {e}")))
    }
}

/// What became of a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Unreachable(#[from] Unreachable),
    /// The server's certificate or TLS set-up was refused (no request was sent).
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the request failed: {0}")]
    Request(String),
    #[error("the answer's body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the answer broke off: {0}")]
    Body(String),
}

/// Why a request never got an answer (S3 names the endpoint with it).
#[derive(Debug, thiserror::Error)]
pub enum Unreachable {
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    #[error("cannot connect: {0}")]
    Connect(String),
}

/// The innermost message of an error chain ("Connection refused (os error 111)", "invalid
/// peer certificate: UnknownIssuer"): hyper's outer messages ("client error (Connect)")
/// say nothing a user can act on.
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// The first error of type `E` in `e`'s chain.
fn find<'a, E: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    std::iter::successors(Some(e), |e| e.source()).find_map(|e| e.downcast_ref::<E>())
}

/// A TCP connection that failed (DNS included), told apart from a TLS failure.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct TcpFailed(BoxError);

/// A TLS handshake that failed, with its innermost message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TlsFailed(String);

/// The connection an answer came on, in the answer's extensions.
#[derive(Debug, Clone)]
pub struct ConnectionFacts {
    pub remote: Option<SocketAddr>,
    /// When the client started to connect.
    pub started: Instant,
    /// TCP connect (with DNS, unless the client connects to a fixed address).
    pub tcp: Duration,
    /// When the connection was ready for the request (after TLS, if any).
    pub ready_at: Instant,
    pub tls: Option<TlsFacts>,
}

#[derive(Debug, Clone)]
pub struct TlsFacts {
    pub handshake: Duration,
    pub version: Option<String>,
    pub cipher: Option<String>,
}

/// Names resolve through the system, or all to one fixed address.
#[derive(Clone)]
enum Resolver {
    System(GaiResolver),
    Fixed(IpAddr),
}

impl Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Resolver::System(gai) => gai.poll_ready(cx),
            Resolver::Fixed(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, name: Name) -> Self::Future {
        match self {
            Resolver::System(gai) => {
                let lookup = gai.call(name);
                Box::pin(async move { Ok(lookup.await?.collect::<Vec<_>>().into_iter()) })
            }
            // Port 0: the connector puts the URL's port in.
            Resolver::Fixed(ip) => {
                let addr = SocketAddr::new(*ip, 0);
                Box::pin(async move { Ok(vec![addr].into_iter()) })
            }
        }
    }
}

/// A stream with a fact about it, handed to every answer on it (hyper's `extra`).
struct Stamped<S, F> {
    io: S,
    fact: F,
}

#[derive(Clone, Copy)]
struct TcpConnectedAt(Instant);

type TcpStamped = Stamped<TokioIo<TcpStream>, TcpConnectedAt>;
type Stream = Stamped<MaybeHttpsStream<TcpStamped>, ConnectionFacts>;

/// hyper-util's TCP connector, stamping when the connection was made.
#[derive(Clone)]
struct TcpConnector {
    tcp: HttpConnector<Resolver>,
}

impl Service<Uri> for TcpConnector {
    type Response = TcpStamped;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<TcpStamped, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.tcp.call(uri);
        Box::pin(async move {
            let io = connecting
                .await
                .map_err(|e| Box::new(TcpFailed(e.into())) as BoxError)?;
            Ok(Stamped {
                io,
                fact: TcpConnectedAt(Instant::now()),
            })
        })
    }
}

/// TCP, then TLS for https, then the facts of the connection.
#[derive(Clone)]
struct Connector {
    https: HttpsConnector<TcpConnector>,
}

impl Service<Uri> for Connector {
    type Response = Stream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.https.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let started = Instant::now();
        let connecting = self.https.call(uri);
        Box::pin(async move {
            let io = connecting
                .await
                .map_err(|e| match e.downcast::<TcpFailed>() {
                    Ok(tcp) => tcp.0,
                    // Everything else hyper-rustls fails on is TLS: the server name, the
                    // handshake, the certificate.
                    Err(e) => Box::new(TlsFailed(root_cause(&*e))) as BoxError,
                })?;
            let ready_at = Instant::now();
            let (tcp, tls) = match &io {
                MaybeHttpsStream::Http(tcp) => (tcp, None),
                MaybeHttpsStream::Https(tls) => {
                    let (tcp, session) = tls.inner().get_ref();
                    (tcp.inner(), Some(session))
                }
            };
            let tcp_at = tcp.fact.0;
            let fact = ConnectionFacts {
                remote: tcp.io.inner().peer_addr().ok(),
                started,
                tcp: tcp_at - started,
                ready_at,
                tls: tls.map(|session| TlsFacts {
                    handshake: ready_at - tcp_at,
                    version: session.protocol_version().map(|v| format!("{v:?}")),
                    cipher: session
                        .negotiated_cipher_suite()
                        .map(|s| format!("{:?}", s.suite())),
                }),
            };
            Ok(Stamped { io, fact })
        })
    }
}

impl<S: Connection, F: Clone + Send + Sync + 'static> Connection for Stamped<S, F> {
    fn connected(&self) -> Connected {
        self.io.connected().extra(self.fact.clone())
    }
}

impl<S: hyper::rt::Read + Unpin, F: Unpin> hyper::rt::Read for Stamped<S, F> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<S: hyper::rt::Write + Unpin, F: Unpin> hyper::rt::Write for Stamped<S, F> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;

    /// A real HTTP server on 127.0.0.1 that echoes the Host header, serves a 2 KiB body at
    /// /big, and, with `tls`, a certificate for `elior.test` (returned) and records SNI.
    struct TestServer {
        addr: SocketAddr,
        cert: Option<CertificateDer<'static>>,
        sni: Arc<std::sync::Mutex<Vec<String>>>,
    }

    fn router() -> axum::Router {
        axum::Router::new()
            .route(
                "/host",
                get(|headers: HeaderMap| async move {
                    headers
                        .get("host")
                        .map(|h| h.to_str().unwrap().to_string())
                        .unwrap_or_default()
                }),
            )
            .route("/big", get(|| async { "x".repeat(2048) }))
    }

    async fn serve(tls: bool) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sni = Arc::new(std::sync::Mutex::new(Vec::new()));
        if !tls {
            tokio::spawn(async move { axum::serve(listener, router()).await });
            return TestServer {
                addr,
                cert: None,
                sni,
            };
        }
        let issued = rcgen::generate_simple_self_signed(vec!["elior.test".into()]).unwrap();
        let cert = issued.cert.der().clone();
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(issued.signing_key.serialize_der()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let seen = sni.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let (acceptor, seen) = (acceptor.clone(), seen.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let name = tls.get_ref().1.server_name().unwrap_or("").to_string();
                    seen.lock().unwrap().push(name);
                    let service = hyper_util::service::TowerToHyperService::new(router());
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        TestServer {
            addr,
            cert: Some(cert),
            sni,
        }
    }

    fn client(trust: Trust, ip: IpAddr) -> Client {
        ClientBuilder::new(trust)
            .connect_to(ip)
            .response_timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn connect_to_reaches_the_address_while_host_names_the_url() {
        let server = serve(false).await;
        let port = server.addr.port();
        let reply = client(Trust::Insecure, server.addr.ip())
            .get(&format!("http://api.elior.invalid:{port}/host"))
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.text(), format!("api.elior.invalid:{port}"));
        let facts = reply.connection.expect("connection facts");
        assert_eq!(facts.remote, Some(server.addr));
        assert!(facts.tls.is_none());
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_an_error_not_a_truncation() {
        let server = serve(false).await;
        let url = format!("http://{}/big", server.addr);
        let small = ClientBuilder::new(Trust::Insecure)
            .body_limit(1024)
            .build()
            .unwrap();
        assert!(matches!(small.get(&url).await, Err(Error::TooLarge(1024))));
        let reply = client(Trust::Insecure, server.addr.ip())
            .get(&url)
            .await
            .unwrap();
        assert_eq!(reply.body.len(), 2048);
    }

    #[tokio::test]
    async fn a_pin_accepts_its_certificate_only_and_sni_is_the_url_name() {
        let server = serve(true).await;
        let url = format!("https://elior.test:{}/host", server.addr.port());
        let ip = server.addr.ip();
        let pinned = Trust::Pinned(server.cert.clone().unwrap());
        let reply = client(pinned, ip).get(&url).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        let tls = reply.connection.unwrap().tls.expect("TLS facts");
        assert!(tls.version.is_some() && tls.cipher.is_some(), "{tls:?}");
        assert_eq!(server.sni.lock().unwrap().as_slice(), ["elior.test"]);

        // Another certificate pinned, or no root that vouches for it: no request is sent.
        let other = rcgen::generate_simple_self_signed(vec!["elior.test".into()]).unwrap();
        let wrong_pin = Trust::Pinned(other.cert.der().clone());
        let no_roots = Trust::Roots(Arc::new(RootCertStore::empty()));
        for trust in [wrong_pin, no_roots] {
            match client(trust, ip).get(&url).await {
                Err(Error::Tls(why)) => assert!(why.contains("certificate"), "{why}"),
                other => panic!("expected a refused certificate, got {other:?}"),
            }
        }
        // Looking at a bad certificate on purpose.
        let reply = client(Trust::Insecure, ip).get(&url).await.unwrap();
        assert_eq!(reply.text(), format!("elior.test:{}", server.addr.port()));
    }

    #[tokio::test]
    async fn a_silent_server_times_out_and_a_closed_port_is_unreachable() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", silent.local_addr().unwrap());
        let client = ClientBuilder::new(Trust::Insecure)
            .response_timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        assert!(matches!(
            client.get(&url).await,
            Err(Error::Unreachable(Unreachable::TimedOut(_)))
        ));
        drop(silent);
        match client.get(&url).await {
            Err(Error::Unreachable(Unreachable::Connect(why))) => {
                assert!(why.contains("refused"), "{why}")
            }
            other => panic!("expected a refused connection, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn https_only_refuses_plain_http() {
        let server = serve(false).await;
        let client = ClientBuilder::new(Trust::Insecure)
            .https_only()
            .build()
            .unwrap();
        assert!(client
            .get(&format!("http://{}/host", server.addr))
            .await
            .is_err());
    }
}
