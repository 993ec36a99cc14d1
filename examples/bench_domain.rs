//! Load benchmark of the domain API, run on demand (needs `wrk` from Debian):
//!
//!     cargo run --release --example bench_domain -- [--duration 15] [--connections 64]
//!
//! Starts `elior serve` in-process on a fresh SQLite file, seeds 10 trainers with 10
//! clients each (a workout plan of 3 sessions x 5 exercises, today's meal plan of 4 meals
//! x 3 components, 10 weigh-ins and a few notifications per client), then drives three
//! mixes with wrk, every request as one of the 100 clients:
//!
//! - reference: `GET /health` (no auth, one tiny query): the machine's ceiling, so the
//!   other figures can be read as ratios on a shared machine;
//! - read-heavy: plan complete 40%, meal summary 30%, notifications list 30%;
//! - write: exercise completions 50%, weight entries 50%.
//!
//! Prints requests/s and p99 latency for each, and each mix's throughput as a ratio of
//! the reference. No assertions: this is a measurement, not a test.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

const TRAINERS: usize = 10;
const CLIENTS_PER_TRAINER: usize = 10;
const PASSWORD: &str = "correct-horse-battery";

struct Client {
    token: String,
    plan_id: i64,
    workout_exercises: Vec<i64>,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: u32| -> u32 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let duration = arg("--duration", 15);
    let connections = arg("--connections", 64);
    let dir = tempfile::tempdir()?;
    let addr = start_server(dir.path())?;
    let base = format!("http://{addr}");
    eprintln!("bench: seeding {TRAINERS} trainers x {CLIENTS_PER_TRAINER} clients at {base}");
    let clients = seed(&base)?;
    let scripts = dir.path();
    std::fs::write(scripts.join("read.lua"), read_script(&clients))?;
    std::fs::write(scripts.join("write.lua"), write_script(&clients))?;

    println!("mix          requests/s    p99 (ms)   vs reference");
    let reference = run_wrk(&base, "/health", None, duration, connections)?;
    report("reference", &reference, reference.0);
    let read = run_wrk(
        &base,
        "/",
        Some(&scripts.join("read.lua")),
        duration,
        connections,
    )?;
    report("read-heavy", &read, reference.0);
    let write = run_wrk(
        &base,
        "/",
        Some(&scripts.join("write.lua")),
        duration,
        connections,
    )?;
    report("write", &write, reference.0);
    Ok(())
}

fn report(name: &str, (rps, p99_ms): &(f64, f64), reference: f64) {
    println!(
        "{name:<12} {rps:>10.0} {p99_ms:>11.2} {:>13.2}",
        rps / reference
    );
}

/// Runs the server on its own runtime thread; returns its address once it listens.
fn start_server(dir: &Path) -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let mut raw = elior::config::RawSettings::default();
    raw.overlay([
        (
            "DATABASE_URL".into(),
            format!("sqlite:///{}", dir.join("bench.db").display()),
        ),
        (
            "UPLOAD_DIR".into(),
            dir.join("uploads").display().to_string(),
        ),
        (
            "JWT_SECRET".into(),
            "bench-secret-0123456789abcdef0123456789".into(),
        ),
        ("ACCESS_TOKEN_EXPIRE_MINUTES".into(), "600".into()),
    ]);
    let config = elior::config::ServeConfig::from_raw(&raw, Some(addr))?;
    let db = elior::db::Db::open(&config.database_path)?;
    let app = elior::server::app(config, db);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            elior::server::launch(listener, app, std::future::pending())
                .await
                .unwrap();
        });
    });
    Ok(addr)
}

fn call(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Value,
) -> anyhow::Result<Value> {
    let mut req = agent.request(method, url);
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let resp = req.send_json(body).map_err(|e| match e {
        ureq::Error::Status(code, r) => anyhow::anyhow!(
            "{method} {url}: {code} {}",
            r.into_string().unwrap_or_default()
        ),
        other => anyhow::anyhow!("{method} {url}: {other}"),
    })?;
    Ok(resp.into_json()?)
}

