//! `/api/files`: uploading (checked by content, stored under a random name with its
//! derivatives), serving with an access check, deleting with derivatives, and admin stats.
//!
//! A file belongs to a client (its owner). Who may read it follows
//! [`crate::server::access`]: the owner, their trainer, or an admin. Files live in the
//! [`crate::files::Store`]: with the local folder, a download behind nginx is handed off
//! with `X-Accel-Redirect` (see [`ACCEL_UPLOADS_PREFIX`]); with S3 the API streams the
//! object itself after the same check, so objects never need to be public (issue 16).

use crate::server::json::Json;
use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::db::files::{self, FileRecord, KindStats};
use crate::db::users::Role;
use crate::files::{self as store, Kind, Rejection, Size};
use crate::server::access::{query, visible_client, visible_owner, write, Actor};
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::AuthUser;
use crate::server::openapi;
use crate::server::params::{ApiPath, ApiQuery};
use crate::server::routes::{created, deleted, Created};
use crate::server::state::AppState;

/// Behind the stack's nginx (the TCP peer is one of TRUSTED_PROXIES) a permitted download
/// is answered with `X-Accel-Redirect: {ACCEL_UPLOADS_PREFIX}{kind}/[size/]{name}`, which
/// nginx serves from its `internal` location over UPLOAD_DIR. Anyone else gets the bytes.
pub use crate::plan::render::paths::ACCEL_UPLOADS_PREFIX;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        // Limits are per kind and enforced while reading, in `read_file_field`.
        .routes(openapi::layered(
            routes!(upload),
            DefaultBodyLimit::disable(),
        ))
        .routes(openapi::layered(
            routes!(upload_document),
            DefaultBodyLimit::disable(),
        ))
        .routes(routes!(stats))
        .routes(routes!(serve, remove))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UploadedFile {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    #[schema(format = "uri-reference")]
    pub url: String,
    pub thumbnail_url: Option<String>,
    pub medium_url: Option<String>,
    pub content_type: String,
    pub size: i64,
}

impl From<FileRecord> for UploadedFile {
    fn from(f: FileRecord) -> Self {
        let kind = Kind::parse(&f.kind).unwrap_or(Kind::Documents);
        let url = store::media_url(kind, &f.name);
        let image = f.content_type.starts_with("image/");
        UploadedFile {
            thumbnail_url: image.then(|| format!("{url}?size=thumbnail")),
            medium_url: image.then(|| format!("{url}?size=medium")),
            url,
            kind: f.kind,
            name: f.name,
            content_type: f.content_type,
            size: f.size,
        }
    }
}

/// A multipart read that failed: 408 when the body stalled, else 422 naming the field.
fn multipart_error(field: &str, e: axum::extract::multipart::MultipartError) -> ApiError {
    crate::server::limits::BodyStalled::answer(&e)
        .unwrap_or_else(|| ApiError::field(field, e.body_text()))
}

pub fn multipart_or_422(m: Result<Multipart, MultipartRejection>) -> ApiResult<Multipart> {
    m.map_err(|e| ApiError::field("file", e.body_text()))
}

/// Reads the first field named one of `names`, refusing it as soon as it passes `limit`
/// bytes (the body is never buffered beyond that).
pub async fn read_file_field(mut m: Multipart, names: &[&str], limit: u64) -> ApiResult<Vec<u8>> {
    let field_name = names[0];
    while let Some(mut field) = m
        .next_field()
        .await
        .map_err(|e| multipart_error(field_name, e))?
    {
        if !field.name().is_some_and(|n| names.contains(&n)) {
            continue;
        }
        let mut bytes = Vec::new();
        let mut seen: u64 = 0;
        while let Some(chunk) = field
            .chunk()
            .await
            .map_err(|e| multipart_error(field_name, e))?
        {
            seen += chunk.len() as u64;
            // Past the limit, keep reading (and dropping) up to twice the limit so the
            // client, still sending, gets the 422 rather than a reset connection.
            if seen > limit.saturating_mul(2) {
                break;
            }
            if seen <= limit {
                bytes.extend_from_slice(&chunk);
            }
        }
        if seen > limit {
            return Err(ApiError::field(
                field_name,
                Rejection::TooLarge { limit }.to_string(),
            ));
        }
        return Ok(bytes);
    }
    Err(ApiError::field(
        field_name,
        "is required (a multipart file field)",
    ))
}

