//! Per-project quotas (hardening issue 15), over real HTTP on loopback against a real SQLite
//! file. The KMS reads a manual clock, so that refills are tested by moving time rather than
//! by sleeping.

mod common;

use std::num::NonZeroU32;
use std::sync::Arc;

use keyhold_api::wire::ProtoDuration;
use keyhold_kms::clock::{Clock, ManualClock, SystemClock};
use keyhold_kms::quota::{Limit, QuotaConfig, QuotaMetric};
use keyhold_kms::{Kms, KmsConfig};
use keyhold_sql::Database;
use reqwest::Method;
use serde_json::{Value, json};

struct Server {
    base: String,
    http: reqwest::Client,
    kms: Arc<Kms>,
    token: String,
    _dir: tempfile::TempDir,
}

/// An answer: status, `Retry-After` header, JSON body.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

async fn start(config: KmsConfig, clock: Arc<dyn Clock>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::SqliteFile(dir.path().join("keyhold.db"));
    let root = keyhold_crypto::KeyBytes::generate().unwrap();
    let common::Built { kms, app, token } = common::build(&db, dir.path(), config, root, clock).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server { base: format!("http://{addr}/v1"), http: http_client(), kms, token, _dir: dir }
}

impl Server {
    async fn call_as(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> Answer {
        let mut req = self.http.request(method, format!("{}/{path}", self.base)).bearer_auth(token);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let retry_after = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
        let text = resp.text().await.unwrap();
        Answer { status, retry_after, body: serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")) }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        self.call_as(&self.token.clone(), method, path, body).await
    }

    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let a = self.call(method, path, body).await;
        assert_eq!(a.status, 200, "{path}: {}", a.body);
        a.body
    }

    async fn with_key(&self, project: &str) -> String {
        let loc = format!("projects/{project}/locations/global");
        self.ok(Method::POST, &format!("{loc}/keyRings?keyRingId=r"), None).await;
        let key = format!("{loc}/keyRings/r/cryptoKeys/k");
        self.ok(
            Method::POST,
            &format!("{loc}/keyRings/r/cryptoKeys?cryptoKeyId=k"),
            Some(json!({"purpose": "ENCRYPT_DECRYPT"})),
        )
        .await;
        key
    }

    async fn encrypt(&self, key: &str) -> Answer {
        self.call(Method::POST, &format!("{key}:encrypt"), Some(json!({"plaintext": "aGVsbG8="}))).await
    }

    async fn audit(&self, project: &str, query: &str) -> Vec<Value> {
        let v = self.ok(Method::GET, &format!("projects/{project}/auditLogs?pageSize=1000&{query}"), None).await;
        v["entries"].as_array().cloned().unwrap_or_default()
    }
}

fn per_minute(n: u32) -> Limit {
    Limit::PerMinute(NonZeroU32::new(n).unwrap())
}

/// The refusal Cloud KMS gives, field for field (docs/operations.md, "Quotas").
fn assert_exhausted(a: &Answer, metric: &str, service: &str, project_number: i64, limit: u32, retry: &str) {
    assert_eq!(a.status, 429, "{}", a.body);
    let e = &a.body["error"];
    assert_eq!(e["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(e["code"], 429);
    assert_eq!(
        e["message"],
        format!(
            "Quota exceeded for quota metric '{metric}' and limit '{metric} per minute' of service '{service}' for consumer 'project_number:{project_number}'."
        )
    );
    let info =
        e["details"].as_array().unwrap().iter().find(|d| d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo");
    let info = info.unwrap_or_else(|| panic!("no ErrorInfo: {e}"));
    assert_eq!(info["reason"], "RATE_LIMIT_EXCEEDED");
    assert_eq!(info["domain"], "googleapis.com");
    assert_eq!(info["metadata"]["consumer"], format!("projects/{project_number}"));
    assert_eq!(info["metadata"]["service"], service);
    assert_eq!(info["metadata"]["quota_limit_value"], limit.to_string());
    assert!(info["metadata"]["quota_metric"].as_str().unwrap().starts_with(&format!("{service}/")));
    let retry_info =
        e["details"].as_array().unwrap().iter().find(|d| d["@type"] == "type.googleapis.com/google.rpc.RetryInfo");
    assert_eq!(retry_info.unwrap()["retryDelay"], format!("{retry}s"));
    assert_eq!(a.retry_after.as_deref(), Some(retry));
}

#[tokio::test]
async fn quotas_are_off_by_default() {
    let s = start(KmsConfig::default(), Arc::new(SystemClock)).await;
    let key = s.with_key("a").await;
    for _ in 0..300 {
        assert_eq!(s.encrypt(&key).await.status, 200);
    }
    for _ in 0..100 {
        s.ok(Method::GET, &key, None).await;
    }
    assert!(!s.kms.quotas().is_on());
    assert_eq!(s.kms.quotas().tracked(), 0, "nothing is counted while quotas are off");
}

#[tokio::test]
async fn a_flooding_project_is_refused_with_googles_429_and_others_are_served() {
    let clock = Arc::new(ManualClock::default());
    let mut quotas = QuotaConfig::default();
    quotas.set(QuotaMetric::Crypto, per_minute(5));
    quotas.set(QuotaMetric::Read, per_minute(4));
    quotas.apply_override("big:crypto=unlimited").unwrap();
    let s = start(KmsConfig { quotas, ..KmsConfig::default() }, clock.clone()).await;
    let (a, b, big) = (s.with_key("a").await, s.with_key("b").await, s.with_key("big").await);
    let a_number = s.kms.project_number("a").await.unwrap();

    // A minute's worth at once, then 429 in Cloud KMS's words, with when to come back.
    let mut ciphertext = String::new();
    for _ in 0..5 {
        let r = s.encrypt(&a).await;
        assert_eq!(r.status, 200, "{}", r.body);
        ciphertext = r.body["ciphertext"].as_str().unwrap().to_string();
    }
    let refused = s.encrypt(&a).await;
    assert_exhausted(&refused, "Cryptographic requests", "cloudkms.googleapis.com", a_number, 5, "12");
    let refused = s.call(Method::POST, &format!("{a}:decrypt"), Some(json!({ "ciphertext": ciphertext }))).await;
    assert_exhausted(&refused, "Cryptographic requests", "cloudkms.googleapis.com", a_number, 5, "12");

    // Another project is served, a project with its own limit too, and so are A's admin calls:
    // another quota.
    assert_eq!(s.encrypt(&b).await.status, 200);
    for _ in 0..20 {
        assert_eq!(s.encrypt(&big).await.status, 200);
    }
    s.ok(Method::GET, &a, None).await;

    // The store's API counts in its own buckets (per service, as Google's quotas are).
    for _ in 0..4 {
        s.ok(Method::GET, "projects/a/locations/global/instances", None).await;
    }
    let refused = s.call(Method::GET, "projects/a/locations/global/instances", None).await;
    assert_exhausted(&refused, "Read requests", "store.keyhold.dev", a_number, 4, "15");
    s.ok(Method::GET, &a, None).await;

    // Each refusal is audited, after authentication and authorization, with its status.
    let entries = s.audit("a", "methodName=Encrypt").await;
    let refusals: Vec<&Value> = entries.iter().filter(|e| e["protoPayload"]["status"]["code"] == 8).collect();
    assert_eq!(refusals.len(), 1, "{entries:?}");
    let p = &refusals[0]["protoPayload"];
    assert_eq!(p["authenticationInfo"]["principalEmail"], "owner@keyhold.local");
    assert_eq!(p["authorizationInfo"][0]["granted"], true);
    assert!(p["status"]["message"].as_str().unwrap().starts_with("Quota exceeded for quota metric"), "{p}");
    assert_eq!(entries.len(), 6);
    let decrypts = s.audit("a", "methodName=Decrypt").await;
    assert_eq!(decrypts.len(), 1);
    assert_eq!(decrypts[0]["protoPayload"]["status"]["code"], 8);

    // The bucket refills at the rate: one request every 12 s.
    clock.advance(ProtoDuration::from_secs(11));
    assert_eq!(s.encrypt(&a).await.status, 429);
    clock.advance(ProtoDuration::from_secs(1));
    assert_eq!(s.encrypt(&a).await.status, 200);
    let again = s.encrypt(&a).await;
    assert_exhausted(&again, "Cryptographic requests", "cloudkms.googleapis.com", a_number, 5, "12");
    clock.advance(ProtoDuration::from_secs(60));
    for _ in 0..5 {
        assert_eq!(s.encrypt(&a).await.status, 200);
    }
}

#[tokio::test]
async fn naming_many_projects_does_not_grow_memory_or_escape_the_quota() {
    let mut quotas = QuotaConfig::default();
    quotas.set(QuotaMetric::Read, per_minute(20));
    quotas.max_tracked = 16;
    let s = start(KmsConfig { quotas, ..KmsConfig::default() }, Arc::new(ManualClock::default())).await;
    // A caller with no role anywhere is refused before anything is counted.
    let mallory = s.ok(Method::POST, "tokens", Some(json!({"principal": "user:mallory@example.com"}))).await;
    let mallory = mallory["token"].as_str().unwrap().to_string();
    for i in 0..200 {
        let r = s.call_as(&mallory, Method::GET, &format!("projects/x{i}/locations/global/keyRings"), None).await;
        assert_eq!(r.status, 403, "{}", r.body);
    }
    assert_eq!(s.kms.quotas().tracked(), 0);
    // The owner may name any project: the buckets stay bounded, and the projects beyond the
    // bound share one bucket instead of getting a fresh one each.
    let mut refused = 0;
    for i in 0..200 {
        let r = s.call(Method::GET, &format!("projects/p{i}/locations/global/keyRings"), None).await;
        match r.status {
            200 => {}
            429 => refused += 1,
            other => panic!("{other}: {}", r.body),
        }
    }
    assert!(s.kms.quotas().tracked() <= 16, "{}", s.kms.quotas().tracked());
    assert!(refused >= 200 - 16 - 20, "{refused} refused");
}

#[tokio::test]
async fn a_project_over_its_in_flight_cap_waits_its_turn_and_is_served() {
    let mut quotas = QuotaConfig::default();
    quotas.max_in_flight = std::num::NonZeroUsize::new(1);
    let s = Arc::new(start(KmsConfig { quotas, ..KmsConfig::default() }, Arc::new(SystemClock)).await);
    let (a, b) = (s.with_key("a").await, s.with_key("b").await);
    // 32 concurrent requests of A through one slot, and B's alongside: every one answered.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (s, key) = (s.clone(), if i % 5 == 4 { b.clone() } else { a.clone() });
        tasks.push(tokio::spawn(async move { s.encrypt(&key).await.status }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(s.audit("a", "methodName=Encrypt").await.len(), 32);
    // Every slot was given back.
    let slot = s.kms.quotas().try_enter("a", "cloudkms.googleapis.com").unwrap();
    assert!(slot.is_some());
}

/// A plain HTTP client. reqwest builds its TLS with rustls and no bundled crypto provider
/// (Keyhold's clients pass their own configuration): one is installed for `Client::new()`.
fn http_client() -> reqwest::Client {
    keyhold_tls::install_default_provider();
    reqwest::Client::new()
}
