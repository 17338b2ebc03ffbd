//! The seed corpus: real, valid inputs made by the real encoders (and a few hand-written ones
//! for text formats), kept in `crates/keyhold-fuzz/corpus/<target>/`. `tests/fuzz.rs`
//! regenerates it on request (`KEYHOLD_FUZZ_WRITE_CORPUS=1`) and otherwise checks that every
//! `valid-*` file in it is still accepted, so the corpus cannot rot into noise. Files named
//! `regression-*` are inputs that once broke a parser; they are kept and replayed.

use std::path::PathBuf;
use std::sync::Arc;

use keyhold_api::wire::Timestamp;
use keyhold_store::archive::{ArchiveHeader, ArchiveWriter, ArchivedObject};

use keyhold_crypto::{AeadKey, KeyBytes};

/// Test key of the ciphertext target. Not a secret: it exists so seeds stay openable.
pub const KMS_KEY_BYTES: [u8; 32] = [0x4b; 32];
/// Test root key of the sealed-key target.
pub const ROOT_KEY_BYTES: [u8; 32] = [0x52; 32];
/// Test key of the EKM blob target.
pub const EKM_KEY_BYTES: [u8; 32] = [0x45; 32];
/// Test KEK of sealed archives.
pub const ARCHIVE_KEK_BYTES: [u8; 32] = [0x41; 32];
/// The CryptoKey the ciphertext seeds are bound to.
pub const CRYPTO_KEY: &str = "projects/fuzz/locations/global/keyRings/r/cryptoKeys/k";
/// The version the ciphertext seeds carry.
pub const CIPHERTEXT_VERSION: u64 = 3;
/// The additional authenticated data of ciphertext and blob seeds.
pub const AAD: &[u8] = b"fuzz-aad";
/// The version context the sealed-key seed is bound to.
pub const SEALED_CONTEXT: &str = "projects/fuzz/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1";
/// The key material the sealed-key seed holds.
pub const SEALED_MATERIAL: [u8; 32] = [0x6d; 32];
/// The EKM key ID the blob seeds are bound to.
pub const EKM_KEY_ID: &str = "fuzz-key";
/// Plaintexts of the ciphertext and blob seeds.
pub const PLAINTEXTS: &[&[u8]] = &[b"", b"hello", b"a longer plaintext of the fuzz corpus, 64 bytes long.........."];
/// The objects of the sealed archive seed: name and chunks.
pub const ARCHIVE_OBJECTS: &[(&str, &[&[u8]])] =
    &[("a.txt", &[b"hello ", b"world"]), ("dir/empty", &[b""]), ("b.bin", &[b"\x00\x01\x02"])];

/// The test key of the ciphertext target (the seeds are encrypted with it).
pub fn kms_key() -> AeadKey {
    AeadKey::new(&KeyBytes::from_slice(&KMS_KEY_BYTES).expect("32 bytes"))
}

/// The test root key of the sealed-key target.
pub fn root_key() -> AeadKey {
    AeadKey::new(&KeyBytes::from_slice(&ROOT_KEY_BYTES).expect("32 bytes"))
}

/// The test key of the EKM blob target.
pub fn ekm_key() -> AeadKey {
    AeadKey::new(&KeyBytes::from_slice(&EKM_KEY_BYTES).expect("32 bytes"))
}

/// The test KEK of sealed archives.
pub fn archive_kek() -> keyhold_cmek::Kek {
    keyhold_cmek::Kek::from_bytes(KeyBytes::from_slice(&ARCHIVE_KEK_BYTES).expect("32 bytes"))
}

/// Where the committed corpus lives.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

/// The committed corpus of `target`: (file name, contents), sorted by name.
pub fn load(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir().join(target)) {
        for e in entries.flatten() {
            if let (Some(name), Ok(bytes)) = (e.file_name().to_str().map(str::to_string), std::fs::read(e.path())) {
                out.push((name, bytes));
            }
        }
    }
    out.sort();
    out
}

fn run<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("an in-memory write waited"),
    }
}

