//! `/api/progress/weight`: a client's weigh-ins (add, list by date range, current,
//! summary, delete). A client records their own; their trainer or an admin may record
//! for them and read them by `client_id`.

use crate::server::json::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::db::progress::{self, WeightEntry, WeightSummary};
use crate::db::users::{Role, User};
use crate::db::Conn;
use crate::files::Kind;
use crate::server::access::{
    check_attachment, query, visible_client_id, visible_owner, write, Actor,
};
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::{ApiJson, AuthUser};
use crate::server::params::{clean, ApiPath, ApiQuery, Checks, Page};
use crate::server::routes::{created, delete_one, Created};
use crate::server::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(current))
        .routes(routes!(summary))
        .routes(routes!(remove))
}

/// The client a request is about: without `client_id`, the caller's own weigh-ins, which
/// only a client has; a trainer or an admin names the client. Staff asking for their own
/// get 403 (the role has none), not 422: the request is well formed, the role is the
/// problem, and the role comes from the token, which no schema sees (issue 15).
fn subject(me: &User, client_id: Option<i64>) -> ApiResult<i64> {
    match (me.role, client_id) {
        (Role::Client, None) => Ok(me.id),
        (Role::Client, Some(id)) if id == me.id => Ok(me.id),
        // Another client's id reads as absent.
        (Role::Client, Some(_)) => Err(ApiError::NotFound("Client not found")),
        (_, Some(id)) => Ok(id),
        (_, None) => Err(ApiError::Forbidden(STAFF_NAME_THE_CLIENT)),
    }
}

/// Whether `f` in [`on_subject`] writes: a write goes through SQLite's one writer, a read
/// through the pool (issue 19).
#[derive(Clone, Copy)]
enum Work {
    Reads,
    Writes,
}

/// Runs `f` with the id of the client the request is about ([`subject`]), once the caller
/// may see that client (404 otherwise).
async fn on_subject<T, F>(
    state: &AppState,
    me: &User,
    client_id: Option<i64>,
    work: Work,
    f: F,
) -> ApiResult<T>
where
    T: Send + 'static,
    F: FnOnce(&mut crate::db::Conn, i64) -> ApiResult<T> + Send + 'static,
{
    let client_id = subject(me, client_id)?;
    let actor = Actor::from(me);
    let on_client = move |c: &mut crate::db::Conn| {
        visible_client_id(c, actor, client_id)?;
        f(c, client_id)
    };
    match work {
        Work::Reads => query(state, on_client).await,
        Work::Writes => write(state, on_client).await,
    }
}

/// The 403 of a trainer or an admin who left out `client_id` where only clients have data
/// of their own.
pub const STAFF_NAME_THE_CLIENT: &str =
    "Only clients have their own progress; trainers and admins name the client with client_id";

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewEntry {
    /// The client; leave it out for your own (clients). Trainers and admins must name one
    /// (403 without it: only clients have their own).
    client_id: Option<i64>,
    #[schema(format = Date)]
    date: String,
    /// Kilograms.
    #[schema(exclusive_minimum = 0, maximum = 500)]
    weight: f64,
    /// A URL from `/api/files/upload/progress_photos`, owned by the client (404 when it
    /// names no file of theirs).
    #[schema(pattern = "^/api/files/media/progress_photos/[0-9a-f]{32}[.](jpg|png|webp|gif|pdf)$")]
    photo_path: Option<String>,
    #[schema(max_length = 2000)]
    notes: Option<String>,
}

#[utoipa::path(post, path = "/api/progress/weight", operation_id = "progress_create", tag = "progress", request_body = NewEntry, responses((status = 201, description = "Success", body = WeightEntry)), security(("bearer" = [])))]
async fn create(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiJson(e): ApiJson<NewEntry>,
) -> ApiResult<Created<WeightEntry>> {
    let mut c = Checks::new();
    c.date("date", Some(&e.date));
    c.range_f64("weight", Some(e.weight), 0.0, 500.0, true);
    c.opt_text("notes", e.notes.as_deref(), 2000);
    c.finish()?;
    let client_id = e.client_id;
    on_subject(&state, &me, client_id, Work::Writes, move |c, client| {
        check_attachment(
            c,
            "photo_path",
            e.photo_path.as_deref(),
            Kind::ProgressPhotos,
            client,
        )?;
        Ok(progress::insert(
            c,
            client,
            &e.date,
            e.weight,
            e.photo_path.as_deref(),
            clean(e.notes).as_deref(),
        )?)
    })
    .await
    .map(created)
}

