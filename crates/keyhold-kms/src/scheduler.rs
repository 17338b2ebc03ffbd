//! Work that happens by itself: scheduled destruction ([K7]) and automatic rotation ([K6]).
//!
//! Both are driven by times stored in the database, so a server restarted in the middle of a
//! `destroyScheduledDuration` still destroys on time: the first pass after start catches up.
//! With several nodes on one database every node runs the scheduler; compare-and-set updates
//! make each destruction and each rotation happen exactly once.

use std::future::Future;
use std::sync::Arc;

use keyhold_api::resources::{ProtectionLevel, VersionState};
use keyhold_api::{CryptoKeyName, CryptoKeyVersionName};

use crate::audit::AuditKind;
use crate::backends::BackendError;
use crate::caller::{Call, Caller};
use crate::error::KmsError;
use crate::service::Kms;

/// What one scheduler pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DueWork {
    /// Versions destroyed.
    pub destroyed: usize,
    /// Keys rotated.
    pub rotated: usize,
}

impl Kms {
    /// Destroys versions whose `destroyTime` has passed and rotates keys whose
    /// `nextRotationTime` has passed.
    pub async fn run_due_work(&self) -> Result<DueWork, KmsError> {
        let now = self.clock.now();
        let mut done = DueWork::default();
        for name in self.store.versions_due_for_destruction(now).await? {
            if self.complete_destruction(&name).await? {
                done.destroyed += 1;
            }
        }
        for name in self.store.keys_due_for_rotation(now).await? {
            if self.rotate_if_due(&name).await? {
                done.rotated += 1;
            }
        }
        Ok(done)
    }

    /// DESTROY_SCHEDULED -> DESTROYED, erasing the material. Returns whether this call did it.
    async fn complete_destruction(&self, name: &CryptoKeyVersionName) -> Result<bool, KmsError> {
        let now = self.clock.now();
        let mut did = false;
        let mut hsm_object = None;
        let system = Caller::system("scheduler");
        let call = Call::new(&system, "ScheduledDestruction", name.to_string(), AuditKind::Activity);
        let result = self
            .modify_version(&call, name, |v, _| {
                did = false;
                hsm_object = None;
                let due = v.version.destroy_time.is_some_and(|t| t <= now);
                if v.version.state == Some(VersionState::DestroyScheduled) && due {
                    v.version.state = Some(VersionState::Destroyed);
                    v.version.destroy_time = None;
                    v.version.destroy_event_time = Some(now);
                    if v.version.protection_level == Some(ProtectionLevel::Hsm) {
                        hsm_object = v.material.clone().and_then(|m| String::from_utf8(m).ok());
                    }
                    v.material = None;
                    did = true;
                }
                Ok(())
            })
            .await;
        match result {
            Ok(_) => {
                if did {
                    tracing::info!(version = %name, "key version destroyed; its material is erased");
                }
                if let Some(object) = hsm_object {
                    self.destroy_hsm_object(name, &object).await;
                }
                Ok(did)
            }
            // Restored or already handled elsewhere in the meantime.
            Err(KmsError::VersionNotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes a destroyed HSM version's key object from the token. The version is already
    /// DESTROYED in the database, so Keyhold can never use the object again; if the token is
    /// unavailable now the object stays behind, and the log line names it for the operator.
    async fn destroy_hsm_object(&self, name: &CryptoKeyVersionName, object: &str) {
        let Some(hsm) = self.config.backends.hsm.as_ref() else {
            tracing::error!(version = %name, object, "no HSM configured: the destroyed version's token object remains");
            return;
        };
        match hsm.destroy_key(object).await {
            Ok(()) | Err(BackendError::KeyNotFound(_)) => {
                tracing::info!(version = %name, object, "HSM key object destroyed");
            }
            Err(e) => tracing::error!(
                version = %name, object, error = %e,
                "cannot remove the destroyed version's key object from the HSM; remove it by hand (docs/operations.md)"
            ),
        }
    }

    /// Makes a new primary version if the key's rotation is due. The rotation is claimed by
    /// advancing `nextRotationTime` with compare-and-set first, so two nodes never both rotate.
    async fn rotate_if_due(&self, name: &CryptoKeyName) -> Result<bool, KmsError> {
        let now = self.clock.now();
        let mut claimed = false;
        let system = Caller::system("scheduler");
        let call = Call::new(&system, "AutomaticRotation", name.to_string(), AuditKind::Activity);
        let record = self
            .modify_key(&call, name, |record| {
                claimed = false;
                let key = &mut record.key;
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
        let template = record.key.version_template.clone().unwrap_or_default();
        let id = self.store.allocate_version_id(name).await?;
        let version = self.new_version_record(&name.version(id), &template, VersionState::Enabled, None).await?;
        let call = Call::new(&system, "CreateCryptoKeyVersion", name.to_string(), AuditKind::Activity);
        call.set_key_version(version.name.to_string());
        if let Err(e) = self.store.insert_version(&version, true, &call.success_entry()).await {
            self.discard_unrecorded_material(&version, &e).await;
            return Err(e.into());
        }
        self.key_changed(name);
        tracing::info!(key = %name, version = id, "key rotated automatically");
        Ok(true)
    }

    /// Runs the scheduler and the cross-node cache sync until `shutdown` resolves.
    pub async fn run_background(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        let mut due = tokio::time::interval(self.config.scheduler_interval);
        let mut sync = tokio::time::interval(self.config.change_poll_interval);
        due.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        sync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = due.tick() => {
                    if let Err(e) = self.run_due_work().await {
                        tracing::warn!(error = %e, cause = ?std::error::Error::source(&e), "scheduled key work failed; will retry");
                    }
                }
                _ = sync.tick() => {
                    if let Err(e) = self.sync_with_store().await {
                        tracing::warn!(error = %e, "cannot poll the store for changes; will retry");
                    }
                }
            }
        }
    }
}
