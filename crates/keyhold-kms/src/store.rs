//! The persistence boundary of the KMS domain.
//!
//! `keyhold-storage` implements [`KmsStore`] for SQLite and PostgreSQL with the same schema and
//! the same behaviour. Records carry a `revision`: updates are compare-and-set on it, so two
//! nodes (or two requests) changing the same key serialize instead of losing an update.

use async_trait::async_trait;
use keyhold_api::resources::{CryptoKey, CryptoKeyVersion, KeyRing};
use keyhold_api::wire::Timestamp;
use keyhold_api::{CryptoKeyName, CryptoKeyVersionName, KeyRingName, LocationName};

/// Store failures, classified by kind (never by message).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
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

/// A crypto key version as stored.
#[derive(Clone)]
pub struct VersionRecord {
    /// The version's name.
    pub name: CryptoKeyVersionName,
    /// The resource as returned to clients.
    pub version: CryptoKeyVersion,
    /// Key material in its backend's at-rest form (for SOFTWARE: sealed by the root key).
    /// `None` once destroyed: the store overwrites it.
    pub material: Option<Vec<u8>>,
    /// Compare-and-set revision (set by the store).
    pub revision: i64,
}

impl std::fmt::Debug for VersionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionRecord")
            .field("name", &self.name.to_string())
            .field("version", &self.version)
            .field("material", &self.material.as_ref().map(|_| "[sealed]"))
            .field("revision", &self.revision)
            .finish()
    }
}

/// Persistence for the KMS. Every mutating method also advances the store-wide change counter
/// ([`KmsStore::change_counter`]) in the same transaction.
#[async_trait]
pub trait KmsStore: Send + Sync + std::fmt::Debug + 'static {
    /// Inserts a key ring; [`StoreError::AlreadyExists`] if the name is taken.
    async fn insert_key_ring(&self, name: &KeyRingName, ring: &KeyRing) -> Result<(), StoreError>;
    /// A key ring by name.
    async fn key_ring(&self, name: &KeyRingName) -> Result<Option<KeyRing>, StoreError>;
    /// All key rings of a location, by name.
    async fn list_key_rings(&self, parent: &LocationName) -> Result<Vec<KeyRing>, StoreError>;

    /// Inserts a crypto key and, atomically with it, its first version (which then is its
    /// primary). [`StoreError::AlreadyExists`] if the name is taken.
    async fn insert_crypto_key(&self, key: &CryptoKeyRecord, first: Option<&VersionRecord>) -> Result<(), StoreError>;
    /// A crypto key by name.
    async fn crypto_key(&self, name: &CryptoKeyName) -> Result<Option<CryptoKeyRecord>, StoreError>;
    /// All crypto keys of a key ring, by name.
    async fn list_crypto_keys(&self, parent: &KeyRingName) -> Result<Vec<CryptoKeyRecord>, StoreError>;
    /// Replaces a crypto key if its revision is still `key.revision`; returns the new revision.
    async fn update_crypto_key(&self, key: &CryptoKeyRecord) -> Result<i64, StoreError>;

    /// Reserves the next version ID of a key (1, 2, ...; never handed out twice).
    async fn allocate_version_id(&self, key: &CryptoKeyName) -> Result<u64, StoreError>;
    /// Inserts a version; with `make_primary`, also makes it the key's primary in the same
    /// transaction.
    async fn insert_version(&self, version: &VersionRecord, make_primary: bool) -> Result<(), StoreError>;
    /// A version by name.
    async fn version(&self, name: &CryptoKeyVersionName) -> Result<Option<VersionRecord>, StoreError>;
    /// All versions of a key, by version ID.
    async fn list_versions(&self, key: &CryptoKeyName) -> Result<Vec<VersionRecord>, StoreError>;
    /// Replaces a version if its revision is still `version.revision`; returns the new revision.
    /// When `material` becomes `None` the old bytes are overwritten, not merely unlinked.
    async fn update_version(&self, version: &VersionRecord) -> Result<i64, StoreError>;

    /// `DESTROY_SCHEDULED` versions whose `destroyTime` is at or before `now`.
    async fn versions_due_for_destruction(&self, now: Timestamp) -> Result<Vec<CryptoKeyVersionName>, StoreError>;
    /// Keys whose `nextRotationTime` is at or before `now`.
    async fn keys_due_for_rotation(&self, now: Timestamp) -> Result<Vec<CryptoKeyName>, StoreError>;

    /// A number that changes whenever anything in the store changes (used to invalidate caches
    /// of nodes sharing the database).
    async fn change_counter(&self) -> Result<i64, StoreError>;
    /// Sets a metadata value unless one is set; returns the value now stored.
    async fn meta_set_if_absent(&self, key: &str, value: &str) -> Result<String, StoreError>;
}
