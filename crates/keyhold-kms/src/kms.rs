//! The KMS façade: every public method of the KMS, each one call through the [`Gate`]'s
//! envelope (authorize, run, audit) into the part that does the work. The parts never see the
//! façade:
//!
//! | part | owns |
//! |---|---|
//! | [`Gate`] (`call.rs`) | the envelope: [`Authorizer`] (IAM + projects), quotas, the audit writer |
//! | [`Identities`] (`identity.rs`) | bearer tokens, the owner's bootstrap, service agents |
//! | [`Policies`] (`iam.rs`) | IAM policies of KMS resources |
//! | [`OrgPolicies`] (`org_policy.rs`) | the CMEK organization policies |
//! | [`Keys`] (`keys.rs`) | key rings, keys, versions, the key cache, the [`crate::backend`]s |
//! | [`CryptoOps`] (`crypto_ops.rs`) | `:encrypt`, `:decrypt`, random bytes |
//! | [`VersionOps`] (`version_ops.rs`) | signing, asymmetric decryption, public keys, MACs |
//! | [`Scheduler`] (`scheduler.rs`) | key generation, scheduled destruction, rotation |
//!
//! A method here says what it is (its audit name, its log stream, the permission it needs and
//! on what) and which part serves it; nothing else.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use keyhold_api::iam::{Policy, SetIamPolicyRequest};
use keyhold_api::messages::{
    AsymmetricDecryptRequest, AsymmetricDecryptResponse, AsymmetricSignRequest, AsymmetricSignResponse,
    DecapsulateRequest, DecapsulateResponse, DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse,
    GenerateRandomBytesRequest, GenerateRandomBytesResponse, ImportCryptoKeyVersionRequest, MacSignRequest,
    MacSignResponse, MacVerifyRequest, MacVerifyResponse, PublicKey, PublicKeyFormat, RawDecryptRequest,
    RawDecryptResponse, RawEncryptRequest, RawEncryptResponse,
};
use keyhold_api::orgpolicy::OrgPolicy;
use keyhold_api::page::Page;
use keyhold_api::resources::{
    CryptoKey, CryptoKeyVersion, ImportJob, KeyRing, Location, Operation, RetiredResource, VersionState,
};
use keyhold_api::wire::ProtoDuration;
use keyhold_api::{CryptoKeyName, CryptoKeyVersionName, ImportJobName, KeyRingName, LocationName};
use keyhold_crypto::KeyBytes;
use keyhold_iam::{Caller, Permission, Principal, ROOT_RESOURCE, role};

use crate::algorithm;
use crate::audit::{self, AuditKind, AuditLogPage, AuditLogQuery, AuditWriter, ChainVerdict};
use crate::authz::Authorizer;
use crate::backend::Backends;
use crate::call::{Call, Check, Gate, Op, ServiceCall};
use crate::clock::Clock;
use crate::config::KmsConfig;
use crate::crypto_ops::{CryptoOps, EncryptTarget};
use crate::deletion::Deletions;
use crate::error::KmsError;
use crate::events::{EventBus, KmsEvent};
use crate::iam::{IamResource, Policies};
use crate::identity::{Identities, NewToken};
use crate::import::Imports;
use crate::keys::{KeyFacts, Keys, ListQuery};
use crate::org_policy::{self, OrgPolicies, OrgPolicyName};
use crate::quota::Quotas;
use crate::repo::{Change, KmsRepository, ProjectRecord, RepoError, ServiceIdentityRecord, TokenRecord};
use crate::root_key::RootKey;
use crate::scheduler::{DueWork, Scheduler};
use crate::version_ops::VersionOps;

/// The service of Keyhold's own methods (tokens).
const KEYHOLD: &str = "keyhold.dev";
/// Most change-log entries one poll applies one by one; after more, every cache is dropped.
pub const CHANGES_PER_POLL: i64 = 1024;
/// Resource Manager (projects, the server-wide policy).
const RESOURCE_MANAGER: &str = "cloudresourcemanager.googleapis.com";

/// The KMS.
#[derive(Debug)]
pub struct Kms {
    repo: Arc<dyn KmsRepository>,
    config: Arc<KmsConfig>,
    gate: Gate,
    identities: Identities,
    policies: Policies,
    org_policies: OrgPolicies,
    keys: Arc<Keys>,
    crypto: CryptoOps,
    versions: VersionOps,
    imports: Imports,
    deletions: Deletions,
    scheduler: Scheduler,
    /// Wakes the scheduler at once (a key is waiting for its generation).
    due_now: tokio::sync::Notify,
    events: EventBus,
    last_change: AtomicI64,
}

impl Kms {
    /// Opens the KMS on `store`. Refuses to start if the store was sealed under another root key
    /// (every SOFTWARE key would fail to unseal).
    pub async fn new(
        store: Arc<dyn KmsRepository>,
        root: Arc<dyn RootKey>,
        config: KmsConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartupError> {
        let given = root.fingerprint();
        let stored = store.meta_set_if_absent("root_key_fingerprint", &given).await.map_err(StartupError::Store)?;
        if stored != given {
            return Err(StartupError::RootKeyMismatch { stored, given });
        }
        let last_change = store.change_counter().await.map_err(StartupError::Store)?;
        let config = Arc::new(config);
        let events = EventBus::default();
        let authz = Arc::new(Authorizer::new(store.clone(), clock.clone(), config.policy_cache_bytes));
        let audit = match &config.audit_journal {
            None => AuditWriter::start(store.clone()),
            Some(journal) => {
                AuditWriter::start_journaled(store.clone(), journal).await.map_err(StartupError::AuditJournal)?
            }
        };
        let gate = Gate::new(authz.clone(), Quotas::new(config.quotas.clone()), audit, clock.clone());
        let backends = Backends::new(root, &config.backends);
        let keys = Arc::new(Keys::new(store.clone(), clock.clone(), config.clone(), backends, events.clone()));
        Ok(Self {
            identities: Identities::new(
                store.clone(),
                clock.clone(),
                config.anonymous_principal.clone(),
                config.default_token_ttl,
            ),
            policies: Policies::new(store.clone(), authz, events.clone()),
            org_policies: OrgPolicies::new(store.clone()),
            crypto: CryptoOps::new(keys.clone()),
            versions: VersionOps::new(keys.clone()),
            imports: Imports::new(store.clone(), clock.clone(), keys.clone()),
            deletions: Deletions::new(store.clone(), clock.clone(), keys.clone()),
            due_now: tokio::sync::Notify::new(),
            scheduler: Scheduler::new(store.clone(), clock, keys.clone()),
            keys,
            gate,
            repo: store,
            config,
            events,
            last_change: AtomicI64::new(last_change),
        })
    }

    /// The settings in force.
    pub fn config(&self) -> &KmsConfig {
        &self.config
    }

    /// Notices of changes that can make a key usable or unusable (see [`crate::events`]).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<KmsEvent> {
        self.events.subscribe()
    }

