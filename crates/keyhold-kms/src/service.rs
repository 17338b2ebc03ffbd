//! The KMS service: administrative methods of Cloud KMS v1 on key rings, crypto keys and
//! versions. Cryptographic methods are in `crypto_ops.rs`, scheduled work in [`crate::scheduler`].

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};

use keyhold_api::filter::{Filter, OrderBy};
use keyhold_api::page::{Page, PageError, PageRequest};
use keyhold_api::resources::{
    CryptoKey, CryptoKeyVersion, ExternalProtectionLevelOptions, KeyOperationAttestation, KeyRing, Location,
    ProtectionLevel, Purpose, VersionState, VersionTemplate,
};
use keyhold_api::{CryptoKeyName, CryptoKeyVersionName, KeyRingName, LocationName};
use keyhold_crypto::KeyBytes;
use serde::Serialize;

use keyhold_iam::role;

use crate::audit::{AuditKind, AuditWriter};
use crate::backends::{BackendError, ExternalKeyManager, HsmBackend};
use crate::cache::{CachedKey, CachedVersion, KeyCache};
use crate::caller::{Call, Caller};
use crate::clock::Clock;
use crate::config::KmsConfig;
use crate::error::KmsError;
use crate::events::{EventBus, KmsEvent};
use crate::iam::IamCache;
use crate::identity::TokenCache;
use crate::root_key::RootKey;
use crate::store::{CryptoKeyRecord, KmsStore, StoreError, VersionRecord};
use crate::validate;

/// How many times a compare-and-set update is retried before answering `ABORTED`.
const CAS_ATTEMPTS: usize = 16;

/// Paging, filtering and ordering of a list call.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// `pageSize` and `pageToken`.
    pub page: PageRequest,
    /// `filter`, Cloud KMS syntax.
    pub filter: String,
    /// `orderBy`.
    pub order_by: String,
}

/// What `:encrypt` was called on: a key (its primary version is used) or one version.
#[derive(Debug, Clone)]
pub enum EncryptTarget {
    /// The key's primary version.
    Key(CryptoKeyName),
    /// A specific version.
    Version(CryptoKeyVersionName),
}

/// The KMS.
#[derive(Debug)]
pub struct Kms {
    pub(crate) store: Arc<dyn KmsStore>,
    pub(crate) root: Arc<dyn RootKey>,
    pub(crate) config: KmsConfig,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) cache: KeyCache,
    pub(crate) iam: IamCache,
    pub(crate) tokens: TokenCache,
    pub(crate) audit: AuditWriter,
    pub(crate) last_change: AtomicI64,
    pub(crate) events: EventBus,
    pub(crate) quotas: crate::quota::Quotas,
}

