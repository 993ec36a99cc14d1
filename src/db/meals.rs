//! Typed queries on meal plans: a plan per client and date with calorie and macro
//! targets, its meal entries, each entry's components, and the meal photos clients upload
//! for an entry with their trainer's review. Every statement is parameterised.

use super::sql::{params, Conn, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use super::users::now;
use super::DbError;

pub const COMPONENT_TYPES: &[&str] = &[
    "protein",
    "carb",
    "fat",
    "vegetable",
    "fruit",
    "dairy",
    "snack",
    "other",
];

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlanFields {
    pub title: String,
    pub total_calories: Option<i64>,
    pub protein_target: Option<i64>,
    pub carb_target: Option<i64>,
    pub fat_target: Option<i64>,
    pub notes: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MealPlan {
    pub id: i64,
    pub client_id: i64,
    pub trainer_id: Option<i64>,
    #[schema(format = Date)]
    pub date: String,
    #[serde(flatten)]
    pub fields: PlanFields,
    #[schema(format = DateTime)]
    pub created_at: String,
    pub updated_at: Option<String>,
}

const PLAN_COLUMNS: &str =
    "m.id, m.client_id, m.trainer_id, m.date, m.title, m.total_calories, m.protein_target, \
                            m.carb_target, m.fat_target, m.notes, m.created_at, m.updated_at";

fn plan_from(r: &Row) -> Result<MealPlan, DbError> {
    Ok(MealPlan {
        id: r.get(0)?,
        client_id: r.get(1)?,
        trainer_id: r.get(2)?,
        date: r.get(3)?,
        fields: PlanFields {
            title: r.get(4)?,
            total_calories: r.get(5)?,
            protein_target: r.get(6)?,
            carb_target: r.get(7)?,
            fat_target: r.get(8)?,
            notes: r.get(9)?,
        },
        created_at: r.get(10)?,
        updated_at: r.get(11)?,
    })
}

pub fn insert_plan(
    c: &Conn,
    client_id: i64,
    trainer_id: Option<i64>,
    date: &str,
    f: &PlanFields,
) -> Result<MealPlan, DbError> {
    let id = c.insert(
        "INSERT INTO meal_plans (client_id, trainer_id, date, title, total_calories, protein_target,
                                 carb_target, fat_target, notes, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![client_id, trainer_id, date, f.title, f.total_calories, f.protein_target, f.carb_target, f.fat_target, f.notes, now()],
    )?;
    find_plan(c, id)?.ok_or(DbError::NoRows)
}

pub fn update_plan(c: &Conn, id: i64, date: &str, f: &PlanFields) -> Result<(), DbError> {
    c.execute(
        "UPDATE meal_plans SET date = ?2, title = ?3, total_calories = ?4, protein_target = ?5,
                carb_target = ?6, fat_target = ?7, notes = ?8, updated_at = ?9 WHERE id = ?1",
        params![
            id,
            date,
            f.title,
            f.total_calories,
            f.protein_target,
            f.carb_target,
            f.fat_target,
            f.notes,
            now()
        ],
    )?;
    Ok(())
}

pub fn find_plan(c: &Conn, id: i64) -> Result<Option<MealPlan>, DbError> {
    c.prepare_cached(&format!(
        "SELECT {PLAN_COLUMNS} FROM meal_plans m WHERE m.id = ?1"
    ))?
    .query_row([id], plan_from)
    .optional()
}

pub fn plan_for_date(c: &Conn, client_id: i64, date: &str) -> Result<Option<MealPlan>, DbError> {
    c.prepare_cached(&format!(
        "SELECT {PLAN_COLUMNS} FROM meal_plans m WHERE m.client_id = ?1 AND m.date = ?2 ORDER BY m.id DESC LIMIT 1"
    ))?
    .query_row(params![client_id, date], plan_from)
    .optional()
}

pub fn list_plans(
    c: &Conn,
    trainer: Option<i64>,
    client: Option<i64>,
    from: Option<&str>,
    to: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<Vec<MealPlan>, DbError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {PLAN_COLUMNS} FROM meal_plans m JOIN users u ON u.id = m.client_id
         WHERE (CAST(?1 AS BIGINT) IS NULL OR u.trainer_id = ?1) AND (CAST(?2 AS BIGINT) IS NULL OR m.client_id = ?2)
           AND (CAST(?3 AS TEXT) IS NULL OR m.date >= ?3) AND (CAST(?4 AS TEXT) IS NULL OR m.date <= ?4)
         ORDER BY m.date DESC, m.id DESC LIMIT ?5 OFFSET ?6"
    ))?;
    let rows = stmt.query_map(params![trainer, client, from, to, limit, offset], plan_from)?;
    rows.collect::<Result<_, _>>()
}

