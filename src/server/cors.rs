//! CORS, decided by the origin list alone.
//!
//! An allowed origin gets `Access-Control-Allow-Origin` (itself, never `*`) with
//! credentials. Any other origin gets no `Access-Control-*` header at all, preflight
//! included, so the browser blocks it. The original nginx echoed any Origin, `null`
//! included, with credentials; that is what this replaces.
//!
//! Plain functions, called from the one tracking middleware ([`super::middleware::Tracked`]):
//! a layer of its own would cost every request a boxed clone of the route and a boxed
//! future.
//!
//! Not tower-http's `CorsLayer` (issue 20 asked; it cannot say what this says). Its
//! `Cors::call` adds `Access-Control-Allow-Methods`, `-Allow-Headers` and `-Max-Age` to
//! every preflight and `Access-Control-Expose-Headers` (and a constant
//! `-Allow-Credentials`) to every other answer whatever the Origin: only
//! `Access-Control-Allow-Origin` follows the list, so a foreign origin would no longer get
//! "no `Access-Control-*` header at all" (tests/it/serve.rs `cors_*` assert that). Its
//! preflight is any `OPTIONS`, answered `200` for every origin, where this answers 204 to a
//! listed origin, 403 to any other, and sends an `OPTIONS` without
//! `Access-Control-Request-Method` to the router like any request (405 in the API's JSON).

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

const ALLOW_METHODS: &str = "GET, POST, PUT, PATCH, DELETE, OPTIONS";
const ALLOW_HEADERS: &str = "Authorization, Content-Type, Accept, X-Request-ID";
const EXPOSE_HEADERS: &str = "X-Process-Time, X-Request-ID";
const MAX_AGE_SECS: &str = "600";

/// What CORS says about one request.
pub struct Cors {
    /// The request's Origin, when it is on the list.
    allowed: Option<HeaderValue>,
    preflight: bool,
}

impl Cors {
    pub fn of(request: &Request, origins: &[String]) -> Cors {
        let allowed = request
            .headers()
            .get(header::ORIGIN)
            .filter(|o| {
                origins
                    .iter()
                    .any(|allowed| allowed.as_bytes() == o.as_bytes())
            })
            .cloned();
        let preflight = request.method() == Method::OPTIONS
            && request
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        Cors { allowed, preflight }
    }

    /// The whole answer to a preflight, which never reaches a handler: 204 for an allowed
    /// origin, 403 for any other. None for a request that is not a preflight.
    pub fn preflight_response(&self) -> Option<Response> {
        self.preflight.then(|| match self.allowed {
            Some(_) => StatusCode::NO_CONTENT.into_response(),
            None => StatusCode::FORBIDDEN.into_response(),
        })
    }

    /// Adds the CORS headers to a response.
    pub fn apply(self, headers: &mut HeaderMap) {
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
        let Some(origin) = self.allowed else { return };
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        if self.preflight {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(ALLOW_METHODS),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(ALLOW_HEADERS),
            );
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static(MAX_AGE_SECS),
            );
        } else {
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(EXPOSE_HEADERS),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, origin: Option<&str>, preflight: bool) -> Request {
        let mut builder = Request::builder().method(method).uri("/api/auth/me");
        if let Some(o) = origin {
            builder = builder.header(header::ORIGIN, o);
        }
        if preflight {
            builder = builder.header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET");
        }
        builder.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn a_listed_origin_is_echoed_with_credentials_and_a_foreign_one_gets_nothing() {
        let origins = vec!["https://app.example.com".to_string()];
        let mut headers = HeaderMap::new();
        Cors::of(
            &request(Method::GET, Some("https://app.example.com"), false),
            &origins,
        )
        .apply(&mut headers);
        assert_eq!(
            headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com"
        );
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert!(headers.contains_key(header::ACCESS_CONTROL_EXPOSE_HEADERS));

        let mut headers = HeaderMap::new();
        let foreign = Cors::of(
            &request(Method::OPTIONS, Some("https://evil.example"), true),
            &origins,
        );
        assert_eq!(
            foreign.preflight_response().unwrap().status(),
            StatusCode::FORBIDDEN
        );
        foreign.apply(&mut headers);
        assert!(headers
            .keys()
            .all(|k| !k.as_str().starts_with("access-control-")));
        assert_eq!(headers[header::VARY], "Origin");
    }

    #[test]
    fn only_options_with_a_requested_method_is_a_preflight() {
        let origins = vec!["http://localhost:3000".to_string()];
        let plain = Cors::of(
            &request(Method::OPTIONS, Some("http://localhost:3000"), false),
            &origins,
        );
        assert!(plain.preflight_response().is_none());
        let pre = Cors::of(
            &request(Method::OPTIONS, Some("http://localhost:3000"), true),
            &origins,
        );
        assert_eq!(
            pre.preflight_response().unwrap().status(),
            StatusCode::NO_CONTENT
        );
        let mut headers = HeaderMap::new();
        pre.apply(&mut headers);
        assert_eq!(headers[header::ACCESS_CONTROL_MAX_AGE], "600");
    }
}
