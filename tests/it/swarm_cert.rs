//! ACME HTTP-01 in swarm mode (issue 21) against Debian's pebble, on the real single-node
//! swarm of `swarm.rs` (its guard and stack, with the same cleanup): every nginx task
//! answers challenges from its config with the account's thumbprint, and a new
//! certificate rolls nginx as a new secret version.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::cert::{free_port, Pebble};
use crate::harness::docker::{runtime, ClientLoop};
use crate::harness::stack::succeeded;
use crate::swarm::{text, SwarmGuard, SwarmStack};

fn served_leaf(s: &SwarmStack) -> elior::tls::inspect::CertInfo {
    let chain = runtime()
        .block_on(elior::tls::served::served_chain(
            s.stack.addr(),
            &s.stack.domain,
            Duration::from_secs(5),
        ))
        .expect("nginx serves a certificate");
    elior::tls::inspect::describe(&chain[0]).unwrap()
}

/// The stack's certificate secrets on the engine, by name.
fn cert_secrets(s: &SwarmStack) -> Vec<String> {
    let owner = s.owner();
    let prefix = format!("{}-cert-", owner.project);
    runtime().block_on(async move {
        let docker = elior::docker::connect().await.unwrap();
        elior::docker::swarm::secrets(&docker, &owner)
            .await
            .unwrap()
            .into_iter()
            .map(|(name, _)| name)
            .filter(|name| name.starts_with(&prefix))
            .collect()
    })
}

/// The nginx service's version: it moves with every update of the service.
fn nginx_version(s: &SwarmStack) -> u64 {
    let name = format!("{}-nginx", s.owner().project);
    runtime().block_on(async move {
        let docker = elior::docker::connect().await.unwrap();
        docker
            .inspect_service(
                &name,
                None::<bollard::query_parameters::InspectServiceOptions>,
            )
            .await
            .unwrap()
            .version
            .unwrap()
            .index
            .unwrap()
    })
}

/// GET http://DOMAIN:HTTP_PORT/.well-known/acme-challenge/TOKEN: (status, body).
fn challenge_answer(s: &SwarmStack, token: &str) -> (u16, String) {
    let client = elior::http::ClientBuilder::new(elior::http::Trust::Insecure)
        .connect_to([127, 0, 0, 1].into())
        .fresh_connections()
        .build()
        .unwrap();
    let url = format!(
        "http://{}:{}/.well-known/acme-challenge/{token}",
        s.stack.domain, s.stack.http_port
    );
    let reply = runtime()
        .block_on(client.get(&url))
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    (reply.status.as_u16(), reply.text())
}

/// One HTTPS request's outcome, seconds after the loop started.
type Event = (f64, Result<u16, String>);

/// GET /health over HTTPS in a loop, any certificate accepted (it changes during the
/// roll), each answer recorded with its time.
fn https_loop(s: &SwarmStack) -> (ClientLoop, Arc<Mutex<Vec<Event>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let (addr, domain, log) = (s.stack.addr(), s.stack.domain.clone(), events.clone());
    let started = Instant::now();
    let client = ClientLoop::start(move || {
        let (domain, log) = (domain.clone(), log.clone());
        async move {
            let timeout = Duration::from_secs(10);
            let result = elior::tls::served::https_get_status(addr, &domain, "/health", timeout)
                .await
                .map_err(|e| format!("{e:#}"));
            let ok = matches!(result, Ok(200));
            log.lock()
                .unwrap()
                .push((started.elapsed().as_secs_f64(), result.clone()));
            if ok {
                Ok(())
            } else {
                Err(format!("{result:?}"))
            }
        }
    });
    (client, events)
}

