//! The SQLite driver (rusqlite, SQLite bundled).
//!
//! One connection, used by one transaction at a time (an async mutex serializes them); each
//! statement runs on tokio's blocking pool. The file is opened in WAL mode with
//! `synchronous=FULL` (a key acknowledged as created survives a power cut) and
//! `secure_delete=ON` (deleted or overwritten content — destroyed key material — is zeroed in
//! the file, and the WAL is checkpointed and truncated after each erasure).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::sql::SqlError;
use async_trait::async_trait;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode};

use crate::schema;
use crate::sql::{Row, SqlBackend, SqlConn, ThenStatements, Value};

/// Pages (4 KiB each) the WAL holds before SQLite checkpoints it into the file.
pub(crate) const WAL_AUTOCHECKPOINT_PAGES: u32 = 16_384;

/// A SQLite database.
#[derive(Clone)]
pub struct Sqlite {
    conn: Arc<Mutex<Connection>>,
    turn: Arc<tokio::sync::Mutex<()>>,
    label: String,
}

impl std::fmt::Debug for Sqlite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sqlite({})", self.label)
    }
}

fn map_err(e: rusqlite::Error) -> SqlError {
    match &e {
        // A foreign key refused (a version of a key deleted meanwhile): a lost race, as for
        // PostgreSQL's FOREIGN_KEY_VIOLATION.
        rusqlite::Error::SqliteFailure(f, _) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY => {
            SqlError::Conflict
        }
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::ConstraintViolation => SqlError::AlreadyExists,
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull
            | ErrorCode::CannotOpen
            | ErrorCode::PermissionDenied
            | ErrorCode::OutOfMemory
            | ErrorCode::ReadOnly => SqlError::Unavailable(e.to_string()),
            _ => SqlError::Corrupt(e.to_string()),
        },
        _ => SqlError::Corrupt(e.to_string()),
    }
}

