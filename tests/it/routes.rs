//! Routes called in this process through `tower::ServiceExt::oneshot` (issue 20): what a
//! route answers, without a socket or a child process. What needs a connection (limits,
//! read timeouts, WebSockets, signals) is tested against the real binary in `serve` and
//! `api`.

use serde_json::json;

use crate::harness::app::App;

const PASSWORD: &str = "in-process-password-1";

async fn register(app: &App, name: &str) -> (i64, String) {
    let r = app
        .call(
            "POST",
            "/api/auth/register",
            None,
            Some(
                json!({"username": name, "email": format!("{name}@example.com"),
                        "password": PASSWORD, "full_name": "In Process"}),
            ),
        )
        .await;
    assert_eq!(r.status, 201, "register {name}: {:?}", r.body);
    let login = app
        .call(
            "POST",
            "/api/auth/login",
            None,
            Some(json!({"username": name, "password": PASSWORD})),
        )
        .await;
    assert_eq!(login.status, 200, "login {name}: {:?}", login.body);
    (
        r.body["id"].as_i64().unwrap(),
        login.body["access_token"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn a_registered_user_logs_in_and_reads_themselves() {
    let app = App::new();
    let (id, token) = register(&app, "walker").await;
    let me = app.call("GET", "/api/auth/me", Some(&token), None).await;
    assert_eq!(me.status, 200, "{:?}", me.body);
    assert_eq!(me.body["id"], id);
    assert_eq!(me.body["username"], "walker");
    assert!(me.body.get("password_hash").is_none(), "{:?}", me.body);
    let anonymous = app.call("GET", "/api/auth/me", None, None).await;
    assert_eq!(anonymous.status, 401);
    let forged = app
        .call("GET", "/api/auth/me", Some(&format!("{token}x")), None)
        .await;
    assert_eq!(forged.status, 401);
}

#[tokio::test]
async fn logout_all_ends_every_token_of_the_user_and_no_other() {
    let app = App::new();
    let (_, first) = register(&app, "runner").await;
    let (_, other) = register(&app, "swimmer").await;
    let out = app
        .call("POST", "/api/auth/logout-all", Some(&first), None)
        .await;
    assert!(out.status.is_success(), "{:?}", out);
    assert_eq!(
        app.call("GET", "/api/auth/me", Some(&first), None)
            .await
            .status,
        401
    );
    assert_eq!(
        app.call("GET", "/api/auth/me", Some(&other), None)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn every_error_is_json_in_one_shape() {
    let app = App::new();
    let (_, token) = register(&app, "lifter").await;
    let missing = app.call("GET", "/api/no-such-route", None, None).await;
    let wrong_method = app.call("DELETE", "/api/auth/me", Some(&token), None).await;
    let invalid = app
        .call(
            "POST",
            "/api/auth/register",
            None,
            Some(json!({"username": "x", "email": "not an email", "password": "short"})),
        )
        .await;
    // The fallback's own words, which the OpenAPI walk below tells apart from an object
    // that is not found.
    assert_eq!(missing.body["detail"], "Not Found", "{missing:?}");
    for (what, r, status) in [
        ("unknown route", &missing, 404),
        ("wrong method", &wrong_method, 405),
        ("invalid body", &invalid, 422),
    ] {
        assert_eq!(r.status, status, "{what}: {r:?}");
        assert_eq!(
            r.content_type.as_deref(),
            Some("application/json"),
            "{what}: {r:?}"
        );
        assert!(!r.body["detail"].is_null(), "{what} has no detail: {r:?}");
    }
}

#[tokio::test]
async fn a_collection_answers_with_and_without_its_trailing_slash() {
    let app = App::new();
    let (_, token) = register(&app, "climber").await;
    let plain = app
        .call("GET", "/api/notifications", Some(&token), None)
        .await;
    let slashed = app
        .call("GET", "/api/notifications/", Some(&token), None)
        .await;
    assert_eq!(plain.status, 200, "{plain:?}");
    assert_eq!(slashed.status, 200, "{slashed:?}");
    assert_eq!(plain.body, slashed.body);
}

#[tokio::test]
async fn the_openapi_document_names_every_route_the_app_answers() {
    let app = App::new();
    let doc = app.call("GET", "/openapi.json", None, None).await;
    assert_eq!(doc.status, 200);
    let paths = doc.body["paths"].as_object().unwrap();
    assert!(paths.contains_key("/api/auth/me"), "{:?}", paths.keys());
    // A documented path is routed: without a token it is 401 or a method/validation
    // answer, never the fallback's 404 for a route that does not exist.
    let mut checked = 0;
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            let concrete = fill_path_params(path);
            let r = app
                .call(&method.to_uppercase(), &concrete, None, None)
                .await;
            assert!(
                !(r.status == 404 && r.body["detail"] == "Not Found"),
                "{method} {path} is documented but not routed: {r:?}"
            );
            checked += 1;
        }
    }
    // Not a count to match, a guard against walking an empty document.
    assert!(checked > paths.len(), "only {checked} operations walked");
}

/// Fills every path parameter (`{id}`, `{client_id}`, `{filename}`) with `1`.
fn fill_path_params(path: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    for ch in path.chars() {
        match ch {
            '{' => {
                in_param = true;
                out.push('1');
            }
            '}' => in_param = false,
            _ if in_param => {}
            _ => out.push(ch),
        }
    }
    out
}
