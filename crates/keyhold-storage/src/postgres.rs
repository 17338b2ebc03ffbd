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

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use keyhold_kms::store::StoreError;
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

fn map_err(e: tokio_postgres::Error) -> StoreError {
    use tokio_postgres::error::SqlState;
    match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => StoreError::AlreadyExists,
        Some(c)
            if c.code().starts_with("08") // connection exception
            || c.code().starts_with("53") // insufficient resources
            || c.code().starts_with("57") // operator intervention (shutdown)
            || *c == SqlState::T_R_SERIALIZATION_FAILURE
            || *c == SqlState::T_R_DEADLOCK_DETECTED =>
        {
            StoreError::Unavailable(e.to_string())
        }
        Some(_) => StoreError::Corrupt(e.to_string()),
        // No SQLSTATE: the connection itself failed.
        None => StoreError::Unavailable(e.to_string()),
    }
}

fn pool_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("cannot get a PostgreSQL connection: {e}"))
}

impl Postgres {
    /// Connects to `url` (`postgres://user:password@host:port/db`) and migrates the schema.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("invalid PostgreSQL URL: {e}")))?;
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager).max_size(POOL_SIZE).build().map_err(pool_err)?;
        let db = Self { pool };
        db.migrate().await?;
        Ok(db)
    }

    /// Connects without migrating (read-only use: `keyhold audit verify`).
    pub async fn connect_without_migration(url: &str) -> Result<Self, StoreError> {
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("invalid PostgreSQL URL: {e}")))?;
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager).max_size(2).build().map_err(pool_err)?;
        Ok(Self { pool })
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(map_err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(map_err)?;
        tx.batch_execute(&schema::ddl("BYTEA")).await.map_err(map_err)?;
        tx.batch_execute(schema::POSTGRES_TRIGGERS).await.map_err(map_err)?;
        tx.execute(schema::META_INSERT, &[&"schema_version", &schema::SCHEMA_VERSION.to_string()])
            .await
            .map_err(map_err)?;
        let v: String = tx.query_one(schema::META_GET, &[&"schema_version"]).await.map_err(map_err)?.get(0);
        if v.parse::<i64>().unwrap_or(i64::MAX) > schema::SCHEMA_VERSION {
            return Err(StoreError::Corrupt(format!(
                "the database has schema version {v}, newer than this build knows ({}); upgrade Keyhold",
                schema::SCHEMA_VERSION
            )));
        }
        tx.execute(schema::SCHEMA_VERSION_UPDATE, &[&schema::SCHEMA_VERSION.to_string(), &schema::SCHEMA_VERSION])
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }

    async fn conn(&self, transaction: bool) -> Result<Box<dyn SqlConn>, StoreError> {
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

fn decode(row: &tokio_postgres::Row) -> Result<Row, StoreError> {
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
        out.push(v.map_err(|e| StoreError::Corrupt(e.to_string()))?);
    }
    Ok(out)
}

impl PgConn {
    fn client(&self) -> Result<&Object, StoreError> {
        self.client.as_ref().ok_or_else(|| StoreError::Unavailable("connection already released".into()))
    }
}

#[async_trait]
impl SqlConn for PgConn {
    async fn query(&mut self, sql: &'static str, values: Vec<Value>) -> Result<Vec<Row>, StoreError> {
        let client = self.client()?;
        let stmt = client.prepare_cached(sql).await.map_err(map_err)?;
        let p = params(&values);
        let refs: Vec<&(dyn ToSql + Sync)> = p.iter().map(|b| b.as_ref() as &(dyn ToSql + Sync)).collect();
        let rows = client.query(&stmt, &refs).await.map_err(map_err)?;
        rows.iter().map(decode).collect()
    }
    async fn execute(&mut self, sql: &'static str, values: Vec<Value>) -> Result<u64, StoreError> {
        let client = self.client()?;
        let stmt = client.prepare_cached(sql).await.map_err(map_err)?;
        let p = params(&values);
        let refs: Vec<&(dyn ToSql + Sync)> = p.iter().map(|b| b.as_ref() as &(dyn ToSql + Sync)).collect();
        client.execute(&stmt, &refs).await.map_err(map_err)
    }
    async fn execute_many(&mut self, statements: Vec<(&'static str, Vec<Value>)>) -> Result<(), StoreError> {
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
    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
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
    async fn begin(&self) -> Result<Box<dyn SqlConn>, StoreError> {
        self.conn(true).await
    }
    async fn read(&self) -> Result<Box<dyn SqlConn>, StoreError> {
        self.conn(false).await
    }
    async fn after_erase(&self) {
        match self.pool.get().await {
            Ok(c) => {
                if let Err(e) = c.batch_execute("VACUUM crypto_key_versions").await {
                    tracing::warn!(error = %e, "VACUUM after key erasure failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "VACUUM after key erasure skipped"),
        }
    }
}
