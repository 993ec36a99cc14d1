//! `/api/auth`: registration, login (JSON and OAuth2 form), the current user, token
//! refresh, password change and first-admin setup.

use std::time::{Duration, Instant};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::server::json::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::password;
use crate::db::profiles::{self, ClientProfile, TrainerProfile};
use crate::db::users::{self, NewUser, Role, User};
use crate::db::{Backend, Conn, DbError};
use crate::server::access::{write, Actor, STAFF};
use crate::server::error::{ApiError, ApiResult, FieldError};
use crate::server::extract::{ApiForm, ApiJson, AuthUser, ClientIp};
use crate::server::params::Checks;
use crate::server::routes::users::{
    check_client_profile, check_trainer_profile, detail, UserDetail,
};
use crate::server::routes::{created, Created};
use crate::server::state::AppState;
use crate::server::throttle::{Key, LONGEST_LOGIN};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(token_form))
        .routes(routes!(me))
        .routes(routes!(refresh))
        .routes(routes!(change_password))
        .routes(routes!(logout_all))
        .routes(routes!(setup_admin))
        .routes(routes!(register_trainer))
        .routes(routes!(register_client))
}

/// Same message for an unknown user and a wrong password, so accounts can't be probed.
const BAD_LOGIN: &str = "Incorrect username or password";

#[derive(Deserialize, utoipa::ToSchema)]
pub struct Registration {
    /// Letters, digits, '.', '_' and '-'.
    #[schema(min_length = 3, max_length = 50, pattern = "^[A-Za-z0-9._-]{3,50}$")]
    pub username: String,
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    #[schema(format = Password, min_length = 8, max_length = 128)]
    pub password: String,
    /// Not blank.
    #[schema(min_length = 1, max_length = 100, pattern = "\\S")]
    pub full_name: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
struct Login {
    /// The username or the email address.
    username: String,
    #[schema(format = Password)]
    password: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
struct PasswordForm {
    username: String,
    #[schema(format = Password)]
    password: String,
    /// OAuth2's password grant: "password" if given.
    #[serde(default)]
    #[schema(pattern = "^password$", nullable = false)]
    grant_type: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
struct PasswordChange {
    #[schema(format = Password)]
    current_password: String,
    #[schema(format = Password, min_length = 8, max_length = 128)]
    new_password: String,
}

#[derive(Serialize, utoipa::ToSchema)]
struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    user: User,
}

fn token_for(state: &AppState, user: User) -> TokenResponse {
    TokenResponse {
        access_token: state.tokens.issue(user.id, user.role, user.token_epoch),
        token_type: "bearer",
        expires_in: state.tokens.ttl().as_secs(),
        user,
    }
}

/// Checks the fields of a new account; all problems are reported at once.
pub fn validate_registration(r: &Registration) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    let username_ok = (3..=50).contains(&r.username.chars().count())
        && r.username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !username_ok {
        errors.push(FieldError::body(
            "username",
            "must be 3-50 characters of letters, digits, '.', '_' or '-'",
        ));
    }
    if !is_email(&r.email) {
        errors.push(FieldError::body("email", "is not a valid email address"));
    }
    if let Err(e) = check_password(&r.password) {
        errors.push(FieldError::body("password", e));
    }
    if r.full_name.trim().is_empty() || r.full_name.chars().count() > 100 {
        errors.push(FieldError::body("full_name", "must be 1-100 characters"));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(errors))
    }
}

fn check_password(p: &str) -> Result<(), String> {
    let n = p.chars().count();
    if n < password::MIN_LEN {
        Err(format!("must be at least {} characters", password::MIN_LEN))
    } else if n > password::MAX_LEN {
        Err(format!("must be at most {} characters", password::MAX_LEN))
    } else {
        Ok(())
    }
}

/// A pragmatic address check: one `@`, a non-empty local part, a dotted domain, no spaces.
pub fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    s.len() <= LONGEST_LOGIN
        && !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Runs argon2 work off the async workers, one at a time (issue 19): each hash holds
