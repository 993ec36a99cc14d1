//! Load tool for `elior serve` at 10,000 connections (issue 19); run on demand, never in
//! the test suite:
//!
//!   cargo build --release --bin elior --example serve_load
//!   nice target/release/examples/serve_load                      # 10k sockets, c256 mix, 30 s
//!   nice target/release/examples/serve_load --ws 0 --conns 1024  # peak RSS at c1024
//!   nice target/release/examples/serve_load --conns 0            # idle sockets only
//!   target/release/examples/serve_load --help                    # every option
//!
//! One run, server and load together: it seeds a fresh SQLite file with one admin and
//! enough client users (one argon2 hash, written straight through `elior::db`, so 10,000
//! users cost no 10,000 logins), mints their tokens with the server's secret, starts the
//! server binary (`--bin`, default `target/release/elior`) on it, and then:
//!
//! 1. opens `--ws` WebSockets, each as a distinct user, and holds them idle for
//!    `--settle` seconds (the idle RSS);
//! 2. runs the HTTP mix (`--mix`: `/api/auth/me`, notification and weight lists, weight
//!    entries, notifications, logins, `/health`) on `--conns` keep-alive connections for
//!    `--duration` seconds. Each notification is sent by the admin to a random socket's
//!    user and carries its send time, so its socket reports the fan-out latency: from the
//!    `POST` leaving the tool to the push arriving;
//! 3. stops the load and counts stalls: requests still open `--stall-after` seconds after
//!    the load stopped (they are abandoned).
//!
//! It prints, per kind of request, client-side latency percentiles (the tool's clock)
//! and server-side ones (the `X-Process-Time` each response carries), errors by status,
//! the fan-out percentiles, stalls, the server's RSS (sampled every 100 ms; `--rss-csv`
//! writes the samples) and the server log's slow-query and slow-request lines.
//! `--slow N` adds N sockets that never read, and sends a share of the notifications to
//! them: they must be dropped without raising anyone else's fan-out latency.
//!
//! File descriptors: every socket is a descriptor on each side, so the tool raises its soft
//! `RLIMIT_NOFILE` to the hard limit, and the server it starts inherits that. When the hard
//! limit is below what the run needs (`--ws` + `--slow` + `--conns` + 256) it stops and says
//! so: raise it for the shell (`ulimit -Hn 65536` as root, or `LimitNOFILE=` in a unit, or
//! `--ulimit nofile=` for a container). Ports: 127.0.0.1 has ~28,000 ephemeral ports by
//! default (`net.ipv4.ip_local_port_range`), enough for 10,000 sockets plus the mix.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::body::Body;
use clap::Parser;
use futures_util::StreamExt;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rand::{Rng, SeedableRng};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use elior::auth::token::TokenKeys;
use elior::db::users::{self, NewUser, Role};

const SECRET: &str = "serve-load-secret-serve-load-secret-0123";
const PASSWORD: &str = "serve-load-password";

