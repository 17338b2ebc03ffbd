//! The audit log ([K10]): one entry per request, allowed or denied, hash-chained.
//!
//! An entry records who did what to which resource with which key version, and how it ended;
//! never plaintext, ciphertext or key material. Entries for changes are committed in the same
//! transaction as the change (the store appends them); entries for reads, cryptographic calls
//! and refusals go through the KMS's `AuditWriter` (`keyhold_kms::audit`), which commits them in batches (group commit) and
//! answers each request only once its entry is durable.
//!
//! Each stored entry carries `hash = SHA-256(prev_hash "\n" seq "\n" entry_json)`, so editing,
//! removing or reordering a stored entry breaks the chain at that point ([`verify_chain`]).
//! Truncating the newest entries cannot be detected from inside the database: operators who
//! need that anchor the head hash elsewhere (`keyhold audit verify` prints it).
//!
//! This crate is the log's format only (the entry, its Cloud Logging shape, the chain): no I/O.
//! The KMS writes it (`keyhold_kms::audit::AuditWriter`), the store and the external key manager
//! build entries of their own, and `keyhold audit verify` checks a chain read back.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod journal;

use keyhold_api::wire::Timestamp;
use serde::{Deserialize, Serialize};

/// The `prev_hash` of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Which Cloud Audit Logs stream an entry belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// Changes to configuration or metadata (`cloudaudit.googleapis.com/activity`).
    Activity,
    /// Reads and uses of keys (`cloudaudit.googleapis.com/data_access`).
    DataAccess,
}

impl AuditKind {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::Activity => "activity",
            AuditKind::DataAccess => "data_access",
        }
    }
}

/// One audit entry as recorded. Field order is part of the hashed format: append new fields
/// at the end, with `skip_serializing_if`, so old entries still verify.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// When the request was decided.
    pub time: Timestamp,
    /// The project the resource belongs to ("" for server-wide resources).
    pub project: String,
    /// `user:alice@example.com`; "" when the caller did not authenticate.
    pub principal: String,
    /// API that was called: `cloudkms.googleapis.com`, ...
    pub service: String,
    /// `Encrypt`, `CreateCryptoKey`, ...
    pub method: String,
    /// The resource acted on.
    pub resource: String,
    /// Activity or data access.
    pub kind: AuditKind,
    /// The permission checked, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission: Option<String>,
    /// Whether it was granted.
    pub granted: bool,
    /// The key version used by a cryptographic call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_version: Option<String>,
    /// The caller's stated reason (`X-Goog-Request-Reason`, or a Key Access Justification).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
    /// The request ID (also in the response's `x-request-id`).
    pub request_id: String,
    /// `google.rpc.Code` number of the outcome (0 = OK).
    pub code: i32,
    /// The error message clients saw, if any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Whether the caller acted through `--allow-anonymous`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub anonymous: bool,
    /// The Key Access Justification decision of a cryptographic call ([K11]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_justification: Option<AccessDecision>,
    /// Something the auditor should look at even though the call succeeded (a plaintext
    /// export, for one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// The long-running operation the call ran as, if it did: Cloud Audit Logs records such a
    /// call twice, when it starts (`first`) and when it ends (`last`), under the operation's
    /// name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<AuditOperation>,
}

/// `LogEntry.operation`: which long-running operation an entry belongs to, and whether it is
/// the operation's first or last entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditOperation {
    /// The operation's name.
    pub id: String,
    /// The service that runs it.
    pub producer: String,
    /// The entry written when the operation started.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub first: bool,
    /// The entry written when it ended.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub last: bool,
}

/// The access reason a cryptographic call carried, and what the key's
/// `keyAccessJustificationsPolicy` made of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessDecision {
    /// `CUSTOMER_INITIATED_ACCESS`, ...
    pub reason: String,
    /// Whether the key has a policy (absent: every reason allowed).
    pub policy_enforced: bool,
    /// Whether the reason was allowed.
    pub allowed: bool,
}

/// An entry serialized once, on its way to the log: its JSON, which the journal frames and the
/// log stores and chains as it is, and the fields the log indexes it by. The request that makes
/// the entry serializes it (on its own core), not the single writer every entry passes
/// through; the rest of the record is dropped then, so a queue of these holds an entry's text
/// once, and its indexed fields beside it.
#[derive(Clone, Debug, PartialEq)]
pub struct EncodedRecord {
    time: Timestamp,
    project: String,
    principal: String,
    method: String,
    resource: String,
    kind: AuditKind,
    json: String,
}

impl EncodedRecord {
    /// Serializes `record`.
    pub fn new(record: AuditRecord) -> Result<Self, serde_json::Error> {
        let json = serde_json::to_string(&record)?;
        Ok(Self::with_json(record, json))
    }

