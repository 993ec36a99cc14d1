//! `elior render`: writes the stack's compose file and nginx.conf from `.env.production`,
//! or with `--check` reports how the files on disk differ from what would be written.
//!
//! Validation and rendering are pure (`config::stack`, `plan::render`); this file reads
//! templates and writes the results, atomically and only when everything rendered.

use std::fs;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::plan::render::{self, RenderedFile, Templates, Upstream};

/// Render docker-compose.prod.yml and nginx/nginx.conf from the stack's .env.production.
///
/// Templates are compiled into elior; --templates DIR uses DIR/docker-compose.prod.yml.j2
/// and/or DIR/nginx.conf.j2 instead where they exist (minijinja syntax; copy the originals
/// from the elior repository's templates/ folder to start).
///
/// Nothing is written unless every setting is valid and every file rendered. Files are
/// replaced atomically, and left alone when already up to date.
///
/// Examples:
///     elior render --dir /srv/elior
///     elior render --check          # exit 1 and print a diff if a file was edited by hand
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct RenderArgs {
    /// Change nothing; print a unified diff and exit 1 if the files on disk differ
    #[arg(long)]
    check: bool,
    /// Folder of template overrides
    #[arg(long, value_name = "DIR")]
    templates: Option<PathBuf>,
}

impl RenderArgs {
    pub fn run(self, ctx: &super::Context) -> Result<ExitCode> {
        let config = crate::config::model::Stack::load(ctx.dir())?.config;
        super::config::print_warnings(&config);
        let templates = load_templates(self.templates.as_deref())?;
        let files = render::render_stack(&config, &templates, &Upstream::service(&config))?;
        if self.check {
            return check(ctx.dir(), &files);
        }
        write_files(ctx.dir(), &files)?;
        Ok(ExitCode::SUCCESS)
    }
}

/// Writes the rendered files that differ from what is on disk (deploy renders a stack
/// without a compose file through this too).
pub fn write_files(dir: &Path, files: &[RenderedFile]) -> Result<()> {
    for file in files {
        let path = dir.join(file.path);
        if fs::read_to_string(&path).is_ok_and(|old| old == file.contents) {
            outln!("{} is up to date", file.path);
            continue;
        }
        write_atomic(&path, file.contents.as_bytes(), 0o644)?;
        outln!("wrote {}", file.path);
    }
    Ok(())
}

/// The embedded templates, with the ones found in `dir` in their place.
pub fn load_templates(dir: Option<&Path>) -> Result<Templates> {
    let mut templates = Templates::embedded();
    let Some(dir) = dir else {
        return Ok(templates);
    };
    if !dir.is_dir() {
        bail!(
            "template folder {} does not exist\npass a folder holding {} and/or {}",
            dir.display(),
            render::COMPOSE_TEMPLATE,
            render::NGINX_TEMPLATE
        );
    }
    let mut found = 0;
    for name in [render::COMPOSE_TEMPLATE, render::NGINX_TEMPLATE] {
        let path = dir.join(name);
        if path.exists() {
            let text = fs::read_to_string(&path)
                .with_context(|| format!("failed to read template {}", path.display()))?;
            templates.set(name, text)?;
            eprintln!("using template {}", path.display());
            found += 1;
        }
    }
    if found == 0 {
        bail!(
            "template folder {} holds neither {} nor {}\nname the files exactly so",
            dir.display(),
            render::COMPOSE_TEMPLATE,
            render::NGINX_TEMPLATE
        );
    }
    Ok(templates)
}

fn check(dir: &Path, files: &[RenderedFile]) -> Result<ExitCode> {
    let mut drifted = Vec::new();
    for file in files {
        let path = dir.join(file.path);
        let on_disk = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("failed to read {}", path.display())),
        };
        if on_disk != file.contents {
            let diff = similar::TextDiff::from_lines(&on_disk, &file.contents);
            out!(
                "{}",
                diff.unified_diff().context_radius(3).header(
                    &format!("{} (on disk)", file.path),
                    &format!("{} (rendered)", file.path)
                )
            );
            drifted.push(file.path);
        }
    }
    if drifted.is_empty() {
        eprintln!(
            "up to date: {}",
            files.iter().map(|f| f.path).collect::<Vec<_>>().join(", ")
        );
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "drift: {} {} from what `elior render` would write\nrun `elior render` to overwrite them, or move hand edits into .env.production or --templates",
            drifted.join(", "),
            if drifted.len() == 1 { "differs" } else { "differ" }
        );
        Ok(ExitCode::from(super::EXIT_CHECK_FAILED))
    }
}

pub use crate::fsutil::write_atomic;