impl Sqlite {
    /// Opens (creating if needed) the database file at `path` and migrates it.
    pub async fn open_file(path: &Path) -> Result<Self, SqlError> {
        if let Some(dir) = path.parent() {
            keyhold_kms::private_files::create_dir_all(dir)
                .map_err(|e| SqlError::Unavailable(format!("{}: {e}", dir.display())))?;
        }
        // Finding 4: SQLite creates the file 0644 (less the umask) and gives the WAL and SHM
        // it creates the main file's mode, so the file is made (or tightened to) 0600 before
        // SQLite opens it; a WAL or SHM an earlier version left readable is tightened too.
        let private = |p: &Path, f: fn(&Path) -> std::io::Result<()>| {
            f(p).map_err(|e| SqlError::Unavailable(format!("{}: {e}", p.display())))
        };
        private(path, keyhold_kms::private_files::ensure_private_file)?;
        for suffix in ["-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            private(Path::new(&side), keyhold_kms::private_files::tighten_if_exists)?;
        }
        let p = path.to_path_buf();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, SqlError> {
            let c = Connection::open(&p).map_err(map_err)?;
            // The busy timeout first: switching to WAL takes a lock, and a database another
            // process is writing (a second node, `keyhold` tools) must wait for it, not fail
            // at once with "database is locked".
            c.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")
                .map_err(map_err)?;
            // Checkpoint once the WAL holds 64 MiB, not SQLite's 4 MiB (issue 18): the audit
            // log's large commits (and the resource index's fills, `audit_index`, one page per
            // key used) each touch thousands of pages, so at 4 MiB every such commit is followed
            // by a checkpoint that writes them all into the file again; at 64 MiB a page
            // rewritten by several commits is copied once.
            // A checkpoint runs after the commit that passes the threshold, so the WAL can grow
            // past it by a commit; once reset it is truncated back to the threshold's size.
            c.execute_batch(&format!(
                "PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}; PRAGMA journal_size_limit = {};",
                u64::from(WAL_AUTOCHECKPOINT_PAGES) * 4096
            ))
            .map_err(map_err)?;
            Ok(c)
        })
        .await
        .map_err(|e| SqlError::Unavailable(e.to_string()))??;
        let schema = schema::ddl(crate::sql::Dialect::Sqlite, true);
        Self::init(conn, path.display().to_string(), schema, schema::SQLITE_TRIGGERS).await
    }

    /// Opens an existing database file read-only, without migrating it (for `keyhold audit
    /// verify`, which must work on a copy, with a read-only role, and change nothing).
    pub async fn open_file_read_only(path: &Path) -> Result<Self, SqlError> {
        let p = path.to_path_buf();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, SqlError> {
            let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let c = Connection::open_with_flags(&p, flags).map_err(map_err)?;
            c.execute_batch("PRAGMA busy_timeout = 5000;").map_err(map_err)?;
            Ok(c)
        })
        .await
        .map_err(|e| SqlError::Unavailable(e.to_string()))??;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            turn: Arc::new(tokio::sync::Mutex::new(())),
            label: path.display().to_string(),
        })
    }

    /// The `meta` value `key` of the database file at `path`, read without creating, migrating
    /// or changing anything; `None` if the file, its schema or the value does not exist. `keyhold
    /// serve` reads the root key fingerprint with it before it would create a root key
    /// (finding 8: never a new root key next to data sealed under another).
    pub async fn stored_meta(path: &Path, key: &str) -> Result<Option<String>, SqlError> {
        if !path.exists() {
            return Ok(None);
        }
        let p = path.to_path_buf();
        let key = key.to_string();
        tokio::task::spawn_blocking(move || -> Result<Option<String>, SqlError> {
            // Read-write (never creating): a read-only connection to a WAL database creates
            // its -wal and -shm and cannot remove them, so a start refused after this read
            // left them behind; the last read-write connection removes them on close.
            // Nothing is written. The caller holds the data directory's lock.
            let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let c = Connection::open_with_flags(&p, flags).map_err(map_err)?;
            c.execute_batch("PRAGMA busy_timeout = 5000;").map_err(map_err)?;
            let has_meta: bool = c
                .query_row("SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'meta'", [], |r| {
                    r.get(0)
                })
                .map_err(map_err)?;
            if !has_meta {
                return Ok(None);
            }
            match c.query_row(schema::META_GET, [key], |r| r.get::<_, String>(0)) {
                Ok(v) => Ok(Some(v)),
                Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
                Err(e) => Err(map_err(e)),
            }
        })
        .await
        .map_err(|e| SqlError::Unavailable(e.to_string()))?
    }

    /// A private in-memory database: same schema, same statements, nothing on disk.
    pub async fn open_in_memory() -> Result<Self, SqlError> {
        let conn = Connection::open_in_memory().map_err(map_err)?;
        let schema = schema::ddl(crate::sql::Dialect::Sqlite, false);
        Self::init(conn, ":memory:".into(), schema, schema::SQLITE_IN_MEMORY_TRIGGERS).await
    }

    async fn init(conn: Connection, label: String, ddl: String, triggers: &'static str) -> Result<Self, SqlError> {
        conn.execute_batch("PRAGMA secure_delete = ON; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;")
            .map_err(map_err)?;
        let db = Self { conn: Arc::new(Mutex::new(conn)), turn: Arc::new(tokio::sync::Mutex::new(())), label };
        db.migrate(ddl, triggers).await?;
        Ok(db)
    }

    async fn migrate(&self, ddl: String, triggers: &'static str) -> Result<(), SqlError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || -> Result<(), SqlError> {
            let mut c = conn.lock().unwrap_or_else(|e| e.into_inner());
            // IMMEDIATE: the write lock is taken (waiting for the busy timeout) before the schema
            // is read. A deferred transaction would read first, and if another connection wrote
            // meanwhile, SQLite refuses its upgrade to a writer at once ("database is locked")
            // without waiting: a second process opening a busy database failed at random.
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(map_err)?;
            tx.execute_batch(&ddl).map_err(map_err)?;
            tx.execute_batch(triggers).map_err(map_err)?;
            tx.execute(schema::META_INSERT, ("schema_version", schema::SCHEMA_VERSION.to_string())).map_err(map_err)?;
            let v: String = tx.query_row(schema::META_GET, ["schema_version"], |r| r.get(0)).map_err(map_err)?;
            if v.parse::<i64>().unwrap_or(i64::MAX) > schema::SCHEMA_VERSION {
                return Err(SqlError::Corrupt(format!(
                    "the database has schema version {v}, newer than this build knows ({}); upgrade Keyhold",
                    schema::SCHEMA_VERSION
                )));
            }
            tx.execute(schema::SCHEMA_VERSION_UPDATE, (schema::SCHEMA_VERSION.to_string(), schema::SCHEMA_VERSION))
                .map_err(map_err)?;
            tx.commit().map_err(map_err)
        })
        .await
        .map_err(|e| SqlError::Unavailable(e.to_string()))?
    }

    async fn conn(&self, transaction: bool) -> Result<Box<dyn SqlConn>, SqlError> {
        let guard = self.turn.clone().lock_owned().await;
        // BEGIN is sent with the first statement, saving a thread hop per transaction.
        let c = SqliteConn {
            conn: self.conn.clone(),
            _turn: guard,
            open_tx: transaction,
            begin_pending: transaction,
            dropped: Arc::new(AtomicBool::new(false)),
        };
        Ok(Box::new(c))
    }
}