/// 9 MiB, so the peak memory grows by that for each one running at once (1% of logins in
/// a c1024 mix took the server from 60 to 190 MiB), and a second one would share the cores
/// with the requests rather than finish sooner. At most [`ARGON2_QUEUE`] may wait for
/// their turn (about a second of work); past that the answer is 503 with Retry-After.
async fn argon2<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> ApiResult<T> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static TURN: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
    static WAITING: AtomicUsize = AtomicUsize::new(0);
    struct Waiting;
    impl Drop for Waiting {
        fn drop(&mut self) {
            WAITING.fetch_sub(1, Ordering::AcqRel);
        }
    }
    if WAITING.fetch_add(1, Ordering::AcqRel) >= ARGON2_QUEUE {
        WAITING.fetch_sub(1, Ordering::AcqRel);
        return Err(ApiError::Unavailable(
            "Too many password checks at once, try again",
        ));
    }
    let waiting = Waiting;
    let turn = TURN
        .acquire()
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    drop(waiting);
    // The turn ends with the work, not with the request: a client that hangs up does not
    // let a second hash start beside its own.
    tokio::task::spawn_blocking(move || {
        let _turn = turn;
        work()
    })
    .await
    .map_err(|e| ApiError::Internal(e.into()))
}

/// Password checks that may wait for their turn.
const ARGON2_QUEUE: usize = 16;

/// Hashes off the async workers: argon2 is deliberately slow.
async fn hash_password(plain: String) -> ApiResult<String> {
    argon2(move || password::hash(&plain)).await
}

fn conflict_from(e: DbError) -> ApiError {
    match e.unique_violation() {
        Some("users.email") => ApiError::Conflict("Email already registered".into()),
        Some("users.username") => ApiError::Conflict("Username already taken".into()),
        _ => e.into(),
    }
}

/// Creates an account with `role`; shared by self-registration and the admin's forms.
pub async fn create_user(
    state: &AppState,
    r: Registration,
    role: Role,
    trainer_id: Option<i64>,
) -> ApiResult<User> {
    validate_registration(&r)?;
    let hash = hash_password(r.password).await?;
    state
        .db
        .write(move |c| {
            users::insert(
                c,
                &NewUser {
                    username: r.username.trim(),
                    email: r.email.trim(),
                    full_name: r.full_name.trim(),
                    password_hash: &hash,
                    role,
                    trainer_id,
                },
            )
        })
        .await
        .map_err(conflict_from)
}

#[utoipa::path(post, path = "/api/auth/register", operation_id = "auth_register", tag = "auth", request_body = Registration, responses((status = 201, description = "Success", body = User), (status = 409, description = "Username or email taken", body = crate::server::openapi::ErrorBody), (status = 429, description = "Too many registrations from this address; see Retry-After", body = crate::server::openapi::ErrorBody)))]
async fn register(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(r): ApiJson<Registration>,
) -> ApiResult<Created<User>> {
    validate_registration(&r)?;
    throttle_registration(&state, ip).await?;
    let user = create_user(&state, r, Role::Client, None).await?;
    tracing::info!(user_id = user.id, "client registered");
    Ok(created(user))
}

/// Checks a login against the one throttling policy ([`throttle`]): the address's lock
/// first (no database work for a locked client), then the lock of the account the login
/// resolves to, so its username and its email share one budget of failures.
async fn authenticate(
    state: &AppState,
    ip: std::net::IpAddr,
    login: String,
    plain: String,
) -> ApiResult<User> {
    const LOCKED: &str = "Too many failed attempts, try again later";
    let login = login.trim().to_string();
    let address = Key::login_address(ip);
    throttle_check(state, &[&address])
        .await?
        .map_err(|wait| ApiError::throttled(LOCKED, wait))?;
    // A login longer than any email address names no account: not worth a query.
    let user = if login.len() <= LONGEST_LOGIN {
        let lookup = login.clone();
        state
            .db
            .read(move |c| users::find_by_login(c, &lookup))
            .await?
    } else {
        None
    };
    let account = Key::login(user.as_ref().map(|u| u.id), &login);
    throttle_check(state, &[&account])
        .await?
        .map_err(|wait| ApiError::throttled(LOCKED, wait))?;
    let verified = argon2(move || match user {
        Some(u) if password::verify(&plain, &u.password_hash) => Some(u),
        Some(_) => None,
        None => {
            password::verify_against_dummy(&plain);
            None
        }
    })
    .await?;
    match verified {
        Some(user) if user.is_active => {
            throttle_clear(state, &account).await?;
            let id = user.id;
            state
                .db
                .write(move |c| users::touch_last_login(c, id))
                .await?;
            Ok(user)
        }
        // An inactive account gets the same answer as a bad password.
        _ => {
            throttle_record(state, &[&account, &address]).await?;
            tracing::info!(client = %ip, "failed login");
            Err(ApiError::Unauthorized(BAD_LOGIN))
        }
    }
}

