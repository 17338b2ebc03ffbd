//! Signing, asymmetric decryption and MAC keys (issue 19) over the REST surface, on a real
//! SQLite file and a real PostgreSQL server. Every signature is verified, and every value for
//! `asymmetricDecrypt` encrypted, by the `openssl` command against the PEM that `getPublicKey`
//! hands out: nothing is checked with Keyhold's own code.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use keyhold_kms::KmsConfig;
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

fn crc(b: &[u8]) -> String {
    keyhold_crypto::crc32c(b).to_string()
}

fn sha(bits: u32, data: &[u8]) -> Vec<u8> {
    let alg = match bits {
        256 => &aws_lc_rs::digest::SHA256,
        384 => &aws_lc_rs::digest::SHA384,
        _ => &aws_lc_rs::digest::SHA512,
    };
    aws_lc_rs::digest::digest(alg, data).as_ref().to_vec()
}

/// Runs `openssl` with `args` in `dir`; whether it succeeded, and what it printed.
fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out =
        Command::new("openssl").args(args).current_dir(dir).output().expect("openssl is installed by scripts/test.sh");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Creates key `id` of `algorithm` (purpose from the algorithm), lets the scheduler generate
/// its first version, and returns the version's name.
async fn create_key(s: &Server, id: &str, purpose: &str, algorithm: &str) -> String {
    let key = s
        .ok(
            Method::POST,
            &format!("{RING}/cryptoKeys?cryptoKeyId={id}"),
            Some(json!({"purpose": purpose, "versionTemplate": {"algorithm": algorithm}})),
        )
        .await;
    assert_eq!(key["versionTemplate"]["algorithm"], algorithm);
    assert_eq!(key["versionTemplate"]["protectionLevel"], "SOFTWARE");
    assert!(key.get("primary").is_none(), "only ENCRYPT_DECRYPT keys have a primary: {key}");
    let name = format!("{RING}/cryptoKeys/{id}/cryptoKeyVersions/1");
    let v = s.ok(Method::GET, &name, None).await;
    let asymmetric = purpose.starts_with("ASYMMETRIC") || purpose == "KEY_ENCAPSULATION";
    if asymmetric {
        // As Cloud KMS: asymmetric versions start PENDING_GENERATION, without generateTime.
        assert_eq!(v["state"], "PENDING_GENERATION", "{v}");
        assert!(v.get("generateTime").is_none(), "{v}");
        let e = s
            .err(
                Method::POST,
                &format!("{name}:asymmetricSign"),
                Some(json!({"data": b64(b"x")})),
                400,
                "FAILED_PRECONDITION",
            )
            .await;
        assert_eq!(e, format!("{name} is not enabled, current state is: PENDING_GENERATION."));
        let done = s.kms.run_due_work().await.unwrap();
        assert_eq!(done.generated, 1);
    }
    let v = s.ok(Method::GET, &name, None).await;
    assert_eq!(v["state"], "ENABLED", "{v}");
    assert_eq!(v["algorithm"], algorithm);
    assert!(v["generateTime"].as_str().is_some(), "{v}");
    name
}

/// The version's public key: PEM with its CRC32C, written to `pub.pem` in `dir`.
async fn public_key(s: &Server, version: &str, algorithm: &str, dir: &Path) -> String {
    let pk = s.ok(Method::GET, &format!("{version}/publicKey"), None).await;
    let pem = pk["pem"].as_str().unwrap().to_string();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n") && pem.ends_with("-----END PUBLIC KEY-----\n"), "{pem}");
    assert_eq!(pk["pemCrc32c"], crc(pem.as_bytes()));
    assert_eq!(pk["algorithm"], algorithm);
    assert_eq!(pk["name"], version);
    assert_eq!(pk["protectionLevel"], "SOFTWARE");
    std::fs::write(dir.join("pub.pem"), &pem).unwrap();
    // The same key in DER, asked for by format.
    let der = s.ok(Method::GET, &format!("{version}/publicKey?publicKeyFormat=DER"), None).await;
    assert_eq!(der["publicKeyFormat"], "DER");
    assert!(der.get("pem").is_none(), "{der}");
    let bytes = unb64(&der["publicKey"]["data"]);
    assert_eq!(der["publicKey"]["crc32cChecksum"], crc(&bytes));
    std::fs::write(dir.join("pub.der"), &bytes).unwrap();
    let (ok, out) = openssl(dir, &["pkey", "-pubin", "-inform", "DER", "-in", "pub.der", "-out", "from-der.pem"]);
    assert!(ok, "{out}");
    assert_eq!(std::fs::read_to_string(dir.join("from-der.pem")).unwrap(), pem, "PEM and DER are the same key");
    pem
}

