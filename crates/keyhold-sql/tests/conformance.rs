//! Storage conformance: the documented contracts of every repository trait, written once and run
//! on every backend the server can be started on: a SQLite file, an in-memory SQLite database
//! and PostgreSQL (a fresh database per test on the server named by
//! `KEYHOLD_TEST_POSTGRES_URL`, which `scripts/test.sh` starts; without it the PostgreSQL cases
//! fail and say so, as the server's PostgreSQL tests do).
//!
//! Each check is a function of the trait object only (`Arc<dyn KmsRepository>` as the KMS holds it,
//! `Arc<dyn StoreRepository>` as the store does), so it cannot lean on one backend's details;
//! `conformance!` instantiates it per backend. What is asserted is what the traits' docs promise:
//! lookups, orderings, `AlreadyExists` and `Conflict`, compare-and-set revisions, the audit entry
//! committed with each change, the chain, the change counter; for the store, uploads and
//! generations, snapshots (pins), builds, backups, replicas, exports and orphaned work.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use keyhold_api::iam::{Binding, Policy};
use keyhold_api::orgpolicy::OrgPolicy;
use keyhold_api::resources::{CryptoKey, CryptoKeyVersion, KeyRing, VersionState};
use keyhold_api::wire::{ProtoDuration, Timestamp};
use keyhold_api::{CryptoKeyName, CryptoKeyVersionName, KeyRingName, LocationName};
use keyhold_kms::VersionMaterial;
use keyhold_kms::audit::{AuditKind, AuditRecord, ChainVerdict, EncodedRecord, verify_chain};
use keyhold_kms::repo::{
    AuditPosition, AuditQuery, CHANGE_LOG_KEPT, Change, CryptoKeyRecord, KmsRepository, OrgPolicyRecord, ProjectRecord,
    RepoError, ServiceIdentityRecord, TokenRecord, VersionRecord,
};
use keyhold_sql::Database;

// ---- backends ---------------------------------------------------------------------------------

/// A fresh, migrated database of each kind. The `TempDir` keeps the SQLite file alive.
enum Backend {
    SqliteFile,
    SqliteMemory,
    Postgres,
}

struct Opened {
    kms: Arc<dyn KmsRepository>,
    objects: Arc<dyn keyhold_store::StoreRepository>,
    _dir: Option<tempfile::TempDir>,
}

async fn open(backend: Backend) -> Opened {
    let (db, dir) = match backend {
        Backend::SqliteFile => {
            let dir = tempfile::tempdir().unwrap();
            (Database::SqliteFile(dir.path().join("keyhold.db")), Some(dir))
        }
        Backend::SqliteMemory => (Database::InMemory { audit_entries: u64::MAX }, None),
        Backend::Postgres => (Database::Postgres(fresh_postgres().await), None),
    };
    let opened = keyhold_sql::open_all(&db).await.expect("open and migrate the database");
    Opened { kms: opened.kms, objects: opened.objects, _dir: dir }
}

/// A new, empty database on the test PostgreSQL server; its URL.
async fn fresh_postgres() -> String {
    let url = std::env::var("KEYHOLD_TEST_POSTGRES_URL").expect(
        "KEYHOLD_TEST_POSTGRES_URL is not set: run the tests with `scripts/test.sh with-postgres cargo test -p \
         keyhold-sql`, which starts PostgreSQL",
    );
    let (client, conn) =
        tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect to the test PostgreSQL");
    tokio::spawn(conn);
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let db = format!("conf_{}_{}_{}", std::process::id(), nanos % 1_000_000_000_000, N.fetch_add(1, Ordering::Relaxed));
    client.batch_execute(&format!("CREATE DATABASE {db}")).await.unwrap();
    let (base, _) = url.rsplit_once('/').unwrap();
    format!("{base}/{db}")
}

/// One `#[tokio::test]` per backend for each conformance check.
macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod sqlite_file {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() { super::$check(super::open(super::Backend::SqliteFile).await).await }) *
        }
        mod sqlite_memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() { super::$check(super::open(super::Backend::SqliteMemory).await).await }) *
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() { super::$check(super::open(super::Backend::Postgres).await).await }) *
        }
    };
}

conformance!(
    key_rings,
    crypto_key_with_first_version_is_atomic,
    crypto_key_updates_are_compare_and_set,
    concurrent_updates_of_one_key_serialize,
    version_ids_are_never_handed_out_twice,
    versions_are_listed_by_id_and_updated_by_compare_and_set,
    due_for_destruction_and_rotation,
    meta_set_if_absent_keeps_the_first_value,
    iam_policies_are_compare_and_set,
    projects,
    tokens,
    service_identities,
    audit_append_and_chain,
    concurrent_audit_appends_keep_one_chain,
    read_audit_filters,
    org_policies,
    failed_change_leaves_no_trace,
    repo_instances,
    repo_keks,
    repo_uploads_and_generations,
    repo_list_and_delete_objects,
    repo_pins_keep_a_snapshot,
    repo_builds_and_backups,
    repo_replicas,
    repo_exports,
    repo_orphaned_work,
    repo_operations,
    repo_changes_commit_their_audit_entries,
    the_change_log_names_each_change_without_gaps,
);

// ---- fixtures ---------------------------------------------------------------------------------

const PROJECT: &str = "acme";

fn t(secs: i64) -> Timestamp {
    Timestamp::from_unix_nanos(secs as i128 * 1_000_000_000 + 1_700_000_000_000_000_000).unwrap()
}

fn location() -> LocationName {
    "projects/acme/locations/global".parse().unwrap()
}

fn ring_name(id: &str) -> KeyRingName {
    format!("projects/acme/locations/global/keyRings/{id}").parse().unwrap()
}

fn key_name(ring: &str, id: &str) -> CryptoKeyName {
    format!("projects/acme/locations/global/keyRings/{ring}/cryptoKeys/{id}").parse().unwrap()
}

/// Entries as the audit writer hands them to the store: serialized once.
fn encoded(records: &[AuditRecord]) -> Vec<EncodedRecord> {
    records.iter().map(|r| EncodedRecord::new(r.clone()).unwrap()).collect()
}

fn audit(method: &str, resource: &str) -> AuditRecord {
    audit_at(method, resource, t(0))
}

fn audit_at(method: &str, resource: &str, time: Timestamp) -> AuditRecord {
    AuditRecord {
        time,
        project: PROJECT.into(),
        principal: "user:alice@example.com".into(),
        service: "cloudkms.googleapis.com".into(),
        method: method.into(),
        resource: resource.into(),
        kind: AuditKind::Activity,
        permission: None,
        granted: true,
        key_version: None,
        justification: None,
        request_id: format!("req-{method}"),
        code: 0,
        message: String::new(),
        anonymous: false,
        access_justification: None,
        warning: None,
        operation: None,
    }
}

fn ring(name: &KeyRingName) -> KeyRing {
    KeyRing { name: name.to_string(), create_time: Some(t(0)) }
}

fn key_record(name: &CryptoKeyName, primary: Option<u64>) -> CryptoKeyRecord {
    CryptoKeyRecord {
        name: name.clone(),
        key: CryptoKey { name: name.to_string(), create_time: Some(t(0)), ..Default::default() },
        primary_version: primary,
        revision: 0,
    }
}

fn version_record(key: &CryptoKeyName, id: u64, state: VersionState) -> VersionRecord {
    let name = CryptoKeyVersionName { crypto_key: key.clone(), version: id };
    VersionRecord {
        version: CryptoKeyVersion { name: name.to_string(), state: Some(state), ..Default::default() },
        name,
        material: VersionMaterial::Sealed(vec![id as u8; 40]),
        revision: 0,
    }
}

/// A key ring with one key (`k`) whose first version (1) is its primary.
async fn ring_with_key(s: &dyn KmsRepository, ring_id: &str) -> CryptoKeyName {
    let rn = ring_name(ring_id);
    s.insert_key_ring(&rn, &ring(&rn), &audit("CreateKeyRing", &rn.to_string())).await.unwrap();
    let kn = key_name(ring_id, "k");
    let first = version_record(&kn, 1, VersionState::Enabled);
    s.insert_crypto_key(&key_record(&kn, Some(1)), Some(&first), &audit("CreateCryptoKey", &kn.to_string()))
        .await
        .unwrap();
    kn
}

/// Fails unless the change counter moved since `before`; returns the new value.
async fn advanced(s: &dyn KmsRepository, before: i64, what: &str) -> i64 {
    let now = s.change_counter().await.unwrap();
    assert_ne!(now, before, "{what} did not advance the change counter");
    now
}

/// The newest audit entry, decoded.
async fn newest_audit(s: &dyn KmsRepository) -> AuditRecord {
    let (seq, _) = s.audit_head().await.unwrap();
    let e = s.audit_chain(seq - 1, 1).await.unwrap();
    assert_eq!(e.len(), 1, "the head entry {seq} is readable");
    serde_json::from_str(&e[0].entry_json).unwrap()
}

fn all_audit() -> AuditQuery {
    AuditQuery { project: "-".into(), start_nanos: 0, end_nanos: i64::MAX, limit: 1000, ..Default::default() }
}

// ---- KmsRepository ---------------------------------------------------------------------------------

