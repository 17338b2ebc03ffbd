//! The persistence boundary of the KMS domain.
//!
//! `keyhold-sql` implements [`KmsRepository`] for SQLite and PostgreSQL with the same schema and
//! the same behaviour. Records carry a `revision`: updates are compare-and-set on it, so two
//! nodes (or two requests) changing the same key serialize instead of losing an update.

use async_trait::async_trait;
use keyhold_api::iam::Policy;
use keyhold_api::resources::{
    CryptoKey, CryptoKeyVersion, ImportJob, KeyRing, Operation, RetiredResource, VersionState,
};
use keyhold_api::wire::Timestamp;
use keyhold_api::{CryptoKeyName, CryptoKeyVersionName, ImportJobName, KeyRingName, LocationName};

use keyhold_audit::{AuditRecord, EncodedRecord, StoredAuditEntry};

use crate::material::VersionMaterial;

/// Store failures, classified by kind (never by message).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RepoError {
    /// A row with this primary key exists.
    #[error("already exists")]
    AlreadyExists,
    /// Compare-and-set lost: the row changed since it was read (or is gone).
    #[error("concurrent modification")]
    Conflict,
    /// The database cannot be reached or refused the operation transiently.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Stored data cannot be decoded.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// A crypto key as stored: the resource (without `primary`, which is derived) plus the
/// bookkeeping the domain needs.
#[derive(Debug, Clone)]
pub struct CryptoKeyRecord {
    /// The key's name.
    pub name: CryptoKeyName,
    /// The resource as returned to clients, `primary` left empty.
    pub key: CryptoKey,
    /// The primary version's ID, if any.
    pub primary_version: Option<u64>,
    /// Compare-and-set revision (set by the store).
    pub revision: i64,
}

/// An import job as stored: the resource as clients see it (its state as of creation; the
/// domain derives `EXPIRED` from `expireTime`) and the private half of its wrapping key, sealed
/// by the root key (`None` once the job has expired: the store erases it).
#[derive(Clone)]
pub struct ImportJobRecord {
    /// The job's name.
    pub name: ImportJobName,
    /// The resource.
    pub job: ImportJob,
    /// The wrapping key's private material, sealed (an envelope of the root key).
    pub wrapping_key: Option<Vec<u8>>,
}

impl std::fmt::Debug for ImportJobRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportJobRecord")
            .field("name", &self.name.to_string())
            .field("job", &self.job)
            .finish_non_exhaustive()
    }
}

/// A crypto key version as stored.
#[derive(Clone)]
pub struct VersionRecord {
    /// The version's name.
    pub name: CryptoKeyVersionName,
    /// The resource as returned to clients.
    pub version: CryptoKeyVersion,
    /// Key material in its protection level's at-rest form (SOFTWARE: sealed by the root key;
    /// HSM: the token object's reference; EXTERNAL: the key's URI). [`VersionMaterial::Erased`]
    /// once destroyed: the store overwrites it.
    pub material: VersionMaterial,
    /// Compare-and-set revision (set by the store).
    pub revision: i64,
}

impl VersionRecord {
    /// When the scheduler must next act on this version, the time stores index: a
    /// `DESTROY_SCHEDULED` version at its `destroyTime` (to destroy it), a `PENDING_GENERATION`
    /// one from its `createTime` (to generate its key and enable it); otherwise never.
    pub fn due_time(&self) -> Option<Timestamp> {
        match self.version.state {
            Some(VersionState::PendingGeneration) => self.version.create_time,
            _ => self.version.destroy_time,
        }
    }
}

impl std::fmt::Debug for VersionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionRecord")
            .field("name", &self.name.to_string())
            .field("version", &self.version)
            .field("material", &self.material)
            .field("revision", &self.revision)
            .finish()
    }
}

/// What one write changed, as the change log records it for the other nodes' caches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A crypto key or one of its versions (created, updated, rotated, destroyed, ...).
    Key(CryptoKeyName),
    /// A key ring was created (no cache holds key rings).
    KeyRing(String),
    /// An import job was created (no cache holds import jobs).
    ImportJob(String),
    /// A project was recorded (caches hold only projects known to exist).
    Project(String),
    /// The IAM policy held by this resource.
    Policy(String),
    /// A bearer token was revoked (the change log does not say which: readers drop every
    /// cached token).
    Tokens,
    /// A bearer token was minted: nothing cached holds a token not yet known, so readers drop
    /// nothing.
    TokenMinted,
    /// Anything else (an org policy, a service identity, server metadata): readers drop every
    /// cache, as for a kind they do not know.
    Other,
}

