//! The CLI's key import commands (issue 19), in gcloud's words, against a real
//! `keyhold serve`: `kms import-jobs create|describe|list` and `kms keys versions import`, which
//! wraps a key file for the job itself (`--target-key-file`) or sends one wrapped already by
//! OpenSSL (`--wrapped-key-file`). The imported keys are checked with `openssl`.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn ok(dir: &Path, port: u16, args: &[&str]) -> String {
    let (success, stdout, stderr) = cli(dir, port, args);
    assert!(success, "keyhold {}: {stderr}", args.join(" "));
    stdout
}

fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out =
        Command::new("openssl").args(args).current_dir(dir).output().expect("openssl is installed by scripts/test.sh");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

const RING: [&str; 4] = ["--keyring", "r", "--location", "global"];

fn with_ring<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend_from_slice(&RING);
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcloud_words_import_keys() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = spawn(d, 0, &[]);
    wait_ready(&server).await;
    let port = server.port;
    // The CLI runs elsewhere: it is given absolute paths.
    let path = |name: &str| d.join(name).to_str().unwrap().to_string();
    let (ec_der, kms_pub, input, tag, short) =
        (path("ec.der"), path("kms.pub"), path("input.txt"), path("tag"), path("short.key"));
    let wrapped_file = path("wrapped");
    ok(d, port, &["kms", "keyrings", "create", "r", "--location", "global"]);
    let create = with_ring(&[
        "kms",
        "import-jobs",
        "create",
        "job",
        "--import-method",
        "rsa-oaep-3072-sha256-aes-256",
        "--protection-level",
        "software",
        "--format",
        "json",
    ]);
    let job: serde_json::Value = serde_json::from_str(&ok(d, port, &create)).unwrap();
    assert_eq!(job["state"], "ACTIVE", "{job}");
    let described: serde_json::Value =
        serde_json::from_str(&ok(d, port, &with_ring(&["kms", "import-jobs", "describe", "job", "--format", "json"])))
            .unwrap();
    assert_eq!(described, job);
    let listed = ok(d, port, &with_ring(&["kms", "import-jobs", "list"]));
    assert!(listed.contains("importJobs/job"), "{listed}");
    let (success, _, stderr) = cli(
        d,
        port,
        &with_ring(&["kms", "import-jobs", "create", "j2", "--import-method", "rsa", "--protection-level", "software"]),
    );
    assert!(!success && stderr.contains("unknown import method"), "{stderr}");

    // An EC key made by OpenSSL, wrapped by the CLI for the job: its public key is OpenSSL's.
    openssl(d, &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ec.pem"]);
    openssl(d, &["pkcs8", "-topk8", "-nocrypt", "-in", "ec.pem", "-outform", "DER", "-out", "ec.der"]);
    let key = [
        "kms",
        "keys",
        "create",
        "signer",
        "--purpose",
        "asymmetric-signing",
        "--default-algorithm",
        "ec-sign-p256-sha256",
        "--import-only",
        "--skip-initial-version-creation",
    ];
    ok(d, port, &with_ring(&key));
    let import = with_ring(&[
        "kms",
        "keys",
        "versions",
        "import",
        "--import-job",
        "job",
        "--key",
        "signer",
        "--algorithm",
        "ec-sign-p256-sha256",
        "--target-key-file",
        &ec_der,
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&ok(d, port, &import)).unwrap();
    assert_eq!(v["state"], "ENABLED", "{v}");
    assert!(v["name"].as_str().unwrap().ends_with("/cryptoKeys/signer/cryptoKeyVersions/1"), "{v}");
    let get =
        with_ring(&["kms", "keys", "versions", "get-public-key", "1", "--key", "signer", "--output-file", &kms_pub]);
    ok(d, port, &get);
    assert_eq!(std::fs::read(d.join("kms.pub")).unwrap(), openssl(d, &["pkey", "-in", "ec.pem", "-pubout"]));

    // An HMAC key wrapped by OpenSSL (RSA-OAEP + AES-KWP, as Google's guide does it by hand).
    let key = [
        "kms",
        "keys",
        "create",
        "mac",
        "--purpose",
        "mac",
        "--default-algorithm",
        "hmac-sha256",
        "--import-only",
        "--skip-initial-version-creation",
    ];
    ok(d, port, &with_ring(&key));
    std::fs::write(d.join("job.pem"), job["publicKey"]["pem"].as_str().unwrap()).unwrap();
    std::fs::write(d.join("mac.key"), [0x5a; 32]).unwrap();
    openssl(d, &["rand", "-out", "kek", "32"]);
    let oaep =
        ["-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256", "-pkeyopt", "rsa_mgf1_md:sha256"];
    let mut rsa = vec!["pkeyutl", "-encrypt", "-pubin", "-inkey", "job.pem", "-in", "kek", "-out", "kek.wrapped"];
    rsa.extend_from_slice(&oaep);
    openssl(d, &rsa);
    let kek: String = std::fs::read(d.join("kek")).unwrap().iter().map(|b| format!("{b:02x}")).collect();
    openssl(d, &["enc", "-id-aes256-wrap-pad", "-iv", "A65959A6", "-K", &kek, "-in", "mac.key", "-out", "mac.wrapped"]);
    let wrapped =
        [std::fs::read(d.join("kek.wrapped")).unwrap(), std::fs::read(d.join("mac.wrapped")).unwrap()].concat();
    std::fs::write(d.join("wrapped"), wrapped).unwrap();
    let import = with_ring(&[
        "kms",
        "keys",
        "versions",
        "import",
        "--import-job",
        "job",
        "--key",
        "mac",
        "--algorithm",
        "hmac-sha256",
        "--wrapped-key-file",
        &wrapped_file,
    ]);
    ok(d, port, &import);
    std::fs::write(d.join("input.txt"), b"to authenticate").unwrap();
    let sign = with_ring(&[
        "kms",
        "mac-sign",
        "--version",
        "1",
        "--key",
        "mac",
        "--input-file",
        &input,
        "--signature-file",
        &tag,
    ]);
    ok(d, port, &sign);
    let theirs = openssl(
        d,
        &["dgst", "-sha256", "-mac", "HMAC", "-macopt", &format!("hexkey:{}", "5a".repeat(32)), "-binary", "input.txt"],
    );
    assert_eq!(std::fs::read(d.join("tag")).unwrap(), theirs);

    // A key of the wrong length is refused by the server, in its words.
    std::fs::write(d.join("short.key"), [1u8; 16]).unwrap();
    let bad = with_ring(&[
        "kms",
        "keys",
        "versions",
        "import",
        "--import-job",
        "job",
        "--key",
        "mac",
        "--algorithm",
        "hmac-sha256",
        "--target-key-file",
        &short,
    ]);
    let (success, _, stderr) = cli(d, port, &bad);
    assert!(!success && stderr.contains("32 bytes"), "{stderr}");
}

/// `kms keys versions delete` and `kms keys delete`, in gcloud's words: a destroyed version is
/// deleted, then the key, whose name is retired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcloud_words_delete_versions_and_keys() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = spawn(d, 0, &["--min-destroy-scheduled-duration", "1s"]);
    wait_ready(&server).await;
    let port = server.port;
    ok(d, port, &["kms", "keyrings", "create", "r", "--location", "global"]);
    let create =
        with_ring(&["kms", "keys", "create", "k", "--purpose", "encryption", "--destroy-scheduled-duration", "1s"]);
    ok(d, port, &create);
    let (success, _, stderr) = cli(d, port, &with_ring(&["kms", "keys", "versions", "delete", "1", "--key", "k"]));
    assert!(!success && stderr.contains("FAILED_PRECONDITION"), "{stderr}");
    ok(d, port, &with_ring(&["kms", "keys", "versions", "destroy", "1", "--key", "k"]));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let describe =
            with_ring(&["kms", "keys", "versions", "describe", "1", "--key", "k", "--format", "value(state)"]);
        if ok(d, port, &describe).trim() == "DESTROYED" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "version 1 was not destroyed");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (success, _, stderr) = cli(d, port, &with_ring(&["kms", "keys", "versions", "delete", "1", "--key", "k"]));
    assert!(
        success
            && stderr.contains(
                "Deleted [projects/my-project/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1]."
            ),
        "{stderr}"
    );
    let (success, _, stderr) = cli(d, port, &with_ring(&["kms", "keys", "delete", "k"]));
    assert!(
        success && stderr.contains("its name is retired as [projects/my-project/locations/global/retiredResources/"),
        "{stderr}"
    );
    let (success, _, stderr) = cli(d, port, &create);
    assert!(!success && stderr.contains("cannot be used again"), "{stderr}");
}
