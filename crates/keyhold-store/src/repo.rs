//! The store's persistence boundary; `keyhold-sql` implements it for SQLite and PostgreSQL
//! in the same database as the KMS (or the store's own, when it runs apart).
//!
//! The methods that make a call's change visible take `audit`: the call's success entries
//! (none for the steps of a copy or a cleanup), appended to the audit chain in the same
//! transaction as the change, so that a change is never visible without its entry
//! ([K10], hardening issue #15), as the KMS's own changes are.

use async_trait::async_trait;
use keyhold_api::wire::Timestamp;
use keyhold_audit::AuditRecord;
use keyhold_cmek::WrappedKek;

use crate::error::StoreError;
use crate::model::{BackupRecord, ExportRecord, InstanceRecord, KekRecord, ObjectRecord, OperationRecord, StoredChunk};

/// Repository failures, classified by kind (never by message): what the store decides on.
/// The implementation maps its own errors to these.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RepoError {
    /// A row with this key (a name) exists.
    #[error("already exists")]
    AlreadyExists,
    /// Compare-and-set lost, or what the call needed is gone (see each method).
    #[error("concurrent modification")]
    Conflict,
    /// The database cannot be reached or refused the operation transiently; retry.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Stored data cannot be decoded.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// Where the store keeps instances, KEKs, object metadata and sealed chunks.
#[async_trait]
pub trait StoreRepository: Send + Sync + std::fmt::Debug {
    /// Creates an instance with its first KEK; `AlreadyExists` if the name is taken.
    async fn insert_instance(
        &self,
        instance: &InstanceRecord,
        kek: &KekRecord,
        audit: &[AuditRecord],
    ) -> Result<(), RepoError>;
    /// An instance by name.
    async fn instance(&self, name: &str) -> Result<Option<InstanceRecord>, RepoError>;
    /// Instances under `projects/P/locations/L`, by name.
    async fn list_instances(&self, parent: &str) -> Result<Vec<InstanceRecord>, RepoError>;
    /// Every instance under the customer key `key`, by name ([K12]).
    async fn instances_by_key(&self, key: &str) -> Result<Vec<InstanceRecord>, RepoError>;
    /// Deletes an instance with its KEKs, objects and chunks; returns whether it existed
    /// (`audit` is recorded only if it did).
    async fn delete_instance(&self, name: &str, audit: &[AuditRecord]) -> Result<bool, RepoError>;

