//! [`KmsRepository`] implemented once for every SQL driver.

use async_trait::async_trait;
use keyhold_api::iam::Policy;
use keyhold_api::resources::{CryptoKey, CryptoKeyVersion, ImportJob, KeyRing, Operation, RetiredResource};
use keyhold_api::wire::Timestamp;
use keyhold_api::{CryptoKeyName, CryptoKeyVersionName, ImportJobName, KeyRingName, LocationName};
use keyhold_kms::VersionMaterial;
use keyhold_kms::audit::{AuditRecord, EncodedRecord, StoredAuditEntry, chain_hash};
use keyhold_kms::repo::{
    AuditPosition, AuditQuery, CHANGE_LOG_KEPT, Change, CryptoKeyRecord, ImportJobRecord, KmsRepository,
    OrgPolicyRecord, PolicyRecord, ProjectRecord, RepoError, ServiceIdentityRecord, TokenRecord, VersionRecord,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::schema::*;
use crate::sql::{Row, SqlBackend, SqlConn, Value};

/// The KMS store over a SQL driver.
#[derive(Debug)]
pub struct SqlStore<B> {
    backend: B,
    /// How many audit entries are kept (`--in-memory` only: the newest, and up to a 64th more
    /// between prunings; the others are deleted as new ones are appended). `None`: all, as the
    /// append-only triggers require.
    audit_kept: Option<i64>,
}

impl<B> SqlStore<B> {
    pub(crate) fn new(backend: B) -> Self {
        Self { backend, audit_kept: None }
    }

    /// Keeps only the newest `entries` audit entries (a database without the no-delete trigger
    /// and without the audit read indexes: the in-memory one).
    pub(crate) fn keeping_audit_entries(mut self, entries: u64) -> Self {
        self.audit_kept = Some(i64::try_from(entries).unwrap_or(i64::MAX).max(1));
        self
    }

    pub(crate) fn backend(&self) -> &B {
        &self.backend
    }

    pub(crate) fn audit_kept(&self) -> Option<i64> {
        self.audit_kept
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<Value, RepoError> {
    serde_json::to_string(v).map(Value::Text).map_err(|e| RepoError::Corrupt(e.to_string()))
}

fn from_json<T: DeserializeOwned>(v: &Value) -> Result<T, RepoError> {
    serde_json::from_str(v.text()?).map_err(|e| RepoError::Corrupt(format!("stored resource does not decode: {e}")))
}

/// A stored policy. Releases before 2026-12-02 kept `auditConfigs` as any JSON; configs that
/// are not in Google's shape are left out, with a warning, so the resource stays usable and its
/// bindings hold.
fn stored_policy(resource: &str, v: &Value) -> Result<Policy, RepoError> {
    from_json::<Policy>(v).or_else(|e| {
        let mut raw: serde_json::Map<String, serde_json::Value> = from_json(v).map_err(|_| e.clone())?;
        raw.remove("auditConfigs").ok_or_else(|| e.clone())?;
        let policy = serde_json::from_value(raw.into()).map_err(|_| e)?;
        tracing::warn!(
            resource,
            "the stored policy's auditConfigs are not in Google's shape; left out until it is set again"
        );
        Ok(policy)
    })
}

fn name<T: std::str::FromStr>(v: &Value) -> Result<T, RepoError> {
    v.text()?.parse().map_err(|_| RepoError::Corrupt(format!("stored name {:?} does not parse", v.text())))
}

fn key_record(row: &Row) -> Result<CryptoKeyRecord, RepoError> {
    Ok(CryptoKeyRecord {
        name: name(&row[0])?,
        key: from_json::<CryptoKey>(&row[1])?,
        primary_version: row[2].opt_int()?.map(|v| v as u64),
        revision: row[3].int()?,
    })
}

fn import_job_record(row: &[Value]) -> Result<ImportJobRecord, RepoError> {
    Ok(ImportJobRecord {
        name: name(&row[0])?,
        job: from_json::<ImportJob>(&row[1])?,
        wrapping_key: row[2].opt_blob()?,
    })
}

fn version_record(row: &[Value]) -> Result<VersionRecord, RepoError> {
    let version = from_json::<CryptoKeyVersion>(&row[1])?;
    let material = VersionMaterial::from_column(&version, row[2].opt_blob()?).map_err(RepoError::Corrupt)?;
    Ok(VersionRecord { name: name(&row[0])?, version, material, revision: row[3].int()? })
}

fn nanos(t: Option<Timestamp>) -> Value {
    Value::OptInt(t.map(Timestamp::unix_nanos_i64))
}

fn version_params(v: &VersionRecord) -> Result<Vec<Value>, RepoError> {
    Ok(vec![
        Value::Text(v.name.to_string()),
        Value::Text(v.name.crypto_key.to_string()),
        Value::Int(v.name.version as i64),
        to_json(&v.version)?,
        Value::OptBlob(v.material.to_column()),
        nanos(v.due_time()),
    ])
}

/// The entry a change carries, serialized here (the others come serialized by the writer).
/// [`EncodedRecord`] is what is stored: its indexed fields and the exact JSON text that is
/// hashed, owned, so that a driver can build the insert statements wherever it runs them
/// (SQLite: on its thread, in the same hop as the query of the chain's head).
fn encode(record: &AuditRecord) -> Result<EncodedRecord, RepoError> {
    EncodedRecord::new(record.clone()).map_err(|e| RepoError::Corrupt(e.to_string()))
}

/// The statements that append `entries` to the chain whose head is `head` (the row of
/// [`LOCK_AUDIT_HEAD`]) and move the head.
fn chain_statements(
    head: &[Row],
    entries: Vec<EncodedRecord>,
    kept: Option<i64>,
) -> Result<Vec<(&'static str, Vec<Value>)>, RepoError> {
    let head = head.first().ok_or_else(|| RepoError::Corrupt("audit head row missing".into()))?;
    let mut seq = head[0].int()?;
    let old_head = seq;
    let mut prev = head[1].text()?.to_string();
    let mut statements = Vec::with_capacity(entries.len() + 2);
    for e in entries {
        seq += 1;
        let hash = chain_hash(&prev, seq, e.json());
        statements.push((
            INSERT_AUDIT,
            vec![
                Value::Int(seq),
                Value::Int(e.time().unix_nanos_i64()),
                Value::Text(e.project().to_owned()),
                Value::Text(e.principal().to_owned()),
                Value::Text(e.method().to_owned()),
                Value::Text(e.resource().to_owned()),
                Value::Text(e.kind().as_str().to_owned()),
                Value::Text(e.into_json()),
                Value::Text(prev),
                Value::Text(hash.clone()),
            ],
        ));
        prev = hash;
    }
    statements.push((SET_AUDIT_HEAD, vec![Value::Int(seq), Value::Text(prev)]));
    if let Some(kept) = kept {
        // Pruned a chunk at a time (a 64th of what is kept), so that most appends carry no
        // delete; the log holds between `kept` and `kept + chunk` entries.
        let chunk = (kept / 64).clamp(1, 4096);
        let (before, now) = ((old_head - kept).max(0) / chunk, (seq - kept).max(0) / chunk);
        if now > before {
            statements.push((PRUNE_AUDIT, vec![Value::Int(seq - kept)]));
        }
    }
    Ok(statements)
}

/// Appends entries to the chain inside an open transaction. The head row is locked first, so
/// appenders on every node (and admin changes carrying their entry) serialize on it.
/// Returns the statements that insert the entries and move the head; the caller runs them with
/// whatever else ends its transaction, in one go.
async fn append_entries(
    tx: &mut Box<dyn SqlConn>,
    entries: Vec<EncodedRecord>,
    kept: Option<i64>,
) -> Result<Vec<(&'static str, Vec<Value>)>, RepoError> {
    let head = tx.query(LOCK_AUDIT_HEAD, vec![]).await?;
    chain_statements(&head, entries, kept)
}

/// Runs `statements` (a store change) in the open transaction `tx`, appends the call's success
/// entries `audit` (possibly none) to the chain and commits, all at once: the store's changes
/// are audited as the KMS's are ([`SqlStore::write_audited`]). The head, one lock for every
/// audited writer on every node, is taken after the change's own statements, so that it is
/// held only for the append (never while, say, a large object's chunks are deleted); on SQLite
/// that is two hops to its thread.
pub(crate) async fn commit_audited(
    mut tx: Box<dyn SqlConn>,
    statements: Vec<(&'static str, Vec<Value>)>,
    audit: &[AuditRecord],
    kept: Option<i64>,
) -> Result<(), RepoError> {
    if audit.is_empty() {
        return tx.execute_many_and_commit(statements).await;
    }
    let rows = audit.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
    tx.execute_many(statements).await?;
    chain_and_commit(tx, rows, kept, None).await
}

/// Locks the head in `tx`, appends `rows` after it, runs `after` (if any) and commits, in one
/// round trip to the driver (for SQLite, one hop to its thread).
async fn chain_and_commit(
    tx: Box<dyn SqlConn>,
    rows: Vec<EncodedRecord>,
    kept: Option<i64>,
    after: Option<(&'static str, Vec<Value>)>,
) -> Result<(), RepoError> {
    let then = move |head: Vec<Row>| {
        let mut statements = chain_statements(&head, rows, kept)?;
        statements.extend(after);
        Ok(statements)
    };
    tx.query_then_commit(LOCK_AUDIT_HEAD, vec![], Box::new(then)).await
}

fn audit_entry(row: &Row) -> Result<StoredAuditEntry, RepoError> {
    Ok(StoredAuditEntry {
        seq: row[0].int()?,
        entry_json: row[1].text()?.to_string(),
        prev_hash: row[2].text()?.to_string(),
        hash: row[3].text()?.to_string(),
    })
}

fn ts(nanos: i64) -> Result<Timestamp, RepoError> {
    Timestamp::from_unix_nanos(nanos.into()).ok_or_else(|| RepoError::Corrupt(format!("bad timestamp {nanos}")))
}

fn token_record(row: &Row) -> Result<TokenRecord, RepoError> {
    Ok(TokenRecord {
        id: row[0].text()?.to_string(),
        hash: row[1].text()?.to_string(),
        principal: row[2].text()?.to_string(),
        description: row[3].text()?.to_string(),
        create_time: ts(row[4].int()?)?,
        expire_time: ts(row[5].int()?)?,
        revoke_time: row[6].opt_int()?.map(ts).transpose()?,
    })
}

fn identity_record(row: &Row) -> Result<ServiceIdentityRecord, RepoError> {
    Ok(ServiceIdentityRecord {
        project_id: row[0].text()?.to_string(),
        service: row[1].text()?.to_string(),
        email: row[2].text()?.to_string(),
        unique_id: row[3].text()?.to_string(),
        create_time: ts(row[4].int()?)?,
    })
}

/// The statements that record `change`: the counter advances, the log gets the entry under
/// the counter's new value, and the entry that fell out of the kept window goes.
fn change_statements(change: &Change) -> [(&'static str, Vec<Value>); 3] {
    let (kind, resource) = change.to_columns();
    [
        (BUMP_CHANGES, vec![]),
        (LOG_CHANGE, vec![Value::Text(kind.to_string()), Value::Text(resource)]),
        (PRUNE_CHANGES, vec![Value::Int(CHANGE_LOG_KEPT)]),
    ]
}

impl<B: SqlBackend> SqlStore<B> {
    /// Runs `f` in a transaction that also records `change` (advancing the change counter);
    /// commits on success.
    async fn write<R>(
        &self,
        change: Change,
        f: impl for<'c> FnOnce(&'c mut Box<dyn SqlConn>) -> crate::sql::BoxFuture<'c, Result<R, RepoError>>,
    ) -> Result<R, RepoError> {
        let mut tx = self.backend.begin().await?;
        let r = f(&mut tx).await?;
        for (sql, params) in change_statements(&change) {
            tx.execute(sql, params).await?;
        }
        tx.commit().await?;
        Ok(r)
    }

    /// [`Self::write`], appending `audit` to the audit chain in the same transaction.
    async fn write_audited<R>(
        &self,
        change: Change,
        audit: &AuditRecord,
        f: impl for<'c> FnOnce(&'c mut Box<dyn SqlConn>) -> crate::sql::BoxFuture<'c, Result<R, RepoError>>,
    ) -> Result<R, RepoError> {
        self.write_audited_changes(std::slice::from_ref(&change), audit, f).await
    }

    /// [`SqlStore::write_audited`] recording several changes; like every writer, it takes the
    /// audit head before the change counter (after `f`), so writers never wait on each other in
    /// opposite orders.
    async fn write_audited_changes<R>(
        &self,
        changes: &[Change],
        audit: &AuditRecord,
        f: impl for<'c> FnOnce(&'c mut Box<dyn SqlConn>) -> crate::sql::BoxFuture<'c, Result<R, RepoError>>,
    ) -> Result<R, RepoError> {
        let entry = vec![encode(audit)?];
        let mut tx = self.backend.begin().await?;
        let r = f(&mut tx).await?;
        let mut statements = append_entries(&mut tx, entry, self.audit_kept).await?;
        for change in changes {
            statements.extend(change_statements(change));
        }
        tx.execute_many_and_commit(statements).await?;
        Ok(r)
    }

    pub(crate) async fn read_rows(&self, sql: &'static str, params: Vec<Value>) -> Result<Vec<Row>, RepoError> {
        self.backend.read().await?.query(sql, params).await
    }

    /// The single number a `count(*)` of `parent`'s children answers.
    async fn count(&self, sql: &'static str, parent: String) -> Result<i64, RepoError> {
        let rows = self.read_rows(sql, vec![Value::Text(parent)]).await?;
        rows.first().ok_or_else(|| RepoError::Corrupt("count(*) returned no row".into()))?[0].int()
    }
}

#[async_trait]
impl<B: SqlBackend> KmsRepository for SqlStore<B> {
    async fn insert_key_ring(&self, name: &KeyRingName, ring: &KeyRing, audit: &AuditRecord) -> Result<(), RepoError> {
        let params = vec![Value::Text(name.to_string()), Value::Text(name.location.to_string()), to_json(ring)?];
        self.write_audited(Change::KeyRing(name.to_string()), audit, |tx| {
            Box::pin(async move { tx.execute(INSERT_KEY_RING, params).await.map(|_| ()) })
        })
        .await
    }

    async fn key_ring(&self, name: &KeyRingName) -> Result<Option<KeyRing>, RepoError> {
        let rows = self.read_rows(GET_KEY_RING, vec![Value::Text(name.to_string())]).await?;
        rows.first().map(|r| from_json(&r[0])).transpose()
    }

    async fn list_key_rings(&self, parent: &LocationName, after: &str, limit: i64) -> Result<Vec<KeyRing>, RepoError> {
        let params = vec![Value::Text(parent.to_string()), Value::Text(after.to_string()), Value::Int(limit)];
        let rows = self.read_rows(LIST_KEY_RINGS, params).await?;
        rows.iter().map(|r| from_json(&r[0])).collect()
    }

    async fn count_key_rings(&self, parent: &LocationName) -> Result<i64, RepoError> {
        self.count(COUNT_KEY_RINGS, parent.to_string()).await
    }

    async fn insert_import_job(&self, record: &ImportJobRecord, audit: &AuditRecord) -> Result<(), RepoError> {
        let expire =
            record.job.expire_time.ok_or_else(|| RepoError::Corrupt("an import job has no expireTime".into()))?;
        let params = vec![
            Value::Text(record.name.to_string()),
            Value::Text(record.name.key_ring.to_string()),
            to_json(&record.job)?,
            Value::OptBlob(record.wrapping_key.clone()),
            Value::Int(expire.unix_nanos_i64()),
        ];
        self.write_audited(Change::ImportJob(record.name.to_string()), audit, |tx| {
            Box::pin(async move { tx.execute(INSERT_IMPORT_JOB, params).await.map(|_| ()) })
        })
        .await
    }

    async fn import_job(&self, name: &ImportJobName) -> Result<Option<ImportJobRecord>, RepoError> {
        let rows = self.read_rows(GET_IMPORT_JOB, vec![Value::Text(name.to_string())]).await?;
        rows.first().map(|r| import_job_record(r)).transpose()
    }

    async fn list_import_jobs(
        &self,
        parent: &KeyRingName,
        after: &str,
        limit: i64,
    ) -> Result<Vec<ImportJobRecord>, RepoError> {
        let params = vec![Value::Text(parent.to_string()), Value::Text(after.to_string()), Value::Int(limit)];
        let rows = self.read_rows(LIST_IMPORT_JOBS, params).await?;
        rows.iter().map(|r| import_job_record(r)).collect()
    }

    async fn count_import_jobs(&self, parent: &KeyRingName) -> Result<i64, RepoError> {
        self.count(COUNT_IMPORT_JOBS, parent.to_string()).await
    }

    async fn erase_expired_wrapping_keys(&self, now: Timestamp) -> Result<u64, RepoError> {
        // Read first: most passes find nothing, and write (and log) nothing.
        let params = vec![Value::Int(now.unix_nanos_i64())];
        let due = self.read_rows(COUNT_EXPIRED_WRAPPING_KEYS, params.clone()).await?;
        if due.first().map(|r| r[0].int()).transpose()?.unwrap_or(0) == 0 {
            return Ok(0);
        }
        let erased = self
            .write(Change::ImportJob(String::new()), |tx| {
                Box::pin(async move { tx.execute(ERASE_EXPIRED_WRAPPING_KEYS, params).await })
            })
            .await?;
        if erased > 0 {
            self.backend.after_erase().await;
        }
        Ok(erased)
    }

    async fn insert_imported_version(
        &self,
        version: &VersionRecord,
        fingerprint: &str,
        audit: &AuditRecord,
    ) -> Result<(), RepoError> {
        let params = version_params(version)?;
        let print = vec![Value::Text(version.name.to_string()), Value::Text(fingerprint.to_string())];
        self.write_audited(Change::Key(version.name.crypto_key.clone()), audit, |tx| {
            Box::pin(async move {
                tx.execute(INSERT_VERSION, params).await?;
                tx.execute(INSERT_IMPORT_FINGERPRINT, print).await?;
                Ok(())
            })
        })
        .await
    }

    async fn delete_version(
        &self,
        version: &VersionRecord,
        operation: &Operation,
        audit: &AuditRecord,
    ) -> Result<(), RepoError> {
        let name = version.name.to_string();
        let delete = vec![Value::Text(name.clone()), Value::Int(version.revision)];
        let primary =
            vec![Value::Text(version.name.crypto_key.to_string()), Value::OptInt(Some(version.name.version as i64))];
        let print = vec![Value::Text(name)];
        let op = vec![Value::Text(operation.name.clone()), to_json(operation)?];
        self.write_audited(Change::Key(version.name.crypto_key.clone()), audit, |tx| {
            Box::pin(async move {
                if tx.execute(DELETE_VERSION, delete).await? == 0 {
                    return Err(RepoError::Conflict);
                }
                tx.execute(CLEAR_PRIMARY_IF, primary).await?;
                tx.execute(DELETE_IMPORT_FINGERPRINT, print).await?;
                tx.execute(INSERT_KMS_OPERATION, op).await?;
                Ok(())
            })
        })
        .await
    }

    async fn delete_crypto_key(
        &self,
        key: &CryptoKeyRecord,
        retired: &RetiredResource,
        operation: &Operation,
        audit: &AuditRecord,
    ) -> Result<(), RepoError> {
        let name = key.name.to_string();
        let delete = vec![Value::Text(name.clone()), Value::Int(key.revision)];
        let retire = vec![
            Value::Text(retired.name.clone()),
            Value::Text(key.name.key_ring.location.to_string()),
            Value::Text(name.clone()),
            to_json(retired)?,
        ];
        let op = vec![Value::Text(operation.name.clone()), to_json(operation)?];
        let policy = vec![Value::Text(name.clone())];
        // Other nodes drop their cached copy of the key and of its policy.
        let changes = [Change::Key(key.name.clone()), Change::Policy(name)];
        self.write_audited_changes(&changes, audit, |tx| {
            Box::pin(async move {
                if tx.execute(DELETE_CRYPTO_KEY, delete).await? == 0 {
                    return Err(RepoError::Conflict);
                }
                tx.execute(INSERT_RETIRED, retire).await?;
                tx.execute(DELETE_POLICY, policy).await?;
                tx.execute(INSERT_KMS_OPERATION, op).await?;
                Ok(())
            })
        })
        .await
    }

    async fn retired_resource(&self, name: &str) -> Result<Option<RetiredResource>, RepoError> {
        let rows = self.read_rows(GET_RETIRED, vec![Value::Text(name.to_string())]).await?;
        rows.first().map(|r| from_json(&r[0])).transpose()
    }

    async fn retired_resource_of(&self, original: &str) -> Result<Option<RetiredResource>, RepoError> {
        let rows = self.read_rows(GET_RETIRED_OF, vec![Value::Text(original.to_string())]).await?;
        rows.first().map(|r| from_json(&r[0])).transpose()
    }

    async fn list_retired_resources(
        &self,
        location: &LocationName,
        after: &str,
        limit: i64,
    ) -> Result<Vec<RetiredResource>, RepoError> {
        let params = vec![Value::Text(location.to_string()), Value::Text(after.to_string()), Value::Int(limit)];
        let rows = self.read_rows(LIST_RETIRED, params).await?;
        rows.iter().map(|r| from_json(&r[0])).collect()
    }

    async fn count_retired_resources(&self, location: &LocationName) -> Result<i64, RepoError> {
        self.count(COUNT_RETIRED, location.to_string()).await
    }

    async fn kms_operation(&self, name: &str) -> Result<Option<Operation>, RepoError> {
        let rows = self.read_rows(GET_KMS_OPERATION, vec![Value::Text(name.to_string())]).await?;
        rows.first().map(|r| from_json(&r[0])).transpose()
    }

    async fn import_fingerprint(&self, version: &CryptoKeyVersionName) -> Result<Option<String>, RepoError> {
        let rows = self.read_rows(GET_IMPORT_FINGERPRINT, vec![Value::Text(version.to_string())]).await?;
        rows.first().map(|r| Ok(r[0].text()?.to_string())).transpose()
    }

    async fn insert_crypto_key(
        &self,
        key: &CryptoKeyRecord,
        first: Option<&VersionRecord>,
        audit: &AuditRecord,
    ) -> Result<(), RepoError> {
        let key_params = vec![
            Value::Text(key.name.to_string()),
            Value::Text(key.name.key_ring.to_string()),
            to_json(&key.key)?,
            Value::OptInt(key.primary_version.map(|v| v as i64)),
            Value::Int(first.map_or(1, |v| v.name.version as i64 + 1)),
            nanos(key.key.next_rotation_time),
        ];
        let version_params = first.map(version_params).transpose()?;
        let retired_check = Value::Text(key.name.to_string());
        self.write_audited(Change::Key(key.name.clone()), audit, |tx| {
            Box::pin(async move {
                if tx.execute(INSERT_CRYPTO_KEY, key_params).await? == 0 {
                    // The name of a deleted key (a retired resource).
                    return Err(RepoError::AlreadyExists);
                }
                // Again, now that the insert has waited for any deletion of the same name: on
                // PostgreSQL (read committed) this statement sees a retirement committed since
                // the insert's own snapshot was taken.
                if !tx.query(RETIRED_EXISTS, vec![retired_check]).await?.is_empty() {
                    return Err(RepoError::AlreadyExists);
                }
                if let Some(p) = version_params {
                    tx.execute(INSERT_VERSION, p).await?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn crypto_key(&self, name: &CryptoKeyName) -> Result<Option<CryptoKeyRecord>, RepoError> {
        let rows = self.read_rows(GET_CRYPTO_KEY, vec![Value::Text(name.to_string())]).await?;
        rows.first().map(key_record).transpose()
    }

    async fn list_crypto_keys(
        &self,
        parent: &KeyRingName,
        after: &str,
        limit: i64,
    ) -> Result<Vec<(CryptoKeyRecord, Option<VersionRecord>)>, RepoError> {
        let params = vec![Value::Text(parent.to_string()), Value::Text(after.to_string()), Value::Int(limit)];
        let rows = self.read_rows(LIST_CRYPTO_KEYS, params).await?;
        rows.iter()
            .map(|row| {
                let primary = match row[4] {
                    Value::Null => None,
                    _ => Some(version_record(&row[4..8])?),
                };
                Ok((key_record(row)?, primary))
            })
            .collect()
    }

    async fn count_crypto_keys(&self, parent: &KeyRingName) -> Result<i64, RepoError> {
        self.count(COUNT_CRYPTO_KEYS, parent.to_string()).await
    }

    async fn update_crypto_key(&self, key: &CryptoKeyRecord, audit: &AuditRecord) -> Result<i64, RepoError> {
        let params = vec![
            to_json(&key.key)?,
            Value::OptInt(key.primary_version.map(|v| v as i64)),
            nanos(key.key.next_rotation_time),
            Value::Text(key.name.to_string()),
            Value::Int(key.revision),
        ];
        self.write_audited(Change::Key(key.name.clone()), audit, |tx| {
            Box::pin(async move {
                let rows = tx.query(UPDATE_CRYPTO_KEY, params).await?;
                rows.first().ok_or(RepoError::Conflict)?[0].int()
            })
        })
        .await
    }

    async fn allocate_version_id(&self, key: &CryptoKeyName) -> Result<u64, RepoError> {
        let params = vec![Value::Text(key.to_string())];
        self.write(Change::Key(key.clone()), |tx| {
            Box::pin(async move {
                let rows = tx.query(ALLOCATE_VERSION_ID, params).await?;
                Ok(rows.first().ok_or(RepoError::Conflict)?[0].int()? as u64)
            })
        })
        .await
    }

    async fn insert_version(
        &self,
        version: &VersionRecord,
        make_primary: bool,
        audit: &AuditRecord,
    ) -> Result<(), RepoError> {
        let params = version_params(version)?;
        let primary = make_primary.then(|| {
            vec![Value::OptInt(Some(version.name.version as i64)), Value::Text(version.name.crypto_key.to_string())]
        });
        self.write_audited(Change::Key(version.name.crypto_key.clone()), audit, |tx| {
            Box::pin(async move {
                tx.execute(INSERT_VERSION, params).await?;
                if let Some(p) = primary {
                    tx.execute(SET_PRIMARY, p).await?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn version(&self, name: &CryptoKeyVersionName) -> Result<Option<VersionRecord>, RepoError> {
        let rows = self.read_rows(GET_VERSION, vec![Value::Text(name.to_string())]).await?;
        rows.first().map(|r| version_record(r)).transpose()
    }

    async fn list_versions(
        &self,
        key: &CryptoKeyName,
        after: u64,
        limit: i64,
    ) -> Result<Vec<VersionRecord>, RepoError> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let params = vec![Value::Text(key.to_string()), Value::Int(after), Value::Int(limit)];
        let rows = self.read_rows(LIST_VERSIONS, params).await?;
        rows.iter().map(|r| version_record(r)).collect()
    }

    async fn count_versions(&self, key: &CryptoKeyName) -> Result<i64, RepoError> {
        self.count(COUNT_VERSIONS, key.to_string()).await
    }

    async fn list_all_versions(&self) -> Result<Vec<VersionRecord>, RepoError> {
        let rows = self.read_rows(LIST_ALL_VERSIONS, vec![]).await?;
        rows.iter().map(|r| version_record(r)).collect()
    }

    async fn update_version(&self, version: &VersionRecord, audit: &AuditRecord) -> Result<i64, RepoError> {
        let erased = version.material.is_erased();
        let params = vec![
            to_json(&version.version)?,
            Value::OptBlob(version.material.to_column()),
            nanos(version.due_time()),
            Value::Text(version.name.to_string()),
            Value::Int(version.revision),
        ];
        let rev = self
            .write_audited(Change::Key(version.name.crypto_key.clone()), audit, |tx| {
                Box::pin(async move {
                    let rows = tx.query(UPDATE_VERSION, params).await?;
                    rows.first().ok_or(RepoError::Conflict)?[0].int()
                })
            })
            .await?;
        if erased {
            self.backend.after_erase().await;
        }
        Ok(rev)
    }

    async fn versions_due(&self, now: Timestamp) -> Result<Vec<CryptoKeyVersionName>, RepoError> {
        let rows = self.read_rows(VERSIONS_DUE, vec![Value::Int(now.unix_nanos_i64())]).await?;
        rows.iter().map(|r| name(&r[0])).collect()
    }

    async fn keys_due_for_rotation(&self, now: Timestamp) -> Result<Vec<CryptoKeyName>, RepoError> {
        let rows = self.read_rows(KEYS_DUE_FOR_ROTATION, vec![Value::Int(now.unix_nanos_i64())]).await?;
        rows.iter().map(|r| name(&r[0])).collect()
    }

    async fn change_counter(&self) -> Result<i64, RepoError> {
        let rows = self.read_rows(CHANGE_COUNTER, vec![]).await?;
        rows.first().ok_or_else(|| RepoError::Corrupt("change counter row missing".into()))?[0].int()
    }

    async fn changes_since(&self, after: i64, limit: i64) -> Result<Vec<(i64, Change)>, RepoError> {
        let rows = self.read_rows(CHANGES_SINCE, vec![Value::Int(after), Value::Int(limit)]).await?;
        rows.iter().map(|r| Ok((r[0].int()?, Change::from_columns(r[1].text()?, r[2].text()?)))).collect()
    }

    async fn meta_set_if_absent(&self, key: &str, value: &str) -> Result<String, RepoError> {
        let insert = vec![Value::Text(key.to_string()), Value::Text(value.to_string())];
        let get = vec![Value::Text(key.to_string())];
        self.write(Change::Other, |tx| {
            Box::pin(async move {
                tx.execute(META_INSERT, insert).await?;
                let rows = tx.query(META_GET, get).await?;
                Ok(rows.first().ok_or_else(|| RepoError::Corrupt("meta row missing".into()))?[0].text()?.to_string())
            })
        })
        .await
    }

    async fn policy(&self, resource: &str) -> Result<Option<PolicyRecord>, RepoError> {
        let rows = self.read_rows(GET_POLICY, vec![Value::Text(resource.to_string())]).await?;
        rows.first()
            .map(|r| Ok(PolicyRecord { policy: stored_policy(resource, &r[0])?, revision: r[1].int()? }))
            .transpose()
    }

    async fn set_policy(
        &self,
        resource: &str,
        policy: &Policy,
        expected_revision: Option<i64>,
        audit: &AuditRecord,
    ) -> Result<i64, RepoError> {
        let json = to_json(policy)?;
        let change = Change::Policy(resource.to_string());
        // A key's policy is written only while the key exists: its row is locked (and must be
        // there) in the same transaction, so a deletion cannot slip between the check and the
        // write and leave the policy behind.
        let key_lock = resource.parse::<CryptoKeyName>().is_ok().then(|| vec![Value::Text(resource.to_string())]);
        let resource = Value::Text(resource.to_string());
        self.write_audited(change, audit, |tx| {
            Box::pin(async move {
                if let Some(key) = key_lock
                    && tx.execute(LOCK_CRYPTO_KEY, key).await? == 0
                {
                    return Err(RepoError::Conflict);
                }
                match expected_revision {
                    None => {
                        let rows = tx.query(UPSERT_POLICY, vec![resource, json]).await?;
                        rows.first().ok_or(RepoError::Conflict)?[0].int()
                    }
                    Some(0) => match tx.execute(INSERT_POLICY, vec![resource, json]).await {
                        Ok(_) => Ok(1),
                        Err(RepoError::AlreadyExists) => Err(RepoError::Conflict),
                        Err(e) => Err(e),
                    },
                    Some(rev) => {
                        let rows = tx.query(UPDATE_POLICY, vec![json, resource, Value::Int(rev)]).await?;
                        rows.first().ok_or(RepoError::Conflict)?[0].int()
                    }
                }
            })
        })
        .await
    }

    async fn project(&self, project_id: &str) -> Result<Option<ProjectRecord>, RepoError> {
        let rows = self.read_rows(GET_PROJECT, vec![Value::Text(project_id.to_string())]).await?;
        rows.first()
            .map(|r| {
                Ok(ProjectRecord {
                    project_id: r[0].text()?.to_string(),
                    project_number: r[1].int()?,
                    create_time: ts(r[2].int()?)?,
                })
            })
            .transpose()
    }

    async fn insert_project(&self, project: &ProjectRecord) -> Result<(), RepoError> {
        let params = vec![
            Value::Text(project.project_id.clone()),
            Value::Int(project.project_number),
            Value::Int(project.create_time.unix_nanos_i64()),
        ];
        let change = Change::Project(project.project_id.clone());
        self.write(change, |tx| Box::pin(async move { tx.execute(INSERT_PROJECT, params).await.map(|_| ()) })).await
    }

    async fn insert_token(&self, token: &TokenRecord, audit: &AuditRecord) -> Result<(), RepoError> {
        let params = vec![
            Value::Text(token.id.clone()),
            Value::Text(token.hash.clone()),
            Value::Text(token.principal.clone()),
            Value::Text(token.description.clone()),
            Value::Int(token.create_time.unix_nanos_i64()),
            Value::Int(token.expire_time.unix_nanos_i64()),
            nanos(token.revoke_time),
        ];
        self.write_audited(Change::TokenMinted, audit, |tx| {
            Box::pin(async move { tx.execute(TOKEN_COLUMNS_INSERT, params).await.map(|_| ()) })
        })
        .await
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, RepoError> {
        let rows = self.read_rows(TOKEN_BY_HASH, vec![Value::Text(hash.to_string())]).await?;
        rows.first().map(token_record).transpose()
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, RepoError> {
        self.read_rows(LIST_TOKENS, vec![]).await?.iter().map(token_record).collect()
    }

    async fn revoke_token(&self, id: &str, when: Timestamp, audit: &AuditRecord) -> Result<bool, RepoError> {
        let params = vec![Value::Int(when.unix_nanos_i64()), Value::Text(id.to_string())];
        // Nothing revoked: roll back, so the success entry is not committed.
        let result = self
            .write_audited(Change::Tokens, audit, |tx| {
                Box::pin(async move {
                    match tx.execute(REVOKE_TOKEN, params).await? {
                        0 => Err(RepoError::Conflict),
                        n => Ok(n),
                    }
                })
            })
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(RepoError::Conflict) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn insert_service_identity(
        &self,
        identity: &ServiceIdentityRecord,
        audit: &AuditRecord,
    ) -> Result<(), RepoError> {
        let params = vec![
            Value::Text(identity.project_id.clone()),
            Value::Text(identity.service.clone()),
            Value::Text(identity.email.clone()),
            Value::Text(identity.unique_id.clone()),
            Value::Int(identity.create_time.unix_nanos_i64()),
        ];
        self.write_audited(Change::Other, audit, |tx| {
            Box::pin(async move { tx.execute(INSERT_SERVICE_IDENTITY, params).await.map(|_| ()) })
        })
        .await
    }

    async fn service_identity(
        &self,
        project_id: &str,
        service: &str,
    ) -> Result<Option<ServiceIdentityRecord>, RepoError> {
        let rows = self
            .read_rows(
                GET_SERVICE_IDENTITY,
                vec![Value::Text(project_id.to_string()), Value::Text(service.to_string())],
            )
            .await?;
        rows.first().map(identity_record).transpose()
    }

    async fn service_identity_by_email(&self, email: &str) -> Result<Option<ServiceIdentityRecord>, RepoError> {
        let rows = self.read_rows(SERVICE_IDENTITY_BY_EMAIL, vec![Value::Text(email.to_string())]).await?;
        rows.first().map(identity_record).transpose()
    }

    async fn append_audit(&self, entries: &[EncodedRecord]) -> Result<(), RepoError> {
        let rows = entries.to_vec();
        chain_and_commit(self.backend.begin().await?, rows, self.audit_kept, None).await
    }

    async fn append_journaled_audit(
        &self,
        entries: &[EncodedRecord],
        journal: &str,
        through: i64,
    ) -> Result<(), RepoError> {
        let rows = entries.to_vec();
        let mark = (SET_JOURNAL_MARK, vec![Value::Text(journal.to_string()), Value::Int(through)]);
        chain_and_commit(self.backend.begin().await?, rows, self.audit_kept, Some(mark)).await
    }

    async fn audit_journal_through(&self, journal: &str) -> Result<i64, RepoError> {
        let rows = self.read_rows(GET_JOURNAL_MARK, vec![Value::Text(journal.to_string())]).await?;
        rows.first().map_or(Ok(0), |row| row[0].int())
    }

    async fn read_audit(&self, q: &AuditQuery) -> Result<Vec<(AuditPosition, StoredAuditEntry)>, RepoError> {
        // One statement per kind and resource match (see `AuditRead`), each an index range in
        // order but the resource index's tail; their pages are merged here.
        let kinds: &[&str] = if q.kind.is_empty() { &["activity", "data_access"] } else { &[q.kind.as_str()] };
        // The resource index is not partitioned by project: a project's read uses it only for a
        // prefix inside the project's names (`projects/P/...`, which no other project's resource
        // begins with), and otherwise tests the prefix on the project's own entries.
        let resources: &[ResourceMatch] = if q.resource_prefix.is_empty() {
            &[ResourceMatch::Any]
        } else if q.project != "-" && !q.resource_prefix.starts_with(&format!("projects/{}/", q.project)) {
            &[ResourceMatch::Within]
        } else {
            &[ResourceMatch::Exact, ResourceMatch::Below]
        };
        let after = q.after.unwrap_or(if q.descending {
            AuditPosition { time_nanos: i64::MAX, seq: i64::MAX }
        } else {
            AuditPosition { time_nanos: i64::MIN, seq: i64::MIN }
        });
        let dialect = self.backend.dialect();
        let indexed = self.audit_kept.is_none();
        let shape = |resource| AuditRead {
            project: q.project != "-",
            method: !q.method.is_empty(),
            principal: !q.principal.is_empty(),
            resource,
            descending: q.descending,
        };
        // (kind, shape) of each statement.
        let mut statements: Vec<(&str, AuditRead)> =
            kinds.iter().flat_map(|&kind| resources.iter().map(move |&resource| (kind, shape(resource)))).collect();
        // A read by resource takes the entries up to the resource index's mark from the index
        // and the rest from the log, in one walk of the tail for both kinds and the prefix's
        // whole range: every statement with the mark read here once, so that a fill moving it
        // in between changes nothing (the index only grows, and the log keeps every entry
        // after any mark).
        let mut mark = 0;
        if resources.iter().any(|&resource| shape(resource).split(indexed)) {
            let rows = self.read_rows(AUDIT_RESOURCES_MARK, vec![]).await?;
            mark =
                rows.first().ok_or_else(|| RepoError::Corrupt("audit_resources_mark row missing".into()))?[0].int()?;
            statements.push((q.kind.as_str(), shape(ResourceMatch::Tail)));
        }
        let mut found = Vec::new();
        for (kind, shape) in statements {
            let mut params = vec![
                Value::Text(kind.to_string()),
                Value::Int(q.start_nanos),
                Value::Int(q.end_nanos),
                Value::Int(after.time_nanos),
                Value::Int(after.seq),
            ];
            for (on, value) in [(shape.project, &q.project), (shape.method, &q.method), (shape.principal, &q.principal)]
            {
                if on {
                    params.push(Value::Text(value.clone()));
                }
            }
            match shape.resource {
                ResourceMatch::Any => {}
                ResourceMatch::Exact | ResourceMatch::Within => params.push(Value::Text(q.resource_prefix.clone())),
                ResourceMatch::Below | ResourceMatch::Tail => {
                    params.push(Value::Text(q.resource_prefix.clone()));
                    // Resource names are ASCII: DEL sorts after every character they hold.
                    params.push(Value::Text(format!("{}\u{7f}", q.resource_prefix)));
                }
            }
            if shape.split(indexed) {
                params.push(Value::Int(mark));
            }
            params.push(Value::Int(q.limit));
            let sql = shape.statement(dialect, indexed);
            for row in self.read_rows(sql, params).await? {
                found.push((AuditPosition { time_nanos: row[4].int()?, seq: row[0].int()? }, audit_entry(&row)?));
            }
        }
        found.sort_by_key(|(position, _)| *position);
        if q.descending {
            found.reverse();
        }
        found.truncate(usize::try_from(q.limit).unwrap_or(0));
        Ok(found)
    }

    async fn audit_head(&self) -> Result<(i64, String), RepoError> {
        let rows = self.read_rows(GET_AUDIT_HEAD, vec![]).await?;
        let row = rows.first().ok_or_else(|| RepoError::Corrupt("audit head row missing".into()))?;
        Ok((row[0].int()?, row[1].text()?.to_string()))
    }

    async fn audit_chain(&self, after: i64, limit: i64) -> Result<Vec<StoredAuditEntry>, RepoError> {
        self.read_rows(AUDIT_CHAIN, vec![Value::Int(after), Value::Int(limit)]).await?.iter().map(audit_entry).collect()
    }

    async fn org_policy(&self, name: &str) -> Result<Option<OrgPolicyRecord>, RepoError> {
        self.read_rows(GET_ORG_POLICY, vec![Value::Text(name.to_string())])
            .await?
            .first()
            .map(org_policy_record)
            .transpose()
    }

    async fn list_org_policies(&self, project: &str) -> Result<Vec<OrgPolicyRecord>, RepoError> {
        self.read_rows(LIST_ORG_POLICIES, vec![Value::Text(project.to_string())])
            .await?
            .iter()
            .map(org_policy_record)
            .collect()
    }

    async fn put_org_policy(&self, record: &OrgPolicyRecord, audit: &AuditRecord) -> Result<i64, RepoError> {
        let params = vec![
            Value::Text(record.name.clone()),
            Value::Text(record.project.clone()),
            to_json(&record.policy)?,
            Value::Int(record.update_time.unix_nanos_i64()),
        ];
        self.write_audited(Change::Other, audit, |tx| {
            Box::pin(async move {
                let rows = tx.query(UPSERT_ORG_POLICY, params).await?;
                rows.first().ok_or_else(|| RepoError::Corrupt("upsert returned no revision".into()))?[0].int()
            })
        })
        .await
    }

    async fn delete_org_policy(&self, name: &str, audit: &AuditRecord) -> Result<bool, RepoError> {
        let params = vec![Value::Text(name.to_string())];
        // Nothing deleted: roll back, so the call's success entry is not committed either.
        let r = self
            .write_audited(Change::Other, audit, |tx| {
                Box::pin(async move {
                    match tx.execute(DELETE_ORG_POLICY, params).await? {
                        0 => Err(RepoError::Conflict),
                        _ => Ok(()),
                    }
                })
            })
            .await;
        match r {
            Ok(()) => Ok(true),
            Err(RepoError::Conflict) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn org_policy_record(row: &Row) -> Result<OrgPolicyRecord, RepoError> {
    Ok(OrgPolicyRecord {
        name: row[0].text()?.to_string(),
        project: row[1].text()?.to_string(),
        policy: from_json(&row[2])?,
        update_time: ts(row[3].int()?)?,
        revision: row[4].int()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_policy_keeps_its_bindings_when_its_old_audit_configs_no_longer_parse() {
        let binding = r#""bindings":[{"role":"roles/cloudkms.viewer","members":["user:a@x.io"]}]"#;
        let old = Value::Text(format!(r#"{{"version":1,{binding},"auditConfigs":[[0,0],{{"x":1}}]}}"#));
        let p = stored_policy("projects/p", &old).unwrap();
        assert_eq!(p.bindings[0].members, ["user:a@x.io"]);
        assert!(p.audit_configs.is_empty());
        let good = Value::Text(format!(
            r#"{{"version":1,{binding},"auditConfigs":[{{"service":"allServices","auditLogConfigs":[{{"logType":"DATA_READ"}}]}}]}}"#
        ));
        assert_eq!(stored_policy("projects/p", &good).unwrap().audit_configs[0].service, "allServices");
        let broken = Value::Text(r#"{"bindings":[{"role":7}],"auditConfigs":[]}"#.into());
        assert!(matches!(stored_policy("projects/p", &broken), Err(RepoError::Corrupt(_))));
    }
}
