//! Deletion (issue 19) over REST, on a real SQLite file and a real PostgreSQL server:
//! `DELETE` on versions and keys as Cloud KMS's long-running operations, `operations.get`, the
//! retired resources deleted keys leave, and names that are never used again.

mod common;

use std::sync::Arc;

use common::*;
use keyhold_api::wire::ProtoDuration;
use keyhold_kms::KmsConfig;
use keyhold_kms::clock::ManualClock;
use reqwest::Method;
use serde_json::{Value, json};

const LOC: &str = "projects/p/locations/us-central1";
const RING: &str = "projects/p/locations/us-central1/keyRings/r";
const KEY: &str = "projects/p/locations/us-central1/keyRings/r/cryptoKeys/k";

/// The answer of a request as it is (the test client follows operations to their end
/// otherwise), which must be 200.
async fn raw_ok(s: &Server, method: Method, path: &str) -> Value {
    let (status, v) = s.call_raw(method, path, None).await;
    assert_eq!(status, 200, "{path}: {v}");
    v
}

/// Destroys `version` and lets its destruction complete.
async fn destroyed(s: &Server, clock: &ManualClock, version: &str) {
    s.ok(Method::POST, &format!("{version}:destroy"), Some(json!({}))).await;
    clock.advance(ProtoDuration::from_secs(2));
    s.kms.run_due_work().await.unwrap();
    assert_eq!(s.ok(Method::GET, version, None).await["state"], "DESTROYED");
}

/// A finished operation with `metadata_type`, answering `google.protobuf.Empty`, which
/// `operations.get` reads back.
async fn finished(s: &Server, op: &Value, metadata_type: &str) {
    let name = op["name"].as_str().unwrap();
    assert!(name.starts_with(&format!("{LOC}/operations/kms-")), "{op}");
    assert_eq!(op["done"], true);
    assert_eq!(op["metadata"]["@type"], format!("type.googleapis.com/google.cloud.kms.v1.{metadata_type}"));
    assert_eq!(op["response"], json!({"@type": "type.googleapis.com/google.protobuf.Empty"}));
    assert_eq!(&raw_ok(s, Method::GET, name).await, op);
    // Followed as clients follow it, it answers Empty.
    assert_eq!(s.ok(Method::GET, name, None).await, json!({}));
}