/// Counts one public registration (or first-admin setup) against the client's address.
async fn throttle_registration(state: &AppState, ip: std::net::IpAddr) -> ApiResult<()> {
    let key = Key::registration(ip);
    throttle_check(state, &[&key]).await?.map_err(|wait| {
        ApiError::throttled(
            "Too many registrations from this address, try again later",
            wait,
        )
    })?;
    throttle_record(state, &[&key]).await
}

// The throttle (issue 16): in memory on SQLite, where one process serves; in the
// database on PostgreSQL, so every replica counts against one limit.

async fn throttle_check(state: &AppState, keys: &[&Key]) -> ApiResult<Result<(), Duration>> {
    if state.db.backend() == Backend::Sqlite {
        return Ok(state.throttle.check(keys, Instant::now()));
    }
    let keys: Vec<String> = keys.iter().map(|k| k.db_key()).collect();
    Ok(state
        .db
        .read(move |c| crate::db::throttle::check(c, &keys))
        .await?)
}

async fn throttle_record(state: &AppState, keys: &[&Key]) -> ApiResult<()> {
    if state.db.backend() == Backend::Sqlite {
        state.throttle.record(keys, Instant::now());
        return Ok(());
    }
    let keys: Vec<_> = keys
        .iter()
        .map(|k| {
            let p = k.policy();
            let limits = crate::db::throttle::Limits {
                limit: p.limit,
                window: p.window,
                lockout: p.lockout,
            };
            (k.db_key(), limits)
        })
        .collect();
    Ok(state
        .db
        .write(move |c| crate::db::throttle::record(c, &keys))
        .await?)
}

async fn throttle_clear(state: &AppState, key: &Key) -> ApiResult<()> {
    if state.db.backend() == Backend::Sqlite {
        state.throttle.clear(key);
        return Ok(());
    }
    let key = key.db_key();
    Ok(state
        .db
        .write(move |c| crate::db::throttle::clear(c, &key))
        .await?)
}

#[utoipa::path(post, path = "/api/auth/login", operation_id = "auth_login", tag = "auth", request_body = Login, responses((status = 200, description = "Success", body = TokenResponse), (status = 401, description = "Wrong username or password", body = crate::server::openapi::ErrorBody), (status = 429, description = "Too many failed attempts; see Retry-After", body = crate::server::openapi::ErrorBody)))]
async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(l): ApiJson<Login>,
) -> ApiResult<Json<TokenResponse>> {
    let user = authenticate(&state, ip, l.username, l.password).await?;
    Ok(Json(token_for(&state, user)))
}

#[utoipa::path(post, path = "/api/auth/token", operation_id = "auth_token_form", tag = "auth", request_body(content_type = "application/x-www-form-urlencoded", content = PasswordForm), responses((status = 200, description = "Success", body = TokenResponse), (status = 401, description = "Wrong username or password", body = crate::server::openapi::ErrorBody), (status = 429, description = "Too many failed attempts; see Retry-After", body = crate::server::openapi::ErrorBody)))]
async fn token_form(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiForm(f): ApiForm<PasswordForm>,
) -> ApiResult<Json<TokenResponse>> {
    if f.grant_type.as_deref().is_some_and(|g| g != "password") {
        return Err(ApiError::field("grant_type", "must be \"password\""));
    }
    let user = authenticate(&state, ip, f.username, f.password).await?;
    Ok(Json(token_for(&state, user)))
}

#[utoipa::path(get, path = "/api/auth/me", operation_id = "auth_me", tag = "auth", responses((status = 200, description = "Success", body = User)), security(("bearer" = [])))]
async fn me(AuthUser(user): AuthUser) -> Json<User> {
    Json(user)
}

#[utoipa::path(post, path = "/api/auth/refresh", operation_id = "auth_refresh", tag = "auth", responses((status = 200, description = "Success", body = TokenResponse)), security(("bearer" = [])))]
async fn refresh(State(state): State<AppState>, AuthUser(user): AuthUser) -> Json<TokenResponse> {
    Json(token_for(&state, user))
}

