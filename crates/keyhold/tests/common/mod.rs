//! Helpers for tests that run `keyhold` as a real process: spawning `keyhold serve`
//! with its log in the test's directory, waiting for readiness, the CLI, and PostgreSQL.
#![allow(dead_code)] // each test file uses a different subset

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A port that was free a moment ago. Racy (another process may take it before it is used):
/// only for what must know its port before it starts, such as an external key manager whose
/// key URIs embed it. A `keyhold serve` binds port 0 instead (see [`spawn`]).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Proc {
    pub child: Child,
    pub port: u16,
    pub log: std::path::PathBuf,
}

impl Drop for Proc {
    // A failing test must not leave a server running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `keyhold serve` on DIR/data listening on `port`. Port 0: the server binds a free port and
/// [`Proc::port`] is the one it logged (no port is picked, released and raced for); a fixed
/// port is for restarting a server on the port it had.
pub fn spawn(dir: &Path, port: u16, extra: &[&str]) -> Proc {
    spawn_with_env(dir, port, extra, &[])
}

/// `keyhold serve` on DIR/data listening on port 0, run through `sh -c 'umask UMASK; exec ...'`
/// when `umask` is given. The port is the one the server bound, read from its log: no port is
/// picked, released and raced for. Waits (20 s at most) until the server logs its address;
/// panics with the log if it exits first.
pub fn spawn_bound(dir: &Path, extra: &[&str], umask: Option<&str>) -> Proc {
    static STARTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let log = dir.join(format!("serve-bound-{n}.log"));
    let bin = env!("CARGO_BIN_EXE_keyhold");
    let mut cmd = match umask {
        Some(mask) => {
            let mut c = Command::new("sh");
            c.arg("-c").arg(format!("umask {mask}; exec \"$0\" \"$@\"")).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    let child = cmd
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
        .args(extra)
        .env("KEYHOLD_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut p = Proc { child, port: 0, log };
    p.port = wait_for_bound_port(&mut p);
    p
}

/// The port in the server's "Keyhold is serving ... on http://127.0.0.1:PORT" line (or
/// https://).
pub fn bound_port(log: &str) -> Option<u16> {
    let line = log.lines().find(|l| l.contains("Keyhold is serving"))?;
    let rest = &line[line.find("://127.0.0.1:")? + "://127.0.0.1:".len()..];
    rest[..rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len())].parse().ok().filter(|p| *p != 0)
}

/// Runs `keyhold serve --data-dir DIR/data EXTRA` expecting it to refuse to start; returns its
/// stderr. (A start that succeeds would never return: the deadline turns it into a failure.)
pub fn serve_refused(dir: &Path, extra: &[&str]) -> String {
    let data = dir.join("data");
    let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--data-dir", data.to_str().unwrap()];
    args.extend_from_slice(extra);
    refused(&args)
}

/// Runs `keyhold ARGS` expecting it to refuse to start (exit non-zero within 30 s); its stderr.
pub fn refused(args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyhold"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            assert!(!status.success(), "keyhold {args:?} exited 0: {err}");
            return err;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("keyhold {args:?} started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`spawn`] with extra environment variables (SoftHSM's configuration, a PIN variable, ...).
pub fn spawn_with_env(dir: &Path, port: u16, extra: &[&str], env: &[(&str, &str)]) -> Proc {
    static STARTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let log = dir.join(format!("serve-{port}-{n}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_keyhold"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.join("data"))
        .args(extra)
        .envs(env.iter().copied())
        .env("KEYHOLD_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut p = Proc { child, port, log };
    if port == 0 {
        p.port = wait_for_bound_port(&mut p);
    }
    p
}

/// Waits (20 s at most) until the server logs the address it bound; panics with the log if it
/// exits first.
fn wait_for_bound_port(p: &mut Proc) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&p.log).unwrap_or_default();
        if let Some(port) = bound_port(&text) {
            return port;
        }
        if let Ok(Some(status)) = p.child.try_wait() {
            panic!("keyhold serve exited ({status}) before listening: {text}");
        }
        assert!(Instant::now() < deadline, "keyhold serve did not log its address: {text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub async fn wait_ready(p: &Proc) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if http_client()
            .get(format!("http://127.0.0.1:{}/healthz", p.port))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server did not start: {}", std::fs::read_to_string(&p.log).unwrap_or_default());
}

pub fn terminate(p: Proc) -> String {
    let mut p = p;
    let status = Command::new("kill").args(["-TERM", &p.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = p.child.wait().unwrap();
    assert!(exit.success(), "graceful shutdown exits 0, got {exit:?}");
    std::fs::read_to_string(&p.log).unwrap()
}

/// The owner token `keyhold serve` wrote into the data directory.
pub fn owner_token(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("data").join("owner.token")).unwrap().trim().to_string()
}

pub async fn call(dir: &Path, port: u16, method: reqwest::Method, path: &str, body: Value) -> Value {
    let resp = http_client()
        .request(method, format!("http://127.0.0.1:{port}/v1/{path}"))
        .bearer_auth(owner_token(dir))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.text().await.unwrap());
    resp.json().await.unwrap()
}

/// Runs `keyhold ARGS` as the CLI against `port`; returns (success, stdout, stderr).
pub fn cli(dir: &Path, port: u16, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keyhold"))
        .args(args)
        .env("KEYHOLD_TOKEN_FILE", dir.join("data").join("owner.token"))
        .env("KEYHOLD_ENDPOINT", format!("http://127.0.0.1:{port}"))
        .env("KEYHOLD_PROJECT", "my-project")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A fresh database on the PostgreSQL that `scripts/test.sh` started.
pub async fn fresh_postgres() -> String {
    let url = std::env::var("KEYHOLD_TEST_POSTGRES_URL")
        .expect("KEYHOLD_TEST_POSTGRES_URL is not set: run the tests with scripts/test.sh, which starts PostgreSQL");
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let mut id = [0u8; 6];
    keyhold_crypto::random_bytes(&mut id).unwrap();
    let db = format!("s_{}", id.iter().map(|b| format!("{b:02x}")).collect::<String>());
    client.batch_execute(&format!("CREATE DATABASE {db}")).await.unwrap();
    let (base, _) = url.rsplit_once('/').unwrap();
    format!("{base}/{db}")
}

/// The store's service agent in project `p` (`serviceAccount:service-N@gcp-sa-store...`), looked
/// up with `token` (the owner's, or the store service's own).
pub async fn store_agent(port: u16, token: &str) -> String {
    let identity: Value = http_client()
        .post(format!("http://127.0.0.1:{port}/v1beta1/projects/p/services/store.keyhold.dev:generateServiceIdentity"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    format!("serviceAccount:{}", identity["response"]["email"].as_str().expect("an agent email"))
}

/// Sets `key`'s IAM policy to grant `members` the encrypter/decrypter role (none: no bindings).
pub async fn grant_encrypter(dir: &Path, port: u16, key: &str, members: &[&str]) {
    let bindings = if members.is_empty() {
        serde_json::json!([])
    } else {
        serde_json::json!([{"role": "roles/cloudkms.cryptoKeyEncrypterDecrypter", "members": members}])
    };
    let policy = serde_json::json!({"policy": {"bindings": bindings}});
    call(dir, port, reqwest::Method::POST, &format!("{key}:setIamPolicy"), policy).await;
}

/// A plain HTTP client. reqwest builds its TLS with rustls and no bundled crypto provider
/// (Keyhold's clients pass their own configuration): one is installed for `Client::new()`.
pub fn http_client() -> reqwest::Client {
    keyhold_tls::install_default_provider();
    reqwest::Client::new()
}
