//! The store's security boundaries over real HTTP against a real server (issue 15): no copy
//! path (restore, clone, replica, import) reads a project the caller has no role on (finding
//! 2), exports are confined to their project's directory and plaintext archives to their
//! project (finding 2(a)), archives and their directories are private (finding 4), a wrong
//! method answers 404 like the KMS's paths (finding 6), and the store authorization matrix
//! (`store_authz_matrix.tsv`): every store method × role × same or other project, the source
//! of every copy included.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{Backend, Server, start};
use keyhold_kms::KmsConfig;
use reqwest::Method;
use serde_json::{Value, json};

const ALICE: &str = "user:alice@example.com";

fn ring(p: &str) -> String {
    format!("projects/{p}/locations/global/keyRings/r")
}
fn key_of(p: &str) -> String {
    format!("{}/cryptoKeys/k", ring(p))
}
fn loc(p: &str) -> String {
    format!("projects/{p}/locations/global")
}
fn instance(p: &str, id: &str) -> String {
    format!("{}/instances/{id}", loc(p))
}

impl Server {
    async fn audit(&self, project: &str, method: &str) -> Vec<Value> {
        let v = self
            .ok(Method::GET, &format!("projects/{project}/auditLogs?pageSize=1000&methodName={method}"), None)
            .await;
        v["entries"].as_array().cloned().unwrap_or_default()
    }

    /// Project `p`'s key `k`, usable by the store's agent of `p`.
    async fn cmek_key(&self, p: &str) -> String {
        self.ok(Method::POST, &format!("{}/keyRings?keyRingId=r", loc(p)), Some(json!({}))).await;
        self.ok(
            Method::POST,
            &format!("{}/cryptoKeys?cryptoKeyId=k", ring(p)),
            Some(json!({"purpose": "ENCRYPT_DECRYPT"})),
        )
        .await;
        let resp = self
            .http
            .post(format!(
                "{}/v1beta1/projects/{p}/services/store.keyhold.dev:generateServiceIdentity",
                self.base.trim_end_matches("/v1")
            ))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let v: Value = resp.json().await.unwrap();
        let email = v["response"]["email"].as_str().unwrap().to_string();
        let policy = json!({"bindings": [{"role": "roles/cloudkms.cryptoKeyEncrypterDecrypter", "members": [format!("serviceAccount:{email}")]}]});
        self.ok(Method::POST, &format!("{}:setIamPolicy", key_of(p)), Some(json!({ "policy": policy }))).await;
        key_of(p)
    }

