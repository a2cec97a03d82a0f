//! The statements of write transactions and hot reads, run on either of two kinds of connection.
//!
//! On PostgreSQL (and for SQLite's other reads and writes) a statement goes through sqlx. On
//! SQLite the group commit runs its transactions on a connection of its own, opened with
//! `rusqlite` on its own thread ([`crate::group_commit`]), and the hot point reads run on
//! `rusqlite` connections of the store's own ([`crate::sqlite::EmbeddedReaders`]): there a
//! statement is a function call. Through sqlx every SQLite statement is a hand-off to sqlx's
//! worker thread and back, and those hand-offs, not SQLite, were most of the CPU of a send (see
//! BENCHMARKS.md).
//!
//! [`query`] mirrors `sqlx::query` (`$N` parameters, `bind`, `execute`, `fetch_*`), so one body
//! of SQL and code serves both. One statement per query: SQLite's connection would silently
//! ignore a second one, so such text is refused.

use std::borrow::Cow;
use std::sync::Mutex;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row as _};

use crate::{Result, StoreError};

/// Where a transaction's (or a read's) statements run.
pub(crate) enum Conn<'c> {
    /// A sqlx connection (inside the caller's transaction, or taken from the reader pool).
    Sqlx(&'c mut AnyConnection),
    /// A SQLite connection of our own: the group commit's, used only on the group commit's thread
    /// (the mutex is never contended; it makes the reference shareable with `Send` futures), or
    /// an embedded reader's, locked by each statement while it runs.
    Sqlite(&'c Mutex<rusqlite::Connection>),
}

/// A connection taken for a read ([`crate::SqlStore::read_conn`]).
pub(crate) enum ReadConn {
    Pool(sqlx::pool::PoolConnection<sqlx::Any>),
    Embedded(std::sync::Arc<crate::sqlite::EmbeddedReaders>),
}

impl ReadConn {
    pub(crate) fn conn(&mut self) -> Conn<'_> {
        match self {
            ReadConn::Pool(conn) => Conn::Sqlx(conn),
            ReadConn::Embedded(readers) => Conn::Sqlite(readers.pick()),
        }
    }
}

impl Conn<'_> {
    /// True on a SQLite connection of our own (the group commit's, an embedded reader's), where a
    /// statement is a function call: there prepared statements of one row, or of a few dozen
    /// ([`execute_rows_together`]), cost less than building a JSON list of the rows and having
    /// SQLite parse it (which PostgreSQL, a round trip away, still gets).
    pub(crate) fn is_embedded(&self) -> bool {
        matches!(self, Conn::Sqlite(_))
    }
}

/// A bound argument. The database has integers and text only (booleans are 0/1, times epoch
/// milliseconds); a NULL keeps its type, which PostgreSQL needs.
#[derive(Debug, Clone)]
pub(crate) enum Arg<'q> {
    Int(Option<i64>),
    Text(Option<Cow<'q, str>>),
}

/// What [`Query::bind`] takes.
pub(crate) trait Bind<'q> {
    fn into_arg(self) -> Arg<'q>;
}

impl<'q> Bind<'q> for i64 {
    fn into_arg(self) -> Arg<'q> {
        Arg::Int(Some(self))
    }
}
impl<'q> Bind<'q> for Option<i64> {
    fn into_arg(self) -> Arg<'q> {
        Arg::Int(self)
    }
}
impl<'q> Bind<'q> for &'q str {
    fn into_arg(self) -> Arg<'q> {
        Arg::Text(Some(Cow::Borrowed(self)))
    }
}
impl<'q> Bind<'q> for String {
    fn into_arg(self) -> Arg<'q> {
        Arg::Text(Some(Cow::Owned(self)))
    }
}
impl<'q> Bind<'q> for &'q String {
    fn into_arg(self) -> Arg<'q> {
        Arg::Text(Some(Cow::Borrowed(self)))
    }
}
impl<'q> Bind<'q> for Option<&'q str> {
    fn into_arg(self) -> Arg<'q> {
        Arg::Text(self.map(Cow::Borrowed))
    }
}

