//! The KMS side of the hardening issue (#15), over real HTTP on loopback against a real SQLite
//! file: hostile list filters and JSON bodies (finding 1), token minting for identities the
//! server acts as (finding 5), the access-reason header checked after authentication and
//! audited (findings 6 and 7), and what locations and unserved methods say (finding 9).
//!
//! Each request carries its own `x-request-id`, and its audit entries are read straight from the
//! database (a second handle on the same file), so "exactly one entry" is checked per request.

mod common;

use common::*;
use keyhold_kms::KmsConfig;
use keyhold_kms::audit::AuditRecord;
use keyhold_sql::Database;
use reqwest::Method;
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::{Value, json};

const LOC: &str = "projects/p/locations/global";
const RING: &str = "projects/p/locations/global/keyRings/r";
const KEY: &str = "projects/p/locations/global/keyRings/r/cryptoKeys/k";

async fn with_key(s: &Server) {
    s.ok(Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), None).await;
    s.ok(Method::POST, &format!("{RING}/cryptoKeys?cryptoKeyId=k"), Some(json!({"purpose": "ENCRYPT_DECRYPT"}))).await;
}

/// A request with an `x-request-id` of its own and extra headers; answers (status, JSON body).
async fn send(
    s: &Server,
    id: &str,
    token: Option<&str>,
    method: Method,
    url: &str,
    headers: &[(&str, HeaderValue)],
    body: Option<String>,
) -> (u16, Value) {
    let mut req = s.http.request(method, url).header("x-request-id", id);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    for (name, value) in headers {
        req = req.header(HeaderName::from_bytes(name.as_bytes()).unwrap(), value.clone());
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.headers()["x-request-id"], id, "the request ID comes back");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}")))
}

/// Google's error JSON with `status` and `code`; returns the message.
fn google_error(status: u16, body: &Value, code: &str) -> String {
    assert_eq!(body["error"]["status"], code, "{body}");
    assert_eq!(body["error"]["code"], status, "{body}");
    body["error"]["message"].as_str().expect("a message").to_string()
}

/// Every audit entry of request `id`, read from the database itself.
async fn entries_of(s: &Server, id: &str) -> Vec<AuditRecord> {
    let opened = keyhold_sql::open_all(&Database::SqliteFile(s.db_file.clone())).await.unwrap();
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = opened.kms.audit_chain(after, 1000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in page {
            let r: AuditRecord = serde_json::from_str(&e.entry_json).unwrap();
            if r.request_id == id {
                out.push(r);
            }
        }
    }
    out
}

/// The one audit entry of request `id`.
async fn only_entry(s: &Server, id: &str) -> AuditRecord {
    let mut entries = entries_of(s, id).await;
    assert_eq!(entries.len(), 1, "request {id} must leave exactly one audit entry: {entries:?}");
    entries.remove(0)
}

