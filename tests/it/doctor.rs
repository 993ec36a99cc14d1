//! `elior doctor` on real stacks: each fault injected into a stack directory made by the
//! real `elior init`/`render` (a port held by a stray listener, an expired certificate,
//! a key of another certificate, the env file at 0644, a placeholder secret, a corrupted
//! SQLite file, a stale deploy lock, a backup 3 days old) is named with its fix and exits
//! 1; a stack deployed with `elior deploy` on the real Docker Engine reports no failure
//! and exits 0, then names its API container once it is stopped. `--list-checks` prints
//! the registry (as a table and as JSON), `--check NAME` runs only the named checks, an
//! unknown name exits 2 naming the valid ones, and the examples of `--help` run.

use crate::harness::stack as stack_harness;
use crate::harness::tmpfs::TmpfsMount;

use std::process::{Command, Output};

use stack_harness::{
    docker, elior, free_port, nginx_image, probe_ssl_until, reload_nginx, text, unique, Stack,
    TestCa,
};

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// Asserts doctor exited 1 with a failed finding containing `finding` and a fix line
/// containing `fix`.
fn assert_names(out: &Output, finding: &str, fix: &str) {
    let stdout = text(&out.stdout);
    assert_eq!(code(out), 1, "{stdout}{}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains("[✗]") && l.contains(finding))
        .unwrap_or_else(|| panic!("no failure naming {finding:?}:\n{stdout}"));
    let fix_line = lines[at + 1..]
        .iter()
        .find(|l| l.trim_start().starts_with("fix: "))
        .unwrap_or_else(|| panic!("no fix after {finding:?}:\n{stdout}"));
    assert!(
        fix_line.contains(fix),
        "fix {fix_line:?} lacks {fix:?}:\n{stdout}"
    );
}

/// A stack on free ports, so no check touches another stack's nginx.
fn stack(name: &str) -> Stack {
    let domain = format!("{}.elior.test", unique(name));
    Stack::new(
        &domain,
        &[
            ("HTTP_PORT", &free_port().to_string()),
            ("HTTPS_PORT", &free_port().to_string()),
        ],
    )
}

/// A real SQLite database in WAL mode where the stack keeps it, with some rows.
fn create_database(stack: &Stack) -> std::path::PathBuf {
    let path = stack.dir.join("data/elior_fitness.db");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
        .unwrap();
    conn.execute_batch(
        "CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
         INSERT INTO notes(body) SELECT printf('note %d %s', i, hex(randomblob(40))) FROM n;
         CREATE INDEX notes_body ON notes(body);",
    )
    .unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    path
}

/// Takes a real backup with `elior backup`; returns its id.
fn take_backup(stack: &Stack) -> String {
    let out = elior(&["backup", "--dir", stack.path()]);
    assert!(out.status.success(), "backup: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    stdout
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no backup id in {stdout:?}"))
        .to_string()
}

/// A real backup renamed to `id` (`YYYYmmdd_HHMMSS`), files and manifest, as if it had
/// been taken then.
fn backup_with_id(stack: &Stack, id: &str) {
    let taken = take_backup(stack);
    let dir = stack.dir.join("backups");
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.contains(&taken) {
            std::fs::rename(entry.path(), dir.join(name.replace(&taken, id))).unwrap();
        }
    }
    let manifest_path = dir.join(format!("backup_{id}.json"));
    let body = std::fs::read_to_string(&manifest_path).unwrap();
    std::fs::write(&manifest_path, body.replace(&taken, id)).unwrap();
    // Manifests carry their own checksum (issue 17): seal the edited one again.
    let mut manifest = elior::backup::manifest::Manifest::read(&manifest_path).unwrap();
    manifest.seal();
    elior::backup::manifest::write(&dir, &manifest).unwrap();
}

#[test]
fn doctor_names_a_port_held_by_a_stray_listener() {
    let stray = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = stray.local_addr().unwrap().port();
    let stack = stack("doctor-port");
    stack.set_env(&[("HTTP_PORT", &port.to_string())]);
    let out = stack.doctor(&["ports"], &[]);
    let pid = std::process::id();
    assert_names(
        &out,
        &format!("port {port} (HTTP_PORT) is held by"),
        &format!("kill {pid}"),
    );
    assert!(text(&out.stdout).contains(&format!("pid {pid}")));
    // The HTTPS port is free, and says so.
    assert!(text(&out.stdout).contains("(HTTPS_PORT) is free"));
}

#[test]
fn doctor_names_an_expired_certificate() {
    let stack = stack("doctor-expired");
    let ca = TestCa::new();
    let (cert, key) = ca.leaf(&stack.domain, -100, -10);
    stack.write_pair(&cert, &key);
    let out = stack.doctor(&["certificate"], &[]);
    assert_names(
        &out,
        "the certificate expired 10d",
        &format!("elior cert renew --force --dir {}", stack.path()),
    );
}

#[test]
fn doctor_names_a_key_of_another_certificate() {
    let stack = stack("doctor-key");
    let ca = TestCa::new();
    let (cert, _) = ca.leaf(&stack.domain, -1, 60);
    let (_, other_key) = ca.leaf(&stack.domain, -1, 60);
    stack.write_pair(&cert, &other_key);
    let out = stack.doctor(&["certificate"], &[]);
    assert_names(&out, "is not the key of", "elior cert renew --force");
}

#[test]
fn doctor_names_an_env_file_readable_by_others() {
    use std::os::unix::fs::PermissionsExt;
    let stack = stack("doctor-mode");
    std::fs::set_permissions(stack.env_path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = stack.doctor(&["env"], &[]);
    assert_names(
        &out,
        "is mode 0644",
        &format!("chmod 600 {}", stack.env_path().display()),
    );
}

/// A placeholder secret fails the env check, and every other check still runs (the
/// ones that need valid settings say they were skipped); so do a malformed and a missing
/// env file.
#[test]
fn doctor_names_a_placeholder_secret_and_survives_a_broken_or_missing_env_file() {
    let stack = stack("doctor-secret");
    stack.set_env(&[("JWT_SECRET", "change-me-0123456789abcdef0123456789")]);
    let out = stack.doctor(&[], &[]);
    assert_names(&out, "JWT_SECRET is a placeholder", "openssl rand -hex 32");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("[✓] lock: no deploy lock is held"),
        "{stdout}"
    );
    assert!(
        stdout.contains("[-] certificate: needs valid settings"),
        "{stdout}"
    );
    assert!(
        stdout.lines().last().unwrap().starts_with("doctor: "),
        "{stdout}"
    );

    std::fs::write(
        stack.env_path(),
        "DOMAIN=example.com\nthis line is broken\n",
    )
    .unwrap();
    let out = stack.doctor(&["env", "lock"], &[]);
    assert_names(&out, "does not parse: line 2", "KEY=VALUE");
    std::fs::remove_file(stack.env_path()).unwrap();
    let out = stack.doctor(&["env", "lock"], &[]);
    assert_names(&out, "does not exist", "elior init DOMAIN");
    let report: serde_json::Value =
        serde_json::from_slice(&stack.doctor(&["--json"], &[]).stdout).unwrap();
    assert_eq!(
        report["checks"].as_array().unwrap().len(),
        elior::doctor::checks::ALL.len()
    );
    assert!(report["summary"]["failures"].as_u64().unwrap() >= 1);
}

// Regression (issue 14): the original's example secret passed, and so did a short one.
#[test]
fn doctor_refuses_every_example_secret_and_any_secret_under_32_bytes() {
    let stack = stack("doctor-examples");
    for placeholder in [
        "your-new-secure-jwt-secret-here-32-chars-minimum",
        "your-super-secure-secret-key-here-minimum-32-characters",
        "your-secret-key-here",
    ] {
        stack.set_env(&[("JWT_SECRET", placeholder)]);
        let out = stack.doctor(&["env"], &[]);
        assert_names(&out, "JWT_SECRET is a placeholder", "openssl rand -hex 32");
    }
    // 31 random-looking bytes: not a placeholder, but too short for an HMAC key.
    stack.set_env(&[("JWT_SECRET", "q8VZ0mB3xK7pL2nR5tW9yC4fH6jD1gS")]);
    let out = stack.doctor(&["env"], &[]);
    assert_names(
        &out,
        "JWT_SECRET is 31 bytes; it needs at least 32",
        "openssl rand -hex 32",
    );
}

// Regression (issue 14): a full data disk was only a warning while writes returned 500,
// and the fix offered `docker system prune`.
#[test]
fn doctor_fails_on_a_full_data_disk_with_a_fix_that_keeps_the_data() {
    let stack = stack("doctor-full");
    let data = TmpfsMount::new(&stack.dir.join("data"), "4m");
    create_database(&stack);
    data.fill();
    let out = stack.doctor(&["database"], &[]);
    assert_names(
        &out,
        "full disk: database disk",
        "find what fills it with `du -xh",
    );
    let stdout = text(&out.stdout);
    assert!(!stdout.contains("prune"), "{stdout}");
    // The data is still there: doctor only reads.
    assert!(stack.dir.join("data/elior_fitness.db").exists());
}

/// A backup disk that cannot hold the next backup fails the backups check before the
/// scheduled backup does, naming the folder and the prune.
#[test]
fn doctor_fails_when_the_next_backup_will_not_fit_in_backup_dir() {
    let stack = stack("doctor-backup-room");
    let backups = TmpfsMount::new(&stack.dir.join("backups"), "2m");
    create_database(&stack);
    take_backup(&stack);
    let out = stack.doctor(&["backups"], &[]);
    assert_eq!(code(&out), 0, "{}", text(&out.stdout));
    // Other backups or a stray dump fill the rest of the backup disk.
    backups.fill();
    let out = stack.doctor(&["backups"], &[]);
    assert_names(
        &out,
        "the next backup will not fit in",
        "elior backup prune --dir",
    );
}

// Regression (issue 14): the chain check took only the system roots, so a stack on a
// private CA always failed it, and a broken ACME_CA_FILE went unnoticed.
#[test]
fn doctor_checks_the_chain_against_acme_ca_file() {
    let stack = stack("doctor-private-ca");
    let ca = TestCa::new();
    let (cert, key) = ca.leaf(&stack.domain, -1, 60);
    stack.write_pair(&cert, &key);
    let ca_path = ca.write(&stack.dir);

    let out = stack.doctor(&["certificate"], &[]);
    assert_names(
        &out,
        "the chain does not verify against the system roots",
        "set ACME_CA_FILE to its root PEM",
    );

    // From the environment, as `elior cert` reads it: the chain verifies.
    let ca_env = [("ACME_CA_FILE", ca_path.to_str().unwrap())];
    let out = stack.doctor(&["certificate"], &ca_env);
    let stdout = text(&out.stdout);
    assert!(!stdout.contains("[✗]"), "{stdout}");
    assert!(stdout.contains("[✓] certificate:"), "{stdout}");

    // From the env file, relative to the stack directory: the same.
    stack.set_env(&[("ACME_CA_FILE", "test-ca.pem")]);
    let out = stack.doctor(&["certificate"], &[]);
    assert!(!text(&out.stdout).contains("[✗]"), "{}", text(&out.stdout));

    // A CA file that is not there is named, not silently replaced by the system roots.
    stack.set_env(&[("ACME_CA_FILE", "missing-ca.pem")]);
    let out = stack.doctor(&["certificate"], &[]);
    assert_names(
        &out,
        "ACME_CA_FILE cannot be used for the chain check",
        "ACME_CA_FILE",
    );
}

#[test]
fn doctor_names_a_corrupted_database() {
    let stack = stack("doctor-db");
    let db = create_database(&stack);
    // Overwrite the middle of the file (table and index pages), keeping the header.
    let mut bytes = std::fs::read(&db).unwrap();
    assert!(
        bytes.len() > 64 * 1024,
        "the database is big enough to corrupt"
    );
    let end = bytes.len() - 4096;
    for b in &mut bytes[8192..end] {
        *b = 0xA5;
    }
    std::fs::write(&db, bytes).unwrap();
    let out = stack.doctor(&["database"], &[]);
    assert_names(&out, "is corrupt: quick_check says", "elior restore latest");
}

#[test]
fn doctor_names_a_stale_deploy_lock() {
    let stack = stack("doctor-lock");
    let mut child = Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let state = stack.dir.join(".elior");
    std::fs::create_dir_all(&state).unwrap();
    let lock = state.join("deploy.lock");
    std::fs::write(
        &lock,
        serde_json::json!({
            "pid": dead_pid,
            "host": host.trim(),
            "command": "elior deploy",
            "since": "2026-11-26T02:00:00+00:00",
        })
        .to_string(),
    )
    .unwrap();
    let out = stack.doctor(&["lock"], &[]);
    assert_names(
        &out,
        &format!("stale deploy lock: held by `elior deploy` (pid {dead_pid}"),
        &format!("rm {}", lock.display()),
    );
}

#[test]
fn doctor_names_a_backup_three_days_old() {
    let stack = stack("doctor-backup");
    create_database(&stack);
    let three_days_ago = chrono::Local::now().naive_local() - chrono::Duration::days(3);
    let id = three_days_ago.format("%Y%m%d_%H%M%S").to_string();
    backup_with_id(&stack, &id);
    let out = stack.doctor(&["backups"], &[]);
    assert_names(
        &out,
        &format!("the last verified backup {id} is 3d"),
        &format!("elior backup --dir {}", stack.path()),
    );
    // A fresh one is fine.
    take_backup(&stack);
    let out = stack.doctor(&["backups"], &[]);
    assert_eq!(code(&out), 0, "{}", text(&out.stdout));
}

/// Every registered check, as `--list-checks` names them.
fn registered() -> Vec<elior::doctor::checks::CheckInfo> {
    elior::doctor::checks::ALL
        .iter()
        .map(|c| c.info())
        .collect()
}

#[test]
fn doctor_lists_every_check_as_a_table_and_as_json() {
    let out = elior(&["doctor", "--list-checks"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for check in registered() {
        let row = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(check.name))
            .unwrap_or_else(|| panic!("no row for {}:\n{stdout}", check.name));
        assert!(row.contains(check.group.as_str()), "{row}");
        assert!(row.contains(check.about), "{row}");
    }

    let out = elior(&["doctor", "--list-checks", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--list-checks --json: {e}: {}", text(&out.stdout)));
    let expected: Vec<serde_json::Value> = registered()
        .iter()
        .map(|c| serde_json::json!({"name": c.name, "group": c.group.as_str(), "about": c.about}))
        .collect();
    assert_eq!(listed, serde_json::Value::Array(expected));

    // Listing runs nothing, so naming checks beside it is a usage error, not ignored.
    let out = elior(&["doctor", "--list-checks", "--check", "env"]);
    assert_eq!(code(&out), 2, "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("--list-checks"),
        "{}",
        text(&out.stderr)
    );
}

/// `--check` runs only the named checks, once each, in the usual order, with the named
/// arguments too; its facts are in the JSON report.
#[test]
fn doctor_check_runs_only_the_named_checks() {
    let stack = stack("doctor-select");
    let out = stack.doctor(
        &[
            "--check", "lock", "--check", "env", "--check", "lock", "--json",
        ],
        &[],
    );
    assert_eq!(code(&out), 0, "{}{}", text(&out.stdout), text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["env", "lock"]);
    assert_eq!(report["checks"][0]["group"], "Configuration");
    assert_eq!(report["checks"][0]["facts"]["exists"], true);
    assert_eq!(report["checks"][1]["facts"]["exists"], false);

    let out = stack.doctor(&["--check", "lock", "env"], &[]);
    let stdout = text(&out.stdout);
    assert_eq!(code(&out), 0, "{stdout}");
    assert!(stdout.contains("[✓] env: "), "{stdout}");
    assert!(
        stdout.contains("[✓] lock: no deploy lock is held"),
        "{stdout}"
    );
    assert!(!stdout.contains("ports:"), "{stdout}");
}

/// A misspelt check is a usage error (exit 2) that names it and every valid check, and
/// runs nothing; with --json the error is JSON too.
#[test]
fn doctor_refuses_an_unknown_check_and_names_the_valid_ones() {
    let stack = stack("doctor-unknown");
    for args in [
        &["--check", "certficate"][..],
        &["--check", "lock", "--check", "certficate"][..],
        &["certficate"][..],
    ] {
        let out = stack.doctor(args, &[]);
        assert_eq!(code(&out), 2, "{args:?}: {}", text(&out.stdout));
        assert_eq!(text(&out.stdout), "", "{args:?} ran checks");
        let stderr = text(&out.stderr);
        assert!(stderr.contains("no check named \"certficate\""), "{stderr}");
        for check in registered() {
            assert!(
                stderr.contains(check.name),
                "{} missing: {stderr}",
                check.name
            );
        }
    }
    let out = stack.doctor(&["--check", "certficate", "--json"], &[]);
    assert_eq!(code(&out), 2);
    let error: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)));
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("no check named \"certficate\""),
        "{error}"
    );
}