impl Kms {
    /// Opens the KMS on `store`. Refuses to start if the store was sealed under another root key
    /// (every SOFTWARE key would fail to unseal).
    pub async fn new(
        store: Arc<dyn KmsStore>,
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
        let audit = AuditWriter::start(store.clone());
        let quotas = crate::quota::Quotas::new(config.quotas.clone());
        Ok(Self {
            quotas,
            store,
            root,
            config,
            clock,
            cache: KeyCache::default(),
            iam: IamCache::default(),
            tokens: TokenCache::default(),
            audit,
            last_change: AtomicI64::new(last_change),
            events: EventBus::default(),
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

    /// Drops a key from the cache and tells listeners it changed.
    pub(crate) fn key_changed(&self, name: &CryptoKeyName) {
        self.cache.invalidate(name);
        self.events.send(KmsEvent::KeyChanged(name.clone()));
    }

    // ---- locations ------------------------------------------------------------------------

    pub(crate) fn check_location(&self, loc: &LocationName) -> Result<(), KmsError> {
        if self.config.locations.iter().any(|l| *l == loc.location) {
            Ok(())
        } else {
            Err(KmsError::UnsupportedLocation {
                location: loc.to_string(),
                supported: self.config.locations.join(", "),
            })
        }
    }

    fn location_resource(&self, project: &str, id: &str) -> Location {
        Location {
            name: format!("projects/{project}/locations/{id}"),
            location_id: id.to_string(),
            display_name: String::new(),
            labels: Default::default(),
            metadata: Some(serde_json::json!({
                "@type": "type.googleapis.com/google.cloud.kms.v1.LocationMetadata",
                // What this server can serve, from the backends it was started with (finding 9:
                // both were always false, even with --pkcs11-module or --ekm-credentials-file).
                "hsmAvailable": self.config.backends.hsm.is_some(),
                "ekmAvailable": self.config.backends.external.is_some(),
            })),
        }
    }

    /// `locations.list`.
    pub async fn list_locations(
        &self,
        caller: &Caller,
        project: &str,
        q: &ListQuery,
    ) -> Result<Page<Location>, KmsError> {
        let resource = format!("projects/{project}");
        let call = Call::new(caller, "ListLocations", resource.clone(), AuditKind::DataAccess);
        let r = async {
            self.authorize(&call, role::LOCATIONS_LIST, &resource).await?;
            let all = self.config.locations.iter().map(|l| self.location_resource(project, l)).collect();
            list_page(all, q, &format!("projects/{project}/locations"))
        }
        .await;
        self.finish(call, r).await
    }

    /// `locations.get`.
    pub async fn location(&self, caller: &Caller, name: &LocationName) -> Result<Location, KmsError> {
        let call = Call::new(caller, "GetLocation", name.to_string(), AuditKind::DataAccess);
        let r = async {
            self.authorize(&call, role::LOCATIONS_GET, &name.to_string()).await?;
            self.check_location(name)?;
            Ok(self.location_resource(&name.project, &name.location))
        }
        .await;
        self.finish(call, r).await
    }

    // ---- key rings ------------------------------------------------------------------------

    /// `keyRings.create` ([K2]).
    pub async fn create_key_ring(
        &self,
        caller: &Caller,
        parent: &LocationName,
        key_ring_id: &str,
    ) -> Result<KeyRing, KmsError> {
        let call = Call::new(caller, "CreateKeyRing", format!("{parent}/keyRings/{key_ring_id}"), AuditKind::Activity);
        let r = async {
            self.authorize(&call, role::KEY_RINGS_CREATE, &parent.to_string()).await?;
            self.check_location(parent)?;
            let name = KeyRingName::new(parent, key_ring_id)?;
            let ring = KeyRing { name: name.to_string(), create_time: Some(self.clock.now()) };
            match self.store.insert_key_ring(&name, &ring, &call.success_entry()).await {
                Ok(()) => Ok(ring),
                Err(StoreError::AlreadyExists) => Err(KmsError::KeyRingExists(name)),
                Err(e) => Err(e.into()),
            }
        }
        .await;
        self.finish(call, r).await
    }

    async fn require_key_ring(&self, name: &KeyRingName) -> Result<KeyRing, KmsError> {
        self.store.key_ring(name).await?.ok_or_else(|| KmsError::KeyRingNotFound(name.clone()))
    }

    /// `keyRings.get`.
    pub async fn key_ring(&self, caller: &Caller, name: &KeyRingName) -> Result<KeyRing, KmsError> {
        let call = Call::new(caller, "GetKeyRing", name.to_string(), AuditKind::DataAccess);
        let r = async {
            self.authorize(&call, role::KEY_RINGS_GET, &name.to_string()).await?;
            self.require_key_ring(name).await
        }
        .await;
        self.finish(call, r).await
    }

    /// `keyRings.list`.
    pub async fn list_key_rings(
        &self,
        caller: &Caller,
        parent: &LocationName,
        q: &ListQuery,
    ) -> Result<Page<KeyRing>, KmsError> {
        let call = Call::new(caller, "ListKeyRings", parent.to_string(), AuditKind::DataAccess);
        let r = async {
            self.authorize(&call, role::KEY_RINGS_LIST, &parent.to_string()).await?;
            self.check_location(parent)?;
            let all = self.store.list_key_rings(parent).await?;
            list_page(all, q, &parent.to_string())
        }
        .await;
        self.finish(call, r).await
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
        let call =
            Call::new(caller, "CreateCryptoKey", format!("{parent}/cryptoKeys/{crypto_key_id}"), AuditKind::Activity);
        let r = async {
            self.authorize(&call, role::CRYPTO_KEYS_CREATE, &parent.to_string()).await?;
            self.create_crypto_key_authorized(&call, parent, crypto_key_id, request, skip_initial_version_creation)
                .await
        }
        .await;
        self.finish(call, r).await
    }

    async fn create_crypto_key_authorized(
        &self,
        call: &Call<'_>,
        parent: &KeyRingName,
        crypto_key_id: &str,
        request: CryptoKey,
        skip_initial_version_creation: bool,
    ) -> Result<CryptoKey, KmsError> {
        let name = CryptoKeyName::new(parent, crypto_key_id)?;
        self.require_key_ring(parent).await?;
        let purpose = match request.purpose {
            None | Some(Purpose::Unspecified) => {
                return Err(KmsError::InvalidArgument(
                    "purpose is required; use ENCRYPT_DECRYPT for symmetric encryption.".into(),
                ));
            }
            Some(p) => p,
        };
        let template = validate::template(purpose, request.version_template.clone())?;
        self.check_protection_level(&template)?;
        if template.protection_level == Some(ProtectionLevel::External) {
            // As Cloud KMS: the manager's key URI comes with each version, so the key starts
            // without one, and EXTERNAL keys do not rotate by themselves.
            if !skip_initial_version_creation {
                return Err(KmsError::InvalidArgument(
                    "CryptoKeys with protection level EXTERNAL must be created with skipInitialVersionCreation=true; then create each version with externalProtectionLevelOptions.externalKeyUri.".into(),
                ));
            }
            if request.rotation_period.is_some() || request.next_rotation_time.is_some() {
                return Err(KmsError::InvalidArgument(
                    "CryptoKeys with protection level EXTERNAL cannot rotate automatically: rotate by creating a version with a new externalKeyUri.".into(),
                ));
            }
        }
        validate::labels(&request.labels)?;
        if request.import_only {
            return Err(KmsError::Unimplemented(
                "importOnly keys are not supported: Keyhold has no import jobs yet.".into(),
            ));
        }
        if !request.crypto_key_backend.is_empty() {
            return Err(KmsError::Unimplemented("cryptoKeyBackend (EKM connections) is not supported.".into()));
        }
        let destroy = request.destroy_scheduled_duration.unwrap_or(self.config.default_destroy_scheduled_duration);
        validate::duration_in(
            "destroy_scheduled_duration",
            destroy,
            self.config.min_destroy_scheduled_duration,
            self.config.max_destroy_scheduled_duration,
        )?;
        let now = self.clock.now();
        let key = CryptoKey {
            name: name.to_string(),
            primary: None,
            purpose: Some(purpose),
            create_time: Some(now),
            next_rotation_time: request.next_rotation_time,
            rotation_period: request.rotation_period,
            version_template: Some(template.clone()),
            labels: request.labels,
            import_only: false,
            destroy_scheduled_duration: Some(destroy),
            crypto_key_backend: String::new(),
            key_access_justifications_policy: request.key_access_justifications_policy,
        };
        self.check_rotation(&key)?;
        let first = if skip_initial_version_creation {
            None
        } else {
            Some(self.new_version_record(&name.version(1), &template, VersionState::Enabled, None).await?)
        };
        let record =
            CryptoKeyRecord { name: name.clone(), key, primary_version: first.as_ref().map(|_| 1), revision: 0 };
        match self.store.insert_crypto_key(&record, first.as_ref(), &call.success_entry()).await {
            Ok(()) => Ok(render_key(&record, first.as_ref())),
            Err(e) => {
                // A key created twice at once (or again) generated an HSM object for nothing.
                if let Some(first) = &first {
                    self.discard_unrecorded_material(first, &e).await;
                }
                match e {
                    StoreError::AlreadyExists => Err(KmsError::CryptoKeyExists(name)),
                    e => Err(e.into()),
                }
            }
        }
    }

    fn check_protection_level(&self, t: &VersionTemplate) -> Result<(), KmsError> {
        match t.protection_level {
            Some(ProtectionLevel::Software) => Ok(()),
            Some(ProtectionLevel::Hsm) => self.hsm().map(|_| ()),
            Some(ProtectionLevel::External) => self.external().map(|_| ()),
            Some(l) => Err(KmsError::Unimplemented(format!("Protection level {l} is not available on this server."))),
            None => Err(KmsError::Internal("template without protection level".into())),
        }
    }

    fn check_rotation(&self, key: &CryptoKey) -> Result<(), KmsError> {
        if let Some(p) = key.rotation_period {
            if key.purpose != Some(Purpose::EncryptDecrypt) {
                return Err(KmsError::InvalidArgument("Only ENCRYPT_DECRYPT keys support automatic rotation.".into()));
            }
            validate::duration_in(
                "rotation_period",
                p,
                self.config.min_rotation_period,
                self.config.max_rotation_period,
            )?;
            if key.next_rotation_time.is_none() {
                return Err(KmsError::InvalidArgument(
                    "next_rotation_time must be set when rotation_period is set.".into(),
                ));
            }
        }
        Ok(())
    }

    /// Makes the material of a new version where its protection level keeps it: SOFTWARE
    /// material is generated here and sealed by the root key; HSM material is generated inside
    /// the token (the record keeps only the token object's reference); EXTERNAL versions have
    /// no material here, only the manager's key URI.
    pub(crate) async fn new_version_record(
        &self,
        name: &CryptoKeyVersionName,
        template: &VersionTemplate,
        state: VersionState,
        external: Option<ExternalProtectionLevelOptions>,
    ) -> Result<VersionRecord, KmsError> {
        let level = template.protection_level.unwrap_or(ProtectionLevel::Software);
        let mut attestation = None;
        let mut external_protection_level_options = None;
        let material = match level {
            ProtectionLevel::Software => {
                let material = KeyBytes::generate().map_err(|e| KmsError::Internal(e.to_string()))?;
                let sealed = self
                    .root
                    .seal(&material, &name.to_string())
                    .await
                    .map_err(|e| KmsError::from_backend("The root key", &name.to_string(), e))?;
                Some(sealed)
            }
            ProtectionLevel::Hsm => {
                let hsm = self.hsm()?;
                let label = format!("keyhold:{name}:{}", random_suffix()?);
                let handle = hsm
                    .generate_key(&label)
                    .await
                    .map_err(|e| KmsError::from_backend("The HSM", &name.to_string(), e))?;
                let statement = match hsm.attestation(&handle).await {
                    Ok(statement) => statement,
                    Err(e) => {
                        // No record will name the object just generated: remove it now.
                        discard_hsm_object(hsm.as_ref(), name, &handle).await;
                        return Err(KmsError::from_backend("The HSM", &name.to_string(), e));
                    }
                };
                attestation = Some(KeyOperationAttestation {
                    format: "ATTESTATION_FORMAT_UNSPECIFIED".into(),
                    content: Some(keyhold_api::wire::Bytes(statement.into_bytes())),
                });
                Some(handle.into_bytes())
            }
            ProtectionLevel::External => {
                let uri = self.check_external_options(level, external.as_ref())?.unwrap_or_default();
                external_protection_level_options = Some(ExternalProtectionLevelOptions {
                    external_key_uri: uri,
                    ekm_connection_key_path: String::new(),
                });
                None
            }
            other => {
                return Err(KmsError::Unimplemented(format!(
                    "Protection level {other} is not available on this server."
                )));
            }
        };
        let now = self.clock.now();
        Ok(VersionRecord {
            name: name.clone(),
            version: CryptoKeyVersion {
                name: name.to_string(),
                state: Some(state),
                protection_level: template.protection_level,
                algorithm: template.algorithm,
                create_time: Some(now),
                generate_time: Some(now),
                attestation,
                external_protection_level_options,
                ..Default::default()
            },
            material,
            revision: 0,
        })
    }

    /// After the insert of a new version failed: its HSM object, generated in the token just
    /// before, is destroyed (best effort, logged) so that the token keeps no key object that no
    /// version names (issue 15, finding 10), but only when the failure is definite: the
    /// database refused the insert (`AlreadyExists`, `Conflict`, or an error it answered with,
    /// `Corrupt`), so nothing was written. Any other failure (`Unavailable`: a connection
    /// dropped at COMMIT, a timeout, a busy database) may hide a commit whose answer was lost
    /// and that PostgreSQL has not finished yet, so reading the database again cannot tell
    /// (the re-read could run before that commit landed, and the object of a live version was
    /// destroyed). The object then stays for `keyhold hsm reconcile`, whose grace period covers
    /// such a late commit (docs/operations.md, "HSM reconciliation"). Nothing to do for other
    /// protection levels.
    pub(crate) async fn discard_unrecorded_material(&self, record: &VersionRecord, error: &StoreError) {
        if record.version.protection_level != Some(ProtectionLevel::Hsm) {
            return;
        }
        let (Ok(hsm), Some(object)) =
            (self.hsm(), record.material.as_deref().and_then(|m| std::str::from_utf8(m).ok()))
        else {
            return;
        };
        if !matches!(error, StoreError::AlreadyExists | StoreError::Conflict | StoreError::Corrupt(_)) {
            tracing::warn!(
                version = %record.name, object, error = %error,
                "the version's insert failed in a way that may still have committed; its HSM key object is left in \
                 the token: `keyhold hsm reconcile` removes it if no version uses it"
            );
            return;
        }
        discard_hsm_object(hsm.as_ref(), &record.name, object).await;
    }

    /// For an EXTERNAL version, its key URI, checked; `None` for other protection levels (which
    /// take no external options).
    fn check_external_options(
        &self,
        level: ProtectionLevel,
        options: Option<&ExternalProtectionLevelOptions>,
    ) -> Result<Option<String>, KmsError> {
        if level != ProtectionLevel::External {
            return Ok(None);
        }
        let manager = self.external()?;
        let uri = options.map(|o| o.external_key_uri.as_str()).filter(|u| !u.is_empty()).ok_or_else(|| {
            KmsError::InvalidArgument(
                "An EXTERNAL CryptoKeyVersion needs external_protection_level_options.external_key_uri: the URI of the key in the external key manager."
                    .into(),
            )
        })?;
        validate::external_key_uri(uri)?;
        manager.check_uri(uri).map_err(KmsError::InvalidArgument)?;
        Ok(Some(uri.to_string()))
    }

    /// The HSM, or why HSM keys cannot be used on this server.
    pub(crate) fn hsm(&self) -> Result<&Arc<dyn HsmBackend>, KmsError> {
        self.config.backends.hsm.as_ref().ok_or_else(|| {
            KmsError::Unimplemented(
                "Protection level HSM is not available on this server; start it with --pkcs11-module (see docs/operations.md)."
                    .into(),
            )
        })
    }

    /// The external key manager client, or why EXTERNAL keys cannot be used on this server.
    pub(crate) fn external(&self) -> Result<&Arc<dyn ExternalKeyManager>, KmsError> {
        self.config.backends.external.as_ref().ok_or_else(|| {
            KmsError::Unimplemented(
                "Protection level EXTERNAL is not available on this server; start it with --ekm-credentials-file (see docs/operations.md)."
                    .into(),
            )
        })
    }

    /// `cryptoKeys.get`.
    pub async fn crypto_key(&self, caller: &Caller, name: &CryptoKeyName) -> Result<CryptoKey, KmsError> {
        let call = Call::new(caller, "GetCryptoKey", name.to_string(), AuditKind::DataAccess);
        let r = async {
            self.authorize(&call, role::CRYPTO_KEYS_GET, &name.to_string()).await?;
            let entry = self.cached(name).await?;
            let primary = entry.record.primary_version.and_then(|id| entry.versions.get(&id)).map(|v| &v.record);
            Ok(render_key(&entry.record, primary))
        }
        .await;
        self.finish(call, r).await
    }

    /// `cryptoKeys.list`.
    pub async fn list_crypto_keys(
        &self,
        caller: &Caller,
        parent: &KeyRingName,
        q: &ListQuery,
    ) -> Result<Page<CryptoKey>, KmsError> {
        let call = Call::new(caller, "ListCryptoKeys", parent.to_string(), AuditKind::DataAccess);
        let r = async {
            self.authorize(&call, role::CRYPTO_KEYS_LIST, &parent.to_string()).await?;
            self.require_key_ring(parent).await?;
            let mut all = Vec::new();
            for record in self.store.list_crypto_keys(parent).await? {
                let primary = match record.primary_version {
                    Some(id) => self.store.version(&record.name.version(id)).await?,
                    None => None,
                };
                all.push(render_key(&record, primary.as_ref()));
            }
            list_page(all, q, &parent.to_string())
        }
        .await;
        self.finish(call, r).await
    }

    /// `cryptoKeys.patch` with an `updateMask`.
    pub async fn update_crypto_key(
        &self,
        caller: &Caller,
        name: &CryptoKeyName,
        patch: CryptoKey,
        update_mask: &str,
    ) -> Result<CryptoKey, KmsError> {
        let call = Call::new(caller, "UpdateCryptoKey", name.to_string(), AuditKind::Activity);
        let r = async {
            self.authorize(&call, role::CRYPTO_KEYS_UPDATE, &name.to_string()).await?;
            self.update_crypto_key_authorized(&call, name, patch, update_mask).await
        }
        .await;
        self.finish(call, r).await
    }

    async fn update_crypto_key_authorized(
        &self,
        call: &Call<'_>,
        name: &CryptoKeyName,
        patch: CryptoKey,
        update_mask: &str,
    ) -> Result<CryptoKey, KmsError> {
        let mask = validate::update_mask(update_mask);
        if mask.is_empty() {
            return Err(KmsError::InvalidArgument(
                "update_mask is required: name the fields to change, e.g. updateMask=labels,rotationPeriod.".into(),
            ));
        }
        let updated = self
            .modify_key(call, name, |record| {
                let key = &mut record.key;
                for path in &mask {
                    match path.as_str() {
                        "labels" => {
                            validate::labels(&patch.labels)?;
                            key.labels = patch.labels.clone();
                        }
                        "rotationPeriod" => key.rotation_period = patch.rotation_period,
                        "nextRotationTime" => key.next_rotation_time = patch.next_rotation_time,
                        "versionTemplate.algorithm" | "versionTemplate" => {
                            let current = key.version_template.clone().unwrap_or_default();
                            let asked = patch.version_template.clone().unwrap_or_default();
                            if path == "versionTemplate"
                                && asked.protection_level.is_some()
                                && asked.protection_level != current.protection_level
                            {
                                return Err(KmsError::InvalidArgument(
                                    "versionTemplate.protectionLevel cannot be changed after creation.".into(),
                                ));
                            }
                            let t = VersionTemplate { protection_level: current.protection_level, algorithm: asked.algorithm };
                            key.version_template =
                                Some(validate::template(key.purpose.unwrap_or(Purpose::EncryptDecrypt), Some(t))?);
                        }
                        "keyAccessJustificationsPolicy" => {
                            key.key_access_justifications_policy = patch.key_access_justifications_policy.clone()
                        }
                        other => {
                            return Err(KmsError::InvalidArgument(format!(
                                "update_mask path \"{other}\" cannot be updated; updatable fields are labels, rotationPeriod, nextRotationTime, versionTemplate.algorithm and keyAccessJustificationsPolicy."
                            )));
                        }
                    }
                }
                self.check_rotation(key)
            })
            .await?;
        self.render_key_from_store(&updated).await
    }

    /// `cryptoKeys.updatePrimaryVersion` ([K6]).
    pub async fn update_primary_version(
        &self,
        caller: &Caller,
        name: &CryptoKeyName,
        version_id: &str,
    ) -> Result<CryptoKey, KmsError> {
        let call = Call::new(caller, "UpdateCryptoKeyPrimaryVersion", name.to_string(), AuditKind::Activity);
        let r = async {
            self.authorize(&call, role::CRYPTO_KEYS_UPDATE, &name.to_string()).await?;
            self.update_primary_version_authorized(&call, name, version_id).await
        }
        .await;
        self.finish(call, r).await
    }

    async fn update_primary_version_authorized(
        &self,
        call: &Call<'_>,
        name: &CryptoKeyName,
        version_id: &str,
    ) -> Result<CryptoKey, KmsError> {
        let id = keyhold_api::name::parse_version_id(version_id).ok_or_else(|| {
            KmsError::InvalidArgument(format!(
                "crypto_key_version_id \"{version_id}\" is not a valid version ID (1, 2, ...)."
            ))
        })?;
        let version_name = name.version(id);
        let key = self.store.crypto_key(name).await?.ok_or_else(|| KmsError::CryptoKeyNotFound(name.clone()))?;
        require_encrypt_decrypt(&key)?;
        let version =
            self.store.version(&version_name).await?.ok_or_else(|| KmsError::VersionNotFound(version_name.clone()))?;
        let state = version.version.state.unwrap_or(VersionState::Unspecified);
        if state != VersionState::Enabled {
            return Err(KmsError::VersionNotEnabled { version: version_name, state });
        }
        let updated = self
            .modify_key(call, name, |record| {
                require_encrypt_decrypt(record)?;
                record.primary_version = Some(id);
                Ok(())
            })
            .await?;
        self.render_key_from_store(&updated).await
    }

    async fn render_key_from_store(&self, record: &CryptoKeyRecord) -> Result<CryptoKey, KmsError> {
        let primary = match record.primary_version {
            Some(id) => self.store.version(&record.name.version(id)).await?,
            None => None,
        };
        Ok(render_key(record, primary.as_ref()))
    }

    /// Load-modify-compare-and-set on a crypto key, retried on conflict; invalidates the cache.
    pub(crate) async fn modify_key(
        &self,
        call: &Call<'_>,
        name: &CryptoKeyName,
        mut change: impl FnMut(&mut CryptoKeyRecord) -> Result<(), KmsError>,
    ) -> Result<CryptoKeyRecord, KmsError> {
        for _ in 0..CAS_ATTEMPTS {
            let mut record =
                self.store.crypto_key(name).await?.ok_or_else(|| KmsError::CryptoKeyNotFound(name.clone()))?;
            change(&mut record)?;
            match self.store.update_crypto_key(&record, &call.success_entry()).await {
                Ok(rev) => {
                    record.revision = rev;
                    self.key_changed(name);
                    return Ok(record);
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(KmsError::Contention(name.to_string()))
    }

    // ---- versions -------------------------------------------------------------------------

    /// `cryptoKeyVersions.create` ([K6]): a new version with the next ID, not primary.
    pub async fn create_version(
        &self,
        caller: &Caller,
        parent: &CryptoKeyName,
        request: CryptoKeyVersion,
    ) -> Result<CryptoKeyVersion, KmsError> {
        let call = Call::new(caller, "CreateCryptoKeyVersion", parent.to_string(), AuditKind::Activity);
        let r = async {
            self.authorize(&call, role::VERSIONS_CREATE, &parent.to_string()).await?;
            self.create_version_authorized(&call, parent, request).await
        }
        .await;
        self.finish(call, r).await
    }

    async fn create_version_authorized(
        &self,
        call: &Call<'_>,
        parent: &CryptoKeyName,
        request: CryptoKeyVersion,
    ) -> Result<CryptoKeyVersion, KmsError> {
        let key = self.store.crypto_key(parent).await?.ok_or_else(|| KmsError::CryptoKeyNotFound(parent.clone()))?;
        let state = match request.state {
            None | Some(VersionState::Unspecified) | Some(VersionState::Enabled) => VersionState::Enabled,
            Some(VersionState::Disabled) => VersionState::Disabled,
            Some(s) => {
                return Err(KmsError::InvalidArgument(format!(
                    "A new CryptoKeyVersion may be created ENABLED or DISABLED, not {s}."
                )));
            }
        };
        let template = key.key.version_template.clone().unwrap_or_default();
        self.check_protection_level(&template)?;
        // Checked before an ID is used up, so a refused request leaves no gap.
        self.check_external_options(
            template.protection_level.unwrap_or(ProtectionLevel::Software),
            request.external_protection_level_options.as_ref(),
        )?;
        let id = self.store.allocate_version_id(parent).await?;
        let record = self
            .new_version_record(&parent.version(id), &template, state, request.external_protection_level_options)
            .await?;
        call.set_key_version(record.name.to_string());
        if let Err(e) = self.store.insert_version(&record, false, &call.success_entry()).await {
            self.discard_unrecorded_material(&record, &e).await;
            return Err(e.into());
        }
        self.key_changed(parent);
        Ok(record.version)
    }

    /// `cryptoKeyVersions.get`.
    pub async fn version(&self, caller: &Caller, name: &CryptoKeyVersionName) -> Result<CryptoKeyVersion, KmsError> {
        let call = Call::new(caller, "GetCryptoKeyVersion", name.to_string(), AuditKind::DataAccess);
        let r = async {
            self.authorize(&call, role::VERSIONS_GET, &name.to_string()).await?;
            self.version_authorized(name).await
        }
        .await;
        self.finish(call, r).await
    }

    async fn version_authorized(&self, name: &CryptoKeyVersionName) -> Result<CryptoKeyVersion, KmsError> {
        match self.store.version(name).await? {
            Some(v) => Ok(v.version),
            None => {
                // Say which level is missing, as Cloud KMS does.
                self.store
                    .crypto_key(&name.crypto_key)
                    .await?
                    .ok_or_else(|| KmsError::CryptoKeyNotFound(name.crypto_key.clone()))?;
                Err(KmsError::VersionNotFound(name.clone()))
            }
        }
    }

    /// `cryptoKeyVersions.list`.
    pub async fn list_versions(
        &self,
        caller: &Caller,
        parent: &CryptoKeyName,
        q: &ListQuery,
    ) -> Result<Page<CryptoKeyVersion>, KmsError> {
        let call = Call::new(caller, "ListCryptoKeyVersions", parent.to_string(), AuditKind::DataAccess);
        let r = async {
            self.authorize(&call, role::VERSIONS_LIST, &parent.to_string()).await?;
            self.store.crypto_key(parent).await?.ok_or_else(|| KmsError::CryptoKeyNotFound(parent.clone()))?;
            let all = self.store.list_versions(parent).await?.into_iter().map(|v| v.version).collect();
            list_page(all, q, &parent.to_string())
        }
        .await;
        self.finish(call, r).await
    }

    /// `cryptoKeyVersions.patch`: only `state`, between ENABLED and DISABLED ([K7]).
    pub async fn update_version(
        &self,
        caller: &Caller,
        name: &CryptoKeyVersionName,
        patch: CryptoKeyVersion,
        update_mask: &str,
    ) -> Result<CryptoKeyVersion, KmsError> {
        let call = Call::new(caller, "UpdateCryptoKeyVersion", name.to_string(), AuditKind::Activity);
        let r = async {
            self.authorize(&call, role::VERSIONS_UPDATE, &name.to_string()).await?;
            self.update_version_authorized(&call, name, patch, update_mask).await
        }
        .await;
        self.finish(call, r).await
    }

    async fn update_version_authorized(
        &self,
        call: &Call<'_>,
        name: &CryptoKeyVersionName,
        patch: CryptoKeyVersion,
        update_mask: &str,
    ) -> Result<CryptoKeyVersion, KmsError> {
        let mask = validate::update_mask(update_mask);
        if mask != ["state"] {
            return Err(KmsError::InvalidArgument(
                "update_mask must be \"state\": only a version's state can be updated (ENABLED or DISABLED).".into(),
            ));
        }
        let target = match patch.state {
            Some(s @ (VersionState::Enabled | VersionState::Disabled)) => s,
            other => {
                return Err(KmsError::InvalidArgument(format!(
                    "state may only be set to ENABLED or DISABLED{}; use :destroy and :restore for destruction.",
                    other.map(|s| format!(", not {s}")).unwrap_or_default()
                )));
            }
        };
        self.modify_version(call, name, |v, _| {
            let state = v.version.state.unwrap_or(VersionState::Unspecified);
            if !matches!(state, VersionState::Enabled | VersionState::Disabled) {
                return Err(KmsError::IllegalTransition {
                    version: name.clone(),
                    state,
                    action: "changing the state",
                    allowed: "ENABLED or DISABLED",
                });
            }
            v.version.state = Some(target);
            Ok(())
        })
        .await
        .map(|v| v.version)
    }

    /// `cryptoKeyVersions.destroy`: schedules destruction after the key's
    /// `destroyScheduledDuration` ([K7]).
    pub async fn destroy_version(
        &self,
        caller: &Caller,
        name: &CryptoKeyVersionName,
    ) -> Result<CryptoKeyVersion, KmsError> {
        let call = Call::new(caller, "DestroyCryptoKeyVersion", name.to_string(), AuditKind::Activity);
        let r = async {
            self.authorize(&call, role::VERSIONS_DESTROY, &name.to_string()).await?;
            self.destroy_version_authorized(&call, name).await
        }
        .await;
        self.finish(call, r).await
    }

    async fn destroy_version_authorized(
        &self,
        call: &Call<'_>,
        name: &CryptoKeyVersionName,
    ) -> Result<CryptoKeyVersion, KmsError> {
        let now = self.clock.now();
        self.modify_version(call, name, |v, key| {
            let state = v.version.state.unwrap_or(VersionState::Unspecified);
            if !matches!(state, VersionState::Enabled | VersionState::Disabled) {
                return Err(KmsError::IllegalTransition {
                    version: name.clone(),
                    state,
                    action: "destroy",
                    allowed: "ENABLED or DISABLED",
                });
            }
            let delay = key.key.destroy_scheduled_duration.unwrap_or(self.config.default_destroy_scheduled_duration);
            v.version.state = Some(VersionState::DestroyScheduled);
            v.version.destroy_time = Some(now.add(delay));
            Ok(())
        })
        .await
        .map(|v| v.version)
    }

    /// `cryptoKeyVersions.restore`: `DESTROY_SCHEDULED` back to `DISABLED` ([K7]).
    pub async fn restore_version(
        &self,
        caller: &Caller,
        name: &CryptoKeyVersionName,
    ) -> Result<CryptoKeyVersion, KmsError> {
        let call = Call::new(caller, "RestoreCryptoKeyVersion", name.to_string(), AuditKind::Activity);
        let r = async {
            self.authorize(&call, role::VERSIONS_RESTORE, &name.to_string()).await?;
            self.restore_version_authorized(&call, name).await
        }
        .await;
        self.finish(call, r).await
    }

    async fn restore_version_authorized(
        &self,
        call: &Call<'_>,
        name: &CryptoKeyVersionName,
    ) -> Result<CryptoKeyVersion, KmsError> {
        self.modify_version(call, name, |v, _| {
            let state = v.version.state.unwrap_or(VersionState::Unspecified);
            if state != VersionState::DestroyScheduled {
                return Err(KmsError::IllegalTransition {
                    version: name.clone(),
                    state,
                    action: "restore",
                    allowed: "DESTROY_SCHEDULED",
                });
            }
            v.version.state = Some(VersionState::Disabled);
            v.version.destroy_time = None;
            Ok(())
        })
        .await
        .map(|v| v.version)
    }

    /// Load-modify-compare-and-set on a version, retried on conflict; invalidates the cache.
    pub(crate) async fn modify_version(
        &self,
        call: &Call<'_>,
        name: &CryptoKeyVersionName,
        mut change: impl FnMut(&mut VersionRecord, &CryptoKeyRecord) -> Result<(), KmsError>,
    ) -> Result<VersionRecord, KmsError> {
        let key_name = &name.crypto_key;
        // Read once: the changes made here only read the key's immutable fields
        // (destroyScheduledDuration); the compare-and-set is on the version alone.
        let key =
            self.store.crypto_key(key_name).await?.ok_or_else(|| KmsError::CryptoKeyNotFound(key_name.clone()))?;
        for _ in 0..CAS_ATTEMPTS {
            let mut v = self.store.version(name).await?.ok_or_else(|| KmsError::VersionNotFound(name.clone()))?;
            change(&mut v, &key)?;
            match self.store.update_version(&v, &call.success_entry()).await {
                Ok(rev) => {
                    v.revision = rev;
                    self.key_changed(key_name);
                    return Ok(v);
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(KmsError::Contention(name.to_string()))
    }

    // ---- cache ----------------------------------------------------------------------------

    /// The cached view of a key, loading it if needed.
    pub(crate) async fn cached(&self, name: &CryptoKeyName) -> Result<Arc<CachedKey>, KmsError> {
        match self.cache.get(name) {
            Some(entry) => Ok(entry),
            None => self.load_cached(name).await,
        }
    }

    /// Loads a key and its versions from the store into the cache.
    pub(crate) async fn load_cached(&self, name: &CryptoKeyName) -> Result<Arc<CachedKey>, KmsError> {
        let generation = self.cache.generation();
        let record = self.store.crypto_key(name).await?.ok_or_else(|| KmsError::CryptoKeyNotFound(name.clone()))?;
        let versions = self
            .store
            .list_versions(name)
            .await?
            .into_iter()
            .map(|v| (v.name.version, CachedVersion { record: v, aead: OnceLock::new() }))
            .collect();
        let entry = Arc::new(CachedKey { name: name.to_string(), record, versions });
        self.cache.insert(name.clone(), entry.clone(), generation);
        Ok(entry)
    }

    /// Seals a key of an in-process service (service-managed encryption) with the KMS's root
    /// key, bound to `context`. The service stores the result; only this KMS can unseal it.
    pub async fn seal_service_key(&self, key: &KeyBytes, context: &str) -> Result<Vec<u8>, KmsError> {
        self.root
            .seal(key, &format!("service-key/{context}"))
            .await
            .map_err(|e| KmsError::from_backend("The root key", context, e))
    }

    /// Unseals what [`Kms::seal_service_key`] sealed with the same `context`.
    pub async fn unseal_service_key(&self, sealed: &[u8], context: &str) -> Result<KeyBytes, KmsError> {
        self.root.unseal(sealed, &format!("service-key/{context}")).await.map_err(|e| match e {
            BackendError::Unavailable(_) => KmsError::from_backend("The root key", context, e),
            other => KmsError::Internal(format!("cannot unseal a service key: {other}")),
        })
    }

    /// What an in-process service protecting data with `name` (the store) learns of the key
    /// without a read permission: its purpose and its versions' states. Not served over HTTP:
    /// a remote service learns the same from the answers of `:encrypt` / `:decrypt`.
    pub async fn key_facts(&self, name: &CryptoKeyName) -> Result<KeyFacts, KmsError> {
        let entry = self.cached(name).await?;
        Ok(KeyFacts {
            purpose: entry.record.key.purpose.unwrap_or(Purpose::Unspecified),
            primary: entry.record.primary_version.map(|id| name.version(id)),
            versions: entry
                .versions
                .values()
                .map(|v| (v.record.name.clone(), v.record.version.state.unwrap_or(VersionState::Unspecified)))
                .collect(),
        })
    }

    /// Drops cached state if another node changed the store. Returns whether it did.
    pub async fn sync_with_store(&self) -> Result<bool, KmsError> {
        let now = self.store.change_counter().await?;
        if self.last_change.swap(now, Ordering::AcqRel) != now {
            self.cache.clear();
            self.iam.clear();
            self.tokens.clear();
            self.events.send(KmsEvent::StoreChanged);
            return Ok(true);
        }
        Ok(false)
    }
}

/// See [`Kms::key_facts`].
#[derive(Debug, Clone)]
pub struct KeyFacts {
    /// The key's purpose.
    pub purpose: Purpose,
    /// Its primary version, if any.
    pub primary: Option<CryptoKeyVersionName>,
    /// Every version and its state.
    pub versions: Vec<(CryptoKeyVersionName, VersionState)>,
}

/// Why the KMS cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartupError {
    /// The database refused.
    #[error("cannot open the KMS store: {0}")]
    Store(#[source] StoreError),
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

fn require_encrypt_decrypt(record: &CryptoKeyRecord) -> Result<(), KmsError> {
    match record.key.purpose {
        Some(Purpose::EncryptDecrypt) => Ok(()),
        other => Err(KmsError::WrongPurpose {
            key: record.name.clone(),
            purpose: other.unwrap_or(Purpose::Unspecified),
            required: Purpose::EncryptDecrypt,
        }),
    }
}

/// The CryptoKey resource clients see: the stored record plus its primary version.
pub(crate) fn render_key(record: &CryptoKeyRecord, primary: Option<&VersionRecord>) -> CryptoKey {
    let mut key = record.key.clone();
    if key.purpose == Some(Purpose::EncryptDecrypt) {
        key.primary = primary.map(|v| Box::new(v.version.clone()));
    }
    key
}

/// Filters, orders and pages a complete list.
fn list_page<T: Serialize>(all: Vec<T>, q: &ListQuery, parent: &str) -> Result<Page<T>, KmsError> {
    let filter = Filter::parse(&q.filter).map_err(|e| KmsError::InvalidArgument(format!("Invalid filter: {e}")))?;
    let order = OrderBy::parse(&q.order_by).map_err(|e| KmsError::InvalidArgument(e.to_string()))?;
    let mut rows: Vec<(serde_json::Value, T)> = Vec::with_capacity(all.len());
    for item in all {
        let json = serde_json::to_value(&item).map_err(|e| KmsError::Internal(e.to_string()))?;
        if filter.matches(&json) {
            rows.push((json, item));
        }
    }
    if let Some(order) = order {
        order.sort(&mut rows);
    }
    let query = format!("{parent}\n{}\n{}", q.filter, q.order_by);
    q.page.apply(rows.into_iter().map(|(_, t)| t).collect(), &query).map_err(|e| match e {
        PageError::NegativeSize => KmsError::InvalidArgument("page_size must not be negative.".into()),
        other => KmsError::InvalidArgument(other.to_string()),
    })
}

/// A random suffix that keeps HSM object labels unique even if a version name is reused
/// (a key deleted and created again is not possible in Cloud KMS, but a database restore is).
/// Destroys an HSM object that no version names, best effort: a failure is logged with the way
/// out (`keyhold hsm reconcile`).
async fn discard_hsm_object(hsm: &dyn HsmBackend, name: &CryptoKeyVersionName, object: &str) {
    match hsm.destroy_key(object).await {
        Ok(()) | Err(BackendError::KeyNotFound(_)) => {
            tracing::info!(version = %name, object, "destroyed the HSM key object of a version that was not created");
        }
        Err(e) => tracing::error!(
            version = %name, object, error = %e,
            "cannot destroy the HSM key object of a version that was not created; it is orphaned in the token: \
             remove it with `keyhold hsm reconcile --apply` (docs/operations.md, \"HSM reconciliation\")"
        ),
    }
}

fn random_suffix() -> Result<String, KmsError> {
    let mut b = [0u8; 8];
    keyhold_crypto::random_bytes(&mut b).map_err(|e| KmsError::Internal(e.to_string()))?;
    Ok(keyhold_crypto::hex(&b))
}