async fn signing_keys_sign_what_openssl_verifies(backend: Backend) {
    let s = start(backend, KmsConfig::default()).await;
    s.ok(Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), None).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let message = b"release v1.2.3 of something worth signing";
    std::fs::write(d.join("data"), message).unwrap();
    // (algorithm, hash bits (0: signs the data as it is), openssl's verification options)
    let cases: &[(&str, u32, &[&str])] = &[
        ("EC_SIGN_P256_SHA256", 256, &[]),
        ("EC_SIGN_P384_SHA384", 384, &[]),
        ("EC_SIGN_ED25519", 0, &[]),
        ("RSA_SIGN_PSS_2048_SHA256", 256, &["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest"]),
        ("RSA_SIGN_PKCS1_2048_SHA256", 256, &[]),
        ("RSA_SIGN_PKCS1_3072_SHA256", 256, &[]),
        ("RSA_SIGN_PSS_4096_SHA512", 512, &["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest"]),
    ];
    for (n, (alg, bits, opts)) in cases.iter().enumerate() {
        let version = create_key(&s, &format!("sign{n}"), "ASYMMETRIC_SIGN", alg).await;
        public_key(&s, &version, alg, d).await;
        let verify = |sig: &[u8]| {
            std::fs::write(d.join("sig"), sig).unwrap();
            if *bits == 0 {
                openssl(
                    d,
                    &["pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin", "-in", "data", "-sigfile", "sig"],
                )
            } else {
                let md = format!("-sha{bits}");
                let mut args = vec!["dgst", md.as_str(), "-verify", "pub.pem", "-signature", "sig"];
                args.extend_from_slice(opts);
                args.push("data");
                openssl(d, &args)
            }
        };
        // The data itself, with its CRC32C.
        let r = s
            .ok(
                Method::POST,
                &format!("{version}:asymmetricSign"),
                Some(json!({"data": b64(message), "dataCrc32c": crc(message)})),
            )
            .await;
        let sig = unb64(&r["signature"]);
        assert_eq!(r["signatureCrc32c"], crc(&sig));
        assert_eq!(r["verifiedDataCrc32c"], true);
        assert!(r.get("verifiedDigestCrc32c").is_none());
        assert_eq!(r["name"], version);
        assert_eq!(r["protectionLevel"], "SOFTWARE");
        let (ok, out) = verify(&sig);
        assert!(ok, "{alg}: openssl refused the signature of the data: {out}");
        // A signature of other data does not verify: the check can fail.
        let other =
            s.ok(Method::POST, &format!("{version}:asymmetricSign"), Some(json!({"data": b64(b"other")}))).await;
        assert!(!verify(&unb64(&other["signature"])).0, "{alg}");
        if *bits == 0 {
            let m = s
                .err(
                    Method::POST,
                    &format!("{version}:asymmetricSign"),
                    Some(json!({"digest": {"sha256": b64(&sha(256, message))}})),
                    400,
                    "INVALID_ARGUMENT",
                )
                .await;
            assert!(m.contains("signs the data itself"), "{m}");
            continue;
        }
        // A digest the client computed, in the field of the algorithm's hash.
        let digest = sha(*bits, message);
        let field = format!("sha{bits}");
        let r = s
            .ok(
                Method::POST,
                &format!("{version}:asymmetricSign"),
                Some(json!({"digest": {field.clone(): b64(&digest)}, "digestCrc32c": crc(&digest)})),
            )
            .await;
        assert_eq!(r["verifiedDigestCrc32c"], true);
        let (ok, out) = verify(&unb64(&r["signature"]));
        assert!(ok, "{alg}: openssl refused the signature of the digest: {out}");
        // The wrong hash's field, a digest of the wrong length, a bad checksum, both inputs.
        let wrong = if *bits == 256 { "sha384" } else { "sha256" };
        for body in [
            json!({"digest": {wrong: b64(&sha(if *bits == 256 { 384 } else { 256 }, message))}}),
            json!({"digest": {field.clone(): b64(&digest[1..])}}),
            json!({"digest": {field.clone(): b64(&digest)}, "digestCrc32c": crc(b"cosmic ray")}),
            json!({"digest": {field.clone(): b64(&digest)}, "data": b64(message)}),
            json!({}),
        ] {
            s.err(Method::POST, &format!("{version}:asymmetricSign"), Some(body), 400, "INVALID_ARGUMENT").await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_keys_sign_what_openssl_verifies_sqlite() {
    signing_keys_sign_what_openssl_verifies(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_keys_sign_what_openssl_verifies_postgres() {
    signing_keys_sign_what_openssl_verifies(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decryption_keys_decrypt_what_openssl_encrypted_to_their_public_key() {
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    s.ok(Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), None).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let secret = b"a 32-byte data encryption key!!!";
    std::fs::write(d.join("plain"), secret).unwrap();
    for (n, (alg, md)) in [
        ("RSA_DECRYPT_OAEP_2048_SHA256", "sha256"),
        ("RSA_DECRYPT_OAEP_3072_SHA256", "sha256"),
        ("RSA_DECRYPT_OAEP_2048_SHA1", "sha1"),
        ("RSA_DECRYPT_OAEP_4096_SHA512", "sha512"),
    ]
    .into_iter()
    .enumerate()
    {
        let version = create_key(&s, &format!("dec{n}"), "ASYMMETRIC_DECRYPT", alg).await;
        public_key(&s, &version, alg, d).await;
        let padding = ["-pkeyopt", "rsa_padding_mode:oaep"];
        let oaep_md = format!("rsa_oaep_md:{md}");
        let mgf1_md = format!("rsa_mgf1_md:{md}");
        let (ok, out) = openssl(
            d,
            &[
                "pkeyutl", "-encrypt", "-pubin", "-inkey", "pub.pem", "-in", "plain", "-out", "ct", padding[0],
                padding[1], "-pkeyopt", &oaep_md, "-pkeyopt", &mgf1_md,
            ],
        );
        assert!(ok, "{out}");
        let ct = std::fs::read(d.join("ct")).unwrap();
        let r = s
            .ok(
                Method::POST,
                &format!("{version}:asymmetricDecrypt"),
                Some(json!({"ciphertext": b64(&ct), "ciphertextCrc32c": crc(&ct)})),
            )
            .await;
        assert_eq!(unb64(&r["plaintext"]), secret, "{alg}");
        assert_eq!(r["plaintextCrc32c"], crc(secret));
        assert_eq!(r["verifiedCiphertextCrc32c"], true);
        assert_eq!(r["protectionLevel"], "SOFTWARE");
        // Tampered, truncated, or made for another hash: Cloud KMS's one answer.
        let mut bad = ct.clone();
        bad[7] ^= 1;
        for body in [json!({"ciphertext": b64(&bad)}), json!({"ciphertext": b64(&ct[1..])})] {
            let m =
                s.err(Method::POST, &format!("{version}:asymmetricDecrypt"), Some(body), 400, "INVALID_ARGUMENT").await;
            assert_eq!(m, "Decryption failed.");
        }
        s.err(
            Method::POST,
            &format!("{version}:asymmetricDecrypt"),
            Some(json!({"ciphertext": b64(&ct), "ciphertextCrc32c": crc(b"x")})),
            400,
            "INVALID_ARGUMENT",
        )
        .await;
        s.err(Method::POST, &format!("{version}:asymmetricDecrypt"), Some(json!({})), 400, "INVALID_ARGUMENT").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mac_keys_sign_and_verify_with_every_integrity_field() {
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    s.ok(Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), None).await;
    let data = b"user=42;exp=1767225600";
    for (n, (alg, len)) in
        [("HMAC_SHA256", 32), ("HMAC_SHA1", 20), ("HMAC_SHA224", 28), ("HMAC_SHA384", 48), ("HMAC_SHA512", 64)]
            .into_iter()
            .enumerate()
    {
        // MAC versions are ENABLED at once (create_key checks), as Cloud KMS's.
        let version = create_key(&s, &format!("mac{n}"), "MAC", alg).await;
        let r = s
            .ok(Method::POST, &format!("{version}:macSign"), Some(json!({"data": b64(data), "dataCrc32c": crc(data)})))
            .await;
        let mac = unb64(&r["mac"]);
        assert_eq!(mac.len(), len, "{alg}");
        assert_eq!(r["macCrc32c"], crc(&mac));
        assert_eq!(r["verifiedDataCrc32c"], true);
        assert_eq!(r["name"], version);
        // Deterministic: the same data, the same tag.
        let again = s.ok(Method::POST, &format!("{version}:macSign"), Some(json!({"data": b64(data)}))).await;
        assert_eq!(unb64(&again["mac"]), mac);
        assert!(again.get("verifiedDataCrc32c").is_none());
        let ok = s
            .ok(
                Method::POST,
                &format!("{version}:macVerify"),
                Some(json!({"data": b64(data), "dataCrc32c": crc(data), "mac": b64(&mac), "macCrc32c": crc(&mac)})),
            )
            .await;
        assert_eq!(ok["success"], true);
        assert_eq!(ok["verifiedSuccessIntegrity"], true);
        assert_eq!(ok["verifiedDataCrc32c"], true);
        assert_eq!(ok["verifiedMacCrc32c"], true);
        let mut bad = mac.clone();
        bad[0] ^= 1;
        for (d, m) in [(&data[..], &bad), (&b"user=43;exp=1767225600"[..], &mac)] {
            let no =
                s.ok(Method::POST, &format!("{version}:macVerify"), Some(json!({"data": b64(d), "mac": b64(m)}))).await;
            assert!(no.get("success").is_none() && no.get("verifiedSuccessIntegrity").is_none(), "{no}");
        }
        for body in [
            json!({"data": b64(data), "mac": b64(&mac[1..])}),
            json!({"data": b64(data), "mac": b64(&mac), "macCrc32c": crc(b"x")}),
            json!({"data": b64(data), "dataCrc32c": crc(b"x"), "mac": b64(&mac)}),
            json!({"mac": b64(&mac)}),
            json!({"data": b64(data)}),
        ] {
            s.err(Method::POST, &format!("{version}:macVerify"), Some(body), 400, "INVALID_ARGUMENT").await;
        }
        s.err(Method::POST, &format!("{version}:macSign"), Some(json!({})), 400, "INVALID_ARGUMENT").await;
        let big = vec![0u8; 64 * 1024 + 1];
        s.err(Method::POST, &format!("{version}:macSign"), Some(json!({"data": b64(&big)})), 400, "INVALID_ARGUMENT")
            .await;
    }
}

/// The contract tests' order: NOT_FOUND before anything; then not ENABLED, then the wrong
/// purpose (FAILED_PRECONDITION) even with no body at all; and creation refuses algorithms of
/// another purpose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_come_in_cloud_kms_order_with_its_codes() {
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    s.ok(Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), None).await;
    let sign = create_key(&s, "sign", "ASYMMETRIC_SIGN", "EC_SIGN_P256_SHA256").await;
    let mac = create_key(&s, "mac", "MAC", "HMAC_SHA256").await;
    s.ok(Method::POST, &format!("{RING}/cryptoKeys?cryptoKeyId=sym"), Some(json!({"purpose": "ENCRYPT_DECRYPT"})))
        .await;
    let sym = format!("{RING}/cryptoKeys/sym/cryptoKeyVersions/1");
    let missing = format!("{RING}/cryptoKeys/nope/cryptoKeyVersions/1");
    for verb in ["asymmetricSign", "asymmetricDecrypt", "macSign", "macVerify"] {
        s.err(Method::POST, &format!("{missing}:{verb}"), Some(json!({})), 404, "NOT_FOUND").await;
        s.err(Method::POST, &format!("{sign}9:{verb}"), Some(json!({})), 404, "NOT_FOUND").await;
    }
    s.err(Method::GET, &format!("{missing}/publicKey"), None, 404, "NOT_FOUND").await;
    // Wrong purpose: each method on a key of another purpose.
    for (version, verb) in [
        (&sym, "asymmetricSign"),
        (&mac, "asymmetricSign"),
        (&sign, "asymmetricDecrypt"),
        (&sign, "macSign"),
        (&sym, "macVerify"),
    ] {
        let m = s.err(Method::POST, &format!("{version}:{verb}"), Some(json!({})), 400, "FAILED_PRECONDITION").await;
        assert!(m.contains("which may not be used for"), "{m}");
    }
    for version in [&sym, &mac] {
        s.err(Method::GET, &format!("{version}/publicKey"), None, 400, "FAILED_PRECONDITION").await;
    }
    s.err(Method::GET, &format!("{sign}/publicKey?publicKeyFormat=NIST_PQC"), None, 400, "INVALID_ARGUMENT").await;
    s.err(Method::GET, &format!("{sign}/publicKey?publicKeyFormat=SIDEWAYS"), None, 400, "INVALID_ARGUMENT").await;
    // Disabled: FAILED_PRECONDITION with Cloud KMS's words, before the (empty) body is read.
    for version in [&sign, &mac] {
        s.ok(Method::PATCH, &format!("{version}?updateMask=state"), Some(json!({"state": "DISABLED"}))).await;
    }
    for (version, verb) in [(&sign, "asymmetricSign"), (&mac, "macSign"), (&mac, "macVerify")] {
        let m = s.err(Method::POST, &format!("{version}:{verb}"), Some(json!({})), 400, "FAILED_PRECONDITION").await;
        assert_eq!(m, format!("{version} is not enabled, current state is: DISABLED."));
    }
    s.err(Method::GET, &format!("{sign}/publicKey"), None, 400, "FAILED_PRECONDITION").await;
    // Creation: the algorithm is required and must be one of the purpose's.
    for (purpose, template) in [
        ("ASYMMETRIC_SIGN", json!({})),
        ("ASYMMETRIC_DECRYPT", json!({"algorithm": "EC_SIGN_P256_SHA256"})),
        ("MAC", json!({"algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION"})),
        ("ENCRYPT_DECRYPT", json!({"algorithm": "HMAC_SHA256"})),
        // As Cloud KMS: secp256k1 is an HSM-only algorithm.
        ("ASYMMETRIC_SIGN", json!({"algorithm": "EC_SIGN_SECP256K1_SHA256"})),
    ] {
        s.err(
            Method::POST,
            &format!("{RING}/cryptoKeys?cryptoKeyId=bad"),
            Some(json!({"purpose": purpose, "versionTemplate": template})),
            400,
            "INVALID_ARGUMENT",
        )
        .await;
    }
    // Asymmetric and MAC keys do not rotate (not even once, by nextRotationTime alone) and have
    // no primary.
    for (purpose, algorithm, schedule) in [
        (
            "ASYMMETRIC_SIGN",
            "EC_SIGN_P256_SHA256",
            json!({"rotationPeriod": "86400s", "nextRotationTime": "2030-01-01T00:00:00Z"}),
        ),
        ("ASYMMETRIC_SIGN", "EC_SIGN_P256_SHA256", json!({"nextRotationTime": "2030-01-01T00:00:00Z"})),
        ("MAC", "HMAC_SHA256", json!({"nextRotationTime": "2030-01-01T00:00:00Z"})),
    ] {
        let mut body = json!({"purpose": purpose, "versionTemplate": {"algorithm": algorithm}});
        body.as_object_mut().unwrap().extend(schedule.as_object().unwrap().clone());
        let m = s
            .err(Method::POST, &format!("{RING}/cryptoKeys?cryptoKeyId=rot"), Some(body), 400, "INVALID_ARGUMENT")
            .await;
        assert!(m.contains("Only ENCRYPT_DECRYPT keys support automatic rotation"), "{m}");
    }
    s.err(
        Method::PATCH,
        &format!("{RING}/cryptoKeys/mac?updateMask=nextRotationTime"),
        Some(json!({"nextRotationTime": "2030-01-01T00:00:00Z"})),
        400,
        "INVALID_ARGUMENT",
    )
    .await;
    // The default algorithm can change within the purpose, to one this level serves.
    let k = s
        .ok(
            Method::PATCH,
            &format!("{RING}/cryptoKeys/sign?updateMask=versionTemplate.algorithm"),
            Some(json!({"versionTemplate": {"algorithm": "EC_SIGN_P384_SHA384"}})),
        )
        .await;
    assert_eq!(k["versionTemplate"]["algorithm"], "EC_SIGN_P384_SHA384");
    for algorithm in ["EC_SIGN_SECP256K1_SHA256", "HMAC_SHA256"] {
        s.err(
            Method::PATCH,
            &format!("{RING}/cryptoKeys/sign?updateMask=versionTemplate.algorithm"),
            Some(json!({"versionTemplate": {"algorithm": algorithm}})),
            400,
            "INVALID_ARGUMENT",
        )
        .await;
    }
    // A new asymmetric version cannot be asked for DISABLED: it is generated, then enabled.
    s.err(
        Method::POST,
        &format!("{RING}/cryptoKeys/sign/cryptoKeyVersions"),
        Some(json!({"state": "DISABLED"})),
        400,
        "INVALID_ARGUMENT",
    )
    .await;
    s.err(
        Method::POST,
        &format!("{RING}/cryptoKeys/sign:updatePrimaryVersion"),
        Some(json!({"cryptoKeyVersionId": "1"})),
        400,
        "FAILED_PRECONDITION",
    )
    .await;
    // A second version of a signing key starts PENDING_GENERATION too, then is enabled.
    let v2 = s.ok(Method::POST, &format!("{RING}/cryptoKeys/sign/cryptoKeyVersions"), Some(json!({}))).await;
    assert_eq!(v2["state"], "PENDING_GENERATION");
    assert_eq!(v2["name"], format!("{RING}/cryptoKeys/sign/cryptoKeyVersions/2"));
    // While pending it can be neither destroyed nor disabled.
    s.err(
        Method::POST,
        &format!("{RING}/cryptoKeys/sign/cryptoKeyVersions/2:destroy"),
        Some(json!({})),
        400,
        "FAILED_PRECONDITION",
    )
    .await;
    assert_eq!(s.kms.run_due_work().await.unwrap().generated, 1);
    assert_eq!(s.kms.run_due_work().await.unwrap().generated, 0, "generated once");
    let v2 = s.ok(Method::GET, &format!("{RING}/cryptoKeys/sign/cryptoKeyVersions/2"), None).await;
    assert_eq!(v2["state"], "ENABLED");
    assert_eq!(v2["algorithm"], "EC_SIGN_P384_SHA384", "made with the key's current default algorithm");
    // The scheduler's pass wrote nothing for versions it had no work on: no destruction entry.
    let log = s.ok(Method::GET, "projects/p/auditLogs?pageSize=1000", None).await;
    let entries = log["entries"].as_array().unwrap();
    assert!(!entries.iter().any(|e| e["protoPayload"]["methodName"] == "ScheduledDestruction"));
    let generated: Vec<&Value> =
        entries.iter().filter(|e| e["protoPayload"]["methodName"] == "GenerateCryptoKeyVersion").collect();
    assert_eq!(generated.len(), 2, "one entry per generated key (versions 1 and 2 of `sign`)");
}

/// Two nodes on one PostgreSQL database both run their scheduler on a pending version: one
/// generation is recorded, and the other node then signs with that key (its cache follows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_generation_wins_across_nodes() {
    let (a, b) = two_postgres_nodes().await;
    a.ok(Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), None).await;
    let body = json!({"purpose": "ASYMMETRIC_SIGN", "versionTemplate": {"algorithm": "RSA_SIGN_PSS_2048_SHA256"}});
    a.ok(Method::POST, &format!("{RING}/cryptoKeys?cryptoKeyId=k"), Some(body)).await;
    let version = format!("{RING}/cryptoKeys/k/cryptoKeyVersions/1");
    // Node b caches the key while its version is pending.
    b.err(
        Method::POST,
        &format!("{version}:asymmetricSign"),
        Some(json!({"data": b64(b"x")})),
        400,
        "FAILED_PRECONDITION",
    )
    .await;
    let (da, db) = tokio::join!(a.kms.run_due_work(), b.kms.run_due_work());
    assert_eq!(da.unwrap().generated + db.unwrap().generated, 1, "exactly one node's key is recorded");
    let dir = tempfile::tempdir().unwrap();
    public_key(&a, &version, "RSA_SIGN_PSS_2048_SHA256", dir.path()).await;
    std::fs::write(dir.path().join("data"), b"x").unwrap();
    // Node b sees the enabled version at once (a pending version is read again), and its
    // signature verifies with the public key node a hands out: the same key.
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let sig = b.ok(Method::POST, &format!("{version}:asymmetricSign"), Some(json!({"data": b64(b"x")}))).await;
    std::fs::write(dir.path().join("sig"), unb64(&sig["signature"])).unwrap();
    let (ok, out) = openssl(
        dir.path(),
        &[
            "dgst",
            "-sha256",
            "-verify",
            "pub.pem",
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            "rsa_pss_saltlen:digest",
            "-signature",
            "sig",
            "data",
        ],
    );
    assert!(ok, "{out}");
}

/// Who may call the new methods, and that each call leaves its audit entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_grant_each_method_and_every_call_is_audited() {
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    s.ok(Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), None).await;
    let sign = create_key(&s, "sign", "ASYMMETRIC_SIGN", "EC_SIGN_P256_SHA256").await;
    let mac = create_key(&s, "mac", "MAC", "HMAC_SHA256").await;
    let tag = s.ok(Method::POST, &format!("{mac}:macSign"), Some(json!({"data": b64(b"d")}))).await["mac"].clone();
    let calls = [
        ("AsymmetricSign", Method::POST, format!("{sign}:asymmetricSign"), Some(json!({"data": b64(b"d")}))),
        ("GetPublicKey", Method::GET, format!("{sign}/publicKey"), None),
        ("MacSign", Method::POST, format!("{mac}:macSign"), Some(json!({"data": b64(b"d")}))),
        ("MacVerify", Method::POST, format!("{mac}:macVerify"), Some(json!({"data": b64(b"d"), "mac": tag}))),
    ];
    // (role, which of the four calls it may make)
    let roles = [
        ("roles/cloudkms.signer", [true, false, true, false]),
        ("roles/cloudkms.verifier", [false, true, false, true]),
        ("roles/cloudkms.signerVerifier", [true, true, true, true]),
        ("roles/cloudkms.publicKeyViewer", [false, true, false, false]),
        ("roles/cloudkms.cryptoKeyEncrypterDecrypter", [false, false, false, false]),
        ("roles/cloudkms.admin", [false, false, false, false]),
    ];
    for (role, allowed) in roles {
        let member = format!("user:{}@example.com", role.trim_start_matches("roles/cloudkms."));
        s.grant("projects/p", role, &member).await;
        let token = s.token_for(&member).await;
        for ((method, verb, path, body), may) in calls.iter().zip(allowed) {
            let (status, v) = s.call_as(Some(&token), verb.clone(), path, body.clone()).await;
            assert_eq!(status, if may { 200 } else { 403 }, "{role} {method}: {v}");
        }
        s.revoke("projects/p", &member).await;
    }
    let log = s.ok(Method::GET, "projects/p/auditLogs?pageSize=1000", None).await;
    let entries = log["entries"].as_array().unwrap();
    for (method, ..) in &calls {
        let of_method: Vec<&Value> = entries.iter().filter(|e| e["protoPayload"]["methodName"] == *method).collect();
        assert!(
            of_method.iter().any(|e| e["protoPayload"]["status"].get("code").is_none()),
            "{method}: a call that succeeded"
        );
        assert!(of_method.iter().any(|e| e["protoPayload"]["status"]["code"] == 7), "{method}: a denied call too");
    }
}