    async fn put_as(&self, token: &str, instance: &str, object: &str, data: &[u8]) -> u16 {
        self.http
            .put(format!("{}/{instance}/objects/{object}", self.base))
            .bearer_auth(token)
            .body(data.to_vec())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn media(&self, instance: &str, object: &str) -> Vec<u8> {
        let r = self
            .http
            .get(format!("{}/{instance}/objects/{object}?alt=media", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap().to_vec()
    }

    fn export_dir(&self) -> std::path::PathBuf {
        self._dir.path().join("exports")
    }
}

fn assert_denied(status: u16, v: &Value, what: &str) {
    assert_eq!(status, 403, "{what}: {v}");
    assert_eq!(v["error"]["status"], "PERMISSION_DENIED", "{what}: {v}");
}

/// A secret object in B (`projects/b/.../instances/secret`, object `s`), written by the owner.
const SECRET: &[u8] = b"B-ONLY-SECRET-DATA";

async fn project_b_with_secret(s: &Server) -> String {
    s.cmek_key("b").await;
    s.ok(Method::POST, &format!("{}/instances?instanceId=secret", loc("b")), Some(json!({"kmsKey": key_of("b")})))
        .await;
    let b = instance("b", "secret");
    assert_eq!(s.put_as(&s.token.clone(), &b, "s", SECRET).await, 200);
    b
}

/// Finding 2(b): the owner of A, with no role on B, cannot restore B's backup into A (with A's
/// own key, as the probe did), nor replicate B's instance; the refusal is a 403 given before B
/// is looked up, and it is in B's audit log. With a role on B that allows restoring, it works,
/// and both projects' logs show it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_check_the_callers_permission_on_the_source() {
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    let b = project_b_with_secret(&s).await;
    s.ok(Method::POST, &format!("{b}/backups?backupId=b1"), Some(json!({}))).await;
    let key_a = s.cmek_key("a").await;
    s.grant("projects/a", "roles/owner", ALICE).await;
    let alice = s.token_for(ALICE).await;

    let restore = json!({
        "instanceId": "stolen",
        "backup": format!("{b}/backups/b1"),
        "encryptionConfig": {"encryptionType": "CUSTOMER_MANAGED_ENCRYPTION", "kmsKeyName": key_a},
    });
    let path = format!("{}/instances:restore", loc("a"));
    let (st, v) = s.call_as(Some(&alice), Method::POST, &path, Some(restore.clone())).await;
    assert_denied(st, &v, "restore of B's backup into A");
    assert!(v["error"]["message"].as_str().unwrap().contains("keyhold.backups.restore"), "{v}");
    // Nothing was built, and a backup that does not exist is refused the same way.
    s.err(Method::GET, &instance("a", "stolen"), None, 404, "NOT_FOUND").await;
    let mut missing = restore.clone();
    missing["backup"] = json!(format!("{b}/backups/nope"));
    let (st2, v2) = s.call_as(Some(&alice), Method::POST, &path, Some(missing)).await;
    assert_denied(st2, &v2, "restore of a backup of B that does not exist");
    assert_eq!(
        v["error"]["message"].as_str().unwrap().replace("b1", "nope"),
        v2["error"]["message"].as_str().unwrap(),
        "the refusal reveals nothing about what exists in B"
    );
    // B's owners see the attempt in B's log; A's log has it too.
    let in_b = s.audit("b", "RestoreInstance").await;
    assert!(
        in_b.iter().any(|e| e["protoPayload"]["authenticationInfo"]["principalEmail"] == "alice@example.com"
            && e["protoPayload"]["resourceName"] == format!("{b}/backups/b1")
            && e["protoPayload"]["status"]["code"] == 7),
        "{in_b:?}"
    );
    assert!(!s.audit("a", "RestoreInstance").await.is_empty());

    // A replica of B's instance in A: refused with 403 too (not "not found", not a 400 that
    // would tell that B's instance exists).
    let (st, v) = s
        .call_as(
            Some(&alice),
            Method::POST,
            &format!("{}/instances?instanceId=rep", loc("a")),
            Some(json!({"replicaOf": b})),
        )
        .await;
    assert_denied(st, &v, "replica of B's instance in A");

    // A viewer of B still may not restore B's backups.
    s.grant("projects/b", "roles/viewer", ALICE).await;
    let (st, v) = s.call_as(Some(&alice), Method::POST, &path, Some(restore.clone())).await;
    assert_denied(st, &v, "viewer of B restoring B's backup");
    // A store admin of B may; it is in both logs.
    s.grant("projects/b", "roles/keyhold.storeAdmin", ALICE).await;
    let (st, v) = s.call_as(Some(&alice), Method::POST, &path, Some(restore)).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(s.media(&instance("a", "stolen"), "s").await, SECRET);
    let ok = |e: &Value| {
        e["protoPayload"]["authenticationInfo"]["principalEmail"] == "alice@example.com"
            && e["protoPayload"]["status"] == json!({})
    };
    assert!(s.audit("b", "RestoreInstance").await.iter().any(ok));
    assert!(s.audit("a", "RestoreInstance").await.iter().any(ok));
    // A replica must still be in its primary's project.
    let (st, v) = s
        .call_as(
            Some(&alice),
            Method::POST,
            &format!("{}/instances?instanceId=rep", loc("a")),
            Some(json!({"replicaOf": b})),
        )
        .await;
    assert_eq!((st, v["error"]["status"].as_str()), (400, Some("FAILED_PRECONDITION")), "{v}");
}

/// Finding 2(a): exports are written under EXPORT_DIR/PROJECT; no project can name another's
/// archive (by name, by `..`, or by absolute path); a plaintext archive goes back only into the
/// project that exported it, even if copied into another project's directory; an encrypted
/// one copied there needs the caller's permission on its source, audited in the source's
/// project.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_are_confined_to_their_project() {
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    let b = project_b_with_secret(&s).await;
    let export = s
        .ok(Method::POST, &format!("{b}:export"), Some(json!({"destination": "b.archive", "allowPlaintext": true})))
        .await;
    let file = std::path::PathBuf::from(export["destination"].as_str().unwrap());
    assert_eq!(file, s.export_dir().join("b").join("b.archive"), "{export}");
    let sealed = s.ok(Method::POST, &format!("{b}:export"), Some(json!({"destination": "sealed.archive"}))).await;
    let sealed = std::path::PathBuf::from(sealed["destination"].as_str().unwrap());

    s.grant("projects/a", "roles/owner", ALICE).await;
    let alice = s.token_for(ALICE).await;
    let import = |source: String| json!({"instanceId": "stolen", "source": source});
    let path = format!("{}/instances:import", loc("a"));
    // By name: there is no such file in A's directory.
    let (st, v) = s.call_as(Some(&alice), Method::POST, &path, Some(import("b.archive".into()))).await;
    assert_eq!((st, v["error"]["status"].as_str()), (400, Some("FAILED_PRECONDITION")), "{v}");
    // By traversal or absolute path: refused as outside A's directory.
    for source in ["../b/b.archive".to_string(), file.display().to_string(), format!("file://{}", file.display())] {
        let (st, v) = s.call_as(Some(&alice), Method::POST, &path, Some(import(source.clone()))).await;
        assert_eq!((st, v["error"]["status"].as_str()), (400, Some("INVALID_ARGUMENT")), "{source}: {v}");
    }
    s.err(Method::GET, &instance("a", "stolen"), None, 404, "NOT_FOUND").await;

    // Copied into A's directory (by an operator): a plaintext archive of B is still refused.
    let a_dir = s.export_dir().join("a");
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::copy(&file, a_dir.join("copied.archive")).unwrap();
    let (st, v) = s.call_as(Some(&alice), Method::POST, &path, Some(import("copied.archive".into()))).await;
    assert_eq!((st, v["error"]["status"].as_str()), (400, Some("FAILED_PRECONDITION")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("only into the project that exported it"), "{v}");
    // An encrypted archive of B copied there: A's owner has no permission on its source.
    std::fs::copy(&sealed, a_dir.join("sealed.archive")).unwrap();
    let (st, v) = s.call_as(Some(&alice), Method::POST, &path, Some(import("sealed.archive".into()))).await;
    assert_denied(st, &v, "import of B's encrypted archive into A");
    let in_b = s.audit("b", "ImportInstance").await;
    assert!(
        in_b.iter().any(|e| e["protoPayload"]["authenticationInfo"]["principalEmail"] == "alice@example.com"
            && e["protoPayload"]["resourceName"] == b
            && e["protoPayload"]["status"]["code"] == 7),
        "{in_b:?}"
    );
    s.err(Method::GET, &instance("a", "stolen"), None, 404, "NOT_FOUND").await;

    // B's own plaintext archive goes back into B, and the export and import are in B's log.
    s.ok(
        Method::POST,
        &format!("{}/instances:import", loc("b")),
        Some(json!({"instanceId": "back", "source": "b.archive"})),
    )
    .await;
    assert_eq!(s.media(&instance("b", "back"), "s").await, SECRET);
    assert!(!s.audit("b", "ExportInstance").await.is_empty());
    assert!(s.audit("b", "ImportInstance").await.iter().any(|e| e["protoPayload"]["status"] == json!({})));
}

/// Finding 4: archives are 0600 and their directories 0700 (under the test's umask; the
/// server binary's test in crates/keyhold/tests/store_remote.rs runs with umask 000).
#[tokio::test]
async fn archives_and_their_directories_are_private() {
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    s.ok(Method::POST, &format!("{}/instances?instanceId=i", loc("p")), Some(json!({}))).await;
    assert_eq!(s.put_as(&s.token.clone(), &instance("p", "i"), "o", b"x").await, 200);
    let export = s
        .ok(
            Method::POST,
            &format!("{}:export", instance("p", "i")),
            Some(json!({"destination": "sub/dir/x.archive", "allowPlaintext": true})),
        )
        .await;
    let file = std::path::PathBuf::from(export["destination"].as_str().unwrap());
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&file), 0o600, "{}", file.display());
    for dir in
        [s.export_dir(), s.export_dir().join("p"), s.export_dir().join("p/sub"), s.export_dir().join("p/sub/dir")]
    {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
}

/// Finding 6: a method a store or org-policy path does not have answers 404 NOT_FOUND, as the
/// KMS's paths do (it answered 501).
#[tokio::test]
async fn a_wrong_method_answers_404_like_the_kms() {
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    let kms = s.call(Method::PUT, &ring("p"), None).await;
    assert_eq!(kms.0, 404, "{:?}", kms.1);
    let i = instance("p", "i");
    for (method, path) in [
        (Method::PATCH, format!("{}/instances", loc("p"))),
        (Method::PUT, i.clone()),
        (Method::POST, format!("{i}:nosuchverb")),
        (Method::PATCH, format!("{i}/objects")),
        (Method::PATCH, format!("{i}/objects/o")),
        (Method::PUT, format!("{i}/backups")),
        (Method::PUT, format!("{i}/backups/b")),
        (Method::GET, format!("{}/instances:restore", loc("p"))),
        (Method::DELETE, format!("{}/instances:import", loc("p"))),
    ] {
        let (st, v) = s.call(method.clone(), &path, None).await;
        assert_eq!((st, v["error"]["status"].as_str()), (404, Some("NOT_FOUND")), "{method} {path}: {v}");
    }
    let base = s.base.trim_end_matches("/v1").to_string();
    for (method, path) in [(Method::PUT, "/v2/projects/p/policies"), (Method::POST, "/v2/projects/p/policies/c")] {
        let r = s.http.request(method.clone(), format!("{base}{path}")).bearer_auth(&s.token).send().await.unwrap();
        assert_eq!(r.status(), 404, "{method} {path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["status"], "NOT_FOUND");
    }
}

/// What a process that died in the middle left: an upload with one sealed chunk and a build,
/// both recorded as `node`'s work.
async fn leave_crashed_work(repo: &dyn keyhold_store::StoreRepository, node: &str) {
    let now = keyhold_api::wire::Timestamp::now();
    let i = instance("p", "i");
    repo.begin_upload(&i, "half", 7, node, now).await.unwrap();
    let chunk = keyhold_store::model::StoredChunk { wrapped_dek: vec![1; 40], ciphertext: vec![2; 64] };
    repo.put_chunks(&i, "half", 7, 0, &[chunk]).await.unwrap();
    repo.begin_pending(&instance("p", "half-restored"), node, now).await.unwrap();
}

/// A second store over the server's database (a restarted process, or another node).
async fn another_store(s: &Server) -> (std::sync::Arc<keyhold_store::Store>, keyhold_sql::Opened) {
    let db = match &s.pg_url {
        Some(url) => keyhold_sql::Database::Postgres(url.clone()),
        None => keyhold_sql::Database::SqliteFile(s.db_file.clone()),
    };
    let opened = keyhold_sql::open_all(&db).await.unwrap();
    let config = keyhold_store::StoreConfig {
        require_cmek: false,
        guard: keyhold_cmek::GuardConfig::default(),
        locations: s.kms.config().locations.clone(),
        export_dir: Some(s.export_dir()),
        replication_period: std::time::Duration::from_secs(60),
        copy_bytes_per_second: None,
    };
    let host = keyhold_server::host::KmsHost::shared(s.kms.clone());
    let agents = std::sync::Arc::new(keyhold_store::LocalAgents::new(host.clone()));
    (keyhold_store::Store::new(host, opened.objects.clone(), agents, config), opened)
}

async fn count(s: &Server, sql: &str) -> i64 {
    match &s.pg_url {
        Some(url) => {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            client.query_one(sql, &[]).await.unwrap().get(0)
        }
        None => rusqlite::Connection::open(&s.db_file).unwrap().query_row(sql, [], |r| r.get(0)).unwrap(),
    }
}

const LEFT_OVER: &str = "SELECT (SELECT count(*) FROM store_uploads) + (SELECT count(*) FROM store_chunks) \
     + (SELECT count(*) FROM store_names WHERE state = 'BUILDING')";

/// Finding 6 on SQLite (one process per database): at start, everything a crash left is
/// deleted at once, however recent (it was kept for an hour).
#[tokio::test]
async fn a_crash_is_cleaned_up_at_start_sqlite() {
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    let (_, opened) = another_store(&s).await;
    leave_crashed_work(opened.objects.as_ref(), "crashed").await;
    assert_eq!(count(&s, LEFT_OVER).await, 3);
    let (restarted, _) = another_store(&s).await;
    assert_eq!(restarted.clean_up_after_crash().await.unwrap(), 2);
    assert_eq!(count(&s, LEFT_OVER).await, 0);
    assert_eq!(count(&s, "SELECT count(*) FROM store_work_owners").await, 0);
}

/// Finding 6 on PostgreSQL (nodes share the database): a node starting deletes at once what a
/// dead node left (its heartbeat stopped over a lease ago), and never an upload a live node is
/// still writing, which then completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_is_cleaned_up_at_start_but_not_a_live_nodes_upload_postgres() {
    let s = start(Backend::Postgres, KmsConfig::default()).await;
    s.ok(Method::POST, &format!("{}/instances?instanceId=i", loc("p")), Some(json!({}))).await;
    // A live upload on the server's node, held open mid-way.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|v| (v, rx))
    }));
    let upload = {
        let request =
            s.http.put(format!("{}/{}/objects/live", s.base, instance("p", "i"))).bearer_auth(&s.token).body(body);
        tokio::spawn(async move { request.send().await })
    };
    for _ in 0..6 {
        tx.send(Ok(vec![7u8; 1024 * 1024])).await.unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    // Its first chunks are stored (a batch of four 1 MiB chunks; the sixth is held back).
    while count(&s, "SELECT count(*) FROM store_uploads").await != 1
        || count(&s, "SELECT count(*) FROM store_chunks").await < 4
    {
        assert!(std::time::Instant::now() < deadline, "the live upload's chunks were never stored");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let live_chunks = count(&s, "SELECT count(*) FROM store_chunks").await;
    // A node that died a minute ago, in the middle of an upload and a restore.
    let opened = keyhold_sql::open_all(&keyhold_sql::Database::Postgres(s.pg_url.clone().unwrap())).await.unwrap();
    let minute_ago = keyhold_api::wire::Timestamp::now().add(keyhold_api::wire::ProtoDuration::from_secs(-60));
    opened
        .objects
        .heartbeat("crashed", minute_ago, minute_ago.add(keyhold_api::wire::ProtoDuration::from_secs(-60)))
        .await
        .unwrap();
    leave_crashed_work(opened.objects.as_ref(), "crashed").await;

    // Every live node (the server's, at its heartbeats) deletes a dead node's work too, so the
    // count this start returns may be less than 2; what matters is the state once it returns.
    let (starting, _) = another_store(&s).await;
    assert!(starting.clean_up_after_crash().await.unwrap() <= 2);
    assert_eq!(count(&s, "SELECT count(*) FROM store_names WHERE state = 'BUILDING'").await, 0);
    assert_eq!(count(&s, "SELECT count(*) FROM store_uploads").await, 1, "the live upload is kept");
    assert_eq!(count(&s, "SELECT count(*) FROM store_chunks WHERE object = 'half'").await, 0);
    assert!(count(&s, "SELECT count(*) FROM store_chunks WHERE object = 'live'").await >= live_chunks);
    // The live upload completes.
    tx.send(Ok(vec![7u8; 10])).await.unwrap();
    drop(tx);
    let resp = upload.await.unwrap().unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.text().await);
    let meta = s.ok(Method::GET, &format!("{}/objects/live", instance("p", "i")), None).await;
    assert_eq!(meta["size"], (6 * 1024 * 1024 + 10).to_string());
    assert_eq!(count(&s, "SELECT count(*) FROM store_work_owners").await, 0, "finished work leaves no owner row");
}

