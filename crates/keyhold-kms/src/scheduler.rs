//! Work that happens by itself: the generation of asymmetric keys created `PENDING_GENERATION`,
//! scheduled destruction ([K7]) and automatic rotation ([K6]).
//!
//! Both are driven by times stored in the database, so a server restarted in the middle of a
//! `destroyScheduledDuration` still destroys on time: the first pass after start catches up.
//! With several nodes on one database every node runs the scheduler; compare-and-set updates
//! make each destruction and each rotation happen exactly once.

use std::sync::Arc;

use keyhold_api::resources::VersionState;
use keyhold_api::{CryptoKeyName, CryptoKeyVersionName};
use keyhold_iam::Caller;

use crate::backend::Erasing;
use crate::call::{Call, Op};
use crate::clock::Clock;
use crate::error::KmsError;
use crate::keys::Keys;
use crate::material::VersionMaterial;
use crate::repo::{KmsRepository, RepoError};

/// What one scheduler pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DueWork {
    /// Versions whose key was generated (or whose generation failed for good).
    pub generated: usize,
    /// Versions destroyed.
    pub destroyed: usize,
    /// Keys rotated.
    pub rotated: usize,
    /// Expired import jobs whose wrapping key was erased.
    pub wrapping_keys_erased: usize,
}

/// Runs what is due: a part of the KMS over its keys, which never sees the façade.
#[derive(Debug)]
pub(crate) struct Scheduler {
    repo: Arc<dyn KmsRepository>,
    clock: Arc<dyn Clock>,
    keys: Arc<Keys>,
}

impl Scheduler {
    pub(crate) fn new(repo: Arc<dyn KmsRepository>, clock: Arc<dyn Clock>, keys: Arc<Keys>) -> Self {
        Self { repo, clock, keys }
    }