/// Finding 1: a list filter nested thousands deep (`((((…` or `NOT NOT …`) used to overflow a
/// worker's stack and abort the server. Every list that takes a filter now answers 400
/// INVALID_ARGUMENT in Google's JSON, audits the refusal once, and the server answers the next
/// request. JSON bodies are bounded by serde_json's recursion limit (128), kept on purpose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_filters_and_bodies_are_refused_and_audited() {
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    with_key(&s).await;
    let lists = [
        "projects/p/locations".to_string(),
        format!("{LOC}/keyRings"),
        format!("{RING}/cryptoKeys"),
        format!("{KEY}/cryptoKeyVersions"),
    ];
    let filters = [
        // Over the 2 KiB bound: refused before parsing (the probe's 5-12 KB URLs).
        format!("{}name:x{}", "(".repeat(5000), ")".repeat(5000)),
        format!("{}name:x", "NOT%20".repeat(3000)),
        format!("{}name:x", "-".repeat(5000)),
        // Within 2 KiB but nested past the depth bound.
        format!("{}name:x{}", "(".repeat(100), ")".repeat(100)),
        format!("{}name:x", "NOT%20".repeat(100)),
        // Too many terms.
        vec!["name:x"; 100].join("%20OR%20"),
    ];
    let mut n = 0;
    for list in &lists {
        for filter in &filters {
            n += 1;
            let id = format!("deep-filter-{n}");
            let url = format!("{}/{list}?filter={filter}", s.base);
            let (st, body) = send(&s, &id, Some(&s.token), Method::GET, &url, &[], None).await;
            assert_eq!(st, 400, "{list}: {body}");
            let m = google_error(400, &body, "INVALID_ARGUMENT");
            assert!(m.starts_with("Invalid filter: "), "{m}");
            let entry = only_entry(&s, &id).await;
            assert_eq!((entry.code, entry.principal.as_str()), (3, OWNER), "{entry:?}");
            // The server is still there.
            let (st, body) =
                send(&s, &format!("{id}-after"), Some(&s.token), Method::GET, &format!("{}/{list}", s.base), &[], None)
                    .await;
            assert_eq!(st, 200, "{body}");
        }
    }
    // A filter within every bound still works.
    let (st, body) = send(
        &s,
        "sane-filter",
        Some(&s.token),
        Method::GET,
        &format!("{}/{RING}/cryptoKeys?filter=(name:k%20OR%20NOT%20name:zz)%20AND%20purpose=ENCRYPT_DECRYPT", s.base),
        &[],
        None,
    )
    .await;
    assert_eq!((st, body["cryptoKeys"].as_array().map(Vec::len)), (200, Some(1)), "{body}");

    // JSON nested past serde_json's recursion limit, in a field that takes any JSON value.
    let deep = format!("{{\"x\": {}1{}}}", "[".repeat(5000), "]".repeat(5000));
    let url =
        format!("{}/projects/p/services/x.example.com:generateServiceIdentity", s.base.replace("/v1", "/v1beta1"));
    let (st, body) = send(&s, "deep-json", Some(&s.token), Method::POST, &url, &[], Some(deep)).await;
    let m = google_error(st, &body, "INVALID_ARGUMENT");
    assert!(m.contains("recursion limit"), "{m}");
    assert_eq!(only_entry(&s, "deep-json").await.code, 3);
    // ... and in a typed body.
    let deep = format!("{{\"plaintext\": {}\"aGk=\"{}}}", "[".repeat(5000), "]".repeat(5000));
    let url = format!("{}/{KEY}:encrypt", s.base);
    let (st, body) = send(&s, "deep-json-2", Some(&s.token), Method::POST, &url, &[], Some(deep)).await;
    google_error(st, &body, "INVALID_ARGUMENT");
    assert_eq!(only_entry(&s, "deep-json-2").await.code, 3);
    s.ok(Method::GET, KEY, None).await;
}

