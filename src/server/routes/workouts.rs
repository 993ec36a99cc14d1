//! `/api/workouts`: the exercise library, workout plans with their sessions and session
//! exercises, completions logged by clients, and progress over time.
//!
//! Exercises are a library every signed-in user may read; their creator or an admin
//! changes them, and one used by a plan can't be deleted (409). Everything else belongs to
//! the plan's client: visibility follows [`crate::server::access`], the client's trainer
//! or an admin writes plans, and only the client logs completions.

use crate::db::Conn;
use crate::server::json::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::db::notifications;
use crate::db::users::Role;
use crate::db::workouts::{
    self as w, Completion, CompletionFields, Exercise, ExerciseFields, Plan, PlanFields, Session,
    WorkoutExercise, WorkoutExerciseFields, MUSCLE_GROUPS,
};
use crate::files::Kind;
use crate::server::access::{
    check_attachment, list_scope, new_plan_owner, owned, query, restrict_conflict, visible_client,
    visible_owner, write, Actor, STAFF,
};
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::{ApiJson, AuthUser};
use crate::server::params::{clean, ApiPath, ApiQuery, Checks, Page};
use crate::server::routes::{
    add_to, created, delete_one, deleted, read_from, read_one, replace_one, write_notifying,
    Created,
};
use crate::server::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_exercises, create_exercise))
        .routes(routes!(get_exercise, put_exercise, delete_exercise))
        .routes(routes!(exercise_progress))
        .routes(routes!(list_plans, create_plan))
        .routes(routes!(get_plan, put_plan, delete_plan))
        .routes(routes!(complete_plan))
        .routes(routes!(plan_summary))
        .routes(routes!(list_sessions, create_session))
        .routes(routes!(get_session, put_session, delete_session))
        .routes(routes!(list_session_exercises, add_session_exercise))
        .routes(routes!(add_session_exercises))
        .routes(routes!(
            get_workout_exercise,
            put_workout_exercise,
            delete_workout_exercise
        ))
        .routes(routes!(list_completions, create_completion))
        .routes(routes!(create_completions))
        .routes(routes!(get_completion, delete_completion))
}

// ----- exercises -----------------------------------------------------------------------

fn check_exercise(f: &ExerciseFields) -> ApiResult<()> {
    let mut c = Checks::new();
    c.text("name", &f.name, 1, 100);
    c.opt_text("description", f.description.as_deref(), 2000);
    c.opt_text("video_url", f.video_url.as_deref(), 500);
    if let Some(u) = &f.video_url {
        if !(u.starts_with("https://") || u.starts_with("http://")) {
            c.push("video_url", "must be an http(s) URL");
        }
    }
    c.one_of("muscle_group", Some(&f.muscle_group), MUSCLE_GROUPS);
    c.opt_text("equipment_needed", f.equipment_needed.as_deref(), 200);
    c.opt_text("instructions", f.instructions.as_deref(), 5000);
    c.finish()
}

#[derive(Debug, Deserialize, utoipa::IntoParams, utoipa::ToSchema)]
#[into_params(parameter_in = Query)]
struct ExerciseQuery {
    muscle_group: Option<String>,
    search: Option<String>,
}

#[utoipa::path(get, path = "/api/workouts/exercises", operation_id = "workouts_list_exercises", tag = "workouts", params(crate::server::params::Page, ExerciseQuery), responses((status = 200, description = "Success", body = Vec<Exercise>)), security(("bearer" = [])))]
async fn list_exercises(
    State(state): State<AppState>,
    AuthUser(_me): AuthUser,
    ApiQuery(page): ApiQuery<Page>,
    ApiQuery(q): ApiQuery<ExerciseQuery>,
) -> ApiResult<Json<Vec<Exercise>>> {
    let mut c = Checks::new();
    page.check(&mut c);
    c.one_of("muscle_group", q.muscle_group.as_deref(), MUSCLE_GROUPS);
    c.opt_text("search", q.search.as_deref(), 100);
    c.finish()?;
    query(&state, move |c| {
        Ok(w::list_exercises(
            c,
            q.muscle_group.as_deref(),
            clean(q.search).as_deref(),
            page.limit,
            page.offset,
        )?)
    })
    .await
    .map(Json)
}

