//! The store over HTTP against a real server ([C1]-[C7], [C12]): key checks at creation,
//! streamed objects, suspension within a second of a disable or a revoke, resumption,
//! rotation + rewrap, re-encryption, tampering, and no plaintext at rest.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Backend, Server, start};
use keyhold_kms::KmsConfig;
use reqwest::Method;
use serde_json::{Value, json};

const LOC: &str = "projects/p/locations/global";
const RING: &str = "projects/p/locations/global/keyRings/r";
const KEY: &str = "projects/p/locations/global/keyRings/r/cryptoKeys/k";
const INSTANCE: &str = "projects/p/locations/global/instances/db1";
const ENCRYPTER: &str = "roles/cloudkms.cryptoKeyEncrypterDecrypter";
const INACCESSIBLE: &str = "KMS key required by the Keyhold resource is not accessible";

fn random(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    keyhold_crypto::random_bytes(&mut v).unwrap();
    v
}

async fn key(s: &Server) {
    s.ok(Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), Some(json!({}))).await;
    s.ok(Method::POST, &format!("{RING}/cryptoKeys?cryptoKeyId=k"), Some(json!({"purpose": "ENCRYPT_DECRYPT"}))).await;
}

async fn agent(s: &Server) -> String {
    let base = s.base.trim_end_matches("/v1");
    let resp = s
        .http
        .post(format!("{base}/v1beta1/projects/p/services/store.keyhold.dev:generateServiceIdentity"))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    v["response"]["email"].as_str().unwrap().to_string()
}

async fn set_key_policy(s: &Server, members: &[String]) {
    let policy = if members.is_empty() {
        json!({"bindings": []})
    } else {
        json!({"bindings": [{"role": ENCRYPTER, "members": members}]})
    };
    s.ok(Method::POST, &format!("{KEY}:setIamPolicy"), Some(json!({ "policy": policy }))).await;
}

