//! [`StoreRepository`] (the store's instances, KEKs, objects and chunks) over every SQL driver.

use crate::sql::SqlError;
use async_trait::async_trait;
use keyhold_api::wire::Timestamp;
use keyhold_audit::AuditRecord;
use keyhold_cmek::{SealedChunk, WrappedKek};
use keyhold_store::model::{
    BackupRecord, ExportRecord, InstanceRecord, KekRecord, ObjectRecord, OperationRecord, StoredChunk,
};
use keyhold_store::repo::{RepoError, StoreRepository};

use crate::kms_repo::{SqlStore, commit_audited};
use crate::schema::*;
use crate::sql::{Row, SqlBackend, Value};
use crate::store_operations;

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

fn int(v: u64) -> Value {
    Value::Int(v as i64)
}

fn ts(nanos: i64) -> Result<Timestamp, SqlError> {
    Timestamp::from_unix_nanos(nanos.into()).ok_or_else(|| SqlError::Corrupt(format!("bad timestamp {nanos}")))
}

fn blob(v: &Value) -> Result<Vec<u8>, SqlError> {
    v.opt_blob()?.ok_or_else(|| SqlError::Corrupt("a required blob is NULL".into()))
}

fn instance_record(row: &Row) -> Result<InstanceRecord, SqlError> {
    let key = row[1].text()?;
    Ok(InstanceRecord {
        name: row[0].text()?.parse().map_err(|_| SqlError::Corrupt("stored instance name does not parse".into()))?,
        kms_key: (!key.is_empty()).then(|| key.to_string()),
        labels: serde_json::from_str(row[2].text()?).map_err(|e| SqlError::Corrupt(e.to_string()))?,
        create_time: ts(row[3].int()?)?,
        replica_of: Some(row[4].text()?).filter(|p| !p.is_empty()).map(str::to_string),
    })
}

fn backup_record(row: &Row) -> Result<BackupRecord, SqlError> {
    let key = row[2].text()?;
    Ok(BackupRecord {
        name: row[0].text()?.to_string(),
        instance: row[1].text()?.to_string(),
        kms_key: (!key.is_empty()).then(|| key.to_string()),
        state: row[3].text()?.to_string(),
        size_bytes: row[4].int()? as u64,
        object_count: row[5].int()? as u64,
        version_time: ts(row[6].int()?)?,
        create_time: ts(row[7].int()?)?,
    })
}

fn export_record(row: &Row) -> Result<ExportRecord, SqlError> {
    let opt = |v: &Value| -> Result<Option<String>, SqlError> {
        let t = v.text()?;
        Ok((!t.is_empty()).then(|| t.to_string()))
    };
    Ok(ExportRecord {
        name: row[0].text()?.to_string(),
        instance: row[1].text()?.to_string(),
        kms_key: opt(&row[2])?,
        key_version: opt(&row[3])?,
        destination: row[4].text()?.to_string(),
        size_bytes: row[5].int()? as u64,
        object_count: row[6].int()? as u64,
        create_time: ts(row[7].int()?)?,
    })
}

fn instance_params(instance: &InstanceRecord) -> Result<Vec<Value>, SqlError> {
    let labels = serde_json::to_string(&instance.labels).map_err(|e| SqlError::Corrupt(e.to_string()))?;
    Ok(vec![
        text(&instance.name.to_string()),
        text(&instance.name.parent()),
        text(instance.kms_key.as_deref().unwrap_or_default()),
        Value::Text(labels),
        Value::Int(instance.create_time.unix_nanos_i64()),
    ])
}

fn kek_record(row: &Row) -> Result<KekRecord, SqlError> {
    let version = row[2].text()?;
    Ok(KekRecord {
        id: row[0].int()? as u64,
        wrapped: WrappedKek {
            ciphertext: blob(&row[1])?,
            key_version: (!version.is_empty()).then(|| version.to_string()),
        },
        create_time: ts(row[3].int()?)?,
    })
}

fn object_record(row: &Row) -> Result<ObjectRecord, SqlError> {
    Ok(ObjectRecord {
        name: row[0].text()?.to_string(),
        generation: row[1].int()? as u64,
        size: row[2].int()? as u64,
        chunk_count: row[3].int()? as u64,
        kek_id: row[4].int()? as u64,
        content_type: row[5].text()?.to_string(),
        create_time: ts(row[6].int()?)?,
        update_time: ts(row[7].int()?)?,
    })
}

fn chunk_params(instance: &str, object: &str, generation: u64, index: u64, c: &SealedChunk) -> Vec<Value> {
    vec![
        text(instance),
        text(object),
        int(generation),
        int(index),
        Value::OptBlob(Some(c.wrapped_dek.clone())),
        Value::OptBlob(Some(c.ciphertext.clone())),
    ]
}

