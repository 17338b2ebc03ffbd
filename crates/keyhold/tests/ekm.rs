//! `keyhold ekm serve` as a real, separate process, used through `EkmClient`: keys created with
//! `keyhold ekm keys create`, a manager that stops answering (SIGSTOP) or dies (SIGKILL), and a
//! restart that still unwraps what was wrapped before (keys persisted).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::free_port;
use keyhold_api::Code;
use keyhold_api::resources::AccessReason;
use keyhold_crypto::SecretString;
use keyhold_ekm::{EkmClient, EkmCredentials, EkmError, RequestContext};

const PLAINTEXT: &[u8] = b"payroll-data-key-0001";
const PLAINTEXT_B64: &str = "cGF5cm9sbC1kYXRhLWtleS0wMDAx";

fn keyhold(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keyhold")).args(args).output().unwrap()
}

fn keyhold_ok(args: &[&str]) -> String {
    let out = keyhold(args);
    assert!(out.status.success(), "keyhold {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

struct Manager {
    child: Child,
    log: PathBuf,
}

impl Drop for Manager {
    // A failing test must not leave a manager running, or stopped.
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.child.id().to_string()]).stderr(Stdio::null()).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(data: &Path, port: u16, n: u32) -> Manager {
    let log = data.parent().unwrap().join(format!("ekm-{n}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_keyhold"))
        .args(["ekm", "serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data)
        .env("KEYHOLD_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Manager { child, log }
}

async fn wait_ready(m: &Manager, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if common::http_client()
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the manager did not start: {}", std::fs::read_to_string(&m.log).unwrap_or_default());
}

fn signal(m: &Manager, sig: &str) {
    let pid = m.child.id();
    let status = Command::new("kill").args([sig, &pid.to_string()]).status().unwrap();
    assert!(status.success(), "kill {sig}");
    // `kill` returns once the signal is sent; a busy machine may deliver it later. Wait until
    // the process is really stopped (or running again), so the next request meets that state.
    let want_stopped = match sig {
        "-STOP" => true,
        "-CONT" => false,
        _ => return,
    };
    let started = Instant::now();
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The state is the field after the parenthesised command name.
        let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).unwrap_or("");
        if (state == "T") == want_stopped {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "process {pid} still in state {state} after kill {sig}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The token `keyhold ekm serve` wrote into its new tokens file.
fn written_token(data: &Path) -> String {
    let text = std::fs::read_to_string(data.join("tokens")).unwrap();
    let line = text.lines().find(|l| l.starts_with("keyhold-kms ")).expect("a token labelled keyhold-kms");
    line.split_whitespace().nth(1).unwrap().to_string()
}

fn ctx() -> RequestContext {
    RequestContext {
        key_version_name: "projects/p/locations/global/keyRings/r/cryptoKeys/ext/cryptoKeyVersions/1".into(),
        caller_principal: "serviceAccount:service-1@gcp-sa-store.iam.gserviceaccount.com".into(),
        reason: AccessReason::GoogleInitiatedSystemOperation,
        request_id: "process-test-1".into(),
        operation: "Decrypt".into(),
        via_service: "store.keyhold.dev".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_separate_manager_process_stops_dies_and_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ekm-data");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let data_s = data.to_str().unwrap();

    // Keys are created by the CLI on the manager's data directory, before or while it runs.
    let uri = keyhold_ok(&["ekm", "keys", "create", "payroll", "--data-dir", data_s, "--base-url", &base]);
    let uri = uri.trim().to_string();
    assert_eq!(uri, format!("{base}/v1/keys/payroll"));
    let random = keyhold_ok(&["ekm", "keys", "create", "--data-dir", data_s, "--base-url", &base]);
    assert!(random.trim().starts_with(&format!("{base}/v1/keys/")) && random.trim().len() > base.len() + 30);
    let dup = keyhold(&["ekm", "keys", "create", "payroll", "--data-dir", data_s]);
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));

    // No policy file: the manager refuses to start and says what to write.
    let no_policy = keyhold(&["ekm", "serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir", data_s]);
    assert!(!no_policy.status.success());
    assert!(String::from_utf8_lossy(&no_policy.stderr).contains("allowedCallers"));

    std::fs::write(
        data.join("policy.json"),
        serde_json::json!({"keys": {"payroll": {
            "allowedCallers": ["serviceAccount:*@gcp-sa-store.iam.gserviceaccount.com"],
            "allowedReasons": ["GOOGLE_INITIATED_SYSTEM_OPERATION", "CUSTOMER_INITIATED_ACCESS"],
            "allowedResources": ["projects/p/locations/*/keyRings/r/cryptoKeys/ext/cryptoKeyVersions/*"]
        }}})
        .to_string(),
    )
    .unwrap();

    let m = spawn(&data, port, 1);
    wait_ready(&m, port).await;
    let token = written_token(&data);
    let client =
        EkmClient::with_timeout(EkmCredentials::single(SecretString::new(token.clone())), Duration::from_secs(1));

    let blob = client.wrap(&uri, PLAINTEXT, b"instance db1", &ctx()).await.unwrap();
    assert_eq!(client.unwrap(&uri, &blob, b"instance db1", &ctx()).await.unwrap().plaintext.expose(), PLAINTEXT);
    let mut other_resource = ctx();
    other_resource.key_version_name =
        "projects/q/locations/global/keyRings/r/cryptoKeys/ext/cryptoKeyVersions/1".into();
    match client.unwrap(&uri, &blob, b"instance db1", &other_resource).await {
        Err(EkmError::Refused { code: Code::PermissionDenied, message, .. }) => {
            assert!(message.contains("allowedResources"), "{message}")
        }
        other => panic!("{other:?}"),
    }

    // The CLI changes keys under the running manager; it sees them on the next request.
    let list = keyhold_ok(&["ekm", "keys", "list", "--data-dir", data_s, "--base-url", &base]);
    assert!(list.lines().next().unwrap().starts_with("KEY_ID"), "{list}");
    assert!(list.lines().any(|l| l.starts_with("payroll") && l.contains("ENABLED") && l.contains(&uri)), "{list}");
    keyhold_ok(&["ekm", "keys", "disable", "payroll", "--data-dir", data_s]);
    match client.unwrap(&uri, &blob, b"instance db1", &ctx()).await {
        Err(EkmError::Refused { code: Code::FailedPrecondition, .. }) => {}
        other => panic!("{other:?}"),
    }
    keyhold_ok(&["ekm", "keys", "enable", "payroll", "--data-dir", data_s]);
    client.unwrap(&uri, &blob, b"instance db1", &ctx()).await.unwrap();

    // A manager that stops answering: the client gives up within its timeout.
    signal(&m, "-STOP");
    let started = Instant::now();
    // The client's own timeout must end the call; the outer 30 s only stops a hang (an upper
    // wall-clock bound flaked on a loaded machine). The lower bound cannot flake.
    let err = tokio::time::timeout(Duration::from_secs(30), client.unwrap(&uri, &blob, b"instance db1", &ctx()))
        .await
        .expect("the client's timeout never fired")
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(err, EkmError::Unavailable { .. }), "{err:?}");
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
    signal(&m, "-CONT");
    assert_eq!(client.unwrap(&uri, &blob, b"instance db1", &ctx()).await.unwrap().plaintext.expose(), PLAINTEXT);

    // A manager that is gone.
    let mut m = m;
    m.child.kill().unwrap();
    m.child.wait().unwrap();
    let err = tokio::time::timeout(Duration::from_secs(30), client.unwrap(&uri, &blob, b"instance db1", &ctx()))
        .await
        .expect("a call to a manager that is gone hung")
        .unwrap_err();
    assert!(matches!(err, EkmError::Unavailable { .. }), "{err:?}");
    let log1 = std::fs::read_to_string(&m.log).unwrap();
    drop(m);

    // Back again on the same port and data: the same blob unwraps (keys persisted, same root key).
    let m = spawn(&data, port, 2);
    wait_ready(&m, port).await;
    assert_eq!(written_token(&data), token, "the tokens file is kept");
    assert_eq!(client.unwrap(&uri, &blob, b"instance db1", &ctx()).await.unwrap().plaintext.expose(), PLAINTEXT);

    signal(&m, "-TERM");
    let mut m = m;
    let exit = m.child.wait().unwrap();
    assert!(exit.success(), "graceful shutdown exits 0: {exit:?}");
    let log2 = std::fs::read_to_string(&m.log).unwrap();

    assert!(log1.contains("Keyhold EKM is serving"), "{log1}");
    assert!(log1.contains("wrote a new tokens file"), "{log1}");
    for log in [&log1, &log2] {
        assert!(log.contains("ekm decision"), "decisions are logged: {log}");
        assert!(!log.contains(&token), "no token in the log");
        assert!(!log.contains(PLAINTEXT_B64) && !log.contains("payroll-data-key"), "no plaintext in the log");
    }
    let audit = std::fs::read_to_string(data.join("audit.jsonl")).unwrap();
    let entries: Vec<serde_json::Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(entries.iter().any(|e| e["decision"] == "DENIED" && e["code"] == "FAILED_PRECONDITION"));
    assert!(entries.iter().any(|e| e["decision"] == "DENIED" && e["code"] == "PERMISSION_DENIED"));
    assert!(entries.iter().all(|e| e["keyId"] == "payroll"));
    assert!(entries.iter().filter(|e| e["decision"] == "ALLOWED").all(|e| e["requestId"] == "process-test-1"
        && e["viaService"] == "store.keyhold.dev"
        && e["reason"] == "GOOGLE_INITIATED_SYSTEM_OPERATION"));
    assert!(!audit.contains(&token) && !audit.contains(PLAINTEXT_B64));
}

/// Starts `keyhold ekm serve` on a port the kernel picks (under umask 000, to show the audit
/// file's mode does not depend on it) and returns it with its address, read from its log.
async fn spawn_any_port(data: &Path, n: u32) -> (Manager, String) {
    let log = data.parent().unwrap().join(format!("ekm-any-{n}.log"));
    let child = Command::new("sh")
        .arg("-c")
        .arg("umask 000; exec \"$0\" ekm serve --listen 127.0.0.1:0 --data-dir \"$1\"")
        .arg(env!("CARGO_BIN_EXE_keyhold"))
        .arg(data)
        .env("KEYHOLD_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let m = Manager { child, log };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&m.log).unwrap_or_default();
        if let Some(i) = text.find("Keyhold EKM is serving on http://") {
            let rest = &text[i + "Keyhold EKM is serving on ".len()..];
            let base = rest.split(|c: char| c.is_whitespace() || c == '"').next().unwrap().to_string();
            return (m, base);
        }
        assert!(Instant::now() < deadline, "the manager did not start: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn verify_audit(file: &Path) -> (bool, String) {
    let out = keyhold(&["ekm", "audit", "verify", "--file", file.to_str().unwrap()]);
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

// Finding 10 (issue 15): the manager's audit file is hash-chained, synced before each answer,
// continued across restarts (a torn tail cut off), 0600, and `keyhold ekm audit verify` finds
// the first edited, deleted or reordered entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_file_is_a_verifiable_chain_continued_across_restarts() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ekm-data");
    let data_s = data.to_str().unwrap();
    keyhold_ok(&["ekm", "keys", "create", "payroll", "--data-dir", data_s]);
    std::fs::write(
        data.join("policy.json"),
        serde_json::json!({"keys": {"payroll": {
            "allowedCallers": ["serviceAccount:*@gcp-sa-store.iam.gserviceaccount.com"],
            "allowedReasons": ["GOOGLE_INITIATED_SYSTEM_OPERATION"]
        }}})
        .to_string(),
    )
    .unwrap();
    let audit = data.join("audit.jsonl");

    let (m, base) = spawn_any_port(&data, 1).await;
    let uri = format!("{base}/v1/keys/payroll");
    let client = EkmClient::new(EkmCredentials::single(SecretString::new(written_token(&data))));
    // Concurrent wraps and unwraps (sharing syncs), and refusals, all recorded.
    let mut tasks = Vec::new();
    for i in 0..12 {
        let (client, uri) = (client.clone(), uri.clone());
        tasks.push(tokio::spawn(async move {
            let aad = format!("instance {i}");
            let blob = client.wrap(&uri, PLAINTEXT, aad.as_bytes(), &ctx()).await.unwrap();
            client.unwrap(&uri, &blob, aad.as_bytes(), &ctx()).await.unwrap();
            assert!(client.unwrap(&uri, &blob, b"wrong aad", &ctx()).await.is_err());
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Every answered request's entry is already in the file: no wait for a flush.
    let text = std::fs::read_to_string(&audit).unwrap();
    assert_eq!(text.lines().count(), 36, "{text}");
    assert_eq!(std::fs::metadata(&audit).unwrap().permissions().mode() & 0o777, 0o600, "0600 under umask 000");
    let (ok, out) = verify_audit(&audit);
    assert!(ok && out.contains("intact: 36 entries"), "{out}");
    let head = out.trim().rsplit(' ').next().unwrap().to_string();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!((last["seq"].as_u64(), last["hash"].as_str()), (Some(36), Some(head.as_str())));
    assert!(text.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["keyId"] == "payroll"));

    // A crash in the middle of a write, and an operator who widened the file's mode.
    let mut m = m;
    m.child.kill().unwrap();
    m.child.wait().unwrap();
    drop(m);
    let complete = std::fs::read(&audit).unwrap();
    let mut torn = complete.clone();
    torn.extend_from_slice(br#"{"seq":37,"prevHash":"ab"#);
    std::fs::write(&audit, &torn).unwrap();
    std::fs::set_permissions(&audit, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, out) = verify_audit(&audit);
    assert!(!ok && out.contains("BROKEN at entry 37") && out.contains("incomplete"), "{out}");

    let (m, base) = spawn_any_port(&data, 2).await;
    let log = std::fs::read_to_string(&m.log).unwrap();
    assert!(log.contains("cutting it off"), "the torn tail is reported: {log}");
    assert_eq!(std::fs::read(&audit).unwrap(), complete, "the torn tail is cut off, the rest kept");
    assert_eq!(std::fs::metadata(&audit).unwrap().permissions().mode() & 0o777, 0o600);
    let uri = format!("{base}/v1/keys/payroll");
    let blob = client.wrap(&uri, PLAINTEXT, b"after restart", &ctx()).await.unwrap();
    client.unwrap(&uri, &blob, b"after restart", &ctx()).await.unwrap();
    let (ok, out) = verify_audit(&audit);
    assert!(ok && out.contains("intact: 38 entries"), "the chain continues across the restart: {out}");
    let lines: Vec<String> = std::fs::read_to_string(&audit).unwrap().lines().map(str::to_string).collect();
    let entry37: serde_json::Value = serde_json::from_str(&lines[36]).unwrap();
    assert_eq!((entry37["seq"].as_u64(), entry37["prevHash"].as_str()), (Some(37), Some(head.as_str())));
    drop(m);

    // Tampering, each found at the entry it touched.
    let tampered = dir.path().join("tampered.jsonl");
    let write = |l: &[String]| std::fs::write(&tampered, l.iter().map(|l| format!("{l}\n")).collect::<String>());
    let mut edited = lines.clone();
    edited[9] = edited[9].replace("\"decision\":\"ALLOWED\"", "\"decision\":\"DENIED\"");
    edited[9] = edited[9].replace("\"decision\":\"FAILED\"", "\"decision\":\"ALLOWED\"");
    assert_ne!(edited[9], lines[9]);
    write(&edited).unwrap();
    let (ok, out) = verify_audit(&tampered);
    assert!(!ok && out.contains("BROKEN at entry 10 (line 10") && out.contains("modified"), "{out}");
    let mut deleted = lines.clone();
    deleted.remove(20);
    write(&deleted).unwrap();
    let (ok, out) = verify_audit(&tampered);
    assert!(!ok && out.contains("BROKEN at entry 21") && out.contains("entry 21 is missing"), "{out}");
    let mut reordered = lines.clone();
    reordered.swap(29, 30);
    write(&reordered).unwrap();
    let (ok, out) = verify_audit(&tampered);
    assert!(!ok && out.contains("BROKEN at entry 30"), "{out}");
    let mut truncated_head = lines.clone();
    truncated_head.remove(0);
    write(&truncated_head).unwrap();
    let (ok, out) = verify_audit(&tampered);
    assert!(!ok && out.contains("BROKEN at entry 1"), "{out}");
}