pub fn delete_plan(c: &Conn, id: i64) -> Result<bool, DbError> {
    Ok(c.execute("DELETE FROM meal_plans WHERE id = ?1", [id])? > 0)
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EntryFields {
    #[schema(min_length = 1, max_length = 100, pattern = "\\S")]
    pub name: String,
    #[schema(minimum = 1, maximum = 100)]
    pub order: i64,
    #[schema(max_length = 2000)]
    pub notes: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MealEntry {
    pub id: i64,
    pub meal_plan_id: i64,
    #[serde(flatten)]
    pub fields: EntryFields,
}

fn entry_from(r: &Row) -> Result<MealEntry, DbError> {
    Ok(MealEntry {
        id: r.get(0)?,
        meal_plan_id: r.get(1)?,
        fields: EntryFields {
            name: r.get(2)?,
            order: r.get(3)?,
            notes: r.get(4)?,
        },
    })
}

pub fn insert_entry(c: &Conn, plan_id: i64, f: &EntryFields) -> Result<MealEntry, DbError> {
    let id = c.insert(
        "INSERT INTO meal_entries (meal_plan_id, name, order_index, notes) VALUES (?1, ?2, ?3, ?4)",
        params![plan_id, f.name, f.order, f.notes],
    )?;
    find_entry(c, id)?.ok_or(DbError::NoRows)
}

pub fn update_entry(c: &Conn, id: i64, f: &EntryFields) -> Result<(), DbError> {
    c.execute(
        "UPDATE meal_entries SET name = ?2, order_index = ?3, notes = ?4 WHERE id = ?1",
        params![id, f.name, f.order, f.notes],
    )?;
    Ok(())
}

pub fn find_entry(c: &Conn, id: i64) -> Result<Option<MealEntry>, DbError> {
    c.prepare_cached(
        "SELECT id, meal_plan_id, name, order_index, notes FROM meal_entries WHERE id = ?1",
    )?
    .query_row([id], entry_from)
    .optional()
}

pub fn entries_of(c: &Conn, plan_id: i64) -> Result<Vec<MealEntry>, DbError> {
    let mut stmt = c.prepare_cached(
        "SELECT id, meal_plan_id, name, order_index, notes FROM meal_entries
         WHERE meal_plan_id = ?1 ORDER BY order_index, id LIMIT 100",
    )?;
    let rows = stmt.query_map([plan_id], entry_from)?;
    rows.collect::<Result<_, _>>()
}

pub fn delete_entry(c: &Conn, id: i64) -> Result<bool, DbError> {
    Ok(c.execute("DELETE FROM meal_entries WHERE id = ?1", [id])? > 0)
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ComponentFields {
    #[serde(rename = "type")]
    pub kind: String,
    #[schema(min_length = 1, max_length = 500, pattern = "\\S")]
    pub description: String,
    #[schema(minimum = 0, maximum = 10000)]
    pub calories: Option<i64>,
    #[schema(minimum = 0, maximum = 1000)]
    pub protein: Option<f64>,
    #[schema(minimum = 0, maximum = 1000)]
    pub carbs: Option<f64>,
    #[schema(minimum = 0, maximum = 1000)]
    pub fat: Option<f64>,
    #[serde(default)]
    pub is_optional: bool,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MealComponent {
    pub id: i64,
    pub meal_entry_id: i64,
    #[serde(flatten)]
    pub fields: ComponentFields,
}

const COMPONENT_COLUMNS: &str = "k.id, k.meal_entry_id, k.type, k.description, k.calories, k.protein, k.carbs, k.fat, k.is_optional";

fn component_from(r: &Row) -> Result<MealComponent, DbError> {
    Ok(MealComponent {
        id: r.get(0)?,
        meal_entry_id: r.get(1)?,
        fields: ComponentFields {
            kind: r.get(2)?,
            description: r.get(3)?,
            calories: r.get(4)?,
            protein: r.get(5)?,
            carbs: r.get(6)?,
            fat: r.get(7)?,
            is_optional: r.get(8)?,
        },
    })
}

pub fn insert_component(
    c: &Conn,
    entry_id: i64,
    f: &ComponentFields,
) -> Result<MealComponent, DbError> {
    let id = c.insert(
        "INSERT INTO meal_components (meal_entry_id, type, description, calories, protein, carbs, fat, is_optional)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![entry_id, f.kind, f.description, f.calories, f.protein, f.carbs, f.fat, f.is_optional],
    )?;
    find_component(c, id)?.ok_or(DbError::NoRows)
}

pub fn update_component(c: &Conn, id: i64, f: &ComponentFields) -> Result<(), DbError> {
    c.execute(
        "UPDATE meal_components SET type = ?2, description = ?3, calories = ?4, protein = ?5,
                carbs = ?6, fat = ?7, is_optional = ?8 WHERE id = ?1",
        params![
            id,
            f.kind,
            f.description,
            f.calories,
            f.protein,
            f.carbs,
            f.fat,
            f.is_optional
        ],
    )?;
    Ok(())
}

pub fn find_component(c: &Conn, id: i64) -> Result<Option<MealComponent>, DbError> {
    c.prepare_cached(&format!(
        "SELECT {COMPONENT_COLUMNS} FROM meal_components k WHERE k.id = ?1"
    ))?
    .query_row([id], component_from)
    .optional()
}

pub fn components_of_plan(c: &Conn, plan_id: i64) -> Result<Vec<MealComponent>, DbError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {COMPONENT_COLUMNS} FROM meal_components k JOIN meal_entries e ON e.id = k.meal_entry_id
         WHERE e.meal_plan_id = ?1 ORDER BY k.meal_entry_id, k.id LIMIT 2000"
    ))?;
    let rows = stmt.query_map([plan_id], component_from)?;
    rows.collect::<Result<_, _>>()
}

pub fn delete_component(c: &Conn, id: i64) -> Result<bool, DbError> {
    Ok(c.execute("DELETE FROM meal_components WHERE id = ?1", [id])? > 0)
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MealUpload {
    pub id: i64,
    pub meal_entry_id: i64,
    pub client_id: i64,
    pub image_path: String,
    pub status: String,
    pub trainer_comment: Option<String>,
    pub reviewed_by: Option<i64>,
    #[schema(format = DateTime)]
    pub uploaded_at: String,
    pub reviewed_at: Option<String>,
}

const UPLOAD_COLUMNS: &str =
    "u.id, u.meal_entry_id, u.client_id, u.image_path, u.status, u.trainer_comment, \
                              u.reviewed_by, u.uploaded_at, u.reviewed_at";

fn upload_from(r: &Row) -> Result<MealUpload, DbError> {
    Ok(MealUpload {
        id: r.get(0)?,
        meal_entry_id: r.get(1)?,
        client_id: r.get(2)?,
        image_path: r.get(3)?,
        status: r.get(4)?,
        trainer_comment: r.get(5)?,
        reviewed_by: r.get(6)?,
        uploaded_at: r.get(7)?,
        reviewed_at: r.get(8)?,
    })
}

pub fn insert_upload(
    c: &Conn,
    entry_id: i64,
    client_id: i64,
    image_path: &str,
) -> Result<MealUpload, DbError> {
    let id = c.insert(
        "INSERT INTO meal_uploads (meal_entry_id, client_id, image_path, uploaded_at) VALUES (?1, ?2, ?3, ?4)",
        params![entry_id, client_id, image_path, now()],
    )?;
    find_upload(c, id)?.ok_or(DbError::NoRows)
}

pub fn find_upload(c: &Conn, id: i64) -> Result<Option<MealUpload>, DbError> {
    c.prepare_cached(&format!(
        "SELECT {UPLOAD_COLUMNS} FROM meal_uploads u WHERE u.id = ?1"
    ))?
    .query_row([id], upload_from)
    .optional()
}

pub fn review_upload(
    c: &Conn,
    id: i64,
    status: &str,
    comment: Option<&str>,
    by: i64,
) -> Result<(), DbError> {
    c.execute(
        "UPDATE meal_uploads SET status = ?2, trainer_comment = ?3, reviewed_by = ?4, reviewed_at = ?5 WHERE id = ?1",
        params![id, status, comment, by, now()],
    )?;
    Ok(())
}

pub fn uploads_of_plan(c: &Conn, plan_id: i64) -> Result<Vec<MealUpload>, DbError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {UPLOAD_COLUMNS} FROM meal_uploads u JOIN meal_entries e ON e.id = u.meal_entry_id
         WHERE e.meal_plan_id = ?1 ORDER BY u.id LIMIT 1000"
    ))?;
    let rows = stmt.query_map([plan_id], upload_from)?;
    rows.collect::<Result<_, _>>()
}

