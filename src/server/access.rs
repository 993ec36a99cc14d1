//! Object-level authorization, the one rule every domain route applies: a client sees
//! their own data, a trainer their own clients' data, an admin everything. An object the
//! caller may not see answers 404 exactly like a missing one, so ids can't be probed.
//!
//! Also [`query`] and [`write`], the ways handlers run a closure that reads, or writes, on
//! the database and may itself answer with an [`ApiError`]. Nothing here renders
//! responses or parses requests.

use crate::db::Conn;

use super::error::{ApiError, ApiResult};
use super::state::AppState;
use crate::db::users::{Role, User};
use crate::db::DbError;

/// Runs `f`, which only reads, on a pooled connection (through [`crate::db::Db::read`]).
pub async fn query<T, F>(state: &AppState, f: F) -> ApiResult<T>
where
    F: FnOnce(&mut Conn) -> ApiResult<T> + Send + 'static,
    T: Send + 'static,
{
    state.db.read(move |c| Ok(f(c))).await?
}

/// Runs `f`, which writes, through [`crate::db::Db::write`] (SQLite's one writer); an
/// error from `f` undoes what `f` wrote. A full write queue answers 503 with Retry-After.
pub async fn write<T, F>(state: &AppState, f: F) -> ApiResult<T>
where
    F: FnOnce(&mut Conn) -> ApiResult<T> + Send + 'static,
    T: Send + 'static,
{
    state.db.write(f).await
}

/// Starts a write transaction that takes the write lock up front. A deferred one that
/// reads first fails at once with SQLITE_BUSY when another writer commits in between
/// (the busy timeout doesn't cover that upgrade), which showed as 500s under load.
pub fn write_tx(c: &mut Conn) -> Result<crate::db::sql::Tx<'_>, DbError> {
    c.transaction()
}

/// Who is asking, reduced to what authorization needs; cheap to move into closures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actor {
    pub id: i64,
    pub role: Role,
}

impl From<&User> for Actor {
    fn from(u: &User) -> Self {
        Actor {
            id: u.id,
            role: u.role,
        }
    }
}

impl Actor {
    pub fn is_admin(self) -> bool {
        self.role == Role::Admin
    }

    /// May this actor see data owned by `owner_id`, whose trainer is `owner_trainer`?
    pub fn may_see(self, owner_id: i64, owner_trainer: Option<i64>) -> bool {
        match self.role {
            Role::Admin => true,
            Role::Client => self.id == owner_id,
            Role::Trainer => self.id == owner_id || owner_trainer == Some(self.id),
        }
    }

    /// May this actor plan for (write plans of) client `owner_id`? Their trainer or an admin.
    pub fn may_plan_for(self, owner_trainer: Option<i64>) -> bool {
        match self.role {
            Role::Admin => true,
            Role::Trainer => owner_trainer == Some(self.id),
            Role::Client => false,
        }
    }

    pub fn require(self, roles: &[Role], msg: &'static str) -> ApiResult<()> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(msg))
        }
    }
}

pub const STAFF: &[Role] = &[Role::Trainer, Role::Admin];

/// The trainer of user `id` when the actor may see that user's data, or 404 with
/// `missing`; with `client_only`, a user without the CLIENT role is missing too. It reads
/// the two columns the rule needs (`users::role_and_trainer`), not the whole row: writes
/// run it on SQLite's one writer thread (issue 19).
fn visible_trainer(
    c: &Conn,
    actor: Actor,
    id: i64,
    client_only: bool,
    missing: &'static str,
) -> ApiResult<Option<i64>> {
    match crate::db::users::role_and_trainer(c, id)? {
        Some((role, trainer))
            if (!client_only || role == Role::Client) && actor.may_see(id, trainer) =>
        {
            Ok(trainer)
        }
        _ => Err(ApiError::NotFound(missing)),
    }
}

/// The trainer of a client the actor may see, or 404 (`what` names the object).
pub fn visible_owner(
    c: &Conn,
    actor: Actor,
    owner_id: i64,
    what: &'static str,
) -> ApiResult<Option<i64>> {
    visible_trainer(c, actor, owner_id, false, what)
}

/// 403 unless the actor may change plans for a client whose trainer is `trainer`.
fn require_planner(actor: Actor, trainer: Option<i64>) -> ApiResult<()> {
    if actor.may_plan_for(trainer) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "Only the client's trainer or an admin can change this",
        ))
    }
}

/// Like [`visible_owner`], then 403 unless the actor may also change plans for the owner.
pub fn plannable_owner(c: &Conn, actor: Actor, owner_id: i64, what: &'static str) -> ApiResult<()> {
    require_planner(actor, visible_owner(c, actor, owner_id, what)?)
}

