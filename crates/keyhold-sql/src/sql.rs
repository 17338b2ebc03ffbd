//! The minimal SQL interface the generic store is written against.

use async_trait::async_trait;
/// What the SQL layer reports: the KMS repository's error (`AlreadyExists`, `Conflict`,
/// `Unavailable`, `Corrupt`), which the KMS's repository returns as it is and the store's
/// repository maps to its own `RepoError` in one place (`store_repo.rs`).
pub(crate) use keyhold_kms::repo::RepoError as SqlError;

/// A parameter or a column value.
#[derive(Clone, PartialEq)]
pub enum Value {
    /// SQL NULL (only ever read; write `OptInt(None)` / `OptBlob(None)` so PostgreSQL knows the
    /// type).
    Null,
    /// BIGINT.
    Int(i64),
    /// Nullable BIGINT.
    OptInt(Option<i64>),
    /// TEXT.
    Text(String),
    /// Nullable BLOB / BYTEA.
    OptBlob(Option<Vec<u8>>),
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Int(i) => write!(f, "{i}"),
            Value::OptInt(i) => write!(f, "{i:?}"),
            Value::Text(t) => write!(f, "{t:?}"),
            // Blobs hold sealed key material: never printed.
            Value::OptBlob(b) => write!(f, "blob({:?} bytes)", b.as_ref().map(Vec::len)),
        }
    }
}

/// A result row.
pub type Row = Vec<Value>;

impl Value {
    pub(crate) fn int(&self) -> Result<i64, SqlError> {
        match self {
            Value::Int(i) | Value::OptInt(Some(i)) => Ok(*i),
            other => Err(SqlError::Corrupt(format!("expected an integer, found {other:?}"))),
        }
    }
    pub(crate) fn opt_int(&self) -> Result<Option<i64>, SqlError> {
        match self {
            Value::Null | Value::OptInt(None) => Ok(None),
            other => other.int().map(Some),
        }
    }
    pub(crate) fn text(&self) -> Result<&str, SqlError> {
        match self {
            Value::Text(t) => Ok(t),
            other => Err(SqlError::Corrupt(format!("expected text, found {other:?}"))),
        }
    }
    pub(crate) fn opt_blob(&self) -> Result<Option<Vec<u8>>, SqlError> {
        match self {
            Value::Null | Value::OptBlob(None) => Ok(None),
            Value::OptBlob(Some(b)) => Ok(Some(b.clone())),
            other => Err(SqlError::Corrupt(format!("expected a blob, found {other:?}"))),
        }
    }
}

/// Builds, from the rows of a query, the statements to run after it (see
/// [`SqlConn::query_then_commit`]).
pub type ThenStatements = Box<dyn FnOnce(Vec<Row>) -> Result<Vec<(&'static str, Vec<Value>)>, SqlError> + Send>;

/// A connection, inside a transaction when obtained from [`SqlBackend::begin`]. Dropping it
/// without [`SqlConn::commit`] rolls the transaction back.
#[async_trait]
pub trait SqlConn: Send {
    /// Runs a statement that returns rows.
    async fn query(&mut self, sql: &'static str, params: Vec<Value>) -> Result<Vec<Row>, SqlError>;
    /// Runs a statement; returns the number of rows affected.
    async fn execute(&mut self, sql: &'static str, params: Vec<Value>) -> Result<u64, SqlError>;
    /// Runs several statements in order, stopping at the first error. Drivers that pay a
    /// thread hop per call (SQLite) run them in one.
    async fn execute_many(&mut self, statements: Vec<(&'static str, Vec<Value>)>) -> Result<(), SqlError> {
        for (sql, params) in statements {
            self.execute(sql, params).await?;
        }
        Ok(())
    }
    /// Commits the transaction.
    async fn commit(self: Box<Self>) -> Result<(), SqlError>;
    /// [`SqlConn::execute_many`] then [`SqlConn::commit`]; SQLite does both in one thread hop.
    async fn execute_many_and_commit(
        mut self: Box<Self>,
        statements: Vec<(&'static str, Vec<Value>)>,
    ) -> Result<(), SqlError> {
        self.execute_many(statements).await?;
        self.commit().await
    }
    /// Runs a query, the statements `then` builds from its rows, and commits. SQLite does it
    /// all in one thread hop, which is what keeps the audit writer's group commit cheap.
    async fn query_then_commit(
        mut self: Box<Self>,
        sql: &'static str,
        params: Vec<Value>,
        then: ThenStatements,
    ) -> Result<(), SqlError> {
        let rows = self.query(sql, params).await?;
        let statements = then(rows)?;
        self.execute_many_and_commit(statements).await
    }
}

/// The SQL spoken by a driver, where the two differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Dialect {
    pub(crate) fn blob_type(self) -> &'static str {
        match self {
            Dialect::Sqlite => "BLOB",
            Dialect::Postgres => "BYTEA",
        }
    }

    /// What ends a `CREATE TABLE` whose rows are its primary key (SQLite then stores no rowid
    /// and no second copy of the key).
    pub(crate) fn without_rowid(self) -> &'static str {
        match self {
            Dialect::Sqlite => " WITHOUT ROWID",
            Dialect::Postgres => "",
        }
    }

    /// The collation clause that makes text compare byte by byte.
    pub(crate) fn bytes_collation(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " COLLATE \"C\"",
        }
    }
}

/// A database driver.
#[async_trait]
pub trait SqlBackend: Send + Sync + std::fmt::Debug + 'static {
    /// The SQL it speaks.
    fn dialect(&self) -> Dialect;
    /// A connection with a transaction open.
    async fn begin(&self) -> Result<Box<dyn SqlConn>, SqlError>;
    /// A connection in autocommit mode, for single-statement reads.
    async fn read(&self) -> Result<Box<dyn SqlConn>, SqlError>;
    /// Whether transactions never overlap (SQLite's one connection), so that no lock is needed
    /// to order them.
    fn serializes_transactions(&self) -> bool {
        false
    }
    /// Called after key material was erased, so the driver can also purge old copies of the
    /// bytes it keeps elsewhere (SQLite: the write-ahead log).
    async fn after_erase(&self);
}

/// A boxed, sendable future (what transaction bodies return).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