#[utoipa::path(post, path = "/api/auth/password/change", operation_id = "auth_change_password", tag = "auth", request_body = PasswordChange, responses((status = 200, description = "Success", body = serde_json::Value)), security(("bearer" = [])))]
async fn change_password(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiJson(p): ApiJson<PasswordChange>,
) -> ApiResult<Json<serde_json::Value>> {
    check_password(&p.new_password).map_err(|e| ApiError::field("new_password", e))?;
    let stored = user.password_hash.clone();
    let current = p.current_password;
    let ok = argon2(move || password::verify(&current, &stored)).await?;
    if !ok {
        return Err(ApiError::field("current_password", "is incorrect"));
    }
    let hash = hash_password(p.new_password).await?;
    let id = user.id;
    let updated = state
        .db
        .write(move |c| {
            users::set_password(c, id, &hash)?;
            users::find_by_id(c, id)
        })
        .await?
        .ok_or(ApiError::Unauthorized("Could not validate credentials"))?;
    crate::server::listen::end_sessions(&state, id).await;
    tracing::info!(user_id = id, "password changed; older tokens revoked");
    let token = token_for(&state, updated);
    Ok(Json(json!({
        "message": "Password changed",
        "access_token": token.access_token,
        "token_type": token.token_type,
    })))
}

/// Ends every session of the caller: every token issued so far, this one included, stops
/// working, and their open WebSockets close.
#[utoipa::path(post, path = "/api/auth/logout-all", operation_id = "auth_logout_all", tag = "auth", responses((status = 204, description = "Every token of the user is revoked")), security(("bearer" = [])))]
async fn logout_all(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
) -> ApiResult<StatusCode> {
    let id = user.id;
    state.db.write(move |c| users::end_sessions(c, id)).await?;
    crate::server::listen::end_sessions(&state, id).await;
    tracing::info!(user_id = id, "every session ended");
    Ok(StatusCode::NO_CONTENT)
}

/// Creates the first admin; refused once any admin exists. The check and the insert run in
/// one IMMEDIATE transaction so two racing requests can't both succeed.
#[utoipa::path(post, path = "/api/auth/setup/admin", operation_id = "auth_setup_admin", tag = "auth", request_body = Registration, responses((status = 201, description = "Success", body = TokenResponse), (status = 403, description = "An admin already exists", body = crate::server::openapi::ErrorBody), (status = 409, description = "Username or email taken", body = crate::server::openapi::ErrorBody), (status = 429, description = "Too many registrations from this address; see Retry-After", body = crate::server::openapi::ErrorBody)))]
async fn setup_admin(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(r): ApiJson<Registration>,
) -> ApiResult<Created<TokenResponse>> {
    validate_registration(&r)?;
    throttle_registration(&state, ip).await?;
    let hash = hash_password(r.password.clone()).await?;
    // Through the one writer like every write: its transaction becomes a savepoint of the
    // writer's batch, so the check and the insert still commit or vanish together.
    let admin = state
        .db
        .write(move |c| create_first_admin(c, &r, &hash))
        .await
        .map_err(conflict_from)?;
    let user = admin.ok_or(ApiError::Forbidden(
        "An admin already exists; ask them to create your account",
    ))?;
    tracing::info!(user_id = user.id, "first admin created through the API");
    Ok(created(token_for(&state, user)))
}

/// `Ok(None)` when an admin already exists.
pub fn create_first_admin(
    c: &mut Conn,
    r: &Registration,
    hash: &str,
) -> Result<Option<User>, DbError> {
    let tx = c.transaction()?;
    if users::count_admins(&tx)? > 0 {
        return Ok(None);
    }
    let user = users::insert(
        &tx,
        &NewUser {
            username: r.username.trim(),
            email: r.email.trim(),
            full_name: r.full_name.trim(),
            password_hash: hash,
            role: Role::Admin,
            trainer_id: None,
        },
    )?;
    tx.commit()?;
    Ok(Some(user))
}

#[derive(Deserialize, utoipa::ToSchema)]
struct TrainerRegistration {
    #[serde(flatten)]
    account: Registration,
    #[serde(flatten)]
    profile: TrainerProfile,
}

#[derive(Deserialize, utoipa::ToSchema)]
struct ClientRegistration {
    #[serde(flatten)]
    account: Registration,
    #[serde(flatten)]
    profile: ClientProfile,
    /// Admin only (403 for a trainer): the trainer to assign, which must be one (404).
    /// A trainer always gets their own new client.
    #[serde(default)]
    trainer_id: Option<i64>,
}