/// Checks an object through the client who owns it (`owner`, as looked up from the
/// object): visibility to read, the planning rule to write. Missing and invisible both
/// answer 404 with `missing`.
pub fn owned(
    c: &Conn,
    actor: Actor,
    owner: Result<Option<i64>, DbError>,
    write: bool,
    missing: &'static str,
) -> ApiResult<i64> {
    let client = owner?.ok_or(ApiError::NotFound(missing))?;
    if write {
        plannable_owner(c, actor, client, missing)?;
    } else {
        visible_owner(c, actor, client, missing)?;
    }
    Ok(client)
}

/// The client a new plan is for, once the actor may plan for them (404 unseen, 403 not
/// theirs to plan for), and the plan's trainer: the trainer who creates it, or the client's
/// own when an admin does.
pub fn new_plan_owner(c: &Conn, actor: Actor, client_id: i64) -> ApiResult<Option<i64>> {
    let clients_trainer = visible_client_id(c, actor, client_id)?;
    require_planner(actor, clients_trainer)?;
    Ok(if actor.role == Role::Trainer {
        Some(actor.id)
    } else {
        clients_trainer
    })
}

/// A client the actor may see (must have the CLIENT role), or 404.
pub fn visible_client(c: &Conn, actor: Actor, client_id: i64) -> ApiResult<User> {
    match crate::db::users::find_by_id(c, client_id)? {
        Some(u) if u.role == Role::Client && actor.may_see(u.id, u.trainer_id) => Ok(u),
        _ => Err(ApiError::NotFound("Client not found")),
    }
}

/// [`visible_client`]'s rule for callers that use only the id: the client's trainer, or
/// 404, without reading the whole row (twelve columns, seven strings).
pub fn visible_client_id(c: &Conn, actor: Actor, client_id: i64) -> ApiResult<Option<i64>> {
    visible_trainer(c, actor, client_id, true, "Client not found")
}

/// Maps a foreign-key RESTRICT failure to 409 with `msg`; other errors pass through.
pub fn restrict_conflict(e: DbError, msg: &str) -> ApiError {
    if e.is_foreign_key_violation() {
        ApiError::Conflict(msg.to_string())
    } else {
        e.into()
    }
}

/// The `(trainer, client)` filters of a list for `actor`, given the caller's optional
/// `client_id` filter: an admin sees all, a trainer their clients, a client themselves.
/// `None` when the filter names a client the actor can never see (an empty list).
pub fn list_scope(actor: Actor, client_filter: Option<i64>) -> Option<(Option<i64>, Option<i64>)> {
    match actor.role {
        Role::Admin => Some((None, client_filter)),
        Role::Trainer => Some((Some(actor.id), client_filter)),
        Role::Client => match client_filter {
            Some(id) if id != actor.id => None,
            _ => Some((None, Some(actor.id))),
        },
    }
}

/// Checks that `url` names an uploaded file of `kind` owned by `owner_id`, so one user
/// can't attach another's photo to their record. A string that is no media URL of `kind`
/// is a 422 (the document's pattern says so); a media URL of no file of the owner's is a
/// 404 naming the field, like any id in a body that names nothing (issue 15).
pub fn check_attachment(
    c: &Conn,
    field: &'static str,
    url: Option<&str>,
    kind: crate::files::Kind,
    owner_id: i64,
) -> ApiResult<()> {
    let Some(url) = url else { return Ok(()) };
    let Some((_, name)) = crate::files::parse_media_url(url).filter(|(k, _)| *k == kind) else {
        return Err(ApiError::field(
            field,
            format!("must be the url of a {} file you uploaded", kind.as_str()),
        ));
    };
    match crate::db::files::find(c, kind, &name)? {
        Some(f) if f.owner_id == owner_id => Ok(()),
        _ => Err(ApiError::unknown(field, "uploaded file of the client")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(id: i64, role: Role) -> Actor {
        Actor { id, role }
    }

    #[test]
    fn role_matrix() {
        // Client 10 is trained by trainer 2.
        let cases = [
            (actor(1, Role::Admin), true, true),
            (actor(2, Role::Trainer), true, true),
            (actor(3, Role::Trainer), false, false),
            (actor(10, Role::Client), true, false),
            (actor(11, Role::Client), false, false),
        ];
        for (a, see, plan) in cases {
            assert_eq!(a.may_see(10, Some(2)), see, "{a:?} see");
            assert_eq!(a.may_plan_for(Some(2)), plan, "{a:?} plan");
        }
        // A client without a trainer: only admin plans, only the client sees.
        assert!(!actor(2, Role::Trainer).may_see(10, None));
        assert!(!actor(2, Role::Trainer).may_plan_for(None));
    }
}