/// An archive of [`ARCHIVE_OBJECTS`], sealed under the test KEK or in plaintext.
pub fn make_archive(sealed: bool) -> Vec<u8> {
    let now = Timestamp::parse("2026-12-01T00:00:00Z").expect("a fixed time");
    let header = ArchiveHeader {
        id: if sealed { "e-sealed".into() } else { "e-plain".into() },
        source: "projects/fuzz/locations/global/instances/i".into(),
        create_time: now,
        kms_key: sealed.then(|| "projects/fuzz/locations/global/keyRings/r/cryptoKeys/k".into()),
        kms_key_version: sealed
            .then(|| "projects/fuzz/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1".into()),
        wrapped_kek: sealed.then(|| "d3JhcHBlZA".into()),
    };
    let kek = sealed.then(|| Arc::new(archive_kek()));
    run(async {
        let mut w = ArchiveWriter::start(Vec::new(), &header, kek).await.expect("start");
        for (name, chunks) in ARCHIVE_OBJECTS {
            let size = chunks.iter().map(|c| c.len() as u64).sum();
            let o = ArchivedObject {
                name: name.to_string(),
                content_type: "application/octet-stream".into(),
                size,
                chunk_count: chunks.len() as u64,
                create_time: now,
                update_time: now,
            };
            w.object(o).await.expect("object");
            for (i, c) in chunks.iter().enumerate() {
                w.chunk(i as u64, c).await.expect("chunk");
            }
        }
        w.finish().await.expect("finish").1
    })
}

fn texts(items: &[&str]) -> Vec<(String, Vec<u8>)> {
    items.iter().enumerate().map(|(i, s)| (format!("valid-{i:02}"), s.as_bytes().to_vec())).collect()
}

