//! The store as its own process against a KMS in another process ([C5]-[C7] with real
//! processes): `keyhold serve --kms-endpoint URL --kms-token-file F` keeps an instance's data
//! under a key held by a second `keyhold serve`. A disable, a revoke and a destroy made on the
//! KMS are enforced within the store's check period; killing the KMS starts the grace period
//! (reads still served), after which the instance is suspended as `KMS_UNREACHABLE`; the KMS
//! coming back resumes it, all without restarting the store.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{call, cli, grant_encrypter, owner_token, spawn, store_agent, wait_ready};
use reqwest::Method;
use serde_json::{Value, json};

const LOC: &str = "projects/p/locations/global";
const KEY: &str = "projects/p/locations/global/keyRings/r/cryptoKeys/k";
const INSTANCE: &str = "projects/p/locations/global/instances/db1";
const INACCESSIBLE: &str = "KMS key required by the Keyhold resource is not accessible";

/// What a client sees when it reads object contents from the store.
#[derive(Debug)]
enum Read {
    Served(Vec<u8>),
    Refused(u16, String),
    /// The key became unusable while the contents were being streamed: the server cut the
    /// response short rather than go on serving.
    CutOff(#[allow(dead_code)] String),
}

async fn read(dir: &Path, port: u16, object: &str) -> Read {
    let resp = common::http_client()
        .get(format!("http://127.0.0.1:{port}/v1/{INSTANCE}/objects/{object}?alt=media"))
        .bearer_auth(owner_token(dir))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    match resp.bytes().await {
        Ok(body) if status == 200 => Read::Served(body.to_vec()),
        Ok(body) => Read::Refused(status, String::from_utf8_lossy(&body).into_owned()),
        Err(e) => Read::CutOff(e.to_string()),
    }
}

/// Polls the store until `want` holds for a read of `object`; returns how long that took.
async fn until_read(dir: &Path, port: u16, object: &str, want: impl Fn(&Read) -> bool) -> (Duration, Read) {
    let start = Instant::now();
    loop {
        let r = read(dir, port, object).await;
        if want(&r) {
            return (start.elapsed(), r);
        }
        assert!(start.elapsed() < Duration::from_secs(15), "not reached in 15 s; last read: {r:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn served(data: &[u8]) -> impl Fn(&Read) -> bool + '_ {
    move |r| matches!(r, Read::Served(d) if d == data)
}

fn refused(r: &Read) -> bool {
    matches!(r, Read::Refused(400, body) if body.contains(INACCESSIBLE) && body.contains(KEY))
}

async fn instance(dir: &Path, port: u16) -> Value {
    let resp = common::http_client()
        .get(format!("http://127.0.0.1:{port}/v1/{INSTANCE}"))
        .bearer_auth(owner_token(dir))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    resp.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_process_follows_a_remote_kms_and_its_outage() {
    // The KMS process: a key, a token for the store service, and the store's agent.
    let kms_dir = tempfile::tempdir().unwrap();
    let kms = spawn(kms_dir.path(), 0, &[]);
    // Restarted below on this same port, which the store process is pointed at.
    let kms_port = kms.port;
    wait_ready(&kms).await;
    let (k, kp) = (kms_dir.path(), kms_port);
    call(k, kp, Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), json!({})).await;
    call(
        k,
        kp,
        Method::POST,
        &format!("{LOC}/keyRings/r/cryptoKeys?cryptoKeyId=k"),
        json!({"purpose": "ENCRYPT_DECRYPT"}),
    )
    .await;
    let (ok, store_token, err) = cli(k, kp, &["auth", "tokens", "create", "--principal", "service:store.keyhold.dev"]);
    assert!(ok, "{err}");
    let store_token = store_token.trim().to_string();
    let agent = store_agent(kp, &store_token).await;
    assert!(agent.contains("@gcp-sa-store.iam.gserviceaccount.com"), "{agent}");

    // The store process, its own database, pointed at the KMS with a short grace.
    let store_dir = tempfile::tempdir().unwrap();
    let token_file = store_dir.path().join("store.token");
    std::fs::write(&token_file, &store_token).unwrap();
    let endpoint = format!("http://127.0.0.1:{kp}");
    let store = spawn(
        store_dir.path(),
        0,
        &[
            "--kms-endpoint",
            &endpoint,
            "--kms-token-file",
            token_file.to_str().unwrap(),
            "--store-kms-grace",
            "3s",
            "--store-key-check-period",
            "1s",
        ],
    );
    wait_ready(&store).await;
    let (s, sp) = (store_dir.path(), store.port);

    // [C1] through the remote KMS: refused until the agent holds the role.
    let resp = common::http_client()
        .post(format!("http://127.0.0.1:{sp}/v1/{LOC}/instances?instanceId=db1"))
        .bearer_auth(owner_token(s))
        .body(json!({"kmsKey": KEY}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body = resp.text().await.unwrap();
    assert!(body.contains("keyhold kms keys add-iam-policy-binding k"), "{body}");
    grant_encrypter(k, kp, KEY, &[&agent]).await;
    let inst = call(s, sp, Method::POST, &format!("{LOC}/instances?instanceId=db1"), json!({"kmsKey": KEY})).await;
    assert_eq!(inst["state"], "READY", "{inst}");
    assert_eq!(inst["encryptionInfo"]["kmsKeyVersions"], json!([format!("{KEY}/cryptoKeyVersions/1")]));

    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let resp = common::http_client()
        .put(format!("http://127.0.0.1:{sp}/v1/{INSTANCE}/objects/a.bin"))
        .bearer_auth(owner_token(s))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    assert!(served(&data)(&read(s, sp, "a.bin").await));

    // Disable on the KMS: the store notices within its 1 s check period, metadata stays readable.
    let v1 = format!("{KEY}/cryptoKeyVersions/1");
    call(k, kp, Method::PATCH, &format!("{v1}?updateMask=state"), json!({"state": "DISABLED"})).await;
    let (disable_latency, _) = until_read(s, sp, "a.bin", refused).await;
    let inst = instance(s, sp).await;
    assert_eq!(inst["state"], "SUSPENDED", "{inst}");
    assert_eq!(inst["suspensionReason"], "KMS_KEY_ISSUE", "{inst}");
    assert_eq!(inst["keyStatus"]["observedKeyState"], "DISABLED", "{inst}");
    let meta = call(s, sp, Method::GET, &format!("{INSTANCE}/objects/a.bin"), json!(null)).await;
    assert_eq!(meta["size"], json!(data.len().to_string()), "{meta}");
    let list = call(s, sp, Method::GET, &format!("{INSTANCE}/objects"), json!(null)).await;
    assert_eq!(list["objects"].as_array().map(Vec::len), Some(1), "{list}");

    call(k, kp, Method::PATCH, &format!("{v1}?updateMask=state"), json!({"state": "ENABLED"})).await;
    let (enable_latency, _) = until_read(s, sp, "a.bin", served(&data)).await;

    // Revoke and re-grant the agent's role.
    grant_encrypter(k, kp, KEY, &[]).await;
    let (revoke_latency, _) = until_read(s, sp, "a.bin", refused).await;
    grant_encrypter(k, kp, KEY, &[&agent]).await;
    let (regrant_latency, _) = until_read(s, sp, "a.bin", served(&data)).await;

    // The KMS process dies. Reads go on from the cached KEK during the grace period...
    let mut kms = kms;
    kms.child.kill().unwrap();
    kms.child.wait().unwrap();
    let killed = Instant::now();
    assert!(served(&data)(&read(s, sp, "a.bin").await), "served right after the KMS died");
    let start = Instant::now();
    loop {
        let inst = instance(s, sp).await;
        if inst["encryptionInfo"]["encryptionStatus"]["code"] == 14 {
            assert_eq!(inst["state"], "READY", "in grace: {inst}");
            assert!(inst["keyStatus"]["graceExpireTime"].is_string(), "{inst}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "grace never reported: {inst}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served(&data)(&read(s, sp, "a.bin").await), "served during grace");
    // ... and stop when it runs out (3 s after the last check that found the key usable, which
    // was at most one check period before the kill).
    let (_, _) = until_read(s, sp, "a.bin", refused).await;
    let offline_after = killed.elapsed();
    assert!(offline_after >= Duration::from_millis(1900), "grace was {offline_after:?}, expected at least ~2 s");
    let inst = instance(s, sp).await;
    assert_eq!(inst["state"], "SUSPENDED", "{inst}");
    assert_eq!(inst["suspensionReason"], "KMS_UNREACHABLE", "{inst}");

    // The KMS comes back on the same data and port: the store resumes by itself.
    let kms = spawn(kms_dir.path(), kms_port, &[]);
    wait_ready(&kms).await;
    let back = Instant::now();
    let (_, _) = until_read(s, sp, "a.bin", served(&data)).await;
    let resume_latency = back.elapsed();
    assert_eq!(instance(s, sp).await["state"], "READY");

    // Destroying the version is enforced like a disable.
    call(k, kp, Method::POST, &format!("{v1}:destroy"), json!({})).await;
    let (destroy_latency, _) = until_read(s, sp, "a.bin", refused).await;
    assert_eq!(instance(s, sp).await["keyStatus"]["observedKeyState"], "DESTROY_SCHEDULED");

    // Figures for the closing note (`cargo test ... -- --nocapture`).
    println!(
        "remote KMS, check period 1 s, grace 3 s: disable {disable_latency:?}, enable {enable_latency:?}, \
         revoke {revoke_latency:?}, re-grant {regrant_latency:?}, offline {offline_after:?} after the kill, \
         resumed {resume_latency:?} after the KMS was back, destroy {destroy_latency:?}"
    );
    drop(store);
}