    /// Destroys versions whose `destroyTime` has passed, rotates keys whose `nextRotationTime`
    /// has passed, then generates the keys of `PENDING_GENERATION` versions (last: an RSA-4096
    /// key takes up to a second, and destruction must keep its deadline). One item's failure
    /// is logged and does not hold up the others; the pass then answers the first failure.
    pub(crate) async fn run_due_work(&self) -> Result<DueWork, KmsError> {
        let now = self.clock.now();
        let mut done = DueWork::default();
        let mut first_failure = None;
        let mut failed = |what: &str, name: &dyn std::fmt::Display, e: KmsError| {
            tracing::warn!(%name, error = %e, "scheduled {what} failed; will retry");
            first_failure.get_or_insert(e);
        };
        let mut pending = Vec::new();
        for name in self.repo.versions_due(now).await? {
            // Read once and act by state: a version generated or restored meanwhile is left alone.
            let version = match self.repo.version(&name).await {
                Ok(Some(v)) => v,
                Ok(None) => continue,
                Err(e) => {
                    failed("destruction", &name, e.into());
                    continue;
                }
            };
            match version.version.state {
                Some(VersionState::PendingGeneration) => pending.push(version),
                Some(VersionState::DestroyScheduled) => match self.complete_destruction(&name).await {
                    Ok(did) => done.destroyed += usize::from(did),
                    Err(e) => failed("destruction", &name, e),
                },
                _ => {}
            }
        }
        for name in self.repo.keys_due_for_rotation(now).await? {
            match self.rotate_if_due(&name).await {
                Ok(did) => done.rotated += usize::from(did),
                Err(e) => failed("rotation", &name, e),
            }
        }
        // An expired import job's wrapping key goes, as Cloud KMS destroys it: wrapped key
        // material captured in transit can no longer be unwrapped with it.
        match self.repo.erase_expired_wrapping_keys(now).await {
            Ok(n) => done.wrapping_keys_erased += usize::try_from(n).unwrap_or(usize::MAX),
            Err(e) => failed("wrapping key erasure", &"expired import jobs", e.into()),
        }
        for version in pending {
            match self.keys.generate_pending(&version).await {
                Ok(did) => done.generated += usize::from(did),
                Err(e) => failed("key generation", &version.name, e),
            }
        }
        match first_failure {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }

    /// DESTROY_SCHEDULED -> DESTROYED, erasing the material. Returns whether this call did it.
    async fn complete_destruction(&self, name: &CryptoKeyVersionName) -> Result<bool, KmsError> {
        let now = self.clock.now();
        let mut did = false;
        let mut erased = None;
        let system = Caller::system("scheduler");
        let call = Call::new(&system, Op::kms_write("ScheduledDestruction"), name.to_string());
        let result = self
            .keys
            .modify_version(&call, name, |v, _| {
                did = false;
                erased = None;
                let due = v.version.destroy_time.is_some_and(|t| t <= now);
                if v.version.state != Some(VersionState::DestroyScheduled) || !due {
                    // Restored, or destroyed elsewhere, meanwhile: nothing to write.
                    return Err(KmsError::IllegalTransition {
                        version: name.clone(),
                        state: v.version.state.unwrap_or(VersionState::Unspecified),
                        action: "scheduled destruction",
                        allowed: "DESTROY_SCHEDULED past its destroyTime",
                    });
                }
                v.version.state = Some(VersionState::Destroyed);
                v.version.destroy_time = None;
                v.version.destroy_event_time = Some(now);
                erased =
                    Some((v.version.protection_level, std::mem::replace(&mut v.material, VersionMaterial::Erased)));
                did = true;
                Ok(())
            })
            .await;
        match result {
            Ok(_) => {
                if did {
                    tracing::info!(version = %name, "key version destroyed; its material is erased");
                }
                if let Some((level, material)) = erased {
                    self.erase(name, level, &material).await;
                }
                Ok(did)
            }
            // Restored or already handled elsewhere in the meantime.
            Err(KmsError::VersionNotFound(_) | KmsError::IllegalTransition { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes a destroyed version's material from where it lives outside the database (an
    /// HSM object). The version is already DESTROYED in the database, so Keyhold can never use
    /// it again; if the backend is unavailable now the object stays behind, and the log line
    /// names it for the operator.
    async fn erase(
        &self,
        name: &CryptoKeyVersionName,
        level: Option<keyhold_api::resources::ProtectionLevel>,
        material: &VersionMaterial,
    ) {
        match self.keys.backends.for_level(level) {
            Ok(backend) => backend.erase(name, material, Erasing::Destroyed).await,
            Err(e) if matches!(material, VersionMaterial::Hsm(_)) => tracing::error!(
                version = %name, ?material, error = %e,
                "no HSM configured: the destroyed version's token object remains"
            ),
            Err(_) => {}
        }
    }

    /// Makes a new primary version if the key's rotation is due. The rotation is claimed by
    /// advancing `nextRotationTime` with compare-and-set first, so two nodes never both rotate.
    async fn rotate_if_due(&self, name: &CryptoKeyName) -> Result<bool, KmsError> {
        let now = self.clock.now();
        let mut claimed = false;
        let system = Caller::system("scheduler");
        let call = Call::new(&system, Op::kms_write("AutomaticRotation"), name.to_string());
        let record = self
            .keys
            .modify_key(&call, name, |record| {
                claimed = false;
                let key = &mut record.key;
                if key.purpose != Some(keyhold_api::resources::Purpose::EncryptDecrypt) {
                    // Only ENCRYPT_DECRYPT keys rotate (and have a primary): a schedule on another
                    // key (refused since; written by an older build) is cleared, not followed.
                    key.next_rotation_time = None;
                    key.rotation_period = None;
                    return Ok(());
                }
                let Some(next) = key.next_rotation_time.filter(|t| *t <= now) else { return Ok(()) };
                key.next_rotation_time = match key.rotation_period {
                    Some(p) if p.as_nanos() > 0 => {
                        let mut t = next;
                        while t <= now {
                            t = t.add(p);
                        }
                        Some(t)
                    }
                    _ => None,
                };
                claimed = true;
                Ok(())
            })
            .await?;
        if !claimed {
            return Ok(false);
        }
        let id = self.repo.allocate_version_id(name).await?;
        let version = self.keys.new_version_record(&name.version(id), &record.key, VersionState::Enabled, None).await?;
        let call = Call::new(&system, Op::kms_write("CreateCryptoKeyVersion"), name.to_string());
        call.set_key_version(version.name.to_string());
        if let Err(e) = self.repo.insert_version(&version, true, &call.success_entry()).await {
            self.keys.discard_unrecorded_material(&version, &e).await;
            return Err(match e {
                // The key was deleted meanwhile: nothing to rotate.
                RepoError::Conflict => KmsError::CryptoKeyNotFound(name.clone()),
                e => e.into(),
            });
        }
        self.keys.key_changed(name);
        tracing::info!(key = %name, version = id, "key rotated automatically");
        Ok(true)
    }
}
