//! Benchmark, on demand: `elior deploy` against `docker-compose -f docker-compose.prod.yml
//! up -d` on the same rendered files, the same images and the same host.
//!
//! Scenarios (each run ROUNDS times, default 3; medians reported):
//! - cold: no containers, images present, until the command returns (elior's includes
//!   its HTTPS proof; compose's `up -d` waits for the API's health via depends_on);
//! - no-op: the stack already runs as described;
//! - update: an env change, until the new API version serves /health through nginx.
//!
//! Usage (a release build is what production runs; its image size is printed too):
//!     cargo build --release && cargo run --release --example deploy_bench -- target/release/elior
//! Needs: the fixture nginx image (scripts/build-fixture-images) and docker-compose.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use elior::probe::https::PinnedClient;

fn main() {
    let elior = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/release/elior".into());
    let elior = std::fs::canonicalize(&elior).expect("elior binary (pass its path)");
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let proxy = String::from_utf8(
        Command::new("scripts/build-fixture-images")
            .output()
            .expect("fixture script")
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("stack");
    let domain = format!("bench{}.elior.test", std::process::id());
    // compose's own project name; elior's stacks are named from their id. Cleanup goes by
    // the `elior.stack` label the compose file puts on everything, so this bench runs
    // any elior binary (an earlier release's too, for a before/after comparison).
    let project = format!("elior-bench{}-compose", std::process::id());
    let repo = format!("elior-bench{}-api", std::process::id());
    let https_port = free_port();
    run(&elior, &["init", &domain, "--dir", dir.to_str().unwrap()]);
    set_env(&dir, "HTTP_PORT", &free_port().to_string());
    set_env(&dir, "HTTPS_PORT", &https_port.to_string());
    set_env(&dir, "API_IMAGE", &format!("{repo}:latest"));
    set_env(&dir, "PROXY_IMAGE", &proxy);

    // Warm-up: builds the API image (and tags API_IMAGE, which compose uses).
    run_in(&elior, &dir, &["deploy", &domain]);
    let size = image_size(&format!("{repo}:latest"));
    run_in(&elior, &dir, &["down"]);

    let compose = |args: &[&str]| {
        let mut all = vec!["-p", project.as_str(), "-f", "docker-compose.prod.yml"];
        all.extend(args);
        let out = Command::new("docker-compose")
            .args(&all)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker-compose {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let client = || PinnedClient::from_pem_file(&dir.join("nginx/ssl/cert.pem")).unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], https_port));
    // compose's `up -d` stops and removes the old API before it creates the new one, so
    // the first 200 through nginx after it returns comes from the new version.
    let wait_serving = || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let c = client();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match rt.block_on(c.get(addr, &domain, "/health", Duration::from_secs(5))) {
                Ok(r) if r.status == 200 => return,
                _ => assert!(Instant::now() < deadline, "the new version never served"),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    let mut results: Vec<(&str, Vec<f64>, Vec<f64>)> = Vec::new();
    let (mut cold_e, mut cold_c, mut noop_e, mut noop_c, mut upd_e, mut upd_c) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        let level = if round % 2 == 0 { "debug" } else { "info" };
        // elior (its deploy returns once the new version serves, proven over HTTPS)
        cold_e.push(time(|| run_in(&elior, &dir, &["deploy", &domain])));
        noop_e.push(time(|| run_in(&elior, &dir, &["deploy", &domain])));
        set_env(&dir, "LOG_LEVEL", level);
        upd_e.push(time(|| run_in(&elior, &dir, &["deploy", &domain])));
        run_in(&elior, &dir, &["down"]);
        // docker-compose on the same files
        set_env(&dir, "LOG_LEVEL", "warn");
        cold_c.push(time(|| compose(&["up", "-d"])));
        noop_c.push(time(|| compose(&["up", "-d"])));
        set_env(&dir, "LOG_LEVEL", level);
        upd_c.push(time(|| {
            compose(&["up", "-d"]);
            wait_serving();
        }));
        compose(&["down"]);
        set_env(&dir, "LOG_LEVEL", "warn");
    }
    results.push(("cold deploy (images present)", cold_e, cold_c));
    results.push(("no-op redeploy", noop_e, noop_c));
    results.push(("update until the new version serves", upd_e, upd_c));

    println!(
        "API image (from {}): {:.1} MB",
        elior.display(),
        size as f64 / 1e6
    );
    println!(
        "{:<40} {:>10} {:>16} {:>8}",
        "scenario (median of rounds)", "elior s", "docker-compose s", "ratio"
    );
    for (name, e, c) in &results {
        let (me, mc) = (median(e), median(c));
        println!("{name:<40} {me:>10.2} {mc:>16.2} {:>8.2}", me / mc);
    }
    cleanup(&project, &domain, &repo);
}

fn cleanup(project: &str, domain: &str, repo: &str) {
    let _ = Command::new("docker-compose")
        .args(["-p", project, "down"])
        .output();
    let label = format!("label=elior.stack={domain}");
    for kind in ["container", "network"] {
        let list: &[&str] = if kind == "container" {
            &["container", "ls", "-aq"]
        } else {
            &["network", "ls", "-q"]
        };
        let out = Command::new("docker")
            .args(list)
            .args(["--filter", &label])
            .output()
            .unwrap();
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let args: &[&str] = if kind == "container" {
                &["rm", "-f", id]
            } else {
                &["network", "rm", id]
            };
            let _ = Command::new("docker").args(args).output();
        }
    }
    let out = Command::new("docker")
        .args(["images", "-q", repo])
        .output()
        .unwrap();
    for id in String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<std::collections::BTreeSet<_>>()
    {
        let _ = Command::new("docker").args(["rmi", "-f", id]).output();
    }
}

fn image_size(reference: &str) -> u64 {
    let out = Command::new("docker")
        .args(["image", "inspect", "-f", "{{.Size}}", reference])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn time(f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64()
}

fn free_port() -> u16 {
    TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(bin: &Path, args: &[&str]) {
    let out = Command::new(bin).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "elior {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run_in(bin: &Path, dir: &Path, args: &[&str]) {
    let mut all = args.to_vec();
    all.extend(["--dir", dir.to_str().unwrap()]);
    run(bin, &all);
}

fn set_env(dir: &Path, key: &str, value: &str) {
    let path = dir.join(".env.production");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut found = false;
    let mut lines: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with(&format!("{key}=")) {
                found = true;
                format!("{key}={value}")
            } else {
                l.to_string()
            }
        })
        .collect();
    if !found {
        lines.push(format!("{key}={value}"));
    }
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
}
