//! Typed queries on the workout tables: exercises, plans, sessions, the exercises of a
//! session, and the completions clients log. Also the owner lookups the server's access
//! checks start from (every plan belongs to one client). Every statement is parameterised.

use super::sql::{params, Conn, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use super::users::now;
use super::DbError;

pub const MUSCLE_GROUPS: &[&str] = &[
    "chest",
    "back",
    "shoulders",
    "biceps",
    "triceps",
    "forearms",
    "legs",
    "glutes",
    "core",
    "cardio",
    "full_body",
    "other",
];

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExerciseFields {
    #[schema(min_length = 1, max_length = 100, pattern = "\\S")]
    pub name: String,
    #[schema(max_length = 2000)]
    pub description: Option<String>,
    /// An http(s) URL.
    #[schema(max_length = 500, pattern = "^https?://")]
    pub video_url: Option<String>,
    pub muscle_group: String,
    #[schema(max_length = 200)]
    pub equipment_needed: Option<String>,
    #[schema(max_length = 5000)]
    pub instructions: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Exercise {
    pub id: i64,
    #[serde(flatten)]
    pub fields: ExerciseFields,
    pub created_by: Option<i64>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

const EXERCISE_COLUMNS: &str =
    "id, name, description, video_url, muscle_group, equipment_needed, instructions, created_by, created_at";

fn exercise_from(r: &Row, at: usize) -> Result<Exercise, DbError> {
    Ok(Exercise {
        id: r.get(at)?,
        fields: ExerciseFields {
            name: r.get(at + 1)?,
            description: r.get(at + 2)?,
            video_url: r.get(at + 3)?,
            muscle_group: r.get(at + 4)?,
            equipment_needed: r.get(at + 5)?,
            instructions: r.get(at + 6)?,
        },
        created_by: r.get(at + 7)?,
        created_at: r.get(at + 8)?,
    })
}

pub fn insert_exercise(c: &Conn, f: &ExerciseFields, by: i64) -> Result<Exercise, DbError> {
    let id = c.insert(
        "INSERT INTO exercises (name, description, video_url, muscle_group, equipment_needed,
                                instructions, created_by, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            f.name,
            f.description,
            f.video_url,
            f.muscle_group,
            f.equipment_needed,
            f.instructions,
            by,
            now()
        ],
    )?;
    find_exercise(c, id)?.ok_or(DbError::NoRows)
}

pub fn update_exercise(c: &Conn, id: i64, f: &ExerciseFields) -> Result<(), DbError> {
    c.execute(
        "UPDATE exercises SET name = ?2, description = ?3, video_url = ?4, muscle_group = ?5,
                equipment_needed = ?6, instructions = ?7, updated_at = ?8 WHERE id = ?1",
        params![
            id,
            f.name,
            f.description,
            f.video_url,
            f.muscle_group,
            f.equipment_needed,
            f.instructions,
            now()
        ],
    )?;
    Ok(())
}

pub fn find_exercise(c: &Conn, id: i64) -> Result<Option<Exercise>, DbError> {
    c.prepare_cached(&format!(
        "SELECT {EXERCISE_COLUMNS} FROM exercises WHERE id = ?1"
    ))?
    .query_row([id], |r| exercise_from(r, 0))
    .optional()
}

pub fn list_exercises(
    c: &Conn,
    muscle_group: Option<&str>,
    search: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<Vec<Exercise>, DbError> {
    // SQLite's instr is PostgreSQL's strpos.
    let find = match c.backend() {
        super::Backend::Sqlite => "instr",
        super::Backend::Postgresql => "strpos",
    };
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {EXERCISE_COLUMNS} FROM exercises
         WHERE (CAST(?1 AS TEXT) IS NULL OR muscle_group = ?1)
           AND (CAST(?2 AS TEXT) IS NULL OR {find}(lower(name), lower(?2)) > 0)
         ORDER BY name, id LIMIT ?3 OFFSET ?4"
    ))?;
    let rows = stmt.query_map(params![muscle_group, search, limit, offset], |r| {
        exercise_from(r, 0)
    })?;
    rows.collect::<Result<_, _>>()
}

pub fn delete_exercise(c: &Conn, id: i64) -> Result<bool, DbError> {
    Ok(c.execute("DELETE FROM exercises WHERE id = ?1", [id])? > 0)
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Plan {
    pub id: i64,
    pub trainer_id: Option<i64>,
    pub client_id: i64,
    pub name: String,
    pub description: Option<String>,
    #[schema(format = Date)]
    pub start_date: Option<String>,
    #[schema(format = Date)]
    pub end_date: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    pub updated_at: Option<String>,
}

const PLAN_COLUMNS: &str =
    "p.id, p.trainer_id, p.client_id, p.name, p.description, p.start_date, p.end_date, p.created_at, p.updated_at";

fn plan_from(r: &Row) -> Result<Plan, DbError> {
    Ok(Plan {
        id: r.get(0)?,
        trainer_id: r.get(1)?,
        client_id: r.get(2)?,
        name: r.get(3)?,
        description: r.get(4)?,
        start_date: r.get(5)?,
        end_date: r.get(6)?,
        created_at: r.get(7)?,
        updated_at: r.get(8)?,
    })
}

pub struct PlanFields<'a> {
    pub name: &'a str,
    pub description: Option<&'a str>,
    pub start_date: Option<&'a str>,
    pub end_date: Option<&'a str>,
}

pub fn insert_plan(
    c: &Conn,
    trainer_id: Option<i64>,
    client_id: i64,
    f: &PlanFields<'_>,
) -> Result<Plan, DbError> {
    let id = c.insert(
        "INSERT INTO workout_plans (trainer_id, client_id, name, description, start_date, end_date, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![trainer_id, client_id, f.name, f.description, f.start_date, f.end_date, now()],
    )?;
    find_plan(c, id)?.ok_or(DbError::NoRows)
}

pub fn update_plan(c: &Conn, id: i64, f: &PlanFields<'_>) -> Result<(), DbError> {
    c.execute(
        "UPDATE workout_plans SET name = ?2, description = ?3, start_date = ?4, end_date = ?5,
                updated_at = ?6 WHERE id = ?1",
        params![id, f.name, f.description, f.start_date, f.end_date, now()],
    )?;
    Ok(())
}

pub fn find_plan(c: &Conn, id: i64) -> Result<Option<Plan>, DbError> {
    c.prepare_cached(&format!(
        "SELECT {PLAN_COLUMNS} FROM workout_plans p WHERE p.id = ?1"
    ))?
    .query_row([id], plan_from)
    .optional()
}

/// Plans visible in a scope: `trainer` limits to that trainer's clients, `client` to one
/// client (both `None` is everything, for admins).
pub fn list_plans(
    c: &Conn,
    trainer: Option<i64>,
    client: Option<i64>,
    limit: i64,
    offset: i64,
) -> Result<Vec<Plan>, DbError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {PLAN_COLUMNS} FROM workout_plans p JOIN users u ON u.id = p.client_id
         WHERE (CAST(?1 AS BIGINT) IS NULL OR u.trainer_id = ?1) AND (CAST(?2 AS BIGINT) IS NULL OR p.client_id = ?2)
         ORDER BY p.id DESC LIMIT ?3 OFFSET ?4"
    ))?;
    let rows = stmt.query_map(params![trainer, client, limit, offset], plan_from)?;
    rows.collect::<Result<_, _>>()
}