#[derive(Debug, Deserialize, utoipa::IntoParams, utoipa::ToSchema)]
#[into_params(parameter_in = Query)]
struct RangeQuery {
    /// The client; leave it out for your own (clients). Trainers and admins must name one
    /// (403 without it: only clients have their own).
    client_id: Option<i64>,
    #[schema(format = Date)]
    #[param(format = Date)]
    start_date: Option<String>,
    #[schema(format = Date)]
    #[param(format = Date)]
    end_date: Option<String>,
}

fn check_range(q: &RangeQuery, page: &Page) -> ApiResult<()> {
    page.valid_with_dates(q.start_date.as_deref(), q.end_date.as_deref())
}

#[utoipa::path(get, path = "/api/progress/weight", operation_id = "progress_list", tag = "progress", params(crate::server::params::Page, RangeQuery), responses((status = 200, description = "Success", body = Vec<WeightEntry>)), security(("bearer" = [])))]
async fn list(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiQuery(page): ApiQuery<Page>,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> ApiResult<Json<Vec<WeightEntry>>> {
    check_range(&q, &page)?;
    on_subject(&state, &me, q.client_id, Work::Reads, move |c, client| {
        Ok(progress::list(
            c,
            client,
            q.start_date.as_deref(),
            q.end_date.as_deref(),
            page.limit,
            page.offset,
        )?)
    })
    .await
    .map(Json)
}

#[derive(Debug, Deserialize, utoipa::IntoParams, utoipa::ToSchema)]
#[into_params(parameter_in = Query)]
struct ClientQuery {
    /// The client; leave it out for your own (clients). Trainers and admins must name one
    /// (403 without it: only clients have their own).
    client_id: Option<i64>,
}

#[utoipa::path(get, path = "/api/progress/weight/current", operation_id = "progress_current", tag = "progress", params(ClientQuery), responses((status = 200, description = "Success", body = WeightEntry)), security(("bearer" = [])))]
async fn current(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiQuery(q): ApiQuery<ClientQuery>,
) -> ApiResult<Json<WeightEntry>> {
    on_subject(&state, &me, q.client_id, Work::Reads, |c, client| {
        progress::latest(c, client)?.ok_or(ApiError::NotFound("No weight entries yet"))
    })
    .await
    .map(Json)
}

#[utoipa::path(get, path = "/api/progress/weight/summary", operation_id = "progress_summary", tag = "progress", params(RangeQuery), responses((status = 200, description = "Success", body = WeightSummary)), security(("bearer" = [])))]
async fn summary(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> ApiResult<Json<WeightSummary>> {
    check_range(&q, &Page::default())?;
    on_subject(&state, &me, q.client_id, Work::Reads, move |c, client| {
        Ok(progress::summary(
            c,
            client,
            q.start_date.as_deref(),
            q.end_date.as_deref(),
        )?)
    })
    .await
    .map(Json)
}

/// The client, their trainer or an admin deletes an entry.
#[utoipa::path(delete, path = "/api/progress/weight/{id}", operation_id = "progress_remove", tag = "progress", params(("id" = i64, Path)), responses((status = 200, description = "Success", body = serde_json::Value)), security(("bearer" = [])))]
async fn remove(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<serde_json::Value>> {
    delete_one(&state, &me, id, entry_for, progress::delete, "Weight entry").await
}

/// A weigh-in the actor may see; whoever sees it may also delete it.
fn entry_for(c: &Conn, actor: Actor, id: i64, _write: bool) -> ApiResult<WeightEntry> {
    const MISSING: &str = "Weight entry not found";
    let entry = progress::find(c, id)?.ok_or(ApiError::NotFound(MISSING))?;
    visible_owner(c, actor, entry.client_id, MISSING)?;
    Ok(entry)
}
