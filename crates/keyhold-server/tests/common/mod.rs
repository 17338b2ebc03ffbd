//! A real server on loopback for the integration tests: axum on a random port, over a real
//! SQLite file or a fresh database on the PostgreSQL started by `scripts/test.sh`
//! (`KEYHOLD_TEST_POSTGRES_URL`). Requests carry the owner's bearer token unless a test asks
//! for another one.
#![allow(dead_code)]

use std::sync::Arc;

use keyhold_kms::clock::SystemClock;
use keyhold_kms::root_key::LocalRootKey;
use keyhold_kms::{Kms, KmsConfig};
use keyhold_sql::Database;
use reqwest::Method;
use serde_json::{Value, json};

pub struct Server {
    pub base: String,
    pub http: reqwest::Client,
    pub kms: Arc<Kms>,
    pub _dir: tempfile::TempDir,
    pub db_file: std::path::PathBuf,
    /// The PostgreSQL database's name, for the PostgreSQL backend.
    pub pg_database: Option<String>,
    /// The PostgreSQL URL, for the PostgreSQL backend.
    pub pg_url: Option<String>,
    /// The server owner's bearer token.
    pub token: String,
}

#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A connection to the test cluster's admin database.
pub async fn admin() -> tokio_postgres::Client {
    let url = std::env::var("KEYHOLD_TEST_POSTGRES_URL")
        .expect("KEYHOLD_TEST_POSTGRES_URL is not set: run the tests with scripts/test.sh, which starts PostgreSQL");
    let (client, conn) =
        tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect to test PostgreSQL");
    tokio::spawn(conn);
    client
}

/// A fresh PostgreSQL database on the test cluster.
pub async fn fresh_postgres() -> (String, String) {
    let url = std::env::var("KEYHOLD_TEST_POSTGRES_URL").unwrap_or_default();
    let (client, conn) =
        tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect to test PostgreSQL");
    tokio::spawn(conn);
    let mut id = [0u8; 6];
    keyhold_crypto::random_bytes(&mut id).unwrap();
    let db = format!("t_{}", id.iter().map(|b| format!("{b:02x}")).collect::<String>());
    client.batch_execute(&format!("CREATE DATABASE {db}")).await.unwrap();
    let (base, _) = url.rsplit_once('/').unwrap();
    (format!("{base}/{db}"), db)
}

pub async fn start(backend: Backend, config: KmsConfig) -> Server {
    start_with_root(backend, config, keyhold_crypto::KeyBytes::generate().unwrap()).await
}

pub async fn start_with_root(backend: Backend, config: KmsConfig, root: keyhold_crypto::KeyBytes) -> Server {
    start_with_clock(backend, config, root, Arc::new(SystemClock)).await
}

/// [`start_with_root`] with the KMS reading `clock`: a [`keyhold_kms::clock::ManualClock`] lets
/// a test move past a scheduled destruction instead of sleeping until it.
pub async fn start_with_clock(
    backend: Backend,
    config: KmsConfig,
    root: keyhold_crypto::KeyBytes,
    clock: Arc<dyn keyhold_kms::clock::Clock>,
) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let db_file = dir.path().join("keyhold.db");
    let (db, pg_database, pg_url) = match backend {
        Backend::Sqlite => (Database::SqliteFile(db_file.clone()), None, None),
        Backend::Postgres => {
            let (url, name) = fresh_postgres().await;
            (Database::Postgres(url.clone()), Some(name), Some(url))
        }
    };
    start_on_with_clock(db, pg_database, pg_url, dir, db_file, config, root, clock).await
}

/// A server on an existing database (a second node on the same PostgreSQL, for instance).
pub async fn start_on(
    db: Database,
    pg_database: Option<String>,
    pg_url: Option<String>,
    dir: tempfile::TempDir,
    db_file: std::path::PathBuf,
    config: KmsConfig,
    root: keyhold_crypto::KeyBytes,
) -> Server {
    start_on_with_clock(db, pg_database, pg_url, dir, db_file, config, root, Arc::new(SystemClock)).await
}

