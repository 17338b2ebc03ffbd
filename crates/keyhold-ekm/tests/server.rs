//! The external key manager over real HTTP on loopback, driven by `EkmClient`: wrap and unwrap,
//! every refusal, policy and token reloads, caching, timeouts, unreachable managers and garbage
//! input.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyhold_api::Code;
use keyhold_api::resources::AccessReason;
use keyhold_crypto::SecretString;
use keyhold_ekm::protocol::KeyState;
use keyhold_ekm::{EkmClient, EkmCredentials, EkmError, EkmServerConfig, KeyStore, RequestContext, UnwrapCache};
use serde_json::{Value, json};

const TOKEN: &str = "test-token-0123456789abcdef";
const VERSION: &str = "projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1";
const ALICE: &str = "user:alice@example.com";
const STORE_AGENT: &str = "serviceAccount:service-123@gcp-sa-store.iam.gserviceaccount.com";

struct Manager {
    dir: tempfile::TempDir,
    base: String,
    store: KeyStore,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Manager {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn uri(&self, key: &str) -> String {
        format!("{}/v1/keys/{key}", self.base)
    }

    fn client(&self) -> EkmClient {
        EkmClient::with_timeout(EkmCredentials::single(SecretString::new(TOKEN.into())), Duration::from_secs(5))
    }

    /// Replaces the policy file atomically, as an operator should.
    fn set_policy(&self, policy: &Value) {
        write_atomically(&self.data().join("policy.json"), policy.to_string().as_bytes());
    }

    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.data().join("audit.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn default_policy() -> Value {
    json!({"keys": {
        "k1": {
            "allowedCallers": [ALICE, "serviceAccount:*@gcp-sa-store.iam.gserviceaccount.com"],
            "allowedReasons": ["CUSTOMER_INITIATED_ACCESS", "GOOGLE_INITIATED_SYSTEM_OPERATION"],
            "allowedCacheDuration": "300s"
        },
        "k2": {"allowedCallers": ["*"], "allowedReasons": ["*"]}
    }})
}

async fn start(policy: Value) -> Manager {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The store the test manages keys with; the manager opens the same directory.
    let store = KeyStore::open(&data, None).unwrap();
    store.create(Some("k1")).unwrap();
    store.create(Some("k2")).unwrap();
    std::fs::write(data.join("policy.json"), policy.to_string()).unwrap();
    std::fs::write(data.join("tokens"), format!("kms-test {TOKEN}\n")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = EkmServerConfig::new(&data);
    let task = tokio::spawn(async move {
        keyhold_ekm::serve(config, listener, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if http_client().get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(Instant::now() < deadline, "the manager did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Manager { dir, base, store, stop: Some(stop), task: Some(task) }
}

fn ctx(caller: &str, reason: AccessReason) -> RequestContext {
    RequestContext {
        key_version_name: VERSION.into(),
        caller_principal: caller.into(),
        reason,
        request_id: "req-42".into(),
        operation: "Encrypt".into(),
        via_service: String::new(),
    }
}

fn alice() -> RequestContext {
    ctx(ALICE, AccessReason::CustomerInitiatedAccess)
}

fn refused(r: Result<impl std::fmt::Debug, EkmError>) -> (Code, String) {
    match r {
        Err(EkmError::Refused { code, message, .. }) => (code, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn wrap_unwrap_round_trip_and_metadata() {
    let m = start(default_policy()).await;
    let c = m.client();
    let blob = c.wrap(&m.uri("k1"), b"a data encryption key", b"aad", &alice()).await.unwrap();
    assert!(!blob.windows(8).any(|w| w == b"a data e"), "the blob does not contain the plaintext");
    let out = c.unwrap(&m.uri("k1"), &blob, b"aad", &alice()).await.unwrap();
    assert_eq!(out.plaintext.expose(), b"a data encryption key");
    assert!(!out.from_cache);
    // Empty AAD and empty plaintext work too.
    let blob2 = c.wrap(&m.uri("k2"), b"", b"", &alice()).await.unwrap();
    assert!(c.unwrap(&m.uri("k2"), &blob2, b"", &alice()).await.unwrap().plaintext.is_empty());

    let meta = c.key_metadata(&m.uri("k1")).await.unwrap();
    assert_eq!((meta.key_id.as_str(), meta.state, meta.key_spec.as_str()), ("k1", KeyState::Enabled, "AES_256"));

    let audit = m.audit();
    let last_unwrap = audit.iter().rfind(|e| e["method"] == "unwrap").unwrap();
    assert_eq!(last_unwrap["decision"], "ALLOWED");
    assert_eq!(last_unwrap["requestId"], "req-42");
    assert_eq!(last_unwrap["client"], "kms-test");
    assert_eq!(last_unwrap["callerPrincipal"], ALICE);
    assert_eq!(last_unwrap["reason"], "CUSTOMER_INITIATED_ACCESS");
    assert_eq!(last_unwrap["resource"], VERSION);
    assert!(last_unwrap["remoteAddr"].as_str().unwrap().starts_with("127.0.0.1:"));
    let text = std::fs::read_to_string(m.data().join("audit.jsonl")).unwrap();
    assert!(!text.contains(TOKEN), "no token in the audit file");
    assert!(!text.contains("YSBkYXRhIGVuY3J5cHRpb24ga2V5") && !text.contains("data encryption"), "no plaintext");
    m.stop().await;
}

#[tokio::test]
async fn wrong_aad_and_tampered_or_foreign_blobs_are_refused() {
    let m = start(default_policy()).await;
    let c = m.client();
    let blob = c.wrap(&m.uri("k1"), b"secret", b"aad-1", &alice()).await.unwrap();
    let (code, msg) = refused(c.unwrap(&m.uri("k1"), &blob, b"aad-2", &alice()).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(msg.contains("Unwrap failed"), "{msg}");
    assert_eq!(refused(c.unwrap(&m.uri("k1"), &blob, b"", &alice()).await).0, Code::InvalidArgument);
    for i in [0, 1, 13, blob.len() - 1] {
        let mut t = blob.clone();
        t[i] ^= 0x01;
        assert_eq!(refused(c.unwrap(&m.uri("k1"), &t, b"aad-1", &alice()).await).0, Code::InvalidArgument, "byte {i}");
    }
    assert_eq!(refused(c.unwrap(&m.uri("k1"), &blob[..10], b"aad-1", &alice()).await).0, Code::InvalidArgument);
    // A blob of k1 presented to k2 (which allows everyone) does not open.
    assert_eq!(refused(c.unwrap(&m.uri("k2"), &blob, b"aad-1", &alice()).await).0, Code::InvalidArgument);
    // The original still works.
    assert_eq!(c.unwrap(&m.uri("k1"), &blob, b"aad-1", &alice()).await.unwrap().plaintext.expose(), b"secret");
    m.stop().await;
}

#[tokio::test]
async fn unknown_key_is_not_found() {
    let m = start(default_policy()).await;
    let c = m.client();
    let (code, msg) = refused(c.wrap(&m.uri("nope"), b"x", b"", &alice()).await);
    assert_eq!((code, msg.as_str()), (Code::NotFound, "Key nope not found."));
    assert_eq!(refused(c.unwrap(&m.uri("nope"), &[1; 40], b"", &alice()).await).0, Code::NotFound);
    assert_eq!(refused(c.key_metadata(&m.uri("nope")).await).0, Code::NotFound);
    let raw = http_client()
        .post(format!("{}:wrap", m.uri("nope")))
        .bearer_auth(TOKEN)
        .json(&json!({"plaintext": "eA==", "additionalContext": {"relativeResourceName": VERSION},
                      "requestMetadata": {"callerPrincipal": ALICE}}))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 404);
    let body: Value = raw.json().await.unwrap();
    assert_eq!(body, json!({"error": {"code": 404, "message": "Key nope not found.", "status": "NOT_FOUND"}}));
    m.stop().await;
}

#[tokio::test]
async fn reason_not_allowed_is_refused_with_a_clear_message() {
    let m = start(default_policy()).await;
    let c = m.client();
    let blob = c.wrap(&m.uri("k1"), b"x", b"", &alice()).await.unwrap();
    let support = ctx(ALICE, AccessReason::CustomerInitiatedSupport);
    for result in [
        c.wrap(&m.uri("k1"), b"x", b"", &support).await.map(|_| ()),
        c.unwrap(&m.uri("k1"), &blob, b"", &support).await.map(|_| ()),
    ] {
        let (code, msg) = refused(result);
        assert_eq!(code, Code::PermissionDenied);
        for part in ["k1", ALICE, "CUSTOMER_INITIATED_SUPPORT", "allowedReasons"] {
            assert!(msg.contains(part), "the message names {part}: {msg}");
        }
    }
    // No reason at all is REASON_UNSPECIFIED, not in the list either.
    let (code, msg) = refused(c.wrap(&m.uri("k1"), b"x", b"", &ctx(ALICE, AccessReason::Unspecified)).await);
    assert_eq!(code, Code::PermissionDenied);
    assert!(msg.contains("REASON_UNSPECIFIED"), "{msg}");
    // The store's service agent with a system-operation reason is allowed (pattern match).
    c.wrap(&m.uri("k1"), b"x", b"", &ctx(STORE_AGENT, AccessReason::GoogleInitiatedSystemOperation)).await.unwrap();

    let denied: Vec<Value> = m.audit().into_iter().filter(|e| e["decision"] == "DENIED").collect();
    assert_eq!(denied.len(), 3, "{denied:?}");
    assert_eq!(denied[0]["code"], "PERMISSION_DENIED");
    assert_eq!(denied[0]["reason"], "CUSTOMER_INITIATED_SUPPORT");
    assert_eq!(denied[0]["callerPrincipal"], ALICE);
    assert_eq!(denied[0]["keyId"], "k1");
    m.stop().await;
}

#[tokio::test]
async fn caller_not_allowed_is_refused() {
    let m = start(default_policy()).await;
    let c = m.client();
    let mallory = ctx("user:mallory@example.com", AccessReason::CustomerInitiatedAccess);
    let (code, msg) = refused(c.wrap(&m.uri("k1"), b"x", b"", &mallory).await);
    assert_eq!(code, Code::PermissionDenied);
    assert!(msg.contains("user:mallory@example.com") && msg.contains("allowedCallers") && msg.contains("k1"), "{msg}");
    // A look-alike of the service-agent pattern does not match.
    let fake =
        ctx("serviceAccount:x@gcp-sa-store.iam.gserviceaccount.com.evil.com", AccessReason::CustomerInitiatedAccess);
    assert_eq!(refused(c.wrap(&m.uri("k1"), b"x", b"", &fake).await).0, Code::PermissionDenied);
    m.stop().await;
}

#[tokio::test]
async fn bad_or_missing_token_is_unauthenticated() {
    let m = start(default_policy()).await;
    let wrong = EkmClient::new(EkmCredentials::single(SecretString::new("wrong-token-0123456789".into())));
    let (code, _) = refused(wrong.wrap(&m.uri("k1"), b"x", b"", &alice()).await);
    assert_eq!(code, Code::Unauthenticated);
    assert_eq!(refused(wrong.key_metadata(&m.uri("k1")).await).0, Code::Unauthenticated);

    let raw = http_client().post(format!("{}:wrap", m.uri("k1"))).body("{}").send().await.unwrap();
    assert_eq!(raw.status(), 401);
    assert_eq!(raw.headers()["www-authenticate"], "Bearer realm=\"keyhold-ekm\"");
    let body: Value = raw.json().await.unwrap();
    assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
    assert_eq!(body["error"]["code"], 401);

    // A client with no token for this manager fails locally.
    let none = EkmClient::new(
        EkmCredentials::default()
            .with_origin("http://other.example:1", SecretString::new("t-0123456789abcdef".into()))
            .unwrap(),
    );
    assert!(matches!(none.wrap(&m.uri("k1"), b"x", b"", &alice()).await, Err(EkmError::NoCredentials { .. })));
    assert!(m.audit().iter().any(|e| e["decision"] == "DENIED" && e["code"] == "UNAUTHENTICATED"));
    m.stop().await;
}

#[tokio::test]
async fn disabled_and_destroyed_keys_are_refused() {
    let m = start(default_policy()).await;
    let c = m.client();
    let blob = c.wrap(&m.uri("k1"), b"x", b"", &alice()).await.unwrap();
    m.store.set_enabled("k1", false).unwrap();
    let (code, msg) = refused(c.unwrap(&m.uri("k1"), &blob, b"", &alice()).await);
    assert_eq!(code, Code::FailedPrecondition);
    assert!(msg.contains("DISABLED"), "{msg}");
    assert_eq!(refused(c.wrap(&m.uri("k1"), b"x", b"", &alice()).await).0, Code::FailedPrecondition);
    assert_eq!(c.key_metadata(&m.uri("k1")).await.unwrap().state, KeyState::Disabled);
    m.store.set_enabled("k1", true).unwrap();
    assert_eq!(c.unwrap(&m.uri("k1"), &blob, b"", &alice()).await.unwrap().plaintext.expose(), b"x");
    m.store.destroy("k1").unwrap();
    let (code, msg) = refused(c.unwrap(&m.uri("k1"), &blob, b"", &alice()).await);
    assert_eq!(code, Code::FailedPrecondition);
    assert!(msg.contains("DESTROYED"), "{msg}");
    m.stop().await;
}

#[tokio::test]
async fn policy_and_tokens_are_reloaded_when_their_files_change() {
    let m = start(default_policy()).await;
    let c = m.client();
    let bob = ctx("user:bob@example.com", AccessReason::CustomerInitiatedAccess);
    assert_eq!(refused(c.wrap(&m.uri("k1"), b"x", b"", &bob).await).0, Code::PermissionDenied);

    let mut p = default_policy();
    p["keys"]["k1"]["allowedCallers"] = json!(["user:bob@example.com"]);
    m.set_policy(&p);
    c.wrap(&m.uri("k1"), b"x", b"", &bob).await.unwrap();
    assert_eq!(refused(c.wrap(&m.uri("k1"), b"x", b"", &alice()).await).0, Code::PermissionDenied, "alice is out");

    // An invalid policy is ignored: the last valid one stays in force.
    write_atomically(&m.data().join("policy.json"), b"{ not json");
    c.wrap(&m.uri("k1"), b"x", b"", &bob).await.unwrap();
    // An empty list of reasons closes the key.
    p["keys"]["k1"]["allowedReasons"] = json!([]);
    m.set_policy(&p);
    assert_eq!(refused(c.wrap(&m.uri("k1"), b"x", b"", &bob).await).0, Code::PermissionDenied);

    // Tokens: a new one is accepted as soon as it is in the file, a removed one refused.
    let second = EkmClient::new(EkmCredentials::single(SecretString::new("second-token-0123456789".into())));
    assert_eq!(refused(second.key_metadata(&m.uri("k2")).await).0, Code::Unauthenticated);
    write_atomically(&m.data().join("tokens"), b"second second-token-0123456789\n");
    second.key_metadata(&m.uri("k2")).await.unwrap();
    assert_eq!(refused(c.key_metadata(&m.uri("k2")).await).0, Code::Unauthenticated);
    m.stop().await;
}

#[tokio::test]
async fn allowed_cache_duration_is_returned_and_honoured_by_the_cache() {
    let m = start(default_policy()).await;
    let plain = m.client();
    let blob = plain.wrap(&m.uri("k1"), b"dek", b"", &alice()).await.unwrap();
    let out = plain.unwrap(&m.uri("k1"), &blob, b"", &alice()).await.unwrap();
    assert_eq!(out.allowed_cache_duration, Some(Duration::from_secs(300)));
    let blob2 = plain.wrap(&m.uri("k2"), b"dek", b"", &alice()).await.unwrap();
    assert_eq!(plain.unwrap(&m.uri("k2"), &blob2, b"", &alice()).await.unwrap().allowed_cache_duration, None);
    let raw: Value = http_client()
        .post(format!("{}:unwrap", m.uri("k1")))
        .bearer_auth(TOKEN)
        .json(&json!({
            "wrappedBlob": keyhold_api::wire::encode_base64(&blob),
            "additionalContext": {"relativeResourceName": VERSION, "accessReasonContext": {"reason": "CUSTOMER_INITIATED_ACCESS"}},
            "requestMetadata": {"callerPrincipal": ALICE}
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(raw["allowedCacheDuration"], "300s");

    let cache = Arc::new(UnwrapCache::new(16, Duration::from_secs(60)));
    let cached = m.client().with_unwrap_cache(cache.clone());
    assert!(!cached.unwrap(&m.uri("k1"), &blob, b"", &alice()).await.unwrap().from_cache);
    assert_eq!(cache.len(), 1);
    // k2 allows no caching.
    cached.unwrap(&m.uri("k2"), &blob2, b"", &alice()).await.unwrap();
    assert_eq!(cache.len(), 1);
    // While cached, the same request is answered without the manager, even with the key disabled.
    m.store.set_enabled("k1", false).unwrap();
    let hit = cached.unwrap(&m.uri("k1"), &blob, b"", &alice()).await.unwrap();
    assert!(hit.from_cache);
    assert_eq!(hit.plaintext.expose(), b"dek");
    assert!(hit.allowed_cache_duration.unwrap() <= Duration::from_secs(60), "capped by the cache's max_ttl");
    // Another caller is not served from the cache: the manager decides (and the key is disabled).
    let agent = ctx(STORE_AGENT, AccessReason::CustomerInitiatedAccess);
    assert_eq!(refused(cached.unwrap(&m.uri("k1"), &blob, b"", &agent).await).0, Code::FailedPrecondition);
    cache.invalidate_key(&m.uri("k1"));
    assert_eq!(refused(cached.unwrap(&m.uri("k1"), &blob, b"", &alice()).await).0, Code::FailedPrecondition);
    m.stop().await;
}

#[tokio::test]
async fn a_manager_that_never_answers_times_out_within_the_bound() {
    // Accepts connections and reads nothing, answers nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let c =
        EkmClient::with_timeout(EkmCredentials::single(SecretString::new(TOKEN.into())), Duration::from_millis(300));
    let uri = format!("http://{addr}/v1/keys/k1");
    for _ in 0..2 {
        let started = Instant::now();
        // The client's own 300 ms timeout must end the call; the outer deadline is generous (no
        // wall-clock upper bound, which flakes on a loaded machine) and only stops a hang.
        let err = tokio::time::timeout(Duration::from_secs(30), c.unwrap(&uri, &[1; 40], b"", &alice()))
            .await
            .expect("the client's timeout never fired")
            .unwrap_err();
        let elapsed = started.elapsed();
        assert!(matches!(err, EkmError::Unavailable { .. }), "{err:?}");
        assert!(err.is_retryable());
        // A lower bound cannot flake: a loaded machine only makes the call slower.
        assert!(elapsed >= Duration::from_millis(250), "{elapsed:?}");
    }
    hold.abort();
}

#[tokio::test]
async fn connection_refused_is_unavailable() {
    // A port bound but not listening, held for the whole test: connections to it are refused,
    // and no other process can take it (a port picked, released and reused raced others).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    let c = EkmClient::new(EkmCredentials::single(SecretString::new(TOKEN.into())));
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        c.wrap(&format!("http://{addr}/v1/keys/k1"), b"secret-plaintext", b"", &alice()),
    )
    .await
    .expect("a refused connection hung")
    .unwrap_err();
    let EkmError::Unavailable { detail } = &err else { panic!("{err:?}") };
    assert!(!detail.contains("secret-plaintext") && !detail.contains(TOKEN), "{detail}");
    // https is reached too (issue 17): nothing listens there, so the manager is unavailable.
    assert!(matches!(
        c.wrap("https://127.0.0.1:1/v1/keys/k", b"x", b"", &alice()).await,
        Err(EkmError::Unavailable { .. })
    ));
}

#[tokio::test]
async fn garbage_input_gets_errors_not_panics() {
    let m = start(default_policy()).await;
    let http = http_client();
    let wrap = format!("{}:wrap", m.uri("k1"));
    let unwrap = format!("{}:unwrap", m.uri("k1"));
    let good_ctx =
        json!({"relativeResourceName": VERSION, "accessReasonContext": {"reason": "CUSTOMER_INITIATED_ACCESS"}});
    let good_meta = json!({"callerPrincipal": ALICE});
    let big = "A".repeat(300 * 1024);
    let cases: Vec<(&str, String, String, u16, &str)> = vec![
        ("POST", wrap.clone(), "not json at all".into(), 400, "Invalid JSON payload"),
        ("POST", wrap.clone(), "".into(), 400, "Invalid JSON payload"),
        ("POST", wrap.clone(), "[1,2,3]".into(), 400, "Invalid JSON payload"),
        ("POST", wrap.clone(), json!({"plaintext": 5}).to_string(), 400, "Invalid JSON payload"),
        ("POST", wrap.clone(), json!({"plaintext": "!!!not base64"}).to_string(), 400, "base64"),
        ("POST", wrap.clone(), json!({"plaintext": "eA==", "additionalContext": {"accessReasonContext": {"reason": "BECAUSE"}}}).to_string(), 400, "BECAUSE"),
        ("POST", wrap.clone(), json!({"additionalContext": good_ctx, "requestMetadata": good_meta}).to_string(), 400, "plaintext is required"),
        ("POST", wrap.clone(), json!({"plaintext": "eA==", "additionalContext": good_ctx}).to_string(), 400, "callerPrincipal is required"),
        ("POST", wrap.clone(), json!({"plaintext": "eA==", "requestMetadata": good_meta}).to_string(), 400, "relativeResourceName is required"),
        ("POST", wrap.clone(), json!({"plaintext": "eA==", "additionalContext": good_ctx, "requestMetadata": {"callerPrincipal": "user:a\nforged log line"}}).to_string(), 400, "printable"),
        ("POST", wrap.clone(), json!({"plaintext": keyhold_api::wire::encode_base64(&vec![0u8; 70_000]), "additionalContext": good_ctx, "requestMetadata": good_meta}).to_string(), 400, "at most 65536"),
        ("POST", wrap.clone(), big, 400, "larger than"),
        ("POST", unwrap.clone(), json!({"additionalContext": good_ctx, "requestMetadata": good_meta}).to_string(), 400, "wrappedBlob is required"),
        ("POST", unwrap.clone(), json!({"wrappedBlob": "", "additionalContext": good_ctx, "requestMetadata": good_meta}).to_string(), 400, "wrappedBlob is required"),
        ("POST", unwrap.clone(), json!({"wrappedBlob": "CQ==", "additionalContext": good_ctx, "requestMetadata": good_meta}).to_string(), 400, "version 9"),
        ("POST", format!("{}/v1/keys/bad%20id:wrap", m.base), "{}".into(), 400, "Invalid key ID"),
        ("POST", format!("{}/v1/keys/k1:explode", m.base), "{}".into(), 404, "No method"),
        ("GET", wrap.clone(), "".into(), 404, "No method"),
        ("DELETE", m.uri("k1"), "".into(), 404, "No method"),
        ("GET", format!("{}/v2/whatever", m.base), "".into(), 404, "No method"),
        ("POST", format!("{}/v1/keys/", m.base), "{}".into(), 404, "No method"),
    ];
    for (method, url, body, status, needle) in cases {
        let resp = http
            .request(method.parse().unwrap(), &url)
            .bearer_auth(TOKEN)
            .body(body.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        assert_eq!(resp.status().as_u16(), status, "{method} {url} {}", &body[..body.len().min(80)]);
        let v: Value = resp.json().await.unwrap();
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{method} {url}: {v}");
        assert_eq!(v["error"]["code"], status);
    }
    // Still serving.
    m.client().wrap(&m.uri("k1"), b"x", b"", &alice()).await.unwrap();
    m.stop().await;
}

/// A plain HTTP client. reqwest builds its TLS with rustls and no bundled crypto provider
/// (Keyhold's clients pass their own configuration): one is installed for `Client::new()`.
fn http_client() -> reqwest::Client {
    keyhold_tls::install_default_provider();
    reqwest::Client::new()
}
