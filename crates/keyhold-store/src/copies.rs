//! Copies that keep their keys ([C8]-[C11]): backups, restores, clones, read replicas, and
//! export and import.
//!
//! Every copy is a re-encryption, never a byte copy: the data is opened with the source's KEKs
//! and sealed again under the copy's own KEK, which the copy's key wraps. So each copy answers
//! to its own key: disabling or destroying it makes that copy (and only it) unreadable, and
//! destroying every version protecting a copy shreds it ([C11]).
//!
//! A copy of a live instance (backup, clone, export) reads a snapshot: the instance's objects
//! are pinned in one transaction ordered against concurrent commits, and pinned generations'
//! chunks and KEKs stay until the copy is done. Writes go on meanwhile; the copy shows the
//! instance as it was at one instant, with no torn object.
//!
//! A new instance (restore, clone, import, replica) is built under its name first and appears
//! only when complete; a failure (or a crash, cleaned up at the next start) leaves nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use keyhold_api::wire::Timestamp;
use keyhold_audit::AuditKind;
use keyhold_cmek::{AccessReason, KeyGuard, WrappedKek};
use keyhold_iam::Caller;
use keyhold_iam::role;

use crate::archive::{ArchiveHeader, ArchiveItem, ArchiveReader, ArchiveWriter, ArchivedObject, read_header};
use crate::error::StoreError;
use crate::model::*;
use crate::operations::Job;
use crate::repo::RepoError;
use crate::service::{
    Audit, COPY_CHUNKS_PER_WRITE, ListRequest, ObjectMeta, Op, Store, Vault, decode_token, encode_token, guard_error,
    page_size,
};

