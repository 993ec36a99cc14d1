//! Benchmark of `elior backup` against the standard tools on the same data (issue 6).
//!
//! Run on demand, never in the test suite (it writes about 10 GiB and keeps both cores
//! busy for a few minutes):
//!
//!     cargo build --release && cargo run --release --example backup_bench -- /var/tmp/elior-bench
//!
//! Optional sizes: `--db-mib 1024 --uploads-mib 2048 --files 5000`; `--only
//! db|db-quiet|db-writes|uploads`; `--runs 5` (database timings); `--format
//! archive|repository` (BACKUP_FORMAT of the benchmarked stack); `--before PATH`, an
//! earlier `elior` binary whose backups run in the writes case too, alternating with this
//! one's, for a before/after in the same run. Generated data is kept
//! in the folder and reused by later runs. Needs the `sqlite3`, `tar` and `gzip` commands.
//!
//! 1. Database, 1 GiB: `sqlite3 .backup` vs `elior backup` on a quiet database (warm
//!    cache); then `sqlite3 VACUUM INTO` vs `elior backup` while a writer inserts 500 rows/s,
//!    reporting the writer's longest stall during and after each backup and the peak WAL
//!    size. The writer's commit latency (p50, p99, max) during each backup is set against
//!    the same writer over the same length of time with no backup, in the same run (issue
//!    17's writer stall: the worst commit must stay under 100 ms). elior's times include its quick_check and sha256. Each case runs `--runs`
//!    times, alternating the two tools so that both see the same load, and reports medians
//!    with the range and the load average (the machine is shared, so single runs mislead).
//! 2. Uploads, 2 GiB in ~5,000 files, 90% photos (incompressible, JPEG magic):
//!    `tar czf` vs `elior backup`, then `gzip -t` and `tar tzf` on elior's archive.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, RngCore, SeedableRng};
use rusqlite::Connection;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = PathBuf::from(
        args.first()
            .map(String::as_str)
            .unwrap_or("/var/tmp/elior-bench"),
    );
    let opt = |name: &str, default: u64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map_or(default, |v| v.parse().expect("a number"))
    };
    let db_mib = opt("--db-mib", 1024);
    let runs = opt("--runs", 5).max(1) as usize;
    let uploads_mib = opt("--uploads-mib", 2048);
    let files = opt("--files", 5000);
    let format = args
        .iter()
        .position(|a| a == "--format")
        .and_then(|i| args.get(i + 1))
        .map_or("archive", String::as_str)
        .to_string();
    let elior = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("elior");
    assert!(
        elior.exists(),
        "build the binary first: cargo build --release"
    );
    fs::create_dir_all(&root).unwrap();

    let before = args
        .iter()
        .position(|a| a == "--before")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from);
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let cases = DbCases {
        quiet: matches!(only.as_deref(), None | Some("db") | Some("db-quiet")),
        writes: matches!(only.as_deref(), None | Some("db") | Some("db-writes")),
    };
    if cases.quiet || cases.writes {
        let elior = Binaries {
            now: elior.clone(),
            before,
        };
        database_benchmark(&root.join("db-stack"), &elior, db_mib, runs, cases, &format);
    }
    if only.is_none() || only.as_deref() == Some("uploads") {
        uploads_benchmark(&root.join("uploads-stack"), &elior, uploads_mib, files);
    }
}

/// The elior binary benchmarked and, optionally, an earlier one to set it against.
struct Binaries {
    now: PathBuf,
    before: Option<PathBuf>,
}

/// Which database cases to run.
#[derive(Clone, Copy)]
struct DbCases {
    quiet: bool,
    writes: bool,
}

fn stack(dir: &Path, backups: &Path, format: &str) {
    fs::create_dir_all(dir.join("data")).unwrap();
    fs::write(
        dir.join(".env.production"),
        format!("BACKUP_DIR={}\nBACKUP_FORMAT={format}\n", backups.display()),
    )
    .unwrap();
}

/// The median of `samples` and their range, as text: `1.23s (1.20-1.31)`.
fn summary(samples: &[Duration]) -> (Duration, String) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    let text = format!(
        "{:.2}s ({:.2}-{:.2})",
        median.as_secs_f64(),
        sorted[0].as_secs_f64(),
        sorted[sorted.len() - 1].as_secs_f64()
    );
    (median, text)
}

