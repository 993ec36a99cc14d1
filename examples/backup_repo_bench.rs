//! Benchmark of the deduplicated backup repository (`BACKUP_FORMAT=repository`, issue 17).
//!
//! Run on demand, never in the test suite (at full size it writes about 12 GiB):
//!
//!     cargo build --release
//!     nice cargo run --release --example backup_repo_bench -- /var/tmp/elior-repo-bench
//!
//! Sizes: `--db-mib 1024 --uploads-mib 2048 --files 5000 --days 30` (the issue's), and
//! `--runs 3` for the speed case. Needs `tar`, `zstd` and `sync`. The folder is wiped and
//! the data generated anew on each run.
//!
//! 1. Speed: the first backup of the uploads (90% photos, incompressible, JPEG magic; 10%
//!    JSON logs) into a new repository, against `tar -cf - uploads | zstd -T0` on the same
//!    data in the same run, warm cache, alternating, medians. The reference is timed as it
//!    is usually run (no fsync) and with an fsync of its output, as elior's packs are.
//! 2. Deduplication: a database and uploads, backed up, then each day 1% of the database
//!    pages (random rows rewritten) and 1% of the files (rewritten, same size) change and
//!    a backup runs. Reports the repository's size against the live data's (the target is
//!    at most 1.5x), and an unchanged daily backup's time split into the database snapshot
//!    (copy and quick_check, as an archive backup takes it) and the rest (target < 1 s).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rusqlite::Connection;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = PathBuf::from(
        args.first()
            .filter(|a| !a.starts_with("--"))
            .map(String::as_str)
            .unwrap_or("/var/tmp/elior-repo-bench"),
    );
    let opt = |name: &str, default: u64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map_or(default, |v| v.parse().expect("a number"))
    };
    let db_mib = opt("--db-mib", 1024);
    let uploads_mib = opt("--uploads-mib", 2048);
    let files = opt("--files", 5000);
    let days = opt("--days", 30);
    let runs = opt("--runs", 3).max(1) as usize;
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
    let _ = fs::remove_dir_all(&root);
    let data = root.join("dedup");
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    eprintln!(
        "generating a {db_mib} MiB database and {uploads_mib} MiB of uploads in {files} files..."
    );
    stack(&data, "uploads");
    generate_database(&data.join("data/elior_fitness.db"), db_mib, &mut rng);
    let upload_files = generate_uploads(&data.join("uploads"), uploads_mib, files, &mut rng);
    println!(
        "data: database {} MiB, uploads {} MiB in {files} files; {} CPUs; load average {}",
        fs::metadata(data.join("data/elior_fitness.db"))
            .unwrap()
            .len()
            >> 20,
        uploads_mib,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    speed(&root, &elior, runs);
    dedup(&data, &elior, &upload_files, days, &mut rng);
}