async fn put(s: &Server, instance: &str, object: &str, data: Vec<u8>) -> (u16, Value) {
    let resp = s
        .http
        .put(format!("{}/{instance}/objects/{object}", s.base))
        .bearer_auth(&s.token)
        .header("content-type", "application/x-test")
        .body(data)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// The contents, or the error status and body (or a cut-off stream, as `Err((0, ..))`).
async fn get_media(s: &Server, instance: &str, object: &str) -> Result<Vec<u8>, (u16, String)> {
    let resp = s
        .http
        .get(format!("{}/{instance}/objects/{object}?alt=media", s.base))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    match resp.bytes().await {
        Ok(b) if status == 200 => Ok(b.to_vec()),
        Ok(b) => Err((status, String::from_utf8_lossy(&b).into_owned())),
        Err(e) => Err((0, e.to_string())),
    }
}

async fn set_version_state(s: &Server, version: u32, state: &str) {
    s.ok(
        Method::PATCH,
        &format!("{KEY}/cryptoKeyVersions/{version}?updateMask=state"),
        Some(json!({ "state": state })),
    )
    .await;
}

/// Polls until `f` is true; returns how long it took (panics after 10 s).
async fn until<F: std::future::Future<Output = bool>>(mut f: impl FnMut() -> F) -> Duration {
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < Duration::from_secs(10), "condition not reached in 10 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

async fn refused(s: &Server, object: &str) -> bool {
    matches!(get_media(s, INSTANCE, object).await, Err((400, body)) if body.contains(INACCESSIBLE))
}

/// A KMS configuration whose versions may be destroyed 1 s after being scheduled.
fn quick_destroy() -> KmsConfig {
    KmsConfig { min_destroy_scheduled_duration: keyhold_api::wire::ProtoDuration::from_secs(1), ..KmsConfig::default() }
}

/// The key KEY, destroyed 1 s after a destroy request, usable by the store's agent (returned).
async fn shreddable_key(s: &Server) -> String {
    s.ok(Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), Some(json!({}))).await;
    s.ok(
        Method::POST,
        &format!("{RING}/cryptoKeys?cryptoKeyId=k"),
        Some(json!({"purpose": "ENCRYPT_DECRYPT", "destroyScheduledDuration": "1s"})),
    )
    .await;
    let email = agent(s).await;
    set_key_policy(s, &[format!("serviceAccount:{email}")]).await;
    email
}

async fn cmek_instance(s: &Server) -> String {
    key(s).await;
    let email = agent(s).await;
    set_key_policy(s, &[format!("serviceAccount:{email}")]).await;
    let inst = s.ok(Method::POST, &format!("{LOC}/instances?instanceId=db1"), Some(json!({"kmsKey": KEY}))).await;
    assert_eq!(inst["state"], "READY", "{inst}");
    email
}

async fn lifecycle(backend: Backend) {
    let s = start(backend, KmsConfig::default()).await;
    key(&s).await;

    // [C1] Without the grant, creation says exactly what to run.
    let msg = s
        .err(
            Method::POST,
            &format!("{LOC}/instances?instanceId=db1"),
            Some(json!({"kmsKey": KEY})),
            400,
            "FAILED_PRECONDITION",
        )
        .await;
    let email = agent(&s).await;
    assert!(
        msg.contains(&format!(
            "keyhold kms keys add-iam-policy-binding k --keyring=r --location=global --project=p --member=serviceAccount:{email} --role={ENCRYPTER}"
        )),
        "{msg}"
    );
    set_key_policy(&s, &[format!("serviceAccount:{email}")]).await;
    let inst = s.ok(Method::POST, &format!("{LOC}/instances?instanceId=db1"), Some(json!({"kmsKey": KEY}))).await;
    assert_eq!(inst["state"], "READY");
    assert_eq!(inst["kmsKey"], KEY);
    assert_eq!(inst["encryptionInfo"]["encryptionType"], "CUSTOMER_MANAGED_ENCRYPTION");
    assert_eq!(inst["encryptionInfo"]["kmsKeyVersions"], json!([format!("{KEY}/cryptoKeyVersions/1")]));
    s.err(
        Method::POST,
        &format!("{LOC}/instances?instanceId=db1"),
        Some(json!({"kmsKey": KEY})),
        409,
        "ALREADY_EXISTS",
    )
    .await;

    // Objects of several chunks, streamed both ways; names with slashes.
    let big = random(9 * 1024 * 1024 + 12345);
    let (st, meta) = put(&s, INSTANCE, "dir/big.bin", big.clone()).await;
    assert_eq!(st, 200, "{meta}");
    assert_eq!(meta["size"], big.len().to_string());
    assert_eq!(meta["contentType"], "application/x-test");
    assert_eq!(meta["kmsKeyVersion"], format!("{KEY}/cryptoKeyVersions/1"));
    assert_eq!(get_media(&s, INSTANCE, "dir/big.bin").await.unwrap(), big);
    let (st, _) = put(&s, INSTANCE, "empty", Vec::new()).await;
    assert_eq!(st, 200);
    assert_eq!(get_media(&s, INSTANCE, "empty").await.unwrap(), Vec::<u8>::new());
    let (st, _) = put(&s, INSTANCE, "small", b"hello".to_vec()).await;
    assert_eq!(st, 200);
    // Overwrite keeps one version, whole.
    let (st, _) = put(&s, INSTANCE, "small", b"hello again".to_vec()).await;
    assert_eq!(st, 200);
    assert_eq!(get_media(&s, INSTANCE, "small").await.unwrap(), b"hello again");

    // [C5] Disable: refused within a second, with Spanner's wording; metadata still served.
    set_version_state(&s, 1, "DISABLED").await;
    let took = until(|| refused(&s, "small")).await;
    // No wall-clock bound here (it flaked on a loaded machine; bench/suite.py's enforcement
    // scenario measures it). The guard's periodic check is 300 s (GuardConfig's default) and
    // `until` gives up after 10 s, so reaching the condition at all shows the immediate,
    // event-driven re-check on the key change.
    assert_eq!(keyhold_cmek::GuardConfig::default().check_period, Duration::from_secs(300));
    eprintln!("enforcement after disable ({backend:?}): {took:?}");
    let inst = s.ok(Method::GET, INSTANCE, None).await;
    assert_eq!(inst["state"], "SUSPENDED", "{inst}");
    assert_eq!(inst["suspensionReason"], "KMS_KEY_ISSUE");
    assert_eq!(inst["keyStatus"]["observedKeyState"], "DISABLED", "{inst}");
    assert!(inst["encryptionInfo"]["encryptionStatus"]["message"].as_str().unwrap().contains(INACCESSIBLE));
    let list = s.ok(Method::GET, &format!("{INSTANCE}/objects"), None).await;
    assert_eq!(list["objects"].as_array().unwrap().len(), 3, "{list}");
    let meta = s.ok(Method::GET, &format!("{INSTANCE}/objects/dir/big.bin"), None).await;
    assert_eq!(meta["size"], big.len().to_string());
    let (st, body) = put(&s, INSTANCE, "new", b"x".to_vec()).await;
    assert_eq!(st, 400, "{body}");
    assert_eq!(body["error"]["status"], "FAILED_PRECONDITION");
    assert!(body["error"]["message"].as_str().unwrap().starts_with(INACCESSIBLE), "{body}");
    let list = s.ok(Method::GET, &format!("{LOC}/instances"), None).await;
    assert_eq!(list["instances"][0]["state"], "SUSPENDED");

    // [C6] Enable: resumes by itself.
    set_version_state(&s, 1, "ENABLED").await;
    let took = until(|| async { get_media(&s, INSTANCE, "small").await.is_ok() }).await;
    eprintln!("resumption after enable ({backend:?}): {took:?}");
    assert_eq!(s.ok(Method::GET, INSTANCE, None).await["state"], "READY");

    // [C5] Revoke the agent's grant: refused; re-grant: back.
    set_key_policy(&s, &[]).await;
    let took = until(|| refused(&s, "small")).await;
    eprintln!("enforcement after revoke ({backend:?}): {took:?}");
    assert_eq!(s.ok(Method::GET, INSTANCE, None).await["keyStatus"]["observedKeyState"], "PERMISSION_DENIED");
    set_key_policy(&s, &[format!("serviceAccount:{email}")]).await;
    until(|| async { get_media(&s, INSTANCE, "small").await.is_ok() }).await;

    // [C4] Rotation re-encrypts nothing; :rewrap moves the KEK to the new primary.
    s.ok(Method::POST, &format!("{KEY}/cryptoKeyVersions"), Some(json!({}))).await;
    s.ok(Method::POST, &format!("{KEY}:updatePrimaryVersion"), Some(json!({"cryptoKeyVersionId": "2"}))).await;
    let inst = s.ok(Method::GET, INSTANCE, None).await;
    assert_eq!(inst["encryptionInfo"]["kmsKeyVersions"], json!([format!("{KEY}/cryptoKeyVersions/1")]));
    let inst = s.ok(Method::POST, &format!("{INSTANCE}:rewrap"), Some(json!({}))).await;
    assert_eq!(inst["encryptionInfo"]["kmsKeyVersions"], json!([format!("{KEY}/cryptoKeyVersions/2")]), "{inst}");
    // Version 1 protects nothing now: disabling it changes nothing.
    set_version_state(&s, 1, "DISABLED").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(get_media(&s, INSTANCE, "dir/big.bin").await.unwrap(), big);

    // :reencrypt: fresh DEKs and KEK; the data reads the same.
    let before = s.ok(Method::GET, &format!("{INSTANCE}/objects/dir/big.bin"), None).await;
    let inst = s.ok(Method::POST, &format!("{INSTANCE}:reencrypt"), Some(json!({}))).await;
    assert_eq!(inst["encryptionInfo"]["kmsKeyVersions"], json!([format!("{KEY}/cryptoKeyVersions/2")]));
    let after = s.ok(Method::GET, &format!("{INSTANCE}/objects/dir/big.bin"), None).await;
    assert_ne!(before["generation"], after["generation"]);
    assert_eq!(get_media(&s, INSTANCE, "dir/big.bin").await.unwrap(), big);
    assert_eq!(get_media(&s, INSTANCE, "small").await.unwrap(), b"hello again");

    // An admin can delete a suspended instance.
    set_version_state(&s, 2, "DISABLED").await;
    until(|| refused(&s, "small")).await;
    s.ok(Method::DELETE, INSTANCE, None).await;
    s.err(Method::GET, INSTANCE, None, 404, "NOT_FOUND").await;
}

#[tokio::test]
async fn cmek_lifecycle_sqlite() {
    lifecycle(Backend::Sqlite).await;
}

#[tokio::test]
async fn cmek_lifecycle_postgres() {
    lifecycle(Backend::Postgres).await;
}

#[tokio::test]
async fn creation_checks_and_org_policies() {
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    key(&s).await;
    let email = agent(&s).await;
    set_key_policy(&s, &[format!("serviceAccount:{email}")]).await;

    let msg = s
        .err(
            Method::POST,
            "projects/p/locations/us-east1/instances?instanceId=x",
            Some(json!({"kmsKey": KEY})),
            400,
            "FAILED_PRECONDITION",
        )
        .await;
    assert!(msg.contains("is in location global, but the instance is in us-east1"), "{msg}");
    let missing = format!("{RING}/cryptoKeys/nope");
    let msg = s
        .err(
            Method::POST,
            &format!("{LOC}/instances?instanceId=x"),
            Some(json!({"kmsKey": missing})),
            400,
            "FAILED_PRECONDITION",
        )
        .await;
    assert!(msg.contains("does not exist"), "{msg}");
    s.err(Method::POST, &format!("{LOC}/instances?instanceId=Bad_Id"), Some(json!({})), 400, "INVALID_ARGUMENT").await;
    s.err(
        Method::POST,
        &format!("{LOC}/instances?instanceId=x"),
        Some(json!({"kmsKey": "nonsense"})),
        400,
        "INVALID_ARGUMENT",
    )
    .await;

    // Service-managed encryption by default.
    let inst = s.ok(Method::POST, &format!("{LOC}/instances?instanceId=plain"), Some(json!({}))).await;
    assert_eq!(inst["encryptionInfo"]["encryptionType"], "GOOGLE_DEFAULT_ENCRYPTION");
    assert!(inst.get("kmsKey").is_none());
    let (st, _) = put(&s, "projects/p/locations/global/instances/plain", "o", b"data".to_vec()).await;
    assert_eq!(st, 200);
    assert_eq!(get_media(&s, "projects/p/locations/global/instances/plain", "o").await.unwrap(), b"data");

    // [C12] restrictNonCmekServices.
    let v2 = s.base.trim_end_matches("/v1").to_string() + "/v2";
    let put_policy = |name: &'static str, spec: Value| {
        let s = &s;
        let v2 = v2.clone();
        async move {
            let resp = s
                .http
                .put(format!("{v2}/projects/p/policies/{name}"))
                .bearer_auth(&s.token)
                .json(&json!({"name": format!("projects/p/policies/{name}"), "spec": spec}))
                .send()
                .await
                .unwrap();
            let st = resp.status().as_u16();
            let v: Value = resp.json().await.unwrap();
            assert_eq!(st, 200, "{v}");
            v
        }
    };
    let p = put_policy(
        "gcp.restrictNonCmekServices",
        json!({"rules": [{"values": {"deniedValues": ["store.keyhold.dev"]}}]}),
    )
    .await;
    assert!(!p["etag"].as_str().unwrap().is_empty());
    let msg = s
        .err(Method::POST, &format!("{LOC}/instances?instanceId=plain2"), Some(json!({})), 400, "FAILED_PRECONDITION")
        .await;
    assert_eq!(
        msg,
        "Constraint constraints/gcp.restrictNonCmekServices violated for projects/p attempting to create a resource without specifying a KMS CryptoKey."
    );
    // Existing resources are untouched; CMEK creation still works.
    assert_eq!(get_media(&s, "projects/p/locations/global/instances/plain", "o").await.unwrap(), b"data");
    s.ok(Method::POST, &format!("{LOC}/instances?instanceId=c1"), Some(json!({"kmsKey": KEY}))).await;

    // [C12] restrictCmekCryptoKeyProjects.
    put_policy(
        "gcp.restrictCmekCryptoKeyProjects",
        json!({"rules": [{"values": {"allowedValues": ["under:projects/keys"]}}]}),
    )
    .await;
    let msg = s
        .err(
            Method::POST,
            &format!("{LOC}/instances?instanceId=c2"),
            Some(json!({"kmsKey": KEY})),
            400,
            "FAILED_PRECONDITION",
        )
        .await;
    assert!(
        msg.starts_with("Constraint constraints/gcp.restrictCmekCryptoKeyProjects violated for projects/p"),
        "{msg}"
    );
    let listed: Value = s
        .http
        .get(format!("{v2}/projects/p/policies"))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["policies"].as_array().unwrap().len(), 2, "{listed}");
}

/// Raw SQL on the server's database, SQLite file or PostgreSQL alike (the tests that tamper
/// with stored data, or look at what erasure left, run on both backends). Statements use `$1`,
/// which both accept.
enum Raw {
    Sqlite(rusqlite::Connection),
    Postgres(tokio_postgres::Client),
}

impl Raw {
    async fn open(s: &Server) -> Raw {
        match &s.pg_url {
            None => Raw::Sqlite(rusqlite::Connection::open(&s.db_file).unwrap()),
            Some(url) => {
                let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(conn);
                Raw::Postgres(client)
            }
        }
    }
    async fn exec(&self, sql: &str) {
        match self {
            Raw::Sqlite(c) => c.execute_batch(sql).unwrap(),
            Raw::Postgres(c) => c.batch_execute(sql).await.unwrap(),
        }
    }
    async fn exec_bytes(&self, sql: &str, bytes: &[u8]) {
        match self {
            Raw::Sqlite(c) => assert_eq!(c.execute(sql, [bytes]).unwrap(), 1),
            Raw::Postgres(c) => assert_eq!(c.execute(sql, &[&bytes]).await.unwrap(), 1),
        }
    }
    /// The one BLOB/BYTEA of the one row `sql` (with `$1` = `param`) selects; `None` if NULL.
    async fn bytes(&self, sql: &str, param: &str) -> Option<Vec<u8>> {
        match self {
            Raw::Sqlite(c) => c.query_row(sql, [param], |r| r.get(0)).unwrap(),
            Raw::Postgres(c) => c.query_one(sql, &[&param]).await.unwrap().get(0),
        }
    }
    async fn count(&self, sql: &str, bytes: &[u8]) -> i64 {
        match self {
            Raw::Sqlite(c) => c.query_row(sql, [bytes], |r| r.get(0)).unwrap(),
            Raw::Postgres(c) => c.query_one(sql, &[&bytes]).await.unwrap().get(0),
        }
    }
}