pub fn delete_plan(c: &Conn, id: i64) -> Result<bool, DbError> {
    Ok(c.execute("DELETE FROM workout_plans WHERE id = ?1", [id])? > 0)
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Session {
    pub id: i64,
    pub workout_plan_id: i64,
    pub name: String,
    pub day_of_week: Option<i64>,
    pub notes: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

const SESSION_COLUMNS: &str = "id, workout_plan_id, name, day_of_week, notes, created_at";

fn session_from(r: &Row) -> Result<Session, DbError> {
    Ok(Session {
        id: r.get(0)?,
        workout_plan_id: r.get(1)?,
        name: r.get(2)?,
        day_of_week: r.get(3)?,
        notes: r.get(4)?,
        created_at: r.get(5)?,
    })
}

pub fn insert_session(
    c: &Conn,
    plan_id: i64,
    name: &str,
    day: Option<i64>,
    notes: Option<&str>,
) -> Result<Session, DbError> {
    let id = c.insert(
        "INSERT INTO workout_sessions (workout_plan_id, name, day_of_week, notes, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![plan_id, name, day, notes, now()],
    )?;
    find_session(c, id)?.ok_or(DbError::NoRows)
}

pub fn update_session(
    c: &Conn,
    id: i64,
    name: &str,
    day: Option<i64>,
    notes: Option<&str>,
) -> Result<(), DbError> {
    c.execute(
        "UPDATE workout_sessions SET name = ?2, day_of_week = ?3, notes = ?4 WHERE id = ?1",
        params![id, name, day, notes],
    )?;
    Ok(())
}

pub fn find_session(c: &Conn, id: i64) -> Result<Option<Session>, DbError> {
    c.prepare_cached(&format!(
        "SELECT {SESSION_COLUMNS} FROM workout_sessions WHERE id = ?1"
    ))?
    .query_row([id], session_from)
    .optional()
}

pub fn sessions_of(c: &Conn, plan_id: i64) -> Result<Vec<Session>, DbError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {SESSION_COLUMNS} FROM workout_sessions WHERE workout_plan_id = ?1
         ORDER BY coalesce(day_of_week, 7), id LIMIT 200"
    ))?;
    let rows = stmt.query_map([plan_id], session_from)?;
    rows.collect::<Result<_, _>>()
}

