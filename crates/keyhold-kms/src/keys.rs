//! Keys: key rings, crypto keys and their versions ([K2], [K3], [K6], [K7]): their creation,
//! updates, state machine and the in-memory cache the cryptographic path reads. A part of the
//! KMS that never sees the façade: it is handed the call (for its audit entry) once the façade
//! has authorized it. Key material is made and erased by the version's [`crate::backend`].

use std::sync::Arc;

use keyhold_api::page::{Page, PageError, PageRequest};
use keyhold_api::resources::{
    Algorithm, CryptoKey, CryptoKeyVersion, ExternalProtectionLevelOptions, KeyRing, Location, ProtectionLevel,
    Purpose, VersionState, VersionTemplate,
};
use keyhold_api::{CryptoKeyName, CryptoKeyVersionName, KeyRingName, LocationName};
use keyhold_iam::Caller;

use crate::algorithm;
use crate::backend::{Backends, Erasing, NewMaterial};
use crate::cache::{CachedKey, CachedVersion, KeyCache};
use crate::call::{Call, Op};
use crate::clock::Clock;
use crate::config::KmsConfig;
use crate::error::KmsError;
use crate::events::{EventBus, KmsEvent};
use crate::listing::{self, Listing};
use crate::material::VersionMaterial;
use crate::repo::{CryptoKeyRecord, KmsRepository, RepoError, VersionRecord};
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

/// Key rings, keys and versions.
#[derive(Debug)]
pub(crate) struct Keys {
    repo: Arc<dyn KmsRepository>,
    clock: Arc<dyn Clock>,
    config: Arc<KmsConfig>,
    cache: KeyCache,
    pub(crate) backends: Backends,
    events: EventBus,
}

impl Keys {
    pub(crate) fn new(
        repo: Arc<dyn KmsRepository>,
        clock: Arc<dyn Clock>,
        config: Arc<KmsConfig>,
        backends: Backends,
        events: EventBus,
    ) -> Self {
        let cache = KeyCache::new(config.key_cache_bytes);
        Self { repo, clock, config, cache, backends, events }
    }

    /// Forgets every cached key (another node changed the store).
    pub(crate) fn clear_cache(&self) {
        self.cache.clear();
    }

    /// The key cache's entries and their weight in bytes.
    pub(crate) fn cache_usage(&self) -> (usize, u64) {
        self.cache.usage()
    }

    /// Drops a key from the cache and tells listeners it changed.
    pub(crate) fn key_changed(&self, name: &CryptoKeyName) {
        self.cache.invalidate(name);
        self.events.send(KmsEvent::KeyChanged(name.clone()));
    }

    // ---- locations ------------------------------------------------------------------------

