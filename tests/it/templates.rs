//! `elior init`, `elior render` and `elior config show`, run as the real binary in temp
//! dirs; the rendered nginx.conf checked by Debian's nginx (the fixture image built by
//! scripts/build-fixture-images) and served for real, and the compose file by
//! docker-compose. Everything made in Docker is labelled `elior.test=1` and removed by a
//! guard, even when a test fails.

use crate::harness::stack::text;
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_elior");

fn elior(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run elior")
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// A stack made by `elior init DOMAIN` with `extra` env lines appended (a key already in
/// the file loses its earlier line: a key set twice is an error of its own).
struct Stack {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Stack {
    fn init(domain: &str, extra: &str) -> Stack {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("stack");
        let out = elior(&[
            "init",
            domain,
            "--dir",
            dir.to_str().unwrap(),
            "--email",
            "ops@example.com",
        ]);
        assert_eq!(code(&out), 0, "init failed: {}", text(&out.stderr));
        if !extra.is_empty() {
            let env = dir.join(".env.production");
            let keys: Vec<&str> = extra
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, _)| k)
                .collect();
            let mut content: String = fs::read_to_string(&env)
                .unwrap()
                .lines()
                .filter(|l| !keys.iter().any(|k| l.starts_with(&format!("{k}="))))
                .map(|l| format!("{l}\n"))
                .collect();
            content.push_str(extra);
            fs::write(&env, content).unwrap();
        }
        Stack { _tmp: tmp, dir }
    }

    fn path(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    fn render(&self, more: &[&str]) -> Output {
        let mut args = vec!["render", "--dir", self.path()];
        args.extend_from_slice(more);
        elior(&args)
    }

    fn rendered(self) -> Stack {
        let out = self.render(&[]);
        assert_eq!(code(&out), 0, "render failed: {}", text(&out.stderr));
        self
    }

    fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.dir.join(rel)).unwrap()
    }

    /// A throwaway self-signed certificate where production keeps the real one.
    fn self_signed_cert(&self, name: &str) {
        let ssl = self.dir.join("nginx/ssl");
        let out = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "2", "-subj", &format!("/CN={name}")])
            .arg("-keyout")
            .arg(ssl.join("key.pem"))
            .arg("-out")
            .arg(ssl.join("cert.pem"))
            .output()
            .expect("run openssl");
        assert!(out.status.success(), "openssl: {}", text(&out.stderr));
    }
}

// ---------------------------------------------------------------------------------------
// init

#[test]
fn init_refuses_bad_domains_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let over_63 = format!("{}.com", "a".repeat(64));
    for bad in [
        "",
        "a b",
        "example.com;",
        "ex$ample.com",
        "-bad.com",
        "bad-.com",
        "../etc",
        "example.com\nserver {",
        over_63.as_str(),
    ] {
        let dir = tmp.path().join("stack");
        // `--` so that "-bad.com" is a value, as a user would have to write it too.
        let out = elior(&["init", "--dir", dir.to_str().unwrap(), "--", bad]);
        let err = text(&out.stderr);
        assert_eq!(code(&out), 2, "{bad:?} was accepted: {err}");
        assert!(err.starts_with("elior: DOMAIN argument"), "{bad:?}: {err}");
        assert!(!dir.exists(), "{bad:?}: init wrote {}", dir.display());
    }
}

#[test]
fn init_refuses_a_bad_email_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("stack");
    let out = elior(&[
        "init",
        "example.com",
        "--dir",
        dir.to_str().unwrap(),
        "--email",
        "ops at example",
    ]);
    assert_eq!(code(&out), 2);
    assert!(text(&out.stderr).contains("--email \"ops at example\" is not an email address"));
    assert!(!dir.exists());
}

