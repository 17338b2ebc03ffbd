//! "One audit entry per request" and "no answer without its entry" ([K10], hardening issue #15),
//! over real HTTP against a real SQLite file and a real PostgreSQL.
//!
//! A mixed run (creates, reads, lists, encrypt and decrypt, IAM refusals, missing and bad
//! tokens, malformed bodies, bad filters, bad access-reason headers, missing resources, wrong
//! methods, store calls) gives each request its own `x-request-id`; afterwards the audit log,
//! read from the database itself, holds exactly one entry for each, with the method and the
//! status code the client saw.
//!
//! Then the database refuses audit writes for real (SQLite: a trigger aborting every insert
//! into `audit_log`; PostgreSQL: `REVOKE INSERT ON audit_log` from the server's own role), and
//! every kind of request answers 503 UNAVAILABLE, never 200 and never 500, with no plaintext,
//! ciphertext, object content or token in the answer, and no change made. Once writes are
//! allowed again the server serves, and the chain verifies.

mod common;

use std::sync::Arc;

use common::*;
use keyhold_api::Code;
use keyhold_kms::KmsConfig;
use keyhold_kms::audit::{AuditRecord, ChainVerdict};
use keyhold_sql::Database;
use reqwest::Method;
use reqwest::header::HeaderValue;
use serde_json::{Value, json};

const P: &str = "projects/p";
const LOC: &str = "projects/p/locations/global";
const RING: &str = "projects/p/locations/global/keyRings/r";
const KEY: &str = "projects/p/locations/global/keyRings/r/cryptoKeys/k";
const INSTANCE: &str = "projects/p/locations/global/instances/db1";
const VERA: &str = "user:vera@example.com";
const SECRET: &[u8] = b"the customer's secret";
const OBJECT: &[u8] = b"object content that must not leak";

fn b64(b: &[u8]) -> String {
    keyhold_api::wire::encode_base64(b)
}

/// Who a request is sent as.
#[derive(Clone, Copy, Debug)]
enum As {
    Owner,
    /// Holds roles/cloudkms.viewer on the project: may read, may not use keys.
    Viewer,
    /// No Authorization header.
    Nobody,
    /// A token that does not exist.
    Forged,
}

/// One request of the run and what it must answer.
struct Req {
    who: As,
    method: Method,
    /// Under `/v1/` (or a full URL when it starts with `http`).
    path: String,
    body: Option<Vec<u8>>,
    reason: Option<&'static [u8]>,
    status: u16,
    /// The audit entry's method (`Unknown` for requests refused before any method ran).
    audit_method: &'static str,
}

fn req(who: As, method: Method, path: impl Into<String>, body: Option<Value>, status: u16, audit: &'static str) -> Req {
    Req {
        who,
        method,
        path: path.into(),
        body: body.map(|b| b.to_string().into_bytes()),
        reason: None,
        status,
        audit_method: audit,
    }
}

struct Run {
    s: Server,
    viewer: String,
    ciphertext: String,
    db: Database,
}

