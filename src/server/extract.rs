//! Extractors: JSON and form bodies whose rejections use the API's 422 shape, the
//! authenticated user, the client's address as seen through trusted proxies, and
//! [`NotProxied`] for what the host may ask but a client through nginx may not.

use std::net::{IpAddr, SocketAddr};

use axum::extract::rejection::{FormRejection, JsonRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use super::error::{ApiError, FieldError};
use super::state::AppState;
use crate::auth::token::TokenError;
use crate::config::{net::canonical, IpNet};
use crate::db::users::{self, User};

/// axum's default body limit, which JSON bodies get (uploads set their own).
pub const JSON_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// `Json<T>` with errors as 422 field errors, like FastAPI's request validation.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::Validation(vec![FieldError {
                loc: vec!["header".into(), "content-type".into()],
                msg: "Expected request with `Content-Type: application/json`".into(),
                kind: "content_type".into(),
            }]));
        }
        let bytes = match bytes::Bytes::from_request(req, state).await {
            Ok(bytes) => bytes,
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(too_large())
            }
            Err(rejection) => return Err(ApiError::invalid(&["body"], rejection.body_text())),
        };
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection @ JsonRejection::JsonDataError(_)) => integral_floats_as_integers(&bytes)
                .map(ApiJson)
                .ok_or_else(|| json_rejection(rejection)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// `application/json` or `application/*+json`, parameters allowed, as axum's `Json` accepts.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    // Compared in place, without a lower-cased copy: every JSON body passes here. `get`
    // is None off a character boundary or past the end, so odd input is simply not JSON.
    let essence = value.split(';').next().unwrap_or("").trim();
    let prefix = essence.get(.."application/".len());
    let suffix = essence.get(essence.len().saturating_sub("+json".len())..);
    essence.eq_ignore_ascii_case("application/json")
        || (prefix.is_some_and(|p| p.eq_ignore_ascii_case("application/"))
            && suffix.is_some_and(|s| s.eq_ignore_ascii_case("+json")))
}

/// JSON has one number type: `57.0` is a valid `integer` in JSON Schema (and so in the
/// OpenAPI document), but serde refuses it for an `i64`. Only when the strict parse failed
/// (the fast path stays one parse), numbers with no fractional part are read as integers
/// and the body is tried again.
fn integral_floats_as_integers<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    fn normalise(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Number(n) => {
                if let Some(f) = n.as_f64().filter(|_| !n.is_i64() && !n.is_u64()) {
                    // i64::MAX as f64 rounds up to 2^63, which does not fit: exclusive bound.
                    if f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64 {
                        *n = serde_json::Number::from(f as i64);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(normalise),
            serde_json::Value::Object(map) => map.values_mut().for_each(normalise),
            _ => {}
        }
    }
    let mut value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    normalise(&mut value);
    serde_json::from_value(value).ok()
}

fn too_large() -> ApiError {
    ApiError::Limit {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        detail: format!(
            "the request body is too large; the limit for JSON bodies is {} bytes",
            JSON_BODY_LIMIT
        ),
    }
}

/// An error of `Json::from_bytes` (the content type and the size were checked before it).
fn json_rejection(rejection: JsonRejection) -> ApiError {
    let (loc, kind) = match &rejection {
        JsonRejection::JsonSyntaxError(_) => (vec!["body".into()], "json_invalid"),
        _ => (vec!["body".into()], "value_error"),
    };
    let msg = rejection.body_text();
    let mut loc = loc;
    // serde names the field in "missing field `x`" / "unknown field `x`"; point at it.
    if let Some(field) = msg.split('`').nth(1) {
        if msg.contains("field `") {
            loc.push(field.to_string());
        }
    }
    ApiError::Validation(vec![FieldError {
        loc,
        msg,
        kind: kind.into(),
    }])
}

/// `Form<T>` with errors as 422 field errors (the OAuth2 password form).
pub struct ApiForm<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiForm<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Form::<T>::from_request(req, state).await {
            Ok(axum::Form(value)) => Ok(ApiForm(value)),
            Err(rejection) => Err(form_rejection(rejection)),
        }
    }
}

fn form_rejection(rejection: FormRejection) -> ApiError {
    ApiError::invalid(&["body"], rejection.body_text())
}

/// The user behind a valid bearer token. The user is re-read on every request, so a
/// deactivated account or a changed password takes effect at once.
pub struct AuthUser(pub User);

const BAD_CREDENTIALS: &str = "Could not validate credentials";

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token =
            bearer_token(&parts.headers).ok_or(ApiError::Unauthorized("Not authenticated"))?;
        match user_for_token(state, token).await {
            Ok(user) => Ok(AuthUser(user)),
            Err(Refusal::Expired) => Err(ApiError::Unauthorized("Token expired")),
            Err(Refusal::Invalid) => Err(ApiError::Unauthorized(BAD_CREDENTIALS)),
            Err(Refusal::Db(e)) => Err(e.into()),
        }
    }
}

/// Why a token names no one.
#[derive(Debug)]
pub enum Refusal {
    Expired,
    /// Bad signature, deleted or inactive user, or an epoch that is no longer the user's.
    Invalid,
    Db(crate::db::DbError),
}