#[derive(Parser, Debug)]
#[command(about = "Load elior serve: WebSockets, an HTTP mix, latency, stalls and RSS")]
struct Args {
    /// The elior binary to start
    #[arg(long, default_value = "target/release/elior")]
    bin: PathBuf,
    /// WebSocket clients that read, each a distinct user
    #[arg(long, default_value_t = 10_000)]
    ws: usize,
    /// WebSocket clients that never read (distinct users too)
    #[arg(long, default_value_t = 0)]
    slow: usize,
    /// Share of the notifications sent to the never-reading sockets, when there are any
    #[arg(long, default_value_t = 0.5)]
    slow_share: f64,
    /// Concurrent HTTP connections of the mix (0: no HTTP load)
    #[arg(long, default_value_t = 256)]
    conns: usize,
    /// Seconds of HTTP load
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Relative weights of the request kinds (logins 0.1%: a session logs in once and
    /// makes hundreds of requests; each login is ~70 ms of argon2 on one core)
    #[arg(
        long,
        default_value = "me=300,list=150,weights=150,weigh=250,notify=100,login=1,health=49"
    )]
    mix: String,
    /// Seconds the sockets stay idle before the load (the idle RSS is the last second's)
    #[arg(long, default_value_t = 3)]
    settle: u64,
    /// A request still open this many seconds after the load stopped is a stall
    #[arg(long, default_value_t = 5)]
    stall_after: u64,
    /// WebSocket handshakes in flight at once while connecting
    #[arg(long, default_value_t = 64)]
    connect_parallel: usize,
    /// More environment for the server, KEY=VALUE (repeatable), e.g. MAX_CONNECTIONS=20000
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Write the RSS samples (ms since start; total, anonymous and file-backed KiB; phase)
    /// to this CSV file
    #[arg(long)]
    rss_csv: Option<PathBuf>,
    /// Keep the run's directory (database, server log) and print where it is
    #[arg(long)]
    keep: bool,
    /// Tokio worker threads of the tool
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Start the server under this command, e.g. "heaptrack -o /tmp/serve" (split on
    /// spaces); the RSS is then the `elior` process under it
    #[arg(long)]
    wrap: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Me,
    List,
    Weights,
    Weigh,
    Notify,
    Login,
    Health,
}

const KINDS: [(Kind, &str); 7] = [
    (Kind::Me, "me"),
    (Kind::List, "list"),
    (Kind::Weights, "weights"),
    (Kind::Weigh, "weigh"),
    (Kind::Notify, "notify"),
    (Kind::Login, "login"),
    (Kind::Health, "health"),
];

impl Kind {
    fn route(self) -> &'static str {
        match self {
            Kind::Me => "GET /api/auth/me",
            Kind::List => "GET /api/notifications",
            Kind::Weights => "GET /api/progress/weight",
            Kind::Weigh => "POST /api/progress/weight",
            Kind::Notify => "POST /api/notifications",
            Kind::Login => "POST /api/auth/login",
            Kind::Health => "GET /health",
        }
    }
}

/// The mix as cumulative weights.
struct Mix(Vec<(Kind, u32)>);

impl Mix {
    fn parse(text: &str) -> Result<Mix> {
        let mut total = 0;
        let mut cumulative = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .with_context(|| format!("mix entry {part:?}: use NAME=WEIGHT"))?;
            let kind = KINDS
                .iter()
                .find(|(_, n)| *n == name.trim())
                .map(|(k, _)| *k)
                .with_context(|| format!("mix entry {part:?}: unknown kind"))?;
            let weight: u32 = weight.trim().parse().context("mix weight")?;
            if weight > 0 {
                total += weight;
                cumulative.push((kind, total));
            }
        }
        if total == 0 {
            bail!("the mix has no weight");
        }
        Ok(Mix(cumulative))
    }

    fn pick(&self, rng: &mut impl Rng) -> Kind {
        let total = self.0.last().map_or(1, |(_, t)| *t);
        let x = rng.gen_range(0..total);
        self.0
            .iter()
            .find(|(_, t)| x < *t)
            .map_or(Kind::Health, |(k, _)| *k)
    }
}

/// A seeded user and its token.
#[derive(Clone)]
struct Seeded {
    id: i64,
    username: String,
    token: String,
}

/// Latencies in microseconds.
#[derive(Default)]
struct Samples(Vec<u32>);

impl Samples {
    fn push(&mut self, d: Duration) {
        self.0.push(d.as_micros().min(u32::MAX as u128) as u32);
    }
    fn percentiles(&mut self) -> Option<[f64; 4]> {
        if self.0.is_empty() {
            return None;
        }
        self.0.sort_unstable();
        let at = |q: f64| {
            let i = ((self.0.len() as f64 * q).ceil() as usize).clamp(1, self.0.len()) - 1;
            self.0[i] as f64 / 1000.0
        };
        Some([
            at(0.5),
            at(0.9),
            at(0.99),
            *self.0.last().unwrap() as f64 / 1000.0,
        ])
    }
}