struct SqliteConn {
    conn: Arc<Mutex<Connection>>,
    _turn: tokio::sync::OwnedMutexGuard<()>,
    open_tx: bool,
    begin_pending: bool,
    /// Set when the connection is dropped. Blocking work still queued then (its request was
    /// cancelled) must not run: it would act outside the transaction that was rolled back.
    dropped: Arc<AtomicBool>,
}

/// `$1` to `$16`, so that binding the usual statement allocates no names.
const PARAM_NAMES: [&str; 16] =
    ["$1", "$2", "$3", "$4", "$5", "$6", "$7", "$8", "$9", "$10", "$11", "$12", "$13", "$14", "$15", "$16"];

fn bind(stmt: &mut rusqlite::Statement<'_>, params: &[Value]) -> rusqlite::Result<()> {
    for (i, p) in params.iter().enumerate() {
        // Statements are written with PostgreSQL's `$N`. SQLite treats `$N` as a *named*
        // parameter, numbered in order of first appearance, so look each one up by name.
        let idx = match PARAM_NAMES.get(i) {
            Some(name) => stmt.parameter_index(name)?,
            None => stmt.parameter_index(&format!("${}", i + 1))?,
        };
        let Some(idx) = idx else { continue };
        match p {
            Value::Null | Value::OptInt(None) | Value::OptBlob(None) => {
                stmt.raw_bind_parameter(idx, rusqlite::types::Null)?
            }
            Value::Int(v) | Value::OptInt(Some(v)) => stmt.raw_bind_parameter(idx, v)?,
            Value::Text(t) => stmt.raw_bind_parameter(idx, t.as_str())?,
            Value::OptBlob(Some(b)) => stmt.raw_bind_parameter(idx, b.as_slice())?,
        }
    }
    Ok(())
}

fn run(conn: &Connection, sql: &str, params: &[Value], want_rows: bool) -> rusqlite::Result<(Vec<Row>, u64)> {
    let mut stmt = conn.prepare_cached(sql)?;
    bind(&mut stmt, params)?;
    if !want_rows {
        let n = stmt.raw_execute()?;
        return Ok((Vec::new(), n as u64));
    }
    let cols = stmt.column_count();
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let mut row = Vec::with_capacity(cols);
        for i in 0..cols {
            row.push(match r.get_ref(i)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(v) => Value::Int(v),
                ValueRef::Real(v) => Value::Int(v as i64),
                ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => Value::OptBlob(Some(b.to_vec())),
            });
        }
        out.push(row);
    }
    Ok((out, 0))
}

impl SqliteConn {
    async fn call(
        &mut self,
        sql: &'static str,
        params: Vec<Value>,
        want_rows: bool,
    ) -> Result<(Vec<Row>, u64), SqlError> {
        self.blocking(move |c| run(c, sql, &params, want_rows).map_err(map_err)).await
    }

    /// Runs `f` on the connection on the blocking pool, sending a pending BEGIN first; refuses
    /// to run if the connection was dropped (request cancelled) before `f` got its turn.
    async fn blocking<R: Send + 'static>(
        &mut self,
        f: impl FnOnce(&Connection) -> Result<R, SqlError> + Send + 'static,
    ) -> Result<R, SqlError> {
        let conn = self.conn.clone();
        let dropped = self.dropped.clone();
        let begin = std::mem::take(&mut self.begin_pending);
        tokio::task::spawn_blocking(move || {
            let c = conn.lock().unwrap_or_else(|e| e.into_inner());
            if dropped.load(Ordering::Acquire) {
                return Err(SqlError::Unavailable("request cancelled".into()));
            }
            if begin {
                c.execute_batch("BEGIN IMMEDIATE").map_err(map_err)?;
            }
            f(&c)
        })
        .await
        .map_err(|e| SqlError::Unavailable(e.to_string()))?
    }
}