async fn tampering_is_detected(backend: Backend) {
    let s = start(backend, KmsConfig::default()).await;
    cmek_instance(&s).await;
    let data = random(3 * 1024 * 1024 + 5);
    for name in ["flip", "swap", "truncate", "replay"] {
        let (st, _) = put(&s, INSTANCE, name, data.clone()).await;
        assert_eq!(st, 200);
    }
    let db = Raw::open(&s).await;
    let mut chunk =
        db.bytes("SELECT data FROM store_chunks WHERE object = $1 AND idx = 1", "flip").await.expect("a chunk");
    chunk[100] ^= 1;
    db.exec_bytes("UPDATE store_chunks SET data = $1 WHERE object = 'flip' AND idx = 1", &chunk).await;
    db.exec(
        "UPDATE store_chunks SET idx = 99 WHERE object = 'swap' AND idx = 0; UPDATE store_chunks SET idx = 0 WHERE object = 'swap' AND idx = 1; UPDATE store_chunks SET idx = 1 WHERE object = 'swap' AND idx = 99;",
    )
    .await;
    db.exec("DELETE FROM store_chunks WHERE object = 'truncate' AND idx = 3").await;
    for name in ["flip", "swap", "truncate"] {
        let r = get_media(&s, INSTANCE, name).await;
        assert!(r.is_err(), "{name}: tampered data was served");
        // Status 0: the damage was met after the headers went out, and the body was cut off.
        if let Err((status, body)) = r
            && status != 0
        {
            assert_eq!(status, 500, "{name}: {body}");
            assert!(body.contains("DATA_LOSS"), "{name}: {body}");
        }
    }
    // A chunk moved from another object is refused too.
    db.exec(
        "DELETE FROM store_chunks WHERE object = 'replay' AND idx = 0; UPDATE store_chunks SET object = 'replay', generation = (SELECT generation FROM store_objects WHERE name = 'replay') WHERE object = 'truncate' AND idx = 0;",
    )
    .await;
    assert!(get_media(&s, INSTANCE, "replay").await.is_err());
}

#[tokio::test]
async fn tampering_is_detected_sqlite() {
    tampering_is_detected(Backend::Sqlite).await;
}

/// Hardening (tests that would have caught these): tamper-evidence was checked on SQLite only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_is_detected_postgres() {
    tampering_is_detected(Backend::Postgres).await;
}

/// An upload cut off half-way leaves no chunk behind and the previous version whole.
#[tokio::test]
async fn interrupted_upload_leaves_nothing_and_keeps_the_previous_version() {
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    cmek_instance(&s).await;
    let v1 = random(2 * 1024 * 1024 + 7);
    let (st, _) = put(&s, INSTANCE, "o", v1.clone()).await;
    assert_eq!(st, 200);
    let db = rusqlite::Connection::open(&s.db_file).unwrap();
    let rows =
        |table: &str| -> i64 { db.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)).unwrap() };
    assert_eq!(rows("store_chunks"), 3);

    // Nine full chunks (two batches written before the end), then the client fails.
    let parts = (0..9)
        .map(|_| Ok::<_, std::io::Error>(random(1024 * 1024)))
        .chain(std::iter::once(Err(std::io::Error::other("client gave up"))));
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(parts));
    let sent = s.http.put(format!("{}/{INSTANCE}/objects/o", s.base)).bearer_auth(&s.token).body(body).send().await;
    assert!(sent.is_err(), "the client's own stream failed, so must its request");

    // The server cleans up after the failed request; nothing of the new generation stays.
    until(|| async { rows("store_uploads") == 0 && rows("store_chunks") == 3 }).await;
    assert_eq!(get_media(&s, INSTANCE, "o").await.unwrap(), v1);
    let meta = s.ok(Method::GET, &format!("{INSTANCE}/objects/o"), None).await;
    assert_eq!(meta["size"], v1.len().to_string());
}

/// An instance deleted while an upload into it is under way: the upload fails, and nothing of
/// it is left under the deleted name (a new instance of that name would otherwise inherit it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_into_an_instance_deleted_meanwhile_leaves_nothing() {
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    cmek_instance(&s).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let upload = {
        let request = s.http.put(format!("{}/{INSTANCE}/objects/o", s.base)).bearer_auth(&s.token).body(body);
        tokio::spawn(async move { request.send().await })
    };
    for _ in 0..6 {
        tx.send(Ok(random(1024 * 1024))).await.unwrap();
    }
    let db = rusqlite::Connection::open(&s.db_file).unwrap();
    let rows = |sql: &str| -> i64 { db.query_row(sql, [], |r| r.get(0)).unwrap() };
    until(|| async { rows("SELECT count(*) FROM store_uploads") == 1 }).await;
    s.ok(Method::DELETE, INSTANCE, None).await;
    tx.send(Ok(random(1000))).await.unwrap();
    drop(tx);
    let resp = upload.await.unwrap().unwrap();
    assert_eq!(resp.status().as_u16(), 404, "{:?}", resp.text().await);
    until(|| async { rows("SELECT count(*) FROM store_chunks") + rows("SELECT count(*) FROM store_uploads") == 0 })
        .await;
    assert_eq!(rows("SELECT count(*) FROM store_objects"), 0);
}

/// A receiver as a stream (reqwest bodies take streams).
fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}

#[tokio::test]
async fn no_plaintext_at_rest() {
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    cmek_instance(&s).await;
    let marker = b"KEYHOLD-KNOWN-PLAINTEXT-".repeat(20_000);
    let (st, _) = put(&s, INSTANCE, "known", marker.clone()).await;
    assert_eq!(st, 200);
    assert_eq!(get_media(&s, INSTANCE, "known").await.unwrap(), marker);
    // The instance's KEK, unwrapped through the KMS (the owner may decrypt with the key): it
    // must not be anywhere at rest either.
    let wrapped: Vec<u8> = rusqlite::Connection::open(&s.db_file)
        .unwrap()
        .query_row("SELECT wrapped FROM store_keks WHERE instance = ?1", [INSTANCE], |r| r.get(0))
        .unwrap();
    let aad = keyhold_cmek::kek_aad(INSTANCE);
    let b64 = |b: &[u8]| keyhold_api::wire::encode_base64(b);
    let kek = s
        .ok(
            Method::POST,
            &format!("{KEY}:decrypt"),
            Some(json!({"ciphertext": b64(&wrapped), "additionalAuthenticatedData": b64(&aad)})),
        )
        .await;
    let kek = keyhold_api::wire::decode_base64(kek["plaintext"].as_str().unwrap()).unwrap();
    assert_eq!(kek.len(), 32);
    let mut scanned = 0;
    for entry in std::fs::read_dir(s.db_file.parent().unwrap()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        scanned += bytes.len();
        assert!(!bytes.windows(24).any(|w| w == b"KEYHOLD-KNOWN-PLAINTEXT-"), "plaintext found at rest");
        assert!(!bytes.windows(32).any(|w| w == kek.as_slice()), "an unwrapped KEK found at rest");
    }
    assert!(scanned > marker.len(), "the scan read the database ({scanned} bytes)");
}

#[tokio::test]
async fn unauthenticated_and_unauthorized_callers_are_refused() {
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    cmek_instance(&s).await;
    let (st, body) = s.call_as(None, Method::GET, INSTANCE, None).await;
    assert_eq!(st, 401, "{body}");
    let v = s.ok(Method::POST, "tokens", Some(json!({"principal": "user:viewer@example.com"}))).await;
    let viewer = v["token"].as_str().unwrap().to_string();
    s.ok(
        Method::POST,
        "projects/p:setIamPolicy",
        Some(json!({"policy": {"bindings": [{"role": "roles/viewer", "members": ["user:viewer@example.com"]}]}})),
    )
    .await;
    let (st, body) = s.call_as(Some(&viewer), Method::GET, INSTANCE, None).await;
    assert_eq!(st, 200, "{body}");
    let (st, body) = s.call_as(Some(&viewer), Method::DELETE, INSTANCE, None).await;
    assert_eq!(st, 403, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("keyhold.instances.delete"), "{body}");
}