/// Issue 18: every change is logged under the change counter's new value, in order and without
/// gaps, naming what changed; a refused change logs nothing; the log keeps at least the last
/// `CHANGE_LOG_KEPT` entries and prunes older ones.
async fn the_change_log_names_each_change_without_gaps(db: Opened) {
    let s = &*db.kms;
    let c0 = s.change_counter().await.unwrap();
    let kn = ring_with_key(s, "log").await;
    let mut record = s.crypto_key(&kn).await.unwrap().unwrap();
    record.key.labels.insert("a".into(), "b".into());
    s.update_crypto_key(&record, &audit("UpdateCryptoKey", &kn.to_string())).await.unwrap();
    let res = "projects/acme";
    let policy = Policy { bindings: vec![], ..Default::default() };
    s.set_policy(res, &policy, None, &audit("SetIamPolicy", res)).await.unwrap();
    s.insert_token(&token("logged", 1), &audit("CreateToken", "logged")).await.unwrap();
    let stale = s.update_crypto_key(&record, &audit("UpdateCryptoKey", &kn.to_string())).await;
    assert!(matches!(stale, Err(RepoError::Conflict)), "{stale:?}");

    let now = s.change_counter().await.unwrap();
    let log = s.changes_since(c0, 100).await.unwrap();
    let seqs: Vec<i64> = log.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (c0 + 1..=now).collect::<Vec<_>>(), "one entry per change, under the counter, no gaps");
    let changes: Vec<Change> = log.into_iter().map(|(_, c)| c).collect();
    assert_eq!(
        changes,
        [
            Change::KeyRing(ring_name("log").to_string()),
            Change::Key(kn.clone()),
            Change::Key(kn.clone()),
            Change::Policy(res.into()),
            Change::TokenMinted,
        ],
        "the refused update logged nothing"
    );
    assert_eq!(s.changes_since(now, 100).await.unwrap(), [], "nothing after the counter");
    assert_eq!(s.changes_since(c0, 2).await.unwrap().len(), 2, "at most `limit` entries");

    // Older entries go: after CHANGE_LOG_KEPT more changes, the first of them is pruned.
    for _ in 0..CHANGE_LOG_KEPT {
        s.allocate_version_id(&kn).await.unwrap();
    }
    let first = s.changes_since(0, 1).await.unwrap();
    assert!(first[0].0 > now, "entries before the kept window are pruned: {first:?}");
    let last = s.change_counter().await.unwrap();
    let kept = s.changes_since(last - CHANGE_LOG_KEPT, CHANGE_LOG_KEPT + 1).await.unwrap();
    assert_eq!(kept.len() as i64, CHANGE_LOG_KEPT, "the last CHANGE_LOG_KEPT entries stay");
}

async fn key_rings(db: Opened) {
    let s = &*db.kms;
    let c0 = s.change_counter().await.unwrap();
    let (seq0, _) = s.audit_head().await.unwrap();
    for id in ["b", "a", "c"] {
        let rn = ring_name(id);
        s.insert_key_ring(&rn, &ring(&rn), &audit("CreateKeyRing", &rn.to_string())).await.unwrap();
    }
    let c1 = advanced(s, c0, "insert_key_ring").await;
    let (seq1, _) = s.audit_head().await.unwrap();
    assert_eq!(seq1, seq0 + 3, "each insert committed its audit entry");
    assert_eq!(newest_audit(s).await.resource, ring_name("c").to_string());

    assert_eq!(s.key_ring(&ring_name("a")).await.unwrap(), Some(ring(&ring_name("a"))));
    assert_eq!(s.key_ring(&ring_name("missing")).await.unwrap(), None);
    let names: Vec<String> =
        s.list_key_rings(&location(), "", i64::MAX).await.unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(names, [ring_name("a"), ring_name("b"), ring_name("c")].map(|n| n.to_string()), "by name");
    // A page: after a name, at most `limit`.
    let page: Vec<String> = s
        .list_key_rings(&location(), &ring_name("a").to_string(), 1)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(page, [ring_name("b").to_string()]);
    assert_eq!(s.count_key_rings(&location()).await.unwrap(), 3);
    let elsewhere: LocationName = "projects/acme/locations/europe-west1".parse().unwrap();
    assert!(s.list_key_rings(&elsewhere, "", i64::MAX).await.unwrap().is_empty());
    assert_eq!(s.count_key_rings(&elsewhere).await.unwrap(), 0);

    let dup = s.insert_key_ring(&ring_name("a"), &ring(&ring_name("a")), &audit("CreateKeyRing", "dup")).await;
    assert!(matches!(dup, Err(RepoError::AlreadyExists)), "{dup:?}");
    assert_eq!(s.change_counter().await.unwrap(), c1, "a refused insert changes nothing");
    assert_eq!(s.audit_head().await.unwrap().0, seq1, "nor appends its audit entry");
}

async fn crypto_key_with_first_version_is_atomic(db: Opened) {
    let s = &*db.kms;
    let kn = ring_with_key(s, "r").await;
    let key = s.crypto_key(&kn).await.unwrap().expect("inserted");
    assert_eq!(key.primary_version, Some(1));
    assert_eq!(key.key.name, kn.to_string());
    let v1 = s.version(&CryptoKeyVersionName { crypto_key: kn.clone(), version: 1 }).await.unwrap().unwrap();
    assert_eq!(v1.material, VersionMaterial::Sealed(vec![1u8; 40]));
    assert_eq!(v1.version.state, Some(VersionState::Enabled));

    // Without a first version.
    let bare = key_name("r", "a-bare");
    s.insert_crypto_key(&key_record(&bare, None), None, &audit("CreateCryptoKey", &bare.to_string())).await.unwrap();
    assert_eq!(s.crypto_key(&bare).await.unwrap().unwrap().primary_version, None);
    assert!(s.list_versions(&bare, 0, i64::MAX).await.unwrap().is_empty());
    assert_eq!(s.count_versions(&bare).await.unwrap(), 0);
    let listed = s.list_crypto_keys(&ring_name("r"), "", i64::MAX).await.unwrap();
    let names: Vec<String> = listed.iter().map(|(k, _)| k.name.to_string()).collect();
    assert_eq!(names, [bare.to_string(), kn.to_string()], "by name");
    // Each with its primary version, read with it.
    assert!(listed[0].1.is_none());
    let primary = listed[1].1.as_ref().expect("k's primary");
    assert_eq!((primary.name.version, &primary.material), (1, &VersionMaterial::Sealed(vec![1u8; 40])));
    let after_bare = s.list_crypto_keys(&ring_name("r"), &bare.to_string(), 5).await.unwrap();
    assert_eq!(after_bare.iter().map(|(k, _)| k.name.to_string()).collect::<Vec<_>>(), [kn.to_string()]);
    assert_eq!(s.count_crypto_keys(&ring_name("r")).await.unwrap(), 2);
    assert!(s.list_crypto_keys(&ring_name("other"), "", i64::MAX).await.unwrap().is_empty());

    let dup = s.insert_crypto_key(&key_record(&kn, None), None, &audit("CreateCryptoKey", "dup")).await;
    assert!(matches!(dup, Err(RepoError::AlreadyExists)), "{dup:?}");

    // Atomic: when the first version cannot be inserted (its name is taken), the key is not
    // inserted either.
    let orphan = key_name("r", "orphan");
    let clash = version_record(&kn, 1, VersionState::Enabled);
    let r = s.insert_crypto_key(&key_record(&orphan, Some(1)), Some(&clash), &audit("CreateCryptoKey", "x")).await;
    assert!(matches!(r, Err(RepoError::AlreadyExists)), "{r:?}");
    assert!(s.crypto_key(&orphan).await.unwrap().is_none(), "the key was rolled back with its version");
}

async fn crypto_key_updates_are_compare_and_set(db: Opened) {
    let s = &*db.kms;
    let kn = ring_with_key(s, "r").await;
    let read = s.crypto_key(&kn).await.unwrap().unwrap();
    let c0 = s.change_counter().await.unwrap();

    let mut first = read.clone();
    first.key.labels.insert("team".into(), "payments".into());
    let rev = s.update_crypto_key(&first, &audit("UpdateCryptoKey", &kn.to_string())).await.unwrap();
    assert_ne!(rev, read.revision, "a new revision");
    advanced(s, c0, "update_crypto_key").await;
    assert_eq!(newest_audit(s).await.method, "UpdateCryptoKey");
    let stored = s.crypto_key(&kn).await.unwrap().unwrap();
    assert_eq!(stored.revision, rev);
    assert_eq!(stored.key.labels.get("team").map(String::as_str), Some("payments"));

    // A writer that read before the first update loses, and changes nothing.
    let mut stale = read.clone();
    stale.key.labels.insert("team".into(), "lost-update".into());
    let (seq, _) = s.audit_head().await.unwrap();
    let r = s.update_crypto_key(&stale, &audit("UpdateCryptoKey", &kn.to_string())).await;
    assert!(matches!(r, Err(RepoError::Conflict)), "{r:?}");
    assert_eq!(s.crypto_key(&kn).await.unwrap().unwrap().key.labels.get("team").unwrap(), "payments");
    assert_eq!(s.audit_head().await.unwrap().0, seq, "the lost update's audit entry was not committed");

    // With the new revision it goes through.
    let mut next = stored.clone();
    next.primary_version = None;
    let rev2 = s.update_crypto_key(&next, &audit("UpdateCryptoKey", &kn.to_string())).await.unwrap();
    assert_ne!(rev2, rev);
    assert_eq!(s.crypto_key(&kn).await.unwrap().unwrap().primary_version, None);

    // A key that is gone: Conflict too.
    let gone = key_record(&key_name("r", "gone"), None);
    assert!(matches!(s.update_crypto_key(&gone, &audit("UpdateCryptoKey", "gone")).await, Err(RepoError::Conflict)));
}

async fn concurrent_updates_of_one_key_serialize(db: Opened) {
    let s = db.kms.clone();
    let kn = ring_with_key(&*s, "r").await;
    let read = s.crypto_key(&kn).await.unwrap().unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (s, mut mine) = (s.clone(), read.clone());
        tasks.push(tokio::spawn(async move {
            mine.key.labels.insert("writer".into(), i.to_string());
            s.update_crypto_key(&mine, &audit("UpdateCryptoKey", "k")).await
        }));
    }
    let mut won = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await.unwrap() {
            Ok(_) => won.push(i),
            Err(RepoError::Conflict) => {}
            Err(e) => panic!("writer {i}: {e}"),
        }
    }
    assert_eq!(won.len(), 1, "exactly one of the writers that read the same revision wins: {won:?}");
    let stored = s.crypto_key(&kn).await.unwrap().unwrap();
    assert_eq!(stored.key.labels.get("writer"), Some(&won[0].to_string()));
}

async fn version_ids_are_never_handed_out_twice(db: Opened) {
    let s = db.kms.clone();
    let kn = ring_with_key(&*s, "r").await;
    let c0 = s.change_counter().await.unwrap();
    assert_eq!(s.allocate_version_id(&kn).await.unwrap(), 2, "after the first version, 2");
    advanced(&*s, c0, "allocate_version_id").await;
    assert_eq!(s.allocate_version_id(&kn).await.unwrap(), 3);

    let bare = key_name("r", "bare");
    s.insert_crypto_key(&key_record(&bare, None), None, &audit("CreateCryptoKey", "bare")).await.unwrap();
    assert_eq!(s.allocate_version_id(&bare).await.unwrap(), 1, "a key without versions starts at 1");

    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (s, kn) = (s.clone(), kn.clone());
        tasks.push(tokio::spawn(async move { s.allocate_version_id(&kn).await.unwrap() }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap());
    }
    ids.sort();
    assert_eq!(ids, (4..14).collect::<Vec<u64>>(), "concurrent allocations: distinct, none skipped");
}

