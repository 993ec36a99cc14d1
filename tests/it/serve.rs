//! `elior serve` and `elior healthcheck` as a user runs them: the real binary on a free
//! port, real SQLite files, HTTP over real sockets.

use crate::harness::server as common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use crate::harness::metrics::check_exposition;
use common::{request, Server, BIN, SECRET};
use serde_json::json;

#[test]
fn health_reports_the_database_and_turns_503_when_the_file_is_gone() {
    let server = Server::start(&[("DOMAIN", "gym.example.com")]);
    let r = server.get("/health");
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["database"]["status"], "connected");
    // Public, so minimal (issue 15): no version, environment, domain or pool figures.
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(keys, ["database", "status", "storage", "timestamp"]);
    // The upload store (issue 16): the local folder by default.
    assert_eq!(body["storage"]["kind"], "local");
    assert_eq!(body["storage"]["status"], "connected");
    assert!(!r.body.contains("gym.example.com"));

    // Someone moves the database away while the server runs: every write would go to an
    // unlinked file and vanish at restart, so health must fail loudly.
    let db = server.dir.path().join("data/elior_fitness.db");
    let moved = server.dir.path().join("moved.db");
    std::fs::rename(&db, &moved).unwrap();
    // /health caches its verdict for half a second; poll past that.
    let r = poll_until(|| server.get("/health"), |r| r.status != 200);
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["database"]["status"], "disconnected");
    assert_eq!(server.get("/status/database").status, 503);

    std::fs::rename(&moved, &db).unwrap();
    let r = poll_until(|| server.get("/health"), |r| r.status == 200);
    assert_eq!(r.status, 200, "recovers when the file is back");
}

#[test]
fn status_database_shows_wal_and_schema() {
    let server = Server::start(&[]);
    let r = server.get("/status/database");
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    assert_eq!(body["healthy"], true);
    assert_eq!(body["journal_mode"], "wal");
    assert_eq!(body["schema_version"], body["latest_schema_version"]);
    assert!(body["file_size_bytes"].as_u64().unwrap() > 0);
    assert_eq!(
        body["connection_pool"]["max_size"],
        elior::db::SQLITE_READERS
    );
    assert_eq!(body["environment"], "development");
}

/// `/status/database` shows detail, so from outside the internal networks it needs an
/// admin's token: 401 without one, 403 for anyone else.
#[test]
fn status_database_from_outside_needs_an_admin() {
    let server = Server::start(&[("TRUSTED_PROXIES", "127.0.0.1")]);
    let outside = |token: Option<&str>| {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("X-Forwarded-For", "203.0.113.5")];
        if let Some(a) = auth.as_deref() {
            headers.push(("Authorization", a));
        }
        request(server.addr, "GET", "/status/database", &headers, None)
    };
    assert_eq!(outside(None).status, 401);
    let client = server.register_and_login("outsider", "password123");
    assert_eq!(outside(Some(&client)).status, 403);
    let r = server.post_json(
        "/api/auth/setup/admin",
        &json!({"username": "boss", "email": "boss@example.com",
                "password": "password123", "full_name": "Boss"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let admin = r.json()["access_token"].as_str().unwrap().to_string();
    let r = outside(Some(&admin));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["healthy"], true);
}

#[test]
fn request_id_is_echoed_when_valid_and_replaced_when_not() {
    let server = Server::start(&[]);
    let r = request(
        server.addr,
        "GET",
        "/health",
        &[("X-Request-ID", "abc-123_x.Y")],
        None,
    );
    assert_eq!(r.header("x-request-id"), Some("abc-123_x.Y"));

    let long = "a".repeat(65);
    for bad in ["has space", "semi;colon", long.as_str()] {
        let r = request(
            server.addr,
            "GET",
            "/health",
            &[("X-Request-ID", bad)],
            None,
        );
        let id = r.header("x-request-id").unwrap();
        assert_ne!(id, bad);
        assert!(uuid_like(id), "{id}");
    }
    let r = server.get("/no/such/route");
    assert_eq!(r.status, 404);
    assert!(
        uuid_like(r.header("x-request-id").unwrap()),
        "404s get an id too"
    );
}

#[test]
fn the_request_id_appears_in_the_request_log_lines() {
    let server = Server::start(&[]);
    let r = server.post_json("/api/auth/register", &json!({
        "username": "logged", "email": "logged@example.com", "password": "password123", "full_name": "L"
    }));
    assert_eq!(r.status, 201);
    let id = r.header("x-request-id").unwrap().to_string();
    let wanted = |l: &str| l.contains(&id) && l.contains("client registered");
    let log = server.wait_for_log(|log| log.lines().any(wanted));
    assert!(log.lines().any(wanted), "log:\n{log}");
}

#[test]
fn at_debug_level_every_request_is_logged_with_its_id() {
    let server = Server::start(&[("LOG_LEVEL", "debug")]);
    // The first probe waits for the database check, the others are answered from its
    // cached verdict, on a path of their own.
    let ids = ["probe-1", "probe-2", "probe-3"];
    for id in ids {
        let r = request(server.addr, "GET", "/health", &[("X-Request-ID", id)], None);
        assert_eq!(r.status, 200);
    }
    let logged = |id: &str, l: &str| {
        l.contains(&format!("request_id={id}"))
            && l.contains("route=/health")
            && l.contains("status=200")
    };
    let all = |log: &str| ids.iter().all(|id| log.lines().any(|l| logged(id, l)));
    let log = server.wait_for_log(all);
    for id in ids {
        assert!(
            log.lines().any(|l| logged(id, l)),
            "no line for {id} in:\n{log}"
        );
    }
}

#[test]
fn a_slow_query_is_logged_with_its_sql_and_the_request_id() {
    let server = Server::start(&[]);
    // Another process holds the write lock for 400 ms, so the registration's write
    // waits for it (within the busy timeout) and takes longer than 100 ms: on the one
    // writer connection (issue 19) that wait is the BEGIN IMMEDIATE of its batch.
    let db = server.dir.path().join("data/elior_fitness.db");
    let mut holder = std::process::Command::new("sqlite3")
        .arg(&db)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sqlite3 runs (apt install sqlite3)");
    let mut stdin = holder.stdin.take().unwrap();
    stdin
        .write_all(b"BEGIN IMMEDIATE;\nSELECT 'locked';\n")
        .unwrap();
    let mut locked = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
        &mut locked,
    )
    .unwrap();
    assert_eq!(locked.trim(), "locked");
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        stdin.write_all(b"COMMIT;\n").unwrap();
    });

    let body = json!({
        "username": "slowpoke", "email": "slow@example.com", "password": "password123", "full_name": "S"
    });
    let r = request(
        server.addr,
        "POST",
        "/api/auth/register",
        &[
            ("X-Request-ID", "slow-register-1"),
            ("Content-Type", "application/json"),
        ],
        Some(body.to_string().as_bytes()),
    );
    release.join().unwrap();
    let _ = holder.wait();
    assert_eq!(r.status, 201, "{}", r.body);
    let slow = |l: &str| {
        l.contains("slow query")
            && l.contains("BEGIN IMMEDIATE")
            && l.contains("request_id=slow-register-1")
    };
    let log = server.wait_for_log(|log| log.lines().any(slow));
    assert!(
        log.lines().any(slow),
        "no slow-query line for the request in:\n{log}"
    );
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