fn account(name: &str) -> Value {
    json!({"username": name, "email": format!("{name}@example.com"), "password": PASSWORD, "full_name": name})
}

fn seed(base: &str) -> anyhow::Result<Vec<Client>> {
    let agent = ureq::agent();
    let url = |p: &str| format!("{base}{p}");
    let login = |name: &str| -> anyhow::Result<String> {
        let r = call(
            &agent,
            "POST",
            &url("/api/auth/login"),
            None,
            json!({"username": name, "password": PASSWORD}),
        )?;
        Ok(r["access_token"].as_str().unwrap_or_default().to_string())
    };
    let admin = call(
        &agent,
        "POST",
        &url("/api/auth/setup/admin"),
        None,
        account("admin"),
    )?;
    let admin = admin["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let today = chrono::Utc::now()
        .date_naive()
        .format("%Y-%m-%d")
        .to_string();
    let mut clients = Vec::new();
    for t in 0..TRAINERS {
        let name = format!("trainer{t}");
        call(
            &agent,
            "POST",
            &url("/api/auth/register/trainer"),
            Some(&admin),
            account(&name),
        )?;
        let trainer = login(&name)?;
        let mut exercises = Vec::new();
        for e in 0..5 {
            let ex = call(
                &agent,
                "POST",
                &url("/api/workouts/exercises"),
                Some(&trainer),
                json!({"name": format!("Exercise {t}-{e}"), "muscle_group": "legs"}),
            )?;
            exercises.push(ex["id"].as_i64().unwrap_or_default());
        }
        for c in 0..CLIENTS_PER_TRAINER {
            let cname = format!("client{t}x{c}");
            let client = call(
                &agent,
                "POST",
                &url("/api/auth/register/client"),
                Some(&trainer),
                account(&cname),
            )?;
            let client_id = client["id"].as_i64().unwrap_or_default();
            let plan = call(
                &agent,
                "POST",
                &url("/api/workouts/plans"),
                Some(&trainer),
                json!({"client_id": client_id, "name": "Strength", "start_date": "2026-01-01"}),
            )?;
            let plan_id = plan["id"].as_i64().unwrap_or_default();
            let mut workout_exercises = Vec::new();
            for s in 0..3 {
                let session = call(
                    &agent,
                    "POST",
                    &url(&format!("/api/workouts/plans/{plan_id}/sessions")),
                    Some(&trainer),
                    json!({"name": format!("Day {s}"), "day_of_week": s}),
                )?;
                let items: Vec<Value> = exercises.iter().enumerate()
                    .map(|(i, e)| json!({"exercise_id": e, "order": i + 1, "sets": 3, "reps": "8-12", "weight": 40.0}))
                    .collect();
                let added = call(
                    &agent,
                    "POST",
                    &url(&format!(
                        "/api/workouts/sessions/{}/exercises/bulk",
                        session["id"]
                    )),
                    Some(&trainer),
                    json!({"exercises": items}),
                )?;
                workout_exercises.extend(
                    added
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|w| w["id"].as_i64()),
                );
            }
            let meal = call(
                &agent,
                "POST",
                &url("/api/meal-plans"),
                Some(&trainer),
                json!({"client_id": client_id, "date": today, "title": "Today", "total_calories": 2200, "protein_target": 150}),
            )?;
            for m in 0..4 {
                let entry = call(
                    &agent,
                    "POST",
                    &url(&format!("/api/meal-plans/{}/entries", meal["id"])),
                    Some(&trainer),
                    json!({"name": format!("Meal {m}"), "order": m + 1}),
                )?;
                for kind in ["protein", "carb", "vegetable"] {
                    call(
                        &agent,
                        "POST",
                        &url(&format!(
                            "/api/meal-plans/entries/{}/components",
                            entry["id"]
                        )),
                        Some(&trainer),
                        json!({"type": kind, "description": kind, "calories": 180, "protein": 12.0}),
                    )?;
                }
            }
            let token = login(&cname)?;
            for d in 1..=10 {
                call(
                    &agent,
                    "POST",
                    &url("/api/progress/weight"),
                    Some(&token),
                    json!({"date": format!("2026-01-{d:02}"), "weight": 80.0 - d as f64 * 0.2}),
                )?;
            }
            clients.push(Client {
                token,
                plan_id,
                workout_exercises,
            });
        }
    }
    Ok(clients)
}

