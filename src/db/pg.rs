//! PostgreSQL (issue 16): the URL (parsed, redacted for every log and error), the pool
//! (deadpool over tokio-postgres) with a bounded, backed-off retry at start, the blocking
//! [`PgConn`] the typed queries run on, and the conversions between [`Value`] and
//! PostgreSQL's types.
//!
//! Why tokio-postgres with deadpool and not sqlx: the queries stay the sync functions of
//! `src/db` (one body of SQL for both backends, see [`super::sql`]), so only a driver and a
//! pool are needed, not sqlx's query macros, its own SQLite driver beside rusqlite, or its
//! build-time checks; tokio-postgres also gives `LISTEN` notifications as plain messages
//! of its connection (cross-replica fan-out, [`super::listen`]).
//!
//! No TLS: the connection is meant for a private network (a swarm overlay, a VPC).

use std::fmt;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use tokio_postgres::NoTls;

use super::sql::{to_pg_placeholders, Row, Value};
use super::DbError;

/// A `postgresql://` or `postgres://` URL. `Display` and `Debug` never show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl {
    url: String,
}

impl PgUrl {
    /// `None` when `url` is not a PostgreSQL URL at all; an error when it is a broken one.
    pub fn parse(url: &str) -> Option<Result<PgUrl, String>> {
        if !(url.starts_with("postgresql://") || url.starts_with("postgres://")) {
            return None;
        }
        let parsed = PgUrl {
            url: url.to_string(),
        };
        Some(match url.parse::<tokio_postgres::Config>() {
            Ok(c) if c.get_dbname().is_none() => Err(format!(
                "{parsed} names no database; use postgresql://USER:PASSWORD@HOST:5432/DATABASE"
            )),
            Ok(_) => Ok(parsed),
            Err(e) => Err(format!(
                "{parsed} is not a valid PostgreSQL URL ({e}); use postgresql://USER:PASSWORD@HOST:5432/DATABASE"
            )),
        })
    }

    /// The full URL, password included: only for the driver.
    pub fn expose(&self) -> &str {
        &self.url
    }

    pub fn config(&self) -> tokio_postgres::Config {
        self.url.parse().expect("validated in PgUrl::parse")
    }

    /// `host:port` (or the socket directory) and the database, for messages.
    pub fn target(&self) -> String {
        let c = self.config();
        let port = c.get_ports().first().copied().unwrap_or(5432);
        let host = match c.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => format!("{h}:{port}"),
            Some(tokio_postgres::config::Host::Unix(p)) => format!("{}:{port}", p.display()),
            None => format!("localhost:{port}"),
        };
        format!("{host}/{}", c.get_dbname().unwrap_or(""))
    }
}

/// The URL with its password replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let authority_end = url[start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| start + i);
    let authority = &url[start..authority_end];
    let mut out = url.to_string();
    if let Some(at) = authority.rfind('@') {
        if let Some(colon) = authority[..at].find(':') {
            out.replace_range(start + colon + 1..start + at, "***");
        }
    }
    // A password can also come as a query parameter.
    if let Some(q) = out.find('?') {
        let (base, query) = out.split_at(q + 1);
        let query = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect::<Vec<_>>()
            .join("&");
        out = format!("{base}{query}");
    }
    out
}

impl fmt::Display for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.url))
    }
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgUrl({})", redact(&self.url))
    }
}

/// The pool and the handle of the runtime its connections run on.
#[derive(Clone)]
pub struct PgPool {
    pub pool: Pool,
    pub url: PgUrl,
    pub rt: tokio::runtime::Handle,
}

/// How long a request waits for a pooled connection.
const POOL_WAIT: Duration = Duration::from_secs(10);
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors that retrying will not fix: a refused password, a missing database or role.
fn is_permanent(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|d| {
        [
            SqlState::INVALID_PASSWORD,
            SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
            SqlState::INVALID_CATALOG_NAME,
        ]
        .contains(d.code())
    })
}

/// One line naming the server and the fix.
pub fn connect_error(url: &PgUrl, e: &tokio_postgres::Error) -> String {
    let target = url.target();
    let cause = match e.as_db_error() {
        Some(d) => d.message().to_string(),
        None => {
            let mut s = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(inner) = source {
                s = format!("{s}: {inner}");
                source = inner.source();
            }
            s
        }
    };
    let hint = match e.as_db_error().map(|d| d.code().clone()) {
        Some(c)
            if c == SqlState::INVALID_PASSWORD
                || c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
        {
            "fix the user or password in the URL (DATABASE_URL, or db copy --to)"
        }
        Some(c) if c == SqlState::INVALID_CATALOG_NAME => {
            "create the database (createdb) or fix its name in the URL (DATABASE_URL, or db copy --to)"
        }
        _ => "check that PostgreSQL is running and that the URL (DATABASE_URL, or db copy --to) names its host and port",
    };
    format!("failed to connect to PostgreSQL at {target}: {cause}\n{hint}")
}

/// Builds the pool and waits until one connection succeeds: retried with backoff for up
/// to `retry_for` (a rolling start may bring the API up before the database), except for
/// errors no retry fixes. Must run inside a Tokio runtime.
pub async fn connect(url: &PgUrl, pool_size: usize, retry_for: Duration) -> anyhow::Result<PgPool> {
    let mut config = url.config();
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config.application_name("elior");
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(CONNECT_TIMEOUT + Duration::from_secs(1)))
        .build()
        .map_err(|e| anyhow::anyhow!("failed to build the PostgreSQL pool: {e}"))?;
    let deadline = Instant::now() + retry_for;
    let mut backoff = Duration::from_millis(200);
    loop {
        let err = match pool.get().await {
            Ok(_) => break,
            Err(deadpool_postgres::PoolError::Backend(e)) => e,
            Err(e) => {
                anyhow::bail!(
                    "failed to connect to PostgreSQL at {}: {e}\ncheck that PostgreSQL is running and that DATABASE_URL names its host and port",
                    url.target()
                )
            }
        };
        let message = connect_error(url, &err);
        if is_permanent(&err) || Instant::now() + backoff > deadline {
            anyhow::bail!(message);
        }
        tracing::warn!(
            database = %url.target(),
            retry_in_ms = backoff.as_millis() as u64,
            "{}",
            message.lines().next().unwrap_or_default()
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(4));
    }
    Ok(PgPool {
        pool,
        url: url.clone(),
        rt: tokio::runtime::Handle::current(),
    })
}