/// Finding 5: a token admin could mint a bearer token for a service agent, the scheduler or the
/// anonymous principal, then act as it while the audit log blamed it. Those principals are now
/// refused with 400 INVALID_ARGUMENT (no grant could make the request valid, so it is not a
/// PERMISSION_DENIED), whether or not the agent exists yet and however it is spelled; users,
/// service accounts and integrated services (`service:NAME`, how a store node running apart
/// authenticates) are still minted. Tokens minted before the fix stop working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_never_minted_for_identities_the_server_acts_as() {
    let config = KmsConfig {
        anonymous_principal: Some(keyhold_iam::Principal::parse("user:emulator@example.com").unwrap()),
        ..KmsConfig::default()
    };
    let s = start(Backend::Sqlite, config).await;
    with_key(&s).await;
    let url =
        format!("{}/projects/p/services/store.keyhold.dev:generateServiceIdentity", s.base.replace("/v1", "/v1beta1"));
    let r = s.http.post(url).bearer_auth(&s.token).json(&json!({})).send().await.unwrap();
    let agent = r.json::<Value>().await.unwrap()["response"]["email"].as_str().unwrap().to_string();
    assert!(agent.contains("@gcp-sa-store."), "{agent}");

    let refused = [
        (format!("serviceAccount:{agent}"), "service agent"),
        (
            "serviceAccount:service-123456789012@gcp-sa-financialservices.iam.gserviceaccount.com".into(),
            "service agent",
        ),
        (format!("serviceAccount:{}", agent.to_uppercase()), "service agent"),
        // Hardening review: the agent's email under another kind would still be its principalEmail.
        (format!("user:{agent}"), "service agent"),
        (format!("user:{}", agent.to_uppercase()), "service agent"),
        ("user:service-1@gcp-sa-store.iam.gserviceaccount.com".into(), "service agent"),
        ("service:scheduler.keyhold.local".into(), "identities Keyhold itself acts as"),
        ("service:bootstrap.keyhold.local".into(), "identities Keyhold itself acts as"),
        ("service:Scheduler.Keyhold.Local".into(), "identities Keyhold itself acts as"),
        ("user:emulator@example.com".into(), "--allow-anonymous"),
        ("user:anonymous@keyhold.local".into(), "--allow-anonymous"),
    ];
    for (i, (principal, why)) in refused.iter().enumerate() {
        let id = format!("mint-refused-{i}");
        let (st, body) = send(
            &s,
            &id,
            Some(&s.token),
            Method::POST,
            &format!("{}/tokens", s.base),
            &[],
            Some(json!({"principal": principal, "ttl": "7776000s"}).to_string()),
        )
        .await;
        assert_eq!(st, 400, "{principal}: {body}");
        let m = google_error(400, &body, "INVALID_ARGUMENT");
        assert!(m.starts_with(&format!("Tokens cannot be created for {principal}: ")) && m.contains(why), "{m}");
        assert!(body.get("token").is_none());
        let entry = only_entry(&s, &id).await;
        assert_eq!((entry.method.as_str(), entry.code, entry.principal.as_str()), ("CreateToken", 3, OWNER));
    }
    let listed = s.ok(Method::GET, "tokens", None).await;
    let principals: Vec<&str> =
        listed["tokens"].as_array().unwrap().iter().map(|t| t["principal"].as_str().unwrap()).collect();
    assert_eq!(principals, [OWNER], "no token was minted");

    // Everyone else still gets a token, and it works.
    for principal in
        ["user:bob@example.com", "serviceAccount:ci@p.iam.gserviceaccount.com", "service:store.keyhold.dev"]
    {
        let v = s.ok(Method::POST, "tokens", Some(json!({ "principal": principal }))).await;
        let token = v["token"].as_str().unwrap();
        let (st, _) = s.call_as(Some(token), Method::GET, "tokens", None).await;
        assert_eq!(st, 403, "{principal} authenticates (and holds no token role)");
    }

    // A token minted for an agent before the fix (long-lived, which generateAccessToken never
    // gives) or for an internal identity stops working.
    for (i, principal) in [
        format!("serviceAccount:{agent}"),
        "service:scheduler.keyhold.local".into(),
        "user:emulator@example.com".into(),
        format!("user:{agent}"),
    ]
    .iter()
    .enumerate()
    {
        let label = format!("pre-fix-{i}");
        let v = s
            .ok(Method::POST, "tokens", Some(json!({"principal": "user:carol@example.com", "description": label})))
            .await;
        let token = v["token"].as_str().unwrap().to_string();
        let conn = rusqlite::Connection::open(&s.db_file).unwrap();
        // As the old code would have stored it (the token has not been used, so is not cached).
        assert_eq!(
            conn.execute("UPDATE tokens SET principal = ?1 WHERE description = ?2", [principal.as_str(), &label])
                .unwrap(),
            1
        );
        let id = format!("pre-fix-use-{i}");
        let (st, body) = send(&s, &id, Some(&token), Method::GET, &format!("{}/{KEY}", s.base), &[], None).await;
        // The token is refused; on this server (--allow-anonymous) the request then runs as the
        // anonymous principal, flagged so, instead of as the principal the token names.
        assert_eq!(st, 200, "{body}");
        let entry = only_entry(&s, &id).await;
        assert!(entry.anonymous && entry.principal == "user:emulator@example.com", "{principal}: {entry:?}");
    }
}

