//! Key import (issue 19) over the REST surface, on a real SQLite file and a real PostgreSQL
//! server: import jobs, and key material wrapped for them by the `openssl` command the way
//! Google's "Importing a key version" guide wraps it by hand (RSA-OAEP of a temporary AES key,
//! then `openssl enc -id-aes256-wrap-pad`), imported with `cryptoKeyVersions:import`. Each
//! imported key is checked against the material itself: the public key OpenSSL derives, a
//! signature OpenSSL verifies, an HMAC OpenSSL computes, a ciphertext AES-GCM opens.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::*;
use keyhold_api::wire::ProtoDuration;
use keyhold_kms::KmsConfig;
use keyhold_kms::clock::ManualClock;
use reqwest::Method;
use serde_json::{Value, json};

const LOC: &str = "projects/p/locations/us-central1";
const RING: &str = "projects/p/locations/us-central1/keyRings/r";

fn b64(b: &[u8]) -> String {
    keyhold_api::wire::encode_base64(b)
}

fn unb64(v: &Value) -> Vec<u8> {
    keyhold_api::wire::decode_base64(v.as_str().unwrap()).unwrap()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Runs `openssl` with `args` in `dir` and returns its standard output; panics if it fails.
fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out =
        Command::new("openssl").args(args).current_dir(dir).output().expect("openssl is installed by scripts/test.sh");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Wraps the file `key` in `dir` for the import job whose public key is in the file `pem`, as
/// Google's guide does with OpenSSL: `aes_kwp` for the `*_AES_256` methods, else RSA-OAEP of
/// the key itself.
fn wrap(dir: &Path, pem: &str, key: &str, md: &str, aes_kwp: bool) -> Vec<u8> {
    let oaep = ["-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt"];
    let md_opt = format!("rsa_oaep_md:{md}");
    let mgf_opt = format!("rsa_mgf1_md:{md}");
    let rsa = |input: &str, out: &str| {
        let mut args = vec!["pkeyutl", "-encrypt", "-pubin", "-inkey", pem, "-in", input, "-out", out];
        args.extend_from_slice(&oaep);
        args.extend_from_slice(&[&md_opt, "-pkeyopt", &mgf_opt]);
        openssl(dir, &args);
    };
    if !aes_kwp {
        rsa(key, "wrapped");
        return std::fs::read(dir.join("wrapped")).unwrap();
    }
    openssl(dir, &["rand", "-out", "temp_aes", "32"]);
    rsa("temp_aes", "wrapped_aes");
    let kek = hex(&std::fs::read(dir.join("temp_aes")).unwrap());
    openssl(dir, &["enc", "-id-aes256-wrap-pad", "-iv", "A65959A6", "-K", &kek, "-in", key, "-out", "wrapped_key"]);
    [std::fs::read(dir.join("wrapped_aes")).unwrap(), std::fs::read(dir.join("wrapped_key")).unwrap()].concat()
}

/// Creates import job `id` with `method` and writes its public key to `{id}.pem` in `dir`.
async fn create_job(s: &Server, id: &str, method: &str, dir: &Path) -> Value {
    let job = s
        .ok(
            Method::POST,
            &format!("{RING}/importJobs?importJobId={id}"),
            Some(json!({"importMethod": method, "protectionLevel": "SOFTWARE"})),
        )
        .await;
    assert_eq!(job["name"], format!("{RING}/importJobs/{id}"));
    assert_eq!(job["importMethod"], method);
    assert_eq!(job["protectionLevel"], "SOFTWARE");
    assert_eq!(job["state"], "ACTIVE");
    let pem = job["publicKey"]["pem"].as_str().unwrap();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{pem}");
    let file = format!("{id}.pem");
    std::fs::write(dir.join(&file), pem).unwrap();
    let text = String::from_utf8(openssl(dir, &["pkey", "-pubin", "-in", &file, "-text", "-noout"])).unwrap();
    let bits = if method.contains("4096") { "4096" } else { "3072" };
    assert!(text.contains(&format!("Public-Key: ({bits} bit)")), "{text}");
    job
}

async fn create_key(s: &Server, id: &str, purpose: &str, algorithm: &str) -> String {
    let body = json!({"purpose": purpose, "versionTemplate": {"algorithm": algorithm}, "importOnly": true});
    let key = s
        .ok(Method::POST, &format!("{RING}/cryptoKeys?cryptoKeyId={id}&skipInitialVersionCreation=true"), Some(body))
        .await;
    assert_eq!(key["importOnly"], true);
    key["name"].as_str().unwrap().to_string()
}

async fn import(s: &Server, key: &str, algorithm: &str, job: &str, wrapped: &[u8]) -> Value {
    let body = json!({"algorithm": algorithm, "importJob": job, "wrappedKey": b64(wrapped)});
    let v = s.ok(Method::POST, &format!("{key}/cryptoKeyVersions:import"), Some(body)).await;
    assert_eq!(v["state"], "ENABLED", "{v}");
    assert_eq!(v["algorithm"], algorithm);
    assert_eq!(v["importJob"], job);
    assert!(v["importTime"].is_string(), "{v}");
    assert_eq!(v["reimportEligible"], true);
    v
}

async fn imports_of_every_kind_work(backend: Backend) {
    let s = start(backend, KmsConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    s.ok(Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), None).await;

    // An EC P-256 key made by OpenSSL, in PKCS#8 DER, wrapped for a SHA-256 RSA-AES job.
    let job = create_job(&s, "sha256", "RSA_OAEP_3072_SHA256_AES_256", dir).await;
    let job_name = job["name"].as_str().unwrap().to_string();
    let created = keyhold_api::wire::Timestamp::parse(job["createTime"].as_str().unwrap()).unwrap();
    let expires = keyhold_api::wire::Timestamp::parse(job["expireTime"].as_str().unwrap()).unwrap();
    assert_eq!(expires, created.add(ProtoDuration::from_secs(3 * 24 * 3600)), "jobs expire after 3 days");
    assert_eq!(s.ok(Method::GET, &job_name, None).await, job);
    openssl(dir, &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ec.pem"]);
    openssl(dir, &["pkcs8", "-topk8", "-nocrypt", "-in", "ec.pem", "-outform", "DER", "-out", "ec.der"]);
    let ec_key = create_key(&s, "ec", "ASYMMETRIC_SIGN", "EC_SIGN_P256_SHA256").await;
    let v =
        import(&s, &ec_key, "EC_SIGN_P256_SHA256", &job_name, &wrap(dir, "sha256.pem", "ec.der", "sha256", true)).await;
    let version = v["name"].as_str().unwrap().to_string();
    assert_eq!(version, format!("{ec_key}/cryptoKeyVersions/1"));
    let pk = s.ok(Method::GET, &format!("{version}/publicKey"), None).await;
    let theirs = openssl(dir, &["pkey", "-in", "ec.pem", "-pubout"]);
    assert_eq!(pk["pem"].as_str().unwrap().as_bytes(), theirs.as_slice(), "the imported key's public key");
    std::fs::write(dir.join("data"), b"release 1").unwrap();
    let sig = s.ok(Method::POST, &format!("{version}:asymmetricSign"), Some(json!({"data": b64(b"release 1")}))).await;
    std::fs::write(dir.join("sig"), unb64(&sig["signature"])).unwrap();
    openssl(dir, &["dgst", "-sha256", "-prverify", "ec.pem", "-signature", "sig", "data"]);

    // An RSA-2048 signing key, wrapped for a 4096-bit SHA-1 job.
    create_job(&s, "sha1", "RSA_OAEP_4096_SHA1_AES_256", dir).await;
    openssl(dir, &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "rsa.pem"]);
    openssl(dir, &["pkcs8", "-topk8", "-nocrypt", "-in", "rsa.pem", "-outform", "DER", "-out", "rsa.der"]);
    let rsa_key = create_key(&s, "rsa", "ASYMMETRIC_SIGN", "RSA_SIGN_PKCS1_2048_SHA256").await;
    let wrapped = wrap(dir, "sha1.pem", "rsa.der", "sha1", true);
    let v = import(&s, &rsa_key, "RSA_SIGN_PKCS1_2048_SHA256", &format!("{RING}/importJobs/sha1"), &wrapped).await;
    let sig = s
        .ok(
            Method::POST,
            &format!("{}:asymmetricSign", v["name"].as_str().unwrap()),
            Some(json!({"data": b64(b"release 1")})),
        )
        .await;
    std::fs::write(dir.join("sig"), unb64(&sig["signature"])).unwrap();
    openssl(dir, &["dgst", "-sha256", "-prverify", "rsa.pem", "-signature", "sig", "data"]);

    // An HMAC-SHA256 key (32 bytes), wrapped by RSA-OAEP alone; OpenSSL computes the same tag.
    create_job(&s, "direct", "RSA_OAEP_3072_SHA256", dir).await;
    let mac_key: Vec<u8> = (0..32).map(|i| i * 7 + 1).collect();
    std::fs::write(dir.join("mac.key"), &mac_key).unwrap();
    let hmac = create_key(&s, "mac", "MAC", "HMAC_SHA256").await;
    let v = import(
        &s,
        &hmac,
        "HMAC_SHA256",
        &format!("{RING}/importJobs/direct"),
        &wrap(dir, "direct.pem", "mac.key", "sha256", false),
    )
    .await;
    let tag = s
        .ok(Method::POST, &format!("{}:macSign", v["name"].as_str().unwrap()), Some(json!({"data": b64(b"release 1")})))
        .await;
    let macopt = format!("hexkey:{}", hex(&mac_key));
    let theirs = openssl(dir, &["dgst", "-sha256", "-mac", "HMAC", "-macopt", &macopt, "-binary", "data"]);
    assert_eq!(unb64(&tag["mac"]), theirs);

    // A raw AES-256-GCM key: what rawEncrypt makes opens with the key imported.
    let aes: Vec<u8> = (0..32).map(|i| 255 - i).collect();
    std::fs::write(dir.join("aes.key"), &aes).unwrap();
    let raw = create_key(&s, "raw", "RAW_ENCRYPT_DECRYPT", "AES_256_GCM").await;
    let v = import(&s, &raw, "AES_256_GCM", &job_name, &wrap(dir, "sha256.pem", "aes.key", "sha256", true)).await;
    let ct = s
        .ok(
            Method::POST,
            &format!("{}:rawEncrypt", v["name"].as_str().unwrap()),
            Some(json!({"plaintext": b64(b"secret")})),
        )
        .await;
    let key = aws_lc_rs::aead::LessSafeKey::new(
        aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::AES_256_GCM, &aes).unwrap(),
    );
    let nonce = aws_lc_rs::aead::Nonce::try_assume_unique_for_key(&unb64(&ct["initializationVector"])).unwrap();
    let mut sealed = unb64(&ct["ciphertext"]);
    let opened = key.open_in_place(nonce, aws_lc_rs::aead::Aad::empty(), &mut sealed).unwrap();
    assert_eq!(opened, b"secret");

    // A symmetric ENCRYPT_DECRYPT key; it becomes primary once asked, and encrypts.
    let sym = create_key(&s, "sym", "ENCRYPT_DECRYPT", "GOOGLE_SYMMETRIC_ENCRYPTION").await;
    let v =
        import(&s, &sym, "GOOGLE_SYMMETRIC_ENCRYPTION", &job_name, &wrap(dir, "sha256.pem", "aes.key", "sha256", true))
            .await;
    s.ok(Method::POST, &format!("{sym}:updatePrimaryVersion"), Some(json!({"cryptoKeyVersionId": "1"}))).await;
    let ct = s.ok(Method::POST, &format!("{sym}:encrypt"), Some(json!({"plaintext": b64(b"hello")}))).await;
    let pt = s.ok(Method::POST, &format!("{sym}:decrypt"), Some(json!({"ciphertext": ct["ciphertext"]}))).await;
    assert_eq!(unb64(&pt["plaintext"]), b"hello");
    assert_eq!(v["name"], format!("{sym}/cryptoKeyVersions/1"));

    // The list has the three jobs, in name order.
    let list = s.ok(Method::GET, &format!("{RING}/importJobs"), None).await;
    let names: Vec<&str> = list["importJobs"].as_array().unwrap().iter().map(|j| j["name"].as_str().unwrap()).collect();
    assert_eq!(names, [format!("{RING}/importJobs/direct"), format!("{RING}/importJobs/sha1"), job_name.clone()]);
    assert_eq!(list["totalSize"], 3);
    let page = s
        .ok(Method::GET, &format!("{RING}/importJobs?pageSize=2&filter=importMethod%3DRSA_OAEP_3072_SHA256"), None)
        .await;
    assert_eq!(page["importJobs"].as_array().unwrap().len(), 1, "{page}");
}