#[async_trait]
impl SqlConn for SqliteConn {
    async fn query(&mut self, sql: &'static str, params: Vec<Value>) -> Result<Vec<Row>, SqlError> {
        Ok(self.call(sql, params, true).await?.0)
    }
    async fn execute(&mut self, sql: &'static str, params: Vec<Value>) -> Result<u64, SqlError> {
        Ok(self.call(sql, params, false).await?.1)
    }
    async fn execute_many(&mut self, statements: Vec<(&'static str, Vec<Value>)>) -> Result<(), SqlError> {
        self.blocking(move |c| {
            for (sql, params) in &statements {
                run(c, sql, params, false).map_err(map_err)?;
            }
            Ok(())
        })
        .await
    }
    async fn execute_many_and_commit(
        mut self: Box<Self>,
        mut statements: Vec<(&'static str, Vec<Value>)>,
    ) -> Result<(), SqlError> {
        statements.push(("COMMIT", vec![]));
        self.execute_many(statements).await?;
        self.open_tx = false;
        Ok(())
    }
    async fn query_then_commit(
        mut self: Box<Self>,
        sql: &'static str,
        params: Vec<Value>,
        then: ThenStatements,
    ) -> Result<(), SqlError> {
        self.blocking(move |c| {
            let (rows, _) = run(c, sql, &params, true).map_err(map_err)?;
            for (sql, params) in then(rows)? {
                run(c, sql, &params, false).map_err(map_err)?;
            }
            run(c, "COMMIT", &[], false).map_err(map_err).map(|_| ())
        })
        .await?;
        // Until here a failure leaves `open_tx` set, and dropping the connection rolls back.
        self.open_tx = false;
        Ok(())
    }
    async fn commit(mut self: Box<Self>) -> Result<(), SqlError> {
        if self.begin_pending {
            // Nothing was run: nothing to commit.
            self.begin_pending = false;
            self.open_tx = false;
            return Ok(());
        }
        self.execute("COMMIT", vec![]).await?;
        self.open_tx = false;
        Ok(())
    }
}

impl Drop for SqliteConn {
    fn drop(&mut self) {
        // Work still queued must not run (see `dropped`). Set before taking the lock: a task
        // that already holds it finishes first, and is then rolled back below.
        self.dropped.store(true, Ordering::Release);
        if self.open_tx {
            // Not committed (an error, or the request was cancelled): roll back before the next
            // transaction gets the connection. Rollback does no fsync, so blocking here is brief.
            let c = self.conn.lock().unwrap_or_else(|e| e.into_inner());
            if !c.is_autocommit() {
                let _ = c.execute_batch("ROLLBACK");
            }
        }
    }
}

#[async_trait]
impl SqlBackend for Sqlite {
    fn dialect(&self) -> crate::sql::Dialect {
        crate::sql::Dialect::Sqlite
    }

    async fn begin(&self) -> Result<Box<dyn SqlConn>, SqlError> {
        self.conn(true).await
    }
    async fn read(&self) -> Result<Box<dyn SqlConn>, SqlError> {
        self.conn(false).await
    }
    fn serializes_transactions(&self) -> bool {
        true
    }
    async fn after_erase(&self) {
        // With secure_delete the main file no longer holds the old bytes once the page is
        // written back; copy the WAL back and truncate it so no older frame survives either.
        let _turn = self.turn.lock().await;
        let conn = self.conn.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let c = conn.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
                tracing::warn!(error = %e, "WAL checkpoint after key erasure failed");
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_is_opened_durable_in_wal_mode_with_a_64_mib_checkpoint_threshold() {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open_file(&dir.path().join("k.db")).await.unwrap();
        let c = db.conn.lock().unwrap();
        let pragma = |name: &str| -> String {
            c.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, rusqlite::types::Value>(0))
                .map(|v| match v {
                    rusqlite::types::Value::Integer(i) => i.to_string(),
                    rusqlite::types::Value::Text(t) => t,
                    other => format!("{other:?}"),
                })
                .unwrap()
        };
        assert_eq!(pragma("journal_mode"), "wal");
        assert_eq!(pragma("synchronous"), "2", "FULL");
        assert_eq!(pragma("wal_autocheckpoint"), WAL_AUTOCHECKPOINT_PAGES.to_string());
        assert_eq!(pragma("journal_size_limit"), (64 << 20).to_string());
        assert_eq!(u64::from(WAL_AUTOCHECKPOINT_PAGES) * 4096, 64 << 20);
        assert_eq!(pragma("page_size"), "4096", "the threshold's size assumes SQLite's default page");
    }
}
