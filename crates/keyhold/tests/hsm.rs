//! [K4] HSM keys with a real PKCS#11 module (SoftHSM2) and real processes: `keyhold serve
//! --pkcs11-module ... --root-key pkcs11:object=...` creates keys inside the token, encrypts and
//! decrypts there, rotates, disables, destroys (the object leaves the token, checked with
//! `pkcs11-tool` as an operator would), survives a restart, and answers 503, not 500, when it
//! cannot log in to the token.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{call, cli, grant_encrypter, owner_token, spawn_with_env, store_agent, terminate, wait_ready};
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
    post_as(&owner_token(dir), port, path, body).await
}

async fn post_as(token: &str, port: u16, path: &str, body: Value) -> (u16, Value) {
    let resp = common::http_client()
        .post(format!("http://127.0.0.1:{port}/v1/{path}"))
        .bearer_auth(token)
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
    // Port 0: the server binds a free port and logs it (no port picked, released and raced for).
    let server = spawn_with_env(d, 0, &args, &env);
    let mut port = server.port;
    wait_ready(&server).await;
    assert!(!d.join("data/root.key").exists(), "no root key file next to the data");
    assert_eq!(token_objects(&conf), ["keyhold-root"], "the root key lives in the token");
    // Finding 9: locations report the HSM this server was started with.
    let locations = call(d, port, Method::GET, "projects/p/locations", json!({})).await;
    for location in locations["locations"].as_array().unwrap() {
        assert_eq!(location["metadata"]["hsmAvailable"], true, "{location}");
        // proto3 JSON leaves out a false field.
        assert!(location["metadata"].get("ekmAvailable").is_none(), "{location}");
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
    let http = common::http_client();
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
    let server = spawn_with_env(d, 0, &args, &env);
    port = server.port;
    let object = format!("http://127.0.0.1:{port}/v1/{LOC}/instances/db1/objects/o");
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
    let wrong_pin =
        ["--pkcs11-module", module(), "--pkcs11-token-label", TOKEN, "--pkcs11-pin-file", pin_file.to_str().unwrap()];
    let server = spawn_with_env(other.path(), 0, &wrong_pin, &env);
    let port2 = server.port;
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

/// `keyhold serve` with the token, on a port the kernel picks (read from its log).
async fn spawn_hsm_server(d: &Path, conf: &Path, pin_file: &Path, n: u32) -> common::Proc {
    spawn_hsm_server_with(d, conf, pin_file, n, &[]).await
}

async fn spawn_hsm_server_with(d: &Path, conf: &Path, pin_file: &Path, n: u32, extra: &[&str]) -> common::Proc {
    let log = d.join(format!("reconcile-serve-{n}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_keyhold"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(d.join("data"))
        .args(["--pkcs11-module", module(), "--pkcs11-token-label", TOKEN, "--pkcs11-pin-file"])
        .arg(pin_file)
        .args(["--pkcs11-reconcile-grace", "1s"])
        .args(extra)
        .env("SOFTHSM2_CONF", conf)
        .env("KEYHOLD_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut proc = common::Proc { child, port: 0, log };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&proc.log).unwrap_or_default();
        if let Some(i) = text.find("Cloud KMS v1 API on http://127.0.0.1:") {
            let rest = &text[i + "Cloud KMS v1 API on http://127.0.0.1:".len()..];
            proc.port = rest[..rest.find(|c: char| !c.is_ascii_digit()).unwrap()].parse().unwrap();
            break;
        }
        assert!(Instant::now() < deadline, "the server did not start: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_ready(&proc).await;
    proc
}

fn pkcs11_tool(conf: &Path, args: &[&str]) {
    let out = Command::new("pkcs11-tool")
        .args(["--module", module(), "--token-label", TOKEN, "--login", "--pin", PIN])
        .args(args)
        .env("SOFTHSM2_CONF", conf)
        .output()
        .unwrap();
    assert!(out.status.success(), "pkcs11-tool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn reconcile(d: &Path, conf: &Path, pin_file: &Path, apply: bool) -> (bool, String) {
    reconcile_with(d, conf, pin_file, apply, &[])
}

fn reconcile_with(d: &Path, conf: &Path, pin_file: &Path, apply: bool, extra: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyhold"));
    cmd.args(["hsm", "reconcile", "--data-dir"])
        .arg(d.join("data"))
        .args(["--pkcs11-module", module(), "--pkcs11-token-label", TOKEN, "--pkcs11-pin-file"])
        .arg(pin_file)
        .args(["--grace", "0s"])
        .args(extra)
        .env("SOFTHSM2_CONF", conf);
    if apply {
        cmd.arg("--apply");
    }
    let out = cmd.output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

// Finding 10 (issue 15): a version insert that fails after the token generated the object
// leaves no object behind; objects no version uses are found at start and by `keyhold hsm
// reconcile` (listed by default, destroyed with --apply); versions whose object is missing are
// reported, not changed; live versions' objects and foreign objects are left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_inserts_leave_no_object_and_reconcile_finds_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let conf = softhsm(d);
    let pin_file = d.join("pin");
    std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
    let server = spawn_hsm_server(d, &conf, &pin_file, 1).await;
    let port = server.port;
    call(d, port, Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), json!({})).await;
    let hsm_key = json!({"purpose": "ENCRYPT_DECRYPT", "versionTemplate": {"protectionLevel": "HSM"}});
    call(d, port, Method::POST, &format!("{LOC}/keyRings/r/cryptoKeys?cryptoKeyId=hsm"), hsm_key.clone()).await;
    // The same key again: the token generates version 1's object, then the insert fails for
    // real (the key's row exists) and the request is refused.
    for _ in 0..2 {
        let (st, body) = post(d, port, &format!("{LOC}/keyRings/r/cryptoKeys?cryptoKeyId=hsm"), hsm_key.clone()).await;
        assert_eq!(st, 409, "{body}");
    }
    let v1 = "keyhold:projects/p/locations/global/keyRings/r/cryptoKeys/hsm/cryptoKeyVersions/1:";
    let objects = token_objects(&conf);
    assert_eq!(
        objects.iter().filter(|l| l.starts_with(v1)).count(),
        1,
        "only the live version's object remains after two failed inserts: {objects:?}"
    );
    call(d, port, Method::POST, &format!("{LOC}/keyRings/r/cryptoKeys?cryptoKeyId=gone"), hsm_key.clone()).await;
    let enc = call(d, port, Method::POST, &format!("{HSM_KEY}:encrypt"), json!({"plaintext": "aHNt"})).await;
    let log1 = terminate(server);
    assert!(log1.contains("destroyed the HSM key object of a version that was not created"), "{log1}");
    assert_eq!(token_objects(&conf).len(), 2, "hsm and gone, version 1 each");

    // Orphans made directly in the token: one for a version that does not exist, one labelled
    // for a live version but not the object it uses; and an object that is not Keyhold's. The
    // object of `gone` is removed behind Keyhold's back.
    let orphan_none = "keyhold:projects/p/locations/global/keyRings/r/cryptoKeys/hsm/cryptoKeyVersions/9:0badc0de";
    let orphan_dup = format!("{v1}deadbeef");
    pkcs11_tool(&conf, &["--keygen", "--key-type", "AES:32", "--label", orphan_none, "--id", "0901"]);
    pkcs11_tool(&conf, &["--keygen", "--key-type", "AES:32", "--label", &orphan_dup, "--id", "0902"]);
    pkcs11_tool(&conf, &["--keygen", "--key-type", "AES:32", "--label", "another-app", "--id", "0903"]);
    let gone = token_objects(&conf).into_iter().find(|l| l.contains("cryptoKeys/gone/")).unwrap();
    pkcs11_tool(&conf, &["--delete-object", "--type", "secrkey", "--label", &gone]);
    let before = token_objects(&conf);
    assert_eq!(before.len(), 4, "{before:?}");

    // The dry run lists both orphans and the missing object, and changes nothing.
    let (ok, out) = reconcile(d, &conf, &pin_file, false);
    assert!(!ok, "orphans found: exit 1: {out}");
    assert!(out.contains("1 key objects in use by versions"), "{out}");
    assert!(out.contains("2 orphaned key objects"), "{out}");
    assert!(out.contains("cryptoKeyVersions/9: no such version in the database"), "{out}");
    assert!(out.contains("the version uses another object of the token"), "{out}");
    assert!(out.contains("Nothing was changed"), "{out}");
    assert!(out.contains("1 HSM versions whose key object is missing"), "{out}");
    assert!(out.contains("cryptoKeys/gone/cryptoKeyVersions/1:"), "{out}");
    assert_eq!(token_objects(&conf), before, "a dry run destroys nothing");

    // At start the server finds the same, logs it and changes nothing.
    let server = spawn_hsm_server(d, &conf, &pin_file, 2).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let log = loop {
        let log = std::fs::read_to_string(&server.log).unwrap();
        if log.contains("HSM reconciliation at start: done") {
            break log;
        }
        assert!(Instant::now() < deadline, "no reconciliation at start: {log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(log.matches("orphaned HSM key object: no version uses it").count(), 2, "{log}");
    assert!(log.contains("is missing from the token"), "{log}");
    assert_eq!(token_objects(&conf), before, "the start-up check destroys nothing");
    let dec =
        call(d, server.port, Method::POST, &format!("{HSM_KEY}:decrypt"), json!({"ciphertext": enc["ciphertext"]}))
            .await;
    assert_eq!(dec["plaintext"], "aHNt");
    terminate(server);

    // --apply destroys exactly the orphans.
    let (ok, out) = reconcile(d, &conf, &pin_file, true);
    assert!(!ok, "the missing object is still reported: {out}");
    assert_eq!(out.matches("[destroyed]").count(), 2, "{out}");
    let after = token_objects(&conf);
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(after.iter().any(|l| l == "another-app"), "not Keyhold's: kept: {after:?}");
    assert!(
        after.iter().any(|l| l.starts_with(v1) && *l != orphan_dup),
        "the live version's object is kept: {after:?}"
    );
    let (_, out) = reconcile(d, &conf, &pin_file, false);
    assert!(out.contains("No orphaned key objects."), "{out}");

    let server = spawn_hsm_server(d, &conf, &pin_file, 3).await;
    let dec =
        call(d, server.port, Method::POST, &format!("{HSM_KEY}:decrypt"), json!({"ciphertext": enc["ciphertext"]}))
            .await;
    assert_eq!(dec["plaintext"], "aHNt", "the live version still decrypts");
    terminate(server);
}

// Finding 10 (issue 15): the database itself refuses a version's insert (a trigger, as a full
// disk or a lost privilege would), after the token generated the object: the failure is not a
// definite "already exists", so the KMS reads the database again, finds no row, and destroys
// the object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_insert_refused_by_the_database_leaves_no_object() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let conf = softhsm(d);
    let pin_file = d.join("pin");
    std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
    let server = spawn_hsm_server(d, &conf, &pin_file, 1).await;
    let port = server.port;
    call(d, port, Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), json!({})).await;
    let hsm_key = json!({"purpose": "ENCRYPT_DECRYPT", "versionTemplate": {"protectionLevel": "HSM"}});
    call(d, port, Method::POST, &format!("{LOC}/keyRings/r/cryptoKeys?cryptoKeyId=hsm"), hsm_key).await;
    assert_eq!(token_objects(&conf).len(), 1);

    let db = rusqlite::Connection::open(d.join("data/keyhold.db")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    db.execute_batch(
        "CREATE TRIGGER refuse_versions BEFORE INSERT ON crypto_key_versions BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
    )
    .unwrap();
    let (st, body) = post(d, port, &format!("{HSM_KEY}/cryptoKeyVersions"), json!({})).await;
    assert!(st >= 500, "the insert failed: {st} {body}");
    let objects = token_objects(&conf);
    assert_eq!(objects.len(), 1, "the object generated for the refused version is destroyed: {objects:?}");
    assert!(objects[0].contains("/cryptoKeyVersions/1:"), "{objects:?}");

    db.execute_batch("DROP TRIGGER refuse_versions;").unwrap();
    let v = call(d, port, Method::POST, &format!("{HSM_KEY}/cryptoKeyVersions"), json!({})).await;
    assert!(v["name"].as_str().unwrap().ends_with("/cryptoKeyVersions/3"), "{v}");
    assert_eq!(token_objects(&conf).len(), 2);
    let log = terminate(server);
    assert!(log.contains("destroyed the HSM key object of a version that was not created"), "{log}");
}

// Finding 10 (issue 15) on PostgreSQL: a duplicate create and an insert refused by the database
// (a trigger) leave no object; `keyhold hsm reconcile --database` finds an orphan and removes it
// with --apply, leaving the live versions' objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_failed_inserts_leave_no_object_and_reconcile_finds_orphans() {
    let url = common::fresh_postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let conf = softhsm(d);
    let pin_file = d.join("pin");
    std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
    let root = d.join("root.key");
    std::fs::write(&root, keyhold_api::wire::encode_base64(&[7u8; 32])).unwrap();
    let db_flags = ["--database", url.as_str()];
    let mut flags = db_flags.to_vec();
    flags.extend(["--root-key-file", root.to_str().unwrap()]);
    let server = spawn_hsm_server_with(d, &conf, &pin_file, 1, &flags).await;
    let port = server.port;
    call(d, port, Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), json!({})).await;
    let hsm_key = json!({"purpose": "ENCRYPT_DECRYPT", "versionTemplate": {"protectionLevel": "HSM"}});
    call(d, port, Method::POST, &format!("{LOC}/keyRings/r/cryptoKeys?cryptoKeyId=hsm"), hsm_key.clone()).await;
    let (st, body) = post(d, port, &format!("{LOC}/keyRings/r/cryptoKeys?cryptoKeyId=hsm"), hsm_key).await;
    assert_eq!(st, 409, "{body}");
    assert_eq!(token_objects(&conf).len(), 1, "the duplicate's object is destroyed");

    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(
            "CREATE FUNCTION refuse_versions() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$; \
             CREATE TRIGGER refuse_versions BEFORE INSERT ON crypto_key_versions \
             FOR EACH ROW EXECUTE FUNCTION refuse_versions();",
        )
        .await
        .unwrap();
    let (st, body) = post(d, port, &format!("{HSM_KEY}/cryptoKeyVersions"), json!({})).await;
    assert!(st >= 500, "the insert failed: {st} {body}");
    assert_eq!(token_objects(&conf).len(), 1, "the refused version's object is destroyed");
    client.batch_execute("DROP TRIGGER refuse_versions ON crypto_key_versions;").await.unwrap();
    call(d, port, Method::POST, &format!("{HSM_KEY}/cryptoKeyVersions"), json!({})).await;
    let live = token_objects(&conf);
    assert_eq!(live.len(), 2, "{live:?}");

    let orphan = "keyhold:projects/p/locations/global/keyRings/r/cryptoKeys/hsm/cryptoKeyVersions/7:0badc0de";
    pkcs11_tool(&conf, &["--keygen", "--key-type", "AES:32", "--label", orphan, "--id", "0701"]);
    // Next to the running server: the database is only read.
    let (ok, out) = reconcile_with(d, &conf, &pin_file, false, &db_flags);
    assert!(!ok && out.contains("2 key objects in use by versions") && out.contains("1 orphaned key objects"), "{out}");
    assert!(out.contains("cryptoKeyVersions/7: no such version in the database"), "{out}");
    let (ok, out) = reconcile_with(d, &conf, &pin_file, true, &db_flags);
    assert!(ok && out.contains("[destroyed]"), "{out}");
    let mut after = token_objects(&conf);
    after.sort();
    let mut live = live;
    live.sort();
    assert_eq!(after, live, "exactly the orphan is gone");
    terminate(server);
}

// Hardening review: a version insert whose failure may hide a commit (here its PostgreSQL connection is
// terminated while the insert waits on a table lock, as a connection dropped at COMMIT would
// be) used to be followed by a re-read and, finding no row, the destruction of the object,
// although that commit could still land after the re-read. The object is now left in the
// token for `keyhold hsm reconcile`, which removes it once no version uses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_failure_that_may_have_committed_leaves_the_object_for_reconcile() {
    let url = common::fresh_postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let conf = softhsm(d);
    let pin_file = d.join("pin");
    std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
    let root = d.join("root.key");
    std::fs::write(&root, keyhold_api::wire::encode_base64(&[7u8; 32])).unwrap();
    let db_flags = ["--database", url.as_str()];
    let mut flags = db_flags.to_vec();
    flags.extend(["--root-key-file", root.to_str().unwrap()]);
    let server = spawn_hsm_server_with(d, &conf, &pin_file, 1, &flags).await;
    let port = server.port;
    call(d, port, Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), json!({})).await;
    let hsm_key = json!({"purpose": "ENCRYPT_DECRYPT", "versionTemplate": {"protectionLevel": "HSM"}});
    call(d, port, Method::POST, &format!("{LOC}/keyRings/r/cryptoKeys?cryptoKeyId=hsm"), hsm_key).await;
    assert_eq!(token_objects(&conf).len(), 1);

    // Inserts into the versions table wait (reads do not); the waiting connection is then cut.
    let (mut client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let tx = client.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE crypto_key_versions IN EXCLUSIVE MODE").await.unwrap();
    let dd = d.to_path_buf();
    let create = tokio::spawn(async move { post(&dd, port, &format!("{HSM_KEY}/cryptoKeyVersions"), json!({})).await });
    let (admin, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let waiting = admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE wait_event_type = 'Lock' AND query ILIKE '%crypto_key_versions%' AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap();
        if !waiting.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the version insert never waited on the lock");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (st, body) = create.await.unwrap();
    assert_eq!((st, body["error"]["status"].as_str()), (503, Some("UNAVAILABLE")), "{body}");
    let objects = token_objects(&conf);
    assert_eq!(objects.len(), 2, "the object of the version whose insert may have committed is kept: {objects:?}");
    tx.rollback().await.unwrap();
    let log = terminate(server);
    assert!(log.contains("may still have committed; its HSM key object is left in the token"), "{log}");
    assert!(!log.contains("destroyed the HSM key object of a version that was not created"), "{log}");

    // No version uses it: reconciliation removes it, and only it.
    let (ok, out) = reconcile_with(d, &conf, &pin_file, true, &db_flags);
    assert!(ok && out.contains("1 orphaned key objects") && out.contains("[destroyed]"), "{out}");
    let left = token_objects(&conf);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].contains("/cryptoKeyVersions/1:"), "{left:?}");
}

fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl is installed");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn b64(b: &[u8]) -> String {
    keyhold_api::wire::encode_base64(b)
}

fn unb64(v: &Value) -> Vec<u8> {
    keyhold_api::wire::decode_base64(v.as_str().unwrap()).unwrap()
}

/// Issue 19 on HSM keys: EC and RSA signing keys, RSA-OAEP and HMAC keys generated in the
/// SoftHSM2 token (a private and a public object per pair, found with `pkcs11-tool`); their
/// signatures verify with OpenSSL against the public key `getPublicKey` reads from the token;
/// what OpenSSL encrypts to it decrypts; MACs verify; destroying a version removes its objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsm_signing_decryption_and_mac_keys() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let conf = softhsm(d);
    let pin_file = d.join("pin");
    std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
    let server = spawn_hsm_server_with(d, &conf, &pin_file, 0, &["--min-destroy-scheduled-duration", "1s"]).await;
    let port = server.port;
    call(d, port, Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), json!({})).await;
    std::fs::write(d.join("input.txt"), b"signed inside the token").unwrap();
    let cases = [
        ("ec256", "ASYMMETRIC_SIGN", "EC_SIGN_P256_SHA256", "sha256", &[][..]),
        ("ec384", "ASYMMETRIC_SIGN", "EC_SIGN_P384_SHA384", "sha384", &[][..]),
        ("k1", "ASYMMETRIC_SIGN", "EC_SIGN_SECP256K1_SHA256", "sha256", &[][..]),
        ("pkcs1", "ASYMMETRIC_SIGN", "RSA_SIGN_PKCS1_2048_SHA256", "sha256", &[][..]),
        ("pkcs1-512", "ASYMMETRIC_SIGN", "RSA_SIGN_PKCS1_4096_SHA512", "sha512", &[][..]),
        (
            "pss",
            "ASYMMETRIC_SIGN",
            "RSA_SIGN_PSS_2048_SHA256",
            "sha256",
            &["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest"][..],
        ),
        ("ed", "ASYMMETRIC_SIGN", "EC_SIGN_ED25519", "", &[][..]),
        ("raw", "ASYMMETRIC_SIGN", "RSA_SIGN_RAW_PKCS1_2048", "", &[][..]),
        ("oaep1", "ASYMMETRIC_DECRYPT", "RSA_DECRYPT_OAEP_2048_SHA1", "sha1", &[][..]),
        ("mac", "MAC", "HMAC_SHA256", "sha256", &[][..]),
        ("gcm", "RAW_ENCRYPT_DECRYPT", "AES_256_GCM", "", &[][..]),
        ("cbc", "RAW_ENCRYPT_DECRYPT", "AES_128_CBC", "", &[][..]),
        ("ctr", "RAW_ENCRYPT_DECRYPT", "AES_256_CTR", "", &[][..]),
    ];
    for (id, purpose, algorithm, md, sigopts) in cases {
        let key = format!("{LOC}/keyRings/r/cryptoKeys/{id}");
        let body = json!({"purpose": purpose, "versionTemplate": {"algorithm": algorithm, "protectionLevel": "HSM"}, "destroyScheduledDuration": "1s"});
        call(d, port, Method::POST, &format!("{LOC}/keyRings/r/cryptoKeys?cryptoKeyId={id}"), body).await;
        let version = format!("{key}/cryptoKeyVersions/1");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v = call(d, port, Method::GET, &version, json!({})).await;
            if v["state"] == "ENABLED" {
                assert_eq!(v["protectionLevel"], "HSM", "{v}");
                break;
            }
            assert_eq!(v["state"], "PENDING_GENERATION", "{algorithm}: {v}");
            assert!(Instant::now() < deadline, "{algorithm} was not generated: {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if purpose == "MAC" {
            let tag = call(d, port, Method::POST, &format!("{version}:macSign"), json!({"data": b64(b"m")})).await;
            let tag = unb64(&tag["mac"]);
            assert_eq!(tag.len(), 32);
            let ok = call(
                d,
                port,
                Method::POST,
                &format!("{version}:macVerify"),
                json!({"data": b64(b"m"), "mac": b64(&tag)}),
            )
            .await;
            assert_eq!(ok["success"], true);
            let no = call(
                d,
                port,
                Method::POST,
                &format!("{version}:macVerify"),
                json!({"data": b64(b"n"), "mac": b64(&tag)}),
            )
            .await;
            assert!(no.get("success").is_none(), "{no}");
            continue;
        }
        if purpose == "RAW_ENCRYPT_DECRYPT" {
            hsm_raw_round_trip(d, port, &version, algorithm).await;
            continue;
        }
        let pk = call(d, port, Method::GET, &format!("{version}/publicKey"), json!({})).await;
        assert_eq!(pk["protectionLevel"], "HSM");
        std::fs::write(d.join("pub.pem"), pk["pem"].as_str().unwrap()).unwrap();
        if purpose == "ASYMMETRIC_SIGN" {
            let sig = call(
                d,
                port,
                Method::POST,
                &format!("{version}:asymmetricSign"),
                json!({"data": b64(b"signed inside the token")}),
            )
            .await;
            assert_eq!(sig["protectionLevel"], "HSM");
            std::fs::write(d.join("sig"), unb64(&sig["signature"])).unwrap();
            if algorithm == "EC_SIGN_ED25519" {
                // Pure Ed25519 signs the data itself: OpenSSL verifies it with -rawin.
                openssl(
                    d,
                    &[
                        "pkeyutl",
                        "-verify",
                        "-pubin",
                        "-inkey",
                        "pub.pem",
                        "-rawin",
                        "-in",
                        "input.txt",
                        "-sigfile",
                        "sig",
                    ],
                );
                std::fs::write(d.join("other.txt"), b"not what was signed").unwrap();
                let refused = Command::new("openssl")
                    .args(["pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin", "-in", "other.txt"])
                    .args(["-sigfile", "sig"])
                    .current_dir(d)
                    .output()
                    .unwrap();
                assert!(!refused.status.success(), "a signature of other data verified");
                continue;
            }
            if algorithm.starts_with("RSA_SIGN_RAW_PKCS1") {
                // Type-1 padding of the data itself, no DigestInfo: what `openssl pkeyutl
                // -verify` checks by default (PKCS#1 padding, no digest), byte for byte.
                openssl(
                    d,
                    &["pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-in", "input.txt", "-sigfile", "sig"],
                );
                let recovered = openssl(d, &["pkeyutl", "-verifyrecover", "-pubin", "-inkey", "pub.pem", "-in", "sig"]);
                assert_eq!(recovered, b"signed inside the token");
                continue;
            }
            let mut args = vec!["dgst", &format!("-{md}")[..], "-verify", "pub.pem", "-signature", "sig"]
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>();
            args.extend(sigopts.iter().map(|s| s.to_string()));
            args.push("input.txt".into());
            openssl(d, &args.iter().map(String::as_str).collect::<Vec<_>>());
        } else {
            oaep_encrypt(d, "pub.pem", "input.txt", "ct", md);
            let ct = std::fs::read(d.join("ct")).unwrap();
            let pt =
                call(d, port, Method::POST, &format!("{version}:asymmetricDecrypt"), json!({"ciphertext": b64(&ct)}))
                    .await;
            assert_eq!(unb64(&pt["plaintext"]), b"signed inside the token");
            let mut bad = ct.clone();
            bad[5] ^= 1;
            let (status, v) =
                post(d, port, &format!("{version}:asymmetricDecrypt"), json!({"ciphertext": b64(&bad)})).await;
            assert_eq!((status, v["error"]["message"].as_str()), (400, Some("Decryption failed.")), "{v}");
        }
    }
    // Raw PKCS#1 signing: at most k - 11 bytes of data, no digest, and (as Cloud KMS) the expert
    // permission manageRawPKCS1Keys on top of useToSign.
    let raw = format!("{LOC}/keyRings/r/cryptoKeys/raw");
    let raw_v1 = format!("{raw}/cryptoKeyVersions/1");
    let (status, v) = post(d, port, &format!("{raw_v1}:asymmetricSign"), json!({"data": b64(&[1u8; 246])})).await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("at most 245 bytes"), "{v}");
    let digest = json!({"digest": {"sha256": b64(&[0u8; 32])}});
    assert_eq!(post(d, port, &format!("{raw_v1}:asymmetricSign"), digest).await.0, 400);
    let (ok, bob, err) =
        cli(d, port, &["auth", "tokens", "create", "--principal", "user:bob@example.com", "--ttl", "1d"]);
    assert!(ok, "{err}");
    let bob = bob.trim().to_string();
    let bind = |roles: &[&str]| {
        let bindings: Vec<Value> =
            roles.iter().map(|r| json!({"role": r, "members": ["user:bob@example.com"]})).collect();
        json!({"policy": {"bindings": bindings}})
    };
    call(d, port, Method::POST, &format!("{raw}:setIamPolicy"), bind(&["roles/cloudkms.signer"])).await;
    let sign = json!({"data": b64(b"m")});
    let (status, v) = post_as(&bob, port, &format!("{raw_v1}:asymmetricSign"), sign.clone()).await;
    assert_eq!(status, 403, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("cloudkms.cryptoKeyVersions.manageRawPKCS1Keys"), "{v}");
    let roles = ["roles/cloudkms.signer", "roles/cloudkms.expertRawPKCS1"];
    call(d, port, Method::POST, &format!("{raw}:setIamPolicy"), bind(&roles)).await;
    let (status, v) = post_as(&bob, port, &format!("{raw_v1}:asymmetricSign"), sign).await;
    assert_eq!(status, 200, "{v}");
    // On SOFTWARE keys raw PKCS#1 is not served (AWS-LC has no such signature).
    let body = json!({"purpose": "ASYMMETRIC_SIGN", "versionTemplate": {"algorithm": "RSA_SIGN_RAW_PKCS1_2048"}});
    let (status, v) = post(d, port, &format!("{LOC}/keyRings/r/cryptoKeys?cryptoKeyId=rawsw"), body).await;
    assert_eq!((status, v["error"]["status"].as_str()), (501, Some("UNIMPLEMENTED")), "{v}");
    // RSA-OAEP with SHA-256 is refused on HSM keys (SoftHSM2 has OAEP with SHA-1 only), and so
    // are the post-quantum keys (SoftHSM2 has no post-quantum mechanism).
    for (id, purpose, algorithm) in [
        ("oaep256", "ASYMMETRIC_DECRYPT", "RSA_DECRYPT_OAEP_2048_SHA256"),
        ("xwing", "KEY_ENCAPSULATION", "KEM_XWING"),
        ("mlkem", "KEY_ENCAPSULATION", "ML_KEM_768"),
        ("mldsa", "ASYMMETRIC_SIGN", "PQ_SIGN_ML_DSA_65"),
        ("mu", "ASYMMETRIC_SIGN", "PQ_SIGN_ML_DSA_65_EXTERNAL_MU"),
        ("slh", "ASYMMETRIC_SIGN", "PQ_SIGN_SLH_DSA_SHA2_128S"),
        ("hslh", "ASYMMETRIC_SIGN", "PQ_SIGN_HASH_SLH_DSA_SHA2_128S_SHA256"),
    ] {
        let body = json!({"purpose": purpose, "versionTemplate": {"algorithm": algorithm, "protectionLevel": "HSM"}});
        let (status, v) = post(d, port, &format!("{LOC}/keyRings/r/cryptoKeys?cryptoKeyId={id}"), body).await;
        assert_eq!((status, v["error"]["status"].as_str()), (501, Some("UNIMPLEMENTED")), "{v}");
    }
    // Each pair is two objects in the token; destroying a version removes both.
    let labels = |conf: &Path| -> Vec<String> {
        list_objects(conf)
            .lines()
            .filter_map(|l| l.trim().strip_prefix("label:").map(|s| s.trim().to_string()))
            .collect()
    };
    // Reconciliation finds every version's key in the token (none missing, none orphaned).
    let (agree, report) = reconcile(d, &conf, &pin_file, false);
    assert!(agree, "token and database agree: {report}");
    assert!(report.contains("13 key objects in use by versions"), "every kind of key is counted: {report}");
    // Orphans of every kind are found, and --apply destroys each with all its objects: an EC
    // pair (two objects) and an HMAC key no version names.
    let ghost = |n: u32| format!("keyhold:{LOC}/keyRings/r/cryptoKeys/ghost/cryptoKeyVersions/{n}:0badc0de");
    pkcs11_tool(&conf, &["--keypairgen", "--key-type", "EC:prime256v1", "--label", &ghost(1), "--id", "0a01"]);
    pkcs11_tool(&conf, &["--keygen", "--key-type", "GENERIC:32", "--label", &ghost(2), "--id", "0a02"]);
    let ghosts = |all: Vec<String>| all.into_iter().filter(|l| l.contains("cryptoKeys/ghost/")).count();
    assert_eq!(ghosts(labels(&conf)), 3);
    let (agree, report) = reconcile(d, &conf, &pin_file, false);
    assert!(!agree && report.contains("2 orphaned key objects"), "{report}");
    let (agree, report) = reconcile(d, &conf, &pin_file, true);
    assert!(agree && report.contains("[destroyed]"), "{report}");
    assert_eq!(ghosts(labels(&conf)), 0, "both halves of the pair and the HMAC key are gone");
    // Handles are cached per connection: a key whose object is removed behind Keyhold's back
    // (its handle now stale) is reported gone, not signed with another object.
    let mac = format!("{LOC}/keyRings/r/cryptoKeys/mac/cryptoKeyVersions/1");
    let mac_label = labels(&conf).into_iter().find(|l| l.contains("cryptoKeys/mac/")).unwrap();
    pkcs11_tool(&conf, &["--delete-object", "--type", "secrkey", "--label", &mac_label]);
    for _ in 0..2 {
        let (status, v) = post(d, port, &format!("{mac}:macSign"), json!({"data": b64(b"m")})).await;
        assert_eq!((status, v["error"]["status"].as_str()), (400, Some("FAILED_PRECONDITION")), "{v}");
        assert!(v["error"]["message"].as_str().unwrap().contains("is gone from its backend"), "{v}");
    }
    let ec = format!("{LOC}/keyRings/r/cryptoKeys/ec256/cryptoKeyVersions/1");
    let of_ec = |all: Vec<String>| all.into_iter().filter(|l| l.contains("cryptoKeys/ec256/")).count();
    assert_eq!(of_ec(labels(&conf)), 2, "a private and a public object");
    call(d, port, Method::POST, &format!("{ec}:destroy"), json!({})).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while of_ec(labels(&conf)) != 0 {
        assert!(Instant::now() < deadline, "the destroyed version's objects stayed in the token");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(server);
}