/// The store authorization matrix (`store_authz_matrix.tsv`): every store method as a
/// principal holding one role on the resource's project, then on another project only, and the
/// source of every copy as a principal who may write the destination and holds that role on
/// the source's project.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_authorization_matrix() {
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    let key = s.cmek_key("p").await;
    // Project q's agent may use p's key too, so that copies from p into q can succeed when the
    // caller may make them.
    s.cmek_key("q").await;
    let q_agent = {
        let resp = s
            .http
            .post(format!(
                "{}/v1beta1/projects/q/services/store.keyhold.dev:generateServiceIdentity",
                s.base.trim_end_matches("/v1")
            ))
            .bearer_auth(&s.token)
            .send()
            .await
            .unwrap();
        let v: Value = resp.json().await.unwrap();
        v["response"]["email"].as_str().unwrap().to_string()
    };
    s.grant(&key, "roles/cloudkms.cryptoKeyEncrypterDecrypter", &format!("serviceAccount:{q_agent}")).await;
    let i = instance("p", "i");
    s.ok(Method::POST, &format!("{}/instances?instanceId=i", loc("p")), Some(json!({"kmsKey": key}))).await;
    assert_eq!(s.put_as(&s.token.clone(), &i, "o", b"data").await, 200);
    s.ok(Method::POST, &format!("{i}/backups?backupId=b"), Some(json!({}))).await;
    let backup = format!("{i}/backups/b");
    let base = s.ok(Method::POST, &format!("{i}:export"), Some(json!({"destination": "base.archive"}))).await;
    std::fs::create_dir_all(s.export_dir().join("q")).unwrap();
    std::fs::copy(base["destination"].as_str().unwrap(), s.export_dir().join("q").join("fromp.archive")).unwrap();
    // A finished operation of p's (cancelling it is refused for everyone allowed to try).
    let (status, op) = s.call_raw(Method::POST, &format!("{i}/backups?backupId=opb"), Some(json!({}))).await;
    let operation = common::operation_name(status, &op).unwrap_or_else(|| panic!("not an operation: {op}"));
    assert_eq!(s.operation_result(Some(&s.token.clone()), &operation).await.0, 200);

    let table = include_str!("store_authz_matrix.tsv");
    let mut lines = table.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty());
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split('\t').collect()).collect();
    let methods: std::collections::BTreeSet<&str> = rows.iter().map(|r| r[0]).collect();
    assert_eq!(methods.len(), 23, "every store method has a row");
    let mut n = 0;
    let mut checked = 0;
    for (col, role) in header.iter().enumerate().skip(2) {
        for grant_on in ["p", "q"] {
            let member = format!("user:{}-{grant_on}@example.com", role.replace('.', "-"));
            if *role != "none" {
                s.grant(&format!("projects/{grant_on}"), &format!("roles/{role}"), &member).await;
            }
            let token = s.token_for(&member).await;
            for row in &rows {
                let (method, scope) = (row[0], row[1]);
                if scope == "source" && grant_on == "q" {
                    continue;
                }
                if scope == "source" {
                    s.grant("projects/q", "roles/keyhold.storeAdmin", &member).await;
                }
                n += 1;
                let (verb, path, body) = match (method, scope) {
                    ("CreateInstance", _) => {
                        (Method::POST, format!("{}/instances?instanceId=c{n}", loc("p")), Some(json!({})))
                    }
                    ("GetInstance", _) => (Method::GET, i.clone(), None),
                    ("ListInstances", _) => (Method::GET, format!("{}/instances", loc("p")), None),
                    ("DeleteInstance", _) => {
                        s.ok(Method::POST, &format!("{}/instances?instanceId=d{n}", loc("p")), Some(json!({}))).await;
                        (Method::DELETE, instance("p", &format!("d{n}")), None)
                    }
                    ("RewrapInstance", _) => (Method::POST, format!("{i}:rewrap"), Some(json!({}))),
                    ("ReencryptInstance", _) => (Method::POST, format!("{i}:reencrypt"), Some(json!({}))),
                    ("CloneInstance", _) => {
                        (Method::POST, format!("{i}:clone"), Some(json!({"destinationInstanceId": format!("cl{n}")})))
                    }
                    ("ExportInstance", _) => {
                        (Method::POST, format!("{i}:export"), Some(json!({"destination": format!("e{n}.archive")})))
                    }
                    ("ImportInstance", "same") => (
                        Method::POST,
                        format!("{}/instances:import", loc("p")),
                        Some(json!({"instanceId": format!("im{n}"), "source": "base.archive"})),
                    ),
                    ("ImportInstance", _) => (
                        Method::POST,
                        format!("{}/instances:import", loc("q")),
                        Some(json!({"instanceId": format!("im{n}"), "source": "fromp.archive"})),
                    ),
                    ("RestoreInstance", "same") => (
                        Method::POST,
                        format!("{}/instances:restore", loc("p")),
                        Some(json!({"instanceId": format!("r{n}"), "backup": backup})),
                    ),
                    ("RestoreInstance", _) => (
                        Method::POST,
                        format!("{}/instances:restore", loc("q")),
                        Some(json!({"instanceId": format!("r{n}"), "backup": backup})),
                    ),
                    ("CreateReplica", "same") => (
                        Method::POST,
                        format!("{}/instances?instanceId=rp{n}", loc("p")),
                        Some(json!({"replicaOf": i})),
                    ),
                    ("CreateReplica", _) => (
                        Method::POST,
                        format!("{}/instances?instanceId=rp{n}", loc("q")),
                        Some(json!({"replicaOf": i})),
                    ),
                    ("InsertObject", _) => (Method::PUT, format!("{i}/objects/w{n}"), None),
                    ("GetObject", _) => (Method::GET, format!("{i}/objects/o"), None),
                    ("ReadObject", _) => (Method::GET, format!("{i}/objects/o?alt=media"), None),
                    ("ListObjects", _) => (Method::GET, format!("{i}/objects"), None),
                    ("DeleteObject", _) => {
                        assert_eq!(s.put_as(&s.token.clone(), &i, &format!("del{n}"), b"x").await, 200);
                        (Method::DELETE, format!("{i}/objects/del{n}"), None)
                    }
                    ("CreateBackup", _) => (Method::POST, format!("{i}/backups?backupId=bk{n}"), Some(json!({}))),
                    ("GetBackup", _) => (Method::GET, backup.clone(), None),
                    ("ListBackups", _) => (Method::GET, format!("{i}/backups"), None),
                    ("DeleteBackup", _) => {
                        s.ok(Method::POST, &format!("{i}/backups?backupId=db{n}"), Some(json!({}))).await;
                        (Method::DELETE, format!("{i}/backups/db{n}"), None)
                    }
                    ("GetOperation", _) => (Method::GET, operation.clone(), None),
                    ("ListOperations", _) => (Method::GET, format!("{}/operations", loc("p")), None),
                    ("CancelOperation", _) => (Method::POST, format!("{operation}:cancel"), Some(json!({}))),
                    other => panic!("store_authz_matrix.tsv names an unknown method and scope {other:?}"),
                };
                let mut req = s.http.request(verb, format!("{}/{path}", s.base)).bearer_auth(&token);
                if let Some(b) = body {
                    req = req.header("content-type", "application/json").body(b.to_string());
                } else if method == "InsertObject" {
                    req = req.body(b"new".to_vec());
                }
                let resp = req.send().await.unwrap();
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap();
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let expected = if grant_on == "q" { "N" } else { row[col] };
                let what = format!("{role} on {grant_on}: {method} ({scope})");
                match expected {
                    "Y" => assert_eq!(status, 200, "{what} should be allowed: {text}"),
                    "F" => assert_eq!(
                        (status, v["error"]["status"].as_str()),
                        (400, Some("FAILED_PRECONDITION")),
                        "{what}: {text}"
                    ),
                    "N" => {
                        assert_denied(status, &v, &what);
                        let msg = v["error"]["message"].as_str().unwrap();
                        assert!(
                            msg.starts_with("Permission '") && msg.ends_with("' (or it may not exist)."),
                            "Google's message shape: {msg}"
                        );
                    }
                    other => panic!("bad cell {other:?} for {method}/{scope}/{role}"),
                }
                if scope == "source" {
                    s.revoke("projects/q", &member).await;
                }
                checked += 1;
            }
            if *role != "none" {
                s.revoke(&format!("projects/{grant_on}"), &member).await;
            }
        }
    }
    let same = rows.iter().filter(|r| r[1] == "same").count();
    assert_eq!(checked, (2 * same + rows.len() - same) * (header.len() - 2));
}