/// Raw AES keys: every algorithm round-trips with every integrity field (sent for empty fields
/// too, as gcloud does), AES-GCM authenticates its AAD and chooses its nonce, AES-CBC and
/// AES-CTR take the caller's IV (the same IV, the same ciphertext) and no AAD.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_keys_encrypt_and_decrypt_with_every_integrity_field() {
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    s.ok(Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), None).await;
    let plaintext = [0x42u8; 48];
    for (n, alg) in ["AES_128_GCM", "AES_256_GCM", "AES_128_CBC", "AES_256_CBC", "AES_128_CTR", "AES_256_CTR"]
        .into_iter()
        .enumerate()
    {
        let version = create_key(&s, &format!("raw{n}"), "RAW_ENCRYPT_DECRYPT", alg).await;
        let gcm = alg.ends_with("GCM");
        let aad: &[u8] = if gcm { b"record 7" } else { b"" };
        let r = s
            .ok(
                Method::POST,
                &format!("{version}:rawEncrypt"),
                Some(json!({"plaintext": b64(&plaintext), "plaintextCrc32c": crc(&plaintext),
                    "additionalAuthenticatedData": b64(aad), "additionalAuthenticatedDataCrc32c": crc(aad),
                    "initializationVectorCrc32c": crc(b"")})),
            )
            .await;
        let ct = unb64(&r["ciphertext"]);
        let iv = unb64(&r["initializationVector"]);
        assert_eq!(r["ciphertextCrc32c"], crc(&ct));
        assert_eq!(r["initializationVectorCrc32c"], crc(&iv));
        for f in [
            "verifiedPlaintextCrc32c",
            "verifiedAdditionalAuthenticatedDataCrc32c",
            "verifiedInitializationVectorCrc32c",
        ] {
            assert_eq!(r[f], true, "{alg} {f}: {r}");
        }
        assert_eq!(r["name"], version);
        assert_eq!(iv.len(), if gcm { 12 } else { 16 }, "{alg}");
        assert_eq!(ct.len(), plaintext.len() + if gcm { 16 } else { 0 }, "{alg}");
        assert_eq!(r.get("tagLength").and_then(Value::as_i64).unwrap_or(0), if gcm { 16 } else { 0 });
        let d = s
            .ok(
                Method::POST,
                &format!("{version}:rawDecrypt"),
                Some(json!({"ciphertext": b64(&ct), "initializationVector": b64(&iv),
                    "additionalAuthenticatedData": b64(aad), "ciphertextCrc32c": crc(&ct),
                    "initializationVectorCrc32c": crc(&iv), "additionalAuthenticatedDataCrc32c": crc(aad)})),
            )
            .await;
        assert_eq!(unb64(&d["plaintext"]), plaintext, "{alg}");
        assert_eq!(d["plaintextCrc32c"], crc(&plaintext));
        for f in [
            "verifiedCiphertextCrc32c",
            "verifiedInitializationVectorCrc32c",
            "verifiedAdditionalAuthenticatedDataCrc32c",
        ] {
            assert_eq!(d[f], true, "{alg} {f}");
        }
        let decrypt = |ct: &[u8], iv: &[u8], aad: &[u8]| json!({"ciphertext": b64(ct), "initializationVector": b64(iv), "additionalAuthenticatedData": b64(aad)});
        let mut tampered = ct.clone();
        tampered[0] ^= 1;
        if gcm {
            // Authenticated: another AAD or a flipped bit fails, with one message.
            for body in [decrypt(&ct, &iv, b"record 8"), decrypt(&tampered, &iv, aad)] {
                let m =
                    s.err(Method::POST, &format!("{version}:rawDecrypt"), Some(body), 400, "INVALID_ARGUMENT").await;
                assert_eq!(m, "Decryption failed.");
            }
            // The nonce is the server's, never the caller's.
            let body = json!({"plaintext": b64(&plaintext), "initializationVector": b64(&[1; 12])});
            let m = s.err(Method::POST, &format!("{version}:rawEncrypt"), Some(body), 400, "INVALID_ARGUMENT").await;
            assert!(m.contains("chosen by the server"), "{m}");
            let mut body = decrypt(&ct, &iv, aad);
            body["tagLength"] = json!(12);
            s.err(Method::POST, &format!("{version}:rawDecrypt"), Some(body), 400, "INVALID_ARGUMENT").await;
        } else {
            // Not authenticated: a flipped bit decrypts to something else.
            let d = s.ok(Method::POST, &format!("{version}:rawDecrypt"), Some(decrypt(&tampered, &iv, b""))).await;
            assert_ne!(unb64(&d["plaintext"]), plaintext);
            // The caller's IV is used: the same IV and plaintext, the same ciphertext.
            let fixed = [7u8; 16];
            let body = json!({"plaintext": b64(&plaintext), "initializationVector": b64(&fixed)});
            let a = s.ok(Method::POST, &format!("{version}:rawEncrypt"), Some(body.clone())).await;
            let b = s.ok(Method::POST, &format!("{version}:rawEncrypt"), Some(body)).await;
            assert_eq!(a["ciphertext"], b["ciphertext"]);
            assert_eq!(unb64(&a["initializationVector"]), fixed);
            for body in [
                json!({"plaintext": b64(&plaintext), "additionalAuthenticatedData": b64(b"x")}),
                json!({"plaintext": b64(&plaintext), "initializationVector": b64(&[1; 12])}),
            ] {
                s.err(Method::POST, &format!("{version}:rawEncrypt"), Some(body), 400, "INVALID_ARGUMENT").await;
            }
            if alg.contains("CBC") {
                let m = s
                    .err(
                        Method::POST,
                        &format!("{version}:rawEncrypt"),
                        Some(json!({"plaintext": b64(&plaintext[..15])})),
                        400,
                        "INVALID_ARGUMENT",
                    )
                    .await;
                assert!(m.contains("multiple of 16"), "{m}");
            }
        }
        // Required fields and integrity fields, both ways.
        for (body, says) in [
            (
                json!({"ciphertext": b64(&ct), "additionalAuthenticatedData": b64(aad)}),
                "initialization_vector is required",
            ),
            (
                json!({"ciphertext": b64(&ct), "initializationVector": b64(&iv), "additionalAuthenticatedData": b64(aad),
                    "ciphertextCrc32c": crc(b"x")}),
                "did not match",
            ),
            (
                json!({"ciphertext": b64(&ct), "initializationVector": b64(&iv), "additionalAuthenticatedData": b64(aad),
                    "initializationVectorCrc32c": crc(b"x")}),
                "did not match",
            ),
            (json!({"initializationVector": b64(&iv)}), "ciphertext is required"),
        ] {
            let m = s.err(Method::POST, &format!("{version}:rawDecrypt"), Some(body), 400, "INVALID_ARGUMENT").await;
            assert!(m.contains(says), "{alg}: {m}");
        }
        for (body, says) in [
            (json!({}), "plaintext is required"),
            (json!({"plaintext": b64(&plaintext), "plaintextCrc32c": crc(b"x")}), "did not match"),
        ] {
            let m = s.err(Method::POST, &format!("{version}:rawEncrypt"), Some(body), 400, "INVALID_ARGUMENT").await;
            assert!(m.contains(says), "{alg}: {m}");
        }
    }
    // As Cloud KMS: AES-CBC and AES-CTR also need manageRawAesCbcKeys / manageRawAesCtrKeys (with
    // CTR, encrypting a ciphertext decrypts it); AES-GCM needs only useToEncrypt / useToDecrypt.
    let member = "user:raw-user@example.com";
    s.grant("projects/p", "roles/cloudkms.cryptoKeyEncrypterDecrypter", member).await;
    let token = s.token_for(member).await;
    let versions = [0, 2, 4].map(|n| format!("{RING}/cryptoKeys/raw{n}/cryptoKeyVersions/1"));
    let attempt = |v: &str| {
        let (path, body) = (format!("{v}:rawEncrypt"), json!({"plaintext": b64(&plaintext)}));
        let token = token.clone();
        let s = &s;
        async move { s.call_as(Some(&token), Method::POST, &path, Some(body)).await }
    };
    let (gcm, cbc, ctr) = (attempt(&versions[0]).await, attempt(&versions[1]).await, attempt(&versions[2]).await);
    assert_eq!(gcm.0, 200, "{}", gcm.1);
    for ((status, v), permission) in [(cbc, "manageRawAesCbcKeys"), (ctr, "manageRawAesCtrKeys")] {
        assert_eq!(status, 403, "{v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(permission), "{v}");
    }
    s.grant("projects/p", "roles/cloudkms.expertRawAesCtr", member).await;
    assert_eq!(attempt(&versions[2]).await.0, 200, "the expert role adds CTR");
    assert_eq!(attempt(&versions[1]).await.0, 403, "and CBC still needs its own");
    // Wrong purpose both ways.
    let mac = create_key(&s, "mac", "MAC", "HMAC_SHA256").await;
    let raw = format!("{RING}/cryptoKeys/raw0/cryptoKeyVersions/1");
    s.err(Method::POST, &format!("{mac}:rawEncrypt"), Some(json!({})), 400, "FAILED_PRECONDITION").await;
    s.err(Method::POST, &format!("{raw}:macSign"), Some(json!({})), 400, "FAILED_PRECONDITION").await;
    s.err(Method::GET, &format!("{raw}/publicKey"), None, 400, "FAILED_PRECONDITION").await;
}

