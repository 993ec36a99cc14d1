//! Issue 19: SQLite's one writer, seen from outside. The real `elior serve` on a real
//! SQLite file: a full write queue answers 503 with `Retry-After` and never makes a request
//! wait without end, and a SIGKILL in the middle of group commits loses no write that was
//! acknowledged. And the memory a burst of connections took goes back to the system once
//! they close. Past `MAX_CONCURRENT_REQUESTS`, changes wait their turn without holding up
//! reads, probes or anything else.

use crate::harness::server as common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{request, Resp, Server};
use serde_json::json;

/// The database file `elior serve` uses in its temp dir (the default `DATABASE_URL`).
fn database(server: &Server) -> std::path::PathBuf {
    server.dir.path().join("data").join("elior_fitness.db")
}

fn post_weight(addr: std::net::SocketAddr, token: &str, weight: f64) -> Resp {
    let auth = format!("Bearer {token}");
    let body = json!({ "date": "2026-03-01", "weight": weight }).to_string();
    request(
        addr,
        "POST",
        "/api/progress/weight",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &auth),
        ],
        Some(body.as_bytes()),
    )
}

/// Posts a weight entry; the new entry's id once the server acknowledged it with 201,
/// `None` for any other answer or none (a killed server).
fn saved_weight(addr: std::net::SocketAddr, token: &str, weight: f64) -> Option<i64> {
    let r = ureq::post(&format!("http://{addr}/api/progress/weight"))
        .set("Authorization", &format!("Bearer {token}"))
        .timeout(Duration::from_secs(30))
        .send_json(json!({ "date": "2026-03-01", "weight": weight }))
        .ok()?;
    if r.status() != 201 {
        return None;
    }
    r.into_json::<serde_json::Value>().ok()?["id"].as_i64()
}

/// Waits (20 s at most) until `done`, instead of sleeping a fixed time.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Another process holds SQLite's write lock (here the test, as a backup or the CLI
/// would), so the writer waits on it with one write in hand and one queued
/// (`DB_WRITE_QUEUE=1`): every other write is refused at once with 503, `Retry-After` and
/// the app's JSON error, and once the lock is released the queued writes are answered
/// and saved. No request is left hanging.
#[test]
fn a_full_write_queue_answers_503_with_retry_after_and_nothing_hangs() {
    let server = Server::start(&[("DB_WRITE_QUEUE", "1")]);
    let token = server.register_and_login("queue", "queue-password-1");
    let addr = server.addr;

    let lock = rusqlite::Connection::open(database(&server)).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();

    const WRITES: usize = 12;
    let answers: Arc<Mutex<Vec<Resp>>> = Arc::default();
    let writers: Vec<_> = (0..WRITES)
        .map(|i| {
            let (token, answers) = (token.clone(), answers.clone());
            std::thread::spawn(move || {
                let r = post_weight(addr, &token, 60.0 + i as f64);
                answers.lock().unwrap().push(r);
            })
        })
        .collect();
    // At most two writes fit (one the writer holds, one queued): the others answer while
    // the lock is still held.
    wait_until("the refused writes answered", || {
        answers.lock().unwrap().len() >= WRITES - 2
    });
    lock.execute_batch("ROLLBACK").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    for w in writers {
        while !w.is_finished() {
            assert!(Instant::now() < deadline, "a write request hangs");
            std::thread::sleep(Duration::from_millis(10));
        }
        w.join().unwrap();
    }

    let answers = answers.lock().unwrap();
    let refused: Vec<_> = answers.iter().filter(|r| r.status == 503).collect();
    let saved = answers.iter().filter(|r| r.status == 201).count();
    assert_eq!(
        refused.len() + saved,
        WRITES,
        "every write is saved or refused: {answers:?}"
    );
    assert!(refused.len() >= WRITES - 2, "{answers:?}");
    assert!(
        saved >= 1,
        "the queued write is saved once the lock is free"
    );
    for r in &refused {
        assert_eq!(r.header("Retry-After"), Some("1"), "{r:?}");
        assert_eq!(r.json()["detail"], "Database busy, try again", "{r:?}");
    }
    let listed = server.get_auth("/api/progress/weight?limit=100", &token);
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(
        listed.json().as_array().unwrap().len(),
        saved,
        "{}",
        listed.body
    );
}