    /// Reserves `name` for a resource being built (a restore, clone, import or replica target,
    /// or a backup): its KEKs and objects are written under the name before the resource
    /// appears. `AlreadyExists` if another build holds the name.
    /// The build is `node`'s work until it finishes (see [`StoreRepository::orphaned_work`]).
    async fn begin_pending(&self, name: &str, node: &str, now: Timestamp) -> Result<(), RepoError>;
    /// Makes a built instance appear (and, for a replica, records its primary), ending its
    /// reservation.
    async fn finish_pending_instance(&self, instance: &InstanceRecord, audit: &[AuditRecord]) -> Result<(), RepoError>;
    /// Deletes everything stored under `name` (a failed build, or a backup): KEKs, objects,
    /// chunks, uploads, snapshot pins, the backup row and the name's claim. Only for a name
    /// the caller holds (a build's reservation, or a backup).
    async fn discard(&self, name: &str, audit: &[AuditRecord]) -> Result<(), RepoError>;
    /// Whether one process at most uses this database (SQLite), so that at start every
    /// unfinished upload or build is what a crash left.
    fn single_process(&self) -> bool;
    /// Records that `node` is alive at `now`, and forgets nodes silent since `forget_before`.
    async fn heartbeat(&self, node: &str, now: Timestamp, forget_before: Timestamp) -> Result<(), RepoError>;
    /// Unfinished uploads (instance, object, generation) and builds (names) no live node is
    /// doing: those of another node than `node` whose last heartbeat is before `dead_before`
    /// (or which has none, begun before `dead_before`), and those with no recorded node (an
    /// older build's) begun before `ownerless_before`.
    async fn orphaned_work(
        &self,
        node: &str,
        dead_before: Timestamp,
        ownerless_before: Timestamp,
    ) -> Result<(Vec<(String, String, u64)>, Vec<String>), RepoError>;
    /// How many objects the snapshot `pin` holds.
    async fn count_pinned(&self, pin: &str) -> Result<u64, RepoError>;
    /// How many objects `instance` holds.
    async fn count_objects(&self, instance: &str) -> Result<u64, RepoError>;
    /// Records a long-running operation (running, owned by `record.node`); `AlreadyExists`
    /// if the name is taken.
    async fn insert_operation(&self, record: &OperationRecord) -> Result<(), RepoError>;
    /// An operation by name.
    async fn operation(&self, name: &str) -> Result<Option<OperationRecord>, RepoError>;
    /// Operations under `projects/P/locations/L` named after `after`, by name (oldest first:
    /// names begin with their creation time), at most `limit`.
    async fn list_operations(&self, parent: &str, after: &str, limit: u64) -> Result<Vec<OperationRecord>, RepoError>;
    /// Saves a running operation's progress; returns whether `:cancel` was asked for.
    /// `Conflict` if it is finished or no longer `node`'s (another node took it over after
    /// this one's heartbeat lapsed).
    async fn operation_progress(
        &self,
        name: &str,
        node: &str,
        objects_done: u64,
        objects_total: Option<u64>,
        bytes_done: u64,
    ) -> Result<bool, RepoError>;
    /// Marks a running operation of `node` done with `result`; `Conflict` as for
    /// [`StoreRepository::operation_progress`].
    async fn finish_operation(&self, name: &str, node: &str, result: &str, end: Timestamp) -> Result<(), RepoError>;
    /// Asks a running operation to stop, with `audit` (the cancel call's entry) in the same
    /// transaction; returns false (and records nothing) if it is finished or not there.
    async fn cancel_operation(&self, name: &str, audit: &[AuditRecord]) -> Result<bool, RepoError>;
    /// Takes over the running operations of nodes other than `node` whose heartbeat is older
    /// than `dead_before` (or gone): they become `node`'s, and are returned to be run again.
    async fn claim_operations(&self, node: &str, dead_before: Timestamp) -> Result<Vec<OperationRecord>, RepoError>;
    /// Deletes operations that finished before `before`; returns how many.
    async fn prune_operations(&self, before: Timestamp) -> Result<u64, RepoError>;

    /// Snapshots `instance`'s objects for the copy `pin`: their current generations (chunks
    /// and KEKs) are kept until [`StoreRepository::unpin`], whatever is written meanwhile.
    /// Ordered against concurrent commits, so the snapshot is one point in time.
    async fn pin_objects(&self, instance: &str, pin: &str) -> Result<(), RepoError>;
    /// Up to `limit` objects of the snapshot `pin`, sorting after `after`.
    async fn pinned_objects(&self, pin: &str, after: &str, limit: u64) -> Result<Vec<ObjectRecord>, RepoError>;
    /// Releases the snapshot `pin` of `instance`, deleting the chunks only it still kept.
    async fn unpin(&self, instance: &str, pin: &str) -> Result<(), RepoError>;

    /// Records a backup (state `CREATING`) with its KEK, and reserves its name.
    /// The backup is `node`'s work until it is finished.
    async fn insert_backup(&self, backup: &BackupRecord, kek: &KekRecord, node: &str) -> Result<(), RepoError>;
    /// Marks a backup `READY`, ending its reservation; `Conflict` if it is gone (discarded as
    /// orphaned meanwhile).
    async fn finish_backup(
        &self,
        name: &str,
        size_bytes: u64,
        object_count: u64,
        audit: &[AuditRecord],
    ) -> Result<(), RepoError>;
    /// A backup by name.
    async fn backup(&self, name: &str) -> Result<Option<BackupRecord>, RepoError>;
    /// An instance's backups (also after the instance is deleted), by name.
    async fn list_backups(&self, instance: &str) -> Result<Vec<BackupRecord>, RepoError>;
    /// Every backup under the customer key `key` ([K12]).
    async fn backups_by_key(&self, key: &str) -> Result<Vec<BackupRecord>, RepoError>;

    /// The replicas of a primary, by name.
    async fn replicas_of(&self, primary: &str) -> Result<Vec<String>, RepoError>;
    /// Every replica, by name.
    async fn all_replicas(&self) -> Result<Vec<String>, RepoError>;
    /// For each object of a replica, the primary's generation it is a copy of.
    async fn replica_sources(&self, replica: &str) -> Result<Vec<(String, u64)>, RepoError>;
    /// Records which generation of the primary a replica's object copies.
    async fn set_replica_source(&self, replica: &str, object: &str, generation: u64) -> Result<(), RepoError>;

