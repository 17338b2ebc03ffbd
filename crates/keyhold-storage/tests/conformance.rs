//! Storage conformance: the documented contracts of every repository trait, written once and run
//! on every backend the server can be started on: a SQLite file, an in-memory SQLite database
//! and PostgreSQL (a fresh database per test on the server named by
//! `KEYHOLD_TEST_POSTGRES_URL`, which `scripts/test.sh` starts; without it the PostgreSQL cases
//! fail and say so, as the server's PostgreSQL tests do).
//!
//! Each check is a function of the trait object only (`Arc<dyn KmsStore>`, as the KMS holds it),
//! so it cannot lean on one backend's details; `conformance!` instantiates it per backend. What
//! is asserted is what the trait's docs promise: lookups, orderings, `AlreadyExists` and
//! `Conflict`, compare-and-set revisions, the audit entry committed with each change, the chain,
//! and the change counter.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use keyhold_api::iam::{Binding, Policy};
use keyhold_api::orgpolicy::OrgPolicy;
use keyhold_api::resources::{CryptoKey, CryptoKeyVersion, KeyRing, VersionState};
use keyhold_api::wire::{ProtoDuration, Timestamp};
use keyhold_api::{CryptoKeyName, CryptoKeyVersionName, KeyRingName, LocationName};
use keyhold_kms::audit::{AuditKind, AuditRecord, ChainVerdict, verify_chain};
use keyhold_kms::store::{
    AuditQuery, CryptoKeyRecord, KmsStore, OrgPolicyRecord, ProjectRecord, ServiceIdentityRecord, StoreError,
    TokenRecord, VersionRecord,
};
use keyhold_storage::Database;

// ---- backends ---------------------------------------------------------------------------------

/// A fresh, migrated database of each kind. The `TempDir` keeps the SQLite file alive.
enum Backend {
    SqliteFile,
    SqliteMemory,
    Postgres,
}

struct Opened {
    kms: Arc<dyn KmsStore>,
    objects: Arc<dyn keyhold_store::StoreRepository>,
    _dir: Option<tempfile::TempDir>,
}

async fn open(backend: Backend) -> Opened {
    let (db, dir) = match backend {
        Backend::SqliteFile => {
            let dir = tempfile::tempdir().unwrap();
            (Database::SqliteFile(dir.path().join("keyhold.db")), Some(dir))
        }
        Backend::SqliteMemory => (Database::InMemory, None),
        Backend::Postgres => (Database::Postgres(fresh_postgres().await), None),
    };
    let opened = keyhold_storage::open_all(&db).await.expect("open and migrate the database");
    Opened { kms: opened.kms, objects: opened.objects, _dir: dir }
}

/// A new, empty database on the test PostgreSQL server; its URL.
async fn fresh_postgres() -> String {
    let url = std::env::var("KEYHOLD_TEST_POSTGRES_URL").expect(
        "KEYHOLD_TEST_POSTGRES_URL is not set: run the tests with `scripts/test.sh with-postgres cargo test -p \
         keyhold-storage`, which starts PostgreSQL",
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
        material: Some(vec![id as u8; 40]),
        revision: 0,
    }
}