/// Fresh seeds for `target`, made by the real encoders; every one is accepted by its target.
/// (AES-GCM nonces are random, so the crypto seeds differ from run to run; any run's are valid.)
pub fn generate(target: &str) -> Vec<(String, Vec<u8>)> {
    match target {
        "filter" => texts(&[
            "labels.env=prod",
            "purpose=ENCRYPT_DECRYPT AND primary.state=ENABLED",
            "NOT labels.team:b OR (name:k* AND count>2)",
            "createTime>\"2025-01-01T00:00:00Z\" AND -destroyed=true",
            "labels.env=\"prod\" labels.team=a",
            "((((name:*))))",
            "name desc",
            "createTime, name desc",
        ]),
        "name" => texts(&[
            "projects/p/locations/global",
            "projects/my-project/locations/us-east1/keyRings/ring_1",
            "projects/p/locations/global/keyRings/r/cryptoKeys/k",
            "projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/12",
            "projects/p/locations/global/instances/i-1",
            "dir/object.txt",
        ]),
        "route" => texts(&[
            "projects/p/locations",
            "projects/p/locations/global/keyRings/r/cryptoKeys/k:encrypt",
            "projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1:destroy",
            "projects/p/locations/global/keyRings/r:getIamPolicy",
            "projects/p/locations/global/keyRings/r/cryptoKeys",
            "projects/p/locations/global:generateRandomBytes",
        ]),
        "json_bodies" => texts(&[
            r#"{"plaintext":"aGVsbG8=","additionalAuthenticatedData":"YQ==","plaintextCrc32c":"907060870"}"#,
            r#"{"ciphertext":"AQ==","ciphertextCrc32c":123}"#,
            r#"{"purpose":"ENCRYPT_DECRYPT","versionTemplate":{"protectionLevel":"SOFTWARE","algorithm":"GOOGLE_SYMMETRIC_ENCRYPTION"},"rotationPeriod":"86400s","nextRotationTime":"2027-01-01T00:00:00Z","labels":{"a":"b"}}"#,
            r#"{"state":"DISABLED"}"#,
            r#"{"cryptoKeyVersionId":"2"}"#,
            r#"{"lengthBytes":32,"protectionLevel":"HSM"}"#,
            r#"{"policy":{"version":1,"etag":"BwAAAAA=","bindings":[{"role":"roles/cloudkms.cryptoKeyEncrypterDecrypter","members":["user:a@example.com"]}]},"updateMask":"bindings,etag"}"#,
            r#"{"permissions":["cloudkms.cryptoKeys.get"]}"#,
            r#"{"options":{"requestedPolicyVersion":1}}"#,
            r#"{"spec":{"rules":[{"values":{"allowedValues":["SOFTWARE"]}}]}}"#,
            r#"{"encryptionConfig":{"encryptionType":"CUSTOMER_MANAGED_ENCRYPTION","kmsKeyName":"projects/p/locations/global/keyRings/r/cryptoKeys/k"},"labels":{"x":"y"}}"#,
            r#"{"backup":"projects/p/locations/global/instances/i/backups/b"}"#,
            r#"{"destinationInstanceId":"i-2","labels":{"a":"b"}}"#,
            r#"{"allowPlaintext":true}"#,
        ]),
        "wire_scalars" => texts(&[
            "2026-11-23T10:00:00.123456789Z",
            "2026-11-23T10:00:00+02:00",
            "86400s",
            "-1.5s",
            "aGVsbG8gd29ybGQ=",
            "\"4294967295\"",
            "907060870",
            "\"2026-01-01T00:00:00Z\"",
        ]),
        "page_token" => {
            let mut seeds = Vec::new();
            let all: Vec<u32> = (0..2500).collect();
            let req = keyhold_api::page::PageRequest { page_size: 10, page_token: String::new() };
            let page = req.apply(all, "parent=p filter= orderBy=").expect("first page");
            let mut first = 10i64.to_le_bytes().to_vec();
            first.extend_from_slice(page.next_page_token.as_bytes());
            seeds.push(("valid-00".to_string(), first));
            seeds.push(("valid-01".to_string(), 0i64.to_le_bytes().to_vec()));
            seeds
        }
        "iam_member" => texts(&[
            "user:alice@example.com",
            "serviceAccount:sa@p.iam.gserviceaccount.com\nroles/cloudkms.admin",
            "allUsers\ncloudkms.cryptoKeyVersions.useToEncrypt",
            "service:cloudkms.googleapis.com",
        ]),
        "ciphertext" => {
            let key = kms_key();
            let mut seeds: Vec<(String, Vec<u8>)> = PLAINTEXTS
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let ct = keyhold_crypto::ciphertext::encrypt(&key, CRYPTO_KEY, CIPHERTEXT_VERSION, p, AAD)
                        .expect("encrypt");
                    (format!("valid-{i:02}"), ct)
                })
                .collect();
            // The backend frame (HSM and EKM versions) parses but does not open here.
            seeds.push(("frame-backend".into(), keyhold_crypto::ciphertext::frame_backend(7, b"\x01blob")));
            seeds
        }
        "sealed_key" => {
            let material = keyhold_crypto::KeyBytes::from_slice(&SEALED_MATERIAL).expect("32 bytes");
            let sealed = keyhold_crypto::sealed::seal(&root_key(), &material, SEALED_CONTEXT).expect("seal");
            vec![("valid-00".into(), sealed)]
        }
        "archive" => vec![("valid-sealed".into(), make_archive(true)), ("valid-plain".into(), make_archive(false))],
        "ekm_protocol" => texts(&[
            r#"{"plaintext":"aGVsbG8=","additionalAuthenticatedData":"YQ==","keyUri":"http://127.0.0.1:9090/v0/keys/k","requestMetadata":{"kmsKeyName":"projects/p/locations/global/keyRings/r/cryptoKeys/k","accessReasonContext":{"reason":"CUSTOMER_INITIATED_ACCESS"}}}"#,
            r#"{"wrappedBlob":"AQ==","additionalAuthenticatedData":""}"#,
            r#"{"wrappedBlob":"AQID"}"#,
            r#"{"plaintext":"aGVsbG8="}"#,
            "fuzz-key_01",
            "http://127.0.0.1:9090/v1/keys/fuzz-key",
        ]),
        "ekm_blob" => {
            let key = ekm_key();
            PLAINTEXTS
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    (format!("valid-{i:02}"), keyhold_ekm::blob::wrap(&key, EKM_KEY_ID, p, AAD).expect("wrap"))
                })
                .collect()
        }
        "ekm_config" => texts(&[
            "# tokens\nkms 3f0c9a8b7c6d5e4f3f0c9a8b7c6d5e4f3f0c9a8b7c6d5e4f3f0c9a8b7c6d5e4f\n",
            "http://127.0.0.1:9090 3f0c9a8b7c6d5e4f3f0c9a8b7c6d5e4f\n",
        ]),
        "hsm_key_ref" => {
            let r = keyhold_hsm::HsmKeyRef::new(
                "projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1",
                vec![0x9a, 0x01, 0xff, 0x20],
            )
            .expect("a valid reference");
            texts(&[&r.to_string(), "pkcs11:id=%01;object=k"])
        }
        other => panic!("no seeds for target {other}"),
    }
}
