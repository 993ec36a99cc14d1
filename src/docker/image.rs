//! The API image, built `FROM scratch` out of the running elior binary itself: no base
//! image and no registry. The build context (binary, the shared libraries `ldd` lists when
//! the binary is dynamic, and a Dockerfile) is a tar made in memory with fixed metadata,
//! so equal inputs give an equal content hash, and the image is tagged by that hash: a
//! tag that already exists means the build is skipped.
//!
//! Collecting files and hashing is pure apart from reading them; talking to the engine is
//! in [`ensure_api_image`]. It must not decide which image a stack runs (that is deploy's).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};
use bollard::query_parameters::{BuildImageOptions, TagImageOptions};
use bollard::Docker;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

/// Where the binary lives inside the image; the compose file's command and healthcheck
/// name this path.
pub const BINARY_PATH: &str = "usr/local/bin/elior";
/// The numeric user the API runs as (the compose file's `user:` too); needs no
/// /etc/passwd in a scratch image.
pub const API_UID: u32 = crate::plan::render::API_UID;
/// Labels on every image elior builds.
pub const LABEL_IMAGE_ROLE: &str = "elior.image";
pub const LABEL_CONTENT_HASH: &str = "elior.content-hash";
pub const LABEL_VERSION: &str = "org.opencontainers.image.version";
pub const LABEL_REVISION: &str = "org.opencontainers.image.revision";

/// One file of the image's root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFile {
    /// Path inside the image, without the leading `/`.
    pub path: String,
    /// Where to read it on this host (symlinks are followed).
    pub source: PathBuf,
    pub mode: u32,
}

/// The libraries `ldd` prints for a dynamic binary (absolute paths, the loader included),
/// or none for a static one.
pub fn parse_ldd(output: &str) -> Vec<String> {
    let mut libs = Vec::new();
    for line in output.lines() {
        let line = line.trim();
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or `/lib64/ld-linux-x86-64.so.2 (0x...)`;
        // the vDSO (`linux-vdso.so.1 (0x...)`) has no file.
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.trim(),
            None => line,
        };
        let path = path.split(" (").next().unwrap_or("").trim();
        if path.starts_with('/') && !libs.iter().any(|l| l == path) {
            libs.push(path.to_string());
        }
    }
    libs
}

/// The files of the API image for `binary`: the binary at [`BINARY_PATH`] plus its shared
/// libraries at the paths the loader looks for them.
pub fn image_files(binary: &Path) -> Result<Vec<ImageFile>> {
    let mut files = vec![ImageFile {
        path: BINARY_PATH.to_string(),
        source: binary.to_path_buf(),
        mode: 0o755,
    }];
    let output = Command::new("ldd").arg(binary).output().with_context(|| {
        format!(
            "failed to run ldd on {}\ninstall libc-bin, which ships ldd",
            binary.display()
        )
    })?;
    // ldd exits non-zero for a static binary ("not a dynamic executable").
    let stdout = String::from_utf8_lossy(&output.stdout);
    if output.status.success() {
        for lib in parse_ldd(&stdout) {
            files.push(ImageFile {
                path: lib.trim_start_matches('/').to_string(),
                source: PathBuf::from(&lib),
                mode: 0o755,
            });
        }
    }
    Ok(files)
}

/// glibc tuning for the API process. argon2 hashes a password in a 9 MiB block; with
/// glibc's default dynamic mmap threshold such a freed block stays resident in the heap,
/// and each worker thread gets its own arena. A fixed threshold sends large blocks back
/// to the kernel on free, and two arenas are plenty for a 2-core host.
pub const MALLOC_ENV: &str = "MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=131072";

/// The Dockerfile of the API image. The content hash is not in it (it is the hash *of*
/// the context); it is attached as a build label instead.
pub fn dockerfile(version: &str, revision: &str) -> String {
    format!(
        "FROM scratch\n\
         COPY rootfs/ /\n\
         USER {API_UID}:{API_UID}\n\
         ENV {MALLOC_ENV}\n\
         EXPOSE 8000\n\
         HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 CMD [\"/{BINARY_PATH}\", \"healthcheck\"]\n\
         CMD [\"/{BINARY_PATH}\", \"serve\"]\n\
         LABEL {LABEL_IMAGE_ROLE}=\"api\" {LABEL_VERSION}=\"{version}\" {LABEL_REVISION}=\"{revision}\"\n"
    )
}

/// A build context tar: the Dockerfile and `rootfs/` with every file, in path order, with
/// mtime 0 and owner root, so the same inputs always give the same bytes.
pub fn context_tar(dockerfile: &str, files: &[ImageFile]) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    let mut sorted: BTreeMap<String, &ImageFile> = BTreeMap::new();
    for file in files {
        sorted.insert(format!("rootfs/{}", file.path), file);
        let mut parent = Path::new("rootfs").join(&file.path);
        while let Some(p) = parent.parent() {
            if p.as_os_str().is_empty() {
                break;
            }
            dirs.insert(p.to_string_lossy().into_owned());
            parent = p.to_path_buf();
        }
    }
    let header = |size: u64, mode: u32, kind: tar::EntryType| {
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(kind);
        h
    };
    let mut h = header(dockerfile.len() as u64, 0o644, tar::EntryType::Regular);
    builder.append_data(&mut h, "Dockerfile", dockerfile.as_bytes())?;
    for dir in &dirs {
        let mut h = header(0, 0o755, tar::EntryType::Directory);
        builder.append_data(&mut h, format!("{dir}/"), std::io::empty())?;
    }
    for (path, file) in sorted {
        let data = std::fs::read(&file.source).with_context(|| {
            format!("failed to read {} for the API image", file.source.display())
        })?;
        let mut h = header(data.len() as u64, file.mode, tar::EntryType::Regular);
        builder.append_data(&mut h, path, data.as_slice())?;
    }
    builder
        .into_inner()
        .context("failed to finish the build context tar")
}