impl Run {
    async fn new(s: Server) -> Run {
        let db = match &s.pg_url {
            Some(url) => Database::Postgres(url.clone()),
            None => Database::SqliteFile(s.db_file.clone()),
        };
        s.ok(Method::POST, &format!("{LOC}/keyRings?keyRingId=r"), None).await;
        s.ok(Method::POST, &format!("{RING}/cryptoKeys?cryptoKeyId=k"), Some(json!({"purpose": "ENCRYPT_DECRYPT"})))
            .await;
        let v = s.ok(Method::POST, "tokens", Some(json!({ "principal": VERA }))).await;
        let viewer = v["token"].as_str().unwrap().to_string();
        let mut policy = s.ok(Method::GET, &format!("{P}:getIamPolicy"), None).await;
        policy["bindings"] = json!([{"role": "roles/cloudkms.viewer", "members": [VERA]}]);
        s.ok(Method::POST, &format!("{P}:setIamPolicy"), Some(json!({ "policy": policy }))).await;
        let ct = s.ok(Method::POST, &format!("{KEY}:encrypt"), Some(json!({"plaintext": b64(SECRET)}))).await;
        let ciphertext = ct["ciphertext"].as_str().unwrap().to_string();
        s.ok(Method::POST, &format!("{LOC}/instances?instanceId=db1"), Some(json!({}))).await;
        let r = s
            .http
            .put(format!("{}/{INSTANCE}/objects/a.bin", s.base))
            .bearer_auth(&s.token)
            .body(OBJECT.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        Run { s, viewer, ciphertext, db }
    }

    /// Sends `r` with request ID `id`; answers (status, body bytes).
    async fn send(&self, id: &str, r: &Req) -> (u16, Vec<u8>) {
        let url = if r.path.starts_with("http") { r.path.clone() } else { format!("{}/{}", self.s.base, r.path) };
        let mut b = self.s.http.request(r.method.clone(), url).header("x-request-id", id);
        let token = match r.who {
            As::Owner => Some(self.s.token.clone()),
            As::Viewer => Some(self.viewer.clone()),
            As::Nobody => None,
            As::Forged => Some("kh1.0000000000000000.forged".to_string()),
        };
        if let Some(t) = &token {
            b = b.bearer_auth(t);
        }
        if let Some(v) = r.reason {
            b = b.header("x-keyhold-access-reason", HeaderValue::from_bytes(v).unwrap());
        }
        if let Some(body) = &r.body {
            b = b.header("content-type", "application/json").body(body.clone());
        }
        let resp = b.send().await.unwrap();
        assert_eq!(resp.headers()["x-request-id"], id);
        let (status, body) = (resp.status().as_u16(), resp.bytes().await.unwrap().to_vec());
        // A copy answers with a long-running operation: its outcome is the call's (the polls
        // carry request IDs of their own).
        match serde_json::from_slice::<Value>(&body).ok().and_then(|v| operation_name(status, &v)) {
            Some(name) => {
                let (status, answer) = self.s.operation_result(token.as_deref(), &name).await;
                (status, answer.to_string().into_bytes())
            }
            None => (status, body),
        }
    }

    /// Every audit entry, read from the database through a handle of its own.
    async fn entries(&self) -> Vec<AuditRecord> {
        let opened = keyhold_sql::open_all(&self.db).await.unwrap();
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let page = opened.kms.audit_chain(after, 1000).await.unwrap();
            let Some(last) = page.last() else { break };
            after = last.seq;
            out.extend(page.iter().map(|e| serde_json::from_str::<AuditRecord>(&e.entry_json).unwrap()));
        }
        out
    }

