//! The command line as a shell user meets it: completions that a shell loads, a man page
//! that `man` renders, global options anywhere on the line, JSON errors (issue 20).

use crate::harness::stack::text;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn elior(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_elior"))
        .args(args)
        .output()
        .expect("failed to run elior")
}

/// What bash's completion function offers for the words typed so far.
fn bash_completes(script: &str, words: &[&str]) -> Vec<String> {
    let line = words.join(" ");
    let program = format!(
        "source /dev/stdin\nCOMP_WORDS=({line}); COMP_CWORD={cword}; COMP_LINE='{line}'; COMP_POINT={point}\n\
         _elior elior '{last}' '{prev}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"",
        cword = words.len() - 1,
        point = line.len(),
        last = words[words.len() - 1],
        prev = words[words.len() - 2],
    );
    let mut child = Command::new("bash")
        .args(["-c", &program])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("failed to run bash");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "bash failed on the completion script");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completion_loads_and_completes_subcommands_and_their_flags() {
    let out = elior(&["completions", "bash"]);
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).unwrap();
    assert_eq!(bash_completes(&script, &["elior", "dep"]), ["deploy"]);
    let flags = bash_completes(&script, &["elior", "deploy", "--dr"]);
    assert_eq!(flags, ["--dry-run"]);
}