async fn versions_are_listed_by_id_and_updated_by_compare_and_set(db: Opened) {
    let s = &*db.kms;
    let kn = ring_with_key(s, "r").await;
    // Up to 11 versions: by ID, 2 comes before 10 (not by name, where "10" < "2").
    for id in 2..=11 {
        let c = s.change_counter().await.unwrap();
        let v = version_record(&kn, id, VersionState::Enabled);
        s.insert_version(&v, id == 11, &audit("CreateCryptoKeyVersion", &v.name.to_string())).await.unwrap();
        advanced(s, c, "insert_version").await;
    }
    let ids: Vec<u64> = s.list_versions(&kn, 0, i64::MAX).await.unwrap().iter().map(|v| v.name.version).collect();
    assert_eq!(ids, (1..=11).collect::<Vec<u64>>());
    let page: Vec<u64> = s.list_versions(&kn, 2, 8).await.unwrap().iter().map(|v| v.name.version).collect();
    assert_eq!(page, (3..=10).collect::<Vec<u64>>(), "after an ID, by ID");
    assert_eq!(s.count_versions(&kn).await.unwrap(), 11);
    assert_eq!(s.crypto_key(&kn).await.unwrap().unwrap().primary_version, Some(11), "make_primary");
    assert_eq!(newest_audit(s).await.method, "CreateCryptoKeyVersion");

    let other = ring_with_key(s, "other").await;
    let all: Vec<String> = s.list_all_versions().await.unwrap().iter().map(|v| v.name.to_string()).collect();
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted, "every version, by name");
    assert_eq!(all.len(), 12);
    assert!(all.contains(&format!("{other}/cryptoKeyVersions/1")));

    // Destroy version 2: state changes and the material is gone.
    let v2name = CryptoKeyVersionName { crypto_key: kn.clone(), version: 2 };
    let read = s.version(&v2name).await.unwrap().unwrap();
    let mut destroyed = read.clone();
    destroyed.version.state = Some(VersionState::Destroyed);
    destroyed.material = VersionMaterial::Erased;
    let c = s.change_counter().await.unwrap();
    let rev = s.update_version(&destroyed, &audit("DestroyCryptoKeyVersion", &v2name.to_string())).await.unwrap();
    assert_ne!(rev, read.revision);
    advanced(s, c, "update_version").await;
    let stored = s.version(&v2name).await.unwrap().unwrap();
    assert_eq!(
        (stored.version.state, stored.material, stored.revision),
        (Some(VersionState::Destroyed), VersionMaterial::Erased, rev)
    );

    // The stale reader loses.
    let mut stale = read;
    stale.version.state = Some(VersionState::Disabled);
    let r = s.update_version(&stale, &audit("UpdateCryptoKeyVersion", &v2name.to_string())).await;
    assert!(matches!(r, Err(RepoError::Conflict)), "{r:?}");
    assert_eq!(s.version(&v2name).await.unwrap().unwrap().version.state, Some(VersionState::Destroyed));
    let missing = CryptoKeyVersionName { crypto_key: kn, version: 99 };
    assert!(s.version(&missing).await.unwrap().is_none());
}

async fn due_for_destruction_and_rotation(db: Opened) {
    let s = &*db.kms;
    let kn = ring_with_key(s, "r").await;
    for (id, at) in [(2, Some(100)), (3, Some(200)), (4, None)] {
        let mut v = version_record(&kn, id, VersionState::Enabled);
        if let Some(at) = at {
            v.version.state = Some(VersionState::DestroyScheduled);
            v.version.destroy_time = Some(t(at));
        }
        s.insert_version(&v, false, &audit("CreateCryptoKeyVersion", "v")).await.unwrap();
    }
    let v = |id| CryptoKeyVersionName { crypto_key: kn.clone(), version: id };
    assert!(s.versions_due(t(99)).await.unwrap().is_empty());
    assert_eq!(s.versions_due(t(100)).await.unwrap(), [v(2)], "at destroyTime: due");
    assert_eq!(s.versions_due(t(1000)).await.unwrap(), [v(2), v(3)]);

    // Restored: no longer due.
    let mut restored = s.version(&v(2)).await.unwrap().unwrap();
    restored.version.state = Some(VersionState::Disabled);
    restored.version.destroy_time = None;
    s.update_version(&restored, &audit("RestoreCryptoKeyVersion", "v2")).await.unwrap();
    assert_eq!(s.versions_due(t(1000)).await.unwrap(), [v(3)]);

    // Rotation: keys whose nextRotationTime is at or before now.
    let mut key = s.crypto_key(&kn).await.unwrap().unwrap();
    assert!(s.keys_due_for_rotation(t(1_000_000)).await.unwrap().is_empty(), "no rotation schedule");
    key.key.next_rotation_time = Some(t(500));
    key.key.rotation_period = Some(ProtoDuration::from_nanos(86_400 * 1_000_000_000));
    s.update_crypto_key(&key, &audit("UpdateCryptoKey", "k")).await.unwrap();
    let rotating = key_name("r", "new");
    let mut other = key_record(&rotating, None);
    other.key.next_rotation_time = Some(t(400));
    s.insert_crypto_key(&other, None, &audit("CreateCryptoKey", "new")).await.unwrap();
    assert!(s.keys_due_for_rotation(t(399)).await.unwrap().is_empty());
    assert_eq!(s.keys_due_for_rotation(t(400)).await.unwrap(), std::slice::from_ref(&rotating));
    let mut due = s.keys_due_for_rotation(t(500)).await.unwrap();
    due.sort();
    assert_eq!(due, [kn, rotating]);
}

async fn meta_set_if_absent_keeps_the_first_value(db: Opened) {
    let s = &*db.kms;
    assert_eq!(s.meta_set_if_absent("conformance.key", "first").await.unwrap(), "first");
    assert_eq!(s.meta_set_if_absent("conformance.key", "second").await.unwrap(), "first");
    assert_eq!(s.meta_set_if_absent("conformance.other", "x").await.unwrap(), "x");
}

async fn iam_policies_are_compare_and_set(db: Opened) {
    let s = &*db.kms;
    let res = "projects/acme/locations/global/keyRings/r";
    let policy = |member: &str| Policy {
        version: 1,
        bindings: vec![Binding {
            role: "roles/cloudkms.cryptoKeyEncrypterDecrypter".into(),
            members: vec![member.into()],
            condition: None,
        }],
        ..Default::default()
    };
    assert!(s.policy(res).await.unwrap().is_none());
    let c0 = s.change_counter().await.unwrap();
    let r1 = s.set_policy(res, &policy("user:a@example.com"), Some(0), &audit("SetIamPolicy", res)).await.unwrap();
    advanced(s, c0, "set_policy").await;
    assert_eq!(newest_audit(s).await.method, "SetIamPolicy");
    let stored = s.policy(res).await.unwrap().unwrap();
    assert_eq!((stored.policy, stored.revision), (policy("user:a@example.com"), r1));

    // "No policy yet" is stale now; so is any other revision.
    for stale in [0, r1 + 100] {
        let r = s.set_policy(res, &policy("user:x@example.com"), Some(stale), &audit("SetIamPolicy", res)).await;
        assert!(matches!(r, Err(RepoError::Conflict)), "expected revision {stale}: {r:?}");
    }
    assert_eq!(s.policy(res).await.unwrap().unwrap().policy, policy("user:a@example.com"));

    let r2 = s.set_policy(res, &policy("user:b@example.com"), Some(r1), &audit("SetIamPolicy", res)).await.unwrap();
    assert_ne!(r2, r1);
    // Unconditional.
    let r3 = s.set_policy(res, &policy("user:c@example.com"), None, &audit("SetIamPolicy", res)).await.unwrap();
    assert_ne!(r3, r2);
    let stored = s.policy(res).await.unwrap().unwrap();
    assert_eq!((stored.policy, stored.revision), (policy("user:c@example.com"), r3));
    // Unconditional on a resource without a policy creates it.
    let fresh = "projects/acme/locations/global/keyRings/fresh";
    let r = s.set_policy(fresh, &policy("user:d@example.com"), None, &audit("SetIamPolicy", fresh)).await.unwrap();
    assert_eq!(s.policy(fresh).await.unwrap().unwrap().revision, r);
}

async fn projects(db: Opened) {
    let s = &*db.kms;
    let p = ProjectRecord { project_id: "acme".into(), project_number: 123456789012, create_time: t(1) };
    let c0 = s.change_counter().await.unwrap();
    s.insert_project(&p).await.unwrap();
    advanced(s, c0, "insert_project").await;
    assert_eq!(s.project("acme").await.unwrap(), Some(p.clone()));
    assert_eq!(s.project("other").await.unwrap(), None);
    let same_id = ProjectRecord { project_number: 999999999999, ..p.clone() };
    assert!(matches!(s.insert_project(&same_id).await, Err(RepoError::AlreadyExists)));
    let same_number = ProjectRecord { project_id: "other".into(), ..p.clone() };
    assert!(matches!(s.insert_project(&same_number).await, Err(RepoError::AlreadyExists)));
    assert_eq!(s.project("other").await.unwrap(), None);
}

fn token(id: &str, created: i64) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        hash: format!("{id:0>64}"),
        principal: format!("user:{id}@example.com"),
        description: format!("token {id}"),
        create_time: t(created),
        expire_time: t(created + 3600),
        revoke_time: None,
    }
}