    /// The quota buckets (how many are kept, the settings).
    pub fn quotas(&self) -> &Quotas {
        &self.gate.quotas
    }

    // ---- locations ------------------------------------------------------------------------

    /// `locations.list`.
    pub async fn list_locations(
        &self,
        caller: &Caller,
        project: &str,
        q: &ListQuery,
    ) -> Result<Page<Location>, KmsError> {
        let resource = format!("projects/{project}");
        let check = Check::Permission(role::LOCATIONS_LIST, &resource);
        self.gate
            .run(caller, Op::kms_read("ListLocations"), resource.clone(), check, async |_| {
                self.keys.list_locations(project, q)
            })
            .await
    }

    /// `locations.get`.
    pub async fn location(&self, caller: &Caller, name: &LocationName) -> Result<Location, KmsError> {
        let resource = name.to_string();
        let check = Check::Permission(role::LOCATIONS_GET, &resource);
        self.gate
            .run(caller, Op::kms_read("GetLocation"), resource.clone(), check, async |_| self.keys.location(name))
            .await
    }

    /// `locations.generateRandomBytes`: bytes from the HSM's random number generator.
    pub async fn generate_random_bytes(
        &self,
        caller: &Caller,
        location: &LocationName,
        req: &GenerateRandomBytesRequest,
    ) -> Result<GenerateRandomBytesResponse, KmsError> {
        let resource = location.to_string();
        let check = Check::Permission(role::LOCATIONS_GENERATE_RANDOM_BYTES, &resource);
        self.gate
            .run(caller, Op::kms_read("GenerateRandomBytes"), resource.clone(), check, async |_| {
                self.crypto.generate_random_bytes(location, req).await
            })
            .await
    }

    // ---- key rings ------------------------------------------------------------------------

    /// `keyRings.create` ([K2]).
    pub async fn create_key_ring(
        &self,
        caller: &Caller,
        parent: &LocationName,
        key_ring_id: &str,
    ) -> Result<KeyRing, KmsError> {
        let on = parent.to_string();
        let check = Check::Permission(role::KEY_RINGS_CREATE, &on);
        self.gate
            .run(
                caller,
                Op::kms_write("CreateKeyRing"),
                format!("{parent}/keyRings/{key_ring_id}"),
                check,
                async |call| self.keys.create_key_ring(call, parent, key_ring_id).await,
            )
            .await
    }

    /// `keyRings.get`.
    pub async fn key_ring(&self, caller: &Caller, name: &KeyRingName) -> Result<KeyRing, KmsError> {
        let resource = name.to_string();
        let check = Check::Permission(role::KEY_RINGS_GET, &resource);
        self.gate
            .run(caller, Op::kms_read("GetKeyRing"), resource.clone(), check, async |_| self.keys.key_ring(name).await)
            .await
    }

    /// `keyRings.list`.
    pub async fn list_key_rings(
        &self,
        caller: &Caller,
        parent: &LocationName,
        q: &ListQuery,
    ) -> Result<Page<KeyRing>, KmsError> {
        let resource = parent.to_string();
        let check = Check::Permission(role::KEY_RINGS_LIST, &resource);
        self.gate
            .run(caller, Op::kms_read("ListKeyRings"), resource.clone(), check, async |_| {
                self.keys.list_key_rings(parent, q).await
            })
            .await
    }

    // ---- crypto keys ----------------------------------------------------------------------

    /// `cryptoKeys.create` ([K3]).
    pub async fn create_crypto_key(
        &self,
        caller: &Caller,
        parent: &KeyRingName,
        crypto_key_id: &str,
        request: CryptoKey,
        skip_initial_version_creation: bool,
    ) -> Result<CryptoKey, KmsError> {
        let on = parent.to_string();
        let check = Check::Permission(role::CRYPTO_KEYS_CREATE, &on);
        let resource = format!("{parent}/cryptoKeys/{crypto_key_id}");
        let generated_later = algorithm::generated_in_background(request.purpose) && !skip_initial_version_creation;
        let created = self
            .gate
            .run(caller, Op::kms_write("CreateCryptoKey"), resource, check, async |call| {
                self.keys.create_crypto_key(call, parent, crypto_key_id, request, skip_initial_version_creation).await
            })
            .await?;
        if generated_later {
            self.due_now.notify_one();
        }
        Ok(created)
    }

    /// `cryptoKeys.get`.
    pub async fn crypto_key(&self, caller: &Caller, name: &CryptoKeyName) -> Result<CryptoKey, KmsError> {
        let resource = name.to_string();
        let check = Check::Permission(role::CRYPTO_KEYS_GET, &resource);
        self.gate
            .run(caller, Op::kms_read("GetCryptoKey"), resource.clone(), check, async |_| {
                self.keys.crypto_key(name).await
            })
            .await
    }

    /// `cryptoKeys.list`.
    pub async fn list_crypto_keys(
        &self,
        caller: &Caller,
        parent: &KeyRingName,
        q: &ListQuery,
    ) -> Result<Page<CryptoKey>, KmsError> {
        let resource = parent.to_string();
        let check = Check::Permission(role::CRYPTO_KEYS_LIST, &resource);
        self.gate
            .run(caller, Op::kms_read("ListCryptoKeys"), resource.clone(), check, async |_| {
                self.keys.list_crypto_keys(parent, q).await
            })
            .await
    }

    /// `cryptoKeys.patch` with an `updateMask`.
    pub async fn update_crypto_key(
        &self,
        caller: &Caller,
        name: &CryptoKeyName,
        patch: CryptoKey,
        update_mask: &str,
    ) -> Result<CryptoKey, KmsError> {
        let resource = name.to_string();
        let check = Check::Permission(role::CRYPTO_KEYS_UPDATE, &resource);
        self.gate
            .run(caller, Op::kms_write("UpdateCryptoKey"), resource.clone(), check, async |call| {
                self.keys.update_crypto_key(call, name, patch, update_mask).await
            })
            .await
    }