async fn versions_then_key(backend: Backend) {
    let config = KmsConfig { min_destroy_scheduled_duration: ProtoDuration::from_secs(1), ..Default::default() };
    let clock = Arc::new(ManualClock::default());
    let s = start_with_clock(backend, config, keyhold_crypto::KeyBytes::generate().unwrap(), clock.clone()).await;
    s.ok(Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), None).await;
    let body = json!({"purpose": "ENCRYPT_DECRYPT", "destroyScheduledDuration": "1s"});
    s.ok(Method::POST, &format!("{RING}/cryptoKeys?cryptoKeyId=k"), Some(body)).await;
    s.ok(Method::POST, &format!("{KEY}/cryptoKeyVersions"), Some(json!({}))).await;
    let (v1, v2) = (format!("{KEY}/cryptoKeyVersions/1"), format!("{KEY}/cryptoKeyVersions/2"));

    // Only a version whose material is gone can be deleted.
    let m = s.err(Method::DELETE, &v1, None, 400, "FAILED_PRECONDITION").await;
    assert!(m.contains("requires DESTROYED, IMPORT_FAILED or GENERATION_FAILED"), "{m}");
    destroyed(&s, &clock, &v1).await;
    let op = raw_ok(&s, Method::DELETE, &v1).await;
    finished(&s, &op, "DeleteCryptoKeyVersionMetadata").await;
    s.err(Method::GET, &v1, None, 404, "NOT_FOUND").await;
    s.err(Method::DELETE, &v1, None, 404, "NOT_FOUND").await;
    let listed = s.ok(Method::GET, &format!("{KEY}/cryptoKeyVersions"), None).await;
    let names: Vec<&str> =
        listed["cryptoKeyVersions"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names, [v2.as_str()]);
    // Version 1 was the primary: the key has none now, and IDs are never used again.
    assert!(s.ok(Method::GET, KEY, None).await.get("primary").is_none());
    let v3 = s.ok(Method::POST, &format!("{KEY}/cryptoKeyVersions"), Some(json!({}))).await;
    assert_eq!(v3["name"], format!("{KEY}/cryptoKeyVersions/3"));
    let v3 = v3["name"].as_str().unwrap().to_string();

    // A key can be deleted once every version is.
    let m = s.err(Method::DELETE, KEY, None, 400, "FAILED_PRECONDITION").await;
    assert!(m.contains("still has 2 CryptoKeyVersions"), "{m}");
    for v in [&v2, &v3] {
        destroyed(&s, &clock, v).await;
        raw_ok(&s, Method::DELETE, v).await;
    }
    // With its highest version deleted too, the next is still new.
    let v4 = s.ok(Method::POST, &format!("{KEY}/cryptoKeyVersions"), Some(json!({}))).await;
    assert_eq!(v4["name"], format!("{KEY}/cryptoKeyVersions/4"));
    let v4 = v4["name"].as_str().unwrap().to_string();
    destroyed(&s, &clock, &v4).await;
    raw_ok(&s, Method::DELETE, &v4).await;
    s.ok(
        Method::POST,
        &format!("{KEY}:setIamPolicy"),
        Some(json!({"policy": {"bindings": [{"role": "roles/cloudkms.viewer", "members": ["user:v@example.com"]}]}})),
    )
    .await;
    let op = raw_ok(&s, Method::DELETE, KEY).await;
    finished(&s, &op, "DeleteCryptoKeyMetadata").await;
    s.err(Method::GET, KEY, None, 404, "NOT_FOUND").await;
    let listed = s.ok(Method::GET, &format!("{RING}/cryptoKeys"), None).await;
    assert!(listed.get("cryptoKeys").is_none(), "{listed}");

    // It leaves a retired resource, and its name is never used again.
    let retired_name = op["metadata"]["retiredResource"].as_str().unwrap();
    assert!(retired_name.starts_with(&format!("{LOC}/retiredResources/")), "{op}");
    let retired = s.ok(Method::GET, retired_name, None).await;
    assert_eq!(retired["originalResource"], KEY);
    assert_eq!(retired["resourceType"], "cloudkms.googleapis.com/CryptoKey");
    assert!(retired["deleteTime"].is_string());
    let listed = s.ok(Method::GET, &format!("{LOC}/retiredResources"), None).await;
    assert_eq!(listed["retiredResources"], json!([retired]));
    assert_eq!(listed["totalSize"], "1", "an int64, as proto3 JSON writes it");
    let m = s
        .err(
            Method::POST,
            &format!("{RING}/cryptoKeys?cryptoKeyId=k"),
            Some(json!({"purpose": "ENCRYPT_DECRYPT"})),
            409,
            "ALREADY_EXISTS",
        )
        .await;
    assert_eq!(
        m,
        format!(
            "CryptoKey {KEY} was deleted, and the names of deleted CryptoKeys cannot be used again (RetiredResource {retired_name})."
        )
    );
    // Its IAM policy went with it.
    let (status, _) = s.call(Method::GET, &format!("{KEY}:getIamPolicy"), None).await;
    assert_eq!(status, 404);
    let policies = match backend {
        Backend::Sqlite => rusqlite::Connection::open(&s.db_file)
            .unwrap()
            .query_row("SELECT count(*) FROM iam_policies WHERE resource = ?1", [KEY], |r| r.get::<_, i64>(0))
            .unwrap(),
        Backend::Postgres => {
            let url = s.pg_url.clone().unwrap();
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            client.query_one("SELECT count(*) FROM iam_policies WHERE resource = $1", &[&KEY]).await.unwrap().get(0)
        }
    };
    assert_eq!(policies, 0, "the deleted key's policy row is gone");
    s.ok(Method::POST, &format!("{RING}/cryptoKeys?cryptoKeyId=k2"), Some(json!({"purpose": "ENCRYPT_DECRYPT"}))).await;
    s.err(Method::GET, &format!("{LOC}/retiredResources/nope"), None, 404, "NOT_FOUND").await;
    s.err(Method::GET, &format!("{LOC}/retiredResources?filter=x"), None, 400, "INVALID_ARGUMENT").await;
    s.err(Method::GET, &format!("{LOC}/operations/kms-nope"), None, 404, "NOT_FOUND").await;
}

#[tokio::test]
async fn versions_then_key_sqlite() {
    versions_then_key(Backend::Sqlite).await;
}

#[tokio::test]
async fn versions_then_key_postgres() {
    versions_then_key(Backend::Postgres).await;
}

