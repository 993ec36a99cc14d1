//! The backup keys of a stack's env file (`DIR/.env.production`), validated.
//!
//! Pure apart from reading the env file. In a stack made by `elior init`, DATABASE_URL and
//! UPLOAD_DIR are paths *inside the API container*, where the host's `DIR/data` and
//! `DIR/uploads` are mounted; so an absolute DATABASE_URL means `DIR/data/<its file name>`
//! and an absolute UPLOAD_DIR means `DIR/uploads`. Relative paths (a bare directory run
//! with `elior serve`) are resolved against DIR. BACKUP_DIR is a host path. Nothing is
//! created here. (The stack's typed config may later replace this struct.)

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::config::{self, RawSettings};
use crate::db::pg::PgUrl;
use crate::files::settings::S3Settings;

// The defaults are the stack config's, so backup, doctor and `config show` agree.
use crate::config::stack::{
    DEFAULT_BACKUP_DIR, DEFAULT_BACKUP_RETENTION_DAYS, DEFAULT_BACKUP_SCHEDULE,
};

pub use crate::config::stack::ENV_FILE;
/// The stack's folders that the API container mounts as its data and upload folders.
pub const DATA_DIR: &str = "data";
pub const UPLOADS_DIR: &str = "uploads";

/// Where a stack keeps its data and its backups, and how long backups are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSettings {
    pub stack_dir: PathBuf,
    /// The SQLite database file; for a PostgreSQL stack, where one would be (unused).
    pub database_path: PathBuf,
    /// The database when DATABASE_URL is PostgreSQL: backed up with `pg_dump -Fc`,
    /// restored with `pg_restore` (issue 17, item 9).
    pub postgres: Option<PgUrl>,
    pub uploads_dir: PathBuf,
    pub backup_dir: PathBuf,
    pub retention_days: u32,
    /// The cron expression of the scheduled backup, as written in the env file.
    pub schedule: String,
    /// What `elior backup` writes (BACKUP_FORMAT).
    pub format: Format,
    /// The age recipients a repository's backups are encrypted to (BACKUP_RECIPIENTS);
    /// empty for an unencrypted repository.
    pub recipients: Vec<String>,
    /// Where verified backups are copied (BACKUP_OFFSITE=s3://BUCKET/PREFIX, with the
    /// S3_* and AWS_* keys uploads use), or `None` to keep them on this host only.
    pub offsite: Option<S3Settings>,
    /// Swarm mode (issue 21) with uploads in a bucket (UPLOADS_URL): listed into each
    /// backup's manifest.
    pub uploads_bucket: Option<S3Settings>,
    /// Swarm mode with the postgres service elior runs (no external DATABASE_URL): the
    /// service whose task `pg_dump` runs in. Set by [`BackupSettings::load`].
    pub postgres_service: Option<String>,
}

/// The form new backups take (issue 17). Existing backups of either form stay readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A database copy, an uploads tar.gz and a manifest per backup (the default).
    Archive,
    /// Snapshots in the deduplicated repository, `BACKUP_DIR/repository`.
    Repository,
}

impl BackupSettings {
    /// Reads `DIR/.env.production` and validates the keys backups need.
    pub fn load(stack_dir: &Path) -> Result<Self> {
        let env_file = stack_dir.join(ENV_FILE);
        if !env_file.exists() {
            bail!(
                "{} does not exist\nis {} a stack directory? create one with `elior init`, or pass --dir",
                env_file.display(),
                stack_dir.display()
            );
        }
        let raw = crate::config::model::settings(stack_dir)?;
        let mut settings = Self::from_raw(stack_dir, &raw)?;
        if is_swarm(&raw) && settings.postgres.is_none() {
            let domain = raw.get("DOMAIN").unwrap_or_default();
            let owner = crate::config::model::owner_of(stack_dir, domain)?.ok_or_else(|| {
                anyhow::anyhow!(
                    "{} has no stack id, so its swarm services cannot be found
deploy it first: `elior deploy DOMAIN --swarm`",
                    stack_dir.display()
                )
            })?;
            settings.postgres_service =
                Some(crate::plan::swarm::Names(&owner.project).service("postgres"));
        }
        Ok(settings)
    }