/// Creates `dir` and any missing parent up to the export directory `root`, and makes every
/// directory this creates below the export directory (the project's, and those under it) 0700
/// whatever the umask (finding 4: an archive's directory must not list or expose it to other
/// users of the machine). The export directory itself is made 0700 only when this creates it:
/// an operator may point `--store-export-dir` at a directory whose mode is theirs to choose.
/// A directory this did not create is never changed, and a symbolic link below the export
/// directory is never followed (hardening review): it is refused, named in the error.
async fn private_dirs(root: Option<&Path>, dir: &Path) -> Result<(), StoreError> {
    let io =
        |p: &Path, e: std::io::Error| StoreError::FailedPrecondition(format!("Cannot create {}: {e}", p.display()));
    let private = std::fs::Permissions::from_mode(0o700);
    let below = match root {
        Some(r) => {
            if !tokio::fs::try_exists(r).await.map_err(|e| io(r, e))? {
                tokio::fs::DirBuilder::new().recursive(true).mode(0o700).create(r).await.map_err(|e| io(r, e))?;
                tokio::fs::set_permissions(r, private.clone()).await.map_err(|e| io(r, e))?;
            }
            match dir.strip_prefix(r) {
                Ok(rel) => (r.to_path_buf(), rel.to_path_buf()),
                Err(_) => return Err(StoreError::Internal(format!("{} is outside {}", dir.display(), r.display()))),
            }
        }
        None => (PathBuf::new(), dir.to_path_buf()),
    };
    let (mut at, rel) = below;
    for c in rel.components() {
        at.push(c);
        match tokio::fs::symlink_metadata(&at).await {
            Ok(m) if m.file_type().is_symlink() => return Err(symlink_refused(&at)),
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(StoreError::FailedPrecondition(format!(
                    "{} is not a directory; give a path whose directories are directories.",
                    at.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Created here, not followed: `mkdir` never follows a link at its last
                // component (it fails with "exists").
                tokio::fs::DirBuilder::new().mode(0o700).create(&at).await.map_err(|e| io(&at, e))?;
                tokio::fs::set_permissions(&at, private.clone()).await.map_err(|e| io(&at, e))?;
            }
            Err(e) => return Err(io(&at, e)),
        }
    }
    Ok(())
}

/// The error for a symbolic link found on an export or import path.
fn symlink_refused(at: &Path) -> StoreError {
    StoreError::FailedPrecondition(format!(
        "{} is a symbolic link: exports and imports never follow links inside a project's export directory. \
         Replace it with a directory or a file.",
        at.display()
    ))
}

/// Refuses `path` if the project's export directory `dir` or anything between it and `path`
/// (`path` included) is a symbolic link (hardening review): a link there could lead an
/// export or import of one project into another's directory or outside the export directory.
/// Components that do not exist yet are fine (an export creates them, never following links).
async fn refuse_links(dir: &Path, path: &Path) -> Result<(), StoreError> {
    let Ok(rel) = path.strip_prefix(dir) else {
        return Err(StoreError::Internal(format!("{} is outside {}", path.display(), dir.display())));
    };
    let mut at = dir.to_path_buf();
    let check = |p: PathBuf| async move {
        match tokio::fs::symlink_metadata(&p).await {
            Ok(m) if m.file_type().is_symlink() => Err(symlink_refused(&p)),
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::FailedPrecondition(format!("Cannot look at {}: {e}", p.display()))),
        }
    };
    if !check(at.clone()).await? {
        return Ok(());
    }
    for c in rel.components() {
        at.push(c);
        if !check(at.clone()).await? {
            return Ok(());
        }
    }
    Ok(())
}

/// Objects read per page while copying.
const PAGE: u64 = 100;

fn random_hex(bytes: usize) -> Result<String, StoreError> {
    let mut b = vec![0u8; bytes];
    keyhold_crypto::random_bytes(&mut b).map_err(|e| StoreError::Internal(e.to_string()))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Which key a new backup or restored instance uses.
enum Encryption {
    /// The source's (the instance's for a backup, the backup's for a restore).
    Inherit,
    /// Service-managed.
    GoogleDefault,
    /// This customer key.
    Customer(String),
}

fn encryption_choice(config: Option<EncryptionConfig>, inherit: &[&str]) -> Result<Encryption, StoreError> {
    let c = config.unwrap_or_default();
    let key = c.kms_key_name.trim().to_string();
    let t = c.encryption_type.as_str();
    match t {
        "" | "ENCRYPTION_TYPE_UNSPECIFIED" if key.is_empty() => Ok(Encryption::Inherit),
        "" | "ENCRYPTION_TYPE_UNSPECIFIED" | "CUSTOMER_MANAGED_ENCRYPTION" if !key.is_empty() => {
            Ok(Encryption::Customer(key))
        }
        "CUSTOMER_MANAGED_ENCRYPTION" => Err(StoreError::InvalidArgument(
            "encryptionConfig.kmsKeyName is required with CUSTOMER_MANAGED_ENCRYPTION.".into(),
        )),
        "GOOGLE_DEFAULT_ENCRYPTION" if key.is_empty() => Ok(Encryption::GoogleDefault),
        t if inherit.contains(&t) && key.is_empty() => Ok(Encryption::Inherit),
        t if inherit.contains(&t) || t == "GOOGLE_DEFAULT_ENCRYPTION" => Err(StoreError::InvalidArgument(format!(
            "encryptionConfig.kmsKeyName must be empty with {t}; give CUSTOMER_MANAGED_ENCRYPTION to name a key."
        ))),
        other => Err(StoreError::InvalidArgument(format!(
            "encryptionConfig.encryptionType {other:?} is not one of {}, CUSTOMER_MANAGED_ENCRYPTION, GOOGLE_DEFAULT_ENCRYPTION.",
            inherit.join(", ")
        ))),
    }
}

fn backup_name(instance: &InstanceName, id: &str) -> String {
    format!("{instance}/backups/{id}")
}

/// `projects/P/locations/L/instances/I/backups/B`, checked; returns the instance and the name.
fn parse_backup_name(name: &str) -> Result<(InstanceName, String), StoreError> {
    let (instance, id) = name.rsplit_once("/backups/").ok_or_else(|| {
        StoreError::InvalidArgument(format!(
            "\"{name}\" is not a backup name (projects/PROJECT/locations/LOCATION/instances/INSTANCE/backups/BACKUP)."
        ))
    })?;
    let instance: InstanceName = instance.parse()?;
    check_instance_id(id).map_err(|_| StoreError::InvalidArgument(format!("\"{id}\" is not a valid backup ID.")))?;
    Ok((instance.clone(), backup_name(&instance, id)))
}

fn render_backup(b: &BackupRecord, versions: Vec<String>) -> Backup {
    Backup {
        name: b.name.clone(),
        instance: b.instance.clone(),
        state: b.state.clone(),
        kms_key: b.kms_key.clone(),
        encryption_info: EncryptionInfo {
            encryption_type: if b.kms_key.is_some() {
                "CUSTOMER_MANAGED_ENCRYPTION"
            } else {
                "GOOGLE_DEFAULT_ENCRYPTION"
            },
            kms_key_versions: versions,
            encryption_status: None,
        },
        size_bytes: b.size_bytes.to_string(),
        object_count: b.object_count.to_string(),
        version_time: b.version_time,
        create_time: b.create_time,
    }
}

impl Store {
    // ---- backups ------------------------------------------------------------------------------

    /// `backups.create` ([C8]): a point-in-time copy of the instance under its own KEK, wrapped
    /// by the chosen key's primary version now. Writes to the instance go on meanwhile.
    pub async fn create_backup(
        self: &Arc<Self>,
        caller: &Caller,
        instance: &str,
        backup_id: &str,
        req: CreateBackupRequest,
        job: &Job,
    ) -> Result<Backup, StoreError> {
        let op = Op {
            method: "CreateBackup",
            resource: format!("{instance}/backups/{backup_id}"),
            permission: role::BACKUPS_CREATE,
            kind: AuditKind::Activity,
        };
        self.mutate(caller, op, async |audit| {
            if backup_id.is_empty() {
                return Err(StoreError::InvalidArgument("backupId is required: POST .../backups?backupId=ID.".into()));
            }
            check_instance_id(backup_id)
                .map_err(|_| StoreError::InvalidArgument(format!("Backup ID \"{backup_id}\" is not valid: use 1 to 63 lowercase letters, digits and hyphens, starting with a letter.")))?;
            let record = self.instance_record(instance).await?;
            let name = backup_name(&record.name, backup_id);
            if self.repo.backup(&name).await?.is_some() {
                return Err(StoreError::AlreadyExists(format!("Backup {name} already exists.")));
            }
            let kms_key = match encryption_choice(req.encryption_config, &["USE_DATABASE_ENCRYPTION"])? {
                Encryption::Inherit => record.kms_key.clone(),
                Encryption::GoogleDefault => None,
                Encryption::Customer(k) => Some(k),
            };
            let source = self.vault(&record).await?;
            source.require_access()?;
            let wrapper = self.new_instance_wrapper(&record.name, kms_key.as_deref()).await?;
            let guard = KeyGuard::new(name.clone(), wrapper, self.config.guard, []);
            let (kek, wrapped) = guard.new_kek().await.map_err(|e| guard_error(kms_key.as_deref(), e))?;
            let now = Timestamp::now();
            let backup = BackupRecord {
                name: name.clone(),
                instance: record.name.to_string(),
                kms_key: kms_key.clone(),
                state: "CREATING".into(),
                size_bytes: 0,
                object_count: 0,
                version_time: now,
                create_time: now,
            };
            match self.repo.insert_backup(&backup, &KekRecord { id: 1, wrapped: wrapped.clone(), create_time: now }, &self.node).await
            {
                Err(RepoError::AlreadyExists) => {
                    return Err(StoreError::AlreadyExists(format!("Backup {name} already exists.")));
                }
                r => r?,
            }
            guard.insert(1, kek, wrapped);
            let dest = Vault { resource: name.clone(), kms_key, guard };
            let copied = async {
                job.accept(audit).await?;
                self.copy_snapshot(&source, &dest, job).await
            }
            .await;
            let (size, count) = match copied {
                Ok(c) => c,
                Err(e) => {
                    if let Err(d) = self.repo.discard(&name, &[]).await {
                        tracing::warn!(backup = %name, error = %d, "cannot delete a failed backup; it is retried at the next start");
                    }
                    return Err(e);
                }
            };
            if let Err(e) = self.repo.finish_backup(&name, size, count, &audit.entries()).await {
                // Not finished (its entry could not be written, say): the backup is not kept.
                if let Err(d) = self.repo.discard(&name, &[]).await {
                    tracing::warn!(backup = %name, error = %d, "cannot delete a failed backup; it is retried at the next start");
                }
                if let RepoError::Conflict = e {
                    // Taken for interrupted and cleaned up by another node meanwhile.
                    return Err(StoreError::Aborted(format!(
                        "The backup {name} was cleaned up as interrupted before it was complete; take it again."
                    )));
                }
                return Err(e.into());
            }
            tracing::info!(backup = %name, objects = count, bytes = size, "backup taken");
            let versions = dest.guard.key_versions();
            Ok(render_backup(&BackupRecord { state: "READY".into(), size_bytes: size, object_count: count, ..backup }, versions))
        })
        .await
    }

    /// Copies a snapshot of `source`'s objects into `dest`; returns (bytes, objects).
    async fn copy_snapshot(
        self: &Arc<Self>,
        source: &Vault,
        dest: &Vault,
        job: &Job,
    ) -> Result<(u64, u64), StoreError> {
        self.repo.pin_objects(&source.resource, &dest.resource).await?;
        let copied = self.copy_pinned(source, dest, job).await;
        let released = self.repo.unpin(&source.resource, &dest.resource).await;
        let copied = copied?;
        released?;
        Ok(copied)
    }

    async fn copy_pinned(self: &Arc<Self>, source: &Vault, dest: &Vault, job: &Job) -> Result<(u64, u64), StoreError> {
        let (mut size, mut count) = (0, 0);
        job.set_total(self.repo.count_pinned(&dest.resource).await?);
        let mut after = String::new();
        loop {
            let page = self.repo.pinned_objects(&dest.resource, &after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.name.clone();
            for obj in page {
                self.copy_object(source, &obj, dest).await?;
                size += obj.size;
                count += 1;
                job.step(obj.size).await?;
            }
        }
        job.fence()?;
        Ok((size, count))
    }

    /// Copies every object of `source` (a backup: it does not change) into `dest`.
    async fn copy_all(self: &Arc<Self>, source: &Vault, dest: &Vault, job: &Job) -> Result<(), StoreError> {
        let mut after = String::new();
        loop {
            let page = self.repo.list_objects(&source.resource, "", &after, PAGE).await?;
            let Some(last) = page.last() else { return job.fence() };
            after = last.name.clone();
            for obj in page {
                self.copy_object(source, &obj, dest).await?;
                job.step(obj.size).await?;
            }
        }
    }

    /// One object, opened with the source's KEK and sealed under the destination's.
    async fn copy_object(
        self: &Arc<Self>,
        source: &Vault,
        obj: &ObjectRecord,
        dest: &Vault,
    ) -> Result<ObjectRecord, StoreError> {
        let stream = self.object_stream(source.clone(), obj.clone(), None);
        let meta = ObjectMeta {
            name: &obj.name,
            content_type: &obj.content_type,
            create_time: obj.create_time,
            update_time: obj.update_time,
        };
        self.write_object(dest, &meta, stream, COPY_CHUNKS_PER_WRITE, None).await
    }

    async fn backup_record(&self, name: &str) -> Result<BackupRecord, StoreError> {
        let (_, name) = parse_backup_name(name)?;
        self.repo.backup(&name).await?.ok_or_else(|| StoreError::NotFound(format!("Backup {name} not found.")))
    }

    /// `backups.get`: what it shows never changes after it is taken.
    pub async fn get_backup(&self, caller: &Caller, name: &str) -> Result<Backup, StoreError> {
        let op = Op {
            method: "GetBackup",
            resource: name.to_string(),
            permission: role::BACKUPS_GET,
            kind: AuditKind::DataAccess,
        };
        self.call(caller, op, async {
            let b = self.backup_record(name).await?;
            Ok(render_backup(&b, self.kek_versions(&b.name).await?))
        })
        .await
    }

    /// `backups.list`: an instance's backups (also after the instance is deleted).
    pub async fn list_backups(
        &self,
        caller: &Caller,
        instance: &str,
        req: &ListRequest,
    ) -> Result<ListBackupsResponse, StoreError> {
        let op = Op {
            method: "ListBackups",
            resource: format!("{instance}/backups"),
            permission: role::BACKUPS_LIST,
            kind: AuditKind::DataAccess,
        };
        self.call(caller, op, async {
            let parsed: InstanceName = instance.parse()?;
            let size = page_size(req)? as usize;
            let after = decode_token(&req.page_token)?;
            let all = self.repo.list_backups(&parsed.to_string()).await?;
            let rest: Vec<_> = all.into_iter().filter(|b| b.name > after).collect();
            let next_page_token = if rest.len() > size { encode_token(&rest[size - 1].name) } else { String::new() };
            let mut backups = Vec::new();
            for b in rest.into_iter().take(size) {
                let versions = self.kek_versions(&b.name).await?;
                backups.push(render_backup(&b, versions));
            }
            Ok(ListBackupsResponse { backups, next_page_token })
        })
        .await
    }

    /// `backups.delete`: the backup's data, KEK and record, whatever its key's state.
    pub async fn delete_backup(&self, caller: &Caller, name: &str) -> Result<(), StoreError> {
        let op = Op {
            method: "DeleteBackup",
            resource: name.to_string(),
            permission: role::BACKUPS_DELETE,
            kind: AuditKind::Activity,
        };
        self.mutate(caller, op, async |audit| {
            let b = self.backup_record(name).await?;
            if b.state != "READY" {
                return Err(StoreError::FailedPrecondition(format!(
                    "Backup {} is still being created; delete it when it is READY.",
                    b.name
                )));
            }
            self.repo.discard(&b.name, &audit.entries()).await?;
            Ok(())
        })
        .await
    }

    /// A backup's objects, with a guard checked once against the backup's key.
    async fn backup_vault(&self, b: &BackupRecord) -> Result<Vault, StoreError> {
        let instance: InstanceName = b.instance.parse()?;
        let wrapper = self.wrapper_for(&instance.project, b.kms_key.as_deref()).await?;
        let keks = self.repo.keks(&b.name).await?;
        let guard =
            KeyGuard::new(b.name.clone(), wrapper, self.config.guard, keks.into_iter().map(|k| (k.id, k.wrapped)));
        guard.check().await;
        Ok(Vault { resource: b.name.clone(), kms_key: b.kms_key.clone(), guard })
    }

    /// `instances:restore` ([C8]): a new instance with a backup's data, under the backup's key
    /// or the one the request names. Refused with `FAILED_PRECONDITION` when the backup's key
    /// version cannot be used (disabled, destroyed, access revoked).
    pub async fn restore_instance(
        self: &Arc<Self>,
        caller: &Caller,
        parent: &str,
        req: RestoreInstanceRequest,
        job: &Job,
    ) -> Result<Instance, StoreError> {
        let op = Op {
            method: "RestoreInstance",
            resource: format!("{parent}/instances/{}", req.instance_id),
            permission: role::BACKUPS_RESTORE,
            kind: AuditKind::Activity,
        };
        self.mutate(caller, op, async |audit| {
            let name = self.new_instance_name(parent, &req.instance_id)?;
            if req.backup.is_empty() {
                return Err(StoreError::InvalidArgument("backup is required: the backup's full name.".into()));
            }
            let (_, backup_name) = parse_backup_name(&req.backup)?;
            // Finding 2(b): the caller must be allowed to restore the backup itself, not only
            // to create in the destination; checked before the backup is looked up.
            let dest_project = name.project.clone();
            self.on_source(caller, audit, "RestoreInstance", &dest_project, &backup_name, role::BACKUPS_RESTORE, async |audit| {
            let backup = self.backup_record(&backup_name).await?;
            if backup.state != "READY" {
                return Err(StoreError::FailedPrecondition(format!(
                    "Backup {} is still being created; restore it when it is READY.",
                    backup.name
                )));
            }
            let kms_key =
                match encryption_choice(req.encryption_config, &["USE_CONFIG_DEFAULT_OR_BACKUP_ENCRYPTION"])? {
                    Encryption::Inherit => backup.kms_key.clone(),
                    Encryption::GoogleDefault => None,
                    Encryption::Customer(k) => Some(k),
                };
            let source = self.backup_vault(&backup).await?;
            if let Err(e) = source.guard.require_access() {
                let versions = self.kek_versions(&backup.name).await?.join(", ");
                let detail = match guard_error(backup.kms_key.as_deref(), e) {
                    StoreError::KeyInaccessible { detail, .. } => detail,
                    other => other.to_string(),
                };
                return Err(StoreError::FailedPrecondition(format!(
                    "Backup {} cannot be restored: the key version protecting it ({versions}) cannot be used: {detail}. \
                     Enable the version (or restore it, if it is scheduled for destruction) and retry; once it is destroyed, the backup cannot be read by anyone.",
                    backup.name
                )));
            }
            let store = self.clone();
            job.set_total(backup.object_count);
            self.build_instance(audit, name, kms_key, req.labels, None, move |dest| async move {
                job.accept(audit).await?;
                store.copy_all(&source, &dest, job).await
            })
            .await
            })
            .await
        })
        .await
    }

    /// `instances/ID:clone` ([C9]): a new instance in the same location with a point-in-time
    /// copy of the data, under the same key (another key is refused).
    pub async fn clone_instance(
        self: &Arc<Self>,
        caller: &Caller,
        name: &str,
        req: CloneInstanceRequest,
        job: &Job,
    ) -> Result<Instance, StoreError> {
        let op = Op {
            method: "CloneInstance",
            resource: name.to_string(),
            permission: role::INSTANCES_CLONE,
            kind: AuditKind::Activity,
        };
        self.mutate(caller, op, async |audit| {
            let record = self.instance_record(name).await?;
            if let Some(k) = req.kms_key.as_deref().filter(|k| !k.is_empty())
                && Some(k) != record.kms_key.as_deref()
            {
                return Err(StoreError::FailedPrecondition(format!(
                    "A clone keeps its source's encryption: {} is protected by {}, and so is any clone of it, so kmsKey {k} cannot be used. \
                     To copy the data under another key, take a backup and restore it with encryptionConfig {{encryptionType: CUSTOMER_MANAGED_ENCRYPTION, kmsKeyName: {k}}}, or export and import it.",
                    record.name,
                    record.kms_key.as_deref().unwrap_or("service-managed encryption")
                )));
            }
            if req.destination_instance_id.is_empty() {
                return Err(StoreError::InvalidArgument("destinationInstanceId is required.".into()));
            }
            let dest_name = self.new_instance_name(&record.name.parent(), &req.destination_instance_id)?;
            let source = self.vault(&record).await?;
            source.require_access()?;
            let store = self.clone();
            self.build_instance(audit, dest_name, record.kms_key.clone(), req.labels, None, move |dest| async move {
                job.accept(audit).await?;
                store.copy_snapshot(&source, &dest, job).await.map(|_| ())
            })
            .await
        })
        .await
    }

    /// Builds a new instance: checks its key ([C1], [C12]), reserves its name, gives it a KEK,
    /// lets `fill` write its objects, and only then makes it appear. On failure everything
    /// written is deleted.
    async fn build_instance<F, Fut>(
        &self,
        audit: &Audit<'_>,
        name: InstanceName,
        kms_key: Option<String>,
        labels: BTreeMap<String, String>,
        replica_of: Option<String>,
        fill: F,
    ) -> Result<Instance, StoreError>
    where
        F: FnOnce(Vault) -> Fut,
        Fut: std::future::Future<Output = Result<(), StoreError>>,
    {
        check_labels(&labels)?;
        let resource = name.to_string();
        if self.repo.instance(&resource).await?.is_some() {
            return Err(StoreError::AlreadyExists(format!("Instance {resource} already exists.")));
        }
        let wrapper = self.new_instance_wrapper(&name, kms_key.as_deref()).await?;
        let guard = KeyGuard::new(resource.clone(), wrapper, self.config.guard, []);
        let (kek, wrapped) = guard.new_kek().await.map_err(|e| guard_error(kms_key.as_deref(), e))?;
        let now = Timestamp::now();
        match self.repo.begin_pending(&resource, &self.node, now).await {
            Err(RepoError::AlreadyExists) => {
                return Err(StoreError::AlreadyExists(format!(
                    "Instance {resource} already exists or is being created."
                )));
            }
            r => r?,
        }
        let vault = Vault { resource: resource.clone(), kms_key: kms_key.clone(), guard: guard.clone() };
        let record = InstanceRecord { name, kms_key, labels, create_time: now, replica_of };
        let built = async {
            self.repo.insert_kek(&resource, &KekRecord { id: 1, wrapped: wrapped.clone(), create_time: now }).await?;
            guard.insert(1, kek, wrapped);
            fill(vault).await?;
            self.repo.finish_pending_instance(&record, &audit.entries()).await?;
            Ok::<_, StoreError>(())
        }
        .await;
        if let Err(e) = built {
            if let Err(d) = self.repo.discard(&resource, &[]).await {
                tracing::warn!(instance = %resource, error = %d, "cannot delete a failed build; it is retried at the next start");
            }
            return Err(e);
        }
        let guard = self.guards.insert(guard, &record.create_time.to_string());
        guard.spawn_monitor();
        tracing::info!(instance = %resource, key = ?record.kms_key, "instance built");
        self.render_instance(&record, &guard).await
    }

    // ---- replicas -----------------------------------------------------------------------------

    /// `instances.create` with `replicaOf` ([C10]): a read-only copy that follows its primary.
    /// In the primary's location it uses the primary's key; elsewhere, a key in its own
    /// location. It starts empty and catches up in the background (`lastSyncTime`).
    pub(crate) async fn create_replica(
        &self,
        audit: &Audit<'_>,
        caller: &Caller,
        name: InstanceName,
        primary: &str,
        kms_key: Option<String>,
        labels: BTreeMap<String, String>,
    ) -> Result<Instance, StoreError> {
        let primary_name: InstanceName = primary
            .parse()
            .map_err(|e: keyhold_api::NameError| StoreError::InvalidArgument(format!("replicaOf: {e}")))?;
        if primary_name.project != name.project {
            // Finding 2(b): refused before the primary is looked up, and only after the
            // caller's permission on it is checked (audited in its project), so that nothing
            // about another project's instances is revealed to a caller with no role there.
            let refusal = StoreError::FailedPrecondition(format!(
                "A replica must be in its primary's project ({}); {} is in {}.",
                primary_name.project, name, name.project
            ));
            let primary = primary_name.to_string();
            return self
                .on_source(
                    caller,
                    audit,
                    "CreateInstance",
                    &name.project,
                    &primary,
                    role::INSTANCES_CLONE,
                    async |_| Err(refusal),
                )
                .await;
        }
        let primary = self.instance_record(primary).await.map_err(|e| match e {
            e @ (StoreError::NotFound(_) | StoreError::InstanceNotFound(_)) => {
                StoreError::FailedPrecondition(format!("replicaOf: {e}"))
            }
            other => other,
        })?;
        if primary.replica_of.is_some() {
            return Err(StoreError::FailedPrecondition(format!(
                "{} is itself a replica; replicate its primary {} instead.",
                primary.name,
                primary.replica_of.as_deref().unwrap_or_default()
            )));
        }
        if primary.name.project != name.project {
            return Err(StoreError::FailedPrecondition("A replica must be in its primary's project.".into()));
        }
        let kms_key = if primary.name.location == name.location {
            match (&kms_key, &primary.kms_key) {
                (Some(k), p) if Some(k) != p.as_ref() => {
                    return Err(StoreError::FailedPrecondition(format!(
                        "A replica in its primary's location uses the primary's key ({}); omit kmsKey or give that key, not {k}.",
                        p.as_deref().unwrap_or("service-managed encryption")
                    )));
                }
                _ => primary.kms_key.clone(),
            }
        } else {
            match (&kms_key, &primary.kms_key) {
                (None, Some(p)) => {
                    return Err(StoreError::FailedPrecondition(format!(
                        "The primary {} is protected by {p}, in location {}. A replica in {} needs a key of its own in {}: give kmsKey projects/PROJECT/locations/{}/keyRings/RING/cryptoKeys/KEY.",
                        primary.name, primary.name.location, name.location, name.location, name.location
                    )));
                }
                _ => kms_key,
            }
        };
        let primary_name = primary.name.to_string();
        let instance =
            self.build_instance(audit, name, kms_key, labels, Some(primary_name), |_| async { Ok(()) }).await?;
        self.replication.notify_one();
        Ok(instance)
    }

    /// Starts the task that keeps replicas in step with their primaries.
    pub(crate) fn spawn_replication(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let wake = self.replication.clone();
        let period = self.config.replication_period;
        tokio::spawn(async move {
            loop {
                {
                    let Some(store) = weak.upgrade() else { return };
                    store.sync_replicas().await;
                }
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(period) => {}
                }
            }
        });
    }

    async fn sync_replicas(self: &Arc<Self>) {
        let replicas = match self.repo.all_replicas().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list replicas");
                return;
            }
        };
        for replica in replicas {
            if let Err(e) = self.sync_replica(&replica).await {
                tracing::debug!(replica = %replica, error = %e, "replica not caught up this round");
            }
        }
    }

    /// One catch-up round of a replica: copies what changed on the primary, deletes what was
    /// deleted there. Skipped while either side's key is unusable (the replica then stays as
    /// it was, and says so in its own state).
    async fn sync_replica(self: &Arc<Self>, replica: &str) -> Result<(), StoreError> {
        let started = Timestamp::now();
        let Some(record) = self.repo.instance(replica).await? else { return Ok(()) };
        let Some(primary) = record.replica_of.as_deref() else { return Ok(()) };
        let Some(primary) = self.repo.instance(primary).await? else { return Ok(()) };
        let source = self.vault(&primary).await?;
        let dest = self.vault(&record).await?;
        source.require_access()?;
        dest.require_access()?;
        let copied: HashMap<String, u64> = self.repo.replica_sources(replica).await?.into_iter().collect();
        let mut live = HashSet::new();
        let mut after = String::new();
        let mut complete = true;
        loop {
            let page = self.repo.list_objects(&source.resource, "", &after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.name.clone();
            for obj in page {
                live.insert(obj.name.clone());
                if copied.get(&obj.name) == Some(&obj.generation) {
                    continue;
                }
                match self.copy_object(&source, &obj, &dest).await {
                    Ok(_) => self.repo.set_replica_source(replica, &obj.name, obj.generation).await?,
                    Err(e) => {
                        // Overwritten or deleted on the primary while being copied (its chunks
                        // went): the next round copies what replaced it. Anything else is an
                        // error of this round.
                        let now = self.repo.object(&source.resource, &obj.name).await?;
                        if now.is_some_and(|o| o.generation == obj.generation) {
                            return Err(e);
                        }
                        complete = false;
                    }
                }
            }
        }
        let mut after = String::new();
        loop {
            let page = self.repo.list_objects(replica, "", &after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.name.clone();
            for obj in page.into_iter().filter(|o| !live.contains(&o.name)) {
                self.repo.delete_object(replica, &obj.name, &[]).await?;
            }
        }
        if complete {
            self.sync_times.lock().unwrap_or_else(|e| e.into_inner()).insert(replica.to_string(), started);
        }
        Ok(())
    }

    // ---- export / import ----------------------------------------------------------------------

    /// The directory of `project`'s archives: `EXPORT_DIR/PROJECT` (finding 2(a): every project
    /// has its own, so that no project can name, read or import another's archives).
    pub(crate) fn project_export_dir(&self, project: &str) -> Result<PathBuf, StoreError> {
        let dir = self.config.export_dir.as_deref().ok_or_else(|| {
            StoreError::FailedPrecondition(
                "Export and import are off: start the server with --store-export-dir DIR (archives are written and read only inside DIR/PROJECT).".into(),
            )
        })?;
        // Absolute, so that answers and the export registry name the file unambiguously.
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        // Project IDs are checked by the name parser; this keeps a bad one from ever being a path.
        if project.is_empty() || project.starts_with('.') || project.contains(['/', '\\']) {
            return Err(StoreError::InvalidArgument(format!("\"{project}\" is not a project ID.")));
        }
        Ok(dir.join(project))
    }

    /// The file an export of `project` writes or an import into it reads: inside the project's
    /// export directory `EXPORT_DIR/PROJECT`, whatever the request says (finding 2(a)).
    pub(crate) fn archive_path(&self, project: &str, given: &str) -> Result<PathBuf, StoreError> {
        let dir = &self.project_export_dir(project)?;
        let given = given.strip_prefix("file://").unwrap_or(given);
        if given.is_empty() {
            return Err(StoreError::InvalidArgument(format!(
                "A file name is required (relative to the project's export directory {}).",
                dir.display()
            )));
        }
        let path = Path::new(given);
        let relative = if path.is_absolute() {
            path.strip_prefix(dir).map_err(|_| {
                StoreError::InvalidArgument(format!(
                    "{given} is outside the export directory of project {project} ({}); give a path inside it (or relative to it).",
                    dir.display()
                ))
            })?
        } else {
            path
        };
        if relative.as_os_str().is_empty()
            || relative.components().any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(StoreError::InvalidArgument(format!(
                "{given}: use a plain relative path inside the project's export directory (no \"..\")."
            )));
        }
        Ok(dir.join(relative))
    }

    /// `projects/P/exports:reconcile` (finding 10): brings the export registry of project P in
    /// line with the files in its export directory. A registered export whose file is gone is
    /// marked missing (and left out of what its key protects, [K12]); marked, not deleted, so
    /// that a directory unmounted for a moment loses nothing: the mark goes when the file is
    /// back. A file no export wrote is reported, never deleted.
    pub async fn reconcile_exports(
        &self,
        caller: &Caller,
        project: &str,
    ) -> Result<ReconcileExportsResponse, StoreError> {
        let op = Op {
            method: "ReconcileExports",
            resource: format!("projects/{project}"),
            permission: role::INSTANCES_EXPORT,
            kind: AuditKind::Activity,
        };
        // It changes the registry: its entry commits with the change (hardening review).
        self.mutate(caller, op, async |audit| self.reconcile_project_exports(project, Some(audit)).await).await
    }

    /// Reconciles `project`'s exports; the registry changes commit with `audit`'s entries (none
    /// at start, which is no one's call).
    async fn reconcile_project_exports(
        &self,
        project: &str,
        audit: Option<&Audit<'_>>,
    ) -> Result<ReconcileExportsResponse, StoreError> {
        let dir = self.project_export_dir(project)?;
        let mut out = ReconcileExportsResponse::default();
        let mut registered = HashSet::new();
        let mut changes = Vec::new();
        for (export, was_missing) in self.repo.exports_under(&format!("projects/{project}/")).await? {
            let path = PathBuf::from(&export.destination);
            registered.insert(path.clone());
            let there = tokio::fs::try_exists(&path)
                .await
                .map_err(|e| StoreError::FailedPrecondition(format!("Cannot look for {}: {e}", path.display())))?;
            match (there, was_missing) {
                (true, false) => out.present.push(export.name),
                (true, true) => {
                    changes.push((export.name.clone(), false));
                    out.returned.push(export.name);
                }
                (false, _) => {
                    if !was_missing {
                        tracing::warn!(export = %export.name, file = %path.display(), "the file of an export is gone; marked missing");
                        changes.push((export.name.clone(), true));
                    }
                    out.missing.insert(export.name, export.destination);
                }
            }
        }
        if !changes.is_empty() {
            let entries = audit.map(Audit::entries).unwrap_or_default();
            self.repo.set_exports_missing(&changes, Timestamp::now(), &entries).await?;
        }
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            let mut entries = match tokio::fs::read_dir(&d).await {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::FailedPrecondition(format!("Cannot list {}: {e}", d.display()))),
            };
            while let Some(entry) = entries
                .next_entry()
                .await
                .map_err(|e| StoreError::FailedPrecondition(format!("Cannot list {}: {e}", d.display())))?
            {
                let path = entry.path();
                let kind = entry.file_type().await.map_err(|e| StoreError::FailedPrecondition(e.to_string()))?;
                let partial = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.') && n.ends_with(".partial"));
                if kind.is_dir() {
                    stack.push(path);
                } else if partial {
                    out.partial.push(path.display().to_string());
                } else if !registered.contains(&path) {
                    out.unregistered.push(path.display().to_string());
                }
            }
        }
        out.unregistered.sort();
        out.partial.sort();
        Ok(out)
    }

    /// Reconciles the export registry of every project with a directory or an export, at
    /// start (finding 10); logs what it found.
    pub async fn reconcile_all_exports(&self) -> Result<(), StoreError> {
        let Some(root) = self.config.export_dir.as_deref() else { return Ok(()) };
        let mut projects: std::collections::BTreeSet<String> = self
            .repo
            .exports_under("")
            .await?
            .into_iter()
            .filter_map(|(e, _)| e.instance.parse::<InstanceName>().ok().map(|n| n.project))
            .collect();
        if let Ok(mut entries) = tokio::fs::read_dir(root).await {
            while let Ok(Some(entry)) = entries.next_entry().await {
                let name = entry.file_name().to_string_lossy().into_owned();
                if entry.file_type().await.is_ok_and(|t| t.is_dir()) {
                    projects.insert(name);
                } else {
                    tracing::warn!(file = %entry.path().display(), "a file directly in the export directory: exports are in EXPORT_DIR/PROJECT (move it into its project's directory to import it)");
                }
            }
        }
        for project in projects {
            let r = match self.reconcile_project_exports(&project, None).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(%project, error = %e, "cannot reconcile the project's exports");
                    continue;
                }
            };
            for (name, file) in &r.missing {
                tracing::warn!(export = %name, %file, "export registered, but its file is gone (marked missing)");
            }
            for file in &r.unregistered {
                tracing::warn!(%file, %project, "file in the export directory with no export registered (kept)");
            }
            for file in &r.partial {
                tracing::info!(%file, "temporary file of an export under way or interrupted (kept)");
            }
        }
        Ok(())
    }

    /// `instances/ID:export` ([C9]): a snapshot of the instance in a `keyhold-archive/v1` file,
    /// sealed under a KEK that `kmsKey` (default: the instance's key) wraps; plaintext only with
    /// `allowPlaintext`, which the audit entry flags.
    pub async fn export_instance(
        self: &Arc<Self>,
        caller: &Caller,
        name: &str,
        req: ExportInstanceRequest,
        job: &Job,
    ) -> Result<Export, StoreError> {
        let op = Op {
            method: "ExportInstance",
            resource: name.to_string(),
            permission: role::INSTANCES_EXPORT,
            kind: AuditKind::Activity,
        };
        let warning = req.allow_plaintext.then(|| {
            format!(
                "Plaintext export of {name} to {} requested (allowPlaintext): the archive is not encrypted.",
                req.destination
            )
        });
        self.mutate_warned(caller, op, warning, async |audit| {
            let record = self.instance_record(name).await?;
            let key = req.kms_key.clone().filter(|k| !k.is_empty());
            let kms_key = match (key, req.allow_plaintext) {
                (Some(_), true) => {
                    return Err(StoreError::InvalidArgument("Give kmsKey or allowPlaintext, not both.".into()));
                }
                (Some(k), false) => Some(k),
                (None, true) => None,
                (None, false) => Some(record.kms_key.clone().ok_or_else(|| {
                    StoreError::FailedPrecondition(format!(
                        "{} uses service-managed encryption: name the key to encrypt the archive with (kmsKey), or ask for a plaintext archive with allowPlaintext: true.",
                        record.name
                    ))
                })?),
            };
            let path = self.archive_path(&record.name.project, &req.destination)?;
            refuse_links(&self.project_export_dir(&record.name.project)?, &path).await?;
            if tokio::fs::try_exists(&path).await.unwrap_or(false) {
                return Err(StoreError::AlreadyExists(format!("{} exists; exports never overwrite a file.", path.display())));
            }
            let source = self.vault(&record).await?;
            source.require_access()?;
            let id = random_hex(8)?;
            let mut header = ArchiveHeader {
                id,
                source: record.name.to_string(),
                create_time: Timestamp::now(),
                kms_key: kms_key.clone(),
                kms_key_version: None,
                wrapped_kek: None,
            };
            let resource = header.resource();
            let kek = match &kms_key {
                None => None,
                Some(key) => {
                    let wrapper = self.new_instance_wrapper(&record.name, Some(key)).await?;
                    let kek = keyhold_cmek::Kek::generate().map_err(|e| StoreError::Internal(e.to_string()))?;
                    let wrapped = wrapper
                        .wrap(&resource, &kek, AccessReason::CustomerInitiatedAccess)
                        .await
                        .map_err(|e| StoreError::FailedPrecondition(format!("The KMS refused to wrap the archive's key with {key}: {}", e.message)))?;
                    use base64::Engine;
                    header.wrapped_kek = Some(base64::engine::general_purpose::STANDARD.encode(&wrapped.ciphertext));
                    header.kms_key_version = wrapped.key_version.clone();
                    Some(Arc::new(kek))
                }
            };
            job.accept(audit).await?;
            let written = self.write_archive(&source, &header, kek, &path, job).await?;
            let export = ExportRecord {
                name: resource,
                instance: record.name.to_string(),
                kms_key,
                key_version: header.kms_key_version.clone(),
                destination: path.display().to_string(),
                size_bytes: written.size_bytes,
                object_count: written.object_count,
                create_time: header.create_time,
            };
            if let Err(e) = self.repo.insert_export(&export, &audit.entries()).await {
                // Not registered (its entry could not be written, say): the export did not
                // happen, and its file is not left behind.
                if let Err(r) = tokio::fs::remove_file(&path).await {
                    tracing::warn!(file = %path.display(), error = %r, "cannot delete the file of an export that failed");
                }
                return Err(e.into());
            }
            tracing::info!(export = %export.name, file = %export.destination, objects = export.object_count, "instance exported");
            Ok(Export::of(&export))
        })
        .await
    }

    /// Writes the archive to a temporary file beside `path`, syncs it, and links it into place
    /// (never over an existing file): a failure leaves no partial archive.
    async fn write_archive(
        self: &Arc<Self>,
        source: &Vault,
        header: &ArchiveHeader,
        kek: Option<Arc<keyhold_cmek::Kek>>,
        path: &Path,
        job: &Job,
    ) -> Result<crate::archive::ArchiveSummary, StoreError> {
        let io = |e: std::io::Error| StoreError::FailedPrecondition(format!("Cannot write {}: {e}", path.display()));
        if let Some(dir) = path.parent() {
            let root =
                self.config.export_dir.as_deref().map(|d| std::path::absolute(d).unwrap_or_else(|_| d.to_path_buf()));
            private_dirs(root.as_deref(), dir).await?;
        }
        let tmp = path.with_file_name(format!(
            ".{}.{}.partial",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("export"),
            header.id
        ));
        let result = async {
            // Finding 4: archives hold customer data (in the clear, for a plaintext one): 0600
            // from the first byte, whatever the umask (which can only narrow `mode`; the
            // explicit chmod covers a umask that would take the owner's own bits).
            let file =
                tokio::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).await.map_err(io)?;
            file.set_permissions(std::fs::Permissions::from_mode(0o600)).await.map_err(io)?;
            let out = tokio::io::BufWriter::with_capacity(1 << 20, file);
            let mut writer = ArchiveWriter::start(out, header, kek).await?;
            let pin = header.resource();
            self.repo.pin_objects(&source.resource, &pin).await?;
            let copied = async {
                job.set_total(self.repo.count_pinned(&pin).await?);
                let mut after = String::new();
                loop {
                    let page = self.repo.pinned_objects(&pin, &after, PAGE).await?;
                    let Some(last) = page.last() else { break };
                    after = last.name.clone();
                    for obj in page {
                        writer
                            .object(ArchivedObject {
                                name: obj.name.clone(),
                                content_type: obj.content_type.clone(),
                                size: obj.size,
                                chunk_count: obj.chunk_count,
                                create_time: obj.create_time,
                                update_time: obj.update_time,
                            })
                            .await?;
                        for index in 0..obj.chunk_count {
                            let data = self.open_stored_chunk(source, &obj, index).await?;
                            writer.chunk(index, data.expose()).await?;
                        }
                        job.step(obj.size).await?;
                    }
                }
                Ok::<_, StoreError>(())
            }
            .await;
            let released = self.repo.unpin(&source.resource, &pin).await;
            copied?;
            released?;
            let (summary, out) = writer.finish().await?;
            let file = out.into_inner();
            file.sync_all().await.map_err(io)?;
            drop(file);
            job.fence()?;
            tokio::fs::hard_link(&tmp, path).await.map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    StoreError::AlreadyExists(format!("{} exists; exports never overwrite a file.", path.display()))
                } else {
                    io(e)
                }
            })?;
            Ok(summary)
        }
        .await;
        let _ = tokio::fs::remove_file(&tmp).await;
        result
    }

    /// `instances:import` ([C9]): a new instance from an archive, under `kmsKey` (absent:
    /// service-managed). The store's service agent must be able to use the archive's key.
    pub async fn import_instance(
        &self,
        caller: &Caller,
        parent: &str,
        req: ImportInstanceRequest,
        job: &Job,
    ) -> Result<Instance, StoreError> {
        let op = Op {
            method: "ImportInstance",
            resource: format!("{parent}/instances/{}", req.instance_id),
            permission: role::INSTANCES_IMPORT,
            kind: AuditKind::Activity,
        };
        self.mutate(caller, op, async |audit| {
            let name = self.new_instance_name(parent, &req.instance_id)?;
            let path = self.archive_path(&name.project, &req.source)?;
            refuse_links(&self.project_export_dir(&name.project)?, &path).await?;
            let file = tokio::fs::File::open(&path)
                .await
                .map_err(|e| StoreError::FailedPrecondition(format!("Cannot read {}: {e}", path.display())))?;
            let mut input = tokio::io::BufReader::with_capacity(1 << 20, file);
            let header = read_header(&mut input).await?;
            let source: InstanceName = header.source.parse().map_err(|_| {
                StoreError::FailedPrecondition(format!(
                    "The archive's source \"{}\" is not an instance name: this is not an archive Keyhold wrote.",
                    header.source
                ))
            })?;
            // Finding 2(a): a plaintext archive carries no key that could say who may open it,
            // so it goes back only into the project that exported it.
            if header.kms_key.is_none() && source.project != name.project {
                return Err(StoreError::FailedPrecondition(format!(
                    "{} is a plaintext archive of project {}: a plaintext archive can be imported only into the project that exported it. \
                     To move data across projects, export it encrypted under a key (kmsKey) that the destination project's service agent may use.",
                    path.display(),
                    source.project
                )));
            }
            let (source, dest_project) = (source.to_string(), name.project.clone());
            self.on_source(caller, audit, "ImportInstance", &dest_project, &source, role::INSTANCES_EXPORT, async |audit| {
            let kek = match (&header.kms_key, &header.wrapped_kek) {
                (None, _) => None,
                (Some(_), None) => return Err(StoreError::FailedPrecondition("The archive names a key but holds no wrapped key.".into())),
                (Some(key), Some(wrapped)) => {
                    use base64::Engine;
                    let ciphertext = base64::engine::general_purpose::STANDARD
                        .decode(wrapped)
                        .map_err(|_| StoreError::FailedPrecondition("The archive's wrapped key is not base64.".into()))?;
                    let wrapper = self.wrapper_for(&name.project, Some(key)).await?;
                    let wrapped = WrappedKek { ciphertext, key_version: header.kms_key_version.clone() };
                    let kek = wrapper
                        .unwrap(&header.resource(), &wrapped, AccessReason::CustomerInitiatedAccess)
                        .await
                        .map_err(|e| StoreError::FailedPrecondition(format!(
                            "The archive is encrypted under {key} (version {}), which cannot be used to open it: {}. The store's service agent needs roles/cloudkms.cryptoKeyDecrypter on it, and the version must be enabled.",
                            header.kms_key_version.as_deref().unwrap_or("unknown"),
                            e.message
                        )))?;
                    Some(Arc::new(kek))
                }
            };
            let kms_key = req.kms_key.clone().filter(|k| !k.is_empty());
            let mut reader = ArchiveReader::new(input, &header, kek);
            self.build_instance(audit, name, kms_key, req.labels, None, |dest| async move {
                job.accept(audit).await?;
                let mut pending = match reader.next().await? {
                    ArchiveItem::Object(o) => Some(o),
                    ArchiveItem::End(_) => None,
                    ArchiveItem::Chunk(_) => return Err(StoreError::FailedPrecondition("archive chunk before any object".into())),
                };
                while let Some(object) = pending.take() {
                    let count = object.chunk_count;
                    let chunks = futures_util::stream::unfold((&mut reader, 0u64), move |(reader, read)| async move {
                        if read == count {
                            return None;
                        }
                        match reader.next().await {
                            Ok(ArchiveItem::Chunk(c)) => Some((Ok(c.expose().to_vec()), (reader, read + 1))),
                            Ok(_) => Some((Err(StoreError::FailedPrecondition("archive object cut short".into())), (reader, count))),
                            Err(e) => Some((Err(e), (reader, count))),
                        }
                    });
                    let meta = ObjectMeta {
                        name: &object.name,
                        content_type: &object.content_type,
                        create_time: object.create_time,
                        update_time: object.update_time,
                    };
                    let written = self.write_object(&dest, &meta, Box::pin(chunks), COPY_CHUNKS_PER_WRITE, None).await?;
                    if written.size != object.size {
                        return Err(StoreError::FailedPrecondition(format!(
                            "Object {} of the archive holds {} bytes, not the {} it lists.",
                            object.name, written.size, object.size
                        )));
                    }
                    job.step(written.size).await?;
                    pending = match reader.next().await? {
                        ArchiveItem::Object(o) => Some(o),
                        ArchiveItem::End(_) => None,
                        ArchiveItem::Chunk(_) => return Err(StoreError::FailedPrecondition("archive object has extra chunks".into())),
                    };
                }
                job.fence()
            })
            .await
            })
            .await
        })
        .await
    }
}