/// The content hash of a build context: the first 12 hex digits of its SHA-256.
pub fn content_hash(context: &[u8]) -> String {
    hex::encode(Sha256::digest(context))[..12].to_string()
}

/// The repository part of an image reference (`name[:tag]` without the tag).
pub fn repository(reference: &str) -> &str {
    let last_slash = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[last_slash..].find(':') {
        Some(i) => &reference[..last_slash + i],
        None => reference,
    }
}

/// The outcome of [`ensure_api_image`].
#[derive(Debug, Clone)]
pub struct ApiImage {
    /// `REPOSITORY:HASH`, what containers are created from.
    pub reference: String,
    pub content_hash: String,
    /// False when the tag existed and nothing was built.
    pub built: bool,
    pub size_bytes: i64,
}

/// The build context of the API image for `binary`, and its content hash.
pub fn prepare(binary: &Path) -> Result<(Vec<u8>, String)> {
    let files = image_files(binary)?;
    let context = context_tar(&dockerfile(crate::VERSION, crate::GIT_REVISION), &files)?;
    let hash = content_hash(&context);
    Ok((context, hash))
}

/// The reference [`ensure_api_image`] would produce, without building anything.
pub fn planned_reference(api_image: &str, binary: &Path) -> Result<String> {
    let (_, hash) = prepare(binary)?;
    Ok(format!("{}:{hash}", repository(api_image)))
}

/// Builds the API image from `binary` as `repository(api_image):HASH` unless that tag
/// exists, then points `api_image` (e.g. `elior-fitness-api:latest`, the name the compose
/// file uses) at it too.
pub async fn ensure_api_image(docker: &Docker, api_image: &str, binary: &Path) -> Result<ApiImage> {
    let (context, hash) = prepare(binary)?;
    let repo = repository(api_image);
    let reference = format!("{repo}:{hash}");

    let existing = super::absent_as_none(docker.inspect_image(&reference).await)
        .with_context(|| format!("failed to inspect image {reference}"))?;
    let built = existing.is_none();
    if built {
        build(docker, &reference, &hash, context).await?;
    }
    let inspect = docker
        .inspect_image(&reference)
        .await
        .with_context(|| format!("failed to inspect image {reference} after building it"))?;
    if api_image != reference {
        let tag = api_image
            .strip_prefix(repo)
            .and_then(|t| t.strip_prefix(':'))
            .unwrap_or("latest");
        docker
            .tag_image(
                &reference,
                Some(TagImageOptions {
                    repo: Some(repo.to_string()),
                    tag: Some(tag.to_string()),
                }),
            )
            .await
            .with_context(|| format!("failed to tag {reference} as {repo}:{tag}"))?;
    }
    Ok(ApiImage {
        reference,
        content_hash: hash,
        built,
        size_bytes: inspect.size.unwrap_or(0),
    })
}

/// Sends the context to POST /build, drains the stream, and fails on its first error.
async fn build(docker: &Docker, reference: &str, hash: &str, context: Vec<u8>) -> Result<()> {
    let options = BuildImageOptions {
        dockerfile: "Dockerfile".to_string(),
        t: Some(reference.to_string()),
        rm: true,
        forcerm: true,
        labels: Some(HashMap::from([(
            LABEL_CONTENT_HASH.to_string(),
            hash.to_string(),
        )])),
        ..Default::default()
    };
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    let mut tail: Vec<String> = Vec::new();
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| anyhow!("failed to build image {reference}: {e}"))?;
        if let Some(error) = info.error.or(info.error_detail.and_then(|d| d.message)) {
            bail!(
                "failed to build image {reference}: {error}\nlast build output:\n{}",
                tail.join("")
            );
        }
        if let Some(line) = info.stream {
            tail.push(line);
            if tail.len() > 20 {
                tail.remove(0);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_library_paths_with_the_loader_and_without_the_vdso() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f1)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f3)\n";
        assert_eq!(
            parse_ldd(out),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
        assert!(parse_ldd("\tstatically linked\n").is_empty());
    }

    #[test]
    fn the_context_is_deterministic_and_its_hash_follows_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::write(&bin, b"one").unwrap();
        let files = [ImageFile {
            path: "usr/local/bin/elior".into(),
            source: bin.clone(),
            mode: 0o755,
        }];
        let a = context_tar("FROM scratch\n", &files).unwrap();
        let b = context_tar("FROM scratch\n", &files).unwrap();
        assert_eq!(content_hash(&a), content_hash(&b));
        std::fs::write(&bin, b"two").unwrap();
        let c = context_tar("FROM scratch\n", &files).unwrap();
        assert_ne!(content_hash(&a), content_hash(&c));
    }

    #[test]
    fn the_dockerfile_uses_the_exec_form_healthcheck_and_a_numeric_user() {
        let d = dockerfile("1.2.3", "abc");
        assert!(d.contains("HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 CMD [\"/usr/local/bin/elior\", \"healthcheck\"]"));
        assert!(d.contains("USER 10001:10001"));
        assert!(d.contains("CMD [\"/usr/local/bin/elior\", \"serve\"]"));
    }

    #[test]
    fn repositories_drop_the_tag_but_keep_a_registry_port() {
        assert_eq!(repository("elior-fitness-api:latest"), "elior-fitness-api");
        assert_eq!(repository("localhost:5000/api"), "localhost:5000/api");
        assert_eq!(repository("localhost:5000/api:1"), "localhost:5000/api");
    }
}
