//! Who may do what ([K8]), service identities ([K9]) and the audit log ([K10]), over real HTTP
//! against real SQLite files and a real PostgreSQL (two nodes sharing it).

mod common;

use std::time::{Duration, Instant};

use common::*;
use keyhold_kms::KmsConfig;
use keyhold_kms::audit::ChainVerdict;
use reqwest::Method;
use serde_json::{Value, json};

const P: &str = "projects/p";
const LOC: &str = "projects/p/locations/global";
const RING: &str = "projects/p/locations/global/keyRings/r";
const KEY: &str = "projects/p/locations/global/keyRings/r/cryptoKeys/k";

fn b64(b: &[u8]) -> String {
    keyhold_api::wire::encode_base64(b)
}

impl Server {
    async fn status_as(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(Some(token), method, path, body).await
    }

    async fn audit(&self, project: &str, query: &str) -> Vec<Value> {
        let v = self.ok(Method::GET, &format!("projects/{project}/auditLogs?pageSize=1000&{query}"), None).await;
        v["entries"].as_array().cloned().unwrap_or_default()
    }
}

async fn with_key(s: &Server) {
    s.ok(Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), None).await;
    s.ok(Method::POST, &format!("{RING}/cryptoKeys?cryptoKeyId=k"), Some(json!({"purpose": "ENCRYPT_DECRYPT"}))).await;
    s.ok(Method::POST, &format!("{KEY}/cryptoKeyVersions"), Some(json!({}))).await;
}

/// What the calls on the keys of the other purposes need, prepared by the owner.
struct Prepared {
    /// A ciphertext for `dec`'s public key.
    oaep_ciphertext: String,
    /// A `rawDecrypt` body for `raw`.
    raw_decrypt: Value,
    /// An ML-KEM-768 ciphertext for `kem`'s public key.
    kem_ciphertext: String,
    /// A 32-byte HMAC key wrapped for import job `ij`, for the import-only key `imp`.
    wrapped_key: String,
}

/// Keys of the other purposes beside `k`: `sign` (EC P-256), `dec` (RSA-OAEP 2048), `mac`
/// (HMAC-SHA256), `raw` (AES-256-GCM), generated and enabled.
async fn with_other_purposes(s: &Server) -> Prepared {
    for (id, purpose, algorithm) in [
        ("sign", "ASYMMETRIC_SIGN", "EC_SIGN_P256_SHA256"),
        ("dec", "ASYMMETRIC_DECRYPT", "RSA_DECRYPT_OAEP_2048_SHA256"),
        ("mac", "MAC", "HMAC_SHA256"),
        ("raw", "RAW_ENCRYPT_DECRYPT", "AES_256_GCM"),
        ("kem", "KEY_ENCAPSULATION", "ML_KEM_768"),
    ] {
        let body = json!({"purpose": purpose, "versionTemplate": {"algorithm": algorithm}});
        s.ok(Method::POST, &format!("{RING}/cryptoKeys?cryptoKeyId={id}"), Some(body)).await;
    }
    s.kms.run_due_work().await.unwrap();
    let pk = s
        .ok(Method::GET, &format!("{RING}/cryptoKeys/dec/cryptoKeyVersions/1/publicKey?publicKeyFormat=DER"), None)
        .await;
    let der = keyhold_api::wire::decode_base64(pk["publicKey"]["data"].as_str().unwrap()).unwrap();
    let public = aws_lc_rs::rsa::PublicEncryptingKey::from_der(&der).unwrap();
    let public = aws_lc_rs::rsa::OaepPublicEncryptingKey::new(public).unwrap();
    let mut out = vec![0u8; public.ciphertext_size()];
    let ct = public.encrypt(&aws_lc_rs::rsa::OAEP_SHA256_MGF1SHA256, b"hi", &mut out, None).unwrap();
    let raw = s
        .ok(
            Method::POST,
            &format!("{RING}/cryptoKeys/raw/cryptoKeyVersions/1:rawEncrypt"),
            Some(json!({"plaintext": b64(b"hi")})),
        )
        .await;
    let pk = s
        .ok(Method::GET, &format!("{RING}/cryptoKeys/kem/cryptoKeyVersions/1/publicKey?publicKeyFormat=NIST_PQC"), None)
        .await;
    let raw_kem = keyhold_api::wire::decode_base64(pk["publicKey"]["data"].as_str().unwrap()).unwrap();
    let (kem_ct, _) =
        aws_lc_rs::kem::EncapsulationKey::new(&aws_lc_rs::kem::ML_KEM_768, &raw_kem).unwrap().encapsulate().unwrap();
    // An import job `ij`, and an import-only MAC key `imp` to import into.
    let job = s
        .ok(
            Method::POST,
            &format!("{RING}/importJobs?importJobId=ij"),
            Some(json!({"importMethod": "RSA_OAEP_3072_SHA256_AES_256", "protectionLevel": "SOFTWARE"})),
        )
        .await;
    let body = json!({"purpose": "MAC", "versionTemplate": {"algorithm": "HMAC_SHA256"}, "importOnly": true});
    s.ok(Method::POST, &format!("{RING}/cryptoKeys?cryptoKeyId=imp&skipInitialVersionCreation=true"), Some(body)).await;
    let pem = job["publicKey"]["pem"].as_str().unwrap();
    let der =
        keyhold_api::wire::decode_base64(&pem.lines().filter(|l| !l.starts_with("-----")).collect::<String>()).unwrap();
    let how = keyhold_crypto::import::Wrapping { hash: keyhold_crypto::keys::Hash::Sha256, aes_kwp: true };
    let wrapped = keyhold_crypto::import::wrap(&der, how, &[7; 32]).unwrap();
    Prepared {
        wrapped_key: b64(&wrapped),
        kem_ciphertext: b64(kem_ct.as_ref()),
        oaep_ciphertext: b64(ct),
        raw_decrypt: json!({"ciphertext": raw["ciphertext"], "initializationVector": raw["initializationVector"]}),
    }
}