/// Checks `bytes` by content, stores them with derivatives and records the file for
/// `owner_id`. The caller has already authorized the owner.
pub async fn save(
    state: &AppState,
    kind: Kind,
    owner_id: i64,
    bytes: Vec<u8>,
    field: &str,
) -> ApiResult<FileRecord> {
    let detected = store::check(kind, &bytes, &state.file_limits).map_err(|r| {
        if r.is_limit() {
            ApiError::Limit {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                detail: r.to_string(),
            }
        } else {
            ApiError::field(field, r.to_string())
        }
    })?;
    let size = bytes.len() as i64;
    // Decoding an image takes up to 4 bytes a pixel (160 MB at the pixel limit): bound
    // how many run at once, the rest wait their turn.
    let permit = if detected.is_image() {
        Some(
            state
                .decodes
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| ApiError::Internal(e.into()))?,
        )
    } else {
        None
    };
    let prepared = tokio::task::spawn_blocking(move || store::prepare(detected, bytes))
        .await
        .map_err(|e| ApiError::Internal(e.into()))?
        .map_err(|e| {
            if e.is::<store::UndecodableImage>() {
                ApiError::field(field, Rejection::Undecodable.to_string())
            } else {
                ApiError::Internal(e)
            }
        })?;
    // The decoding is done; the store's I/O need not hold a permit.
    drop(permit);
    // Stored first, recorded second: a store that fails leaves no row pointing nowhere.
    state
        .uploads
        .put(kind, &prepared)
        .await
        .map_err(store_error)?;
    let name = prepared.name;
    let stored = name.clone();
    let record = write(state, move |c| {
        Ok(files::insert(
            c,
            kind,
            &stored,
            owner_id,
            detected.content_type(),
            size,
        )?)
    })
    .await;
    if record.is_err() {
        state.uploads.remove(&[(kind, name)]).await;
    }
    record
}

/// A store failure as an answer: 503 with a generic body when the S3 store failed (the
/// detail, with endpoint and key, is logged) or the local disk is full, 500 for any other
/// failure of the local disk.
pub fn store_error(e: store::StoreError) -> ApiError {
    match e {
        store::StoreError::Unavailable(detail) => {
            tracing::warn!(error = %detail, "upload store failed");
            ApiError::Unavailable("File storage is unavailable, try again later")
        }
        store::StoreError::Local(e) if crate::fsutil::is_out_of_space(&e) => {
            ApiError::StorageFull(format!("{e:#}"))
        }
        store::StoreError::Local(e) => ApiError::Internal(e),
    }
}

