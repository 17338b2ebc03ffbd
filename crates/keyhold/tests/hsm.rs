//! [K4] HSM keys with a real PKCS#11 module (SoftHSM2) and real processes: `keyhold serve
//! --pkcs11-module ... --root-key pkcs11:object=...` creates keys inside the token, encrypts and
//! decrypts there, rotates, disables, destroys (the object leaves the token, checked with
//! `pkcs11-tool` as an operator would), survives a restart, and answers 503, not 500, when it
//! cannot log in to the token.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{call, cli, free_port, grant_encrypter, owner_token, spawn_with_env, store_agent, terminate, wait_ready};
use reqwest::Method;
use serde_json::{Value, json};

const LOC: &str = "projects/p/locations/global";
const HSM_KEY: &str = "projects/p/locations/global/keyRings/r/cryptoKeys/hsm";
const SW_KEY: &str = "projects/p/locations/global/keyRings/r/cryptoKeys/sw";
const TOKEN: &str = "keyhold-test";
const PIN: &str = "hsm-pin-4321";

fn module() -> &'static str {
    ["/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("SoftHSM2 is not installed: scripts/test.sh installs the softhsm2 package")
}

/// A throwaway SoftHSM2 token directory and its configuration file (Recipe 2 of
/// docs/operations.md), initialised with `softhsm2-util`.
fn softhsm(dir: &Path) -> PathBuf {
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n", tokens.display()),
    )
    .unwrap();
    let out = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", TOKEN, "--so-pin", "5678", "--pin", PIN])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .expect("softhsm2-util: scripts/test.sh installs the softhsm2 package");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    conf
}

/// The labels of the secret-key objects in the token, as `pkcs11-tool` lists them.
fn token_objects(conf: &Path) -> Vec<String> {
    let out = Command::new("pkcs11-tool")
        .args([
            "--module",
            module(),
            "--token-label",
            TOKEN,
            "--login",
            "--pin",
            PIN,
            "--list-objects",
            "--type",
            "secrkey",
        ])
        .env("SOFTHSM2_CONF", conf)
        .output()
        .expect("pkcs11-tool: scripts/test.sh installs the opensc package");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("label:"))
        .map(|l| l.trim().to_string())
        .collect()
}

