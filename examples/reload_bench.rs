//! Benchmark, on demand: what a graceful nginx reload costs through the engine, the way
//! elior reloads (one `nginx -s reload` through the exec API, which tests the
//! configuration itself: issue 14) against the way it used to (`nginx -t` through exec,
//! then SIGHUP through the kill endpoint, which on Engine 20.10 disarms the restart
//! policy), and against `nginx -t` followed by `nginx -s reload`, two execs. Every deploy
//! that swaps the API reloads twice, every certificate install once.
//!
//! Usage: `cargo run --release --example reload_bench` (ROUNDS, default 30, alternating).
//! Needs the fixture nginx image (scripts/build-fixture-images). It starts one labelled
//! nginx container of its own and removes it at the end, and on a panic.

use std::process::Command;
use std::time::{Duration, Instant};

use elior::docker::{apply, bollard, proxy};

const CONFIG: &str = "/etc/nginx/bench/nginx.conf";

/// Removes the bench's container and folder on drop.
struct Guard {
    name: String,
    dir: tempfile::TempDir,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.name])
            .output();
        let _ = &self.dir;
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(30);
    let image = String::from_utf8(
        Command::new("scripts/build-fixture-images")
            .output()
            .expect("fixture script")
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("nginx.conf"),
        "events {}\nhttp { server { listen 8080; location / { return 200 \"ok\\n\"; } } }\n",
    )
    .unwrap();
    let guard = Guard {
        name: format!("elior-reload-bench-{}", std::process::id()),
        dir,
    };
    let mount = format!("{}:/etc/nginx/bench:ro", guard.dir.path().display());
    let out = Command::new("docker")
        .args([
            "run",
            "-d",
            "--label",
            "elior.bench=1",
            "--name",
            &guard.name,
        ])
        .args([
            "-v",
            &mount,
            &image,
            "nginx",
            "-c",
            CONFIG,
            "-g",
            "daemon off;",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker run: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let runtime = elior::docker::runtime().unwrap();
    let docker = runtime.block_on(elior::docker::connect()).unwrap();
    let name = guard.name.as_str();
    let (mut signal, mut both, mut elior) = (Vec::new(), Vec::new(), Vec::new());
    runtime.block_on(async {
        for _ in 0..rounds {
            let start = Instant::now();
            proxy::test_config(&docker, name, CONFIG).await.unwrap();
            docker
                .kill_container(
                    name,
                    Some(bollard::query_parameters::KillContainerOptions {
                        signal: "HUP".into(),
                    }),
                )
                .await
                .unwrap();
            signal.push(start.elapsed());

            let start = Instant::now();
            proxy::test_config(&docker, name, CONFIG).await.unwrap();
            let (code, _) = apply::exec(&docker, name, &["nginx", "-s", "reload", "-c", CONFIG])
                .await
                .unwrap();
            assert_eq!(code, 0);
            both.push(start.elapsed());

            let start = Instant::now();
            proxy::reload(&docker, name, CONFIG).await.unwrap();
            elior.push(start.elapsed());
        }
    });
    let (signal, both, elior) = (median(signal), median(both), median(elior));
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("median of {rounds} rounds, one reload:");
    println!(
        "  nginx -t + SIGHUP (kill endpoint; before issue 14) {:>7.1} ms",
        ms(signal)
    );
    println!(
        "  nginx -t + nginx -s reload (two execs)            {:>7.1} ms  ratio {:.2}",
        ms(both),
        ms(both) / ms(signal)
    );
    println!(
        "  nginx -s reload (one exec; elior)                 {:>7.1} ms  ratio {:.2}",
        ms(elior),
        ms(elior) / ms(signal)
    );
}