    pub(crate) fn check_location(&self, loc: &LocationName) -> Result<(), KmsError> {
        if self.config.locations.contains(&loc.location) {
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

    /// `locations.list`: every location this server serves.
    pub(crate) fn list_locations(&self, project: &str, q: &ListQuery) -> Result<Page<Location>, KmsError> {
        let all = self.config.locations.iter().map(|l| self.location_resource(project, l)).collect();
        listing::in_memory_page(all, q, &format!("projects/{project}/locations"))
    }

    /// `locations.get`.
    pub(crate) fn location(&self, name: &LocationName) -> Result<Location, KmsError> {
        self.check_location(name)?;
        Ok(self.location_resource(&name.project, &name.location))
    }

    // ---- key rings ------------------------------------------------------------------------

    /// `keyRings.create` ([K2]).
    pub(crate) async fn create_key_ring(
        &self,
        call: &Call<'_>,
        parent: &LocationName,
        key_ring_id: &str,
    ) -> Result<KeyRing, KmsError> {
        self.check_location(parent)?;
        let name = KeyRingName::new(parent, key_ring_id)?;
        let ring = KeyRing { name: name.to_string(), create_time: Some(self.clock.now()) };
        match self.repo.insert_key_ring(&name, &ring, &call.success_entry()).await {
            Ok(()) => Ok(ring),
            Err(RepoError::AlreadyExists) => Err(KmsError::KeyRingExists(name)),
            Err(e) => Err(e.into()),
        }
    }

    /// `keyRings.list`.
    pub(crate) async fn list_key_rings(&self, parent: &LocationName, q: &ListQuery) -> Result<Page<KeyRing>, KmsError> {
        self.check_location(parent)?;
        listing::page(&KeyRings { repo: &*self.repo, parent }, q, &parent.to_string()).await
    }

    /// `keyRings.get`.
    pub(crate) async fn key_ring(&self, name: &KeyRingName) -> Result<KeyRing, KmsError> {
        self.repo.key_ring(name).await?.ok_or_else(|| KmsError::KeyRingNotFound(name.clone()))
    }

    // ---- crypto keys ----------------------------------------------------------------------

    /// `cryptoKeys.create` ([K3]).
    pub(crate) async fn create_crypto_key(
        &self,
        call: &Call<'_>,
        parent: &KeyRingName,
        crypto_key_id: &str,
        request: CryptoKey,
        skip_initial_version_creation: bool,
    ) -> Result<CryptoKey, KmsError> {
        let name = CryptoKeyName::new(parent, crypto_key_id)?;
        self.key_ring(parent).await?;
        if let Some(retired) = self.repo.retired_resource_of(&name.to_string()).await? {
            return Err(KmsError::CryptoKeyRetired { key: name, retired: retired.name });
        }
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
        if request.import_only && !skip_initial_version_creation {
            return Err(KmsError::InvalidArgument(
                "An importOnly CryptoKey must be created with skipInitialVersionCreation=true: its versions are \
                 imported with cryptoKeyVersions:import."
                    .into(),
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
            import_only: request.import_only,
            destroy_scheduled_duration: Some(destroy),
            crypto_key_backend: String::new(),
            key_access_justifications_policy: request.key_access_justifications_policy,
        };
        self.check_rotation(&key)?;
        let first = if skip_initial_version_creation {
            None
        } else {
            Some(self.new_version_record(&name.version(1), &key, VersionState::Enabled, None).await?)
        };
        // Only ENCRYPT_DECRYPT keys have a primary version.
        let primary_version = first.as_ref().filter(|_| purpose == Purpose::EncryptDecrypt).map(|_| 1);
        let record = CryptoKeyRecord { name: name.clone(), key, primary_version, revision: 0 };
        match self.repo.insert_crypto_key(&record, first.as_ref(), &call.success_entry()).await {
            Ok(()) => Ok(render_key(&record, first.as_ref())),
            Err(e) => {
                // A key created twice at once (or again) generated an HSM object for nothing.
                if let Some(first) = &first {
                    self.discard_unrecorded_material(first, &e).await;
                }
                match e {
                    RepoError::AlreadyExists => match self.repo.retired_resource_of(&name.to_string()).await? {
                        // Deleted (and retired) while this request ran.
                        Some(retired) => Err(KmsError::CryptoKeyRetired { key: name, retired: retired.name }),
                        None => Err(KmsError::CryptoKeyExists(name)),
                    },
                    e => Err(e.into()),
                }
            }
        }
    }

    /// Whether this server has the template's protection level, and that level makes keys of
    /// its algorithm.
    fn check_protection_level(&self, t: &VersionTemplate) -> Result<(), KmsError> {
        self.backends.for_level(t.protection_level)?.check_algorithm(template_algorithm(t))
    }

    fn check_rotation(&self, key: &CryptoKey) -> Result<(), KmsError> {
        let scheduled = key.rotation_period.is_some() || key.next_rotation_time.is_some();
        if scheduled && key.import_only {
            return Err(KmsError::InvalidArgument(
                "An importOnly CryptoKey cannot rotate automatically: rotationPeriod and nextRotationTime must be \
                 omitted."
                    .into(),
            ));
        }
        if scheduled && key.purpose != Some(Purpose::EncryptDecrypt) {
            return Err(KmsError::InvalidArgument(
                "Only ENCRYPT_DECRYPT keys support automatic rotation: rotationPeriod and nextRotationTime must be omitted for other purposes.".into(),
            ));
        }
        if let Some(p) = key.rotation_period {
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

    /// A new version of `key`, in `state`, with the material its protection level makes (see
    /// [`crate::backend`]). Asymmetric keys start `PENDING_GENERATION` without material instead:
    /// [`Keys::generate_pending`] makes it in the background and enables them.
    pub(crate) async fn new_version_record(
        &self,
        name: &CryptoKeyVersionName,
        key: &CryptoKey,
        state: VersionState,
        external: Option<ExternalProtectionLevelOptions>,
    ) -> Result<VersionRecord, KmsError> {
        let template = key.version_template.clone().unwrap_or_default();
        let now = self.clock.now();
        let mut version = CryptoKeyVersion {
            name: name.to_string(),
            state: Some(state),
            protection_level: template.protection_level,
            algorithm: template.algorithm,
            create_time: Some(now),
            ..Default::default()
        };
        if algorithm::generated_in_background(key.purpose) {
            version.state = Some(VersionState::PendingGeneration);
            return Ok(VersionRecord { name: name.clone(), version, material: VersionMaterial::Erased, revision: 0 });
        }
        let made = self.make_material(name, &template, external.as_ref()).await?;
        version.generate_time = Some(now);
        version.attestation = made.attestation;
        version.external_protection_level_options = made.external_options;
        Ok(VersionRecord { name: name.clone(), version, material: made.material, revision: 0 })
    }

    async fn make_material(
        &self,
        name: &CryptoKeyVersionName,
        template: &VersionTemplate,
        external: Option<&ExternalProtectionLevelOptions>,
    ) -> Result<NewMaterial, KmsError> {
        let level = template.protection_level.unwrap_or(ProtectionLevel::Software);
        self.backends.for_level(Some(level))?.create(name, template_algorithm(template), external).await
    }

    /// Generates the key of a `PENDING_GENERATION` version and enables it (compare-and-set: with
    /// several nodes, one generation wins and the others' material is discarded). A generation
    /// the backend refuses for good leaves the version `GENERATION_FAILED` with the reason.
    /// `pending` is the version as the caller just read it; the compare-and-set reads it again.
    /// Returns whether this call enabled (or failed) the version.
    pub(crate) async fn generate_pending(&self, pending: &VersionRecord) -> Result<bool, KmsError> {
        let name = &pending.name;
        if pending.version.state != Some(VersionState::PendingGeneration) {
            return Ok(false);
        }
        let template = VersionTemplate {
            protection_level: pending.version.protection_level,
            algorithm: pending.version.algorithm,
        };
        let made = match self.make_material(name, &template, None).await {
            // Retried at the next pass: the HSM or root key may be back by then.
            Err(e @ (KmsError::KeyBackendUnavailable { .. } | KmsError::Unavailable(_))) => return Err(e),
            other => other,
        };
        let system = Caller::system("scheduler");
        let call = Call::new(&system, Op::kms_write("GenerateCryptoKeyVersion"), name.to_string());
        call.set_key_version(name.to_string());
        let now = self.clock.now();
        let mut won = false;
        let result = self
            .modify_version(&call, name, |v, _| {
                if v.version.state != Some(VersionState::PendingGeneration) {
                    return Err(KmsError::IllegalTransition {
                        version: name.clone(),
                        state: v.version.state.unwrap_or(VersionState::Unspecified),
                        action: "generation",
                        allowed: "PENDING_GENERATION",
                    });
                }
                match &made {
                    Ok(m) => {
                        v.version.state = Some(VersionState::Enabled);
                        v.version.generate_time = Some(now);
                        v.version.attestation = m.attestation.clone();
                        v.material = m.material.clone();
                    }
                    Err(e) => {
                        v.version.state = Some(VersionState::GenerationFailed);
                        v.version.generation_failure_reason = e.to_string();
                    }
                }
                won = true;
                Ok(())
            })
            .await;
        match (result, made) {
            (Ok(_), Ok(_)) => {
                tracing::info!(version = %name, "key generated; version enabled");
                Ok(won)
            }
            (Ok(_), Err(e)) => {
                tracing::error!(version = %name, error = %e, "key generation failed; version GENERATION_FAILED");
                Ok(won)
            }
            // Generated on another node (or gone) meanwhile: this material was never recorded.
            (Err(KmsError::IllegalTransition { .. } | KmsError::VersionNotFound(_)), made) => {
                if let Ok(m) = made {
                    let level = pending.version.protection_level;
                    if let Ok(backend) = self.backends.for_level(level) {
                        backend.erase(name, &m.material, Erasing::NotCreated).await;
                    }
                }
                Ok(false)
            }
            // The write may have committed (the database went away mid-answer): the material is
            // kept (an HSM object is left for `keyhold hsm reconcile`), and the next pass sees.
            (Err(e), _) => {
                tracing::warn!(version = %name, error = %e, "cannot record a generated key; will retry");
                Err(e)
            }
        }
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
    pub(crate) async fn discard_unrecorded_material(&self, record: &VersionRecord, error: &RepoError) {
        // Only an HSM object lives outside the database.
        if !matches!(record.material, VersionMaterial::Hsm(_)) {
            return;
        }
        let Ok(backend) = self.backends.for_level(record.version.protection_level) else { return };
        if !matches!(error, RepoError::AlreadyExists | RepoError::Conflict | RepoError::Corrupt(_)) {
            tracing::warn!(
                version = %record.name, material = ?record.material, error = %error,
                "the version's insert failed in a way that may still have committed; its HSM key object is left in \
                 the token: `keyhold hsm reconcile` removes it if no version uses it"
            );
            return;
        }
        backend.erase(&record.name, &record.material, Erasing::NotCreated).await;
    }

    /// For a new version, checks the options its protection level needs (EXTERNAL: the key
    /// URI), before a version ID is used up.
    fn check_version_options(
        &self,
        level: Option<ProtectionLevel>,
        options: Option<&ExternalProtectionLevelOptions>,
    ) -> Result<(), KmsError> {
        self.backends.for_level(level)?.check_options(options)
    }

    /// `cryptoKeys.get`.
    pub(crate) async fn crypto_key(&self, name: &CryptoKeyName) -> Result<CryptoKey, KmsError> {
        let entry = self.cached(name).await?;
        let primary = entry.record.primary_version.and_then(|id| entry.versions.get(&id)).map(|v| &v.record);
        Ok(render_key(&entry.record, primary))
    }

    /// `cryptoKeys.list`.
    pub(crate) async fn list_crypto_keys(
        &self,
        parent: &KeyRingName,
        q: &ListQuery,
    ) -> Result<Page<CryptoKey>, KmsError> {
        self.key_ring(parent).await?;
        listing::page(&CryptoKeys { repo: &*self.repo, parent }, q, &parent.to_string()).await
    }

    /// `cryptoKeys.patch` with an `updateMask`.
    pub(crate) async fn update_crypto_key(
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
                            let t = validate::template(key.purpose.unwrap_or(Purpose::EncryptDecrypt), Some(t))?;
                            self.check_protection_level(&t)?;
                            key.version_template = Some(t);
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
    pub(crate) async fn update_primary_version(
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
        let key = self.repo.crypto_key(name).await?.ok_or_else(|| KmsError::CryptoKeyNotFound(name.clone()))?;
        require_encrypt_decrypt(&key)?;
        let version =
            self.repo.version(&version_name).await?.ok_or_else(|| KmsError::VersionNotFound(version_name.clone()))?;
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
            Some(id) => self.repo.version(&record.name.version(id)).await?,
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
                self.repo.crypto_key(name).await?.ok_or_else(|| KmsError::CryptoKeyNotFound(name.clone()))?;
            change(&mut record)?;
            match self.repo.update_crypto_key(&record, &call.success_entry()).await {
                Ok(rev) => {
                    record.revision = rev;
                    self.key_changed(name);
                    return Ok(record);
                }
                Err(RepoError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(KmsError::Contention(name.to_string()))
    }

    // ---- versions -------------------------------------------------------------------------

    /// `cryptoKeyVersions.create` ([K6]): a new version with the next ID, not primary.
    pub(crate) async fn create_version(
        &self,
        call: &Call<'_>,
        parent: &CryptoKeyName,
        request: CryptoKeyVersion,
    ) -> Result<CryptoKeyVersion, KmsError> {
        let key = self.repo.crypto_key(parent).await?.ok_or_else(|| KmsError::CryptoKeyNotFound(parent.clone()))?;
        if key.key.import_only {
            return Err(KmsError::FailedPrecondition(format!(
                "CryptoKey {parent} is importOnly: its versions are imported with cryptoKeyVersions:import."
            )));
        }
        let state = match request.state {
            None | Some(VersionState::Unspecified) | Some(VersionState::Enabled) => VersionState::Enabled,
            Some(VersionState::Disabled) => VersionState::Disabled,
            Some(s) => {
                return Err(KmsError::InvalidArgument(format!(
                    "A new CryptoKeyVersion may be created ENABLED or DISABLED, not {s}."
                )));
            }
        };
        if state == VersionState::Disabled && algorithm::generated_in_background(key.key.purpose) {
            return Err(KmsError::InvalidArgument(
                "A new version of an asymmetric key starts PENDING_GENERATION and is enabled once its key is generated; create it without state, then disable it.".into(),
            ));
        }
        let template = key.key.version_template.clone().unwrap_or_default();
        self.check_protection_level(&template)?;
        // Checked before an ID is used up, so a refused request leaves no gap.
        self.check_version_options(
            Some(template.protection_level.unwrap_or(ProtectionLevel::Software)),
            request.external_protection_level_options.as_ref(),
        )?;
        let id = self.repo.allocate_version_id(parent).await?;
        let record = self
            .new_version_record(&parent.version(id), &key.key, state, request.external_protection_level_options)
            .await?;
        call.set_key_version(record.name.to_string());
        if let Err(e) = self.repo.insert_version(&record, false, &call.success_entry()).await {
            self.discard_unrecorded_material(&record, &e).await;
            return Err(match e {
                // The key was deleted while this request ran.
                RepoError::Conflict => KmsError::CryptoKeyNotFound(parent.clone()),
                e => e.into(),
            });
        }
        self.key_changed(parent);
        Ok(record.version)
    }

    /// `cryptoKeyVersions.get`.
    pub(crate) async fn version(&self, name: &CryptoKeyVersionName) -> Result<CryptoKeyVersion, KmsError> {
        match self.repo.version(name).await? {
            Some(v) => Ok(v.version),
            None => {
                // Say which level is missing, as Cloud KMS does.
                self.repo
                    .crypto_key(&name.crypto_key)
                    .await?
                    .ok_or_else(|| KmsError::CryptoKeyNotFound(name.crypto_key.clone()))?;
                Err(KmsError::VersionNotFound(name.clone()))
            }
        }
    }

    /// `cryptoKeyVersions.list`.
    pub(crate) async fn list_versions(
        &self,
        parent: &CryptoKeyName,
        q: &ListQuery,
    ) -> Result<Page<CryptoKeyVersion>, KmsError> {
        self.repo.crypto_key(parent).await?.ok_or_else(|| KmsError::CryptoKeyNotFound(parent.clone()))?;
        listing::page(&Versions { repo: &*self.repo, key: parent }, q, &parent.to_string()).await
    }

    /// `cryptoKeyVersions.patch`: only `state`, between ENABLED and DISABLED ([K7]).
    pub(crate) async fn update_version(
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
    pub(crate) async fn destroy_version(
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
    pub(crate) async fn restore_version(
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
        let key = self.repo.crypto_key(key_name).await?.ok_or_else(|| KmsError::CryptoKeyNotFound(key_name.clone()))?;
        for _ in 0..CAS_ATTEMPTS {
            let mut v = self.repo.version(name).await?.ok_or_else(|| KmsError::VersionNotFound(name.clone()))?;
            change(&mut v, &key)?;
            match self.repo.update_version(&v, &call.success_entry()).await {
                Ok(rev) => {
                    v.revision = rev;
                    self.key_changed(key_name);
                    return Ok(v);
                }
                Err(RepoError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(KmsError::Contention(name.to_string()))
    }

    // ---- cache ----------------------------------------------------------------------------

    /// The cached view of a key, loading it if needed (one load however many requests miss it
    /// at once).
    pub(crate) async fn cached(&self, name: &CryptoKeyName) -> Result<Arc<CachedKey>, KmsError> {
        self.cache.get_or_load(name, || self.load(name)).await
    }

    /// The key read again from the store in place of `held`, which lacks a version (perhaps
    /// created on another node since it was loaded); at most once per
    /// [`crate::cache::MIN_REFRESH_INTERVAL`] per key, else `held` itself.
    pub(crate) async fn refresh_cached(
        &self,
        name: &CryptoKeyName,
        held: &Arc<CachedKey>,
    ) -> Result<Arc<CachedKey>, KmsError> {
        self.cache.refresh(name, held, || self.load(name)).await
    }

    /// Reads a key and its versions from the store.
    async fn load(&self, name: &CryptoKeyName) -> Result<CachedKey, KmsError> {
        let record = self.repo.crypto_key(name).await?.ok_or_else(|| KmsError::CryptoKeyNotFound(name.clone()))?;
        let versions = self
            .repo
            .list_versions(name, 0, i64::MAX)
            .await?
            .into_iter()
            .map(|v| (v.name.version, Box::new(CachedVersion::new(v))))
            .collect();
        Ok(CachedKey::new(record, versions))
    }

    /// What an in-process service protecting data with `name` (the store) learns of the key
    /// without a read permission: its purpose and its versions' states. Not served over HTTP:
    /// a remote service learns the same from the answers of `:encrypt` / `:decrypt`.
    pub(crate) async fn key_facts(&self, name: &CryptoKeyName) -> Result<KeyFacts, KmsError> {
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
}

/// See [`crate::Kms::key_facts`].
#[derive(Debug, Clone)]
pub struct KeyFacts {
    /// The key's purpose.
    pub purpose: Purpose,
    /// Its primary version, if any.
    pub primary: Option<CryptoKeyVersionName>,
    /// Every version and its state.
    pub versions: Vec<(CryptoKeyVersionName, VersionState)>,
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

/// A template's algorithm (always set by [`validate::template`]; the level's symmetric
/// default for a record written before it was).
fn template_algorithm(t: &VersionTemplate) -> Algorithm {
    match (t.algorithm, t.protection_level) {
        (Some(a), _) => a,
        (None, Some(ProtectionLevel::External | ProtectionLevel::ExternalVpc)) => {
            Algorithm::ExternalSymmetricEncryption
        }
        (None, _) => Algorithm::GoogleSymmetricEncryption,
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

/// The database's limit for a batch of `limit` items.
fn limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// A location's key rings, by name.
struct KeyRings<'a> {
    repo: &'a dyn KmsRepository,
    parent: &'a LocationName,
}

impl Listing for KeyRings<'_> {
    type Item = KeyRing;
    async fn fetch(&self, after: &str, n: usize) -> Result<Vec<(String, KeyRing)>, KmsError> {
        let rings = self.repo.list_key_rings(self.parent, after, limit(n)).await?;
        Ok(rings.into_iter().map(|r| (r.name.clone(), r)).collect())
    }
    async fn count(&self) -> Result<i64, KmsError> {
        Ok(self.repo.count_key_rings(self.parent).await?)
    }
}

/// A key ring's keys, by name, each with its primary version.
struct CryptoKeys<'a> {
    repo: &'a dyn KmsRepository,
    parent: &'a KeyRingName,
}

impl Listing for CryptoKeys<'_> {
    type Item = CryptoKey;
    async fn fetch(&self, after: &str, n: usize) -> Result<Vec<(String, CryptoKey)>, KmsError> {
        let keys = self.repo.list_crypto_keys(self.parent, after, limit(n)).await?;
        Ok(keys
            .iter()
            .map(|(record, primary)| (record.name.to_string(), render_key(record, primary.as_ref())))
            .collect())
    }
    async fn count(&self) -> Result<i64, KmsError> {
        Ok(self.repo.count_crypto_keys(self.parent).await?)
    }
}

/// A key's versions, by ID (the key: the ID in decimal).
struct Versions<'a> {
    repo: &'a dyn KmsRepository,
    key: &'a CryptoKeyName,
}

impl Listing for Versions<'_> {
    type Item = CryptoKeyVersion;
    async fn fetch(&self, after: &str, n: usize) -> Result<Vec<(String, CryptoKeyVersion)>, KmsError> {
        let after = match after {
            "" => 0,
            id => id.parse().map_err(|_| KmsError::InvalidArgument(PageError::BadToken.to_string()))?,
        };
        let versions = self.repo.list_versions(self.key, after, limit(n)).await?;
        Ok(versions.into_iter().map(|v| (v.name.version.to_string(), v.version)).collect())
    }
    async fn count(&self) -> Result<i64, KmsError> {
        Ok(self.repo.count_versions(self.key).await?)
    }
}