#[test]
fn zsh_and_fish_completions_name_every_subcommand() {
    for shell in ["zsh", "fish"] {
        let out = elior(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        for sub in ["deploy", "backup", "restore", "doctor", "serve"] {
            assert!(script.contains(sub), "{shell} completions lack {sub}");
        }
    }
}

#[test]
fn completions_for_an_unknown_shell_are_a_usage_error_naming_the_choices() {
    let out = elior(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tcsh") && err.contains("bash"), "{err}");
}

#[test]
fn man_page_renders_with_man() {
    let page = elior(&["man"]);
    assert!(page.status.success());
    let mut man = Command::new("man")
        .args(["-l", "-"])
        .env("MANWIDTH", "100")
        .env("MANPAGER", "cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("man is not installed (Debian package man-db)");
    man.stdin.take().unwrap().write_all(&page.stdout).unwrap();
    let out = man.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("NAME"), "{text}");
    assert!(text.contains("elior - Deploy"), "{text}");
    assert!(
        text.contains("elior-deploy(1)") && text.contains("elior-backup(1)"),
        "the page lists no subcommands:\n{text}"
    );
}

#[test]
fn man_into_a_closed_pipe_exits_0() {
    // `elior man | head -1`: the reader leaving early is not a failure.
    let mut child = Command::new(env!("CARGO_BIN_EXE_elior"))
        .arg("man")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// A stack directory with a seeded database (no Docker needed), removed at the end.
struct Stack {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Stack {
    fn new(name: &str) -> Stack {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::create_dir_all(dir.join("uploads")).unwrap();
        std::fs::write(
            dir.join(".env.production"),
            "DATABASE_URL=sqlite:////app/data/elior_fitness.db\nUPLOAD_DIR=/app/uploads\n",
        )
        .unwrap();
        let conn = rusqlite::Connection::open(dir.join("data/elior_fitness.db")).unwrap();
        conn.execute_batch("CREATE TABLE items (id INTEGER PRIMARY KEY, body TEXT NOT NULL);")
            .unwrap();
        Stack { _tmp: tmp, dir }
    }
}

/// `elior ARGS` with extra environment variables, stdin closed.
fn elior_env(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_elior"));
    command
        .args(args)
        .env_remove("ELIOR_DIR")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("failed to run elior")
}

#[test]
fn dir_before_after_or_from_elior_dir_lists_the_same_backups() {
    let stack = Stack::new("stack");
    let dir = stack.dir.to_str().unwrap();
    let taken = elior_env(&["-q", "backup", "--dir", dir], &[]);
    assert!(taken.status.success(), "{}", text(&taken.stderr));
    assert!(
        taken.stderr.is_empty(),
        "-q printed: {}",
        text(&taken.stderr)
    );

    let after = elior_env(&["backup", "--dir", dir, "list"], &[]);
    let before = elior_env(&["--dir", dir, "backup", "list"], &[]);
    let env = elior_env(&["backup", "list"], &[("ELIOR_DIR", &stack.dir)]);
    let last = elior_env(&["backup", "list", "--dir", dir], &[]);
    for out in [&after, &before, &env, &last] {
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let listing = text(&after.stdout);
    assert!(listing.contains("complete"), "no backup listed:\n{listing}");
    assert_eq!(listing, text(&before.stdout));
    assert_eq!(listing, text(&env.stdout));
    assert_eq!(listing, text(&last.stdout));

    // --json, too, is global: before the subcommand or after it.
    let json_first = elior_env(&["--json", "backup", "list", "--dir", dir], &[]);
    let json_last = elior_env(&["backup", "--dir", dir, "list", "--json"], &[]);
    let rows: serde_json::Value = serde_json::from_slice(&json_first.stdout).unwrap();
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
    assert_eq!(json_first.stdout, json_last.stdout);

    // --dir on the line beats ELIOR_DIR.
    let elsewhere = tempfile::tempdir().unwrap();
    let beaten = elior_env(
        &["backup", "list", "--dir", dir],
        &[("ELIOR_DIR", elsewhere.path())],
    );
    assert_eq!(text(&beaten.stdout), listing);
}

#[test]
fn a_hint_names_the_dir_that_was_typed_quoted_for_the_shell() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("my stack");
    let out = elior_env(&["status", "--dir", missing.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    let hint = err.lines().nth(1).unwrap_or_default().to_string();
    assert!(
        hint.contains(&format!("elior --dir '{}' init DOMAIN", missing.display())),
        "{err}"
    );
    // Run as printed (DOMAIN filled in), it works.
    let command = hint
        .split('`')
        .nth(1)
        .unwrap()
        .replace("elior ", &format!("{} ", env!("CARGO_BIN_EXE_elior")))
        .replace("DOMAIN", "localhost");
    let ran = Command::new("sh").args(["-c", &command]).output().unwrap();
    assert!(ran.status.success(), "{command}: {}", text(&ran.stderr));
    assert!(missing.join(".env.production").is_file());
}

#[test]
fn json_errors_are_json_on_stdout_with_the_same_exit_code() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("none");
    let missing = missing.to_str().unwrap();
    for args in [
        vec!["status", "--dir", missing],
        vec!["config", "show", "--dir", missing],
        // No certificate: a failed check (1), in JSON as well.
        vec!["cert", "status", "--dir", missing],
        vec!["backup", "list", "--dir", missing],
        // A usage error under --json is JSON too.
        vec!["status", "--no-such-flag"],
    ] {
        let plain = elior_env(&args, &[]);
        let mut with_json = args.clone();
        with_json.insert(1, "--json");
        let out = elior_env(&with_json, &[]);
        assert!(!plain.status.success(), "{args:?}");
        assert_eq!(out.status.code(), plain.status.code(), "{args:?}");
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", text(&out.stdout)));
        assert!(
            doc["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{doc}"
        );
        assert!(doc["hint"].is_string(), "{args:?}: {doc}");
        assert!(out.stderr.is_empty(), "{args:?}: {}", text(&out.stderr));
    }
}

#[test]
fn several_dirs_are_refused_by_a_command_on_one_stack() {
    let out = elior_env(&["status", "--dir", "/a", "--dir", "/b"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--dir given 2 times"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn quiet_and_verbose_together_are_a_usage_error() {
    let out = elior_env(&["-q", "-v", "status"], &[]);
    assert_eq!(out.status.code(), Some(2));
}

/// `elior ARGS` with stdout read for `keep` bytes and then closed, as `| head -c KEEP`
/// does; returns the exit status and stderr.
fn elior_into_head(args: &[&str], keep: usize) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_elior"))
        .args(args)
        .env_remove("ELIOR_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = vec![0u8; keep];
    if keep > 0 {
        stdout.read_exact(&mut first).unwrap();
    }
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    (out.status, text(&out.stderr))
}

/// Whether `elior backup verify latest` passes the newest backup.
fn newest_backup_verifies(stack: &Stack) -> bool {
    let dir = stack.dir.to_str().unwrap();
    let out = elior_env(&["--dir", dir, "backup", "verify", "latest"], &[]);
    out.status.success() && text(&out.stdout).starts_with("ok")
}

// Issue 20: a panic hook turned EPIPE into exit 0 wherever it struck, even mid-backup.
#[test]
fn backup_into_a_closed_pipe_leaves_a_verified_backup_or_exits_non_zero() {
    for (args, keep) in [
        (vec!["backup"], 1),
        (vec!["backup"], 0),
        (vec!["backup", "--json"], 1),
        (vec!["backup", "--full-check"], 0),
    ] {
        let stack = Stack::new("stack");
        let mut line = args.clone();
        line.extend(["--dir", stack.dir.to_str().unwrap()]);
        let (status, stderr) = elior_into_head(&line, keep);
        assert!(!stderr.contains("panicked"), "{line:?}: {stderr}");
        if status.success() {
            assert!(
                newest_backup_verifies(&stack),
                "{line:?} exited 0 without a complete, verified backup: {stderr}"
            );
        } else {
            assert!(status.code().is_some(), "{line:?} was killed: {status}");
        }
    }
}

#[test]
fn a_listing_into_a_closed_pipe_exits_0_without_a_panic() {
    let stack = Stack::new("stack");
    let dir = stack.dir.to_str().unwrap();
    for _ in 0..3 {
        assert!(elior_env(&["-q", "backup", "--dir", dir], &[])
            .status
            .success());
    }
    let (status, stderr) = elior_into_head(&["backup", "list", "--dir", dir], 1);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_result_that_cannot_be_written_is_exit_2_not_a_panic() {
    // `> /dev/full`: ENOSPC is not a reader leaving; the script must not trust the result.
    let stack = Stack::new("stack");
    let dir = stack.dir.to_str().unwrap();
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_elior"))
        .args(["backup", "--dir", dir])
        .env_remove("ELIOR_DIR")
        .stdout(full)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("failed to write to stdout"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The backup itself was finished before the result was printed.
    assert!(newest_backup_verifies(&stack));
}

/// The stack with `lines` appended to its env file.
fn with_env(stack: &Stack, lines: &str) {
    let path = stack.dir.join(".env.production");
    let env = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{env}{lines}")).unwrap();
}

#[test]
fn schedule_next_prints_runs_on_the_first_or_a_monday_in_the_named_zone() {
    let stack = Stack::new("stack");
    with_env(
        &stack,
        "BACKUP_SCHEDULE=\"0 3 1 * 1\"\nSCHEDULE_TIMEZONE=Asia/Tokyo\nCERT_RENEW_SCHEDULE=@daily\n",
    );
    let dir = stack.dir.to_str().unwrap();
    let out = elior_env(&["schedule", "--next", "12", "--dir", dir], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listing = text(&out.stdout);
    let mut lines = listing.lines();
    assert_eq!(lines.next(), Some("backup (0 3 1 * 1)"), "{listing}");
    let backups: Vec<&str> = lines.by_ref().take(12).collect();
    let (mut firsts, mut mondays) = (0, 0);
    for line in &backups {
        // "  Mon 2026-12-07 03:00:00 JST (Asia/Tokyo)"
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(&words[2..], ["03:00:00", "JST", "(Asia/Tokyo)"], "{line}");
        let first = words[1].ends_with("-01");
        assert!(
            first || words[0] == "Mon",
            "{line}: neither the 1st nor a Monday"
        );
        firsts += usize::from(first);
        mondays += usize::from(words[0] == "Mon");
    }
    // 12 runs span about 2.5 months: both rules fire.
    assert!(firsts >= 2 && mondays >= 9, "{listing}");
    assert_eq!(lines.next(), Some("cert-renew (@daily)"), "{listing}");
    assert!(lines.all(|l| l.contains(" 00:00:00 JST")), "{listing}");
}

#[test]
fn a_bad_schedule_is_refused_naming_its_key_and_field() {
    for (value, field) in [
        ("\"0 3 * * 8\"", "the day-of-week field \"8\""),
        ("\"0 24 * * *\"", "the hour field \"24\""),
        ("\"0 3 * 0 *\"", "the month field \"0\""),
    ] {
        let stack = Stack::new("stack");
        with_env(&stack, &format!("BACKUP_SCHEDULE={value}\n"));
        let dir = stack.dir.to_str().unwrap();
        let out = elior_env(&["schedule", "--next", "1", "--dir", dir], &[]);
        assert_eq!(out.status.code(), Some(2));
        let err = text(&out.stderr);
        assert!(err.starts_with("elior: BACKUP_SCHEDULE: "), "{err}");
        assert!(err.contains(field), "{value}: {err}");
    }
    let stack = Stack::new("stack");
    with_env(&stack, "SCHEDULE_TIMEZONE=Mars/Olympus\n");
    let out = elior_env(
        &[
            "schedule",
            "--next",
            "1",
            "--dir",
            stack.dir.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("SCHEDULE_TIMEZONE: \"Mars/Olympus\""),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn dirs_split_around_the_subcommand_are_refused_not_dropped() {
    // clap would keep only the last level's values: /a would be silently ignored.
    let out = elior_env(
        &[
            "--dir", "/a", "schedule", "install", "--dir", "/b", "--print",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("put every --dir together"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn init_makes_backups_owner_only_and_the_first_backup_does_not_warn() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("stack");
    let out = elior_env(&["init", "localhost", "--dir", dir.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mode = std::fs::metadata(dir.join("backups"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    rusqlite::Connection::open(dir.join("data/elior_fitness.db"))
        .unwrap()
        .execute_batch("CREATE TABLE t (x);")
        .unwrap();
    let out = elior_env(&["backup", "--dir", dir.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("warning"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_docker_socket_this_user_may_not_open_names_its_group_and_sudo() {
    use std::os::unix::fs::PermissionsExt;
    if Command::new("runuser").arg("--help").output().is_err() {
        panic!("runuser (util-linux) is needed to run elior as another user");
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = tmp.path().join("docker.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660)).unwrap();
    let dir = tmp.path().join("stack");
    let init = elior_env(
        &["-q", "init", "localhost", "--dir", dir.to_str().unwrap()],
        &[],
    );
    assert!(init.status.success(), "{}", text(&init.stderr));
    for file in [".env.production", ".elior/stack.json"] {
        std::fs::set_permissions(dir.join(file), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::set_permissions(dir.join(".elior"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("runuser")
        .args([
            "-u",
            "nobody",
            "--",
            env!("CARGO_BIN_EXE_elior"),
            "status",
            "--dir",
        ])
        .arg(&dir)
        .env("DOCKER_HOST", format!("unix://{}", socket.display()))
        .env_remove("ELIOR_DIR")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("permission denied on the Docker socket"),
        "{err}"
    );
    assert!(err.contains("group root") && err.contains("sudo"), "{err}");
}

/// `elior ARGS` on a pseudo-terminal (util-linux `script`), as a person at a terminal
/// runs it; everything it wrote, stdout and stderr together.
fn elior_on_a_terminal(args: &str) -> String {
    let line = format!("{} {args}", env!("CARGO_BIN_EXE_elior"));
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env_remove("ELIOR_DIR")
        .stdin(Stdio::null())
        .output()
        .expect("script (util-linux) runs a command on a pseudo-terminal");
    assert!(out.status.success(), "{line}: {}", text(&out.stdout));
    text(&out.stdout)
}

#[test]
fn live_progress_is_drawn_on_a_terminal_only_and_never_with_q() {
    let stack = Stack::new("stack");
    let dir = stack.dir.to_str().unwrap();
    // A terminal: the progress line is redrawn in place (erase-line escapes).
    let tty = elior_on_a_terminal(&format!("backup --dir '{dir}'"));
    assert!(
        tty.contains("\x1b[2K"),
        "no live progress on a terminal: {tty:?}"
    );
    // -q on a terminal: the result only.
    let quiet = elior_on_a_terminal(&format!("-q backup --dir '{dir}'"));
    assert!(!quiet.contains('\x1b'), "{quiet:?}");
    assert!(!quiet.contains("backing up"), "{quiet:?}");
    assert!(quiet.starts_with("backup "), "{quiet:?}");
    // A pipe: no escape codes at all, on either stream.
    let piped = elior_env(&["backup", "--dir", dir], &[]);
    assert!(piped.status.success(), "{}", text(&piped.stderr));
    assert!(!piped.stderr.contains(&0x1b) && !piped.stdout.contains(&0x1b));
}

/// `elior init DOMAIN` in ROOT/stack, which must succeed; the stack's directory.
fn initialized_stack(root: &std::path::Path, domain: &str) -> std::path::PathBuf {
    let stack = root.join("stack");
    let init = elior(&[
        "init",
        domain,
        "--email",
        "ops@example.com",
        "--dir",
        stack.to_str().unwrap(),
    ]);
    assert!(init.status.success(), "{}", text(&init.stderr));
    stack
}

/// An audit record that meets a full disk is cut back, not left half-written. The record
/// used to go out in several writes: on a disk with room for part of it, half a JSON line
/// stayed, and the next record ran on from it, so neither could be read.
#[test]
fn an_audit_record_that_meets_a_full_disk_leaves_no_half_line() {
    let dir = tempfile::tempdir().unwrap();
    let stack = initialized_stack(dir.path(), "elior-audit.invalid");
    let stack_arg = stack.to_str().unwrap();
    let state = stack.join(".elior");
    let identity = std::fs::read(state.join("stack.json")).unwrap();
    let disk = crate::harness::tmpfs::TmpfsMount::new(&state, "64k");
    std::fs::write(state.join("stack.json"), &identity).unwrap();
    // Earlier records fill the log's one page but for 96 bytes, less than a record.
    let mut earlier = String::new();
    for n in 0.. {
        let line = format!("{{\"action\":\"earlier\",\"n\":{n}}}\n");
        if earlier.len() + line.len() > 4000 {
            break;
        }
        earlier.push_str(&line);
    }
    earlier.push_str(&" ".repeat(3999 - earlier.len()));
    earlier.push('\n');
    let log = state.join("audit.log");
    std::fs::write(&log, &earlier).unwrap();
    let filler = disk.fill();
    // One free page: the deploy lock's.
    disk.resize("68k");

    let down = ["down", "--dir", stack_arg];
    let out = elior(&down);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        earlier,
        "the audit log changed on a full disk"
    );

    std::fs::remove_file(filler).unwrap();
    let out = elior(&down);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let text = std::fs::read_to_string(&log).unwrap();
    let last = text.lines().last().unwrap();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("{line:?} is not a record: {e}"));
    }
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(last).unwrap()["action"],
        "down"
    );
}

/// A full disk under the stack's `.elior/` once left an empty deploy lock behind (it was
/// created, then could not be written), and every later deploy, restore and renewal was
/// refused until someone removed it. Now the failed attempt removes it, says nothing was
/// started, and once there is room the next command takes the lock.
#[test]
fn a_lock_that_cannot_be_written_on_a_full_disk_is_not_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    let stack = initialized_stack(dir.path(), "elior-lock.invalid");
    let stack_arg = stack.to_str().unwrap();
    let disk = crate::harness::tmpfs::TmpfsMount::new(&stack.join(".elior"), "64k");
    let filler = disk.fill();
    let renew = [
        "cert",
        "renew",
        "--nginx-conf",
        "/nonexistent/nginx.conf",
        "--dir",
        stack_arg,
    ];
    let out = elior(&renew);
    let said = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("failed to write lock file"), "{said}");
    assert!(said.contains("nothing was started"), "{said}");
    assert!(!stack.join(".elior/deploy.lock").exists());

    std::fs::remove_file(filler).unwrap();
    // With room, the renewal gets past the lock (and fails later, on its unresolvable
    // name: this test is about the lock).
    let out = elior(&renew);
    let said = text(&out.stderr);
    assert!(
        !said.contains("lock file") && !said.contains("is locked"),
        "{said}"
    );
    assert!(
        said.contains("elior-lock.invalid does not resolve"),
        "{said}"
    );
    assert!(!stack.join(".elior/deploy.lock").exists());
}
