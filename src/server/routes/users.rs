//! `/api/users`: the current user, the admin's list, a trainer's clients, single users,
//! and assigning clients to trainers. Also [`UserDetail`] (a user with their profile),
//! which `/api/auth/register/{trainer,client}` return too.
//!
//! There is no public list of users: the list and the trainers are admin only, and a
//! trainer's client list holds their own clients. Visibility of one user follows
//! [`user_visible`]; anything else answers 404.

use crate::db::Conn;
use crate::server::json::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::db::invitations::{self, Invitation};
use crate::db::profiles::{self, ClientProfile, TrainerProfile};
use crate::db::users::{self, Role, User, UserChanges, UserFilter};
use crate::server::access::{query, write, Actor, STAFF};
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::{ApiJson, AuthUser};
use crate::server::params::{ApiPath, ApiQuery, Checks, Page};
use crate::server::routes::auth::is_email;
use crate::server::routes::deleted;
use crate::server::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users))
        .routes(routes!(get_me, put_me))
        .routes(routes!(list_clients))
        .routes(routes!(list_trainers))
        .routes(routes!(get_user, put_user, delete_user))
        .routes(routes!(assign_to_me))
        .routes(routes!(my_invitations))
        .routes(routes!(accept_invitation))
        .routes(routes!(decline_invitation))
        .routes(routes!(remove_client))
        .routes(routes!(admin_assign, admin_unassign))
}

/// A user with the profile of their role.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserDetail {
    #[serde(flatten)]
    pub user: User,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trainer_profile: Option<TrainerProfile>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_profile: Option<ClientProfile>,
}

pub fn detail(c: &Conn, user: User) -> ApiResult<UserDetail> {
    let (trainer_profile, client_profile) = match user.role {
        Role::Trainer => (Some(profiles::trainer(c, user.id)?), None),
        Role::Client => (None, Some(profiles::client(c, user.id)?)),
        Role::Admin => (None, None),
    };
    Ok(UserDetail {
        user,
        trainer_profile,
        client_profile,
    })
}

/// Who may see a user: themselves, an admin, a client's trainer, and a client's own trainer
/// as seen by that client.
fn user_visible(actor: Actor, target: &User, actor_trainer: Option<i64>) -> bool {
    actor.id == target.id
        || actor.is_admin()
        || (actor.role == Role::Trainer && target.trainer_id == Some(actor.id))
        || (actor.role == Role::Client && actor_trainer == Some(target.id))
}

fn find_visible(c: &Conn, actor: &User, id: i64) -> ApiResult<User> {
    users::find_by_id(c, id)?
        .filter(|u| user_visible(Actor::from(actor), u, actor.trainer_id))
        .ok_or(ApiError::NotFound("User not found"))
}

pub fn check_trainer_profile(c: &mut Checks, p: &TrainerProfile) {
    c.opt_text(
        "trainer_profile.specialization",
        p.specialization.as_deref(),
        200,
    );
    c.opt_text("trainer_profile.bio", p.bio.as_deref(), 2000);
    c.opt_text(
        "trainer_profile.certification",
        p.certification.as_deref(),
        200,
    );
    c.range_i64(
        "trainer_profile.years_of_experience",
        p.years_of_experience,
        0,
        80,
    );
}