#[derive(Default)]
struct KindStats {
    ok: u64,
    client: Samples,
    server: Samples,
    statuses: BTreeMap<u16, u64>,
    failures: u64,
}

/// What the run shares between its tasks.
struct Shared {
    base: Instant,
    stop: AtomicBool,
    in_flight: AtomicUsize,
    fanout: Mutex<Samples>,
    fanout_sent: AtomicU64,
    fanout_slow_sent: AtomicU64,
    delivered: AtomicU64,
    phase: Mutex<&'static str>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let mix = Arc::new(Mix::parse(&args.mix)?);
    let needed = (args.ws + args.slow + args.conns + 256) as u64;
    let nofile = raise_nofile(needed)?;
    let bin = std::fs::canonicalize(&args.bin).with_context(|| {
        format!(
            "no server binary at {}\nbuild it with cargo build --release --bin elior, or pass --bin",
            args.bin.display()
        )
    })?;
    let dir = tempfile::Builder::new().prefix("serve-load-").tempdir()?;
    let db_path = dir.path().join("elior.db");

    let started = Instant::now();
    let users = (args.ws + args.slow).max(args.conns).max(1);
    let (admin, seeded) = seed(&db_path, users)?;
    println!(
        "seeded {} users in {:.1} s; RLIMIT_NOFILE {nofile}",
        seeded.len() + 1,
        started.elapsed().as_secs_f64()
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let log_path = dir.path().join("server.log");
    let mut words: Vec<String> = args
        .wrap
        .as_deref()
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    words.push(bin.display().to_string());
    let mut cmd = tokio::process::Command::new(&words[0]);
    cmd.args(&words[1..])
        .args(["serve", "--bind", &addr.to_string()])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("JWT_SECRET", SECRET)
        .env("ACCESS_TOKEN_EXPIRE_MINUTES", "600")
        .env("DATABASE_URL", format!("sqlite:///{}", db_path.display()))
        .env("UPLOAD_DIR", dir.path().join("uploads"))
        .env("LOG_LEVEL", "info")
        // As the API image runs it (src/docker/image.rs) and examples/load_bench.sh.
        .env("MALLOC_ARENA_MAX", "2")
        .env("MALLOC_MMAP_THRESHOLD_", "131072")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path)?)
        .kill_on_drop(true);
    for kv in &args.env {
        let (k, v) = kv.split_once('=').context("--env takes KEY=VALUE")?;
        cmd.env(k, v);
    }
    let mut server = cmd
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let child = server.id().context("server pid")?;
    let shared = Arc::new(Shared {
        base: Instant::now(),
        stop: AtomicBool::new(false),
        in_flight: AtomicUsize::new(0),
        fanout: Mutex::default(),
        fanout_sent: AtomicU64::new(0),
        fanout_slow_sent: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        phase: Mutex::new("start"),
    });
    wait_healthy(addr, &mut server).await?;
    let pid = if args.wrap.is_some() {
        find_elior(child).context("no elior process under the --wrap command")?
    } else {
        child
    };
    let rss = tokio::spawn(sample_rss(pid, shared.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline_kib = rss_kib(pid).unwrap_or(0);
    println!(
        "server {} (pid {pid}) up; RSS {:.1} MiB",
        bin.display(),
        mib(baseline_kib)
    );

    // 1. The sockets.
    set_phase(&shared, "connect");
    let t = Instant::now();
    let (readers, slow_sockets, failed) = connect_all(&args, addr, &seeded, &shared).await;
    let connect_secs = t.elapsed().as_secs_f64();
    set_phase(&shared, "idle");
    tokio::time::sleep(Duration::from_secs(args.settle.saturating_sub(1))).await;
    let mut idle_max = 0;
    for _ in 0..10 {
        idle_max = idle_max.max(rss_kib(pid).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sockets = args.ws + args.slow - failed;
    println!(
        "websockets: {sockets} open ({failed} failed) in {connect_secs:.1} s; idle RSS {:.1} MiB ({:.1} KiB per socket above the {:.1} MiB before)",
        mib(idle_max),
        if sockets > 0 { (idle_max.saturating_sub(baseline_kib)) as f64 / sockets as f64 } else { 0.0 },
        mib(baseline_kib),
    );
    let stats = ws_stats(addr, &admin.token).await;
    println!("server hub: {stats}");

    // 2. The mix.
    let mut per_kind: BTreeMap<Kind, KindStats> = BTreeMap::new();
    let mut stalls = 0;
    let mut drain_secs = 0.0;
    let mut load_peak = RssSample::default();
    let mut slow_gone_after = None;
    if args.conns > 0 {
        set_phase(&shared, "load");
        let recipients: Arc<Vec<i64>> = Arc::new(seeded[..args.ws].iter().map(|u| u.id).collect());
        let slow_ids: Arc<Vec<i64>> = Arc::new(
            seeded[args.ws..args.ws + args.slow]
                .iter()
                .map(|u| u.id)
                .collect(),
        );
        let load_start = Instant::now();
        let watch_slow = (args.slow > 0).then(|| {
            tokio::spawn(watch_hub(
                addr,
                admin.token.clone(),
                sockets - args.slow,
                load_start,
            ))
        });
        let mut vus = Vec::new();
        for i in 0..args.conns {
            let user = seeded[i % seeded.len()].clone();
            vus.push(tokio::spawn(vu(
                addr,
                user,
                admin.token.clone(),
                recipients.clone(),
                slow_ids.clone(),
                args.slow_share,
                mix.clone(),
                shared.clone(),
            )));
        }
        tokio::time::sleep(Duration::from_secs(args.duration)).await;
        shared.stop.store(true, Ordering::SeqCst);
        set_phase(&shared, "drain");
        let stopped = Instant::now();
        let open_at_stop = shared.in_flight.load(Ordering::SeqCst);
        let deadline = stopped + Duration::from_secs(args.stall_after);
        while shared.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drain_secs = stopped.elapsed().as_secs_f64();
        stalls = shared.in_flight.load(Ordering::SeqCst);
        println!(
            "load stopped after {:.1} s: {open_at_stop} requests open then, {stalls} still open {:.2} s later (stalls)",
            load_start.elapsed().as_secs_f64() - drain_secs,
            drain_secs
        );
        for vu in vus {
            if stalls > 0 {
                vu.abort();
            }
            if let Ok(stats) = vu.await {
                for (kind, s) in stats {
                    let into = per_kind.entry(kind).or_default();
                    into.ok += s.ok;
                    into.failures += s.failures;
                    into.client.0.extend(s.client.0);
                    into.server.0.extend(s.server.0);
                    for (status, n) in s.statuses {
                        *into.statuses.entry(status).or_default() += n;
                    }
                }
            }
        }
        if let Some(w) = watch_slow {
            w.abort();
            slow_gone_after = w.await.ok().flatten();
        }
        load_peak = rss_peak_of("load");
    }
    // Deliveries still on their way get a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    set_phase(&shared, "end");
    let hwm = status_kib(pid, "VmHWM:").unwrap_or(0);
    let stats_after = ws_stats(addr, &admin.token).await;

    // 3. The report.
    if args.conns > 0 {
        let secs = args.duration as f64;
        println!(
            "\nHTTP mix, {} connections, {} s ({}):",
            args.conns, args.duration, args.mix
        );
        println!(
            "{:<26} {:>8} {:>8}   {:>31}   {:>23}  errors",
            "request", "ok", "req/s", "client p50/p90/p99/max ms", "server p50/p99/max ms"
        );
        let mut total = 0;
        for (kind, s) in per_kind.iter_mut() {
            total += s.ok;
            let c = s.client.percentiles().unwrap_or_default();
            let v = s.server.percentiles().unwrap_or_default();
            let errors: Vec<String> = s
                .statuses
                .iter()
                .filter(|(st, _)| !(200..300).contains(*st))
                .map(|(st, n)| format!("{st}×{n}"))
                .chain((s.failures > 0).then(|| format!("io×{}", s.failures)))
                .collect();
            println!(
                "{:<26} {:>8} {:>8.0}   {:>7.1} {:>7.1} {:>7.1} {:>7.1}   {:>7.1} {:>7.1} {:>7.1}  {}",
                kind.route(),
                s.ok,
                s.ok as f64 / secs,
                c[0],
                c[1],
                c[2],
                c[3],
                v[0],
                v[2],
                v[3],
                if errors.is_empty() { "0".into() } else { errors.join(" ") }
            );
        }
        println!("{:<26} {:>8} {:>8.0}", "all", total, total as f64 / secs);
        let sent = shared.fanout_sent.load(Ordering::SeqCst);
        let slow_sent = shared.fanout_slow_sent.load(Ordering::SeqCst);
        let delivered = shared.delivered.load(Ordering::SeqCst);
        let f = shared
            .fanout
            .lock()
            .unwrap()
            .percentiles()
            .unwrap_or_default();
        println!(
            "fan-out to {} reading sockets: {sent} notifications created, {delivered} delivered; POST to push p50 {:.1} p90 {:.1} p99 {:.1} max {:.1} ms",
            readers, f[0], f[1], f[2], f[3]
        );
        if args.slow > 0 {
            println!(
                "never-reading sockets: {}, sent {slow_sent} notifications; {}",
                args.slow,
                match slow_gone_after {
                    Some(s) => format!("all gone from the server {s:.1} s into the load"),
                    None => "NOT all gone from the server by the end of the load".into(),
                }
            );
        }
        println!("stalls: {stalls} (drain {drain_secs:.2} s)");
    }
    println!(
        "server RSS: {:.1} MiB before the sockets, {:.1} MiB idle with {sockets} sockets, {:.1} MiB peak under load ({:.1} anonymous, {:.1} file-backed), VmHWM {:.1} MiB",
        mib(baseline_kib),
        mib(idle_max),
        mib(load_peak.rss_kib),
        mib(load_peak.anon_kib),
        mib(load_peak.file_kib),
        mib(hwm)
    );
    println!("server hub after: {stats_after}");
    drop(slow_sockets);
    shared.stop.store(true, Ordering::SeqCst);
    if args.wrap.is_some() {
        // SIGTERM to the server itself: it exits cleanly and the wrapper (a profiler)
        // finishes its output; killing the wrapper would leave the server running.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    } else {
        let _ = server.start_kill();
    }
    let _ = server.wait().await;
    rss.abort();
    if let Some(path) = &args.rss_csv {
        write_csv(path)?;
    }
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    println!(
        "server log: {} slow queries, {} slow requests, {} warnings, {} errors",
        count("slow query"),
        count("slow request"),
        count(" WARN "),
        count(" ERROR ")
    );
    if args.keep {
        println!("kept {}", dir.keep().display());
    }
    Ok(())
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; fails when that is below `needed`.
fn raise_nofile(needed: u64) -> Result<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    let hard = limit.maximum.unwrap_or(u64::MAX);
    if limit.current.is_some_and(|soft| soft < hard) {
        limit.current = Some(hard);
        setrlimit(Resource::Nofile, limit).context("raising RLIMIT_NOFILE")?;
    }
    if hard < needed {
        bail!(
            "this run needs about {needed} file descriptors and the hard RLIMIT_NOFILE is {hard}\n\
             raise it (ulimit -Hn as root, LimitNOFILE= in a unit) or lower --ws/--conns"
        );
    }
    Ok(hard)
}

/// One admin and `n` clients, all with the same password, written through `elior::db`.
fn seed(path: &Path, n: usize) -> Result<(Seeded, Vec<Seeded>)> {
    let db = elior::db::Db::open(path)?;
    let hash = elior::auth::password::hash(PASSWORD);
    let keys = TokenKeys::new(SECRET.as_bytes(), Duration::from_secs(600 * 60));
    let rows = db.blocking(|c| {
        let tx = c.transaction()?;
        let mut rows = Vec::with_capacity(n + 1);
        for i in 0..=n {
            let (name, role) = match i {
                0 => ("load-admin".to_string(), Role::Admin),
                i => (format!("load{i}"), Role::Client),
            };
            let user = users::insert(
                &tx,
                &NewUser {
                    username: &name,
                    email: &format!("{name}@example.com"),
                    full_name: &name,
                    password_hash: &hash,
                    role,
                    trainer_id: None,
                },
            )?;
            rows.push(user);
        }
        tx.commit()?;
        Ok(rows)
    })?;
    db.checkpoint()?;
    let mut seeded = rows.into_iter().map(|u| Seeded {
        token: keys.issue(u.id, u.role, u.token_epoch),
        id: u.id,
        username: u.username,
    });
    let admin = seeded.next().expect("the admin");
    Ok((admin, seeded.collect()))
}

async fn wait_healthy(addr: SocketAddr, server: &mut tokio::process::Child) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut s) = http_connect(addr).await {
            if let Ok((200, _, _)) = request(&mut s, "GET", "/health", None, None).await {
                return Ok(());
            }
        }
        if let Ok(Some(status)) = server.try_wait() {
            bail!("the server exited: {status}");
        }
        if Instant::now() > deadline {
            bail!("the server did not answer /health within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The first process named `elior` at or under `pid`.
fn find_elior(pid: u32) -> Option<u32> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    if comm.trim() == "elior" {
        return Some(pid);
    }
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    for task in tasks.flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            if let Some(found) = find_elior(child) {
                return Some(found);
            }
        }
    }
    None
}

fn set_phase(shared: &Shared, phase: &'static str) {
    *shared.phase.lock().unwrap() = phase;
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    kib_in(&status, field)
}

/// A `Name:   123 kB` line's figure in the text of /proc/PID/status.
fn kib_in(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// One look at the server's resident memory: the total, and how much of it is anonymous
/// (heap, stacks: what the server allocated) and file-backed (the binary's and glibc's
/// pages, which the kernel can drop and read again).
#[derive(Clone, Copy, Default)]
struct RssSample {
    ms: u64,
    rss_kib: u64,
    anon_kib: u64,
    file_kib: u64,
    phase: &'static str,
}

static RSS_SAMPLES: Mutex<Vec<RssSample>> = Mutex::new(Vec::new());

/// Samples the server's RSS every 100 ms.
async fn sample_rss(pid: u32, shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        // One read of /proc/PID/status, so the three figures are of the same moment.
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            return;
        };
        let field = |name: &str| kib_in(&status, name).unwrap_or(0);
        let sample = RssSample {
            ms: shared.base.elapsed().as_millis() as u64,
            rss_kib: field("VmRSS:"),
            anon_kib: field("RssAnon:"),
            file_kib: field("RssFile:"),
            phase: *shared.phase.lock().unwrap(),
        };
        RSS_SAMPLES.lock().unwrap().push(sample);
    }
}