async fn tokens(db: Opened) {
    let s = &*db.kms;
    let c0 = s.change_counter().await.unwrap();
    for (id, created) in [("old", 1), ("new", 3), ("mid", 2)] {
        s.insert_token(&token(id, created), &audit("CreateToken", id)).await.unwrap();
    }
    advanced(s, c0, "insert_token").await;
    assert_eq!(newest_audit(s).await.method, "CreateToken");
    assert_eq!(s.token_by_hash(&token("mid", 2).hash).await.unwrap(), Some(token("mid", 2)));
    assert_eq!(s.token_by_hash(&"f".repeat(64)).await.unwrap(), None);
    let ids: Vec<String> = s.list_tokens().await.unwrap().into_iter().map(|t| t.id).collect();
    assert_eq!(ids, ["new", "mid", "old"], "newest first");

    let c1 = s.change_counter().await.unwrap();
    assert!(s.revoke_token("mid", t(10), &audit("RevokeToken", "mid")).await.unwrap());
    advanced(s, c1, "revoke_token").await;
    assert_eq!(s.token_by_hash(&token("mid", 2).hash).await.unwrap().unwrap().revoke_time, Some(t(10)));
    // Already revoked, or no such token: false, and the first revocation time stays.
    assert!(!s.revoke_token("mid", t(20), &audit("RevokeToken", "mid")).await.unwrap());
    assert!(!s.revoke_token("nope", t(20), &audit("RevokeToken", "nope")).await.unwrap());
    assert_eq!(s.token_by_hash(&token("mid", 2).hash).await.unwrap().unwrap().revoke_time, Some(t(10)));
    assert_eq!(s.token_by_hash(&token("old", 1).hash).await.unwrap().unwrap().revoke_time, None);
}

async fn service_identities(db: Opened) {
    let s = &*db.kms;
    let id = ServiceIdentityRecord {
        project_id: "acme".into(),
        service: "store.keyhold.dev".into(),
        email: "service-123456789012@gcp-sa-store.iam.gserviceaccount.com".into(),
        unique_id: "100000000000000000001".into(),
        create_time: t(5),
    };
    let c0 = s.change_counter().await.unwrap();
    s.insert_service_identity(&id, &audit("GenerateServiceIdentity", "acme")).await.unwrap();
    advanced(s, c0, "insert_service_identity").await;
    assert_eq!(s.service_identity("acme", "store.keyhold.dev").await.unwrap(), Some(id.clone()));
    assert_eq!(s.service_identity("acme", "other.keyhold.dev").await.unwrap(), None);
    assert_eq!(s.service_identity("other", "store.keyhold.dev").await.unwrap(), None);
    assert_eq!(s.service_identity_by_email(&id.email).await.unwrap(), Some(id.clone()));
    assert_eq!(s.service_identity_by_email("nobody@example.com").await.unwrap(), None);
    let again = ServiceIdentityRecord { email: "x@example.com".into(), unique_id: "2".into(), ..id.clone() };
    let r = s.insert_service_identity(&again, &audit("GenerateServiceIdentity", "acme")).await;
    assert!(matches!(r, Err(RepoError::AlreadyExists)), "{r:?}");
}

async fn audit_append_and_chain(db: Opened) {
    let s = &*db.kms;
    let (seq0, _) = s.audit_head().await.unwrap();
    let batch: Vec<AuditRecord> = (0..5).map(|i| audit_at("Encrypt", &format!("res/{i}"), t(i))).collect();
    s.append_audit(&encoded(&batch)).await.unwrap();
    s.append_audit(&encoded(&batch[..2])).await.unwrap();
    s.append_audit(&[]).await.unwrap();

    let chain = s.audit_chain(0, 1000).await.unwrap();
    assert_eq!(chain.len() as i64, seq0 + 7);
    let (head_seq, head_hash) = s.audit_head().await.unwrap();
    assert_eq!(head_seq, seq0 + 7);
    assert_eq!(verify_chain(&chain), ChainVerdict::Intact { entries: head_seq, head: head_hash.clone() });
    // In order, as given.
    let resources: Vec<String> = chain[seq0 as usize..]
        .iter()
        .map(|e| serde_json::from_str::<AuditRecord>(&e.entry_json).unwrap().resource)
        .collect();
    assert_eq!(resources, ["res/0", "res/1", "res/2", "res/3", "res/4", "res/0", "res/1"]);
    assert_eq!(serde_json::from_str::<AuditRecord>(&chain[seq0 as usize].entry_json).unwrap(), batch[0]);

    // Paging through the chain.
    let page = s.audit_chain(seq0 + 2, 3).await.unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [seq0 + 3, seq0 + 4, seq0 + 5]);
    assert!(s.audit_chain(head_seq, 10).await.unwrap().is_empty());

    // Audited changes go into the same chain.
    let rn = ring_name("r");
    s.insert_key_ring(&rn, &ring(&rn), &audit("CreateKeyRing", &rn.to_string())).await.unwrap();
    let chain = s.audit_chain(0, 1000).await.unwrap();
    assert!(matches!(verify_chain(&chain), ChainVerdict::Intact { entries, .. } if entries == head_seq + 1));
    assert_eq!(chain.last().unwrap().prev_hash, head_hash);
}

async fn concurrent_audit_appends_keep_one_chain(db: Opened) {
    let s = db.kms.clone();
    let (seq0, _) = s.audit_head().await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..6 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..5 {
                let e = audit_at("Decrypt", &format!("w{w}/{i}"), t(i));
                s.append_audit(&encoded(&[e.clone(), e])).await.unwrap();
            }
        }));
    }
    // And audited changes at the same time.
    for id in ["a", "b", "c"] {
        let rn = ring_name(id);
        s.insert_key_ring(&rn, &ring(&rn), &audit("CreateKeyRing", &rn.to_string())).await.unwrap();
    }
    for task in tasks {
        task.await.unwrap();
    }
    let chain = s.audit_chain(0, 1000).await.unwrap();
    let (head, hash) = s.audit_head().await.unwrap();
    assert_eq!(head, seq0 + 6 * 5 * 2 + 3);
    assert_eq!(verify_chain(&chain), ChainVerdict::Intact { entries: head, head: hash });
    // Each batch stayed contiguous.
    for pair in
        chain[seq0 as usize..].iter().filter(|e| e.entry_json.contains("\"Decrypt\"")).collect::<Vec<_>>().chunks(2)
    {
        assert_eq!(pair[0].seq + 1, pair[1].seq, "a batch is appended as one");
        assert_eq!(pair[0].entry_json, pair[1].entry_json);
    }
}

async fn read_audit_filters(db: Opened) {
    let s = &*db.kms;
    let base = 1000;
    let mut entries = Vec::new();
    for (i, (project, principal, method, resource, kind)) in [
        ("acme", "user:a@x.com", "Encrypt", "projects/acme/k1", AuditKind::DataAccess),
        ("acme", "user:b@x.com", "Decrypt", "projects/acme/k2", AuditKind::DataAccess),
        ("beta", "user:a@x.com", "CreateKeyRing", "projects/beta/r", AuditKind::Activity),
        ("acme", "user:a@x.com", "Encrypt", "projects/acme/k2", AuditKind::DataAccess),
        ("", "user:root@x.com", "CreateToken", "tokens/t", AuditKind::Activity),
        ("acme", "user:a@x.com", "UpdateCryptoKey", "projects/acme/k2/v/1", AuditKind::Activity),
    ]
    .into_iter()
    .enumerate()
    {
        // The last entry reaches the chain last but happened first (another node's clock):
        // reads follow the time.
        let at = if i == 5 { base - 5 } else { base + 10 * i as i64 };
        let mut e = audit_at(method, resource, t(at));
        e.project = project.into();
        e.principal = principal.into();
        e.kind = kind;
        entries.push(e);
    }
    s.append_audit(&encoded(&entries)).await.unwrap();
    let (head, _) = s.audit_head().await.unwrap();

    let resources = |v: Vec<(AuditPosition, keyhold_kms::audit::StoredAuditEntry)>| -> Vec<String> {
        v.iter().map(|(_, e)| serde_json::from_str::<AuditRecord>(&e.entry_json).unwrap().resource).collect()
    };
    // Only this test's entries: the database may hold others, all earlier than `base - 5`.
    let q = |f: fn(&mut AuditQuery)| {
        let mut q = all_audit();
        q.start_nanos = t(base - 5).unix_nanos_i64();
        f(&mut q);
        q
    };
    let read = |q: AuditQuery| async move { resources(s.read_audit(&q).await.unwrap()) };
    assert_eq!(
        read(q(|_| {})).await,
        [
            "projects/acme/k2/v/1",
            "projects/acme/k1",
            "projects/acme/k2",
            "projects/beta/r",
            "projects/acme/k2",
            "tokens/t"
        ]
    );
    assert_eq!(
        read(q(|q| q.project = "acme".into())).await,
        ["projects/acme/k2/v/1", "projects/acme/k1", "projects/acme/k2", "projects/acme/k2"]
    );
    assert_eq!(read(q(|q| q.method = "Encrypt".into())).await, ["projects/acme/k1", "projects/acme/k2"]);
    assert_eq!(read(q(|q| q.principal = "user:b@x.com".into())).await, ["projects/acme/k2"]);
    // A prefix matches the resource itself and longer names, merged in time order.
    assert_eq!(
        read(q(|q| q.resource_prefix = "projects/acme/k2".into())).await,
        ["projects/acme/k2/v/1", "projects/acme/k2", "projects/acme/k2"]
    );
    assert_eq!(
        read(q(|q| q.resource_prefix = "projects/acme/k".into())).await,
        ["projects/acme/k2/v/1", "projects/acme/k1", "projects/acme/k2", "projects/acme/k2"]
    );
    assert!(read(q(|q| q.resource_prefix = "projects/acme/k3".into())).await.is_empty());
    // A project's read with a prefix wider than the project: tested on the project's own entries.
    for wide in ["projects/", "projects/acme", "p"] {
        let mut scoped = q(|q| q.project = "acme".into());
        scoped.resource_prefix = wide.into();
        assert_eq!(
            read(scoped).await,
            ["projects/acme/k2/v/1", "projects/acme/k1", "projects/acme/k2", "projects/acme/k2"],
            "{wide}"
        );
    }
    let mut elsewhere = q(|q| q.project = "acme".into());
    elsewhere.resource_prefix = "projects/beta/".into();
    assert!(read(elsewhere).await.is_empty());
    assert_eq!(read(q(|q| q.kind = "activity".into())).await, ["projects/acme/k2/v/1", "projects/beta/r", "tokens/t"]);
    assert_eq!(
        read(q(|q| {
            q.project = "acme".into();
            q.kind = "data_access".into();
            q.principal = "user:a@x.com".into();
            q.resource_prefix = "projects/acme/k2".into();
        }))
        .await,
        ["projects/acme/k2"]
    );
    // Start inclusive, end exclusive.
    let window = read(q(|q| {
        q.start_nanos = t(1010).unix_nanos_i64();
        q.end_nanos = t(1030).unix_nanos_i64();
    }))
    .await;
    assert_eq!(window, ["projects/acme/k2", "projects/beta/r"]);
    // Newest first, after a position; and the limit.
    let mut desc = q(|_| {});
    desc.descending = true;
    desc.limit = 2;
    let newest = s.read_audit(&desc).await.unwrap();
    assert_eq!(newest.iter().map(|(_, e)| e.seq).collect::<Vec<_>>(), [head - 1, head - 2]);
    // Each comes with its stored position, which a page continues from.
    assert_eq!(newest[0].0, AuditPosition { time_nanos: t(base + 40).unix_nanos_i64(), seq: head - 1 });
    desc.after = Some(AuditPosition { time_nanos: t(base + 30).unix_nanos_i64(), seq: head - 2 });
    assert_eq!(read(desc.clone()).await, ["projects/beta/r", "projects/acme/k2"]);
    let mut asc = q(|_| {});
    asc.after = Some(AuditPosition { time_nanos: t(base).unix_nanos_i64(), seq: head - 5 });
    asc.limit = 2;
    assert_eq!(read(asc).await, ["projects/acme/k2", "projects/beta/r"]);
}