impl PgPool {
    /// A pooled connection for a blocking thread (never call this on an async worker).
    pub fn get_blocking(&self) -> Result<PgConn, DbError> {
        let client = self.rt.block_on(self.pool.get()).map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => DbError::Postgres(e),
            deadpool_postgres::PoolError::Timeout(_) => DbError::PoolTimeout(POOL_WAIT),
            e => DbError::Pool(e.to_string()),
        })?;
        Ok(PgConn {
            client,
            rt: self.rt.clone(),
        })
    }
}

/// One pooled PostgreSQL connection, used from a blocking thread.
pub struct PgConn {
    client: deadpool_postgres::Object,
    rt: tokio::runtime::Handle,
}

fn refs(values: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

impl PgConn {
    pub fn execute(&self, sql: &str, values: &[Value]) -> Result<usize, DbError> {
        let sql = to_pg_placeholders(sql);
        self.rt.block_on(async {
            let stmt = self.client.prepare_cached(&sql).await?;
            Ok(self.client.execute(&stmt, &refs(values)).await? as usize)
        })
    }

    pub fn query(&self, sql: &str, values: &[Value]) -> Result<Vec<Row>, DbError> {
        let sql = to_pg_placeholders(sql);
        self.rt.block_on(async {
            let stmt = self.client.prepare_cached(&sql).await?;
            let rows = self.client.query(&stmt, &refs(values)).await?;
            rows.iter()
                .map(|row| {
                    Ok(Row {
                        values: (0..row.len())
                            .map(|i| row.try_get::<_, Value>(i))
                            .collect::<Result<_, _>>()?,
                    })
                })
                .collect()
        })
    }

    pub fn batch(&self, sql: &str) -> Result<(), DbError> {
        Ok(self.rt.block_on(self.client.batch_execute(sql))?)
    }
}

type BoxError = Box<dyn std::error::Error + Sync + Send>;

fn is_text(ty: &Type) -> bool {
    matches!(
        *ty,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN
    ) || ty.name() == "citext"
}

/// A value binds to whatever type PostgreSQL inferred for its parameter.
impl ToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                Type::FLOAT4 => (*i as f32).to_sql(ty, out),
                _ if is_text(ty) => {
                    out.extend_from_slice(i.to_string().as_bytes());
                    Ok(IsNull::No)
                }
                _ => Err(format!("cannot bind an integer to a {ty} parameter").into()),
            },
            Value::Real(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                _ => Err(format!("cannot bind a real to a {ty} parameter").into()),
            },
            Value::Text(s) => match *ty {
                Type::BYTEA => s.as_bytes().to_sql(ty, out),
                _ if is_text(ty) => {
                    out.extend_from_slice(s.as_bytes());
                    Ok(IsNull::No)
                }
                _ => Err(format!("cannot bind text to a {ty} parameter").into()),
            },
            Value::Blob(b) => match *ty {
                Type::BYTEA => b.as_slice().to_sql(ty, out),
                _ => Err(format!("cannot bind a blob to a {ty} parameter").into()),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Value {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Value, BoxError> {
        Ok(match *ty {
            Type::INT8 => Value::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => Value::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT2 => Value::Int(i16::from_sql(ty, raw)?.into()),
            Type::OID => Value::Int(u32::from_sql(ty, raw)?.into()),
            Type::BOOL => Value::Int(bool::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => Value::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => Value::Real(f32::from_sql(ty, raw)?.into()),
            Type::BYTEA => Value::Blob(raw.to_vec()),
            _ if is_text(ty) => Value::Text(std::str::from_utf8(raw)?.to_string()),
            _ => {
                return Err(format!(
                "a column of type {ty} cannot be read; CAST it to BIGINT, DOUBLE PRECISION or TEXT"
            )
                .into())
            }
        })
    }

    fn from_sql_null(_: &Type) -> Result<Value, BoxError> {
        Ok(Value::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact("postgresql://elior:s3cr%40t@db:5432/elior"),
            "postgresql://elior:***@db:5432/elior"
        );
        assert_eq!(
            redact("postgres://u@db/x?password=p&sslmode=disable"),
            "postgres://u@db/x?password=***&sslmode=disable"
        );
        assert_eq!(redact("postgres://db/x"), "postgres://db/x");
        let url = PgUrl::parse("postgresql://a:hunter2@h:6543/d")
            .unwrap()
            .unwrap();
        assert!(!format!("{url} {url:?}").contains("hunter2"));
        assert_eq!(url.target(), "h:6543/d");
    }

    #[test]
    fn urls_are_checked() {
        assert!(PgUrl::parse("sqlite:///x.db").is_none());
        let err = PgUrl::parse("postgresql://a:pw@h:notaport/d")
            .unwrap()
            .unwrap_err();
        assert!(err.contains("postgresql://USER:PASSWORD@HOST"), "{err}");
        assert!(!err.contains(":pw@"), "{err}");
        assert!(PgUrl::parse("postgres://a@h").unwrap().is_err());
    }
}
