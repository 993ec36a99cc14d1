//! `elior serve`: the API server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use crate::config::ServeConfig;
use crate::db::Db;
use crate::logging::{self, Format};
use crate::server;

/// Run the Elior Fitness API server.
///
/// Settings come from the environment and, with --env-file, from a stack's env file
/// (variables in the environment win). Keys: ENVIRONMENT (development|production), DOMAIN,
/// CORS_ORIGINS, JWT_SECRET, ACCESS_TOKEN_EXPIRE_MINUTES, DATABASE_URL
/// (default sqlite:///./data/elior_fitness.db), UPLOAD_DIR, MAX_FILE_SIZE, LOG_LEVEL,
/// BIND_ADDRESS and TRUSTED_PROXIES (addresses or CIDRs whose X-Forwarded-For is believed).
/// UPLOADS_URL=s3://BUCKET/PREFIX keeps uploads in an S3-compatible bucket instead of
/// UPLOAD_DIR, with S3_ENDPOINT, S3_REGION, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
/// MAX_CONNECTIONS (default 20000, or what the open-file limit allows; HTTP and WebSocket
/// together; past it a 503 with Retry-After), MAX_CONCURRENT_REQUESTS (default 64
/// requests handled at once; the others wait their turn; 0: no limit) and
/// WS_TIMEOUT_SECONDS (default 30: a WebSocket silent that long is closed).
///
/// In development a missing JWT_SECRET is replaced by a random one for this run. In
/// production the server refuses to start without a secret of at least 32 characters.
/// SIGTERM or Ctrl-C drains in-flight requests (up to 10 s) and checkpoints the database.
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct ServeArgs {
    /// Read settings from this env file, e.g. .env.production
    #[arg(long, value_name = "PATH")]
    env_file: Option<PathBuf>,
    /// Listen address; beats BIND_ADDRESS [default: 0.0.0.0:8000]
    #[arg(long, value_name = "IP:PORT")]
    bind: Option<SocketAddr>,
}

impl ServeArgs {
    pub fn run(self) -> Result<ExitCode> {
        let raw = crate::config::model::read_settings(self.env_file.as_deref())?;
        let config = ServeConfig::from_raw(&raw, self.bind).context("invalid configuration")?;

        let format = if config.is_production() {
            Format::Json
        } else {
            Format::Human
        };
        logging::init(&config.log_filter, format);
        if config.jwt_secret_is_ephemeral {
            tracing::warn!("JWT_SECRET is not set: using a random secret for this run; tokens stop working at restart");
        }

        let target = match &config.postgres {
            Some(url) => crate::db::Target::Postgres(url.clone()),
            None => crate::db::Target::Sqlite(config.database_path.clone()),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            // Blocking threads run database calls; more of them than pooled connections
            // would only wait on the pool while holding a stack each (the 4 spare ones are
            // for file I/O and password hashes beside a full pool).
            .max_blocking_threads(target.pool_size() as usize + 4)
            .build()
            .context("failed to start the async runtime")?;
        runtime.block_on(async move {
            if let crate::db::Target::Sqlite(path) = &target {
                crate::backup::recover_interrupted_restore_at(path)?;
            }
            let db = Db::open_target(&target, config.database_connect_retry, config.db_write_queue)
                .await?;
            warn_if_the_schema_is_newer(&db).await;
            // A bucket that is missing, refuses the keys or cannot be reached stops the
            // start here, in one line naming the key to fix, before serving (issue 16).
            let app = server::app(config.clone(), db);
            app.state().uploads.verify().await?;
            let listener = tokio::net::TcpListener::bind(config.bind).await.with_context(|| {
                format!(
                    "failed to listen on {}\nis another process using the port? pick another with --bind or BIND_ADDRESS",
                    config.bind
                )
            })?;
            let local = listener.local_addr()?;
            tracing::info!(
                version = crate::VERSION,
                environment = config.environment.as_str(),
                database = %target,
                uploads = %app.state().uploads.describe(),
                "listening on http://{local}"
            );
            server::launch(listener, app, server::shutdown_signal()).await
        })?;
        Ok(ExitCode::SUCCESS)
    }
}

/// A database a later release migrated (an image rolled back past a migration) is served:
/// refusing it could block an emergency rollback. The log says what it is and the ways
/// back, since this build does not know the newer tables.
async fn warn_if_the_schema_is_newer(db: &Db) {
    let known = crate::db::migrations::latest_for(db.backend());
    let applied = db.read(|c| crate::db::migrations::applied_version(c)).await;
    if let Some(applied) = applied.ok().filter(|v| *v > known) {
        tracing::warn!(
            applied,
            known,
            "the database's schema (version {applied}) is newer than this build's ({known}): a later release migrated it; deploy that release again, or restore a backup taken before it"
        );
    }
}