async fn org_policies(db: Opened) {
    let s = &*db.kms;
    let record = |project: &str, constraint: &str, at: i64| OrgPolicyRecord {
        name: format!("projects/{project}/policies/{constraint}"),
        project: project.into(),
        policy: OrgPolicy { name: format!("projects/{project}/policies/{constraint}"), ..Default::default() },
        update_time: t(at),
        revision: 0,
    };
    let a = record("acme", "gcp.restrictNonCmekServices", 1);
    let c0 = s.change_counter().await.unwrap();
    let r1 = s.put_org_policy(&a, &audit("CreatePolicy", &a.name)).await.unwrap();
    advanced(s, c0, "put_org_policy").await;
    assert_eq!(newest_audit(s).await.method, "CreatePolicy");
    let stored = s.org_policy(&a.name).await.unwrap().unwrap();
    assert_eq!((stored.policy.name.as_str(), stored.update_time, stored.revision), (a.name.as_str(), t(1), r1));

    // Replacing bumps the revision (the etag).
    let r2 = s.put_org_policy(&record("acme", "gcp.restrictNonCmekServices", 2), &audit("UpdatePolicy", &a.name)).await;
    let r2 = r2.unwrap();
    assert_ne!(r2, r1);
    assert_eq!(s.org_policy(&a.name).await.unwrap().unwrap().update_time, t(2));

    let b = record("acme", "gcp.restrictCmekCryptoKeyProjects", 3);
    s.put_org_policy(&b, &audit("CreatePolicy", &b.name)).await.unwrap();
    let other = record("beta", "gcp.restrictNonCmekServices", 3);
    s.put_org_policy(&other, &audit("CreatePolicy", &other.name)).await.unwrap();
    let names: Vec<String> = s.list_org_policies("acme").await.unwrap().into_iter().map(|p| p.name).collect();
    assert_eq!(names, [b.name.clone(), a.name.clone()], "the project's own, by name");

    let c1 = s.change_counter().await.unwrap();
    assert!(s.delete_org_policy(&a.name, &audit("DeletePolicy", &a.name)).await.unwrap());
    advanced(s, c1, "delete_org_policy").await;
    assert!(s.org_policy(&a.name).await.unwrap().is_none());
    assert!(!s.delete_org_policy(&a.name, &audit("DeletePolicy", &a.name)).await.unwrap(), "already gone");
    assert!(s.org_policy(&other.name).await.unwrap().is_some());
}

async fn failed_change_leaves_no_trace(db: Opened) {
    // [K10]: a change and its audit entry commit together, so a refused change must leave
    // neither the change, nor its audit entry, nor a moved change counter.
    let s = &*db.kms;
    let kn = ring_with_key(s, "r").await;
    let before = (s.change_counter().await.unwrap(), s.audit_head().await.unwrap());
    let stale = key_record(&kn, Some(1)); // revision 0: stale
    assert!(s.update_crypto_key(&stale, &audit("UpdateCryptoKey", "k")).await.is_err());
    let v = version_record(&kn, 1, VersionState::Enabled);
    assert!(matches!(
        s.insert_version(&v, true, &audit("CreateCryptoKeyVersion", "v")).await,
        Err(RepoError::AlreadyExists)
    ));
    let rn = ring_name("r");
    assert!(s.insert_key_ring(&rn, &ring(&rn), &audit("CreateKeyRing", "r")).await.is_err());
    let res = "projects/acme/locations/global/keyRings/r";
    assert!(s.set_policy(res, &Policy::default(), Some(7), &audit("SetIamPolicy", res)).await.is_err());
    let after = (s.change_counter().await.unwrap(), s.audit_head().await.unwrap());
    assert_eq!(before, after);
}

// ---- StoreRepository ----------------------------------------------------------------------------

mod repo {
    use std::sync::Arc;

    use keyhold_api::wire::Timestamp;
    pub use keyhold_cmek::{SealedChunk, WrappedKek};
    use keyhold_store::StoreRepository;
    use keyhold_store::model::{BackupRecord, ExportRecord, InstanceRecord, KekRecord, ObjectRecord};
    pub use keyhold_store::repo::RepoError;

    use super::{Opened, t};

    pub const KEY: &str = "projects/acme/locations/global/keyRings/r/cryptoKeys/k";

    pub fn instance_name(id: &str) -> String {
        format!("projects/acme/locations/us-east1/instances/{id}")
    }

    pub fn instance(id: &str, key: Option<&str>) -> InstanceRecord {
        InstanceRecord {
            name: instance_name(id).parse().unwrap(),
            kms_key: key.map(str::to_string),
            labels: Default::default(),
            create_time: t(1),
            replica_of: None,
        }
    }

    pub fn kek(id: u64) -> KekRecord {
        KekRecord {
            id,
            wrapped: WrappedKek {
                ciphertext: vec![id as u8; 60],
                key_version: Some(format!("{KEY}/cryptoKeyVersions/1")),
            },
            create_time: t(1),
        }
    }

    pub fn chunk(tag: &str) -> SealedChunk {
        SealedChunk { wrapped_dek: format!("dek-{tag}").into_bytes(), ciphertext: format!("data-{tag}").into_bytes() }
    }

    pub fn object(name: &str, generation: u64, chunk_count: u64) -> ObjectRecord {
        ObjectRecord {
            name: name.into(),
            generation,
            size: chunk_count * 10,
            chunk_count,
            kek_id: 1,
            content_type: "text/plain".into(),
            create_time: t(2),
            update_time: t(2 + generation as i64),
        }
    }

    /// Uploads `name` at `generation` in `chunks` chunks (all but the last through
    /// `put_chunks`, the last with the commit).
    pub async fn upload(
        r: &dyn StoreRepository,
        inst: &str,
        name: &str,
        generation: u64,
        chunks: u64,
        expected: Option<u64>,
    ) -> Result<(), RepoError> {
        r.begin_upload(inst, name, generation, "node-a", t(3)).await?;
        let tag = |i: u64| format!("{name}/{generation}/{i}");
        let early: Vec<SealedChunk> = (0..chunks - 1).map(|i| chunk(&tag(i))).collect();
        if !early.is_empty() {
            r.put_chunks(inst, name, generation, 0, &early).await?;
        }
        r.commit_upload(inst, &object(name, generation, chunks), chunks - 1, &[chunk(&tag(chunks - 1))], expected, &[])
            .await
    }

    pub async fn has_chunk(r: &dyn StoreRepository, inst: &str, name: &str, generation: u64, index: u64) -> bool {
        match r.chunk(inst, name, generation, index).await.unwrap() {
            Some(c) => {
                assert_eq!(c.ciphertext, format!("data-{name}/{generation}/{index}").into_bytes());
                true
            }
            None => false,
        }
    }

    pub fn repo(db: &Opened) -> Arc<dyn StoreRepository> {
        db.objects.clone()
    }

    pub fn backup(name: &str, inst: &str) -> BackupRecord {
        BackupRecord {
            name: name.into(),
            instance: inst.into(),
            kms_key: Some(KEY.into()),
            state: "CREATING".into(),
            size_bytes: 0,
            object_count: 0,
            version_time: t(5),
            create_time: t(5),
        }
    }

    pub fn export(name: &str, inst: &str, key: Option<&str>) -> ExportRecord {
        ExportRecord {
            name: name.into(),
            instance: inst.into(),
            kms_key: key.map(str::to_string),
            key_version: key.map(|k| format!("{k}/cryptoKeyVersions/1")),
            destination: format!("/exports/{name}"),
            size_bytes: 10,
            object_count: 1,
            create_time: t(6),
        }
    }

    pub fn names(v: &[InstanceRecord]) -> Vec<String> {
        v.iter().map(|i| i.name.to_string()).collect()
    }

    pub fn never() -> Timestamp {
        t(-1_000_000)
    }
}

async fn repo_instances(db: Opened) {
    use repo::*;
    let r = &*repo(&db);
    for (id, key) in [("b", Some(KEY)), ("a", None), ("c", Some(KEY))] {
        r.insert_instance(&instance(id, key), &kek(1), &[]).await.unwrap();
    }
    assert_eq!(r.instance(&instance_name("a")).await.unwrap(), Some(instance("a", None)));
    assert_eq!(r.instance(&instance_name("zz")).await.unwrap(), None);
    let listed = r.list_instances("projects/acme/locations/us-east1").await.unwrap();
    assert_eq!(names(&listed), [instance_name("a"), instance_name("b"), instance_name("c")], "by name");
    assert!(r.list_instances("projects/acme/locations/europe-west1").await.unwrap().is_empty());
    assert_eq!(names(&r.instances_by_key(KEY).await.unwrap()), [instance_name("b"), instance_name("c")]);
    assert_eq!(r.keks(&instance_name("a")).await.unwrap(), [kek(1)], "created with its first KEK");

    let dup = r.insert_instance(&instance("a", Some(KEY)), &kek(1), &[]).await;
    assert!(matches!(dup, Err(RepoError::AlreadyExists)), "{dup:?}");
    assert_eq!(r.instance(&instance_name("a")).await.unwrap(), Some(instance("a", None)), "unchanged");

    // Deleting takes its KEKs, objects and chunks along.
    upload(r, &instance_name("a"), "o", 1, 2, None).await.unwrap();
    assert!(r.delete_instance(&instance_name("a"), &[]).await.unwrap());
    assert_eq!(r.instance(&instance_name("a")).await.unwrap(), None);
    assert!(r.keks(&instance_name("a")).await.unwrap().is_empty());
    assert!(r.object(&instance_name("a"), "o").await.unwrap().is_none());
    assert!(r.chunk(&instance_name("a"), "o", 1, 0).await.unwrap().is_none());
    assert!(!r.delete_instance(&instance_name("a"), &[]).await.unwrap(), "already gone");
    // The name can be used again, and the new instance has none of the old one's data.
    r.insert_instance(&instance("a", None), &kek(7), &[]).await.unwrap();
    assert_eq!(r.keks(&instance_name("a")).await.unwrap(), [kek(7)]);
    assert!(r.object(&instance_name("a"), "o").await.unwrap().is_none());
}

