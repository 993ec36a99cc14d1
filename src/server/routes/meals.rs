//! `/api/meal-plans`: a client's plan for a date with calorie and macro targets, its meal
//! entries and their components, the nested view, meal photos with the trainer's review,
//! and daily summaries of targets against what was eaten.
//!
//! The client's trainer or an admin writes plans; the client uploads meal photos for their
//! own entries; the trainer (or an admin) reviews them and the client is notified live.

use crate::db::Conn;
use crate::server::json::Json;
use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::{DefaultBodyLimit, State};
use serde::{Deserialize, Serialize};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::db::meals::{
    self as m, ComponentFields, EntryFields, MealComponent, MealEntry, MealPlan, MealUpload,
    PlanFields, COMPONENT_TYPES,
};
use crate::db::notifications;
use crate::db::users::Role;
use crate::db::DbError;
use crate::files::{self as store, Kind};
use crate::server::access::{
    list_scope, new_plan_owner, owned, plannable_owner, query, visible_client, visible_owner,
    write, Actor, STAFF,
};
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::{ApiJson, AuthUser};
use crate::server::openapi;
use crate::server::params::{parse_date, ApiPath, ApiQuery, Checks, Page};
use crate::server::routes::files::{multipart_or_422, read_file_field, save};
use crate::server::routes::{
    add_to, created, delete_one, deleted, read_from, read_one, replace_one, write_notifying,
    Created, Finder,
};
use crate::server::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_plans, create_plan))
        .routes(routes!(summary_today))
        .routes(routes!(summary_for))
        .routes(routes!(get_plan, put_plan, delete_plan))
        .routes(routes!(complete_plan))
        .routes(routes!(create_entry))
        .routes(routes!(get_entry, put_entry, delete_entry))
        .routes(routes!(create_component))
        .routes(routes!(get_component, put_component, delete_component))
        .routes(openapi::layered(
            routes!(upload_photo),
            DefaultBodyLimit::disable(),
        ))
        .routes(routes!(get_upload, delete_upload))
        .routes(routes!(review_upload))
}

// ----- plans ---------------------------------------------------------------------------

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct MealPlanBody {
    /// Required when creating. When replacing, it may be left out; naming another client
    /// than the plan's is a 409 (a plan never moves).
    client_id: Option<i64>,
    #[schema(format = Date)]
    date: String,
    // Listed rather than flattened from `PlanFields`: serde can't deny unknown fields
    // through a flatten, and the OpenAPI schema of one would be unsatisfiable.
    #[schema(min_length = 1, max_length = 100, pattern = "\\S")]
    title: String,
    #[schema(minimum = 0, maximum = 20000)]
    total_calories: Option<i64>,
    #[schema(minimum = 0, maximum = 1000)]
    protein_target: Option<i64>,
    #[schema(minimum = 0, maximum = 2000)]
    carb_target: Option<i64>,
    #[schema(minimum = 0, maximum = 1000)]
    fat_target: Option<i64>,
    #[schema(max_length = 2000)]
    notes: Option<String>,
}

impl MealPlanBody {
    fn fields(&self) -> PlanFields {
        PlanFields {
            title: self.title.trim().to_string(),
            total_calories: self.total_calories,
            protein_target: self.protein_target,
            carb_target: self.carb_target,
            fat_target: self.fat_target,
            notes: self.notes.clone(),
        }
    }
}

fn check_plan(b: &MealPlanBody) -> ApiResult<()> {
    let mut c = Checks::new();
    c.date("date", Some(&b.date));
    c.text("title", &b.title, 1, 100);
    c.range_i64("total_calories", b.total_calories, 0, 20_000);
    c.range_i64("protein_target", b.protein_target, 0, 1000);
    c.range_i64("carb_target", b.carb_target, 0, 2000);
    c.range_i64("fat_target", b.fat_target, 0, 1000);
    c.opt_text("notes", b.notes.as_deref(), 2000);
    c.finish()
}

const PLAN_MISSING: &str = "Meal plan not found";

fn plan_for(c: &Conn, actor: Actor, id: i64, write: bool) -> ApiResult<MealPlan> {
    let plan = m::find_plan(c, id)?.ok_or(ApiError::NotFound(PLAN_MISSING))?;
    owned(c, actor, Ok(Some(plan.client_id)), write, PLAN_MISSING)?;
    Ok(plan)
}