/// A statement with its arguments, like `sqlx::query`.
#[must_use = "a query does nothing until it is executed"]
pub(crate) struct Query<'q> {
    sql: &'q str,
    args: Vec<Arg<'q>>,
}

/// A statement to run with [`Query::execute`] or a `fetch_*`.
pub(crate) fn query(sql: &str) -> Query<'_> {
    Query {
        sql,
        args: Vec::new(),
    }
}

/// A row returned by a statement.
pub(crate) enum Row {
    Sqlx(AnyRow),
    Sqlite(Vec<rusqlite::types::Value>),
}

impl From<AnyRow> for Row {
    fn from(row: AnyRow) -> Self {
        Row::Sqlx(row)
    }
}

/// A type a column decodes into, on either connection.
pub(crate) trait Column:
    Sized + for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any> + rusqlite::types::FromSql
{
}
impl<T> Column for T where
    T: Sized
        + for<'r> sqlx::Decode<'r, sqlx::Any>
        + sqlx::Type<sqlx::Any>
        + rusqlite::types::FromSql
{
}

impl Row {
    /// The column at `index`, like sqlx's `Row::try_get`.
    pub(crate) fn try_get<T: Column>(&self, index: usize) -> Result<T> {
        match self {
            Row::Sqlx(row) => Ok(row.try_get(index)?),
            Row::Sqlite(values) => {
                let value = values.get(index).ok_or_else(|| {
                    StoreError::Database(sqlx::Error::ColumnIndexOutOfBounds {
                        index,
                        len: values.len(),
                    })
                })?;
                T::column_result(value.into()).map_err(|error| {
                    StoreError::Database(sqlx::Error::ColumnDecode {
                        index: index.to_string(),
                        source: Box::new(error),
                    })
                })
            }
        }
    }
}

impl<'q> Query<'q> {
    pub(crate) fn bind<T: Bind<'q>>(mut self, value: T) -> Self {
        self.args.push(value.into_arg());
        self
    }

    /// Runs the statement; returns how many rows it changed.
    pub(crate) async fn execute(self, conn: &mut Conn<'_>) -> Result<u64> {
        match conn {
            Conn::Sqlx(conn) => Ok(self.into_sqlx().execute(&mut **conn).await?.rows_affected()),
            Conn::Sqlite(conn) => {
                let conn = lock(conn);
                let mut statement = self.prepare(&conn)?;
                step_to_end(&mut statement)?;
                Ok(changes(&conn, &statement))
            }
        }
    }

    pub(crate) async fn fetch_all(self, conn: &mut Conn<'_>) -> Result<Vec<Row>> {
        match conn {
            Conn::Sqlx(conn) => Ok(self
                .into_sqlx()
                .fetch_all(&mut **conn)
                .await?
                .into_iter()
                .map(Row::Sqlx)
                .collect()),
            Conn::Sqlite(conn) => {
                let conn = lock(conn);
                let mut statement = self.prepare(&conn)?;
                let columns = statement.column_count();
                let mut rows = statement.raw_query();
                let mut all = Vec::new();
                while let Some(row) = rows.next()? {
                    let values = (0..columns)
                        .map(|i| owned_value(row.get_ref(i)?))
                        .collect::<Result<Vec<_>>>()?;
                    all.push(Row::Sqlite(values));
                }
                Ok(all)
            }
        }
    }

    pub(crate) async fn fetch_optional(self, conn: &mut Conn<'_>) -> Result<Option<Row>> {
        // Every caller's statement returns at most one row (a key lookup or a LIMIT 1).
        Ok(self.fetch_all(conn).await?.into_iter().next())
    }

    pub(crate) async fn fetch_one(self, conn: &mut Conn<'_>) -> Result<Row> {
        self.fetch_optional(conn)
            .await?
            .ok_or(StoreError::Database(sqlx::Error::RowNotFound))
    }

    fn into_sqlx(self) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
        let mut query = sqlx::query(self.sql);
        for arg in self.args {
            query = match arg {
                Arg::Int(value) => query.bind(value),
                Arg::Text(None) => query.bind(None::<&str>),
                Arg::Text(Some(Cow::Borrowed(text))) => query.bind(text),
                Arg::Text(Some(Cow::Owned(text))) => query.bind(text),
            };
        }
        query
    }

    /// The cached prepared statement with the arguments bound.
    fn prepare<'c>(&self, conn: &'c rusqlite::Connection) -> Result<rusqlite::CachedStatement<'c>> {
        let mut statement = prepare_one(conn, self.sql)?;
        let positions = parameter_positions(&statement, self.sql)?;
        self.bind_to(&mut statement, &positions)?;
        Ok(statement)
    }

    /// Binds this query's arguments to `statement`, parameter `i + 1` taking argument
    /// `positions[i]`.
    fn bind_to(&self, statement: &mut rusqlite::Statement<'_>, positions: &[usize]) -> Result<()> {
        for (i, position) in positions.iter().enumerate() {
            let arg = self.args.get(position - 1).ok_or_else(|| {
                StoreError::Config(format!(
                    "${position} has no argument ({} bound): {}",
                    self.args.len(),
                    self.sql
                ))
            })?;
            arg.bind_at(statement, i + 1)?;
        }
        Ok(())
    }
}