/// The examples `doctor --help` ends with run on a stack directory as written (the part
/// before a pipe): none is a usage error, the JSON ones print JSON, and the one marked
/// "the same" prints what the line above it prints.
#[test]
fn doctor_help_ends_with_examples_that_run() {
    let stack = stack("doctor-help");
    let help = text(&elior(&["doctor", "--help"]).stdout);
    let (_, examples) = help
        .rsplit_once("Examples:\n")
        .unwrap_or_else(|| panic!("no examples at the end of:\n{help}"));
    let examples: Vec<&str> = examples.lines().map(str::trim).collect();
    assert!(examples.len() >= 3, "{examples:?}");
    let mut previous = String::new();
    for example in examples {
        let (command, note) = example.split_once('#').unwrap_or((example, ""));
        let (command, piped) = command.split_once('|').unwrap_or((command, ""));
        let args: Vec<&str> = command
            .split_whitespace()
            .map(|a| if a == "/srv/elior" { stack.path() } else { a })
            .collect();
        assert_eq!(args[..2], ["elior", "doctor"], "{example}");
        let out = Command::new(stack_harness::BIN)
            .args(&args[1..])
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let stdout = text(&out.stdout);
        assert!(
            matches!(code(&out), 0 | 1),
            "{example}: exit {}: {}",
            code(&out),
            text(&out.stderr)
        );
        assert!(!stdout.is_empty(), "{example} printed nothing");
        if !piped.is_empty() {
            serde_json::from_str::<serde_json::Value>(&stdout)
                .unwrap_or_else(|e| panic!("{example}: not JSON for jq: {e}: {stdout}"));
        }
        if note.contains("the same") {
            assert_eq!(stdout, previous, "{example}");
        }
        previous = stdout;
    }
}