    /// The mixed run: every kind of request, allowed and refused at every stage.
    fn requests(&self) -> Vec<Req> {
        use As::*;
        let enc = json!({"plaintext": b64(b"hi")});
        let dec = json!({"ciphertext": self.ciphertext});
        let v1beta1 = self.s.base.replace("/v1", "/v1beta1");
        let mut v = vec![
            // Allowed, one of each kind.
            req(Owner, Method::POST, format!("{LOC}/keyRings?keyRingId=r2"), None, 200, "CreateKeyRing"),
            req(Owner, Method::GET, RING, None, 200, "GetKeyRing"),
            req(Owner, Method::GET, format!("{LOC}/keyRings?filter=name:r"), None, 200, "ListKeyRings"),
            req(
                Owner,
                Method::POST,
                format!("{RING}/cryptoKeys?cryptoKeyId=k2"),
                Some(json!({"purpose": 1})),
                200,
                "CreateCryptoKey",
            ),
            req(Owner, Method::GET, format!("{RING}/cryptoKeys"), None, 200, "ListCryptoKeys"),
            req(
                Owner,
                Method::POST,
                format!("{RING}/importJobs?importJobId=ij"),
                Some(json!({"importMethod": "RSA_OAEP_3072_SHA256", "protectionLevel": "SOFTWARE"})),
                200,
                "CreateImportJob",
            ),
            req(Owner, Method::GET, format!("{RING}/importJobs"), None, 200, "ListImportJobs"),
            req(Owner, Method::GET, format!("{RING}/importJobs/nope"), None, 404, "GetImportJob"),
            req(
                Owner,
                Method::POST,
                format!("{KEY}/cryptoKeyVersions:import"),
                Some(json!({
                    "algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION",
                    "importJob": format!("{RING}/importJobs/nope"),
                    "wrappedKey": b64(b"x"),
                })),
                404,
                "ImportCryptoKeyVersion",
            ),
            req(
                Owner,
                Method::POST,
                format!("{KEY}/cryptoKeyVersions:import"),
                Some(json!({"algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION", "importJob": "bad", "wrappedKey": b64(b"x")})),
                400,
                "ImportCryptoKeyVersion",
            ),
            req(
                Owner,
                Method::POST,
                format!("{KEY}/cryptoKeyVersions"),
                Some(json!({})),
                200,
                "CreateCryptoKeyVersion",
            ),
            req(Owner, Method::GET, format!("{KEY}/cryptoKeyVersions"), None, 200, "ListCryptoKeyVersions"),
            req(Owner, Method::POST, format!("{KEY}:encrypt"), Some(enc.clone()), 200, "Encrypt"),
            req(Owner, Method::POST, format!("{KEY}:decrypt"), Some(dec.clone()), 200, "Decrypt"),
            req(Owner, Method::GET, format!("{KEY}:getIamPolicy"), None, 200, "GetIamPolicy"),
            req(Owner, Method::GET, format!("{P}/locations"), None, 200, "ListLocations"),
            req(Owner, Method::GET, LOC, None, 200, "GetLocation"),
            req(Owner, Method::GET, "tokens", None, 200, "ListTokens"),
            req(Owner, Method::GET, format!("{P}/auditLogs?pageSize=1"), None, 200, "ListLogEntries"),
            req(
                Owner,
                Method::POST,
                format!("{v1beta1}/{P}/services/store.keyhold.dev:generateServiceIdentity"),
                Some(json!({})),
                200,
                "GenerateServiceIdentity",
            ),
            req(Viewer, Method::GET, KEY, None, 200, "GetCryptoKey"),
            // The store's changes, whose entries commit with the change itself.
            req(Owner, Method::PUT, format!("{INSTANCE}/objects/m.bin"), None, 200, "InsertObject").with_body(b"m"),
            req(Owner, Method::DELETE, format!("{INSTANCE}/objects/m.bin"), None, 200, "DeleteObject"),
            req(Owner, Method::DELETE, format!("{INSTANCE}/objects/m.bin"), None, 404, "DeleteObject"),
            req(Owner, Method::POST, format!("{LOC}/instances?instanceId=db3"), Some(json!({})), 200, "CreateInstance"),
            req(Owner, Method::POST, format!("{LOC}/instances/db3:rewrap"), None, 200, "RewrapInstance"),
            req(
                Owner,
                Method::POST,
                format!("{LOC}/instances/db3/backups?backupId=b1"),
                Some(json!({})),
                200,
                "CreateBackup",
            ),
            req(Owner, Method::DELETE, format!("{LOC}/instances/db3/backups/b1"), None, 200, "DeleteBackup"),
            req(Owner, Method::DELETE, format!("{LOC}/instances/db3"), None, 200, "DeleteInstance"),
            req(Owner, Method::DELETE, format!("{LOC}/instances/db3"), None, 404, "DeleteInstance"),
            // Denied by IAM.
            req(Viewer, Method::POST, format!("{KEY}:encrypt"), Some(enc.clone()), 403, "Encrypt"),
            req(Viewer, Method::POST, format!("{KEY}:decrypt"), Some(dec.clone()), 403, "Decrypt"),
            req(Viewer, Method::POST, format!("{LOC}/keyRings?keyRingId=r3"), None, 403, "CreateKeyRing"),
            req(Viewer, Method::POST, "tokens", Some(json!({"principal": "user:x@example.com"})), 403, "CreateToken"),
            req(Viewer, Method::GET, format!("{INSTANCE}/objects/a.bin?alt=media"), None, 403, "ReadObject"),
            // Not authenticated: audited without a principal, refused before any method ran.
            req(Nobody, Method::GET, RING, None, 401, "Unknown"),
            req(Forged, Method::POST, format!("{KEY}:decrypt"), Some(dec.clone()), 401, "Unknown"),
            req(Nobody, Method::GET, format!("{INSTANCE}/objects/a.bin?alt=media"), None, 401, "Unknown"),
            req(Forged, Method::GET, "projects/p/locations/global/keyRings/nope", None, 401, "Unknown"),
            // Malformed bodies, filters, names, query strings.
            req(Owner, Method::POST, format!("{KEY}:encrypt"), None, 400, "Unknown").with_body(b"{not json"),
            req(Owner, Method::POST, format!("{KEY}:encrypt"), Some(json!({"plaintext": 5})), 400, "Unknown"),
            req(Owner, Method::GET, format!("{RING}/cryptoKeys?filter=((((name"), None, 400, "ListCryptoKeys"),
            req(Owner, Method::GET, format!("{LOC}/keyRings?filter={}x", "(".repeat(3000)), None, 400, "ListKeyRings"),
            req(Owner, Method::GET, format!("{LOC}/keyRings?pageSize=lots"), None, 400, "Unknown"),
            req(Owner, Method::POST, format!("{LOC}/keyRings?keyRingId=bad.id"), None, 400, "CreateKeyRing"),
            req(Owner, Method::POST, format!("{LOC}/instances?instanceId=db2"), None, 400, "Unknown").with_body(b"[1,"),
            // Bad access-reason headers (findings 6 and 7).
            req(Owner, Method::POST, format!("{KEY}:encrypt"), Some(enc.clone()), 400, "Unknown").with_reason(b"NOPE"),
            req(Owner, Method::POST, format!("{KEY}:encrypt"), Some(enc.clone()), 400, "Unknown")
                .with_reason("ACCÈS".as_bytes()),
            req(Nobody, Method::POST, format!("{KEY}:encrypt"), Some(enc.clone()), 401, "Unknown").with_reason(b"NOPE"),
            req(Owner, Method::GET, format!("{LOC}/instances"), None, 400, "Unknown").with_reason(b"\xff"),
            // Missing resources.
            req(Owner, Method::GET, format!("{LOC}/keyRings/nope"), None, 404, "GetKeyRing"),
            req(Owner, Method::POST, format!("{RING}/cryptoKeys/nope:encrypt"), Some(enc.clone()), 404, "Encrypt"),
            req(Owner, Method::GET, format!("{INSTANCE}/objects/missing.bin"), None, 404, "GetObject"),
            // Conflicts and refused state changes.
            req(Owner, Method::POST, format!("{LOC}/keyRings?keyRingId=r"), None, 409, "CreateKeyRing"),
            req(
                Owner,
                Method::POST,
                "tokens",
                Some(json!({"principal": "service:scheduler.keyhold.local"})),
                400,
                "CreateToken",
            ),
            // Paths and methods that do not exist, or that Keyhold does not serve.
            req(Owner, Method::PUT, KEY, None, 404, "Unknown"),
            req(Owner, Method::GET, "projects/p/nothing/here", None, 404, "Unknown"),
            req(Owner, Method::DELETE, KEY, None, 400, "DeleteCryptoKey"),
            req(Owner, Method::DELETE, RING, None, 501, "Unknown"),
            req(
                Owner,
                Method::POST,
                format!("{KEY}/cryptoKeyVersions:importTrustedKeyWrappedCryptoKeyVersion"),
                Some(json!({})),
                501,
                "Unknown",
            ),
            // A served verb on the wrong kind of resource (a key, not a version).
            req(Owner, Method::POST, format!("{KEY}:asymmetricSign"), Some(json!({})), 404, "Unknown"),
        ];
        // The run again, concurrently below: the request IDs keep the entries apart.
        v.push(req(Owner, Method::POST, format!("{KEY}:encrypt"), Some(enc), 200, "Encrypt"));
        v
    }
}