#[derive(Debug, Deserialize, utoipa::IntoParams, utoipa::ToSchema)]
#[into_params(parameter_in = Query)]
struct PlanQuery {
    client_id: Option<i64>,
    #[schema(format = Date)]
    #[param(format = Date)]
    start_date: Option<String>,
    #[schema(format = Date)]
    #[param(format = Date)]
    end_date: Option<String>,
}

#[utoipa::path(get, path = "/api/meal-plans", operation_id = "meal_plans_list_plans", tag = "meal-plans", params(crate::server::params::Page, PlanQuery), responses((status = 200, description = "Success", body = Vec<MealPlan>)), security(("bearer" = [])))]
async fn list_plans(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiQuery(page): ApiQuery<Page>,
    ApiQuery(q): ApiQuery<PlanQuery>,
) -> ApiResult<Json<Vec<MealPlan>>> {
    page.valid_with_dates(q.start_date.as_deref(), q.end_date.as_deref())?;
    let Some((trainer, client)) = list_scope(Actor::from(&me), q.client_id) else {
        return Ok(Json(Vec::new()));
    };
    query(&state, move |c| {
        Ok(m::list_plans(
            c,
            trainer,
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

/// One plan per client and date: a second one for the same day is refused with 409.
#[utoipa::path(post, path = "/api/meal-plans", operation_id = "meal_plans_create_plan", tag = "meal-plans", request_body = MealPlanBody, responses((status = 201, description = "Success", body = MealPlan), (status = 409, description = "Conflicts with the current state", body = crate::server::openapi::ErrorBody)), security(("bearer" = [])))]
async fn create_plan(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiJson(b): ApiJson<MealPlanBody>,
) -> ApiResult<Created<MealPlan>> {
    let actor = Actor::from(&me);
    actor.require(STAFF, "Only trainers and admins can create meal plans")?;
    check_plan(&b)?;
    let client_id = b
        .client_id
        .ok_or_else(|| ApiError::field("client_id", "is required"))?;
    write_notifying(&state, move |c| {
        let trainer = new_plan_owner(c, actor, client_id)?;
        if m::plan_for_date(c, client_id, &b.date)?.is_some() {
            return Err(ApiError::Conflict(
                "The client already has a meal plan for this date".into(),
            ));
        }
        let plan = m::insert_plan(c, client_id, trainer, &b.date, &b.fields())?;
        let note = notifications::insert(
            c,
            client_id,
            Some(actor.id),
            "New meal plan",
            &format!(
                "Your meal plan for {} is ready: {}",
                plan.date, plan.fields.title
            ),
            "meal_plan",
        )?;
        Ok((plan, Some(note)))
    })
    .await
    .map(created)
}

#[utoipa::path(get, path = "/api/meal-plans/{id}", operation_id = "meal_plans_get_plan", tag = "meal-plans", params(("id" = i64, Path)), responses((status = 200, description = "Success", body = MealPlan)), security(("bearer" = [])))]
async fn get_plan(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<MealPlan>> {
    read_one(&state, &me, id, plan_for).await
}

#[utoipa::path(put, path = "/api/meal-plans/{id}", operation_id = "meal_plans_put_plan", tag = "meal-plans", params(("id" = i64, Path)), request_body = MealPlanBody, responses((status = 200, description = "Success", body = MealPlan), (status = 409, description = "Conflicts with the current state", body = crate::server::openapi::ErrorBody)), security(("bearer" = [])))]
async fn put_plan(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(b): ApiJson<MealPlanBody>,
) -> ApiResult<Json<MealPlan>> {
    check_plan(&b)?;
    replace_one(&state, &me, id, plan_for, move |c, plan| {
        crate::server::routes::stays_with_client(b.client_id, plan.client_id)?;
        if m::plan_for_date(c, plan.client_id, &b.date)?.is_some_and(|other| other.id != plan.id) {
            return Err(ApiError::Conflict(
                "The client already has a meal plan for this date".into(),
            ));
        }
        Ok(m::update_plan(c, id, &b.date, &b.fields())?)
    })
    .await
}

/// Removes the plan with its entries, components and meal photos (files included).
#[utoipa::path(delete, path = "/api/meal-plans/{id}", operation_id = "meal_plans_delete_plan", tag = "meal-plans", params(("id" = i64, Path)), responses((status = 200, description = "Success", body = serde_json::Value)), security(("bearer" = [])))]
async fn delete_plan(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<serde_json::Value>> {
    let photos = |c: &Conn, id| m::upload_paths(c, Some(id), None);
    delete_with_photos(
        &state,
        &me,
        id,
        plan_for,
        photos,
        m::delete_plan,
        "Meal plan",
    )
    .await
}

/// `DELETE` of a plan or an entry, with the meal photos under it: the rows and the photos'
/// records go in one transaction, then the photo files (`photos` lists them).
async fn delete_with_photos<T: Send + 'static>(
    state: &AppState,
    me: &crate::db::users::User,
    id: i64,
    find: Finder<T>,
    photos: fn(&Conn, i64) -> Result<Vec<String>, DbError>,
    delete: fn(&Conn, i64) -> Result<bool, DbError>,
    what: &'static str,
) -> ApiResult<Json<serde_json::Value>> {
    let actor = Actor::from(me);
    let paths = write(state, move |c| {
        find(c, actor, id, true)?;
        let tx = crate::server::access::write_tx(c)?;
        let paths = photos(&tx, id)?;
        forget_files(&tx, &paths)?;
        delete(&tx, id)?;
        tx.commit()?;
        Ok(paths)
    })
    .await?;
    remove_files(state, &paths).await;
    Ok(deleted(what))
}

fn parsed(paths: &[String]) -> Vec<(Kind, String)> {
    paths
        .iter()
        .filter_map(|p| store::parse_media_url(p))
        .collect()
}

fn forget_files(c: &Conn, paths: &[String]) -> Result<(), DbError> {
    for (kind, name) in parsed(paths) {
        crate::db::files::delete(c, kind, &name)?;
    }
    Ok(())
}

async fn remove_files(state: &AppState, paths: &[String]) {
    state.uploads.remove(&parsed(paths)).await;
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct CompleteMealEntry {
    #[serde(flatten)]
    entry: MealEntry,
    meal_components: Vec<MealComponent>,
    uploads: Vec<MealUpload>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct CompleteMealPlan {
    #[serde(flatten)]
    plan: MealPlan,
    meal_entries: Vec<CompleteMealEntry>,
}

fn load_complete(c: &Conn, plan: MealPlan) -> ApiResult<CompleteMealPlan> {
    let entries = m::entries_of(c, plan.id)?;
    let components = m::components_of_plan(c, plan.id)?;
    let uploads = m::uploads_of_plan(c, plan.id)?;
    let meal_entries = entries
        .into_iter()
        .map(|entry| CompleteMealEntry {
            meal_components: components
                .iter()
                .filter(|k| k.meal_entry_id == entry.id)
                .cloned()
                .collect(),
            uploads: uploads
                .iter()
                .filter(|u| u.meal_entry_id == entry.id)
                .cloned()
                .collect(),
            entry,
        })
        .collect();
    Ok(CompleteMealPlan { plan, meal_entries })
}

#[utoipa::path(get, path = "/api/meal-plans/{id}/complete", operation_id = "meal_plans_complete_plan", tag = "meal-plans", params(("id" = i64, Path)), responses((status = 200, description = "Success", body = CompleteMealPlan)), security(("bearer" = [])))]
async fn complete_plan(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<CompleteMealPlan>> {
    read_from(&state, &me, id, plan_for, load_complete).await
}

// ----- entries and components ------------------------------------------------------------

const ENTRY_MISSING: &str = "Meal entry not found";
const COMPONENT_MISSING: &str = "Meal component not found";

fn check_entry(f: &EntryFields) -> ApiResult<()> {
    let mut c = Checks::new();
    c.text("name", &f.name, 1, 100);
    c.range_i64("order", Some(f.order), 1, 100);
    c.opt_text("notes", f.notes.as_deref(), 2000);
    c.finish()
}

#[utoipa::path(post, path = "/api/meal-plans/{id}/entries", operation_id = "meal_plans_create_entry", tag = "meal-plans", params(("id" = i64, Path)), request_body = EntryFields, responses((status = 201, description = "Success", body = MealEntry)), security(("bearer" = [])))]
async fn create_entry(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(f): ApiJson<EntryFields>,
) -> ApiResult<Created<MealEntry>> {
    check_entry(&f)?;
    add_to(&state, &me, id, plan_for, move |c, plan| {
        Ok(m::insert_entry(c, plan.id, &f)?)
    })
    .await
}

fn entry_for(c: &Conn, actor: Actor, id: i64, write: bool) -> ApiResult<MealEntry> {
    owned(c, actor, m::entry_client(c, id), write, ENTRY_MISSING)?;
    m::find_entry(c, id)?.ok_or(ApiError::NotFound(ENTRY_MISSING))
}

#[utoipa::path(get, path = "/api/meal-plans/entries/{id}", operation_id = "meal_plans_get_entry", tag = "meal-plans", params(("id" = i64, Path)), responses((status = 200, description = "Success", body = MealEntry)), security(("bearer" = [])))]
async fn get_entry(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<MealEntry>> {
    read_one(&state, &me, id, entry_for).await
}

#[utoipa::path(put, path = "/api/meal-plans/entries/{id}", operation_id = "meal_plans_put_entry", tag = "meal-plans", params(("id" = i64, Path)), request_body = EntryFields, responses((status = 200, description = "Success", body = MealEntry)), security(("bearer" = [])))]
async fn put_entry(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(f): ApiJson<EntryFields>,
) -> ApiResult<Json<MealEntry>> {
    check_entry(&f)?;
    replace_one(&state, &me, id, entry_for, move |c, _| {
        Ok(m::update_entry(c, id, &f)?)
    })
    .await
}

#[utoipa::path(delete, path = "/api/meal-plans/entries/{id}", operation_id = "meal_plans_delete_entry", tag = "meal-plans", params(("id" = i64, Path)), responses((status = 200, description = "Success", body = serde_json::Value)), security(("bearer" = [])))]
async fn delete_entry(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<serde_json::Value>> {
    let photos = |c: &Conn, id| m::upload_paths(c, None, Some(id));
    delete_with_photos(
        &state,
        &me,
        id,
        entry_for,
        photos,
        m::delete_entry,
        "Meal entry",
    )
    .await
}

fn check_component(f: &ComponentFields) -> ApiResult<()> {
    let mut c = Checks::new();
    c.one_of("type", Some(&f.kind), COMPONENT_TYPES);
    c.text("description", &f.description, 1, 500);
    c.range_i64("calories", f.calories, 0, 10_000);
    for (field, v) in [("protein", f.protein), ("carbs", f.carbs), ("fat", f.fat)] {
        c.range_f64(field, v, 0.0, 1000.0, false);
    }
    c.finish()
}

#[utoipa::path(post, path = "/api/meal-plans/entries/{id}/components", operation_id = "meal_plans_create_component", tag = "meal-plans", params(("id" = i64, Path)), request_body = ComponentFields, responses((status = 201, description = "Success", body = MealComponent)), security(("bearer" = [])))]
async fn create_component(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(f): ApiJson<ComponentFields>,
) -> ApiResult<Created<MealComponent>> {
    check_component(&f)?;
    add_to(&state, &me, id, entry_for, move |c, entry| {
        Ok(m::insert_component(c, entry.id, &f)?)
    })
    .await
}

fn component_for(c: &Conn, actor: Actor, id: i64, write: bool) -> ApiResult<MealComponent> {
    owned(
        c,
        actor,
        m::component_client(c, id),
        write,
        COMPONENT_MISSING,
    )?;
    m::find_component(c, id)?.ok_or(ApiError::NotFound(COMPONENT_MISSING))
}

#[utoipa::path(get, path = "/api/meal-plans/components/{id}", operation_id = "meal_plans_get_component", tag = "meal-plans", params(("id" = i64, Path)), responses((status = 200, description = "Success", body = MealComponent)), security(("bearer" = [])))]
async fn get_component(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<MealComponent>> {
    read_one(&state, &me, id, component_for).await
}

#[utoipa::path(put, path = "/api/meal-plans/components/{id}", operation_id = "meal_plans_put_component", tag = "meal-plans", params(("id" = i64, Path)), request_body = ComponentFields, responses((status = 200, description = "Success", body = MealComponent)), security(("bearer" = [])))]
async fn put_component(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(f): ApiJson<ComponentFields>,
) -> ApiResult<Json<MealComponent>> {
    check_component(&f)?;
    replace_one(&state, &me, id, component_for, move |c, _| {
        Ok(m::update_component(c, id, &f)?)
    })
    .await
}

#[utoipa::path(delete, path = "/api/meal-plans/components/{id}", operation_id = "meal_plans_delete_component", tag = "meal-plans", params(("id" = i64, Path)), responses((status = 200, description = "Success", body = serde_json::Value)), security(("bearer" = [])))]
async fn delete_component(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<serde_json::Value>> {
    delete_one(
        &state,
        &me,
        id,
        component_for,
        m::delete_component,
        "Meal component",
    )
    .await
}

// ----- meal photos -----------------------------------------------------------------------

const UPLOAD_MISSING: &str = "Meal upload not found";

/// The client posts a photo (multipart field `image` or `file`) of a meal in their plan.
#[utoipa::path(post, path = "/api/meal-plans/uploads/{id}/photo", operation_id = "meal_plans_upload_photo", tag = "meal-plans", params(("id" = i64, Path)), request_body(content_type = "multipart/form-data", content = crate::server::openapi::UploadForm), responses((status = 201, description = "Success", body = MealUpload)), security(("bearer" = [])))]
async fn upload_photo(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(entry_id): ApiPath<i64>,
    mp: Result<Multipart, MultipartRejection>,
) -> ApiResult<Created<MealUpload>> {
    let actor = Actor::from(&me);
    // The body (bounded by the size limit) is read before refusing: answering while the
    // client still sends makes many HTTP clients see a reset instead of the answer.
    let mp = multipart_or_422(mp)?;
    let bytes = read_file_field(
        mp,
        &["image", "file"],
        state.file_limits.for_kind(Kind::MealPhotos),
    )
    .await?;
    actor.require(&[Role::Client], "Only clients upload meal photos")?;
    query(&state, move |c| match m::entry_client(c, entry_id)? {
        Some(owner) if owner == actor.id => Ok(()),
        _ => Err(ApiError::NotFound(ENTRY_MISSING)),
    })
    .await?;
    let file = save(&state, Kind::MealPhotos, me.id, bytes, "image").await?;
    let url = store::media_url(Kind::MealPhotos, &file.name);
    write_notifying(&state, move |c| {
        let upload = m::insert_upload(c, entry_id, actor.id, &url)?;
        let note = match me.trainer_id {
            Some(t) => Some(notifications::insert(
                c,
                t,
                Some(actor.id),
                "Meal photo uploaded",
                &format!("{} uploaded a meal photo for review", me.full_name),
                "meal_upload",
            )?),
            None => None,
        };
        Ok((upload, note))
    })
    .await
    .map(created)
}

fn upload_for(c: &Conn, actor: Actor, id: i64) -> ApiResult<MealUpload> {
    let upload = m::find_upload(c, id)?.ok_or(ApiError::NotFound(UPLOAD_MISSING))?;
    visible_owner(c, actor, upload.client_id, UPLOAD_MISSING)?;
    Ok(upload)
}

#[utoipa::path(get, path = "/api/meal-plans/uploads/{id}", operation_id = "meal_plans_get_upload", tag = "meal-plans", params(("id" = i64, Path)), responses((status = 200, description = "Success", body = MealUpload)), security(("bearer" = [])))]
async fn get_upload(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<MealUpload>> {
    let actor = Actor::from(&me);
    query(&state, move |c| upload_for(c, actor, id))
        .await
        .map(Json)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Review {
    status: String,
    #[schema(max_length = 2000)]
    trainer_comment: Option<String>,
}

/// The client's trainer (or an admin) approves or rejects a meal photo; the client is told.
#[utoipa::path(put, path = "/api/meal-plans/uploads/{id}/review", operation_id = "meal_plans_review_upload", tag = "meal-plans", params(("id" = i64, Path)), request_body = Review, responses((status = 200, description = "Success", body = MealUpload)), security(("bearer" = [])))]
async fn review_upload(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(r): ApiJson<Review>,
) -> ApiResult<Json<MealUpload>> {
    let mut c = Checks::new();
    c.one_of("status", Some(&r.status), &["approved", "rejected"]);
    c.opt_text("trainer_comment", r.trainer_comment.as_deref(), 2000);
    c.finish()?;
    let actor = Actor::from(&me);
    write_notifying(&state, move |c| {
        let upload = upload_for(c, actor, id)?;
        plannable_owner(c, actor, upload.client_id, UPLOAD_MISSING)?;
        m::review_upload(c, id, &r.status, r.trainer_comment.as_deref(), actor.id)?;
        let message = match &r.trainer_comment {
            Some(comment) => format!("Your meal photo was {}: {comment}", r.status),
            None => format!("Your meal photo was {}", r.status),
        };
        let note = notifications::insert(
            c,
            upload.client_id,
            Some(actor.id),
            "Meal photo reviewed",
            &message,
            "meal_review",
        )?;
        Ok((upload_for(c, actor, id)?, Some(note)))
    })
    .await
    .map(Json)
}

/// The client who posted it or an admin deletes a meal photo, file included.
#[utoipa::path(delete, path = "/api/meal-plans/uploads/{id}", operation_id = "meal_plans_delete_upload", tag = "meal-plans", params(("id" = i64, Path)), responses((status = 200, description = "Success", body = serde_json::Value)), security(("bearer" = [])))]
async fn delete_upload(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<serde_json::Value>> {
    let actor = Actor::from(&me);
    let path = write(&state, move |c| {
        let upload = upload_for(c, actor, id)?;
        if !(actor.is_admin() || upload.client_id == actor.id) {
            return Err(ApiError::Forbidden(
                "Only the client who posted it or an admin can delete it",
            ));
        }
        let paths = vec![upload.image_path.clone()];
        forget_files(c, &paths)?;
        m::delete_upload(c, id)?;
        Ok(paths)
    })
    .await?;
    remove_files(&state, &path).await;
    Ok(deleted("Meal upload"))
}

// ----- summaries -------------------------------------------------------------------------

#[derive(Debug, Default, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Macros {
    pub calories: f64,
    pub protein: f64,
    pub carbs: f64,
    pub fat: f64,
}

#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Targets {
    pub calories: Option<i64>,
    pub protein: Option<i64>,
    pub carbs: Option<i64>,
    pub fat: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DaySummary {
    pub client_id: i64,
    #[schema(format = Date)]
    pub date: String,
    pub meal_plan_id: i64,
    pub title: String,
    pub targets: Targets,
    /// Planned (non-optional) components of every entry.
    pub planned: Macros,
    /// Planned components of the entries with a photo that wasn't rejected.
    pub eaten: Macros,
    pub total_meals: usize,
    pub meals_eaten: usize,
    pub uploads_pending: usize,
    pub uploads_approved: usize,
    pub uploads_rejected: usize,
    pub calories_remaining: Option<f64>,
}

fn add(total: &mut Macros, k: &ComponentFields) {
    total.calories += k.calories.unwrap_or(0) as f64;
    total.protein += k.protein.unwrap_or(0.0);
    total.carbs += k.carbs.unwrap_or(0.0);
    total.fat += k.fat.unwrap_or(0.0);
}

/// Targets against what was eaten. Pure: an entry counts as eaten when it has a photo
/// that was not rejected; optional components count in neither total.
pub fn summarize(
    plan: &MealPlan,
    entries: &[MealEntry],
    components: &[MealComponent],
    uploads: &[MealUpload],
) -> DaySummary {
    let mut planned = Macros::default();
    let mut eaten = Macros::default();
    let mut meals_eaten = 0;
    for entry in entries {
        let ate = uploads
            .iter()
            .any(|u| u.meal_entry_id == entry.id && u.status != "rejected");
        meals_eaten += usize::from(ate);
        for k in components
            .iter()
            .filter(|k| k.meal_entry_id == entry.id && !k.fields.is_optional)
        {
            add(&mut planned, &k.fields);
            if ate {
                add(&mut eaten, &k.fields);
            }
        }
    }
    let count = |s: &str| uploads.iter().filter(|u| u.status == s).count();
    DaySummary {
        client_id: plan.client_id,
        date: plan.date.clone(),
        meal_plan_id: plan.id,
        title: plan.fields.title.clone(),
        targets: Targets {
            calories: plan.fields.total_calories,
            protein: plan.fields.protein_target,
            carbs: plan.fields.carb_target,
            fat: plan.fields.fat_target,
        },
        calories_remaining: plan
            .fields
            .total_calories
            .map(|t| t as f64 - eaten.calories),
        planned,
        eaten,
        total_meals: entries.len(),
        meals_eaten,
        uploads_pending: count("pending"),
        uploads_approved: count("approved"),
        uploads_rejected: count("rejected"),
    }
}

async fn summary(
    state: &AppState,
    actor: Actor,
    client_id: i64,
    date: String,
) -> ApiResult<Json<DaySummary>> {
    if parse_date(&date).is_none() {
        return Err(ApiError::invalid(
            &["path", "date"],
            "must be a date as YYYY-MM-DD",
        ));
    }
    query(state, move |c| {
        let client = visible_client(c, actor, client_id)?;
        let plan = m::plan_for_date(c, client.id, &date)?
            .ok_or(ApiError::NotFound("No meal plan found for this date"))?;
        let entries = m::entries_of(c, plan.id)?;
        let components = m::components_of_plan(c, plan.id)?;
        let uploads = m::uploads_of_plan(c, plan.id)?;
        Ok(summarize(&plan, &entries, &components, &uploads))
    })
    .await
    .map(Json)
}

#[utoipa::path(get, path = "/api/meal-plans/summary/{client_id}/{date}", operation_id = "meal_plans_summary_for", tag = "meal-plans", params(("client_id" = i64, Path), ("date" = String, Path, format = Date)), responses((status = 200, description = "Success", body = DaySummary)), security(("bearer" = [])))]
async fn summary_for(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath((client_id, date)): ApiPath<(i64, String)>,
) -> ApiResult<Json<DaySummary>> {
    summary(&state, Actor::from(&me), client_id, date).await
}

/// Today's summary for the calling client (UTC date).
#[utoipa::path(get, path = "/api/meal-plans/summary/today", operation_id = "meal_plans_summary_today", tag = "meal-plans", responses((status = 200, description = "Success", body = DaySummary)), security(("bearer" = [])))]
async fn summary_today(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
) -> ApiResult<Json<DaySummary>> {
    let actor = Actor::from(&me);
    actor.require(
        &[Role::Client],
        "Only clients have a meal summary of their own",
    )?;
    let today = chrono::Utc::now()
        .date_naive()
        .format("%Y-%m-%d")
        .to_string();
    summary(&state, actor, me.id, today).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component(id: i64, entry: i64, calories: i64, optional: bool) -> MealComponent {
        MealComponent {
            id,
            meal_entry_id: entry,
            fields: ComponentFields {
                kind: "protein".into(),
                description: "x".into(),
                calories: Some(calories),
                protein: Some(10.0),
                carbs: None,
                fat: Some(1.5),
                is_optional: optional,
            },
        }
    }

    fn upload(entry: i64, status: &str) -> MealUpload {
        MealUpload {
            id: entry * 10,
            meal_entry_id: entry,
            client_id: 5,
            image_path: String::new(),
            status: status.into(),
            trainer_comment: None,
            reviewed_by: None,
            uploaded_at: String::new(),
            reviewed_at: None,
        }
    }

    #[test]
    fn eaten_counts_unrejected_photos_and_skips_optional() {
        let plan = MealPlan {
            id: 1,
            client_id: 5,
            trainer_id: Some(2),
            date: "2026-01-01".into(),
            fields: PlanFields {
                title: "Day".into(),
                total_calories: Some(2000),
                protein_target: Some(150),
                carb_target: None,
                fat_target: None,
                notes: None,
            },
            created_at: String::new(),
            updated_at: None,
        };
        let entry = |id, name: &str| MealEntry {
            id,
            meal_plan_id: 1,
            fields: EntryFields {
                name: name.into(),
                order: id,
                notes: None,
            },
        };
        let entries = [entry(1, "Breakfast"), entry(2, "Lunch"), entry(3, "Dinner")];
        let components = [
            component(1, 1, 500, false),
            component(2, 1, 200, true),
            component(3, 2, 700, false),
            component(4, 3, 600, false),
        ];
        let uploads = [
            upload(1, "approved"),
            upload(2, "rejected"),
            upload(3, "pending"),
        ];
        let s = summarize(&plan, &entries, &components, &uploads);
        assert_eq!(s.planned.calories, 1800.0);
        assert_eq!(
            s.eaten,
            Macros {
                calories: 1100.0,
                protein: 20.0,
                carbs: 0.0,
                fat: 3.0
            }
        );
        assert_eq!((s.total_meals, s.meals_eaten), (3, 2));
        assert_eq!(
            (s.uploads_pending, s.uploads_approved, s.uploads_rejected),
            (1, 1, 1)
        );
        assert_eq!(s.calories_remaining, Some(900.0));
    }
}
