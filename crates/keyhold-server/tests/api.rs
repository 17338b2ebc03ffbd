//! The Cloud KMS v1 REST surface over real HTTP on loopback, against a real SQLite file and a
//! real PostgreSQL server (started by `scripts/test.sh`, URL in `KEYHOLD_TEST_POSTGRES_URL`).

mod common;

use common::*;
use keyhold_kms::KmsConfig;
use reqwest::Method;
use serde_json::json;
use std::sync::Arc;

const LOC: &str = "projects/p/locations/us-central1";
const RING: &str = "projects/p/locations/us-central1/keyRings/r";
const KEY: &str = "projects/p/locations/us-central1/keyRings/r/cryptoKeys/k";

fn b64(b: &[u8]) -> String {
    keyhold_api::wire::encode_base64(b)
}

async fn with_key(s: &Server) {
    s.ok(Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), None).await;
    s.ok(Method::POST, &format!("{RING}/cryptoKeys?cryptoKeyId=k"), Some(json!({"purpose": "ENCRYPT_DECRYPT"}))).await;
}

async fn key_rings_and_keys(backend: Backend) {
    let s = start(backend, KmsConfig::default()).await;
    // [K2]: the seed's spelling (key_ring_id, empty body) and the camelCase one.
    let ring = s.ok(Method::POST, &format!("{LOC}/keyRings?key_ring_id=r"), None).await;
    assert_eq!(ring["name"], RING);
    assert!(ring["createTime"].as_str().unwrap().ends_with('Z'));
    let m = s.err(Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), Some(json!({})), 409, "ALREADY_EXISTS").await;
    assert_eq!(m, format!("KeyRing {RING} already exists."));
    s.err(Method::POST, &format!("{LOC}/keyRings?keyRingId=bad.id"), None, 400, "INVALID_ARGUMENT").await;
    s.err(Method::POST, &format!("{LOC}/keyRings"), None, 400, "INVALID_ARGUMENT").await;
    s.err(Method::POST, "projects/p/locations/mars-north1/keyRings?keyRingId=x", None, 400, "INVALID_ARGUMENT").await;
    let m = s.err(Method::GET, &format!("{LOC}/keyRings/nope"), None, 404, "NOT_FOUND").await;
    assert_eq!(m, format!("KeyRing {LOC}/keyRings/nope not found."));
    assert_eq!(s.ok(Method::GET, RING, None).await, ring);

    // [K3]: field for field the seed's response.
    let key = s
        .ok(Method::POST, &format!("{RING}/cryptoKeys?crypto_key_id=k"), Some(json!({"purpose": "ENCRYPT_DECRYPT"})))
        .await;
    assert_eq!(key["name"], KEY);
    assert_eq!(key["purpose"], "ENCRYPT_DECRYPT");
    assert_eq!(key["destroyScheduledDuration"], "86400s");
    assert_eq!(
        key["versionTemplate"],
        json!({"protectionLevel": "SOFTWARE", "algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION"})
    );
    let p = &key["primary"];
    assert_eq!(p["name"], format!("{KEY}/cryptoKeyVersions/1"));
    assert_eq!(p["state"], "ENABLED");
    assert_eq!(p["protectionLevel"], "SOFTWARE");
    assert_eq!(p["algorithm"], "GOOGLE_SYMMETRIC_ENCRYPTION");
    assert!(p["generateTime"].is_string() && p["createTime"].is_string());
    let m = s
        .err(
            Method::POST,
            &format!("{RING}/cryptoKeys?cryptoKeyId=k"),
            Some(json!({"purpose": 1})),
            409,
            "ALREADY_EXISTS",
        )
        .await;
    assert_eq!(m, format!("CryptoKey {KEY} already exists."));
    s.err(Method::POST, &format!("{RING}/cryptoKeys?cryptoKeyId=k2"), Some(json!({})), 400, "INVALID_ARGUMENT").await;
    s.err(
        Method::POST,
        &format!("{RING}/cryptoKeys?cryptoKeyId=k2"),
        Some(json!({"purpose": "ENCRYPT_DECRYPT", "bogus": 1})),
        400,
        "INVALID_ARGUMENT",
    )
    .await;
    s.err(
        Method::POST,
        &format!("{RING}/cryptoKeys?cryptoKeyId=k2"),
        Some(json!({"purpose": "ENCRYPT_DECRYPT", "destroyScheduledDuration": "3600s"})),
        400,
        "INVALID_ARGUMENT",
    )
    .await;
    s.err(
        Method::POST,
        &format!("{LOC}/keyRings/nope/cryptoKeys?cryptoKeyId=k2"),
        Some(json!({"purpose": 1})),
        404,
        "NOT_FOUND",
    )
    .await;
    s.err(
        Method::POST,
        &format!("{RING}/cryptoKeys?cryptoKeyId=h"),
        Some(json!({"purpose": 1, "versionTemplate": {"protectionLevel": "HSM"}})),
        501,
        "UNIMPLEMENTED",
    )
    .await;
    // Integer enums (newer Google clients) and echo of labels, rotation, skipInitialVersionCreation.
    let k2 = s
        .ok(
            Method::POST,
            &format!(
                "{RING}/cryptoKeys?cryptoKeyId=k2&skipInitialVersionCreation=true&%24alt=json%3Benum-encoding%3Dint"
            ),
            Some(json!({"purpose": 1, "labels": {"team": "payments"}, "rotationPeriod": "2592000s",
                        "nextRotationTime": "2030-01-01T00:00:00Z", "destroyScheduledDuration": "172800s"})),
        )
        .await;
    assert!(k2.get("primary").is_none());
    assert_eq!(k2["labels"], json!({"team": "payments"}));
    assert_eq!(k2["rotationPeriod"], "2592000s");
    assert_eq!(k2["nextRotationTime"], "2030-01-01T00:00:00.000000000Z");
    assert_eq!(k2["destroyScheduledDuration"], "172800s");
    s.err(
        Method::POST,
        &format!("{RING}/cryptoKeys?cryptoKeyId=k3"),
        Some(json!({"purpose": 1, "rotationPeriod": "3600s", "nextRotationTime": "2030-01-01T00:00:00Z"})),
        400,
        "INVALID_ARGUMENT",
    )
    .await;
    s.err(
        Method::POST,
        &format!("{RING}/cryptoKeys?cryptoKeyId=k3"),
        Some(json!({"purpose": 1, "rotationPeriod": "86400s"})),
        400,
        "INVALID_ARGUMENT",
    )
    .await;
    let m = s
        .err(
            Method::POST,
            &format!("{RING}/cryptoKeys/k2:encrypt"),
            Some(json!({"plaintext": "aGk="})),
            400,
            "FAILED_PRECONDITION",
        )
        .await;
    assert!(m.contains("no primary"), "{m}");

    // Patch with updateMask.
    let patched = s
        .ok(
            Method::PATCH,
            &format!("{RING}/cryptoKeys/k2?updateMask=labels"),
            Some(json!({"labels": {"team": "billing", "env": "prod"}})),
        )
        .await;
    assert_eq!(patched["labels"], json!({"env": "prod", "team": "billing"}));
    s.err(Method::PATCH, &format!("{RING}/cryptoKeys/k2"), Some(json!({"labels": {}})), 400, "INVALID_ARGUMENT").await;
    s.err(
        Method::PATCH,
        &format!("{RING}/cryptoKeys/k2?updateMask=purpose"),
        Some(json!({"purpose": 6})),
        400,
        "INVALID_ARGUMENT",
    )
    .await;
    s.err(
        Method::PATCH,
        &format!("{RING}/cryptoKeys/k2?updateMask=labels"),
        Some(json!({"labels": {"Bad": "x"}})),
        400,
        "INVALID_ARGUMENT",
    )
    .await;
    let cleared = s
        .ok(
            Method::PATCH,
            &format!("{RING}/cryptoKeys/k2?update_mask=rotation_period,next_rotation_time"),
            Some(json!({})),
        )
        .await;
    assert!(cleared.get("rotationPeriod").is_none() && cleared.get("nextRotationTime").is_none());

    // Lists: paging, totalSize, filter, orderBy.
    for i in 0..5 {
        s.ok(
            Method::POST,
            &format!("{RING}/cryptoKeys?cryptoKeyId=p{i}"),
            Some(json!({"purpose": 1, "labels": {"n": format!("v{i}")}})),
        )
        .await;
    }
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let page = s.ok(Method::GET, &format!("{RING}/cryptoKeys?pageSize=3&pageToken={token}"), None).await;
        assert_eq!(page["totalSize"], 7);
        names.extend(page["cryptoKeys"].as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap().to_string()));
        match page["nextPageToken"].as_str() {
            Some(t) => token = t.to_string(),
            None => break,
        }
    }
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(names.len(), 7);
    assert_eq!(sorted.len(), 7);
    let f = s
        .ok(
            Method::GET,
            &format!("{RING}/cryptoKeys?filter=labels.n%3Dv3%20OR%20labels.team%3Dbilling&orderBy=name%20desc"),
            None,
        )
        .await;
    let got: Vec<&str> = f["cryptoKeys"].as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert_eq!(got, vec![format!("{RING}/cryptoKeys/p3"), format!("{RING}/cryptoKeys/k2")]);
    let f = s.ok(Method::GET, &format!("{RING}/cryptoKeys?filter=primary.state%3DENABLED"), None).await;
    assert_eq!(f["totalSize"], 6);
    s.err(Method::GET, &format!("{RING}/cryptoKeys?filter=(oops"), None, 400, "INVALID_ARGUMENT").await;
    s.err(Method::GET, &format!("{RING}/cryptoKeys?pageToken=garbage"), None, 400, "INVALID_ARGUMENT").await;
    s.err(Method::GET, &format!("{RING}/cryptoKeys?pageSize=-1"), None, 400, "INVALID_ARGUMENT").await;
    let rings = s.ok(Method::GET, &format!("{LOC}/keyRings"), None).await;
    assert_eq!(rings["keyRings"].as_array().unwrap().len(), 1);
    let locs = s.ok(Method::GET, "projects/p/locations", None).await;
    assert_eq!(locs["locations"].as_array().unwrap().len(), 9);
    assert_eq!(s.ok(Method::GET, LOC, None).await["locationId"], "us-central1");
    s.err(Method::GET, "projects/p/nothing", None, 404, "NOT_FOUND").await;
    let m = s.err(Method::POST, &format!("{LOC}/keyRings"), None, 400, "INVALID_ARGUMENT").await;
    assert_eq!(m, "The keyRingId query parameter is required.");
    assert_eq!(s.ok(Method::GET, &format!("{LOC}/retiredResources"), None).await, json!({}));
    s.err(Method::GET, &format!("{LOC}/ekmConnections"), None, 501, "UNIMPLEMENTED").await;
    // generateRandomBytes exists, checks its input, and needs an HSM (none configured here).
    let m = s.err(Method::POST, &format!("{LOC}:generateRandomBytes"), Some(json!({})), 400, "INVALID_ARGUMENT").await;
    assert!(m.contains("between 8 and 1024"), "{m}");
    let body = json!({"lengthBytes": 32, "protectionLevel": "SOFTWARE"});
    let m = s.err(Method::POST, &format!("{LOC}:generateRandomBytes"), Some(body), 400, "INVALID_ARGUMENT").await;
    assert_eq!(m, "protection_level must be HSM.");
    let body = json!({"lengthBytes": 32, "protectionLevel": "HSM"});
    let m = s.err(Method::POST, &format!("{LOC}:generateRandomBytes"), Some(body), 501, "UNIMPLEMENTED").await;
    assert!(m.contains("--pkcs11-module"), "{m}");
}

