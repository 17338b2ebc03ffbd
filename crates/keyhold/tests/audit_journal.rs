//! `keyhold serve --audit-sync INTERVAL` (issue 18; 100ms unless told otherwise): the entries
//! of reads and cryptographic calls go through a journal on the node's disk. On real server
//! processes: every request answered before a SIGKILL has its entry in the log after the
//! restart, once; entries a previous run left in the journal are moved into the log at start (a
//! torn last frame is not an entry, and nothing already in the log is appended twice); the chain
//! stays whole; the flag's values are checked.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{owner_token, spawn, terminate, wait_ready};
use keyhold_kms::audit::journal::{encode_frame, segment_file_name, segment_header};
use keyhold_kms::audit::{AuditKind, AuditRecord};
use reqwest::Method;
use serde_json::json;

const LOC: &str = "projects/my-project/locations/global";
const KEY: &str = "projects/my-project/locations/global/keyRings/r/cryptoKeys/k";

/// Every data-access entry of my-project, by request ID: how many times each appears.
async fn data_access_request_ids(dir: &Path, port: u16) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    let mut token = String::new();
    loop {
        let page = common::call(
            dir,
            port,
            Method::GET,
            &format!("projects/my-project/auditLogs?logName=data_access&pageSize=1000&pageToken={token}"),
            json!(null),
        )
        .await;
        for e in page["entries"].as_array().into_iter().flatten() {
            let id = e["protoPayload"]["requestMetadata"]["requestAttributes"]["id"].as_str();
            *seen.entry(id.unwrap_or_else(|| panic!("no request id in {e}")).to_string()).or_insert(0) += 1;
        }
        match page["nextPageToken"].as_str() {
            Some(t) => token = t.to_string(),
            None => return seen,
        }
    }
}

async fn make_key(dir: &Path, port: u16) {
    common::call(dir, port, Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), json!({})).await;
    common::call(
        dir,
        port,
        Method::POST,
        &format!("{LOC}/keyRings/r/cryptoKeys?cryptoKeyId=k"),
        json!({"purpose": "ENCRYPT_DECRYPT"}),
    )
    .await;
}

/// One `:encrypt` of a short plaintext with key [`KEY`].
async fn encrypt(http: &reqwest::Client, port: u16, token: &str) -> reqwest::Result<reqwest::Response> {
    http.post(format!("http://127.0.0.1:{port}/v1/{KEY}:encrypt"))
        .bearer_auth(token)
        .body(json!({"plaintext": "aGk="}).to_string())
        .send()
        .await
}

/// Removes the segments a run left in `journal` (before planting others).
fn clear_segments(journal: &Path) {
    for old in std::fs::read_dir(journal).unwrap() {
        let old = old.unwrap().path();
        if old.extension().is_some_and(|e| e == "journal") {
            std::fs::remove_file(old).unwrap();
        }
    }
}

fn verify_chain(dir: &Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyhold"))
        .args(["audit", "verify", "--data-dir"])
        .arg(dir.join("data"))
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "audit verify: {text}");
    text
}

#[tokio::test]
async fn every_answered_request_has_its_entry_after_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    // A long interval: nothing is fsynced before the kill; a SIGKILL must lose nothing anyway
    // (the kernel has the bytes).
    let flags = ["--audit-sync", "10s"];
    let p = spawn(dir.path(), 0, &flags);
    let port = p.port;
    wait_ready(&p).await;
    make_key(dir.path(), port).await;
    let journal = dir.path().join("data/audit-journal");
    assert_eq!(std::fs::metadata(&journal).unwrap().permissions().mode() & 0o777, 0o700);

    // Eight clients encrypt until the kill; every answered request's ID is kept.
    let token = owner_token(dir.path());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (token, stop) = (token.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let http = common::http_client();
            let mut answered = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(resp) = encrypt(&http, port, &token).await else { break };
                let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
                if resp.status().is_success() && resp.bytes().await.is_ok() {
                    answered.push(id);
                }
            }
            answered
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    for entry in std::fs::read_dir(&journal).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600, "{}", path.display());
    }
    drop(p); // SIGKILL, mid-load
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answered = Vec::new();
    for c in clients {
        answered.extend(c.await.unwrap());
    }
    assert!(answered.len() > 100, "only {} requests answered", answered.len());

    let p = spawn(dir.path(), port, &flags);
    wait_ready(&p).await;
    let seen = data_access_request_ids(dir.path(), port).await;
    for id in &answered {
        assert_eq!(seen.get(id), Some(&1), "request {id} was answered; its entry must be in the log once");
    }
    // The chain covers them.
    terminate(p);
    let verdict = verify_chain(dir.path());
    assert!(verdict.starts_with("Audit log intact: "), "{verdict}");
}

