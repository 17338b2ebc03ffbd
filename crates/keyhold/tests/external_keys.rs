//! [K4] EXTERNAL keys and [K11] Key Access Justifications with real processes: a `keyhold ekm
//! serve` manager holding the key, a `keyhold serve` KMS that holds none and calls it for every
//! encrypt and decrypt, and a store instance under that key. The manager's policy and the key's
//! `keyAccessJustificationsPolicy` refuse reasons; a stopped manager makes calls time out (503)
//! and the store serve through its grace period, then go offline, then come back.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{call, free_port, grant_encrypter, owner_token, spawn, store_agent, wait_ready};
use reqwest::Method;
use serde_json::{Value, json};

const LOC: &str = "projects/p/locations/global";
const KEY: &str = "projects/p/locations/global/keyRings/r/cryptoKeys/ext";
const INSTANCE: &str = "projects/p/locations/global/instances/db1";

struct Manager(Child);

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0.id().to_string()]).stderr(Stdio::null()).status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(m: &Manager, sig: &str) {
    assert!(Command::new("kill").args([sig, &m.0.id().to_string()]).status().unwrap().success());
}

fn keyhold(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_keyhold")).args(args).output().unwrap();
    assert!(out.status.success(), "keyhold {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Sends a request as the KMS owner, with an optional access reason; returns (status, body).
async fn send(dir: &Path, port: u16, method: Method, path: &str, body: Value, reason: Option<&str>) -> (u16, Value) {
    let mut req = common::http_client()
        .request(method, format!("http://127.0.0.1:{port}/v1/{path}"))
        .bearer_auth(owner_token(dir))
        .body(body.to_string());
    if let Some(r) = reason {
        req = req.header("X-Keyhold-Access-Reason", r);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn read(dir: &Path, port: u16) -> Result<Vec<u8>, u16> {
    let resp = common::http_client()
        .get(format!("http://127.0.0.1:{port}/v1/{INSTANCE}/objects/o?alt=media"))
        .bearer_auth(owner_token(dir))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    match resp.bytes().await {
        Ok(b) if status == 200 => Ok(b.to_vec()),
        _ => Err(status),
    }
}

async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < Duration::from_secs(20), "{what}: not reached in 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_key_through_a_manager_process() {
    let dir = tempfile::tempdir().unwrap();

    // The manager: one key, a policy allowing the two reasons the store uses.
    let ekm_data = dir.path().join("ekm");
    let ekm_port = free_port();
    let base = format!("http://127.0.0.1:{ekm_port}");
    let uri =
        keyhold(&["ekm", "keys", "create", "db-key", "--data-dir", ekm_data.to_str().unwrap(), "--base-url", &base]);
    let uri = uri.trim().to_string();
    std::fs::write(
        ekm_data.join("policy.json"),
        json!({"keys": {"db-key": {
            "allowedCallers": ["*"],
            "allowedReasons": ["CUSTOMER_INITIATED_ACCESS", "GOOGLE_INITIATED_SYSTEM_OPERATION"]
        }}})
        .to_string(),
    )
    .unwrap();
    let manager = Manager(
        Command::new(env!("CARGO_BIN_EXE_keyhold"))
            .args(["ekm", "serve", "--listen", &format!("127.0.0.1:{ekm_port}"), "--data-dir"])
            .arg(&ekm_data)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("ekm.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    until("manager up", async || common::http_client().get(format!("{base}/healthz")).send().await.is_ok()).await;
    let tokens = std::fs::read_to_string(ekm_data.join("tokens")).unwrap();
    let token = tokens.lines().find_map(|l| l.strip_prefix("keyhold-kms ")).unwrap().trim().to_string();
    let credentials = dir.path().join("ekm-credentials");
    std::fs::write(&credentials, format!("{base} {token}\n")).unwrap();

    // The KMS, holding no material for the key.
    // Port 0: the server binds a free port and logs it (no port picked, released and raced
    // for). The manager's port must be known before it starts (key URIs embed it).
    let kms = spawn(
        dir.path(),
        0,
        &[
            "--ekm-credentials-file",
            credentials.to_str().unwrap(),
            "--ekm-timeout",
            "1s",
            "--store-kms-grace",
            "3s",
            "--store-key-check-period",
            "1s",
        ],
    );
    let port = kms.port;
    wait_ready(&kms).await;
    let d = dir.path();
    // Finding 9: locations report the key manager this server was started with.
    let location = call(d, port, Method::GET, LOC, json!({})).await;
    assert_eq!(location["metadata"]["ekmAvailable"], true, "{location}");
    // proto3 JSON leaves out a false field.
    assert!(location["metadata"].get("hsmAvailable").is_none(), "{location}");
    call(d, port, Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), json!({})).await;
    let template = json!({"purpose": "ENCRYPT_DECRYPT",
        "versionTemplate": {"protectionLevel": "EXTERNAL", "algorithm": "EXTERNAL_SYMMETRIC_ENCRYPTION"}});
    let (st, body) =
        send(d, port, Method::POST, &format!("{LOC}/keyRings/r/cryptoKeys?cryptoKeyId=ext"), template.clone(), None)
            .await;
    assert_eq!(st, 400, "EXTERNAL keys start without a version: {body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("skipInitialVersionCreation"), "{body}");
    call(
        d,
        port,
        Method::POST,
        &format!("{LOC}/keyRings/r/cryptoKeys?cryptoKeyId=ext&skipInitialVersionCreation=true"),
        template,
    )
    .await;
    let (st, body) = send(d, port, Method::POST, &format!("{KEY}/cryptoKeyVersions"), json!({}), None).await;
    assert_eq!(st, 400, "a version needs the manager's key URI: {body}");
    let version = call(
        d,
        port,
        Method::POST,
        &format!("{KEY}/cryptoKeyVersions"),
        json!({"externalProtectionLevelOptions": {"externalKeyUri": uri}}),
    )
    .await;
    assert_eq!(version["externalProtectionLevelOptions"]["externalKeyUri"], uri.as_str(), "{version}");
    call(d, port, Method::POST, &format!("{KEY}:updatePrimaryVersion"), json!({"cryptoKeyVersionId": "1"})).await;

    // Encrypt and decrypt go through the manager; its audit file sees the reason.
    let enc = call(d, port, Method::POST, &format!("{KEY}:encrypt"), json!({"plaintext": "c2VjcmV0"})).await;
    assert_eq!(enc["protectionLevel"], "EXTERNAL");
    let dec = call(d, port, Method::POST, &format!("{KEY}:decrypt"), json!({"ciphertext": enc["ciphertext"]})).await;
    assert_eq!(dec["plaintext"], "c2VjcmV0");
    let manager_audit = std::fs::read_to_string(ekm_data.join("audit.jsonl")).unwrap();
    assert!(manager_audit.contains("CUSTOMER_INITIATED_ACCESS"), "{manager_audit}");
    assert!(!manager_audit.contains("c2VjcmV0"), "no plaintext in the manager's audit file");

    // [K11] The manager refuses a reason its policy does not allow...
    let (st, body) = send(
        d,
        port,
        Method::POST,
        &format!("{KEY}:encrypt"),
        json!({"plaintext": "c2VjcmV0"}),
        Some("GOOGLE_INITIATED_REVIEW"),
    )
    .await;
    assert_eq!((st, body["error"]["status"].as_str()), (400, Some("FAILED_PRECONDITION")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("refused"), "{body}");
    // ... and the key's own policy refuses before the manager is asked.
    call(
        d,
        port,
        Method::PATCH,
        &format!("{KEY}?updateMask=keyAccessJustificationsPolicy"),
        json!({"keyAccessJustificationsPolicy": {"allowedAccessReasons": ["CUSTOMER_INITIATED_ACCESS", "GOOGLE_INITIATED_SYSTEM_OPERATION"]}}),
    )
    .await;
    let (st, body) = send(
        d,
        port,
        Method::POST,
        &format!("{KEY}:decrypt"),
        json!({"ciphertext": enc["ciphertext"]}),
        Some("THIRD_PARTY_DATA_REQUEST"),
    )
    .await;
    assert_eq!(st, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("keyAccessJustificationsPolicy"), "{body}");
    let (st, _) =
        send(d, port, Method::POST, &format!("{KEY}:decrypt"), json!({"ciphertext": "AAAA"}), Some("bogus")).await;
    assert_eq!(st, 400, "an unknown reason is refused");
    // Both decisions are in the KMS audit log, with the reason and the outcome.
    let log = call(d, port, Method::GET, "projects/p/auditLogs?pageSize=1000", json!(null)).await;
    let entries = log["entries"].as_array().unwrap();
    let decision = |reason: &str| {
        entries.iter().find(|e| e["protoPayload"]["metadata"]["keyAccessJustification"]["reason"] == reason).cloned()
    };
    let denied = decision("THIRD_PARTY_DATA_REQUEST").expect("the denied decision is audited");
    assert_eq!(denied["protoPayload"]["metadata"]["keyAccessJustificationPolicyMetadata"]["allowed"], false);
    let allowed = decision("CUSTOMER_INITIATED_ACCESS").expect("allowed decisions are audited");
    assert_eq!(allowed["protoPayload"]["metadata"]["keyAccessJustificationPolicyMetadata"]["allowed"], true);

    // A store instance under the external key.
    let agent = store_agent(port, &owner_token(d)).await;
    grant_encrypter(d, port, KEY, &[&agent]).await;
    call(d, port, Method::POST, &format!("{LOC}/instances?instanceId=db1"), json!({"kmsKey": KEY})).await;
    let resp = common::http_client()
        .put(format!("http://127.0.0.1:{port}/v1/{INSTANCE}/objects/o"))
        .bearer_auth(owner_token(d))
        .body(b"under an external key".to_vec())
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    assert_eq!(read(d, port).await.unwrap(), b"under an external key");

    // The manager stops answering: direct calls time out with 503 ...
    signal(&manager, "-STOP");
    // Bounded by --ekm-timeout: without it the request would hang on the stopped manager. The
    // outer 30 s only catches that hang (a 5 s wall-clock bound flaked on a loaded machine).
    let path = format!("{KEY}:encrypt");
    let encrypt = send(d, port, Method::POST, &path, json!({"plaintext": "eA=="}), None);
    let (st, body) =
        tokio::time::timeout(Duration::from_secs(30), encrypt).await.expect("not bounded by --ekm-timeout");
    assert_eq!((st, body["error"]["status"].as_str()), (503, Some("UNAVAILABLE")), "{body}");
    // ... the store serves from its cached key during the grace period, then goes offline ...
    assert_eq!(read(d, port).await.unwrap(), b"under an external key");
    let offline = until("store offline", async || read(d, port).await == Err(400)).await;
    let inst = call(d, port, Method::GET, INSTANCE, json!(null)).await;
    assert_eq!(inst["suspensionReason"], "KMS_UNREACHABLE", "{inst}");
    // ... and comes back when the manager answers again.
    signal(&manager, "-CONT");
    let back = until("store back", async || read(d, port).await.is_ok()).await;

    // The manager's operator disables the key: refused as a key issue, not an outage.
    keyhold(&["ekm", "keys", "disable", "db-key", "--data-dir", ekm_data.to_str().unwrap()]);
    let (st, body) = send(d, port, Method::POST, &format!("{KEY}:encrypt"), json!({"plaintext": "eA=="}), None).await;
    assert_eq!((st, body["error"]["status"].as_str()), (400, Some("FAILED_PRECONDITION")), "{body}");
    // The manager's key state travels typed: its KEY_DISABLED violation becomes the KMS's.
    assert_eq!(body["error"]["details"][0]["violations"][0]["type"], "KEY_DISABLED", "{body}");
    until("store suspended by the manager", async || read(d, port).await == Err(400)).await;
    let inst = call(d, port, Method::GET, INSTANCE, json!(null)).await;
    assert_eq!(inst["suspensionReason"], "KMS_KEY_ISSUE", "{inst}");
    assert_eq!(inst["keyStatus"]["observedKeyState"], "DISABLED", "{inst}");
    println!("external key: store offline {offline:?} after the manager stopped, back {back:?} after it resumed");
}

/// Issue 17: the KMS reaches an `https://` manager with mutual TLS, as Cloud EKM does. Both
/// ends are the real binaries: `keyhold ekm serve --tls-… --tls-client-ca-file` requires the
/// KMS's client certificate, and `keyhold serve --ekm-ca-file --ekm-client-{cert,key}-file`
/// presents it. A KMS without the client certificate cannot use the key (503, never the key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_key_through_a_manager_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    keyhold(&["tls", "dev-certs", "--out", pki.to_str().unwrap()]);
    let pem = |f: &str| pki.join(f).to_str().unwrap().to_string();

    let ekm_data = dir.path().join("ekm");
    let ekm_port = free_port();
    let base = format!("https://127.0.0.1:{ekm_port}");
    let uri =
        keyhold(&["ekm", "keys", "create", "db-key", "--data-dir", ekm_data.to_str().unwrap(), "--base-url", &base]);
    let uri = uri.trim().to_string();
    assert!(uri.starts_with("https://"), "{uri}");
    std::fs::write(
        ekm_data.join("policy.json"),
        json!({"keys": {"db-key": {"allowedCallers": ["*"], "allowedReasons": ["CUSTOMER_INITIATED_ACCESS"]}}})
            .to_string(),
    )
    .unwrap();
    let ekm_log = dir.path().join("ekm.log");
    let _manager = Manager(
        Command::new(env!("CARGO_BIN_EXE_keyhold"))
            .args(["ekm", "serve", "--listen", &format!("127.0.0.1:{ekm_port}"), "--data-dir"])
            .arg(&ekm_data)
            .args(["--tls-cert-file", &pem("server.pem"), "--tls-key-file", &pem("server.key")])
            .args(["--tls-client-ca-file", &pem("ca.pem")])
            .env("KEYHOLD_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&ekm_log).unwrap())
            .spawn()
            .unwrap(),
    );
    until("manager serving over https", async || {
        std::fs::read_to_string(&ekm_log).unwrap_or_default().contains("Keyhold EKM is serving on https://")
    })
    .await;
    let tokens = std::fs::read_to_string(ekm_data.join("tokens")).unwrap();
    let token = tokens.lines().find_map(|l| l.strip_prefix("keyhold-kms ")).unwrap().trim().to_string();
    let credentials = dir.path().join("ekm-credentials");
    std::fs::write(&credentials, format!("{base} {token}\n")).unwrap();
    let (ca, cert, key) = (pem("ca.pem"), pem("client.pem"), pem("client.key"));
    let ekm_flags = ["--ekm-credentials-file", credentials.to_str().unwrap(), "--ekm-timeout", "2s"];

    // A KMS presenting the client certificate: the whole round trip works.
    let kms_dir = dir.path().join("kms");
    std::fs::create_dir_all(&kms_dir).unwrap();
    let mut flags = ekm_flags.to_vec();
    flags.extend(["--ekm-ca-file", &ca, "--ekm-client-cert-file", &cert, "--ekm-client-key-file", &key]);
    let kms = spawn(&kms_dir, 0, &flags);
    wait_ready(&kms).await;
    let (d, port) = (kms_dir.as_path(), kms.port);
    let template = json!({"purpose": "ENCRYPT_DECRYPT",
        "versionTemplate": {"protectionLevel": "EXTERNAL", "algorithm": "EXTERNAL_SYMMETRIC_ENCRYPTION"}});
    let create_key = async |d: &Path, port: u16| {
        call(d, port, Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), json!({})).await;
        let path = format!("{LOC}/keyRings/r/cryptoKeys?cryptoKeyId=ext&skipInitialVersionCreation=true");
        call(d, port, Method::POST, &path, template.clone()).await;
        let options = json!({"externalProtectionLevelOptions": {"externalKeyUri": uri}});
        call(d, port, Method::POST, &format!("{KEY}/cryptoKeyVersions"), options).await;
        call(d, port, Method::POST, &format!("{KEY}:updatePrimaryVersion"), json!({"cryptoKeyVersionId": "1"})).await;
    };
    create_key(d, port).await;
    let enc = call(d, port, Method::POST, &format!("{KEY}:encrypt"), json!({"plaintext": "c2VjcmV0"})).await;
    assert_eq!(enc["protectionLevel"], "EXTERNAL", "{enc}");
    let dec = call(d, port, Method::POST, &format!("{KEY}:decrypt"), json!({"ciphertext": enc["ciphertext"]})).await;
    assert_eq!(dec["plaintext"], "c2VjcmV0");
    let manager_audit = std::fs::read_to_string(ekm_data.join("audit.jsonl")).unwrap();
    assert!(manager_audit.contains("CUSTOMER_INITIATED_ACCESS"), "{manager_audit}");

    // A KMS that trusts the manager but presents no client certificate is turned away at the
    // handshake: the key cannot be used through it.
    let other_dir = dir.path().join("kms-without-certificate");
    std::fs::create_dir_all(&other_dir).unwrap();
    let mut flags = ekm_flags.to_vec();
    flags.extend(["--ekm-ca-file", &ca]);
    let other = spawn(&other_dir, 0, &flags);
    wait_ready(&other).await;
    create_key(&other_dir, other.port).await;
    let (st, body) =
        send(&other_dir, other.port, Method::POST, &format!("{KEY}:encrypt"), json!({"plaintext": "eA=="}), None).await;
    assert_eq!((st, body["error"]["status"].as_str()), (503, Some("UNAVAILABLE")), "{body}");
    assert!(body.get("ciphertext").is_none(), "{body}");
}