    /// Records an export written.
    async fn insert_export(&self, export: &ExportRecord, audit: &[AuditRecord]) -> Result<(), RepoError>;
    /// Every export under the customer key `key` whose file is there ([K12]).
    async fn exports_by_key(&self, key: &str) -> Result<Vec<ExportRecord>, RepoError>;

    /// Every export of an instance whose name starts with `prefix` (`projects/P/`, or `""`
    /// for all), with whether its file was found gone.
    async fn exports_under(&self, prefix: &str) -> Result<Vec<(ExportRecord, bool)>, RepoError>;
    /// Records, for each `(export, missing)`, that an export's file is gone (left out of
    /// [`StoreRepository::exports_by_key`]) or there again; all at once, with `audit` (hardening review,
    /// hardening review: a registry change is never visible without its entry).
    async fn set_exports_missing(
        &self,
        changes: &[(String, bool)],
        now: Timestamp,
        audit: &[AuditRecord],
    ) -> Result<(), RepoError>;

    /// An instance's KEKs.
    async fn keks(&self, instance: &str) -> Result<Vec<KekRecord>, RepoError>;
    /// Adds a KEK.
    async fn insert_kek(&self, instance: &str, kek: &KekRecord) -> Result<(), RepoError>;
    /// Stores KEKs' new wrappings (`:rewrap`), all at once.
    async fn update_keks(
        &self,
        instance: &str,
        keks: &[(u64, WrappedKek)],
        audit: &[AuditRecord],
    ) -> Result<(), RepoError>;
    /// Deletes a KEK unless some object still uses it; returns whether it was deleted.
    async fn delete_kek_if_unused(&self, instance: &str, id: u64) -> Result<bool, RepoError>;

    /// Records an upload in progress, `node`'s work (so that an interrupted one can be cleaned
    /// up).
    async fn begin_upload(
        &self,
        instance: &str,
        object: &str,
        generation: u64,
        node: &str,
        now: Timestamp,
    ) -> Result<(), RepoError>;
    /// Stores chunks of an upload in progress.
    async fn put_chunks(
        &self,
        instance: &str,
        object: &str,
        generation: u64,
        first_index: u64,
        chunks: &[StoredChunk],
    ) -> Result<(), RepoError>;
    /// Makes an upload the object's contents, atomically: stores `last_chunks`, replaces the
    /// object's metadata, deletes the previous generation's chunks and the upload record. With
    /// `expected_generation`, only if the object is still at that generation (else `Conflict`).
    /// `Conflict` too if the instance (or backup, or build) was deleted meanwhile, or if the
    /// upload's earlier chunks (`first_index > 0`) are no longer recorded (it was taken for
    /// orphaned and cleaned up).
    async fn commit_upload(
        &self,
        instance: &str,
        object: &ObjectRecord,
        first_index: u64,
        last_chunks: &[StoredChunk],
        expected_generation: Option<u64>,
        audit: &[AuditRecord],
    ) -> Result<(), RepoError>;
    /// Deletes an unfinished upload's chunks and record.
    async fn abort_upload(&self, instance: &str, object: &str, generation: u64) -> Result<(), RepoError>;

    /// An object's metadata.
    async fn object(&self, instance: &str, name: &str) -> Result<Option<ObjectRecord>, RepoError>;
    /// Up to `limit` objects whose names start with `prefix` and sort after `after`.
    async fn list_objects(
        &self,
        instance: &str,
        prefix: &str,
        after: &str,
        limit: u64,
    ) -> Result<Vec<ObjectRecord>, RepoError>;
    /// Deletes an object and its chunks; returns whether it existed (`audit` is recorded only
    /// if it did).
    async fn delete_object(&self, instance: &str, name: &str, audit: &[AuditRecord]) -> Result<bool, RepoError>;
    /// One chunk of an object generation.
    async fn chunk(
        &self,
        instance: &str,
        object: &str,
        generation: u64,
        index: u64,
    ) -> Result<Option<StoredChunk>, RepoError>;
}

/// A repository failure as the store's callers see it: unavailable stays unavailable (503);
/// the rest is an invariant broken below the store (500).
impl From<RepoError> for StoreError {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::Unavailable(m) => StoreError::Unavailable(m),
            other @ (RepoError::AlreadyExists | RepoError::Conflict | RepoError::Corrupt(_)) => {
                StoreError::Internal(other.to_string())
            }
        }
    }
}