impl Change {
    /// The change log's `(kind, resource)` columns.
    pub fn to_columns(&self) -> (&'static str, String) {
        match self {
            Change::Key(k) => ("key", k.to_string()),
            Change::KeyRing(r) => ("key_ring", r.clone()),
            Change::ImportJob(j) => ("import_job", j.clone()),
            Change::Project(p) => ("project", p.clone()),
            Change::Policy(r) => ("policy", r.clone()),
            Change::Tokens => ("tokens", String::new()),
            Change::TokenMinted => ("token_minted", String::new()),
            Change::Other => ("other", String::new()),
        }
    }

    /// From the change log's columns; an unknown kind, or a key name that does not parse (a
    /// newer node's entry), is [`Change::Other`].
    pub fn from_columns(kind: &str, resource: &str) -> Self {
        match kind {
            "key" => resource.parse().map_or(Change::Other, Change::Key),
            "key_ring" => Change::KeyRing(resource.to_string()),
            "import_job" => Change::ImportJob(resource.to_string()),
            "project" => Change::Project(resource.to_string()),
            "policy" => Change::Policy(resource.to_string()),
            "tokens" => Change::Tokens,
            "token_minted" => Change::TokenMinted,
            _ => Change::Other,
        }
    }
}

/// How many change-log entries a backend keeps at least; a node that falls further behind
/// (it was stopped, or the database was busy) drops every cache instead.
pub const CHANGE_LOG_KEPT: i64 = 4096;

