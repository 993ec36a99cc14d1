//! `/api/progress/weight`: a client's weigh-ins (add, list by date range, current,
//! summary, delete). A client records their own; their trainer or an admin may record
//! for them and read them by `client_id`.

use crate::server::json::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::db::progress::{self, WeightEntry, WeightSummary};
use crate::db::users::{Role, User};
use crate::files::Kind;
use crate::server::access::{check_attachment, query, visible_client, visible_owner, write, Actor};
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::{ApiJson, AuthUser};
use crate::server::params::{clean, ApiPath, ApiQuery, Checks, Page};
use crate::server::routes::deleted;
use crate::server::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(current))
        .routes(routes!(summary))
        .routes(routes!(remove))
}

/// The client a request is about: a client is always themselves; staff must name one.
fn subject(me: &User, client_id: Option<i64>) -> ApiResult<i64> {
    match (me.role, client_id) {
        (Role::Client, None) => Ok(me.id),
        (Role::Client, Some(id)) if id == me.id => Ok(me.id),
        // Another client's id reads as absent.
        (Role::Client, Some(_)) => Err(ApiError::NotFound("Client not found")),
        (_, Some(id)) => Ok(id),
        (_, None) => Err(ApiError::Validation(vec![
            crate::server::error::FieldError {
                loc: vec!["query".into(), "client_id".into()],
                msg: "is required for trainers and admins".into(),
                kind: "value_error".into(),
            },
        ])),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewEntry {
    client_id: Option<i64>,
    #[schema(format = Date)]
    date: String,
    /// Kilograms.
    #[schema(exclusive_minimum = 0, maximum = 500)]
    weight: f64,
    photo_path: Option<String>,
    #[schema(max_length = 2000)]
    notes: Option<String>,
}

#[utoipa::path(post, path = "/api/progress/weight", operation_id = "progress_create", tag = "progress", request_body = NewEntry, responses((status = 201, description = "Success", body = WeightEntry)), security(("bearer" = [])))]
async fn create(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiJson(e): ApiJson<NewEntry>,
) -> ApiResult<(StatusCode, Json<WeightEntry>)> {
    let mut c = Checks::new();
    c.date("date", Some(&e.date));
    c.range_f64("weight", Some(e.weight), 0.0, 500.0, true);
    c.opt_text("notes", e.notes.as_deref(), 2000);
    c.finish()?;
    let client_id = subject(&me, e.client_id)?;
    let actor = Actor::from(&me);
    write(&state, move |c| {
        let client = visible_client(c, actor, client_id)?;
        check_attachment(
            c,
            "photo_path",
            e.photo_path.as_deref(),
            Kind::ProgressPhotos,
            client.id,
        )?;
        Ok(progress::insert(
            c,
            client.id,
            &e.date,
            e.weight,
            e.photo_path.as_deref(),
            clean(e.notes).as_deref(),
        )?)
    })
    .await
    .map(|v| (StatusCode::CREATED, Json(v)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams, utoipa::ToSchema)]
#[into_params(parameter_in = Query)]
struct RangeQuery {
    client_id: Option<i64>,
    #[schema(format = Date)]
    #[param(format = Date)]
    start_date: Option<String>,
    #[schema(format = Date)]
    #[param(format = Date)]
    end_date: Option<String>,
}

fn check_range(q: &RangeQuery, page: &Page) -> ApiResult<()> {
    let mut c = Checks::new();
    page.check(&mut c);
    c.query_date("start_date", q.start_date.as_deref());
    c.query_date("end_date", q.end_date.as_deref());
    c.finish()
}

#[utoipa::path(get, path = "/api/progress/weight", operation_id = "progress_list", tag = "progress", params(crate::server::params::Page, RangeQuery), responses((status = 200, description = "Success", body = Vec<WeightEntry>)), security(("bearer" = [])))]
async fn list(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiQuery(page): ApiQuery<Page>,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> ApiResult<Json<Vec<WeightEntry>>> {
    check_range(&q, &page)?;
    let client_id = subject(&me, q.client_id)?;
    let actor = Actor::from(&me);
    query(&state, move |c| {
        let client = visible_client(c, actor, client_id)?;
        Ok(progress::list(
            c,
            client.id,
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
    client_id: Option<i64>,
}

#[utoipa::path(get, path = "/api/progress/weight/current", operation_id = "progress_current", tag = "progress", params(ClientQuery), responses((status = 200, description = "Success", body = WeightEntry)), security(("bearer" = [])))]
async fn current(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiQuery(q): ApiQuery<ClientQuery>,
) -> ApiResult<Json<WeightEntry>> {
    let client_id = subject(&me, q.client_id)?;
    let actor = Actor::from(&me);
    query(&state, move |c| {
        let client = visible_client(c, actor, client_id)?;
        progress::latest(c, client.id)?.ok_or(ApiError::NotFound("No weight entries yet"))
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
    let client_id = subject(&me, q.client_id)?;
    let actor = Actor::from(&me);
    query(&state, move |c| {
        let client = visible_client(c, actor, client_id)?;
        Ok(progress::summary(
            c,
            client.id,
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
    let actor = Actor::from(&me);
    write(&state, move |c| {
        const MISSING: &str = "Weight entry not found";
        let entry = progress::find(c, id)?.ok_or(ApiError::NotFound(MISSING))?;
        visible_owner(c, actor, entry.client_id, MISSING)?;
        Ok(progress::delete(c, id)?)
    })
    .await?;
    Ok(deleted("Weight entry"))
}