/// An admin creates a trainer account with its profile.
#[utoipa::path(post, path = "/api/auth/register/trainer", operation_id = "auth_register_trainer", tag = "auth", request_body = TrainerRegistration, responses((status = 201, description = "Success", body = UserDetail), (status = 409, description = "Username or email taken", body = crate::server::openapi::ErrorBody)), security(("bearer" = [])))]
async fn register_trainer(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiJson(r): ApiJson<TrainerRegistration>,
) -> ApiResult<Created<UserDetail>> {
    Actor::from(&me).require(&[Role::Admin], "Only admins can create trainers")?;
    let mut checks = Checks::new();
    check_trainer_profile(&mut checks, &r.profile);
    checks.finish()?;
    let profile = r.profile;
    let put_profile = move |c: &Conn, user| profiles::put_trainer(c, user, &profile);
    create_with_profile(&state, &me, r.account, Role::Trainer, None, put_profile).await
}

/// A trainer (for themselves) or an admin creates a client account with its profile.
#[utoipa::path(post, path = "/api/auth/register/client", operation_id = "auth_register_client", tag = "auth", request_body = ClientRegistration, responses((status = 201, description = "Success", body = UserDetail), (status = 409, description = "Username or email taken", body = crate::server::openapi::ErrorBody)), security(("bearer" = [])))]
async fn register_client(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiJson(r): ApiJson<ClientRegistration>,
) -> ApiResult<Created<UserDetail>> {
    let actor = Actor::from(&me);
    actor.require(STAFF, "Only trainers and admins can create clients")?;
    if r.trainer_id.is_some() && !actor.is_admin() {
        return Err(ApiError::Forbidden(
            "Only an admin can choose the trainer; leave out trainer_id",
        ));
    }
    let mut checks = Checks::new();
    check_client_profile(&mut checks, &r.profile);
    checks.finish()?;
    let trainer_id = if actor.is_admin() {
        if let Some(tid) = r.trainer_id {
            let trainer = state.db.read(move |c| users::find_by_id(c, tid)).await?;
            if !trainer.is_some_and(|t| t.role == Role::Trainer) {
                return Err(ApiError::unknown("trainer_id", "trainer"));
            }
        }
        r.trainer_id
    } else {
        Some(me.id)
    };
    let profile = r.profile;
    let put_profile = move |c: &Conn, user| profiles::put_client(c, user, &profile);
    create_with_profile(
        &state,
        &me,
        r.account,
        Role::Client,
        trainer_id,
        put_profile,
    )
    .await
}

/// The admin's (or a trainer's) forms: creates the account (`role`, `trainer_id`), then
/// writes its profile with `put_profile`, and answers 201 with the user's detail.
async fn create_with_profile<F>(
    state: &AppState,
    me: &User,
    account: Registration,
    role: Role,
    trainer_id: Option<i64>,
    put_profile: F,
) -> ApiResult<Created<UserDetail>>
where
    F: FnOnce(&Conn, i64) -> Result<(), DbError> + Send + 'static,
{
    let user = create_user(state, account, role, trainer_id).await?;
    let detail = write(state, move |c| {
        put_profile(c, user.id)?;
        detail(c, user)
    })
    .await?;
    let what = if role == Role::Trainer {
        "trainer"
    } else {
        "client"
    };
    tracing::info!(user_id = detail.user.id, by = me.id, "{what} created");
    Ok(created(detail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        for ok in ["a@b.co", "first.last+tag@example.com"] {
            assert!(is_email(ok), "{ok}");
        }
        for bad in [
            "",
            "a",
            "a@b",
            "@b.com",
            "a@@b.com",
            "a b@c.com",
            "a@.com",
            "a@b.com.",
        ] {
            assert!(!is_email(bad), "{bad}");
        }
    }

    #[test]
    fn registration_reports_every_bad_field() {
        let r = Registration {
            username: "a b".into(),
            email: "nope".into(),
            password: "short".into(),
            full_name: " ".into(),
        };
        let ApiError::Validation(errors) = validate_registration(&r).unwrap_err() else {
            panic!()
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.loc[1].as_str()).collect();
        assert_eq!(fields, ["username", "email", "password", "full_name"]);
    }
}