async fn repo_keks(db: Opened) {
    use repo::*;
    let r = &*repo(&db);
    let inst = instance_name("i");
    r.insert_instance(&instance("i", Some(KEY)), &kek(1), &[]).await.unwrap();
    r.insert_kek(&inst, &kek(2)).await.unwrap();
    assert_eq!(r.keks(&inst).await.unwrap().len(), 2);

    let rewrapped = WrappedKek { ciphertext: vec![9; 60], key_version: Some(format!("{KEY}/cryptoKeyVersions/2")) };
    r.update_keks(&inst, &[(1, rewrapped.clone())], &[]).await.unwrap();
    let k1 = r.keks(&inst).await.unwrap().into_iter().find(|k| k.id == 1).unwrap();
    assert_eq!(k1.wrapped, rewrapped);

    upload(r, &inst, "o", 1, 1, None).await.unwrap(); // uses KEK 1
    assert!(!r.delete_kek_if_unused(&inst, 1).await.unwrap(), "an object still uses KEK 1");
    assert!(r.delete_kek_if_unused(&inst, 2).await.unwrap());
    assert_eq!(r.keks(&inst).await.unwrap().iter().map(|k| k.id).collect::<Vec<_>>(), [1]);
    assert!(r.delete_object(&inst, "o", &[]).await.unwrap());
    assert!(r.delete_kek_if_unused(&inst, 1).await.unwrap(), "no object left");
    assert!(r.keks(&inst).await.unwrap().is_empty());
}

async fn repo_uploads_and_generations(db: Opened) {
    use repo::*;
    let r = &*repo(&db);
    let inst = instance_name("i");
    r.insert_instance(&instance("i", None), &kek(1), &[]).await.unwrap();

    upload(r, &inst, "o", 1, 3, None).await.unwrap();
    assert_eq!(r.object(&inst, "o").await.unwrap(), Some(object("o", 1, 3)));
    for i in 0..3 {
        assert!(has_chunk(r, &inst, "o", 1, i).await, "chunk {i}");
    }
    assert!(!has_chunk(r, &inst, "o", 1, 3).await);

    // A new generation replaces the contents; the previous generation's chunks are deleted.
    upload(r, &inst, "o", 2, 2, Some(1)).await.unwrap();
    assert_eq!(r.object(&inst, "o").await.unwrap(), Some(object("o", 2, 2)));
    assert!(has_chunk(r, &inst, "o", 2, 1).await);
    assert!(!has_chunk(r, &inst, "o", 1, 0).await, "generation 1's chunks are gone");

    // A writer expecting a generation that is no longer current loses, and changes nothing.
    let lost = upload(r, &inst, "o", 3, 1, Some(1)).await;
    assert!(matches!(lost, Err(RepoError::Conflict)), "{lost:?}");
    assert_eq!(r.object(&inst, "o").await.unwrap(), Some(object("o", 2, 2)));

    // An upload aborted leaves nothing.
    r.begin_upload(&inst, "p", 1, "node-a", t(3)).await.unwrap();
    r.put_chunks(&inst, "p", 1, 0, &[chunk("p/1/0")]).await.unwrap();
    r.abort_upload(&inst, "p", 1).await.unwrap();
    assert!(r.chunk(&inst, "p", 1, 0).await.unwrap().is_none());
    assert!(r.object(&inst, "p").await.unwrap().is_none());

    // Taken for orphaned and cleaned up while its writer still ran: committing the rest of it
    // is refused, never acknowledged as an object missing its first chunks.
    r.begin_upload(&inst, "torn", 1, "node-a", t(3)).await.unwrap();
    r.put_chunks(&inst, "torn", 1, 0, &[chunk("torn/1/0")]).await.unwrap();
    r.abort_upload(&inst, "torn", 1).await.unwrap();
    let torn = r.commit_upload(&inst, &object("torn", 1, 2), 1, &[chunk("torn/1/1")], None, &[]).await;
    assert!(matches!(torn, Err(RepoError::Conflict)), "{torn:?}");
    assert!(r.object(&inst, "torn").await.unwrap().is_none());

    // Deleted meanwhile: the commit is refused.
    r.begin_upload(&inst, "q", 1, "node-a", t(3)).await.unwrap();
    assert!(r.delete_instance(&inst, &[]).await.unwrap());
    let late = r.commit_upload(&inst, &object("q", 1, 1), 0, &[chunk("q/1/0")], None, &[]).await;
    assert!(matches!(late, Err(RepoError::Conflict)), "{late:?}");
    assert!(r.object(&inst, "q").await.unwrap().is_none());
    assert!(r.chunk(&inst, "q", 1, 0).await.unwrap().is_none());
}

async fn repo_list_and_delete_objects(db: Opened) {
    use repo::*;
    let r = &*repo(&db);
    let inst = instance_name("i");
    r.insert_instance(&instance("i", None), &kek(1), &[]).await.unwrap();
    for name in ["b/2", "a", "b/1", "c", "b/3"] {
        upload(r, &inst, name, 1, 1, None).await.unwrap();
    }
    let i: &str = &inst;
    let list = move |prefix: &'static str, after: &'static str, limit: u64| async move {
        r.list_objects(i, prefix, after, limit).await.unwrap().into_iter().map(|o| o.name).collect::<Vec<_>>()
    };
    assert_eq!(list("", "", 100).await, ["a", "b/1", "b/2", "b/3", "c"]);
    assert_eq!(list("b/", "", 100).await, ["b/1", "b/2", "b/3"]);
    assert_eq!(list("b/", "b/1", 100).await, ["b/2", "b/3"], "sorting after `after`");
    assert_eq!(list("", "", 2).await, ["a", "b/1"], "up to `limit`");
    assert!(list("zz", "", 100).await.is_empty());

    assert!(r.delete_object(&inst, "b/2", &[]).await.unwrap());
    assert!(!r.delete_object(&inst, "b/2", &[]).await.unwrap(), "already gone");
    assert!(r.chunk(&inst, "b/2", 1, 0).await.unwrap().is_none(), "with its chunks");
    assert_eq!(list("b/", "", 100).await, ["b/1", "b/3"]);
}

async fn repo_pins_keep_a_snapshot(db: Opened) {
    use repo::*;
    let r = &*repo(&db);
    let inst = instance_name("i");
    let pin = "projects/acme/locations/us-east1/backups/bk";
    r.insert_instance(&instance("i", None), &kek(1), &[]).await.unwrap();
    for name in ["x", "y"] {
        upload(r, &inst, name, 1, 2, None).await.unwrap();
    }
    r.pin_objects(&inst, pin).await.unwrap();

    // Written after the snapshot: a new generation of x, a new object z, y deleted.
    upload(r, &inst, "x", 2, 1, Some(1)).await.unwrap();
    upload(r, &inst, "z", 1, 1, None).await.unwrap();
    assert!(r.delete_object(&inst, "y", &[]).await.unwrap());

    let pinned = r.pinned_objects(pin, "", 100).await.unwrap();
    assert_eq!(pinned, [object("x", 1, 2), object("y", 1, 2)], "the snapshot, as it was");
    assert_eq!(r.pinned_objects(pin, "x", 100).await.unwrap(), [object("y", 1, 2)]);
    assert_eq!(r.pinned_objects(pin, "", 1).await.unwrap(), [object("x", 1, 2)]);
    for (name, i) in [("x", 0), ("x", 1), ("y", 0), ("y", 1)] {
        assert!(has_chunk(r, &inst, name, 1, i).await, "the pin keeps {name}/1/{i}");
    }

    r.unpin(&inst, pin).await.unwrap();
    assert!(r.pinned_objects(pin, "", 100).await.unwrap().is_empty());
    assert!(!has_chunk(r, &inst, "x", 1, 0).await, "only the pin kept x/1");
    assert!(!has_chunk(r, &inst, "y", 1, 0).await, "only the pin kept y/1");
    assert!(has_chunk(r, &inst, "x", 2, 0).await, "the live generation stays");
    assert!(has_chunk(r, &inst, "z", 1, 0).await);
}

