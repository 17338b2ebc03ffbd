//! The store's resources: names, stored records, and their JSON.

use std::collections::BTreeMap;

use keyhold_api::wire::Timestamp;
use keyhold_cmek::{SealedChunk, WrappedKek};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// The service name, as org policies and service agents spell it.
pub const SERVICE: &str = "store.keyhold.dev";

/// `projects/P/locations/L/instances/I`: defined once, in `keyhold-api`, shared with the CLI.
pub use keyhold_api::name::InstanceName;

/// Checks an instance ID: 1-63 characters, lowercase letters, digits and hyphens, starting with
/// a letter (Cloud SQL and Spanner rules).
pub fn check_instance_id(id: &str) -> Result<(), StoreError> {
    let ok = (1..=63).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && !id.ends_with('-')
        && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidArgument(format!(
            "Instance ID \"{id}\" is not valid: use 1 to 63 lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen."
        )))
    }
}

/// Checks an object name: 1-1024 bytes of UTF-8 without control characters, as Cloud Storage.
pub fn check_object_name(name: &str) -> Result<(), StoreError> {
    if name.is_empty() || name.len() > 1024 || name.chars().any(char::is_control) || name == "." || name == ".." {
        return Err(StoreError::InvalidArgument(format!(
            "Object name {name:?} is not valid: use 1 to 1024 bytes of UTF-8 without control characters."
        )));
    }
    Ok(())
}

/// An instance as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRecord {
    /// Its name.
    pub name: InstanceName,
    /// The customer's key; `None` for service-managed encryption. Never changes.
    pub kms_key: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Creation time.
    pub create_time: Timestamp,
    /// The primary this instance is a read replica of ([C10]).
    pub replica_of: Option<String>,
}

/// One KEK of an instance, wrapped.
#[derive(Debug, Clone, PartialEq)]
pub struct KekRecord {
    /// ID within the instance, from 1.
    pub id: u64,
    /// The wrapped KEK.
    pub wrapped: WrappedKek,
    /// When it was made.
    pub create_time: Timestamp,
}

/// An object's metadata as stored (its contents are in chunks).
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectRecord {
    /// The object's name within the instance.
    pub name: String,
    /// The upload that wrote the current contents (bound into every chunk).
    pub generation: u64,
    /// Size in bytes.
    pub size: u64,
    /// Number of chunks (at least 1: an empty object has one empty chunk, so that truncation to
    /// nothing is detected too).
    pub chunk_count: u64,
    /// The KEK that sealed the chunks' DEKs.
    pub kek_id: u64,
    /// `Content-Type` given at upload.
    pub content_type: String,
    /// First upload of this name.
    pub create_time: Timestamp,
    /// This upload.
    pub update_time: Timestamp,
}

/// A chunk as stored.
pub type StoredChunk = SealedChunk;

/// At most this many labels on an instance, as Cloud KMS allows on a key.
pub const MAX_LABELS: usize = 64;

/// Labels as Google Cloud allows them (hardening review; the rule
/// `keyhold-kms`'s `validate::labels` applies to keys, which that crate keeps private): at
/// most 64; keys start with a lowercase letter; keys and values at most 63 characters of
/// lowercase letters, digits, `_` and `-`.
pub fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), StoreError> {
    if labels.len() > MAX_LABELS {
        return Err(StoreError::InvalidArgument(format!(
            "A resource may have at most {MAX_LABELS} labels; {} were given.",
            labels.len()
        )));
    }
    let ok_chars = |s: &str| s.chars().all(|c| c.is_lowercase() || c.is_numeric() || c == '_' || c == '-');
    for (k, v) in labels {
        let starts_ok = k.chars().next().is_some_and(|c| c.is_lowercase());
        if !starts_ok || k.chars().count() > 63 || !ok_chars(k) {
            return Err(StoreError::InvalidArgument(format!(
                "Label key \"{}\" is invalid: it must start with a lowercase letter and contain at most 63 lowercase letters, digits, underscores or dashes.",
                k.chars().take(80).collect::<String>()
            )));
        }
        if v.chars().count() > 63 || !ok_chars(v) {
            return Err(StoreError::InvalidArgument(format!(
                "Label value \"{}\" of key \"{k}\" is invalid: it may contain at most 63 lowercase letters, digits, underscores or dashes.",
                v.chars().take(80).collect::<String>()
            )));
        }
    }
    Ok(())
}