impl Arg<'_> {
    /// Binds this value to `statement`'s parameter `parameter` (1-based).
    fn bind_at(&self, statement: &mut rusqlite::Statement<'_>, parameter: usize) -> Result<()> {
        match self {
            Arg::Int(value) => statement.raw_bind_parameter(parameter, value)?,
            Arg::Text(value) => statement.raw_bind_parameter(parameter, value.as_deref())?,
        }
        Ok(())
    }
}

/// Runs the same statement once per row; returns how many rows each run changed. `shared` holds
/// the arguments every row shares, `$1..$k`, and each of `rows` (queries of the same `sql`) only
/// its own, `$k+1..` (its first argument is `$k+1`). On the group commit's connection the
/// statement is prepared, its parameters mapped and the shared ones bound once for all rows
/// (SQLite keeps a parameter's value until it is bound again): a plan step's insert binds 7
/// values per row instead of 18. Elsewhere each row is a statement.
pub(crate) async fn execute_per_row<'q>(
    conn: &mut Conn<'_>,
    sql: &'q str,
    shared: Query<'q>,
    rows: impl IntoIterator<Item = Query<'q>>,
) -> Result<Vec<u64>> {
    debug_assert_eq!(shared.sql, sql);
    let k = shared.args.len();
    match conn {
        Conn::Sqlx(_) => {
            let mut changed = Vec::new();
            for row in rows {
                let mut args = shared.args.clone();
                args.extend(row.args);
                changed.push(Query { sql, args }.execute(conn).await?);
            }
            Ok(changed)
        }
        Conn::Sqlite(handle) => {
            let locked = lock(handle);
            let mut statement = prepare_one(&locked, sql)?;
            let positions = parameter_positions(&statement, sql)?;
            // Parameter `i + 1` takes shared argument `position` or the row's `position - k`.
            let (shared_params, row_params): (Vec<_>, Vec<_>) = positions
                .iter()
                .enumerate()
                .map(|(i, &position)| (i + 1, position))
                .partition(|&(_, position)| position <= k);
            for &(parameter, position) in &shared_params {
                shared.args[position - 1].bind_at(&mut statement, parameter)?;
            }
            let mut changed = Vec::new();
            for row in rows {
                debug_assert_eq!(row.sql, sql);
                for &(parameter, position) in &row_params {
                    let arg = row.args.get(position - k - 1).ok_or_else(|| {
                        StoreError::Config(format!(
                            "${position} has no argument ({k} shared, {} in the row): {sql}",
                            row.args.len()
                        ))
                    })?;
                    arg.bind_at(&mut statement, parameter)?;
                }
                step_to_end(&mut statement)?;
                changed.push(changes(&locked, &statement));
            }
            Ok(changed)
        }
    }
}