fn object_params(instance: &str, o: &ObjectRecord) -> Vec<Value> {
    vec![
        text(instance),
        text(&o.name),
        int(o.generation),
        int(o.size),
        int(o.chunk_count),
        int(o.kek_id),
        text(&o.content_type),
        Value::Int(o.create_time.unix_nanos_i64()),
        Value::Int(o.update_time.unix_nanos_i64()),
    ]
}

/// The SQL behind [`StoreRepository`], in the SQL layer's own errors; the trait's impl below
/// maps them to the store's [`RepoError`] in one place ([`repo_error`]).
struct Sql<'a, B>(&'a SqlStore<B>);

impl<B: SqlBackend> Sql<'_, B> {
    fn audit_kept(&self) -> Option<i64> {
        self.0.audit_kept()
    }

    /// `SELECT count(*) ... WHERE key = $1`.
    async fn count(&self, sql: &'static str, key: &str) -> Result<u64, SqlError> {
        let rows = self.backend().read().await?.query(sql, vec![text(key)]).await?;
        Ok(rows.first().map(|r| r[0].int()).transpose()?.unwrap_or(0).max(0) as u64)
    }

    /// Flags a running operation cancelled, committed with the cancel call's entry.
    async fn cancel_operation(&self, name: &str, audit: &[AuditRecord]) -> Result<bool, SqlError> {
        let mut tx = self.backend().begin().await?;
        if tx.execute(CANCEL_OPERATION, vec![text(name)]).await? == 0 {
            tx.commit().await?;
            return Ok(false);
        }
        commit_audited(tx, vec![], audit, self.audit_kept()).await?;
        Ok(true)
    }

    fn backend(&self) -> &B {
        self.0.backend()
    }

    async fn insert_instance(
        &self,
        instance: &InstanceRecord,
        kek: &KekRecord,
        audit: &[AuditRecord],
    ) -> Result<(), SqlError> {
        let name = instance.name.to_string();
        let claim = vec![text(&name), text("LIVE"), Value::Int(instance.create_time.unix_nanos_i64())];
        let tx = self.backend().begin().await?;
        let statements = vec![
            (CLAIM_NAME, claim),
            (INSERT_INSTANCE, instance_params(instance)?),
            (INSERT_KEK, kek_params(&name, kek)),
        ];
        commit_audited(tx, statements, audit, self.audit_kept()).await
    }

    async fn instance(&self, name: &str) -> Result<Option<InstanceRecord>, SqlError> {
        self.backend()
            .read()
            .await?
            .query(GET_INSTANCE, vec![text(name)])
            .await?
            .first()
            .map(instance_record)
            .transpose()
    }

    async fn list_instances(&self, parent: &str) -> Result<Vec<InstanceRecord>, SqlError> {
        self.backend()
            .read()
            .await?
            .query(LIST_INSTANCES, vec![text(parent)])
            .await?
            .iter()
            .map(instance_record)
            .collect()
    }

    async fn instances_by_key(&self, key: &str) -> Result<Vec<InstanceRecord>, SqlError> {
        self.backend()
            .read()
            .await?
            .query(INSTANCES_BY_KEY, vec![text(key)])
            .await?
            .iter()
            .map(instance_record)
            .collect()
    }

    async fn delete_instance(&self, name: &str, audit: &[AuditRecord]) -> Result<bool, SqlError> {
        let mut tx = self.backend().begin().await?;
        if !self.backend().serializes_transactions() {
            tx.execute(PG_LOCK_OBJECTS_EXCLUSIVE, vec![text(name)]).await?;
        }
        for sql in RESOURCE_DATA {
            tx.execute(sql, vec![text(name)]).await?;
        }
        tx.execute(DELETE_REPLICA, vec![text(name)]).await?;
        let n = tx.execute(DELETE_INSTANCE, vec![text(name)]).await?;
        if n == 0 {
            tx.commit().await?;
            return Ok(false);
        }
        let statements = vec![(DELETE_NAME, vec![text(name)])];
        commit_audited(tx, statements, audit, self.audit_kept()).await?;
        Ok(true)
    }

    async fn begin_pending(&self, name: &str, node: &str, now: Timestamp) -> Result<(), SqlError> {
        let tx = self.backend().begin().await?;
        tx.execute_many_and_commit(vec![
            (CLAIM_NAME, vec![text(name), text("BUILDING"), Value::Int(now.unix_nanos_i64())]),
            (OWN_WORK, vec![text(name), text(""), int(0), text(node)]),
        ])
        .await
    }

    async fn finish_pending_instance(&self, instance: &InstanceRecord, audit: &[AuditRecord]) -> Result<(), SqlError> {
        let name = instance.name.to_string();
        let mut tx = self.backend().begin().await?;
        if tx.execute(NAME_BUILT, vec![text(&name)]).await? != 1 {
            return Err(SqlError::Conflict);
        }
        let mut statements =
            vec![(INSERT_INSTANCE, instance_params(instance)?), (END_WORK, vec![text(&name), text(""), int(0)])];
        if let Some(primary) = &instance.replica_of {
            statements.push((INSERT_REPLICA, vec![text(&name), text(primary)]));
        }
        commit_audited(tx, statements, audit, self.audit_kept()).await
    }

    async fn discard(&self, name: &str, audit: &[AuditRecord]) -> Result<(), SqlError> {
        // A copy's snapshot is released first, so that what only it kept goes too.
        let pinned = self.backend().read().await?.query(PINNED_INSTANCES, vec![text(name)]).await?;
        for row in pinned {
            self.unpin(row[0].text()?, name).await?;
        }
        let mut statements: Vec<_> = RESOURCE_DATA.iter().map(|sql| (*sql, vec![text(name)])).collect();
        statements.push((DELETE_BACKUP, vec![text(name)]));
        statements.push((DELETE_NAME, vec![text(name)]));
        let tx = self.backend().begin().await?;
        commit_audited(tx, statements, audit, self.audit_kept()).await
    }

    fn single_process(&self) -> bool {
        // SQLite: one server process per database file (other nodes share PostgreSQL).
        self.backend().serializes_transactions()
    }

    async fn heartbeat(&self, node: &str, now: Timestamp, forget_before: Timestamp) -> Result<(), SqlError> {
        let tx = self.backend().begin().await?;
        tx.execute_many_and_commit(vec![
            (HEARTBEAT, vec![text(node), Value::Int(now.unix_nanos_i64())]),
            (DELETE_DEAD_NODES, vec![Value::Int(forget_before.unix_nanos_i64()), text(node)]),
        ])
        .await
    }

    async fn orphaned_work(
        &self,
        node: &str,
        dead_before: Timestamp,
        ownerless_before: Timestamp,
    ) -> Result<(Vec<(String, String, u64)>, Vec<String>), SqlError> {
        let params = || {
            vec![text(node), Value::Int(dead_before.unix_nanos_i64()), Value::Int(ownerless_before.unix_nanos_i64())]
        };
        let mut read = self.backend().read().await?;
        let uploads = read.query(ORPHANED_UPLOADS, params()).await?;
        let builds = read.query(ORPHANED_BUILDS, params()).await?;
        let uploads = uploads
            .iter()
            .map(|r| Ok((r[0].text()?.to_string(), r[1].text()?.to_string(), r[2].int()? as u64)))
            .collect::<Result<_, SqlError>>()?;
        let builds = builds.iter().map(|r| Ok(r[0].text()?.to_string())).collect::<Result<_, SqlError>>()?;
        Ok((uploads, builds))
    }

    async fn pin_objects(&self, instance: &str, pin: &str) -> Result<(), SqlError> {
        let mut tx = self.backend().begin().await?;
        if !self.backend().serializes_transactions() {
            tx.execute(PG_LOCK_OBJECTS_EXCLUSIVE, vec![text(instance)]).await?;
        }
        tx.execute_many_and_commit(vec![(PIN_OBJECTS, vec![text(instance), text(pin)])]).await
    }

    async fn pinned_objects(&self, pin: &str, after: &str, limit: u64) -> Result<Vec<ObjectRecord>, SqlError> {
        self.backend()
            .read()
            .await?
            .query(LIST_PINNED, vec![text(pin), text(after), int(limit)])
            .await?
            .iter()
            .map(object_record)
            .collect()
    }

    async fn unpin(&self, instance: &str, pin: &str) -> Result<(), SqlError> {
        let mut tx = self.backend().begin().await?;
        if !self.backend().serializes_transactions() {
            tx.execute(PG_LOCK_OBJECTS_EXCLUSIVE, vec![text(instance)]).await?;
        }
        tx.execute_many_and_commit(vec![
            (DELETE_UNPINNED_CHUNKS, vec![text(instance), text(pin)]),
            (DELETE_PINS, vec![text(pin)]),
        ])
        .await
    }

    async fn insert_backup(&self, backup: &BackupRecord, kek: &KekRecord, node: &str) -> Result<(), SqlError> {
        let params = vec![
            text(&backup.name),
            text(&backup.instance),
            text(backup.kms_key.as_deref().unwrap_or_default()),
            text(&backup.state),
            int(backup.size_bytes),
            int(backup.object_count),
            Value::Int(backup.version_time.unix_nanos_i64()),
            Value::Int(backup.create_time.unix_nanos_i64()),
        ];
        self.backend()
            .begin()
            .await?
            .execute_many_and_commit(vec![
                (
                    CLAIM_NAME,
                    vec![text(&backup.name), text("BUILDING"), Value::Int(backup.create_time.unix_nanos_i64())],
                ),
                (INSERT_BACKUP, params),
                (INSERT_KEK, kek_params(&backup.name, kek)),
                (OWN_WORK, vec![text(&backup.name), text(""), int(0), text(node)]),
            ])
            .await
    }

    async fn finish_backup(
        &self,
        name: &str,
        size_bytes: u64,
        object_count: u64,
        audit: &[AuditRecord],
    ) -> Result<(), SqlError> {
        let mut tx = self.backend().begin().await?;
        // A backup whose build was taken for orphaned (its node's heartbeat looked stale) and
        // discarded must not be answered READY: nothing of it is left (hardening review).
        if tx.execute(FINISH_BACKUP, vec![text(name), int(size_bytes), int(object_count)]).await? != 1
            || tx.execute(NAME_BUILT, vec![text(name)]).await? != 1
        {
            return Err(SqlError::Conflict);
        }
        commit_audited(tx, vec![(END_WORK, vec![text(name), text(""), int(0)])], audit, self.audit_kept()).await
    }

    async fn backup(&self, name: &str) -> Result<Option<BackupRecord>, SqlError> {
        self.backend().read().await?.query(GET_BACKUP, vec![text(name)]).await?.first().map(backup_record).transpose()
    }

    async fn list_backups(&self, instance: &str) -> Result<Vec<BackupRecord>, SqlError> {
        self.backend()
            .read()
            .await?
            .query(LIST_BACKUPS, vec![text(instance)])
            .await?
            .iter()
            .map(backup_record)
            .collect()
    }

    async fn backups_by_key(&self, key: &str) -> Result<Vec<BackupRecord>, SqlError> {
        self.backend().read().await?.query(BACKUPS_BY_KEY, vec![text(key)]).await?.iter().map(backup_record).collect()
    }

    async fn replicas_of(&self, primary: &str) -> Result<Vec<String>, SqlError> {
        let rows = self.backend().read().await?.query(REPLICAS_OF, vec![text(primary)]).await?;
        rows.iter().map(|r| Ok(r[0].text()?.to_string())).collect()
    }

    async fn all_replicas(&self) -> Result<Vec<String>, SqlError> {
        let rows = self.backend().read().await?.query(ALL_REPLICAS, vec![]).await?;
        rows.iter().map(|r| Ok(r[0].text()?.to_string())).collect()
    }

    async fn replica_sources(&self, replica: &str) -> Result<Vec<(String, u64)>, SqlError> {
        let rows = self.backend().read().await?.query(REPLICA_SOURCES, vec![text(replica)]).await?;
        rows.iter().map(|r| Ok((r[0].text()?.to_string(), r[1].int()? as u64))).collect()
    }

    async fn set_replica_source(&self, replica: &str, object: &str, generation: u64) -> Result<(), SqlError> {
        self.backend()
            .begin()
            .await?
            .execute_many_and_commit(vec![(SET_REPLICA_SOURCE, vec![text(replica), text(object), int(generation)])])
            .await
    }

    async fn insert_export(&self, export: &ExportRecord, audit: &[AuditRecord]) -> Result<(), SqlError> {
        let params = vec![
            text(&export.name),
            text(&export.instance),
            text(export.kms_key.as_deref().unwrap_or_default()),
            text(export.key_version.as_deref().unwrap_or_default()),
            text(&export.destination),
            int(export.size_bytes),
            int(export.object_count),
            Value::Int(export.create_time.unix_nanos_i64()),
        ];
        let tx = self.backend().begin().await?;
        let statements = vec![(INSERT_EXPORT, params)];
        commit_audited(tx, statements, audit, self.audit_kept()).await
    }

    async fn exports_by_key(&self, key: &str) -> Result<Vec<ExportRecord>, SqlError> {
        self.backend().read().await?.query(EXPORTS_BY_KEY, vec![text(key)]).await?.iter().map(export_record).collect()
    }

    async fn exports_under(&self, prefix: &str) -> Result<Vec<(ExportRecord, bool)>, SqlError> {
        let rows = self.backend().read().await?.query(EXPORTS_UNDER, vec![text(prefix)]).await?;
        rows.iter().map(|r| Ok((export_record(r)?, r[8].int()? != 0))).collect()
    }

    async fn set_exports_missing(
        &self,
        changes: &[(String, bool)],
        now: Timestamp,
        audit: &[AuditRecord],
    ) -> Result<(), SqlError> {
        let statements = changes
            .iter()
            .map(|(name, missing)| {
                if *missing {
                    (MARK_EXPORT_MISSING, vec![text(name), Value::Int(now.unix_nanos_i64())])
                } else {
                    (MARK_EXPORT_PRESENT, vec![text(name)])
                }
            })
            .collect();
        commit_audited(self.backend().begin().await?, statements, audit, self.audit_kept()).await
    }

    async fn keks(&self, instance: &str) -> Result<Vec<KekRecord>, SqlError> {
        self.backend().read().await?.query(LIST_KEKS, vec![text(instance)]).await?.iter().map(kek_record).collect()
    }

    async fn insert_kek(&self, instance: &str, kek: &KekRecord) -> Result<(), SqlError> {
        let tx = self.backend().begin().await?;
        tx.execute_many_and_commit(vec![(INSERT_KEK, kek_params(instance, kek))]).await
    }

    async fn update_keks(
        &self,
        instance: &str,
        keks: &[(u64, WrappedKek)],
        audit: &[AuditRecord],
    ) -> Result<(), SqlError> {
        let tx = self.backend().begin().await?;
        let statements: Vec<_> = keks
            .iter()
            .map(|(id, wrapped)| {
                (
                    UPDATE_KEK,
                    vec![
                        text(instance),
                        int(*id),
                        Value::OptBlob(Some(wrapped.ciphertext.clone())),
                        text(wrapped.key_version.as_deref().unwrap_or_default()),
                    ],
                )
            })
            .collect();
        commit_audited(tx, statements, audit, self.audit_kept()).await
    }

    async fn delete_kek_if_unused(&self, instance: &str, id: u64) -> Result<bool, SqlError> {
        let mut tx = self.backend().begin().await?;
        // Ordered against every commit (which takes the shared form and checks its KEK is
        // there): a KEK is deleted only when no committed object uses it, and no object is
        // committed under a deleted KEK (hardening review).
        if !self.backend().serializes_transactions() {
            tx.execute(PG_LOCK_OBJECTS_EXCLUSIVE, vec![text(instance)]).await?;
        }
        let n = tx.execute(DELETE_KEK_IF_UNUSED, vec![text(instance), int(id)]).await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn begin_upload(
        &self,
        instance: &str,
        object: &str,
        generation: u64,
        node: &str,
        now: Timestamp,
    ) -> Result<(), SqlError> {
        let tx = self.backend().begin().await?;
        tx.execute_many_and_commit(vec![
            (BEGIN_UPLOAD, vec![text(instance), text(object), int(generation), Value::Int(now.unix_nanos_i64())]),
            (OWN_WORK, vec![text(instance), text(object), int(generation), text(node)]),
        ])
        .await
    }

    async fn put_chunks(
        &self,
        instance: &str,
        object: &str,
        generation: u64,
        first_index: u64,
        chunks: &[StoredChunk],
    ) -> Result<(), SqlError> {
        let statements = chunks
            .iter()
            .enumerate()
            .map(|(i, c)| (INSERT_CHUNK, chunk_params(instance, object, generation, first_index + i as u64, c)))
            .collect();
        self.backend().begin().await?.execute_many_and_commit(statements).await
    }

    async fn commit_upload(
        &self,
        instance: &str,
        object: &ObjectRecord,
        first_index: u64,
        last_chunks: &[StoredChunk],
        expected_generation: Option<u64>,
        audit: &[AuditRecord],
    ) -> Result<(), SqlError> {
        let mut tx = self.backend().begin().await?;
        if !self.backend().serializes_transactions() {
            tx.execute(PG_LOCK_OBJECTS_SHARED, vec![text(instance)]).await?;
        }
        // Deleted meanwhile (the lock orders this against the delete): write nothing.
        if tx.query(NAME_CLAIMED, vec![text(instance)]).await?.is_empty() {
            return Err(SqlError::Conflict);
        }
        // Its KEK deleted meanwhile (a `:reencrypt` finished on another node): the data
        // could never be read. The lock orders this against `delete_kek_if_unused`.
        if tx.query(KEK_EXISTS, vec![text(instance), int(object.kek_id)]).await?.is_empty() {
            return Err(SqlError::Conflict);
        }
        let key = || vec![text(instance), text(&object.name), int(object.generation)];
        // An upload whose earlier chunks were written (`first_index > 0`; they were written
        // under its `store_uploads` row) must still be ours: one taken for orphaned (its node's
        // heartbeat looked stale to another node) has lost those chunks, and committing it
        // would make a torn object visible (hardening review). Refused, the client sees a
        // conflict and uploads again. An upload that fits in this one call has no row.
        let ended = tx.execute(END_UPLOAD, key()).await?;
        if first_index > 0 && ended != 1 {
            return Err(SqlError::Conflict);
        }
        let chunks: Vec<_> = last_chunks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                (INSERT_CHUNK, chunk_params(instance, &object.name, object.generation, first_index + i as u64, c))
            })
            .collect();
        tx.execute_many(chunks).await?;
        let mut params = object_params(instance, object);
        match expected_generation {
            Some(expected) => {
                params.push(int(expected));
                if tx.execute(REPLACE_OBJECT_IF_GENERATION, params).await? == 0 {
                    return Err(SqlError::Conflict);
                }
            }
            None => {
                tx.execute(UPSERT_OBJECT, params).await?;
            }
        }
        let statements = vec![(END_WORK, key()), (DELETE_DEAD_CHUNKS, key())];
        commit_audited(tx, statements, audit, self.audit_kept()).await
    }

    async fn abort_upload(&self, instance: &str, object: &str, generation: u64) -> Result<(), SqlError> {
        let key = || vec![text(instance), text(object), int(generation)];
        self.backend()
            .begin()
            .await?
            .execute_many_and_commit(vec![(DELETE_UPLOAD_CHUNKS, key()), (END_UPLOAD, key()), (END_WORK, key())])
            .await
    }

    async fn object(&self, instance: &str, name: &str) -> Result<Option<ObjectRecord>, SqlError> {
        self.backend()
            .read()
            .await?
            .query(GET_OBJECT, vec![text(instance), text(name)])
            .await?
            .first()
            .map(object_record)
            .transpose()
    }

    async fn list_objects(
        &self,
        instance: &str,
        prefix: &str,
        after: &str,
        limit: u64,
    ) -> Result<Vec<ObjectRecord>, SqlError> {
        self.backend()
            .read()
            .await?
            .query(LIST_OBJECTS, vec![text(instance), text(prefix), text(after), int(limit)])
            .await?
            .iter()
            .map(object_record)
            .collect()
    }

    async fn delete_object(&self, instance: &str, name: &str, audit: &[AuditRecord]) -> Result<bool, SqlError> {
        let mut tx = self.backend().begin().await?;
        if !self.backend().serializes_transactions() {
            tx.execute(PG_LOCK_OBJECTS_SHARED, vec![text(instance)]).await?;
        }
        tx.execute(DELETE_REPLICA_SOURCE, vec![text(instance), text(name)]).await?;
        tx.execute(DELETE_OBJECT_CHUNKS, vec![text(instance), text(name)]).await?;
        let n = tx.execute(DELETE_OBJECT, vec![text(instance), text(name)]).await?;
        // Nothing deleted, nothing to record with it (the call's refusal is recorded after).
        commit_audited(tx, Vec::new(), if n > 0 { audit } else { &[] }, self.audit_kept()).await?;
        Ok(n > 0)
    }

    async fn chunk(
        &self,
        instance: &str,
        object: &str,
        generation: u64,
        index: u64,
    ) -> Result<Option<StoredChunk>, SqlError> {
        let rows = self
            .backend()
            .read()
            .await?
            .query(GET_CHUNK, vec![text(instance), text(object), int(generation), int(index)])
            .await?;
        rows.first().map(|r| Ok(SealedChunk { wrapped_dek: blob(&r[0])?, ciphertext: blob(&r[1])? })).transpose()
    }
}

