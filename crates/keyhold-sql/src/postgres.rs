//! The PostgreSQL driver (tokio-postgres with a deadpool connection pool).
//!
//! Many Keyhold nodes may share one database: every write is a short transaction, updates are
//! compare-and-set on `revision`, and the `changes` counter tells every node when to drop its
//! caches. Migrations run under an advisory lock so nodes starting together do not race.
//!
//! Erasure caveat (see docs/operations.md): PostgreSQL's MVCC keeps the old row version until
//! VACUUM reclaims it, and even then the bytes may linger in free space or the WAL. Keyhold runs
//! VACUUM on the versions table after each erasure; the erased bytes were in any case sealed by
//! the root key.

use std::str::FromStr;

use crate::sql::SqlError;
use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::NoTls;
use tokio_postgres::types::{ToSql, Type};

use crate::schema;
use crate::sql::{Row, SqlBackend, SqlConn, Value};

/// Connections kept per node.
const POOL_SIZE: usize = 16;
/// Advisory lock key taken while migrating ("keyhold" in ASCII).
const MIGRATION_LOCK: i64 = 0x6b6579686f6c64;

/// A PostgreSQL database.
#[derive(Clone)]
pub struct Postgres {
    pool: Pool,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Postgres")
    }
}

/// What the driver knows about `e`, for the operator (finding 8: tokio-postgres's `Display` of
/// a server error is just "db error", which sent operators looking for corrupt data when the
/// server had said "permission denied for schema public" or "password authentication failed").
/// The server's message, SQLSTATE and hint; for other errors the chain of causes (the refused
/// connection, the timeout). The server's DETAIL is left out: it can quote row values.
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut out = format!("PostgreSQL {}: {} (SQLSTATE {})", db.severity(), db.message(), db.code().code());
        if let Some(hint) = db.hint() {
            out.push_str("; hint: ");
            out.push_str(hint);
        }
        if let Some(advice) = advice(db.code()) {
            out.push_str("; ");
            out.push_str(advice);
        }
        return out;
    }
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    if keyhold_tls::diagnose(e).is_some() {
        out.push_str(
            "; a TLS failure: check sslmode, sslrootcert (the CA file) and sslcert/sslkey in the --database URL \
             (docs/operations.md, \"TLS for clients\")",
        );
    }
    out
}

/// How to fix the misconfigurations an operator meets first.
fn advice(code: &tokio_postgres::error::SqlState) -> Option<&'static str> {
    let c = code.code();
    Some(if c == "42501" || c == "3F000" {
        "the role needs CREATE on schema public to create Keyhold's tables (PostgreSQL 15 gives it only to the \
         database's owner): GRANT CREATE ON SCHEMA public TO the role, or make the role the database's owner \
         (see docs/operations.md)"
    } else if c.starts_with("28") {
        "check the user and password in the --database URL, and pg_hba.conf on the server"
    } else if c == "3D000" {
        "create the database first (CREATE DATABASE ... OWNER the role), or fix its name in the --database URL"
    } else {
        return None;
    })
}

/// Classifies by SQLSTATE. Only errors that say the stored data itself is wrong are "corrupt";
/// refusals of the role, the connection or the server (finding 8) are "unavailable", with the
/// server's own words.
fn map_err(e: tokio_postgres::Error) -> SqlError {
    use tokio_postgres::error::SqlState;
    match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => SqlError::AlreadyExists,
        // A row refers to one deleted meanwhile (a version of a key being deleted), or a row
        // being deleted is still referred to: the write lost a race, as a compare-and-set does.
        Some(c) if *c == SqlState::FOREIGN_KEY_VIOLATION => SqlError::Conflict,
        Some(c)
            if c.code().starts_with("08") // connection exception
            || c.code().starts_with("28") // invalid authorization (wrong password, no such role)
            || c.code().starts_with("3D") // no such database
            || c.code().starts_with("3F") // no such schema (no schema to create in)
            || c.code().starts_with("53") // insufficient resources
            || c.code().starts_with("57") // operator intervention (shutdown)
            || *c == SqlState::INSUFFICIENT_PRIVILEGE
            || *c == SqlState::READ_ONLY_SQL_TRANSACTION
            || *c == SqlState::T_R_SERIALIZATION_FAILURE
            || *c == SqlState::T_R_DEADLOCK_DETECTED =>
        {
            SqlError::Unavailable(describe(&e))
        }
        Some(_) => SqlError::Corrupt(describe(&e)),
        // No SQLSTATE: the connection itself failed.
        None => SqlError::Unavailable(describe(&e)),
    }
}