pub fn delete_upload(c: &Conn, id: i64) -> Result<bool, DbError> {
    Ok(c.execute("DELETE FROM meal_uploads WHERE id = ?1", [id])? > 0)
}

/// Image paths of the uploads under a plan or an entry, so their files can go too.
pub fn upload_paths(
    c: &Conn,
    plan_id: Option<i64>,
    entry_id: Option<i64>,
) -> Result<Vec<String>, DbError> {
    let mut stmt = c.prepare_cached(
        "SELECT u.image_path FROM meal_uploads u JOIN meal_entries e ON e.id = u.meal_entry_id
         WHERE (CAST(?1 AS BIGINT) IS NULL OR e.meal_plan_id = ?1) AND (CAST(?2 AS BIGINT) IS NULL OR e.id = ?2)",
    )?;
    let rows = stmt.query_map(params![plan_id, entry_id], |r| r.get(0))?;
    rows.collect::<Result<_, _>>()
}

/// The client a meal entry belongs to, through its plan.
pub fn entry_client(c: &Conn, entry_id: i64) -> Result<Option<i64>, DbError> {
    c.prepare_cached("SELECT m.client_id FROM meal_entries e JOIN meal_plans m ON m.id = e.meal_plan_id WHERE e.id = ?1")?
        .query_row([entry_id], |r| r.get(0))
        .optional()
}

pub fn component_client(c: &Conn, component_id: i64) -> Result<Option<i64>, DbError> {
    c.prepare_cached(
        "SELECT m.client_id FROM meal_components k JOIN meal_entries e ON e.id = k.meal_entry_id
         JOIN meal_plans m ON m.id = e.meal_plan_id WHERE k.id = ?1",
    )?
    .query_row([component_id], |r| r.get(0))
    .optional()
}