#[test]
fn every_response_has_a_process_time_with_three_decimals() {
    let server = Server::start(&[]);
    for path in ["/", "/health", "/api/auth/me", "/nothing"] {
        let r = server.get(path);
        let t = r
            .header("x-process-time")
            .unwrap_or_else(|| panic!("{path}: no X-Process-Time"));
        let (whole, frac) = t.split_once('.').unwrap();
        assert!(
            whole.parse::<u64>().is_ok() && frac.len() == 3 && frac.parse::<u32>().is_ok(),
            "{t}"
        );
    }
}

fn preflight(server: &Server, origin: &str) -> common::Resp {
    request(
        server.addr,
        "OPTIONS",
        "/api/auth/me",
        &[
            ("Origin", origin),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "authorization"),
        ],
        None,
    )
}

#[test]
fn cors_in_development_allows_local_dev_servers_only() {
    let server = Server::start(&[]);
    for origin in [
        "http://localhost:3000",
        "http://localhost:5173",
        "http://localhost:8080",
    ] {
        let r = request(server.addr, "GET", "/health", &[("Origin", origin)], None);
        assert_eq!(r.header("access-control-allow-origin"), Some(origin));
        assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
        let exposed = r
            .header("access-control-expose-headers")
            .unwrap()
            .to_ascii_lowercase();
        assert!(exposed.contains("x-process-time") && exposed.contains("x-request-id"));
        let p = preflight(&server, origin);
        assert!(p.status < 300);
        assert_eq!(p.header("access-control-allow-origin"), Some(origin));
        assert!(p.header("access-control-allow-methods").is_some());
    }
    for foreign in ["https://evil.example", "null", "http://localhost:4000"] {
        let r = request(server.addr, "GET", "/health", &[("Origin", foreign)], None);
        assert!(
            !r.has_header_prefix("access-control-"),
            "{foreign}: {:?}",
            r.headers
        );
        let p = preflight(&server, foreign);
        assert!(
            !p.has_header_prefix("access-control-"),
            "{foreign} preflight: {:?}",
            p.headers
        );
    }
}

#[test]
fn cors_in_production_allows_exactly_the_configured_origins() {
    let server = Server::start(&[
        ("ENVIRONMENT", "production"),
        (
            "CORS_ORIGINS",
            "https://gym.example.com,https://www.gym.example.com",
        ),
    ]);
    let p = preflight(&server, "https://www.gym.example.com");
    assert_eq!(
        p.header("access-control-allow-origin"),
        Some("https://www.gym.example.com")
    );
    assert_eq!(p.header("access-control-allow-credentials"), Some("true"));
    for foreign in [
        "http://localhost:3000",
        "http://gym.example.com",
        "https://evil.example",
    ] {
        let p = preflight(&server, foreign);
        assert!(
            !p.has_header_prefix("access-control-"),
            "{foreign}: {:?}",
            p.headers
        );
    }
}