/// A key ring with one key (`k`) whose first version (1) is its primary.
async fn ring_with_key(s: &dyn KmsStore, ring_id: &str) -> CryptoKeyName {
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
async fn advanced(s: &dyn KmsStore, before: i64, what: &str) -> i64 {
    let now = s.change_counter().await.unwrap();
    assert_ne!(now, before, "{what} did not advance the change counter");
    now
}

/// The newest audit entry, decoded.
async fn newest_audit(s: &dyn KmsStore) -> AuditRecord {
    let (seq, _) = s.audit_head().await.unwrap();
    let e = s.audit_chain(seq - 1, 1).await.unwrap();
    assert_eq!(e.len(), 1, "the head entry {seq} is readable");
    serde_json::from_str(&e[0].entry_json).unwrap()
}

fn all_audit() -> AuditQuery {
    AuditQuery { project: "-".into(), start_nanos: 0, end_nanos: i64::MAX, limit: 1000, ..Default::default() }
}

// ---- KmsStore ---------------------------------------------------------------------------------

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
    let names: Vec<String> = s.list_key_rings(&location()).await.unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(names, [ring_name("a"), ring_name("b"), ring_name("c")].map(|n| n.to_string()), "by name");
    let elsewhere: LocationName = "projects/acme/locations/europe-west1".parse().unwrap();
    assert!(s.list_key_rings(&elsewhere).await.unwrap().is_empty());

    let dup = s.insert_key_ring(&ring_name("a"), &ring(&ring_name("a")), &audit("CreateKeyRing", "dup")).await;
    assert!(matches!(dup, Err(StoreError::AlreadyExists)), "{dup:?}");
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
    assert_eq!(v1.material, Some(vec![1u8; 40]));
    assert_eq!(v1.version.state, Some(VersionState::Enabled));

    // Without a first version.
    let bare = key_name("r", "a-bare");
    s.insert_crypto_key(&key_record(&bare, None), None, &audit("CreateCryptoKey", &bare.to_string())).await.unwrap();
    assert_eq!(s.crypto_key(&bare).await.unwrap().unwrap().primary_version, None);
    assert!(s.list_versions(&bare).await.unwrap().is_empty());
    let names: Vec<String> =
        s.list_crypto_keys(&ring_name("r")).await.unwrap().into_iter().map(|k| k.name.to_string()).collect();
    assert_eq!(names, [bare.to_string(), kn.to_string()], "by name");
    assert!(s.list_crypto_keys(&ring_name("other")).await.unwrap().is_empty());

    let dup = s.insert_crypto_key(&key_record(&kn, None), None, &audit("CreateCryptoKey", "dup")).await;
    assert!(matches!(dup, Err(StoreError::AlreadyExists)), "{dup:?}");

    // Atomic: when the first version cannot be inserted (its name is taken), the key is not
    // inserted either.
    let orphan = key_name("r", "orphan");
    let clash = version_record(&kn, 1, VersionState::Enabled);
    let r = s.insert_crypto_key(&key_record(&orphan, Some(1)), Some(&clash), &audit("CreateCryptoKey", "x")).await;
    assert!(matches!(r, Err(StoreError::AlreadyExists)), "{r:?}");
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
    assert!(matches!(r, Err(StoreError::Conflict)), "{r:?}");
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
    assert!(matches!(s.update_crypto_key(&gone, &audit("UpdateCryptoKey", "gone")).await, Err(StoreError::Conflict)));
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
            Err(StoreError::Conflict) => {}
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
    let ids: Vec<u64> = s.list_versions(&kn).await.unwrap().iter().map(|v| v.name.version).collect();
    assert_eq!(ids, (1..=11).collect::<Vec<u64>>());
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
    destroyed.material = None;
    let c = s.change_counter().await.unwrap();
    let rev = s.update_version(&destroyed, &audit("DestroyCryptoKeyVersion", &v2name.to_string())).await.unwrap();
    assert_ne!(rev, read.revision);
    advanced(s, c, "update_version").await;
    let stored = s.version(&v2name).await.unwrap().unwrap();
    assert_eq!((stored.version.state, stored.material, stored.revision), (Some(VersionState::Destroyed), None, rev));

    // The stale reader loses.
    let mut stale = read;
    stale.version.state = Some(VersionState::Disabled);
    let r = s.update_version(&stale, &audit("UpdateCryptoKeyVersion", &v2name.to_string())).await;
    assert!(matches!(r, Err(StoreError::Conflict)), "{r:?}");
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
    assert!(s.versions_due_for_destruction(t(99)).await.unwrap().is_empty());
    assert_eq!(s.versions_due_for_destruction(t(100)).await.unwrap(), [v(2)], "at destroyTime: due");
    assert_eq!(s.versions_due_for_destruction(t(1000)).await.unwrap(), [v(2), v(3)]);

    // Restored: no longer due.
    let mut restored = s.version(&v(2)).await.unwrap().unwrap();
    restored.version.state = Some(VersionState::Disabled);
    restored.version.destroy_time = None;
    s.update_version(&restored, &audit("RestoreCryptoKeyVersion", "v2")).await.unwrap();
    assert_eq!(s.versions_due_for_destruction(t(1000)).await.unwrap(), [v(3)]);

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
    assert_eq!(s.keys_due_for_rotation(t(400)).await.unwrap(), [rotating.clone()]);
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
        assert!(matches!(r, Err(StoreError::Conflict)), "expected revision {stale}: {r:?}");
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
    assert!(matches!(s.insert_project(&same_id).await, Err(StoreError::AlreadyExists)));
    let same_number = ProjectRecord { project_id: "other".into(), ..p.clone() };
    assert!(matches!(s.insert_project(&same_number).await, Err(StoreError::AlreadyExists)));
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
    assert!(matches!(r, Err(StoreError::AlreadyExists)), "{r:?}");
}