/// The SQL layer's error as the store's repository error: the one place they meet.
fn repo_error(e: SqlError) -> RepoError {
    match e {
        SqlError::AlreadyExists => RepoError::AlreadyExists,
        SqlError::Conflict => RepoError::Conflict,
        SqlError::Unavailable(m) => RepoError::Unavailable(m),
        SqlError::Corrupt(m) => RepoError::Corrupt(m),
        other => RepoError::Corrupt(other.to_string()),
    }
}

#[async_trait]
impl<B: SqlBackend> StoreRepository for SqlStore<B> {
    async fn insert_instance(
        &self,
        instance: &InstanceRecord,
        kek: &KekRecord,
        audit: &[AuditRecord],
    ) -> Result<(), RepoError> {
        Sql(self).insert_instance(instance, kek, audit).await.map_err(repo_error)
    }

    async fn instance(&self, name: &str) -> Result<Option<InstanceRecord>, RepoError> {
        Sql(self).instance(name).await.map_err(repo_error)
    }

    async fn list_instances(&self, parent: &str) -> Result<Vec<InstanceRecord>, RepoError> {
        Sql(self).list_instances(parent).await.map_err(repo_error)
    }

    async fn instances_by_key(&self, key: &str) -> Result<Vec<InstanceRecord>, RepoError> {
        Sql(self).instances_by_key(key).await.map_err(repo_error)
    }