    /// `cryptoKeys.updatePrimaryVersion` ([K6]).
    pub async fn update_primary_version(
        &self,
        caller: &Caller,
        name: &CryptoKeyName,
        version_id: &str,
    ) -> Result<CryptoKey, KmsError> {
        let resource = name.to_string();
        let check = Check::Permission(role::CRYPTO_KEYS_UPDATE, &resource);
        self.gate
            .run(caller, Op::kms_write("UpdateCryptoKeyPrimaryVersion"), resource.clone(), check, async |call| {
                self.keys.update_primary_version(call, name, version_id).await
            })
            .await
    }

    /// `cryptoKeys.encrypt` ([K5]).
    pub async fn encrypt(
        &self,
        caller: &Caller,
        target: &EncryptTarget,
        req: &EncryptRequest,
    ) -> Result<EncryptResponse, KmsError> {
        let resource = match target {
            EncryptTarget::Key(k) => k,
            EncryptTarget::Version(v) => &v.crypto_key,
        }
        .to_string();
        let check = Check::Permission(role::VERSIONS_USE_TO_ENCRYPT, &resource);
        self.gate
            .run(caller, Op::kms_read("Encrypt"), resource.clone(), check, async |call| {
                self.crypto.encrypt(call, target, req).await
            })
            .await
    }

    /// `cryptoKeys.decrypt` ([K5]): the version is read from the ciphertext.
    pub async fn decrypt(
        &self,
        caller: &Caller,
        key_name: &CryptoKeyName,
        req: &DecryptRequest,
    ) -> Result<DecryptResponse, KmsError> {
        let resource = key_name.to_string();
        let check = Check::Permission(role::VERSIONS_USE_TO_DECRYPT, &resource);
        self.gate
            .run(caller, Op::kms_read("Decrypt"), resource.clone(), check, async |call| {
                self.crypto.decrypt(call, key_name, req).await
            })
            .await
    }

    /// `cryptoKeyVersions.asymmetricSign`.
    pub async fn asymmetric_sign(
        &self,
        caller: &Caller,
        name: &CryptoKeyVersionName,
        req: &AsymmetricSignRequest,
    ) -> Result<AsymmetricSignResponse, KmsError> {
        let resource = name.crypto_key.to_string();
        let check = Check::Permission(role::VERSIONS_USE_TO_SIGN, &resource);
        self.gate
            .run(caller, Op::kms_read("AsymmetricSign"), resource.clone(), check, async |call| {
                if let Some(expert) = self.versions.raw_expert_permission(name).await? {
                    self.gate.authorize(call, expert, &resource).await?;
                }
                self.versions.asymmetric_sign(call, name, req).await
            })
            .await
    }

    /// `cryptoKeyVersions.asymmetricDecrypt`.
    pub async fn asymmetric_decrypt(
        &self,
        caller: &Caller,
        name: &CryptoKeyVersionName,
        req: &AsymmetricDecryptRequest,
    ) -> Result<AsymmetricDecryptResponse, KmsError> {
        let resource = name.crypto_key.to_string();
        let check = Check::Permission(role::VERSIONS_USE_TO_DECRYPT, &resource);
        self.gate
            .run(caller, Op::kms_read("AsymmetricDecrypt"), resource.clone(), check, async |call| {
                self.versions.asymmetric_decrypt(call, name, req).await
            })
            .await
    }

    /// `cryptoKeyVersions.getPublicKey`.
    pub async fn public_key(
        &self,
        caller: &Caller,
        name: &CryptoKeyVersionName,
        format: Option<PublicKeyFormat>,
    ) -> Result<PublicKey, KmsError> {
        let resource = name.crypto_key.to_string();
        let check = Check::Permission(role::VERSIONS_VIEW_PUBLIC_KEY, &resource);
        self.gate
            .run(caller, Op::kms_read("GetPublicKey"), resource.clone(), check, async |call| {
                self.versions.public_key(call, name, format).await
            })
            .await
    }

    /// `cryptoKeyVersions.macSign`.
    pub async fn mac_sign(
        &self,
        caller: &Caller,
        name: &CryptoKeyVersionName,
        req: &MacSignRequest,
    ) -> Result<MacSignResponse, KmsError> {
        let resource = name.crypto_key.to_string();
        let check = Check::Permission(role::VERSIONS_USE_TO_SIGN, &resource);
        self.gate
            .run(caller, Op::kms_read("MacSign"), resource.clone(), check, async |call| {
                self.versions.mac_sign(call, name, req).await
            })
            .await
    }

    /// `cryptoKeyVersions.macVerify`.
    pub async fn mac_verify(
        &self,
        caller: &Caller,
        name: &CryptoKeyVersionName,
        req: &MacVerifyRequest,
    ) -> Result<MacVerifyResponse, KmsError> {
        let resource = name.crypto_key.to_string();
        let check = Check::Permission(role::VERSIONS_USE_TO_VERIFY, &resource);
        self.gate
            .run(caller, Op::kms_read("MacVerify"), resource.clone(), check, async |call| {
                self.versions.mac_verify(call, name, req).await
            })
            .await
    }

    /// `cryptoKeyVersions.decapsulate`.
    pub async fn decapsulate(
        &self,
        caller: &Caller,
        name: &CryptoKeyVersionName,
        req: &DecapsulateRequest,
    ) -> Result<DecapsulateResponse, KmsError> {
        let resource = name.crypto_key.to_string();
        let check = Check::Permission(role::VERSIONS_USE_TO_DECAPSULATE, &resource);
        self.gate
            .run(caller, Op::kms_read("Decapsulate"), resource.clone(), check, async |call| {
                self.versions.decapsulate(call, name, req).await
            })
            .await
    }

