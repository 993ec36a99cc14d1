//! Backup file names, as the original backup script spelled them:
//! `db_backup_YYYYmmdd_HHMMSS.db`, `uploads_backup_YYYYmmdd_HHMMSS.tar.gz`, and elior's
//! `stack_backup_YYYYmmdd_HHMMSS.tar` (the env file, certificate and ACME account) and
//! `backup_YYYYmmdd_HHMMSS.json` manifest. The timestamp (local time) is the backup's id.
//!
//! Pure: parsing and formatting only. Anything else in a backup folder is foreign and is
//! never touched.

use chrono::NaiveDateTime;

pub const ID_FORMAT: &str = "%Y%m%d_%H%M%S";

/// Which part of a backup a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    Database,
    Uploads,
    /// The stack's own files ([`super::stack_files`]).
    Stack,
    Manifest,
}

impl Part {
    pub const ALL: [Part; 4] = [Part::Database, Part::Uploads, Part::Stack, Part::Manifest];
    /// The parts that hold data, which the manifest lists.
    pub const DATA: [Part; 3] = [Part::Database, Part::Uploads, Part::Stack];

    fn affixes(self) -> (&'static str, &'static str) {
        match self {
            Part::Database => ("db_backup_", ".db"),
            Part::Uploads => ("uploads_backup_", ".tar.gz"),
            Part::Stack => ("stack_backup_", ".tar"),
            Part::Manifest => ("backup_", ".json"),
        }
    }

    /// The file name of this part of backup `id`.
    pub fn file_name(self, id: &str) -> String {
        let (prefix, suffix) = self.affixes();
        format!("{prefix}{id}{suffix}")
    }
}

/// Parses a backup id (`20261129_020000`) into its local timestamp.
pub fn parse_id(id: &str) -> Option<NaiveDateTime> {
    if id.len() != 15 {
        return None;
    }
    NaiveDateTime::parse_from_str(id, ID_FORMAT).ok()
}

pub fn format_id(at: NaiveDateTime) -> String {
    at.format(ID_FORMAT).to_string()
}

/// Recognises an elior backup file name: which part it is and its id.
pub fn parse_file_name(name: &str) -> Option<(Part, String)> {
    Part::ALL.into_iter().find_map(|part| {
        let (prefix, suffix) = part.affixes();
        let id = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
        parse_id(id).map(|_| (part, id.to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_foreign_files_are_not_ours() {
        assert_eq!(
            Part::Database.file_name("20261129_020000"),
            "db_backup_20261129_020000.db"
        );
        assert_eq!(
            parse_file_name("uploads_backup_20261129_020000.tar.gz"),
            Some((Part::Uploads, "20261129_020000".to_string()))
        );
        assert_eq!(
            parse_file_name("stack_backup_20261129_020000.tar"),
            Some((Part::Stack, "20261129_020000".to_string()))
        );
        assert_eq!(
            parse_file_name("backup_20261129_020000.json"),
            Some((Part::Manifest, "20261129_020000".to_string()))
        );
        for foreign in [
            "notes.txt",
            "db_backup_latest.db",
            "db_backup_20261329_020000.db",
            "backup_20261129_020000.json.tmp",
            ".db_backup_20261129_020000.db.tmp",
        ] {
            assert_eq!(parse_file_name(foreign), None, "{foreign}");
        }
    }
}