    async fn delete_instance(&self, name: &str, audit: &[AuditRecord]) -> Result<bool, RepoError> {
        Sql(self).delete_instance(name, audit).await.map_err(repo_error)
    }

    async fn begin_pending(&self, name: &str, node: &str, now: Timestamp) -> Result<(), RepoError> {
        Sql(self).begin_pending(name, node, now).await.map_err(repo_error)
    }

    async fn finish_pending_instance(&self, instance: &InstanceRecord, audit: &[AuditRecord]) -> Result<(), RepoError> {
        Sql(self).finish_pending_instance(instance, audit).await.map_err(repo_error)
    }

    async fn discard(&self, name: &str, audit: &[AuditRecord]) -> Result<(), RepoError> {
        Sql(self).discard(name, audit).await.map_err(repo_error)
    }

    fn single_process(&self) -> bool {
        Sql(self).single_process()
    }

    async fn heartbeat(&self, node: &str, now: Timestamp, forget_before: Timestamp) -> Result<(), RepoError> {
        Sql(self).heartbeat(node, now, forget_before).await.map_err(repo_error)
    }

    async fn orphaned_work(
        &self,
        node: &str,
        dead_before: Timestamp,
        ownerless_before: Timestamp,
    ) -> Result<(Vec<(String, String, u64)>, Vec<String>), RepoError> {
        Sql(self).orphaned_work(node, dead_before, ownerless_before).await.map_err(repo_error)
    }