/// Two nodes on one fresh PostgreSQL database, sharing a root key.
pub async fn two_postgres_nodes() -> (Server, Server) {
    two_postgres_nodes_with(KmsConfig::default()).await
}

/// [`two_postgres_nodes`], the second node with its own configuration.
pub async fn two_postgres_nodes_with(b_config: KmsConfig) -> (Server, Server) {
    let root = keyhold_crypto::KeyBytes::generate().unwrap();
    let a = start_with_root(Backend::Postgres, KmsConfig::default(), root.clone()).await;
    let url = a.pg_url.clone().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("unused.db");
    let b = start_on(Database::Postgres(url), None, None, dir, file, b_config, root).await;
    (a, b)
}

#[allow(clippy::too_many_arguments)]
async fn start_on_with_clock(
    db: Database,
    pg_database: Option<String>,
    pg_url: Option<String>,
    dir: tempfile::TempDir,
    db_file: std::path::PathBuf,
    config: KmsConfig,
    root: keyhold_crypto::KeyBytes,
    clock: Arc<dyn keyhold_kms::clock::Clock>,
) -> Server {
    let Built { kms, app, token } = build(&db, dir.path(), config, root, clock).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server {
        base: format!("http://{addr}/v1"),
        http: http_client(),
        kms,
        _dir: dir,
        db_file,
        pg_database,
        pg_url,
        token,
    }
}

/// What [`build`] makes: the KMS, the whole API (KMS and store) as one router, and the owner's
/// token.
pub struct Built {
    pub kms: Arc<Kms>,
    pub app: axum::Router,
    pub token: String,
}

/// The KMS and the store on `db` (exports under `dir`), the owner bootstrapped, and the router
/// `keyhold serve` runs; the caller chooses how to listen.
pub async fn build(
    db: &Database,
    dir: &std::path::Path,
    config: KmsConfig,
    root: keyhold_crypto::KeyBytes,
    clock: Arc<dyn keyhold_kms::clock::Clock>,
) -> Built {
    let opened = keyhold_sql::open_all(db).await.unwrap();
    let root = Arc::new(LocalRootKey::from_key(root));
    let kms = Arc::new(Kms::new(opened.kms.clone(), root, config, clock).await.unwrap());
    let store_config = keyhold_store::StoreConfig {
        require_cmek: false,
        guard: keyhold_cmek::GuardConfig::default(),
        locations: kms.config().locations.clone(),
        export_dir: Some(dir.join("exports")),
        replication_period: std::time::Duration::from_millis(200),
        copy_bytes_per_second: None,
    };
    let host = keyhold_server::host::KmsHost::shared(kms.clone());
    let store = keyhold_store::Store::new(
        host.clone(),
        opened.objects.clone(),
        Arc::new(keyhold_store::LocalAgents::new(host)),
        store_config,
    );
    let owner = keyhold_iam::Principal::parse(OWNER).unwrap();
    let token = kms.bootstrap_owner(&owner, None).await.unwrap().unwrap().token.expose().to_string();
    let app = keyhold_server::app(keyhold_server::AppState { kms: kms.clone(), store: Some(store) });
    Built { kms, app, token }
}

/// The principal the servers are bootstrapped with.
pub const OWNER: &str = "user:owner@keyhold.local";