/// Findings 7 and 6: `X-Keyhold-Access-Reason` is read after authentication. Without a valid
/// token the answer is 401 whatever the header says; with one, a bad value (unknown, non-ASCII,
/// sent twice) is 400 INVALID_ARGUMENT; every one of these requests leaves exactly one audit
/// entry, on KMS and store paths alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_reason_is_checked_after_authentication_and_audited() {
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    with_key(&s).await;
    let encrypt = format!("{}/{KEY}:encrypt", s.base);
    let instances = format!("{}/{LOC}/instances", s.base);
    let body = || Some(json!({"plaintext": "aGk="}).to_string());
    let reason = |v: &[u8]| ("x-keyhold-access-reason", HeaderValue::from_bytes(v).unwrap());
    let bad_values: [&[u8]; 4] =
        [b"NOT_A_REASON", b"REASON_UNSPECIFIED", "CUSTOMER_INITIATED_ACCESS\u{e9}".as_bytes(), b"\xff\xfe"];

    let mut n = 0;
    for (url, method) in [(&encrypt, Method::POST), (&instances, Method::GET)] {
        let b = if method == Method::POST { body() } else { None };
        for value in bad_values {
            for token in [None, Some("kh1.not-a-token"), Some(s.token.as_str())] {
                n += 1;
                let id = format!("reason-{n}");
                let (st, resp) = send(&s, &id, token, method.clone(), url, &[reason(value)], b.clone()).await;
                let entry = only_entry(&s, &id).await;
                if token == Some(s.token.as_str()) {
                    let m = google_error(st, &resp, "INVALID_ARGUMENT");
                    assert!(m.starts_with("X-Keyhold-Access-Reason"), "{m}");
                    assert!(resp.get("ciphertext").is_none());
                    assert_eq!((entry.code, entry.principal.as_str()), (3, OWNER), "{entry:?}");
                } else {
                    google_error(st, &resp, "UNAUTHENTICATED");
                    assert_eq!((entry.code, entry.principal.as_str()), (16, ""), "{entry:?}");
                }
            }
        }
        // Twice, even if both are valid: which one would count?
        n += 1;
        let id = format!("reason-{n}");
        let twice = [reason(b"CUSTOMER_INITIATED_ACCESS"), reason(b"GOOGLE_INITIATED_REVIEW")];
        let (st, resp) = send(&s, &id, Some(&s.token), method.clone(), url, &twice, b.clone()).await;
        assert!(google_error(st, &resp, "INVALID_ARGUMENT").contains("more than once"), "{resp}");
        assert_eq!(only_entry(&s, &id).await.code, 3);
        // A good one is used (5 is CUSTOMER_INITIATED_ACCESS).
        n += 1;
        let id = format!("reason-{n}");
        let (st, resp) = send(&s, &id, Some(&s.token), method.clone(), url, &[reason(b"5")], b.clone()).await;
        assert_eq!(st, 200, "{resp}");
        let entry = only_entry(&s, &id).await;
        assert_eq!(entry.code, 0);
        if method == Method::POST {
            let reason = entry.access_justification.as_ref().map(|d| d.reason.as_str());
            assert_eq!(reason, Some("CUSTOMER_INITIATED_ACCESS"), "{entry:?}");
        }
    }
}

