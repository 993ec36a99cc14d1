//! Offsite copies and disaster recovery (issue 17, items 6 and 7) against a real
//! `moto_server`, running the `elior` binary as a user does: the backup goes to the
//! bucket after it is verified, the whole stack directory is deleted, and an empty
//! directory is restored from the bucket (its keys in the environment; the env file comes
//! back from the backup) and served, with the old users. Then the attacks: a kill mid-upload, a tampered object,
//! wrong credentials and a missing bucket, two stacks in one bucket, a prefix that holds
//! another stack's backups.

use crate::harness::api as api_harness;
use crate::harness::backup as backup_support;
use crate::harness::docker as docker_harness;
use crate::harness::moto as moto_support;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use api_harness::{Cast, Server};
use backup_support::{age_snapshot, killed_by_sigkill, stderr, stdout, tree};
use docker_harness::TestStack;
use moto_support::{free_port, Moto};

const ELIOR: &str = env!("CARGO_BIN_EXE_elior");
const BUCKET: &str = "elior-offsite-test";

/// A stack directory whose API runs as `elior serve` on its `./elior.db` and `./uploads`,
/// backing up into `./backups` and to `s3://BUCKET/PREFIX` on `moto`.
struct Stack {
    dir: PathBuf,
}

fn env_file(moto: &Moto, prefix: &str, format: &str, extra: &str) -> String {
    format!(
        "DATABASE_URL=sqlite:///./elior.db\nUPLOAD_DIR=./uploads\nBACKUP_DIR=./backups\nBACKUP_FORMAT={format}\nBACKUP_OFFSITE=s3://{BUCKET}/{prefix}\nS3_ENDPOINT={}\nS3_REGION=us-east-1\nAWS_ACCESS_KEY_ID=AKIDELIORTEST\nAWS_SECRET_ACCESS_KEY=elior-test-secret-key\nJWT_SECRET=test-secret-0123456789abcdef0123456789\n{extra}",
        moto.endpoint()
    )
}

impl Stack {
    fn new(dir: &Path, env: &str) -> Stack {
        fs::create_dir_all(dir.join("uploads/progress")).unwrap();
        fs::write(dir.join(".env.production"), env).unwrap();
        Stack {
            dir: dir.to_path_buf(),
        }
    }

