//! `DIR/.elior/state.json`: each scheduled job's last run and last success, written
//! atomically after every run so `doctor` can tell when a job silently stopped running.
//!
//! Only this file is read and written here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::Outcome;
use crate::backup::manifest::write_atomic;
use crate::lock;

const STATE_FILE: &str = "state.json";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    #[serde(default)]
    pub jobs: BTreeMap<String, JobState>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobState {
    pub last_run_at: Option<String>,
    pub last_result: Option<String>,
    pub last_error: Option<String>,
    pub last_duration_ms: Option<u64>,
    pub last_success_at: Option<String>,
}

pub fn path(stack_dir: &Path) -> PathBuf {
    stack_dir.join(lock::STATE_DIR).join(STATE_FILE)
}

/// Reads the state; a missing file is an empty state.
pub fn read(stack_dir: &Path) -> Result<State> {
    let path = path(stack_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid state JSON", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(e).with_context(|| format!("failed to read {}", path.display())),
    }
}

/// Records one run's outcome.
pub fn record(stack_dir: &Path, outcome: &Outcome) -> Result<()> {
    lock::ensure_state_dir(stack_dir)?;
    // An unreadable state file is replaced rather than blocking every later record.
    let mut state = read(stack_dir).unwrap_or_default();
    let job = state.jobs.entry(outcome.job.clone()).or_default();
    let started = outcome
        .started_at
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
    job.last_run_at = Some(started.clone());
    job.last_duration_ms = Some(outcome.duration.as_millis() as u64);
    match &outcome.result {
        Ok(()) => {
            job.last_result = Some("ok".into());
            job.last_error = None;
            job.last_success_at = Some(started);
        }
        Err(e) => {
            job.last_result = Some("failed".into());
            job.last_error = Some(e.clone());
        }
    }
    let mut text = serde_json::to_string_pretty(&state).expect("state serialises");
    text.push('\n');
    write_atomic(&path(stack_dir), text.as_bytes())
}