    async fn pin_objects(&self, instance: &str, pin: &str) -> Result<(), RepoError> {
        Sql(self).pin_objects(instance, pin).await.map_err(repo_error)
    }

    async fn pinned_objects(&self, pin: &str, after: &str, limit: u64) -> Result<Vec<ObjectRecord>, RepoError> {
        Sql(self).pinned_objects(pin, after, limit).await.map_err(repo_error)
    }

    async fn unpin(&self, instance: &str, pin: &str) -> Result<(), RepoError> {
        Sql(self).unpin(instance, pin).await.map_err(repo_error)
    }

    async fn insert_backup(&self, backup: &BackupRecord, kek: &KekRecord, node: &str) -> Result<(), RepoError> {
        Sql(self).insert_backup(backup, kek, node).await.map_err(repo_error)
    }

    async fn finish_backup(
        &self,
        name: &str,
        size_bytes: u64,
        object_count: u64,
        audit: &[AuditRecord],
    ) -> Result<(), RepoError> {
        Sql(self).finish_backup(name, size_bytes, object_count, audit).await.map_err(repo_error)
    }

    async fn backup(&self, name: &str) -> Result<Option<BackupRecord>, RepoError> {
        Sql(self).backup(name).await.map_err(repo_error)
    }

    async fn count_pinned(&self, pin: &str) -> Result<u64, RepoError> {
        Sql(self).count(COUNT_PINNED, pin).await.map_err(repo_error)
    }

