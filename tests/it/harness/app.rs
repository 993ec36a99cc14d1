//! The app in this process: `elior::server::app` on a real SQLite file, called through
//! `tower::ServiceExt::oneshot`, no socket (issue 20). For what a route answers; what
//! needs a connection (limits, timeouts, WebSockets, signals) stays with the real binary.

use std::net::SocketAddr;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// One app over its own database in a temp directory.
pub struct App {
    app: elior::server::middleware::Tracked,
    _dir: tempfile::TempDir,
}

/// A response as a test reads it.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub body: Value,
}

impl App {
    pub fn new() -> App {
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join("serve.env");
        std::fs::write(
            &env,
            "JWT_SECRET=in-process-secret-0123456789abcdef0123\nLOG_LEVEL=warn\n",
        )
        .unwrap();
        let raw = elior::config::RawSettings::from_env_file(&env).unwrap();
        let config = elior::config::ServeConfig::from_raw(&raw, None).unwrap();
        let db = elior::db::Db::open(&dir.path().join("elior.db")).unwrap();
        App {
            app: elior::server::app(config, db),
            _dir: dir,
        }
    }

    /// Sends one request as a client on 127.0.0.1 would (the listener gives the app its
    /// peer through `Tracked::for_peer`; so does this).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        json: Option<Value>,
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let body = match json {
            Some(json) => {
                request = request.header("content-type", "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        let request = request.body(body).unwrap();
        let peer: SocketAddr = ([127, 0, 0, 1], 40_000).into();
        let response = self.app.for_peer(peer).oneshot(request).await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            content_type,
            body,
        }
    }
}