async fn post(dir: &Path, port: u16, path: &str, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/{path}"))
        .bearer_auth(owner_token(dir))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsm_keys_in_a_softhsm_token() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let conf = softhsm(d);
    let pin_file = d.join("pin");
    std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
    let conf_s = conf.to_str().unwrap().to_string();
    let args = [
        "--pkcs11-module",
        module(),
        "--pkcs11-token-label",
        TOKEN,
        "--pkcs11-pin-file",
        pin_file.to_str().unwrap(),
        "--root-key",
        "pkcs11:object=keyhold-root",
        "--min-destroy-scheduled-duration",
        "1s",
    ];
    let env = [("SOFTHSM2_CONF", conf_s.as_str())];
    let port = free_port();
    let server = spawn_with_env(d, port, &args, &env);
    wait_ready(&server).await;
    assert!(!d.join("data/root.key").exists(), "no root key file next to the data");
    assert_eq!(token_objects(&conf), ["keyhold-root"], "the root key lives in the token");
    // Finding 9: locations report the HSM this server was started with.
    let locations = call(d, port, Method::GET, "projects/p/locations", json!({})).await;
    for location in locations["locations"].as_array().unwrap() {
        assert_eq!(location["metadata"]["hsmAvailable"], true, "{location}");
        assert_eq!(location["metadata"]["ekmAvailable"], false, "{location}");
    }

    call(d, port, Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), json!({})).await;
    let key = call(
        d,
        port,
        Method::POST,
        &format!("{LOC}/keyRings/r/cryptoKeys?cryptoKeyId=hsm"),
        json!({"purpose": "ENCRYPT_DECRYPT", "versionTemplate": {"protectionLevel": "HSM"}, "destroyScheduledDuration": "1s"}),
    )
    .await;
    assert_eq!(key["primary"]["protectionLevel"], "HSM", "{key}");
    let attestation = &key["primary"]["attestation"];
    let statement = keyhold_api::wire::decode_base64(attestation["content"].as_str().unwrap()).unwrap();
    let statement: Value = serde_json::from_slice(&statement).unwrap();
    assert_eq!(statement["softwareToken"], true, "honest about SoftHSM: {statement}");
    assert!(statement["statement"].as_str().unwrap().contains("not a certified HSM"), "{statement}");
    call(
        d,
        port,
        Method::POST,
        &format!("{LOC}/keyRings/r/cryptoKeys?cryptoKeyId=sw"),
        json!({"purpose": "ENCRYPT_DECRYPT"}),
    )
    .await;
    let objects = token_objects(&conf);
    assert_eq!(objects.len(), 2, "the root key and version 1 of the HSM key: {objects:?}");
    let v1_object = objects.iter().find(|l| l.contains("cryptoKeys/hsm/cryptoKeyVersions/1")).unwrap().clone();

    // Encrypt and decrypt inside the token; the 8 KiB limit of HSM keys.
    let enc1 = call(
        d,
        port,
        Method::POST,
        &format!("{HSM_KEY}:encrypt"),
        json!({"plaintext": "aHNtIHNlY3JldA==", "additionalAuthenticatedData": "YWFk"}),
    )
    .await;
    assert_eq!(enc1["protectionLevel"], "HSM");
    let dec = call(
        d,
        port,
        Method::POST,
        &format!("{HSM_KEY}:decrypt"),
        json!({"ciphertext": enc1["ciphertext"], "additionalAuthenticatedData": "YWFk"}),
    )
    .await;
    assert_eq!(dec["plaintext"], "aHNtIHNlY3JldA==");
    let (st, body) = post(
        d,
        port,
        &format!("{HSM_KEY}:decrypt"),
        json!({"ciphertext": enc1["ciphertext"], "additionalAuthenticatedData": "YWFl"}),
    )
    .await;
    assert_eq!(st, 400, "wrong AAD: {body}");
    let big = keyhold_api::wire::encode_base64(&[7u8; 8 * 1024 + 1]);
    let (st, body) = post(d, port, &format!("{HSM_KEY}:encrypt"), json!({"plaintext": big})).await;
    assert_eq!(st, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("8192"), "{body}");
    let sw = call(d, port, Method::POST, &format!("{SW_KEY}:encrypt"), json!({"plaintext": "c29mdHdhcmU="})).await;

    // Random bytes from the token's generator.
    let random = call(
        d,
        port,
        Method::POST,
        &format!("{LOC}:generateRandomBytes"),
        json!({"lengthBytes": 32, "protectionLevel": "HSM"}),
    )
    .await;
    assert_eq!(keyhold_api::wire::decode_base64(random["data"].as_str().unwrap()).unwrap().len(), 32);

    // Rotate: version 2 is a new token object; version 1 still decrypts; disable is enforced.
    call(d, port, Method::POST, &format!("{HSM_KEY}/cryptoKeyVersions"), json!({})).await;
    call(d, port, Method::POST, &format!("{HSM_KEY}:updatePrimaryVersion"), json!({"cryptoKeyVersionId": "2"})).await;
    let enc2 = call(d, port, Method::POST, &format!("{HSM_KEY}:encrypt"), json!({"plaintext": "djI="})).await;
    assert!(enc2["name"].as_str().unwrap().ends_with("/cryptoKeyVersions/2"));
    assert_eq!(token_objects(&conf).len(), 3);
    call(
        d,
        port,
        Method::PATCH,
        &format!("{HSM_KEY}/cryptoKeyVersions/1?updateMask=state"),
        json!({"state": "DISABLED"}),
    )
    .await;
    let (st, _) = post(
        d,
        port,
        &format!("{HSM_KEY}:decrypt"),
        json!({"ciphertext": enc1["ciphertext"], "additionalAuthenticatedData": "YWFk"}),
    )
    .await;
    assert_eq!(st, 400, "a disabled HSM version is refused");

    // Destroy version 1: once its scheduled time passes, its object is gone from the token.
    call(d, port, Method::POST, &format!("{HSM_KEY}/cryptoKeyVersions/1:destroy"), json!({})).await;
    let start = Instant::now();
    while token_objects(&conf).contains(&v1_object) {
        assert!(start.elapsed() < Duration::from_secs(15), "version 1's object is still in the token");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let v1 = call(d, port, Method::GET, &format!("{HSM_KEY}/cryptoKeyVersions/1"), json!(null)).await;
    assert_eq!(v1["state"], "DESTROYED");

    // A store instance under the HSM key (its KEK is wrapped inside the token).
    let agent = store_agent(port, &owner_token(d)).await;
    grant_encrypter(d, port, HSM_KEY, &[&agent]).await;
    let inst =
        call(d, port, Method::POST, &format!("{LOC}/instances?instanceId=db1"), json!({"kmsKey": HSM_KEY})).await;
    assert_eq!(inst["encryptionInfo"]["kmsKeyVersions"], json!([format!("{HSM_KEY}/cryptoKeyVersions/2")]), "{inst}");
    let object = format!("http://127.0.0.1:{port}/v1/{LOC}/instances/db1/objects/o");
    let http = reqwest::Client::new();
    let put =
        http.put(&object).bearer_auth(owner_token(d)).body(b"kept under an HSM key".to_vec()).send().await.unwrap();
    assert!(put.status().is_success());

    // [K12] through the CLI: version 2 protects the instance, version 1 (destroyed) nothing.
    let inventory = |args: &[&str]| {
        let mut all = vec!["kms", "inventory"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--keyname", HSM_KEY, "--format", "json"]);
        let (ok, out, err) = cli(d, port, &all);
        assert!(ok, "{err}");
        (serde_json::from_str::<Value>(&out).unwrap(), err)
    };
    let (summary, _) = inventory(&["get-protected-resources-summary"]);
    assert_eq!(summary["resourceCount"], "1", "{summary}");
    let (found, _) = inventory(&["search-protected-resources", "--version", "2"]);
    assert_eq!(found[0]["name"], format!("//store.keyhold.dev/{LOC}/instances/db1"), "{found}");
    let (found, said) = inventory(&["search-protected-resources", "--version", "1"]);
    assert_eq!(found, json!([]));
    assert!(said.contains("cryptoKeyVersions/1 protects no resource in projects/p"), "{said}");

    // A restart: the same token, the same root key, the same keys.
    terminate(server);
    let server = spawn_with_env(d, port, &args, &env);
    wait_ready(&server).await;
    let dec =
        call(d, port, Method::POST, &format!("{HSM_KEY}:decrypt"), json!({"ciphertext": enc2["ciphertext"]})).await;
    assert_eq!(dec["plaintext"], "djI=");
    let dec = call(d, port, Method::POST, &format!("{SW_KEY}:decrypt"), json!({"ciphertext": sw["ciphertext"]})).await;
    assert_eq!(dec["plaintext"], "c29mdHdhcmU=", "SOFTWARE material unsealed by the root key in the token");
    let got = http.get(format!("{object}?alt=media")).bearer_auth(owner_token(d)).send().await.unwrap();
    assert_eq!(got.bytes().await.unwrap().as_ref(), b"kept under an HSM key");
    terminate(server);

    // A token it cannot log in to: HSM calls answer 503 UNAVAILABLE, never 500.
    std::fs::write(&pin_file, "wrong-pin-0000\n").unwrap();
    let other = tempfile::tempdir().unwrap();
    let port2 = free_port();
    let wrong_pin =
        ["--pkcs11-module", module(), "--pkcs11-token-label", TOKEN, "--pkcs11-pin-file", pin_file.to_str().unwrap()];
    let server = spawn_with_env(other.path(), port2, &wrong_pin, &env);
    wait_ready(&server).await;
    call(other.path(), port2, Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), json!({})).await;
    let (st, body) = post(
        other.path(),
        port2,
        &format!("{LOC}/keyRings/r/cryptoKeys?cryptoKeyId=hsm"),
        json!({"purpose": "ENCRYPT_DECRYPT", "versionTemplate": {"protectionLevel": "HSM"}}),
    )
    .await;
    assert_eq!((st, body["error"]["status"].as_str()), (503, Some("UNAVAILABLE")), "{body}");
    let log = terminate(server);
    assert!(!log.contains("wrong-pin-0000") && !log.contains(PIN), "no PIN in the log");
}