/// Runs `rows` (queries of `one`, each with the same number of arguments, its own) like
/// [`execute_per_row`], but on the group commit's connection `per_statement` rows at a time
/// through `many`, the multi-row form of `one`: there row `r` of a statement has arguments
/// `$k+r·m+1..$k+r·m+m` (`k` shared, `m` per row). The rows left over go one by one through `one`.
/// `shared` makes the query of the shared arguments for either text. Returns how many rows were
/// changed in all. A statement of many rows opens its table's and indexes' cursors once for all
/// of them, and runs one statement's setup and teardown instead of one per row.
pub(crate) async fn execute_rows_together<'q>(
    conn: &mut Conn<'_>,
    one: &'q str,
    many: &'q str,
    per_statement: usize,
    shared: impl Fn(&'q str) -> Query<'q>,
    mut rows: Vec<Query<'q>>,
) -> Result<u64> {
    let together = match conn {
        Conn::Sqlite(_) if per_statement > 0 => rows.len() / per_statement * per_statement,
        _ => 0,
    };
    // `rows` keeps the ones that go together; `rest` goes one by one.
    let rest = rows.split_off(together);
    let mut changed = 0;
    if !rows.is_empty()
        && let Conn::Sqlite(handle) = &*conn
    {
        let m = rows[0].args.len();
        if let Some(row) = rows
            .iter()
            .find(|row| row.args.len() != m || row.sql != one)
        {
            return Err(StoreError::Config(format!(
                "rows differ: {} arguments for {}, {m} for the first row's {one}",
                row.args.len(),
                row.sql
            )));
        }
        let locked = lock(handle);
        let mut statement = prepare_one(&locked, many)?;
        let positions = parameter_positions(&statement, many)?;
        let shared = shared(many);
        let k = shared.args.len();
        // Parameter `i + 1` takes shared argument `position`, or argument `(position - k - 1) % m`
        // of row `(position - k - 1) / m`.
        let mut own = Vec::with_capacity(per_statement * m);
        for (i, &position) in positions.iter().enumerate() {
            if position <= k {
                shared.args[position - 1].bind_at(&mut statement, i + 1)?;
            } else {
                let offset = position - k - 1;
                own.push((i + 1, offset / m.max(1), offset % m.max(1)));
            }
        }
        if own.len() != per_statement * m || own.iter().any(|&(_, row, _)| row >= per_statement) {
            return Err(StoreError::Config(format!(
                "the statement does not take {per_statement} rows of {m} arguments after {k} \
                 shared: {many}"
            )));
        }
        for group in rows.chunks_exact(per_statement) {
            for &(parameter, row, arg) in &own {
                group[row].args[arg].bind_at(&mut statement, parameter)?;
            }
            step_to_end(&mut statement)?;
            changed += changes(&locked, &statement);
        }
    }
    if !rest.is_empty() {
        let per_row = execute_per_row(conn, one, shared(one), rest).await?;
        changed += per_row.iter().sum::<u64>();
    }
    Ok(changed)
}

/// `sql` prepared (from the connection's cache); one statement only: SQLite would silently
/// ignore a second.
fn prepare_one<'c>(
    conn: &'c rusqlite::Connection,
    sql: &str,
) -> Result<rusqlite::CachedStatement<'c>> {
    if sql.trim_end().trim_end_matches(';').contains(';') {
        return Err(StoreError::Config(format!(
            "one statement per query on SQLite: {sql}"
        )));
    }
    Ok(conn.prepare_cached(sql)?)
}