/// The one check behind every authenticated REST request and the WebSocket upgrade: the
/// signature and expiry (a token seen before is not verified again, see
/// [`crate::auth::token`]), then the user's row, read on every request, which must exist,
/// be active and carry the token's epoch. The row is the one read the handler gets anyway
/// (one database round trip); a deleted user's id is never reused, and a redrawn epoch
/// ends older tokens.
pub async fn user_for_token(state: &AppState, token: &str) -> Result<User, Refusal> {
    let identity = state.tokens.identity(token).map_err(|e| match e {
        TokenError::Expired => Refusal::Expired,
        TokenError::Invalid => Refusal::Invalid,
    })?;
    let (id, epoch) = (identity.user_id, identity.epoch);
    state
        .db
        .read(move |c| users::find_by_id(c, id))
        .await
        .map_err(Refusal::Db)?
        .filter(|u| u.is_active && u.token_epoch == epoch)
        .ok_or(Refusal::Invalid)
}

pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The client's address. Forwarding headers are believed only when the TCP peer is one of
/// `TRUSTED_PROXIES`; from anyone else they are ignored, so a client cannot claim to be
/// internal by sending `X-Forwarded-For: 127.0.0.1`.
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(
            peer(parts)?,
            &parts.headers,
            &state.config.trusted_proxies,
        )))
    }
}

fn peer(parts: &Parts) -> Result<IpAddr, ApiError> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("server started without ConnectInfo")))
}

/// A request that did not come through the stack's reverse proxy. One that a peer in
/// `TRUSTED_PROXIES` forwarded (it carries `X-Forwarded-For` or `X-Real-IP`) is answered
/// 404, whoever the forwarded client is: behind Docker's port publishing, an outside
/// client can reach nginx from the bridge gateway, a private address (issue 14). For
/// `/metrics`, which the host scrapes from the API container directly.
pub struct NotProxied;

impl FromRequestParts<AppState> for NotProxied {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if forwarded_by_proxy(peer(parts)?, &parts.headers, &state.config.trusted_proxies) {
            return Err(ApiError::NotFound("Not Found"));
        }
        Ok(NotProxied)
    }
}

/// Whether a trusted proxy relayed the request: the peer is trusted and says for whom.
pub fn forwarded_by_proxy(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> bool {
    let peer = canonical(peer);
    trusted.iter().any(|net| net.contains(peer))
        && (headers.contains_key("x-forwarded-for") || headers.contains_key("x-real-ip"))
}

pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    // Walk X-Forwarded-For from the right, skipping our own proxies: the first address
    // not ours is the one the nearest trusted proxy saw.
    if let Some(xff) = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        let mut candidate = None;
        for hop in xff.rsplit(',').map(str::trim) {
            match hop.parse::<IpAddr>() {
                Ok(ip) if is_trusted(canonical(ip)) => candidate = Some(canonical(ip)),
                Ok(ip) => return canonical(ip),
                Err(_) => break,
            }
        }
        if let Some(ip) = candidate {
            return ip;
        }
    }
    headers
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<IpAddr>().ok())
        .map(canonical)
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn forwarded_headers_only_from_trusted_peers() {
        let trusted: Vec<IpNet> = vec!["172.18.0.0/16".parse().unwrap()];
        let spoof = headers(&[("x-forwarded-for", "127.0.0.1"), ("x-real-ip", "10.0.0.1")]);
        let stranger: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(client_ip(stranger, &spoof, &trusted), stranger);

        let proxy: IpAddr = "172.18.0.5".parse().unwrap();
        let chain = headers(&[("x-forwarded-for", "10.9.9.9, 198.51.100.7, 172.18.0.4")]);
        assert_eq!(
            client_ip(proxy, &chain, &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        let real = headers(&[("x-real-ip", "198.51.100.8")]);
        assert_eq!(
            client_ip(proxy, &real, &trusted),
            "198.51.100.8".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &trusted), proxy);
    }

    #[test]
    fn only_a_trusted_peer_with_forwarding_headers_is_a_proxied_request() {
        let trusted: Vec<IpNet> = vec!["172.18.0.0/16".parse().unwrap()];
        let proxy: IpAddr = "172.18.0.5".parse().unwrap();
        let host: IpAddr = "127.0.0.1".parse().unwrap();
        let forwarded = headers(&[("x-real-ip", "172.17.0.1")]);
        let chain = headers(&[("x-forwarded-for", "198.51.100.7")]);
        assert!(forwarded_by_proxy(proxy, &forwarded, &trusted));
        assert!(forwarded_by_proxy(proxy, &chain, &trusted));
        assert!(!forwarded_by_proxy(proxy, &HeaderMap::new(), &trusted));
        // From an untrusted peer the headers mean nothing: it is a direct request.
        assert!(!forwarded_by_proxy(host, &forwarded, &trusted));
        // An IPv4-mapped peer is the IPv4 address.
        let mapped: IpAddr = "::ffff:172.18.0.5".parse().unwrap();
        assert!(forwarded_by_proxy(mapped, &chain, &trusted));
    }

    #[test]
    fn json_content_types() {
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            " application/json ;x=y",
            "application/merge-patch+json",
            "APPLICATION/VND.API+JSON",
        ] {
            assert!(is_json(&headers(&[("content-type", ok)])), "{ok}");
        }
        for bad in [
            "text/json",
            "application/jsonx",
            "application/",
            "application+json",
            "text/plain+json",
            "json",
        ] {
            assert!(!is_json(&headers(&[("content-type", bad)])), "{bad}");
        }
        assert!(!is_json(&HeaderMap::new()));
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Bearer abc")])),
            Some("abc")
        );
        assert_eq!(
            bearer_token(&headers(&[("authorization", "bearer abc")])),
            Some("abc")
        );
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Basic abc")])),
            None
        );
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Bearer ")])),
            None
        );
    }
}
