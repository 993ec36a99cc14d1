//! `elior provision` run as a user runs it (issue 18).
//!
//! The firewall is applied only inside network namespaces these tests create (a server
//! and a client joined by a veth pair), never to the host's ruleset; each namespace is
//! deleted by a guard even when a test fails. The user and units steps run against a root
//! prefix (`--root`). The one test on the host itself is `--dry-run --json`, which must
//! leave the host's files and nftables tables exactly as they were.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::harness::stack::{succeeded, text};

const BIN: &str = env!("CARGO_BIN_EXE_elior");

fn must(command: &mut Command) -> String {
    let out = command.output().expect("run command");
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn unique(prefix: &str) -> String {
    static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{}-{}-{nanos:x}",
        std::process::id(),
        COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// A network namespace, deleted on drop (with whatever runs in it killed first).
struct Netns {
    name: String,
    children: Vec<Child>,
}

impl Netns {
    fn new(prefix: &str) -> Netns {
        let name = unique(prefix);
        must(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns {
            name,
            children: Vec::new(),
        };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    fn exec(&self, args: &[&str]) -> String {
        must(self.command(args[0]).args(&args[1..]))
    }

    fn ruleset(&self) -> String {
        self.exec(&["nft", "list", "ruleset"])
    }

    /// Listens on `ports` (never accepting: the kernel completes the handshake) until
    /// dropped; returns once the sockets listen.
    fn listen(&mut self, ports: &[u16]) {
        let script = format!(
            "import socket,sys,time\nss=[]\nfor p in {ports:?}:\n s=socket.socket(socket.AF_INET6)\n s.setsockopt(socket.IPPROTO_IPV6,socket.IPV6_V6ONLY,0)\n s.bind(('::',p))\n s.listen(16)\n ss.append(s)\nprint('ready',flush=True)\ntime.sleep(3600)\n"
        );
        let mut child = self
            .command("python3")
            .args(["-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start python3 listener");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "ready");
        self.children.push(child);
    }

    /// True when a TCP connection to `addr:port` opens within `wait`.
    fn reaches(&self, addr: &str, port: u16, wait: Duration) -> bool {
        let script = format!(
            "import socket\ntry:\n socket.create_connection(('{addr}',{port}),timeout={})\nexcept OSError:\n raise SystemExit(1)\n",
            wait.as_secs_f32()
        );
        self.command("python3")
            .args(["-c", &script])
            .status()
            .unwrap()
            .success()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Joins `a` and `b` by a veth pair (`va` in a, `vb` in b, never in the host's namespace)
/// with the /30 addresses given.
fn link(a: &Netns, a_addr: &str, a_dev: &str, b: &Netns, b_addr: &str, b_dev: &str) {
    must(Command::new("ip").args([
        "link", "add", a_dev, "netns", &a.name, "type", "veth", "peer", "name", b_dev, "netns",
        &b.name,
    ]));
    a.exec(&["ip", "addr", "add", a_addr, "dev", a_dev]);
    b.exec(&["ip", "addr", "add", b_addr, "dev", b_dev]);
    a.exec(&["ip", "link", "set", a_dev, "up"]);
    b.exec(&["ip", "link", "set", b_dev, "up"]);
}

/// A server namespace at 10.18.0.1 and a client at 10.18.0.2 (addresses are per
/// namespace, so parallel tests do not collide).
fn pair() -> (Netns, Netns) {
    let server = Netns::new("elS");
    let client = Netns::new("elC");
    link(&server, "10.18.0.1/30", "vs", &client, "10.18.0.2/30", "vc");
    // IPv6 too; nodad so the address is usable at once instead of after duplicate detection.
    server.exec(&[
        "ip",
        "-6",
        "addr",
        "add",
        "fd18::1/64",
        "dev",
        "vs",
        "nodad",
    ]);
    client.exec(&[
        "ip",
        "-6",
        "addr",
        "add",
        "fd18::2/64",
        "dev",
        "vc",
        "nodad",
    ]);
    (server, client)
}

/// Loads an nft script into a namespace.
fn nft_load(ns: &Netns, script: &str) {
    let mut child = ns
        .command("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), script.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "nft refused:\n{script}");
}

/// A root prefix for files: os-release and an sshd_config with `Port 2222`.
fn firewall_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc/ssh")).unwrap();
    std::fs::write(
        root.path().join("etc/os-release"),
        "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
    )
    .unwrap();
    std::fs::write(
        root.path().join("etc/ssh/sshd_config"),
        "Include /etc/ssh/sshd_config.d/*.conf\nPort 2222\nPermitRootLogin no\n",
    )
    .unwrap();
    root
}

/// `elior provision ARGS --root ROOT` inside the namespace.
fn provision_in(ns: &Netns, root: &Path, args: &[&str]) -> Output {
    ns.command(BIN)
        .arg("provision")
        .args(args)
        .arg("--root")
        .arg(root)
        .env_remove("SSH_CONNECTION")
        .output()
        .unwrap()
}

/// Every file under `dir`: relative path -> (mode, content or link target).
fn tree(dir: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&at) else {
            continue;
        };
        for entry in entries.map(Result::unwrap) {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(dir).unwrap().to_path_buf();
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.insert(
                    rel,
                    (meta.mode(), target.into_os_string().into_encoded_bytes()),
                );
            } else if meta.is_dir() {
                out.insert(rel, (meta.mode(), Vec::new()));
                stack.push(path);
            } else {
                out.insert(rel, (meta.mode(), std::fs::read(&path).unwrap()));
            }
        }
    }
    out
}

/// The entries of a [`tree`] that are not directories.
fn files(tree: BTreeMap<PathBuf, (u32, Vec<u8>)>) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    tree.into_iter()
        .filter(|(_, (mode, _))| mode & 0o170000 != 0o040000)
        .collect()
}

/// A table iptables-nft would own, standing in for Docker's: elior must leave it be.
const DOCKER_LIKE: &str = "table ip filter {
\tchain DOCKER-USER {
\t\treturn
\t}

\tchain FORWARD {
\t\ttype filter hook forward priority filter; policy accept;
\t\tjump DOCKER-USER
\t}
}
";

#[test]
fn firewall_in_a_namespace_opens_ssh_and_web_only_and_undo_restores_it() {
    let root = firewall_root();
    let (mut server, client) = pair();
    nft_load(&server, DOCKER_LIKE);
    let before = server.ruleset();
    assert_eq!(before, DOCKER_LIKE);
    server.listen(&[443, 8080, 2222]);
    let open = Duration::from_secs(5);
    // Everything answers before the firewall, which proves the setup, not the firewall.
    for port in [443, 8080, 2222] {
        assert!(
            client.reaches("10.18.0.1", port, open),
            "port {port} before"
        );
    }
    let files_before = tree(root.path());

    // --dry-run shows the diff of the ruleset and changes nothing.
    let dry = provision_in(&server, root.path(), &["--only", "firewall", "--dry-run"]);
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    let stdout = text(&dry.stdout);
    assert!(
        stdout.contains("      +\t\ttcp dport { 80, 443, 2222 } accept\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("SSH port 2222 (from /etc/ssh/sshd_config)"),
        "{stdout}"
    );
    assert_eq!(server.ruleset(), before);
    assert_eq!(tree(root.path()), files_before);

    let first = succeeded(&provision_in(&server, root.path(), &["--only", "firewall"]));
    assert!(first.ends_with("applied 4 changes\n"), "{first}");
    let applied = server.ruleset();
    // Docker's table is intact and first; elior's table is added after it.
    assert!(applied.starts_with(DOCKER_LIKE), "{applied}");
    assert!(applied.contains("table inet elior {"), "{applied}");
    assert!(client.reaches("10.18.0.1", 443, open));
    assert!(
        client.reaches("10.18.0.1", 2222, open),
        "the SSH port from sshd_config"
    );
    // A dropped SYN is never answered: waiting out a short timeout is how a drop shows.
    assert!(!client.reaches("10.18.0.1", 8080, Duration::from_secs(1)));
    assert!(client.reaches("fd18::1", 443, open), "IPv6 443");
    assert!(
        !client.reaches("fd18::1", 8080, Duration::from_secs(1)),
        "IPv6 8080"
    );
    let persisted = std::fs::read_to_string(root.path().join("etc/elior/firewall.nft")).unwrap();
    assert!(persisted.contains("delete table inet elior\ntable inet elior {"));
    assert!(root
        .path()
        .join("etc/systemd/system/sysinit.target.wants/elior-firewall.service")
        .symlink_metadata()
        .is_ok());

    verify_unit(
        &root
            .path()
            .join("etc/systemd/system/elior-firewall.service"),
        None,
    );

    // Idempotent: 0 changes, and the ruleset byte for byte the same after another apply.
    let second = provision_in(&server, root.path(), &["--only", "firewall"]);
    assert!(second.status.success(), "{}", text(&second.stderr));
    assert!(text(&second.stdout).ends_with("0 changes: the host is as planned\n"));
    assert_eq!(server.ruleset(), applied);
    let json = provision_in(
        &server,
        root.path(),
        &["--only", "firewall", "--dry-run", "--json"],
    );
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(doc["changes"], 0);
    assert_eq!(doc["steps"][0]["step"], "firewall");
    assert_eq!(
        doc["steps"][0]["have"]["table"],
        doc["steps"][0]["want"]["table"]
    );

    // --undo: the namespace's ruleset as it was, byte for byte, and elior's files gone.
    let undo = provision_in(&server, root.path(), &["--only", "firewall", "--undo"]);
    assert!(
        undo.status.success(),
        "{}{}",
        text(&undo.stdout),
        text(&undo.stderr)
    );
    assert_eq!(server.ruleset(), before);
    // Every file as before; /etc/systemd/system and /var/lib exist on any real host, so
    // directories elior created there may stay (its own /etc/elior goes).
    assert_eq!(files(tree(root.path())), files(files_before));
    assert!(!root.path().join("etc/elior").exists());
    assert!(client.reaches("10.18.0.1", 8080, open));
    let again = provision_in(&server, root.path(), &["--only", "firewall", "--undo"]);
    assert!(text(&again.stdout).ends_with("0 changes: the host is as planned\n"));
}

#[test]
fn published_container_ports_other_than_web_are_dropped() {
    // Docker's shape in miniature: the host namespace DNATs published ports to a
    // "container" namespace behind it, the way Docker's nat table does, so the packets
    // take the forward path and never see the input chain.
    let root = firewall_root();
    let (host, client) = pair();
    let mut container = Netns::new("elK");
    link(
        &host,
        "10.19.0.1/30",
        "vk",
        &container,
        "10.19.0.2/30",
        "vh",
    );
    container.exec(&["ip", "route", "add", "default", "via", "10.19.0.1"]);
    host.exec(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
    nft_load(
        &host,
        "table ip nat {
\tchain PREROUTING {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\ttcp dport 443 dnat to 10.19.0.2:9443
\t\ttcp dport 8081 dnat to 10.19.0.2:9000
\t}
}
",
    );
    container.listen(&[9443, 9000]);
    let open = Duration::from_secs(5);
    assert!(client.reaches("10.18.0.1", 443, open));
    assert!(client.reaches("10.18.0.1", 8081, open));
    let out = provision_in(&host, root.path(), &["--only", "firewall"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        client.reaches("10.18.0.1", 443, open),
        "published 443 must stay open"
    );
    assert!(
        !client.reaches("10.18.0.1", 8081, Duration::from_secs(1)),
        "published 8081 reached the container"
    );
}

#[test]
fn the_port_a_running_sshd_listens_on_stays_open() {
    // A listener whose process is called sshd (python3 through a link named sshd), on
    // 2200, a port no sshd_config names: the plan must keep it open. A dry run on the
    // live root, so nothing on the host is written.
    let (mut server, _client) = pair();
    let python = must(Command::new("python3").args(["-c", "import sys; print(sys.executable)"]));
    let dir = tempfile::tempdir().unwrap();
    let sshd = dir.path().join("sshd");
    std::os::unix::fs::symlink(python.trim(), &sshd).unwrap();
    let mut child = server
        .command(sshd.to_str().unwrap())
        .args([
            "-c",
            "import socket,time\ns=socket.socket()\ns.bind(('0.0.0.0',2200))\ns.listen()\nprint('ready',flush=True)\ntime.sleep(3600)\n",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    server.children.push(child);
    assert_eq!(line.trim(), "ready");
    let out = server
        .command(BIN)
        .args(["provision", "--only", "firewall", "--dry-run"])
        .env("SSH_CONNECTION", "10.18.0.2 50000 10.18.0.1 2200")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("+\t\ttcp dport { "), "{stdout}");
    assert!(stdout.contains(", 2200 } accept"), "{stdout}");
    assert!(
        stdout.contains("(from the running sshd, listening on 2200"),
        "{stdout}"
    );
    assert!(!stdout.contains("blocked:"), "{stdout}");
}

#[test]
fn a_firewall_step_failing_part_way_leaves_rules_and_files_as_they_were() {
    let root = firewall_root();
    let (server, _client) = pair();
    // A file where systemctl must create the .wants directory: enabling the unit fails
    // after the rules file and the unit were written.
    let wants = root.path().join("etc/systemd/system/sysinit.target.wants");
    std::fs::create_dir_all(wants.parent().unwrap()).unwrap();
    std::fs::write(&wants, "in the way").unwrap();
    let before = server.ruleset();
    let files_before = tree(root.path());
    let out = provision_in(&server, root.path(), &["--only", "firewall"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("the firewall step failed; its earlier changes were put back"),
        "{stderr}"
    );
    assert_eq!(server.ruleset(), before);
    assert_eq!(tree(root.path()), files_before);
}

#[test]
fn a_session_on_a_port_sshd_does_not_list_stops_the_firewall_before_any_change() {
    let root = firewall_root();
    let (server, _client) = pair();
    let before = server.ruleset();
    let files_before = tree(root.path());
    let out = server
        .command(BIN)
        .args(["provision", "--only", "firewall", "--root"])
        .arg(root.path())
        .env("SSH_CONNECTION", "10.18.0.2 50000 10.18.0.1 2200")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr)
            .contains("this SSH session came in on port 2200, which the firewall would close"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(server.ruleset(), before);
    assert_eq!(tree(root.path()), files_before);
}

/// A root with the account files useradd needs, os-release, and a stack at /srv/elior
/// whose env file is still at 0644.
fn stack_root() -> tempfile::TempDir {
    let root = firewall_root();
    let at = |p: &str| root.path().join(p);
    std::fs::write(at("etc/passwd"), "root:x:0:0:root:/root:/bin/bash\n").unwrap();
    std::fs::write(at("etc/group"), "root:x:0:\ndocker:x:990:\n").unwrap();
    std::fs::write(at("etc/shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
    std::fs::write(at("etc/gshadow"), "root:*::\ndocker:!::\n").unwrap();
    std::fs::create_dir_all(at("srv/elior")).unwrap();
    std::fs::write(at("srv/elior/.env.production"), "DOMAIN=example.com\n").unwrap();
    std::fs::set_permissions(
        at("srv/elior/.env.production"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    root
}

fn provision(root: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("provision")
        .args(args)
        .arg("--root")
        .arg(root)
        .env_remove("SSH_CONNECTION")
        .output()
        .unwrap()
}

/// `systemd-analyze verify` accepts the unit with no warning (it exits 0 on unknown keys,
/// so stderr must be empty too); skipped, saying why, where systemd-analyze is missing.
fn verify_unit(unit: &Path, replace: Option<(&str, &str)>) {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped systemd-analyze verify: systemd-analyze is not installed here");
        return;
    }
    let mut content = std::fs::read_to_string(unit).unwrap();
    if let Some((from, to)) = replace {
        content = content.replace(from, to);
    }
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join(unit.file_name().unwrap());
    std::fs::write(&copy, content).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        "",
        "systemd-analyze warned about {unit:?}"
    );
}

fn mode_owner(path: &Path) -> (u32, u32) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    (meta.mode() & 0o7777, meta.uid())
}

#[test]
fn under_a_root_prefix_the_user_owns_the_stack_and_the_unit_is_hardened() {
    let root = stack_root();
    let at = |p: &str| root.path().join(p);
    let out = provision(
        root.path(),
        &[
            "--only",
            "user,units",
            "--dir",
            "/srv/elior",
            "--docker-group",
        ],
    );
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let passwd = std::fs::read_to_string(at("etc/passwd")).unwrap();
    let line = passwd
        .lines()
        .find(|l| l.starts_with("elior:"))
        .expect(&passwd);
    assert!(line.ends_with(":/nonexistent:/usr/sbin/nologin"), "{line}");
    let uid: u32 = line.split(':').nth(2).unwrap().parse().unwrap();
    // The API container's uid, so elior owns what the API writes in data/ (backups open
    // the database there, and SQLite needs to create its -shm file beside it).
    assert_eq!(uid, 10001, "{line}");
    assert!(std::fs::read_to_string(at("etc/group"))
        .unwrap()
        .contains("\nelior:x:10001:\n"));
    assert!(std::fs::read_to_string(at("etc/group"))
        .unwrap()
        .contains("docker:x:990:elior\n"));
    assert_eq!(mode_owner(&at("srv/elior")), (0o750, uid));
    assert_eq!(mode_owner(&at("srv/elior/backups")), (0o700, uid));
    assert_eq!(mode_owner(&at("srv/elior/.env.production")), (0o600, uid));

    let name = "elior-schedule-srv-elior.service";
    let unit_path = at("etc/systemd/system").join(name);
    assert_eq!(mode_owner(&unit_path), (0o644, 0));
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    for line in [
        "User=elior",
        "ExecStart=/usr/local/bin/elior schedule --dir /srv/elior",
        "ProtectSystem=strict",
        "ReadWritePaths=/srv/elior",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "Restart=on-failure",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} missing:\n{unit}");
    }
    assert_eq!(
        std::fs::read_link(at("etc/systemd/system/multi-user.target.wants").join(name)).unwrap(),
        Path::new("/etc/systemd/system").join(name)
    );
    let binary = at("usr/local/bin/elior");
    assert_eq!(mode_owner(&binary).0, 0o755);
    assert_eq!(
        std::fs::metadata(&binary).unwrap().len(),
        std::fs::metadata(BIN).unwrap().len()
    );

    // The prefix's /usr/local/bin is not the host's: verify checks ExecStart on BIN.
    verify_unit(&unit_path, Some(("/usr/local/bin/elior", BIN)));

    let again = provision(
        root.path(),
        &[
            "--only",
            "user,units",
            "--dir",
            "/srv/elior",
            "--docker-group",
        ],
    );
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        text(&again.stdout).ends_with("0 changes: the host is as planned\n"),
        "{}",
        text(&again.stdout)
    );

    // --undo takes the unit and its link away, and leaves the user and modes.
    let undo = provision(
        root.path(),
        &["--only", "units", "--undo", "--dir", "/srv/elior"],
    );
    assert!(undo.status.success(), "{}", text(&undo.stderr));
    assert!(!unit_path.exists());
    assert!(at("etc/systemd/system/multi-user.target.wants")
        .join(name)
        .symlink_metadata()
        .is_err());
    assert_eq!(mode_owner(&at("srv/elior")), (0o750, uid));
}

#[test]
fn a_changed_unit_is_rewritten_and_a_foreign_unit_survives_undo() {
    let root = stack_root();
    let at = |p: &str| root.path().join(p);
    assert!(
        provision(root.path(), &["--only", "units", "--dir", "/srv/elior"])
            .status
            .success()
    );
    let name = "elior-schedule-srv-elior.service";
    let unit_path = at("etc/systemd/system").join(name);
    let fresh = std::fs::read_to_string(&unit_path).unwrap();
    std::fs::write(
        &unit_path,
        fresh.replace("ProtectSystem=strict", "ProtectSystem=no"),
    )
    .unwrap();
    // A unit by that prefix that elior did not write (no marker line).
    let foreign = at("etc/systemd/system/elior-schedule-mine.service");
    std::fs::write(&foreign, "[Service]\nExecStart=/bin/true\n").unwrap();
    let out = provision(root.path(), &["--only", "units", "--dir", "/srv/elior"]);
    assert!(text(&out.stdout).contains(&format!("  + write /etc/systemd/system/{name} (0644)\n")));
    assert!(
        text(&out.stdout).ends_with("applied 1 change\n"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(std::fs::read_to_string(&unit_path).unwrap(), fresh);
    assert!(provision(root.path(), &["--only", "units", "--undo"])
        .status
        .success());
    assert!(!unit_path.exists());
    assert!(
        foreign.exists(),
        "--undo removed a unit elior did not write"
    );
}

#[test]
fn a_second_provision_on_the_same_root_stops_while_the_first_runs() {
    let root = stack_root();
    // The same lock a running provision holds: flock on the root directory.
    let held = std::fs::File::open(root.path()).unwrap();
    rustix::fs::flock(&held, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    let before = tree(root.path());
    let out = provision(root.path(), &["--only", "user", "--dir", "/srv/elior"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("another elior provision is changing"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(tree(root.path()), before);
    // The dry run does not need the lock.
    assert!(provision(
        root.path(),
        &["--only", "user", "--dir", "/srv/elior", "--dry-run"]
    )
    .status
    .success());
}

#[test]
fn a_stack_directory_that_would_inject_a_unit_directive_is_refused() {
    let root = stack_root();
    let before = tree(root.path());
    for dir in ["/srv/x\nExecStartPre=/bin/sh", "/srv/../etc"] {
        let out = provision(root.path(), &["--only", "units", "--dir", dir]);
        assert_eq!(out.status.code(), Some(2), "{dir:?}");
        assert!(
            text(&out.stderr).starts_with("elior: --dir"),
            "{}",
            text(&out.stderr)
        );
    }
    assert_eq!(tree(root.path()), before);
}

#[test]
fn unattended_upgrades_are_switched_on_by_a_file_of_elior_s_own_and_undo_removes_it() {
    let root = stack_root();
    let conf = root
        .path()
        .join("etc/apt/apt.conf.d/52elior-unattended-upgrades");
    let out = provision(root.path(), &["--only", "time"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Packages belong to the live host: under --root they are named, not installed.
    assert!(
        text(&out.stdout).contains("left out: apt-get install"),
        "{}",
        text(&out.stdout)
    );
    let written = std::fs::read_to_string(&conf).unwrap();
    assert!(written.contains("APT::Periodic::Unattended-Upgrade \"1\";\n"));
    assert_eq!(mode_owner(&conf), (0o644, 0));
    let again = provision(root.path(), &["--only", "time"]);
    assert!(text(&again.stdout).ends_with("0 changes: the host is as planned\n"));
    assert!(provision(root.path(), &["--only", "time", "--undo"])
        .status
        .success());
    assert!(!conf.exists());
}

#[test]
fn not_debian_or_ubuntu_stops_before_any_change() {
    let root = stack_root();
    std::fs::write(
        root.path().join("etc/os-release"),
        "PRETTY_NAME=\"Fedora Linux 40\"\nID=fedora\n",
    )
    .unwrap();
    let before = tree(root.path());
    let out = provision(
        root.path(),
        &["--only", "user,units", "--dir", "/srv/elior"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("user: Fedora Linux 40 (fedora) is neither Debian nor Ubuntu"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(tree(root.path()), before);
}

/// The host paths provision could write, with their contents.
fn host_state() -> (BTreeMap<PathBuf, (u32, Vec<u8>)>, String) {
    let mut files = BTreeMap::new();
    for dir in [
        "/etc/systemd/system",
        "/etc/apt/apt.conf.d",
        "/etc/elior",
        "/var/lib/elior",
    ] {
        for (path, value) in tree(Path::new(dir)) {
            files.insert(Path::new(dir).join(path), value);
        }
    }
    for file in [
        "/etc/passwd",
        "/etc/group",
        "/etc/shadow",
        "/usr/local/bin/elior",
    ] {
        if let Ok(meta) = std::fs::metadata(file) {
            files.insert(file.into(), (meta.mode(), std::fs::read(file).unwrap()));
        }
    }
    // Docker edits its own tables as other tests run; the list of tables and elior's own
    // table are what a provision run could change.
    let tables = must(Command::new("nft").args(["list", "tables"]));
    let elior = Command::new("nft")
        .args(["list", "table", "inet", "elior"])
        .output()
        .unwrap();
    (files, format!("{tables}\n{}", text(&elior.stdout)))
}

#[test]
fn dry_run_json_on_this_machine_shows_every_step_and_changes_nothing() {
    let stack = tempfile::tempdir().unwrap();
    let before = host_state();
    let stack_before = tree(stack.path());
    let out = Command::new(BIN)
        .args(["provision", "--dry-run", "--json", "--dir"])
        .arg(stack.path().join("srv"))
        .env_remove("SSH_CONNECTION")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["dry_run"], true);
    let steps: Vec<&str> = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["engine", "user", "units", "time", "capacity", "firewall"]
    );
    for step in doc["steps"].as_array().unwrap() {
        for key in ["want", "have", "actions"] {
            assert!(!step[key].is_null(), "{key} missing in {step}");
        }
    }
    assert!(doc["steps"][5]["want"]["table"]
        .as_str()
        .unwrap()
        .starts_with("table inet elior {\n"));
    assert_eq!(host_state(), before, "the dry run changed the host");
    assert_eq!(tree(stack.path()), stack_before);
}

// Issue 20: `schedule install` is provision's user and units steps, one unit per stack.
#[test]
fn schedule_install_writes_one_verified_unit_per_stack_and_uninstall_removes_only_its_own() {
    let root = stack_root();
    let at = |p: &str| root.path().join(p);
    std::fs::create_dir_all(at("srv/other")).unwrap();
    std::fs::write(
        at("srv/other/.env.production"),
        "DOMAIN=other.example.com\n",
    )
    .unwrap();
    let schedule = |args: &[&str]| {
        Command::new(BIN)
            .arg("schedule")
            .args(args)
            .arg("--root")
            .arg(root.path())
            .env_remove("ELIOR_DIR")
            .env_remove("SSH_CONNECTION")
            .output()
            .unwrap()
    };
    let both = ["install", "--dir", "/srv/elior", "--dir", "/srv/other"];
    let out = schedule(&both);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let units = at("etc/systemd/system");
    for (name, dir) in [
        ("elior-schedule-srv-elior.service", "/srv/elior"),
        ("elior-schedule-srv-other.service", "/srv/other"),
    ] {
        let unit = std::fs::read_to_string(units.join(name)).unwrap();
        for line in [
            "User=elior".to_string(),
            format!("ExecStart=/usr/local/bin/elior schedule --dir {dir}"),
            "ProtectSystem=strict".to_string(),
            format!("ReadWritePaths={dir}"),
            "NoNewPrivileges=yes".to_string(),
            "Restart=on-failure".to_string(),
        ] {
            assert!(
                unit.lines().any(|l| l == line),
                "{name}: {line} missing:\n{unit}"
            );
        }
        assert!(at("etc/systemd/system/multi-user.target.wants")
            .join(name)
            .symlink_metadata()
            .is_ok());
        verify_unit(&units.join(name), Some(("/usr/local/bin/elior", BIN)));
    }
    // ExecStart names the stable path, and the binary is there.
    assert_eq!(
        std::fs::metadata(at("usr/local/bin/elior")).unwrap().len(),
        std::fs::metadata(BIN).unwrap().len()
    );

    // A unit changed by hand is put back; the other is left alone.
    let path = units.join("elior-schedule-srv-other.service");
    let fresh = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        fresh.replace("ProtectSystem=strict", "ProtectSystem=no"),
    )
    .unwrap();
    let again = schedule(&both);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        text(&again.stdout).ends_with("applied 1 change\n"),
        "{}",
        text(&again.stdout)
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), fresh);

    let gone = schedule(&["uninstall", "--dir", "/srv/other"]);
    assert!(gone.status.success(), "{}", text(&gone.stderr));
    assert!(!path.exists());
    assert!(units.join("elior-schedule-srv-elior.service").exists());
    let twice = schedule(&["uninstall", "--dir", "/srv/other"]);
    assert!(
        text(&twice.stdout).contains("nothing to remove"),
        "{}",
        text(&twice.stdout)
    );
}