/// A stack folder backing up into its own repository; `uploads` is its UPLOAD_DIR.
fn stack(dir: &Path, uploads: &str) {
    fs::create_dir_all(dir.join("data")).unwrap();
    fs::write(
        dir.join(".env.production"),
        format!(
            "BACKUP_FORMAT=repository\nBACKUP_DIR={}\nUPLOAD_DIR={uploads}\n",
            dir.join("backups").display()
        ),
    )
    .unwrap();
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// A row of about 200 bytes: some text that compresses, some that does not.
fn row(rng: &mut impl Rng) -> String {
    let mut noise = [0u8; 32];
    rng.fill_bytes(&mut noise);
    format!(
        "user {} session {}: squat 5x5 @ {}kg, bench 3x8, rows 4x10; notes {}",
        rng.gen_range(1..5000),
        rng.gen_range(1..100_000),
        rng.gen_range(40..200),
        hex_of(&noise)
    )
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn generate_database(path: &Path, mib: u64, rng: &mut impl Rng) {
    let mut conn = Connection::open(path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "OFF").unwrap();
    conn.execute_batch("CREATE TABLE items (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        .unwrap();
    // Rows until the file reaches the size asked for (checked every 100,000 rows).
    loop {
        let size: i64 = conn
            .query_row(
                "SELECT page_count * page_size FROM pragma_page_count, pragma_page_size",
                [],
                |r| r.get(0),
            )
            .unwrap();
        if size as u64 >= mib << 20 {
            break;
        }
        let tx = conn.transaction().unwrap();
        {
            let mut insert = tx.prepare("INSERT INTO items (body) VALUES (?1)").unwrap();
            for _ in 0..100_000 {
                insert.execute([row(rng)]).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
}

/// Writes the uploads; returns each file's path.
fn generate_uploads(dir: &Path, mib: u64, files: u64, rng: &mut impl Rng) -> Vec<PathBuf> {
    let photos = files * 9 / 10;
    let texts = files - photos;
    let text_size = 20 * 1024;
    let photo_size = (mib * (1 << 20) - texts * text_size) / photos.max(1);
    let mut paths = Vec::new();
    for i in 0..files {
        let sub = dir.join(format!("user_{}/progress", i % 97));
        fs::create_dir_all(&sub).unwrap();
        let path = if i < photos {
            sub.join(format!("photo_{i}.jpg"))
        } else {
            sub.join(format!("log_{i}.json"))
        };
        let size = if i < photos {
            rng.gen_range(photo_size / 2..photo_size * 3 / 2)
        } else {
            text_size
        };
        fs::write(&path, content(&path, size as usize, rng)).unwrap();
        paths.push(path);
    }
    paths
}

/// New content for an upload: random bytes with JPEG magic, or JSON lines.
fn content(path: &Path, size: usize, rng: &mut impl Rng) -> Vec<u8> {
    if path.extension().is_some_and(|e| e == "jpg") {
        let mut buf = vec![0u8; size];
        rng.fill_bytes(&mut buf);
        buf[..4].copy_from_slice(&[0xFF, 0xD8, 0xFF, 0xE0]);
        buf
    } else {
        let mut text = Vec::with_capacity(size + 200);
        while text.len() < size {
            text.extend_from_slice(
                format!(
                    "{{\"user\": {}, \"exercise\": \"squat\", \"sets\": 5, \"reps\": {}}}\n",
                    rng.gen_range(1..5000),
                    rng.gen_range(1..12)
                )
                .as_bytes(),
            );
        }
        text.truncate(size);
        text
    }
}

/// Reads every file under `dir` once, so each timed run starts from a warm cache.
fn warm(dir: &Path) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            warm(&path);
        } else {
            let _ = fs::read(&path);
        }
    }
}

fn timed(command: Command) -> (Duration, String) {
    let (took, _, stderr) = timed_cpu(command);
    (took, stderr)
}

/// CPU seconds (user and system) of the children this process waited for, from
/// /proc/self/stat (clock ticks of 1/100 s): the cores' work, whatever else loads them.
fn children_cpu() -> f64 {
    let stat = fs::read_to_string("/proc/self/stat").unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 16 and 17 of the file (cutime, cstime) are 13 and 14 after the name.
    let ticks: f64 = fields[13].parse::<f64>().unwrap() + fields[14].parse::<f64>().unwrap();
    ticks / 100.0
}

/// Runs `command`; returns its wall time, its CPU time and its stderr.
fn timed_cpu(mut command: Command) -> (Duration, f64, String) {
    let cpu_before = children_cpu();
    let started = Instant::now();
    let out = command.output().unwrap();
    let took = started.elapsed();
    let cpu = children_cpu() - cpu_before;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{command:?} failed: {stderr}");
    (took, cpu, stderr)
}

fn elior_backup(elior: &Path, dir: &Path) -> Command {
    let mut c = Command::new(elior);
    c.arg("backup").arg("--dir").arg(dir);
    c
}

/// The seconds elior printed after `marker` on the phase line that has it (`... in 1.23s`).
fn phase_seconds(stderr: &str, marker: &str, nth: usize) -> f64 {
    stderr
        .lines()
        .find(|l| l.contains(marker))
        .and_then(|l| {
            l.split(" in ")
                .nth(nth)
                .and_then(|t| t.split('s').next())
                .and_then(|t| t.trim().parse().ok())
        })
        .unwrap_or(f64::NAN)
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn speed(root: &Path, elior: &Path, runs: usize) {
    let dir = root.join("speed");
    stack(&dir, "../dedup/uploads");
    Connection::open(dir.join("data/elior_fitness.db"))
        .unwrap()
        .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    let uploads = root.join("dedup/uploads");
    let out = root.join("uploads.tar.zst");
    let (mut reference, mut reference_synced, mut ours, mut ours_uploads) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut reference_cpu, mut ours_cpu) = (Vec::new(), Vec::new());
    for run in 0..runs {
        warm(&uploads);
        let mut tar = Command::new("sh");
        tar.arg("-c").arg(format!(
            "tar -C {} -cf - uploads | zstd -T0 -q -f -o {}",
            root.join("dedup").display(),
            out.display()
        ));
        let (took, cpu, _) = timed_cpu(tar);
        reference_cpu.push(cpu);
        let started = Instant::now();
        let mut sync = Command::new("sync");
        sync.arg(&out);
        timed(sync);
        reference.push(took.as_secs_f64());
        reference_synced.push((took + started.elapsed()).as_secs_f64());
        let tar_size = fs::metadata(&out).unwrap().len();
        let _ = fs::remove_file(&out);

        let _ = fs::remove_dir_all(dir.join("backups"));
        warm(&uploads);
        let (took, cpu, stderr) = timed_cpu(elior_backup(elior, &dir));
        ours_cpu.push(cpu);
        ours.push(took.as_secs_f64());
        ours_uploads.push(phase_seconds(&stderr, "  uploads:", 1));
        let repo_size = tree_size(&dir.join("backups/repository"));
        eprintln!(
            "speed run {}: tar|zstd -T0 {:.2}s (+fsync {:.2}s, {:.2} CPU-s), {} MiB; elior {:.2}s (uploads {:.2}s, {:.2} CPU-s), {} MiB",
            run + 1,
            reference[run],
            reference_synced[run],
            reference_cpu[run],
            tar_size >> 20,
            ours[run],
            ours_uploads[run],
            ours_cpu[run],
            repo_size >> 20
        );
    }
    let (r, rs, o, ou, rc, oc) = (
        median(&mut reference),
        median(&mut reference_synced),
        median(&mut ours),
        median(&mut ours_uploads),
        median(&mut reference_cpu),
        median(&mut ours_cpu),
    );
    println!(
        "first uploads backup, medians of {runs}: tar|zstd -T0 {r:.2}s ({rs:.2}s with an fsync of its output, {rc:.2} CPU-s); elior backup {o:.2}s in all ({oc:.2} CPU-s), {ou:.2}s for the uploads: {:.2}x the speed of tar|zstd ({:.2}x counting its fsync; {:.2}x its CPU time); load average {}",
        r / o,
        rs / o,
        oc / rc,
        load_average()
    );
}

fn tree_size(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map(|e| {
            let path = e.unwrap().path();
            if path.is_dir() {
                tree_size(&path)
            } else {
                fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
            }
        })
        .sum()
}

fn disk_usage(dir: &Path) -> u64 {
    let out = Command::new("du").arg("-sb").arg(dir).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn live_size(dir: &Path) -> u64 {
    fs::metadata(dir.join("data/elior_fitness.db"))
        .unwrap()
        .len()
        + tree_size(&dir.join("uploads"))
}

/// Rewrites 1% of the database pages (random rows, one page each) and 1% of the files.
fn change_a_day(dir: &Path, uploads: &[PathBuf], rng: &mut impl Rng) {
    let mut conn = Connection::open(dir.join("data/elior_fitness.db")).unwrap();
    let (pages, max_id): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT page_count FROM pragma_page_count), (SELECT max(id) FROM items)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut update = tx
            .prepare("UPDATE items SET body = ?1 WHERE id = ?2")
            .unwrap();
        for _ in 0..pages / 100 {
            update
                .execute(rusqlite::params![row(rng), rng.gen_range(1..=max_id)])
                .unwrap();
        }
    }
    tx.commit().unwrap();
    for _ in 0..(uploads.len() / 100).max(1) {
        let path = &uploads[rng.gen_range(0..uploads.len())];
        let size = fs::metadata(path).unwrap().len() as usize;
        fs::write(path, content(path, size, rng)).unwrap();
    }
}

fn dedup(dir: &Path, elior: &Path, uploads: &[PathBuf], days: u64, rng: &mut impl Rng) {
    let live = live_size(dir);
    let (first, _) = timed(elior_backup(elior, dir));
    let repo = dir.join("backups/repository");
    println!(
        "day 0: first backup {:.2}s, repository {} MiB for {} MiB of live data",
        first.as_secs_f64(),
        tree_size(&repo) >> 20,
        live >> 20
    );
    let mut daily = Vec::new();
    for day in 1..=days {
        change_a_day(dir, uploads, rng);
        let (took, stderr) = timed(elior_backup(elior, dir));
        daily.push(took.as_secs_f64());
        eprintln!(
            "day {day}: {:.2}s, repository {} MiB; {}",
            took.as_secs_f64(),
            tree_size(&repo) >> 20,
            stderr.lines().last().unwrap_or_default().trim()
        );
    }
    let live = live_size(dir);
    let apparent = tree_size(&repo);
    let on_disk = disk_usage(&repo);
    println!(
        "after {days} days of 1% changes: repository {} MiB ({} MiB on disk) for {} MiB of live data: {:.3}x the live size ({:.3}x on disk); {} snapshots; daily backups {:.2}s median",
        apparent >> 20,
        on_disk >> 20,
        live >> 20,
        apparent as f64 / live as f64,
        on_disk as f64 / live as f64,
        days + 1,
        median(&mut daily.clone()),
    );
    let (mut totals, mut snapshots, mut cpus, mut stores) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        let (took, cpu, stderr) = timed_cpu(elior_backup(elior, dir));
        totals.push(took.as_secs_f64());
        cpus.push(cpu);
        snapshots.push(phase_seconds(&stderr, "  database:", 1));
        stores.push(phase_seconds(&stderr, "  database:", 2));
    }
    let (total, snapshot, cpu, store) = (
        median(&mut totals),
        median(&mut snapshots),
        median(&mut cpus),
        median(&mut stores),
    );
    println!(
        "unchanged daily backup, median of 3: {total:.2}s ({cpu:.2} CPU-s), of which the database snapshot (copy and quick_check) {snapshot:.2}s, the rest {:.2}s (cutting and naming the database's pages {store:.2}s); load average {}",
        total - snapshot,
        load_average()
    );
}