fn lua_clients(clients: &[Client]) -> String {
    let mut s = String::from("clients = {\n");
    for c in clients {
        let wex: Vec<String> = c.workout_exercises.iter().map(|w| w.to_string()).collect();
        let _ = writeln!(
            s,
            "  {{ token = \"{}\", plan = {}, wex = {{ {} }} }},",
            c.token,
            c.plan_id,
            wex.join(", ")
        );
    }
    s.push_str("}\n");
    s
}

const LUA_DONE: &str = r#"
failures = 0
response = function(status, headers, body)
  if status >= 400 and failures < 3 then
    failures = failures + 1
    io.stderr:write("bench: HTTP " .. status .. " " .. body .. "\n")
  end
end
function done(summary, latency, requests)
  io.write(string.format("RESULT %f %f %d\n", summary.requests / (summary.duration / 1e6), latency:percentile(99) / 1000, summary.errors.status))
end
"#;

fn read_script(clients: &[Client]) -> String {
    lua_clients(clients)
        + r#"
today = os.date("!%Y-%m-%d")
request = function()
  local c = clients[math.random(#clients)]
  local h = { ["Authorization"] = "Bearer " .. c.token }
  local r = math.random(100)
  if r <= 40 then
    return wrk.format("GET", "/api/workouts/plans/" .. c.plan .. "/complete", h)
  elseif r <= 70 then
    return wrk.format("GET", "/api/meal-plans/summary/today", h)
  else
    return wrk.format("GET", "/api/notifications?limit=20", h)
  end
end
"# + LUA_DONE
}

fn write_script(clients: &[Client]) -> String {
    lua_clients(clients)
        + r#"
request = function()
  local c = clients[math.random(#clients)]
  local h = { ["Authorization"] = "Bearer " .. c.token, ["Content-Type"] = "application/json" }
  if math.random(2) == 1 then
    local w = c.wex[math.random(#c.wex)]
    local body = '{"workout_exercise_id": ' .. w .. ', "actual_sets": 3, "actual_reps": "10", "weight_used": 42.5, "difficulty_rating": 3}'
    return wrk.format("POST", "/api/workouts/completions", h, body)
  else
    local body = string.format('{"date": "2026-02-%02d", "weight": %.1f}', math.random(28), 70 + math.random() * 10)
    return wrk.format("POST", "/api/progress/weight", h, body)
  end
end
"# + LUA_DONE
}

/// Runs wrk and returns (requests/s, p99 ms) from the script's `done` line.
fn run_wrk(
    base: &str,
    path: &str,
    script: Option<&Path>,
    duration: u32,
    connections: u32,
) -> anyhow::Result<(f64, f64)> {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t2",
        &format!("-c{connections}"),
        &format!("-d{duration}s"),
        "--latency",
    ]);
    // The reference run needs only the `done` hook that prints the result line.
    let done_script =
        std::env::temp_dir().join(format!("elior-bench-done-{}.lua", std::process::id()));
    match script {
        Some(s) => {
            cmd.args(["-s", &s.display().to_string()]);
        }
        None => {
            std::fs::write(&done_script, LUA_DONE)?;
            cmd.args(["-s", &done_script.display().to_string()]);
        }
    }
    cmd.arg(format!("{base}{path}"));
    let out = cmd.output();
    if script.is_none() {
        let _ = std::fs::remove_file(&done_script);
    }
    let out = out.map_err(|e| {
        anyhow::anyhow!("failed to run wrk: {e}\ninstall it with apt-get install wrk")
    })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "wrk printed no result:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    let non_2xx: u64 = fields[3].parse()?;
    if non_2xx > 0 {
        eprintln!("bench: {path} {script:?}: {non_2xx} responses were not 2xx/3xx");
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((fields[1].parse()?, fields[2].parse()?))
}
