//! The database probe behind `/health`, cached for a short time.
//!
//! Load balancers, Docker and nginx may call `/health` thousands of times a second under
//! load; running a query for each would make health the most expensive endpoint. One
//! request refreshes the cached result when it is older than [`FRESH_FOR`]; concurrent
//! requests meanwhile answer from the previous result, so a check never queues behind
//! another.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use crate::db::{self, Db};

/// How stale a health answer may be.
pub const FRESH_FOR: Duration = Duration::from_millis(500);
/// How long the probe waits for the database before calling it unhealthy.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub type Verdict = Result<(), &'static str>;

#[derive(Default)]
pub struct HealthCache {
    last: RwLock<Option<(Instant, Verdict)>>,
    refreshing: tokio::sync::Mutex<()>,
}

impl HealthCache {
    pub async fn verdict(&self, db: &Db) -> Verdict {
        if let Some(fresh) = self.cached(Instant::now()) {
            return fresh;
        }
        match self.refreshing.try_lock() {
            Ok(_guard) => {
                let verdict = probe(db).await;
                *self.last.write().unwrap_or_else(|p| p.into_inner()) =
                    Some((Instant::now(), verdict));
                verdict
            }
            // Someone else is refreshing: answer with what we last knew, or wait for
            // them when there is nothing yet.
            Err(_) => match self.last_verdict() {
                Some(verdict) => verdict,
                None => {
                    let _wait = self.refreshing.lock().await;
                    self.cached(Instant::now())
                        .unwrap_or(Err("health check still starting"))
                }
            },
        }
    }

    fn last_verdict(&self) -> Option<Verdict> {
        self.last
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .map(|(_, v)| v)
    }

    fn cached(&self, now: Instant) -> Option<Verdict> {
        match *self.last.read().unwrap_or_else(|p| p.into_inner()) {
            Some((at, verdict)) if now.duration_since(at) < FRESH_FOR => Some(verdict),
            _ => None,
        }
    }
}

/// Checks that the file is still ours and that a real table can be read in time.
pub async fn probe(db: &Db) -> Verdict {
    db.check_file()?;
    match tokio::time::timeout(PROBE_TIMEOUT, db.call(|c| db::ping(c))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "database health check failed");
            Err("query failed")
        }
        Err(_) => Err("timed out"),
    }
}