/// A connection the pool could not make or hand out, with the driver's cause (deadpool's own
/// `Display` of it reads "Error occurred while creating a new object: db error").
fn pool_err(e: deadpool_postgres::PoolError) -> SqlError {
    let cause = match &e {
        deadpool_postgres::PoolError::Backend(b) => describe(b),
        other => other.to_string(),
    };
    SqlError::Unavailable(format!("cannot get a PostgreSQL connection: {cause}"))
}

/// The pool's connection manager for `url`: plain TCP, or TLS as its `sslmode` asks.
fn manager(url: &str) -> Result<Manager, SqlError> {
    let invalid = |e: String| SqlError::Unavailable(format!("invalid PostgreSQL URL: {e}"));
    let (url, tls) = crate::postgres_tls::split(url).map_err(invalid)?;
    let config = tokio_postgres::Config::from_str(&url).map_err(|e| invalid(e.to_string()))?;
    let recycling = ManagerConfig { recycling_method: RecyclingMethod::Fast };
    Ok(if tls.uses_tls() {
        let connector = tokio_postgres_rustls::MakeRustlsConnect::new(tls.client_config().map_err(invalid)?);
        Manager::from_config(config, connector, recycling)
    } else {
        Manager::from_config(config, NoTls, recycling)
    })
}

fn build_err(e: impl std::fmt::Display) -> SqlError {
    SqlError::Unavailable(format!("cannot set up the PostgreSQL connection pool: {e}"))
}

impl Postgres {
    /// Connects to `url` (`postgres://user:password@host:port/db`) and migrates the schema.
    /// TLS as the URL's `sslmode` and `sslrootcert` say ([`crate::postgres_tls`]).
    pub async fn connect(url: &str) -> Result<Self, SqlError> {
        let manager = manager(url)?;
        let pool = Pool::builder(manager).max_size(POOL_SIZE).build().map_err(build_err)?;
        let db = Self { pool };
        db.migrate().await?;
        Ok(db)
    }

    /// Connects without migrating (read-only use: `keyhold audit verify`).
    pub async fn connect_without_migration(url: &str) -> Result<Self, SqlError> {
        let manager = manager(url)?;
        let pool = Pool::builder(manager).max_size(2).build().map_err(build_err)?;
        Ok(Self { pool })
    }

    async fn migrate(&self) -> Result<(), SqlError> {
        // Whatever fails here is a failure to create or check the schema, never "corrupt data"
        // (finding 8); the newer-schema refusal below keeps its own words.
        // The outer result is the driver's, the inner one the schema version check's.
        self.migrate_inner()
            .await
            .map_err(|e| match e {
                SqlError::Corrupt(m) | SqlError::Unavailable(m) => {
                    SqlError::Unavailable(format!("cannot create or check Keyhold's tables: {m}"))
                }
                other => other,
            })
            .and_then(|checked| checked)
    }

    async fn migrate_inner(&self) -> Result<Result<(), SqlError>, SqlError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(map_err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(map_err)?;
        tx.batch_execute(&schema::ddl(crate::sql::Dialect::Postgres, true)).await.map_err(map_err)?;
        tx.batch_execute(schema::POSTGRES_TRIGGERS).await.map_err(map_err)?;
        tx.execute(schema::META_INSERT, &[&"schema_version", &schema::SCHEMA_VERSION.to_string()])
            .await
            .map_err(map_err)?;
        let v: String = tx.query_one(schema::META_GET, &[&"schema_version"]).await.map_err(map_err)?.get(0);
        if v.parse::<i64>().unwrap_or(i64::MAX) > schema::SCHEMA_VERSION {
            return Ok(Err(SqlError::Corrupt(format!(
                "the database has schema version {v}, newer than this build knows ({}); upgrade Keyhold",
                schema::SCHEMA_VERSION
            ))));
        }
        tx.execute(schema::SCHEMA_VERSION_UPDATE, &[&schema::SCHEMA_VERSION.to_string(), &schema::SCHEMA_VERSION])
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err).map(Ok)
    }

    async fn conn(&self, transaction: bool) -> Result<Box<dyn SqlConn>, SqlError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let mut c = PgConn { client: Some(client), open_tx: false };
        if transaction {
            // READ COMMITTED whatever the database default: the audit chain's head lock relies
            // on seeing the newest committed head after waiting for it.
            c.client()?.batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED").await.map_err(map_err)?;
            c.open_tx = true;
        }
        Ok(Box::new(c))
    }
}

struct PgConn {
    client: Option<Object>,
    open_tx: bool,
}

fn params(values: &[Value]) -> Vec<Box<dyn ToSql + Sync + Send>> {
    values
        .iter()
        .map(|v| -> Box<dyn ToSql + Sync + Send> {
            match v.clone() {
                Value::Null | Value::OptInt(None) => Box::new(None::<i64>),
                Value::Int(i) | Value::OptInt(Some(i)) => Box::new(i),
                Value::Text(t) => Box::new(t),
                Value::OptBlob(b) => Box::new(b),
            }
        })
        .collect()
}