#[test]
fn register_login_me_and_the_oauth2_form() {
    let server = Server::start(&[]);
    let token = server.register_and_login("alice", "correct-horse");
    let me = server.get_auth("/api/auth/me", &token);
    assert_eq!(me.status, 200, "{}", me.body);
    let body = me.json();
    assert_eq!(body["username"], "alice");
    assert_eq!(body["email"], "alice@example.com");
    assert_eq!(body["role"], "CLIENT");
    assert!(
        body.get("password_hash").is_none(),
        "hash must never leave the server"
    );

    // The email works as the login name too, as in the original API.
    let r = server.post_json(
        "/api/auth/login",
        &json!({"username": "alice@example.com", "password": "correct-horse"}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["token_type"], "bearer");

    let form = request(
        server.addr,
        "POST",
        "/api/auth/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(b"grant_type=password&username=alice&password=correct-horse"),
    );
    assert_eq!(form.status, 200, "{}", form.body);
    let t2 = form.json()["access_token"].as_str().unwrap().to_string();
    assert_eq!(server.get_auth("/api/auth/me", &t2).status, 200);

    let refreshed = server.post_json_auth("/api/auth/refresh", &token, &json!({}));
    assert_eq!(refreshed.status, 200);
    assert_eq!(
        server
            .get_auth(
                "/api/auth/me",
                refreshed.json()["access_token"].as_str().unwrap()
            )
            .status,
        200
    );
}

#[test]
fn bad_input_gets_422_with_field_errors() {
    let server = Server::start(&[]);
    let r = server.post_json(
        "/api/auth/register",
        &json!({
            "username": "x", "email": "not-an-email", "password": "short", "full_name": "X"
        }),
    );
    assert_eq!(r.status, 422);
    let fields: Vec<String> = r.json()["detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["loc"][1].as_str().unwrap().to_string())
        .collect();
    assert_eq!(fields, ["username", "email", "password"]);

    let r = server.post_json("/api/auth/login", &json!({"username": "a"}));
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["detail"][0]["loc"], json!(["body", "password"]));

    let r = request(
        server.addr,
        "POST",
        "/api/auth/login",
        &[("Content-Type", "application/json")],
        Some(b"{nope"),
    );
    assert_eq!(r.status, 422);

    server.register_and_login("dupe", "password123");
    let again = server.post_json("/api/auth/register", &json!({
        "username": "dupe2", "email": "DUPE@example.com", "password": "password123", "full_name": "D"
    }));
    assert_eq!(again.status, 409, "{}", again.body);
}

#[test]
fn wrong_password_expired_and_tampered_tokens_get_401() {
    let server = Server::start(&[]);
    let token = server.register_and_login("bob", "password123");

    let wrong = server.post_json(
        "/api/auth/login",
        &json!({"username": "bob", "password": "nope-nope"}),
    );
    let unknown = server.post_json(
        "/api/auth/login",
        &json!({"username": "nobody", "password": "nope-nope"}),
    );
    assert_eq!(wrong.status, 401);
    assert_eq!(unknown.status, 401);
    assert_eq!(
        wrong.body, unknown.body,
        "unknown user and wrong password look the same"
    );

    let keys = elior::auth::token::TokenKeys::new(SECRET.as_bytes(), Duration::from_secs(60));
    let me = server.get_auth("/api/auth/me", &token).json();
    let id = me["id"].as_i64().unwrap();
    let expired = keys.issue_at(
        id,
        elior::db::users::Role::Client,
        0,
        chrono::Utc::now().timestamp() - 3600,
    );
    let r = server.get_auth("/api/auth/me", &expired);
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));

    // Swap in the payload of a token claiming ADMIN: the signature no longer matches.
    let admin = keys.issue(id, elior::db::users::Role::Admin, 0);
    let mut parts: Vec<&str> = token.split('.').collect();
    parts[1] = admin.split('.').nth(1).unwrap();
    assert_eq!(
        server.get_auth("/api/auth/me", &parts.join(".")).status,
        401
    );

    let forged = elior::auth::token::TokenKeys::new(
        b"some-other-secret-some-other-secret",
        Duration::from_secs(60),
    )
    .issue(id, elior::db::users::Role::Client, 0);
    assert_eq!(server.get_auth("/api/auth/me", &forged).status, 401);
    assert_eq!(server.get("/api/auth/me").status, 401);
}