/// The expert permission of a raw AES-CBC version is checked on a version this node has not
/// seen yet (created on another node a moment ago) as on any other: the check reads the key
/// again, as the operation does, instead of letting the unknown version pass. Node b does not
/// poll for changes here, so only that reading can show it the new version.
#[tokio::test]
async fn raw_expert_permission_holds_for_a_version_made_on_another_node() {
    let quiet = KmsConfig { change_poll_interval: std::time::Duration::from_secs(3600), ..KmsConfig::default() };
    let (a, b) = two_postgres_nodes_with(quiet).await;
    a.ok(Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), None).await;
    let body = json!({"purpose": "RAW_ENCRYPT_DECRYPT", "versionTemplate": {"algorithm": "AES_128_CBC"}});
    a.ok(Method::POST, &format!("{RING}/cryptoKeys?cryptoKeyId=cbc"), Some(body)).await;
    let member = "user:raw-user@example.com";
    a.grant("projects/p", "roles/cloudkms.cryptoKeyEncrypterDecrypter", member).await;
    let token = a.token_for(member).await;
    let plaintext = [7u8; 16];
    let attempt = |v: u32| {
        let path = format!("{RING}/cryptoKeys/cbc/cryptoKeyVersions/{v}:rawEncrypt");
        let (token, b) = (token.clone(), &b);
        async move { b.call_as(Some(&token), Method::POST, &path, Some(json!({"plaintext": b64(&plaintext)}))).await }
    };
    // Node b caches the key with its one version.
    let (status, v) = attempt(1).await;
    assert_eq!(status, 403, "{v}");
    a.ok(Method::POST, &format!("{RING}/cryptoKeys/cbc/cryptoKeyVersions"), Some(json!({}))).await;
    // Past the cache's minimum interval between two readings of one key.
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let (status, v) = attempt(2).await;
    assert_eq!(status, 403, "version 2, new to node b, needs the permission too: {v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("manageRawAesCbcKeys"), "{v}");
    // The owner, on node b, encrypts with it: the version is there.
    let ok = b
        .ok(
            Method::POST,
            &format!("{RING}/cryptoKeys/cbc/cryptoKeyVersions/2:rawEncrypt"),
            Some(json!({"plaintext": b64(&plaintext)})),
        )
        .await;
    assert_eq!(unb64(&ok["initializationVector"]).len(), 16);
}