/// Body of `instances.create`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateInstanceRequest {
    /// Output-only fields a client may echo back are accepted and ignored.
    #[serde(default)]
    pub name: String,
    /// The customer's key, `projects/P/locations/L/keyRings/R/cryptoKeys/K`.
    #[serde(default)]
    pub kms_key: Option<String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Makes the instance a read replica of this one ([C10]).
    #[serde(default)]
    pub replica_of: Option<String>,
}

/// `encryptionConfig` of a backup or a restore: Spanner's `CreateBackupEncryptionConfig` and
/// `RestoreDatabaseEncryptionConfig`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EncryptionConfig {
    /// `USE_DATABASE_ENCRYPTION` (backups) / `USE_CONFIG_DEFAULT_OR_BACKUP_ENCRYPTION`
    /// (restores), `CUSTOMER_MANAGED_ENCRYPTION` or `GOOGLE_DEFAULT_ENCRYPTION`.
    #[serde(default)]
    pub encryption_type: String,
    /// The key, with `CUSTOMER_MANAGED_ENCRYPTION` (implied when only the key is given).
    #[serde(default)]
    pub kms_key_name: String,
}

/// Body of `backups.create`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateBackupRequest {
    /// Output-only, accepted and ignored.
    #[serde(default)]
    pub name: String,
    /// How the backup is encrypted (default: as its instance).
    #[serde(default)]
    pub encryption_config: Option<EncryptionConfig>,
}

/// Body of `instances:restore`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreInstanceRequest {
    /// The new instance's ID.
    #[serde(default)]
    pub instance_id: String,
    /// The backup's name.
    #[serde(default)]
    pub backup: String,
    /// How the new instance is encrypted (default: the backup's key).
    #[serde(default)]
    pub encryption_config: Option<EncryptionConfig>,
    /// Labels of the new instance.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Body of `instances/ID:clone`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CloneInstanceRequest {
    /// The new instance's ID, in the source's location.
    #[serde(default)]
    pub destination_instance_id: String,
    /// Must be absent or the source's key: a clone keeps its source's key.
    #[serde(default)]
    pub kms_key: Option<String>,
    /// Labels of the new instance.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Body of `instances/ID:export`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExportInstanceRequest {
    /// A file under the server's export directory (a relative path, or an absolute path or
    /// `file://` URI inside it).
    #[serde(default)]
    pub destination: String,
    /// The key the archive is encrypted under (default: the instance's).
    #[serde(default)]
    pub kms_key: Option<String>,
    /// Write the contents unencrypted (only when asked; the audit entry carries a warning).
    #[serde(default)]
    pub allow_plaintext: bool,
}

/// Body of `instances:import`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImportInstanceRequest {
    /// The new instance's ID.
    #[serde(default)]
    pub instance_id: String,
    /// The archive, as `destination` of the export.
    #[serde(default)]
    pub source: String,
    /// The new instance's key (absent: service-managed encryption).
    #[serde(default)]
    pub kms_key: Option<String>,
    /// Labels of the new instance.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A backup as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupRecord {
    /// `INSTANCE/backups/ID`.
    pub name: String,
    /// The instance it was taken from.
    pub instance: String,
    /// Its key (`None`: service-managed).
    pub kms_key: Option<String>,
    /// `CREATING` until the copy is complete, then `READY`.
    pub state: String,
    /// Bytes of object contents.
    pub size_bytes: u64,
    /// Number of objects.
    pub object_count: u64,
    /// The point in time the backup shows.
    pub version_time: Timestamp,
    /// When it was asked for.
    pub create_time: Timestamp,
}