/// [C5] across nodes: two servers on one PostgreSQL database; a disable made on one is enforced
/// by the other within a second (its change poll runs every 250 ms, as `keyhold serve` does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_on_one_node_is_enforced_on_the_other() {
    let (a, b) = common::two_postgres_nodes().await;
    let kms_b = b.kms.clone();
    tokio::spawn(async move {
        loop {
            let _ = kms_b.sync_with_store().await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    cmek_instance(&a).await;
    let (st, _) = put(&a, INSTANCE, "o", b"shared".to_vec()).await;
    assert_eq!(st, 200);
    assert_eq!(get_media(&b, INSTANCE, "o").await.unwrap(), b"shared");

    set_version_state(&a, 1, "DISABLED").await;
    let took = until(|| async {
        matches!(get_media(&b, INSTANCE, "o").await, Err((400, body)) if body.contains(INACCESSIBLE))
    })
    .await;
    // Through node b's change poll (the loop above) and the re-check it triggers; the latency
    // is measured by bench/suite.py's two-node enforcement scenario, not asserted here.
    eprintln!("enforcement on the other node after disable: {took:?}");
    assert_eq!(b.ok(Method::GET, INSTANCE, None).await["state"], "SUSPENDED");

    set_version_state(&a, 1, "ENABLED").await;
    let took = until(|| async { get_media(&b, INSTANCE, "o").await.is_ok() }).await;
    eprintln!("resumption on the other node after enable: {took:?}");

    // The instance is deleted and created again under the same name through node a. Node b
    // still holds the old instance's guard, whose KEK 1 is not the new instance's KEK 1: it
    // must not be used for the new instance.
    a.ok(Method::DELETE, INSTANCE, None).await;
    let inst = a.ok(Method::POST, &format!("{LOC}/instances?instanceId=db1"), Some(json!({"kmsKey": KEY}))).await;
    assert_eq!(inst["state"], "READY", "{inst}");
    let (st, _) = put(&a, INSTANCE, "o", b"second life".to_vec()).await;
    assert_eq!(st, 200);
    assert_eq!(get_media(&b, INSTANCE, "o").await.unwrap(), b"second life");
}

/// [K12] Key usage tracking: which instances a key protects, with which versions, in the shape
/// of the Cloud KMS Inventory API; after a rotation and `:rewrap` the old version protects
/// nothing, which is what its owner must know before destroying it.
#[tokio::test]
async fn protected_resources_of_a_key() {
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    cmek_instance(&s).await;
    s.ok(
        Method::POST,
        &format!("{LOC}/instances?instanceId=db2"),
        Some(json!({"kmsKey": KEY, "labels": {"team": "a"}})),
    )
    .await;
    s.ok(Method::POST, &format!("{LOC}/instances?instanceId=plain"), Some(json!({}))).await;

    let summary = s.ok(Method::GET, &format!("{KEY}/protectedResourcesSummary"), None).await;
    assert_eq!(summary["name"], format!("{KEY}/protectedResourcesSummary"));
    assert_eq!(summary["resourceCount"], "2", "{summary}");
    assert_eq!(summary["projectCount"], 1);
    assert_eq!(summary["resourceTypes"], json!({"store.keyhold.dev/Instance": "2"}));
    assert_eq!(summary["cloudProducts"], json!({"keyhold-store": "2"}));
    assert_eq!(summary["locations"], json!({"global": "2"}));

    let search = |project: &'static str| {
        let s = &s;
        async move {
            s.ok(Method::GET, &format!("projects/{project}/protectedResources:search?cryptoKey={KEY}"), None).await
        }
    };
    let v1 = format!("{KEY}/cryptoKeyVersions/1");
    let v2 = format!("{KEY}/cryptoKeyVersions/2");
    let found = search("p").await;
    let resources = found["protectedResources"].as_array().unwrap();
    assert_eq!(resources.len(), 2, "{found}");
    assert_eq!(resources[0]["name"], format!("//store.keyhold.dev/{INSTANCE}"));
    assert_eq!(resources[0]["projectId"], "p");
    assert!(resources[0]["project"].as_str().unwrap().starts_with("projects/"));
    assert_eq!(resources[0]["cryptoKeyVersions"], json!([v1]));
    assert_eq!(resources[1]["labels"], json!({"team": "a"}));
    // Nothing in another project: the empty message (proto3 JSON leaves out an empty list).
    assert_eq!(search("q").await, json!({}), "another project");

    // Rotate and rewrap one instance: version 1 still protects the other, then nothing.
    s.ok(Method::POST, &format!("{KEY}/cryptoKeyVersions"), Some(json!({}))).await;
    s.ok(Method::POST, &format!("{KEY}:updatePrimaryVersion"), Some(json!({"cryptoKeyVersionId": "2"}))).await;
    s.ok(Method::POST, &format!("{INSTANCE}:rewrap"), Some(json!({}))).await;
    let still_v1 = |found: &Value| -> Vec<String> {
        found["protectedResources"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["cryptoKeyVersions"].as_array().unwrap().contains(&json!(v1)))
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect()
    };
    let found = search("p").await;
    assert_eq!(found["protectedResources"][0]["cryptoKeyVersions"], json!([v2]), "{found}");
    assert_eq!(found["protectedResources"][0]["cryptoKeyVersion"], v2);
    assert_eq!(still_v1(&found), [format!("//store.keyhold.dev/{LOC}/instances/db2")]);
    s.ok(Method::POST, &format!("{LOC}/instances/db2:rewrap"), Some(json!({}))).await;
    assert!(still_v1(&search("p").await).is_empty(), "version 1 protects nothing now");

    // Bad requests and callers.
    s.err(Method::GET, "projects/p/protectedResources:search", None, 400, "INVALID_ARGUMENT").await;
    let minted = s.ok(Method::POST, "tokens", Some(json!({"principal": "user:mallory@example.com"}))).await;
    let stranger = minted["token"].as_str().unwrap().to_string();
    let (status, _) = s.call_as(Some(&stranger), Method::GET, &format!("{KEY}/protectedResourcesSummary"), None).await;
    assert_eq!(status, 403);
}

/// [C11] Crypto-shredding of an instance: once the only version protecting it is destroyed
/// (after its scheduled time), nothing of its data can be read again. The object, the KEK, the
/// version's raw and sealed material are all absent from every file of the database, and the
/// wrapped KEK that remains cannot be unwrapped by anyone.
async fn destroying_the_key_shreds_the_instance(backend: Backend) {
    let root = keyhold_crypto::KeyBytes::generate().unwrap();
    let config = quick_destroy();
    let clock = Arc::new(keyhold_kms::clock::ManualClock::default());
    let s = common::start_with_clock(backend, config, root.clone(), clock.clone()).await;
    shreddable_key(&s).await;
    s.ok(Method::POST, &format!("{LOC}/instances?instanceId=db1"), Some(json!({"kmsKey": KEY}))).await;
    let marker = b"SHRED-ME-KNOWN-PLAINTEXT-".repeat(50_000);
    assert_eq!(put(&s, INSTANCE, "secret", marker.clone()).await.0, 200);

    // What could decrypt it today: the instance's KEK and the version's material.
    let db = Raw::open(&s).await;
    let wrapped = db.bytes("SELECT wrapped FROM store_keks WHERE instance = $1", INSTANCE).await.unwrap();
    let b64 = keyhold_api::wire::encode_base64;
    let unwrap_kek =
        json!({"ciphertext": b64(&wrapped), "additionalAuthenticatedData": b64(&keyhold_cmek::kek_aad(INSTANCE))});
    let kek = s.ok(Method::POST, &format!("{KEY}:decrypt"), Some(unwrap_kek.clone())).await;
    let kek = keyhold_api::wire::decode_base64(kek["plaintext"].as_str().unwrap()).unwrap();
    let version = format!("{KEY}/cryptoKeyVersions/1");
    let sealed = db.bytes("SELECT material FROM crypto_key_versions WHERE name = $1", &version).await.unwrap();
    let raw = keyhold_crypto::sealed::unseal(
        &keyhold_crypto::AeadKey::new(&root),
        &sealed,
        &format!("{KEY}/cryptoKeyVersions/1"),
    )
    .unwrap();

    // Destroy the version and let its scheduled destruction happen.
    s.ok(Method::POST, &format!("{KEY}/cryptoKeyVersions/1:destroy"), None).await;
    // Past the 1 s schedule on the KMS's manual clock, instead of sleeping through it.
    assert_eq!(s.kms.run_due_work().await.unwrap().destroyed, 0, "not before its destroyTime");
    clock.advance(keyhold_api::wire::ProtoDuration::from_secs(2));
    assert_eq!(s.kms.run_due_work().await.unwrap().destroyed, 1);
    until(|| refused(&s, "secret")).await;
    // The object was refused already while the version was DESTROY_SCHEDULED; the instance
    // sees DESTROYED once the destruction's event (or, across PostgreSQL nodes, the change
    // poll) reaches its key guard: wait for that event, never a fixed time.
    until(|| async { s.ok(Method::GET, INSTANCE, None).await["keyStatus"]["observedKeyState"] == "DESTROYED" }).await;
    let inst = s.ok(Method::GET, INSTANCE, None).await;
    assert_eq!(inst["keyStatus"]["observedKeyState"], "DESTROYED", "{inst}");

    // Nothing left that decrypts: the wrapped KEK is refused for good ...
    s.err(Method::POST, &format!("{KEY}:decrypt"), Some(unwrap_kek), 400, "FAILED_PRECONDITION").await;
    // ... the version's sealed material is gone from its row and from every live row ...
    assert_eq!(db.bytes("SELECT material FROM crypto_key_versions WHERE name = $1", &version).await, None);
    assert_eq!(db.count("SELECT count(*) FROM crypto_key_versions WHERE material = $1", &sealed).await, 0);
    let Backend::Sqlite = backend else {
        // PostgreSQL keeps old row versions until VACUUM, which Keyhold runs on the versions
        // table after each erasure; the bytes may still linger in free pages and the WAL
        // (docs/operations.md, "Destroying key material"), so the files are not scanned.
        let Raw::Postgres(pg) = &db else { unreachable!() };
        until(|| async {
            let row = pg
                .query_one(
                    "SELECT last_vacuum IS NOT NULL FROM pg_stat_user_tables WHERE relname = 'crypto_key_versions'",
                    &[],
                )
                .await
                .unwrap();
            row.get::<_, bool>(0)
        })
        .await;
        return;
    };
    // ... and no file holds the plaintext, the KEK or the version's material, raw or sealed.
    let mut scanned = 0;
    for entry in std::fs::read_dir(s.db_file.parent().unwrap()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        scanned += bytes.len();
        assert!(!bytes.windows(25).any(|w| w == &marker[..25]), "plaintext at rest");
        assert!(!bytes.windows(32).any(|w| w == kek.as_slice()), "the KEK at rest");
        assert!(!bytes.windows(32).any(|w| w == raw.expose()), "raw version material at rest");
        assert!(!bytes.windows(sealed.len()).any(|w| w == sealed.as_slice()), "sealed version material at rest");
    }
    assert!(scanned > marker.len(), "the scan read the database ({scanned} bytes)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroying_the_key_shreds_the_instance_sqlite() {
    destroying_the_key_shreds_the_instance(Backend::Sqlite).await;
}

/// Hardening (tests that would have caught these): erasure was checked on SQLite only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroying_the_key_shreds_the_instance_postgres() {
    destroying_the_key_shreds_the_instance(Backend::Postgres).await;
}

// ---- copies that keep their keys ([C8]-[C11]) ----------------------------------------------

const KEY2: &str = "projects/p/locations/global/keyRings/r/cryptoKeys/k2";

/// A second key in the same ring, usable by the store's agent `email`.
async fn second_key(s: &Server, email: &str) {
    s.ok(Method::POST, &format!("{RING}/cryptoKeys?cryptoKeyId=k2"), Some(json!({"purpose": "ENCRYPT_DECRYPT"}))).await;
    let policy = json!({"bindings": [{"role": ENCRYPTER, "members": [format!("serviceAccount:{email}")]}]});
    s.ok(Method::POST, &format!("{KEY2}:setIamPolicy"), Some(json!({ "policy": policy }))).await;
}

/// Every file under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { out.extend(files_under(&path)) } else { out.push(path) }
    }
    out
}