/// Finding 10: the export registry against the export directory. An export whose file is gone
/// is marked missing (no longer listed as protected by its key) and comes back with its file;
/// a file no export wrote is reported and kept. `POST projects/P/exports:reconcile` does it on
/// demand (and is authorized like an export), the server at start.
#[tokio::test]
async fn the_export_registry_is_reconciled_with_the_files() {
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    let key = s.cmek_key("p").await;
    let i = instance("p", "i");
    s.ok(Method::POST, &format!("{}/instances?instanceId=i", loc("p")), Some(json!({"kmsKey": key}))).await;
    assert_eq!(s.put_as(&s.token.clone(), &i, "o", b"data").await, 200);
    let gone = s.ok(Method::POST, &format!("{i}:export"), Some(json!({"destination": "gone.archive"}))).await;
    let kept = s.ok(Method::POST, &format!("{i}:export"), Some(json!({"destination": "kept.archive"}))).await;
    let exports_of_key = || async {
        let found = s.ok(Method::GET, &format!("projects/p/protectedResources:search?cryptoKey={key}"), None).await;
        let mut names: Vec<String> = found["protectedResources"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["resourceType"] == "store.keyhold.dev/Export")
            .map(|r| r["name"].as_str().unwrap().trim_start_matches("//store.keyhold.dev/").to_string())
            .collect();
        names.sort();
        names
    };
    assert_eq!(exports_of_key().await.len(), 2);
    let gone_file = std::path::PathBuf::from(gone["destination"].as_str().unwrap());
    let saved = std::fs::read(&gone_file).unwrap();
    std::fs::remove_file(&gone_file).unwrap();
    let stray = s.export_dir().join("p").join("stray.bin");
    std::fs::write(&stray, b"not an export").unwrap();

    // Only those who may export may reconcile.
    s.grant("projects/p", "roles/viewer", ALICE).await;
    let alice = s.token_for(ALICE).await;
    let (st, v) = s.call_as(Some(&alice), Method::POST, "projects/p/exports:reconcile", Some(json!({}))).await;
    assert_denied(st, &v, "a viewer reconciling exports");

    let r = s.ok(Method::POST, "projects/p/exports:reconcile", Some(json!({}))).await;
    assert_eq!(r["present"], json!([kept["name"]]), "{r}");
    assert_eq!(r["missing"], json!({ gone["name"].as_str().unwrap(): gone_file.display().to_string() }), "{r}");
    assert_eq!(r["unregistered"], json!([stray.display().to_string()]), "{r}");
    assert!(stray.exists(), "an unregistered file is never deleted");
    let listed = exports_of_key().await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(kept["name"].as_str().unwrap().ends_with(listed[0].rsplit('/').next().unwrap()), "{listed:?}");

    // The file is back: so is the export. At start, the server reconciles too.
    std::fs::write(&gone_file, saved).unwrap();
    let (restarted, _) = another_store(&s).await;
    restarted.reconcile_all_exports().await.unwrap();
    assert_eq!(exports_of_key().await.len(), 2);
    let r = s.ok(Method::POST, "projects/p/exports:reconcile", Some(json!({}))).await;
    assert_eq!(r["missing"], json!({}), "{r}");
    assert_eq!(r["present"].as_array().unwrap().len(), 2, "{r}");
    std::fs::remove_file(&gone_file).unwrap();
    restarted.reconcile_all_exports().await.unwrap();
    assert_eq!(exports_of_key().await.len(), 1, "marked missing at start");
    assert_eq!(s.call(Method::GET, "projects/p/exports:reconcile", None).await.0, 404);
}

