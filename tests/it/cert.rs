//! `elior cert` against real services: Debian's pebble (ACME) with pebble-challtestsrv
//! as its DNS, and Debian's nginx serving the stack's webroot and certificate.
//! Names are pinned with ELIOR_RESOLVE; /etc/hosts is never touched.

use crate::harness::cert as cert_harness;

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cert_harness::{Nginx, Pebble, Stack, DOMAIN};
use elior::tls::inspect;
use serde_json::Value;

fn stdout_json(output: &std::process::Output) -> Value {
    assert!(
        output.status.success(),
        "elior failed ({:?}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

fn file_serial(stack: &Stack) -> String {
    let chain = inspect::parse_chain(&stack.cert_pem(), "cert.pem").unwrap();
    inspect::describe(&chain[0]).unwrap().serial
}

/// The served serial once it equals `expected`, or the last one seen after 10 s.
fn served_serial_becomes(stack: &Stack, expected: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let serial = served_serial(stack);
        if serial == expected || std::time::Instant::now() > deadline {
            return serial;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn served_serial(stack: &Stack) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let chain = runtime
        .block_on(elior::tls::served::served_chain(
            stack.https_address(),
            DOMAIN,
            Duration::from_secs(5),
        ))
        .unwrap();
    inspect::describe(&chain[0]).unwrap().serial
}

fn mode(path: std::path::PathBuf) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A stack serving its self-signed bootstrap certificate through nginx, with a pebble
/// that validates HTTP-01 on the stack's HTTP port.
fn served_stack() -> (Stack, Pebble, Nginx) {
    let stack = Stack::new(&[("ACME_EMAIL", "ops@elior.test")]);
    let pebble = Pebble::start(stack.http_port);
    stack.append_env(&[
        ("ACME_DIRECTORY", &pebble.directory_url),
        ("ACME_CA_FILE", pebble.ca_bundle.to_str().unwrap()),
    ]);
    stack.bootstrap();
    let nginx = Nginx::start(&stack);
    (stack, pebble, nginx)
}

#[test]
fn cert_issue_replaces_the_bootstrap_cert_with_a_served_pebble_cert() {
    let (stack, pebble, nginx) = served_stack();
    let bootstrap_serial = served_serial(&stack);
    let conf = nginx.conf.to_str().unwrap();

    let report = stdout_json(&stack.elior(&["cert", "issue", "--json", "--nginx-conf", conf]));
    assert_eq!(report["action"], "issued");
    assert_eq!(report["reason"], "self_signed");
    assert_eq!(
        report["names"],
        serde_json::json!([DOMAIN, format!("www.{DOMAIN}")])
    );

    // nginx serves the new file, and its chain verifies against pebble's root alone.
    let serial = file_serial(&stack);
    assert_ne!(serial, bootstrap_serial);
    assert_eq!(report["serial"], serial.as_str());
    assert_eq!(served_serial_becomes(&stack, &serial), serial);
    let chain = inspect::parse_chain(&stack.cert_pem(), "cert.pem").unwrap();
    assert!(
        chain.len() >= 2,
        "full chain expected, got {} certs",
        chain.len()
    );
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pebble.issuing_root.clone()).unwrap();
    inspect::verify_chain(&chain, roots, &format!("www.{DOMAIN}")).unwrap();
    assert_eq!(mode(stack.path().join("nginx/ssl/key.pem")), 0o600);
    assert_eq!(mode(stack.path().join(".elior/acme/account.json")), 0o600);
    // No challenge tokens, probe files or staged copies are left behind.
    let leftovers: Vec<_> =
        std::fs::read_dir(stack.path().join("nginx/acme/.well-known/acme-challenge"))
            .unwrap()
            .chain(std::fs::read_dir(stack.path().join("nginx/ssl")).unwrap())
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != "cert.pem" && n != "key.pem")
            .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A fresh certificate is not due: renew says so, exits 0 and changes nothing.
    let renew = stack.elior(&["cert", "renew", "--nginx-conf", conf]);
    assert!(
        renew.status.success(),
        "{}",
        String::from_utf8_lossy(&renew.stderr)
    );
    let said = String::from_utf8_lossy(&renew.stdout);
    assert!(
        said.starts_with("not due: the certificate for elior.test"),
        "{said}"
    );
    assert_eq!(file_serial(&stack), serial);

    // status: healthy, chain verified against ACME_CA_FILE, served on HTTPS_PORT.
    let status = stdout_json(&stack.elior(&["cert", "status", "--json"]));
    assert_eq!(status["healthy"], true);
    assert_eq!(status["served"], true);
    assert_eq!(status["key_matches"], true);
    assert_eq!(status["chain_verifies"], true, "{status}");
    assert_eq!(status["self_signed"], false);
    assert_eq!(status["renewal_due"], false);
    assert_eq!(status["key_type"], "ECDSA P-256");
    assert!(
        status["issuer"].as_str().unwrap().contains("Pebble"),
        "{status}"
    );
}

/// A renewal killed between moving the new key and the new certificate into place leaves
/// the new key beside the old certificate, a pair nginx refuses at its next start or
/// reload. The next `elior cert` run (under the deploy lock, as a deploy) finishes the
/// install: the pair matches again and nginx serves it.
#[test]
fn a_renewal_killed_between_its_two_renames_is_finished_by_the_next_run() {
    let (stack, _pebble, nginx) = served_stack();
    let conf = nginx.conf.to_str().unwrap();
    stdout_json(&stack.elior(&["cert", "issue", "--json", "--nginx-conf", conf]));
    let before = file_serial(&stack);
    let renew = ["cert", "renew", "--force", "--nginx-conf", conf];
    let killed = stack.elior_with(&renew, &[("ELIOR_FAULT", "cert:key-promoted")]);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&killed.status),
        Some(9),
        "{}",
        String::from_utf8_lossy(&killed.stderr)
    );
    // What the kill left: the new key beside the old certificate.
    let status = stack.elior(&["cert", "status", "--json"]);
    assert_eq!(status.status.code(), Some(1));
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["key_matches"], false, "{status}");

    // The next run (not due: the certificate it finds is fresh) finishes the install.
    let next = stack.elior(&["cert", "renew", "--nginx-conf", conf]);
    let said = String::from_utf8_lossy(&next.stderr);
    assert!(next.status.success(), "{said}");
    assert!(
        said.contains("finishing a certificate install that was interrupted"),
        "{said}"
    );
    // nginx reloaded and serves the finished pair.
    let status = stdout_json(&stack.elior(&["cert", "status", "--json"]));
    assert_eq!(status["key_matches"], true, "{status}");
    assert_eq!(status["served"], true, "{status}");
    let after = file_serial(&stack);
    assert_ne!(after, before);
    assert_eq!(served_serial(&stack), after);
    let staged: Vec<_> = std::fs::read_dir(stack.path().join("nginx/ssl"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "cert.pem" && n != "key.pem")
        .collect();
    assert!(staged.is_empty(), "{staged:?}");

    // A second instance: while a deploy holds the stack's lock, a renewal (the scheduled
    // one, say) is refused and touches nothing, instead of writing the same staged files.
    crate::harness::stack::hold_deploy_lock(stack.path(), "elior deploy elior.test");
    let refused = stack.elior(&renew);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{said}");
    assert!(said.contains("elior deploy elior.test"), "{said}");
    assert_eq!(file_serial(&stack), after);
}

