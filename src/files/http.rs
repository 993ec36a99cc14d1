//! The HTTP client object_store talks to S3 through: the hyper + rustls (ring) HTTP/1.1
//! client elior already links for ACME (issue 5), so the S3 backend adds no second HTTP
//! stack (reqwest, h2, aws-lc-rs: about 1 MB of the API image, issue 4).
//!
//! It owns the network timeouts: a short connect timeout, so an unreachable endpoint fails
//! fast, and a bound on waiting for a response head. A body streams for as long as it
//! flows. Errors keep their kind, so object_store retries what it may, and the store can
//! tell "unreachable" from "refused" in its messages.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpRequestBody,
    HttpResponse, HttpResponseBody, HttpService,
};
use object_store::ClientOptions;

/// How long a TCP (and TLS) connection to the store may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the store may take to answer once a request is sent (a whole upload body
/// included: 25 MB at 1 MB/s fits).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections are dropped before the store drops them (AWS after about 20 s).
const POOL_IDLE: Duration = Duration::from_secs(15);

type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    HttpRequestBody,
>;

/// Makes [`HttpClient`]s for object_store; every client it makes shares one pool.
#[derive(Debug, Clone)]
pub struct Connector {
    service: Arc<Service>,
}

impl Connector {
    /// A client trusting `roots` for https endpoints (plain http is allowed too: MinIO on
    /// a private network).
    pub fn new(roots: rustls::RootCertStore, response_timeout: Duration) -> anyhow::Result<Self> {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_idle_timeout(POOL_IDLE)
                .pool_timer(hyper_util::rt::TokioTimer::new())
                .build(https);
        Ok(Connector {
            service: Arc::new(Service {
                client,
                response_timeout,
            }),
        })
    }
}

impl HttpConnector for Connector {
    fn connect(&self, _: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(SharedService(self.service.clone())))
    }
}

struct Service {
    client: Client,
    response_timeout: Duration,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("elior::files::http::Service")
    }
}

#[derive(Debug)]
struct SharedService(Arc<Service>);

/// Why a request never got an answer: the store's message names the endpoint with it.
#[derive(Debug, thiserror::Error)]
pub enum Unreachable {
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    #[error("cannot connect: {0}")]
    Connect(String),
}

impl HttpService for SharedService {
    // What `#[async_trait]` would write for `async fn call`.
    fn call<'a, 'b>(
        &'a self,
        request: HttpRequest,
    ) -> Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(async move {
            let service = &self.0;
            let answer =
                tokio::time::timeout(service.response_timeout, service.client.request(request))
                    .await;
            let response = match answer {
                Err(_) => {
                    return Err(HttpError::new(
                        HttpErrorKind::Timeout,
                        Unreachable::TimedOut(service.response_timeout),
                    ))
                }
                Ok(Err(e)) if e.is_connect() => {
                    return Err(HttpError::new(
                        HttpErrorKind::Connect,
                        Unreachable::Connect(root_cause(&e)),
                    ))
                }
                Ok(Err(e)) => return Err(HttpError::new(HttpErrorKind::Request, e)),
                Ok(Ok(response)) => response,
            };
            let (parts, body) = response.into_parts();
            let body = body.map_err(|e| {
                let kind = if e.is_timeout() {
                    HttpErrorKind::Timeout
                } else {
                    HttpErrorKind::Interrupted
                };
                HttpError::new(kind, e)
            });
            Ok(HttpResponse::from_parts(parts, HttpResponseBody::new(body)))
        })
    }
}

/// The innermost message of an error chain ("Connection refused (os error 111)"): hyper's
/// own outer messages ("client error (Connect)") say nothing a user can act on.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