/// For each parameter of `statement` (1-based, in SQLite's order), the 1-based argument it
/// takes: `$N` takes the N-th, as sqlx binds them (SQLite itself numbers named parameters by
/// first appearance). Other forms (`?`, `?N`, `:name`) are refused: the store writes `$N` only.
fn parameter_positions(statement: &rusqlite::Statement<'_>, sql: &str) -> Result<Vec<usize>> {
    (1..=statement.parameter_count())
        .map(|index| {
            statement
                .parameter_name(index)
                .and_then(|name| name.strip_prefix('$'))
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    StoreError::Config(format!("parameter {index} is not written $N: {sql}"))
                })
        })
        .collect()
}

/// Runs `statement` to its end (a RETURNING statement makes its changes as its rows are read).
fn step_to_end(statement: &mut rusqlite::Statement<'_>) -> Result<()> {
    let mut rows = statement.raw_query();
    while rows.next()?.is_some() {}
    Ok(())
}

/// The rows `statement`, just run, changed: SQLite's count of the connection's last write,
/// which a read-only statement leaves as it was, so those changed none.
fn changes(conn: &rusqlite::Connection, statement: &rusqlite::Statement<'_>) -> u64 {
    if statement.readonly() {
        0
    } else {
        conn.changes()
    }
}

/// A column's value, owned. Text that is not UTF-8 is an error (rusqlite's `From` would panic,
/// on an API thread for an embedded reader).
fn owned_value(value: rusqlite::types::ValueRef<'_>) -> Result<rusqlite::types::Value> {
    Ok(match value {
        rusqlite::types::ValueRef::Text(bytes) => rusqlite::types::Value::Text(
            String::from_utf8(bytes.to_vec())
                .map_err(|e| StoreError::Database(sqlx::Error::Decode(Box::new(e))))?,
        ),
        other => other.into(),
    })
}