async fn audit_append_and_chain(db: Opened) {
    let s = &*db.kms;
    let (seq0, _) = s.audit_head().await.unwrap();
    let batch: Vec<AuditRecord> = (0..5).map(|i| audit_at("Encrypt", &format!("res/{i}"), t(i))).collect();
    s.append_audit(&batch).await.unwrap();
    s.append_audit(&batch[..2]).await.unwrap();
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
                s.append_audit(&[e.clone(), e]).await.unwrap();
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
    let mut entries = Vec::new();
    for (i, (project, principal, method, resource, kind)) in [
        ("acme", "user:a@x.com", "Encrypt", "projects/acme/k1", AuditKind::DataAccess),
        ("acme", "user:b@x.com", "Decrypt", "projects/acme/k2", AuditKind::DataAccess),
        ("beta", "user:a@x.com", "CreateKeyRing", "projects/beta/r", AuditKind::Activity),
        ("acme", "user:a@x.com", "Encrypt", "projects/acme/k2", AuditKind::DataAccess),
        ("", "user:root@x.com", "CreateToken", "tokens/t", AuditKind::Activity),
    ]
    .into_iter()
    .enumerate()
    {
        let mut e = audit_at(method, resource, t(10 * i as i64));
        e.project = project.into();
        e.principal = principal.into();
        e.kind = kind;
        entries.push(e);
    }
    s.append_audit(&entries).await.unwrap();
    let (head, _) = s.audit_head().await.unwrap();
    let first = head - 4;

    let resources = |v: Vec<keyhold_kms::audit::StoredAuditEntry>| -> Vec<String> {
        v.iter().map(|e| serde_json::from_str::<AuditRecord>(&e.entry_json).unwrap().resource).collect()
    };
    let q = |f: fn(&mut AuditQuery)| {
        let mut q = all_audit();
        q.cursor = first - 1;
        f(&mut q);
        q
    };
    let all = resources(s.read_audit(&q(|_| {})).await.unwrap());
    assert_eq!(all, ["projects/acme/k1", "projects/acme/k2", "projects/beta/r", "projects/acme/k2", "tokens/t"]);
    let by_project = resources(s.read_audit(&q(|q| q.project = "acme".into())).await.unwrap());
    assert_eq!(by_project, ["projects/acme/k1", "projects/acme/k2", "projects/acme/k2"]);
    let by_method = resources(s.read_audit(&q(|q| q.method = "Encrypt".into())).await.unwrap());
    assert_eq!(by_method, ["projects/acme/k1", "projects/acme/k2"]);
    let by_principal = resources(s.read_audit(&q(|q| q.principal = "user:b@x.com".into())).await.unwrap());
    assert_eq!(by_principal, ["projects/acme/k2"]);
    let by_prefix = resources(s.read_audit(&q(|q| q.resource_prefix = "projects/acme/k2".into())).await.unwrap());
    assert_eq!(by_prefix, ["projects/acme/k2", "projects/acme/k2"]);
    let by_kind = resources(s.read_audit(&q(|q| q.kind = "activity".into())).await.unwrap());
    assert_eq!(by_kind, ["projects/beta/r", "tokens/t"]);
    // Start inclusive, end exclusive.
    let window = resources(
        s.read_audit(&q(|q| {
            q.start_nanos = t(10).unix_nanos_i64();
            q.end_nanos = t(30).unix_nanos_i64();
        }))
        .await
        .unwrap(),
    );
    assert_eq!(window, ["projects/acme/k2", "projects/beta/r"]);
    // Newest first, before the cursor; and the limit.
    let mut desc = all_audit();
    desc.descending = true;
    desc.cursor = head;
    desc.limit = 2;
    let newest = s.read_audit(&desc).await.unwrap();
    assert_eq!(newest.iter().map(|e| e.seq).collect::<Vec<_>>(), [head - 1, head - 2]);
    let mut asc = q(|_| {});
    asc.cursor = first + 1;
    asc.limit = 2;
    assert_eq!(s.read_audit(&asc).await.unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(), [first + 2, first + 3]);
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
        Err(StoreError::AlreadyExists)
    ));
    let rn = ring_name("r");
    assert!(s.insert_key_ring(&rn, &ring(&rn), &audit("CreateKeyRing", "r")).await.is_err());
    let res = "projects/acme/locations/global/keyRings/r";
    assert!(s.set_policy(res, &Policy::default(), Some(7), &audit("SetIamPolicy", res)).await.is_err());
    let after = (s.change_counter().await.unwrap(), s.audit_head().await.unwrap());
    assert_eq!(before, after);
    let _ = &db.objects;
}