    /// `cryptoKeyVersions.rawEncrypt`.
    pub async fn raw_encrypt(
        &self,
        caller: &Caller,
        name: &CryptoKeyVersionName,
        req: &RawEncryptRequest,
    ) -> Result<RawEncryptResponse, KmsError> {
        let resource = name.crypto_key.to_string();
        let check = Check::Permission(role::VERSIONS_USE_TO_ENCRYPT, &resource);
        self.gate
            .run(caller, Op::kms_read("RawEncrypt"), resource.clone(), check, async |call| {
                if let Some(expert) = self.versions.raw_expert_permission(name).await? {
                    self.gate.authorize(call, expert, &resource).await?;
                }
                self.versions.raw_encrypt(call, name, req).await
            })
            .await
    }

    /// `cryptoKeyVersions.rawDecrypt`.
    pub async fn raw_decrypt(
        &self,
        caller: &Caller,
        name: &CryptoKeyVersionName,
        req: &RawDecryptRequest,
    ) -> Result<RawDecryptResponse, KmsError> {
        let resource = name.crypto_key.to_string();
        let check = Check::Permission(role::VERSIONS_USE_TO_DECRYPT, &resource);
        self.gate
            .run(caller, Op::kms_read("RawDecrypt"), resource.clone(), check, async |call| {
                if let Some(expert) = self.versions.raw_expert_permission(name).await? {
                    self.gate.authorize(call, expert, &resource).await?;
                }
                self.versions.raw_decrypt(call, name, req).await
            })
            .await
    }

    // ---- versions -------------------------------------------------------------------------

    /// `cryptoKeyVersions.create` ([K6]): a new version with the next ID, not primary.
    pub async fn create_version(
        &self,
        caller: &Caller,
        parent: &CryptoKeyName,
        request: CryptoKeyVersion,
    ) -> Result<CryptoKeyVersion, KmsError> {
        let resource = parent.to_string();
        let check = Check::Permission(role::VERSIONS_CREATE, &resource);
        let created = self
            .gate
            .run(caller, Op::kms_write("CreateCryptoKeyVersion"), resource.clone(), check, async |call| {
                self.keys.create_version(call, parent, request).await
            })
            .await?;
        if created.state == Some(VersionState::PendingGeneration) {
            self.due_now.notify_one();
        }
        Ok(created)
    }

    /// `cryptoKeyVersions.get`.
    pub async fn version(&self, caller: &Caller, name: &CryptoKeyVersionName) -> Result<CryptoKeyVersion, KmsError> {
        let resource = name.to_string();
        let check = Check::Permission(role::VERSIONS_GET, &resource);
        self.gate
            .run(caller, Op::kms_read("GetCryptoKeyVersion"), resource.clone(), check, async |_| {
                self.keys.version(name).await
            })
            .await
    }

    /// `cryptoKeyVersions.list`.
    pub async fn list_versions(
        &self,
        caller: &Caller,
        parent: &CryptoKeyName,
        q: &ListQuery,
    ) -> Result<Page<CryptoKeyVersion>, KmsError> {
        let resource = parent.to_string();
        let check = Check::Permission(role::VERSIONS_LIST, &resource);
        self.gate
            .run(caller, Op::kms_read("ListCryptoKeyVersions"), resource.clone(), check, async |_| {
                self.keys.list_versions(parent, q).await
            })
            .await
    }

    /// `cryptoKeyVersions.patch`: only `state`, between ENABLED and DISABLED ([K7]).
    pub async fn update_version(
        &self,
        caller: &Caller,
        name: &CryptoKeyVersionName,
        patch: CryptoKeyVersion,
        update_mask: &str,
    ) -> Result<CryptoKeyVersion, KmsError> {
        let resource = name.to_string();
        let check = Check::Permission(role::VERSIONS_UPDATE, &resource);
        self.gate
            .run(caller, Op::kms_write("UpdateCryptoKeyVersion"), resource.clone(), check, async |call| {
                self.keys.update_version(call, name, patch, update_mask).await
            })
            .await
    }

    /// `cryptoKeyVersions.destroy`: schedules destruction after the key's
    /// `destroyScheduledDuration` ([K7]).
    pub async fn destroy_version(
        &self,
        caller: &Caller,
        name: &CryptoKeyVersionName,
    ) -> Result<CryptoKeyVersion, KmsError> {
        let resource = name.to_string();
        let check = Check::Permission(role::VERSIONS_DESTROY, &resource);
        self.gate
            .run(caller, Op::kms_write("DestroyCryptoKeyVersion"), resource.clone(), check, async |call| {
                self.keys.destroy_version(call, name).await
            })
            .await
    }

    /// `cryptoKeyVersions.restore`: `DESTROY_SCHEDULED` back to `DISABLED` ([K7]).
    pub async fn restore_version(
        &self,
        caller: &Caller,
        name: &CryptoKeyVersionName,
    ) -> Result<CryptoKeyVersion, KmsError> {
        let resource = name.to_string();
        let check = Check::Permission(role::VERSIONS_RESTORE, &resource);
        self.gate
            .run(caller, Op::kms_write("RestoreCryptoKeyVersion"), resource.clone(), check, async |call| {
                self.keys.restore_version(call, name).await
            })
            .await
    }

    // ---- deletion -------------------------------------------------------------------------

    /// `cryptoKeyVersions.delete`: a finished long-running operation.
    pub async fn delete_version(&self, caller: &Caller, name: &CryptoKeyVersionName) -> Result<Operation, KmsError> {
        let resource = name.to_string();
        let check = Check::Permission(role::VERSIONS_DELETE, &resource);
        self.gate
            .run(caller, Op::kms_write("DeleteCryptoKeyVersion"), resource.clone(), check, async |call| {
                self.deletions.delete_version(call, name).await
            })
            .await
    }

    /// `cryptoKeys.delete`: a finished long-running operation.
    pub async fn delete_crypto_key(&self, caller: &Caller, name: &CryptoKeyName) -> Result<Operation, KmsError> {
        let resource = name.to_string();
        let check = Check::Permission(role::CRYPTO_KEYS_DELETE, &resource);
        self.gate
            .run(caller, Op::kms_write("DeleteCryptoKey"), resource.clone(), check, async |call| {
                self.deletions.delete_key(call, name).await
            })
            .await
    }

    /// `retiredResources.get`.
    pub async fn retired_resource(&self, caller: &Caller, name: &str) -> Result<RetiredResource, KmsError> {
        let check = Check::Permission(role::RETIRED_RESOURCES_GET, name);
        self.gate
            .run(caller, Op::kms_read("GetRetiredResource"), name.to_string(), check, async |_| {
                self.deletions.retired_resource(name).await
            })
            .await
    }