/// The backup resource.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Backup {
    /// `projects/P/locations/L/instances/I/backups/B`.
    pub name: String,
    /// The instance it was taken from.
    pub instance: String,
    /// `CREATING` or `READY`.
    pub state: String,
    /// Its key, if customer-managed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms_key: Option<String>,
    /// The key version(s) protecting it: fixed when it is taken.
    pub encryption_info: EncryptionInfo,
    /// Bytes of object contents (int64 as a string).
    pub size_bytes: String,
    /// Number of objects (int64 as a string).
    pub object_count: String,
    /// The consistent point in time it shows.
    pub version_time: Timestamp,
    /// When it was asked for.
    pub create_time: Timestamp,
}

/// `backups.list` answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListBackupsResponse {
    /// This page.
    pub backups: Vec<Backup>,
    /// Next page, if any.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub next_page_token: String,
}

/// An export as recorded (the archive itself is a file).
#[derive(Debug, Clone, PartialEq)]
pub struct ExportRecord {
    /// `INSTANCE/exports/ID`.
    pub name: String,
    /// The exported instance.
    pub instance: String,
    /// The archive's key (`None`: plaintext).
    pub kms_key: Option<String>,
    /// The version that wrapped the archive's KEK.
    pub key_version: Option<String>,
    /// The file written.
    pub destination: String,
    /// Bytes of object contents.
    pub size_bytes: u64,
    /// Number of objects.
    pub object_count: u64,
    /// When it was written.
    pub create_time: Timestamp,
}

/// Answer of `instances/ID:export`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Export {
    /// `INSTANCE/exports/ID`.
    pub name: String,
    /// The exported instance.
    pub instance: String,
    /// The file written.
    pub destination: String,
    /// The archive's encryption.
    pub encryption_info: EncryptionInfo,
    /// Bytes of object contents (int64 as a string).
    pub size_bytes: String,
    /// Number of objects (int64 as a string).
    pub object_count: String,
    /// When it was written.
    pub create_time: Timestamp,
}

impl Export {
    /// The resource of a record.
    pub fn of(r: &ExportRecord) -> Self {
        Self {
            name: r.name.clone(),
            instance: r.instance.clone(),
            destination: r.destination.clone(),
            encryption_info: EncryptionInfo {
                encryption_type: if r.kms_key.is_some() { "CUSTOMER_MANAGED_ENCRYPTION" } else { "NO_ENCRYPTION" },
                kms_key_versions: r.key_version.iter().cloned().collect(),
                encryption_status: None,
            },
            size_bytes: r.size_bytes.to_string(),
            object_count: r.object_count.to_string(),
            create_time: r.create_time,
        }
    }
}

/// `encryptionInfo`, as Spanner and Cloud SQL show it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionInfo {
    /// `CUSTOMER_MANAGED_ENCRYPTION` or `GOOGLE_DEFAULT_ENCRYPTION`.
    pub encryption_type: &'static str,
    /// Every key version whose wrapping protects some data of the instance right now.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kms_key_versions: Vec<String>,
    /// Set when the key cannot be used: `google.rpc.Status`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption_status: Option<serde_json::Value>,
}

/// `keyStatus`: what the last key check saw.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyStatus {
    /// `ENABLED`, `DISABLED`, `DESTROYED`, `PERMISSION_DENIED`, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_key_state: Option<String>,
    /// When the key was last checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_check_time: Option<Timestamp>,
    /// When a check last found the key usable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_usable_time: Option<Timestamp>,
    /// While the KMS is unreachable: when cached keys stop serving.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grace_expire_time: Option<Timestamp>,
}

/// The instance resource.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    /// Its name.
    pub name: String,
    /// The customer's key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms_key: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// `READY` or `SUSPENDED`.
    pub state: &'static str,
    /// `KMS_KEY_ISSUE` or `KMS_UNREACHABLE` when suspended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suspension_reason: Option<&'static str>,
    /// Why, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_reason: Option<String>,
    /// Encryption.
    pub encryption_info: EncryptionInfo,
    /// The last key check (CMEK only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_status: Option<KeyStatus>,
    /// The primary this read replica follows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica_of: Option<String>,
    /// This primary's read replicas.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replica_names: Vec<String>,
    /// A replica's last complete catch-up with its primary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Timestamp>,
    /// Creation time.
    pub create_time: Timestamp,
}