/// The running container of `service` in `project`.
fn service_container(project: &str, service: &str) -> String {
    let out = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=elior.project={project}"),
        "--filter",
        &format!("label=elior.service={service}"),
    ]);
    let id = text(&out.stdout).trim().to_string();
    assert!(
        !id.is_empty(),
        "no running {service} container in {project}"
    );
    id
}

fn stack_port(stack: &Stack, key: &str) -> String {
    let env = std::fs::read_to_string(stack.env_path()).unwrap();
    env.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap()
        .to_string()
}

/// Removes the deployed stack's containers, networks and API images, even on failure.
struct Deployed {
    stack: Stack,
    api_repo: String,
}

impl Drop for Deployed {
    fn drop(&mut self) {
        let _ = elior(&["down", "--dir", self.stack.path()]);
        let images = docker(&[
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}}",
            &self.api_repo,
        ]);
        for image in text(&images.stdout).lines() {
            let _ = docker(&["image", "rm", "-f", image]);
        }
    }
}

/// A deployed stack with a fresh backup has no failed check (the self-signed bootstrap
/// certificate and the absent scheduler only warn); with its API container stopped,
/// doctor names it, shows its last log lines and exits 1.
#[test]
fn doctor_passes_a_deployed_stack_and_names_a_stopped_api() {
    let name = unique("doctor-deployed");
    let api_repo = format!("elior-test-{name}-api");
    let stack = Stack::new(
        &format!("{name}.elior.test"),
        &[
            ("HTTP_PORT", &free_port().to_string()),
            ("HTTPS_PORT", &free_port().to_string()),
            ("API_IMAGE", &format!("{api_repo}:latest")),
            ("PROXY_IMAGE", &nginx_image()),
        ],
    );
    let deployed = Deployed { stack, api_repo };
    let stack = &deployed.stack;
    let out = elior(&["deploy", &stack.domain, "--dir", stack.path()]);
    assert!(
        out.status.success(),
        "deploy: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    take_backup(stack);

    let resolve = format!("{}:127.0.0.1", stack.domain);
    let env = [("ELIOR_RESOLVE", resolve.as_str())];
    let out = stack.doctor(&[], &env);
    let stdout = text(&out.stdout);
    assert_eq!(code(&out), 0, "{stdout}{}", text(&out.stderr));
    assert!(!stdout.contains("[✗]"), "{stdout}");
    for ok in [
        "[✓] containers: api:",
        "[✓] containers: nginx:",
        "answers 200, database connected",
        "redirects to https://",
        "journal mode WAL",
        "(HTTPS_PORT) is",
        "[✓] clock:",
        "served by nginx",
    ] {
        assert!(stdout.contains(ok), "no {ok:?} in:\n{stdout}");
    }

    // With a certificate from a (test) CA that the client trusts, the deployed stack's
    // TLS setup grades A+.
    let project = elior::config::model::owner_of(&stack.dir, &stack.domain)
        .unwrap()
        .expect("init gave the stack an id")
        .project;
    let ca = TestCa::new();
    let (cert, key) = ca.leaf(&stack.domain, -1, 60);
    stack.write_pair(&cert, &key);
    let ca_path = ca.write(&stack.dir);
    let nginx = service_container(&project, "nginx");
    reload_nginx(&nginx);
    let https_port: u16 = stack_port(stack, "HTTPS_PORT").parse().unwrap();
    let http_port: u16 = stack_port(stack, "HTTP_PORT").parse().unwrap();
    let (_, report) = probe_ssl_until(&stack.domain, https_port, http_port, &ca_path, |r| {
        r["grade"]["grade"] == "A+"
    });
    assert_eq!(report["grade"]["grade"], "A+", "{report:#}");
    let out = stack.doctor(&["certificate"], &env);
    assert!(
        !text(&out.stdout).contains("self-signed"),
        "{}",
        text(&out.stdout)
    );

    // The file's JWT_SECRET no longer matches the running API's (issue 14).
    let env_text = std::fs::read_to_string(stack.env_path()).unwrap();
    stack.set_env(&[(
        "JWT_SECRET",
        "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9",
    )]);
    let out = stack.doctor(&["containers"], &env);
    assert_names(
        &out,
        "runs with a JWT_SECRET that differs from the one in",
        &format!("elior update --dir {}", stack.path()),
    );
    std::fs::write(stack.env_path(), env_text).unwrap();

    let api = service_container(&project, "api");
    let out = docker(&["stop", "-t", "5", &api]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = stack.doctor(&["containers", "nginx"], &env);
    assert_names(&out, "is exited (exit code", "elior logs api");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("        | "),
        "the API's last log lines are shown:\n{stdout}"
    );
    assert!(stdout.contains("[✗] nginx: https://"), "{stdout}");
}