    /// An entry read back from its JSON (a journal frame), whose text is kept as it is (a newer
    /// build's fields included): what the log stores and chains is what was written and
    /// acknowledged. The one exception is a text that parses but is not UTF-8 (possible in a
    /// field serde skips), which is stored as this build serializes the entry.
    pub fn decode(json: &[u8]) -> Result<Self, serde_json::Error> {
        let record: AuditRecord = serde_json::from_slice(json)?;
        match std::str::from_utf8(json) {
            Ok(text) => Ok(Self::with_json(record, text.to_owned())),
            // serde_json does not check the strings of fields it skips (a newer build's), so
            // a frame can parse and still not be UTF-8: the entry is then stored as this build
            // writes it, without the fields it does not know.
            Err(_) => Self::new(record),
        }
    }

    fn with_json(record: AuditRecord, json: String) -> Self {
        let AuditRecord { time, project, principal, method, resource, kind, .. } = record;
        Self { time, project, principal, method, resource, kind, json }
    }

    /// Its JSON.
    pub fn json(&self) -> &str {
        &self.json
    }
    /// Its JSON, taken (the log's insert moves the text instead of copying it).
    pub fn into_json(self) -> String {
        self.json
    }
    /// [`AuditRecord::time`].
    pub fn time(&self) -> Timestamp {
        self.time
    }
    /// [`AuditRecord::project`].
    pub fn project(&self) -> &str {
        &self.project
    }
    /// [`AuditRecord::principal`].
    pub fn principal(&self) -> &str {
        &self.principal
    }
    /// [`AuditRecord::method`].
    pub fn method(&self) -> &str {
        &self.method
    }
    /// [`AuditRecord::resource`].
    pub fn resource(&self) -> &str {
        &self.resource
    }
    /// [`AuditRecord::kind`].
    pub fn kind(&self) -> AuditKind {
        self.kind
    }
}

/// An entry as stored, with its place in the chain.
#[derive(Clone, Debug)]
pub struct StoredAuditEntry {
    /// Position in the chain (1, 2, ...).
    pub seq: i64,
    /// The exact JSON that was hashed.
    pub entry_json: String,
    /// The previous entry's hash.
    pub prev_hash: String,
    /// This entry's hash.
    pub hash: String,
}

/// The chain hash of an entry, hex.
pub fn chain_hash(prev_hash: &str, seq: i64, entry_json: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(prev_hash.as_bytes());
    ctx.update(format!("\n{seq}\n").as_bytes());
    ctx.update(entry_json.as_bytes());
    keyhold_crypto::hex(ctx.finish().as_ref())
}

/// What [`verify_chain`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainVerdict {
    /// Every entry links to the one before and hashes to what it records.
    Intact {
        /// Entries checked.
        entries: i64,
        /// The newest entry's hash (anchor it elsewhere to detect truncation).
        head: String,
    },
    /// The first entry that does not verify, and why.
    Broken {
        /// Its sequence number.
        seq: i64,
        /// What is wrong.
        reason: String,
    },
}

/// Incremental chain verification, fed entries in `seq` order.
#[derive(Debug)]
pub struct ChainVerifier {
    expected_seq: i64,
    prev_hash: String,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self { expected_seq: 1, prev_hash: GENESIS_HASH.to_string() }
    }
}

impl ChainVerifier {
    /// Checks the next entry; `Err` describes the first break.
    pub fn check(&mut self, e: &StoredAuditEntry) -> Result<(), ChainVerdict> {
        let broken = |reason: String| ChainVerdict::Broken { seq: e.seq, reason };
        if e.seq != self.expected_seq {
            return Err(ChainVerdict::Broken {
                seq: self.expected_seq,
                reason: format!("entry {} is missing (the next stored entry is {})", self.expected_seq, e.seq),
            });
        }
        if e.prev_hash != self.prev_hash {
            return Err(broken("its previous-hash does not match the entry before it".into()));
        }
        if chain_hash(&e.prev_hash, e.seq, &e.entry_json) != e.hash {
            return Err(broken("its content does not match its hash (the entry was modified)".into()));
        }
        if serde_json::from_str::<AuditRecord>(&e.entry_json).is_err() {
            return Err(broken("its content is not a valid audit entry".into()));
        }
        self.expected_seq += 1;
        self.prev_hash = e.hash.clone();
        Ok(())
    }

    /// The verdict after the last entry.
    pub fn finish(self) -> ChainVerdict {
        ChainVerdict::Intact { entries: self.expected_seq - 1, head: self.prev_hash }
    }
}

