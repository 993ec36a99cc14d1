//! The backend-neutral connection every typed query takes (issue 16): one [`Conn`] over
//! SQLite (rusqlite) or PostgreSQL (tokio-postgres through deadpool), with rusqlite's
//! shape (`execute`, `query_row`, `query_map`, `prepare_cached`, `optional`) over one
//! owned [`Value`] type.
//!
//! SQL is written once, in the dialect both accept, with `?N` placeholders; on PostgreSQL
//! they are rewritten to `$N` ([`to_pg_placeholders`]). PostgreSQL infers each
//! parameter's type from the statement and [`Value`] converts to whatever it asked for,
//! so an `i64` binds to an INTEGER column and a `bool` to an integer flag, as on SQLite.
//! Where the dialects really differ a query asks [`Conn::backend`].
//!
//! Calls block: they run on Tokio's blocking pool or the SQLite writer thread (through
//! [`super::Db::read`] and [`super::Db::write`]), never on
//! the async workers (the PostgreSQL side drives its async client with `Handle::block_on`,
//! which is allowed on a blocking thread).

use std::ops::{ControlFlow, Deref};

use r2d2_sqlite::SqliteConnectionManager;

use super::DbError;

/// Which database a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgresql,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgresql => "postgresql",
        }
    }
}

/// One value in or out of a statement: SQLite's five storage classes.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

pub trait ToValue {
    fn to_value(&self) -> Value;
}

impl ToValue for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}
macro_rules! int_value {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Value {
                Value::Int(*self as i64)
            }
        }
    )*};
}
int_value!(i64, i32, i16, u32, u16, u8, usize);
impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}
impl ToValue for f64 {
    fn to_value(&self) -> Value {
        Value::Real(*self)
    }
}
impl ToValue for f32 {
    fn to_value(&self) -> Value {
        Value::Real(f64::from(*self))
    }
}
impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_string())
    }
}
impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}
impl ToValue for [u8] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}
impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value {
        Value::Blob(self.clone())
    }
}
impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}
impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}

/// The parameters of one statement.
pub trait Params {
    fn into_values(self) -> Vec<Value>;
}
impl Params for () {
    fn into_values(self) -> Vec<Value> {
        Vec::new()
    }
}
impl Params for Vec<Value> {
    fn into_values(self) -> Vec<Value> {
        self
    }
}
impl Params for &[Value] {
    fn into_values(self) -> Vec<Value> {
        self.to_vec()
    }
}
impl<T: ToValue, const N: usize> Params for [T; N] {
    fn into_values(self) -> Vec<Value> {
        self.iter().map(ToValue::to_value).collect()
    }
}

/// `params![a, b, c]`: values of mixed types for one statement.
macro_rules! sql_params {
    ($($p:expr),* $(,)?) => {
        vec![$($crate::db::sql::ToValue::to_value(&$p)),*]
    };
}
pub(crate) use sql_params as params;

/// A value read back, converted to a Rust type.
pub trait FromValue: Sized {
    fn from_value(v: &Value) -> Option<Self>;
}
impl FromValue for i64 {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}
impl FromValue for i32 {
    fn from_value(v: &Value) -> Option<Self> {
        i64::from_value(v).and_then(|i| i32::try_from(i).ok())
    }
}
impl FromValue for u32 {
    fn from_value(v: &Value) -> Option<Self> {
        i64::from_value(v).and_then(|i| u32::try_from(i).ok())
    }
}
impl FromValue for u64 {
    fn from_value(v: &Value) -> Option<Self> {
        i64::from_value(v).and_then(|i| u64::try_from(i).ok())
    }
}
impl FromValue for bool {
    fn from_value(v: &Value) -> Option<Self> {
        i64::from_value(v).map(|i| i != 0)
    }
}
impl FromValue for f64 {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Real(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }
}
impl FromValue for String {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}
impl FromValue for Vec<u8> {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Blob(b) => Some(b.clone()),
            Value::Text(s) => Some(s.as_bytes().to_vec()),
            _ => None,
        }
    }
}
impl FromValue for Value {
    fn from_value(v: &Value) -> Option<Self> {
        Some(v.clone())
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Null => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// One result row, owned.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub values: Vec<Value>,
}

impl Row {
    pub fn get<T: FromValue>(&self, i: usize) -> Result<T, DbError> {
        let v = self.values.get(i).ok_or_else(|| {
            DbError::Conversion(format!(
                "column {i} is out of range ({})",
                self.values.len()
            ))
        })?;
        T::from_value(v).ok_or_else(|| {
            DbError::Conversion(format!(
                "column {i} holds {v:?}, not a {}",
                std::any::type_name::<T>()
            ))
        })
    }
}

/// A SQLite connection, pooled or owned (tests, CLI).
pub enum SqliteConn {
    Pooled(r2d2::PooledConnection<SqliteConnectionManager>),
    Owned(rusqlite::Connection),
}

impl Deref for SqliteConn {
    type Target = rusqlite::Connection;
    fn deref(&self) -> &rusqlite::Connection {
        match self {
            SqliteConn::Pooled(c) => c,
            SqliteConn::Owned(c) => c,
        }
    }
}

impl std::ops::DerefMut for SqliteConn {
    fn deref_mut(&mut self) -> &mut rusqlite::Connection {
        match self {
            SqliteConn::Pooled(c) => c,
            SqliteConn::Owned(c) => c,
        }
    }
}

/// A connection to either backend; every typed query takes `&Conn`.
pub enum Conn {
    Sqlite(SqliteConn),
    Pg(super::pg::PgConn),
}

impl Conn {
    /// A migrated in-memory SQLite database, for unit tests.
    pub fn memory() -> Conn {
        let mut c = rusqlite::Connection::open_in_memory().expect("in-memory database");
        super::migrations::migrate(&mut c).expect("migrations apply");
        c.pragma_update(None, "foreign_keys", true)
            .expect("foreign keys");
        Conn::Sqlite(SqliteConn::Owned(c))
    }