/// The object resource (metadata only; contents with `?alt=media`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Object {
    /// `projects/P/locations/L/instances/I/objects/NAME`.
    pub name: String,
    /// Size in bytes (int64 as a string).
    pub size: String,
    /// `Content-Type` given at upload.
    pub content_type: String,
    /// Changes with every upload (int64 as a string).
    pub generation: String,
    /// First upload.
    pub create_time: Timestamp,
    /// Latest upload.
    pub update_time: Timestamp,
    /// The key version protecting the contents (CMEK only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms_key_version: Option<String>,
}

/// `instances.list` answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListInstancesResponse {
    /// This page.
    pub instances: Vec<Instance>,
    /// Next page, if any.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub next_page_token: String,
}

/// `objects.list` answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListObjectsResponse {
    /// This page.
    pub objects: Vec<Object>,
    /// Next page, if any.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub next_page_token: String,
}

/// What a key protects ([K12]), in the shape of the Cloud KMS Inventory API's
/// `ProtectedResource`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtectedResource {
    /// `//store.keyhold.dev/projects/P/locations/L/instances/ID`.
    pub name: String,
    /// `projects/NUMBER`.
    pub project: String,
    /// The project ID.
    pub project_id: String,
    /// `keyhold-store`.
    pub cloud_product: String,
    /// `store.keyhold.dev/Instance`.
    pub resource_type: String,
    /// The resource's location.
    pub location: String,
    /// Its labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The newest version protecting it.
    pub crypto_key_version: String,
    /// Every version whose wrapping protects some of its data now.
    pub crypto_key_versions: Vec<String>,
    /// When it was created.
    pub create_time: Timestamp,
}

/// `protectedResources:search` answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchProtectedResourcesResponse {
    /// The resources.
    pub protected_resources: Vec<ProtectedResource>,
    /// Next page, if any.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub next_page_token: String,
}

impl SearchProtectedResourcesResponse {
    /// One page of `found` (sorted by name): at most `page_size` resources (1 to 1,000;
    /// absent or 0: 1,000) after the one named `page_token`.
    pub fn page(found: Vec<ProtectedResource>, page_size: Option<i64>, page_token: &str) -> Self {
        let size = page_size.filter(|n| *n != 0).unwrap_or(1000).clamp(1, 1000) as usize;
        let rest: Vec<_> = found.into_iter().filter(|r| r.name.as_str() > page_token).collect();
        let next_page_token = if rest.len() > size { rest[size - 1].name.clone() } else { String::new() };
        let protected_resources = rest.into_iter().take(size).collect();
        Self { protected_resources, next_page_token }
    }
}

/// `protectedResourcesSummary` of a key, in the shape of the Cloud KMS Inventory API.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtectedResourcesSummary {
    /// `KEY/protectedResourcesSummary`.
    pub name: String,
    /// How many resources (int64, as a string).
    pub resource_count: String,
    /// How many projects they are in.
    pub project_count: i32,
    /// Resources by type.
    pub resource_types: BTreeMap<String, String>,
    /// Resources by product.
    pub cloud_products: BTreeMap<String, String>,
    /// Resources by location.
    pub locations: BTreeMap<String, String>,
}

impl ProtectedResourcesSummary {
    /// The summary of `resources`, all protected by `key`.
    pub fn of(key: &str, resources: &[ProtectedResource]) -> Self {
        fn count<'a>(items: impl Iterator<Item = &'a String>) -> BTreeMap<String, String> {
            let mut m: BTreeMap<String, u64> = BTreeMap::new();
            for i in items {
                *m.entry(i.clone()).or_default() += 1;
            }
            m.into_iter().map(|(k, v)| (k, v.to_string())).collect()
        }
        let projects: std::collections::BTreeSet<&str> = resources.iter().map(|r| r.project_id.as_str()).collect();
        Self {
            name: format!("{key}/protectedResourcesSummary"),
            resource_count: resources.len().to_string(),
            project_count: projects.len() as i32,
            resource_types: count(resources.iter().map(|r| &r.resource_type)),
            cloud_products: count(resources.iter().map(|r| &r.cloud_product)),
            locations: count(resources.iter().map(|r| &r.location)),
        }
    }
}