/// The sample of `phase` with the highest RSS.
fn rss_peak_of(phase: &str) -> RssSample {
    RSS_SAMPLES
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.phase == phase)
        .max_by_key(|s| s.rss_kib)
        .copied()
        .unwrap_or_default()
}

fn write_csv(path: &Path) -> Result<()> {
    let mut text = String::from("ms,rss_kib,anon_kib,file_kib,phase\n");
    for s in RSS_SAMPLES.lock().unwrap().iter() {
        text.push_str(&format!(
            "{},{},{},{},{}\n",
            s.ms, s.rss_kib, s.anon_kib, s.file_kib, s.phase
        ));
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

type Socket = tokio_tungstenite::WebSocketStream<TcpStream>;

fn ws_config() -> WebSocketConfig {
    // The tool's own sockets small too: 10,000 of tungstenite's 128 KiB read buffers
    // would be 1.3 GB.
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
}

async fn open_socket(addr: SocketAddr, user: &Seeded) -> Result<Socket> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let url = format!("ws://{addr}/api/ws/ws/{}?token={}", user.id, user.token);
    let (mut socket, _) =
        tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config())).await?;
    match socket.next().await {
        Some(Ok(Message::Text(t))) if t.contains("connection_established") => Ok(socket),
        other => bail!("no welcome: {other:?}"),
    }
}