/// [C8] Backups keep the key version they were taken under: rotation and `:reencrypt` of the
/// source change nothing in them; restores use the backup's key or another one; a disabled or
/// destroyed backup version makes restoring fail with FAILED_PRECONDITION while the source,
/// re-encrypted under the new version, keeps working.
async fn backups_and_restores(backend: Backend) {
    let config = quick_destroy();
    let clock = Arc::new(keyhold_kms::clock::ManualClock::default());
    let s =
        common::start_with_clock(backend, config, keyhold_crypto::KeyBytes::generate().unwrap(), clock.clone()).await;
    let email = shreddable_key(&s).await;
    second_key(&s, &email).await;
    s.ok(Method::POST, &format!("{LOC}/instances?instanceId=db1"), Some(json!({"kmsKey": KEY}))).await;
    let big = random(2 * 1024 * 1024 + 17);
    assert_eq!(put(&s, INSTANCE, "big", big.clone()).await.0, 200);
    assert_eq!(put(&s, INSTANCE, "dir/small", b"small".to_vec()).await.0, 200);
    let v1 = format!("{KEY}/cryptoKeyVersions/1");

    // Take it; it shows v1, its size and its objects.
    let b1 = format!("{INSTANCE}/backups/b1");
    let backup = s.ok(Method::POST, &format!("{INSTANCE}/backups?backupId=b1"), Some(json!({}))).await;
    assert_eq!(backup["name"], b1);
    assert_eq!(backup["state"], "READY");
    assert_eq!(backup["instance"], INSTANCE);
    assert_eq!(backup["encryptionInfo"]["encryptionType"], "CUSTOMER_MANAGED_ENCRYPTION");
    assert_eq!(backup["encryptionInfo"]["kmsKeyVersions"], json!([v1]), "{backup}");
    assert_eq!(backup["objectCount"], "2");
    assert_eq!(backup["sizeBytes"], (big.len() + 5).to_string());
    s.err(Method::POST, &format!("{INSTANCE}/backups?backupId=b1"), None, 409, "ALREADY_EXISTS").await;
    s.err(Method::POST, &format!("{INSTANCE}/backups"), None, 400, "INVALID_ARGUMENT").await;
    // Under another key, and service-managed (query-parameter spelling, as Spanner's).
    let other = s
        .ok(
            Method::POST,
            &format!("{INSTANCE}/backups?backupId=b2"),
            Some(json!({"encryptionConfig": {"kmsKeyName": KEY2}})),
        )
        .await;
    assert_eq!(other["kmsKey"], KEY2);
    assert_eq!(other["encryptionInfo"]["kmsKeyVersions"], json!([format!("{KEY2}/cryptoKeyVersions/1")]));
    let plain = s
        .ok(
            Method::POST,
            &format!("{INSTANCE}/backups?backupId=b3&encryptionConfig.encryptionType=GOOGLE_DEFAULT_ENCRYPTION"),
            None,
        )
        .await;
    assert_eq!(plain["encryptionInfo"]["encryptionType"], "GOOGLE_DEFAULT_ENCRYPTION");
    assert!(plain.get("kmsKey").is_none(), "{plain}");
    let msg = s
        .err(
            Method::POST,
            &format!("{INSTANCE}/backups?backupId=b4"),
            Some(json!({"encryptionConfig": {"encryptionType": "CUSTOMER_MANAGED_ENCRYPTION"}})),
            400,
            "INVALID_ARGUMENT",
        )
        .await;
    assert!(msg.contains("kmsKeyName is required"), "{msg}");

    // Rotate, re-encrypt the source: the backup still shows (and is protected by) v1 only.
    s.ok(Method::POST, &format!("{KEY}/cryptoKeyVersions"), Some(json!({}))).await;
    s.ok(Method::POST, &format!("{KEY}:updatePrimaryVersion"), Some(json!({"cryptoKeyVersionId": "2"}))).await;
    let inst = s.ok(Method::POST, &format!("{INSTANCE}:reencrypt"), Some(json!({}))).await;
    assert_eq!(inst["encryptionInfo"]["kmsKeyVersions"], json!([format!("{KEY}/cryptoKeyVersions/2")]));
    assert_eq!(s.ok(Method::GET, &b1, None).await["encryptionInfo"]["kmsKeyVersions"], json!([v1]));
    let listed = s.ok(Method::GET, &format!("{INSTANCE}/backups"), None).await;
    let names: Vec<&str> = listed["backups"].as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(names, [b1.as_str(), &format!("{INSTANCE}/backups/b2"), &format!("{INSTANCE}/backups/b3")]);

    // Restore with the backup's key (the key's primary now, v2, wraps the new KEK) ...
    let restored =
        s.ok(Method::POST, &format!("{LOC}/instances:restore"), Some(json!({"instanceId": "r1", "backup": b1}))).await;
    assert_eq!(restored["kmsKey"], KEY, "{restored}");
    let r1 = format!("{LOC}/instances/r1");
    assert_eq!(get_media(&s, &r1, "big").await.unwrap(), big);
    assert_eq!(get_media(&s, &r1, "dir/small").await.unwrap(), b"small");
    let meta = s.ok(Method::GET, &format!("{r1}/objects/big"), None).await;
    assert_eq!(meta["contentType"], "application/x-test");
    // ... or with another key; restoring onto an existing name is refused.
    let restored = s
        .ok(
            Method::POST,
            &format!("{LOC}/instances:restore"),
            Some(json!({"instanceId": "r2", "backup": b1, "encryptionConfig": {"encryptionType": "CUSTOMER_MANAGED_ENCRYPTION", "kmsKeyName": KEY2}})),
        )
        .await;
    assert_eq!(restored["kmsKey"], KEY2);
    assert_eq!(get_media(&s, &format!("{LOC}/instances/r2"), "big").await.unwrap(), big);
    let body = json!({"instanceId": "r1", "backup": b1});
    s.err(Method::POST, &format!("{LOC}/instances:restore"), Some(body), 409, "ALREADY_EXISTS").await;
    let body = json!({"instanceId": "r9", "backup": format!("{INSTANCE}/backups/nope")});
    s.err(Method::POST, &format!("{LOC}/instances:restore"), Some(body), 404, "NOT_FOUND").await;

    // [K12] Backups count among what the key protects.
    let summary = s.ok(Method::GET, &format!("{KEY}/protectedResourcesSummary"), None).await;
    assert_eq!(summary["resourceTypes"]["store.keyhold.dev/Backup"], "1", "{summary}");

    // v1 disabled: the backup cannot be restored, and says why; enabled again: it can.
    set_version_state(&s, 1, "DISABLED").await;
    let body = json!({"instanceId": "r3", "backup": b1});
    let msg =
        s.err(Method::POST, &format!("{LOC}/instances:restore"), Some(body.clone()), 400, "FAILED_PRECONDITION").await;
    assert!(msg.contains("cannot be restored") && msg.contains(&v1), "{msg}");
    s.err(Method::GET, &format!("{LOC}/instances/r3"), None, 404, "NOT_FOUND").await;
    set_version_state(&s, 1, "ENABLED").await;
    s.ok(Method::POST, &format!("{LOC}/instances:restore"), Some(body)).await;

    // v1 destroyed (after its schedule): the backup is gone for good; the source still works.
    s.ok(Method::POST, &format!("{KEY}/cryptoKeyVersions/1:destroy"), None).await;
    // Past the 1 s schedule on the KMS's manual clock, instead of sleeping through it.
    clock.advance(keyhold_api::wire::ProtoDuration::from_secs(2));
    assert_eq!(s.kms.run_due_work().await.unwrap().destroyed, 1);
    let body = json!({"instanceId": "r4", "backup": b1});
    let msg = s.err(Method::POST, &format!("{LOC}/instances:restore"), Some(body), 400, "FAILED_PRECONDITION").await;
    assert!(msg.contains("cannot be restored"), "{msg}");
    assert_eq!(get_media(&s, INSTANCE, "big").await.unwrap(), big, "the re-encrypted source");
    // The backup under the other key is unaffected.
    let body = json!({"instanceId": "r5", "backup": format!("{INSTANCE}/backups/b2")});
    s.ok(Method::POST, &format!("{LOC}/instances:restore"), Some(body)).await;
    assert_eq!(get_media(&s, &format!("{LOC}/instances/r5"), "dir/small").await.unwrap(), b"small");

    // Deleting a backup works whatever its key's state; it is gone after.
    s.ok(Method::DELETE, &b1, None).await;
    s.err(Method::GET, &b1, None, 404, "NOT_FOUND").await;
    let summary = s.ok(Method::GET, &format!("{KEY}/protectedResourcesSummary"), None).await;
    assert!(summary["resourceTypes"].get("store.keyhold.dev/Backup").is_none(), "{summary}");
}

