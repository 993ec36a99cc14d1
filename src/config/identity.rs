//! A stack's identity: a random id that `elior init` (or the first deploy of a directory
//! without one) writes to `DIR/.elior/stack.json`, and the engine names derived from it.
//!
//! Identity comes from the directory, never from the domain (issue 14): two directories
//! with the same DOMAIN, or with domains that differ only by case or by `.` against `-`,
//! are two stacks with two ids, so their containers, networks and labels never meet.
//! Names still start with the normalised domain so `docker ps` stays readable.
//!
//! Reads and writes this one small file; it never talks to the engine.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::domain::Domain;

/// Where a stack directory keeps its id.
pub const STACK_FILE: &str = ".elior/stack.json";

/// The longest domain part of a project name: the API container's name
/// (`elior-<domain>-<id8>-api-<hash8>`) is also its DNS name on the stack's network, and a
/// DNS label holds at most 63 characters.
const MAX_DOMAIN_PART: usize = 30;

/// A stack's id: 32 lower-case hex digits (128 random bits).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StackId(String);

impl StackId {
    /// A fresh random id.
    pub fn random() -> StackId {
        use rand::RngCore;
        let mut bytes = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        StackId(hex::encode(bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 8 digits, used in engine names.
    pub fn short(&self) -> &str {
        &self.0[..8]
    }
}

impl std::fmt::Display for StackId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for StackId {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        if value.len() == 32
            && value
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(StackId(value))
        } else {
            Err(format!(
                "{value:?} is not a stack id (32 lower-case hex digits)"
            ))
        }
    }
}

impl From<StackId> for String {
    fn from(id: StackId) -> String {
        id.0
    }
}

/// What marks the engine objects of one stack: its id, its directory and its project
/// name. `docker` filters every listing by it (see `docker::stack_containers`), so every
/// command acts on its own stack only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub id: StackId,
    /// The stack directory, absolute and canonical.
    pub dir: PathBuf,
    /// `elior-<domain>-<id8>` ([`project_name`]).
    pub project: String,
}

impl Owner {
    pub fn new(id: StackId, dir: PathBuf, domain: &Domain) -> Owner {
        Owner {
            project: project_name(domain, &id),
            id,
            dir,
        }
    }

    /// The directory as the `elior.stack-dir` label carries it.
    pub fn dir_label(&self) -> String {
        self.dir.to_string_lossy().into_owned()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct StackFile {
    id: StackId,
}

pub fn stack_file(dir: &Path) -> PathBuf {
    dir.join(STACK_FILE)
}

/// The id in `DIR/.elior/stack.json`, or `None` when the directory has none yet (a stack
/// of an earlier release). A file that exists but does not parse is an error: guessing
/// would act on another stack.
pub fn read(dir: &Path) -> Result<Option<StackId>> {
    let path = stack_file(dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("failed to read {}", path.display())),
    };
    let file: StackFile = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a stack file\nit holds {{\"id\": \"<32 hex digits>\"}}; restore it from a backup, or remove it and run `{}` to give this directory a new identity",
            path.display(),
            super::hint::command(Some(dir), "deploy DOMAIN")
        )
    })?;
    Ok(Some(file.id))
}

/// The directory's id, written now (mode 0600, atomically) when it has none. Returns the
/// id and whether it was created.
pub fn ensure(dir: &Path) -> Result<(StackId, bool)> {
    if let Some(id) = read(dir)? {
        return Ok((id, false));
    }
    let id = StackId::random();
    write(dir, &id)?;
    Ok((id, true))
}

/// Writes `DIR/.elior/stack.json` naming `id` (atomic, 0600): a new stack's, or the id a
/// disaster recovery takes over from the backups it restores.
pub fn write(dir: &Path, id: &StackId) -> Result<()> {
    let mut text = serde_json::to_string_pretty(&StackFile { id: id.clone() })?;
    text.push('\n');
    crate::fsutil::write_atomic(&stack_file(dir), text.as_bytes(), 0o600)
}

/// `elior-<domain>-<id8>`: the prefix of every container and network name of the stack.
/// The domain part is the normalised (lower-case, punycode) name with every character
/// Docker names do not allow, and the dots, as `-`, cut to [`MAX_DOMAIN_PART`].
pub fn project_name(domain: &Domain, id: &StackId) -> String {
    let slug = slug(domain.as_str());
    let cut: String = slug.chars().take(MAX_DOMAIN_PART).collect();
    format!("elior-{}-{}", cut.trim_end_matches('-'), id.short())
}

/// The project name releases before stack ids used (`elior-` and the domain): only for
/// finding the containers such a release deployed from this directory, to adopt them.
pub fn legacy_project_name(domain: &str) -> String {
    format!("elior-{}", slug(domain))
}

fn slug(domain: &str) -> String {
    domain
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::domain;

    fn id(s: &str) -> StackId {
        StackId::try_from(s.repeat(32 / s.len())).unwrap()
    }

    // Regression (issue 14): `ka.test` and `ka-test`, and `HB.TEST` and `hb.test`, were
    // one project; now the id separates them, and the domain is normalised first.
    #[test]
    fn names_come_from_the_normalised_domain_and_the_id() {
        let a = id("a1");
        let b = id("b2");
        let ka_dot = domain::parse("ka.test").unwrap();
        let ka_dash = domain::parse("ka-test").unwrap();
        assert_eq!(project_name(&ka_dot, &a), "elior-ka-test-a1a1a1a1");
        assert_eq!(project_name(&ka_dash, &b), "elior-ka-test-b2b2b2b2");
        assert_ne!(project_name(&ka_dot, &a), project_name(&ka_dash, &b));
        let upper = domain::parse("HB.TEST").unwrap();
        assert_eq!(project_name(&upper, &a), "elior-hb-test-a1a1a1a1");
        let unicode = domain::parse("Bücher.example").unwrap();
        assert_eq!(
            project_name(&unicode, &a),
            "elior-xn--bcher-kva-example-a1a1a1a1"
        );
        assert!(domain::parse("xn--zz.test").is_err());
        let long = domain::parse(&format!("{}.example.com", "x".repeat(60))).unwrap();
        let name = project_name(&long, &a);
        assert_eq!(name, format!("elior-{}-a1a1a1a1", "x".repeat(30)));
        assert!(format!("{name}-api-12345678").len() <= 63);
        assert_eq!(legacy_project_name("ka.test"), "elior-ka-test");
    }

    #[test]
    fn the_id_is_written_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let (first, created) = ensure(dir.path()).unwrap();
        assert!(created);
        let (again, created) = ensure(dir.path()).unwrap();
        assert_eq!((again, created), (first.clone(), false));
        let mode = std::fs::metadata(stack_file(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_ne!(first, StackId::random());
        std::fs::write(stack_file(dir.path()), "{\"id\": \"nope\"}").unwrap();
        let err = format!("{:#}", read(dir.path()).unwrap_err());
        assert!(err.contains("is not a stack file"), "{err}");
    }
}