async fn repo_builds_and_backups(db: Opened) {
    use repo::*;
    let r = &*repo(&db);
    let target = instance_name("restored");

    // A build holds its name: a second build, or a new instance of that name, is refused.
    r.begin_pending(&target, "node-a", t(10)).await.unwrap();
    assert!(matches!(r.begin_pending(&target, "node-b", t(10)).await, Err(RepoError::AlreadyExists)));
    assert!(matches!(
        r.insert_instance(&instance("restored", None), &kek(1), &[]).await,
        Err(RepoError::AlreadyExists)
    ));
    r.insert_kek(&target, &kek(1)).await.unwrap();
    upload(r, &target, "o", 1, 1, None).await.unwrap();
    assert_eq!(r.instance(&target).await.unwrap(), None, "not visible until finished");
    r.finish_pending_instance(&instance("restored", None), &[]).await.unwrap();
    assert_eq!(r.instance(&target).await.unwrap(), Some(instance("restored", None)));
    assert_eq!(r.object(&target, "o").await.unwrap(), Some(object("o", 1, 1)), "what was built under the name");

    // A failed build is discarded with everything under its name, and the name is free again.
    let failed = instance_name("failed");
    r.begin_pending(&failed, "node-a", t(10)).await.unwrap();
    r.insert_kek(&failed, &kek(1)).await.unwrap();
    upload(r, &failed, "o", 1, 1, None).await.unwrap();
    r.discard(&failed, &[]).await.unwrap();
    assert!(r.keks(&failed).await.unwrap().is_empty());
    assert!(r.chunk(&failed, "o", 1, 0).await.unwrap().is_none());
    r.begin_pending(&failed, "node-a", t(11)).await.unwrap();

    // Backups: CREATING with their KEK, then READY; listed by instance and by key, also
    // after the instance is deleted.
    let src = instance_name("src");
    r.insert_instance(&instance("src", Some(KEY)), &kek(1), &[]).await.unwrap();
    let b1 = "projects/acme/locations/us-east1/backups/b1";
    let b2 = "projects/acme/locations/us-east1/backups/b2";
    r.insert_backup(&backup(b2, &src), &kek(1), "node-a").await.unwrap();
    r.insert_backup(&backup(b1, &src), &kek(1), "node-a").await.unwrap();
    assert!(matches!(r.insert_backup(&backup(b1, &src), &kek(1), "node-a").await, Err(RepoError::AlreadyExists)));
    assert_eq!(r.backup(b1).await.unwrap(), Some(backup(b1, &src)));
    assert_eq!(r.keks(b1).await.unwrap(), [kek(1)]);
    r.finish_backup(b1, 1234, 5, &[]).await.unwrap();
    let ready = r.backup(b1).await.unwrap().unwrap();
    assert_eq!((ready.state.as_str(), ready.size_bytes, ready.object_count), ("READY", 1234, 5));
    assert!(r.delete_instance(&src, &[]).await.unwrap());
    let listed: Vec<String> = r.list_backups(&src).await.unwrap().into_iter().map(|b| b.name).collect();
    assert_eq!(listed, [b1, b2], "by name, after the instance is gone");
    let mut by_key: Vec<String> = r.backups_by_key(KEY).await.unwrap().into_iter().map(|b| b.name).collect();
    by_key.sort();
    assert_eq!(by_key, [b1, b2]);
    assert!(r.backups_by_key("projects/acme/locations/global/keyRings/r/cryptoKeys/other").await.unwrap().is_empty());
    r.discard(b2, &[]).await.unwrap();
    assert_eq!(r.backup(b2).await.unwrap(), None);
    assert!(r.keks(b2).await.unwrap().is_empty());
    // A backup discarded (as orphaned) while it was being written cannot be finished.
    let late = r.finish_backup(b2, 1, 1, &[]).await;
    assert!(matches!(late, Err(RepoError::Conflict)), "{late:?}");
    assert_eq!(r.backup(b2).await.unwrap(), None);
}

async fn repo_replicas(db: Opened) {
    use repo::*;
    let r = &*repo(&db);
    let primary = instance_name("primary");
    r.insert_instance(&instance("primary", None), &kek(1), &[]).await.unwrap();
    for id in ["r2", "r1"] {
        let name = instance_name(id);
        r.begin_pending(&name, "node-a", t(10)).await.unwrap();
        r.insert_kek(&name, &kek(1)).await.unwrap();
        let mut rec = instance(id, None);
        rec.replica_of = Some(primary.clone());
        r.finish_pending_instance(&rec, &[]).await.unwrap();
        assert_eq!(r.instance(&name).await.unwrap().unwrap().replica_of.as_deref(), Some(primary.as_str()));
    }
    assert_eq!(r.replicas_of(&primary).await.unwrap(), [instance_name("r1"), instance_name("r2")]);
    assert_eq!(r.all_replicas().await.unwrap(), [instance_name("r1"), instance_name("r2")]);
    assert!(r.replicas_of(&instance_name("r1")).await.unwrap().is_empty());

    let r1 = instance_name("r1");
    r.set_replica_source(&r1, "b", 4).await.unwrap();
    r.set_replica_source(&r1, "a", 2).await.unwrap();
    r.set_replica_source(&r1, "a", 3).await.unwrap();
    let mut sources = r.replica_sources(&r1).await.unwrap();
    sources.sort();
    assert_eq!(sources, [("a".to_string(), 3), ("b".to_string(), 4)], "the latest source per object");
    assert!(r.replica_sources(&instance_name("r2")).await.unwrap().is_empty());

    assert!(r.delete_instance(&r1, &[]).await.unwrap());
    assert_eq!(r.replicas_of(&primary).await.unwrap(), [instance_name("r2")]);
}

async fn repo_exports(db: Opened) {
    use repo::*;
    let r = &*repo(&db);
    let a = "projects/acme/locations/us-east1/instances/i/exports/e1";
    let b = "projects/beta/locations/us-east1/instances/j/exports/e2";
    let c = "projects/acme/locations/us-east1/instances/i/exports/e3";
    r.insert_export(&export(a, &instance_name("i"), Some(KEY)), &[]).await.unwrap();
    r.insert_export(&export(b, "projects/beta/locations/us-east1/instances/j", Some(KEY)), &[]).await.unwrap();
    r.insert_export(&export(c, &instance_name("i"), None), &[]).await.unwrap();

    let mut by_key: Vec<String> = r.exports_by_key(KEY).await.unwrap().into_iter().map(|e| e.name).collect();
    by_key.sort();
    assert_eq!(by_key, [a, b]);
    let under = |p: &'static str| async move {
        let mut v: Vec<(String, bool)> =
            r.exports_under(p).await.unwrap().into_iter().map(|(e, m)| (e.name, m)).collect();
        v.sort();
        v
    };
    assert_eq!(under("projects/acme/").await, [(a.into(), false), (c.into(), false)]);
    assert_eq!(under("").await.len(), 3);

    // Files found gone: out of exports_by_key, flagged in exports_under, all at once with the
    // entry; back when found.
    let kms = &*db.kms;
    let h0 = kms.audit_head().await.unwrap().0;
    let reconcile = audit("ReconcileExports", "projects/acme");
    r.set_exports_missing(&[(a.to_string(), true), (b.to_string(), true)], t(20), std::slice::from_ref(&reconcile))
        .await
        .unwrap();
    assert!(r.exports_by_key(KEY).await.unwrap().is_empty());
    assert_eq!(under("projects/acme/").await, [(a.into(), true), (c.into(), false)]);
    assert_eq!(kms.audit_head().await.unwrap().0, h0 + 1);
    assert_eq!(newest_audit(kms).await, reconcile);
    r.set_exports_missing(&[(a.to_string(), false)], t(21), &[]).await.unwrap();
    assert_eq!(r.exports_by_key(KEY).await.unwrap().into_iter().map(|e| e.name).collect::<Vec<_>>(), [a]);
    assert_eq!(under("projects/acme/").await, [(a.into(), false), (c.into(), false)]);
    assert_eq!(kms.audit_head().await.unwrap().0, h0 + 1, "no entries given, none recorded");
}