/// One row of `authz_matrix.tsv`: what to call for a method.
fn request(
    method: &str,
    n: usize,
    ciphertext: &str,
    prepared: &Prepared,
    key_policy: &Value,
    ring_policy: &Value,
    project_policy: &Value,
) -> (Method, String, Option<Value>) {
    let v2 = format!("{KEY}/cryptoKeyVersions/2");
    match method {
        "ListLocations" => (Method::GET, format!("{P}/locations"), None),
        "GetLocation" => (Method::GET, LOC.into(), None),
        "GetProject" => (Method::GET, P.into(), None),
        "CreateKeyRing" => (Method::POST, format!("{LOC}/keyRings?keyRingId=m{n}"), None),
        "GetKeyRing" => (Method::GET, RING.into(), None),
        "ListKeyRings" => (Method::GET, format!("{LOC}/keyRings"), None),
        "CreateCryptoKey" => {
            (Method::POST, format!("{RING}/cryptoKeys?cryptoKeyId=m{n}"), Some(json!({"purpose": "ENCRYPT_DECRYPT"})))
        }
        "GetCryptoKey" => (Method::GET, KEY.into(), None),
        "ListCryptoKeys" => (Method::GET, format!("{RING}/cryptoKeys"), None),
        "UpdateCryptoKey" => {
            (Method::PATCH, format!("{KEY}?updateMask=labels"), Some(json!({"labels": {"by": format!("m{n}")}})))
        }
        "UpdateCryptoKeyPrimaryVersion" => {
            (Method::POST, format!("{KEY}:updatePrimaryVersion"), Some(json!({"cryptoKeyVersionId": "1"})))
        }
        "Encrypt" => (Method::POST, format!("{KEY}:encrypt"), Some(json!({"plaintext": b64(b"hi")}))),
        "Decrypt" => (Method::POST, format!("{KEY}:decrypt"), Some(json!({ "ciphertext": ciphertext }))),
        "AsymmetricSign" => (
            Method::POST,
            format!("{RING}/cryptoKeys/sign/cryptoKeyVersions/1:asymmetricSign"),
            Some(json!({"data": b64(b"hi")})),
        ),
        "AsymmetricDecrypt" => (
            Method::POST,
            format!("{RING}/cryptoKeys/dec/cryptoKeyVersions/1:asymmetricDecrypt"),
            Some(json!({ "ciphertext": prepared.oaep_ciphertext })),
        ),
        "Decapsulate" => (
            Method::POST,
            format!("{RING}/cryptoKeys/kem/cryptoKeyVersions/1:decapsulate"),
            Some(json!({ "ciphertext": prepared.kem_ciphertext })),
        ),
        "RawEncrypt" => (
            Method::POST,
            format!("{RING}/cryptoKeys/raw/cryptoKeyVersions/1:rawEncrypt"),
            Some(json!({"plaintext": b64(b"hi")})),
        ),
        "RawDecrypt" => (
            Method::POST,
            format!("{RING}/cryptoKeys/raw/cryptoKeyVersions/1:rawDecrypt"),
            Some(prepared.raw_decrypt.clone()),
        ),
        "GetPublicKey" => (Method::GET, format!("{RING}/cryptoKeys/sign/cryptoKeyVersions/1/publicKey"), None),
        "MacSign" => (
            Method::POST,
            format!("{RING}/cryptoKeys/mac/cryptoKeyVersions/1:macSign"),
            Some(json!({"data": b64(b"hi")})),
        ),
        "MacVerify" => (
            Method::POST,
            format!("{RING}/cryptoKeys/mac/cryptoKeyVersions/1:macVerify"),
            Some(json!({"data": b64(b"hi"), "mac": b64(&[0; 32])})),
        ),
        "CreateCryptoKeyVersion" => (Method::POST, format!("{KEY}/cryptoKeyVersions"), Some(json!({}))),
        "CreateImportJob" => (
            Method::POST,
            format!("{RING}/importJobs?importJobId=m{n}"),
            Some(json!({"importMethod": "RSA_OAEP_3072_SHA256", "protectionLevel": "SOFTWARE"})),
        ),
        "GetImportJob" => (Method::GET, format!("{RING}/importJobs/ij"), None),
        "ListRetiredResources" => (Method::GET, format!("{LOC}/retiredResources"), None),
        "ListImportJobs" => (Method::GET, format!("{RING}/importJobs"), None),
        "ImportCryptoKeyVersion" => (
            Method::POST,
            format!("{RING}/cryptoKeys/imp/cryptoKeyVersions:import"),
            Some(json!({
                "algorithm": "HMAC_SHA256",
                "importJob": format!("{RING}/importJobs/ij"),
                "wrappedKey": prepared.wrapped_key,
            })),
        ),
        "GetIamPolicy(importJob)" => (Method::GET, format!("{RING}/importJobs/ij:getIamPolicy"), None),
        "SetIamPolicy(importJob)" => {
            (Method::POST, format!("{RING}/importJobs/ij:setIamPolicy"), Some(json!({"policy": {}})))
        }
        "GetCryptoKeyVersion" => (Method::GET, v2, None),
        "ListCryptoKeyVersions" => (Method::GET, format!("{KEY}/cryptoKeyVersions"), None),
        "UpdateCryptoKeyVersion" => {
            (Method::PATCH, format!("{v2}?updateMask=state"), Some(json!({"state": "ENABLED"})))
        }
        "DestroyCryptoKeyVersion" => (Method::POST, format!("{v2}:destroy"), Some(json!({}))),
        "RestoreCryptoKeyVersion" => (Method::POST, format!("{v2}:restore"), Some(json!({}))),
        "GetIamPolicy(cryptoKey)" => (Method::GET, format!("{KEY}:getIamPolicy"), None),
        "SetIamPolicy(cryptoKey)" => (Method::POST, format!("{KEY}:setIamPolicy"), Some(json!({"policy": key_policy}))),
        "GetIamPolicy(keyRing)" => (Method::GET, format!("{RING}:getIamPolicy"), None),
        "SetIamPolicy(keyRing)" => (Method::POST, format!("{RING}:setIamPolicy"), Some(json!({"policy": ring_policy}))),
        "GetIamPolicy(project)" => (Method::POST, format!("{P}:getIamPolicy"), Some(json!({}))),
        "SetIamPolicy(project)" => (Method::POST, format!("{P}:setIamPolicy"), Some(json!({"policy": project_policy}))),
        other => panic!("authz_matrix.tsv names an unknown method {other}"),
    }
}

fn without_etag(mut v: Value) -> Value {
    v.as_object_mut().unwrap().remove("etag");
    v
}

