//! Which stack a backup folder belongs to: `stack.json` in BACKUP_DIR (and under an
//! offsite prefix, [`super::offsite`]), written by the first backup of a stack that has
//! an id (`.elior/stack.json`) and checked before anything reads or writes the folder.
//!
//! Backup ids are timestamps, and nothing else in a backup says whose it is. Two stacks
//! pointed at one folder (a shared `/var/backups/elior`) each took the other's backups for
//! their own: `restore latest` brought the other stack's users and data in, and a prune
//! weighed the other's backups by this stack's retention and deleted them.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::BackupSettings;
use crate::config::identity::{self, StackId};

/// The record's name, in BACKUP_DIR and under an offsite prefix.
pub const RECORD: &str = crate::plan::offsite::STACK_OBJECT;

/// Whose backups a folder (or an offsite prefix) holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StackRecord {
    pub stack_id: String,
    #[serde(default)]
    pub elior_version: String,
    /// The stack's directory when the record was written, for messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_dir: Option<String>,
}

impl StackRecord {
    pub fn of(id: &StackId, stack_dir: &Path) -> StackRecord {
        StackRecord {
            stack_id: id.to_string(),
            elior_version: crate::VERSION.to_string(),
            stack_dir: Some(stack_dir.display().to_string()),
        }
    }

    /// The record's stack id, when it is one.
    pub fn id(&self) -> Option<StackId> {
        StackId::try_from(self.stack_id.clone()).ok()
    }

    fn whose(&self) -> String {
        match &self.stack_dir {
            Some(dir) => format!("{}, in {dir}", self.stack_id),
            None => self.stack_id.clone(),
        }
    }
}

/// The folder's record, or `None` when no stack has claimed it yet.
pub fn read(backup_dir: &Path) -> Result<Option<StackRecord>> {
    let path = backup_dir.join(RECORD);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("failed to read {}", path.display())),
    };
    let record = serde_json::from_slice::<StackRecord>(&bytes)
        .ok()
        .filter(|r| r.id().is_some())
        .with_context(|| {
            format!(
                "{} is not an elior stack record\nBACKUP_DIR holds something else: give the stack a BACKUP_DIR of its own",
                path.display()
            )
        })?;
    Ok(Some(record))
}

/// Refuses a record of another stack than `mine`.
fn refuse_foreign(
    settings: &BackupSettings,
    mine: &StackId,
    record: Option<&StackRecord>,
) -> Result<()> {
    match record {
        Some(theirs) if theirs.id().as_ref() != Some(mine) => bail!(
            "BACKUP_DIR {} holds the backups of another stack ({}), not of this one ({mine}, in {})\ngive each stack a BACKUP_DIR of its own: set BACKUP_DIR in {}",
            settings.backup_dir.display(),
            theirs.whose(),
            identity::stack_file(&settings.stack_dir).display(),
            settings.stack_dir.join(".env.production").display()
        ),
        _ => Ok(()),
    }
}

/// Refuses a folder that holds another stack's backups. A stack without an id (an
/// earlier release's directory) cannot tell, and is not refused.
pub fn check(settings: &BackupSettings) -> Result<()> {
    match identity::read(&settings.stack_dir)? {
        Some(mine) => refuse_foreign(settings, &mine, read(&settings.backup_dir)?.as_ref()),
        None => Ok(()),
    }
}

/// [`check`], then records this stack as the folder's owner if no stack is recorded yet
/// (the folder exists by now). Each file is read once.
pub fn claim(settings: &BackupSettings) -> Result<()> {
    let Some(mine) = identity::read(&settings.stack_dir)? else {
        return Ok(());
    };
    let record = read(&settings.backup_dir)?;
    refuse_foreign(settings, &mine, record.as_ref())?;
    if record.is_some() {
        return Ok(());
    }
    let mut text = serde_json::to_vec_pretty(&StackRecord::of(&mine, &settings.stack_dir))
        .expect("record serialises");
    text.push(b'\n');
    crate::fsutil::write_atomic(&settings.backup_dir.join(RECORD), &text, 0o600)
}

/// Before a restore: a directory without an id takes the one the folder names (it is
/// that stack, recovered on a new host from a copy of its backups), as a restore from
/// an offsite copy does; any other is [`check`]ed.
pub fn adopt(settings: &BackupSettings) -> Result<()> {
    let record = read(&settings.backup_dir)?;
    match identity::read(&settings.stack_dir)? {
        Some(mine) => refuse_foreign(settings, &mine, record.as_ref()),
        None => match record.and_then(|r| r.id()) {
            Some(theirs) => identity::write(&settings.stack_dir, &theirs),
            None => Ok(()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn stack_with_id(root: &Path, name: &str) -> (BackupSettings, StackId) {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let (id, _) = identity::ensure(&dir).unwrap();
        let mut raw = crate::config::RawSettings::default();
        let backups = root.join("shared-backups").display().to_string();
        raw.overlay([("BACKUP_DIR".to_string(), backups)]);
        (BackupSettings::from_raw(&dir, &raw).unwrap(), id)
    }

    #[test]
    fn the_first_stack_to_claim_a_folder_owns_it_and_another_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let (first, first_id) = stack_with_id(root.path(), "a");
        let (second, _) = stack_with_id(root.path(), "b");
        std::fs::create_dir_all(&first.backup_dir).unwrap();
        assert!(read(&first.backup_dir).unwrap().is_none());
        claim(&first).unwrap();
        let record = read(&first.backup_dir).unwrap().unwrap();
        assert_eq!(record.id(), Some(first_id.clone()));
        let mode = std::fs::metadata(first.backup_dir.join(RECORD))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        claim(&first).unwrap();
        check(&first).unwrap();
        for refused in [check(&second), claim(&second)] {
            let err = format!("{:#}", refused.unwrap_err());
            assert!(
                err.contains(&format!(
                    "holds the backups of another stack ({first_id}, in "
                )),
                "{err}"
            );
        }
        assert_eq!(
            read(&first.backup_dir).unwrap().unwrap().id(),
            Some(first_id)
        );
    }

    #[test]
    fn a_record_that_is_not_one_names_its_file_and_a_stack_without_id_is_not_refused() {
        let root = tempfile::tempdir().unwrap();
        let (stack, _) = stack_with_id(root.path(), "a");
        std::fs::create_dir_all(&stack.backup_dir).unwrap();
        let path = stack.backup_dir.join(RECORD);
        for garbage in ["not json", "{\"stack_id\": \"../../etc\"}"] {
            std::fs::write(&path, garbage).unwrap();
            let err = format!("{:#}", check(&stack).unwrap_err());
            assert!(
                err.starts_with(&format!("{} is not an elior stack record", path.display())),
                "{err}"
            );
        }
        std::fs::remove_file(identity::stack_file(&stack.stack_dir)).unwrap();
        std::fs::write(&path, "not json").unwrap();
        check(&stack).unwrap();
    }
}