#[utoipa::path(post, path = "/api/workouts/exercises", operation_id = "workouts_create_exercise", tag = "workouts", request_body = ExerciseFields, responses((status = 201, description = "Success", body = Exercise)), security(("bearer" = [])))]
async fn create_exercise(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiJson(f): ApiJson<ExerciseFields>,
) -> ApiResult<Created<Exercise>> {
    Actor::from(&me).require(STAFF, "Only trainers and admins can create exercises")?;
    check_exercise(&f)?;
    write(&state, move |c| Ok(w::insert_exercise(c, &f, me.id)?))
        .await
        .map(created)
}

fn find_exercise(c: &Conn, id: i64) -> ApiResult<Exercise> {
    w::find_exercise(c, id)?.ok_or(ApiError::NotFound("Exercise not found"))
}

fn writable_exercise(c: &Conn, actor: Actor, id: i64) -> ApiResult<Exercise> {
    let ex = find_exercise(c, id)?;
    if actor.is_admin() || ex.created_by == Some(actor.id) {
        Ok(ex)
    } else {
        Err(ApiError::Forbidden(
            "Only the exercise's creator or an admin can change it",
        ))
    }
}

#[utoipa::path(get, path = "/api/workouts/exercises/{id}", operation_id = "workouts_get_exercise", tag = "workouts", params(("id" = i64, Path)), responses((status = 200, description = "Success", body = Exercise)), security(("bearer" = [])))]
async fn get_exercise(
    State(state): State<AppState>,
    AuthUser(_me): AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Exercise>> {
    query(&state, move |c| find_exercise(c, id)).await.map(Json)
}

#[utoipa::path(put, path = "/api/workouts/exercises/{id}", operation_id = "workouts_put_exercise", tag = "workouts", params(("id" = i64, Path)), request_body = ExerciseFields, responses((status = 200, description = "Success", body = Exercise)), security(("bearer" = [])))]
async fn put_exercise(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(f): ApiJson<ExerciseFields>,
) -> ApiResult<Json<Exercise>> {
    check_exercise(&f)?;
    let actor = Actor::from(&me);
    write(&state, move |c| {
        writable_exercise(c, actor, id)?;
        w::update_exercise(c, id, &f)?;
        find_exercise(c, id)
    })
    .await
    .map(Json)
}

#[utoipa::path(delete, path = "/api/workouts/exercises/{id}", operation_id = "workouts_delete_exercise", tag = "workouts", params(("id" = i64, Path)), responses((status = 200, description = "Success", body = serde_json::Value), (status = 409, description = "The exercise is used by a plan", body = crate::server::openapi::ErrorBody)), security(("bearer" = [])))]
async fn delete_exercise(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<serde_json::Value>> {
    let actor = Actor::from(&me);
    write(&state, move |c| {
        writable_exercise(c, actor, id)?;
        w::delete_exercise(c, id).map_err(|e| {
            restrict_conflict(
                e,
                "Exercise is used by a workout plan; remove it there first",
            )
        })
    })
    .await?;
    Ok(deleted("Exercise"))
}

#[derive(Debug, Deserialize, utoipa::IntoParams, utoipa::ToSchema)]
#[into_params(parameter_in = Query)]
struct ProgressQuery {
    /// The client; leave it out for your own (clients). Trainers and admins must name one
    /// (403 without it: only clients have their own).
    client_id: Option<i64>,
}

/// A client's progress on one exercise; staff name the client with `client_id`.
#[utoipa::path(get, path = "/api/workouts/exercises/{id}/progress", operation_id = "workouts_exercise_progress", tag = "workouts", params(("id" = i64, Path), ProgressQuery), responses((status = 200, description = "Success", body = w::ExerciseProgress)), security(("bearer" = [])))]
async fn exercise_progress(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<ProgressQuery>,
) -> ApiResult<Json<w::ExerciseProgress>> {
    let actor = Actor::from(&me);
    let client_id = match (actor.role, q.client_id) {
        (Role::Client, Some(id)) if id != me.id => {
            return Err(ApiError::Forbidden(
                "Clients can only see their own progress; leave out client_id",
            ))
        }
        (Role::Client, _) => me.id,
        (_, Some(id)) => id,
        (_, None) => {
            return Err(ApiError::Forbidden(
                crate::server::routes::progress::STAFF_NAME_THE_CLIENT,
            ))
        }
    };
    query(&state, move |c| {
        let client = visible_client(c, actor, client_id)?;
        let ex = find_exercise(c, id)?;
        Ok(w::exercise_progress(c, &ex, client.id)?)
    })
    .await
    .map(Json)
}

// ----- plans ---------------------------------------------------------------------------

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct WorkoutPlanBody {
    /// Required when creating. When replacing, it may be left out; naming another client
    /// than the plan's is a 409 (a plan never moves).
    client_id: Option<i64>,
    #[schema(min_length = 1, max_length = 100, pattern = "\\S")]
    name: String,
    #[schema(max_length = 2000)]
    description: Option<String>,
    #[schema(format = Date)]
    start_date: Option<String>,
    #[schema(format = Date)]
    end_date: Option<String>,
}

fn check_plan(b: &WorkoutPlanBody) -> ApiResult<()> {
    let mut c = Checks::new();
    c.text("name", &b.name, 1, 100);
    c.opt_text("description", b.description.as_deref(), 2000);
    c.date("start_date", b.start_date.as_deref());
    c.date("end_date", b.end_date.as_deref());
    if let (Some(s), Some(e)) = (&b.start_date, &b.end_date) {
        if let (Some(s), Some(e)) = (
            crate::server::params::parse_date(s),
            crate::server::params::parse_date(e),
        ) {
            if e < s {
                c.push("end_date", "must not be before start_date");
            }
        }
    }
    c.finish()
}

fn plan_fields(b: &WorkoutPlanBody) -> PlanFields<'_> {
    PlanFields {
        name: b.name.trim(),
        description: b.description.as_deref(),
        start_date: b.start_date.as_deref(),
        end_date: b.end_date.as_deref(),
    }
}

/// A plan the actor may see (`write`: may change), or 404 (403 when only visible).
fn plan_for(c: &Conn, actor: Actor, id: i64, write: bool) -> ApiResult<Plan> {
    const MISSING: &str = "Workout plan not found";
    let plan = w::find_plan(c, id)?.ok_or(ApiError::NotFound(MISSING))?;
    owned(c, actor, Ok(Some(plan.client_id)), write, MISSING)?;
    Ok(plan)
}

#[derive(Debug, Deserialize, utoipa::IntoParams, utoipa::ToSchema)]
#[into_params(parameter_in = Query)]
struct ClientListQuery {
    client_id: Option<i64>,
}

#[utoipa::path(get, path = "/api/workouts/plans", operation_id = "workouts_list_plans", tag = "workouts", params(crate::server::params::Page, ClientListQuery), responses((status = 200, description = "Success", body = Vec<Plan>)), security(("bearer" = [])))]
async fn list_plans(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiQuery(page): ApiQuery<Page>,
    ApiQuery(q): ApiQuery<ClientListQuery>,
) -> ApiResult<Json<Vec<Plan>>> {
    page.valid()?;
    let Some((trainer, client)) = list_scope(Actor::from(&me), q.client_id) else {
        return Ok(Json(Vec::new()));
    };
    query(&state, move |c| {
        Ok(w::list_plans(c, trainer, client, page.limit, page.offset)?)
    })
    .await
    .map(Json)
}

#[utoipa::path(post, path = "/api/workouts/plans", operation_id = "workouts_create_plan", tag = "workouts", request_body = WorkoutPlanBody, responses((status = 201, description = "Success", body = Plan)), security(("bearer" = [])))]
async fn create_plan(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiJson(b): ApiJson<WorkoutPlanBody>,
) -> ApiResult<Created<Plan>> {
    let actor = Actor::from(&me);
    actor.require(STAFF, "Only trainers and admins can create workout plans")?;
    check_plan(&b)?;
    let client_id = b
        .client_id
        .ok_or_else(|| ApiError::field("client_id", "is required"))?;
    write_notifying(&state, move |c| {
        let trainer = new_plan_owner(c, actor, client_id)?;
        let plan = w::insert_plan(c, trainer, client_id, &plan_fields(&b))?;
        let note = notifications::insert(
            c,
            client_id,
            Some(actor.id),
            "New workout plan",
            &format!("You have a new workout plan: {}", plan.name),
            "workout_plan",
        )?;
        Ok((plan, Some(note)))
    })
    .await
    .map(created)
}

#[utoipa::path(get, path = "/api/workouts/plans/{id}", operation_id = "workouts_get_plan", tag = "workouts", params(("id" = i64, Path)), responses((status = 200, description = "Success", body = Plan)), security(("bearer" = [])))]
async fn get_plan(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Plan>> {
    read_one(&state, &me, id, plan_for).await
}

#[utoipa::path(put, path = "/api/workouts/plans/{id}", operation_id = "workouts_put_plan", tag = "workouts", params(("id" = i64, Path)), request_body = WorkoutPlanBody, responses((status = 200, description = "Success", body = Plan), (status = 409, description = "client_id names another client than the plan's", body = crate::server::openapi::ErrorBody)), security(("bearer" = [])))]
async fn put_plan(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(b): ApiJson<WorkoutPlanBody>,
) -> ApiResult<Json<Plan>> {
    check_plan(&b)?;
    replace_one(&state, &me, id, plan_for, move |c, plan| {
        crate::server::routes::stays_with_client(b.client_id, plan.client_id)?;
        Ok(w::update_plan(c, id, &plan_fields(&b))?)
    })
    .await
}

/// Deletes the plan with its sessions, their exercises and the completions logged on them.
#[utoipa::path(delete, path = "/api/workouts/plans/{id}", operation_id = "workouts_delete_plan", tag = "workouts", params(("id" = i64, Path)), responses((status = 200, description = "Success", body = serde_json::Value)), security(("bearer" = [])))]
async fn delete_plan(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<serde_json::Value>> {
    delete_one(&state, &me, id, plan_for, w::delete_plan, "Workout plan").await
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct CompleteWorkoutSession {
    #[serde(flatten)]
    session: Session,
    workout_exercises: Vec<WorkoutExercise>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct CompleteWorkoutPlan {
    #[serde(flatten)]
    plan: Plan,
    workout_sessions: Vec<CompleteWorkoutSession>,
}

/// The plan with its sessions, each with its exercises (and each of those its exercise).
#[utoipa::path(get, path = "/api/workouts/plans/{id}/complete", operation_id = "workouts_complete_plan", tag = "workouts", params(("id" = i64, Path)), responses((status = 200, description = "Success", body = CompleteWorkoutPlan)), security(("bearer" = [])))]
async fn complete_plan(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<CompleteWorkoutPlan>> {
    read_from(&state, &me, id, plan_for, |c, plan| {
        let sessions = w::sessions_of(c, plan.id)?;
        let mut exercises = w::wex_of_plan(c, plan.id)?;
        let workout_sessions = sessions
            .into_iter()
            .map(|session| {
                let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut exercises)
                    .into_iter()
                    .partition(|e| e.workout_session_id == session.id);
                exercises = rest;
                CompleteWorkoutSession {
                    session,
                    workout_exercises: mine,
                }
            })
            .collect();
        Ok(CompleteWorkoutPlan {
            plan,
            workout_sessions,
        })
    })
    .await
}

#[utoipa::path(get, path = "/api/workouts/plans/{id}/summary", operation_id = "workouts_plan_summary", tag = "workouts", params(("id" = i64, Path)), responses((status = 200, description = "Success", body = w::PlanSummary)), security(("bearer" = [])))]
async fn plan_summary(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<w::PlanSummary>> {
    read_from(&state, &me, id, plan_for, |c, plan| {
        Ok(w::plan_summary(c, &plan)?)
    })
    .await
}

// ----- sessions ------------------------------------------------------------------------

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SessionBody {
    #[schema(min_length = 1, max_length = 100, pattern = "\\S")]
    name: String,
    #[schema(minimum = 0, maximum = 6)]
    day_of_week: Option<i64>,
    #[schema(max_length = 2000)]
    notes: Option<String>,
}

fn check_session(b: &SessionBody) -> ApiResult<()> {
    let mut c = Checks::new();
    c.text("name", &b.name, 1, 100);
    c.range_i64("day_of_week", b.day_of_week, 0, 6);
    c.opt_text("notes", b.notes.as_deref(), 2000);
    c.finish()
}

fn session_for(c: &Conn, actor: Actor, id: i64, write: bool) -> ApiResult<Session> {
    const MISSING: &str = "Workout session not found";
    owned(c, actor, w::session_client(c, id), write, MISSING)?;
    w::find_session(c, id)?.ok_or(ApiError::NotFound(MISSING))
}

#[utoipa::path(get, path = "/api/workouts/plans/{id}/sessions", operation_id = "workouts_list_sessions", tag = "workouts", params(("id" = i64, Path)), responses((status = 200, description = "Success", body = Vec<Session>)), security(("bearer" = [])))]
async fn list_sessions(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Vec<Session>>> {
    read_from(&state, &me, id, plan_for, |c, plan| {
        Ok(w::sessions_of(c, plan.id)?)
    })
    .await
}

#[utoipa::path(post, path = "/api/workouts/plans/{id}/sessions", operation_id = "workouts_create_session", tag = "workouts", params(("id" = i64, Path)), request_body = SessionBody, responses((status = 201, description = "Success", body = Session)), security(("bearer" = [])))]
async fn create_session(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(b): ApiJson<SessionBody>,
) -> ApiResult<Created<Session>> {
    check_session(&b)?;
    add_to(&state, &me, id, plan_for, move |c, plan| {
        Ok(w::insert_session(
            c,
            plan.id,
            b.name.trim(),
            b.day_of_week,
            b.notes.as_deref(),
        )?)
    })
    .await
}

#[utoipa::path(get, path = "/api/workouts/sessions/{id}", operation_id = "workouts_get_session", tag = "workouts", params(("id" = i64, Path)), responses((status = 200, description = "Success", body = Session)), security(("bearer" = [])))]
async fn get_session(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Session>> {
    read_one(&state, &me, id, session_for).await
}

#[utoipa::path(put, path = "/api/workouts/sessions/{id}", operation_id = "workouts_put_session", tag = "workouts", params(("id" = i64, Path)), request_body = SessionBody, responses((status = 200, description = "Success", body = Session)), security(("bearer" = [])))]
async fn put_session(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(b): ApiJson<SessionBody>,
) -> ApiResult<Json<Session>> {
    check_session(&b)?;
    replace_one(&state, &me, id, session_for, move |c, _| {
        Ok(w::update_session(
            c,
            id,
            b.name.trim(),
            b.day_of_week,
            b.notes.as_deref(),
        )?)
    })
    .await
}

#[utoipa::path(delete, path = "/api/workouts/sessions/{id}", operation_id = "workouts_delete_session", tag = "workouts", params(("id" = i64, Path)), responses((status = 200, description = "Success", body = serde_json::Value)), security(("bearer" = [])))]
async fn delete_session(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<serde_json::Value>> {
    delete_one(
        &state,
        &me,
        id,
        session_for,
        w::delete_session,
        "Workout session",
    )
    .await
}

// ----- session exercises ---------------------------------------------------------------

/// The most exercises one bulk request may add.
const MAX_BULK: usize = 100;

fn check_wex(c: &mut Checks, prefix: &str, f: &WorkoutExerciseFields) {
    let field = |name: &str| format!("{prefix}{name}");
    c.range_i64(&field("order"), Some(f.order), 1, 1000);
    c.range_i64(&field("sets"), f.sets, 1, 100);
    c.opt_text(&field("reps"), f.reps.as_deref(), 50);
    c.range_f64(&field("weight"), f.weight, 0.0, 1000.0, false);
    c.range_i64(&field("rest_time"), f.rest_time, 0, 3600);
    c.opt_text(&field("notes"), f.notes.as_deref(), 2000);
}

/// An `exercise_id` in a body must name an exercise of the library: 404 naming the field.
fn existing_exercise(c: &Conn, id: i64, field: &str) -> ApiResult<()> {
    match w::find_exercise(c, id)? {
        Some(_) => Ok(()),
        None => Err(ApiError::unknown(field, "exercise")),
    }
}

fn insert_checked_wex(
    c: &Conn,
    session_id: i64,
    f: &WorkoutExerciseFields,
    field: &str,
) -> ApiResult<WorkoutExercise> {
    existing_exercise(c, f.exercise_id, field)?;
    Ok(w::insert_wex(c, session_id, f)?)
}

#[utoipa::path(get, path = "/api/workouts/sessions/{id}/exercises", operation_id = "workouts_list_session_exercises", tag = "workouts", params(("id" = i64, Path)), responses((status = 200, description = "Success", body = Vec<WorkoutExercise>)), security(("bearer" = [])))]
async fn list_session_exercises(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Vec<WorkoutExercise>>> {
    read_from(&state, &me, id, session_for, |c, session| {
        Ok(w::wex_of_session(c, session.id)?)
    })
    .await
}

#[utoipa::path(post, path = "/api/workouts/sessions/{id}/exercises", operation_id = "workouts_add_session_exercise", tag = "workouts", params(("id" = i64, Path)), request_body = WorkoutExerciseFields, responses((status = 201, description = "Success", body = WorkoutExercise)), security(("bearer" = [])))]
async fn add_session_exercise(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(f): ApiJson<WorkoutExerciseFields>,
) -> ApiResult<Created<WorkoutExercise>> {
    let mut checks = Checks::new();
    check_wex(&mut checks, "", &f);
    checks.finish()?;
    add_to(&state, &me, id, session_for, move |c, session| {
        insert_checked_wex(c, session.id, &f, "exercise_id")
    })
    .await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct BulkExercises {
    #[schema(min_items = 1, max_items = 100)]
    exercises: Vec<WorkoutExerciseFields>,
}

/// Adds several exercises in one transaction: all or none.
#[utoipa::path(post, path = "/api/workouts/sessions/{id}/exercises/bulk", operation_id = "workouts_add_session_exercises", tag = "workouts", params(("id" = i64, Path)), request_body = BulkExercises, responses((status = 201, description = "Success", body = Vec<WorkoutExercise>)), security(("bearer" = [])))]
async fn add_session_exercises(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(b): ApiJson<BulkExercises>,
) -> ApiResult<Created<Vec<WorkoutExercise>>> {
    let mut checks = Checks::new();
    if b.exercises.is_empty() || b.exercises.len() > MAX_BULK {
        checks.push("exercises", format!("must hold 1-{MAX_BULK} items"));
    }
    for (i, f) in b.exercises.iter().enumerate() {
        check_wex(&mut checks, &format!("exercises.{i}."), f);
    }
    checks.finish()?;
    add_to(&state, &me, id, session_for, move |c, session| {
        let tx = crate::server::access::write_tx(c)?;
        let mut out = Vec::with_capacity(b.exercises.len());
        for (i, f) in b.exercises.iter().enumerate() {
            out.push(insert_checked_wex(
                &tx,
                session.id,
                f,
                &format!("exercises.{i}.exercise_id"),
            )?);
        }
        tx.commit()?;
        Ok(out)
    })
    .await
}

fn wex_for(c: &Conn, actor: Actor, id: i64, write: bool) -> ApiResult<WorkoutExercise> {
    const MISSING: &str = "Workout exercise not found";
    owned(c, actor, w::wex_client(c, id), write, MISSING)?;
    w::find_wex(c, id)?.ok_or(ApiError::NotFound(MISSING))
}

#[utoipa::path(get, path = "/api/workouts/workout-exercises/{id}", operation_id = "workouts_get_workout_exercise", tag = "workouts", params(("id" = i64, Path)), responses((status = 200, description = "Success", body = WorkoutExercise)), security(("bearer" = [])))]
async fn get_workout_exercise(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<WorkoutExercise>> {
    read_one(&state, &me, id, wex_for).await
}

#[utoipa::path(put, path = "/api/workouts/workout-exercises/{id}", operation_id = "workouts_put_workout_exercise", tag = "workouts", params(("id" = i64, Path)), request_body = WorkoutExerciseFields, responses((status = 200, description = "Success", body = WorkoutExercise)), security(("bearer" = [])))]
async fn put_workout_exercise(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(f): ApiJson<WorkoutExerciseFields>,
) -> ApiResult<Json<WorkoutExercise>> {
    let mut checks = Checks::new();
    check_wex(&mut checks, "", &f);
    checks.finish()?;
    replace_one(&state, &me, id, wex_for, move |c, _| {
        existing_exercise(c, f.exercise_id, "exercise_id")?;
        Ok(w::update_wex(c, id, &f)?)
    })
    .await
}

#[utoipa::path(delete, path = "/api/workouts/workout-exercises/{id}", operation_id = "workouts_delete_workout_exercise", tag = "workouts", params(("id" = i64, Path)), responses((status = 200, description = "Success", body = serde_json::Value)), security(("bearer" = [])))]
async fn delete_workout_exercise(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<serde_json::Value>> {
    delete_one(&state, &me, id, wex_for, w::delete_wex, "Workout exercise").await
}

// ----- completions ---------------------------------------------------------------------

fn check_completion(c: &mut Checks, prefix: &str, f: &CompletionFields) {
    let field = |name: &str| format!("{prefix}{name}");
    c.range_i64(&field("actual_sets"), f.actual_sets, 0, 100);
    c.opt_text(&field("actual_reps"), f.actual_reps.as_deref(), 50);
    c.range_f64(&field("weight_used"), f.weight_used, 0.0, 1000.0, false);
    c.range_i64(&field("difficulty_rating"), f.difficulty_rating, 1, 5);
    c.opt_text(&field("notes"), f.notes.as_deref(), 2000);
}

/// Logs completions for the calling client, all or none, and tells their trainer once.
async fn log_completions(
    state: &AppState,
    me: &crate::db::users::User,
    items: Vec<CompletionFields>,
    prefix_for: fn(usize) -> String,
) -> ApiResult<Vec<Completion>> {
    let actor = Actor::from(me);
    actor.require(&[Role::Client], "Only clients log their workouts")?;
    let mut checks = Checks::new();
    for (i, f) in items.iter().enumerate() {
        check_completion(&mut checks, &prefix_for(i), f);
    }
    checks.finish()?;
    let trainer_id = me.trainer_id;
    let client_name = me.full_name.clone();
    write_notifying(state, move |c| {
        let tx = crate::server::access::write_tx(c)?;
        let mut out = Vec::with_capacity(items.len());
        for (i, f) in items.iter().enumerate() {
            let prefix = prefix_for(i);
            // The client's own plan only; another's exercise id reads as absent.
            if w::wex_client(&tx, f.workout_exercise_id)? != Some(actor.id) {
                return Err(ApiError::unknown(
                    format!("{prefix}workout_exercise_id"),
                    "workout exercise in your plans",
                ));
            }
            check_attachment(
                &tx,
                "form_photo_path",
                f.form_photo_path.as_deref(),
                Kind::FormPhotos,
                actor.id,
            )?;
            out.push(w::insert_completion(&tx, actor.id, f)?);
        }
        let note = match trainer_id {
            Some(t) => Some(notifications::insert(
                &tx,
                t,
                Some(actor.id),
                "Workout logged",
                &format!("{client_name} logged {} exercise(s)", out.len()),
                "workout_completed",
            )?),
            None => None,
        };
        tx.commit()?;
        Ok((out, note))
    })
    .await
}

#[utoipa::path(post, path = "/api/workouts/completions", operation_id = "workouts_create_completion", tag = "workouts", request_body = CompletionFields, responses((status = 201, description = "Success", body = Completion)), security(("bearer" = [])))]
async fn create_completion(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiJson(f): ApiJson<CompletionFields>,
) -> ApiResult<Created<Completion>> {
    let mut done = log_completions(&state, &me, vec![f], |_| String::new()).await?;
    Ok(created(done.remove(0)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct BulkCompletions {
    #[schema(min_items = 1, max_items = 100)]
    completions: Vec<CompletionFields>,
}

#[utoipa::path(post, path = "/api/workouts/completions/bulk", operation_id = "workouts_create_completions", tag = "workouts", request_body = BulkCompletions, responses((status = 201, description = "Success", body = Vec<Completion>)), security(("bearer" = [])))]
async fn create_completions(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiJson(b): ApiJson<BulkCompletions>,
) -> ApiResult<Created<Vec<Completion>>> {
    if b.completions.is_empty() || b.completions.len() > MAX_BULK {
        return Err(ApiError::field(
            "completions",
            format!("must hold 1-{MAX_BULK} items"),
        ));
    }
    log_completions(&state, &me, b.completions, |i| format!("completions.{i}."))
        .await
        .map(created)
}

#[utoipa::path(get, path = "/api/workouts/completions", operation_id = "workouts_list_completions", tag = "workouts", params(crate::server::params::Page, ClientListQuery), responses((status = 200, description = "Success", body = Vec<Completion>)), security(("bearer" = [])))]
async fn list_completions(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiQuery(page): ApiQuery<Page>,
    ApiQuery(q): ApiQuery<ClientListQuery>,
) -> ApiResult<Json<Vec<Completion>>> {
    page.valid()?;
    let Some((trainer, client)) = list_scope(Actor::from(&me), q.client_id) else {
        return Ok(Json(Vec::new()));
    };
    query(&state, move |c| {
        Ok(w::list_completions(
            c,
            trainer,
            client,
            page.limit,
            page.offset,
        )?)
    })
    .await
    .map(Json)
}

/// A completion the actor may see; to delete it (`write`), they must also be the client who
/// logged it or an admin (403).
fn completion_for(c: &Conn, actor: Actor, id: i64, write: bool) -> ApiResult<Completion> {
    const MISSING: &str = "Completion not found";
    let done = w::find_completion(c, id)?.ok_or(ApiError::NotFound(MISSING))?;
    visible_owner(c, actor, done.client_id, MISSING)?;
    if write && !(actor.is_admin() || done.client_id == actor.id) {
        return Err(ApiError::Forbidden(
            "Only the client who logged it or an admin can delete it",
        ));
    }
    Ok(done)
}

#[utoipa::path(get, path = "/api/workouts/completions/{id}", operation_id = "workouts_get_completion", tag = "workouts", params(("id" = i64, Path)), responses((status = 200, description = "Success", body = Completion)), security(("bearer" = [])))]
async fn get_completion(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Completion>> {
    read_one(&state, &me, id, completion_for).await
}

/// The client who logged it (a mistake) or an admin deletes a completion.
#[utoipa::path(delete, path = "/api/workouts/completions/{id}", operation_id = "workouts_delete_completion", tag = "workouts", params(("id" = i64, Path)), responses((status = 200, description = "Success", body = serde_json::Value)), security(("bearer" = [])))]
async fn delete_completion(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<serde_json::Value>> {
    delete_one(
        &state,
        &me,
        id,
        completion_for,
        w::delete_completion,
        "Completion",
    )
    .await
}