#[test]
fn password_change_revokes_older_tokens() {
    let server = Server::start(&[]);
    let old = server.register_and_login("carol", "password123");
    let r = server.post_json_auth(
        "/api/auth/password/change",
        &old,
        &json!({"current_password": "wrong-one!", "new_password": "new-password-1"}),
    );
    assert_eq!(r.status, 422);
    let r = server.post_json_auth(
        "/api/auth/password/change",
        &old,
        &json!({"current_password": "password123", "new_password": "new-password-1"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let fresh = r.json()["access_token"].as_str().unwrap().to_string();
    assert_eq!(server.get_auth("/api/auth/me", &old).status, 401);
    assert_eq!(server.get_auth("/api/auth/me", &fresh).status, 200);
    let login = server.post_json(
        "/api/auth/login",
        &json!({"username": "carol", "password": "new-password-1"}),
    );
    assert_eq!(login.status, 200);
}

#[test]
fn repeated_failures_are_throttled_with_retry_after() {
    let server = Server::start(&[]);
    server.register_and_login("dave", "password123");
    for _ in 0..5 {
        let r = server.post_json(
            "/api/auth/login",
            &json!({"username": "dave", "password": "guess-guess"}),
        );
        assert_eq!(r.status, 401);
    }
    let r = server.post_json(
        "/api/auth/login",
        &json!({"username": "dave", "password": "password123"}),
    );
    assert_eq!(
        r.status, 429,
        "even the right password waits out the lock: {}",
        r.body
    );
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(retry > 0);
    // Another account from the same address is not locked by dave's failures alone.
    server.register_and_login("erin", "password123");
}

#[test]
fn setup_admin_works_once() {
    let server = Server::start(&[]);
    let admin = json!({"username": "root", "email": "root@example.com", "password": "password123", "full_name": "Root"});
    let r = server.post_json("/api/auth/setup/admin", &admin);
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["user"]["role"], "ADMIN");
    let second = json!({"username": "root2", "email": "root2@example.com", "password": "password123", "full_name": "R"});
    assert_eq!(
        server.post_json("/api/auth/setup/admin", &second).status,
        403
    );
}

#[test]
fn metrics_are_internal_only_and_forwarded_addresses_need_a_trusted_proxy() {
    // Directly from loopback: allowed; a spoofed X-Forwarded-For from an untrusted peer is ignored.
    let server = Server::start(&[]);
    // The first probe waits for the database check, the others are answered from its
    // cached verdict: both ways are counted.
    for _ in 0..3 {
        assert_eq!(server.get("/health").status, 200);
    }
    let r = request(
        server.addr,
        "GET",
        "/metrics",
        &[("X-Forwarded-For", "203.0.113.5")],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    assert!(
        r.body.contains(
            "elior_http_requests_total{method=\"GET\",route=\"/health\",status=\"200\"} 3"
        ),
        "{}",
        r.body
    );
    assert!(r
        .body
        .contains("elior_http_request_duration_seconds_bucket"));
    assert!(r.body.contains("elior_db_pool_connections"));
    assert!(r.body.contains("elior_uptime_seconds"));

    // Whatever a trusted proxy (the stack's nginx) forwards is refused, even for a
    // private client address: through Docker's port publishing any client can arrive
    // from the bridge gateway (issue 14). The proxy's own host, asking directly, is served.
    let proxied = Server::start(&[("TRUSTED_PROXIES", "127.0.0.1")]);
    for forwarded in [
        ("X-Forwarded-For", "203.0.113.5"),
        ("X-Real-IP", "10.1.2.3"),
    ] {
        let r = request(proxied.addr, "GET", "/metrics", &[forwarded], None);
        assert_eq!(r.status, 404, "{forwarded:?}: {}", r.body);
    }
    let direct = request(proxied.addr, "GET", "/metrics", &[], None);
    assert_eq!(direct.status, 200, "{}", direct.body);
}

// Issue 20: the exposition is written by prometheus-client now. Dashboards and alerts query
// these names, labels and buckets, so a renamed metric or label, a lost bucket or a text a
// Prometheus server would refuse fails here.
#[test]
fn metrics_count_known_requests_in_valid_prometheus_text() {
    let server = Server::start(&[]);
    for _ in 0..3 {
        assert_eq!(server.get("/health").status, 200);
    }
    assert_eq!(server.get("/api/auth/me").status, 401);
    assert_eq!(server.get("/api/notifications/7").status, 401);
    assert_eq!(server.get("/api/notifications/8").status, 401);
    assert_eq!(server.get("/wp-admin/setup.php").status, 404);
    let brew = request(server.addr, "BREW", "/health", &[], None);
    assert_eq!(brew.status, 405, "{}", brew.body);

    let first = server.get("/metrics");
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(
        first.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    check_exposition(&first.body);
    // The first scrape is counted once its answer is written: the second shows it.
    let r = server.get("/metrics");
    let scrape = check_exposition(&r.body);

    let types: Vec<(&str, &str)> = scrape
        .types
        .iter()
        .map(|(name, kind)| (name.as_str(), kind.as_str()))
        .collect();
    assert_eq!(
        types,
        [
            ("elior_build_info", "gauge"),
            ("elior_uptime_seconds", "gauge"),
            ("elior_db_pool_connections", "gauge"),
            ("elior_db_pool_max_connections", "gauge"),
            ("elior_db_queued_writes", "gauge"),
            ("elior_http_waiting_requests", "gauge"),
            ("elior_http_max_concurrent_requests", "gauge"),
            ("elior_http_requests_total", "counter"),
            ("elior_http_request_duration_seconds", "histogram"),
            ("elior_http_connections", "gauge"),
            ("elior_http_max_connections", "gauge"),
            ("elior_http_refused_connections_total", "counter"),
            ("process_cpu_seconds_total", "counter"),
            ("process_resident_memory_bytes", "gauge"),
            ("process_virtual_memory_bytes", "gauge"),
            ("process_open_fds", "gauge"),
            ("process_max_fds", "gauge"),
            ("process_start_time_seconds", "gauge"),
        ],
        "{}",
        r.body
    );
    let requests = |method: &str, route: &str, status: u16| {
        scrape.value(&format!(
            "elior_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}}"
        ))
    };
    assert_eq!(requests("GET", "/health", 200), Some(3.0), "{}", r.body);
    assert_eq!(requests("GET", "/api/auth/me", 401), Some(1.0));
    // Paths are counted under their template, and what matches none under one label.
    assert_eq!(requests("GET", "/api/notifications/{id}", 401), Some(2.0));
    assert_eq!(requests("GET", "unmatched", 404), Some(1.0));
    assert_eq!(requests("OTHER", "/health", 405), Some(1.0));
    assert_eq!(requests("GET", "/metrics", 200), Some(1.0));
    assert!(!r.body.contains("BREW") && !r.body.contains("wp-admin"));
    let series = scrape
        .samples
        .keys()
        .filter(|k| k.starts_with("elior_http_requests_total"));
    assert_eq!(series.count(), 6, "only the requests made: {}", r.body);

    // Every histogram has the same buckets, in seconds.
    let health = "method=\"GET\",route=\"/health\"";
    let bounds: Vec<&str> = scrape
        .samples
        .keys()
        .filter_map(|k| {
            k.strip_prefix(&format!(
                "elior_http_request_duration_seconds_bucket{{{health},le=\""
            ))?
            .strip_suffix("\"}")
        })
        .collect();
    let mut expected = [
        "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5",
        "10", "+Inf",
    ];
    expected.sort();
    assert_eq!(bounds, expected, "{}", r.body);
    let count = format!("elior_http_request_duration_seconds_count{{{health}}}");
    assert_eq!(scrape.value(&count), Some(3.0));
    let sum = format!("elior_http_request_duration_seconds_sum{{{health}}}");
    assert!(scrape.value(&sum).is_some_and(|s| s > 0.0));

    // `elior X.Y.Z (git REVISION)`: the build the server says it is.
    let version = Command::new(BIN).arg("--version").output().unwrap().stdout;
    let version = String::from_utf8(version).unwrap();
    let (version, revision) = version
        .trim_end()
        .strip_prefix("elior ")
        .and_then(|v| v.strip_suffix(')'))
        .and_then(|v| v.split_once(" (git "))
        .unwrap_or_else(|| panic!("elior --version: {version}"));
    let build = format!("elior_build_info{{version=\"{version}\",revision=\"{revision}\"}}");
    assert_eq!(scrape.value(&build), Some(1.0), "{build} in {}", r.body);
    assert!(scrape
        .value("elior_uptime_seconds")
        .is_some_and(|s| s > 0.0));
    // The scrape's own connection is open (the earlier ones may not be let go yet);
    // nothing was refused.
    assert!(
        scrape
            .value("elior_http_connections")
            .is_some_and(|open| (1.0..=10.0).contains(&open)),
        "{}",
        r.body
    );
    assert_eq!(
        scrape.value("elior_http_refused_connections_total"),
        Some(0.0)
    );
    assert!(scrape
        .value("elior_http_max_connections")
        .is_some_and(|m| m >= 1.0));
    for gauge in [
        "elior_db_pool_connections{state=\"idle\"}",
        "elior_db_pool_connections{state=\"in_use\"}",
        "elior_db_pool_max_connections",
        "elior_db_queued_writes",
    ] {
        assert!(scrape.value(gauge).is_some(), "{gauge} in {}", r.body);
    }

    // The process's own series, under the names every Prometheus client library uses,
    // against what the kernel says of the server (read just after the scrape).
    let pid = server.child.id();

    let value = |name: &str| {
        scrape
            .value(name)
            .unwrap_or_else(|| panic!("{name} in {}", r.body))
    };
    let rss_kib = common::status_kib(pid, "VmRSS:") as f64;
    let resident = value("process_resident_memory_bytes") / 1024.0;
    assert!(
        (resident - rss_kib).abs() < rss_kib / 4.0,
        "process_resident_memory_bytes {resident} KiB, VmRSS {rss_kib} KiB"
    );
    assert!(value("process_virtual_memory_bytes") / 1024.0 > rss_kib);
    let soft_limit: f64 = common::proc_field(pid, "limits", "Max open files")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(value("process_max_fds"), soft_limit);
    let open_now = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as f64;
    let open = value("process_open_fds");
    assert!(
        open >= 3.0 && (open - open_now).abs() <= 4.0,
        "process_open_fds {open}, {open_now} in /proc/{pid}/fd"
    );
    assert!(value("process_cpu_seconds_total") > 0.0);
    // It started when the test started it: before the uptime it reports, give or take.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = value("process_start_time_seconds");
    let uptime = value("elior_uptime_seconds");
    assert!(
        (now - uptime - started).abs() < 5.0,
        "process_start_time_seconds {started}, now {now}, uptime {uptime}"
    );
}

#[test]
fn production_refuses_to_start_with_a_weak_secret() {
    for (secret, expect) in [
        (None, "JWT_SECRET is not set"),
        (Some("too-short"), "at least 32"),
        (
            Some("your-secret-key-change-this-in-production-now"),
            "placeholder",
        ),
    ] {
        let mut env = vec![("ENVIRONMENT", "production")];
        if let Some(s) = secret {
            env.push(("JWT_SECRET", s));
        }
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(BIN)
            .args(["serve", "--bind", "127.0.0.1:0"])
            .current_dir(dir.path())
            .env_clear()
            .envs(env)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expect), "{stderr}");
        assert!(stderr.starts_with("elior: "), "{stderr}");
        assert!(
            !dir.path().join("data").exists(),
            "nothing is created on refusal"
        );
    }
}

#[test]
fn an_unusable_database_path_is_a_clear_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("garbage.db"), vec![0x42u8; 4096]).unwrap();
    std::fs::write(dir.path().join("a-file"), b"x").unwrap();
    for (url, expect) in [
        ("sqlite:///./garbage.db", "garbage.db"),
        ("sqlite:///./a-file/db.sqlite", "a-file"),
        ("postgresql://localhost/db", "DATABASE_URL"),
    ] {
        let out = Command::new(BIN)
            .args(["serve", "--bind", "127.0.0.1:0"])
            .current_dir(dir.path())
            .env_clear()
            .env("DATABASE_URL", url)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{url}: {stderr}");
        assert!(
            stderr.contains(expect) && !stderr.contains("panicked"),
            "{url}: {stderr}"
        );
    }
}

