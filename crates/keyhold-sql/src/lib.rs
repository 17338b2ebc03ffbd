//! Storage backends for the KMS: the [`keyhold_kms::repo::KmsRepository`] trait implemented once, in
//! [`SqlStore`], over a minimal SQL connection interface that two drivers provide:
//!
//! * [`sqlite`]: an embedded SQLite file (the default) or an in-memory database (`--in-memory`);
//! * [`postgres`]: a PostgreSQL server shared by any number of Keyhold nodes.
//!
//! Both run the same statements (written with `$1`-style placeholders, which SQLite also
//! accepts) against the same tables, so behaviour cannot drift between them; only the DDL's
//! column types (and SQLite's `WITHOUT ROWID`) and, in the audit reads and the resource index's
//! fills, an index hint (SQLite) or a byte-order collation (PostgreSQL) differ
//! (`schema::AuditRead`, `audit_index`). Concurrency control is compare-and-set on a
//! `revision` column, which works the same on both.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod audit_index;
mod kms_repo;
pub mod postgres;
pub mod postgres_tls;
mod schema;
#[doc(hidden)]
pub mod sql;
pub mod sqlite;
mod store_operations;
mod store_repo;

pub use audit_index::AUDIT_RESOURCE_WINDOW;
pub use kms_repo::SqlStore;
pub use postgres::Postgres;
pub use sqlite::Sqlite;

use std::sync::Arc;

use keyhold_kms::repo::{KmsRepository, RepoError};

/// How many audit entries `keyhold serve --in-memory` keeps unless told otherwise (about 90 MB at
/// the ~0.9 KB an entry takes in memory).
pub const DEFAULT_IN_MEMORY_AUDIT_ENTRIES: u64 = 100_000;

/// Where the KMS keeps its state.
#[derive(Clone)]
pub enum Database {
    /// A SQLite file at this path.
    SqliteFile(std::path::PathBuf),
    /// A private in-memory SQLite database (gone when the process exits) that keeps the newest
    /// `audit_entries` audit entries, so that its memory stays bounded however long it serves.
    InMemory {
        /// How many audit entries to keep (at least 1).
        audit_entries: u64,
    },
    /// A PostgreSQL connection URL (`postgres://user@host:port/db`).
    Postgres(String),
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::SqliteFile(p) => write!(f, "SqliteFile({})", p.display()),
            Database::InMemory { audit_entries } => write!(f, "InMemory(keeping {audit_entries} audit entries)"),
            // The URL may carry a password.
            Database::Postgres(_) => f.write_str("Postgres([redacted url])"),
        }
    }
}

/// Opens an existing database for reading only: no migration, no writes (what `keyhold audit
/// verify` uses, so it works on copies and with read-only credentials).
pub async fn open_read_only(db: &Database) -> Result<Arc<dyn KmsRepository>, RepoError> {
    Ok(match db {
        Database::SqliteFile(path) => Arc::new(SqlStore::new(sqlite::Sqlite::open_file_read_only(path).await?)),
        Database::InMemory { .. } => {
            return Err(RepoError::Unavailable("an in-memory database cannot be opened from outside".into()));
        }
        Database::Postgres(url) => Arc::new(SqlStore::new(postgres::Postgres::connect_without_migration(url).await?)),
    })
}

/// Opens (and migrates) the database.
pub async fn open(db: &Database) -> Result<Arc<dyn KmsRepository>, RepoError> {
    Ok(open_all(db).await?.kms)
}

/// The KMS's store and the object store's repository, over one database.
#[derive(Clone)]
pub struct Opened {
    /// The KMS's state.
    pub kms: Arc<dyn KmsRepository>,
    /// The store's instances, objects and chunks.
    pub objects: Arc<dyn keyhold_store::StoreRepository>,
}

fn both<B: sql::SqlBackend>(store: SqlStore<B>) -> Opened {
    let store = Arc::new(store);
    Opened { kms: store.clone(), objects: store }
}

/// [`both`], for a database with the audit read indexes: its resource index is caught up if
/// the log is more than a window ahead (a log written before the index existed), then filled
/// in the background while the store is open (`audit_index`).
async fn indexed<B: sql::SqlBackend>(store: SqlStore<B>) -> Result<Opened, RepoError> {
    let store = Arc::new(store);
    store.catch_up_resource_index(AUDIT_RESOURCE_WINDOW).await?;
    audit_index::fill_in_background(&store, AUDIT_RESOURCE_WINDOW);
    Ok(Opened { kms: store.clone(), objects: store })
}

/// Opens (and migrates) the database, for the KMS and the store.
pub async fn open_all(db: &Database) -> Result<Opened, RepoError> {
    Ok(match db {
        Database::SqliteFile(path) => indexed(SqlStore::new(sqlite::Sqlite::open_file(path).await?)).await?,
        Database::InMemory { audit_entries } => {
            both(SqlStore::new(sqlite::Sqlite::open_in_memory().await?).keeping_audit_entries(*audit_entries))
        }
        Database::Postgres(url) => indexed(SqlStore::new(postgres::Postgres::connect(url).await?)).await?,
    })
}
