//! The CLI's commands for signing, asymmetric decryption and MAC keys (issue 19), in gcloud's
//! words, against a real `keyhold serve`: `kms keys create --purpose asymmetric-signing ...`,
//! `kms keys versions get-public-key`, `kms asymmetric-sign`, `kms asymmetric-decrypt`,
//! `kms mac-sign`, `kms mac-verify`, `kms raw-encrypt`, `kms raw-decrypt`. Signatures are checked,
//! and ciphertexts made, by `openssl`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn ok(dir: &Path, port: u16, args: &[&str]) -> String {
    let (success, stdout, stderr) = cli(dir, port, args);
    assert!(success, "keyhold {}: {stderr}", args.join(" "));
    stdout
}

fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out =
        Command::new("openssl").args(args).current_dir(dir).output().expect("openssl is installed by scripts/test.sh");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Creates key `id` and waits (as gcloud users do) until version 1 is ENABLED.
fn create_key(dir: &Path, port: u16, id: &str, purpose: &str, algorithm: &str) {
    let ring = ["--keyring", "r", "--location", "global"];
    let mut args = vec!["kms", "keys", "create", id, "--purpose", purpose, "--default-algorithm", algorithm];
    args.extend_from_slice(&ring);
    ok(dir, port, &args);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut args = vec!["kms", "keys", "versions", "describe", "1", "--key", id, "--format", "json"];
        args.extend_from_slice(&ring);
        let v: serde_json::Value = serde_json::from_str(&ok(dir, port, &args)).unwrap();
        if v["state"] == "ENABLED" {
            return;
        }
        assert_eq!(v["state"], "PENDING_GENERATION", "{v}");
        assert!(Instant::now() < deadline, "version 1 of {id} was not generated: {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcloud_words_sign_decrypt_and_mac() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = spawn(d, 0, &[]);
    wait_ready(&server).await;
    let port = server.port;
    ok(d, port, &["kms", "keyrings", "create", "r", "--location", "global"]);
    let at = |key: &str| -> Vec<String> {
        ["--version", "1", "--key", key, "--keyring", "r", "--location", "global"].map(String::from).to_vec()
    };
    let run = |args: &[&str], key: &str| -> (bool, String, String) {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.extend(at(key));
        cli(d, port, &all.iter().map(String::as_str).collect::<Vec<_>>())
    };

    // Signing: a file of any size is hashed here and its digest signed; the PEM verifies it.
    create_key(d, port, "signer", "asymmetric-signing", "ec-sign-p256-sha256");
    ok(
        d,
        port,
        &[
            "kms",
            "keys",
            "versions",
            "get-public-key",
            "1",
            "--key",
            "signer",
            "--keyring",
            "r",
            "--location",
            "global",
            "--output-file",
            d.join("pub.pem").to_str().unwrap(),
        ],
    );
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(d.join("release.tar"), &big).unwrap();
    let sig = d.join("release.sig");
    let (success, _, stderr) = run(
        &[
            "kms",
            "asymmetric-sign",
            "--digest-algorithm",
            "sha256",
            "--input-file",
            d.join("release.tar").to_str().unwrap(),
            "--signature-file",
            sig.to_str().unwrap(),
        ],
        "signer",
    );
    assert!(success, "{stderr}");
    let (verified, out) =
        openssl(d, &["dgst", "-sha256", "-verify", "pub.pem", "-signature", "release.sig", "release.tar"]);
    assert!(verified, "openssl refused the signature: {out}");
    std::fs::write(d.join("other.tar"), b"not the release").unwrap();
    assert!(!openssl(d, &["dgst", "-sha256", "-verify", "pub.pem", "-signature", "release.sig", "other.tar"]).0);
    // DER too, the same key.
    ok(
        d,
        port,
        &[
            "kms",
            "keys",
            "versions",
            "get-public-key",
            "1",
            "--key",
            "signer",
            "--keyring",
            "r",
            "--location",
            "global",
            "--public-key-format",
            "der",
            "--output-file",
            d.join("pub.der").to_str().unwrap(),
        ],
    );
    let (converted, out) = openssl(d, &["pkey", "-pubin", "-inform", "DER", "-in", "pub.der", "-out", "der.pem"]);
    assert!(converted, "{out}");
    assert_eq!(std::fs::read(d.join("der.pem")).unwrap(), std::fs::read(d.join("pub.pem")).unwrap());

    // Asymmetric decryption of what openssl encrypted to the public key.
    create_key(d, port, "decrypter", "asymmetric-encryption", "rsa-decrypt-oaep-2048-sha256");
    ok(
        d,
        port,
        &[
            "kms",
            "keys",
            "versions",
            "get-public-key",
            "1",
            "--key",
            "decrypter",
            "--keyring",
            "r",
            "--location",
            "global",
            "--output-file",
            d.join("rsa.pem").to_str().unwrap(),
        ],
    );
    std::fs::write(d.join("dek"), b"32 bytes of data encryption key!").unwrap();
    let (encrypted, out) = openssl(
        d,
        &[
            "pkeyutl",
            "-encrypt",
            "-pubin",
            "-inkey",
            "rsa.pem",
            "-in",
            "dek",
            "-out",
            "dek.enc",
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            "rsa_oaep_md:sha256",
            "-pkeyopt",
            "rsa_mgf1_md:sha256",
        ],
    );
    assert!(encrypted, "{out}");
    let (success, _, stderr) = run(
        &[
            "kms",
            "asymmetric-decrypt",
            "--ciphertext-file",
            d.join("dek.enc").to_str().unwrap(),
            "--plaintext-file",
            d.join("dek.out").to_str().unwrap(),
        ],
        "decrypter",
    );
    assert!(success, "{stderr}");
    assert_eq!(std::fs::read(d.join("dek.out")).unwrap(), b"32 bytes of data encryption key!");
    // Signing with a decryption key: Cloud KMS's FAILED_PRECONDITION, said by the CLI.
    let (success, _, stderr) = run(
        &["kms", "asymmetric-sign", "--input-file", d.join("dek").to_str().unwrap(), "--signature-file", "-"],
        "decrypter",
    );
    assert!(!success && stderr.contains("may not be used for signing"), "{stderr}");

    // MACs: sign, verify, and a changed file fails verification.
    create_key(d, port, "mac", "mac", "hmac-sha256");
    std::fs::write(d.join("token"), b"user=42").unwrap();
    let (success, _, stderr) = run(
        &[
            "kms",
            "mac-sign",
            "--input-file",
            d.join("token").to_str().unwrap(),
            "--signature-file",
            d.join("token.mac").to_str().unwrap(),
        ],
        "mac",
    );
    assert!(success, "{stderr}");
    assert_eq!(std::fs::read(d.join("token.mac")).unwrap().len(), 32);
    let verify = |file: &str| {
        let (success, stdout, stderr) = run(
            &[
                "kms",
                "mac-verify",
                "--input-file",
                d.join(file).to_str().unwrap(),
                "--signature-file",
                d.join("token.mac").to_str().unwrap(),
                "--format",
                "json",
            ],
            "mac",
        );
        assert!(success, "{stderr}");
        serde_json::from_str::<serde_json::Value>(&stdout).unwrap()
    };
    let good = verify("token");
    assert_eq!(good["success"], true);
    assert_eq!(good["verifiedSuccessIntegrity"], true);
    std::fs::write(d.join("forged"), b"user=43").unwrap();
    assert_eq!(verify("forged")["success"], false);

    // Raw AES-GCM: the server's IV is written, as gcloud does, to ./initialization_vector_*
    // (in the working directory: here the test's own) and named on stderr.
    create_key(d, port, "raw", "raw-encryption", "aes-256-gcm");
    std::fs::write(d.join("record"), b"a record stored elsewhere").unwrap();
    std::fs::write(d.join("aad"), b"row 7").unwrap();
    let mut args: Vec<String> = [
        "kms",
        "raw-encrypt",
        "--plaintext-file",
        "record",
        "--ciphertext-file",
        "record.enc",
        "--additional-authenticated-data-file",
        "aad",
    ]
    .map(String::from)
    .to_vec();
    args.extend(at("raw"));
    let out = Command::new(env!("CARGO_BIN_EXE_keyhold"))
        .args(&args)
        .current_dir(d)
        .env("KEYHOLD_TOKEN_FILE", d.join("data").join("owner.token"))
        .env("KEYHOLD_ENDPOINT", format!("http://127.0.0.1:{port}"))
        .env("KEYHOLD_PROJECT", "my-project")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let iv_file = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("initialization_vector_"))
        .expect("the IV file");
    assert!(stderr.contains(&*iv_file.file_name().unwrap().to_string_lossy()), "{stderr}");
    assert_eq!(std::fs::read(&iv_file).unwrap().len(), 12);
    let (success, _, stderr) = run(
        &[
            "kms",
            "raw-decrypt",
            "--ciphertext-file",
            d.join("record.enc").to_str().unwrap(),
            "--plaintext-file",
            d.join("record.out").to_str().unwrap(),
            "--initialization-vector-file",
            iv_file.to_str().unwrap(),
            "--additional-authenticated-data-file",
            d.join("aad").to_str().unwrap(),
        ],
        "raw",
    );
    assert!(success, "{stderr}");
    assert_eq!(std::fs::read(d.join("record.out")).unwrap(), b"a record stored elsewhere");
    // ML-KEM: the raw public key, and the secret of a ciphertext made for it (by aws-lc-rs here:
    // the openssl installed has no ML-KEM).
    create_key(d, port, "kem", "key-encapsulation", "ml-kem-768");
    ok(
        d,
        port,
        &[
            "kms",
            "keys",
            "versions",
            "get-public-key",
            "1",
            "--key",
            "kem",
            "--keyring",
            "r",
            "--location",
            "global",
            "--public-key-format",
            "nist-pqc",
            "--output-file",
            d.join("kem.pub").to_str().unwrap(),
        ],
    );
    let public = std::fs::read(d.join("kem.pub")).unwrap();
    let (ct, shared) =
        aws_lc_rs::kem::EncapsulationKey::new(&aws_lc_rs::kem::ML_KEM_768, &public).unwrap().encapsulate().unwrap();
    std::fs::write(d.join("kem.ct"), ct.as_ref()).unwrap();
    let (success, _, stderr) = run(
        &[
            "kms",
            "decapsulate",
            "--ciphertext-file",
            d.join("kem.ct").to_str().unwrap(),
            "--shared-secret-file",
            d.join("kem.secret").to_str().unwrap(),
        ],
        "kem",
    );
    assert!(success, "{stderr}");
    assert_eq!(std::fs::read(d.join("kem.secret")).unwrap(), shared.as_ref());
    // An X-Wing key's public key, in its one format; PEM is refused.
    create_key(d, port, "xwing", "key-encapsulation", "kem-xwing");
    let xwing_pub = d.join("xwing.pub");
    let get = |format: &str| {
        let args = ["kms", "keys", "versions", "get-public-key", "1", "--key", "xwing", "--keyring", "r"];
        let rest =
            ["--location", "global", "--public-key-format", format, "--output-file", xwing_pub.to_str().unwrap()];
        cli(d, port, &[&args[..], &rest[..]].concat())
    };
    let (success, _, stderr) = get("xwing-raw-bytes");
    assert!(success, "{stderr}");
    assert_eq!(std::fs::read(&xwing_pub).unwrap().len(), 1216);
    let (success, _, stderr) = get("pem");
    assert!(!success && stderr.contains("XWING_RAW_BYTES is required"), "{stderr}");
    // Without the AAD it does not open.
    let (success, _, stderr) = run(
        &[
            "kms",
            "raw-decrypt",
            "--ciphertext-file",
            d.join("record.enc").to_str().unwrap(),
            "--plaintext-file",
            "-",
            "--initialization-vector-file",
            iv_file.to_str().unwrap(),
        ],
        "raw",
    );
    assert!(!success && stderr.contains("Decryption failed."), "{stderr}");
}