/// Prints one case: each tool's median and range, elior's speed as a multiple of the
/// reference's, and the load average before and now.
fn compare(
    case: &str,
    (reference, reference_runs): (&str, &[Duration]),
    (ours, our_runs): (&str, &[Duration]),
    load_before: &str,
) {
    let (reference_median, reference_text) = summary(reference_runs);
    let (our_median, our_text) = summary(our_runs);
    println!(
        "{case}, medians of {}: {reference} {reference_text}, {ours} {our_text}: elior is {:.2}x the speed; load average {load_before} before, {} after",
        our_runs.len(),
        reference_median.as_secs_f64() / our_median.as_secs_f64(),
        load_average()
    );
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_string())
}

fn timed(what: &str, mut command: Command) -> Duration {
    let started = Instant::now();
    let out = command.output().unwrap();
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("  {what}: {:.2}s", took.as_secs_f64());
    took
}

fn elior_backup(elior: &Path, dir: &Path) -> Command {
    let mut c = Command::new(elior);
    c.args(["backup", "--dir"]).arg(dir);
    c
}

fn sqlite3(db: &Path, sql: &str) -> Command {
    let mut c = Command::new("sqlite3");
    c.arg(db).arg(sql);
    c
}

fn warm(path: &Path) {
    let _ = fs::read(path).map(|b| b.len());
}