/// Opens the reading sockets (each served by a task that records fan-out latencies) and
/// the never-reading ones (returned, so they stay open and unread).
async fn connect_all(
    args: &Args,
    addr: SocketAddr,
    seeded: &[Seeded],
    shared: &Arc<Shared>,
) -> (usize, Vec<Socket>, usize) {
    let permits = Arc::new(tokio::sync::Semaphore::new(args.connect_parallel.max(1)));
    let mut handshakes = Vec::new();
    for (i, user) in seeded[..args.ws + args.slow].iter().enumerate() {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("open semaphore");
        let user = user.clone();
        handshakes.push(tokio::spawn(async move {
            let socket = open_socket(addr, &user).await;
            drop(permit);
            (i, socket)
        }));
    }
    let mut readers = 0;
    let mut slow = Vec::new();
    let mut failed = 0;
    let mut first_error = None;
    for h in handshakes {
        match h.await {
            Ok((i, Ok(socket))) if i < args.ws => {
                readers += 1;
                tokio::spawn(read_pushes(socket, shared.clone()));
            }
            Ok((_, Ok(socket))) => slow.push(socket),
            Ok((_, Err(e))) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    if let Some(e) = first_error {
        println!("websocket failures: {failed}, the first: {e}");
    }
    (readers, slow, failed)
}

/// Reads a socket's pushes (pings are answered by tungstenite while reading) and records
/// each notification's latency from the time in its title.
async fn read_pushes(mut socket: Socket, shared: Arc<Shared>) {
    while let Some(Ok(message)) = socket.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let Some(rest) = text.split("\"title\":\"fanout ").nth(1) else {
            continue;
        };
        let Some(micros) = rest.split('"').next().and_then(|m| m.parse::<u64>().ok()) else {
            continue;
        };
        let now = shared.base.elapsed().as_micros() as u64;
        shared.delivered.fetch_add(1, Ordering::Relaxed);
        shared
            .fanout
            .lock()
            .unwrap()
            .push(Duration::from_micros(now.saturating_sub(micros)));
    }
}

/// Polls the hub's statistics until the reading sockets are all that is left; returns
/// the seconds since `since` that took.
async fn watch_hub(addr: SocketAddr, token: String, readers: usize, since: Instant) -> Option<f64> {
    let mut conn = http_connect(addr).await.ok()?;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if conn.is_closed() {
            conn = http_connect(addr).await.ok()?;
        }
        if let Ok((200, _, body)) =
            request(&mut conn, "GET", "/api/ws/ws/stats", Some(&token), None).await
        {
            let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
            if v["total_connections"].as_u64() <= Some(readers as u64) {
                return Some(since.elapsed().as_secs_f64());
            }
        }
    }
}