    /// `retiredResources.list`.
    pub async fn list_retired_resources(
        &self,
        caller: &Caller,
        parent: &LocationName,
        q: &ListQuery,
    ) -> Result<Page<RetiredResource>, KmsError> {
        let resource = parent.to_string();
        let check = Check::Permission(role::RETIRED_RESOURCES_LIST, &resource);
        self.gate
            .run(caller, Op::kms_read("ListRetiredResources"), resource.clone(), check, async |_| {
                self.deletions.list_retired(parent, q).await
            })
            .await
    }

    /// `operations.get` of the KMS's operations (IDs beginning with `kms-`).
    pub async fn operation(&self, caller: &Caller, name: &str) -> Result<Operation, KmsError> {
        let check = Check::Permission(role::KMS_OPERATIONS_GET, name);
        self.gate
            .run(caller, Op::kms_read("GetOperation"), name.to_string(), check, async |_| {
                self.deletions.operation(name).await
            })
            .await
    }

    // ---- import ---------------------------------------------------------------------------

    /// `importJobs.create`.
    pub async fn create_import_job(
        &self,
        caller: &Caller,
        parent: &KeyRingName,
        import_job_id: &str,
        request: ImportJob,
    ) -> Result<ImportJob, KmsError> {
        let on = parent.to_string();
        let check = Check::Permission(role::IMPORT_JOBS_CREATE, &on);
        let resource = format!("{parent}/importJobs/{import_job_id}");
        self.gate
            .run(caller, Op::kms_write("CreateImportJob"), resource, check, async |call| {
                self.imports.create_job(call, parent, import_job_id, request).await
            })
            .await
    }

    /// `importJobs.get`.
    pub async fn import_job(&self, caller: &Caller, name: &ImportJobName) -> Result<ImportJob, KmsError> {
        let resource = name.to_string();
        let check = Check::Permission(role::IMPORT_JOBS_GET, &resource);
        self.gate
            .run(caller, Op::kms_read("GetImportJob"), resource.clone(), check, async |_| self.imports.job(name).await)
            .await
    }

    /// `importJobs.list`.
    pub async fn list_import_jobs(
        &self,
        caller: &Caller,
        parent: &KeyRingName,
        q: &ListQuery,
    ) -> Result<Page<ImportJob>, KmsError> {
        let resource = parent.to_string();
        let check = Check::Permission(role::IMPORT_JOBS_LIST, &resource);
        self.gate
            .run(caller, Op::kms_read("ListImportJobs"), resource.clone(), check, async |_| {
                self.imports.list_jobs(parent, q).await
            })
            .await
    }

    /// `cryptoKeyVersions.import`: needs `cloudkms.cryptoKeyVersions.create` on the key (or
    /// `cloudkms.cryptoKeyVersions.update` on the version imported into again) and
    /// `importJobs.useToImport` on the job, as Cloud KMS. The names in the body are read inside
    /// the call, so that a malformed one is audited like any refusal.
    pub async fn import_version(
        &self,
        caller: &Caller,
        parent: &CryptoKeyName,
        request: &ImportCryptoKeyVersionRequest,
    ) -> Result<CryptoKeyVersion, KmsError> {
        let op = Op::kms_write("ImportCryptoKeyVersion");
        self.gate
            .run(caller, op, parent.to_string(), Check::Authenticated, async |call| {
                let target: Option<CryptoKeyVersionName> = match request.crypto_key_version.as_str() {
                    "" => None,
                    v => Some(v.parse()?),
                };
                if let Some(t) = &target
                    && t.crypto_key != *parent
                {
                    return Err(KmsError::InvalidArgument(format!(
                        "crypto_key_version {t} is not a version of {parent}."
                    )));
                }
                if request.import_job.is_empty() {
                    return Err(KmsError::InvalidArgument("import_job is required.".into()));
                }
                let job: ImportJobName = request.import_job.parse()?;
                match &target {
                    None => self.gate.authorize(call, role::VERSIONS_CREATE, &parent.to_string()).await?,
                    Some(t) => self.gate.authorize(call, role::VERSIONS_UPDATE, &t.to_string()).await?,
                }
                self.gate.authorize(call, role::IMPORT_JOBS_USE_TO_IMPORT, &job.to_string()).await?;
                self.imports.import_version(call, parent, &job, target.as_ref(), request).await
            })
            .await
    }

    // ---- IAM ------------------------------------------------------------------------------

    /// `:getIamPolicy`.
    pub async fn get_iam_policy(&self, caller: &Caller, resource: &IamResource) -> Result<Policy, KmsError> {
        let name = resource.name();
        let check = Check::Permission(resource.get_permission(), &name);
        self.gate
            .run(caller, resource.op("GetIamPolicy", AuditKind::DataAccess), name.clone(), check, async |_| {
                self.policies.get(resource).await
            })
            .await
    }

    /// `:setIamPolicy`: replaces the policy; a stale `etag` fails with `ABORTED`, no etag
    /// overwrites. Takes effect on the next request on every node.
    pub async fn set_iam_policy(
        &self,
        caller: &Caller,
        resource: &IamResource,
        request: &SetIamPolicyRequest,
    ) -> Result<Policy, KmsError> {
        let name = resource.name();
        let check = Check::Permission(resource.set_permission(), &name);
        self.gate
            .run(caller, resource.op("SetIamPolicy", AuditKind::Activity), name.clone(), check, async |call| {
                self.policies.set(call, resource, request).await
            })
            .await
    }

    /// `:testIamPermissions`: which of `permissions` the caller holds on the resource (none, if
    /// it does not exist). Needs no permission itself.
    pub async fn test_iam_permissions(
        &self,
        caller: &Caller,
        resource: &IamResource,
        permissions: &[String],
    ) -> Result<Vec<String>, KmsError> {
        let op = resource.op("TestIamPermissions", AuditKind::DataAccess);
        self.gate
            .run(caller, op, resource.name(), Check::Authenticated, async |call| {
                let principal = self.gate.authenticated(call)?;
                self.policies.test(principal, caller.anonymous, resource, permissions).await
            })
            .await
    }

    // ---- projects and identities ----------------------------------------------------------