fn entry(request_id: &str) -> AuditRecord {
    AuditRecord {
        time: keyhold_api::wire::Timestamp::now(),
        project: "my-project".into(),
        principal: "user:replayed@example.com".into(),
        service: "cloudkms.googleapis.com".into(),
        method: "Encrypt".into(),
        resource: KEY.into(),
        kind: AuditKind::DataAccess,
        permission: Some("cloudkms.cryptoKeyVersions.useToEncrypt".into()),
        granted: true,
        key_version: None,
        justification: None,
        request_id: request_id.into(),
        code: 0,
        message: String::new(),
        anonymous: false,
        access_justification: None,
        warning: None,
        operation: None,
    }
}

#[tokio::test]
async fn entries_left_in_the_journal_reach_the_log_at_the_next_start_once() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--audit-sync", "50ms"];
    // A first run creates the journal's directory.
    let p = spawn(dir.path(), 0, &flags);
    let port = p.port;
    wait_ready(&p).await;
    terminate(p);
    let journal = dir.path().join("data/audit-journal");

    // What a process killed before moving its entries leaves: a segment of three whole
    // entries and a fourth cut short. Its numbers follow the previous run's (none: it logged
    // only its start), so they start at 1 in a segment of their own.
    let mut bytes = planted_segment("killed-run", &[(1, "left-1"), (2, "left-2"), (3, "left-3")], None);
    let mut torn = Vec::new();
    encode_frame(&mut torn, 4, &serde_json::to_vec(&entry("left-4")).unwrap()).unwrap();
    bytes.extend_from_slice(&torn[..torn.len() - 5]);
    clear_segments(&journal);
    std::fs::write(journal.join(segment_file_name(1)), &bytes).unwrap();

    let p = spawn(dir.path(), port, &flags);
    wait_ready(&p).await;
    let seen = data_access_request_ids(dir.path(), port).await;
    for id in ["left-1", "left-2", "left-3"] {
        assert_eq!(seen.get(id), Some(&1), "{id}: {seen:?}");
    }
    assert_eq!(seen.get("left-4"), None, "a torn frame is not an entry");
    let log = std::fs::read_to_string(&p.log).unwrap();
    assert!(log.contains("moved entries left by the previous run into the log"), "{log}");
    assert!(!journal.join(segment_file_name(1)).exists(), "the replayed segment is removed");

    // The same segment put back (a crash after the entries reached the log, before the segment
    // was removed): the log records how far the journal is in it, so nothing doubles.
    terminate(p);
    std::fs::write(journal.join(segment_file_name(1)), &bytes).unwrap();
    let p = spawn(dir.path(), port, &flags);
    wait_ready(&p).await;
    let seen = data_access_request_ids(dir.path(), port).await;
    for id in ["left-1", "left-2", "left-3"] {
        assert_eq!(seen.get(id), Some(&1), "{id} appended twice: {seen:?}");
    }
    // Another process's journal (a node started from a copy of this data directory, say) has a
    // name of its own: its entries are not taken for those of the first, whose numbers they
    // share.
    terminate(p);
    std::fs::write(
        journal.join(segment_file_name(1)),
        planted_segment("copy-run", &[(1, "copy-1"), (2, "copy-2")], None),
    )
    .unwrap();
    let p = spawn(dir.path(), port, &flags);
    wait_ready(&p).await;
    let seen = data_access_request_ids(dir.path(), port).await;
    for id in ["left-1", "left-2", "left-3", "copy-1", "copy-2"] {
        assert_eq!(seen.get(id), Some(&1), "{id}: {seen:?}");
    }
    // New entries after the replayed ones are numbered after them and reach the log too.
    make_key(dir.path(), port).await;
    let enc =
        common::call(dir.path(), port, Method::POST, &format!("{KEY}:encrypt"), json!({"plaintext": "aGk="})).await;
    assert!(enc["ciphertext"].is_string(), "{enc}");
    let seen = data_access_request_ids(dir.path(), port).await;
    assert!(seen.len() >= 4, "{seen:?}");
    terminate(p);
    let verdict = verify_chain(dir.path());
    assert!(verdict.starts_with("Audit log intact: "), "{verdict}");
}

#[test]
fn the_flag_takes_strict_or_an_interval_and_needs_a_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["0ms", "11s", "often", "1h"] {
        let err = common::serve_refused(dir.path(), &["--audit-sync", bad]);
        assert!(err.contains("--audit-sync"), "{bad}: {err}");
    }
    let err = common::refused(&["serve", "--in-memory", "--listen", "127.0.0.1:0", "--audit-sync", "100ms"]);
    assert!(err.contains("needs a data directory"), "{err}");
}