async fn ws_stats(addr: SocketAddr, token: &str) -> String {
    let Ok(mut conn) = http_connect(addr).await else {
        return "unavailable".into();
    };
    match request(&mut conn, "GET", "/api/ws/ws/stats", Some(token), None).await {
        Ok((200, _, body)) => String::from_utf8_lossy(&body).into_owned(),
        Ok((status, _, _)) => format!("status {status}"),
        Err(e) => e.to_string(),
    }
}

async fn http_connect(addr: SocketAddr) -> Result<SendRequest<Body>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One request on a keep-alive connection: status, server time (X-Process-Time) and body.
async fn request(
    conn: &mut SendRequest<Body>,
    method: &str,
    path: &str,
    token: Option<&str>,
    json: Option<String>,
) -> Result<(u16, Option<Duration>, bytes::Bytes)> {
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = match json {
        Some(body) => req
            .header("content-type", "application/json")
            .body(Body::from(body))?,
        None => req.body(Body::empty())?,
    };
    conn.ready().await?;
    let response = conn.send_request(req).await?;
    let status = response.status().as_u16();
    let server = response
        .headers()
        .get("x-process-time")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<f64>().ok())
        .map(Duration::from_secs_f64);
    let body = axum::body::to_bytes(Body::new(response.into_body()), usize::MAX).await?;
    Ok((status, server, body))
}