/// A server that cannot create its database on a full disk says the disk is full and
/// where, not that the file may not be a database; with room it starts.
#[test]
fn a_full_disk_at_start_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let disk = crate::harness::tmpfs::TmpfsMount::new(&data, "1m");
    let filler = disk.fill();
    let url = format!("sqlite:///{}", data.join("elior.db").display());
    let serve = || {
        Command::new(BIN)
            .args(["serve", "--bind", "127.0.0.1:0"])
            .env_clear()
            .env("DATABASE_URL", &url)
            .output()
            .unwrap()
    };
    let out = serve();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("its disk is full"), "{stderr}");
    assert!(
        stderr.contains(&format!("free space on the disk of {}", data.display())),
        "{stderr}"
    );
    std::fs::remove_file(&filler).unwrap();
    let server = Server::start(&[("DATABASE_URL", &url)]);
    assert_eq!(server.get("/health").status, 200);
}

#[test]
fn sigterm_lets_an_in_flight_request_finish_and_exits_0() {
    let mut server = Server::start(&[]);
    // A slow client: headers and half the body now, the rest after SIGTERM.
    let body = json!({"username": "slowpoke", "email": "slow@example.com", "password": "password123", "full_name": "Slow"})
        .to_string();
    let (first, rest) = body.as_bytes().split_at(body.len() / 2);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // Written by hand on purpose: half a body now, the rest after SIGTERM (no client
    // library sends a request in two halves on command).
    // `Expect: 100-continue`: hyper answers "100 Continue" once the handler reads the
    // body, which proves the request is in flight before SIGTERM (no sleep and hope).
    write!(
        stream,
        "POST /api/auth/register HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.flush().unwrap();
    let mut interim = Vec::new();
    while !interim.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream
            .read_exact(&mut byte)
            .expect("no 100 Continue within 20 s");
        interim.push(byte[0]);
    }
    assert!(
        interim.starts_with(b"HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&interim)
    );
    stream.write_all(first).unwrap();
    stream.flush().unwrap();

    common::signal(server.child.id(), "TERM");
    // The listener closes first; then the server must still be there for the request.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(server.addr).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "new connections still accepted 5 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "must wait for the in-flight request"
    );

    stream.write_all(rest).unwrap();
    let r = common::read_response(&mut stream);
    assert_eq!(r.status, 201, "{}", r.body);
    let status = common::wait_with_deadline(&mut server.child, Duration::from_secs(15));
    assert_eq!(status.code(), Some(0));
    assert!(
        server.log_text().contains("WAL checkpointed"),
        "{}",
        server.log_text()
    );
    // The checkpoint folded the WAL into the main file.
    let wal = server.dir.path().join("data/elior_fitness.db-wal");
    assert!(!wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0);
}