/// Persistence for the KMS. Every mutating method also advances the store-wide change counter
/// ([`KmsRepository::change_counter`]) in the same transaction, except [`KmsRepository::append_audit`]
/// (audit entries are never cached, so appending them invalidates nothing).
///
/// `crates/keyhold-sql/tests/conformance.rs` checks these contracts on every backend.
#[async_trait]
pub trait KmsRepository: Send + Sync + std::fmt::Debug + 'static {
    /// Inserts a key ring; [`RepoError::AlreadyExists`] if the name is taken.
    ///
    /// Every method that changes something takes the audit entry of that change and appends it
    /// in the same transaction ([K10]).
    async fn insert_key_ring(&self, name: &KeyRingName, ring: &KeyRing, audit: &AuditRecord) -> Result<(), RepoError>;
    /// A key ring by name.
    async fn key_ring(&self, name: &KeyRingName) -> Result<Option<KeyRing>, RepoError>;
    /// Up to `limit` key rings of a location whose names follow `after` ("" for the first), by
    /// name: one index range, wherever the page is.
    async fn list_key_rings(&self, parent: &LocationName, after: &str, limit: i64) -> Result<Vec<KeyRing>, RepoError>;
    /// How many key rings a location has.
    async fn count_key_rings(&self, parent: &LocationName) -> Result<i64, RepoError>;

    /// Inserts an import job; [`RepoError::AlreadyExists`] if the name is taken.
    async fn insert_import_job(&self, record: &ImportJobRecord, audit: &AuditRecord) -> Result<(), RepoError>;
    /// Reads an import job.
    async fn import_job(&self, name: &ImportJobName) -> Result<Option<ImportJobRecord>, RepoError>;
    /// Import jobs of a key ring by name, after `after` ("" for the first).
    async fn list_import_jobs(
        &self,
        parent: &KeyRingName,
        after: &str,
        limit: i64,
    ) -> Result<Vec<ImportJobRecord>, RepoError>;
    /// How many import jobs a key ring has.
    async fn count_import_jobs(&self, parent: &KeyRingName) -> Result<i64, RepoError>;
    /// Erases the wrapping keys of the jobs that have expired by `now`; how many it erased.
    async fn erase_expired_wrapping_keys(&self, now: Timestamp) -> Result<u64, RepoError>;
    /// Inserts an imported version (never primary) with the fingerprint of its material, in
    /// one transaction.
    async fn insert_imported_version(
        &self,
        version: &VersionRecord,
        fingerprint: &str,
        audit: &AuditRecord,
    ) -> Result<(), RepoError>;
    /// The fingerprint of the material imported into a version, if it was imported.
    async fn import_fingerprint(&self, version: &CryptoKeyVersionName) -> Result<Option<String>, RepoError>;

    /// Deletes a version as read at `version.revision` ([`RepoError::Conflict`] if it changed
    /// or is gone); the key loses it as its primary; records `operation`, finished.
    async fn delete_version(
        &self,
        version: &VersionRecord,
        operation: &Operation,
        audit: &AuditRecord,
    ) -> Result<(), RepoError>;
    /// Deletes a key as read at `key.revision` that has no versions left
    /// ([`RepoError::Conflict`] otherwise), with its IAM policy; records `retired`, whose name
    /// no key may take again, and `operation`, finished.
    async fn delete_crypto_key(
        &self,
        key: &CryptoKeyRecord,
        retired: &RetiredResource,
        operation: &Operation,
        audit: &AuditRecord,
    ) -> Result<(), RepoError>;
    /// A retired resource by its name.
    async fn retired_resource(&self, name: &str) -> Result<Option<RetiredResource>, RepoError>;
    /// The retired resource a deleted key left, by the key's name.
    async fn retired_resource_of(&self, original: &str) -> Result<Option<RetiredResource>, RepoError>;
    /// Retired resources of a location by name, after `after` ("" for the first).
    async fn list_retired_resources(
        &self,
        location: &LocationName,
        after: &str,
        limit: i64,
    ) -> Result<Vec<RetiredResource>, RepoError>;
    /// How many retired resources a location has.
    async fn count_retired_resources(&self, location: &LocationName) -> Result<i64, RepoError>;
    /// A Cloud KMS long-running operation by name.
    async fn kms_operation(&self, name: &str) -> Result<Option<Operation>, RepoError>;

    /// Inserts a crypto key and, atomically with it, its first version (which then is its
    /// primary). [`RepoError::AlreadyExists`] if the name is taken.
    async fn insert_crypto_key(
        &self,
        key: &CryptoKeyRecord,
        first: Option<&VersionRecord>,
        audit: &AuditRecord,
    ) -> Result<(), RepoError>;
    /// A crypto key by name.
    async fn crypto_key(&self, name: &CryptoKeyName) -> Result<Option<CryptoKeyRecord>, RepoError>;
    /// Up to `limit` crypto keys of a key ring whose names follow `after` ("" for the first), by
    /// name, each with its primary version (read in the same statement).
    async fn list_crypto_keys(
        &self,
        parent: &KeyRingName,
        after: &str,
        limit: i64,
    ) -> Result<Vec<(CryptoKeyRecord, Option<VersionRecord>)>, RepoError>;
    /// How many crypto keys a key ring has.
    async fn count_crypto_keys(&self, parent: &KeyRingName) -> Result<i64, RepoError>;
    /// Replaces a crypto key if its revision is still `key.revision`; returns the new revision.
    async fn update_crypto_key(&self, key: &CryptoKeyRecord, audit: &AuditRecord) -> Result<i64, RepoError>;

    /// Reserves the next version ID of a key (1, 2, ...; never handed out twice).
    async fn allocate_version_id(&self, key: &CryptoKeyName) -> Result<u64, RepoError>;
    /// Inserts a version; with `make_primary`, also makes it the key's primary in the same
    /// transaction.
    async fn insert_version(
        &self,
        version: &VersionRecord,
        make_primary: bool,
        audit: &AuditRecord,
    ) -> Result<(), RepoError>;
    /// A version by name.
    async fn version(&self, name: &CryptoKeyVersionName) -> Result<Option<VersionRecord>, RepoError>;
    /// Up to `limit` versions of a key with IDs above `after` (0 for the first), by version ID.
    async fn list_versions(&self, key: &CryptoKeyName, after: u64, limit: i64)
    -> Result<Vec<VersionRecord>, RepoError>;
    /// How many versions a key has.
    async fn count_versions(&self, key: &CryptoKeyName) -> Result<i64, RepoError>;
    /// Every version of every key, by name (for reconciling an HSM token with the database:
    /// `keyhold hsm reconcile`; not for request paths).
    async fn list_all_versions(&self) -> Result<Vec<VersionRecord>, RepoError>;
    /// Replaces a version if its revision is still `version.revision`; returns the new revision.
    /// When `material` becomes `None` the old bytes are overwritten, not merely unlinked.
    async fn update_version(&self, version: &VersionRecord, audit: &AuditRecord) -> Result<i64, RepoError>;

    /// Versions whose [`VersionRecord::due_time`] is at or before `now`: the scheduler's work.
    async fn versions_due(&self, now: Timestamp) -> Result<Vec<CryptoKeyVersionName>, RepoError>;
    /// Keys whose `nextRotationTime` is at or before `now`.
    async fn keys_due_for_rotation(&self, now: Timestamp) -> Result<Vec<CryptoKeyName>, RepoError>;

    /// A number that changes whenever anything in the store changes (used to invalidate caches
    /// of nodes sharing the database): the sequence number of the last [`Change`].
    async fn change_counter(&self) -> Result<i64, RepoError>;
    /// What changed after sequence number `after`, in order, at most `limit` entries: each
    /// mutating method records its [`Change`] under the change counter's new value, in its own
    /// transaction, so the log has no gaps. Old entries are pruned (the log keeps at least the
    /// last [`CHANGE_LOG_KEPT`]); a reader that finds the entry after `after` gone must assume
    /// anything changed.
    async fn changes_since(&self, after: i64, limit: i64) -> Result<Vec<(i64, Change)>, RepoError>;
    /// Sets a metadata value unless one is set; returns the value now stored.
    async fn meta_set_if_absent(&self, key: &str, value: &str) -> Result<String, RepoError>;

    // ---- IAM ([K8]) --------------------------------------------------------------------------

    /// The IAM policy set on `resource`, if one was ever set.
    async fn policy(&self, resource: &str) -> Result<Option<PolicyRecord>, RepoError>;
    /// Stores a policy. With `expected_revision` `Some(r)` only if the stored revision is still
    /// `r` (0: no policy yet), else [`RepoError::Conflict`]; with `None` unconditionally.
    /// Returns the new revision.
    async fn set_policy(
        &self,
        resource: &str,
        policy: &Policy,
        expected_revision: Option<i64>,
        audit: &AuditRecord,
    ) -> Result<i64, RepoError>;

    // ---- projects, tokens, service identities ---------------------------------------------------

    /// A project by ID.
    async fn project(&self, project_id: &str) -> Result<Option<ProjectRecord>, RepoError>;
    /// Inserts a project; [`RepoError::AlreadyExists`] if the ID or the number is taken.
    async fn insert_project(&self, project: &ProjectRecord) -> Result<(), RepoError>;
    /// Inserts a bearer token (its hash; the token itself is never stored).
    async fn insert_token(&self, token: &TokenRecord, audit: &AuditRecord) -> Result<(), RepoError>;
    /// A token by the hash of its secret.
    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, RepoError>;
    /// All tokens, newest first.
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, RepoError>;
    /// Marks a token revoked at `when`; returns whether a live token with that ID existed.
    async fn revoke_token(&self, id: &str, when: Timestamp, audit: &AuditRecord) -> Result<bool, RepoError>;
    /// Inserts a service identity; [`RepoError::AlreadyExists`] if the project already has one
    /// for that service.
    async fn insert_service_identity(
        &self,
        identity: &ServiceIdentityRecord,
        audit: &AuditRecord,
    ) -> Result<(), RepoError>;
    /// The identity of `service` in `project`.
    async fn service_identity(
        &self,
        project_id: &str,
        service: &str,
    ) -> Result<Option<ServiceIdentityRecord>, RepoError>;
    /// A service identity by its email.
    async fn service_identity_by_email(&self, email: &str) -> Result<Option<ServiceIdentityRecord>, RepoError>;

    // ---- audit log ([K10]) -----------------------------------------------------------------------

    /// Appends entries to the chain, in order, in one transaction (each stored as its JSON
    /// is, serialized once by whoever made it).
    async fn append_audit(&self, entries: &[EncodedRecord]) -> Result<(), RepoError>;
    /// Appends entries moved from this node's audit journal `journal` (see
    /// `keyhold_audit::journal`) and records, in the same transaction, that its entries up to
    /// number `through` are in the log: a replay after a crash appends exactly the rest.
    async fn append_journaled_audit(
        &self,
        entries: &[EncodedRecord],
        journal: &str,
        through: i64,
    ) -> Result<(), RepoError>;
    /// How far journal `journal` has been appended (0: not at all).
    async fn audit_journal_through(&self, journal: &str) -> Result<i64, RepoError>;
    /// Entries matching `query` with their positions (the stored time and `seq` that page tokens
    /// continue from), in [`AuditPosition`] order (descending if `query.descending`).
    /// Every filter is answered from an index (see `docs/operations.md`), so the cost follows
    /// the page, not the log.
    async fn read_audit(&self, query: &AuditQuery) -> Result<Vec<(AuditPosition, StoredAuditEntry)>, RepoError>;
    /// The chain head as recorded beside the log: the newest entry's `seq` and hash.
    async fn audit_head(&self) -> Result<(i64, String), RepoError>;
    /// Up to `limit` entries with `seq > after`, ascending, for chain verification.
    async fn audit_chain(&self, after: i64, limit: i64) -> Result<Vec<StoredAuditEntry>, RepoError>;

    // ---- organization policies ([C12]) ----------------------------------------------------------

    /// An organization policy by name (`projects/P/policies/C`).
    async fn org_policy(&self, name: &str) -> Result<Option<OrgPolicyRecord>, RepoError>;
    /// A project's organization policies, by name.
    async fn list_org_policies(&self, project: &str) -> Result<Vec<OrgPolicyRecord>, RepoError>;
    /// Creates or replaces a policy; returns the new revision.
    async fn put_org_policy(&self, record: &OrgPolicyRecord, audit: &AuditRecord) -> Result<i64, RepoError>;
    /// Deletes a policy; returns whether it existed.
    async fn delete_org_policy(&self, name: &str, audit: &AuditRecord) -> Result<bool, RepoError>;
}