pub fn delete_session(c: &Conn, id: i64) -> Result<bool, DbError> {
    Ok(c.execute("DELETE FROM workout_sessions WHERE id = ?1", [id])? > 0)
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkoutExerciseFields {
    pub exercise_id: i64,
    #[schema(minimum = 1, maximum = 1000)]
    pub order: i64,
    #[schema(minimum = 1, maximum = 100)]
    pub sets: Option<i64>,
    #[schema(max_length = 50)]
    pub reps: Option<String>,
    #[schema(minimum = 0, maximum = 1000)]
    pub weight: Option<f64>,
    /// Seconds.
    #[schema(minimum = 0, maximum = 3600)]
    pub rest_time: Option<i64>,
    #[schema(max_length = 2000)]
    pub notes: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WorkoutExercise {
    pub id: i64,
    pub workout_session_id: i64,
    #[serde(flatten)]
    pub fields: WorkoutExerciseFields,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exercise: Option<Exercise>,
}

const WEX_COLUMNS: &str =
    "w.id, w.workout_session_id, w.exercise_id, w.order_index, w.sets, w.reps, w.weight, w.rest_time, w.notes";

fn wex_from(r: &Row) -> Result<WorkoutExercise, DbError> {
    Ok(WorkoutExercise {
        id: r.get(0)?,
        workout_session_id: r.get(1)?,
        fields: WorkoutExerciseFields {
            exercise_id: r.get(2)?,
            order: r.get(3)?,
            sets: r.get(4)?,
            reps: r.get(5)?,
            weight: r.get(6)?,
            rest_time: r.get(7)?,
            notes: r.get(8)?,
        },
        exercise: None,
    })
}

pub fn insert_wex(
    c: &Conn,
    session_id: i64,
    f: &WorkoutExerciseFields,
) -> Result<WorkoutExercise, DbError> {
    let id = c.prepare_cached(
        "INSERT INTO workout_exercises (workout_session_id, exercise_id, order_index, sets, reps,
                                        weight, rest_time, notes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .insert(params![
        session_id,
        f.exercise_id,
        f.order,
        f.sets,
        f.reps,
        f.weight,
        f.rest_time,
        f.notes
    ])?;
    find_wex(c, id)?.ok_or(DbError::NoRows)
}

pub fn update_wex(c: &Conn, id: i64, f: &WorkoutExerciseFields) -> Result<(), DbError> {
    c.execute(
        "UPDATE workout_exercises SET exercise_id = ?2, order_index = ?3, sets = ?4, reps = ?5,
                weight = ?6, rest_time = ?7, notes = ?8 WHERE id = ?1",
        params![
            id,
            f.exercise_id,
            f.order,
            f.sets,
            f.reps,
            f.weight,
            f.rest_time,
            f.notes
        ],
    )?;
    Ok(())
}

pub fn find_wex(c: &Conn, id: i64) -> Result<Option<WorkoutExercise>, DbError> {
    c.prepare_cached(&format!(
        "SELECT {WEX_COLUMNS} FROM workout_exercises w WHERE w.id = ?1"
    ))?
    .query_row([id], wex_from)
    .optional()
}

pub fn delete_wex(c: &Conn, id: i64) -> Result<bool, DbError> {
    Ok(c.execute("DELETE FROM workout_exercises WHERE id = ?1", [id])? > 0)
}

/// The exercises of every session of a plan, each with its exercise, in order.
pub fn wex_of_plan(c: &Conn, plan_id: i64) -> Result<Vec<WorkoutExercise>, DbError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {WEX_COLUMNS}, {} FROM workout_exercises w
         JOIN workout_sessions s ON s.id = w.workout_session_id
         JOIN exercises e ON e.id = w.exercise_id
         WHERE s.workout_plan_id = ?1 ORDER BY w.workout_session_id, w.order_index, w.id LIMIT 2000",
        EXERCISE_COLUMNS.split(", ").map(|col| format!("e.{col}")).collect::<Vec<_>>().join(", ")
    ))?;
    let rows = stmt.query_map([plan_id], |r| {
        let mut w = wex_from(r)?;
        w.exercise = Some(exercise_from(r, 9)?);
        Ok(w)
    })?;
    rows.collect::<Result<_, _>>()
}