#[tokio::test]
async fn imports_of_every_kind_work_sqlite() {
    imports_of_every_kind_work(Backend::Sqlite).await;
}

#[tokio::test]
async fn imports_of_every_kind_work_postgres() {
    imports_of_every_kind_work(Backend::Postgres).await;
}

#[tokio::test]
async fn bad_jobs_and_bad_imports_are_refused_and_leave_nothing() {
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    s.ok(Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), None).await;
    let jobs = format!("{RING}/importJobs");
    for (body, code) in [
        (json!({"protectionLevel": "SOFTWARE"}), "INVALID_ARGUMENT"),
        (json!({"importMethod": "RSA_OAEP_3072_SHA256"}), "INVALID_ARGUMENT"),
        (json!({"importMethod": "RSA_OAEP_3072_SHA256", "protectionLevel": "EXTERNAL"}), "INVALID_ARGUMENT"),
    ] {
        s.err(Method::POST, &format!("{jobs}?importJobId=j"), Some(body), 400, code).await;
    }
    let hsm = json!({"importMethod": "RSA_OAEP_3072_SHA256", "protectionLevel": "HSM"});
    s.err(Method::POST, &format!("{jobs}?importJobId=j"), Some(hsm), 501, "UNIMPLEMENTED").await;
    let hpke = json!({"importMethod": "HPKE_KEM_ML_KEM_768_HKDF_SHA256_AES_256_GCM", "protectionLevel": "SOFTWARE"});
    s.err(Method::POST, &format!("{jobs}?importJobId=j"), Some(hpke), 501, "UNIMPLEMENTED").await;
    s.err(Method::POST, &jobs, Some(json!({})), 400, "INVALID_ARGUMENT").await;
    s.err(Method::POST, &format!("{jobs}?importJobId=a.b"), Some(json!({})), 400, "INVALID_ARGUMENT").await;
    let good = json!({"importMethod": "RSA_OAEP_3072_SHA256_AES_256", "protectionLevel": "SOFTWARE"});
    let other_ring = format!("{LOC}/keyRings/none/importJobs?importJobId=j");
    s.err(Method::POST, &other_ring, Some(good.clone()), 404, "NOT_FOUND").await;
    s.err(Method::GET, &format!("{jobs}/j"), None, 404, "NOT_FOUND").await;
    assert_eq!(s.ok(Method::GET, &jobs, None).await["importJobs"], Value::Null, "no job was left behind");
    create_job(&s, "j", "RSA_OAEP_3072_SHA256_AES_256", dir).await;
    let m = s.err(Method::POST, &format!("{jobs}?importJobId=j"), Some(good), 409, "ALREADY_EXISTS").await;
    assert_eq!(m, format!("ImportJob {jobs}/j already exists."));
    let job = format!("{jobs}/j");

    // importOnly keys: created without a version, and never given one except by import.
    let body = json!({"purpose": "ENCRYPT_DECRYPT", "importOnly": true});
    let m = s.err(Method::POST, &format!("{RING}/cryptoKeys?cryptoKeyId=k"), Some(body), 400, "INVALID_ARGUMENT").await;
    assert!(m.contains("skipInitialVersionCreation"), "{m}");
    let key = create_key(&s, "k", "ENCRYPT_DECRYPT", "GOOGLE_SYMMETRIC_ENCRYPTION").await;
    s.err(Method::POST, &format!("{key}/cryptoKeyVersions"), Some(json!({})), 400, "FAILED_PRECONDITION").await;

    std::fs::write(dir.join("k32"), [5u8; 32]).unwrap();
    std::fs::write(dir.join("k31"), [5u8; 31]).unwrap();
    let good = wrap(dir, "j.pem", "k32", "sha256", true);
    let import_path = format!("{key}/cryptoKeyVersions:import");
    let mut tampered = good.clone();
    *tampered.last_mut().unwrap() ^= 1;
    let cases = [
        (json!({"importJob": job, "wrappedKey": b64(&good)}), "INVALID_ARGUMENT", "algorithm is required"),
        (
            json!({"algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION", "wrappedKey": b64(&good)}),
            "INVALID_ARGUMENT",
            "import_job is required",
        ),
        (
            json!({"algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION", "importJob": job}),
            "INVALID_ARGUMENT",
            "wrapped_key is required",
        ),
        (
            json!({"algorithm": "HMAC_SHA256", "importJob": job, "wrappedKey": b64(&good)}),
            "INVALID_ARGUMENT",
            "not valid for purpose ENCRYPT_DECRYPT",
        ),
        (
            json!({"algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION", "importJob": job, "wrappedKey": b64(&tampered)}),
            "INVALID_ARGUMENT",
            "cannot be unwrapped",
        ),
        (
            json!({"algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION", "importJob": job, "wrappedKey": b64(&wrap(dir, "j.pem", "k31", "sha256", true))}),
            "INVALID_ARGUMENT",
            "32 bytes",
        ),
        (
            json!({"algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION", "importJob": job, "wrappedKey": b64(&wrap(dir, "j.pem", "k32", "sha1", true))}),
            "INVALID_ARGUMENT",
            "cannot be unwrapped",
        ),
        (
            json!({"algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION", "importJob": job, "wrappedKey": b64(&good), "rsaAesWrappedKey": b64(&good)}),
            "INVALID_ARGUMENT",
            "Only one of",
        ),
        (
            json!({"algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION", "importJob": job, "wrappedKey": b64(&vec![0; 20_000])}),
            "INVALID_ARGUMENT",
            "wrapped_key",
        ),
    ];
    for (body, code, says) in cases {
        let m = s.err(Method::POST, &import_path, Some(body.clone()), 400, code).await;
        assert!(m.contains(says), "{body}: {m}");
    }
    let missing = json!({"algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION", "importJob": format!("{jobs}/none"), "wrappedKey": b64(&good)});
    assert_eq!(
        s.err(Method::POST, &import_path, Some(missing), 404, "NOT_FOUND").await,
        format!("ImportJob {jobs}/none not found.")
    );
    assert_eq!(
        s.ok(Method::GET, &format!("{key}/cryptoKeyVersions"), None).await["cryptoKeyVersions"],
        Value::Null,
        "nothing imported"
    );
    // The legacy field works too, and the refused imports used up no version ID.
    let body = json!({"algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION", "importJob": job, "rsaAesWrappedKey": b64(&good)});
    let v = s.ok(Method::POST, &import_path, Some(body)).await;
    assert_eq!(v["name"], format!("{key}/cryptoKeyVersions/1"), "a version ID is used once the material is checked");
}