impl Req {
    fn with_body(mut self, b: &[u8]) -> Req {
        self.body = Some(b.to_vec());
        self
    }
    fn with_reason(mut self, r: &'static [u8]) -> Req {
        self.reason = Some(r);
        self
    }
}

/// The code number of a Google error body.
fn code_of(body: &[u8]) -> i32 {
    let v: Value =
        serde_json::from_slice(body).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(body)));
    let name = v["error"]["status"].as_str().unwrap_or_else(|| panic!("not Google's error JSON: {v}"));
    assert_eq!(v["error"]["code"].as_u64(), Some(Code::from_name(name).unwrap().http_status() as u64), "{v}");
    Code::from_name(name).unwrap().number()
}

async fn every_request_has_exactly_one_entry(backend: Backend) {
    let run = Arc::new(Run::new(start(backend, KmsConfig::default()).await).await);
    let requests = run.requests();
    // Twice: once one by one, once all at the same time (group commits batch them).
    let mut expected = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        let id = format!("serial-{i}");
        let (status, body) = run.send(&id, r).await;
        assert_eq!(status, r.status, "{} {}: {}", r.method, r.path, String::from_utf8_lossy(&body));
        let code = if status == 200 { 0 } else { code_of(&body) };
        expected.push((id, r.audit_method, code));
    }
    let requests = Arc::new(requests);
    let mut tasks = Vec::new();
    for i in 0..requests.len() {
        let (run, requests) = (run.clone(), requests.clone());
        tasks.push(tokio::spawn(async move {
            let r = &requests[i];
            let id = format!("concurrent-{i}");
            let (status, body) = run.send(&id, r).await;
            let code = if status == 200 { 0 } else { code_of(&body) };
            (id, r.audit_method, code, status)
        }));
    }
    for t in tasks {
        let (id, method, code, status) = t.await.unwrap();
        // Creates race their serial twins' leftovers; only the audit is the point here.
        assert!(status != 500, "{id}: 500");
        expected.push((id, method, code));
    }

    let entries = run.entries().await;
    let is_first = |e: &AuditRecord| e.operation.as_ref().is_some_and(|o| o.first);
    for (id, method, code) in &expected {
        // A call that ran as a long-running operation also has the operation's first entry,
        // written when it was answered (as Cloud Audit Logs does).
        let (starts, mine): (Vec<&AuditRecord>, Vec<&AuditRecord>) =
            entries.iter().filter(|e| e.request_id == *id).partition(|e| is_first(e));
        assert_eq!(mine.len(), 1, "request {id} ({method}) must leave exactly one outcome entry: {mine:?}");
        let e = mine[0];
        assert_eq!((e.method.as_str(), e.code), (*method, *code), "request {id}: {e:?}");
        assert!(starts.len() <= 1, "request {id}: {starts:?}");
        if let Some(start) = starts.first() {
            let (first, last) = (start.operation.as_ref().unwrap(), e.operation.as_ref().unwrap());
            assert!(last.last && !last.first && first.id == last.id, "request {id}: {start:?} {e:?}");
            assert_eq!((start.method.as_str(), start.code), (*method, 0), "request {id}: {start:?}");
        }
    }
    // And nothing else was written in between: every other entry is the set-up's (owner token,
    // no request ID of ours) or a service's own call.
    let ours = entries
        .iter()
        .filter(|e| e.request_id.starts_with("serial-") || e.request_id.starts_with("concurrent-"))
        .filter(|e| !is_first(e));
    assert_eq!(ours.count(), expected.len());
    // The copies among the requests did run as operations.
    assert!(entries.iter().any(is_first), "no operation's first entry");
    assert!(matches!(run.s.kms.verify_audit_chain().await.unwrap(), ChainVerdict::Intact { .. }));
}