    pub fn from_raw(stack_dir: &Path, raw: &RawSettings) -> Result<Self> {
        let value = |key: &str| raw.get(key).map(str::trim).filter(|v| !v.is_empty());
        // Absolute and without `.` components, so messages name the real place.
        let resolve = |p: PathBuf| std::path::absolute(stack_dir.join(p)).unwrap_or_default();

        let database_url = value("DATABASE_URL").unwrap_or(config::DEFAULT_DATABASE_URL);
        let postgres = match PgUrl::parse(database_url) {
            None => None,
            Some(Ok(url)) => Some(url),
            Some(Err(m)) => bail!("DATABASE_URL: {m}"),
        };
        let swarm = is_swarm(raw);
        let lookup = |key: &str| {
            raw.non_empty(key)
                .map(|(v, o)| (v.to_string(), o.to_string()))
        };
        let uploads_bucket = match lookup("UPLOADS_URL") {
            Some((url, origin)) if swarm => Some(S3Settings::parse(
                "UPLOADS_URL",
                &url,
                &origin,
                "keeps the uploads",
                "or leave UPLOADS_URL unset",
                &lookup,
            )?),
            _ => None,
        };
        if let (Some(url), false) = (value("UPLOADS_URL"), swarm) {
            // Issue 16: uploads in a bucket; archiving the (empty) local folder instead
            // would make a backup that silently restores no files.
            bail!(
                "UPLOADS_URL: backups of uploads kept on S3 ({url}) are not supported yet (elior backs up a local UPLOAD_DIR)\nback the bucket up with the store's own tools meanwhile (versioning, replication, or `aws s3 sync`)"
            );
        }
        let database_path = match &postgres {
            Some(_) => resolve(Path::new(DATA_DIR).join("elior_fitness.db")),
            None => {
                let database = config::sqlite_path(database_url)
                    .map_err(|m| anyhow::anyhow!("DATABASE_URL: {m}"))?;
                if database.is_absolute() {
                    let name = database.file_name().ok_or_else(|| {
                        anyhow::anyhow!("DATABASE_URL: {database_url:?} names no database file")
                    })?;
                    resolve(Path::new(DATA_DIR).join(name))
                } else {
                    resolve(database)
                }
            }
        };
        let uploads_dir = match value("UPLOAD_DIR").map(PathBuf::from) {
            Some(dir) if dir.is_relative() => resolve(dir),
            _ => resolve(PathBuf::from(UPLOADS_DIR)),
        };
        let backup_dir = resolve(PathBuf::from(
            value("BACKUP_DIR").unwrap_or(DEFAULT_BACKUP_DIR),
        ));
        if lies_within(&backup_dir, &uploads_dir) {
            bail!(
                "BACKUP_DIR: {} is inside the uploads folder {}: each backup would archive the ones before it, and a restore, which replaces that folder, would lose every backup taken since the one restored (its own safety backup too)\nset BACKUP_DIR to a folder outside it, such as {} (the default)",
                backup_dir.display(),
                uploads_dir.display(),
                resolve(PathBuf::from(DEFAULT_BACKUP_DIR)).display()
            );
        }
        let retention_days = match value("BACKUP_RETENTION_DAYS") {
            None => DEFAULT_BACKUP_RETENTION_DAYS,
            Some(v) => match v.parse::<u32>() {
                Ok(days) if (1..=3650).contains(&days) => days,
                _ => bail!(
                    "BACKUP_RETENTION_DAYS: {v:?} is not a number of days between 1 and 3650\nuse a whole number such as 30"
                ),
            },
        };
        let schedule = value("BACKUP_SCHEDULE")
            .unwrap_or(DEFAULT_BACKUP_SCHEDULE)
            .to_string();
        let recipients: Vec<String> = value("BACKUP_RECIPIENTS")
            .unwrap_or_default()
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|r| !r.is_empty())
            .map(String::from)
            .collect();
        super::repo::crypto::parse_recipients(&recipients)?;
        let format = match value("BACKUP_FORMAT") {
            // Encryption needs the repository: recipients alone choose it.
            None if !recipients.is_empty() => Format::Repository,
            None => Format::Archive,
            Some(v) if v.eq_ignore_ascii_case("archive") => {
                if !recipients.is_empty() {
                    bail!(
                        "BACKUP_RECIPIENTS: archives are never encrypted; encryption needs BACKUP_FORMAT=repository\nset BACKUP_FORMAT=repository, or remove BACKUP_RECIPIENTS"
                    );
                }
                Format::Archive
            }
            Some(v) if v.eq_ignore_ascii_case("repository") => Format::Repository,
            Some(v) => bail!(
                "BACKUP_FORMAT: {v:?} is not a backup format\nuse `archive` (the default: a database copy and an uploads tar.gz per backup) or `repository` (deduplicated, optionally encrypted)"
            ),
        };
        if swarm && format == Format::Repository {
            // A swarm stack's dump is taken in the postgres task and streamed into an
            // archive; the repository's chunker runs on this host's own pg_dump only.
            bail!(
                "BACKUP_FORMAT: backups of a swarm stack are written as archives only (pg_dump -Fc in the postgres task), not into the repository yet\nset BACKUP_FORMAT=archive and remove BACKUP_RECIPIENTS"
            );
        }
        let offsite = match lookup("BACKUP_OFFSITE") {
            None => None,
            Some((url, origin)) => Some(S3Settings::parse(
                "BACKUP_OFFSITE",
                &url,
                &origin,
                "copies backups to S3",
                "or leave BACKUP_OFFSITE unset to keep backups on this host only",
                &lookup,
            )?),
        };
        Ok(BackupSettings {
            offsite,
            stack_dir: std::path::absolute(stack_dir).unwrap_or_else(|_| stack_dir.to_path_buf()),
            database_path,
            postgres,
            uploads_dir,
            backup_dir,
            retention_days,
            schedule,
            format,
            recipients,
            uploads_bucket,
            postgres_service: None,
        })
    }

    /// The stack's PostgreSQL database, when it has one: DATABASE_URL's server, or in
    /// swarm mode the postgres service elior runs. `None` for SQLite.
    pub fn postgres_database(&self) -> Option<super::postgres::Source<'_>> {
        match (&self.postgres, &self.postgres_service) {
            (Some(url), _) => Some(super::postgres::Source::Url(url)),
            (None, Some(service)) => Some(super::postgres::Source::SwarmService(service)),
            (None, None) => None,
        }
    }
}