    async fn count_objects(&self, instance: &str) -> Result<u64, RepoError> {
        Sql(self).count(COUNT_OBJECTS, instance).await.map_err(repo_error)
    }

    async fn insert_operation(&self, record: &OperationRecord) -> Result<(), RepoError> {
        store_operations::insert(self.backend(), record).await.map_err(repo_error)
    }

    async fn operation(&self, name: &str) -> Result<Option<OperationRecord>, RepoError> {
        store_operations::get(self.backend(), name).await.map_err(repo_error)
    }

    async fn list_operations(&self, parent: &str, after: &str, limit: u64) -> Result<Vec<OperationRecord>, RepoError> {
        store_operations::list(self.backend(), parent, after, limit).await.map_err(repo_error)
    }

    async fn operation_progress(
        &self,
        name: &str,
        node: &str,
        objects_done: u64,
        objects_total: Option<u64>,
        bytes_done: u64,
    ) -> Result<bool, RepoError> {
        store_operations::progress(self.backend(), name, node, objects_done, objects_total, bytes_done)
            .await
            .map_err(repo_error)
    }

    async fn finish_operation(&self, name: &str, node: &str, result: &str, end: Timestamp) -> Result<(), RepoError> {
        store_operations::finish(self.backend(), name, node, result, end).await.map_err(repo_error)
    }