/// Verifies a whole chain given in `seq` order.
pub fn verify_chain<'a>(entries: impl IntoIterator<Item = &'a StoredAuditEntry>) -> ChainVerdict {
    let mut v = ChainVerifier::default();
    for e in entries {
        if let Err(b) = v.check(e) {
            return b;
        }
    }
    v.finish()
}

impl AuditRecord {
    /// The entry in the shape of a Cloud Logging `LogEntry` carrying a Cloud Audit Logs
    /// `AuditLog` payload, as `gcloud logging read` prints them.
    pub fn to_log_entry(&self, seq: i64) -> serde_json::Value {
        let project = if self.project.is_empty() { "-" } else { &self.project };
        let log = match self.kind {
            AuditKind::Activity => "cloudaudit.googleapis.com%2Factivity",
            AuditKind::DataAccess => "cloudaudit.googleapis.com%2Fdata_access",
        };
        let mut status = serde_json::json!({});
        if self.code != 0 {
            status = serde_json::json!({"code": self.code, "message": self.message});
        }
        let mut payload = serde_json::json!({
            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
            "status": status,
            "authenticationInfo": {},
            "requestMetadata": {"requestAttributes": {"id": self.request_id}},
            "serviceName": self.service,
            "methodName": self.method,
            "resourceName": self.resource,
        });
        if !self.principal.is_empty() {
            let email = self.principal.split_once(':').map_or(self.principal.as_str(), |(_, e)| e);
            payload["authenticationInfo"] =
                serde_json::json!({"principalEmail": email, "principalSubject": self.principal});
        }
        if let Some(p) = &self.permission {
            payload["authorizationInfo"] =
                serde_json::json!([{"resource": self.resource, "permission": p, "granted": self.granted}]);
        }
        let mut metadata = serde_json::Map::new();
        if let Some(v) = &self.key_version {
            metadata.insert("keyVersion".into(), v.clone().into());
        }
        if let Some(j) = &self.justification {
            metadata.insert("justification".into(), j.clone().into());
        }
        if self.anonymous {
            metadata.insert("anonymous".into(), true.into());
        }
        if let Some(d) = &self.access_justification {
            // The shape of Cloud KMS's entries (`key_access_justification`,
            // `key_access_justification_policy_metadata`), plus whether the policy allowed it.
            metadata.insert("keyAccessJustification".into(), serde_json::json!({"reason": d.reason}));
            metadata.insert(
                "keyAccessJustificationPolicyMetadata".into(),
                serde_json::json!({"customerConfiguredPolicyEnforced": d.policy_enforced, "allowed": d.allowed}),
            );
        }
        if let Some(w) = &self.warning {
            metadata.insert("warning".into(), w.clone().into());
        }
        if !metadata.is_empty() {
            payload["metadata"] = metadata.into();
        }
        let severity = match self.code {
            0 if self.warning.is_some() => "WARNING",
            0 => "NOTICE",
            7 | 16 => "WARNING",
            _ => "ERROR",
        };
        let mut entry = serde_json::json!({
            "logName": format!("projects/{project}/logs/{log}"),
            "insertId": seq.to_string(),
            "timestamp": self.time,
            "receiveTimestamp": self.time,
            "severity": if self.kind == AuditKind::DataAccess && self.code == 0 { "INFO" } else { severity },
            "resource": resource_labels(&self.resource, project),
            "protoPayload": payload,
        });
        if let Some(op) = &self.operation {
            entry["operation"] = serde_json::to_value(op).unwrap_or_default();
        }
        entry
    }
}

