//! The transport object_store talks to S3 through: elior's one HTTP client
//! ([`crate::http`]), so the S3 backend adds no second HTTP stack (reqwest, h2,
//! aws-lc-rs: about 1 MB of the API image, issue 4).
//!
//! The client owns the network timeouts: a short connect timeout, so an unreachable
//! endpoint fails fast, and a bound on waiting for a response head. A body streams for as
//! long as it flows. Errors keep their kind, so object_store retries what it may, and the
//! store can tell "unreachable" from "refused" in its messages ([`Unreachable`]).

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

pub use crate::http::Unreachable;

/// How long the store may take to answer once a request is sent (a whole upload body
/// included: 25 MB at 1 MB/s fits).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// Makes [`HttpClient`]s for object_store; every client it makes shares one pool.
#[derive(Debug, Clone)]
pub struct Connector {
    client: Arc<crate::http::Client<HttpRequestBody>>,
}

impl Connector {
    /// A client trusting `roots` for https endpoints (plain http is allowed too: MinIO on
    /// a private network).
    pub fn new(roots: rustls::RootCertStore, response_timeout: Duration) -> anyhow::Result<Self> {
        let client = crate::http::ClientBuilder::new(crate::http::Trust::Roots(Arc::new(roots)))
            .response_timeout(response_timeout)
            .build()?;
        Ok(Connector {
            client: Arc::new(client),
        })
    }
}

impl HttpConnector for Connector {
    fn connect(&self, _: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(Service(self.client.clone())))
    }
}

#[derive(Debug)]
struct Service(Arc<crate::http::Client<HttpRequestBody>>);

impl HttpService for Service {
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
            let response = self.0.request(request).await.map_err(|e| match e {
                crate::http::Error::Unreachable(u @ Unreachable::TimedOut(_)) => {
                    HttpError::new(HttpErrorKind::Timeout, u)
                }
                crate::http::Error::Unreachable(u @ Unreachable::Connect(_)) => {
                    HttpError::new(HttpErrorKind::Connect, u)
                }
                // A certificate the store's roots do not vouch for: unreachable, as before.
                crate::http::Error::Tls(why) => {
                    HttpError::new(HttpErrorKind::Connect, Unreachable::Connect(why))
                }
                other => HttpError::new(HttpErrorKind::Request, other),
            })?;
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