    pub fn backend(&self) -> Backend {
        match self {
            Conn::Sqlite(_) => Backend::Sqlite,
            Conn::Pg(_) => Backend::Postgresql,
        }
    }

    /// The SQLite connection underneath, if this is one.
    pub fn sqlite(&self) -> Option<&rusqlite::Connection> {
        match self {
            Conn::Sqlite(c) => Some(c),
            Conn::Pg(_) => None,
        }
    }

    /// Runs one statement; the number of rows it changed.
    pub fn execute(&self, sql: &str, params: impl Params) -> Result<usize, DbError> {
        let values = params.into_values();
        match self {
            Conn::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                Ok(stmt.execute(rusqlite::params_from_iter(values.iter()))?)
            }
            Conn::Pg(c) => c.execute(sql, &values),
        }
    }

    /// Runs an INSERT into a table with an `id` key; the new row's id.
    pub fn insert(&self, sql: &str, params: impl Params) -> Result<i64, DbError> {
        let sql = format!("{sql} RETURNING id");
        self.query_row(&sql, params, |r| r.get(0))
    }

    /// Every row of a query.
    pub fn query_rows(&self, sql: &str, params: impl Params) -> Result<Vec<Row>, DbError> {
        let mut out = Vec::new();
        self.each_row(sql, params, |row| {
            out.push(Row {
                values: std::mem::take(&mut row.values),
            });
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(out)
    }

    /// The first row mapped by `f`; [`DbError::NoRows`] when there is none. SQLite
    /// stops stepping after it.
    pub fn query_row<T>(
        &self,
        sql: &str,
        params: impl Params,
        f: impl FnOnce(&Row) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let mut f = Some(f);
        let mut first = None;
        self.each_row(sql, params, |row| {
            first = f.take().map(|f| f(row));
            Ok(ControlFlow::Break(()))
        })?;
        first.unwrap_or(Err(DbError::NoRows))
    }

    /// Every row mapped by `f`.
    pub fn query_map<T>(
        &self,
        sql: &str,
        params: impl Params,
        mut f: impl FnMut(&Row) -> Result<T, DbError>,
    ) -> Result<std::vec::IntoIter<Result<T, DbError>>, DbError> {
        let mut out = Vec::new();
        self.each_row(sql, params, |row| {
            out.push(f(row));
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(out.into_iter())
    }

    /// Hands each row of the query to `each` until it breaks. On SQLite the rows are
    /// read one at a time into one reused [`Row`] (`each` may take its values): a page
    /// of results is never held twice, once as values and once as what the caller maps
    /// them to, and the vector of values is not allocated again for every row.
    fn each_row(
        &self,
        sql: &str,
        params: impl Params,
        mut each: impl FnMut(&mut Row) -> Result<ControlFlow<()>, DbError>,
    ) -> Result<(), DbError> {
        let values = params.into_values();
        match self {
            Conn::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                let columns = stmt.column_count();
                let mut rows = stmt.query(rusqlite::params_from_iter(values.iter()))?;
                let mut row = Row {
                    values: Vec::with_capacity(columns),
                };
                while let Some(sqlite_row) = rows.next()? {
                    row.values.clear();
                    for i in 0..columns {
                        row.values.push(from_sqlite(sqlite_row.get_ref(i)?));
                    }
                    if each(&mut row)?.is_break() {
                        break;
                    }
                }
            }
            Conn::Pg(c) => {
                for mut row in c.query(sql, &values)? {
                    if each(&mut row)?.is_break() {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Runs statements separated by `;`, without parameters.
    pub fn execute_batch(&self, sql: &str) -> Result<(), DbError> {
        match self {
            Conn::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Conn::Pg(c) => c.batch(sql),
        }
    }

    /// A statement to run; SQLite keeps it in the connection's cache, PostgreSQL in the
    /// pooled client's.
    pub fn prepare_cached<'c>(&'c self, sql: &str) -> Result<Stmt<'c>, DbError> {
        Ok(Stmt {
            conn: self,
            sql: sql.to_string(),
        })
    }

    /// A write transaction that holds the write lock from its start: SQLite's IMMEDIATE,
    /// and on PostgreSQL a transaction-scoped advisory lock that serialises these
    /// transactions the same way, so a check-then-insert (the first admin, a client's
    /// trainer) can't race across replicas. Rolled back when dropped uncommitted.
    ///
    /// Inside a transaction already (a write on SQLite's writer runs inside its group
    /// commit, see [`super::writer`]) it is a SAVEPOINT, released or rolled back alone.
    pub fn transaction(&self) -> Result<Tx<'_>, DbError> {
        let nested = match self {
            Conn::Sqlite(c) if !c.is_autocommit() => {
                c.execute_batch("SAVEPOINT tx")?;
                true
            }
            Conn::Sqlite(c) => {
                c.execute_batch("BEGIN IMMEDIATE")?;
                false
            }
            Conn::Pg(c) => {
                c.batch("BEGIN; SELECT pg_advisory_xact_lock(7236837433217024114)")?;
                false
            }
        };
        Ok(Tx {
            conn: self,
            done: false,
            nested,
        })
    }
}

fn from_sqlite(v: rusqlite::types::ValueRef<'_>) -> Value {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(*i),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

/// A statement bound to its connection (see [`Conn::prepare_cached`]).
pub struct Stmt<'c> {
    conn: &'c Conn,
    sql: String,
}

impl Stmt<'_> {
    pub fn execute(&mut self, params: impl Params) -> Result<usize, DbError> {
        self.conn.execute(&self.sql, params)
    }

    pub fn query_row<T>(
        &mut self,
        params: impl Params,
        f: impl FnOnce(&Row) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        self.conn.query_row(&self.sql, params, f)
    }

    pub fn query_map<T>(
        &mut self,
        params: impl Params,
        f: impl FnMut(&Row) -> Result<T, DbError>,
    ) -> Result<std::vec::IntoIter<Result<T, DbError>>, DbError> {
        self.conn.query_map(&self.sql, params, f)
    }

    pub fn insert(&mut self, params: impl Params) -> Result<i64, DbError> {
        self.conn.insert(&self.sql, params)
    }

    pub fn exists(&mut self, params: impl Params) -> Result<bool, DbError> {
        Ok(!self.conn.query_rows(&self.sql, params)?.is_empty())
    }
}

/// A write transaction (see [`Conn::transaction`]); derefs to its connection.
pub struct Tx<'c> {
    conn: &'c Conn,
    done: bool,
    /// A SAVEPOINT inside an outer transaction rather than a transaction of its own.
    nested: bool,
}

impl Tx<'_> {
    pub fn commit(mut self) -> Result<(), DbError> {
        self.done = true;
        self.conn
            .execute_batch(if self.nested { "RELEASE tx" } else { "COMMIT" })
    }
}

impl Deref for Tx<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if !self.done {
            let rollback = if self.nested {
                "ROLLBACK TO tx; RELEASE tx"
            } else {
                "ROLLBACK"
            };
            if let Err(e) = self.conn.execute_batch(rollback) {
                tracing::warn!(error = %e, "rollback failed");
            }
        }
    }
}

