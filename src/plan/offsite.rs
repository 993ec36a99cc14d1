//! Offsite copies of backups (issue 17, item 6): which files of the backup folder belong
//! in the bucket, in which order they are uploaded, and which remote keys may ever become
//! local paths. Pure: the listing of both sides comes in, the steps go out.
//!
//! The bucket mirrors the backup folder under `PREFIX/`: the repository as
//! `repository/{config.json, keys/K.age, packs/XX/NAME, snapshots/ID.json}`, archive
//! backups under their own names, and `stack.json` naming the stack they belong to.
//! Content-addressed files (packs, wrapped keys, an archive's parts) never change once
//! written, so one present with the right size is skipped. A snapshot or manifest is
//! uploaded last: the remote side never lists a backup whose data is not all there.

use std::collections::BTreeMap;

use crate::backup::names::{self, Part};

/// The object naming the stack whose backups a prefix holds.
pub const STACK_OBJECT: &str = "stack.json";

/// What a file of the backup folder is, offsite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// Named by its content or its backup (packs, wrapped keys, archive parts): written
    /// once, never changed.
    Data,
    /// The repository's config.json: small, rewritten when the recipients change.
    Mutable,
    /// A snapshot or an archive's manifest: it makes a backup exist, so it goes last.
    Seal,
}

/// A remote key (relative to the prefix) that is elior's, and what it is; `None` for
/// any other key, which is never downloaded (so no remote name becomes a local path
/// unless it is one elior writes: hex names, backup ids, fixed folders).
pub fn classify(relative: &str) -> Option<(Class, Option<String>)> {
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    let parts: Vec<&str> = relative.split('/').collect();
    match parts.as_slice() {
        ["repository", "config.json"] => Some((Class::Mutable, None)),
        ["repository", "keys", name] => {
            let key = name.strip_suffix(".age")?;
            (key.len() >= 16 && key.len() <= 64 && hex(key, key.len()))
                .then_some((Class::Data, None))
        }
        ["repository", "packs", dir, name] => {
            (hex(dir, 2) && hex(name, 64) && name.starts_with(dir)).then_some((Class::Data, None))
        }
        ["repository", "snapshots", name] => {
            let id = name.strip_suffix(".json")?;
            names::parse_id(id).map(|_| (Class::Seal, Some(id.to_string())))
        }
        [name] => {
            let (part, id) = names::parse_file_name(name)?;
            let class = if part == Part::Manifest {
                Class::Seal
            } else {
                Class::Data
            };
            Some((class, Some(id)))
        }
        _ => None,
    }
}

/// A file of the local backup folder that belongs offsite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    /// Relative to the backup folder, `/`-separated: the key under the prefix.
    pub path: String,
    pub size: u64,
    pub class: Class,
    /// MD5 (hex) of a mutable file, compared with the remote ETag.
    pub md5: Option<String>,
}

/// An object in the bucket, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub size: u64,
    /// The ETag without quotes.
    pub etag: Option<String>,
}

/// Why a file is uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Why {
    Missing,
    /// Present with another size (a killed multipart upload, a damaged copy).
    SizeDiffers,
    /// The config changed (its content, not its size).
    Changed,
}

/// The uploads of one run, in order: data first, then config, then seals.
pub fn uploads(local: &[Local], remote: &BTreeMap<String, Remote>) -> Vec<(Local, Why)> {
    let mut steps: Vec<(Local, Why)> = local
        .iter()
        .filter_map(|l| {
            let why = match remote.get(&l.path) {
                None => Why::Missing,
                Some(r) if r.size != l.size => Why::SizeDiffers,
                Some(r) if l.class == Class::Mutable && r.etag != l.md5 => Why::Changed,
                Some(_) => return None,
            };
            Some((l.clone(), why))
        })
        .collect();
    steps.sort_by(|(a, _), (b, _)| (a.class, &a.path).cmp(&(b.class, &b.path)));
    steps
}

/// Whether an ETag is the MD5 of the whole object (a single PUT without KMS): 32 hex
/// digits. A multipart ETag (`HASH-N`) is not.
pub fn etag_is_md5(etag: &str) -> bool {
    etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACK: &str = "ab00000000000000000000000000000000000000000000000000000000000001";

    #[test]
    fn only_names_elior_writes_are_classified() {
        assert_eq!(
            classify(&format!("repository/packs/ab/{PACK}")),
            Some((Class::Data, None))
        );
        assert_eq!(
            classify("repository/snapshots/20261129_020000.json"),
            Some((Class::Seal, Some("20261129_020000".into())))
        );
        assert_eq!(
            classify("backup_20261129_020000.json"),
            Some((Class::Seal, Some("20261129_020000".into())))
        );
        assert_eq!(
            classify("uploads_backup_20261129_020000.tar.gz"),
            Some((Class::Data, Some("20261129_020000".into())))
        );
        assert_eq!(
            classify("repository/config.json"),
            Some((Class::Mutable, None))
        );
        assert_eq!(
            classify("repository/keys/00112233445566778899aabbccddeeff.age"),
            Some((Class::Data, None))
        );
        for hostile in [
            "../../etc/passwd",
            "repository/packs/../../x",
            &format!("repository/packs/cd/{PACK}"),
            "repository/packs/ab/short",
            "repository/snapshots/../../x.json",
            "repository/snapshots/latest.json",
            "repository/files-cache.json",
            "repository/.elior/deploy.lock",
            "repository/keys/../../x.age",
            "stack.json",
            "notes.txt",
            "/backup_20261129_020000.json",
        ] {
            assert_eq!(classify(hostile), None, "{hostile}");
        }
    }

    fn local(path: &str, size: u64, class: Class) -> Local {
        Local {
            path: path.into(),
            size,
            class,
            md5: (class == Class::Mutable).then(|| "aa".repeat(16)),
        }
    }

    #[test]
    fn data_goes_first_seals_last_and_present_data_is_skipped() {
        let files = vec![
            local("repository/snapshots/20261129_020000.json", 10, Class::Seal),
            local("repository/packs/ab/x", 100, Class::Data),
            local("repository/config.json", 5, Class::Mutable),
            local("repository/packs/cd/y", 200, Class::Data),
            local("repository/packs/ef/z", 300, Class::Data),
        ];
        let remote = BTreeMap::from([
            (
                "repository/packs/ab/x".to_string(),
                Remote {
                    size: 100,
                    etag: None,
                },
            ),
            (
                "repository/packs/cd/y".to_string(),
                Remote {
                    size: 7,
                    etag: None,
                },
            ),
            (
                "repository/config.json".to_string(),
                Remote {
                    size: 5,
                    etag: Some("bb".repeat(16)),
                },
            ),
        ]);
        let steps: Vec<(&str, Why)> = uploads(&files, &remote)
            .iter()
            .map(|(l, w)| (l.path.as_str(), *w))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|(p, w)| (&files.iter().find(|f| f.path == p).unwrap().path[..], w))
            .collect();
        assert_eq!(
            steps,
            [
                ("repository/packs/cd/y", Why::SizeDiffers),
                ("repository/packs/ef/z", Why::Missing),
                ("repository/config.json", Why::Changed),
                ("repository/snapshots/20261129_020000.json", Why::Missing),
            ]
        );
        assert!(etag_is_md5(&"0f".repeat(16)));
        assert!(!etag_is_md5("0f0f-2"));
    }
}
