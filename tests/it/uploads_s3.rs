//! Uploads on S3-compatible storage (issue 16), against a real `moto_server` (PyPI's
//! `moto[server]`, which scripts/test installs) started by each test on a free loopback
//! port and killed when the test ends, even when it fails. Nothing is mocked in elior.
//!
//! Covered: upload, download (original, thumbnail, medium, a document), delete and user
//! deletion with the objects in the bucket and nothing on local disk; two `elior serve`
//! processes on one PostgreSQL database and one bucket; each bad setting stopping the start in
//! one line; hostile names never leaving the prefix; the store going away (503s, no row
//! recorded, no detail leaked) and coming back; `elior backup` refusing S3 uploads.

use crate::harness::api as api_harness;
use crate::harness::moto as moto_support;
use crate::harness::pg as pg_harness;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use api_harness::{Cast, Server};
use moto_support::{free_port, Moto};

const BUCKET: &str = "elior-uploads";
const PREFIX: &str = "stack-a/uploads";

/// The settings of a server whose uploads go to `moto`'s bucket under [`PREFIX`].
fn s3_env(moto: &Moto) -> Vec<(&'static str, String)> {
    vec![
        ("UPLOADS_URL", format!("s3://{BUCKET}/{PREFIX}")),
        ("S3_ENDPOINT", moto.endpoint()),
        ("S3_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "AKIDELIORTEST".into()),
        ("AWS_SECRET_ACCESS_KEY", "elior-test-secret-key".into()),
    ]
}

fn start_server(dir: tempfile::TempDir, env: &[(&'static str, String)]) -> Server {
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Server::start_in(dir, &pairs)
}

fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 90]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// The smallest well-formed PDF (as in src/files/mod.rs's tests).
const PDF: &[u8] = b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n\
2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj\n\
3 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 10 10] >> endobj\n\
xref\n0 4\n0000000000 65535 f \n0000000009 00000 n \n0000000058 00000 n \n0000000115 00000 n \n\
trailer << /Size 4 /Root 1 0 R >>\nstartxref\n182\n%%EOF\n";

/// The keys of one stored file: original and, for an image, its two derivatives.
fn keys_of(kind: &str, name: &str, image: bool) -> Vec<String> {
    let mut keys = vec![format!("{PREFIX}/{kind}/{name}")];
    if image {
        keys.push(format!("{PREFIX}/{kind}/medium/{name}"));
        keys.push(format!("{PREFIX}/{kind}/thumbnail/{name}"));
    }
    keys
}

/// Files (not folders) under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

fn rows_in_files_table(db: &std::path::Path) -> i64 {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    c.query_row("SELECT count(*) FROM files", [], |r| r.get(0))
        .unwrap()
}

fn poll<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn uploads_live_in_the_bucket_not_on_disk() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    // Someone else's object beside the prefix: no request may reach it.
    moto.put_object(BUCKET, "private/other-stack.png", &png(4, 4));
    let mut env = s3_env(&moto);
    // Requests from 127.0.0.1 count as the stack's nginx: with S3 the API must still
    // stream the bytes itself (nginx only mounts the local folder).
    env.push(("TRUSTED_PROXIES", "127.0.0.1/32".into()));
    let s = start_server(tempfile::tempdir().unwrap(), &env);
    let cast = Cast::new(&s);
    let c = &cast.client.token;

    let health = s.call("GET", "/health", None, None);
    assert_eq!(health.status, 200, "{:?}", health.body);
    assert_eq!(health.body["storage"]["kind"], "s3");
    assert_eq!(health.body["storage"]["status"], "connected");

    // An image: original and both derivatives, under a random name whatever the client
    // called it.
    let photo = png(1200, 600);
    let r = s.upload(
        "/api/files/upload/progress_photos",
        c,
        "file",
        "../../../private/escape.png",
        &photo,
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let name = r.body["name"].as_str().unwrap().to_string();
    let url = r.body["url"].as_str().unwrap().to_string();
    assert!(!name.contains("escape") && !name.contains('/'), "{name}");

    let original = s.get(&url, c);
    assert_eq!(original.status, 200);
    assert_eq!(
        original.bytes, photo,
        "the original comes back byte for byte"
    );
    assert_eq!(original.header("content-type"), Some("image/png"));
    assert_eq!(original.header("x-accel-redirect"), None);
    assert_eq!(
        original.header("content-length"),
        Some(photo.len().to_string().as_str())
    );
    for (size, width) in [("thumbnail", 150), ("medium", 600)] {
        let r = s.get(&format!("{url}?size={size}"), c);
        assert_eq!(r.status, 200, "{size}");
        let img = image::load_from_memory(&r.bytes).unwrap();
        assert_eq!(img.width(), width, "{size}");
    }

    // A document: no derivatives, downloaded as an attachment.
    let r = s.upload("/api/files/upload/documents", c, "file", "plan.pdf", PDF);
    assert_eq!(r.status, 201, "{:?}", r.body);
    let doc_name = r.body["name"].as_str().unwrap().to_string();
    let doc_url = r.body["url"].as_str().unwrap().to_string();
    let doc = s.get(&format!("{doc_url}?size=thumbnail"), c);
    assert_eq!(doc.status, 200);
    assert_eq!(doc.bytes, PDF);
    assert!(doc
        .header("content-disposition")
        .unwrap()
        .starts_with("attachment"));

    // Access checks stay in the API: the trainer reads, another client gets 404.
    assert_eq!(s.get(&url, &cast.trainer.token).status, 200);
    assert_eq!(s.get(&url, &cast.other_client.token).status, 404);
    assert_eq!(s.get(&url, &cast.other_trainer.token).status, 404);

    // The objects are in the bucket, under the prefix, and nothing is on local disk.
    let mut expected = keys_of("progress_photos", &name, true);
    expected.extend(keys_of("documents", &doc_name, false));
    expected.push(format!("{PREFIX}/.elior/store-check"));
    expected.push("private/other-stack.png".into());
    expected.sort();
    assert_eq!(moto.keys(BUCKET), expected);
    let local = files_under(&s.dir.path().join("uploads"));
    assert!(local.is_empty(), "files on local disk: {local:?}");

    // Hostile names never become keys: each is refused before the store is asked.
    for hostile in [
        "/api/files/media/progress_photos/..%2F..%2F..%2Fprivate%2Fother-stack.png",
        "/api/files/media/progress_photos/%2E%2E%2F%2E%2E%2Fprivate%2Fother-stack.png",
        "/api/files/media/progress_photos/..%5C..%5Cprivate%5Cother-stack.png",
        "/api/files/media/progress_photos/other-stack.png",
        "/api/files/media/private/other-stack.png",
    ] {
        let r = s.get(hostile, &cast.admin.token);
        assert_eq!(r.status, 404, "{hostile}: {:?}", r.body);
        assert!(r.bytes.len() < 200, "{hostile} returned a body");
        let r = s.delete(hostile, &cast.admin.token);
        assert_eq!(r.status, 404, "DELETE {hostile}");
    }
    assert!(moto
        .keys(BUCKET)
        .contains(&"private/other-stack.png".to_string()));

    // Delete removes the original and its derivatives from the bucket.
    assert_eq!(s.delete(&url, c).status, 200);
    assert_eq!(s.get(&url, c).status, 404);
    let keys = moto.keys(BUCKET);
    assert!(
        !keys.iter().any(|k| k.contains(&name)),
        "left in the bucket: {keys:?}"
    );

    // Deleting a user removes their files too.
    let r = s.upload(
        "/api/files/upload/meal_photos",
        c,
        "file",
        "m.png",
        &png(30, 30),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let meal_name = r.body["name"].as_str().unwrap().to_string();
    assert!(moto.keys(BUCKET).iter().any(|k| k.contains(&meal_name)));
    let r = s.delete(&format!("/api/users/{}", cast.client.id), &cast.admin.token);
    assert_eq!(r.status, 200, "{:?}", r.body);
    let keys = moto.keys(BUCKET);
    assert!(
        !keys
            .iter()
            .any(|k| k.contains(&meal_name) || k.contains(&doc_name)),
        "left in the bucket: {keys:?}"
    );
    assert!(files_under(&s.dir.path().join("uploads")).is_empty());
}

/// Two API processes on one PostgreSQL database and one bucket, each with its own (unused)
/// local folder, as N replicas run (issue 16): a file uploaded through one is downloaded,
/// and deleted, through the other.
#[test]
fn two_servers_share_one_database_and_bucket() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let cluster = pg_harness::Cluster::start();
    let mut env = s3_env(&moto);
    env.push(("DATABASE_URL", cluster.database()));
    let a = start_server(tempfile::tempdir().unwrap(), &env);
    let b = start_server(tempfile::tempdir().unwrap(), &env);
    let cast = Cast::new(&a);

    let photo = png(800, 800);
    let r = a.upload(
        "/api/files/upload/progress_photos",
        &cast.client.token,
        "file",
        "me.png",
        &photo,
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let url = r.body["url"].as_str().unwrap().to_string();
    let name = r.body["name"].as_str().unwrap().to_string();

    let got = b.get(&url, &cast.trainer.token);
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(got.bytes, photo);
    let thumb = b.get(&format!("{url}?size=thumbnail"), &cast.client.token);
    assert_eq!(thumb.status, 200);
    assert_eq!(image::load_from_memory(&thumb.bytes).unwrap().width(), 150);
    assert_eq!(b.get(&url, &cast.other_client.token).status, 404);

    assert_eq!(b.delete(&url, &cast.client.token).status, 200);
    assert_eq!(a.get(&url, &cast.client.token).status, 404);
    assert!(!moto.keys(BUCKET).iter().any(|k| k.contains(&name)));
    for server in [&a, &b] {
        assert!(files_under(&server.dir.path().join("uploads")).is_empty());
    }
}

/// Runs `elior serve` expecting it to refuse to start; returns its stderr and how long
/// it took.
fn refused_start(env: &[(&str, String)]) -> (String, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_elior"));
    cmd.args(["serve", "--bind", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("JWT_SECRET", "test-secret-0123456789abcdef0123456789")
        .env("LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .collect::<Vec<_>>()
        .join("\n");
    let status = child.wait().unwrap();
    let took = started.elapsed();
    assert_eq!(status.code(), Some(2), "serve should refuse: {stderr}");
    assert!(
        !stderr.contains("listening on"),
        "refused after serving: {stderr}"
    );
    (stderr, took)
}

/// The one line the start ends with, which must begin with `elior: {key}`.
fn the_line(stderr: &str, key: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line, not: {stderr}");
    assert!(
        lines[0].starts_with(&format!("elior: {key}"))
            || lines[0].starts_with(&format!("elior: invalid configuration: {key}")),
        "{key} first: {stderr}"
    );
    lines[0].to_string()
}

#[test]
fn bad_settings_stop_the_start_in_one_line() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let with = |changes: &[(&'static str, String)]| {
        let mut env = s3_env(&moto);
        for (k, v) in changes {
            env.retain(|(key, _)| key != k);
            env.push((k, v.clone()));
        }
        env
    };

    // A scheme that is not s3://.
    let (err, _) = refused_start(&with(&[("UPLOADS_URL", "gs://elior-uploads/x".into())]));
    let line = the_line(&err, "UPLOADS_URL");
    assert!(
        line.contains("is not an s3:// URL; use s3://BUCKET/PREFIX"),
        "{line}"
    );

    // A bucket that does not exist.
    let (err, _) = refused_start(&with(&[("UPLOADS_URL", "s3://no-such-bucket/x".into())]));
    let line = the_line(&err, "UPLOADS_URL");
    assert!(
        line.contains("bucket \"no-such-bucket\" does not exist") && line.contains("create it"),
        "{line}"
    );

    // An endpoint where nothing listens: refused at once.
    let closed = free_port();
    let (err, took) = refused_start(&with(&[(
        "S3_ENDPOINT",
        format!("http://127.0.0.1:{closed}"),
    )]));
    let line = the_line(&err, "S3_ENDPOINT");
    assert!(
        line.contains("cannot reach") && line.contains("Connection refused"),
        "{line}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");

    // An endpoint that accepts connections but never answers: a short timeout.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let (err, took) = refused_start(&with(&[(
        "S3_ENDPOINT",
        format!("http://{}", silent.local_addr().unwrap()),
    )]));
    let line = the_line(&err, "S3_ENDPOINT");
    assert!(line.contains("did not answer within 5s"), "{line}");
    assert!(took < Duration::from_secs(12), "took {took:?}");
    drop(silent);

    // Settings that cannot be right before anything is asked.
    let (err, _) = refused_start(&with(&[("S3_ENDPOINT", "minio:9000".into())]));
    the_line(&err, "S3_ENDPOINT");
    let mut no_secret = s3_env(&moto);
    no_secret.retain(|(k, _)| *k != "AWS_SECRET_ACCESS_KEY");
    let (err, _) = refused_start(&no_secret);
    the_line(&err, "AWS_SECRET_ACCESS_KEY is not set");

    // Wrong credentials: a moto that checks them after two requests (the readiness
    // probe, then making the bucket).
    let strict = Moto::start_with(free_port(), &[("INITIAL_NO_AUTH_ACTION_COUNT", "2")]);
    strict.create_bucket(BUCKET);
    let mut env = s3_env(&strict);
    env.retain(|(k, _)| *k != "AWS_ACCESS_KEY_ID");
    env.push(("AWS_ACCESS_KEY_ID", "AKIDNOTAKEY".into()));
    let (err, _) = refused_start(&env);
    let line = the_line(&err, "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY");
    assert!(
        line.contains("refused the credentials (InvalidAccessKeyId)"),
        "{line}"
    );
    assert!(!line.contains("elior-test-secret-key"), "secret in: {line}");
}

/// The store goes away under a running server: /health turns 503 naming the store,
/// uploads and downloads answer a generic 503 (no endpoint, key or path in the body),
/// and no file row is recorded. When it is back, so is the server.
#[test]
fn a_store_that_goes_away_fails_cleanly_and_comes_back() {
    let mut moto = Moto::start();
    moto.create_bucket(BUCKET);
    let port = moto.port;
    let s = start_server(tempfile::tempdir().unwrap(), &s3_env(&moto));
    let cast = Cast::new(&s);
    let c = &cast.client.token;
    let db = s.dir.path().join("elior.db");

    let r = s.upload(
        "/api/files/upload/progress_photos",
        c,
        "file",
        "a.png",
        &png(64, 64),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let url = r.body["url"].as_str().unwrap().to_string();
    assert_eq!(rows_in_files_table(&db), 1);

    moto.stop();
    let health = poll("/health turns 503", Duration::from_secs(20), || {
        let r = s.call("GET", "/health", None, None);
        (r.status == 503).then_some(r)
    });
    assert_eq!(health.body["status"], "unhealthy");
    assert_eq!(health.body["database"]["status"], "connected");
    assert_eq!(health.body["storage"]["kind"], "s3");
    assert_eq!(health.body["storage"]["status"], "disconnected");
    assert_eq!(health.body["storage"]["error"], "unreachable");

    let leaks = |body: &[u8]| {
        let text = String::from_utf8_lossy(body);
        [
            "127.0.0.1",
            "s3://",
            BUCKET,
            PREFIX,
            "/tmp",
            "Error performing",
        ]
        .iter()
        .any(|l| text.contains(l))
    };
    let started = Instant::now();
    let r = s.upload(
        "/api/files/upload/progress_photos",
        c,
        "file",
        "b.png",
        &png(64, 64),
    );
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(
        r.body["detail"],
        "File storage is unavailable, try again later"
    );
    assert!(!leaks(&r.bytes), "{:?}", r.body);
    assert!(started.elapsed() < Duration::from_secs(10));
    let r = s.upload("/api/files/upload/documents", c, "file", "b.pdf", PDF);
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(
        rows_in_files_table(&db),
        1,
        "no row for a file never stored"
    );

    let r = s.get(&url, c);
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert!(!leaks(&r.bytes), "{:?}", r.body);

    // Back on the same address (moto starts empty: the bucket is made again).
    let moto = Moto::start_with(port, &[]);
    moto.create_bucket(BUCKET);
    poll("/health turns 200", Duration::from_secs(20), || {
        (s.call("GET", "/health", None, None).status == 200).then_some(())
    });
    let r = s.upload(
        "/api/files/upload/progress_photos",
        c,
        "file",
        "c.png",
        &png(64, 64),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(rows_in_files_table(&db), 2);
    let name = r.body["name"].as_str().unwrap();
    assert!(moto.keys(BUCKET).iter().any(|k| k.ends_with(name)));
}

/// `elior backup` of a stack whose uploads are on S3 refuses, rather than archive the
/// empty local folder as if it were the uploads.
#[test]
fn backup_refuses_uploads_on_s3() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env.production"),
        "UPLOADS_URL=s3://elior-uploads/stack-a\nS3_ENDPOINT=http://127.0.0.1:9\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_elior"))
        .args(["backup", "--dir"])
        .arg(dir.path())
        .env_remove("UPLOADS_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("UPLOADS_URL: backups of uploads kept on S3 (s3://elior-uploads/stack-a) are not supported yet"),
        "{stderr}"
    );
    assert!(!dir.path().join("backups").exists(), "nothing was written");
}

/// A deployed stack hands the keys from .env.production to the API container like every
/// other key (compose `env_file`), knows them (no "unknown key" warning), and `render`
/// refuses a bad one before anything is deployed.
#[test]
fn the_stack_passes_the_s3_keys_to_the_api_container() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("stack");
    let elior = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_elior"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = elior(&[
        "init",
        "gym.example.com",
        "--dir",
        dir.to_str().unwrap(),
        "--email",
        "ops@example.com",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let env_file = dir.join(".env.production");
    let original = std::fs::read_to_string(&env_file).unwrap();
    let s3 = "UPLOADS_URL=s3://elior-uploads/gym\nS3_ENDPOINT=https://minio.example.com\nS3_REGION=eu-west-1\nAWS_ACCESS_KEY_ID=AKIDSTACK\nAWS_SECRET_ACCESS_KEY=stack-secret-key\n";
    std::fs::write(&env_file, format!("{original}{s3}")).unwrap();

    let out = elior(&["render", "--dir", dir.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("unknown key"), "{stderr}");
    let raw = elior::config::model::settings(&dir).unwrap();
    let stack = elior::docker::compose::load(&dir, &raw).unwrap();
    let api = stack
        .services
        .iter()
        .find(|s| s.service == "api")
        .expect("an api service");
    for line in s3.lines() {
        let (key, value) = line.split_once('=').unwrap();
        assert_eq!(api.env.get(key).map(String::as_str), Some(value), "{key}");
    }

    std::fs::write(
        &env_file,
        format!(
            "{original}{}",
            s3.replace("s3://elior-uploads", "gs://elior-uploads")
        ),
    )
    .unwrap();
    let out = elior(&["render", "--dir", dir.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("UPLOADS_URL") && stderr.contains("is not an s3:// URL"),
        "{stderr}"
    );
}
