//! The store's persistence boundary; `keyhold-storage` implements it for SQLite and PostgreSQL
//! in the same database as the KMS (or the store's own, when it runs apart).

use async_trait::async_trait;
use keyhold_api::wire::Timestamp;
use keyhold_cmek::WrappedKek;
pub use keyhold_kms::store::StoreError as RepoError;

use crate::model::{InstanceRecord, KekRecord, ObjectRecord, StoredChunk};

/// Where the store keeps instances, KEKs, object metadata and sealed chunks.
#[async_trait]
pub trait StoreRepository: Send + Sync + std::fmt::Debug {
    /// Creates an instance with its first KEK; `AlreadyExists` if the name is taken.
    async fn insert_instance(&self, instance: &InstanceRecord, kek: &KekRecord) -> Result<(), RepoError>;
    /// An instance by name.
    async fn instance(&self, name: &str) -> Result<Option<InstanceRecord>, RepoError>;
    /// Instances under `projects/P/locations/L`, by name.
    async fn list_instances(&self, parent: &str) -> Result<Vec<InstanceRecord>, RepoError>;
    /// Every instance under the customer key `key`, by name ([K12]).
    async fn instances_by_key(&self, key: &str) -> Result<Vec<InstanceRecord>, RepoError>;
    /// Deletes an instance with its KEKs, objects and chunks; returns whether it existed.
    async fn delete_instance(&self, name: &str) -> Result<bool, RepoError>;

    /// An instance's KEKs.
    async fn keks(&self, instance: &str) -> Result<Vec<KekRecord>, RepoError>;
    /// Adds a KEK.
    async fn insert_kek(&self, instance: &str, kek: &KekRecord) -> Result<(), RepoError>;
    /// Stores a KEK's new wrapping (`:rewrap`).
    async fn update_kek(&self, instance: &str, id: u64, wrapped: &WrappedKek) -> Result<(), RepoError>;
    /// Deletes a KEK unless some object still uses it; returns whether it was deleted.
    async fn delete_kek_if_unused(&self, instance: &str, id: u64) -> Result<bool, RepoError>;

    /// Records an upload in progress (so that an interrupted one can be cleaned up).
    async fn begin_upload(
        &self,
        instance: &str,
        object: &str,
        generation: u64,
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
    async fn commit_upload(
        &self,
        instance: &str,
        object: &ObjectRecord,
        first_index: u64,
        last_chunks: &[StoredChunk],
        expected_generation: Option<u64>,
    ) -> Result<(), RepoError>;
    /// Deletes an unfinished upload's chunks and record.
    async fn abort_upload(&self, instance: &str, object: &str, generation: u64) -> Result<(), RepoError>;
    /// Uploads begun before `before` and never finished: (instance, object, generation).
    async fn stale_uploads(&self, before: Timestamp) -> Result<Vec<(String, String, u64)>, RepoError>;

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
    /// Deletes an object and its chunks; returns whether it existed.
    async fn delete_object(&self, instance: &str, name: &str) -> Result<bool, RepoError>;
    /// One chunk of an object generation.
    async fn chunk(
        &self,
        instance: &str,
        object: &str,
        generation: u64,
        index: u64,
    ) -> Result<Option<StoredChunk>, RepoError>;
}