    /// Some data: a database with rows and a few uploads, one of them big enough to
    /// span packs.
    fn seed(&self) {
        let conn = rusqlite::Connection::open(self.dir.join("elior.db")).unwrap();
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);",
        )
        .unwrap();
        for i in 0..500 {
            conn.execute(
                "INSERT INTO notes (body) VALUES (?1)",
                [format!("note {i} {}", "y".repeat(200))],
            )
            .unwrap();
        }
        self.seed_uploads();
    }

    fn seed_uploads(&self) {
        let up = self.dir.join("uploads");
        fs::create_dir_all(up.join("progress")).unwrap();
        fs::write(up.join("progress/note.txt"), "bench 5x5 at 100kg").unwrap();
        let photo: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        fs::write(up.join("progress/front.jpg"), photo).unwrap();
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(ELIOR);
        command
            .args(args)
            .arg("--dir")
            .arg(&self.dir)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        for key in [
            "DATABASE_URL",
            "UPLOAD_DIR",
            "BACKUP_DIR",
            "BACKUP_OFFSITE",
            "S3_ENDPOINT",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "UPLOADS_URL",
        ] {
            command.env_remove(key);
        }
        command
    }

    fn elior(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn backup(&self) -> serde_json::Value {
        let out = self.elior(&["backup", "--json"]);
        assert!(
            out.status.success(),
            "backup failed: {}{}",
            stdout(&out),
            stderr(&out)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn backups(&self) -> PathBuf {
        self.dir.join("backups")
    }

    /// The files of the backup folder that belong offsite, as keys.
    fn local_objects(&self) -> BTreeSet<String> {
        let root = self.backups();
        let mut found = BTreeSet::new();
        let mut walk = vec![root.clone()];
        while let Some(dir) = walk.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let rel = path
                    .strip_prefix(&root)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string();
                if path.is_dir() {
                    if !rel.ends_with("tmp") && !rel.contains(".elior") {
                        walk.push(path);
                    }
                } else if !rel.ends_with("files-cache.json")
                    && !rel.split('/').next_back().unwrap().starts_with('.')
                {
                    found.insert(rel);
                }
            }
        }
        found
    }

    /// The offsite backups, as `backup list --offsite --json` reports them.
    fn offsite_list(&self) -> serde_json::Value {
        let out = self.elior(&["backup", "list", "--offsite", "--json"]);
        assert!(out.status.success(), "list --offsite: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// Writes an object as the bucket's owner would (with elior's own S3 client): how an
/// attacker with the keys, or bit rot, changes an object.
fn put_signed(moto: &Moto, key: &str, bytes: Vec<u8>) {
    use object_store::ObjectStoreExt;
    let settings = elior::files::settings::S3Settings {
        bucket: BUCKET.into(),
        prefix: String::new(),
        endpoint: Some(moto.endpoint()),
        region: "us-east-1".into(),
        access_key_id: "AKIDELIORTEST".into(),
        secret_access_key: elior::config::Secret::new("elior-test-secret-key"),
    };
    let client = elior::files::store::client(&settings, "TEST", 0).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(client.put(
            &object_store::path::Path::from(key),
            object_store::PutPayload::from(bytes),
        ))
        .unwrap();
}

/// The keys under `prefix/`, relative to it.
fn remote(moto: &Moto, prefix: &str) -> BTreeSet<String> {
    moto.keys(BUCKET)
        .into_iter()
        .filter_map(|k| k.strip_prefix(&format!("{prefix}/")).map(String::from))
        .collect()
}

fn complete_ids(list: &serde_json::Value) -> Vec<String> {
    list["backups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["complete"] == true)
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect()
}

/// The drill of the issue: back up a stack with users and uploads, delete the whole
/// directory, restore from the bucket into an empty one, with only the bucket's keys in
/// the environment, serve it, and log in as a user created before the backup. A
/// directory that brings its own, different env file keeps it.
#[test]
fn disaster_recovery_from_the_bucket_serves_the_old_users() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let env = env_file(&moto, "gym/prod", "repository", "");

    let old = tempfile::tempdir().unwrap();
    let stack = Stack::new(old.path(), &env);
    let server = Server::start_in(old, &[]);
    let _cast = Cast::new(&server);
    stack.seed_uploads();
    let mut server = server;
    assert!(server.terminate().success());
    let uploads_before = tree(&stack.dir.join("uploads"));

    let made = stack.backup();
    let id = made["id"].as_str().unwrap().to_string();
    let offsite = &made["offsite"];
    assert_eq!(offsite["sent"], serde_json::json!([id]), "{made:#}");
    assert_eq!(offsite["offsite_backups"], 1);
    assert!(offsite["uploaded"].as_u64().unwrap() >= 3, "{offsite:#}");
    // Exactly the repository's files went up (and the stack record), nothing else.
    let mut expected = stack.local_objects();
    expected.insert("stack.json".into());
    assert_eq!(remote(&moto, "gym/prod"), expected);
    assert_eq!(
        complete_ids(&stack.offsite_list()),
        std::slice::from_ref(&id)
    );
    let verified = stack.elior(&["backup", "verify", "--offsite"]);
    assert!(
        verified.status.success(),
        "verify --offsite: {}{}",
        stdout(&verified),
        stderr(&verified)
    );
    assert!(stdout(&verified).contains(&format!("ok      {id}")));

    // The host is gone: the stack directory, its backups and its identity.
    drop(server);
    assert!(!stack.dir.exists());

    let new = tempfile::tempdir().unwrap();
    let from = format!("s3://{BUCKET}/gym/prod");
    // Neither an env file nor keys in the environment: said plainly, nothing written.
    let fresh = Stack {
        dir: new.path().to_path_buf(),
    };
    let out = fresh.elior(&["restore", "--from", &from, "--yes"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("set S3_ENDPOINT, S3_REGION, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment"),
        "{}",
        stderr(&out)
    );
    assert!(!new.path().join(".env.production").exists());

    // The old way: a directory that brings its own env file, here a different one. It is
    // kept, and the backup's (without its secrets) is put beside it.
    let own = tempfile::tempdir().unwrap();
    let own_env = format!("{env}LOG_LEVEL=debug\n");
    let byo = Stack::new(own.path(), &own_env);
    fs::remove_dir_all(own.path().join("uploads")).unwrap();
    let out = byo.elior(&["restore", "--from", &from, "--yes"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let beside = own.path().join(format!(".env.production.backup-{id}"));
    assert!(
        stdout(&out).contains(&format!(
            "kept {}, which differs from the backup's; the backup's is at {}",
            own.path().join(".env.production").display(),
            beside.display()
        )),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        fs::read_to_string(own.path().join(".env.production")).unwrap(),
        own_env
    );
    let carried = fs::read_to_string(&beside).unwrap();
    assert_eq!(mode(&beside), 0o600);
    assert!(carried.contains(&format!("BACKUP_OFFSITE=s3://{BUCKET}/gym/prod")));
    // Whoever reads the bucket gets neither the signing key nor the bucket's keys.
    for secret in ["elior-test-secret-key", "test-secret-0123456789abcdef"] {
        assert!(!carried.contains(secret), "{secret} in {carried}");
    }
    assert_eq!(tree(&own.path().join("uploads")), uploads_before);

    // A fresh host: an empty directory, the bucket's coordinates and keys in the
    // environment. The env file comes back from the backup and says where the rest goes.
    let out = fresh
        .command(&["restore", "--from", &from, "--yes"])
        .envs(bucket_env(&moto))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "restore --from: {}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains(&format!("restored backup {id}"))
            && stdout(&out).contains("JWT_SECRET: a new one")
            && stdout(&out).contains("AWS_SECRET_ACCESS_KEY: from this command's environment"),
        "{}",
        stdout(&out)
    );
    let restored_env = new.path().join(".env.production");
    assert_eq!(mode(&restored_env), 0o600);
    let restored = elior::config::RawSettings::from_env_file(&restored_env).unwrap();
    assert_eq!(restored.get("DATABASE_URL"), Some("sqlite:///./elior.db"));
    assert_eq!(
        restored.get("AWS_SECRET_ACCESS_KEY"),
        Some("elior-test-secret-key")
    );
    assert_ne!(
        restored.get("JWT_SECRET"),
        Some("test-secret-0123456789abcdef0123456789")
    );
    assert_eq!(tree(&new.path().join("uploads")), uploads_before);
    // The new directory is the same stack: its next backups go to the same prefix.
    assert!(new.path().join(".elior/stack.json").is_file());
    let server = Server::start_in(new, &[]);
    server.login("trainer_a");
    server.login("client_a");
    // With the keys of the restored env file alone (the environment has none).
    let again = fresh.backup();
    assert_eq!(again["offsite"]["offsite_backups"], 2, "{again:#}");
}

/// The bucket's coordinates and keys, as an operator exports them on a new host.
fn bucket_env(moto: &Moto) -> Vec<(&'static str, String)> {
    vec![
        ("S3_ENDPOINT", moto.endpoint()),
        ("S3_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "AKIDELIORTEST".into()),
        ("AWS_SECRET_ACCESS_KEY", "elior-test-secret-key".into()),
    ]
}

fn mode(path: &Path) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(&fs::metadata(path).unwrap().permissions()) & 0o777
}

/// `elior ARGS --dir DIR`, as an operator runs it (the bucket's keys come from the
/// stack's .env.production, never from this process's environment).
fn elior_in(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(ELIOR)
        .args(args)
        .arg("--dir")
        .arg(dir)
        .env("NO_COLOR", "1")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "elior {args:?} failed:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
    out
}

/// `elior admin create` for NAME@example.com, the password on standard input.
fn admin_create(dir: &Path, name: &str) {
    use std::io::Write;
    let mut child = Command::new(ELIOR)
        .args(["admin", "create", "--dir"])
        .arg(dir)
        .args([
            "--email",
            &format!("{name}@example.com"),
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"Correct-Horse-9-Battery\n").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "admin create: {}", stderr(&out));
}

/// Logs in as NAME through the stack's nginx over HTTPS, trusting only the certificate
/// in `pinned` (so a success also proves which certificate nginx serves), on the domain
/// and HTTPS port of `stack`'s env file. The status.
fn login_pinned(pinned: &Path, stack: &TestStack, name: &str) -> Result<u16, String> {
    let client = elior::probe::https::PinnedClient::from_pem_file(pinned).unwrap();
    let body = format!(r#"{{"username": "{name}", "password": "Correct-Horse-9-Battery"}}"#);
    docker_harness::runtime()
        .block_on(client.send(
            std::net::SocketAddr::from(([127, 0, 0, 1], stack.https_port)),
            &stack.domain,
            "POST",
            "/api/auth/login",
            &[("content-type", "application/json")],
            Some(body.as_bytes()),
            std::time::Duration::from_secs(10),
        ))
        .map(|r| r.status)
        .map_err(|e| format!("{e:#}"))
}

/// The drill of the issue on a stack deployed on the Docker Engine: a user is created in
/// the running API, the stack is backed up to the bucket, taken down and its directory
/// deleted; a new directory holding only the old .env.production is restored from the
/// bucket and deployed. The old user logs in over HTTPS, and nginx serves the old
/// certificate (a client trusting only it connects), which came back with its key (mode
/// 0600), as did the uploads.
#[test]
fn disaster_recovery_of_a_deployed_stack_brings_back_its_users_and_certificate() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let old = TestStack::new("dr-old");
    old.init();
    old.set_env(&[
        ("BACKUP_FORMAT", "repository"),
        ("BACKUP_OFFSITE", &format!("s3://{BUCKET}/deployed")),
        ("S3_ENDPOINT", &moto.endpoint()),
        ("S3_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "AKIDELIORTEST"),
        ("AWS_SECRET_ACCESS_KEY", "elior-test-secret-key"),
    ]);
    elior_in(&old.dir, &["deploy", &old.domain]);
    admin_create(&old.dir, "keeper");
    fs::write(old.dir.join("uploads/dr-note.txt"), "squat 3x5 at 120kg").unwrap();
    // Kept outside the stack directory, as the operator keeps the env file.
    let cert = old.tmp.path().join("served-before.pem");
    fs::copy(old.dir.join("nginx/ssl/cert.pem"), &cert).unwrap();
    let key = fs::read(old.dir.join("nginx/ssl/key.pem")).unwrap();
    let env = fs::read(old.env_path()).unwrap();
    assert_eq!(login_pinned(&cert, &old, "keeper"), Ok(200));
    let uploads_before = tree(&old.dir.join("uploads"));

    let out = elior_in(&old.dir, &["backup", "--json"]);
    let made: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = made["id"].as_str().unwrap();
    assert_eq!(made["offsite"]["sent"], serde_json::json!([id]), "{made:#}");

    // The host is gone: its containers, and the whole stack directory.
    elior_in(&old.dir, &["down"]);
    fs::remove_dir_all(&old.dir).unwrap();

    // The new host: a directory with the old .env.production (the same domain and
    // ports), restored from the bucket, then deployed.
    let new = TestStack::new("dr-new");
    fs::create_dir_all(&new.dir).unwrap();
    fs::write(new.dir.join(".env.production"), &env).unwrap();
    let from = format!("s3://{BUCKET}/deployed");
    let out = elior_in(&new.dir, &["restore", "--from", &from, "--yes"]);
    assert!(
        stdout(&out).contains(&format!("restored backup {id}"))
            && stdout(&out).contains("nginx/ssl/key.pem")
            && stdout(&out).contains("is the backup's; kept"),
        "{}",
        stdout(&out)
    );
    assert_eq!(fs::read(new.dir.join("nginx/ssl/key.pem")).unwrap(), key);
    let mode = |p: &str| {
        std::os::unix::fs::PermissionsExt::mode(
            &fs::metadata(new.dir.join(p)).unwrap().permissions(),
        ) & 0o777
    };
    assert_eq!(mode("nginx/ssl/key.pem"), 0o600);
    assert_eq!(tree(&new.dir.join("uploads")), uploads_before);
    // data/ did not exist here: the restore made it the API's (uid 10001), as init does,
    // or the API container could not open the restored database.
    for path in ["data", "data/elior_fitness.db", "uploads"] {
        let owner = std::os::unix::fs::MetadataExt::uid(&fs::metadata(new.dir.join(path)).unwrap());
        assert_eq!(owner, 10001, "{path}");
    }

    let deployed = elior_in(&new.dir, &["deploy", &old.domain]);
    assert!(
        !stderr(&deployed).contains("self-signed"),
        "deploy made a new certificate: {}",
        stderr(&deployed)
    );
    // Served by the new containers (on the old ports of the old env file) with the old
    // certificate, for the old user.
    assert_eq!(login_pinned(&cert, &old, "keeper"), Ok(200));
}

/// Killed after its first object, and again after all data but before the snapshot: the
/// bucket never lists the backup, `push` finishes it with only what was missing, and a
/// third run uploads nothing.
#[test]
fn a_push_killed_mid_upload_resumes_and_never_lists_a_partial_snapshot() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let tmp = tempfile::tempdir().unwrap();
    let stack = Stack::new(tmp.path(), &env_file(&moto, "killed", "repository", ""));
    stack.seed();

    for point in ["offsite:object-uploaded", "offsite:data-uploaded"] {
        let out = stack
            .command(&["backup", "--json"])
            .env("ELIOR_FAULT", point)
            .output()
            .unwrap();
        assert!(killed_by_sigkill(&out), "{point}: {}", stderr(&out));
        let keys = remote(&moto, "killed");
        assert!(
            !keys.iter().any(|k| k.starts_with("repository/snapshots/")),
            "{point}: a snapshot is offsite before its data: {keys:?}"
        );
        assert!(complete_ids(&stack.offsite_list()).is_empty(), "{point}");
        // The local backup is complete all the same.
        let listed = stack.elior(&["backup", "list", "--json"]);
        assert!(stdout(&listed).contains("complete (repository)"), "{point}");
    }
    // doctor says the bucket holds no backup yet, and how to send them.
    let doctor = stack.elior(&["doctor", "backups"]);
    assert_eq!(doctor.status.code(), Some(1), "{}", stdout(&doctor));
    assert!(
        stdout(&doctor).contains("there is no complete backup offsite")
            && stdout(&doctor).contains("elior backup push"),
        "{}",
        stdout(&doctor)
    );
    let before = remote(&moto, "killed");
    let out = stack.elior(&["backup", "push", "--json"]);
    assert!(out.status.success(), "push: {}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut expected = stack.local_objects();
    expected.insert("stack.json".into());
    let after = remote(&moto, "killed");
    assert_eq!(after, expected, "nothing missing, nothing extra");
    // Only what was missing went up: the two snapshots and whatever the first kill left.
    let uploaded = report["uploaded"].as_u64().unwrap() as usize;
    assert_eq!(uploaded, after.len() - before.len(), "{report:#}");
    assert_eq!(report["sent"].as_array().unwrap().len(), 2, "{report:#}");
    assert_eq!(complete_ids(&stack.offsite_list()).len(), 2);

    let doctor = stack.elior(&["doctor", "backups"]);
    assert!(
        stdout(&doctor).contains("the newest offsite backup"),
        "{}",
        stdout(&doctor)
    );
    let again = stack.elior(&["backup", "push", "--json"]);
    assert!(again.status.success(), "{}", stderr(&again));
    let report: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(report["uploaded"], 0, "{report:#}");
    assert!(report["sampled"].as_u64().unwrap() >= 1, "{report:#}");
}

/// A pack changed in the bucket (same size, one byte flipped): `verify --offsite` fails
/// naming it, and a restore from the bucket refuses it before touching the stack.
#[test]
fn a_tampered_offsite_pack_is_refused_by_name() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let tmp = tempfile::tempdir().unwrap();
    let env = env_file(&moto, "tamper", "repository", "");
    let stack = Stack::new(&tmp.path().join("a"), &env);
    stack.seed();
    stack.backup();
    // The biggest pack holds the photo's chunks.
    let keys = remote(&moto, "tamper");
    let pack = keys
        .iter()
        .filter(|k| k.starts_with("repository/packs/"))
        .max_by_key(|k| fs::metadata(stack.backups().join(k)).unwrap().len())
        .unwrap()
        .clone();
    // The local copy is the same bytes (moto serves objects to their owner only).
    let mut bytes = fs::read(stack.backups().join(&pack)).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x5a;
    put_signed(&moto, &format!("tamper/{pack}"), bytes);
    let name = pack.rsplit('/').next().unwrap();

    let out = stack.elior(&["backup", "verify", "--offsite"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("FAILED"), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(&name[..16]),
        "names the pack: {}",
        stdout(&out)
    );
    assert!(!stack.backups().join(".offsite-verify").exists());

    let fresh = Stack::new(&tmp.path().join("b"), &env);
    let out = fresh.elior(&[
        "restore",
        "--from",
        &format!("s3://{BUCKET}/tamper"),
        "--yes",
    ]);
    assert!(!out.status.success(), "restored a tampered backup");
    assert!(
        stderr(&out).contains(&name[..16]),
        "names the pack: {}",
        stderr(&out)
    );
    assert!(!fresh.dir.join("elior.db").exists(), "nothing was restored");
}

/// A missing bucket and refused credentials: the backup is taken and kept here, the
/// command exits 3 with one message naming the bucket (or the keys) and the fix.
#[test]
fn an_unreachable_bucket_keeps_the_local_backup_and_exits_3() {
    let moto = Moto::start();
    let tmp = tempfile::tempdir().unwrap();
    let stack = Stack::new(tmp.path(), &env_file(&moto, "nobucket", "archive", ""));
    stack.seed();
    let out = stack.elior(&["backup"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "BACKUP_OFFSITE: bucket \"{BUCKET}\" does not exist"
        )) && err.contains("create it first"),
        "{err}"
    );
    assert!(err.contains("is kept in"), "{err}");
    let listed = stack.elior(&["backup", "list", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["status"], "complete");

    // Credentials moto refuses (it checks them after the readiness probe and the bucket).
    let strict = Moto::start_with(free_port(), &[("INITIAL_NO_AUTH_ACTION_COUNT", "2")]);
    strict.create_bucket(BUCKET);
    let env = env_file(&strict, "badkeys", "archive", "");
    fs::write(stack.dir.join(".env.production"), env).unwrap();
    let out = stack.elior(&["backup"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")
            && err.contains("refused the credentials"),
        "{err}"
    );
    assert!(!err.contains("elior-test-secret-key"), "secret in: {err}");
    let listed = stack.elior(&["backup", "list", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 2, "both backups kept here");
}

/// Two stacks, one bucket: each in its own prefix, untouched by the other; a stack
/// pointed at the other's prefix is refused and changes nothing there; a prefix holding
/// objects that are no stack's backups is refused too.
#[test]
fn two_stacks_in_one_bucket_keep_apart() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let tmp = tempfile::tempdir().unwrap();
    let a = Stack::new(
        &tmp.path().join("a"),
        &env_file(&moto, "stacks/a", "repository", ""),
    );
    let b = Stack::new(
        &tmp.path().join("b"),
        &env_file(&moto, "stacks/ab", "archive", ""),
    );
    a.seed();
    b.seed();
    a.backup();
    let a_keys = moto
        .keys(BUCKET)
        .into_iter()
        .filter(|k| k.starts_with("stacks/a/"))
        .collect::<Vec<_>>();
    let made = b.backup();
    assert_eq!(made["offsite"]["offsite_backups"], 1, "{made:#}");
    assert_eq!(complete_ids(&a.offsite_list()).len(), 1);
    assert_eq!(complete_ids(&b.offsite_list()).len(), 1);
    let verified = b.elior(&["backup", "verify", "--offsite"]);
    assert!(
        verified.status.success(),
        "{}{}",
        stdout(&verified),
        stderr(&verified)
    );

    // B pointed at A's prefix.
    fs::write(
        b.dir.join(".env.production"),
        env_file(&moto, "stacks/a", "archive", ""),
    )
    .unwrap();
    let out = b.elior(&["backup"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("holds the backups of another stack"),
        "{}",
        stderr(&out)
    );
    let now: Vec<String> = moto
        .keys(BUCKET)
        .into_iter()
        .filter(|k| k.starts_with("stacks/a/"))
        .collect();
    assert_eq!(now, a_keys, "A's prefix untouched");
    let verified = a.elior(&["backup", "verify", "--offsite"]);
    assert!(
        verified.status.success(),
        "{}{}",
        stdout(&verified),
        stderr(&verified)
    );
    // And B's own restore refuses A's backups.
    let out = b.elior(&[
        "restore",
        "--from",
        &format!("s3://{BUCKET}/stacks/a"),
        "--yes",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("holds the backups of stack"),
        "{}",
        stderr(&out)
    );

    // A prefix with someone else's objects.
    moto.put_object(BUCKET, "shared/report.csv", b"a,b\n1,2\n");
    fs::write(
        b.dir.join(".env.production"),
        env_file(&moto, "shared", "archive", ""),
    )
    .unwrap();
    let out = b.elior(&["backup"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("they are not an elior stack's backups"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        remote(&moto, "shared"),
        BTreeSet::from(["report.csv".to_string()])
    );
}

/// Retention offsite follows the local prune: the expired backup goes from the bucket
/// too, then (once the repacked packs are offsite) the packs only it used; the bucket
/// ends as the mirror of the local repository and verifies. A host whose backups are
/// gone prunes nothing offsite.
#[test]
fn prune_deletes_offsite_only_what_it_proved_redundant_here() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let tmp = tempfile::tempdir().unwrap();
    let env = env_file(&moto, "retention", "repository", "");
    let offline: String = env
        .lines()
        .filter(|l| !l.starts_with("BACKUP_OFFSITE="))
        .map(|l| format!("{l}\n"))
        .collect();
    let stack = Stack::new(tmp.path(), &offline);
    stack.seed();
    // An upload only the old backup holds: its pack becomes unused.
    // Incompressible (xorshift), so its pack is mostly its own.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let video: Vec<u8> = (0..6_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    fs::write(stack.dir.join("uploads/old-video.bin"), video).unwrap();
    let first = stack.backup()["id"].as_str().unwrap().to_string();
    let old = age_snapshot(&stack.backups().join("repository"), &first, 40);
    fs::remove_file(stack.dir.join("uploads/old-video.bin")).unwrap();
    fs::write(stack.dir.join(".env.production"), &env).unwrap();
    let made = stack.backup();
    let newest = made["id"].as_str().unwrap().to_string();
    assert_eq!(made["offsite"]["offsite_backups"], 2, "{made:#}");

    // The host's backups are gone: nothing offsite may be pruned from here.
    let before = remote(&moto, "retention");
    let kept = tmp.path().join("kept-backups");
    fs::rename(stack.backups(), &kept).unwrap();
    fs::create_dir(stack.backups()).unwrap();
    let out = stack.elior(&["backup", "prune", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(remote(&moto, "retention"), before);
    let _ = fs::remove_dir_all(stack.backups());
    fs::rename(&kept, stack.backups()).unwrap();

    let out = stack.elior(&["backup", "prune", "--json"]);
    assert!(out.status.success(), "prune: {}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["offsite"]["deleted"],
        serde_json::json!([old]),
        "{report:#}"
    );
    assert_eq!(complete_ids(&stack.offsite_list()), [newest]);
    let mut packs_deleted = report["offsite"]["packs_deleted"].as_u64().unwrap();
    // Packs repacked here go up with the next push; the next prune then removes the old.
    let out = stack.elior(&["backup", "push"]);
    assert!(out.status.success(), "push: {}", stderr(&out));
    let out = stack.elior(&["backup", "prune", "--json"]);
    assert!(out.status.success(), "prune: {}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    packs_deleted += report["offsite"]["packs_deleted"].as_u64().unwrap();
    assert!(packs_deleted >= 1, "the old video's pack: {report:#}");
    let mut expected = stack.local_objects();
    expected.insert("stack.json".into());
    assert_eq!(remote(&moto, "retention"), expected);
    let verified = stack.elior(&["backup", "verify", "--offsite"]);
    assert!(
        verified.status.success(),
        "{}{}",
        stdout(&verified),
        stderr(&verified)
    );
}

/// An encrypted repository offsite: restoring it from the bucket without the identity is
/// refused before anything changes; with it, the data comes back.
#[test]
fn an_encrypted_backup_restores_from_the_bucket_only_with_the_identity() {
    use age::secrecy::ExposeSecret;
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let tmp = tempfile::tempdir().unwrap();
    let key = age::x25519::Identity::generate();
    let identity = tmp.path().join("identity.txt");
    fs::write(&identity, format!("{}\n", key.to_string().expose_secret())).unwrap();
    let env = env_file(
        &moto,
        "enc",
        "repository",
        &format!("BACKUP_RECIPIENTS={}\n", key.to_public()),
    );
    let stack = Stack::new(&tmp.path().join("a"), &env);
    stack.seed();
    let uploads = tree(&stack.dir.join("uploads"));
    stack.backup();

    // A fresh host: no env file, the bucket's keys in the environment.
    let fresh = Stack {
        dir: tmp.path().join("b"),
    };
    let from = format!("s3://{BUCKET}/enc");
    let out = fresh
        .command(&["restore", "--from", &from, "--yes"])
        .envs(bucket_env(&moto))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--identity"), "{}", stderr(&out));
    assert!(!fresh.dir.join("elior.db").exists());
    assert!(!fresh.dir.join(".env.production").exists());
    let out = fresh
        .command(&[
            "restore",
            "--from",
            &from,
            "--yes",
            "--identity",
            identity.to_str().unwrap(),
        ])
        .envs(bucket_env(&moto))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // Encrypted to the recipients, the env file travels whole: the same JWT_SECRET, so
    // sessions from before the disaster go on.
    assert_eq!(
        fs::read_to_string(fresh.dir.join(".env.production")).unwrap(),
        env
    );
    assert_eq!(mode(&fresh.dir.join(".env.production")), 0o600);
    let rows: i64 = rusqlite::Connection::open(fresh.dir.join("elior.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM notes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 500);
    assert_eq!(tree(&fresh.dir.join("uploads")), uploads);
}

/// An archive backup whose uploads archive is sent in parts (a multipart upload: no MD5
/// ETag, so its size is checked), then read back whole by `verify --offsite` and restored.
#[test]
fn a_big_archive_goes_up_in_parts_and_comes_back_whole() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let tmp = tempfile::tempdir().unwrap();
    let env = env_file(&moto, "parts", "archive", "");
    let stack = Stack::new(&tmp.path().join("a"), &env);
    stack.seed();
    // 20 MiB that gzip cannot shrink: two parts of 16 MiB and 4 MiB.
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let big: Vec<u8> = (0..20 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    fs::write(stack.dir.join("uploads/progress/video.bin"), &big).unwrap();
    let uploads = tree(&stack.dir.join("uploads"));
    let out = stack
        .command(&["backup", "--json"])
        .env("ELIOR_OFFSITE_MULTIPART_ABOVE", (8u64 << 20).to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let made: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = made["id"].as_str().unwrap();
    assert_eq!(made["offsite"]["sent"], serde_json::json!([id]), "{made:#}");
    let verified = stack.elior(&["backup", "verify", "--offsite"]);
    assert!(
        verified.status.success(),
        "{}{}",
        stdout(&verified),
        stderr(&verified)
    );
    let fresh = Stack::new(&tmp.path().join("b"), &env);
    fs::remove_dir_all(fresh.dir.join("uploads")).unwrap();
    let out = fresh.elior(&[
        "restore",
        "--from",
        &format!("s3://{BUCKET}/parts"),
        "--yes",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(tree(&fresh.dir.join("uploads")), uploads);
}