/// Long-running operations (issue 18, finding 7): progress and the end are saved only by the
/// node running the operation; a dead node's running operations are taken over by one node.
async fn repo_operations(db: Opened) {
    use keyhold_store::model::OperationRecord;
    use repo::*;
    let r = &*repo(&db);
    let op = |id: &str, node: &str| OperationRecord {
        name: format!("projects/acme/locations/global/operations/{id}"),
        target: "projects/acme/locations/global/instances/i/backups/b".into(),
        request: "{}".into(),
        caller: "{}".into(),
        node: node.into(),
        done: false,
        cancel_requested: false,
        objects_done: 0,
        objects_total: None,
        bytes_done: 0,
        result: String::new(),
        create_time: t(10),
        end_time: None,
    };
    let (a1, a2, b1) = (op("op-1", "node-a"), op("op-2", "node-a"), op("op-3", "node-b"));
    for o in [&a1, &a2, &b1] {
        r.insert_operation(o).await.unwrap();
    }
    assert!(matches!(r.insert_operation(&a1).await, Err(RepoError::AlreadyExists)));
    assert_eq!(r.operation(&a1.name).await.unwrap().as_ref(), Some(&a1));
    // Progress by its node only; the cancel flag comes back with it.
    assert!(!r.operation_progress(&a1.name, "node-a", 3, Some(10), 300).await.unwrap());
    assert!(matches!(r.operation_progress(&a1.name, "node-b", 4, None, 0).await, Err(RepoError::Conflict)));
    let head = db.kms.audit_head().await.unwrap().0;
    assert!(r.cancel_operation(&a1.name, &[audit("CancelOperation", &a1.name)]).await.unwrap());
    assert_eq!(db.kms.audit_head().await.unwrap().0, head + 1, "the cancel commits its entry");
    assert!(r.operation_progress(&a1.name, "node-a", 4, Some(10), 400).await.unwrap());
    let saved = r.operation(&a1.name).await.unwrap().unwrap();
    assert_eq!(
        (saved.objects_done, saved.objects_total, saved.bytes_done, saved.cancel_requested),
        (4, Some(10), 400, true)
    );
    // The end, once, by its node; then it cannot be cancelled or moved on.
    assert!(matches!(r.finish_operation(&a1.name, "node-b", "{}", t(20)).await, Err(RepoError::Conflict)));
    r.finish_operation(&a1.name, "node-a", r#"{"error":{"code":1}}"#, t(20)).await.unwrap();
    assert!(matches!(r.finish_operation(&a1.name, "node-a", "{}", t(21)).await, Err(RepoError::Conflict)));
    assert!(!r.cancel_operation(&a1.name, &[audit("CancelOperation", &a1.name)]).await.unwrap());
    assert_eq!(db.kms.audit_head().await.unwrap().0, head + 1, "a refused cancel records nothing here");
    let ended = r.operation(&a1.name).await.unwrap().unwrap();
    assert_eq!((ended.done, ended.end_time, ended.result.as_str()), (true, Some(t(20)), r#"{"error":{"code":1}}"#));
    // Listing: by name within the location, after a name.
    let names = |v: Vec<OperationRecord>| v.into_iter().map(|o| o.name).collect::<Vec<String>>();
    let parent = "projects/acme/locations/global";
    assert_eq!(
        names(r.list_operations(parent, "", 10).await.unwrap()),
        [a1.name.as_str(), a2.name.as_str(), b1.name.as_str()]
    );
    assert_eq!(names(r.list_operations(parent, &a1.name, 1).await.unwrap()), [a2.name.as_str()]);
    assert!(r.list_operations("projects/other/locations/global", "", 10).await.unwrap().is_empty());

    // node-a and node-c beat at t(100), node-b never: node-c takes over node-b's running one.
    r.heartbeat("node-a", t(100), never()).await.unwrap();
    r.heartbeat("node-c", t(100), never()).await.unwrap();
    let claimed = r.claim_operations("node-c", t(90)).await.unwrap();
    assert_eq!(names(claimed), [b1.name.as_str()]);
    assert_eq!(r.operation(&b1.name).await.unwrap().unwrap().node, "node-c");
    assert!(matches!(r.operation_progress(&b1.name, "node-b", 1, None, 0).await, Err(RepoError::Conflict)));
    assert!(r.claim_operations("node-d", t(90)).await.unwrap().is_empty(), "live nodes keep their operations");
    // Once node-a is silent too, its running operation (not the finished one) is taken.
    let claimed = r.claim_operations("node-c", t(200)).await.unwrap();
    assert_eq!(names(claimed), [a2.name.as_str()]);
    // Old finished operations are deleted; running ones never.
    assert_eq!(r.prune_operations(t(30)).await.unwrap(), 1);
    assert_eq!(r.operation(&a1.name).await.unwrap(), None);
    assert_eq!(names(r.list_operations(parent, "", 10).await.unwrap()), [a2.name.as_str(), b1.name.as_str()]);
}

async fn repo_orphaned_work(db: Opened) {
    use repo::*;
    let r = &*repo(&db);
    let inst = instance_name("i");
    r.insert_instance(&instance("i", None), &kek(1), &[]).await.unwrap();
    // node-a starts an upload and a build, and beats at t(100).
    r.begin_upload(&inst, "o", 1, "node-a", t(50)).await.unwrap();
    let build = instance_name("build");
    r.begin_pending(&build, "node-a", t(50)).await.unwrap();
    r.heartbeat("node-a", t(100), never()).await.unwrap();

    let orphaned = |node: &'static str, dead_before: i64| async move {
        r.orphaned_work(node, t(dead_before), never()).await.unwrap()
    };
    // node-a alive (beat after dead_before): nobody may take its work.
    assert_eq!(orphaned("node-b", 90).await, (vec![], vec![]));
    // Silent since before dead_before: its work is orphaned, for another node.
    let (uploads, builds) = orphaned("node-b", 200).await;
    assert_eq!(uploads, [(inst.clone(), "o".to_string(), 1)]);
    assert_eq!(builds, std::slice::from_ref(&build));
    // Never a node's own work.
    assert_eq!(orphaned("node-a", 200).await, (vec![], vec![]));
    // Finished work is nobody's.
    r.abort_upload(&inst, "o", 1).await.unwrap();
    r.discard(&build, &[]).await.unwrap();
    assert_eq!(orphaned("node-b", 200).await, (vec![], vec![]));
}

async fn repo_changes_commit_their_audit_entries(db: Opened) {
    // [K10]: a store change and its success entries are committed together, into the same chain
    // as the KMS's; a change that does not happen records nothing.
    use repo::*;
    let (r, kms) = (&*repo(&db), &*db.kms);
    let entry = |method: &str, resource: &str| {
        let mut e = audit(method, resource);
        e.service = "store.keyhold.dev".into();
        e
    };
    let head = || async { kms.audit_head().await.unwrap().0 };
    let inst = instance_name("i");

    let h0 = head().await;
    r.insert_instance(&instance("i", Some(KEY)), &kek(1), &[entry("CreateInstance", &inst)]).await.unwrap();
    assert_eq!(head().await, h0 + 1);
    assert_eq!(newest_audit(kms).await, entry("CreateInstance", &inst));
    let dup = r.insert_instance(&instance("i", None), &kek(1), &[entry("CreateInstance", &inst)]).await;
    assert!(matches!(dup, Err(RepoError::AlreadyExists)), "{dup:?}");
    assert_eq!(head().await, h0 + 1, "a refused create records nothing");

    // Several entries of one call, in order.
    let (w1, w2) = (entry("WriteObject", "o#1"), entry("WriteObject", "o#2"));
    r.begin_upload(&inst, "o", 1, "node-a", t(3)).await.unwrap();
    r.commit_upload(&inst, &object("o", 1, 1), 0, &[chunk("o/1/0")], None, &[w1.clone(), w2.clone()]).await.unwrap();
    assert_eq!(head().await, h0 + 3);
    let tail = kms.audit_chain(h0 + 1, 10).await.unwrap();
    let decoded: Vec<AuditRecord> = tail.iter().map(|e| serde_json::from_str(&e.entry_json).unwrap()).collect();
    assert_eq!(decoded, [w1, w2]);
    // A lost compare-and-set records nothing.
    r.begin_upload(&inst, "o", 2, "node-a", t(3)).await.unwrap();
    let lost =
        r.commit_upload(&inst, &object("o", 2, 1), 0, &[chunk("o/2/0")], Some(7), &[entry("WriteObject", "o")]).await;
    assert!(matches!(lost, Err(RepoError::Conflict)), "{lost:?}");
    assert_eq!(head().await, h0 + 3);
    r.abort_upload(&inst, "o", 2).await.unwrap();

    // :rewrap: every KEK at once, one entry.
    r.insert_kek(&inst, &kek(2)).await.unwrap();
    let new = |b: u8| WrappedKek { ciphertext: vec![b; 60], key_version: Some(format!("{KEY}/cryptoKeyVersions/2")) };
    r.update_keks(&inst, &[(1, new(0xa1)), (2, new(0xa2))], &[entry("RewrapInstance", &inst)]).await.unwrap();
    assert_eq!(head().await, h0 + 4);
    let keks = r.keks(&inst).await.unwrap();
    assert_eq!(keks.iter().map(|k| (k.id, k.wrapped.clone())).collect::<Vec<_>>(), [(1, new(0xa1)), (2, new(0xa2))]);

    // Deleting what is not there records nothing; deleting what is, one entry.
    assert!(!r.delete_object(&inst, "missing", &[entry("DeleteObject", "missing")]).await.unwrap());
    assert_eq!(head().await, h0 + 4);
    assert!(r.delete_object(&inst, "o", &[entry("DeleteObject", "o")]).await.unwrap());
    assert_eq!(head().await, h0 + 5);

    // Builds, backups and exports.
    let built = instance_name("built");
    r.begin_pending(&built, "node-a", t(10)).await.unwrap();
    r.insert_kek(&built, &kek(1)).await.unwrap();
    r.finish_pending_instance(&instance("built", None), &[entry("RestoreInstance", &built)]).await.unwrap();
    assert_eq!(head().await, h0 + 6);
    let bk = "projects/acme/locations/us-east1/backups/bk";
    r.insert_backup(&backup(bk, &inst), &kek(1), "node-a").await.unwrap();
    r.finish_backup(bk, 10, 1, &[entry("CreateBackup", bk)]).await.unwrap();
    assert_eq!(head().await, h0 + 7);
    r.discard(bk, &[entry("DeleteBackup", bk)]).await.unwrap();
    assert_eq!(head().await, h0 + 8);
    let ex = "projects/acme/locations/us-east1/instances/i/exports/e";
    r.insert_export(&export(ex, &inst, Some(KEY)), &[entry("ExportInstance", ex)]).await.unwrap();
    assert_eq!(head().await, h0 + 9);
    // A step without entries (a copy's, a cleanup's) records nothing.
    assert!(r.delete_instance(&built, &[]).await.unwrap());
    assert_eq!(head().await, h0 + 9);
    assert!(!r.delete_instance(&built, &[entry("DeleteInstance", &built)]).await.unwrap());
    assert_eq!(head().await, h0 + 9, "deleting a missing instance records nothing");
    assert!(r.delete_instance(&inst, &[entry("DeleteInstance", &inst)]).await.unwrap());
    assert_eq!(newest_audit(kms).await, entry("DeleteInstance", &inst));

    let (seq, hash) = kms.audit_head().await.unwrap();
    assert_eq!(
        verify_chain(&kms.audit_chain(0, 1000).await.unwrap()),
        ChainVerdict::Intact { entries: seq, head: hash }
    );
}

/// `--in-memory` keeps the newest N audit entries (issue 18, finding 5): however many requests
/// it serves, its log stays that long, and the entries it keeps still chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_memory_database_keeps_the_newest_audit_entries() {
    let s = keyhold_sql::open(&Database::InMemory { audit_entries: 10 }).await.unwrap();
    for batch in 0..5i64 {
        let entries: Vec<AuditRecord> =
            (0..7).map(|i| audit_at("Encrypt", &format!("r{}", batch * 7 + i), t(batch * 7 + i))).collect();
        s.append_audit(&encoded(&entries)).await.unwrap();
    }
    // Changes committing their own entry prune too.
    let rn = ring_name("kept");
    s.insert_key_ring(&rn, &ring(&rn), &audit_at("CreateKeyRing", &rn.to_string(), t(100))).await.unwrap();
    let (head, _) = s.audit_head().await.unwrap();
    assert_eq!(head, 36, "the chain's positions go on");
    let kept: Vec<_> = s.read_audit(&all_audit()).await.unwrap().into_iter().map(|(_, e)| e).collect();
    assert_eq!(kept.iter().map(|e| e.seq).collect::<Vec<_>>(), (27..=36).collect::<Vec<_>>());
    for pair in kept.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash, "entry {} names the one before", pair[1].seq);
    }
    assert_eq!(newest_audit(&*s).await.method, "CreateKeyRing");
}

/// Larger limits prune a 64th at a time: the log holds from `kept` to `kept + chunk - 1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_memory_database_prunes_a_chunk_at_a_time() {
    let s = keyhold_sql::open(&Database::InMemory { audit_entries: 256 }).await.unwrap();
    let mut sizes = Vec::new();
    for i in 0..300i64 {
        s.append_audit(&encoded(&[audit_at("Encrypt", "r", t(i))])).await.unwrap();
        sizes.push(s.read_audit(&all_audit()).await.unwrap().len());
    }
    // With a chunk of 4, between 256 and 259 kept once full.
    assert_eq!(sizes[254], 255, "not full yet");
    assert!(sizes[255..].iter().all(|n| (256..=259).contains(n)), "{sizes:?}");
    assert!(sizes[255..].iter().any(|n| *n > 256), "pruned a chunk at a time, not on every append: {sizes:?}");
}

/// A file's log is never pruned: its triggers refuse every delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_database_keeps_every_audit_entry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyhold.db");
    let s = keyhold_sql::open(&Database::SqliteFile(path.clone())).await.unwrap();
    s.append_audit(&encoded(&[audit("Encrypt", "r")])).await.unwrap();
    drop(s);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let err = conn.execute("DELETE FROM audit_log", []).unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
}