/// ML-KEM keys: the public key as FIPS 203 raw bytes (`NIST_PQC`) and as a SubjectPublicKeyInfo
/// that openssl-style tools read (PEM, DER); `decapsulate` gives the secret the sender derived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ml_kem_keys_decapsulate_what_their_public_key_encapsulated() {
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    s.ok(Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), None).await;
    for (n, (alg, kem, public_len)) in
        [("ML_KEM_768", &aws_lc_rs::kem::ML_KEM_768, 1184), ("ML_KEM_1024", &aws_lc_rs::kem::ML_KEM_1024, 1568)]
            .into_iter()
            .enumerate()
    {
        let version = create_key(&s, &format!("kem{n}"), "KEY_ENCAPSULATION", alg).await;
        // Post-quantum public keys need a format, as Cloud KMS says.
        let m = s.err(Method::GET, &format!("{version}/publicKey"), None, 400, "INVALID_ARGUMENT").await;
        assert!(m.contains("publicKeyFormat is required"), "{m}");
        let raw = s.ok(Method::GET, &format!("{version}/publicKey?publicKeyFormat=NIST_PQC"), None).await;
        let public = unb64(&raw["publicKey"]["data"]);
        assert_eq!(public.len(), public_len);
        assert_eq!(raw["publicKey"]["crc32cChecksum"], crc(&public));
        let der = s.ok(Method::GET, &format!("{version}/publicKey?publicKeyFormat=DER"), None).await;
        let der = unb64(&der["publicKey"]["data"]);
        assert!(der.ends_with(&public) && der.len() == public.len() + 22, "SPKI = the fixed head + the raw key");
        let pem = s.ok(Method::GET, &format!("{version}/publicKey?publicKeyFormat=PEM"), None).await;
        assert!(pem["pem"].as_str().unwrap().starts_with("-----BEGIN PUBLIC KEY-----\n"));
        // A sender encapsulates to the raw public key; the KMS recovers the same secret.
        let sender = aws_lc_rs::kem::EncapsulationKey::new(kem, &public).unwrap();
        let (ct, shared) = sender.encapsulate().unwrap();
        let r = s
            .ok(
                Method::POST,
                &format!("{version}:decapsulate"),
                Some(json!({"ciphertext": b64(ct.as_ref()), "ciphertextCrc32c": crc(ct.as_ref())})),
            )
            .await;
        assert_eq!(unb64(&r["sharedSecret"]), shared.as_ref(), "{alg}");
        assert_eq!(r["sharedSecretCrc32c"], crc(shared.as_ref()));
        assert_eq!(r["verifiedCiphertextCrc32c"], true);
        assert_eq!(r["name"], version);
        for body in [
            json!({}),
            json!({"ciphertext": b64(&ct.as_ref()[1..])}),
            json!({"ciphertext": b64(ct.as_ref()), "ciphertextCrc32c": crc(b"x")}),
        ] {
            s.err(Method::POST, &format!("{version}:decapsulate"), Some(body), 400, "INVALID_ARGUMENT").await;
        }
        s.err(Method::POST, &format!("{version}:asymmetricDecrypt"), Some(json!({})), 400, "FAILED_PRECONDITION").await;
    }
    let sign = create_key(&s, "sign", "ASYMMETRIC_SIGN", "EC_SIGN_P256_SHA256").await;
    s.err(Method::POST, &format!("{sign}:decapsulate"), Some(json!({})), 400, "FAILED_PRECONDITION").await;
    s.err(Method::GET, &format!("{sign}/publicKey?publicKeyFormat=NIST_PQC"), None, 400, "INVALID_ARGUMENT").await;
}