/// Hardening review: an export or import never follows a symbolic link under the
/// project's export directory (one could lead into another project's directory or outside the
/// export directory), and never changes a directory Keyhold did not create.
#[tokio::test]
async fn exports_never_follow_symlinks() {
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    s.ok(Method::POST, &format!("{}/instances?instanceId=i", loc("pa")), Some(json!({}))).await;
    assert_eq!(s.put_as(&s.token.clone(), &instance("pa", "i"), "o", b"x").await, 200);
    let (pa, pb) = (s.export_dir().join("pa"), s.export_dir().join("pb"));
    std::fs::create_dir_all(&pa).unwrap();
    std::fs::create_dir_all(&pb).unwrap();
    std::fs::set_permissions(&pa, std::fs::Permissions::from_mode(0o755)).unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::set_permissions(outside.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::os::unix::fs::symlink("../pb", pa.join("bdir")).unwrap();
    std::os::unix::fs::symlink(outside.path(), pa.join("out")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("f.archive"), pa.join("f.archive")).unwrap();
    let export = format!("{}:export", instance("pa", "i"));
    for (destination, link) in
        [("bdir/x.archive", "bdir"), ("out/x.archive", "out"), ("out/sub/x.archive", "out"), ("f.archive", "f.archive")]
    {
        let body = json!({"destination": destination, "allowPlaintext": true});
        let (st, v) = s.call(Method::POST, &export, Some(body)).await;
        assert_eq!((st, v["error"]["status"].as_str()), (400, Some("FAILED_PRECONDITION")), "{destination}: {v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("pa/{link} is a symbolic link")), "{destination}: {v}");
    }
    assert_eq!(std::fs::read_dir(&pb).unwrap().count(), 0, "nothing written into pb's directory");
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0, "nothing written outside");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(outside.path()), 0o777, "a directory outside was changed");

    // Import through a link: refused, even to an archive in pb's directory.
    s.ok(Method::POST, &format!("{}/instances?instanceId=j", loc("pb")), Some(json!({}))).await;
    let b_export = json!({"destination": "b.archive", "allowPlaintext": true});
    s.ok(Method::POST, &format!("{}:export", instance("pb", "j")), Some(b_export)).await;
    let import = json!({"instanceId": "k", "source": "bdir/b.archive"});
    let (st, v) = s.call(Method::POST, &format!("{}/instances:import", loc("pa")), Some(import)).await;
    assert_eq!((st, v["error"]["status"].as_str()), (400, Some("FAILED_PRECONDITION")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("is a symbolic link"), "{v}");

    // A plain export still works; pa (made by the operator, 0755) is left as it was, the
    // directory Keyhold creates under it is 0700.
    let body = json!({"destination": "sub/ok.archive", "allowPlaintext": true});
    s.ok(Method::POST, &export, Some(body)).await;
    assert_eq!(mode(&pa), 0o755, "a directory Keyhold did not create was changed");
    assert_eq!(mode(&pa.join("sub")), 0o700);
}

/// Hardening review: instance labels follow Google Cloud's rules (at most 64, keys and
/// values at most 63 of `[a-z0-9_-]`, keys starting with a letter), as KMS keys' do; calls
/// that take no parameters (`:rewrap`, `:reencrypt`, `exports:reconcile`,
/// `generateServiceIdentity`) refuse any body but an empty one or `{}`.
#[tokio::test]
async fn labels_and_parameterless_bodies_are_checked() {
    let s = start(Backend::Sqlite, KmsConfig::default()).await;
    let create = |id: &str| format!("{}/instances?instanceId={id}", loc("p"));
    let many: serde_json::Map<String, Value> = (0..65).map(|i| (format!("k{i}"), json!("v"))).collect();
    let sixty_four: serde_json::Map<String, Value> = (0..64).map(|i| (format!("k{i}"), json!("v"))).collect();
    for labels in [
        Value::Object(many),
        json!({"k": "x".repeat(1024)}),
        json!({"k".repeat(64): "v"}),
        json!({"Key": "v"}),
        json!({"1k": "v"}),
        json!({"k": "V"}),
    ] {
        let (st, v) = s.call(Method::POST, &create("bad"), Some(json!({ "labels": labels }))).await;
        assert_eq!((st, v["error"]["status"].as_str()), (400, Some("INVALID_ARGUMENT")), "{v}");
        assert!(v.to_string().len() < 1024, "the refusal echoes the whole label: {v}");
    }
    s.err(Method::GET, &instance("p", "bad"), None, 404, "NOT_FOUND").await;
    let inst = s.ok(Method::POST, &create("i"), Some(json!({"labels": Value::Object(sixty_four)}))).await;
    assert_eq!(inst["labels"].as_object().map(|l| l.len()), Some(64), "{inst}");
    // A copy's labels are checked too.
    let clone = json!({"destinationInstanceId": "c", "labels": {"Bad": "x"}});
    let (st, v) = s.call(Method::POST, &format!("{}:clone", instance("p", "i")), Some(clone)).await;
    assert_eq!((st, v["error"]["status"].as_str()), (400, Some("INVALID_ARGUMENT")), "{v}");

    let base = s.base.trim_end_matches("/v1").to_string();
    let urls = [
        format!("{}/{}:rewrap", s.base, instance("p", "i")),
        format!("{}/{}:reencrypt", s.base, instance("p", "i")),
        format!("{}/projects/p/exports:reconcile", s.base),
        format!("{base}/v1beta1/projects/p/services/store.keyhold.dev:generateServiceIdentity"),
    ];
    let long = format!("\"{}\"", "x".repeat(100_000));
    for url in &urls {
        for body in ["[[[", long.as_str(), "{\"unknown\": 1}", "[]", "7"] {
            let r = s.http.post(url).bearer_auth(&s.token).body(body.to_string()).send().await.unwrap();
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap();
            assert_eq!((status, v["error"]["status"].as_str()), (400, Some("INVALID_ARGUMENT")), "{url}: {v}");
        }
        for body in ["", "{}", " {} "] {
            let r = s.http.post(url).bearer_auth(&s.token).body(body).send().await.unwrap();
            assert_eq!(r.status(), 200, "{url} with {body:?}");
        }
    }
}