#[test]
fn forced_renewal_changes_the_serial_without_a_failed_request() {
    let (stack, _pebble, nginx) = served_stack();
    let conf = nginx.conf.to_str().unwrap();
    stdout_json(&stack.elior(&["cert", "issue", "--json", "--nginx-conf", conf]));
    let before = file_serial(&stack);
    let account = std::fs::read(stack.path().join(".elior/acme/account.json")).unwrap();

    // Clients keep making HTTPS requests while the certificate is swapped and nginx
    // reloads; the loop is bounded so a hang cannot stall the suite.
    let stop = Arc::new(AtomicBool::new(false));
    let address = stack.https_address();
    let client = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let (mut ok, mut failed) = (0u32, Vec::new());
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match runtime.block_on(elior::tls::served::https_get_status(
                    address,
                    DOMAIN,
                    "/",
                    Duration::from_secs(5),
                )) {
                    Ok(200) => ok += 1,
                    other => failed.push(format!("{other:?}")),
                }
            }
            (ok, failed)
        })
    };
    let renew = stack.elior(&["cert", "renew", "--force", "--json", "--nginx-conf", conf]);
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = client.join().unwrap();
    let report = stdout_json(&renew);
    assert_eq!(report["reason"], "forced");
    assert!(
        failed.is_empty(),
        "{} requests failed: {failed:?}",
        failed.len()
    );
    assert!(ok > 0, "the client loop made no request");
    let after = file_serial(&stack);
    assert_ne!(after, before);
    // `nginx -s reload` returns once the master has the signal; old workers finish their
    // connections gracefully, so the new certificate is served moments later.
    assert_eq!(served_serial_becomes(&stack, &after), after);
    // The stored account was reused, not registered again.
    assert_eq!(
        std::fs::read(stack.path().join(".elior/acme/account.json")).unwrap(),
        account
    );
}