/// `rawEncrypt` and `rawDecrypt` with an AES key that never leaves the token: GCM binds its
/// additional data and refuses a changed ciphertext; CBC under a caller's IV is deterministic and
/// needs that IV back.
async fn hsm_raw_round_trip(d: &Path, port: u16, version: &str, algorithm: &str) {
    let plaintext = b"sixteen byte blk thirty-two bytes";
    let plaintext = &plaintext[..32];
    let gcm = algorithm.ends_with("GCM");
    let (aad, iv) = if gcm { (&b"context"[..], None) } else { (&b""[..], Some([7u8; 16])) };
    let mut body = json!({"plaintext": b64(plaintext), "additionalAuthenticatedData": b64(aad)});
    if let Some(iv) = iv {
        body["initializationVector"] = json!(b64(&iv));
    }
    let e = call(d, port, Method::POST, &format!("{version}:rawEncrypt"), body.clone()).await;
    assert_eq!(e["protectionLevel"], "HSM", "{e}");
    let ct = unb64(&e["ciphertext"]);
    let used_iv = unb64(&e["initializationVector"]);
    assert_eq!(ct.len(), plaintext.len() + if gcm { 16 } else { 0 }, "{algorithm}");
    assert_eq!(used_iv.len(), if gcm { 12 } else { 16 }, "{algorithm}");
    assert_ne!(&ct[..plaintext.len()], plaintext);
    let decrypt = |ct: &[u8], iv: &[u8]| json!({"ciphertext": b64(ct), "initializationVector": b64(iv), "additionalAuthenticatedData": b64(aad)});
    let pt = call(d, port, Method::POST, &format!("{version}:rawDecrypt"), decrypt(&ct, &used_iv)).await;
    assert_eq!(unb64(&pt["plaintext"]), plaintext, "{algorithm}");
    if gcm {
        // A fresh nonce each time; a changed ciphertext does not authenticate.
        let again = call(d, port, Method::POST, &format!("{version}:rawEncrypt"), body).await;
        assert_ne!(unb64(&again["initializationVector"]), used_iv);
        let mut bad = ct.clone();
        bad[0] ^= 1;
        let (status, v) = post(d, port, &format!("{version}:rawDecrypt"), decrypt(&bad, &used_iv)).await;
        assert_eq!((status, v["error"]["message"].as_str()), (400, Some("Decryption failed.")), "{v}");
        // The AAD reaches the token: other AAD does not authenticate either.
        let other_aad = json!({"ciphertext": b64(&ct), "initializationVector": b64(&used_iv), "additionalAuthenticatedData": b64(b"other")});
        let (status, v) = post(d, port, &format!("{version}:rawDecrypt"), other_aad).await;
        assert_eq!((status, v["error"]["message"].as_str()), (400, Some("Decryption failed.")), "{v}");
        // As Cloud KMS for HSM keys: plaintext and AAD together at most 8 KiB.
        let big = json!({"plaintext": b64(&[0u8; 8 * 1024]), "additionalAuthenticatedData": b64(b"x")});
        let (status, v) = post(d, port, &format!("{version}:rawEncrypt"), big).await;
        assert_eq!(status, 400, "{v}");
        assert!(v["error"]["message"].as_str().unwrap().contains("at most 8192 bytes"), "{v}");
    } else {
        // The caller's IV is used: the same input gives the same ciphertext; another IV opens
        // to other bytes (with CBC, only the first block; with CTR, every block).
        assert_eq!(used_iv, [7u8; 16]);
        let again = call(d, port, Method::POST, &format!("{version}:rawEncrypt"), body).await;
        assert_eq!(unb64(&again["ciphertext"]), ct);
        let other = call(d, port, Method::POST, &format!("{version}:rawDecrypt"), decrypt(&ct, &[8u8; 16])).await;
        let other = unb64(&other["plaintext"]);
        assert_ne!(other[..16], plaintext[..16]);
        if algorithm.ends_with("CBC") {
            assert_eq!(other[16..], plaintext[16..], "CBC: only the first block depends on the IV");
        } else {
            assert_ne!(other[16..], plaintext[16..], "CTR: every block depends on the IV");
        }
        // Neither mode takes AAD (refused before the token is asked).
        let with_aad = json!({"plaintext": b64(plaintext), "initializationVector": b64(&[7u8; 16]), "additionalAuthenticatedData": b64(b"x")});
        let (status, v) = post(d, port, &format!("{version}:rawEncrypt"), with_aad).await;
        assert_eq!((status, v["error"]["status"].as_str()), (400, Some("INVALID_ARGUMENT")), "{v}");
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Wraps the file `key` in `d` for the import job whose public key is in `job.pem`, as Google's
/// guide does with OpenSSL: RSA-OAEP (SHA-256) of a fresh AES key, then AES key wrap with
/// padding of the key (`aes_kwp`), or RSA-OAEP of the key itself.
fn wrap(d: &Path, key: &str, aes_kwp: bool) -> Vec<u8> {
    let rsa = |input: &str, out: &str| oaep_encrypt(d, "job.pem", input, out, "sha256");
    if !aes_kwp {
        rsa(key, "wrapped");
        return std::fs::read(d.join("wrapped")).unwrap();
    }
    openssl(d, &["rand", "-out", "temp_aes", "32"]);
    rsa("temp_aes", "wrapped_aes");
    let kek = hex(&std::fs::read(d.join("temp_aes")).unwrap());
    openssl(d, &["enc", "-id-aes256-wrap-pad", "-iv", "A65959A6", "-K", &kek, "-in", key, "-out", "wrapped_key"]);
    [std::fs::read(d.join("wrapped_aes")).unwrap(), std::fs::read(d.join("wrapped_key")).unwrap()].concat()
}

/// Issue 19, import into HSM keys: an HSM import job (its wrapping key a SOFTWARE key, which
/// its attestation says), and keys of every kind the token holds, made by OpenSSL and wrapped
/// for the job as Google's guide does, imported into the SoftHSM2 token: what the token then
/// signs verifies with OpenSSL against OpenSSL's own public key, what OpenSSL encrypts to it
/// decrypts, its MACs and raw AES ciphertexts are OpenSSL's. The objects are sensitive and
/// not extractable (read with `pkcs11-tool`); a destroyed imported version's object leaves the
/// token, and the same material imported again makes a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsm_import_jobs_put_imported_keys_into_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let conf = softhsm(d);
    let pin_file = d.join("pin");
    std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
    let server = spawn_hsm_server_with(d, &conf, &pin_file, 0, &["--min-destroy-scheduled-duration", "1s"]).await;
    let port = server.port;
    let ring = format!("{LOC}/keyRings/r");
    call(d, port, Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), json!({})).await;

    // The job: HSM, with a statement that its wrapping key is not in the HSM.
    let job = call(
        d,
        port,
        Method::POST,
        &format!("{ring}/importJobs?importJobId=kwp"),
        json!({"importMethod": "RSA_OAEP_3072_SHA256_AES_256", "protectionLevel": "HSM"}),
    )
    .await;
    assert_eq!((job["protectionLevel"].as_str(), job["state"].as_str()), (Some("HSM"), Some("ACTIVE")), "{job}");
    let statement = String::from_utf8(unb64(&job["attestation"]["content"])).unwrap();
    assert!(statement.contains("wrapping key is not held in the HSM"), "{statement}");
    std::fs::write(d.join("job.pem"), job["publicKey"]["pem"].as_str().unwrap()).unwrap();
    let job = format!("{ring}/importJobs/kwp");
    // A SOFTWARE job does not import into HSM keys.
    call(
        d,
        port,
        Method::POST,
        &format!("{ring}/importJobs?importJobId=sw"),
        json!({"importMethod": "RSA_OAEP_3072_SHA256", "protectionLevel": "SOFTWARE"}),
    )
    .await;

    std::fs::write(d.join("input.txt"), b"signed by an imported key").unwrap();
    let genpkey = |file: &str, args: &[&str]| {
        let mut a = vec!["genpkey"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-out", file]);
        openssl(d, &a);
        let der = file.replace(".pem", ".der");
        openssl(d, &["pkcs8", "-topk8", "-nocrypt", "-in", file, "-outform", "DER", "-out", &der]);
        der
    };
    let cases = [
        (
            "ec256",
            "ASYMMETRIC_SIGN",
            "EC_SIGN_P256_SHA256",
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"][..],
        ),
        (
            "ec384",
            "ASYMMETRIC_SIGN",
            "EC_SIGN_P384_SHA384",
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"][..],
        ),
        (
            "k1",
            "ASYMMETRIC_SIGN",
            "EC_SIGN_SECP256K1_SHA256",
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:secp256k1"][..],
        ),
        ("ed", "ASYMMETRIC_SIGN", "EC_SIGN_ED25519", &["-algorithm", "ED25519"][..]),
        (
            "rsa",
            "ASYMMETRIC_SIGN",
            "RSA_SIGN_PKCS1_2048_SHA256",
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"][..],
        ),
        (
            "oaep",
            "ASYMMETRIC_DECRYPT",
            "RSA_DECRYPT_OAEP_2048_SHA1",
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"][..],
        ),
    ];
    let mut versions = Vec::new();
    for (id, purpose, algorithm, gen_args) in cases {
        let pem = format!("{id}.pem");
        let der = genpkey(&pem, gen_args);
        let key = format!("{ring}/cryptoKeys/{id}");
        let body = json!({"purpose": purpose, "importOnly": true, "destroyScheduledDuration": "1s",
            "versionTemplate": {"algorithm": algorithm, "protectionLevel": "HSM"}});
        call(
            d,
            port,
            Method::POST,
            &format!("{ring}/cryptoKeys?cryptoKeyId={id}&skipInitialVersionCreation=true"),
            body,
        )
        .await;
        let wrapped = wrap(d, &der, true);
        let import = json!({"algorithm": algorithm, "importJob": job, "wrappedKey": b64(&wrapped)});
        if id == "ec256" {
            // The SOFTWARE job is refused for an HSM key, before anything is unwrapped.
            let sw = json!({"algorithm": algorithm, "importJob": format!("{ring}/importJobs/sw"), "wrappedKey": b64(&wrapped)});
            let (status, v) = post(d, port, &format!("{key}/cryptoKeyVersions:import"), sw).await;
            assert_eq!((status, v["error"]["status"].as_str()), (400, Some("FAILED_PRECONDITION")), "{v}");
        }
        let v = call(d, port, Method::POST, &format!("{key}/cryptoKeyVersions:import"), import).await;
        assert_eq!((v["state"].as_str(), v["protectionLevel"].as_str()), (Some("ENABLED"), Some("HSM")), "{v}");
        let attestation = String::from_utf8(unb64(&v["attestation"]["content"])).unwrap();
        assert!(attestation.contains("\"origin\":\"IMPORTED\""), "{attestation}");
        let version = v["name"].as_str().unwrap().to_string();
        check_imported_pair(d, port, &version, &pem, algorithm).await;
        versions.push((version, pem, algorithm, wrapped));
    }

    // Secret keys: HMAC and the symmetric key wrapped by RSA-OAEP alone, raw AES-CBC with KWP.
    call(
        d,
        port,
        Method::POST,
        &format!("{ring}/importJobs?importJobId=direct"),
        json!({"importMethod": "RSA_OAEP_3072_SHA256", "protectionLevel": "HSM"}),
    )
    .await;
    let direct = call(d, port, Method::GET, &format!("{ring}/importJobs/direct"), json!({})).await;
    let kwp_pem = std::fs::read(d.join("job.pem")).unwrap();
    std::fs::write(d.join("job.pem"), direct["publicKey"]["pem"].as_str().unwrap()).unwrap();
    let secret: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
    std::fs::write(d.join("secret.key"), &secret).unwrap();
    let wrapped_secret = wrap(d, "secret.key", false);
    std::fs::write(d.join("job.pem"), kwp_pem).unwrap();
    let aes128: Vec<u8> = (0..16u8).map(|i| i * 3 + 1).collect();
    std::fs::write(d.join("aes128.key"), &aes128).unwrap();
    let wrapped_aes = wrap(d, "aes128.key", true);
    let wrapped_ctr = wrap(d, "secret.key", true);
    let direct = format!("{ring}/importJobs/direct");
    for (id, purpose, algorithm, import_job, wrapped) in [
        ("mac", "MAC", "HMAC_SHA256", &direct, &wrapped_secret),
        ("sym", "ENCRYPT_DECRYPT", "GOOGLE_SYMMETRIC_ENCRYPTION", &direct, &wrapped_secret),
        ("cbc", "RAW_ENCRYPT_DECRYPT", "AES_128_CBC", &job, &wrapped_aes),
        ("ctr", "RAW_ENCRYPT_DECRYPT", "AES_256_CTR", &job, &wrapped_ctr),
    ] {
        let key = format!("{ring}/cryptoKeys/{id}");
        let body = json!({"purpose": purpose, "importOnly": true,
            "versionTemplate": {"algorithm": algorithm, "protectionLevel": "HSM"}});
        call(
            d,
            port,
            Method::POST,
            &format!("{ring}/cryptoKeys?cryptoKeyId={id}&skipInitialVersionCreation=true"),
            body,
        )
        .await;
        let import = json!({"algorithm": algorithm, "importJob": import_job, "wrappedKey": b64(wrapped)});
        let v = call(d, port, Method::POST, &format!("{key}/cryptoKeyVersions:import"), import).await;
        assert_eq!(v["protectionLevel"], "HSM", "{v}");
        let version = v["name"].as_str().unwrap().to_string();
        match purpose {
            "MAC" => {
                let tag = call(d, port, Method::POST, &format!("{version}:macSign"), json!({"data": b64(b"m")})).await;
                std::fs::write(d.join("m"), b"m").unwrap();
                let macopt = format!("hexkey:{}", hex(&secret));
                let theirs = openssl(d, &["dgst", "-sha256", "-mac", "HMAC", "-macopt", &macopt, "-binary", "m"]);
                assert_eq!(unb64(&tag["mac"]), theirs, "the token's HMAC key is the imported one");
            }
            "ENCRYPT_DECRYPT" => {
                call(d, port, Method::POST, &format!("{key}:updatePrimaryVersion"), json!({"cryptoKeyVersionId": "1"}))
                    .await;
                let ct =
                    call(d, port, Method::POST, &format!("{key}:encrypt"), json!({"plaintext": b64(b"hello")})).await;
                assert_eq!(ct["protectionLevel"], "HSM", "{ct}");
                let pt =
                    call(d, port, Method::POST, &format!("{key}:decrypt"), json!({"ciphertext": ct["ciphertext"]}))
                        .await;
                assert_eq!(unb64(&pt["plaintext"]), b"hello");
                // The token's object is the imported key: one block encrypted by it directly
                // (AES-ECB through pkcs11-tool) is OpenSSL's under the imported bytes.
                // pkcs11-tool finds the secret key to encrypt with by its ID (it ignores --label).
                let id = token_id(&conf, "/cryptoKeys/sym/");
                std::fs::write(d.join("block"), [0x24u8; 16]).unwrap();
                pkcs11_tool(
                    &conf,
                    &["--encrypt", "-m", "AES-ECB", "--id", &id, "-i"]
                        .into_iter()
                        .chain([d.join("block").to_str().unwrap(), "-o", d.join("block.enc").to_str().unwrap()])
                        .collect::<Vec<_>>(),
                );
                let theirs = openssl(d, &["enc", "-aes-256-ecb", "-nopad", "-K", &hex(&secret), "-in", "block"]);
                assert_eq!(std::fs::read(d.join("block.enc")).unwrap(), theirs);
            }
            _ if algorithm == "AES_128_CBC" => {
                let plaintext = [0x42u8; 32];
                let iv = [9u8; 16];
                let body = json!({"plaintext": b64(&plaintext), "initializationVector": b64(&iv)});
                let e = call(d, port, Method::POST, &format!("{version}:rawEncrypt"), body).await;
                std::fs::write(d.join("pt"), plaintext).unwrap();
                let theirs =
                    openssl(d, &["enc", "-aes-128-cbc", "-nopad", "-K", &hex(&aes128), "-iv", &hex(&iv), "-in", "pt"]);
                assert_eq!(unb64(&e["ciphertext"]), theirs, "the token's AES key is the imported one");
            }
            _ => {
                // AES-CTR over 40 bytes (not a whole number of blocks) from a counter block whose
                // low 64 bits are all ones: the token counts with all 128 bits, as OpenSSL (and
                // Cloud KMS) do, so the second block's counter carries into the high half.
                let plaintext: Vec<u8> = (0..40u8).collect();
                let iv = [[0u8; 8], [0xff; 8]].concat();
                let body = json!({"plaintext": b64(&plaintext), "initializationVector": b64(&iv)});
                let e = call(d, port, Method::POST, &format!("{version}:rawEncrypt"), body).await;
                std::fs::write(d.join("pt"), &plaintext).unwrap();
                let theirs = openssl(d, &["enc", "-aes-256-ctr", "-K", &hex(&secret), "-iv", &hex(&iv), "-in", "pt"]);
                assert_eq!(unb64(&e["ciphertext"]), theirs, "the token's AES-CTR is OpenSSL's");
                let body = json!({"ciphertext": b64(&theirs), "initializationVector": b64(&iv)});
                let pt = call(d, port, Method::POST, &format!("{version}:rawDecrypt"), body).await;
                assert_eq!(unb64(&pt["plaintext"]), plaintext);
            }
        }
    }

    // In the token: a private and a public object per pair, one secret object per secret key,
    // all sensitive and none extractable.
    let listing = list_objects(&conf);
    // One block per object: a heading line ("Private Key Object; EC ..."), then indented lines.
    let mut objects: Vec<String> = Vec::new();
    for line in listing.lines() {
        match objects.last_mut() {
            Some(o) if line.starts_with(' ') => o.push_str(&format!("\n{line}")),
            _ => objects.push(line.to_string()),
        }
    }
    objects.retain(|o| o.contains("label:      keyhold:"));
    let kinds = |kind: &str| objects.iter().filter(|o| o.starts_with(kind)).count();
    assert_eq!((kinds("Private Key"), kinds("Public Key"), kinds("Secret Key")), (6, 6, 4), "{listing}");
    for o in objects.iter().filter(|o| !o.starts_with("Public Key")) {
        let access = o.lines().find(|l| l.trim_start().starts_with("Access:")).unwrap_or_default();
        assert!(
            access.contains("sensitive") && !access.replace("never extractable", "").contains("extractable"),
            "{o}"
        );
    }

    // A destroyed imported version's objects leave the token; the same material imported into
    // it again makes new ones that sign as before.
    let (version, pem, algorithm, wrapped) = versions.swap_remove(0);
    let label = format!("keyhold:{version}:");
    call(d, port, Method::POST, &format!("{version}:destroy"), json!({})).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = call(d, port, Method::GET, &version, json!({})).await;
        if v["state"] == "DESTROYED" {
            break;
        }
        assert!(Instant::now() < deadline, "not destroyed: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pairs = |conf: &Path| list_objects(conf).matches(label.as_str()).count();
    assert_eq!(pairs(&conf), 0, "the destroyed version's objects are gone");
    let key = version.split("/cryptoKeyVersions/").next().unwrap();
    let before = call(d, port, Method::GET, &version, json!({})).await;
    let again =
        json!({"algorithm": algorithm, "importJob": job, "wrappedKey": b64(&wrapped), "cryptoKeyVersion": version});
    let v = call(d, port, Method::POST, &format!("{key}/cryptoKeyVersions:import"), again).await;
    assert_eq!((v["name"].as_str(), v["state"].as_str()), (Some(version.as_str()), Some("ENABLED")), "{v}");
    assert_eq!(pairs(&conf), 2, "a new private and public object");
    // The attestation names the new object, not the destroyed one.
    let object = |v: &Value| {
        let statement: Value = serde_json::from_slice(&unb64(&v["attestation"]["content"])).unwrap();
        statement["keyObject"].as_str().unwrap().to_string()
    };
    assert_ne!(object(&v), object(&before), "{v}");
    assert_eq!(call(d, port, Method::GET, &version, json!({})).await["attestation"], v["attestation"]);
    check_imported_pair(d, port, &version, &pem, algorithm).await;
    drop(server);
}

/// Every object in the token, as `pkcs11-tool --list-objects` describes them (logged in).
fn list_objects(conf: &Path) -> String {
    let out = Command::new("pkcs11-tool")
        .args(["--module", module(), "--token-label", TOKEN, "--login", "--pin", PIN, "--list-objects"])
        .env("SOFTHSM2_CONF", conf)
        .output()
        .unwrap();
    assert!(out.status.success(), "pkcs11-tool: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// RSA-OAEP (MGF1 with the same hash, empty label) of the file `input` to the public key in the
/// file `public`, by OpenSSL, into the file `out` (all in `d`).
fn oaep_encrypt(d: &Path, public: &str, input: &str, out: &str, md: &str) {
    let (md_opt, mgf_opt) = (format!("rsa_oaep_md:{md}"), format!("rsa_mgf1_md:{md}"));
    let args = ["pkeyutl", "-encrypt", "-pubin", "-inkey", public, "-in", input, "-out", out];
    let options = ["-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", &md_opt, "-pkeyopt", &mgf_opt];
    openssl(d, &[&args[..], &options[..]].concat());
}

/// The `CKA_ID` (hex, as pkcs11-tool lists it) of the one object whose label contains `part`.
fn token_id(conf: &Path, part: &str) -> String {
    let listing = list_objects(conf);
    let mut ids = Vec::new();
    let mut in_match = false;
    for line in listing.lines() {
        let line = line.trim();
        if let Some(label) = line.strip_prefix("label:") {
            in_match = label.contains(part);
        } else if let Some(id) = line.strip_prefix("ID:").filter(|_| in_match) {
            ids.push(id.trim().to_string());
        }
    }
    assert_eq!(ids.len(), 1, "one object labelled *{part}*: {listing}");
    ids.remove(0)
}

/// The imported pair's public key is OpenSSL's own (`pem` holds the private key), and what the
/// token signs verifies with it, or what OpenSSL encrypts to it decrypts.
async fn check_imported_pair(d: &Path, port: u16, version: &str, pem: &str, algorithm: &str) {
    let pk = call(d, port, Method::GET, &format!("{version}/publicKey"), json!({})).await;
    let theirs = String::from_utf8(openssl(d, &["pkey", "-in", pem, "-pubout"])).unwrap();
    assert_eq!(pk["pem"].as_str(), Some(theirs.as_str()), "{algorithm}");
    std::fs::write(d.join("pub.pem"), &theirs).unwrap();
    if algorithm.starts_with("RSA_DECRYPT") {
        oaep_encrypt(d, "pub.pem", "input.txt", "ct", "sha1");
        let ct = std::fs::read(d.join("ct")).unwrap();
        let pt =
            call(d, port, Method::POST, &format!("{version}:asymmetricDecrypt"), json!({"ciphertext": b64(&ct)})).await;
        assert_eq!(unb64(&pt["plaintext"]), b"signed by an imported key");
        return;
    }
    let sig = call(
        d,
        port,
        Method::POST,
        &format!("{version}:asymmetricSign"),
        json!({"data": b64(b"signed by an imported key")}),
    )
    .await;
    std::fs::write(d.join("sig"), unb64(&sig["signature"])).unwrap();
    let args: Vec<&str> = match algorithm {
        "EC_SIGN_ED25519" => {
            vec!["pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin", "-in", "input.txt", "-sigfile", "sig"]
        }
        a if a.ends_with("SHA384") => vec!["dgst", "-sha384", "-verify", "pub.pem", "-signature", "sig", "input.txt"],
        _ => vec!["dgst", "-sha256", "-verify", "pub.pem", "-signature", "sig", "input.txt"],
    };
    openssl(d, &args);
}