pub fn wex_of_session(c: &Conn, session_id: i64) -> Result<Vec<WorkoutExercise>, DbError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {WEX_COLUMNS} FROM workout_exercises w WHERE w.workout_session_id = ?1
         ORDER BY w.order_index, w.id LIMIT 500"
    ))?;
    let rows = stmt.query_map([session_id], wex_from)?;
    rows.collect::<Result<_, _>>()
}

/// The client a plan belongs to.
pub fn plan_client(c: &Conn, plan_id: i64) -> Result<Option<i64>, DbError> {
    c.prepare_cached("SELECT client_id FROM workout_plans WHERE id = ?1")?
        .query_row([plan_id], |r| r.get(0))
        .optional()
}

/// The client a session belongs to, through its plan.
pub fn session_client(c: &Conn, session_id: i64) -> Result<Option<i64>, DbError> {
    c.prepare_cached(
        "SELECT p.client_id FROM workout_sessions s JOIN workout_plans p ON p.id = s.workout_plan_id
         WHERE s.id = ?1",
    )?
    .query_row([session_id], |r| r.get(0))
    .optional()
}

/// The client a workout exercise belongs to, through its session and plan.
pub fn wex_client(c: &Conn, wex_id: i64) -> Result<Option<i64>, DbError> {
    c.prepare_cached(
        "SELECT p.client_id FROM workout_exercises w
         JOIN workout_sessions s ON s.id = w.workout_session_id
         JOIN workout_plans p ON p.id = s.workout_plan_id WHERE w.id = ?1",
    )?
    .query_row([wex_id], |r| r.get(0))
    .optional()
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompletionFields {
    pub workout_exercise_id: i64,
    #[schema(minimum = 0, maximum = 100)]
    pub actual_sets: Option<i64>,
    #[schema(max_length = 50)]
    pub actual_reps: Option<String>,
    #[schema(minimum = 0, maximum = 1000)]
    pub weight_used: Option<f64>,
    #[schema(minimum = 1, maximum = 5)]
    pub difficulty_rating: Option<i64>,
    #[schema(max_length = 2000)]
    pub notes: Option<String>,
    /// A URL from `/api/files/upload/form_photos`, owned by the same client (404 when it
    /// names no file of theirs).
    #[schema(pattern = "^/api/files/media/form_photos/[0-9a-f]{32}[.](jpg|png|webp|gif|pdf)$")]
    pub form_photo_path: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Completion {
    pub id: i64,
    pub client_id: i64,
    #[serde(flatten)]
    pub fields: CompletionFields,
    #[schema(format = DateTime)]
    pub completed_at: String,
}

const COMPLETION_COLUMNS: &str =
    "id, client_id, workout_exercise_id, actual_sets, actual_reps, weight_used, \
                                  difficulty_rating, notes, form_photo_path, completed_at";

fn completion_from(r: &Row) -> Result<Completion, DbError> {
    Ok(Completion {
        id: r.get(0)?,
        client_id: r.get(1)?,
        fields: CompletionFields {
            workout_exercise_id: r.get(2)?,
            actual_sets: r.get(3)?,
            actual_reps: r.get(4)?,
            weight_used: r.get(5)?,
            difficulty_rating: r.get(6)?,
            notes: r.get(7)?,
            form_photo_path: r.get(8)?,
        },
        completed_at: r.get(9)?,
    })
}

pub fn insert_completion(
    c: &Conn,
    client_id: i64,
    f: &CompletionFields,
) -> Result<Completion, DbError> {
    let id = c.prepare_cached(
        "INSERT INTO exercise_completions (workout_exercise_id, client_id, actual_sets, actual_reps,
             weight_used, difficulty_rating, notes, form_photo_path, completed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .insert(params![
        f.workout_exercise_id,
        client_id,
        f.actual_sets,
        f.actual_reps,
        f.weight_used,
        f.difficulty_rating,
        f.notes,
        f.form_photo_path,
        now()
    ])?;
    find_completion(c, id)?.ok_or(DbError::NoRows)
}

pub fn find_completion(c: &Conn, id: i64) -> Result<Option<Completion>, DbError> {
    c.prepare_cached(&format!(
        "SELECT {COMPLETION_COLUMNS} FROM exercise_completions WHERE id = ?1"
    ))?
    .query_row([id], completion_from)
    .optional()
}

pub fn list_completions(
    c: &Conn,
    trainer: Option<i64>,
    client: Option<i64>,
    limit: i64,
    offset: i64,
) -> Result<Vec<Completion>, DbError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {} FROM exercise_completions x JOIN users u ON u.id = x.client_id
         WHERE (CAST(?1 AS BIGINT) IS NULL OR u.trainer_id = ?1) AND (CAST(?2 AS BIGINT) IS NULL OR x.client_id = ?2)
         ORDER BY x.id DESC LIMIT ?3 OFFSET ?4",
        COMPLETION_COLUMNS
            .split(", ")
            .map(|col| format!("x.{col}"))
            .collect::<Vec<_>>()
            .join(", ")
    ))?;
    let rows = stmt.query_map(params![trainer, client, limit, offset], completion_from)?;
    rows.collect::<Result<_, _>>()
}