#[test]
fn init_twice_keeps_the_first_secret_and_adds_only_missing_keys() {
    let stack = Stack::init("bücher.example", "");
    let env_path = stack.dir.join(".env.production");
    assert_eq!(
        fs::metadata(&env_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let first = stack.read(".env.production");
    let secret = |t: &str| {
        t.lines()
            .find_map(|l| l.strip_prefix("JWT_SECRET="))
            .unwrap()
            .to_string()
    };
    assert_eq!(secret(&first).len(), 64);
    assert!(secret(&first).bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(first.contains("DOMAIN=xn--bcher-kva.example\n"));
    assert!(first.contains(
        "CORS_ORIGINS=https://xn--bcher-kva.example,https://www.xn--bcher-kva.example\n"
    ));
    for dir in ["data", "uploads", "backups", "nginx/ssl", "nginx/acme"] {
        assert!(stack.dir.join(dir).is_dir(), "{dir}");
    }

    let again = elior(&["init", "bücher.example", "--dir", stack.path()]);
    assert_eq!(code(&again), 0);
    assert!(text(&again.stdout).contains("nothing to add"));
    assert_eq!(
        stack.read(".env.production"),
        first,
        "a second init changed the file"
    );

    // Drop two keys by hand: the next init appends exactly those and names them.
    let edited: String = first
        .lines()
        .filter(|l| !l.starts_with("HTTPS_PORT=") && !l.starts_with("BACKUP_SCHEDULE="))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&env_path, &edited).unwrap();
    let third = elior(&["init", "other.example", "--dir", stack.path()]);
    assert_eq!(code(&third), 0, "{}", text(&third.stderr));
    assert!(
        text(&third.stdout).contains("BACKUP_SCHEDULE, HTTPS_PORT"),
        "{}",
        text(&third.stdout)
    );
    assert!(text(&third.stderr).contains("keeping DOMAIN=xn--bcher-kva.example"));
    let now = stack.read(".env.production");
    assert!(now.starts_with(&edited));
    assert!(
        now.ends_with("BACKUP_SCHEDULE=\"0 2 * * *\"\nHTTPS_PORT=443\n"),
        "{now}"
    );
    assert_eq!(secret(&now), secret(&first));
    assert_eq!(
        fs::metadata(&env_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

// ---------------------------------------------------------------------------------------
// render and config show

#[test]
fn render_refuses_bad_values_naming_key_and_line_and_writes_nothing() {
    for (line, needle) in [
        ("DOMAIN=example.com;", "DOMAIN"),
        ("DOMAIN=\"example.com\\nserver {\"", "DOMAIN"),
        ("HTTP_PORT=eighty", "HTTP_PORT"),
        ("HTTPS_PORT=0", "HTTPS_PORT"),
        ("MAX_FILE_SIZE=10MB", "MAX_FILE_SIZE"),
        ("BACKUP_SCHEDULE=\"61 2 * * *\"", "BACKUP_SCHEDULE"),
        ("CERT_RENEW_SCHEDULE=daily", "CERT_RENEW_SCHEDULE"),
        ("ACME_EMAIL=root", "ACME_EMAIL"),
        ("CORS_ORIGINS=http://example.com", "CORS_ORIGINS"),
        ("API_IMAGE=\"api image\"", "API_IMAGE"),
        ("PROXY_IMAGE=NGINX", "PROXY_IMAGE"),
        (
            "JWT_SECRET=your-secret-key-change-this-in-production",
            "placeholder",
        ),
        ("BACKUP_RETENTION_DAYS=-1", "BACKUP_RETENTION_DAYS"),
    ] {
        let stack = Stack::init("example.com", &format!("{line}\n"));
        let last_line = stack.read(".env.production").lines().count();
        let out = stack.render(&[]);
        let err = text(&out.stderr);
        assert_eq!(code(&out), 2, "{line}: accepted");
        assert!(err.contains(needle), "{line}: {err}");
        assert!(
            err.contains(&format!("line {last_line}")),
            "{line}: no line number in {err}"
        );
        assert!(
            !stack.dir.join("docker-compose.prod.yml").exists(),
            "{line}: wrote compose"
        );
        assert!(
            !stack.dir.join("nginx/nginx.conf").exists(),
            "{line}: wrote nginx.conf"
        );
    }
}

#[test]
fn render_reports_a_malformed_line_by_number() {
    let stack = Stack::init("example.com", "this is not a setting\n");
    let n = stack.read(".env.production").lines().count();
    let out = stack.render(&[]);
    assert_eq!(code(&out), 2);
    assert!(
        text(&out.stderr).contains(&format!("line {n}: expected KEY=VALUE")),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn render_warns_about_unknown_keys_with_a_suggestion() {
    let stack = Stack::init("example.com", "HTTPS_PROT=8443\n");
    let out = stack.render(&[]);
    assert_eq!(code(&out), 0);
    assert!(
        text(&out.stderr).contains("warning: unknown key HTTPS_PROT")
            && text(&out.stderr).contains("did you mean HTTPS_PORT?"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn render_check_detects_a_hand_edit() {
    let stack = Stack::init("example.com", "").rendered();
    let clean = stack.render(&["--check"]);
    assert_eq!(code(&clean), 0, "{}", text(&clean.stderr));
    assert!(text(&clean.stdout).is_empty());

    let conf = stack.dir.join("nginx/nginx.conf");
    let original = stack.read("nginx/nginx.conf");
    let edited = original.replace(
        "limit_req zone=elior_auth burst=10",
        "limit_req zone=elior_auth burst=1000",
    );
    assert_ne!(edited, original);
    fs::write(&conf, &edited).unwrap();
    let drift = stack.render(&["--check"]);
    assert_eq!(code(&drift), 1);
    let diff = text(&drift.stdout);
    assert!(
        diff.contains("--- nginx/nginx.conf (on disk)\n+++ nginx/nginx.conf (rendered)\n"),
        "{diff}"
    );
    assert!(
        diff.contains("-            limit_req zone=elior_auth burst=1000 nodelay;\n"),
        "{diff}"
    );
    assert!(
        diff.contains("+            limit_req zone=elior_auth burst=10 nodelay;\n"),
        "{diff}"
    );
    assert!(text(&drift.stderr).contains("drift: nginx/nginx.conf differs"));
    assert_eq!(
        stack.read("nginx/nginx.conf"),
        edited,
        "--check changed the file"
    );

    // A settings change is drift too, until render writes it.
    let env = stack.dir.join(".env.production");
    fs::write(
        &env,
        stack
            .read(".env.production")
            .replace("HTTPS_PORT=443\n", "HTTPS_PORT=8443\n"),
    )
    .unwrap();
    assert_eq!(code(&stack.render(&["--check"])), 1);
    assert_eq!(code(&stack.render(&[])), 0);
    assert_eq!(code(&stack.render(&["--check"])), 0);
    assert!(stack
        .read("docker-compose.prod.yml")
        .contains("- \"8443:443\""));
}

#[test]
fn render_uses_templates_from_the_override_folder() {
    let stack = Stack::init("example.com", "");
    let templates = stack.dir.join("my-templates");
    fs::create_dir(&templates).unwrap();
    fs::write(
        templates.join("nginx.conf.j2"),
        "# custom for {{ domain }} via {{ upstream }}\n",
    )
    .unwrap();
    let out = stack.render(&["--templates", templates.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(
        stack.read("nginx/nginx.conf"),
        "# custom for example.com via api:8000\n"
    );
    // The compose template was not overridden, so the embedded one was used.
    assert!(stack.read("docker-compose.prod.yml").contains("services:"));

    fs::write(templates.join("nginx.conf.j2"), "{{ domian }}\n").unwrap();
    let out = stack.render(&["--templates", templates.to_str().unwrap()]);
    assert_eq!(code(&out), 2);
    assert!(
        text(&out.stderr).contains("nginx.conf.j2"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        stack.read("nginx/nginx.conf").starts_with("# custom"),
        "a failed render wrote"
    );
}

#[test]
fn config_show_redacts_the_secret() {
    let stack = Stack::init("example.com", "");
    let secret = stack
        .read(".env.production")
        .lines()
        .find_map(|l| l.strip_prefix("JWT_SECRET=").map(String::from))
        .unwrap();
    let out = elior(&["config", "show", "--dir", stack.path()]);
    assert_eq!(code(&out), 0);
    let shown = text(&out.stdout);
    assert!(!shown.contains(&secret));
    assert!(shown.contains("JWT_SECRET=\"[redacted]\""), "{shown}");
    assert!(shown
        .lines()
        .any(|l| l.starts_with("HSTS_PRELOAD=false") && l.ends_with("# default")));

    let out = elior(&["config", "show", "--json", "--dir", stack.path()]);
    assert!(!text(&out.stdout).contains(&secret));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let domain = report["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == "DOMAIN")
        .unwrap();
    assert_eq!(domain["value"], "example.com");
    assert!(domain["source"].as_str().unwrap().starts_with("file line "));
}

/// The per-kind upload limits are stack settings: an env file sets them, `config show`
/// lists them, render sizes nginx's upload locations for the largest, and a bad value is
/// refused naming the key.
#[test]
fn upload_limits_per_kind_come_from_the_env_file() {
    let stack = Stack::init(
        "example.com",
        "MAX_PROFILE_PHOTO_SIZE=2097152\nMAX_DOCUMENT_SIZE=31457280\n",
    )
    .rendered();
    let out = elior(&["config", "show", "--dir", stack.path()]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    for (key, value) in [
        ("MAX_FILE_SIZE", "10485760"),
        ("MAX_PROFILE_PHOTO_SIZE", "2097152"),
        ("MAX_DOCUMENT_SIZE", "31457280"),
    ] {
        assert!(
            shown
                .lines()
                .any(|l| l.starts_with(&format!("{key}={value}"))),
            "{key} not shown: {shown}"
        );
    }
    let conf = stack.read("nginx/nginx.conf");
    let wanted = format!("client_max_body_size {};", 31457280 + 1048576);
    assert_eq!(conf.matches(&wanted).count(), 2, "{conf}");

    let bad = Stack::init("example.com", "MAX_DOCUMENT_SIZE=30MB\n");
    let out = bad.render(&[]);
    assert_eq!(code(&out), 2);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("MAX_DOCUMENT_SIZE (") && stderr.contains("positive integer"),
        "{stderr}"
    );
    assert!(!bad.dir.join("nginx/nginx.conf").exists());
}

// ---------------------------------------------------------------------------------------
// The rendered nginx.conf, read the way nginx reads it

/// A block of nginx.conf: its directive (`location /api/`), simple directives, children.
#[derive(Debug, Default)]
struct Block {
    name: Vec<String>,
    directives: Vec<Vec<String>>,
    children: Vec<Block>,
}

/// Tokenises nginx syntax (quotes, comments, `{`, `}`, `;`) into a tree.
fn parse_nginx(conf: &str) -> Block {
    let mut tokens = Vec::new();
    let mut chars = conf.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '#' => while chars.next_if(|c| *c != '\n').is_some() {},
            c if c.is_whitespace() => {}
            '{' | '}' | ';' => tokens.push(c.to_string()),
            '"' | '\'' => {
                let mut word = String::new();
                while let Some(d) = chars.next() {
                    match d {
                        '\\' => word.push(chars.next().unwrap()),
                        d if d == c => break,
                        d => word.push(d),
                    }
                }
                tokens.push(word);
            }
            c => {
                let mut word = c.to_string();
                while let Some(d) = chars.next_if(|d| !d.is_whitespace() && !"{};".contains(*d)) {
                    word.push(d);
                }
                tokens.push(word);
            }
        }
    }
    fn build(tokens: &mut std::vec::IntoIter<String>, name: Vec<String>) -> Block {
        let mut block = Block {
            name,
            ..Block::default()
        };
        let mut words = Vec::new();
        while let Some(t) = tokens.next() {
            match t.as_str() {
                ";" => block.directives.push(std::mem::take(&mut words)),
                "{" => {
                    let child = build(tokens, std::mem::take(&mut words));
                    block.children.push(child);
                }
                "}" => return block,
                _ => words.push(t),
            }
        }
        block
    }
    build(&mut tokens.into_iter(), vec!["main".into()])
}

const SECURITY_HEADERS: &[&str] = &[
    "X-Frame-Options",
    "X-Content-Type-Options",
    "Referrer-Policy",
    "Permissions-Policy",
    "Content-Security-Policy",
];

/// A location's name, the port of its server, and the add_header directives it ends up with.
type LocationHeaders<'a> = (String, Option<String>, Vec<&'a Vec<String>>);

/// Walks every location with the add_header set it ends up with: its own if it has any,
/// else the nearest enclosing block's (nginx's inheritance rule).
fn effective_headers<'a>(
    block: &'a Block,
    inherited: &[&'a Vec<String>],
    server_port: Option<&str>,
    out: &mut Vec<LocationHeaders<'a>>,
) {
    let own: Vec<&Vec<String>> = block
        .directives
        .iter()
        .filter(|d| d[0] == "add_header")
        .collect();
    let effective = if own.is_empty() {
        inherited.to_vec()
    } else {
        own
    };
    let port = if block.name[0] == "server" {
        block
            .directives
            .iter()
            .find(|d| d[0] == "listen")
            .map(|d| d[1].clone())
    } else {
        server_port.map(String::from)
    };
    if block.name[0] == "location" {
        out.push((block.name.join(" "), port.clone(), effective.clone()));
    }
    for child in &block.children {
        effective_headers(child, &effective, port.as_deref(), out);
    }
}

#[test]
fn every_location_ends_up_with_the_security_headers() {
    for (domain, extra) in [("example.com", ""), ("localhost", "HSTS_PRELOAD=true\n")] {
        let stack = Stack::init(domain, extra).rendered();
        let conf = stack.read("nginx/nginx.conf");
        let tree = parse_nginx(&conf);
        let mut locations = Vec::new();
        effective_headers(&tree, &[], None, &mut locations);
        assert!(
            locations.len() >= 15,
            "parsed only {} locations",
            locations.len()
        );
        for (location, port, headers) in &locations {
            let names: BTreeSet<&str> = headers.iter().map(|h| h[1].as_str()).collect();
            for wanted in SECURITY_HEADERS {
                assert!(
                    names.contains(wanted),
                    "{location} (port {port:?}) lacks {wanted}"
                );
            }
            for h in headers {
                assert_eq!(
                    h.last().unwrap(),
                    "always",
                    "{location}: {h:?} is not on error responses"
                );
            }
            let hsts = headers.iter().find(|h| h[1] == "Strict-Transport-Security");
            match port.as_deref() {
                Some("80") => assert!(hsts.is_none(), "{location}: HSTS on plain HTTP"),
                _ => {
                    let value = &hsts.unwrap_or_else(|| panic!("{location}: no HSTS"))[2];
                    let want = if extra.contains("HSTS_PRELOAD=true") {
                        "max-age=63072000; includeSubDomains; preload"
                    } else {
                        "max-age=63072000; includeSubDomains"
                    };
                    assert_eq!(value, want, "{location}");
                }
            }
        }
        // CORS is the API's alone.
        let directives: String = conf
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect();
        assert!(!directives.to_ascii_lowercase().contains("access-control"));
    }
}

#[test]
fn nginx_conf_has_the_rate_limits_timeouts_and_tls_profile() {
    // The largest of the three upload limits sizes the upload locations.
    let extra = "MAX_FILE_SIZE=5242880\nMAX_DOCUMENT_SIZE=4194304\n";
    let stack = Stack::init("example.com", extra).rendered();
    let tree = parse_nginx(&stack.read("nginx/nginx.conf"));
    let http = &tree.children.iter().find(|b| b.name == ["http"]).unwrap();
    let has = |b: &Block, d: &[&str]| b.directives.iter().any(|x| x == d);
    assert!(has(http, &["ssl_protocols", "TLSv1.2", "TLSv1.3"]));
    let https = http
        .children
        .iter()
        .find(|s| has(s, &["listen", "443", "ssl", "http2", "default_server"]))
        .unwrap();
    let location = |path: &str| {
        https
            .children
            .iter()
            .find(|l| l.name.last().map(String::as_str) == Some(path))
            .unwrap_or_else(|| panic!("no location {path}"))
    };
    assert!(has(
        location("/api/"),
        &["limit_req", "zone=elior_api", "burst=20", "nodelay"]
    ));
    assert!(has(
        location("/api/auth/"),
        &["limit_req", "zone=elior_auth", "burst=10", "nodelay"]
    ));
    let files = location("/api/files/");
    assert!(has(
        files,
        &["limit_req", "zone=elior_uploads", "burst=5", "nodelay"]
    ));
    assert!(has(
        files,
        &["client_max_body_size", &(5242880 + 1048576).to_string()]
    ));
    assert!(has(files, &["proxy_read_timeout", "60s"]));
    // Meal photos are the API's other multipart route: nested in /api/ (whose `^~` hides
    // server-level regexes) with the same limits.
    let photo = location("/api/")
        .children
        .iter()
        .find(|l| l.name == ["location", "~", "^/api/meal-plans/uploads/[0-9]+/photo$"])
        .expect("no meal-photo location inside /api/");
    for d in &files.directives {
        assert!(photo.directives.contains(d), "meal photos lack {d:?}");
    }
    let ws = location("/api/ws/");
    assert!(has(ws, &["proxy_read_timeout", "3600s"]));
    assert!(has(ws, &["proxy_set_header", "Upgrade", "$http_upgrade"]));
    let health = location("/health");
    assert!(has(health, &["access_log", "off"]));
    assert!(!health.directives.iter().any(|d| d[0] == "limit_req"));
    let metrics = location("/metrics");
    assert!(has(metrics, &["return", "404"]));
    assert!(has(location("/_protected/uploads/"), &["internal"]));
    for d in [
        "X-Real-IP",
        "X-Forwarded-For",
        "X-Forwarded-Proto",
        "X-Request-ID",
    ] {
        assert!(
            location("/api/")
                .directives
                .iter()
                .any(|x| x[0] == "proxy_set_header" && x[1] == d),
            "{d}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Docker: nginx -t, nginx serving, docker-compose config

/// The fixture nginx image, built once per machine by the script (it locks and caches).
fn nginx_image() -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-fixture-images");
    let out = Command::new(script)
        .output()
        .expect("run scripts/build-fixture-images");
    assert!(
        out.status.success(),
        "building the nginx fixture failed: {}",
        text(&out.stderr)
    );
    text(&out.stdout).trim().to_string()
}

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("run docker")
}

/// Removes the containers and network it names when dropped, even after a failed assert.
struct DockerGuard {
    containers: Vec<String>,
    network: Option<String>,
}

impl Drop for DockerGuard {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&["rm", "-f", "-v", c]);
        }
        if let Some(n) = &self.network {
            let _ = docker(&["network", "rm", n]);
        }
    }
}

fn unique(prefix: &str) -> String {
    format!(
        "elior-test-{prefix}-{}-{}",
        std::process::id(),
        rand_suffix()
    )
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

/// `docker run` of the fixture nginx on the stack's rendered config, with the stack's
/// folders mounted where the compose file mounts them.
fn run_nginx(stack: &Stack, image: &str, docker_opts: &[&str], nginx_args: &[&str]) -> Output {
    let mut args: Vec<String> = ["run", "--label", "elior.test=1"]
        .map(String::from)
        .to_vec();
    args.extend(docker_opts.iter().map(|s| s.to_string()));
    for (host, target) in [
        ("nginx", "/etc/nginx/elior:ro"),
        ("uploads", "/srv/elior/uploads:ro"),
        ("frontend", "/srv/elior/frontend:ro"),
    ] {
        args.push("-v".into());
        args.push(format!("{}:{target}", stack.dir.join(host).display()));
    }
    args.extend([image, "nginx", "-c", "/etc/nginx/elior/nginx.conf"].map(String::from));
    args.extend(nginx_args.iter().map(|s| s.to_string()));
    Command::new("docker")
        .args(&args)
        .output()
        .expect("run docker")
}

#[test]
fn nginx_accepts_every_rendered_config() {
    let image = nginx_image();
    for (domain, extra) in [
        ("example.com", ""),
        (
            "localhost",
            "HTTP_PORT=8080\nHTTPS_PORT=8443\nHSTS_PRELOAD=true\n",
        ),
        ("192.0.2.10", "MAX_FILE_SIZE=1\n"),
        ("2001:db8::1", ""),
    ] {
        let stack = Stack::init(domain, extra).rendered();
        stack.self_signed_cert("localhost");
        let name = unique("nginx-t");
        let _guard = DockerGuard {
            containers: vec![name.clone()],
            network: None,
        };
        let out = run_nginx(&stack, &image, &["--rm", "--name", &name], &["-t"]);
        let log = text(&out.stderr);
        assert!(
            out.status.success(),
            "nginx -t refused the config for {domain}: {log}"
        );
        assert!(log.contains("test is successful"), "{log}");
        assert!(!log.contains("[warn]"), "nginx warned for {domain}: {log}");
    }
}

#[test]
fn docker_compose_accepts_the_rendered_file() {
    let stack = Stack::init("example.com", "HTTPS_PORT=8443\n").rendered();
    let out = Command::new("docker-compose")
        .args([
            "-p",
            &unique("compose"),
            "-f",
            "docker-compose.prod.yml",
            "config",
        ])
        .current_dir(&stack.dir)
        .output()
        .expect("run docker-compose");
    let normalised = text(&out.stdout);
    assert!(
        out.status.success(),
        "docker-compose config: {}",
        text(&out.stderr)
    );
    for needle in [
        "condition: service_healthy",
        "internal: true",
        "read_only: true",
        "no-new-privileges:true",
        "published: 8443",
        "max-size: 10m",
        "net.ipv4.tcp_tw_reuse: '1'",
        "- /usr/local/bin/elior\n      - healthcheck",
    ] {
        assert!(
            normalised.contains(needle),
            "{needle} missing from:\n{normalised}"
        );
    }
    // The API publishes no port: only nginx's two appear.
    assert_eq!(normalised.matches("published:").count(), 2, "{normalised}");
}

fn curl(args: &[&str]) -> (u16, String, String) {
    let out = Command::new("curl")
        .args([
            "-sk",
            "--max-time",
            "10",
            "-D",
            "-",
            "-o",
            "/dev/stderr",
            "-w",
            "%{http_code}",
        ])
        .args(args)
        .output()
        .expect("run curl");
    let headers_and_code = text(&out.stdout);
    let code_at = headers_and_code.len().saturating_sub(3);
    let status = headers_and_code[code_at..].parse().unwrap_or(0);
    (
        status,
        headers_and_code[..code_at].to_ascii_lowercase(),
        text(&out.stderr),
    )
}

fn assert_security_headers(what: &str, headers: &str, https: bool) {
    for h in SECURITY_HEADERS {
        assert!(
            headers.contains(&format!("{}:", h.to_ascii_lowercase())),
            "{what}: no {h} in\n{headers}"
        );
    }
    assert_eq!(
        headers.contains("strict-transport-security:"),
        https,
        "{what}: HSTS\n{headers}"
    );
}

/// The rendered config served by real nginx on a Docker network: nginx starts before the
/// API exists (JSON 502), then proxies to it once it does, and every answer, errors
/// included, carries the security headers.
#[test]
fn nginx_serves_the_rendered_config() {
    let image = nginx_image();
    let stack = Stack::init("example.com", "").rendered();
    stack.self_signed_cert("example.com");
    let challenge = stack.dir.join("nginx/acme/.well-known/acme-challenge");
    fs::create_dir_all(&challenge).unwrap();
    fs::write(challenge.join("tok3n"), "tok3n.key").unwrap();

    let network = unique("net");
    let proxy = unique("proxy");
    let api = unique("api");
    let _guard = DockerGuard {
        containers: vec![proxy.clone(), api.clone()],
        network: Some(network.clone()),
    };
    let out = docker(&["network", "create", "--label", "elior.test=1", &network]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = run_nginx(
        &stack,
        &image,
        &[
            "-d",
            "--name",
            &proxy,
            "--network",
            &network,
            "-p",
            "127.0.0.1::80",
            "-p",
            "127.0.0.1::443",
        ],
        &["-g", "daemon off;"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let port = |p: &str| {
        let out = docker(&["port", &proxy, p]);
        text(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .rsplit(':')
            .next()
            .unwrap()
            .trim()
            .to_string()
    };
    let (http, https) = (port("80/tcp"), port("443/tcp"));
    let url = |path: &str| format!("https://example.com:{https}{path}");
    let resolve = format!("example.com:{https}:127.0.0.1");
    let get = |path: &str, extra: &[&str]| {
        let mut args = vec!["--resolve", resolve.as_str()];
        args.extend_from_slice(extra);
        let u = url(path);
        args.push(&u);
        curl(&args)
    };

    // The container is up before nginx listens; wait for its first answer.
    let deadline = Instant::now() + Duration::from_secs(20);
    while curl(&[&format!("http://127.0.0.1:{http}/")]).0 == 0 {
        let logs = docker(&["logs", &proxy]);
        assert!(
            Instant::now() < deadline,
            "nginx never answered: {}",
            text(&logs.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Port 80: ACME tokens from nginx/acme, everything else redirected to HTTPS.
    let (status, headers, body) = curl(&[&format!(
        "http://127.0.0.1:{http}/.well-known/acme-challenge/tok3n"
    )]);
    assert_eq!((status, body.as_str()), (200, "tok3n.key"), "{headers}");
    assert_security_headers("acme", &headers, false);
    let (status, headers, _) = curl(&[&format!("http://127.0.0.1:{http}/login?next=/x")]);
    assert_eq!(status, 301);
    assert!(
        headers.contains("location: https://example.com/login?next=/x\r\n"),
        "{headers}"
    );

    // No API yet: nginx runs anyway and answers the API's paths with JSON 502.
    let (status, headers, body) = get("/api/users/me", &[]);
    assert_eq!(status, 502, "{headers}{body}");
    assert!(
        headers.contains("content-type: application/json"),
        "{headers}"
    );
    assert_eq!(body, "{\"detail\":\"The API is not reachable\"}\n");
    assert_security_headers("502", &headers, true);
    // nginx logs that failure with the request line; a WebSocket's carries its token.
    let (status, _, _) = get("/api/ws/ws/7?token=early.secret.jwt", &[]);
    assert_eq!(status, 502);

    // A 5 MB meal photo passes nginx's size limit (502: no API to take it yet), while
    // the same body to an ordinary API path is refused by nginx with JSON 413.
    let photo = stack.dir.join("photo.bin");
    fs::write(&photo, vec![0u8; 5 * 1024 * 1024]).unwrap();
    let upload = format!("@{}", photo.display());
    let post = [
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &upload,
    ];
    let (status, headers, body) = get("/api/meal-plans/uploads/7/photo", &post);
    assert_eq!(status, 502, "a 5 MB meal photo: {headers}{body}");
    assert_security_headers("meal photo", &headers, true);
    let (status, _, body) = get("/api/users/me", &post);
    assert_eq!(status, 413, "{body}");
    assert_eq!(body, "{\"detail\":\"File too large\"}\n");

    // A stand-in API (nginx echoing what it received) joins under the service name.
    // It grants two downloads the way the API does, with X-Accel-Redirect.
    let fake_api = r#"events {}
http { server { listen 8000;
    location = /uploads/granted { add_header X-Accel-Redirect /_protected/uploads/u1/photo.txt; return 200 ""; }
    location = /uploads/dotfile { add_header X-Accel-Redirect /_protected/uploads/u1/.env; return 200 ""; }
    location / { default_type application/json;
        return 200 '{"uri":"$request_uri","request_id":"$http_x_request_id","forwarded_for":"$http_x_forwarded_for","proto":"$http_x_forwarded_proto"}'; } } }
"#;
    let api_conf = stack.dir.join("fake-api");
    fs::create_dir(&api_conf).unwrap();
    fs::write(api_conf.join("nginx.conf"), fake_api).unwrap();
    let mount = format!("{}:/etc/fake:ro", api_conf.display());
    let out = docker(&[
        "run",
        "-d",
        "--name",
        &api,
        "--label",
        "elior.test=1",
        "--network",
        &network,
        "--network-alias",
        "api",
        "-v",
        &mount,
        &image,
        "nginx",
        "-c",
        "/etc/fake/nginx.conf",
        "-g",
        "daemon off;",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // nginx caches the failed lookup for up to `valid=10s`; poll until it asks again.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (status, headers, body) = loop {
        let answer = get("/api/users/me", &["-H", "X-Request-ID: trace-42"]);
        if answer.0 == 200 || Instant::now() > deadline {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(status, 200, "the API was never reached: {headers}{body}");
    let echoed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echoed["uri"], "/api/users/me");
    assert_eq!(echoed["request_id"], "trace-42");
    assert_eq!(echoed["proto"], "https");
    assert!(
        echoed["forwarded_for"]
            .as_str()
            .unwrap()
            .parse::<std::net::IpAddr>()
            .is_ok(),
        "{body}"
    );
    assert!(headers.contains("http/2"), "not HTTP/2: {headers}");
    assert_security_headers("api", &headers, true);
    // The API gets the WebSocket's token; the log shows neither it nor any query
    // naming a token, while other queries are logged as they came.
    let (status, _, body) = get("/api/ws/ws/7?token=late.secret.jwt", &[]);
    assert_eq!(status, 200);
    let echoed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echoed["uri"], "/api/ws/ws/7?token=late.secret.jwt");
    get("/api/users?Access_Token=query.secret&limit=5", &[]);
    get("/api/users?limit=5&offset=10", &[]);
    let logged = |line: &str| {
        let logs = docker(&["logs", &proxy]);
        let all = format!("{}{}", text(&logs.stdout), text(&logs.stderr));
        (all.contains(line), all)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !logged("/api/users?limit=5&offset=10").0 {
        assert!(Instant::now() < deadline, "{}", logged("").1);
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, logs) = logged("");
    assert!(
        !logs.contains("secret"),
        "a token reached nginx's logs:\n{logs}"
    );
    for line in [
        r#""uri":"/api/ws/ws/7?[redacted]""#,
        r#""uri":"/api/users?[redacted]""#,
    ] {
        assert!(logs.contains(line), "no {line} in nginx's log:\n{logs}");
    }

    // A forged id is replaced by nginx's own (32 hex digits).
    let (_, _, body) = get("/api/x", &["-H", "X-Request-ID: a b\"c"]);
    let echoed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echoed["request_id"].as_str().unwrap().len(), 32, "{body}");

    // Frontend: no build installed, so the landing page; denied files; uploads by path.
    let (status, headers, body) = get("/", &[]);
    assert_eq!(status, 200);
    assert!(body.contains("Elior Fitness"));
    assert_security_headers("landing", &headers, true);
    fs::write(stack.dir.join("frontend/backup.sql"), "secret").unwrap();
    let (status, headers, _) = get("/backup.sql", &[]);
    assert_eq!(status, 403);
    assert_security_headers("403", &headers, true);
    let (status, _, _) = get("/_protected/uploads/u1/photo.txt", &[]);
    assert_eq!(
        status, 404,
        "the internal uploads location answered a client"
    );
    fs::create_dir(stack.dir.join("uploads/u1")).unwrap();
    fs::write(stack.dir.join("uploads/u1/photo.txt"), "pixels").unwrap();
    fs::write(stack.dir.join("uploads/u1/.env"), "JWT_SECRET=x").unwrap();
    let (status, headers, body) = get("/uploads/granted", &[]);
    assert_eq!((status, body.as_str()), (200, "pixels"), "{headers}");
    assert_security_headers("download", &headers, true);
    let (status, _, body) = get("/uploads/dotfile", &[]);
    assert_eq!(status, 403, "a dotfile in uploads was served: {body}");

    // With a frontend build: files as they are, unknown paths get index.html (SPA).
    fs::create_dir_all(stack.dir.join("frontend/assets")).unwrap();
    fs::write(stack.dir.join("frontend/index.html"), "<html>spa</html>").unwrap();
    fs::write(stack.dir.join("frontend/assets/app.1a2b.js"), "js").unwrap();
    let (status, _, body) = get("/clients/42/progress", &[]);
    assert_eq!((status, body.as_str()), (200, "<html>spa</html>"));
    let (status, headers, body) = get("/assets/app.1a2b.js", &[]);
    assert_eq!((status, body.as_str()), (200, "js"));
    assert!(
        headers.contains("cache-control: public, max-age=31536000, immutable"),
        "{headers}"
    );
    assert_security_headers("asset", &headers, true);
    let (status, headers, _) = get("/assets/missing.js", &[]);
    assert_eq!(status, 404);
    assert_security_headers("404", &headers, true);

    // Many requests on one connection, as fast as curl sends them; their status codes.
    let burst = |path: &str, n: usize| -> Vec<String> {
        let u = url(path);
        let mut args = vec!["-sk", "--resolve", resolve.as_str(), "-w", "%{http_code}\n"];
        for _ in 0..n {
            args.extend(["-o", "/dev/null", u.as_str()]);
        }
        let out = Command::new("curl").args(&args).output().unwrap();
        text(&out.stdout).lines().map(String::from).collect()
    };
    // /api/auth/ allows 5 r/s with a burst of 10: runs of 30 hit the limit with JSON. On a
    // loaded machine one run may be too slow to, so they repeat until the limit answers
    // (30 s at most) instead of hoping that the first one is fast enough.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (codes, (status, headers, body)) = loop {
        let codes = burst("/api/auth/login", 30);
        let answer = get("/api/auth/login", &[]);
        if (codes.iter().any(|c| c == "429") && answer.0 == 429) || Instant::now() > deadline {
            break (codes, answer);
        }
    };
    assert!(codes.iter().any(|c| c == "429"), "no 429 in {codes:?}");
    assert_eq!(status, 429, "{codes:?}");
    assert_eq!(body, "{\"detail\":\"Too many requests\"}\n");
    assert_security_headers("429", &headers, true);
    // /health has no rate limit.
    let codes = burst("/health", 40);
    assert_eq!(codes.len(), 40);
    assert!(codes.iter().all(|c| c == "200"), "{codes:?}");
}

/// One loader, one precedence (issue 14): the environment beats the env file for
/// `config show`, `render` and `backup` alike; a BOM or a key set twice is an error
/// naming the line, for every command.
#[test]
fn the_environment_beats_the_file_for_every_command() {
    let stack = Stack::init("example.com", "");
    let with_env = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_elior"));
        cmd.args(args).args(["--dir", stack.path()]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let port = [("HTTPS_PORT", "8443")];
    let out = with_env(&["config", "show", "--json"], &port);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let https = report["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == "HTTPS_PORT")
        .unwrap()
        .clone();
    assert_eq!(
        (https["value"].as_str(), https["source"].as_str()),
        (Some("8443"), Some("environment"))
    );
    let out = with_env(&["render"], &port);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(stack
        .read("docker-compose.prod.yml")
        .contains("\"8443:443\""));
    let elsewhere = stack.dir.join("backups-from-env");
    let out = with_env(
        &["backup", "list"],
        &[("BACKUP_DIR", elsewhere.to_str().unwrap())],
    );
    assert!(
        text(&out.stderr).contains(elsewhere.to_str().unwrap()),
        "{}",
        text(&out.stderr)
    );

    let env = stack.dir.join(".env.production");
    let original = stack.read(".env.production");
    fs::write(&env, format!("{original}DOMAIN=other.example.com\n")).unwrap();
    let last = original.lines().count() + 1;
    for args in [&["config", "show"][..], &["render"], &["backup", "list"]] {
        let out = with_env(args, &[]);
        assert_eq!(code(&out), 2, "{args:?}");
        assert!(
            text(&out.stderr)
                .contains(&format!("line {last}: DOMAIN is set again (first on line ")),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    fs::write(&env, format!("\u{feff}{original}")).unwrap();
    let out = with_env(&["config", "show"], &[]);
    assert!(
        text(&out.stderr).contains("line 1: the file starts with a byte-order mark"),
        "{}",
        text(&out.stderr)
    );
}
