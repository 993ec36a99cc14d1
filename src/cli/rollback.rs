//! `elior rollback`: back to the previous API image, by the same zero-downtime path as a
//! deploy. elior keeps the last few API images for this (see `crate::deploy::KEEP_API_IMAGES`).

use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;

use super::deploy::{deploy_stack, DeployOptions, ImageSource};
use crate::config::model::Stack;
use crate::deploy::api_images;
use crate::docker;
use crate::plan::containers::API_SERVICE;

/// Return the API to the image it ran before the current one (or to --to IMAGE).
///
/// In swarm mode the API service rolls to that image as in an update: one task at a
/// time, start-first and health-gated.
///
/// The previous container is started beside the current one, must become healthy, and
/// nginx switches to it with a graceful reload: no request fails. The last 3 API images
/// are kept for this; `elior status` shows which one runs.
///
/// Examples:
///     elior rollback --dir /srv/elior
///     elior rollback --dir /srv/elior --to elior-fitness-api:3f2a9c1b7d4e
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct RollbackArgs {
    #[command(flatten)]
    options: DeployOptions,
    /// The API image to return to [default: the one before the running one]
    #[arg(long, value_name = "IMAGE")]
    to: Option<String>,
}

impl RollbackArgs {
    pub fn run(self, ctx: &super::Context) -> Result<ExitCode> {
        let stack = Stack::load(ctx.dir())?;
        let target = match self.to.clone() {
            Some(image) => image,
            None => previous_image(&stack, ctx)?,
        };
        if !ctx.quiet {
            eprintln!("rolling back to {target}");
        }
        deploy_stack(
            ctx,
            &self.options,
            None,
            &format!("elior rollback to {target}"),
            "rollback",
            ImageSource::Existing(target),
        )
    }
}

/// The newest API image older than the one the running API container uses.
fn previous_image(stack: &Stack, ctx: &super::Context) -> Result<String> {
    let config = &stack.config;
    let owner = stack
        .owner()
        .ok_or_else(|| anyhow!("{}", stack.no_id_hint()))?;
    let project = owner.project.clone();
    let runtime = docker::runtime()?;
    let swarm = super::swarm::is_swarm(stack);
    runtime.block_on(async {
        let docker = docker::connect().await?;
        let current = if swarm {
            let api = crate::plan::swarm::Names(&project).service(API_SERVICE);
            docker::swarm::current_spec(&docker, &api)
                .await?
                .labels
                .and_then(|l| l.get(crate::plan::swarm::LABEL_IMAGE).cloned())
                .ok_or_else(|| anyhow!("the service {api} names no image"))?
        } else {
            let deploy_hint = ctx.command(&format!("deploy {}", config.domain.as_str()));
            running_image(&docker, &owner, &project, &deploy_hint).await?
        };
        let images = api_images(&docker, config.api_image.as_str()).await?;
        let position = images.iter().position(|i| i.reference == current);
        match position.and_then(|p| images.get(p + 1)) {
            Some(previous) => Ok(previous.reference.clone()),
            None => bail!(
                "no API image older than {current} is left to roll back to\nelior keeps the last {} builds; `docker images {}` lists them",
                crate::deploy::KEEP_API_IMAGES,
                docker::image::repository(config.api_image.as_str())
            ),
        }
    })
}

/// The image the running API container of a single-host stack uses.
async fn running_image(
    docker: &bollard::Docker,
    owner: &crate::config::identity::Owner,
    project: &str,
    deploy_hint: &str,
) -> Result<String> {
    let running = docker::apply::observe(docker, owner)
        .await?
        .into_iter()
        .find(|c| c.service == API_SERVICE && c.state == "running")
        .ok_or_else(|| anyhow!("{project} runs no api container\nrun `{deploy_hint}` first"))?;
    let inspect = docker
        .inspect_container(
            &running.name,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .with_context(|| format!("failed to inspect container {}", running.name))?;
    Ok(inspect.config.and_then(|c| c.image).unwrap_or_default())
}