/// The authorization matrix: every method, as a principal holding exactly one role on the
/// project, allowed or denied as the table in the repository says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_matrix() {
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    with_key(&s).await;
    let prepared = with_other_purposes(&s).await;
    let table = include_str!("authz_matrix.tsv");
    let mut lines = table.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty());
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split('\t').collect()).collect();
    assert!(rows.len() >= 20, "the table covers every method");
    let mut checked = 0;
    for (col, role) in header.iter().enumerate().skip(1) {
        let member = format!("user:{}@example.com", role.replace('.', "-"));
        if *role != "none" {
            s.grant(P, &format!("roles/{role}"), &member).await;
        }
        let token = s.token_for(&member).await;
        // State the calls need, prepared by the owner.
        // (Version 2 may have been left scheduled for destruction by the previous role.)
        let _ = s.call(Method::POST, &format!("{KEY}/cryptoKeyVersions/2:restore"), Some(json!({}))).await;
        let ct = s.ok(Method::POST, &format!("{KEY}:encrypt"), Some(json!({"plaintext": b64(b"hi")}))).await;
        let ciphertext = ct["ciphertext"].as_str().unwrap().to_string();
        let key_policy = without_etag(s.ok(Method::GET, &format!("{KEY}:getIamPolicy"), None).await);
        let ring_policy = without_etag(s.ok(Method::GET, &format!("{RING}:getIamPolicy"), None).await);
        let project_policy = without_etag(s.ok(Method::GET, &format!("{P}:getIamPolicy"), None).await);
        for (n, row) in rows.iter().enumerate() {
            let method = row[0];
            let expected = row[col];
            let (verb, path, body) =
                request(method, col * 100 + n, &ciphertext, &prepared, &key_policy, &ring_policy, &project_policy);
            if method == "RestoreCryptoKeyVersion" {
                // Restoring needs a version scheduled for destruction.
                let _ = s.call(Method::POST, &format!("{KEY}/cryptoKeyVersions/2:destroy"), Some(json!({}))).await;
            }
            let (status, v) = s.status_as(&token, verb, &path, body).await;
            match expected {
                "Y" => assert_eq!(status, 200, "{role} {method} should be allowed: {v}"),
                "N" => {
                    assert_eq!(status, 403, "{role} {method} should be denied: {v}");
                    assert_eq!(v["error"]["status"], "PERMISSION_DENIED");
                    let msg = v["error"]["message"].as_str().unwrap();
                    assert!(
                        msg.starts_with("Permission '") && msg.ends_with("' (or it may not exist)."),
                        "Google's message shape: {msg}"
                    );
                }
                other => panic!("bad cell {other:?} for {method}/{role}"),
            }
            checked += 1;
        }
        if *role != "none" {
            s.revoke(P, &member).await;
        }
    }
    assert_eq!(checked, rows.len() * (header.len() - 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_tokens_expiry_and_revocation() {
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    with_key(&s).await;
    // No token, a malformed one, an unknown one: 401 with Google's wording and a challenge.
    let r = s.http.get(format!("{}/{RING}", s.base)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"keyhold\"");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["status"], "UNAUTHENTICATED");
    assert!(
        v["error"]["message"].as_str().unwrap().starts_with("Request is missing required authentication credential.")
    );
    for bad in ["nonsense", "kh1.0000000000000000.AAAA"] {
        let (st, v) = s.call_as(Some(bad), Method::GET, RING, None).await;
        assert_eq!(st, 401);
        assert!(v["error"]["message"].as_str().unwrap().starts_with("Request had invalid authentication credentials."));
    }
    // Tokens are shown once and stored only as hashes.
    s.grant(P, "roles/cloudkms.viewer", "user:bob@example.com").await;
    let created = s
        .ok(
            Method::POST,
            "tokens",
            Some(json!({"principal": "user:bob@example.com", "ttl": "2s", "description": "ci"})),
        )
        .await;
    let bob = created["token"].as_str().unwrap().to_string();
    assert!(bob.starts_with("kh1."));
    let listed = s.ok(Method::GET, "tokens", None).await;
    assert!(!listed.to_string().contains(&bob), "a listing never shows the token");
    let conn = rusqlite::Connection::open(&s.db_file).unwrap();
    let stored: Vec<String> = conn
        .prepare("SELECT hash || principal || description FROM tokens")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(stored.iter().all(|row| !row.contains(&bob[4..])), "the token itself is not stored");
    // Works, then expires.
    assert_eq!(s.status_as(&bob, Method::GET, RING, None).await.0, 200);
    // Only token admins manage tokens.
    let (st, _) = s.status_as(&bob, Method::POST, "tokens", Some(json!({"principal": "user:eve@example.com"}))).await;
    assert_eq!(st, 403);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(s.status_as(&bob, Method::GET, RING, None).await.0, 401, "expired");
    // Revocation takes effect on the next request.
    let bob2 = s.token_for("user:bob@example.com").await;
    assert_eq!(s.status_as(&bob2, Method::GET, RING, None).await.0, 200);
    let id = s.ok(Method::GET, "tokens", None).await["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| {
            t["principal"] == "user:bob@example.com" && t.get("revokeTime").is_none() && t.get("description").is_none()
        })
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    s.ok(Method::DELETE, &id, None).await;
    assert_eq!(s.status_as(&bob2, Method::GET, RING, None).await.0, 401, "revoked");
    s.err(Method::DELETE, &id, None, 404, "NOT_FOUND").await;
    // One entry per revocation attempt: the failed one is not also recorded as a success.
    let revokes = s.audit("-", &format!("methodName=RevokeToken&resourcePrefix={id}")).await;
    let codes: Vec<i64> = revokes.iter().map(|e| e["protoPayload"]["status"]["code"].as_i64().unwrap_or(0)).collect();
    assert_eq!(codes, [0, 5], "{revokes:?}");
    // Malformed principals are refused clearly.
    let m = s.err(Method::POST, "tokens", Some(json!({"principal": "bob"})), 400, "INVALID_ARGUMENT").await;
    assert!(m.contains("<type>:<value>"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inheritance_isolation_and_existence_hiding() {
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    with_key(&s).await;
    s.ok(Method::POST, &format!("{RING}/cryptoKeys?cryptoKeyId=other"), Some(json!({"purpose": "ENCRYPT_DECRYPT"})))
        .await;
    s.ok(Method::POST, "projects/q/locations/global/keyRings?keyRingId=r", None).await;
    let alice = s.token_for("user:alice@example.com").await;
    let enc = |key: &str| (Method::POST, format!("{key}:encrypt"), Some(json!({"plaintext": b64(b"x")})));

    // A grant on the key ring reaches its keys...
    s.grant(RING, "roles/cloudkms.cryptoKeyEncrypter", "user:alice@example.com").await;
    let (m, p, b) = enc(KEY);
    assert_eq!(s.status_as(&alice, m, &p, b).await.0, 200);
    let (m, p, b) = enc(&format!("{RING}/cryptoKeys/other"));
    assert_eq!(s.status_as(&alice, m, &p, b).await.0, 200);
    s.revoke(RING, "user:alice@example.com").await;
    // ...a grant on one key reaches only that key...
    s.grant(KEY, "roles/cloudkms.cryptoKeyEncrypter", "user:alice@example.com").await;
    let (m, p, b) = enc(KEY);
    assert_eq!(s.status_as(&alice, m, &p, b).await.0, 200);
    let (m, p, b) = enc(&format!("{RING}/cryptoKeys/other"));
    assert_eq!(s.status_as(&alice, m, &p, b).await.0, 403);
    // ...and a project grant reaches only that project.
    s.grant(P, "roles/cloudkms.viewer", "user:alice@example.com").await;
    assert_eq!(s.status_as(&alice, Method::GET, RING, None).await.0, 200);
    let (st, v) = s.status_as(&alice, Method::GET, "projects/q/locations/global/keyRings/r", None).await;
    assert_eq!(st, 403, "{v}");
    assert_eq!(s.status_as(&alice, Method::GET, "projects/q/locations/global/keyRings", None).await.0, 403);

    // Denial does not reveal existence: the same answer for a real and a missing key ring.
    let (_, real) = s.status_as(&alice, Method::GET, "projects/q/locations/global/keyRings/r", None).await;
    let (_, missing) = s.status_as(&alice, Method::GET, "projects/q/locations/global/keyRings/nope", None).await;
    assert_eq!(
        real["error"]["message"].as_str().unwrap().replace("/r'", "/X'"),
        missing["error"]["message"].as_str().unwrap().replace("/nope'", "/X'")
    );
    // With permission, a missing resource is 404.
    assert_eq!(s.status_as(&alice, Method::GET, &format!("{LOC}/keyRings/nope"), None).await.0, 404);

    // testIamPermissions: the subset held; nothing for a missing resource; bad names refused.
    let perms = json!({"permissions": ["cloudkms.cryptoKeyVersions.useToEncrypt", "cloudkms.cryptoKeyVersions.useToDecrypt", "cloudkms.cryptoKeys.get"]});
    let (_, held) = s.status_as(&alice, Method::POST, &format!("{KEY}:testIamPermissions"), Some(perms.clone())).await;
    assert_eq!(held["permissions"], json!(["cloudkms.cryptoKeyVersions.useToEncrypt", "cloudkms.cryptoKeys.get"]));
    let (_, none) =
        s.status_as(&alice, Method::POST, &format!("{RING}/cryptoKeys/nope:testIamPermissions"), Some(perms)).await;
    assert_eq!(none, json!({}));
    let (st, _) = s
        .status_as(&alice, Method::POST, &format!("{KEY}:testIamPermissions"), Some(json!({"permissions": ["x.y"]})))
        .await;
    assert_eq!(st, 400);

    // Policies are validated with Google's messages.
    let bad = |b: Value| json!({"policy": {"bindings": [b]}});
    let m = s
        .err(
            Method::POST,
            &format!("{KEY}:setIamPolicy"),
            Some(bad(json!({"role": "roles/nope", "members": ["user:a@b.co"]}))),
            400,
            "INVALID_ARGUMENT",
        )
        .await;
    assert_eq!(m, "Role roles/nope is not supported for this resource.");
    s.err(
        Method::POST,
        &format!("{KEY}:setIamPolicy"),
        Some(bad(json!({"role": "roles/owner", "members": ["user:a@b.co"]}))),
        400,
        "INVALID_ARGUMENT",
    )
    .await;
    s.err(
        Method::POST,
        &format!("{KEY}:setIamPolicy"),
        Some(bad(json!({"role": "roles/cloudkms.admin", "members": ["alice"]}))),
        400,
        "INVALID_ARGUMENT",
    )
    .await;
    s.err(Method::POST, &format!("{RING}/cryptoKeys/nope:setIamPolicy"), Some(json!({"policy": {}})), 404, "NOT_FOUND")
        .await;

    // Project numbers are stable and twelve digits.
    let p1 = s.ok(Method::GET, P, None).await;
    let p2 = s.ok(Method::GET, P, None).await;
    assert_eq!(p1["projectNumber"], p2["projectNumber"]);
    assert_eq!(p1["projectNumber"].as_str().unwrap().len(), 12);
    assert_ne!(p1["projectNumber"], s.ok(Method::GET, "projects/q", None).await["projectNumber"]);
}

/// Concurrent `setIamPolicy` calls with the same etag: exactly one wins, the others are
/// `409 ABORTED` with Google's message.
async fn etag_race(backend: Backend) {
    let s = std::sync::Arc::new(start(backend, KmsConfig::default()).await);
    with_key(&s).await;
    let policy = s.ok(Method::GET, &format!("{KEY}:getIamPolicy"), None).await;
    assert_eq!(policy, json!({"etag": "ACAB"}), "a key without a policy, as Cloud KMS shows it");
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        let etag = policy["etag"].clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({"policy": {"etag": etag, "bindings": [{"role": "roles/cloudkms.viewer", "members": [format!("user:u{i}@example.com")]}]}});
            s.call(Method::POST, &format!("{KEY}:setIamPolicy"), Some(body)).await
        }));
    }
    let mut won = 0;
    for t in tasks {
        let (status, v) = t.await.unwrap();
        match status {
            200 => won += 1,
            409 => {
                assert_eq!(v["error"]["status"], "ABORTED");
                assert!(v["error"]["message"].as_str().unwrap().starts_with("There were concurrent policy changes."));
            }
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert_eq!(won, 1);
    // The stale etag stays stale.
    let stale = json!({"policy": {"etag": "ACAB", "bindings": []}});
    s.err(Method::POST, &format!("{KEY}:setIamPolicy"), Some(stale), 409, "ABORTED").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etag_race_sqlite() {
    etag_race(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etag_race_postgres() {
    etag_race(Backend::Postgres).await;
}

/// [K8]: a grant or revoke on one node takes effect on another node sharing the database
/// within a second: node B answers from its caches until its next poll of the change counter,
/// and one poll is enough. Each step is driven explicitly (B's cached answer, one
/// `sync_with_store`, B's new answer), so nothing depends on timing; the bound is then the poll
/// interval (250 ms by default), which B's background loop is last shown to run. (It asserted
/// "under 1 s" of wall-clock time, which flakes on a loaded machine; bench/suite.py measures.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_and_revokes_reach_other_nodes_within_a_second() {
    assert!(KmsConfig::default().change_poll_interval <= Duration::from_millis(250));
    let (a, b) = two_postgres_nodes().await;
    with_key(&a).await;
    let alice = a.token_for("user:alice@example.com").await;
    let enc = json!({"plaintext": b64(b"x")});
    let on_b = async || b.status_as(&alice, Method::POST, &format!("{KEY}:encrypt"), Some(enc.clone())).await.0;
    // Warm B's caches with a denial.
    assert_eq!(on_b().await, 403);
    // B still answers `before` from its caches; one poll of the change counter, and `after`.
    let one_poll = async |before: u16, after: u16| {
        assert_eq!(on_b().await, before, "node B answered without polling");
        assert!(b.kms.sync_with_store().await.unwrap(), "the change counter did not move");
        assert_eq!(on_b().await, after, "node B after one poll");
    };
    a.grant(KEY, "roles/cloudkms.cryptoKeyEncrypterDecrypter", "user:alice@example.com").await;
    one_poll(403, 200).await;
    a.revoke(KEY, "user:alice@example.com").await;
    one_poll(200, 403).await;
    // Token revocation propagates the same way.
    let id = a.ok(Method::GET, "tokens", None).await["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["principal"] == "user:alice@example.com")
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    a.grant(KEY, "roles/cloudkms.cryptoKeyEncrypterDecrypter", "user:alice@example.com").await;
    one_poll(403, 200).await;
    // The last change reaches B through its own background loop (a generous deadline: this
    // shows the loop polls, not how fast).
    tokio::spawn(b.kms.clone().run_background(std::future::pending()));
    a.ok(Method::DELETE, &id, None).await;
    let start = Instant::now();
    while on_b().await != 401 {
        assert!(start.elapsed() < Duration::from_secs(20), "node B's loop never saw the token revocation");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("cross-node token revocation through B's background loop: {} ms", start.elapsed().as_millis());
}

/// Issue 18, finding 1: a change on one node drops, on the others, only what it changed. A
/// PATCH of one key leaves every other cached key in place on node B, a disabled version is
/// refused by B after one poll all the same, and a change the log does not name (an org policy)
/// still drops everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_drops_only_what_it_changed_on_other_nodes() {
    let (a, b) = two_postgres_nodes().await;
    with_key(&a).await;
    let other = format!("{RING}/cryptoKeys/other");
    a.ok(Method::POST, &format!("{RING}/cryptoKeys?cryptoKeyId=other"), Some(json!({"purpose": "ENCRYPT_DECRYPT"})))
        .await;
    b.kms.sync_with_store().await.unwrap();
    let enc = json!({"plaintext": b64(b"x")});
    let on_b = async |key: &str| b.call(Method::POST, &format!("{key}:encrypt"), Some(enc.clone())).await.0;
    assert_eq!((on_b(KEY).await, on_b(&other).await), (200, 200));
    // A token minted on A leaves B's cached tokens in place (a revocation drops them: above).
    let tokens = b.kms.token_cache_usage().0;
    assert!(tokens >= 1, "B's caller's token is cached");
    a.token_for("user:zed@example.com").await;
    assert!(b.kms.sync_with_store().await.unwrap());
    assert_eq!(b.kms.token_cache_usage().0, tokens, "a mint drops no cached token");
    let (held, weight) = b.kms.key_cache_usage();
    assert_eq!(held, 2, "both keys cached on B");
    println!("key cache: {held} keys weigh {weight} bytes");
    // The estimate is of the order measured from outside (issue 18: ~2.7 KB of RSS per warm
    // key since versions are boxed; ~8.7 KB before).
    assert!((2 * 2048..=2 * 8192).contains(&weight), "an entry is counted a few KiB: {weight} for 2");

    // A's PATCH of `other`: after one poll B has dropped `other` and kept KEY.
    a.ok(Method::PATCH, &format!("{other}?updateMask=labels"), Some(json!({"labels": {"team": "a"}}))).await;
    assert!(b.kms.sync_with_store().await.unwrap());
    assert_eq!(b.kms.key_cache_usage().0, 1, "only the changed key was dropped");
    assert_eq!(on_b(KEY).await, 200);
    assert_eq!(b.kms.key_cache_usage().0, 1, "KEY answered from the cache it kept");

    // Revocation stays enforced: A disables KEY's primary; B, after one poll, refuses it.
    let primary = a.ok(Method::GET, KEY, None).await["primary"]["name"].as_str().unwrap().to_string();
    a.ok(Method::PATCH, &format!("{primary}?updateMask=state"), Some(json!({"state": "DISABLED"}))).await;
    assert_eq!(on_b(KEY).await, 200, "B answers from its cache until it polls");
    assert!(b.kms.sync_with_store().await.unwrap());
    assert_eq!(on_b(KEY).await, 400, "a disabled version is refused after one poll");

    // A change the log does not name by resource drops every cache.
    assert_eq!(on_b(&other).await, 200);
    assert!(b.kms.key_cache_usage().0 >= 1);
    let name = "projects/p/policies/gcp.restrictNonCmekServices";
    let body = json!({"name": name, "spec": {"rules": [{"values": {"deniedValues": ["store.keyhold.dev"]}}]}});
    let v2 = a.base.trim_end_matches("/v1").to_string() + "/v2";
    let resp = a.http.put(format!("{v2}/{name}")).bearer_auth(&a.token).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    assert!(b.kms.sync_with_store().await.unwrap());
    assert_eq!(b.kms.key_cache_usage().0, 0, "everything dropped");
    assert!(!b.kms.sync_with_store().await.unwrap(), "nothing new");
}

/// Issue 18: the IAM policy cache stays within its budget whatever resources requests name (a
/// viewer naming thousands of keys that do not exist: before, each name stayed cached for good),
/// and a policy it evicted or holds is read again when it changes: a grant and a revocation on
/// one key are enforced at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_cache_stays_within_its_budget_whatever_names_requests_carry() {
    let budget = 64 * 1024;
    let s = start(Backend::Sqlite, KmsConfig { policy_cache_bytes: budget, ..KmsConfig::default() }).await;
    with_key(&s).await;
    let alice = s.token_for("user:alice@example.com").await;
    s.grant(P, "roles/cloudkms.viewer", "user:alice@example.com").await;
    let flood = async |from: usize| {
        for i in from..from + 1_500 {
            let (status, v) = s.status_as(&alice, Method::GET, &format!("{RING}/cryptoKeys/missing-{i}"), None).await;
            assert_eq!(status, 404, "{v}");
            let (held, weight) = s.kms.policy_cache_usage();
            assert!(weight <= budget, "over budget after {i} names: {held} policies weigh {weight}");
        }
    };
    flood(0).await;
    let (held, weight) = s.kms.policy_cache_usage();
    assert!((100..1_500).contains(&held), "{held} policies held");
    assert!(weight > budget / 2, "it keeps what fits: {weight} of {budget}");

    let encrypt = async || {
        let body = Some(json!({"plaintext": b64(b"x")}));
        s.status_as(&alice, Method::POST, &format!("{KEY}:encrypt"), body).await.0
    };
    assert_eq!(encrypt().await, 403, "a viewer may not encrypt");
    s.grant(KEY, "roles/cloudkms.cryptoKeyEncrypter", "user:alice@example.com").await;
    assert_eq!(encrypt().await, 200, "the grant holds at once");
    flood(1_500).await;
    assert_eq!(encrypt().await, 200, "and after the key's policy was evicted or kept");
    s.revoke(KEY, "user:alice@example.com").await;
    assert_eq!(encrypt().await, 403, "the revocation holds at once");
    s.grant(RING, "roles/cloudkms.cryptoKeyEncrypter", "user:alice@example.com").await;
    assert_eq!(encrypt().await, 200, "a grant on the key ring reaches the key at once");
    s.revoke(RING, "user:alice@example.com").await;
    assert_eq!(encrypt().await, 403, "and its revocation");
}

/// Audit configs are kept in Google's shape only, within limits; a refused one changes nothing.
/// `updateMask` changes the fields it names (by default bindings and etag) and keeps the rest,
/// including stored audit configs that today's checks would refuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_configs_are_kept_in_googles_shape_and_refused_otherwise() {
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    with_key(&s).await;
    let set = format!("{KEY}:setIamPolicy");
    let get = format!("{KEY}:getIamPolicy");
    let configs = json!([{"service": "allServices", "auditLogConfigs": [
        {"logType": "DATA_READ", "exemptedMembers": ["user:jose@example.com", "group:admins@example.com"]},
        {"logType": "ADMIN_READ"}]}]);
    let body = json!({"updateMask": "bindings,auditConfigs", "policy": {
        "bindings": [{"role": "roles/cloudkms.viewer", "members": ["user:a@example.com"]}], "auditConfigs": configs}});
    let set_policy = s.ok(Method::POST, &set, Some(body)).await;
    assert_eq!(set_policy["auditConfigs"], configs);
    let before = s.ok(Method::GET, &get, None).await;
    assert_eq!(before["auditConfigs"], configs, "kept as set");

    let many: Vec<String> = (0..1_501).map(|i| format!("user:u{i}@example.com")).collect();
    for bad in [
        json!([[0, 0, 0]]),
        json!([{"service": "s", "auditLogConfigs": [{"logType": "DATA_READ"}], "deep": [[[1]]]}]),
        json!([{"service": "", "auditLogConfigs": [{"logType": "DATA_READ"}]}]),
        json!([{"service": "s", "auditLogConfigs": [{"exemptedMembers": ["user:b@example.com"]}]}]),
        json!([{"service": "s", "auditLogConfigs": [{"logType": "DATA_READ", "exemptedMembers": many}]}]),
        json!(vec![json!({"service": "s", "auditLogConfigs": [{"logType": "DATA_READ"}]}); 101]),
    ] {
        let body = json!({"updateMask": "auditConfigs", "policy": {"etag": before["etag"], "auditConfigs": bad}});
        s.err(Method::POST, &set, Some(body), 400, "INVALID_ARGUMENT").await;
    }
    assert_eq!(s.ok(Method::GET, &get, None).await, before, "nothing changed");

    // No mask is bindings and etag: the audit configs stay.
    let viewers = json!([{"role": "roles/cloudkms.viewer", "members": ["user:b@example.com"]}]);
    let after = s.ok(Method::POST, &set, Some(json!({"policy": {"bindings": viewers}}))).await;
    assert_eq!((&after["bindings"], &after["auditConfigs"]), (&viewers, &configs));
    // A mask of auditConfigs alone changes them and keeps the bindings.
    let fewer = json!([{"service": "cloudkms.googleapis.com", "auditLogConfigs": [{"logType": "DATA_WRITE"}]}]);
    let body = json!({"updateMask": "auditConfigs", "policy": {"auditConfigs": fewer}});
    let after = s.ok(Method::POST, &set, Some(body)).await;
    assert_eq!((&after["auditConfigs"], &after["bindings"]), (&fewer, &viewers));

    // Configs stored by an earlier release that today's checks refuse (no service, no log
    // type) are kept by a set that does not name them, and do not block it.
    let stored = json!([{"service": "", "auditLogConfigs": [{"exemptedMembers": ["x"]}, {"logType": "DATA_READ"}, {"logType": "DATA_READ"}]}]);
    let policy = json!({"version": 1, "bindings": viewers, "auditConfigs": stored}).to_string();
    let db = rusqlite::Connection::open(&s.db_file).unwrap();
    assert_eq!(db.execute("UPDATE iam_policies SET policy = ?1 WHERE resource = ?2", (&policy, KEY)).unwrap(), 1);
    let owners = json!([{"role": "roles/cloudkms.admin", "members": ["user:c@example.com"]}]);
    let etag = s.ok(Method::GET, &get, None).await["etag"].clone();
    let body = json!({"updateMask": "bindings,etag", "policy": {"bindings": owners, "etag": etag}});
    let after = s.ok(Method::POST, &set, Some(body)).await;
    assert_eq!(after["bindings"], owners);
    assert_eq!(
        s.ok(Method::GET, &get, None).await["auditConfigs"],
        json!([{"auditLogConfigs": [
        {"exemptedMembers": ["x"]}, {"logType": "DATA_READ"}, {"logType": "DATA_READ"}]}])
    );
}

/// A set without an etag that keeps fields it does not name never writes back what a
/// concurrent set replaced: each set of bindings races one of audit configs alone, and the
/// bindings left are always those of the last set of bindings, never the ones before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_without_an_etag_never_writes_back_what_another_replaced() {
    let s = std::sync::Arc::new(start(Backend::Sqlite, KmsConfig::default()).await);
    with_key(&s).await;
    let set = format!("{KEY}:setIamPolicy");
    for round in 0..30 {
        let mine = json!([{"role": "roles/cloudkms.viewer", "members": [format!("user:r{round}@example.com")]}]);
        let configs =
            json!([{"service": format!("s{round}.example.com"), "auditLogConfigs": [{"logType": "DATA_READ"}]}]);
        let bindings = {
            let (s, set, mine) = (s.clone(), set.clone(), mine.clone());
            tokio::spawn(async move { s.call(Method::POST, &set, Some(json!({"policy": {"bindings": mine}}))).await })
        };
        let audit = {
            let (s, set, configs) = (s.clone(), set.clone(), configs.clone());
            tokio::spawn(async move {
                let body = json!({"updateMask": "auditConfigs", "policy": {"auditConfigs": configs}});
                s.call(Method::POST, &set, Some(body)).await
            })
        };
        let (b, a) = (bindings.await.unwrap(), audit.await.unwrap());
        assert_eq!((b.0, a.0), (200, 200), "{b:?} {a:?}");
        let now = s.ok(Method::GET, &format!("{KEY}:getIamPolicy"), None).await;
        assert_eq!((&now["bindings"], &now["auditConfigs"]), (&mine, &configs), "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_identities_and_agent_tokens() {
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    let url =
        |svc: &str| format!("{}/projects/p/services/{svc}:generateServiceIdentity", s.base.replace("/v1", "/v1beta1"));
    let gen_ = |svc: String| {
        let s = &s;
        let url = url(&svc);
        async move {
            let r = s.http.post(url).bearer_auth(&s.token).json(&json!({})).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let first = gen_("store.keyhold.dev".into()).await;
    let again = gen_("store.keyhold.dev".into()).await;
    assert_eq!(first, again, "idempotent");
    assert_eq!(first["done"], true);
    assert_eq!(first["response"]["@type"], "type.googleapis.com/google.api.serviceusage.v1beta1.ServiceIdentity");
    let number = s.ok(Method::GET, P, None).await["projectNumber"].as_str().unwrap().to_string();
    let email = first["response"]["email"].as_str().unwrap().to_string();
    assert_eq!(email, format!("service-{number}@gcp-sa-store.iam.gserviceaccount.com"));
    let aml = gen_("financialservices.googleapis.com".into()).await;
    assert_eq!(aml["response"]["email"], format!("service-{number}@gcp-sa-financialservices.iam.gserviceaccount.com"));
    // The v1beta1 method is not on /v1, and /v1beta1 serves nothing else.
    assert_eq!(s.call(Method::POST, "projects/p/services/x.y:generateServiceIdentity", Some(json!({}))).await.0, 404);

    // Only the service itself can mint tokens for its agent.
    with_key(&s).await;
    let store_service = s.token_for("service:store.keyhold.dev").await;
    let other_service = s.token_for("service:other.keyhold.dev").await;
    let path = format!("projects/-/serviceAccounts/{email}:generateAccessToken");
    let body = json!({"scope": ["https://www.googleapis.com/auth/cloud-platform"], "lifetime": "600s"});
    for denied in [&s.token, &other_service] {
        let (st, v) = s.status_as(denied, Method::POST, &path, Some(body.clone())).await;
        assert_eq!(st, 403, "{v}");
    }
    let (st, minted) = s.status_as(&store_service, Method::POST, &path, Some(body)).await;
    assert_eq!(st, 200, "{minted}");
    let agent = minted["accessToken"].as_str().unwrap().to_string();
    // The service holds no role of its own; its agent acts once granted.
    let enc = json!({"plaintext": b64(b"customer data key")});
    assert_eq!(s.status_as(&store_service, Method::POST, &format!("{KEY}:encrypt"), Some(enc.clone())).await.0, 403);
    assert_eq!(s.status_as(&agent, Method::POST, &format!("{KEY}:encrypt"), Some(enc.clone())).await.0, 403);
    s.grant(KEY, "roles/cloudkms.cryptoKeyEncrypterDecrypter", &format!("serviceAccount:{email}")).await;
    assert_eq!(s.status_as(&agent, Method::POST, &format!("{KEY}:encrypt"), Some(enc)).await.0, 200);
    // The agent's calls are audited under its own name.
    let entries = s.audit("p", &format!("methodName=Encrypt&principal=serviceAccount:{email}")).await;
    assert!(entries.iter().any(|e| e["protoPayload"]["status"] == json!({})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log_records_allowed_and_denied_calls_and_detects_tampering() {
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    with_key(&s).await;
    let plaintext = b"the customer's secret";
    let enc = s.ok(Method::POST, &format!("{KEY}:encrypt"), Some(json!({"plaintext": b64(plaintext)}))).await;
    let ciphertext = enc["ciphertext"].as_str().unwrap().to_string();
    let mallory = s.token_for("user:mallory@example.com").await;
    let (st, _) = s
        .call_as(Some(&mallory), Method::POST, &format!("{KEY}:decrypt"), Some(json!({ "ciphertext": ciphertext })))
        .await;
    assert_eq!(st, 403);
    let (st, _) = s.call_as(None, Method::GET, RING, None).await;
    assert_eq!(st, 401);
    let r = s
        .http
        .post(format!("{}/{KEY}:encrypt", s.base))
        .bearer_auth(&s.token)
        .header("x-goog-request-reason", "ticket 42")
        .header("x-request-id", "req-audit-1")
        .json(&json!({"plaintext": b64(b"x")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Allowed encrypt: principal, method, resource, version, outcome, in Cloud Logging's shape.
    let entries = s.audit("p", "methodName=Encrypt").await;
    let first = &entries[0];
    assert_eq!(first["logName"], "projects/p/logs/cloudaudit.googleapis.com%2Fdata_access");
    assert_eq!(first["protoPayload"]["authenticationInfo"]["principalEmail"], "owner@keyhold.local");
    assert_eq!(first["protoPayload"]["resourceName"], KEY);
    assert_eq!(first["protoPayload"]["serviceName"], "cloudkms.googleapis.com");
    assert_eq!(first["protoPayload"]["metadata"]["keyVersion"], format!("{KEY}/cryptoKeyVersions/1"));
    assert_eq!(first["protoPayload"]["authorizationInfo"][0]["permission"], "cloudkms.cryptoKeyVersions.useToEncrypt");
    assert_eq!(first["protoPayload"]["authorizationInfo"][0]["granted"], true);
    let justified = entries
        .iter()
        .find(|e| e["protoPayload"]["requestMetadata"]["requestAttributes"]["id"] == "req-audit-1")
        .unwrap();
    assert_eq!(justified["protoPayload"]["metadata"]["justification"], "ticket 42");
    // Denied decrypt: recorded with its status.
    let denied = s.audit("p", "methodName=Decrypt&principal=user:mallory@example.com").await;
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0]["protoPayload"]["status"]["code"], 7);
    assert_eq!(denied[0]["protoPayload"]["authorizationInfo"][0]["granted"], false);
    // Admin changes go to the activity log, written with the change.
    let activity = s.audit("p", "logName=activity").await;
    let methods: Vec<&str> = activity.iter().map(|e| e["protoPayload"]["methodName"].as_str().unwrap()).collect();
    assert_eq!(methods, ["CreateKeyRing", "CreateCryptoKey", "CreateCryptoKeyVersion"]);
    // The unauthenticated request too, server-wide view.
    let all = s.audit("-", "methodName=Unknown").await;
    assert!(all.iter().any(|e| e["protoPayload"]["status"]["code"] == 16), "{all:?}");
    // Paging, ordering, time range and prefix filters.
    let page = s.ok(Method::GET, "projects/p/auditLogs?pageSize=2&orderBy=timestamp%20desc", None).await;
    assert_eq!(page["entries"].as_array().unwrap().len(), 2);
    let next = page["nextPageToken"].as_str().unwrap();
    let page2 = s
        .ok(Method::GET, &format!("projects/p/auditLogs?pageSize=2&orderBy=timestamp%20desc&pageToken={next}"), None)
        .await;
    let a: u64 = page["entries"][1]["insertId"].as_str().unwrap().parse().unwrap();
    let b: u64 = page2["entries"][0]["insertId"].as_str().unwrap().parse().unwrap();
    assert!(b < a);
    assert!(s.audit("p", "startTime=2999-01-01T00:00:00Z").await.is_empty());
    assert!(!s.audit("p", &format!("resourcePrefix={RING}")).await.is_empty());
    assert!(s.audit("p", "resourcePrefix=projects/p/locations/global/keyRings/zzz").await.is_empty());
    // Reading data-access logs needs the private-logs permission; a viewer sees activity only.
    s.grant(P, "roles/viewer", "user:vera@example.com").await;
    let vera = s.token_for("user:vera@example.com").await;
    let (st, v) = s.call_as(Some(&vera), Method::GET, "projects/p/auditLogs?pageSize=1000", None).await;
    assert_eq!(st, 200);
    assert!(v["entries"].as_array().unwrap().iter().all(|e| e["logName"].as_str().unwrap().ends_with("%2Factivity")));
    assert_eq!(s.call_as(Some(&vera), Method::GET, "projects/p/auditLogs?logName=data_access", None).await.0, 403);
    assert_eq!(s.call_as(Some(&vera), Method::GET, "projects/-/auditLogs", None).await.0, 403);

    // Never plaintext, ciphertext or key material in the log.
    let conn = rusqlite::Connection::open(&s.db_file).unwrap();
    let text: String = conn.query_row("SELECT group_concat(entry, '') FROM audit_log", [], |r| r.get(0)).unwrap();
    assert!(!text.contains(&b64(plaintext)) && !text.contains(&ciphertext) && !text.contains("customer's secret"));
    assert!(!text.contains(&s.token), "no bearer token in the audit log");

    // The chain verifies; the table refuses edits; a forced edit is detected where it happened.
    match s.kms.verify_audit_chain().await.unwrap() {
        ChainVerdict::Intact { entries, head } => {
            assert!(entries > 10);
            assert_eq!(head.len(), 64);
        }
        broken => panic!("fresh chain reported {broken:?}"),
    }
    let refused = conn.execute("UPDATE audit_log SET entry = entry WHERE seq = 3", []);
    assert!(refused.is_err(), "append-only");
    assert!(conn.execute("DELETE FROM audit_log WHERE seq = 3", []).is_err(), "append-only");
    conn.execute_batch("DROP TRIGGER audit_log_no_update").unwrap();
    conn.execute(
        "UPDATE audit_log SET entry = replace(entry, 'owner@keyhold.local', 'someone@else.example') WHERE seq = 3",
        [],
    )
    .unwrap();
    match s.kms.verify_audit_chain().await.unwrap() {
        ChainVerdict::Broken { seq, reason } => {
            assert_eq!(seq, 3);
            assert!(reason.contains("modified"), "{reason}");
        }
        intact => panic!("tampering not detected: {intact:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_chain_holds_across_two_nodes() {
    let (a, b) = two_postgres_nodes().await;
    let (a, b) = (std::sync::Arc::new(a), std::sync::Arc::new(b));
    with_key(&a).await;
    // Both nodes append concurrently: the chain stays one unbroken line.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let node = if i % 2 == 0 { a.clone() } else { b.clone() };
        let token = a.token.clone();
        tasks.push(tokio::spawn(async move {
            node.call_as(Some(&token), Method::POST, &format!("{KEY}:encrypt"), Some(json!({"plaintext": b64(b"x")})))
                .await
                .0
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    match b.kms.verify_audit_chain().await.unwrap() {
        ChainVerdict::Intact { entries, .. } => assert!(entries >= 44, "{entries}"),
        broken => panic!("{broken:?}"),
    }
    assert_eq!(a.audit("p", "methodName=Encrypt").await.len(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_emulator_mode() {
    let config = KmsConfig {
        anonymous_principal: Some(keyhold_iam::Principal::parse("user:anonymous@keyhold.local").unwrap()),
        ..KmsConfig::default()
    };
    let s = start(Backend::Sqlite, config).await;
    // No token, or a fake one (Google's clients with anonymous credentials): owner of projects.
    let (st, v) = s.call_as(None, Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), None).await;
    assert_eq!(st, 200, "{v}");
    let (st, _) = s.call_as(Some("fake-token"), Method::GET, RING, None).await;
    assert_eq!(st, 200);
    // Not a server admin.
    assert_eq!(s.call_as(None, Method::GET, "tokens", None).await.0, 403);
    // Audited as anonymous.
    let entries = s.audit("p", "methodName=CreateKeyRing").await;
    assert_eq!(entries[0]["protoPayload"]["authenticationInfo"]["principalEmail"], "anonymous@keyhold.local");
    assert_eq!(entries[0]["protoPayload"]["metadata"]["anonymous"], true);
    // A real token still acts as its own principal.
    let (st, v) = s.call(Method::GET, RING, None).await;
    assert_eq!(st, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_newest_audit_entries_is_detected() {
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    with_key(&s).await;
    assert!(matches!(s.kms.verify_audit_chain().await.unwrap(), ChainVerdict::Intact { .. }));
    let conn = rusqlite::Connection::open(&s.db_file).unwrap();
    conn.execute_batch("DROP TRIGGER audit_log_no_delete").unwrap();
    let last: i64 = conn.query_row("SELECT max(seq) FROM audit_log", [], |r| r.get(0)).unwrap();
    conn.execute("DELETE FROM audit_log WHERE seq = ?1", [last]).unwrap();
    match s.kms.verify_audit_chain().await.unwrap() {
        ChainVerdict::Broken { seq, reason } => {
            assert_eq!(seq, last);
            assert!(reason.contains("removed"), "{reason}");
        }
        intact => panic!("truncation not detected: {intact:?}"),
    }
}

/// Hardening (tests that would have caught these): audit tamper-evidence was checked on SQLite
/// only. On PostgreSQL the table refuses UPDATE, DELETE and TRUNCATE; with the trigger dropped,
/// an edited entry is found where it happened, the chain verifies again once the entry is put
/// back, and removing the newest entry is found too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_tampering_is_detected_on_postgres() {
    let s = start(Backend::Postgres, KmsConfig::default()).await;
    with_key(&s).await;
    s.ok(Method::POST, &format!("{KEY}:encrypt"), Some(json!({"plaintext": b64(b"x")}))).await;
    assert!(matches!(s.kms.verify_audit_chain().await.unwrap(), ChainVerdict::Intact { .. }));
    let (db, conn) = tokio_postgres::connect(s.pg_url.as_deref().unwrap(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    for forbidden in [
        "UPDATE audit_log SET entry = entry WHERE seq = 3",
        "DELETE FROM audit_log WHERE seq = 3",
        "TRUNCATE audit_log",
    ] {
        let e = db.batch_execute(forbidden).await.expect_err(forbidden);
        assert!(e.as_db_error().unwrap().message().contains("append-only"), "{forbidden}: {e:?}");
    }
    db.batch_execute("DROP TRIGGER audit_log_append_only ON audit_log").await.unwrap();
    let original: String = db.query_one("SELECT entry FROM audit_log WHERE seq = 3", &[]).await.unwrap().get(0);
    let forged = original.replace("owner@keyhold.local", "someone@else.example");
    assert_ne!(forged, original);
    db.execute("UPDATE audit_log SET entry = $1 WHERE seq = 3", &[&forged]).await.unwrap();
    match s.kms.verify_audit_chain().await.unwrap() {
        ChainVerdict::Broken { seq, reason } => {
            assert_eq!(seq, 3);
            assert!(reason.contains("modified"), "{reason}");
        }
        intact => panic!("tampering not detected: {intact:?}"),
    }
    db.execute("UPDATE audit_log SET entry = $1 WHERE seq = 3", &[&original]).await.unwrap();
    assert!(matches!(s.kms.verify_audit_chain().await.unwrap(), ChainVerdict::Intact { .. }));
    let last: i64 = db.query_one("SELECT max(seq) FROM audit_log", &[]).await.unwrap().get(0);
    db.execute("DELETE FROM audit_log WHERE seq = $1", &[&last]).await.unwrap();
    match s.kms.verify_audit_chain().await.unwrap() {
        ChainVerdict::Broken { seq, reason } => {
            assert_eq!(seq, last);
            assert!(reason.contains("removed"), "{reason}");
        }
        intact => panic!("truncation not detected: {intact:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_mode_never_reaches_server_wide_rights() {
    let config = KmsConfig {
        anonymous_principal: Some(keyhold_iam::Principal::parse("user:anonymous@keyhold.local").unwrap()),
        ..KmsConfig::default()
    };
    let s = start(Backend::Sqlite, config).await;
    // Even when the server-wide policy grants every authenticated user token administration.
    s.grant("organizations/keyhold", "roles/keyhold.tokenAdmin", "allAuthenticatedUsers").await;
    let (st, _) = s.call_as(None, Method::POST, "tokens", Some(json!({"principal": "user:x@example.com"}))).await;
    assert_eq!(st, 403);
    let (st, _) = s.call_as(None, Method::GET, "projects/-/auditLogs", None).await;
    assert_eq!(st, 403);
    // Anonymous callers cannot mint service-agent tokens either.
    let r = s
        .http
        .post(format!(
            "{}/projects/p/services/store.keyhold.dev:generateServiceIdentity",
            s.base.replace("/v1", "/v1beta1")
        ))
        .bearer_auth(&s.token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let email = r.json::<Value>().await.unwrap()["response"]["email"].as_str().unwrap().to_string();
    let path = format!("projects/-/serviceAccounts/{email}:generateAccessToken");
    assert_eq!(s.call_as(None, Method::POST, &path, Some(json!({}))).await.0, 401);
}