/// MODE=swarm (issue 21): the database and uploads are the swarm's, not in DIR.
fn is_swarm(raw: &RawSettings) -> bool {
    raw.get("MODE")
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("swarm"))
}

/// Whether `inner` is `outer` or lies under it, as written or once symlinks are followed
/// (an uploads folder that links to another disk); a path that does not exist yet is
/// taken as written.
fn lies_within(inner: &Path, outer: &Path) -> bool {
    let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| without_dot_dot(p));
    without_dot_dot(inner).starts_with(without_dot_dot(outer))
        || real(inner).starts_with(real(outer))
}

/// `path` with its `..` components applied (each removes the one before), as the kernel
/// would read it without symlinks: `/srv/a/../b` is `/srv/b`.
fn without_dot_dot(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<BackupSettings> {
        let mut raw = RawSettings::default();
        raw.overlay(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        BackupSettings::from_raw(Path::new("/srv/stack"), &raw)
    }

    #[test]
    fn defaults_resolve_against_the_stack_directory() {
        let s = settings(&[]).unwrap();
        assert_eq!(
            s.database_path,
            PathBuf::from("/srv/stack/data/elior_fitness.db")
        );
        assert_eq!(s.uploads_dir, PathBuf::from("/srv/stack/uploads"));
        assert_eq!(s.backup_dir, PathBuf::from("/srv/stack/backups"));
        assert_eq!(s.retention_days, 30);
        assert_eq!(s.schedule, "0 2 * * *");
    }

    #[test]
    fn container_paths_map_to_the_stack_folders_mounted_there() {
        let s = settings(&[
            ("DATABASE_URL", "sqlite:////app/data/elior_fitness.db"),
            ("UPLOAD_DIR", "/app/uploads"),
        ])
        .unwrap();
        assert_eq!(
            s.database_path,
            PathBuf::from("/srv/stack/data/elior_fitness.db")
        );
        assert_eq!(s.uploads_dir, PathBuf::from("/srv/stack/uploads"));
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = format!(
            "{:#}",
            settings(&[("BACKUP_RETENTION_DAYS", "a month")]).unwrap_err()
        );
        assert!(err.starts_with("BACKUP_RETENTION_DAYS"), "{err}");
        let err = format!(
            "{:#}",
            settings(&[("DATABASE_URL", "postgres://x")]).unwrap_err()
        );
        assert!(err.starts_with("DATABASE_URL"), "{err}");
        assert!(err.contains("names no database"), "{err}");
        let s = settings(&[("BACKUP_DIR", "backups")]).unwrap();
        assert_eq!(s.backup_dir, PathBuf::from("/srv/stack/backups"));
        assert_eq!(s.format, Format::Archive);
    }

    #[test]
    fn a_backup_dir_inside_the_uploads_folder_is_refused() {
        for inside in [
            "uploads",
            "uploads/backups",
            "./x/../uploads/b",
            "/srv/stack/uploads/b",
        ] {
            let err = format!("{:#}", settings(&[("BACKUP_DIR", inside)]).unwrap_err());
            assert!(
                err.contains("is inside the uploads folder /srv/stack/uploads")
                    && err.ends_with("such as /srv/stack/backups (the default)"),
                "{inside}: {err}"
            );
        }
        for outside in ["uploads-backups", "/srv/backups", "uploads/../backups"] {
            assert!(settings(&[("BACKUP_DIR", outside)]).is_ok(), "{outside}");
        }
        // An uploads folder that links to another disk: a BACKUP_DIR there is inside it.
        let tmp = tempfile::tempdir().unwrap();
        let (disk, stack) = (tmp.path().join("disk/uploads"), tmp.path().join("stack"));
        std::fs::create_dir_all(&disk).unwrap();
        std::fs::create_dir_all(&stack).unwrap();
        std::os::unix::fs::symlink(&disk, stack.join("uploads")).unwrap();
        let mut raw = RawSettings::default();
        let inside = disk.join("backups").display().to_string();
        raw.overlay([("BACKUP_DIR".to_string(), inside)]);
        let err = format!("{:#}", BackupSettings::from_raw(&stack, &raw).unwrap_err());
        assert!(err.contains("is inside the uploads folder"), "{err}");
    }

    #[test]
    fn recipients_choose_the_repository_and_bad_ones_name_the_key() {
        let key = age::x25519::Identity::generate().to_public().to_string();
        let s = settings(&[("BACKUP_RECIPIENTS", &format!(" {key}, {key} "))]).unwrap();
        assert_eq!(s.format, Format::Repository);
        assert_eq!(s.recipients, [key.clone(), key.clone()]);
        let s = settings(&[("BACKUP_FORMAT", "Repository")]).unwrap();
        assert_eq!((s.format, s.recipients.len()), (Format::Repository, 0));
        for (pairs, key_named) in [
            (vec![("BACKUP_RECIPIENTS", "age1nope")], "BACKUP_RECIPIENTS"),
            (vec![("BACKUP_FORMAT", "zip")], "BACKUP_FORMAT"),
            (
                vec![
                    ("BACKUP_FORMAT", "archive"),
                    ("BACKUP_RECIPIENTS", key.as_str()),
                ],
                "BACKUP_RECIPIENTS",
            ),
        ] {
            let err = format!("{:#}", settings(&pairs).unwrap_err());
            assert!(err.starts_with(key_named), "{err}");
        }
    }

    #[test]
    fn offsite_reads_the_s3_keys_and_names_its_own() {
        let s = settings(&[
            ("BACKUP_OFFSITE", "s3://elior-backups/gym-a"),
            ("S3_ENDPOINT", "http://127.0.0.1:9000"),
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
        ])
        .unwrap();
        let offsite = s.offsite.unwrap();
        assert_eq!(offsite.url(), "s3://elior-backups/gym-a");
        assert_eq!(offsite.endpoint_url(), "http://127.0.0.1:9000");
        assert!(settings(&[]).unwrap().offsite.is_none());
        let err = format!(
            "{:#}",
            settings(&[("BACKUP_OFFSITE", "/mnt/usb")]).unwrap_err()
        );
        assert!(
            err.starts_with("BACKUP_OFFSITE (environment): \"/mnt/usb\" is not an s3:// URL"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            settings(&[("BACKUP_OFFSITE", "s3://elior-backups")]).unwrap_err()
        );
        assert!(
            err.starts_with(
                "AWS_ACCESS_KEY_ID is not set; BACKUP_OFFSITE (environment) copies backups to S3"
            ),
            "{err}"
        );
    }

    /// A PostgreSQL stack is backed up with pg_dump, into either format (issue 17, item 9).
    #[test]
    fn postgresql_is_backed_up_in_either_format_and_the_password_never_shows() {
        let s = settings(&[("DATABASE_URL", "postgresql://elior:s3cret@db:5432/elior")]).unwrap();
        assert_eq!(s.postgres.as_ref().unwrap().target(), "db:5432/elior");
        assert!(!format!("{s:?}").contains("s3cret"), "{s:?}");
        assert_eq!(s.format, Format::Archive);
        let s = settings(&[
            ("DATABASE_URL", "postgresql://elior:s3cret@db:5432/elior"),
            ("BACKUP_FORMAT", "repository"),
        ])
        .unwrap();
        assert_eq!(s.format, Format::Repository);
    }

    /// Uploads in a bucket: refused, not an archive of the empty local folder (issue 16).
    #[test]
    fn uploads_on_s3_are_refused() {
        let err = format!(
            "{:#}",
            settings(&[("UPLOADS_URL", "s3://bucket/uploads")]).unwrap_err()
        );
        assert!(
            err.starts_with("UPLOADS_URL: backups of uploads kept on S3 (s3://bucket/uploads) are not supported yet"),
            "{err}"
        );
    }
}