async fn crypto_and_versions(backend: Backend) {
    let config = KmsConfig {
        min_destroy_scheduled_duration: keyhold_api::wire::ProtoDuration::from_secs(1),
        ..Default::default()
    };
    let clock = std::sync::Arc::new(keyhold_kms::clock::ManualClock::default());
    let root = keyhold_crypto::KeyBytes::generate().unwrap();
    let s = common::start_with_clock(backend, config, root, clock.clone()).await;
    s.ok(Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), None).await;
    s.ok(
        Method::POST,
        &format!("{RING}/cryptoKeys?cryptoKeyId=k"),
        Some(json!({"purpose": "ENCRYPT_DECRYPT", "destroyScheduledDuration": "1s"})),
    )
    .await;
    let pt = b"the quick brown fox";
    let crc = keyhold_crypto::crc32c(pt).to_string();
    let enc = s
        .ok(Method::POST, &format!("{KEY}:encrypt"), Some(json!({"plaintext": b64(pt), "additionalAuthenticatedData": b64(b"ctx"), "plaintextCrc32c": crc, "additionalAuthenticatedDataCrc32c": keyhold_crypto::crc32c(b"ctx").to_string()})))
        .await;
    assert_eq!(enc["name"], format!("{KEY}/cryptoKeyVersions/1"));
    assert_eq!(enc["verifiedPlaintextCrc32c"], true);
    assert_eq!(enc["verifiedAdditionalAuthenticatedDataCrc32c"], true);
    assert_eq!(enc["protectionLevel"], "SOFTWARE");
    let ct = enc["ciphertext"].as_str().unwrap().to_string();
    let ct_bytes = keyhold_api::wire::decode_base64(&ct).unwrap();
    assert_eq!(enc["ciphertextCrc32c"], keyhold_crypto::crc32c(&ct_bytes).to_string());
    assert!(!ct_bytes.windows(pt.len()).any(|w| w == pt));
    let dec = s
        .ok(
            Method::POST,
            &format!("{KEY}:decrypt"),
            Some(json!({"ciphertext": ct, "additionalAuthenticatedData": b64(b"ctx")})),
        )
        .await;
    assert_eq!(dec["plaintext"], b64(pt));
    assert_eq!(dec["plaintextCrc32c"], crc);
    assert_eq!(dec["usedPrimary"], true);

    // [K5] failures: wrong AAD, tampering, foreign ciphertext, bad CRC, oversize.
    let msg = "Decryption failed: verify that 'name' refers to the correct CryptoKey.";
    assert_eq!(
        s.err(
            Method::POST,
            &format!("{KEY}:decrypt"),
            Some(json!({"ciphertext": ct, "additionalAuthenticatedData": b64(b"other")})),
            400,
            "INVALID_ARGUMENT"
        )
        .await,
        msg
    );
    assert_eq!(
        s.err(Method::POST, &format!("{KEY}:decrypt"), Some(json!({"ciphertext": ct})), 400, "INVALID_ARGUMENT").await,
        msg
    );
    let mut tampered = ct_bytes.clone();
    *tampered.last_mut().unwrap() ^= 1;
    assert_eq!(
        s.err(
            Method::POST,
            &format!("{KEY}:decrypt"),
            Some(json!({"ciphertext": b64(&tampered), "additionalAuthenticatedData": b64(b"ctx")})),
            400,
            "INVALID_ARGUMENT"
        )
        .await,
        msg
    );
    assert_eq!(
        s.err(
            Method::POST,
            &format!("{KEY}:decrypt"),
            Some(json!({"ciphertext": b64(b"short")})),
            400,
            "INVALID_ARGUMENT"
        )
        .await,
        msg
    );
    s.ok(Method::POST, &format!("{RING}/cryptoKeys?cryptoKeyId=other"), Some(json!({"purpose": 1}))).await;
    assert_eq!(
        s.err(
            Method::POST,
            &format!("{RING}/cryptoKeys/other:decrypt"),
            Some(json!({"ciphertext": ct, "additionalAuthenticatedData": b64(b"ctx")})),
            400,
            "INVALID_ARGUMENT"
        )
        .await,
        msg
    );
    let m = s
        .err(
            Method::POST,
            &format!("{KEY}:encrypt"),
            Some(json!({"plaintext": b64(pt), "plaintextCrc32c": "12345"})),
            400,
            "INVALID_ARGUMENT",
        )
        .await;
    assert!(m.contains("plaintext_crc32c"), "{m}");
    s.err(
        Method::POST,
        &format!("{KEY}:decrypt"),
        Some(json!({"ciphertext": ct, "ciphertextCrc32c": "1"})),
        400,
        "INVALID_ARGUMENT",
    )
    .await;
    s.err(
        Method::POST,
        &format!("{KEY}:encrypt"),
        Some(json!({"plaintext": b64(&vec![0u8; 64 * 1024 + 1])})),
        400,
        "INVALID_ARGUMENT",
    )
    .await;
    s.ok(Method::POST, &format!("{KEY}:encrypt"), Some(json!({"plaintext": b64(&vec![7u8; 64 * 1024])}))).await;
    s.err(Method::POST, &format!("{KEY}:encrypt"), Some(json!({"plaintext": "not base64!!"})), 400, "INVALID_ARGUMENT")
        .await;
    s.err(
        Method::POST,
        &format!("{KEY}:encrypt"),
        Some(json!({"plaintext": b64(pt), "plaintextCrc32c": "99999999999"})),
        400,
        "INVALID_ARGUMENT",
    )
    .await;
    s.err(
        Method::POST,
        &format!("{RING}/cryptoKeys/nope:encrypt"),
        Some(json!({"plaintext": "aGk="})),
        404,
        "NOT_FOUND",
    )
    .await;

    // [K6] rotation: a new version becomes primary; old ciphertexts still decrypt.
    let v2 = s.ok(Method::POST, &format!("{KEY}/cryptoKeyVersions"), Some(json!({}))).await;
    assert_eq!(v2["name"], format!("{KEY}/cryptoKeyVersions/2"));
    assert_eq!(v2["state"], "ENABLED");
    let key =
        s.ok(Method::POST, &format!("{KEY}:updatePrimaryVersion"), Some(json!({"cryptoKeyVersionId": "2"}))).await;
    assert_eq!(key["primary"]["name"], format!("{KEY}/cryptoKeyVersions/2"));
    let enc2 = s.ok(Method::POST, &format!("{KEY}:encrypt"), Some(json!({"plaintext": b64(pt)}))).await;
    assert_eq!(enc2["name"], format!("{KEY}/cryptoKeyVersions/2"));
    let dec = s
        .ok(
            Method::POST,
            &format!("{KEY}:decrypt"),
            Some(json!({"ciphertext": ct, "additionalAuthenticatedData": b64(b"ctx")})),
        )
        .await;
    assert!(dec.get("usedPrimary").is_none(), "usedPrimary is omitted when false: {dec}");
    let enc1 =
        s.ok(Method::POST, &format!("{KEY}/cryptoKeyVersions/1:encrypt"), Some(json!({"plaintext": b64(pt)}))).await;
    assert_eq!(enc1["name"], format!("{KEY}/cryptoKeyVersions/1"));
    s.err(
        Method::POST,
        &format!("{KEY}:updatePrimaryVersion"),
        Some(json!({"cryptoKeyVersionId": "9"})),
        404,
        "NOT_FOUND",
    )
    .await;

    // [K7] state machine.
    let v1 = format!("{KEY}/cryptoKeyVersions/1");
    let d = s.ok(Method::PATCH, &format!("{v1}?updateMask=state"), Some(json!({"state": "DISABLED"}))).await;
    assert_eq!(d["state"], "DISABLED");
    let m = s
        .err(
            Method::POST,
            &format!("{KEY}:decrypt"),
            Some(json!({"ciphertext": ct, "additionalAuthenticatedData": b64(b"ctx")})),
            400,
            "FAILED_PRECONDITION",
        )
        .await;
    assert_eq!(m, format!("{v1} is not enabled, current state is: DISABLED."));
    let (_, body) = s.call(Method::POST, &format!("{v1}:encrypt"), Some(json!({"plaintext": "aGk="}))).await;
    assert_eq!(body["error"]["details"][0]["violations"][0]["type"], "KEY_DISABLED");
    s.err(
        Method::PATCH,
        &format!("{v1}?updateMask=state"),
        Some(json!({"state": "DESTROYED"})),
        400,
        "INVALID_ARGUMENT",
    )
    .await;
    s.err(Method::PATCH, &v1, Some(json!({"state": "ENABLED"})), 400, "INVALID_ARGUMENT").await;
    s.err(Method::POST, &format!("{v1}:restore"), None, 400, "FAILED_PRECONDITION").await;
    s.ok(Method::PATCH, &format!("{v1}?updateMask=state"), Some(json!({"state": 1}))).await;
    s.ok(
        Method::POST,
        &format!("{KEY}:decrypt"),
        Some(json!({"ciphertext": ct, "additionalAuthenticatedData": b64(b"ctx")})),
    )
    .await;
    let sched = s.ok(Method::POST, &format!("{v1}:destroy"), Some(json!({}))).await;
    assert_eq!(sched["state"], "DESTROY_SCHEDULED");
    assert!(sched["destroyTime"].is_string());
    s.err(Method::POST, &format!("{v1}:destroy"), None, 400, "FAILED_PRECONDITION").await;
    s.err(
        Method::PATCH,
        &format!("{v1}?updateMask=state"),
        Some(json!({"state": "ENABLED"})),
        400,
        "FAILED_PRECONDITION",
    )
    .await;
    let restored = s.ok(Method::POST, &format!("{v1}:restore"), None).await;
    assert_eq!(restored["state"], "DISABLED");
    assert!(restored.get("destroyTime").is_none());
    s.ok(Method::POST, &format!("{v1}:destroy"), None).await;
    // Past the 1 s schedule on the KMS's manual clock, instead of sleeping through it.
    assert_eq!(s.kms.run_due_work().await.unwrap().destroyed, 0, "not before its destroyTime");
    clock.advance(keyhold_api::wire::ProtoDuration::from_secs(2));
    let done = s.kms.run_due_work().await.unwrap();
    assert_eq!(done.destroyed, 1);
    let gone = s.ok(Method::GET, &v1, None).await;
    assert_eq!(gone["state"], "DESTROYED");
    assert!(gone["destroyEventTime"].is_string() && gone.get("destroyTime").is_none());
    s.err(Method::POST, &format!("{v1}:restore"), None, 400, "FAILED_PRECONDITION").await;
    let m = s
        .err(
            Method::POST,
            &format!("{KEY}:decrypt"),
            Some(json!({"ciphertext": ct, "additionalAuthenticatedData": b64(b"ctx")})),
            400,
            "FAILED_PRECONDITION",
        )
        .await;
    assert!(m.ends_with("current state is: DESTROYED."), "{m}");
    let versions = s.ok(Method::GET, &format!("{KEY}/cryptoKeyVersions?filter=state%3DDESTROYED"), None).await;
    assert_eq!(versions["totalSize"], 1);
    let all = s.ok(Method::GET, &format!("{KEY}/cryptoKeyVersions"), None).await;
    assert_eq!(all["totalSize"], 2);
    s.err(Method::GET, &format!("{KEY}/cryptoKeyVersions/7"), None, 404, "NOT_FOUND").await;

    if let Backend::Sqlite = backend {
        // The destroyed version's sealed material is overwritten in the file, not flagged.
        let conn = rusqlite::Connection::open(&s.db_file).unwrap();
        let m: Option<Vec<u8>> =
            conn.query_row("SELECT material FROM crypto_key_versions WHERE version_id = 1", [], |r| r.get(0)).unwrap();
        assert!(m.is_none());
        let live: Vec<u8> =
            conn.query_row("SELECT material FROM crypto_key_versions WHERE version_id = 2", [], |r| r.get(0)).unwrap();
        assert!(live.len() > 32);
    }
    if let Some(url) = &s.pg_url {
        // The same on PostgreSQL (erasure was checked on SQLite only): the row's material is
        // overwritten, and VACUUM ran on the table (docs/operations.md says what it can't do).
        let (db, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        let material = |id: u32| {
            let (db, name) = (&db, format!("{KEY}/cryptoKeyVersions/{id}"));
            async move {
                db.query_one("SELECT material FROM crypto_key_versions WHERE name = $1", &[&name])
                    .await
                    .unwrap()
                    .get::<_, Option<Vec<u8>>>(0)
            }
        };
        assert_eq!(material(1).await, None);
        assert!(material(2).await.unwrap().len() > 32);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let vacuumed: bool = db
                .query_one(
                    "SELECT last_vacuum IS NOT NULL FROM pg_stat_user_tables WHERE relname = 'crypto_key_versions'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if vacuumed {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no VACUUM of crypto_key_versions after the erasure");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

async fn concurrency(backend: Backend) {
    let s = Arc::new(start(backend, KmsConfig::default()).await);
    with_key(&s).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.ok(Method::POST, &format!("{KEY}/cryptoKeyVersions"), Some(json!({}))).await["name"]
                .as_str()
                .unwrap()
                .to_string()
        }));
    }
    let mut names = Vec::new();
    for t in tasks {
        names.push(t.await.unwrap());
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 8, "concurrent creates got distinct IDs: {names:?}");
    let list = s.ok(Method::GET, &format!("{KEY}/cryptoKeyVersions"), None).await;
    assert_eq!(list["totalSize"], 9);
    // Concurrent state changes serialize: every one succeeds or fails cleanly, none is lost.
    let mut tasks = Vec::new();
    for i in 0..10 {
        let s = s.clone();
        let state = if i % 2 == 0 { "DISABLED" } else { "ENABLED" };
        tasks.push(tokio::spawn(async move {
            s.call(Method::PATCH, &format!("{KEY}/cryptoKeyVersions/2?updateMask=state"), Some(json!({"state": state})))
                .await
                .0
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
}

/// Every page of `path` (`?` already in it), following the tokens: the names, and each page's
/// totalSize.
async fn all_pages(s: &Server, path: &str, field: &str) -> (Vec<String>, Vec<i64>) {
    let (mut names, mut totals, mut token) = (Vec::new(), Vec::new(), String::new());
    loop {
        let page = s.ok(Method::GET, &format!("{path}&pageToken={token}"), None).await;
        totals.push(page["totalSize"].as_i64().unwrap_or(0));
        let items = page[field].as_array().map(Vec::as_slice).unwrap_or_default();
        names.extend(items.iter().map(|k| k["name"].as_str().unwrap().rsplit('/').next().unwrap().to_string()));
        match page["nextPageToken"].as_str() {
            Some(t) => token = t.to_string(),
            None => return (names, totals),
        }
    }
}

/// Lists in their natural order page in the database (issue 18): each page continues after the
/// last name it returned, so keys created before that point during a listing are neither
/// repeated nor make another key skipped; filtered pages carry the first page's count.
async fn keyset_paging(backend: Backend) {
    let s = start(backend, KmsConfig::default()).await;
    s.ok(Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), None).await;
    for i in 0..23 {
        let labels = json!({"parity": if i % 2 == 0 { "even" } else { "odd" }});
        let body = json!({"purpose": "ENCRYPT_DECRYPT", "labels": labels});
        s.ok(Method::POST, &format!("{RING}/cryptoKeys?cryptoKeyId=k{i:02}"), Some(body)).await;
    }
    let expected: Vec<String> = (0..23).map(|i| format!("k{i:02}")).collect();
    let (names, totals) = all_pages(&s, &format!("{RING}/cryptoKeys?pageSize=5"), "cryptoKeys").await;
    assert_eq!(names, expected);
    assert_eq!(totals, [23; 5]);
    // Every key comes with its primary version.
    let first = s.ok(Method::GET, &format!("{RING}/cryptoKeys?pageSize=1"), None).await;
    assert_eq!(first["cryptoKeys"][0]["primary"]["name"], format!("{RING}/cryptoKeys/k00/cryptoKeyVersions/1"));

    // A key created before the cursor mid-listing: the next page neither repeats nor skips.
    let page1 = s.ok(Method::GET, &format!("{RING}/cryptoKeys?pageSize=5"), None).await;
    s.ok(Method::POST, &format!("{RING}/cryptoKeys?cryptoKeyId=a-new"), Some(json!({"purpose": "ENCRYPT_DECRYPT"})))
        .await;
    let token = page1["nextPageToken"].as_str().unwrap();
    let page2 = s.ok(Method::GET, &format!("{RING}/cryptoKeys?pageSize=5&pageToken={token}"), None).await;
    assert_eq!(page2["cryptoKeys"][0]["name"], format!("{RING}/cryptoKeys/k05"));
    assert_eq!(page2["totalSize"], 24, "an unfiltered list counts now");

    // Filtered: the matches in order, the first page's count carried on.
    let (odd, totals) =
        all_pages(&s, &format!("{RING}/cryptoKeys?pageSize=4&filter=labels.parity%3Dodd"), "cryptoKeys").await;
    assert_eq!(odd, (0..23).filter(|i| i % 2 == 1).map(|i| format!("k{i:02}")).collect::<Vec<_>>());
    assert_eq!(totals, [11; 3]);
    let (none, totals) =
        all_pages(&s, &format!("{RING}/cryptoKeys?pageSize=4&filter=labels.parity%3Dnone"), "cryptoKeys").await;
    assert!(none.is_empty());
    assert_eq!(totals, [0]);
    // A token belongs to its query.
    let filtered = s.ok(Method::GET, &format!("{RING}/cryptoKeys?pageSize=4&filter=labels.parity%3Dodd"), None).await;
    let token = filtered["nextPageToken"].as_str().unwrap();
    s.err(Method::GET, &format!("{RING}/cryptoKeys?pageSize=4&pageToken={token}"), None, 400, "INVALID_ARGUMENT").await;
    // orderBy still sorts the whole list (offset tokens).
    let (desc, _) = all_pages(&s, &format!("{RING}/cryptoKeys?pageSize=7&orderBy=name%20desc"), "cryptoKeys").await;
    let mut reversed = expected.clone();
    reversed.push("a-new".into());
    reversed.sort_by(|a, b| b.cmp(a));
    assert_eq!(desc, reversed);

    // Versions page by ID: 10 after 9, not after 1.
    for _ in 0..11 {
        s.ok(Method::POST, &format!("{RING}/cryptoKeys/k00/cryptoKeyVersions"), Some(json!({}))).await;
    }
    let (ids, totals) =
        all_pages(&s, &format!("{RING}/cryptoKeys/k00/cryptoKeyVersions?pageSize=5"), "cryptoKeyVersions").await;
    assert_eq!(ids, (1..=12).map(|i| i.to_string()).collect::<Vec<_>>());
    assert_eq!(totals, [12; 3]);
    // Key rings too.
    for r in ["r2", "r3"] {
        s.ok(Method::POST, &format!("{LOC}/keyRings?keyRingId={r}"), None).await;
    }
    let (rings, totals) = all_pages(&s, &format!("{LOC}/keyRings?pageSize=2"), "keyRings").await;
    assert_eq!((rings, totals), (vec!["r".to_string(), "r2".into(), "r3".into()], vec![3, 3]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyset_paging_sqlite() {
    keyset_paging(Backend::Sqlite).await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyset_paging_postgres() {
    keyset_paging(Backend::Postgres).await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rings_and_keys_sqlite() {
    key_rings_and_keys(Backend::Sqlite).await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rings_and_keys_postgres() {
    key_rings_and_keys(Backend::Postgres).await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crypto_and_versions_sqlite() {
    crypto_and_versions(Backend::Sqlite).await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crypto_and_versions_postgres() {
    crypto_and_versions(Backend::Postgres).await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_sqlite() {
    concurrency(Backend::Sqlite).await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_postgres() {
    concurrency(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_material_in_the_sqlite_file() {
    let root = keyhold_crypto::KeyBytes::generate().unwrap();
    let s = start_with_root(Backend::Sqlite, KmsConfig::default(), root.clone()).await;
    with_key(&s).await;
    // Plaintext that went through :encrypt never reaches the file, and key material is stored
    // only sealed (the sealing format itself is checked against the raw key in keyhold-crypto).
    let secret = b"plaintext-that-must-never-be-stored";
    s.ok(Method::POST, &format!("{KEY}:encrypt"), Some(json!({"plaintext": b64(secret)}))).await;
    let mut bytes = std::fs::read(&s.db_file).unwrap();
    if let Ok(wal) = std::fs::read(s.db_file.with_extension("db-wal")) {
        bytes.extend(wal);
    }
    assert!(!bytes.windows(secret.len()).any(|w| w == secret));
    let conn = rusqlite::Connection::open(&s.db_file).unwrap();
    let sealed: Vec<u8> = conn.query_row("SELECT material FROM crypto_key_versions", [], |r| r.get(0)).unwrap();
    assert_eq!(sealed.len(), 1 + 12 + 32 + 16, "material is stored sealed (format v1), not raw");
    assert_eq!(sealed[0], 1);
    // Unseal it with the root key (as the server does) and look for the raw key in the files.
    let raw = keyhold_crypto::sealed::unseal(
        &keyhold_crypto::AeadKey::new(&root),
        &sealed,
        &format!("{KEY}/cryptoKeyVersions/1"),
    )
    .unwrap();
    assert!(!bytes.windows(32).any(|w| w == raw.expose()), "raw key material in the database file");
    assert!(!bytes.windows(32).any(|w| w == root.expose()), "root key in the database file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_returned_and_propagated() {
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    let r = s.http.get(format!("{}/projects/p/locations", s.base)).send().await.unwrap();
    assert!(!r.headers()["x-request-id"].is_empty());
    let r =
        s.http.get(format!("{}/projects/p/locations", s.base)).header("x-request-id", "abc-123").send().await.unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123");
}

/// [K7]: a database that goes away is 503 UNAVAILABLE (which Google's clients retry), never a
/// 500, and the server recovers by itself when it comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_is_unavailable_then_recovers() {
    let s = start(Backend::Postgres, KmsConfig::default()).await;
    with_key(&s).await;
    let admin = admin().await;
    let db = s.pg_database.clone().unwrap();
    admin.batch_execute(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS false")).await.unwrap();
    admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", &[&db]).await.unwrap();
    s.err(Method::GET, RING, None, 503, "UNAVAILABLE").await;
    s.err(Method::POST, &format!("{LOC}/keyRings?keyRingId=r2"), None, 503, "UNAVAILABLE").await;
    admin.batch_execute(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true")).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, _) = s.call(Method::GET, RING, None).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(std::time::Instant::now() < deadline, "did not recover");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// [K11] Key Access Justifications on a SOFTWARE key: no policy allows every reason, a policy
/// allows only its reasons, an empty policy denies all, the reason comes from
/// `X-Keyhold-Access-Reason` (default CUSTOMER_INITIATED_ACCESS), and a bad reason is refused.
#[tokio::test]
async fn key_access_justifications() {
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    with_key(&s).await;
    let encrypt = async |reason: Option<&str>| -> (u16, serde_json::Value) {
        let mut req = s
            .http
            .post(format!("{}/{KEY}:encrypt", s.base))
            .bearer_auth(&s.token)
            .body(json!({"plaintext": b64(b"x")}).to_string());
        if let Some(r) = reason {
            req = req.header("X-Keyhold-Access-Reason", r);
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    };
    assert_eq!(encrypt(None).await.0, 200);
    assert_eq!(encrypt(Some("THIRD_PARTY_DATA_REQUEST")).await.0, 200, "no policy: every reason");

    let set_policy = async |reasons: serde_json::Value| {
        s.ok(
            Method::PATCH,
            &format!("{KEY}?updateMask=keyAccessJustificationsPolicy"),
            Some(json!({"keyAccessJustificationsPolicy": {"allowedAccessReasons": reasons}})),
        )
        .await;
    };
    set_policy(json!(["CUSTOMER_INITIATED_ACCESS"])).await;
    assert_eq!(encrypt(None).await.0, 200, "the default reason is CUSTOMER_INITIATED_ACCESS");
    assert_eq!(encrypt(Some("5")).await.0, 200, "reasons by number too");
    let (status, body) = encrypt(Some("GOOGLE_INITIATED_REVIEW")).await;
    assert_eq!((status, body["error"]["status"].as_str()), (400, Some("FAILED_PRECONDITION")), "{body}");
    assert_eq!(
        body["error"]["message"],
        format!(
            "The access reason GOOGLE_INITIATED_REVIEW is not allowed by the keyAccessJustificationsPolicy of CryptoKey {KEY} (allowed: CUSTOMER_INITIATED_ACCESS)."
        )
    );

    set_policy(json!([])).await;
    let (status, body) = encrypt(None).await;
    assert_eq!(status, 400, "an empty policy denies every reason: {body}");
    assert!(body["error"]["message"].as_str().unwrap().ends_with("(allowed: none)."), "{body}");

    let (status, body) = encrypt(Some("NOT_A_REASON")).await;
    assert_eq!((status, body["error"]["status"].as_str()), (400, Some("INVALID_ARGUMENT")), "{body}");
    let (status, _) = encrypt(Some("REASON_UNSPECIFIED")).await;
    assert_eq!(status, 400, "the unspecified reason is not a reason");
}

/// Requests exactly as Google's Node.js client (`@google-cloud/kms` 6.x, google-gax's REST
/// transport, `fallback: true`) sends them (issue 17: its first call, `createKeyRing`, was
/// refused with `400 INVALID_ARGUMENT`). When the body message is empty or absent, google-gax
/// sends the JSON string `""` as the body (with `Content-Type: application/json`), which Google's
/// front end reads as the empty message; every call also carries `$alt=json;enum-encoding=int`
/// and sends enums as numbers. tests/node runs the whole workflow with the client itself.
#[tokio::test]
async fn node_client_empty_message_body() {
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    let send = async |method: Method, path: &str, body: &str| -> (u16, serde_json::Value) {
        let sep = if path.contains('?') { '&' } else { '?' };
        let resp = s
            .http
            .request(method, format!("{}/{path}{sep}$alt=json%3Benum-encoding=int", s.base))
            .bearer_auth(&s.token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    };

    // createKeyRing({parent, keyRingId, keyRing: {}}): body `""`.
    let (status, ring) = send(Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), "\"\"").await;
    assert_eq!(status, 200, "{ring}");
    assert_eq!(ring["name"], RING);
    // The same with whitespace around it, and a second ring with the key-ring body `{}`.
    let (status, v) = send(Method::POST, &format!("{LOC}/keyRings?keyRingId=r2"), " \"\"\n").await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = send(Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), "\"\"").await;
    assert_eq!((status, v["error"]["status"].as_str()), (409, Some("ALREADY_EXISTS")), "{v}");

    // createCryptoKey: the body is the CryptoKey, with its enum as a number.
    let (status, key) = send(Method::POST, &format!("{RING}/cryptoKeys?cryptoKeyId=k"), r#"{"purpose":1}"#).await;
    assert_eq!(status, 200, "{key}");
    assert_eq!(key["purpose"], "ENCRYPT_DECRYPT");

    // createCryptoKeyVersion({parent, cryptoKeyVersion: {}}): body `""`.
    let (status, v2) = send(Method::POST, &format!("{KEY}/cryptoKeyVersions"), "\"\"").await;
    assert_eq!(status, 200, "{v2}");
    assert_eq!(v2["name"], format!("{KEY}/cryptoKeyVersions/2"));
    assert_eq!(v2["state"], "ENABLED");

    // destroyCryptoKeyVersion / restoreCryptoKeyVersion({name}): `body: "*"` with only path
    // fields left, so `""` again.
    let v1 = format!("{KEY}/cryptoKeyVersions/1");
    let (status, v) = send(Method::POST, &format!("{KEY}:updatePrimaryVersion"), r#"{"cryptoKeyVersionId":"2"}"#).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = send(Method::POST, &format!("{v1}:destroy"), "\"\"").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["state"], "DESTROY_SCHEDULED");
    let (status, v) = send(Method::POST, &format!("{v1}:restore"), "\"\"").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["state"], "DISABLED");

    // Any other JSON string is still not a message.
    for body in ["\"x\"", "\"{}\"", "\"\"\"\""] {
        let (status, v) = send(Method::POST, &format!("{LOC}/keyRings?keyRingId=r3"), body).await;
        assert_eq!((status, v["error"]["status"].as_str()), (400, Some("INVALID_ARGUMENT")), "{body}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().starts_with("Invalid JSON payload received."), "{v}");
    }
    let (status, v) = send(Method::GET, &format!("{LOC}/keyRings/r3"), "").await;
    assert_eq!(status, 404, "{v}");
}
