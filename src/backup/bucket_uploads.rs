//! A swarm stack's uploads bucket against a backup's listing of it (issue 21). A backup
//! of a stack whose uploads are on S3 (UPLOADS_URL) lists the bucket's objects (key,
//! size, etag) into its manifest; it does not copy them. So a restore can only check
//! that those objects are still in the bucket and name the ones that are not: it cannot
//! bring a deleted object back (the bucket's versioning or replication can).
//!
//! [`compare`] is the pure judgement; [`check`] lists the bucket for it.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;

use super::manifest::UploadObject;
use crate::files::settings::S3Settings;
use crate::plan::offsite::Remote;

/// The backup's uploads as the bucket holds them now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UploadsCheck {
    /// `s3://BUCKET/PREFIX`.
    pub bucket: String,
    /// Objects the backup lists.
    pub listed: usize,
    /// Listed keys no longer in the bucket: the restored database refers to them, and
    /// they cannot be restored.
    pub missing: Vec<String>,
    /// Listed keys whose object was replaced since (another size or etag).
    pub changed: Vec<String>,
}

/// Which of the `listed` objects are missing from, or changed in, the bucket's `now`.
pub fn compare(
    bucket: &str,
    listed: &[UploadObject],
    now: &BTreeMap<String, Remote>,
) -> UploadsCheck {
    let mut check = UploadsCheck {
        bucket: bucket.to_string(),
        listed: listed.len(),
        missing: Vec::new(),
        changed: Vec::new(),
    };
    for object in listed {
        match now.get(&object.key) {
            None => check.missing.push(object.key.clone()),
            Some(remote) => {
                let etag_differs =
                    matches!((&object.etag, &remote.etag), (Some(a), Some(b)) if a != b);
                if remote.size != object.size || etag_differs {
                    check.changed.push(object.key.clone());
                }
            }
        }
    }
    check
}

/// Lists the bucket and compares it with the backup's `listed` objects.
pub fn check(bucket: &S3Settings, listed: &[UploadObject]) -> Result<UploadsCheck> {
    let now = super::offsite::Bucket::new(bucket)?.list()?;
    Ok(compare(&bucket.url(), listed, &now))
}

impl UploadsCheck {
    /// One line per problem, for the restore's output; empty when every object is there.
    pub fn problems(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if !self.missing.is_empty() {
            lines.push(format!(
                "{} of the {} uploads this backup lists are no longer in {}, and a restore cannot bring them back (backups list the bucket, they do not copy it; recover them from the bucket's versioning or replication): {}",
                self.missing.len(),
                self.listed,
                self.bucket,
                self.missing.join(", ")
            ));
        }
        if !self.changed.is_empty() {
            lines.push(format!(
                "{} uploads were replaced in {} since this backup (another size or etag); the bucket's current version stays: {}",
                self.changed.len(),
                self.bucket,
                self.changed.join(", ")
            ));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(key: &str, size: u64, etag: &str) -> UploadObject {
        UploadObject {
            key: key.to_string(),
            size,
            etag: Some(etag.to_string()),
        }
    }

    #[test]
    fn missing_and_replaced_objects_are_named_and_new_ones_ignored() {
        let listed = [
            object("documents/a.pdf", 10, "e1"),
            object("documents/b.pdf", 20, "e2"),
            object("avatars/c.png", 30, "e3"),
        ];
        let remote = |size, etag: &str| Remote {
            size,
            etag: Some(etag.to_string()),
        };
        let now = BTreeMap::from([
            ("documents/a.pdf".to_string(), remote(10, "e1")),
            ("avatars/c.png".to_string(), remote(30, "other")),
            ("documents/later.pdf".to_string(), remote(5, "e9")),
        ]);
        let check = compare("s3://gym/up", &listed, &now);
        assert_eq!(check.missing, ["documents/b.pdf"]);
        assert_eq!(check.changed, ["avatars/c.png"]);
        let problems = check.problems();
        assert_eq!(problems.len(), 2);
        assert!(
            problems[0].starts_with("1 of the 3 uploads this backup lists are no longer in s3://gym/up, and a restore cannot bring them back"),
            "{}",
            problems[0]
        );
        assert!(
            problems[0].ends_with(": documents/b.pdf"),
            "{}",
            problems[0]
        );

        let all_there = compare("s3://gym/up", &listed[..1], &now);
        assert!(all_there.problems().is_empty());
    }
}