/// Finding 9: DELETE on a key ring is 501 UNIMPLEMENTED (as other methods Keyhold does not
/// serve), not 404; DELETE on a key or version that Cloud KMS would not delete yet (a version
/// not destroyed, a key with versions) is 400 FAILED_PRECONDITION; the resources stay. Locations report no HSM and no key
/// manager on a server started without them, and the EXTERNAL refusal names the real flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unserved_methods_and_locations_tell_the_truth() {
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    with_key(&s).await;
    let version = format!("{KEY}/cryptoKeyVersions/1");
    for (i, (name, status, code, number, says)) in [
        (version.as_str(), 400, "FAILED_PRECONDITION", 9, "requires DESTROYED, IMPORT_FAILED or GENERATION_FAILED"),
        (KEY, 400, "FAILED_PRECONDITION", 9, "delete each with DeleteCryptoKeyVersion"),
        (RING, 501, "UNIMPLEMENTED", 12, "docs/api.md"),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("delete-{i}");
        let (st, body) = send(&s, &id, Some(&s.token), Method::DELETE, &format!("{}/{name}", s.base), &[], None).await;
        let m = google_error(st, &body, code);
        assert_eq!(st, status);
        assert!(m.contains(says), "{m}");
        assert_eq!(only_entry(&s, &id).await.code, number);
        s.ok(Method::GET, name, None).await;
    }
    // Unauthenticated, it is still 401 first.
    let (st, body) = send(&s, "delete-anon", None, Method::DELETE, &format!("{}/{KEY}", s.base), &[], None).await;
    google_error(st, &body, "UNAUTHENTICATED");

    let locations = s.ok(Method::GET, "projects/p/locations", None).await;
    for l in locations["locations"].as_array().unwrap() {
        // proto3 JSON: false is the default, so absent (never `true` without an HSM or EKM).
        assert_eq!(l["metadata"]["@type"], "type.googleapis.com/google.cloud.kms.v1.LocationMetadata", "{l}");
        assert!(l["metadata"].get("hsmAvailable").is_none(), "{l}");
        assert!(l["metadata"].get("ekmAvailable").is_none(), "{l}");
    }
    let external = json!({"purpose": "ENCRYPT_DECRYPT",
        "versionTemplate": {"protectionLevel": "EXTERNAL", "algorithm": "EXTERNAL_SYMMETRIC_ENCRYPTION"}});
    let m = s
        .err(
            Method::POST,
            &format!("{RING}/cryptoKeys?cryptoKeyId=ext&skipInitialVersionCreation=true"),
            Some(external),
            501,
            "UNIMPLEMENTED",
        )
        .await;
    assert!(m.contains("--ekm-credentials-file") && !m.contains("--ekm-token-file"), "{m}");
    let hsm = json!({"purpose": "ENCRYPT_DECRYPT", "versionTemplate": {"protectionLevel": "HSM"}});
    let m = s.err(Method::POST, &format!("{RING}/cryptoKeys?cryptoKeyId=h"), Some(hsm), 501, "UNIMPLEMENTED").await;
    assert!(m.contains("--pkcs11-module"), "{m}");
}

/// Found by the hardening probe: a client's `x-request-id` went into the audit entry with no length cap, so 401s
/// with 60 KB ids made 60 KB audit rows. An id longer than 128 bytes, with a byte that is not
/// visible ASCII, or sent twice is replaced by one the server makes (and that one is what the
/// answer and the audit entry carry); a fit id is still kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfit_client_request_ids_are_replaced() {
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    let url = format!("{}/{KEY}", s.base);
    let long = "a".repeat(60_000);
    let unfit: [Vec<&[u8]>; 5] =
        [vec![long.as_bytes()], vec![&[b'a'; 129]], vec![b"has space"], vec![b"caf\xc3\xa9"], vec![b"one", b"two"]];
    for values in unfit {
        let mut req = s.http.get(&url);
        for v in &values {
            req = req.header("x-request-id", HeaderValue::from_bytes(v).unwrap());
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401);
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        assert!(id.len() <= 128 && values.iter().all(|v| id.as_bytes() != *v), "{id:.200}");
        let entry = only_entry(&s, &id).await;
        assert_eq!(entry.code, 16, "{entry:?}");
        for v in values {
            assert!(entries_of(&s, &String::from_utf8_lossy(v)).await.is_empty(), "the unfit id is not stored");
        }
    }
    let fit = format!("{}~!", "Z".repeat(126));
    let (st, _) = send(&s, &fit, None, Method::GET, &url, &[], None).await;
    assert_eq!(st, 401);
    assert_eq!(only_entry(&s, &fit).await.code, 16);
}