/// A connection of our own (see [`Conn::Sqlite`]).
fn lock(conn: &Mutex<rusqlite::Connection>) -> std::sync::MutexGuard<'_, rusqlite::Connection> {
    conn.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection;

    /// A sqlx connection and a rusqlite one to the same new SQLite file, with table `t`.
    async fn both() -> (
        tempfile::TempDir,
        AnyConnection,
        Mutex<rusqlite::Connection>,
    ) {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let mut sqlx_conn =
            AnyConnection::connect(&format!("sqlite://{}?mode=rwc", path.display()))
                .await
                .unwrap();
        sqlx::query("CREATE TABLE t (x BIGINT PRIMARY KEY, y TEXT)")
            .execute(&mut sqlx_conn)
            .await
            .unwrap();
        let rusqlite_conn = rusqlite::Connection::open(&path).unwrap();
        (dir, sqlx_conn, Mutex::new(rusqlite_conn))
    }

    /// The rows of the tests' table `t`, in order.
    async fn rows_of_t(conn: &mut Conn<'_>) -> Vec<(i64, String)> {
        let rows = query("SELECT x, y FROM t ORDER BY x")
            .fetch_all(conn)
            .await
            .unwrap();
        rows.iter()
            .map(|r| (r.try_get(0).unwrap(), r.try_get(1).unwrap()))
            .collect()
    }

    async fn texts(sql: &str, conn: &mut Conn<'_>) -> Result<Vec<Option<String>>> {
        let row = query(sql)
            .bind("a")
            .bind(None::<&str>)
            .bind("c".to_owned())
            .fetch_one(conn)
            .await?;
        (0..3).map(|i| row.try_get(i)).collect()
    }

    /// `$N` takes the N-th bound argument on both connections, whatever order and repeats the
    /// text has; a `$N` with no argument and other parameter forms are refused on SQLite's own.
    #[tokio::test]
    async fn dollar_parameters_take_arguments_by_number_on_both_connections() {
        let (_dir, mut sqlx_conn, rusqlite_conn) = both().await;
        let sql = "SELECT $3, $1, $3";
        let expected = vec![
            Some("c".to_owned()),
            Some("a".to_owned()),
            Some("c".to_owned()),
        ];
        assert_eq!(
            texts(sql, &mut Conn::Sqlx(&mut sqlx_conn)).await.unwrap(),
            expected
        );
        let mut embedded = Conn::Sqlite(&rusqlite_conn);
        assert_eq!(texts(sql, &mut embedded).await.unwrap(), expected);
        let with_null = texts("SELECT $2, $2, $1", &mut embedded).await.unwrap();
        assert_eq!(with_null, vec![None, None, Some("a".to_owned())]);
        for refused in ["SELECT $4, $1, $2", "SELECT ?, $1, $2", "SELECT :a, $1, $2"] {
            assert!(texts(refused, &mut embedded).await.is_err(), "{refused}");
        }
        // A second statement would be silently dropped by SQLite's prepare: refused.
        assert!(
            query("INSERT INTO t (x) VALUES (1); INSERT INTO t (x) VALUES (2)")
                .execute(&mut embedded)
                .await
                .is_err()
        );
    }

    /// `execute` counts the rows a write changed (RETURNING or not), and none for a read or a
    /// write that matched nothing, on the group commit's connection.
    #[tokio::test]
    async fn execute_counts_the_rows_a_statement_changed() {
        let (_dir, _sqlx_conn, rusqlite_conn) = both().await;
        let conn = &mut Conn::Sqlite(&rusqlite_conn);
        let insert = "INSERT INTO t (x, y) SELECT value, 'v' FROM json_each($1)";
        assert_eq!(
            query(insert).bind("[1,2,3]").execute(conn).await.unwrap(),
            3
        );
        assert_eq!(query("SELECT x FROM t").execute(conn).await.unwrap(), 0);
        let update = "UPDATE t SET y = $1 WHERE x > $2";
        assert_eq!(
            query(update).bind("w").bind(5).execute(conn).await.unwrap(),
            0
        );
        let returning = "UPDATE t SET y = $1 WHERE x >= $2 RETURNING x";
        assert_eq!(
            query(returning)
                .bind("w")
                .bind(2)
                .execute(conn)
                .await
                .unwrap(),
            2
        );
        let delete = "DELETE FROM t WHERE x = $1";
        let rows = [3i64, 9, 1].map(|x| query(delete).bind(x));
        let changed = execute_per_row(conn, delete, query(delete), rows)
            .await
            .unwrap();
        assert_eq!(changed, vec![1, 0, 1]);
        let left = query("SELECT x, y FROM t").fetch_all(conn).await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].try_get::<i64>(0).unwrap(), 2);
        assert_eq!(left[0].try_get::<String>(1).unwrap(), "w");
    }

    /// Shared arguments are bound once and kept for every row, and each row's own take the
    /// parameters after them, whatever order the statement names them in; on both connections.
    #[tokio::test]
    async fn per_row_statements_keep_the_shared_arguments() {
        let (_dir, mut sqlx_conn, rusqlite_conn) = both().await;
        for conn in [
            &mut Conn::Sqlite(&rusqlite_conn),
            &mut Conn::Sqlx(&mut sqlx_conn),
        ] {
            query("DELETE FROM t").execute(conn).await.unwrap();
            let insert = "INSERT INTO t (x, y) VALUES ($3, $1 || $4 || $2)";
            let rows =
                [(1i64, "a"), (2, "b"), (3, "c")].map(|(x, y)| query(insert).bind(x).bind(y));
            let shared = query(insert).bind("<").bind(">");
            let changed = execute_per_row(conn, insert, shared, rows).await.unwrap();
            assert_eq!(changed, vec![1, 1, 1]);
            let got = rows_of_t(conn).await;
            assert_eq!(
                got,
                vec![(1, "<a>".into()), (2, "<b>".into()), (3, "<c>".into())]
            );
        }
        // On our own connection, a row without all its arguments is an error, not a value left
        // bound by the row before.
        let conn = &mut Conn::Sqlite(&rusqlite_conn);
        let insert = "INSERT INTO t (x, y) VALUES ($3, $1 || $4 || $2)";
        let short = [query(insert).bind(4i64)];
        let shared = query(insert).bind("<").bind(">");
        let error = execute_per_row(conn, insert, shared, short)
            .await
            .expect_err("$4 has no argument");
        assert!(error.to_string().contains("$4 has no argument"), "{error}");
    }

    /// Rows run together, `per_statement` at a time, and the ones left over one by one, store
    /// every row with its own and the shared arguments, and count them, on both connections; rows
    /// that do not fit the statement are an error that writes nothing.
    #[tokio::test]
    async fn rows_together_store_every_row_with_its_arguments() {
        let (_dir, mut sqlx_conn, rusqlite_conn) = both().await;
        let one = "INSERT INTO t (x, y) VALUES ($3, $1 || $4 || $2)";
        let many = "INSERT INTO t (x, y) VALUES ($3, $1 || $4 || $2), ($5, $1 || $6 || $2), \
                    ($7, $1 || $8 || $2)";
        for conn in [
            &mut Conn::Sqlite(&rusqlite_conn),
            &mut Conn::Sqlx(&mut sqlx_conn),
        ] {
            query("DELETE FROM t").execute(conn).await.unwrap();
            // Two statements of three rows, then two rows alone.
            let rows: Vec<Query> = (1..=8i64)
                .map(|x| query(one).bind(x).bind(format!("r{x}")))
                .collect();
            let shared = |sql| query(sql).bind("<").bind(">");
            let changed = execute_rows_together(conn, one, many, 3, shared, rows)
                .await
                .unwrap();
            assert_eq!(changed, 8);
            let got = rows_of_t(conn).await;
            let expected: Vec<(i64, String)> = (1..=8).map(|x| (x, format!("<r{x}>"))).collect();
            assert_eq!(got, expected);
        }
        let conn = &mut Conn::Sqlite(&rusqlite_conn);
        query("DELETE FROM t").execute(conn).await.unwrap();
        let shared = |sql| query(sql).bind("<").bind(">");
        // A row with an argument too few, and a statement that does not take three rows.
        let mut rows: Vec<Query> = (1..=3i64).map(|x| query(one).bind(x).bind("r")).collect();
        rows[1] = query(one).bind(2i64);
        let error = execute_rows_together(conn, one, many, 3, shared, rows)
            .await
            .expect_err("a short row");
        assert!(error.to_string().contains("rows differ"), "{error}");
        let rows: Vec<Query> = (1..=4i64).map(|x| query(one).bind(x).bind("r")).collect();
        let error = execute_rows_together(conn, one, many, 4, shared, rows)
            .await
            .expect_err("the statement takes three rows");
        assert!(
            error.to_string().contains("does not take 4 rows"),
            "{error}"
        );
        let stored = query("SELECT COUNT(*) FROM t")
            .fetch_one(conn)
            .await
            .unwrap();
        assert_eq!(stored.try_get::<i64>(0).unwrap(), 0);
    }

    /// Text that is not UTF-8 is an error from a fetch on our own connection, not a panic.
    #[tokio::test]
    async fn text_that_is_not_utf8_is_an_error() {
        let (_dir, _sqlx_conn, conn) = both().await;
        query("INSERT INTO t (x, y) VALUES (1, CAST(x'ff' AS TEXT))")
            .execute(&mut Conn::Sqlite(&conn))
            .await
            .unwrap();
        let error = query("SELECT y FROM t")
            .fetch_all(&mut Conn::Sqlite(&conn))
            .await
            .err()
            .expect("not UTF-8");
        assert!(error.to_string().contains("utf-8"), "{error}");
        assert!(!conn.is_poisoned());
    }
}