/// X-Wing (draft-connolly-cfrg-xwing-kem-06) checked against an independent encapsulation built
/// here from AWS-LC's ML-KEM-768, X25519 and SHA3-256 by the draft's combiner: the KMS (RustCrypto's
/// `x-wing`) recovers the same shared secret. The public key comes as `XWING_RAW_BYTES` only.
#[tokio::test]
async fn x_wing_keys_decapsulate_what_an_independent_sender_encapsulated() {
    use aws_lc_rs::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey};
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    s.ok(Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), None).await;
    let version = create_key(&s, "xwing", "KEY_ENCAPSULATION", "KEM_XWING").await;
    for format in ["", "?publicKeyFormat=PEM", "?publicKeyFormat=DER", "?publicKeyFormat=NIST_PQC"] {
        let m = s.err(Method::GET, &format!("{version}/publicKey{format}"), None, 400, "INVALID_ARGUMENT").await;
        assert!(m.contains("XWING_RAW_BYTES is required"), "{format}: {m}");
    }
    let raw = s.ok(Method::GET, &format!("{version}/publicKey?publicKeyFormat=XWING_RAW_BYTES"), None).await;
    assert_eq!(raw["publicKeyFormat"], "XWING_RAW_BYTES");
    assert_eq!(raw["algorithm"], "KEM_XWING");
    assert!(raw.get("pem").is_none(), "{raw}");
    let public = unb64(&raw["publicKey"]["data"]);
    assert_eq!(public.len(), 1216, "ML-KEM-768's 1184 bytes, then X25519's 32");
    assert_eq!(raw["publicKey"]["crc32cChecksum"], crc(&public));
    let (pk_m, pk_x) = public.split_at(1184);

    // The sender: ML-KEM-768 to pk_M, an ephemeral X25519 key against pk_X, and the combiner
    // SHA3-256(ss_M || ss_X || ct_X || pk_X || "\.//^\").
    let (ct_m, ss_m) =
        aws_lc_rs::kem::EncapsulationKey::new(&aws_lc_rs::kem::ML_KEM_768, pk_m).unwrap().encapsulate().unwrap();
    let ephemeral = EphemeralPrivateKey::generate(&agreement::X25519, &aws_lc_rs::rand::SystemRandom::new()).unwrap();
    let ct_x = ephemeral.compute_public_key().unwrap().as_ref().to_vec();
    let ss_x = agreement::agree_ephemeral(ephemeral, UnparsedPublicKey::new(&agreement::X25519, pk_x), (), |k| {
        Ok::<_, ()>(k.to_vec())
    })
    .unwrap();
    let label = br"\.//^\";
    let combined = [ss_m.as_ref(), &ss_x, &ct_x, pk_x, label].concat();
    let shared = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA3_256, &combined);
    let ct = [ct_m.as_ref(), &ct_x].concat();
    assert_eq!(ct.len(), 1120);
    let r = s
        .ok(
            Method::POST,
            &format!("{version}:decapsulate"),
            Some(json!({"ciphertext": b64(&ct), "ciphertextCrc32c": crc(&ct)})),
        )
        .await;
    assert_eq!(unb64(&r["sharedSecret"]), shared.as_ref(), "the KMS's X-Wing is the draft's");
    assert_eq!(r["sharedSecretCrc32c"], crc(shared.as_ref()));
    assert_eq!(r["verifiedCiphertextCrc32c"], true);
    // Another X25519 share gives another secret (no error: nothing to learn from); a ciphertext
    // of the wrong length is refused.
    let mut other = ct.clone();
    other[1100] ^= 1;
    let r2 = s.ok(Method::POST, &format!("{version}:decapsulate"), Some(json!({"ciphertext": b64(&other)}))).await;
    assert_ne!(unb64(&r2["sharedSecret"]), shared.as_ref());
    let short = json!({"ciphertext": b64(&ct[..1119])});
    s.err(Method::POST, &format!("{version}:decapsulate"), Some(short), 400, "INVALID_ARGUMENT").await;
}