/// A stored organization policy.
#[derive(Debug, Clone, PartialEq)]
pub struct OrgPolicyRecord {
    /// `projects/P/policies/C`.
    pub name: String,
    /// The project ID.
    pub project: String,
    /// The policy as set (`etag` and the spec's output fields filled on read).
    pub policy: keyhold_api::orgpolicy::OrgPolicy,
    /// Last change.
    pub update_time: Timestamp,
    /// Bumped by every change (the etag).
    pub revision: i64,
}

/// A stored IAM policy.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRecord {
    /// The policy (normalised, without etag).
    pub policy: Policy,
    /// Revision, from which the etag is derived.
    pub revision: i64,
}

/// A project: its ID and the stable number service agents are named after.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectRecord {
    /// `my-project`.
    pub project_id: String,
    /// Twelve digits, fixed at creation.
    pub project_number: i64,
    /// When it was first used.
    pub create_time: Timestamp,
}

/// A bearer token, as stored: never the token, only its hash.
#[derive(Clone, PartialEq)]
pub struct TokenRecord {
    /// Public identifier (used to list and revoke).
    pub id: String,
    /// SHA-256 of the token, hex.
    pub hash: String,
    /// Who the token authenticates.
    pub principal: String,
    /// Free text from the creator.
    pub description: String,
    /// Created at.
    pub create_time: Timestamp,
    /// Not valid from then on.
    pub expire_time: Timestamp,
    /// Revoked at, if revoked.
    pub revoke_time: Option<Timestamp>,
}