/// A value of the server's `/metrics`, read from an exposition checked as valid.
fn metric(server: &Server, name: &str) -> f64 {
    let scrape = crate::harness::metrics::check_exposition(&server.get("/metrics").body);
    scrape
        .value(name)
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

/// `MAX_CONCURRENT_REQUESTS=1`: a client that sent half its body and paused holds no
/// place, so a change after it is answered at once. Then a change is stuck behind SQLite's
/// write lock (held by the test, as the CLI would) and holds the one place: another
/// change and a read wait their turn, counted in `/metrics`, while `/health` and
/// `/metrics` never queue. Once the lock is released, everything is answered and saved.
#[test]
fn past_max_concurrent_requests_requests_wait_their_turn_and_probes_never_do() {
    use std::io::Write;
    let server = Server::start(&[("MAX_CONCURRENT_REQUESTS", "1")]);
    let token = server.register_and_login("admit", "admit-password-1");
    let addr = server.addr;
    assert_eq!(metric(&server, "elior_http_max_concurrent_requests"), 1.0);
    let change = |weight: f64| {
        let token = token.clone();
        std::thread::spawn(move || post_weight(addr, &token, weight))
    };

    // Half a body, then a pause.
    let body = json!({ "date": "2026-03-02", "weight": 69.5 }).to_string();
    let (head, rest) = body.split_at(10);
    let mut trickling = std::net::TcpStream::connect(addr).unwrap();
    write!(
        trickling,
        "POST /api/progress/weight HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
         Authorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{head}",
        body.len()
    )
    .unwrap();
    let after = change(70.0);
    wait_until("the change is answered or waits", || {
        after.is_finished() || metric(&server, "elior_http_waiting_requests") > 0.0
    });
    assert!(
        after.is_finished(),
        "a change waited for the place of a client that sent half its body"
    );
    assert_eq!(after.join().unwrap().status, 201);

    let lock = rusqlite::Connection::open(database(&server)).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let first = change(71.0);
    let second = change(72.0);
    // Whichever of the two came first holds the place, stuck behind the lock.
    wait_until("a change waits for the place", || {
        metric(&server, "elior_http_waiting_requests") == 1.0
    });
    let read = {
        let auth = format!("Bearer {token}");
        std::thread::spawn(move || {
            common::request(
                addr,
                "GET",
                "/api/auth/me",
                &[("Authorization", &auth)],
                None,
            )
        })
    };
    wait_until("the read waits its turn too", || {
        metric(&server, "elior_http_waiting_requests") == 2.0
    });
    assert_eq!(server.get("/health").status, 200);
    assert!(
        !first.is_finished() && !second.is_finished() && !read.is_finished(),
        "a request was answered while the only place was held"
    );

    lock.execute_batch("ROLLBACK").unwrap();
    for change in [first, second] {
        let r = change.join().unwrap();
        assert_eq!(r.status, 201, "{r:?}");
    }
    let me = read.join().unwrap();
    assert_eq!(me.status, 200, "{me:?}");
    assert_eq!(metric(&server, "elior_http_waiting_requests"), 0.0);
    // The paused client finishes its request, and it is saved like any other.
    trickling.write_all(rest.as_bytes()).unwrap();
    let r = common::read_response(&mut trickling);
    assert_eq!(r.status, 201, "{r:?}");
    let listed = server.get_auth("/api/progress/weight?limit=10", &token);
    assert_eq!(
        listed.json().as_array().unwrap().len(),
        4,
        "{}",
        listed.body
    );
}

/// Writers keep posting while the server is killed with SIGKILL, in the middle of its
/// group commits: every weight entry that got its 201 is in the file afterwards.
#[test]
fn a_sigkill_during_group_commits_loses_no_acknowledged_write() {
    let mut server = Server::start(&[]);
    let token = server.register_and_login("durable", "durable-password-1");
    let addr = server.addr;

    let acknowledged: Arc<Mutex<Vec<i64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let (token, acknowledged, stop) = (token.clone(), acknowledged.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let weight = 50.0 + w as f64 + n as f64 / 1000.0;
                    if let Some(id) = saved_weight(addr, &token, weight) {
                        acknowledged.lock().unwrap().push(id);
                    }
                }
            })
        })
        .collect();
    wait_until("writes were acknowledged", || {
        acknowledged.lock().unwrap().len() >= 300
    });
    common::signal(server.child.id(), "KILL");
    common::wait_with_deadline(&mut server.child, Duration::from_secs(10));
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }

    let acknowledged = acknowledged.lock().unwrap().clone();
    let db = rusqlite::Connection::open(database(&server)).unwrap();
    let mut present = db
        .prepare("SELECT 1 FROM weight_entries WHERE id = ?1")
        .unwrap();
    let lost: Vec<i64> = acknowledged
        .iter()
        .copied()
        .filter(|id| !present.exists([id]).unwrap())
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {lost:?}",
        lost.len(),
        acknowledged.len()
    );
}

/// One keep-alive `GET /api/auth/me` on a raw connection, its answer read whole; the
/// connection stays open (and hyper keeps its buffers for it).
fn open_connection(addr: std::net::SocketAddr, token: &str) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET /api/auth/me HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "the server closed a keep-alive connection");
        answer.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("a content-length");
            if body.len() >= length {
                return stream;
            }
        }
    }
}

/// The memory a burst of connections took goes back to the system once they close.
/// glibc returns freed heap by itself only from the top of a heap; before the server
/// trimmed it, the freed buffers of closed connections stayed resident for good.
#[test]
fn the_memory_of_closed_connections_is_given_back_to_the_system() {
    // Logging in leaves no free heap behind with glibc tuned as in the image.
    let server = Server::start(&common::image_malloc_env());
    let token = server.register_and_login("burst", "burst-password-1");
    let pid = server.child.id();
    let before = common::status_kib(pid, "RssAnon:");

    // About 10 KiB for each open connection (hyper's buffers, the task, the socket's
    // registration); 700 stay under the 768 connections a 1,024-descriptor limit allows.
    let connections: Vec<_> = (0..700)
        .map(|_| open_connection(server.addr, &token))
        .collect();
    let during = common::status_kib(pid, "RssAnon:");
    assert!(
        during > before + 4 * 1024,
        "700 open connections took RssAnon only from {before} to {during} KiB"
    );
    drop(connections);

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut now = common::status_kib(pid, "RssAnon:");
    while now > before + (during - before) / 4 {
        assert!(
            Instant::now() < deadline,
            "30 s after 700 connections closed, RssAnon is {now} KiB: {before} before them, {during} with them open"
        );
        std::thread::sleep(Duration::from_millis(100));
        now = common::status_kib(pid, "RssAnon:");
    }
}