#[tokio::test]
async fn backups_and_restores_sqlite() {
    backups_and_restores(Backend::Sqlite).await;
}

#[tokio::test]
async fn backups_and_restores_postgres() {
    backups_and_restores(Backend::Postgres).await;
}

/// [C8] A backup taken while writers keep overwriting objects shows one instant: no object is
/// torn (every chunk of it from the same write), and across objects the rounds are those of a
/// single moment of the writer's sequence.
async fn backups_under_concurrent_writes(backend: Backend) {
    const OBJECTS: usize = 5;
    let s = std::sync::Arc::new(start(backend, KmsConfig::default()).await);
    cmek_instance(&s).await;
    // Object i in round r: 1.5 MiB (two chunks) of the byte (r * 7 + i).
    let content = |round: usize, i: usize| vec![(round * 7 + i) as u8; 1536 * 1024];
    for i in 0..OBJECTS {
        assert_eq!(put(&s, INSTANCE, &format!("o{i}"), content(0, i)).await.0, 200);
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (s, stop) = (s.clone(), stop.clone());
        tokio::spawn(async move {
            let mut round = 1;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for i in 0..OBJECTS {
                    assert_eq!(put(&s, INSTANCE, &format!("o{i}"), content(round, i)).await.0, 200);
                }
                round += 1;
            }
            round
        })
    };
    for b in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        s.ok(Method::POST, &format!("{INSTANCE}/backups?backupId=c{b}"), None).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds_written = writer.await.unwrap();
    assert!(rounds_written > 2, "the writer ran during the backups ({rounds_written} rounds)");
    for b in 0..4 {
        let body = json!({"instanceId": format!("c{b}"), "backup": format!("{INSTANCE}/backups/c{b}")});
        s.ok(Method::POST, &format!("{LOC}/instances:restore"), Some(body)).await;
        let mut rounds = Vec::new();
        for i in 0..OBJECTS {
            let data = get_media(&s, &format!("{LOC}/instances/c{b}"), &format!("o{i}")).await.unwrap();
            assert_eq!(data.len(), 1536 * 1024);
            let first = data[0];
            assert!(data.iter().all(|x| *x == first), "backup c{b}: object o{i} is torn");
            rounds.push((first as usize - i) / 7);
        }
        // The writer goes o0..o4 in each round: a snapshot sees a prefix at round r, the rest at r-1.
        assert!(
            rounds.windows(2).all(|w| w[0] >= w[1]) && rounds[0] - rounds[OBJECTS - 1] <= 1,
            "backup c{b}: {rounds:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_under_concurrent_writes_sqlite() {
    backups_under_concurrent_writes(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_under_concurrent_writes_postgres() {
    backups_under_concurrent_writes(Backend::Postgres).await;
}

/// [C9] Clones keep their source's key; [C10] replicas inherit the key in the primary's
/// location, need their own elsewhere, follow the primary, are read-only, and are suspended
/// alone when their own key is disabled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_and_replicas() {
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    let email = cmek_instance(&s).await;
    second_key(&s, &email).await;
    assert_eq!(put(&s, INSTANCE, "a", b"first".to_vec()).await.0, 200);

    // Clone: same key; another key is refused with the way to get one.
    let clone =
        s.ok(Method::POST, &format!("{INSTANCE}:clone"), Some(json!({"destinationInstanceId": "db1-copy"}))).await;
    assert_eq!(clone["kmsKey"], KEY);
    assert_eq!(get_media(&s, &format!("{LOC}/instances/db1-copy"), "a").await.unwrap(), b"first");
    let body = json!({"destinationInstanceId": "db1-other", "kmsKey": KEY2});
    let msg = s.err(Method::POST, &format!("{INSTANCE}:clone"), Some(body), 400, "FAILED_PRECONDITION").await;
    assert!(msg.contains("A clone keeps its source's encryption") && msg.contains("restore"), "{msg}");
    s.err(Method::GET, &format!("{LOC}/instances/db1-other"), None, 404, "NOT_FOUND").await;

    // A replica in the same location inherits the key; another key is refused.
    let body = json!({"replicaOf": INSTANCE, "kmsKey": KEY2});
    let msg =
        s.err(Method::POST, &format!("{LOC}/instances?instanceId=rep"), Some(body), 400, "FAILED_PRECONDITION").await;
    assert!(msg.contains("primary's key"), "{msg}");
    let rep =
        s.ok(Method::POST, &format!("{LOC}/instances?instanceId=rep"), Some(json!({"replicaOf": INSTANCE}))).await;
    assert_eq!(rep["kmsKey"], KEY);
    assert_eq!(rep["replicaOf"], INSTANCE);
    let rep_name = format!("{LOC}/instances/rep");
    until(|| async { get_media(&s, &rep_name, "a").await.is_ok_and(|d| d == b"first") }).await;
    assert_eq!(s.ok(Method::GET, INSTANCE, None).await["replicaNames"], json!([rep_name]));

    // It follows writes and deletes, and refuses its own.
    assert_eq!(put(&s, INSTANCE, "a", b"second".to_vec()).await.0, 200);
    assert_eq!(put(&s, INSTANCE, "b", random(1_500_000)).await.0, 200);
    until(|| async { get_media(&s, &rep_name, "a").await.is_ok_and(|d| d == b"second") }).await;
    until(|| async { get_media(&s, &rep_name, "b").await.is_ok() }).await;
    s.ok(Method::DELETE, &format!("{INSTANCE}/objects/b"), None).await;
    until(|| async { matches!(get_media(&s, &rep_name, "b").await, Err((404, _))) }).await;
    let (status, body) = put(&s, &rep_name, "x", b"no".to_vec()).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("read replica"), "{body}");
    s.err(Method::DELETE, &format!("{rep_name}/objects/a"), None, 400, "FAILED_PRECONDITION").await;
    let msg = s.err(Method::DELETE, INSTANCE, None, 400, "FAILED_PRECONDITION").await;
    assert!(msg.contains("read replicas"), "{msg}");

    // In another location: a key there is required.
    let east = "projects/p/locations/us-east1";
    let msg = s
        .err(
            Method::POST,
            &format!("{east}/instances?instanceId=far"),
            Some(json!({"replicaOf": INSTANCE})),
            400,
            "FAILED_PRECONDITION",
        )
        .await;
    assert!(msg.contains("us-east1") && msg.contains("kmsKey"), "{msg}");
    let east_key = format!("{east}/keyRings/re/cryptoKeys/ke");
    s.ok(Method::POST, &format!("{east}/keyRings?keyRingId=re"), Some(json!({}))).await;
    s.ok(
        Method::POST,
        &format!("{east}/keyRings/re/cryptoKeys?cryptoKeyId=ke"),
        Some(json!({"purpose": "ENCRYPT_DECRYPT"})),
    )
    .await;
    let policy = json!({"bindings": [{"role": ENCRYPTER, "members": [format!("serviceAccount:{email}")]}]});
    s.ok(Method::POST, &format!("{east_key}:setIamPolicy"), Some(json!({ "policy": policy }))).await;
    let far = s
        .ok(
            Method::POST,
            &format!("{east}/instances?instanceId=far"),
            Some(json!({"replicaOf": INSTANCE, "kmsKey": east_key})),
        )
        .await;
    assert_eq!(far["kmsKey"], east_key.as_str());
    let far_name = format!("{east}/instances/far");
    until(|| async { get_media(&s, &far_name, "a").await.is_ok_and(|d| d == b"second") }).await;
    let found = s.ok(Method::GET, &format!("projects/p/protectedResources:search?cryptoKey={east_key}"), None).await;
    assert_eq!(found["protectedResources"][0]["resourceType"], "store.keyhold.dev/Replica", "{found}");

    // Its own key disabled: the far replica alone is suspended; the primary and the other
    // replica serve on.
    s.ok(
        Method::PATCH,
        &format!("{east_key}/cryptoKeyVersions/1?updateMask=state"),
        Some(json!({"state": "DISABLED"})),
    )
    .await;
    until(|| async { matches!(get_media(&s, &far_name, "a").await, Err((400, b)) if b.contains(INACCESSIBLE)) }).await;
    assert_eq!(s.ok(Method::GET, &far_name, None).await["state"], "SUSPENDED");
    assert_eq!(get_media(&s, INSTANCE, "a").await.unwrap(), b"second");
    assert_eq!(get_media(&s, &rep_name, "a").await.unwrap(), b"second");
    assert_eq!(s.ok(Method::GET, INSTANCE, None).await["state"], "READY");
    // Re-enabled, it catches up with what it missed.
    assert_eq!(put(&s, INSTANCE, "c", b"later".to_vec()).await.0, 200);
    s.ok(Method::PATCH, &format!("{east_key}/cryptoKeyVersions/1?updateMask=state"), Some(json!({"state": "ENABLED"})))
        .await;
    until(|| async { get_media(&s, &far_name, "c").await.is_ok_and(|d| d == b"later") }).await;
    // Replicas deleted, the primary can go.
    s.ok(Method::DELETE, &far_name, None).await;
    s.ok(Method::DELETE, &rep_name, None).await;
    s.ok(Method::DELETE, INSTANCE, None).await;
}

/// [C9] Export under key A, import under key B; a plaintext export only when asked, flagged in
/// the audit log; archives only inside the export directory, never overwritten.
#[tokio::test]
async fn export_and_import() {
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    let email = cmek_instance(&s).await;
    second_key(&s, &email).await;
    let marker = b"EXPORT-KNOWN-PLAINTEXT-".repeat(60_000);
    assert_eq!(put(&s, INSTANCE, "m", marker.clone()).await.0, 200);
    assert_eq!(put(&s, INSTANCE, "empty", Vec::new()).await.0, 200);

    let export = s.ok(Method::POST, &format!("{INSTANCE}:export"), Some(json!({"destination": "a.archive"}))).await;
    assert_eq!(export["objectCount"], "2", "{export}");
    assert_eq!(export["encryptionInfo"]["kmsKeyVersions"], json!([format!("{KEY}/cryptoKeyVersions/1")]));
    let file = std::path::PathBuf::from(export["destination"].as_str().unwrap());
    let bytes = std::fs::read(&file).unwrap();
    assert!(bytes.starts_with(b"keyhold-archive/v1\n"));
    assert!(!bytes.windows(23).any(|w| w == &marker[..23]), "plaintext in an encrypted archive");
    s.err(
        Method::POST,
        &format!("{INSTANCE}:export"),
        Some(json!({"destination": "a.archive"})),
        409,
        "ALREADY_EXISTS",
    )
    .await;
    for bad in ["../escape.archive", "/etc/keyhold.archive", ""] {
        s.err(Method::POST, &format!("{INSTANCE}:export"), Some(json!({"destination": bad})), 400, "INVALID_ARGUMENT")
            .await;
    }

    // Import under key B.
    let imported = s
        .ok(
            Method::POST,
            &format!("{LOC}/instances:import"),
            Some(json!({"instanceId": "imp", "source": "a.archive", "kmsKey": KEY2})),
        )
        .await;
    assert_eq!(imported["kmsKey"], KEY2);
    let imp = format!("{LOC}/instances/imp");
    assert_eq!(get_media(&s, &imp, "m").await.unwrap(), marker);
    assert_eq!(get_media(&s, &imp, "empty").await.unwrap(), b"");
    // A tampered archive is refused, and leaves no instance behind.
    let mut tampered = bytes.clone();
    let n = tampered.len();
    tampered[n / 2] ^= 1;
    std::fs::write(file.with_file_name("t.archive"), &tampered).unwrap();
    let body = json!({"instanceId": "bad", "source": "t.archive"});
    let (status, answer) = s.call(Method::POST, &format!("{LOC}/instances:import"), Some(body)).await;
    // Exactly 400: a bad archive is the caller's input, never a server error (a 500 is a bug).
    assert_eq!(status, 400, "tampered archive: {answer}");
    assert_eq!(answer["error"]["status"], "FAILED_PRECONDITION", "tampered archive: {answer}");
    s.err(Method::GET, &format!("{LOC}/instances/bad"), None, 404, "NOT_FOUND").await;

    // [K12] The export is a protected resource of key A.
    let found = s.ok(Method::GET, &format!("projects/p/protectedResources:search?cryptoKey={KEY}"), None).await;
    let types: Vec<&str> =
        found["protectedResources"].as_array().unwrap().iter().map(|r| r["resourceType"].as_str().unwrap()).collect();
    assert!(types.contains(&"store.keyhold.dev/Export"), "{found}");

    // Plaintext: refused unless asked; when asked, the audit entry says so.
    s.ok(Method::POST, &format!("{LOC}/instances?instanceId=plain"), Some(json!({}))).await;
    let plain = format!("{LOC}/instances/plain");
    let msg = s
        .err(
            Method::POST,
            &format!("{plain}:export"),
            Some(json!({"destination": "p.archive"})),
            400,
            "FAILED_PRECONDITION",
        )
        .await;
    assert!(msg.contains("allowPlaintext"), "{msg}");
    let export = s
        .ok(
            Method::POST,
            &format!("{INSTANCE}:export"),
            Some(json!({"destination": "sub/p.archive", "allowPlaintext": true})),
        )
        .await;
    assert_eq!(export["encryptionInfo"]["encryptionType"], "NO_ENCRYPTION");
    let bytes = std::fs::read(export["destination"].as_str().unwrap()).unwrap();
    assert!(bytes.windows(23).any(|w| w == &marker[..23]), "a plaintext archive holds the plaintext");
    let entries = s.ok(Method::GET, "projects/p/auditLogs?pageSize=100&methodName=ExportInstance", None).await;
    let warned: Vec<&Value> = entries["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["protoPayload"]["metadata"]["warning"].as_str().is_some_and(|w| w.contains("Plaintext export")))
        .collect();
    // The export ran as an operation: its first entry (when it started) and its last (its
    // outcome) both carry the warning.
    assert_eq!(warned.len(), 2, "{entries}");
    assert_eq!(
        (warned[0]["operation"]["first"].as_bool(), warned[1]["operation"]["last"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(warned[0]["operation"]["id"], warned[1]["operation"]["id"]);
    assert_eq!(warned[0]["severity"], "WARNING");
    s.ok(
        Method::POST,
        &format!("{LOC}/instances:import"),
        Some(json!({"instanceId": "fromplain", "source": "sub/p.archive"})),
    )
    .await;
    assert_eq!(get_media(&s, &format!("{LOC}/instances/fromplain"), "m").await.unwrap(), marker);
}

/// [C11] Crypto-shredding of copies: once every version protecting an instance, its backup and
/// its export is destroyed, none can be read again: restore and import fail, and no file holds
/// the plaintext or any KEK that could open it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroying_the_key_shreds_backups_and_exports() {
    let config = quick_destroy();
    let clock = Arc::new(keyhold_kms::clock::ManualClock::default());
    let s =
        common::start_with_clock(Backend::Sqlite, config, keyhold_crypto::KeyBytes::generate().unwrap(), clock.clone())
            .await;
    shreddable_key(&s).await;
    s.ok(Method::POST, &format!("{LOC}/instances?instanceId=db1"), Some(json!({"kmsKey": KEY}))).await;
    let marker = b"SHRED-COPIES-KNOWN-PLAINTEXT-".repeat(40_000);
    assert_eq!(put(&s, INSTANCE, "secret", marker.clone()).await.0, 200);
    let b1 = format!("{INSTANCE}/backups/b1");
    s.ok(Method::POST, &format!("{INSTANCE}/backups?backupId=b1"), None).await;
    let export = s.ok(Method::POST, &format!("{INSTANCE}:export"), Some(json!({"destination": "s.archive"}))).await;
    // A second version, so that versions 1 and 2 both protect something.
    s.ok(Method::POST, &format!("{KEY}/cryptoKeyVersions"), Some(json!({}))).await;
    s.ok(Method::POST, &format!("{KEY}:updatePrimaryVersion"), Some(json!({"cryptoKeyVersionId": "2"}))).await;
    s.ok(Method::POST, &format!("{INSTANCE}:clone"), Some(json!({"destinationInstanceId": "cl"}))).await;

    // The KEKs that could open the copies today.
    let db = rusqlite::Connection::open(&s.db_file).unwrap();
    let b64 = keyhold_api::wire::encode_base64;
    let mut keks = Vec::new();
    for resource in [INSTANCE.to_string(), b1.clone(), format!("{LOC}/instances/cl")] {
        let wrapped: Vec<u8> =
            db.query_row("SELECT wrapped FROM store_keks WHERE instance = ?1", [&resource], |r| r.get(0)).unwrap();
        let req =
            json!({"ciphertext": b64(&wrapped), "additionalAuthenticatedData": b64(&keyhold_cmek::kek_aad(&resource))});
        let kek = s.ok(Method::POST, &format!("{KEY}:decrypt"), Some(req)).await;
        keks.push(keyhold_api::wire::decode_base64(kek["plaintext"].as_str().unwrap()).unwrap());
    }
    let archive = std::fs::read(export["destination"].as_str().unwrap()).unwrap();
    let header_end = archive[19..].iter().position(|b| *b == b'\n').unwrap() + 19;
    let header: Value = serde_json::from_slice(&archive[19..header_end]).unwrap();
    let req = json!({
        "ciphertext": header["wrappedKek"],
        "additionalAuthenticatedData": b64(&keyhold_cmek::kek_aad(&format!("{INSTANCE}/exports/{}", header["id"].as_str().unwrap()))),
    });
    let kek = s.ok(Method::POST, &format!("{KEY}:decrypt"), Some(req)).await;
    keks.push(keyhold_api::wire::decode_base64(kek["plaintext"].as_str().unwrap()).unwrap());
    drop(db);

    // Destroy both versions; let the destruction happen.
    for v in [1, 2] {
        s.ok(Method::POST, &format!("{KEY}/cryptoKeyVersions/{v}:destroy"), None).await;
    }
    clock.advance(keyhold_api::wire::ProtoDuration::from_secs(2));
    assert_eq!(s.kms.run_due_work().await.unwrap().destroyed, 2);

    // No copy can be read again.
    let body = json!({"instanceId": "back", "backup": b1});
    s.err(Method::POST, &format!("{LOC}/instances:restore"), Some(body), 400, "FAILED_PRECONDITION").await;
    let body = json!({"instanceId": "imp", "source": "s.archive"});
    s.err(Method::POST, &format!("{LOC}/instances:import"), Some(body), 400, "FAILED_PRECONDITION").await;
    until(|| refused(&s, "secret")).await;
    until(|| async {
        matches!(get_media(&s, &format!("{LOC}/instances/cl"), "secret").await, Err((400, b)) if b.contains(INACCESSIBLE))
    })
    .await;

    // No file (database, WAL, exports) holds the plaintext or a KEK.
    let mut scanned = 0;
    for path in files_under(s.db_file.parent().unwrap()) {
        let bytes = std::fs::read(&path).unwrap();
        scanned += bytes.len();
        assert!(!bytes.windows(29).any(|w| w == &marker[..29]), "plaintext in {}", path.display());
        for kek in &keks {
            assert!(!bytes.windows(32).any(|w| w == kek.as_slice()), "a KEK in {}", path.display());
        }
    }
    assert!(scanned > 3 * marker.len(), "the scan read the database and the archive ({scanned} bytes)");
}

/// Hardening review: concurrent `:reencrypt`s of one instance, on one node and (on
/// PostgreSQL) across two nodes, never lose data: each answers 200 or 409 `ABORTED` (retry),
/// never 500, and every object reads back byte-exact afterwards (the old race deleted a KEK
/// another reencrypt was still sealing under, or reused its ID).
async fn concurrent_reencrypts(nodes: Vec<Arc<Server>>) {
    const OBJECTS: usize = 3;
    let s = nodes[0].clone();
    let inst = s.ok(Method::POST, &format!("{LOC}/instances?instanceId=db1"), Some(json!({}))).await;
    assert_eq!(inst["state"], "READY", "{inst}");
    let contents: Vec<Vec<u8>> = (0..OBJECTS).map(|_| random(300 * 1024)).collect();
    for (i, c) in contents.iter().enumerate() {
        assert_eq!(put(&s, INSTANCE, &format!("o{i}"), c.clone()).await.0, 200);
    }
    let mut tasks = Vec::new();
    for t in 0..6 {
        let node = nodes[t % nodes.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for _ in 0..8 {
                answers.push(node.call(Method::POST, &format!("{INSTANCE}:reencrypt"), Some(json!({}))).await);
            }
            answers
        }));
    }
    let mut succeeded = 0;
    for t in tasks {
        for (status, body) in t.await.unwrap() {
            match status {
                200 => succeeded += 1,
                409 => assert_eq!(body["error"]["status"], "ABORTED", "{body}"),
                _ => panic!("a concurrent :reencrypt answered {status}: {body}"),
            }
        }
    }
    assert!(succeeded > 0, "no :reencrypt succeeded");
    for node in &nodes {
        for (i, c) in contents.iter().enumerate() {
            let data = get_media(node, INSTANCE, &format!("o{i}")).await;
            assert!(data.as_ref().is_ok_and(|d| d == c), "object o{i} after concurrent reencrypts: {:?}", data.err());
        }
    }
    // And once more, alone: the instance is still fully usable.
    s.ok(Method::POST, &format!("{INSTANCE}:reencrypt"), Some(json!({}))).await;
    for (i, c) in contents.iter().enumerate() {
        assert_eq!(&get_media(&s, INSTANCE, &format!("o{i}")).await.unwrap(), c);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reencrypts_never_lose_data_sqlite() {
    concurrent_reencrypts(vec![Arc::new(start(Backend::Sqlite, KmsConfig::default()).await)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reencrypts_never_lose_data_postgres() {
    let (a, b) = common::two_postgres_nodes().await;
    concurrent_reencrypts(vec![Arc::new(a), Arc::new(b)]).await;
}

/// Hardening review: reading an object while a writer keeps overwriting it is never data
/// loss and never a 500: a read answers one whole written version (200), `409 ABORTED` when the
/// generation it started on was replaced before the answer began, or a cut-off stream when it
/// was replaced during the download (never completed with wrong data).
async fn reads_during_overwrites(backend: Backend) {
    const SIZE: usize = 1536 * 1024; // two chunks
    let s = Arc::new(start(backend, KmsConfig::default()).await);
    let inst = s.ok(Method::POST, &format!("{LOC}/instances?instanceId=db1"), Some(json!({}))).await;
    assert_eq!(inst["state"], "READY", "{inst}");
    assert_eq!(put(&s, INSTANCE, "o", vec![0u8; SIZE]).await.0, 200);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (s, stop) = (s.clone(), stop.clone());
        tokio::spawn(async move {
            let mut round = 1usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                assert_eq!(put(&s, INSTANCE, "o", vec![round as u8; SIZE]).await.0, 200);
                round += 1;
            }
            round
        })
    };
    let (mut whole, mut aborted, mut cut) = (0, 0, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while whole < 20 || aborted + cut == 0 {
        if Instant::now() > deadline {
            break;
        }
        match get_media(&s, INSTANCE, "o").await {
            Ok(data) => {
                assert_eq!(data.len(), SIZE);
                assert!(data.iter().all(|b| *b == data[0]), "a read mixed two versions");
                whole += 1;
            }
            Err((409, body)) => {
                assert!(body.contains("ABORTED") && body.contains("read it again"), "{body}");
                aborted += 1;
            }
            Err((0, _)) => cut += 1,
            Err((status, body)) => panic!("a read during overwrites answered {status}: {body}"),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds = writer.await.unwrap();
    eprintln!("{rounds} writes; reads: {whole} whole, {aborted} aborted, {cut} cut");
    assert!(whole > 0, "no read completed");
    assert!(aborted + cut > 0, "no read overlapped an overwrite (the race was not exercised)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_during_overwrites_are_never_data_loss_sqlite() {
    reads_during_overwrites(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_during_overwrites_are_never_data_loss_postgres() {
    reads_during_overwrites(Backend::Postgres).await;
}