fn parse_kind(kind: &str) -> ApiResult<Kind> {
    Kind::parse(kind).ok_or_else(|| {
        ApiError::invalid(
            &["path", "kind"],
            format!("must be one of: {}", Kind::ALL.map(Kind::as_str).join(", ")),
        )
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams, utoipa::ToSchema)]
#[into_params(parameter_in = Query)]
struct UploadQuery {
    /// Staff upload on behalf of one of their clients.
    client_id: Option<i64>,
}

/// A photo: `kind` is one of the image kinds, and the file a JPEG, PNG, WebP or GIF (by
/// content). A PDF goes to `/api/files/upload/documents`, an operation of its own because
/// it takes other bytes (the static path is matched before this one).
#[utoipa::path(post, path = "/api/files/upload/{kind}", operation_id = "files_upload", tag = "files", params(("kind" = String, Path), UploadQuery), request_body(content_type = "multipart/form-data", content = crate::server::openapi::UploadForm), responses((status = 201, description = "Success", body = UploadedFile)), security(("bearer" = [])))]
async fn upload(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(kind): ApiPath<String>,
    ApiQuery(q): ApiQuery<UploadQuery>,
    m: Result<Multipart, MultipartRejection>,
) -> ApiResult<Created<UploadedFile>> {
    upload_as(&state, me, parse_kind(&kind)?, q, m).await
}

/// A PDF document (by content, parsed far enough to refuse an HTML polyglot).
#[utoipa::path(post, path = "/api/files/upload/documents", operation_id = "files_upload_document", tag = "files", params(UploadQuery), request_body(content_type = "multipart/form-data", content = crate::server::openapi::UploadForm), responses((status = 201, description = "Success", body = UploadedFile)), security(("bearer" = [])))]
async fn upload_document(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiQuery(q): ApiQuery<UploadQuery>,
    m: Result<Multipart, MultipartRejection>,
) -> ApiResult<Created<UploadedFile>> {
    upload_as(&state, me, Kind::Documents, q, m).await
}

async fn upload_as(
    state: &AppState,
    me: crate::db::users::User,
    kind: Kind,
    q: UploadQuery,
    m: Result<Multipart, MultipartRejection>,
) -> ApiResult<Created<UploadedFile>> {
    let actor = Actor::from(&me);
    // Read the (bounded) body before refusing, so the client sees the answer.
    let m = multipart_or_422(m)?;
    let bytes = read_file_field(m, &["file", "image"], state.file_limits.for_kind(kind)).await?;
    let owner = match q.client_id {
        Some(id) if id != me.id => {
            query(state, move |c| visible_client(c, actor, id).map(|u| u.id)).await?
        }
        _ => me.id,
    };
    let record = save(state, kind, owner, bytes, "file").await?;
    tracing::info!(kind = kind.as_str(), name = %record.name, owner, "file uploaded");
    Ok(created(record.into()))
}

#[derive(Debug, Deserialize, utoipa::IntoParams, utoipa::ToSchema)]
#[into_params(parameter_in = Query)]
struct SizeQuery {
    size: Option<String>,
}

/// The record of a stored file the actor may see, or 404 (bad names included).
async fn visible_file(
    state: &AppState,
    actor: Actor,
    kind: &str,
    name: &str,
) -> ApiResult<(Kind, FileRecord)> {
    const MISSING: &str = "File not found";
    let kind = Kind::parse(kind).ok_or(ApiError::NotFound(MISSING))?;
    if !store::is_stored_name(name) {
        return Err(ApiError::NotFound(MISSING));
    }
    let name = name.to_string();
    let record = query(state, move |c| {
        let f = files::find(c, kind, &name)?.ok_or(ApiError::NotFound(MISSING))?;
        visible_owner(c, actor, f.owner_id, MISSING)?;
        Ok(f)
    })
    .await?;
    Ok((kind, record))
}

/// Whether the request came straight from the stack's nginx.
fn behind_nginx(state: &AppState, peer: std::net::IpAddr) -> bool {
    state
        .config
        .trusted_proxies
        .iter()
        .any(|n| n.contains(peer))
}

#[utoipa::path(get, path = "/api/files/media/{kind}/{name}", operation_id = "files_serve", tag = "files", params(("kind" = String, Path), ("name" = String, Path), SizeQuery), responses((status = 200, description = "Success")), security(("bearer" = [])))]
async fn serve(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ConnectPeer(peer): ConnectPeer,
    ApiPath((kind, name)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<SizeQuery>,
) -> ApiResult<Response> {
    let size = match q.size.as_deref() {
        None => Size::Original,
        Some(s) => Size::parse(s).ok_or_else(|| {
            ApiError::invalid(
                &["query", "size"],
                "must be one of: original, thumbnail, medium",
            )
        })?,
    };
    let (kind, record) = visible_file(&state, Actor::from(&me), &kind, &name).await?;
    // Documents have no derivatives.
    let size = if record.content_type.starts_with("image/") {
        size
    } else {
        Size::Original
    };
    let content_type =
        HeaderValue::from_str(&record.content_type).map_err(|e| ApiError::Internal(e.into()))?;
    // Only images are shown inline; anything else (a PDF) is downloaded, never rendered
    // by the browser as the app's origin. nginx passes Content-Disposition through an
    // X-Accel-Redirect, and adds nosniff itself in the internal location.
    let disposition = if record.content_type.starts_with("image/") {
        HeaderValue::from_static("inline")
    } else {
        HeaderValue::from_str(&format!("attachment; filename=\"{}\"", record.name))
            .map_err(|e| ApiError::Internal(e.into()))?
    };
    let common = [
        (header::CONTENT_DISPOSITION, disposition),
        (header::CONTENT_TYPE, content_type),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, max-age=3600"),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
    ];
    // nginx can serve the file itself only from the local folder it mounts.
    if state.uploads.local_root().is_some() && behind_nginx(&state, peer) {
        let target = format!(
            "{ACCEL_UPLOADS_PREFIX}{}",
            store::relative_path(kind, size, &record.name)
        );
        let target = HeaderValue::from_str(&target).map_err(|e| ApiError::Internal(e.into()))?;
        return Ok((
            common,
            [(header::HeaderName::from_static("x-accel-redirect"), target)],
        )
            .into_response());
    }
    match state
        .uploads
        .get(kind, size, &record.name)
        .await
        .map_err(store_error)?
    {
        Some(store::Download::Bytes(bytes)) => Ok((common, bytes).into_response()),
        // Streamed through, never buffered whole; the length is the object's.
        Some(store::Download::Stream { len, body }) => Ok((
            common,
            [(header::CONTENT_LENGTH, HeaderValue::from(len))],
            axum::body::Body::from_stream(body),
        )
            .into_response()),
        None => {
            tracing::warn!(
                kind = kind.as_str(),
                name = %record.name,
                storage = state.uploads.kind(),
                "recorded upload is missing from the store"
            );
            Err(ApiError::NotFound("File not found"))
        }
    }
}

/// The TCP peer, unlike [`ClientIp`] not rewritten by forwarding headers: the proxy itself.
struct ConnectPeer(std::net::IpAddr);

impl axum::extract::FromRequestParts<AppState> for ConnectPeer {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &AppState,
    ) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|i| ConnectPeer(crate::config::net::canonical(i.0.ip())))
            .ok_or_else(|| {
                ApiError::Internal(anyhow::anyhow!("server started without ConnectInfo"))
            })
    }
}