    /// A project's number, for services naming it (`projects/NUMBER`); no permission needed:
    /// callers have already been authorized for something in the project.
    pub async fn project_number(&self, project_id: &str) -> Result<i64, KmsError> {
        Ok(self.gate.authz.project_record(project_id).await?.project_number)
    }

    /// `projects.get` (Resource Manager): the project's ID and number.
    pub async fn project(&self, caller: &Caller, project_id: &str) -> Result<ProjectRecord, KmsError> {
        let resource = format!("projects/{project_id}");
        let op = Op::of(RESOURCE_MANAGER, "GetProject", AuditKind::DataAccess);
        self.gate
            .run(caller, op, resource.clone(), Check::InBody, async |call| {
                keyhold_api::name::check_id("project", project_id)?;
                self.gate.authorize(call, role::PROJECTS_GET, &resource).await?;
                self.gate.authz.project_record(project_id).await
            })
            .await
    }

    /// Maps a bearer token to its principal. Fails with `UNAUTHENTICATED` for unknown, expired
    /// or revoked tokens.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, KmsError> {
        self.identities.authenticate(token).await
    }

    /// Whether a credential Keyhold did not mint (a client certificate verified by the
    /// listener) may stand for `principal`: not for the principals no token may be created for
    /// either (a service agent, an identity Keyhold itself acts as, the anonymous principal),
    /// since only their own service, or Keyhold, may act as them. `Err` says why.
    pub fn check_external_principal(&self, principal: &Principal) -> Result<(), String> {
        self.identities.unmintable(principal).map_or(Ok(()), Err)
    }

    /// Creates a token for `principal` (needs `keyhold.tokens.create` on the server).
    pub async fn create_token(
        &self,
        caller: &Caller,
        principal: &str,
        ttl: Option<ProtoDuration>,
        description: &str,
    ) -> Result<NewToken, KmsError> {
        let check = Check::Permission(role::TOKENS_CREATE, ROOT_RESOURCE);
        self.gate
            .run(
                caller,
                Op::of(KEYHOLD, "CreateToken", AuditKind::Activity),
                ROOT_RESOURCE.into(),
                check,
                async |call| self.identities.create_token(call, principal, ttl, description).await,
            )
            .await
    }

    /// All tokens (never their secrets).
    pub async fn list_tokens(&self, caller: &Caller) -> Result<Vec<TokenRecord>, KmsError> {
        let check = Check::Permission(role::TOKENS_LIST, ROOT_RESOURCE);
        self.gate
            .run(
                caller,
                Op::of(KEYHOLD, "ListTokens", AuditKind::DataAccess),
                ROOT_RESOURCE.into(),
                check,
                async |_| self.identities.list_tokens().await,
            )
            .await
    }

    /// Revokes a token; effective on the next request on this node, within the change-poll
    /// interval on the others.
    pub async fn revoke_token(&self, caller: &Caller, id: &str) -> Result<(), KmsError> {
        let check = Check::Permission(role::TOKENS_REVOKE, ROOT_RESOURCE);
        self.gate
            .run(
                caller,
                Op::of(KEYHOLD, "RevokeToken", AuditKind::Activity),
                format!("tokens/{id}"),
                check,
                async |call| self.identities.revoke_token(call, id).await,
            )
            .await
    }

    /// First start: makes `owner` owner and token admin of the whole server (if nobody is yet)
    /// and, unless `existing` is a valid token of the owner, mints a token for it.
    pub async fn bootstrap_owner(
        &self,
        owner: &Principal,
        existing: Option<&str>,
    ) -> Result<Option<NewToken>, KmsError> {
        let system = Caller::system("bootstrap");
        let call =
            Call::new(&system, Op::of(RESOURCE_MANAGER, "SetIamPolicy", AuditKind::Activity), ROOT_RESOURCE.into());
        self.policies.set_root_if_absent(&Identities::owner_policy(owner), &call.success_entry()).await?;
        if let Some(t) = existing
            && self.identities.authenticate(t.trim()).await.is_ok_and(|p| p == *owner)
        {
            return Ok(None);
        }
        let op = Op::of(KEYHOLD, "CreateToken", AuditKind::Activity);
        self.gate
            .run(&system, op, ROOT_RESOURCE.into(), Check::InBody, async |call| {
                self.identities.owner_token(call, owner).await.map(Some)
            })
            .await
    }

    /// `services.generateServiceIdentity` ([K9]): the agent through which `service` acts for
    /// `project`, created on first call, the same one afterwards.
    pub async fn generate_service_identity(
        &self,
        caller: &Caller,
        project_id: &str,
        service: &str,
    ) -> Result<ServiceIdentityRecord, KmsError> {
        let resource = format!("projects/{project_id}/services/{service}");
        let op = Op::of("serviceusage.googleapis.com", "GenerateServiceIdentity", AuditKind::Activity);
        self.gate
            .run(caller, op, resource, Check::InBody, async |call| {
                keyhold_api::name::check_id("project", project_id)?;
                Identities::check_service_name(service)?;
                // Google requires no permission beyond being able to see the project. A service
                // may always look up (and so create) its own agent: that is how a service running
                // apart from the KMS learns which identity to act as.
                let is_the_service =
                    call.caller.principal.as_ref().is_some_and(|p| p.as_str() == format!("service:{service}"));
                if is_the_service {
                    self.gate.authz.ensure_project(project_id).await?;
                } else {
                    self.gate.authorize(call, role::PROJECTS_GET, &format!("projects/{project_id}")).await?;
                }
                self.identities
                    .service_identity(call, project_id, service, async || self.project_number(project_id).await)
                    .await
            })
            .await
    }

    /// IAM Credentials `generateAccessToken` for a service agent: only the service the agent
    /// belongs to (authenticated as `service:NAME`) may mint its tokens; lifetime at most 1 h.
    pub async fn generate_agent_token(
        &self,
        caller: &Caller,
        agent_email: &str,
        lifetime: Option<ProtoDuration>,
    ) -> Result<NewToken, KmsError> {
        let resource = format!("projects/-/serviceAccounts/{agent_email}");
        let op = Op::of("iamcredentials.googleapis.com", "GenerateAccessToken", AuditKind::DataAccess);
        self.gate
            .run(caller, op, resource, Check::Authenticated, async |call| {
                let principal = self.gate.authenticated(call)?;
                self.identities.agent_token(call, principal, agent_email, lifetime).await
            })
            .await
    }

    // ---- organization policies ------------------------------------------------------------

    /// `policies.get`.
    pub async fn get_org_policy(&self, caller: &Caller, name: &str) -> Result<OrgPolicy, KmsError> {
        let op = Op::of(org_policy::SERVICE, "GetPolicy", AuditKind::DataAccess);
        self.gate
            .run(caller, op, name.to_string(), Check::InBody, async |call| {
                let parsed = OrgPolicyName::parse(name)?;
                self.gate.authorize(call, role::ORG_POLICY_GET, &format!("projects/{}", parsed.project)).await?;
                self.org_policies.get(&parsed).await
            })
            .await
    }

    /// `policies.list`.
    pub async fn list_org_policies(&self, caller: &Caller, project: &str) -> Result<Vec<OrgPolicy>, KmsError> {
        let resource = format!("projects/{project}");
        let check = Check::Permission(role::ORG_POLICIES_LIST, &resource);
        let op = Op::of(org_policy::SERVICE, "ListPolicies", AuditKind::DataAccess);
        self.gate.run(caller, op, resource.clone(), check, async |_| self.org_policies.list(project).await).await
    }

    /// `policies.create` / `policies.patch`: sets the policy named in `policy.name`. A non-empty
    /// `etag` must match the stored one.
    pub async fn set_org_policy(&self, caller: &Caller, policy: &OrgPolicy) -> Result<OrgPolicy, KmsError> {
        let op = Op::of(org_policy::SERVICE, "UpdatePolicy", AuditKind::Activity);
        self.gate
            .run(caller, op, policy.name.clone(), Check::InBody, async |call| {
                let parsed = OrgPolicyName::parse(&policy.name)?;
                self.gate.authorize(call, role::ORG_POLICIES_UPDATE, &format!("projects/{}", parsed.project)).await?;
                self.org_policies.set(call, &parsed, policy).await
            })
            .await
    }

    /// `policies.delete`.
    pub async fn delete_org_policy(&self, caller: &Caller, name: &str) -> Result<(), KmsError> {
        let op = Op::of(org_policy::SERVICE, "DeletePolicy", AuditKind::Activity);
        self.gate
            .run(caller, op, name.to_string(), Check::InBody, async |call| {
                let parsed = OrgPolicyName::parse(name)?;
                self.gate.authorize(call, role::ORG_POLICIES_DELETE, &format!("projects/{}", parsed.project)).await?;
                self.org_policies.delete(call, &parsed).await
            })
            .await
    }

    /// Checks a new resource of `service` in `project` against the project's CMEK policies:
    /// `kms_key` is the key it will use (`None`: service-managed encryption). Read as the
    /// service itself, so the caller needs no org-policy permission.
    pub async fn check_cmek_org_policies(
        &self,
        project: &str,
        service: &str,
        kms_key: Option<&str>,
    ) -> Result<(), KmsError> {
        self.org_policies.check_cmek(project, service, kms_key).await
    }

    // ---- the audit log --------------------------------------------------------------------

    /// Reads the audit log of `project` ("-": every project and the server-wide entries, which
    /// needs the permission on the whole server). Activity entries need
    /// `logging.logEntries.list`; data-access entries also `logging.privateLogEntries.list`.
    pub async fn read_audit_log(
        &self,
        caller: &Caller,
        project: &str,
        q: &AuditLogQuery,
    ) -> Result<AuditLogPage, KmsError> {
        let resource = if project == "-" { ROOT_RESOURCE.to_string() } else { format!("projects/{project}") };
        let op = Op::of("logging.googleapis.com", "ListLogEntries", AuditKind::DataAccess);
        self.gate
            .run(caller, op, resource.clone(), Check::InBody, async |call| {
                if project != "-" {
                    keyhold_api::name::check_id("project", project)?;
                }
                self.gate.authorize(call, role::LOG_ENTRIES_LIST, &resource).await?;
                let principal = self.gate.authenticated(call)?;
                let private = self
                    .gate
                    .authz
                    .has_permission(principal, caller.anonymous, role::PRIVATE_LOG_ENTRIES_LIST, &resource)
                    .await?;
                // The entries written before this read (the caller's own included) first.
                self.gate.audit.settle().await?;
                audit::read_page(self.repo.as_ref(), project, &resource, private, q).await
            })
            .await
    }

    /// At shutdown, once no request is in flight: the audit journal's entries into the log and
    /// the journal fsynced (see [`AuditWriter::finish`]).
    pub async fn finish_audit(&self) -> Result<(), KmsError> {
        self.gate.audit.finish().await.map_err(Into::into)
    }

    /// Verifies the whole chain, reading it in pages.
    pub async fn verify_audit_chain(&self) -> Result<ChainVerdict, KmsError> {
        self.gate.audit.settle().await?;
        audit::verify_store_chain(self.repo.as_ref()).await.map_err(Into::into)
    }

    /// Records a request refused before it reached a method (no or bad credentials, a path or
    /// body that does not parse), so that the audit log holds every request.
    pub async fn record_refused_request(
        &self,
        caller: &Caller,
        resource: &str,
        status: &keyhold_api::Status,
    ) -> Result<(), RepoError> {
        self.gate.audit.record_refused(caller, resource, status).await
    }

    // ---- services hosted on the KMS's identities, IAM and audit log (the store) -----------

    /// Starts a call to `service`: checks that the caller holds `permission` on `resource`.
    /// A refusal is recorded at once and returned; on success the caller must hand the call
    /// to [`Kms::finish_service_call`] with its outcome.
    pub async fn begin_service_call<'a>(
        &self,
        caller: &'a Caller,
        service: &'static str,
        method: &'static str,
        resource: String,
        kind: AuditKind,
        permission: Permission,
    ) -> Result<ServiceCall<'a>, KmsError> {
        self.gate.begin_service_call(caller, Op::of(service, method, kind), resource, permission).await
    }

    /// Records the outcome of a service call (`Code::Ok` for success, else the code and the
    /// message the caller was given), unless its success entry was committed with its change
    /// ([`ServiceCall::success_entry`]). Fails if the entry cannot be written: the service must
    /// then not answer as if the call had succeeded.
    pub async fn finish_service_call(
        &self,
        call: ServiceCall<'_>,
        code: keyhold_api::Code,
        message: String,
    ) -> Result<(), KmsError> {
        self.gate.finish_service_call(call, code, message).await
    }

    /// Records that a service call runs on as long-running operation `operation` (its first
    /// entry); its outcome, recorded by [`Kms::finish_service_call`], is the operation's last.
    pub async fn record_service_call_start(&self, call: &ServiceCall<'_>, operation: String) -> Result<(), KmsError> {
        self.gate.record_service_call_start(call, operation).await
    }

    /// Seals a key of an in-process service (service-managed encryption) with the KMS's root
    /// key, bound to `context`. The service stores the result; only this KMS can unseal it.
    pub async fn seal_service_key(&self, key: &KeyBytes, context: &str) -> Result<Vec<u8>, KmsError> {
        self.keys.backends.software().seal_service_key(key, context).await
    }

    /// Unseals what [`Kms::seal_service_key`] sealed with the same `context`.
    pub async fn unseal_service_key(&self, sealed: &[u8], context: &str) -> Result<KeyBytes, KmsError> {
        self.keys.backends.software().unseal_service_key(sealed, context).await
    }

    /// What an in-process service protecting data with `name` (the store) learns of the key
    /// without a read permission: its purpose and its versions' states. Not served over HTTP:
    /// a remote service learns the same from the answers of `:encrypt` / `:decrypt`.
    pub async fn key_facts(&self, name: &CryptoKeyName) -> Result<KeyFacts, KmsError> {
        self.keys.key_facts(name).await
    }

    // ---- background work ------------------------------------------------------------------

    /// Destroys versions whose `destroyTime` has passed and rotates keys whose
    /// `nextRotationTime` has passed.
    pub async fn run_due_work(&self) -> Result<DueWork, KmsError> {
        self.scheduler.run_due_work().await
    }

    /// The key cache's entries and their weight in bytes.
    pub fn key_cache_usage(&self) -> (usize, u64) {
        self.keys.cache_usage()
    }

    /// The IAM policy cache's entries and their weight in bytes.
    pub fn policy_cache_usage(&self) -> (usize, u64) {
        self.gate.authz.policy_cache_usage()
    }

    /// The token cache's entries and their weight in bytes.
    pub fn token_cache_usage(&self) -> (usize, u64) {
        self.identities.token_cache_usage()
    }

    /// Follows what other nodes changed in the shared store, from its change log: a changed key
    /// is dropped from the key cache, a changed policy from the policy cache, a token revocation
    /// empties the token cache, each with its event for the key guards. Only when the log cannot
    /// say what changed (more than [`CHANGES_PER_POLL`] entries since the last poll, entries
    /// pruned, an entry of a kind this build does not know, or a change by a node that does not
    /// log) is every cache dropped, as before the log existed. Returns whether anything changed.
    /// This node's own writes come back too; they were applied locally at once, and dropping the
    /// same entries again is harmless.
    pub async fn sync_with_store(&self) -> Result<bool, KmsError> {
        let now = self.repo.change_counter().await?;
        let last = self.last_change.load(Ordering::Acquire);
        if now == last {
            return Ok(false);
        }
        let changes = self.repo.changes_since(last, CHANGES_PER_POLL + 1).await?;
        let gapless = changes.iter().zip(last + 1..).all(|((seq, _), want)| *seq == want);
        let upto = changes.last().map_or(last, |(seq, _)| *seq);
        let named = changes.iter().all(|(_, c)| *c != Change::Other);
        if gapless && upto >= now && changes.len() as i64 <= CHANGES_PER_POLL && named {
            for (_, change) in &changes {
                self.apply_change(change);
            }
            self.last_change.store(upto, Ordering::Release);
        } else {
            self.keys.clear_cache();
            self.gate.authz.clear();
            self.identities.clear();
            self.events.send(KmsEvent::StoreChanged);
            self.last_change.store(now.max(upto), Ordering::Release);
        }
        Ok(true)
    }

    /// Drops what one logged change makes stale.
    fn apply_change(&self, change: &Change) {
        match change {
            Change::Key(name) => self.keys.key_changed(name),
            Change::Policy(resource) => {
                self.gate.authz.invalidate_policy(resource);
                self.events.send(KmsEvent::PolicyChanged(resource.clone()));
            }
            Change::Tokens => self.identities.clear(),
            // Nothing cached holds key rings, nor projects that do not exist yet, nor tokens
            // not yet known.
            Change::KeyRing(_) | Change::ImportJob(_) | Change::Project(_) | Change::TokenMinted => {}
            // `sync_with_store` drops everything instead.
            Change::Other => {}
        }
    }

    /// Runs the scheduler and the cross-node cache sync until `shutdown` resolves. The sync has
    /// its own task, so that a long scheduler pass (keys being generated) never delays another
    /// node's disable, destroy or revoke reaching this one.
    pub async fn run_background(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let syncing = self.clone();
        let sync_task = tokio::spawn(async move {
            let mut sync = tokio::time::interval(syncing.config.change_poll_interval);
            sync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    _ = sync.tick() => {
                        if let Err(e) = syncing.sync_with_store().await {
                            tracing::warn!(error = %e, "cannot poll the store for changes; will retry");
                        }
                    }
                }
            }
        });
        let mut due = tokio::time::interval(self.config.scheduler_interval);
        due.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = self.due_now.notified() => {}
                _ = due.tick() => {}
            }
            if let Err(e) = self.run_due_work().await {
                tracing::warn!(error = %e, cause = ?std::error::Error::source(&e), "scheduled key work failed; will retry");
            }
        }
        let _ = stop.send(true);
        let _ = sync_task.await;
    }
}

/// Why the KMS cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartupError {
    /// The database refused.
    #[error("cannot open the KMS store: {0}")]
    Store(#[source] RepoError),
    /// The audit journal (`--audit-sync`) cannot be opened or replayed.
    #[error("cannot open the audit journal: {0}")]
    AuditJournal(#[source] RepoError),
    /// The store's keys were sealed by a different root key.
    #[error(
        "this database was sealed with the root key whose fingerprint is {stored}, but the root key given has fingerprint {given}; start with the root key the data was created with (see docs/operations.md)"
    )]
    RootKeyMismatch {
        /// Fingerprint recorded in the store.
        stored: String,
        /// Fingerprint of the key given.
        given: String,
    },
}