/// `.optional()` on a single-row result: no row is `None`.
pub trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>, DbError>;
}

impl<T> OptionalExtension<T> for Result<T, DbError> {
    fn optional(self) -> Result<Option<T>, DbError> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(DbError::NoRows) => Ok(None),
            Err(DbError::Sqlite(rusqlite::Error::QueryReturnedNoRows)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Rewrites `?N` (and bare `?`) placeholders to PostgreSQL's `$N`, leaving quoted text
/// alone.
pub fn to_pg_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut quote: Option<char> = None;
    let mut next = 0u32;
    while let Some(ch) = chars.next() {
        if let Some(q) = quote {
            out.push(ch);
            if ch == q {
                quote = None;
            }
            continue;
        }
        match ch {
            '\'' | '"' => {
                quote = Some(ch);
                out.push(ch);
            }
            '?' => {
                out.push('$');
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                if digits.is_empty() {
                    next += 1;
                    out.push_str(&next.to_string());
                } else {
                    next = next.max(digits.parse().unwrap_or(0));
                    out.push_str(&digits);
                }
            }
            _ => out.push(ch),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_rewritten_outside_quotes() {
        assert_eq!(
            to_pg_placeholders("SELECT a FROM t WHERE b = ?1 AND c = '?2' AND d = ?12 OR e = ?"),
            "SELECT a FROM t WHERE b = $1 AND c = '?2' AND d = $12 OR e = $13"
        );
        assert_eq!(to_pg_placeholders("\"x?\" = ?"), "\"x?\" = $1");
    }

    #[test]
    fn rows_come_whole_and_in_order_however_they_are_read() {
        // One reused row buffer underneath: no row may keep another's values.
        let c = Conn::memory();
        let sql = "SELECT value, 'row ' || value, CASE WHEN value % 2 = 0 THEN NULL ELSE value END \
                   FROM (WITH RECURSIVE n(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM n WHERE value < 5) SELECT value FROM n)";
        let mapped: Vec<(i64, String, Option<i64>)> = c
            .query_map(sql, (), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let expected: Vec<(i64, String, Option<i64>)> = (1..=5)
            .map(|i| (i, format!("row {i}"), (i % 2 == 1).then_some(i)))
            .collect();
        assert_eq!(mapped, expected);
        let rows = c.query_rows(sql, ()).unwrap();
        assert_eq!(rows.len(), 5);
        for (row, (i, text, odd)) in rows.iter().zip(&expected) {
            assert_eq!(row.get::<i64>(0).unwrap(), *i);
            assert_eq!(&row.get::<String>(1).unwrap(), text);
            assert_eq!(row.get::<Option<i64>>(2).unwrap(), *odd);
        }
        // The first row only, whatever follows it.
        assert_eq!(
            c.query_row(sql, (), |r| r.get::<String>(1)).unwrap(),
            "row 1"
        );
    }

    #[test]
    fn rows_convert_and_missing_rows_are_none() {
        let c = Conn::memory();
        let (a, b): (i64, Option<String>) = c
            .query_row("SELECT ?1 + 1, ?2", params![41, None::<String>], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((a, b), (42, None));
        let none = c
            .query_row("SELECT 1 WHERE 0", (), |r| r.get::<i64>(0))
            .optional()
            .unwrap();
        assert_eq!(none, None);
        assert!(c.query_row("SELECT 'x'", (), |r| r.get::<i64>(0)).is_err());
    }

    #[test]
    fn a_dropped_transaction_rolls_back() {
        let c = Conn::memory();
        c.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
        {
            let tx = c.transaction().unwrap();
            tx.execute("INSERT INTO t VALUES (?1)", [1]).unwrap();
        }
        let tx = c.transaction().unwrap();
        tx.execute("INSERT INTO t VALUES (?1)", [2]).unwrap();
        tx.commit().unwrap();
        let xs: Vec<i64> = c
            .query_map("SELECT x FROM t", (), |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(xs, [2]);
    }

    #[test]
    fn a_transaction_inside_one_is_a_savepoint_undone_alone() {
        let c = Conn::memory();
        c.execute_batch("CREATE TABLE t (x INTEGER); BEGIN IMMEDIATE")
            .unwrap();
        c.execute("INSERT INTO t VALUES (1)", ()).unwrap();
        {
            let tx = c.transaction().unwrap();
            tx.execute("INSERT INTO t VALUES (2)", ()).unwrap();
        }
        let tx = c.transaction().unwrap();
        tx.execute("INSERT INTO t VALUES (3)", ()).unwrap();
        tx.commit().unwrap();
        c.execute_batch("COMMIT").unwrap();
        let xs: Vec<i64> = c
            .query_map("SELECT x FROM t ORDER BY x", (), |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(xs, [1, 3]);
    }
}