#[tokio::test]
async fn ml_dsa_keys_sign_data_that_verifies_with_the_public_key_handed_out() {
    use aws_lc_rs::signature::{self as sig, UnparsedPublicKey};
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    s.ok(Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), None).await;
    let cases: [(&str, &'static dyn sig::VerificationAlgorithm, usize, usize); 3] = [
        ("PQ_SIGN_ML_DSA_44", &sig::ML_DSA_44, 1312, 2420),
        ("PQ_SIGN_ML_DSA_65", &sig::ML_DSA_65, 1952, 3309),
        ("PQ_SIGN_ML_DSA_87", &sig::ML_DSA_87, 2592, 4627),
    ];
    for (n, (alg, verifier, public_len, sig_len)) in cases.into_iter().enumerate() {
        let version = create_key(&s, &format!("dsa{n}"), "ASYMMETRIC_SIGN", alg).await;
        let m = s.err(Method::GET, &format!("{version}/publicKey"), None, 400, "INVALID_ARGUMENT").await;
        assert!(m.contains("publicKeyFormat is required"), "{m}");
        let raw = s.ok(Method::GET, &format!("{version}/publicKey?publicKeyFormat=NIST_PQC"), None).await;
        let public = unb64(&raw["publicKey"]["data"]);
        assert_eq!(public.len(), public_len, "{alg}");
        assert_eq!(raw["publicKey"]["crc32cChecksum"], crc(&public));
        let der = s.ok(Method::GET, &format!("{version}/publicKey?publicKeyFormat=DER"), None).await;
        let der = unb64(&der["publicKey"]["data"]);
        assert!(der.ends_with(&public), "the SPKI wraps the raw key");
        // Pure ML-DSA signs the data; a digest is refused, as for Ed25519.
        let data = b"release v1.2.3";
        let r = s
            .ok(
                Method::POST,
                &format!("{version}:asymmetricSign"),
                Some(json!({"data": b64(data), "dataCrc32c": crc(data)})),
            )
            .await;
        let signature = unb64(&r["signature"]);
        assert_eq!(signature.len(), sig_len, "{alg}");
        assert_eq!(r["signatureCrc32c"], crc(&signature));
        assert_eq!(r["verifiedDataCrc32c"], true);
        assert_eq!(r["name"], version);
        UnparsedPublicKey::new(verifier, &public).verify(data, &signature).expect(alg);
        assert!(UnparsedPublicKey::new(verifier, &public).verify(b"other data", &signature).is_err());
        let digest = json!({"digest": {"sha256": b64(&sha(256, data))}});
        s.err(Method::POST, &format!("{version}:asymmetricSign"), Some(digest), 400, "INVALID_ARGUMENT").await;
    }
}