pub fn check_client_profile(c: &mut Checks, p: &ClientProfile) {
    c.range_f64("client_profile.height", p.height, 50.0, 300.0, false);
    c.range_f64(
        "client_profile.target_weight",
        p.target_weight,
        0.0,
        500.0,
        true,
    );
    c.opt_text("client_profile.goals", p.goals.as_deref(), 2000);
    c.opt_text(
        "client_profile.medical_conditions",
        p.medical_conditions.as_deref(),
        2000,
    );
    c.opt_text(
        "client_profile.dietary_restrictions",
        p.dietary_restrictions.as_deref(),
        2000,
    );
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UserUpdate {
    /// The user themselves or an admin (403 for anyone else).
    #[schema(format = Email, max_length = 254)]
    email: Option<String>,
    /// Not blank.
    #[schema(min_length = 1, max_length = 100, pattern = "\\S")]
    full_name: Option<String>,
    /// Admins only (403 for others); an admin cannot deactivate themselves (403).
    is_active: Option<bool>,
    /// For a trainer only: 409 when the user is not a trainer.
    trainer_profile: Option<TrainerProfile>,
    /// For a client only: 409 when the user is not a client.
    client_profile: Option<ClientProfile>,
}

/// Checks and applies `u` to `target`: who may change what (403: only an admin changes
/// `is_active`, never their own to false; only the user or an admin changes the email),
/// then the fields (422), then whether a profile fits the user's role (409).
fn apply_update(c: &Conn, actor: Actor, target: &User, u: UserUpdate) -> ApiResult<User> {
    // Who may change what comes from the token, which no schema sees: 403 (issue 15).
    if u.email.is_some() && actor.id != target.id && !actor.is_admin() {
        return Err(ApiError::Forbidden(
            "Only the user or an admin can change the email",
        ));
    }
    if u.is_active.is_some() && !actor.is_admin() {
        return Err(ApiError::Forbidden("Only an admin can change is_active"));
    }
    if u.is_active == Some(false) && actor.id == target.id {
        return Err(ApiError::Forbidden("You cannot deactivate yourself"));
    }
    let mut checks = Checks::new();
    if let Some(e) = &u.email {
        if !is_email(e.trim()) {
            checks.push("email", "is not a valid email address");
        }
    }
    if let Some(n) = &u.full_name {
        checks.text("full_name", n, 1, 100);
    }
    if let Some(p) = &u.trainer_profile {
        check_trainer_profile(&mut checks, p);
    }
    if let Some(p) = &u.client_profile {
        check_client_profile(&mut checks, p);
    }
    checks.finish()?;
    // A well-formed profile for a user of another role conflicts with what the user is
    // (the role is the target's state, not part of the body): 409 (issue 15).
    if u.trainer_profile.is_some() && target.role != Role::Trainer {
        return Err(ApiError::Conflict(format!(
            "user {} is not a trainer; only trainers have a trainer profile",
            target.id
        )));
    }
    if u.client_profile.is_some() && target.role != Role::Client {
        return Err(ApiError::Conflict(format!(
            "user {} is not a client; only clients have a client profile",
            target.id
        )));
    }
    let changes = UserChanges {
        email: u.email.map(|s| s.trim().to_string()),
        full_name: u.full_name.map(|s| s.trim().to_string()),
        is_active: u.is_active,
    };
    users::update(c, target.id, &changes).map_err(|e| match e.unique_violation() {
        Some("users.email") => ApiError::Conflict("Email already registered".into()),
        _ => e.into(),
    })?;
    if let Some(p) = &u.trainer_profile {
        profiles::put_trainer(c, target.id, p)?;
    }
    if let Some(p) = &u.client_profile {
        profiles::put_client(c, target.id, p)?;
    }
    users::find_by_id(c, target.id)?.ok_or(ApiError::NotFound("User not found"))
}

#[utoipa::path(get, path = "/api/users/me", operation_id = "users_get_me", tag = "users", responses((status = 200, description = "Success", body = UserDetail)), security(("bearer" = [])))]
async fn get_me(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
) -> ApiResult<Json<UserDetail>> {
    query(&state, move |c| detail(c, me)).await.map(Json)
}

#[utoipa::path(put, path = "/api/users/me", operation_id = "users_put_me", tag = "users", request_body = UserUpdate, responses((status = 200, description = "Success", body = UserDetail), (status = 409, description = "Email already registered, or a profile for another role than the user's", body = crate::server::openapi::ErrorBody)), security(("bearer" = [])))]
async fn put_me(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiJson(u): ApiJson<UserUpdate>,
) -> ApiResult<Json<UserDetail>> {
    write(&state, move |c| {
        let updated = apply_update(c, Actor::from(&me), &me, u)?;
        detail(c, updated)
    })
    .await
    .map(Json)
}

#[derive(Debug, Deserialize, utoipa::IntoParams, utoipa::ToSchema)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    role: Option<String>,
}