    async fn cancel_operation(&self, name: &str, audit: &[AuditRecord]) -> Result<bool, RepoError> {
        Sql(self).cancel_operation(name, audit).await.map_err(repo_error)
    }

    async fn claim_operations(&self, node: &str, dead_before: Timestamp) -> Result<Vec<OperationRecord>, RepoError> {
        store_operations::claim(self.backend(), node, dead_before).await.map_err(repo_error)
    }

    async fn prune_operations(&self, before: Timestamp) -> Result<u64, RepoError> {
        store_operations::prune(self.backend(), before).await.map_err(repo_error)
    }

    async fn list_backups(&self, instance: &str) -> Result<Vec<BackupRecord>, RepoError> {
        Sql(self).list_backups(instance).await.map_err(repo_error)
    }

    async fn backups_by_key(&self, key: &str) -> Result<Vec<BackupRecord>, RepoError> {
        Sql(self).backups_by_key(key).await.map_err(repo_error)
    }

    async fn replicas_of(&self, primary: &str) -> Result<Vec<String>, RepoError> {
        Sql(self).replicas_of(primary).await.map_err(repo_error)
    }

    async fn all_replicas(&self) -> Result<Vec<String>, RepoError> {
        Sql(self).all_replicas().await.map_err(repo_error)
    }

    async fn replica_sources(&self, replica: &str) -> Result<Vec<(String, u64)>, RepoError> {
        Sql(self).replica_sources(replica).await.map_err(repo_error)
    }

    async fn set_replica_source(&self, replica: &str, object: &str, generation: u64) -> Result<(), RepoError> {
        Sql(self).set_replica_source(replica, object, generation).await.map_err(repo_error)
    }