/// Makes the database refuse audit inserts for real, and allows them again.
struct AuditBreaker {
    backend: Backend,
    db_file: std::path::PathBuf,
    pg: Option<tokio_postgres::Client>,
    role: String,
}

impl AuditBreaker {
    async fn refuse(&self) {
        match self.backend {
            Backend::Sqlite => {
                let conn = rusqlite::Connection::open(&self.db_file).unwrap();
                conn.execute_batch(
                    "CREATE TRIGGER test_refuse_audit BEFORE INSERT ON audit_log \
                     BEGIN SELECT RAISE(ABORT, 'audit writes refused by the test'); END;",
                )
                .unwrap();
            }
            Backend::Postgres => {
                let pg = self.pg.as_ref().unwrap();
                pg.batch_execute(&format!("REVOKE INSERT ON audit_log FROM {}", self.role)).await.unwrap();
            }
        }
    }
    async fn allow(&self) {
        match self.backend {
            Backend::Sqlite => {
                let conn = rusqlite::Connection::open(&self.db_file).unwrap();
                conn.execute_batch("DROP TRIGGER test_refuse_audit").unwrap();
            }
            Backend::Postgres => {
                let pg = self.pg.as_ref().unwrap();
                pg.batch_execute(&format!("GRANT INSERT ON audit_log TO {}", self.role)).await.unwrap();
            }
        }
    }
}