/// `resource` of a LogEntry: the monitored-resource type and labels Cloud KMS uses.
fn resource_labels(name: &str, project: &str) -> serde_json::Value {
    let seg: Vec<&str> = name.split('/').collect();
    let get = |i: usize| seg.get(i).copied().unwrap_or_default();
    match seg.len() {
        n if n >= 8 && get(6) == "cryptoKeys" => serde_json::json!({"type": "cloudkms_cryptokey", "labels": {
            "project_id": project, "location": get(3), "key_ring_id": get(5), "crypto_key_id": get(7)}}),
        n if n >= 6 && get(4) == "keyRings" => serde_json::json!({"type": "cloudkms_keyring", "labels": {
            "project_id": project, "location": get(3), "key_ring_id": get(5)}}),
        n if n >= 4 && get(2) == "locations" => serde_json::json!({"type": "audited_resource", "labels": {
            "project_id": project, "location": get(3)}}),
        _ => serde_json::json!({"type": "audited_resource", "labels": {"project_id": project}}),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An `Encrypt`-like data-access entry calling `method` (also the journal format's tests').
    pub(crate) fn record(method: &str) -> AuditRecord {
        AuditRecord {
            time: Timestamp::from_unix_nanos(1_700_000_000_000_000_000).unwrap(),
            project: "p".into(),
            principal: "user:alice@example.com".into(),
            service: "cloudkms.googleapis.com".into(),
            method: method.into(),
            resource: "projects/p/locations/global/keyRings/r/cryptoKeys/k".into(),
            kind: AuditKind::DataAccess,
            permission: Some("cloudkms.cryptoKeyVersions.useToEncrypt".into()),
            granted: true,
            key_version: Some("projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1".into()),
            justification: None,
            request_id: "r1".into(),
            code: 0,
            message: String::new(),
            anonymous: false,
            access_justification: None,
            warning: None,
            operation: None,
        }
    }

    fn chain(n: i64) -> Vec<StoredAuditEntry> {
        let mut prev = GENESIS_HASH.to_string();
        (1..=n)
            .map(|seq| {
                let entry_json = serde_json::to_string(&record(&format!("M{seq}"))).unwrap();
                let hash = chain_hash(&prev, seq, &entry_json);
                let e = StoredAuditEntry { seq, entry_json, prev_hash: prev.clone(), hash: hash.clone() };
                prev = hash;
                e
            })
            .collect()
    }

    #[test]
    fn an_encoded_record_is_serialized_once_and_read_back_as_written() {
        let r = record("Encrypt");
        let e = EncodedRecord::new(r.clone()).unwrap();
        assert_eq!(e.json(), serde_json::to_string(&r).unwrap());
        assert_eq!(
            (e.time(), e.project(), e.principal(), e.method(), e.resource(), e.kind()),
            (r.time, r.project.as_str(), r.principal.as_str(), "Encrypt", r.resource.as_str(), r.kind)
        );
        // The text read back is kept, spacing and a newer build's fields and all, as it was
        // written and acknowledged.
        let mut newer = serde_json::to_value(record("Decrypt")).unwrap();
        newer["fieldOfANewerBuild"] = "x".into();
        let spaced = serde_json::to_string_pretty(&newer).unwrap();
        let back = EncodedRecord::decode(spaced.as_bytes()).unwrap();
        assert_eq!(back.json(), spaced);
        assert_eq!(back.method(), "Decrypt");
        // A skipped field's string is not checked for UTF-8: such a frame is stored as this
        // build writes the entry.
        let plain = serde_json::to_string(&record("Decrypt")).unwrap();
        let mut bad = plain.strip_suffix('}').expect("a JSON object").as_bytes().to_vec();
        bad.extend_from_slice(b",\"fieldOfANewerBuild\":\"\xff\"}");
        let back = EncodedRecord::decode(&bad).unwrap();
        assert_eq!(back.json(), plain);
        assert!(EncodedRecord::decode(b"{\"method\": 1}").is_err());
        assert!(EncodedRecord::decode(b"\xff").is_err());
    }

    #[test]
    fn intact_and_broken_chains() {
        let c = chain(5);
        assert_eq!(verify_chain(&c), ChainVerdict::Intact { entries: 5, head: c[4].hash.clone() });

        let mut edited = c.clone();
        edited[2].entry_json = edited[2].entry_json.replace("alice", "mallory");
        assert!(matches!(verify_chain(&edited), ChainVerdict::Broken { seq: 3, .. }));

        let mut removed = c.clone();
        removed.remove(1);
        assert!(matches!(verify_chain(&removed), ChainVerdict::Broken { seq: 2, .. }));

        // Re-hashing an edited entry does not help: the next entry's link breaks.
        let mut rehashed = c.clone();
        rehashed[2].entry_json = rehashed[2].entry_json.replace("alice", "mallory");
        rehashed[2].hash = chain_hash(&rehashed[2].prev_hash, 3, &rehashed[2].entry_json);
        assert!(matches!(verify_chain(&rehashed), ChainVerdict::Broken { seq: 4, .. }));
    }

    #[test]
    fn log_entry_shape() {
        let e = record("Encrypt").to_log_entry(7);
        assert_eq!(e["logName"], "projects/p/logs/cloudaudit.googleapis.com%2Fdata_access");
        assert_eq!(e["protoPayload"]["methodName"], "Encrypt");
        assert_eq!(e["protoPayload"]["authenticationInfo"]["principalEmail"], "alice@example.com");
        assert_eq!(e["protoPayload"]["status"], serde_json::json!({}));
        assert_eq!(e["resource"]["type"], "cloudkms_cryptokey");
        assert_eq!(e["resource"]["labels"]["crypto_key_id"], "k");
        assert_eq!(e["insertId"], "7");
    }
}