/// A read of the log right after requests shows them, although their entries went through the
/// journal (the read waits for the entries written before it; that wait itself is tested in
/// `keyhold_kms::audit_journal`'s unit tests, since here the log is usually ahead of the read).
#[tokio::test]
async fn a_read_of_the_log_shows_the_requests_answered_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = spawn(dir.path(), 0, &["--audit-sync", "1s"]);
    let port = p.port;
    wait_ready(&p).await;
    make_key(dir.path(), port).await;
    let token = owner_token(dir.path());
    for round in 0..10 {
        // 32 at once, so that the last ones reach the log in a batch of their own.
        let calls = (0..32).map(|_| {
            let token = token.clone();
            tokio::spawn(async move {
                let resp = encrypt(&common::http_client(), port, &token).await.unwrap();
                assert!(resp.status().is_success());
                resp.headers()["x-request-id"].to_str().unwrap().to_string()
            })
        });
        let mut ids = Vec::new();
        for c in calls.collect::<Vec<_>>() {
            ids.push(c.await.unwrap());
        }
        let seen = data_access_request_ids(dir.path(), port).await;
        for id in &ids {
            assert_eq!(seen.get(id), Some(&1), "round {round}: {id}");
        }
    }
}

/// A segment of journal `journal` holding `entries` (number, request ID); the frame of
/// `damaged` (a request ID) gets a flipped bit.
fn planted_segment(journal: &str, entries: &[(u64, &str)], damaged: Option<&str>) -> Vec<u8> {
    let mut bytes = segment_header(journal).unwrap();
    for (seq, id) in entries {
        let start = bytes.len();
        encode_frame(&mut bytes, *seq, &serde_json::to_vec(&entry(id)).unwrap()).unwrap();
        if damaged == Some(*id) {
            bytes[start + 20] ^= 0x01;
        }
    }
    bytes
}

/// A journaled run killed, then the server started `strict`: the journal is emptied into the
/// log first. What the writer leaves after a failed write (frames of a batch never
/// acknowledged, overlapped by the next segment, which starts again at the same number) is not
/// replayed; a damaged segment's entries up to the damage are, and the file is kept.
#[tokio::test]
async fn a_strict_start_empties_what_a_journaled_run_left() {
    let dir = tempfile::tempdir().unwrap();
    // Without --audit-sync a server on disk journals, fsyncing every 100 ms.
    let p = spawn(dir.path(), 0, &[]);
    let port = p.port;
    wait_ready(&p).await;
    let log = std::fs::read_to_string(&p.log).unwrap();
    let line = log.lines().find(|l| l.contains("go through the journal")).unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("interval=100ms"), "{line}");
    terminate(p);
    let journal = dir.path().join("data/audit-journal");
    clear_segments(&journal);
    // Segment 1: two acknowledged entries, then a frame of a batch whose write failed (never
    // acknowledged); the writer went on in segment 3.
    std::fs::write(
        journal.join(segment_file_name(1)),
        planted_segment("killed", &[(1, "a-1"), (2, "a-2"), (3, "stray-3")], None),
    )
    .unwrap();
    // Segment 3: damaged at its third frame.
    let third =
        planted_segment("killed", &[(3, "b-3"), (4, "b-4"), (5, "damaged-5"), (6, "lost-6")], Some("damaged-5"));
    std::fs::write(journal.join(segment_file_name(3)), third).unwrap();
    std::fs::write(journal.join(segment_file_name(7)), planted_segment("killed", &[(7, "c-7")], None)).unwrap();

    let p = spawn(dir.path(), port, &["--audit-sync", "strict"]);
    wait_ready(&p).await;
    let seen = data_access_request_ids(dir.path(), port).await;
    for id in ["a-1", "a-2", "b-3", "b-4", "c-7"] {
        assert_eq!(seen.get(id), Some(&1), "{id}: {seen:?}");
    }
    for id in ["stray-3", "damaged-5", "lost-6"] {
        assert_eq!(seen.get(id), None, "{id}: {seen:?}");
    }
    let log = std::fs::read_to_string(&p.log).unwrap();
    assert!(log.contains("checksum does not match"), "{log}");
    let left: Vec<String> = std::fs::read_dir(&journal)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("000000"))
        .collect();
    assert_eq!(left, [segment_file_name(3).replace(".journal", ".damaged")], "{left:?}");
    terminate(p);
    let verdict = verify_chain(dir.path());
    assert!(verdict.starts_with("Audit log intact: "), "{verdict}");
}