    async fn insert_export(&self, export: &ExportRecord, audit: &[AuditRecord]) -> Result<(), RepoError> {
        Sql(self).insert_export(export, audit).await.map_err(repo_error)
    }

    async fn exports_by_key(&self, key: &str) -> Result<Vec<ExportRecord>, RepoError> {
        Sql(self).exports_by_key(key).await.map_err(repo_error)
    }

    async fn exports_under(&self, prefix: &str) -> Result<Vec<(ExportRecord, bool)>, RepoError> {
        Sql(self).exports_under(prefix).await.map_err(repo_error)
    }

    async fn set_exports_missing(
        &self,
        changes: &[(String, bool)],
        now: Timestamp,
        audit: &[AuditRecord],
    ) -> Result<(), RepoError> {
        Sql(self).set_exports_missing(changes, now, audit).await.map_err(repo_error)
    }

    async fn keks(&self, instance: &str) -> Result<Vec<KekRecord>, RepoError> {
        Sql(self).keks(instance).await.map_err(repo_error)
    }

    async fn insert_kek(&self, instance: &str, kek: &KekRecord) -> Result<(), RepoError> {
        Sql(self).insert_kek(instance, kek).await.map_err(repo_error)
    }

    async fn update_keks(
        &self,
        instance: &str,
        keks: &[(u64, WrappedKek)],
        audit: &[AuditRecord],
    ) -> Result<(), RepoError> {
        Sql(self).update_keks(instance, keks, audit).await.map_err(repo_error)
    }

    async fn delete_kek_if_unused(&self, instance: &str, id: u64) -> Result<bool, RepoError> {
        Sql(self).delete_kek_if_unused(instance, id).await.map_err(repo_error)
    }

    async fn begin_upload(
        &self,
        instance: &str,
        object: &str,
        generation: u64,
        node: &str,
        now: Timestamp,
    ) -> Result<(), RepoError> {
        Sql(self).begin_upload(instance, object, generation, node, now).await.map_err(repo_error)
    }

    async fn put_chunks(
        &self,
        instance: &str,
        object: &str,
        generation: u64,
        first_index: u64,
        chunks: &[StoredChunk],
    ) -> Result<(), RepoError> {
        Sql(self).put_chunks(instance, object, generation, first_index, chunks).await.map_err(repo_error)
    }

    async fn commit_upload(
        &self,
        instance: &str,
        object: &ObjectRecord,
        first_index: u64,
        last_chunks: &[StoredChunk],
        expected_generation: Option<u64>,
        audit: &[AuditRecord],
    ) -> Result<(), RepoError> {
        Sql(self)
            .commit_upload(instance, object, first_index, last_chunks, expected_generation, audit)
            .await
            .map_err(repo_error)
    }

    async fn abort_upload(&self, instance: &str, object: &str, generation: u64) -> Result<(), RepoError> {
        Sql(self).abort_upload(instance, object, generation).await.map_err(repo_error)
    }

    async fn object(&self, instance: &str, name: &str) -> Result<Option<ObjectRecord>, RepoError> {
        Sql(self).object(instance, name).await.map_err(repo_error)
    }

    async fn list_objects(
        &self,
        instance: &str,
        prefix: &str,
        after: &str,
        limit: u64,
    ) -> Result<Vec<ObjectRecord>, RepoError> {
        Sql(self).list_objects(instance, prefix, after, limit).await.map_err(repo_error)
    }

    async fn delete_object(&self, instance: &str, name: &str, audit: &[AuditRecord]) -> Result<bool, RepoError> {
        Sql(self).delete_object(instance, name, audit).await.map_err(repo_error)
    }

    async fn chunk(
        &self,
        instance: &str,
        object: &str,
        generation: u64,
        index: u64,
    ) -> Result<Option<StoredChunk>, RepoError> {
        Sql(self).chunk(instance, object, generation, index).await.map_err(repo_error)
    }
}

/// Everything stored under a resource's name: what deleting an instance or discarding a build
/// or backup removes.
const RESOURCE_DATA: [&str; 7] = [
    DELETE_RESOURCE_WORK,
    DELETE_INSTANCE_CHUNKS,
    DELETE_INSTANCE_OBJECTS,
    DELETE_INSTANCE_UPLOADS,
    DELETE_INSTANCE_KEKS,
    DELETE_INSTANCE_PINS,
    DELETE_INSTANCE_REPLICA_SOURCES,
];

fn kek_params(instance: &str, kek: &KekRecord) -> Vec<Value> {
    vec![
        text(instance),
        int(kek.id),
        Value::OptBlob(Some(kek.wrapped.ciphertext.clone())),
        text(kek.wrapped.key_version.as_deref().unwrap_or_default()),
        Value::Int(kek.create_time.unix_nanos_i64()),
    ]
}