fn decode(row: &tokio_postgres::Row) -> Result<Row, SqlError> {
    let mut out = Vec::with_capacity(row.len());
    for (i, col) in row.columns().iter().enumerate() {
        let ty = col.type_();
        let v = if *ty == Type::INT8 {
            row.try_get::<_, Option<i64>>(i).map(|v| v.map_or(Value::Null, Value::Int))
        } else if *ty == Type::INT4 {
            row.try_get::<_, Option<i32>>(i).map(|v| v.map_or(Value::Null, |n| Value::Int(n.into())))
        } else if *ty == Type::BYTEA {
            row.try_get::<_, Option<Vec<u8>>>(i).map(|v| v.map_or(Value::Null, |b| Value::OptBlob(Some(b))))
        } else {
            row.try_get::<_, Option<String>>(i).map(|v| v.map_or(Value::Null, Value::Text))
        };
        out.push(v.map_err(|e| SqlError::Corrupt(e.to_string()))?);
    }
    Ok(out)
}

impl PgConn {
    fn client(&self) -> Result<&Object, SqlError> {
        self.client.as_ref().ok_or_else(|| SqlError::Unavailable("connection already released".into()))
    }
}

#[async_trait]
impl SqlConn for PgConn {
    async fn query(&mut self, sql: &'static str, values: Vec<Value>) -> Result<Vec<Row>, SqlError> {
        let client = self.client()?;
        let stmt = client.prepare_cached(sql).await.map_err(map_err)?;
        let p = params(&values);
        let refs: Vec<&(dyn ToSql + Sync)> = p.iter().map(|b| b.as_ref() as &(dyn ToSql + Sync)).collect();
        let rows = client.query(&stmt, &refs).await.map_err(map_err)?;
        rows.iter().map(decode).collect()
    }
    async fn execute(&mut self, sql: &'static str, values: Vec<Value>) -> Result<u64, SqlError> {
        let client = self.client()?;
        let stmt = client.prepare_cached(sql).await.map_err(map_err)?;
        let p = params(&values);
        let refs: Vec<&(dyn ToSql + Sync)> = p.iter().map(|b| b.as_ref() as &(dyn ToSql + Sync)).collect();
        client.execute(&stmt, &refs).await.map_err(map_err)
    }
    async fn execute_many(&mut self, statements: Vec<(&'static str, Vec<Value>)>) -> Result<(), SqlError> {
        // Sent together: tokio-postgres pipelines concurrent queries on one connection, so a
        // batch of audit entries costs one round trip, not one per entry, while the chain's
        // head lock is held.
        let client = self.client()?;
        let mut prepared = Vec::with_capacity(statements.len());
        for (sql, values) in &statements {
            prepared.push((client.prepare_cached(sql).await.map_err(map_err)?, params(values)));
        }
        let runs = prepared.iter().map(|(stmt, p)| {
            let refs: Vec<&(dyn ToSql + Sync)> = p.iter().map(|b| b.as_ref() as &(dyn ToSql + Sync)).collect();
            async move { client.execute(stmt, &refs).await }
        });
        futures_util::future::try_join_all(runs).await.map_err(map_err)?;
        Ok(())
    }
    async fn commit(mut self: Box<Self>) -> Result<(), SqlError> {
        self.client()?.batch_execute("COMMIT").await.map_err(map_err)?;
        self.open_tx = false;
        Ok(())
    }
}

impl Drop for PgConn {
    fn drop(&mut self) {
        if self.open_tx {
            // Not committed: take the connection out of the pool and close it, which makes the
            // server roll the transaction back. (Drop cannot await a ROLLBACK.)
            if let Some(obj) = self.client.take() {
                drop(Object::take(obj));
            }
        }
    }
}

#[async_trait]
impl SqlBackend for Postgres {
    fn dialect(&self) -> crate::sql::Dialect {
        crate::sql::Dialect::Postgres
    }

    async fn begin(&self) -> Result<Box<dyn SqlConn>, SqlError> {
        self.conn(true).await
    }
    async fn read(&self) -> Result<Box<dyn SqlConn>, SqlError> {
        self.conn(false).await
    }
    async fn after_erase(&self) {
        match self.pool.get().await {
            Ok(c) => {
                if let Err(e) = c.batch_execute("VACUUM crypto_key_versions").await {
                    tracing::warn!(error = %describe(&e), "VACUUM after key erasure failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "VACUUM after key erasure skipped"),
        }
    }
}