impl std::fmt::Debug for TokenRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRecord")
            .field("id", &self.id)
            .field("principal", &self.principal)
            .field("expire_time", &self.expire_time)
            .field("revoke_time", &self.revoke_time)
            .finish_non_exhaustive()
    }
}

/// A service agent of a project ([K9]).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceIdentityRecord {
    /// The project.
    pub project_id: String,
    /// The service, e.g. `store.keyhold.dev`.
    pub service: String,
    /// `service-PROJECT_NUMBER@gcp-sa-NAME.iam.gserviceaccount.com`.
    pub email: String,
    /// A 21-digit ID, as Google gives service accounts.
    pub unique_id: String,
    /// Created at.
    pub create_time: Timestamp,
}

/// An entry's place in the order audit reads return: its time, then its `seq` (entries from
/// several nodes may reach the chain slightly out of time order; reads follow the time, as
/// Cloud Logging does). Pages continue from the last entry's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct AuditPosition {
    /// The entry's time, Unix nanoseconds.
    pub time_nanos: i64,
    /// Its place in the chain.
    pub seq: i64,
}

/// Which audit entries to read, ordered by [`AuditPosition`]. Empty strings match everything.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Project ID; "-" for every project and server-wide entries.
    pub project: String,
    /// Inclusive lower bound, Unix nanoseconds.
    pub start_nanos: i64,
    /// Exclusive upper bound, Unix nanoseconds.
    pub end_nanos: i64,
    /// Exact method name.
    pub method: String,
    /// Exact principal (`user:...`).
    pub principal: String,
    /// Resource-name prefix.
    pub resource_prefix: String,
    /// `activity` or `data_access`; "" for both.
    pub kind: String,
    /// Entries after this position (ascending) or before it (descending); `None` for no bound.
    pub after: Option<AuditPosition>,
    /// Newest first.
    pub descending: bool,
    /// Most entries returned.
    pub limit: i64,
}
