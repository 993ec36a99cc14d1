//! `elior probe ssl` and `elior probe health` against real servers: the stack's rendered
//! nginx.conf served by the fixture nginx image (Debian's nginx) with a certificate from
//! a test CA, and the real `elior serve`.

use crate::harness::server as common;
use crate::harness::stack as stack_harness;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use stack_harness::{elior, probe_ssl_until, text, Nginx, Stack, TestCa};

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

/// `probe ssl` of the fixture nginx, trusting the test CA, until `want` holds.
fn probe_until(
    nginx: &Nginx,
    ca: &Path,
    want: impl Fn(&serde_json::Value) -> bool,
) -> (Output, serde_json::Value) {
    probe_ssl_until("example.com", nginx.https_port, nginx.http_port, ca, want)
}

fn reasons(report: &serde_json::Value) -> Vec<String> {
    report["grade"]["deductions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| format!("{} => {}", d["reason"], d["fix"]))
        .collect()
}

/// The rendered stack grades A+ with a trusted certificate; enabling TLS 1.0 drops it to
/// B, and dropping HSTS drops it to A, each deduction naming the nginx fix.
#[test]
fn probe_ssl_grades_the_rendered_stack_and_sees_downgrades() {
    let stack = Stack::new("example.com", &[]);
    let ca = TestCa::new();
    let (cert, key) = ca.leaf("example.com", -1, 60);
    stack.write_pair(&cert, &key);
    let ca_file = ca.write(&stack.dir);
    let ca_path = ca_file.to_str().unwrap();
    let nginx = Nginx::start(&stack);

    let (out, report) = probe_until(&nginx, &ca_file, |r| r["grade"]["grade"] == "A+");
    assert_eq!(report["grade"]["grade"], "A+", "{}", text(&out.stdout));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(report["trusted"], true);
    assert_eq!(report["name_matches"], true);
    assert_eq!(report["protocols"]["tls1_0"]["answer"], "alert");
    assert_eq!(report["protocols"]["tls1_1"]["answer"], "alert");
    assert_eq!(report["protocols"]["tls1_2"], true);
    assert_eq!(report["protocols"]["tls1_3"], true);
    assert_eq!(report["redirect"]["to_https"], true);
    for page in report["pages"].as_array().unwrap() {
        assert_eq!(page["missing"], serde_json::json!([]), "{page}");
    }
    // Without the test CA the same server is untrusted: T, but A+ if trusted.
    let target = format!("example.com:{}", nginx.https_port);
    let out = elior(&["probe", "ssl", &target, "--connect", "127.0.0.1", "--json"]);
    let untrusted = json(&out);
    assert_eq!(untrusted["grade"]["grade"], "T");
    assert_eq!(untrusted["grade"]["if_trusted"], "A+");
    assert_eq!(out.status.code(), Some(1));

    // TLS 1.0 enabled (Debian's OpenSSL needs security level 0 for its SHA-1 suites).
    let conf_path = stack.dir.join("nginx/nginx.conf");
    let conf = std::fs::read_to_string(&conf_path).unwrap();
    let legacy = conf
        .replace(
            "ssl_protocols TLSv1.2 TLSv1.3;",
            "ssl_protocols TLSv1 TLSv1.2 TLSv1.3;",
        )
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("ssl_ciphers ") {
                "    ssl_ciphers \"DEFAULT:@SECLEVEL=0\";".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(
        legacy, conf,
        "the rendered config has the expected TLS lines"
    );
    std::fs::write(&conf_path, &legacy).unwrap();
    nginx.reload();
    // Wait for the reloaded workers: until the old ones exit, a probe may mix answers
    // from both configs (seen: grade B from a new worker, TLS 1.0 refused by an old one).
    let (out, report) = probe_until(&nginx, &ca_file, |r| {
        r["protocols"]["tls1_0"]["answer"] == "accepted" && r["grade"]["grade"] != "A+"
    });
    assert_eq!(report["grade"]["grade"], "B", "{}", text(&out.stdout));
    assert_eq!(report["protocols"]["tls1_0"]["answer"], "accepted");
    assert!(
        reasons(&report)
            .iter()
            .any(|r| r.contains("TLS 1.0") && r.contains("ssl_protocols TLSv1.2 TLSv1.3;")),
        "{:?}",
        reasons(&report)
    );
    assert_eq!(out.status.code(), Some(1));

    // Back to the rendered TLS settings, minus HSTS: A, with the add_header fix.
    let no_hsts = conf
        .lines()
        .filter(|l| !l.contains("Strict-Transport-Security"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&conf_path, &no_hsts).unwrap();
    nginx.reload();
    let (out, report) = probe_until(&nginx, &ca_file, |r| r["grade"]["grade"] == "A");
    assert_eq!(report["grade"]["grade"], "A", "{}", text(&out.stdout));
    assert!(report["hsts"].is_null());
    assert!(
        reasons(&report)
            .iter()
            .any(|r| r.contains("HSTS") && r.contains("add_header Strict-Transport-Security")),
        "{:?}",
        reasons(&report)
    );

    // The human output names the grade and the fix.
    let out = elior(&[
        "probe",
        "ssl",
        &target,
        "--connect",
        "127.0.0.1",
        "--http-port",
        &nginx.http_port.to_string(),
        "--ca",
        ca_path,
    ]);
    let human = text(&out.stdout);
    assert!(
        human.contains("grade A\n") || human.contains("grade A "),
        "{human}"
    );
    assert!(
        human.contains("fix: add_header Strict-Transport-Security"),
        "{human}"
    );
}

/// probe health measures each phase over HTTPS through nginx, and exits 1 on a non-200
/// (nginx's 502 while no API runs behind it).
#[test]
fn probe_health_times_requests_and_fails_on_non_200() {
    let stack = Stack::new("example.com", &[]);
    let ca = TestCa::new();
    let (cert, key) = ca.leaf("example.com", -1, 60);
    stack.write_pair(&cert, &key);
    let ca_path = ca.write(&stack.dir);
    let nginx = Nginx::start(&stack);
    let resolve = "example.com:127.0.0.1";
    let url = |path: &str| format!("https://example.com:{}{path}", nginx.https_port);

    let deadline = Instant::now() + Duration::from_secs(15);
    let out = loop {
        let out = elior(&[
            "probe",
            "health",
            &url("/"),
            "--resolve",
            resolve,
            "--ca",
            ca_path.to_str().unwrap(),
            "-n",
            "3",
            "--json",
        ]);
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let report = json(&out);
    assert_eq!(report["statuses"], serde_json::json!([200, 200, 200]));
    let phases: Vec<&str> = report["stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[0].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["dns", "connect", "tls", "ttfb", "total"]);
    assert!(report["last"]["tls_version"]
        .as_str()
        .unwrap()
        .starts_with("TLS"));

    let out = elior(&[
        "probe",
        "health",
        &url("/health"),
        "--resolve",
        resolve,
        "--ca",
        ca_path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("-> 502"),
        "{}",
        text(&out.stdout)
    );

    // Untrusted without --ca: the handshake fails, named, exit 1.
    let out = elior(&["probe", "health", &url("/"), "--resolve", resolve]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("TLS handshake"),
        "{}",
        text(&out.stdout)
    );

    // A --resolve for another host is a usage error.
    let out = elior(&[
        "probe",
        "health",
        &url("/"),
        "--resolve",
        "other.com:127.0.0.1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--resolve names other.com"));
}

/// The /health body of the real API is parsed: status and database.
#[test]
fn probe_health_reads_the_api_health_body() {
    let server = common::Server::start(&[]);
    let url = format!("http://{}/health", server.addr);
    let out = elior(&["probe", "health", &url]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("database connected"), "{stdout}");
    assert!(stdout.contains("timing   dns"), "{stdout}");
}