fn healthcheck(url: &str) -> std::process::Output {
    Command::new(BIN)
        .args(["healthcheck", "--timeout", "2", "--url", url])
        .output()
        .unwrap()
}

#[test]
fn healthcheck_exit_codes() {
    let server = Server::start(&[]);
    let ok = healthcheck(&format!("http://{}/health", server.addr));
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let missing = healthcheck(&format!("http://{}/nothing-here", server.addr));
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("answered 404"));

    // A port where nothing listens.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let refused = healthcheck(&format!("http://{closed}/health"));
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).starts_with("unhealthy: "));

    // A listener that accepts but never answers: the timeout ends it.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hang = healthcheck(&format!("http://{}/health", silent.local_addr().unwrap()));
    assert_eq!(hang.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&hang.stderr).contains("no answer"),
        "{}",
        String::from_utf8_lossy(&hang.stderr)
    );

    let bad = healthcheck("https://example.com/health");
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn admin_create_from_the_shell_then_login() {
    let dir = tempfile::tempdir().unwrap();
    let run = |password: &str| {
        let mut child = Command::new(BIN)
            .args([
                "admin",
                "create",
                "--email",
                "boss@example.com",
                "--password-stdin",
            ])
            .current_dir(dir.path())
            .env_clear()
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{password}\n").as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run("boss-password-1");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("created admin boss"));
    let again = run("boss-password-1");
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let weak = run("short");
    assert_eq!(weak.status.code(), Some(2));

    let server = Server::try_start_in(dir, &[("JWT_SECRET", SECRET)]).unwrap();
    let r = server.post_json(
        "/api/auth/login",
        &json!({"username": "boss@example.com", "password": "boss-password-1"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["user"]["role"], "ADMIN");
    // With an admin present, the setup endpoint is closed.
    let setup = json!({"username": "late", "email": "late@example.com", "password": "password123", "full_name": "L"});
    assert_eq!(
        server.post_json("/api/auth/setup/admin", &setup).status,
        403
    );
}

/// A database a later release migrated (an image rolled back past a migration) is still
/// served, and the log and `elior db status` say so, with the ways back.
#[test]
fn a_schema_newer_than_the_build_is_served_and_named() {
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("elior.db");
    let url = format!("sqlite:///{}", db.display());
    let env = [("JWT_SECRET", SECRET), ("DATABASE_URL", url.as_str())];
    drop(Server::start(&env));
    let known = elior::db::migrations::latest_version();
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, 'later', '2027-01-01')",
            [known + 1],
        )
        .unwrap();

    let server = Server::start(&env);
    assert_eq!(server.get("/health").status, 200);
    let log = server.wait_for_log(|l| l.contains("newer than this build"));
    assert!(
        log.contains(&format!(
            "the database's schema (version {}) is newer than this build's ({known})",
            known + 1
        )) && log.contains("deploy that release again, or restore a backup taken before it"),
        "{log}"
    );
    let status = Command::new(BIN)
        .args(["db", "status"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&status.stdout);
    assert!(
        said.contains(&format!(
            "schema:   version {} of {known} (newer than this build: a later release migrated it)",
            known + 1
        )),
        "{said}"
    );
}

#[test]
fn version_names_the_git_revision() {
    // The revision of this checkout, as git says it (not the constant the binary carries,
    // which would make the test agree with itself); "unknown" outside a git checkout.
    let git = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    assert!(git == "unknown" || git.len() == 12, "{git}");
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("elior {} (git {git})\n", env!("CARGO_PKG_VERSION"))
    );
}

/// Calls `f` until `done` holds or 5 s pass; returns the last answer.
fn poll_until(f: impl Fn() -> common::Resp, done: impl Fn(&common::Resp) -> bool) -> common::Resp {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = f();
        if done(&r) || std::time::Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for the server to close `stream`, reading (and discarding) what it sends; fails
/// if the connection is still open after `limit`. Returns what was read.
fn wait_for_close(stream: &mut std::net::TcpStream, limit: std::time::Duration) -> Vec<u8> {
    use std::io::Read;
    let deadline = std::time::Instant::now() + limit;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(!left.is_zero(), "connection still open after {limit:?}");
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return seen,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return seen,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("connection still open after {limit:?}")
            }
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

/// Issue 15, slowloris: a client that sends half a request line and nothing more is
/// disconnected by the header read timeout, and so is an idle keep-alive connection.
#[test]
fn half_a_request_line_and_an_idle_keep_alive_are_closed() {
    let server = Server::start(&[]);
    let mut slow = std::net::TcpStream::connect(server.addr).unwrap();
    slow.write_all(b"GET /hea").unwrap();
    // Raw on purpose, like the half request line: a client library would not leave a
    // keep-alive connection idle without closing it when the test ends.
    let mut idle = std::net::TcpStream::connect(server.addr).unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();

    let sent = wait_for_close(&mut slow, std::time::Duration::from_secs(15));
    assert!(
        sent.is_empty() || sent.starts_with(b"HTTP/1.1 408"),
        "{sent:?}"
    );
    let answered = wait_for_close(&mut idle, std::time::Duration::from_secs(15));
    assert!(
        answered.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&answered)
    );
    // The server is fine afterwards.
    assert_eq!(server.get("/health").status, 200);
}

/// A body that stops arriving gets a 408 naming the pause, not a connection held open.
#[test]
fn a_stalled_request_body_gets_408() {
    let server = Server::start(&[]);
    // Raw on purpose: a body shorter than its Content-Length, which no client sends.
    let mut s = std::net::TcpStream::connect(server.addr).unwrap();
    s.write_all(
        b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"username\":",
    )
    .unwrap();
    let answer = wait_for_close(&mut s, std::time::Duration::from_secs(40));
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("stopped arriving"), "{text}");
}