fn database_benchmark(
    dir: &Path,
    elior: &Binaries,
    mib: u64,
    runs: usize,
    cases: DbCases,
    format: &str,
) {
    let backups = dir.join("backups");
    stack(dir, &backups, format);
    let db = dir.join("data/elior_fitness.db");
    if !db.exists() {
        eprintln!("generating a {mib} MiB database...");
        let mut conn = Connection::open(&db).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch(
            "CREATE TABLE events (id INTEGER PRIMARY KEY, user_id INTEGER, kind TEXT, body TEXT);
             CREATE INDEX events_user ON events(user_id);",
        )
        .unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        let rows = mib * 1024; // ~1 KiB a row
        let tx = conn.transaction().unwrap();
        {
            let mut insert = tx
                .prepare("INSERT INTO events (user_id, kind, body) VALUES (?1, ?2, ?3)")
                .unwrap();
            for _ in 0..rows {
                let body: String = (0..900)
                    .map(|_| char::from(b'a' + rng.gen_range(0..26)))
                    .collect();
                insert
                    .execute(rusqlite::params![rng.gen_range(0..5000), "workout", body])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
    }
    let size = fs::metadata(&db).unwrap().len();
    eprintln!("database: {:.0} MiB", size as f64 / (1 << 20) as f64);

    if cases.quiet {
        quiet_benchmark(dir, &elior.now, &db, runs);
    }
    if cases.writes {
        writes_benchmark(dir, elior, &db, runs);
    }
}

fn quiet_benchmark(dir: &Path, elior: &Path, db: &Path, runs: usize) {
    let backups = dir.join("backups");
    let out = dir.join("out.db");
    eprintln!("quiet database ({runs} runs each, alternating, warm cache):");
    let load_before = load_average();
    let (mut cli, mut ours) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let _ = fs::remove_file(&out);
        warm(db);
        cli.push(timed(
            "sqlite3 .backup",
            sqlite3(db, &format!(".backup '{}'", out.display())),
        ));
        warm(db);
        ours.push(timed("elior backup", elior_backup(elior, dir)));
        let _ = fs::remove_dir_all(&backups);
    }
    let _ = fs::remove_file(&out);
    compare(
        "db quiet",
        ("sqlite3 .backup", &cli),
        ("elior backup (incl. quick_check + sha256)", &ours),
        &load_before,
    );
}

fn writes_benchmark(dir: &Path, elior: &Binaries, db: &Path, runs: usize) {
    let backups = dir.join("backups");
    let out = dir.join("out.db");
    eprintln!("under 500 writes/s ({runs} runs each, alternating):");
    let load_before = load_average();
    let (mut vacuum, mut ours) = (Vec::new(), Vec::new());
    let (mut vacuum_stalls, mut our_stalls, mut idle_stalls) = (Vec::new(), Vec::new(), Vec::new());
    let mut before_stalls = Vec::new();
    for _ in 0..runs {
        let _ = fs::remove_file(&out);
        let (took, stalls) = under_writes(db, || {
            timed(
                "sqlite3 VACUUM INTO",
                sqlite3(db, &format!("VACUUM INTO '{}'", out.display())),
            )
        });
        vacuum.push(took);
        vacuum_stalls.push(stalls);
        let _ = fs::remove_file(&out);
        if let Some(before) = &elior.before {
            let (_, stalls) = under_writes(db, || {
                timed("elior backup (before)", elior_backup(before, dir))
            });
            before_stalls.push(stalls);
            let _ = fs::remove_dir_all(&backups);
        }
        let (took, stalls) =
            under_writes(db, || timed("elior backup", elior_backup(&elior.now, dir)));
        ours.push(took);
        our_stalls.push(stalls);
        let _ = fs::remove_dir_all(&backups);
        // The reference: the same writer, as long as elior's backup took, with no backup.
        let (_, stalls) = under_writes(db, || {
            eprintln!("  no backup: {:.2}s", took.as_secs_f64());
            std::thread::sleep(took);
            took
        });
        idle_stalls.push(stalls);
    }
    compare(
        "db under 500 writes/s",
        ("sqlite3 VACUUM INTO", &vacuum),
        ("elior backup", &ours),
        &load_before,
    );
    println!("  VACUUM INTO: {}", Stalls::worst(&vacuum_stalls));
    if !before_stalls.is_empty() {
        println!("  elior before: {}", Stalls::worst(&before_stalls));
    }
    println!("  elior:       {}", Stalls::worst(&our_stalls));
    let (idle, with_vacuum, with_elior) = (
        Latency::of(&idle_stalls),
        Latency::of(&vacuum_stalls),
        Latency::of(&our_stalls),
    );
    println!("  commit latency, all runs pooled:");
    println!("    no backup:   {idle}");
    println!(
        "    VACUUM INTO: {with_vacuum} ({})",
        with_vacuum.against(&idle)
    );
    if !before_stalls.is_empty() {
        let with_before = Latency::of(&before_stalls);
        println!(
            "    elior before: {with_before} ({})",
            with_before.against(&idle)
        );
    }
    println!(
        "    elior:       {with_elior} ({})",
        with_elior.against(&idle)
    );
}

/// Commit latencies over a span: p50, p99, max and the count.
struct Latency {
    p50: Duration,
    p99: Duration,
    max: Duration,
    commits: usize,
}

impl Latency {
    /// The latencies of every run's span, pooled.
    fn of(runs: &[Stalls]) -> Latency {
        let mut all: Vec<Duration> = runs
            .iter()
            .flat_map(|s| s.commits.iter().copied())
            .collect();
        all.sort();
        let at = |q: f64| {
            all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
        Latency {
            p50: at(0.50),
            p99: at(0.99),
            max: all.last().copied().unwrap_or_default(),
            commits: all.len(),
        }
    }

    /// Each figure as a multiple of the reference's.
    fn against(&self, reference: &Latency) -> String {
        let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
        format!(
            "{:.1}x / {:.1}x / {:.1}x the reference",
            ratio(self.p50, reference.p50),
            ratio(self.p99, reference.p99),
            ratio(self.max, reference.max)
        )
    }
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        write!(
            f,
            "p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms ({} commits)",
            ms(self.p50),
            ms(self.p99),
            ms(self.max),
            self.commits
        )
    }
}

/// What the writer saw during one backup: its longest stall during the backup and in the
/// 5 s after, the peak WAL size, and every commit's latency during the backup.
struct Stalls {
    during: Duration,
    after: Duration,
    peak_wal: u64,
    commits: Vec<Duration>,
}

impl Stalls {
    /// The worst of each over several runs, as text.
    fn worst(runs: &[Stalls]) -> String {
        let during = runs.iter().map(|s| s.during).max().unwrap_or_default();
        let after = runs.iter().map(|s| s.after).max().unwrap_or_default();
        let peak = runs.iter().map(|s| s.peak_wal).max().unwrap_or_default();
        format!(
            "longest writer stall {:.0} ms during, {:.0} ms in the 5 s after; peak WAL {:.1} MiB (worst of {} runs)",
            during.as_secs_f64() * 1000.0,
            after.as_secs_f64() * 1000.0,
            peak as f64 / (1 << 20) as f64,
            runs.len()
        )
    }
}

/// Runs `backup` while a writer inserts 500 rows/s; returns its duration and the writer's
/// longest stall during it and in the 5 s after, with the peak WAL size.
fn under_writes(db: &Path, backup: impl FnOnce() -> Duration) -> (Duration, Stalls) {
    let stop = Arc::new(AtomicBool::new(false));
    let latencies: Arc<Mutex<Vec<(Instant, Duration)>>> = Arc::default();
    let peak_wal = Arc::new(Mutex::new(0u64));
    let writer = {
        let (stop, latencies, peak_wal, db) = (
            stop.clone(),
            latencies.clone(),
            peak_wal.clone(),
            db.to_path_buf(),
        );
        std::thread::spawn(move || {
            let conn = Connection::open(&db).unwrap();
            conn.busy_timeout(Duration::from_secs(30)).unwrap();
            conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
            let wal = PathBuf::from(format!("{}-wal", db.display()));
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                conn.execute(
                    "INSERT INTO events (user_id, kind, body) VALUES (1, 'bench', 'during backup')",
                    [],
                )
                .unwrap();
                latencies.lock().unwrap().push((started, started.elapsed()));
                if let Ok(meta) = fs::metadata(&wal) {
                    let mut peak = peak_wal.lock().unwrap();
                    *peak = (*peak).max(meta.len());
                }
                next += Duration::from_millis(2);
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    let began = Instant::now();
    let took = backup();
    let ended = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let latencies = latencies.lock().unwrap();
    let max_in = |from: Instant, to: Instant| {
        latencies
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .map(|(_, l)| *l)
            .max()
            .unwrap_or_default()
    };
    let stalls = Stalls {
        during: max_in(began, ended),
        after: max_in(ended, ended + Duration::from_secs(5)),
        peak_wal: *peak_wal.lock().unwrap(),
        commits: latencies
            .iter()
            .filter(|(at, _)| *at >= began && *at < ended)
            .map(|(_, l)| *l)
            .collect(),
    };
    let worst_at = latencies
        .iter()
        .filter(|(at, l)| *at >= began && *at < ended && *l == stalls.during)
        .map(|(at, _)| at.duration_since(began))
        .next()
        .unwrap_or_default();
    eprintln!(
        "    {} (the longest began {:.2}s into the backup)",
        Stalls::worst(std::slice::from_ref(&stalls)),
        worst_at.as_secs_f64()
    );
    (took, stalls)
}

fn uploads_benchmark(dir: &Path, elior: &Path, mib: u64, files: u64) {
    let backups = dir.join("backups");
    stack(dir, &backups, "archive");
    let uploads = dir.join("uploads");
    if !uploads.exists() {
        eprintln!("generating {mib} MiB of uploads in {files} files...");
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let photos = files * 9 / 10;
        let texts = files - photos;
        let text_size = 20 * 1024;
        let photo_size = (mib * (1 << 20) - texts * text_size) / photos;
        let mut buf = vec![0u8; photo_size as usize * 2];
        for i in 0..files {
            let sub = uploads.join(format!("user_{}/progress", i % 97));
            fs::create_dir_all(&sub).unwrap();
            if i < photos {
                // Sizes vary ±50% around the mean; the content is incompressible.
                let size = rng.gen_range(photo_size / 2..photo_size * 3 / 2) as usize;
                rng.fill_bytes(&mut buf[..size]);
                buf[..4].copy_from_slice(&[0xFF, 0xD8, 0xFF, 0xE0]);
                fs::write(sub.join(format!("photo_{i}.jpg")), &buf[..size]).unwrap();
            } else {
                let line = format!(
                    "{{\"user\": {i}, \"exercise\": \"squat\", \"sets\": 5, \"reps\": 5}}\n"
                );
                fs::write(
                    sub.join(format!("log_{i}.json")),
                    line.repeat(text_size as usize / line.len()),
                )
                .unwrap();
            }
        }
        // elior backup needs a database; a small one keeps the timing about uploads.
        let conn = Connection::open(dir.join("data/elior_fitness.db")).unwrap();
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
    }
    let out = dir.join("out.tar.gz");
    eprintln!("uploads:");
    let mut tar = Command::new("tar");
    tar.arg("czf").arg(&out).arg("-C").arg(dir).arg("uploads");
    let reference = timed("tar czf", tar);
    let tar_size = fs::metadata(&out).unwrap().len();
    let _ = fs::remove_file(&out);
    let ours = timed("elior backup", elior_backup(elior, dir));
    let archive = fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .unwrap();
    let our_size = fs::metadata(&archive).unwrap().len();
    let gzip_ok = Command::new("gzip")
        .arg("-t")
        .arg(&archive)
        .status()
        .unwrap()
        .success();
    let listed = Command::new("tar")
        .arg("tzf")
        .arg(&archive)
        .output()
        .unwrap();
    let entries = String::from_utf8_lossy(&listed.stdout).lines().count();
    let _ = fs::remove_dir_all(&backups);
    println!(
        "uploads: tar czf {:.1}s ({:.0} MiB), elior backup {:.1}s ({:.0} MiB): elior is {:.1}x the speed; gzip -t {}, GNU tar lists {entries} entries",
        reference.as_secs_f64(),
        tar_size as f64 / (1 << 20) as f64,
        ours.as_secs_f64(),
        our_size as f64 / (1 << 20) as f64,
        reference.as_secs_f64() / ours.as_secs_f64(),
        if gzip_ok { "ok" } else { "FAILED" },
    );
}