#[tokio::test]
async fn expired_jobs_refuse_and_destroyed_imports_take_back_only_their_own_material() {
    let config = KmsConfig { min_destroy_scheduled_duration: ProtoDuration::from_secs(1), ..Default::default() };
    let clock = Arc::new(ManualClock::default());
    let s =
        start_with_clock(Backend::Sqlite, config, keyhold_crypto::KeyBytes::generate().unwrap(), clock.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    s.ok(Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), None).await;
    create_job(&s, "j", "RSA_OAEP_3072_SHA256_AES_256", dir).await;
    let job = format!("{RING}/importJobs/j");
    let body =
        json!({"purpose": "MAC", "versionTemplate": {"algorithm": "HMAC_SHA256"}, "destroyScheduledDuration": "1s"});
    let key = s
        .ok(Method::POST, &format!("{RING}/cryptoKeys?cryptoKeyId=k&skipInitialVersionCreation=true"), Some(body))
        .await;
    let key = key["name"].as_str().unwrap().to_string();
    std::fs::write(dir.join("a"), [1u8; 32]).unwrap();
    std::fs::write(dir.join("b"), [2u8; 32]).unwrap();
    let v = import(&s, &key, "HMAC_SHA256", &job, &wrap(dir, "j.pem", "a", "sha256", true)).await;
    let version = v["name"].as_str().unwrap().to_string();
    let tag = s.ok(Method::POST, &format!("{version}:macSign"), Some(json!({"data": b64(b"x")}))).await["mac"].clone();

    // Only a destroyed (or failed) imported version can be imported into again.
    let again = |file: &str| json!({"algorithm": "HMAC_SHA256", "importJob": job, "wrappedKey": b64(&wrap(dir, "j.pem", file, "sha256", true)), "cryptoKeyVersion": version});
    s.err(Method::POST, &format!("{key}/cryptoKeyVersions:import"), Some(again("a")), 400, "FAILED_PRECONDITION").await;
    s.ok(Method::POST, &format!("{version}:destroy"), Some(json!({}))).await;
    clock.advance(ProtoDuration::from_secs(2));
    s.kms.run_due_work().await.unwrap();
    assert_eq!(s.ok(Method::GET, &version, None).await["state"], "DESTROYED");
    // A destroyed imported version can be imported into again, so it cannot be deleted.
    let m = s.err(Method::DELETE, &version, None, 400, "FAILED_PRECONDITION").await;
    assert!(m.contains("imported key material"), "{m}");
    let m = s
        .err(Method::POST, &format!("{key}/cryptoKeyVersions:import"), Some(again("b")), 400, "INVALID_ARGUMENT")
        .await;
    assert!(m.contains("does not match"), "{m}");
    // The target is checked before anything is unwrapped: its algorithm, then that it exists.
    let wrong_alg = json!({"algorithm": "HMAC_SHA512", "importJob": job, "wrappedKey": b64(&[0; 400]), "cryptoKeyVersion": version});
    let m =
        s.err(Method::POST, &format!("{key}/cryptoKeyVersions:import"), Some(wrong_alg), 400, "INVALID_ARGUMENT").await;
    assert!(m.contains("same algorithm"), "{m}");
    let missing = json!({"algorithm": "HMAC_SHA256", "importJob": job, "wrappedKey": b64(&[0; 400]), "cryptoKeyVersion": format!("{key}/cryptoKeyVersions/9")});
    let m = s.err(Method::POST, &format!("{key}/cryptoKeyVersions:import"), Some(missing), 404, "NOT_FOUND").await;
    assert_eq!(m, format!("CryptoKeyVersion {key}/cryptoKeyVersions/9 not found."));
    let back = s.ok(Method::POST, &format!("{key}/cryptoKeyVersions:import"), Some(again("a"))).await;
    assert_eq!((back["name"].as_str().unwrap(), back["state"].as_str().unwrap()), (version.as_str(), "ENABLED"));
    assert!(back.get("destroyEventTime").is_none(), "{back}");
    let tag_again =
        s.ok(Method::POST, &format!("{version}:macSign"), Some(json!({"data": b64(b"x")}))).await["mac"].clone();
    assert_eq!(tag_again, tag, "the same key is back");

    // Three days on, the job has expired: it shows no public key and imports nothing.
    clock.advance(ProtoDuration::from_secs(3 * 24 * 3600));
    let expired = s.ok(Method::GET, &job, None).await;
    assert_eq!(expired["state"], "EXPIRED");
    assert_eq!(expired["expireEventTime"], expired["expireTime"]);
    assert!(expired.get("publicKey").is_none(), "{expired}");
    let body = json!({"algorithm": "HMAC_SHA256", "importJob": job, "wrappedKey": b64(&wrap(dir, "j.pem", "b", "sha256", true))});
    let m = s
        .err(Method::POST, &format!("{key}/cryptoKeyVersions:import"), Some(body.clone()), 400, "FAILED_PRECONDITION")
        .await;
    assert!(m.contains("EXPIRED"), "{m}");
    // The scheduler then erases its wrapping key, once.
    let wrapping_key = || {
        let conn = rusqlite::Connection::open(&s.db_file).unwrap();
        conn.query_row("SELECT wrapping_key IS NOT NULL FROM import_jobs WHERE name = ?1", [&job], |r| {
            r.get::<_, bool>(0)
        })
        .unwrap()
    };
    assert!(wrapping_key());
    assert_eq!(s.kms.run_due_work().await.unwrap().wrapping_keys_erased, 1);
    assert!(!wrapping_key(), "the expired job's wrapping key is gone");
    assert_eq!(s.kms.run_due_work().await.unwrap().wrapping_keys_erased, 0);
    let m =
        s.err(Method::POST, &format!("{key}/cryptoKeyVersions:import"), Some(body), 400, "FAILED_PRECONDITION").await;
    assert!(m.contains("EXPIRED"), "{m}");
}