/// The request target and the headers are bounded, and the refusals carry the API's JSON
/// error body naming the limit.
#[test]
fn oversized_targets_and_headers_get_json_414_and_431() {
    let server = Server::start(&[]);
    let long = format!("/api/users?q={}", "a".repeat(9000));
    let r = server.get(&long);
    assert_eq!(r.status, 414, "{}", r.body);
    assert!(r.json()["detail"].as_str().unwrap().contains("8192 bytes"));

    let big = "b".repeat(9000);
    let r = common::request(
        server.addr,
        "GET",
        "/api/users",
        &[("X-One", &big), ("X-Two", &big)],
        None,
    );
    assert_eq!(r.status, 431, "{}", r.body);
    assert!(r.json()["detail"].as_str().unwrap().contains("16384 bytes"));
}

/// Every error has the API's JSON body, the protocol-level ones included: 405 (with
/// `Allow`) and 413 for a JSON body over the limit.
#[test]
fn method_not_allowed_and_too_large_bodies_answer_json() {
    let server = Server::start(&[]);
    let r = request(server.addr, "DELETE", "/api/auth/login", &[], None);
    assert_eq!(r.status, 405, "{}", r.body);
    assert_eq!(r.json()["detail"], "Method Not Allowed");
    assert_eq!(r.header("allow"), Some("POST"));

    let big = format!("{{\"username\": \"{}\"}}", "a".repeat(3 * 1024 * 1024));
    let r = request(
        server.addr,
        "POST",
        "/api/auth/login",
        &[("Content-Type", "application/json")],
        Some(big.as_bytes()),
    );
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.json()["detail"]
        .as_str()
        .unwrap()
        .contains("2097152 bytes"));
}