/// Answer of `projects/P/exports:reconcile` (finding 10): the export registry of a project
/// against the files in its export directory.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileExportsResponse {
    /// Registered exports whose file is there.
    pub present: Vec<String>,
    /// Registered exports whose file is gone: left out of what their key protects ([K12]) until
    /// the file is back. `name -> file`.
    pub missing: BTreeMap<String, String>,
    /// Registered exports found gone before and there again now.
    pub returned: Vec<String>,
    /// Files in the project's export directory that no export of the project wrote (copied in
    /// by hand, say): reported, never deleted.
    pub unregistered: Vec<String>,
    /// Temporary files of exports under way, or of exports a crash interrupted: reported, not
    /// deleted (another node sharing the directory may be writing one).
    pub partial: Vec<String>,
}

/// A long-running operation as stored (issue 18, finding 7): a copy that answered at once and
/// runs on. `request` and `caller` are what a node needs to run it again after a crash.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationRecord {
    /// `projects/P/locations/L/operations/ID`.
    pub name: String,
    /// What the operation makes or changes (the backup, the new instance, the archive's
    /// instance, the re-encrypted instance).
    pub target: String,
    /// The call as made (`OperationRequest` JSON): method and request body.
    pub request: String,
    /// Who made it (principal, request ID, justification) as JSON.
    pub caller: String,
    /// The node running it.
    pub node: String,
    /// Finished, successfully or not.
    pub done: bool,
    /// `:cancel` was asked for.
    pub cancel_requested: bool,
    /// Objects copied (or re-encrypted) so far.
    pub objects_done: u64,
    /// Objects to copy, once known.
    pub objects_total: Option<u64>,
    /// Bytes of those objects.
    pub bytes_done: u64,
    /// When done: `{"response": ...}` or `{"error": ...}` (JSON); empty before.
    pub result: String,
    /// When it began.
    pub create_time: Timestamp,
    /// When it finished.
    pub end_time: Option<Timestamp>,
}

/// Where an operation got to, in its metadata (Spanner's `OperationProgress`, with counts).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationProgress {
    /// 0-100, once the number of objects is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress_percent: Option<u32>,
    /// Objects done (int64 as a string, as Google renders them).
    pub objects_done: String,
    /// Objects in all, once known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub objects_total: Option<String>,
    /// Bytes of the objects done.
    pub bytes_done: String,
    /// When it began.
    pub start_time: Timestamp,
    /// When it finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Timestamp>,
}

/// `metadata` of an operation: `keyhold.store.v1.OperationMetadata`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationMetadata {
    /// `type.googleapis.com/keyhold.store.v1.OperationMetadata`.
    #[serde(rename = "@type")]
    pub type_url: &'static str,
    /// The call: `CreateBackup`, `RestoreInstance`, `CloneInstance`, `ExportInstance`,
    /// `ImportInstance`, `ReencryptInstance`.
    pub method: String,
    /// What it makes or changes.
    pub target: String,
    /// How far it got.
    pub progress: OperationProgress,
    /// Whether `:cancel` was asked for (Spanner's `cancelTime`, as a flag).
    pub cancel_requested: bool,
}

/// A `google.longrunning.Operation` in its JSON form.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    /// `projects/P/locations/L/operations/ID`.
    pub name: String,
    /// [`OperationMetadata`].
    pub metadata: OperationMetadata,
    /// Finished (then exactly one of `error` and `response` is set).
    pub done: bool,
    /// A `google.rpc.Status`: why it failed (`code` 1, `CANCELLED`, when cancelled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<serde_json::Value>,
    /// What the call answers when it succeeds (a `Backup`, an `Instance`, an `Export`), with
    /// its `@type`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<serde_json::Value>,
}

/// A page of `operations.list`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListOperationsResponse {
    /// Oldest first.
    pub operations: Vec<Operation>,
    /// Token for the next page; absent on the last.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub next_page_token: String,
}