#[test]
fn a_challenge_the_ca_cannot_reach_fails_and_the_bootstrap_cert_stays_served() {
    // Our nginx answers the preflight, but the CA validates on another port where
    // nothing listens: the CA refuses, and nothing on disk or on the wire changes.
    let stack = Stack::new(&[("ACME_EMAIL", "ops@elior.test")]);
    let pebble = Pebble::start(cert_harness::free_port());
    stack.append_env(&[
        ("ACME_DIRECTORY", &pebble.directory_url),
        ("ACME_CA_FILE", pebble.ca_bundle.to_str().unwrap()),
    ]);
    stack.bootstrap();
    let nginx = Nginx::start(&stack);
    let (before_file, before_served) = (stack.cert_pem(), served_serial(&stack));

    let output = stack.elior(&[
        "cert",
        "issue",
        "--nginx-conf",
        nginx.conf.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("elior: the CA did not validate elior.test, www.elior.test: "),
        "{stderr}"
    );
    assert!(
        stderr.contains("connect: connection refused\nthe CA must reach"),
        "{stderr}"
    );
    assert_eq!(stack.cert_pem(), before_file);
    assert_eq!(served_serial(&stack), before_served);
}

#[test]
fn unreachable_challenge_fails_before_the_ca_and_keeps_the_old_cert() {
    let stack = Stack::new(&[
        ("ACME_EMAIL", "ops@elior.test"),
        // Never contacted: the preflight must stop first.
        ("ACME_DIRECTORY", "https://127.0.0.1:9/dir"),
    ]);
    stack.bootstrap();
    let mut nginx = Nginx::start(&stack);
    let conf = nginx.conf.clone();
    nginx.stop();
    let before = stack.cert_pem();

    let output = stack.elior(&["cert", "issue", "--nginx-conf", conf.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "elior: http://{DOMAIN}:{}/.well-known/acme-challenge/elior-probe-",
            stack.http_port
        )) && stderr.contains("did not serve the probe file"),
        "{stderr}"
    );
    assert!(stderr.contains("cannot connect to 127.0.0.1"), "{stderr}");
    assert_eq!(stack.cert_pem(), before);
    assert!(!stack.path().join(".elior/acme/account.json").exists());
}

/// Writes a certificate for DOMAIN valid in [not_before, not_after] (days from now) and
/// a key: its own, or another one when `mismatched`.
fn write_pair(stack: &Stack, not_before: i64, not_after: i64, mismatched: bool) {
    let mut params = rcgen::CertificateParams::new(vec![DOMAIN.to_string()]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::days(not_before);
    params.not_after = now + time::Duration::days(not_after);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let key_pem = if mismatched {
        rcgen::KeyPair::generate().unwrap().serialize_pem()
    } else {
        key.serialize_pem()
    };
    std::fs::create_dir_all(stack.path().join("nginx/ssl")).unwrap();
    std::fs::write(stack.path().join("nginx/ssl/cert.pem"), cert.pem()).unwrap();
    std::fs::write(stack.path().join("nginx/ssl/key.pem"), key_pem).unwrap();
}

#[test]
fn cert_status_fails_on_expired_mismatched_and_unserved_certs() {
    let expired = Stack::new(&[]);
    write_pair(&expired, -100, -10, false);
    let output = expired.elior(&["cert", "status", "--json"]);
    assert_eq!(output.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["expired"], true);
    assert_eq!(report["days_left"], -10);
    assert_eq!(report["key_matches"], true);
    assert_eq!(report["renewal_due"], true);
    assert_eq!(report["sans"], serde_json::json!([DOMAIN]));
    assert_eq!(report["healthy"], false);

    let mismatched = Stack::new(&[]);
    write_pair(&mismatched, -1, 89, true);
    let output = mismatched.elior(&["cert", "status"]);
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("89 days left") || text.contains("88 days left"),
        "{text}"
    );
    assert!(
        text.contains("key          ECDSA P-256 256 bits, MISMATCH"),
        "{text}"
    );
    // Nothing listens on HTTPS_PORT, so it is not served either.
    assert!(
        text.contains("served       NOT SERVED: cannot connect to"),
        "{text}"
    );
}

#[test]
fn a_certificate_nginx_rejects_is_rolled_back_and_the_old_one_stays_served() {
    // The running nginx keeps its loaded configuration, but `nginx -t` now fails (a
    // hand-broken config file): the issued certificate must not stay on disk.
    let (stack, _pebble, nginx) = served_stack();
    let (before_file, before_served) = (stack.cert_pem(), served_serial(&stack));
    let mut conf = std::fs::read_to_string(&nginx.conf).unwrap();
    conf.push_str("this is not a directive;\n");
    std::fs::write(&nginx.conf, conf).unwrap();

    let output = stack.elior(&[
        "cert",
        "issue",
        "--nginx-conf",
        nginx.conf.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "elior: nginx rejected the new certificate; the previous certificate was put back and stays served: "
        ),
        "{stderr}"
    );
    assert_eq!(stack.cert_pem(), before_file);
    assert_eq!(served_serial(&stack), before_served);
    let staged: Vec<_> = std::fs::read_dir(stack.path().join("nginx/ssl"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(staged.len(), 2, "{staged:?}");
}