/// Importing needs `cloudkms.importJobs.useToImport` on the job besides the right to create
/// versions of the key: an admin of the key alone is refused, until granted the importer role
/// on the job.
#[tokio::test]
async fn importing_needs_use_of_the_job_as_well_as_the_key() {
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    s.ok(Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), None).await;
    create_job(&s, "j", "RSA_OAEP_3072_SHA256_AES_256", dir).await;
    let job = format!("{RING}/importJobs/j");
    let key = create_key(&s, "k", "MAC", "HMAC_SHA256").await;
    let alice = "user:alice@example.com";
    s.grant(&key, "roles/cloudkms.admin", alice).await;
    let token = s.token_for(alice).await;
    std::fs::write(dir.join("m"), [3u8; 32]).unwrap();
    let body = json!({"algorithm": "HMAC_SHA256", "importJob": job, "wrappedKey": b64(&wrap(dir, "j.pem", "m", "sha256", true))});
    let path = format!("{key}/cryptoKeyVersions:import");
    let (status, v) = s.call_as(Some(&token), Method::POST, &path, Some(body.clone())).await;
    assert_eq!(status, 403, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().starts_with("Permission 'cloudkms.importJobs.useToImport' denied"),
        "{v}"
    );
    s.grant(&job, "roles/cloudkms.importer", alice).await;
    let (status, v) = s.call_as(Some(&token), Method::POST, &path, Some(body)).await;
    assert_eq!(status, 200, "{v}");
    // The importer alone may use the job but not create versions of the key.
    let bob = "user:bob@example.com";
    s.grant(&job, "roles/cloudkms.importer", bob).await;
    let token = s.token_for(bob).await;
    let body = json!({"algorithm": "HMAC_SHA256", "importJob": job, "wrappedKey": b64(&wrap(dir, "j.pem", "m", "sha256", true))});
    let (status, v) = s.call_as(Some(&token), Method::POST, &path, Some(body)).await;
    assert_eq!(status, 403, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().starts_with("Permission 'cloudkms.cryptoKeyVersions.create' denied"),
        "{v}"
    );
}