impl Server {
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(Some(&self.token.clone()), method, path, body).await
    }
    /// A request with `token` (or none). A call that answers with a long-running operation is
    /// followed to its end, as Google's clients' `operation.result()` does: the answer is the
    /// operation's response, or its error as the call would have answered it.
    pub async fn call_as(&self, token: Option<&str>, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let (status, answer) = self.call_raw_as(token, method, path, body).await;
        match operation_name(status, &answer) {
            Some(name) => self.operation_result(token, &name).await,
            None => (status, answer),
        }
    }
    /// [`Server::call`], answering a long-running operation as it is.
    pub async fn call_raw(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_raw_as(Some(&self.token.clone()), method, path, body).await
    }
    /// Polls operation `name` until it is done; its response or its error as a call's answer.
    pub async fn operation_result(&self, token: Option<&str>, name: &str) -> (u16, Value) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let (status, op) = self.call_raw_as(token, Method::GET, name, None).await;
            assert_eq!(status, 200, "{name}: {op}");
            if op["done"] == true {
                if let Some(error) = op.get("error") {
                    let code = keyhold_api::Code::from_number(error["code"].as_i64().unwrap() as i32).unwrap();
                    let mut error = error.clone();
                    error["code"] = code.http_status().into();
                    error["status"] = code.as_str().into();
                    return (code.http_status(), serde_json::json!({ "error": error }));
                }
                let mut response = op["response"].clone();
                response.as_object_mut().unwrap().remove("@type");
                return (200, response);
            }
            assert!(std::time::Instant::now() < deadline, "{name} did not finish: {op}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    pub async fn call_raw_as(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}/{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")))
    }
    /// A token for `principal`, minted by the owner.
    pub async fn token_for(&self, principal: &str) -> String {
        let v = self.ok(Method::POST, "tokens", Some(json!({"principal": principal}))).await;
        v["token"].as_str().unwrap().to_string()
    }

    /// Adds `member` to `role` on `resource` (read-modify-write with the etag).
    pub async fn grant(&self, resource: &str, role: &str, member: &str) -> Value {
        let mut policy = self.ok(Method::GET, &format!("{resource}:getIamPolicy"), None).await;
        let bindings = policy.as_object_mut().unwrap().entry("bindings").or_insert(json!([]));
        bindings.as_array_mut().unwrap().push(json!({"role": role, "members": [member]}));
        self.ok(Method::POST, &format!("{resource}:setIamPolicy"), Some(json!({ "policy": policy }))).await
    }

    /// Removes every binding of `member` on `resource`.
    pub async fn revoke(&self, resource: &str, member: &str) {
        let mut policy = self.ok(Method::GET, &format!("{resource}:getIamPolicy"), None).await;
        if let Some(bs) = policy.get_mut("bindings").and_then(Value::as_array_mut) {
            for b in bs.iter_mut() {
                b["members"].as_array_mut().unwrap().retain(|m| m != member);
            }
        }
        self.ok(Method::POST, &format!("{resource}:setIamPolicy"), Some(json!({ "policy": policy }))).await;
    }

    pub async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.call(method, path, body).await;
        assert_eq!(s, 200, "{path}: {v}");
        v
    }
    pub async fn err(&self, method: Method, path: &str, body: Option<Value>, status: u16, code: &str) -> String {
        let (s, v) = self.call(method, path, body).await;
        assert_eq!(s, status, "{path}: {v}");
        assert_eq!(v["error"]["status"], code, "{v}");
        assert_eq!(v["error"]["code"], status);
        v["error"]["message"].as_str().unwrap().to_string()
    }
}

/// The name of the long-running operation a call answered with, if it did.
pub fn operation_name(status: u16, answer: &Value) -> Option<String> {
    let name = answer["name"].as_str()?;
    (status == 200 && name.contains("/operations/") && answer.get("done").is_some()).then(|| name.to_string())
}

/// A plain HTTP client. reqwest builds its TLS with rustls and no bundled crypto provider
/// (Keyhold's clients pass their own configuration): one is installed for `Client::new()`.
pub fn http_client() -> reqwest::Client {
    keyhold_tls::install_default_provider();
    reqwest::Client::new()
}

/// How long the listener tests wait for the server to answer or close.
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(20);

/// Reads until the peer closes the connection (or resets it); panics after [`PATIENCE`].
pub async fn read_to_close<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Vec<u8> {
    use tokio::io::AsyncReadExt as _;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(PATIENCE, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!("the server kept the connection open; received so far: {:?}", String::from_utf8_lossy(&out))
    });
    out
}
