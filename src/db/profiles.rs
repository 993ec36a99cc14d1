//! Typed queries on `trainer_profiles` and `client_profiles`, the role-specific details of
//! an account. A missing row reads as an empty profile. Every statement is parameterised.
//!
//! The profile structs don't deny unknown fields: registration flattens them beside the
//! account fields, and the OpenAPI document would otherwise describe an impossible body.

use super::sql::{params, Conn, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::users::now;
use super::DbError;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct TrainerProfile {
    #[schema(max_length = 200)]
    pub specialization: Option<String>,
    #[schema(max_length = 2000)]
    pub bio: Option<String>,
    #[schema(minimum = 0, maximum = 80)]
    pub years_of_experience: Option<i64>,
    #[schema(max_length = 200)]
    pub certification: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ClientProfile {
    /// Centimetres.
    #[schema(minimum = 50, maximum = 300)]
    pub height: Option<f64>,
    /// Kilograms.
    #[schema(exclusive_minimum = 0, maximum = 500)]
    pub target_weight: Option<f64>,
    #[schema(max_length = 2000)]
    pub goals: Option<String>,
    #[schema(max_length = 2000)]
    pub medical_conditions: Option<String>,
    #[schema(max_length = 2000)]
    pub dietary_restrictions: Option<String>,
}

pub fn trainer(conn: &Conn, user_id: i64) -> Result<TrainerProfile, DbError> {
    Ok(conn
        .prepare_cached(
            "SELECT specialization, bio, years_of_experience, certification
             FROM trainer_profiles WHERE user_id = ?1",
        )?
        .query_row([user_id], |r| {
            Ok(TrainerProfile {
                specialization: r.get(0)?,
                bio: r.get(1)?,
                years_of_experience: r.get(2)?,
                certification: r.get(3)?,
            })
        })
        .optional()?
        .unwrap_or_default())
}

pub fn client(conn: &Conn, user_id: i64) -> Result<ClientProfile, DbError> {
    Ok(conn
        .prepare_cached(
            "SELECT height, target_weight, goals, medical_conditions, dietary_restrictions
             FROM client_profiles WHERE user_id = ?1",
        )?
        .query_row([user_id], |r| {
            Ok(ClientProfile {
                height: r.get(0)?,
                target_weight: r.get(1)?,
                goals: r.get(2)?,
                medical_conditions: r.get(3)?,
                dietary_restrictions: r.get(4)?,
            })
        })
        .optional()?
        .unwrap_or_default())
}

/// Replaces the trainer profile as a whole (PUT semantics).
pub fn put_trainer(conn: &Conn, user_id: i64, p: &TrainerProfile) -> Result<(), DbError> {
    conn.execute(
        "INSERT INTO trainer_profiles
             (user_id, specialization, bio, years_of_experience, certification, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (user_id) DO UPDATE SET specialization = ?2, bio = ?3,
             years_of_experience = ?4, certification = ?5, updated_at = ?6",
        params![
            user_id,
            p.specialization,
            p.bio,
            p.years_of_experience,
            p.certification,
            now()
        ],
    )?;
    Ok(())
}

pub fn put_client(conn: &Conn, user_id: i64, p: &ClientProfile) -> Result<(), DbError> {
    conn.execute(
        "INSERT INTO client_profiles
             (user_id, height, target_weight, goals, medical_conditions, dietary_restrictions,
              updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (user_id) DO UPDATE SET height = ?2, target_weight = ?3, goals = ?4,
             medical_conditions = ?5, dietary_restrictions = ?6, updated_at = ?7",
        params![
            user_id,
            p.height,
            p.target_weight,
            p.goals,
            p.medical_conditions,
            p.dietary_restrictions,
            now()
        ],
    )?;
    Ok(())
}