/// The owner, their trainer or an admin deletes a file and its derivatives.
#[utoipa::path(delete, path = "/api/files/media/{kind}/{name}", operation_id = "files_remove", tag = "files", params(("kind" = String, Path), ("name" = String, Path)), responses((status = 200, description = "Success", body = serde_json::Value), (status = 409, description = "Conflicts with the current state", body = crate::server::openapi::ErrorBody)), security(("bearer" = [])))]
async fn remove(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath((kind, name)): ApiPath<(String, String)>,
) -> ApiResult<Json<serde_json::Value>> {
    let (kind, record) = visible_file(&state, Actor::from(&me), &kind, &name).await?;
    let stored = record.name.clone();
    write(&state, move |c| {
        if files::is_referenced(c, &store::media_url(kind, &stored))? {
            return Err(ApiError::Conflict(
                "The file belongs to a meal photo, weigh-in or workout record; delete that instead"
                    .into(),
            ));
        }
        Ok(files::delete(c, kind, &stored)?)
    })
    .await?;
    state.uploads.remove(&[(kind, record.name)]).await;
    Ok(deleted("File"))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Stats {
    by_type: Vec<KindStats>,
    total_files: i64,
    total_bytes: i64,
}

#[utoipa::path(get, path = "/api/files/media/stats", operation_id = "files_stats", tag = "files", responses((status = 200, description = "Success", body = Stats)), security(("bearer" = [])))]
async fn stats(State(state): State<AppState>, AuthUser(me): AuthUser) -> ApiResult<Json<Stats>> {
    Actor::from(&me).require(&[Role::Admin], "Only admins can see file statistics")?;
    let by_type = query(&state, |c| Ok(files::stats(c)?)).await?;
    Ok(Json(Stats {
        total_files: by_type.iter().map(|k| k.files).sum(),
        total_bytes: by_type.iter().map(|k| k.bytes).sum(),
        by_type,
    }))
}