/// A server whose database refuses audit writes on demand. On PostgreSQL it connects as a
/// role of its own (owner of its database, not a superuser, as in production), so that the
/// privilege can be taken away from it.
async fn breakable_server(backend: Backend) -> (Server, AuditBreaker) {
    match backend {
        Backend::Sqlite => {
            let s = start(backend, KmsConfig::default()).await;
            let breaker = AuditBreaker { backend, db_file: s.db_file.clone(), pg: None, role: String::new() };
            (s, breaker)
        }
        Backend::Postgres => {
            let url = std::env::var("KEYHOLD_TEST_POSTGRES_URL")
                .expect("KEYHOLD_TEST_POSTGRES_URL is not set: run the tests with scripts/test.sh");
            let admin = admin().await;
            let mut id = [0u8; 6];
            keyhold_crypto::random_bytes(&mut id).unwrap();
            let suffix: String = id.iter().map(|b| format!("{b:02x}")).collect();
            let (role, db) = (format!("r_{suffix}"), format!("t_{suffix}"));
            admin.batch_execute(&format!("CREATE ROLE {role} LOGIN")).await.unwrap();
            admin.batch_execute(&format!("CREATE DATABASE {db} OWNER {role}")).await.unwrap();
            let (base, _) = url.rsplit_once('/').unwrap();
            let (scheme, host) = base.split_once("://").unwrap();
            let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
            let server_url = format!("{scheme}://{role}@{host}/{db}");
            let dir = tempfile::tempdir().unwrap();
            let db_file = dir.path().join("unused.db");
            let s = start_on(
                Database::Postgres(server_url.clone()),
                Some(db.clone()),
                Some(server_url),
                dir,
                db_file.clone(),
                KmsConfig::default(),
                keyhold_crypto::KeyBytes::generate().unwrap(),
            )
            .await;
            // A superuser connection to the server's database, to revoke and grant.
            let (client, conn) = tokio_postgres::connect(&format!("{base}/{db}"), tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            (s, AuditBreaker { backend, db_file, pg: Some(client), role })
        }
    }
}

async fn a_failing_audit_write_fails_the_request(backend: Backend) {
    let (s, breaker) = breakable_server(backend).await;
    let run = Run::new(s).await;
    // A backup and an export to restore, import and delete while audit writes fail.
    run.s.ok(Method::POST, &format!("{INSTANCE}/backups?backupId=b0"), Some(json!({}))).await;
    let e0 = run
        .s
        .ok(Method::POST, &format!("{INSTANCE}:export"), Some(json!({"destination": "e0", "allowPlaintext": true})))
        .await;
    let e0_file = std::path::PathBuf::from(e0["destination"].as_str().unwrap());
    let e0_aside = e0_file.with_file_name("e0.aside");
    let plaintext_b64 = b64(SECRET);
    let before = run.entries().await.len();
    breaker.refuse().await;

    use As::*;
    let dec = json!({"ciphertext": run.ciphertext});
    let requests = [
        req(Owner, Method::POST, format!("{KEY}:encrypt"), Some(json!({"plaintext": b64(b"hi")})), 503, ""),
        req(Owner, Method::POST, format!("{KEY}:decrypt"), Some(dec.clone()), 503, ""),
        req(Owner, Method::GET, format!("{INSTANCE}/objects/a.bin?alt=media"), None, 503, ""),
        req(Owner, Method::GET, RING, None, 503, ""),
        req(Owner, Method::GET, format!("{RING}/cryptoKeys"), None, 503, ""),
        req(Owner, Method::POST, format!("{LOC}/keyRings?keyRingId=during"), None, 503, ""),
        req(Owner, Method::POST, format!("{KEY}/cryptoKeyVersions"), Some(json!({})), 503, ""),
        req(Owner, Method::POST, "tokens", Some(json!({"principal": "user:zed@example.com"})), 503, ""),
        req(Owner, Method::PUT, format!("{INSTANCE}/objects/during.bin"), None, 503, "").with_body(b"new content"),
        // Every kind of store change: none may be made unaudited.
        req(Owner, Method::DELETE, format!("{INSTANCE}/objects/a.bin"), None, 503, ""),
        req(Owner, Method::POST, format!("{LOC}/instances?instanceId=during"), Some(json!({})), 503, ""),
        req(
            Owner,
            Method::POST,
            format!("{LOC}/instances?instanceId=rep"),
            Some(json!({"replicaOf": INSTANCE})),
            503,
            "",
        ),
        req(Owner, Method::POST, format!("{INSTANCE}/backups?backupId=during"), Some(json!({})), 503, ""),
        req(Owner, Method::DELETE, format!("{INSTANCE}/backups/b0"), None, 503, ""),
        req(Owner, Method::POST, format!("{INSTANCE}:clone"), Some(json!({"destinationInstanceId": "cl"})), 503, ""),
        req(
            Owner,
            Method::POST,
            format!("{LOC}/instances:restore"),
            Some(json!({"instanceId": "rs", "backup": format!("{INSTANCE}/backups/b0")})),
            503,
            "",
        ),
        req(
            Owner,
            Method::POST,
            format!("{LOC}/instances:import"),
            Some(json!({"instanceId": "im", "source": "e0"})),
            503,
            "",
        ),
        req(
            Owner,
            Method::POST,
            format!("{INSTANCE}:export"),
            Some(json!({"destination": "during", "allowPlaintext": true})),
            503,
            "",
        ),
        req(Owner, Method::POST, format!("{INSTANCE}:rewrap"), None, 503, ""),
        req(Owner, Method::DELETE, INSTANCE, None, 503, ""),
        // Refusals too: a refusal that cannot be recorded is not answered either.
        req(Viewer, Method::POST, format!("{KEY}:decrypt"), Some(dec), 503, ""),
        req(Nobody, Method::GET, RING, None, 503, ""),
        req(Owner, Method::GET, format!("{LOC}/keyRings?filter=(((x"), None, 503, ""),
        req(Owner, Method::PUT, KEY, None, 503, ""),
    ];
    for (i, r) in requests.iter().enumerate() {
        let (status, body) = run.send(&format!("broken-{i}"), r).await;
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, 503, "{} {}: {text}", r.method, r.path);
        assert_eq!(code_of(&body), Code::Unavailable.number(), "{text}");
        for leak in ["ciphertext", "plaintext", "kh1.", &plaintext_b64, "object content"] {
            assert!(!text.contains(leak), "{} {} leaked {leak}: {text}", r.method, r.path);
        }
    }
    // Hardening review: exports:reconcile changes the registry (an export whose file is gone is marked
    // missing): unaudited, it marks nothing.
    std::fs::rename(&e0_file, &e0_aside).unwrap();
    let reconcile = req(Owner, Method::POST, "projects/p/exports:reconcile", Some(json!({})), 503, "");
    let (status, body) = run.send("broken-reconcile", &reconcile).await;
    assert_eq!(status, 503, "exports:reconcile: {}", String::from_utf8_lossy(&body));
    std::fs::rename(&e0_aside, &e0_file).unwrap();
    assert_eq!(run.entries().await.len(), before, "nothing was recorded");

    breaker.allow().await;
    // Not marked missing: its file is simply present (not "returned").
    let r = run.s.ok(Method::POST, "projects/p/exports:reconcile", Some(json!({}))).await;
    assert_eq!(r["present"], json!([e0["name"]]), "{r}");
    assert!(r["returned"].as_array().is_none_or(Vec::is_empty), "marked missing without an entry: {r}");
    // No change was made while unaudited (every entry commits in its change's transaction),
    // and the server serves again.
    run.s.err(Method::GET, &format!("{LOC}/keyRings/during"), None, 404, "NOT_FOUND").await;
    let versions = run.s.ok(Method::GET, &format!("{KEY}/cryptoKeyVersions"), None).await;
    assert_eq!(versions["cryptoKeyVersions"].as_array().unwrap().len(), 1, "{versions}");
    let tokens = run.s.ok(Method::GET, "tokens", None).await.to_string();
    assert!(!tokens.contains("zed@"), "{tokens}");
    let out = run.s.ok(Method::POST, &format!("{KEY}:decrypt"), Some(json!({"ciphertext": run.ciphertext}))).await;
    assert_eq!(out["plaintext"], plaintext_b64);
    // The store: the upload is not there, the deleted object and instance and backup are, no
    // instance was created, restored, cloned or imported, no backup taken, no export kept.
    run.s.err(Method::GET, &format!("{INSTANCE}/objects/during.bin"), None, 404, "NOT_FOUND").await;
    let objects = run.s.ok(Method::GET, &format!("{INSTANCE}/objects"), None).await;
    assert_eq!(objects["objects"].as_array().map(Vec::len), Some(1), "{objects}");
    let r = run.s.http.get(format!("{}/{INSTANCE}/objects/a.bin?alt=media", run.s.base)).bearer_auth(&run.s.token);
    assert_eq!(r.send().await.unwrap().bytes().await.unwrap().as_ref(), OBJECT);
    let instances = run.s.ok(Method::GET, &format!("{LOC}/instances"), None).await;
    let names: Vec<&str> =
        instances["instances"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(names, [INSTANCE], "{instances}");
    let backups = run.s.ok(Method::GET, &format!("{INSTANCE}/backups"), None).await;
    let names: Vec<&str> = backups["backups"].as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(names, [format!("{INSTANCE}/backups/b0")], "{backups}");
    // The export's file was not left behind: the same destination can be written now.
    run.s
        .ok(Method::POST, &format!("{INSTANCE}:export"), Some(json!({"destination": "during", "allowPlaintext": true})))
        .await;
    match run.s.kms.verify_audit_chain().await.unwrap() {
        ChainVerdict::Intact { entries, .. } => assert!(entries as usize > before),
        broken => panic!("the chain broke: {broken:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_has_exactly_one_entry_sqlite() {
    every_request_has_exactly_one_entry(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_has_exactly_one_entry_postgres() {
    every_request_has_exactly_one_entry(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_audit_write_fails_the_request_sqlite() {
    a_failing_audit_write_fails_the_request(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_audit_write_fails_the_request_postgres() {
    a_failing_audit_write_fails_the_request(Backend::Postgres).await;
}