/// A virtual user: one keep-alive connection, requests back to back until the stop.
#[allow(clippy::too_many_arguments)]
async fn vu(
    addr: SocketAddr,
    me: Seeded,
    admin_token: String,
    recipients: Arc<Vec<i64>>,
    slow: Arc<Vec<i64>>,
    slow_share: f64,
    mix: Arc<Mix>,
    shared: Arc<Shared>,
) -> BTreeMap<Kind, KindStats> {
    let mut stats: BTreeMap<Kind, KindStats> = BTreeMap::new();
    let mut rng = rand::rngs::StdRng::from_entropy();
    let mut conn: Option<SendRequest<Body>> = None;
    while !shared.stop.load(Ordering::Relaxed) {
        let kind = mix.pick(&mut rng);
        let (method, path, token, body) = match kind {
            Kind::Me => (
                "GET",
                "/api/auth/me".to_string(),
                Some(me.token.as_str()),
                None,
            ),
            Kind::List => (
                "GET",
                "/api/notifications?limit=20".into(),
                Some(me.token.as_str()),
                None,
            ),
            Kind::Weights => (
                "GET",
                "/api/progress/weight?limit=20".into(),
                Some(me.token.as_str()),
                None,
            ),
            Kind::Weigh => {
                let day = rng.gen_range(1..=28);
                let body = format!(
                    r#"{{"date":"2026-02-{day:02}","weight":{:.1}}}"#,
                    rng.gen_range(50.0..110.0)
                );
                (
                    "POST",
                    "/api/progress/weight".into(),
                    Some(me.token.as_str()),
                    Some(body),
                )
            }
            Kind::Notify => {
                let to_slow = !slow.is_empty() && rng.gen_bool(slow_share.clamp(0.0, 1.0));
                let pool = if to_slow || recipients.is_empty() {
                    &slow
                } else {
                    &recipients
                };
                let recipient = if pool.is_empty() {
                    me.id
                } else {
                    pool[rng.gen_range(0..pool.len())]
                };
                let body = format!(
                    r#"{{"recipient_id":{recipient},"title":"fanout {}","message":"load"}}"#,
                    shared.base.elapsed().as_micros()
                );
                if to_slow {
                    shared.fanout_slow_sent.fetch_add(1, Ordering::Relaxed);
                } else {
                    shared.fanout_sent.fetch_add(1, Ordering::Relaxed);
                }
                (
                    "POST",
                    "/api/notifications".into(),
                    Some(admin_token.as_str()),
                    Some(body),
                )
            }
            Kind::Login => {
                let body = format!(
                    r#"{{"username":"{}","password":"{PASSWORD}"}}"#,
                    me.username
                );
                ("POST", "/api/auth/login".into(), None, Some(body))
            }
            Kind::Health => ("GET", "/health".into(), None, None),
        };
        shared.in_flight.fetch_add(1, Ordering::SeqCst);
        let started = Instant::now();
        let outcome = async {
            let c = match &mut conn {
                Some(c) if !c.is_closed() => c,
                _ => conn.insert(http_connect(addr).await?),
            };
            request(c, method, &path, token, body).await
        }
        .await;
        let elapsed = started.elapsed();
        shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        let s = stats.entry(kind).or_default();
        match outcome {
            Ok((status, server, _)) => {
                *s.statuses.entry(status).or_default() += 1;
                if (200..300).contains(&status) {
                    s.ok += 1;
                    s.client.push(elapsed);
                    if let Some(d) = server {
                        s.server.push(d);
                    }
                } else if status == 503 {
                    // Refused (MAX_CONNECTIONS, a full queue): back off as Retry-After asks.
                    conn = None;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            Err(_) => {
                s.failures += 1;
                conn = None;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    stats
}