#[utoipa::path(get, path = "/api/users", operation_id = "users_list_users", tag = "users", params(crate::server::params::Page, ListQuery), responses((status = 200, description = "Success", body = Vec<User>)), security(("bearer" = [])))]
async fn list_users(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiQuery(page): ApiQuery<Page>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Vec<User>>> {
    Actor::from(&me).require(&[Role::Admin], "Only admins can list users")?;
    let mut checks = Checks::new();
    page.check(&mut checks);
    let role = match q.role.as_deref() {
        None => None,
        Some(r) => {
            let parsed = Role::parse(r);
            if parsed.is_none() {
                checks.push_query("role", "must be one of: ADMIN, TRAINER, CLIENT");
            }
            parsed
        }
    };
    checks.finish()?;
    let filter = UserFilter {
        role,
        trainer_id: None,
    };
    list_where(&state, filter, page).await
}

async fn list_where(
    state: &AppState,
    filter: UserFilter,
    page: Page,
) -> ApiResult<Json<Vec<User>>> {
    query(state, move |c| {
        Ok(users::list(c, filter, page.limit, page.offset)?)
    })
    .await
    .map(Json)
}

#[utoipa::path(get, path = "/api/users/clients", operation_id = "users_list_clients", tag = "users", params(crate::server::params::Page), responses((status = 200, description = "Success", body = Vec<User>)), security(("bearer" = [])))]
async fn list_clients(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiQuery(page): ApiQuery<Page>,
) -> ApiResult<Json<Vec<User>>> {
    let actor = Actor::from(&me);
    actor.require(STAFF, "Only trainers and admins can list clients")?;
    page.valid()?;
    let filter = UserFilter {
        role: Some(Role::Client),
        trainer_id: (!actor.is_admin()).then_some(actor.id),
    };
    list_where(&state, filter, page).await
}

#[utoipa::path(get, path = "/api/users/trainers", operation_id = "users_list_trainers", tag = "users", params(crate::server::params::Page), responses((status = 200, description = "Success", body = Vec<User>)), security(("bearer" = [])))]
async fn list_trainers(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiQuery(page): ApiQuery<Page>,
) -> ApiResult<Json<Vec<User>>> {
    Actor::from(&me).require(&[Role::Admin], "Only admins can list trainers")?;
    page.valid()?;
    let filter = UserFilter {
        role: Some(Role::Trainer),
        trainer_id: None,
    };
    list_where(&state, filter, page).await
}

#[utoipa::path(get, path = "/api/users/{id}", operation_id = "users_get_user", tag = "users", params(("id" = i64, Path)), responses((status = 200, description = "Success", body = UserDetail)), security(("bearer" = [])))]
async fn get_user(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<UserDetail>> {
    query(&state, move |c| {
        let u = find_visible(c, &me, id)?;
        detail(c, u)
    })
    .await
    .map(Json)
}

#[utoipa::path(put, path = "/api/users/{id}", operation_id = "users_put_user", tag = "users", params(("id" = i64, Path)), request_body = UserUpdate, responses((status = 200, description = "Success", body = UserDetail), (status = 409, description = "Email already registered, or a profile for another role than the user's", body = crate::server::openapi::ErrorBody)), security(("bearer" = [])))]
async fn put_user(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(u): ApiJson<UserUpdate>,
) -> ApiResult<Json<UserDetail>> {
    write(&state, move |c| {
        let target = find_visible(c, &me, id)?;
        let actor = Actor::from(&me);
        // Visible is not writable: a client sees their trainer but may not edit them.
        let writable = actor.id == target.id
            || actor.is_admin()
            || (actor.role == Role::Trainer && target.trainer_id == Some(actor.id));
        if !writable {
            return Err(ApiError::Forbidden("You cannot change this user"));
        }
        let updated = apply_update(c, actor, &target, u)?;
        detail(c, updated)
    })
    .await
    .map(Json)
}

/// Admin only. Refuses to delete yourself and a trainer who still has clients (reassign
/// them first); a client's own data goes with them. Their stored files are removed too.
#[utoipa::path(delete, path = "/api/users/{id}", operation_id = "users_delete_user", tag = "users", params(("id" = i64, Path)), responses((status = 200, description = "Success", body = serde_json::Value), (status = 409, description = "Conflicts with the current state", body = crate::server::openapi::ErrorBody)), security(("bearer" = [])))]
async fn delete_user(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<serde_json::Value>> {
    let files = write(&state, move |c| {
        let target = find_visible(c, &me, id)?;
        Actor::from(&me).require(&[Role::Admin], "Only admins can delete users")?;
        if target.id == me.id {
            return Err(ApiError::Conflict(
                "You cannot delete your own account".into(),
            ));
        }
        if target.role == Role::Trainer && users::count_clients_of(c, target.id)? > 0 {
            return Err(ApiError::Conflict(
                "Trainer still has clients; reassign or remove them first".into(),
            ));
        }
        let tx = crate::server::access::write_tx(c)?;
        let files = crate::db::files::owned_by(&tx, target.id)?;
        users::delete(&tx, target.id)?;
        tx.commit()?;
        Ok(files)
    })
    .await?;
    state.uploads.remove(&files).await;
    crate::server::listen::end_sessions(&state, id).await;
    tracing::info!(user_id = id, "user deleted");
    Ok(deleted("User"))
}

/// A trainer offers to coach a client who has no trainer yet: the client must accept
/// (`POST /api/users/me/invitations/{trainer_id}/accept`) before the trainer sees any of
/// their data (issue 15: claiming by id alone exposed medical notes). The client is told
/// by a notification. Their own client already: 200 with the client, nothing changes.
#[utoipa::path(post, path = "/api/users/clients/{id}/assign", operation_id = "users_assign_to_me", tag = "users", params(("id" = i64, Path)), responses((status = 200, description = "Already this trainer's client", body = User), (status = 202, description = "Invitation sent; the client must accept it", body = Invitation)), security(("bearer" = [])))]
async fn assign_to_me(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    Actor::from(&me).require(&[Role::Trainer], "Only trainers can take on clients")?;
    let trainer = me.clone();
    let (answer, note) = write(&state, move |c| {
        let client = users::find_by_id(c, id)?
            .filter(|u| {
                u.role == Role::Client && (u.trainer_id.is_none() || u.trainer_id == Some(me.id))
            })
            .ok_or(ApiError::NotFound("Client not found"))?;
        if client.trainer_id == Some(me.id) {
            return Ok((Json(client).into_response(), None));
        }
        let tx = crate::server::access::write_tx(c)?;
        let invitation = invitations::invite(&tx, client.id, me.id)?;
        let note = crate::db::notifications::insert(
            &tx,
            client.id,
            Some(me.id),
            "Trainer invitation",
            &format!(
                "{} invites you to train with them; accept or decline under your invitations",
                me.full_name
            ),
            "trainer_invitation",
        )?;
        tx.commit()?;
        Ok((
            (axum::http::StatusCode::ACCEPTED, Json(invitation)).into_response(),
            Some(note),
        ))
    })
    .await?;
    if let Some(note) = note {
        state.hub.push_notification(&note);
        tracing::info!(
            client_id = id,
            trainer_id = trainer.id,
            "trainer invited a client"
        );
    }
    Ok(answer)
}

/// The signed-in client's pending trainer invitations.
#[utoipa::path(get, path = "/api/users/me/invitations", operation_id = "users_my_invitations", tag = "users", responses((status = 200, description = "Success", body = Vec<Invitation>)), security(("bearer" = [])))]
async fn my_invitations(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
) -> ApiResult<Json<Vec<Invitation>>> {
    Actor::from(&me).require(&[Role::Client], "Only clients have trainer invitations")?;
    query(&state, move |c| Ok(invitations::for_client(c, me.id)?))
        .await
        .map(Json)
}

/// The client accepts a trainer's invitation: the trainer becomes theirs, and every other
/// pending invitation goes. Refused while they already have a trainer.
#[utoipa::path(post, path = "/api/users/me/invitations/{trainer_id}/accept", operation_id = "users_accept_invitation", tag = "users", params(("trainer_id" = i64, Path)), responses((status = 200, description = "Success", body = User), (status = 409, description = "Conflicts with the current state", body = crate::server::openapi::ErrorBody)), security(("bearer" = [])))]
async fn accept_invitation(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(trainer_id): ApiPath<i64>,
) -> ApiResult<Json<User>> {
    Actor::from(&me).require(&[Role::Client], "Only clients accept trainer invitations")?;
    write(&state, move |c| {
        let tx = crate::server::access::write_tx(c)?;
        let me = users::find_by_id(&tx, me.id)?.ok_or(ApiError::NotFound("User not found"))?;
        if !invitations::remove(&tx, me.id, trainer_id)? {
            return Err(ApiError::NotFound("Invitation not found"));
        }
        if me.trainer_id.is_some() {
            return Err(ApiError::Conflict(
                "You already have a trainer; ask an admin to change it".into(),
            ));
        }
        users::set_trainer(&tx, me.id, Some(trainer_id))?;
        invitations::clear(&tx, me.id)?;
        let user = users::find_by_id(&tx, me.id)?.ok_or(ApiError::NotFound("User not found"))?;
        tx.commit()?;
        Ok(user)
    })
    .await
    .map(Json)
}

/// The client declines (deletes) a trainer's invitation.
#[utoipa::path(delete, path = "/api/users/me/invitations/{trainer_id}", operation_id = "users_decline_invitation", tag = "users", params(("trainer_id" = i64, Path)), responses((status = 200, description = "Success", body = serde_json::Value)), security(("bearer" = [])))]
async fn decline_invitation(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(trainer_id): ApiPath<i64>,
) -> ApiResult<Json<serde_json::Value>> {
    Actor::from(&me).require(&[Role::Client], "Only clients decline trainer invitations")?;
    let removed = write(&state, move |c| {
        Ok(invitations::remove(c, me.id, trainer_id)?)
    })
    .await?;
    if !removed {
        return Err(ApiError::NotFound("Invitation not found"));
    }
    Ok(deleted("Invitation"))
}

/// A trainer lets go of their client, or an admin unassigns any client.
#[utoipa::path(post, path = "/api/users/clients/{id}/remove", operation_id = "users_remove_client", tag = "users", params(("id" = i64, Path)), responses((status = 200, description = "Success", body = User)), security(("bearer" = [])))]
async fn remove_client(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<User>> {
    let actor = Actor::from(&me);
    actor.require(STAFF, "Only trainers and admins can remove clients")?;
    write(&state, move |c| {
        let client = crate::server::access::visible_client(c, actor, id)?;
        users::set_trainer(c, client.id, None)?;
        users::find_by_id(c, client.id)?.ok_or(ApiError::NotFound("Client not found"))
    })
    .await
    .map(Json)
}

fn admin_set(c: &Conn, tid: i64, cid: i64, assign: bool) -> ApiResult<User> {
    let trainer = users::find_by_id(c, tid)?
        .filter(|u| u.role == Role::Trainer)
        .ok_or(ApiError::NotFound("Trainer not found"))?;
    let client = users::find_by_id(c, cid)?
        .filter(|u| u.role == Role::Client)
        .ok_or(ApiError::NotFound("Client not found"))?;
    if assign {
        users::set_trainer(c, client.id, Some(trainer.id))?;
        invitations::clear(c, client.id)?;
    } else if client.trainer_id == Some(trainer.id) {
        users::set_trainer(c, client.id, None)?;
    } else {
        return Err(ApiError::NotFound("Client is not assigned to this trainer"));
    }
    users::find_by_id(c, client.id)?.ok_or(ApiError::NotFound("Client not found"))
}

#[utoipa::path(post, path = "/api/users/trainer/{tid}/clients/{cid}", operation_id = "users_admin_assign", tag = "users", params(("tid" = i64, Path), ("cid" = i64, Path)), responses((status = 200, description = "Success", body = User)), security(("bearer" = [])))]
async fn admin_assign(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath((tid, cid)): ApiPath<(i64, i64)>,
) -> ApiResult<Json<User>> {
    Actor::from(&me).require(&[Role::Admin], "Only admins can assign clients to trainers")?;
    write(&state, move |c| admin_set(c, tid, cid, true))
        .await
        .map(Json)
}

#[utoipa::path(delete, path = "/api/users/trainer/{tid}/clients/{cid}", operation_id = "users_admin_unassign", tag = "users", params(("tid" = i64, Path), ("cid" = i64, Path)), responses((status = 200, description = "Success", body = User)), security(("bearer" = [])))]
async fn admin_unassign(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath((tid, cid)): ApiPath<(i64, i64)>,
) -> ApiResult<Json<User>> {
    Actor::from(&me).require(&[Role::Admin], "Only admins can unassign clients")?;
    write(&state, move |c| admin_set(c, tid, cid, false))
        .await
        .map(Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: i64, role: Role, trainer_id: Option<i64>) -> User {
        User {
            id,
            username: format!("u{id}"),
            email: format!("u{id}@example.com"),
            full_name: "U".into(),
            role,
            is_active: true,
            trainer_id,
            created_at: String::new(),
            updated_at: None,
            last_login: None,
            password_hash: String::new(),
            token_epoch: 0,
        }
    }

    #[test]
    fn who_sees_whom() {
        let trainer = user(2, Role::Trainer, None);
        let client = user(10, Role::Client, Some(2));
        let a = |u: &User| Actor::from(u);
        assert!(user_visible(a(&trainer), &client, None));
        assert!(user_visible(a(&client), &trainer, Some(2)));
        assert!(!user_visible(
            a(&user(3, Role::Trainer, None)),
            &client,
            None
        ));
        assert!(!user_visible(
            a(&user(11, Role::Client, Some(2))),
            &client,
            Some(2)
        ));
        assert!(user_visible(a(&user(1, Role::Admin, None)), &client, None));
    }
}