/// SLH-DSA-SHA2-128s (FIPS 205) signs data; its 32-byte public key comes raw (`NIST_PQC`) or as a
/// SubjectPublicKeyInfo with FIPS 205's OID. The signature is checked here for shape; the Python
/// test verifies it with an independent FIPS 205 implementation. HashSLH-DSA signs the SHA-256
/// digest.
#[tokio::test]
async fn slh_dsa_keys_sign_data_or_its_digest() {
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    s.ok(Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), None).await;
    let version = create_key(&s, "slh", "ASYMMETRIC_SIGN", "PQ_SIGN_SLH_DSA_SHA2_128S").await;
    let m = s.err(Method::GET, &format!("{version}/publicKey"), None, 400, "INVALID_ARGUMENT").await;
    assert!(m.contains("publicKeyFormat is required"), "{m}");
    let raw = s.ok(Method::GET, &format!("{version}/publicKey?publicKeyFormat=NIST_PQC"), None).await;
    let public = unb64(&raw["publicKey"]["data"]);
    assert_eq!(public.len(), 32);
    let der = s.ok(Method::GET, &format!("{version}/publicKey?publicKeyFormat=DER"), None).await;
    let der = unb64(&der["publicKey"]["data"]);
    // SEQUENCE { SEQUENCE { OID 2.16.840.1.101.3.4.3.20 }, BIT STRING { the raw key } }.
    assert_eq!(der[4..15], [0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, 0x14]);
    assert!(der.ends_with(&public));
    let pem = s.ok(Method::GET, &format!("{version}/publicKey?publicKeyFormat=PEM"), None).await;
    assert!(pem["pem"].as_str().unwrap().starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
    let data = b"release v1.2.3";
    let body = json!({"data": b64(data), "dataCrc32c": crc(data)});
    let r = s.ok(Method::POST, &format!("{version}:asymmetricSign"), Some(body.clone())).await;
    let signature = unb64(&r["signature"]);
    assert_eq!(signature.len(), 7856, "FIPS 205, table 2");
    assert_eq!(r["signatureCrc32c"], crc(&signature));
    assert_eq!(r["verifiedDataCrc32c"], true);
    // Hedged signing: a second signature of the same data differs.
    let again = s.ok(Method::POST, &format!("{version}:asymmetricSign"), Some(body)).await;
    assert_ne!(again["signature"], r["signature"]);
    let digest = json!({"digest": {"sha256": b64(&sha(256, data))}});
    s.err(Method::POST, &format!("{version}:asymmetricSign"), Some(digest), 400, "INVALID_ARGUMENT").await;

    // HashSLH-DSA: the same kind of key, signing the SHA-256 digest (the caller's or computed
    // here); its SPKI names id-hash-slh-dsa-sha2-128s-with-sha256 (….3.35).
    let hashed = create_key(&s, "hslh", "ASYMMETRIC_SIGN", "PQ_SIGN_HASH_SLH_DSA_SHA2_128S_SHA256").await;
    let der = s.ok(Method::GET, &format!("{hashed}/publicKey?publicKeyFormat=DER"), None).await;
    let der = unb64(&der["publicKey"]["data"]);
    assert_eq!(der[4..15], [0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, 0x23]);
    let digest = sha(256, data);
    for body in [json!({"data": b64(data)}), json!({"digest": {"sha256": b64(&digest)}})] {
        let r = s.ok(Method::POST, &format!("{hashed}:asymmetricSign"), Some(body)).await;
        assert_eq!(unb64(&r["signature"]).len(), 7856);
    }
    for body in [json!({"digest": {"sha256": b64(&digest[..31])}}), json!({"digest": {"sha384": b64(&sha(384, data))}})]
    {
        s.err(Method::POST, &format!("{hashed}:asymmetricSign"), Some(body), 400, "INVALID_ARGUMENT").await;
    }
}

/// FIPS 204's μ of `message` for the ML-DSA public key `pk` (pure mode, empty context), as a
/// client of an external-μ key computes it: SHAKE256(SHAKE256(pk, 64) || 0 || 0 || M, 64).
fn ml_dsa_mu(pk: &[u8], message: &[u8]) -> Vec<u8> {
    use shake::digest::{ExtendableOutput, Update, XofReader};
    let mut tr = [0u8; 64];
    shake::Shake256::default().chain(pk).finalize_xof().read(&mut tr);
    let mut mu = vec![0u8; 64];
    shake::Shake256::default().chain(tr).chain([0u8, 0]).chain(message).finalize_xof().read(&mut mu);
    mu
}

/// ML-DSA external-μ keys sign the μ a client computed (`digest.externalMu`), or the data; both
/// verify with AWS-LC as pure ML-DSA signatures of the message. Other digests are refused, and
/// `externalMu` is refused for every other algorithm.
#[tokio::test]
async fn ml_dsa_external_mu_keys_sign_a_callers_mu() {
    use aws_lc_rs::signature::{self as sig, UnparsedPublicKey};
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    s.ok(Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), None).await;
    let data = b"release v1.2.3";
    let cases: [(&str, &'static dyn sig::VerificationAlgorithm); 3] = [
        ("PQ_SIGN_ML_DSA_44_EXTERNAL_MU", &sig::ML_DSA_44),
        ("PQ_SIGN_ML_DSA_65_EXTERNAL_MU", &sig::ML_DSA_65),
        ("PQ_SIGN_ML_DSA_87_EXTERNAL_MU", &sig::ML_DSA_87),
    ];
    for (n, (algorithm, verifier)) in cases.into_iter().enumerate() {
        let version = create_key(&s, &format!("mu{n}"), "ASYMMETRIC_SIGN", algorithm).await;
        let raw = s.ok(Method::GET, &format!("{version}/publicKey?publicKeyFormat=NIST_PQC"), None).await;
        let pk = unb64(&raw["publicKey"]["data"]);
        let der = s.ok(Method::GET, &format!("{version}/publicKey?publicKeyFormat=DER"), None).await;
        assert!(unb64(&der["publicKey"]["data"]).ends_with(&pk));
        let mu = ml_dsa_mu(&pk, data);
        let by_mu = json!({"digest": {"externalMu": b64(&mu)}, "digestCrc32c": crc(&mu)});
        let r = s.ok(Method::POST, &format!("{version}:asymmetricSign"), Some(by_mu)).await;
        assert_eq!(r["verifiedDigestCrc32c"], true);
        let r2 = s.ok(Method::POST, &format!("{version}:asymmetricSign"), Some(json!({"data": b64(data)}))).await;
        for signature in [unb64(&r["signature"]), unb64(&r2["signature"])] {
            UnparsedPublicKey::new(verifier, &pk).verify(data, &signature).unwrap();
            assert!(UnparsedPublicKey::new(verifier, &pk).verify(b"other", &signature).is_err());
        }
        for (body, words) in [
            (json!({"digest": {"externalMu": b64(&mu[..63])}}), "must be 64 bytes"),
            (json!({"digest": {"sha256": b64(&sha(256, data))}}), "set digest.external_mu"),
            // Refused by the JSON parser already (`digest` is a proto oneof).
            (json!({"digest": {"externalMu": b64(&mu), "sha256": b64(&sha(256, data))}}), "duplicate field `sha256`"),
            (json!({"digest": {"externalMu": b64(&mu)}, "data": b64(data)}), "Only one of digest and data"),
            (json!({"digest": {"externalMu": b64(&mu)}, "dataCrc32c": crc(data)}), "data_crc32c is set"),
            (json!({"digest": {"externalMu": b64(&mu)}, "digestCrc32c": crc(b"x")}), "digest_crc32c did not match"),
        ] {
            let m =
                s.err(Method::POST, &format!("{version}:asymmetricSign"), Some(body), 400, "INVALID_ARGUMENT").await;
            assert!(m.contains(words), "{m}");
        }
    }
    // μ is for these keys only.
    let pure = create_key(&s, "pure", "ASYMMETRIC_SIGN", "PQ_SIGN_ML_DSA_65").await;
    let ec = create_key(&s, "ec", "ASYMMETRIC_SIGN", "EC_SIGN_P256_SHA256").await;
    for version in [pure, ec] {
        let body = json!({"digest": {"externalMu": b64(&[0; 64])}});
        let m = s.err(Method::POST, &format!("{version}:asymmetricSign"), Some(body), 400, "INVALID_ARGUMENT").await;
        assert!(m.contains("external_mu is for the ML-DSA external-mu algorithms"), "{m}");
    }
}