pub fn delete_completion(c: &Conn, id: i64) -> Result<bool, DbError> {
    Ok(c.execute("DELETE FROM exercise_completions WHERE id = ?1", [id])? > 0)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PlanSummary {
    pub workout_plan_id: i64,
    pub workout_plan_name: String,
    pub total_sessions: i64,
    pub completed_sessions: i64,
    pub total_exercises: i64,
    pub completed_exercises: i64,
    pub total_completions: i64,
    pub completion_rate: f64,
    pub last_workout_date: Option<String>,
}

/// Progress of one plan: a session counts as completed when each of its exercises has at
/// least one completion.
pub fn plan_summary(c: &Conn, plan: &Plan) -> Result<PlanSummary, DbError> {
    let (total_sessions, completed_sessions): (i64, i64) = c.prepare_cached(
        "SELECT count(*), CAST(coalesce(sum(done), 0) AS BIGINT) FROM (
             SELECT s.id, CASE WHEN count(w.id) > 0 AND count(w.id) = count(DISTINCT x.workout_exercise_id)
                               THEN 1 ELSE 0 END AS done
             FROM workout_sessions s
             LEFT JOIN workout_exercises w ON w.workout_session_id = s.id
             LEFT JOIN exercise_completions x ON x.workout_exercise_id = w.id
             WHERE s.workout_plan_id = ?1 GROUP BY s.id) AS sessions",
    )?
    .query_row([plan.id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let (total_exercises, completed_exercises, total_completions, last): (i64, i64, i64, Option<String>) = c
        .prepare_cached(
            "SELECT count(DISTINCT w.id), count(DISTINCT x.workout_exercise_id), count(x.id), max(x.completed_at)
             FROM workout_exercises w
             JOIN workout_sessions s ON s.id = w.workout_session_id
             LEFT JOIN exercise_completions x ON x.workout_exercise_id = w.id
             WHERE s.workout_plan_id = ?1",
        )?
        .query_row([plan.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
    let completion_rate = if total_exercises == 0 {
        0.0
    } else {
        (completed_exercises as f64 / total_exercises as f64 * 1000.0).round() / 10.0
    };
    Ok(PlanSummary {
        workout_plan_id: plan.id,
        workout_plan_name: plan.name.clone(),
        total_sessions,
        completed_sessions,
        total_exercises,
        completed_exercises,
        total_completions,
        completion_rate,
        last_workout_date: last,
    })
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProgressPoint {
    #[schema(format = DateTime)]
    pub completed_at: String,
    pub actual_sets: Option<i64>,
    pub actual_reps: Option<String>,
    pub weight_used: Option<f64>,
    pub difficulty_rating: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExerciseProgress {
    pub exercise_id: i64,
    pub exercise_name: String,
    pub muscle_group: String,
    pub client_id: i64,
    pub total_completions: i64,
    pub average_sets: Option<f64>,
    pub average_weight: Option<f64>,
    pub max_weight: Option<f64>,
    pub average_difficulty: Option<f64>,
    pub last_completed: Option<String>,
    /// The most recent completions, oldest first (at most 100).
    pub history: Vec<ProgressPoint>,
}

pub fn exercise_progress(
    c: &Conn,
    ex: &Exercise,
    client_id: i64,
) -> Result<ExerciseProgress, DbError> {
    const FROM: &str =
        "FROM exercise_completions x JOIN workout_exercises w ON w.id = x.workout_exercise_id
                        WHERE w.exercise_id = ?1 AND x.client_id = ?2";
    let (total, avg_sets, avg_weight, max_weight, avg_diff, last) = c
        .prepare_cached(&format!(
            "SELECT count(*), CAST(avg(x.actual_sets) AS DOUBLE PRECISION), avg(x.weight_used),
                    max(x.weight_used), CAST(avg(x.difficulty_rating) AS DOUBLE PRECISION),
                    max(x.completed_at) {FROM}"
        ))?
        .query_row(params![ex.id, client_id], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?;
    let mut stmt = c.prepare_cached(&format!(
        "SELECT * FROM (SELECT x.completed_at, x.actual_sets, x.actual_reps, x.weight_used,
                x.difficulty_rating, x.id {FROM} ORDER BY x.id DESC LIMIT 100) AS recent ORDER BY id"
    ))?;
    let history = stmt
        .query_map(params![ex.id, client_id], |r| {
            Ok(ProgressPoint {
                completed_at: r.get(0)?,
                actual_sets: r.get(1)?,
                actual_reps: r.get(2)?,
                weight_used: r.get(3)?,
                difficulty_rating: r.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(ExerciseProgress {
        exercise_id: ex.id,
        exercise_name: ex.fields.name.clone(),
        muscle_group: ex.fields.muscle_group.clone(),
        client_id,
        total_completions: total,
        average_sets: avg_sets,
        average_weight: avg_weight,
        max_weight,
        average_difficulty: avg_diff,
        last_completed: last,
        history,
    })
}
