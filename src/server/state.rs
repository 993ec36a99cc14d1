//! The state every handler shares.

use std::sync::Arc;
use std::time::Instant;

use crate::auth::token::TokenKeys;
use crate::config::ServeConfig;
use crate::db::Db;

use super::health::HealthCache;
use super::hub::Hub;
use super::metrics::Metrics;
use super::throttle::Throttle;

/// One `Arc`: axum clones the state for every layer and extractor of every request, and
/// a clone here is one reference-count increment, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub config: Arc<ServeConfig>,
    pub db: Db,
    pub tokens: Arc<TokenKeys>,
    pub metrics: Arc<Metrics>,
    pub throttle: Arc<Throttle>,
    pub health: Arc<HealthCache>,
    pub started: Instant,
    /// Live WebSocket connections, for pushing notifications.
    pub hub: Arc<Hub>,
    /// Upload size limits by kind.
    pub file_limits: crate::files::Limits,
    /// Where uploads are kept: UPLOAD_DIR or a bucket (issue 16).
    pub uploads: crate::files::Store,
    /// Permits for image decodes running at once (one per core).
    pub decodes: Arc<tokio::sync::Semaphore>,
    /// The requests handled at once (`MAX_CONCURRENT_REQUESTS`).
    pub admission: super::admission::Admission,
}

impl AppState {
    /// `metrics` must know the router's routes (see [`super::app`]).
    pub fn new(config: ServeConfig, db: Db, metrics: Metrics) -> Self {
        let tokens = TokenKeys::new(
            config.jwt_secret.expose().as_bytes(),
            config.access_token_ttl,
        );
        // Validated settings (env file or environment), not the raw process environment.
        let file_limits = crate::files::Limits::from_settings(config.max_file_size, |k| match k {
            "MAX_PROFILE_PHOTO_SIZE" => Some(config.max_profile_photo_size.to_string()),
            "MAX_DOCUMENT_SIZE" => Some(config.max_document_size.to_string()),
            _ => None,
        });
        let uploads = crate::files::Store::new(&config.uploads, &config.upload_dir);
        let admission = super::admission::Admission::new(config.max_concurrent_requests);
        AppState(Arc::new(Shared {
            config: Arc::new(config),
            db,
            tokens: Arc::new(tokens),
            metrics: Arc::new(metrics),
            throttle: Arc::new(Throttle::default()),
            health: Arc::new(HealthCache::default()),
            started: Instant::now(),
            hub: Arc::new(Hub::default()),
            file_limits,
            uploads,
            decodes: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            )),
            admission,
        }))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}