/// GET /health, or status 0 when the server refused the connection at its limit (it
/// answers 503 before the request is written, which ends hyper's exchange).
fn health_or_refused(addr: std::net::SocketAddr) -> common::Resp {
    get_or_refused(addr, "/health")
}

/// `GET path`, or a refused exchange as status 0 with the error as its body.
fn get_or_refused(addr: std::net::SocketAddr, path: &str) -> common::Resp {
    common::try_request(addr, "GET", path, &[], None).unwrap_or_else(|e| common::Resp {
        status: 0,
        headers: Vec::new(),
        body: e,
    })
}

/// Keep-alive connections (hyper's client connection) that each got a 200 for /health and
/// stay open until dropped.
struct KeepAlive {
    // Dropping the runtime drops the connection tasks, which closes the sockets.
    _runtime: tokio::runtime::Runtime,
    _senders: Vec<hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>>,
}

impl KeepAlive {
    fn open(addr: std::net::SocketAddr, count: usize) -> KeepAlive {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let senders = runtime.block_on(async {
            let mut senders = Vec::new();
            for _ in 0..count {
                let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                        .await
                        .unwrap();
                tokio::spawn(connection);
                let request = hyper::Request::get("/health")
                    .header("host", "x")
                    .body(http_body_util::Empty::new())
                    .unwrap();
                let answer =
                    tokio::time::timeout(Duration::from_secs(15), sender.send_request(request))
                        .await
                        .expect("no answer within 15 s")
                        .unwrap();
                assert_eq!(answer.status(), 200);
                http_body_util::BodyExt::collect(answer.into_body())
                    .await
                    .unwrap();
                senders.push(sender);
            }
            senders
        });
        KeepAlive {
            _runtime: runtime,
            _senders: senders,
        }
    }
}

/// Issue 19: past MAX_CONNECTIONS (HTTP and WebSocket together) a connection gets a 503
/// with Retry-After at once, and a place that frees up is taken again.
#[test]
fn connections_past_max_connections_get_503_with_retry_after() {
    let server = Server::start(&[("MAX_CONNECTIONS", "3")]);
    let token = server.register_and_login("crowd", "crowd-password-1");
    let id = server.get_auth("/api/auth/me", &token).json()["id"]
        .as_i64()
        .unwrap();
    // The register and login connections close after their answers; their places follow.
    poll_until(|| health_or_refused(server.addr), |r| r.status == 200);

    let (mut socket, _) =
        tungstenite::connect(format!("ws://{}/api/ws/ws/{id}?token={token}", server.addr))
            .expect("websocket handshake");
    let welcome = socket.read().unwrap();
    assert!(welcome
        .to_text()
        .unwrap()
        .contains("connection_established"));
    let keep = KeepAlive::open(server.addr, 2);

    // A WebSocket and two keep-alive connections: the fourth is refused.
    // The server answers before it is asked (no request is written): read what it sends.
    let refused = common::read_response(&mut TcpStream::connect(server.addr).unwrap());
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(
        refused.json()["detail"]
            .as_str()
            .unwrap()
            .contains("connection limit (3)"),
        "{}",
        refused.body
    );
    // The WebSocket still works, and holds its place until it closes.
    socket.send(tungstenite::Message::text("ping")).unwrap();
    assert!(socket.read().unwrap().to_text().unwrap().contains("pong"));
    drop(keep);
    assert_eq!(
        poll_until(|| health_or_refused(server.addr), |r| r.status == 200).status,
        200
    );
    let log = server.log_text();
    assert!(log.contains("connection limit reached"), "{log}");

    // /metrics counts them: the WebSocket and the scrape open (once the last health
    // check's connection has been let go), the limit, and the refusals (this one, and any
    // health check above that came while the register and login connections closed).
    let metrics = poll_until(
        || get_or_refused(server.addr, "/metrics"),
        |r| r.body.contains("elior_http_connections 2\n"),
    )
    .body;
    assert!(metrics.contains("elior_http_connections 2\n"), "{metrics}");
    assert!(
        metrics.contains("elior_http_max_connections 3\n"),
        "{metrics}"
    );
    let refused: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("elior_http_refused_connections_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no refusal count in {metrics}"));
    assert!(refused >= 1, "{metrics}");
}
