//! [`KmsStore`] implemented once for every SQL driver.

use async_trait::async_trait;
use keyhold_api::resources::{CryptoKey, CryptoKeyVersion, KeyRing};
use keyhold_api::wire::Timestamp;
use keyhold_api::{CryptoKeyName, CryptoKeyVersionName, KeyRingName, LocationName};
use keyhold_kms::store::{CryptoKeyRecord, KmsStore, StoreError, VersionRecord};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::schema::*;
use crate::sql::{Row, SqlBackend, SqlConn, Value};

/// The KMS store over a SQL driver.
#[derive(Debug)]
pub struct SqlStore<B> {
    backend: B,
}

impl<B> SqlStore<B> {
    pub(crate) fn new(backend: B) -> Self {
        Self { backend }
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<Value, StoreError> {
    serde_json::to_string(v).map(Value::Text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn from_json<T: DeserializeOwned>(v: &Value) -> Result<T, StoreError> {
    serde_json::from_str(v.text()?).map_err(|e| StoreError::Corrupt(format!("stored resource does not decode: {e}")))
}

fn name<T: std::str::FromStr>(v: &Value) -> Result<T, StoreError> {
    v.text()?.parse().map_err(|_| StoreError::Corrupt(format!("stored name {:?} does not parse", v.text())))
}

fn key_record(row: &Row) -> Result<CryptoKeyRecord, StoreError> {
    Ok(CryptoKeyRecord {
        name: name(&row[0])?,
        key: from_json::<CryptoKey>(&row[1])?,
        primary_version: row[2].opt_int()?.map(|v| v as u64),
        revision: row[3].int()?,
    })
}

fn version_record(row: &Row) -> Result<VersionRecord, StoreError> {
    Ok(VersionRecord {
        name: name(&row[0])?,
        version: from_json::<CryptoKeyVersion>(&row[1])?,
        material: row[2].opt_blob()?,
        revision: row[3].int()?,
    })
}

fn nanos(t: Option<Timestamp>) -> Value {
    Value::OptInt(t.map(Timestamp::unix_nanos_i64))
}

fn version_params(v: &VersionRecord) -> Result<Vec<Value>, StoreError> {
    Ok(vec![
        Value::Text(v.name.to_string()),
        Value::Text(v.name.crypto_key.to_string()),
        Value::Int(v.name.version as i64),
        to_json(&v.version)?,
        Value::OptBlob(v.material.clone()),
        nanos(v.version.destroy_time),
    ])
}

impl<B: SqlBackend> SqlStore<B> {
    /// Runs `f` in a transaction that also advances the change counter; commits on success.
    async fn write<R>(
        &self,
        f: impl for<'c> FnOnce(&'c mut Box<dyn SqlConn>) -> crate::sql::BoxFuture<'c, Result<R, StoreError>>,
    ) -> Result<R, StoreError> {
        let mut tx = self.backend.begin().await?;
        let r = f(&mut tx).await?;
        tx.execute(BUMP_CHANGES, vec![]).await?;
        tx.commit().await?;
        Ok(r)
    }

    async fn read_rows(&self, sql: &'static str, params: Vec<Value>) -> Result<Vec<Row>, StoreError> {
        self.backend.read().await?.query(sql, params).await
    }
}

#[async_trait]
impl<B: SqlBackend> KmsStore for SqlStore<B> {
    async fn insert_key_ring(&self, name: &KeyRingName, ring: &KeyRing) -> Result<(), StoreError> {
        let params = vec![Value::Text(name.to_string()), Value::Text(name.location.to_string()), to_json(ring)?];
        self.write(|tx| Box::pin(async move { tx.execute(INSERT_KEY_RING, params).await.map(|_| ()) })).await
    }

    async fn key_ring(&self, name: &KeyRingName) -> Result<Option<KeyRing>, StoreError> {
        let rows = self.read_rows(GET_KEY_RING, vec![Value::Text(name.to_string())]).await?;
        rows.first().map(|r| from_json(&r[0])).transpose()
    }

    async fn list_key_rings(&self, parent: &LocationName) -> Result<Vec<KeyRing>, StoreError> {
        let rows = self.read_rows(LIST_KEY_RINGS, vec![Value::Text(parent.to_string())]).await?;
        rows.iter().map(|r| from_json(&r[0])).collect()
    }

    async fn insert_crypto_key(&self, key: &CryptoKeyRecord, first: Option<&VersionRecord>) -> Result<(), StoreError> {
        let key_params = vec![
            Value::Text(key.name.to_string()),
            Value::Text(key.name.key_ring.to_string()),
            to_json(&key.key)?,
            Value::OptInt(key.primary_version.map(|v| v as i64)),
            Value::Int(first.map_or(1, |v| v.name.version as i64 + 1)),
            nanos(key.key.next_rotation_time),
        ];
        let version_params = first.map(version_params).transpose()?;
        self.write(|tx| {
            Box::pin(async move {
                tx.execute(INSERT_CRYPTO_KEY, key_params).await?;
                if let Some(p) = version_params {
                    tx.execute(INSERT_VERSION, p).await?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn crypto_key(&self, name: &CryptoKeyName) -> Result<Option<CryptoKeyRecord>, StoreError> {
        let rows = self.read_rows(GET_CRYPTO_KEY, vec![Value::Text(name.to_string())]).await?;
        rows.first().map(key_record).transpose()
    }

    async fn list_crypto_keys(&self, parent: &KeyRingName) -> Result<Vec<CryptoKeyRecord>, StoreError> {
        let rows = self.read_rows(LIST_CRYPTO_KEYS, vec![Value::Text(parent.to_string())]).await?;
        rows.iter().map(key_record).collect()
    }

    async fn update_crypto_key(&self, key: &CryptoKeyRecord) -> Result<i64, StoreError> {
        let params = vec![
            to_json(&key.key)?,
            Value::OptInt(key.primary_version.map(|v| v as i64)),
            nanos(key.key.next_rotation_time),
            Value::Text(key.name.to_string()),
            Value::Int(key.revision),
        ];
        self.write(|tx| {
            Box::pin(async move {
                let rows = tx.query(UPDATE_CRYPTO_KEY, params).await?;
                rows.first().ok_or(StoreError::Conflict)?[0].int()
            })
        })
        .await
    }

    async fn allocate_version_id(&self, key: &CryptoKeyName) -> Result<u64, StoreError> {
        let params = vec![Value::Text(key.to_string())];
        self.write(|tx| {
            Box::pin(async move {
                let rows = tx.query(ALLOCATE_VERSION_ID, params).await?;
                Ok(rows.first().ok_or(StoreError::Conflict)?[0].int()? as u64)
            })
        })
        .await
    }

    async fn insert_version(&self, version: &VersionRecord, make_primary: bool) -> Result<(), StoreError> {
        let params = version_params(version)?;
        let primary = make_primary.then(|| {
            vec![Value::OptInt(Some(version.name.version as i64)), Value::Text(version.name.crypto_key.to_string())]
        });
        self.write(|tx| {
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

    async fn version(&self, name: &CryptoKeyVersionName) -> Result<Option<VersionRecord>, StoreError> {
        let rows = self.read_rows(GET_VERSION, vec![Value::Text(name.to_string())]).await?;
        rows.first().map(version_record).transpose()
    }

    async fn list_versions(&self, key: &CryptoKeyName) -> Result<Vec<VersionRecord>, StoreError> {
        let rows = self.read_rows(LIST_VERSIONS, vec![Value::Text(key.to_string())]).await?;
        rows.iter().map(version_record).collect()
    }

    async fn update_version(&self, version: &VersionRecord) -> Result<i64, StoreError> {
        let erased = version.material.is_none();
        let params = vec![
            to_json(&version.version)?,
            Value::OptBlob(version.material.clone()),
            nanos(version.version.destroy_time),
            Value::Text(version.name.to_string()),
            Value::Int(version.revision),
        ];
        let rev = self
            .write(|tx| {
                Box::pin(async move {
                    let rows = tx.query(UPDATE_VERSION, params).await?;
                    rows.first().ok_or(StoreError::Conflict)?[0].int()
                })
            })
            .await?;
        if erased {
            self.backend.after_erase().await;
        }
        Ok(rev)
    }

    async fn versions_due_for_destruction(&self, now: Timestamp) -> Result<Vec<CryptoKeyVersionName>, StoreError> {
        let rows = self.read_rows(VERSIONS_DUE_FOR_DESTRUCTION, vec![Value::Int(now.unix_nanos_i64())]).await?;
        rows.iter().map(|r| name(&r[0])).collect()
    }

    async fn keys_due_for_rotation(&self, now: Timestamp) -> Result<Vec<CryptoKeyName>, StoreError> {
        let rows = self.read_rows(KEYS_DUE_FOR_ROTATION, vec![Value::Int(now.unix_nanos_i64())]).await?;
        rows.iter().map(|r| name(&r[0])).collect()
    }

    async fn change_counter(&self) -> Result<i64, StoreError> {
        let rows = self.read_rows(CHANGE_COUNTER, vec![]).await?;
        rows.first().ok_or_else(|| StoreError::Corrupt("change counter row missing".into()))?[0].int()
    }

    async fn meta_set_if_absent(&self, key: &str, value: &str) -> Result<String, StoreError> {
        let insert = vec![Value::Text(key.to_string()), Value::Text(value.to_string())];
        let get = vec![Value::Text(key.to_string())];
        self.write(|tx| {
            Box::pin(async move {
                tx.execute(META_INSERT, insert).await?;
                let rows = tx.query(META_GET, get).await?;
                Ok(rows.first().ok_or_else(|| StoreError::Corrupt("meta row missing".into()))?[0].text()?.to_string())
            })
        })
        .await
    }
}