/// Deploy with ACME against pebble, a forced renewal under load, then a challenge the CA
/// refuses and a CA that cannot be reached, then the user's own pair: one walk, so the
/// swarm deploy is paid once.
#[test]
fn swarm_acme_deploy_renew_rolls_nginx_a_refused_challenge_or_dead_ca_changes_nothing_and_an_own_pair_rolls_in(
) {
    let (mut swarm, inactive) = SwarmGuard::ensure();
    if inactive {
        swarm.init();
    }
    swarm.label_db_node(|| {});
    let s = SwarmStack::new("swarm-acme", 1);
    // Pebble validates HTTP-01 on the port every node's nginx task publishes.
    let pebble = Pebble::start(s.stack.http_port);
    s.stack.set_env(&[
        ("ACME_EMAIL", "ops@example.com"),
        ("ACME_DIRECTORY", &pebble.directory_url),
        ("ACME_CA_FILE", pebble.ca_bundle.to_str().unwrap()),
    ]);

    // Deploy: nginx's first tasks already answer challenges; the CA's certificate replaces
    // the self-signed bootstrap one as a new secret version.
    let out = s.ok(&["deploy", &s.stack.domain, "--swarm"]);
    assert!(out.contains("from the CA: serial"), "{out}");
    let issued = served_leaf(&s);
    assert!(!issued.self_signed, "still the bootstrap certificate");
    assert!(issued.issuer.contains("Pebble"), "{}", issued.issuer);
    let chain = runtime()
        .block_on(elior::tls::served::served_chain(
            s.stack.addr(),
            &s.stack.domain,
            Duration::from_secs(5),
        ))
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pebble.issuing_root.clone()).unwrap();
    elior::tls::inspect::verify_chain(&chain, roots, &s.stack.domain)
        .expect("the served chain verifies against pebble's root");
    let dir = &s.stack.dir;
    let mode = |p: &str| {
        std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.join(p)).unwrap().permissions(),
        ) & 0o777
    };
    assert_eq!(mode("nginx/ssl/key.pem"), 0o600);
    assert_eq!(mode(".elior/acme/account.json"), 0o600);
    // nginx answers any token from its config, one never written to a file included.
    let (status, body) = challenge_answer(&s, "any-Token_42");
    assert_eq!(status, 200, "{body}");
    let (token, thumbprint) = body.split_once('.').unwrap();
    assert_eq!(token, "any-Token_42");
    assert_eq!(thumbprint.len(), 43, "{body}");
    assert_eq!(challenge_answer(&s, "not%20a%20token").0, 404);
    let first_secrets = cert_secrets(&s);

    // A forced renewal while a client keeps requesting HTTPS /health: the served serial
    // changes, nginx rolled once (one node here), and the replaced secret is gone.
    let before = nginx_version(&s);
    let (client, events) = https_loop(&s);
    client.wait_for(5);
    let renew = s.run(&["cert", "renew", "--force", "--json"]);
    client.wait_for(5);
    let (ok, failures) = client.finish();
    assert!(
        renew.status.success(),
        "renew: {}\n{}",
        text(&renew.stdout),
        text(&renew.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&renew.stdout).unwrap();
    assert_eq!(report["action"], "issued");
    assert_eq!(report["reason"], "forced");
    let renewed = served_leaf(&s);
    assert_eq!(serde_json::json!(renewed.serial), report["serial"]);
    assert_ne!(renewed.serial, issued.serial);
    assert!(nginx_version(&s) > before, "nginx was not rolled");
    let now_secrets = cert_secrets(&s);
    assert_eq!(now_secrets.len(), 1, "{now_secrets:?}");
    assert!(
        !first_secrets.contains(&now_secrets[0]),
        "{first_secrets:?} -> {now_secrets:?}"
    );
    // nginx publishes host-mode ports, so a node's task stops before its successor starts:
    // on one node that is one gap of refused connections, measured here. No request
    // failed otherwise (no wrong status, no error page), and the gap is one window.
    let events = events.lock().unwrap().clone();
    let failed: Vec<&Event> = events.iter().filter(|e| e.1 != Ok(200)).collect();
    assert!(
        failed.iter().all(|e| e.1.is_err()),
        "answers other than 200: {failed:?}"
    );
    if let (Some(first), Some(last)) = (failed.first(), failed.last()) {
        let between_ok = events
            .iter()
            .filter(|e| e.0 > first.0 && e.0 < last.0 && e.1 == Ok(200))
            .count();
        assert_eq!(
            between_ok, 0,
            "failures in more than one window: {failed:?}"
        );
        eprintln!(
            "certificate roll on one node: {ok} ok, {} failed in one window of {:.2}s ({:?} .. {:?})",
            failures.len(),
            last.0 - first.0,
            first.1,
            last.1
        );
    } else {
        eprintln!("certificate roll on one node: {ok} ok, 0 failed");
    }
    assert!(ok > 10, "the client loop made only {ok} requests");

    // Nothing changed: no roll, the same certificate on disk and served, the same secrets.
    let version = nginx_version(&s);
    let files = std::fs::read(dir.join("nginx/ssl/cert.pem")).unwrap();
    let untouched = || {
        assert_eq!(nginx_version(&s), version, "nginx was touched");
        assert_eq!(served_leaf(&s).serial, renewed.serial);
        assert_eq!(
            std::fs::read(dir.join("nginx/ssl/cert.pem")).unwrap(),
            files
        );
        assert_eq!(cert_secrets(&s), now_secrets);
    };

    // The CA refuses the challenge (its DNS no longer finds the name): exit 2 naming the
    // domain and what the CA must reach.
    pebble.resolve_nothing();
    let out = s.run(&["cert", "renew", "--force"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let said = text(&out.stderr);
    assert!(
        said.contains(&format!("the CA did not validate {}", s.stack.domain)),
        "{said}"
    );
    assert!(
        said.contains("the CA must reach http://NAME/.well-known/acme-challenge/"),
        "{said}"
    );
    untouched();

    // The CA cannot be reached: exit 2 naming the URL and what to check.
    let dead = format!("https://127.0.0.1:{}/dir", free_port());
    s.stack.set_env(&[("ACME_DIRECTORY", &dead)]);
    let out = s.run(&["cert", "renew", "--force"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let said = text(&out.stderr);
    assert!(said.contains(&dead), "{said}");
    assert!(said.contains("check ACME_DIRECTORY"), "{said}");
    untouched();

    // The user's own pair (issue 20): decided as on a single host, before ACME_EMAIL.
    // A key that does not match is refused before anything changes; a good pair rolls
    // nginx to it like a CA's certificate (the swarm said "served" and kept the old one).
    let own = rcgen::generate_simple_self_signed(vec![s.stack.domain.clone()]).unwrap();
    let files = s.stack.tmp.path();
    let (cert, key, wrong_key) = (
        files.join("own.pem"),
        files.join("own.key"),
        files.join("other.key"),
    );
    std::fs::write(&cert, own.cert.pem()).unwrap();
    std::fs::write(&key, own.signing_key.serialize_pem()).unwrap();
    let other = rcgen::KeyPair::generate().unwrap();
    std::fs::write(&wrong_key, other.serialize_pem()).unwrap();
    let (cert, key, wrong_key) = (
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
        wrong_key.to_str().unwrap(),
    );
    let domain = s.stack.domain.clone();
    let deploy_own =
        |key: &str| s.run(&["deploy", &domain, "--swarm", "--cert", cert, "--key", key]);
    let refused = deploy_own(wrong_key);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stdout));
    let said = text(&refused.stderr);
    assert!(said.contains("nothing was changed"), "{said}");
    untouched();
    let said = succeeded(&deploy_own(key));
    assert!(said.contains("serving your certificate: serial"), "{said}");
    let mine = elior::tls::inspect::describe(own.cert.der()).unwrap();
    assert_eq!(served_leaf(&s).serial, mine.serial);
    assert!(nginx_version(&s) > version, "nginx was not rolled");
    assert_eq!(
        std::fs::read_to_string(dir.join("nginx/ssl/cert.pem")).unwrap(),
        own.cert.pem()
    );
    assert_eq!(mode("nginx/ssl/key.pem"), 0o600);
    let own_secrets = cert_secrets(&s);
    assert_eq!(own_secrets.len(), 1, "{own_secrets:?}");
    assert_ne!(own_secrets, now_secrets);
    // Again: nothing to install, nothing rolled.
    let rolled = nginx_version(&s);
    let again = succeeded(&deploy_own(key));
    assert!(!again.contains("serving your certificate"), "{again}");
    assert_eq!(nginx_version(&s), rolled);
    assert_eq!(served_leaf(&s).serial, mine.serial);
}