/// Deleting needs `cloudkms.cryptoKeyVersions.delete` / `cloudkms.cryptoKeys.delete` (Cloud KMS
/// Admin, Editor, Owner); a viewer reads retired resources and operations but deletes nothing.
#[tokio::test]
async fn deleting_needs_the_delete_permissions() {
    let config = KmsConfig { min_destroy_scheduled_duration: ProtoDuration::from_secs(1), ..Default::default() };
    let clock = Arc::new(ManualClock::default());
    let s =
        start_with_clock(Backend::Sqlite, config, keyhold_crypto::KeyBytes::generate().unwrap(), clock.clone()).await;
    s.ok(Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), None).await;
    let body = json!({"purpose": "ENCRYPT_DECRYPT", "destroyScheduledDuration": "1s"});
    s.ok(Method::POST, &format!("{RING}/cryptoKeys?cryptoKeyId=k"), Some(body)).await;
    let v1 = format!("{KEY}/cryptoKeyVersions/1");
    destroyed(&s, &clock, &v1).await;
    s.grant("projects/p", "roles/cloudkms.viewer", "user:vic@example.com").await;
    s.grant("projects/p", "roles/cloudkms.admin", "user:ada@example.com").await;
    let (vic, ada) = (s.token_for("user:vic@example.com").await, s.token_for("user:ada@example.com").await);
    let denied = |v: Value, permission: &str| {
        let m = v["error"]["message"].as_str().unwrap().to_string();
        assert!(m.starts_with(&format!("Permission '{permission}' denied")), "{m}");
    };
    let (st, v) = s.call_as(Some(&vic), Method::DELETE, &v1, None).await;
    assert_eq!(st, 403);
    denied(v, "cloudkms.cryptoKeyVersions.delete");
    let (st, op) = s.call_raw_as(Some(&ada), Method::DELETE, &v1, None).await;
    assert_eq!(st, 200, "{op}");
    let (st, v) = s.call_as(Some(&vic), Method::DELETE, KEY, None).await;
    assert_eq!(st, 403);
    denied(v, "cloudkms.cryptoKeys.delete");
    let (st, key_op) = s.call_raw_as(Some(&ada), Method::DELETE, KEY, None).await;
    assert_eq!(st, 200, "{key_op}");
    for name in [op["name"].as_str().unwrap(), key_op["metadata"]["retiredResource"].as_str().unwrap()] {
        let (st, v) = s.call_raw_as(Some(&vic), Method::GET, name, None).await;
        assert_eq!(st, 200, "{v}");
    }
    let (st, v) = s.call_as(None, Method::GET, &format!("{LOC}/retiredResources"), None).await;
    assert_eq!(st, 401, "{v}");
    let nobody = s.token_for("user:nobody@example.com").await;
    let (st, v) = s.call_as(Some(&nobody), Method::GET, &format!("{LOC}/retiredResources"), None).await;
    assert_eq!(st, 403);
    denied(v, "cloudkms.retiredResources.list");
}

/// A deletion racing a creation of the same name (PostgreSQL, read committed, where the two
/// transactions really overlap): whichever wins, a retired name never comes back as a key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_name_is_never_recreated_under_a_race() {
    let s = start(Backend::Postgres, KmsConfig::default()).await;
    s.ok(Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), None).await;
    for i in 0..20 {
        let key = format!("{RING}/cryptoKeys/race{i}");
        let create = format!("{RING}/cryptoKeys?cryptoKeyId=race{i}&skipInitialVersionCreation=true");
        s.ok(Method::POST, &create, Some(json!({"purpose": "ENCRYPT_DECRYPT"}))).await;
        let (deleted, created) = tokio::join!(
            s.call_raw(Method::DELETE, &key, None),
            s.call_raw(Method::POST, &create, Some(json!({"purpose": "ENCRYPT_DECRYPT"}))),
        );
        assert_eq!(deleted.0, 200, "{deleted:?}");
        assert_eq!(created.0, 409, "the name is taken, then retired: {created:?}");
        s.err(Method::GET, &key, None, 404, "NOT_FOUND").await;
        let (status, again) = s.call_raw(Method::POST, &create, Some(json!({"purpose": "ENCRYPT_DECRYPT"}))).await;
        assert_eq!(status, 409, "{again}");
        assert!(again["error"]["message"].as_str().unwrap().contains("cannot be used again"), "{again}");
    }
}
