//! TLS in the real binary (issue 17): `keyhold tls dev-certs` (files, modes, no overwrite
//! without --force), `keyhold serve` over HTTPS and mTLS with the development certificates
//! (a client certificate's principal under IAM), `keyhold ekm serve` over mTLS, and the
//! plaintext rule of both (plain HTTP beyond loopback refused without --allow-plaintext).

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{owner_token, spawn};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;

const FILES: [&str; 6] = ["ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key"];

fn keyhold(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keyhold")).args(args).output().unwrap()
}

/// `keyhold tls dev-certs --out DIR/certs EXTRA`, which must succeed; its stdout.
fn dev_certs(dir: &Path, extra: &[&str]) -> String {
    let out = keyhold(&[&["tls", "dev-certs", "--out", dir.join("certs").to_str().unwrap()], extra].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn certs(dir: &Path, name: &str) -> String {
    dir.join("certs").join(name).to_str().unwrap().to_string()
}

fn client(dir: &Path, with_cert: bool) -> Arc<tokio_rustls::rustls::ClientConfig> {
    let d = dir.join("certs");
    let identity = with_cert.then(|| (d.join("client.pem"), d.join("client.key")));
    Arc::new(keyhold_tls::ClientTls { ca_file: Some(d.join("ca.pem")), identity }.config().unwrap())
}

/// One HTTPS request (`Connection: close`) to 127.0.0.1:PORT, verified as `localhost`.
async fn https(
    port: u16,
    config: Arc<tokio_rustls::rustls::ClientConfig>,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> std::io::Result<(u16, String)> {
    let tcp = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    let mut s =
        tokio_rustls::TlsConnector::from(config).connect(ServerName::try_from("localhost").unwrap(), tcp).await?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await.expect("no answer in time")?;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()))
}

async fn wait_https(port: u16, config: Arc<tokio_rustls::rustls::ClientConfig>, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if https(port, config.clone(), "GET", "/healthz", None, None).await.is_ok_and(|(s, _)| s == 200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no HTTPS answer: {}", std::fs::read_to_string(log).unwrap_or_default());
}

#[test]
fn dev_certs_are_private_files_and_are_not_overwritten_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let out = dev_certs(dir.path(), &["--client-email", "svc@p.iam.gserviceaccount.com"]);
    let d = dir.path().join("certs");
    assert_eq!(std::fs::metadata(&d).unwrap().permissions().mode() & 0o777, 0o700);
    for f in FILES {
        let mode = std::fs::metadata(d.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    // The commands to use them, with their paths.
    assert!(out.contains(&format!("keyhold serve --tls-cert-file {}", certs(dir.path(), "server.pem"))), "{out}");
    assert!(out.contains(&format!("curl --cacert {}", certs(dir.path(), "ca.pem"))), "{out}");
    assert!(out.contains("--tls-client-principal san-email"), "{out}");
    // The client certificate carries the email.
    let client = keyhold_tls::load_certs(&d.join("client.pem")).unwrap();
    assert_eq!(keyhold_tls::server::san_emails(&client[0]), vec!["svc@p.iam.gserviceaccount.com".to_string()]);

    let ca = std::fs::read_to_string(d.join("ca.pem")).unwrap();
    let again = keyhold(&["tls", "dev-certs", "--out", d.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(std::fs::read_to_string(d.join("ca.pem")).unwrap(), ca, "refused, yet overwritten");
    dev_certs(dir.path(), &["--force"]);
    assert_ne!(std::fs::read_to_string(d.join("ca.pem")).unwrap(), ca);
    assert_eq!(std::fs::metadata(d.join("ca.key")).unwrap().permissions().mode() & 0o777, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_speaks_https_and_maps_a_client_certificate_to_its_principal() {
    let dir = tempfile::tempdir().unwrap();
    dev_certs(dir.path(), &[]);
    let (cert, key, ca) =
        (certs(dir.path(), "server.pem"), certs(dir.path(), "server.key"), certs(dir.path(), "ca.pem"));
    let p = spawn(
        dir.path(),
        0,
        &[
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-client-ca-file",
            &ca,
            "--tls-client-principal",
            "san-email",
        ],
    );
    wait_https(p.port, client(dir.path(), true), &p.log).await;
    let log = std::fs::read_to_string(&p.log).unwrap();
    assert!(log.contains(&format!("https://127.0.0.1:{}", p.port)), "{log}");
    // No client certificate: no service.
    assert!(https(p.port, client(dir.path(), false), "GET", "/healthz", None, None).await.is_err());

    let owner = owner_token(dir.path());
    let rings = "/v1/projects/p/locations/global/keyRings";
    let (status, body) =
        https(p.port, client(dir.path(), true), "POST", &format!("{rings}?keyRingId=r"), Some(&owner), Some(json!({})))
            .await
            .unwrap();
    assert_eq!(status, 200, "{body}");
    // Without a token the certificate is the caller: authenticated (not 401), refused by IAM.
    let (status, body) = https(p.port, client(dir.path(), true), "GET", rings, None, None).await.unwrap();
    assert_eq!(status, 403, "{body}");
    let (status, body) = https(
        p.port,
        client(dir.path(), true),
        "GET",
        "/v1/projects/p/auditLogs?pageSize=100&methodName=ListKeyRings",
        Some(&owner),
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"principalSubject\": \"user:dev-client@keyhold.local\""), "{body}");
    // The CLI against the real HTTPS server: the dev CA and the client certificate as flags.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyhold"))
        .args(["kms", "keyrings", "list", "--location", "global", "--format", "value(name)"])
        .args(["--ca-file", &ca, "--client-cert-file", &certs(dir.path(), "client.pem")])
        .args(["--client-key-file", &certs(dir.path(), "client.key")])
        .env("KEYHOLD_ENDPOINT", format!("https://127.0.0.1:{}", p.port))
        .env("KEYHOLD_TOKEN", &owner)
        .env("KEYHOLD_PROJECT", "p")
        .env_remove("KEYHOLD_CA_FILE")
        .env_remove("CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && stdout.contains("keyRings/r"), "{stdout}{stderr}");
    common::terminate(p);
}

#[test]
fn plain_http_beyond_loopback_is_refused_without_allow_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let err = common::refused(&["serve", "--listen", "0.0.0.0:0", "--in-memory", "--data-dir", data]);
    assert!(err.contains("refusing to serve plain HTTP on 0.0.0.0:0") && err.contains("--allow-plaintext"), "{err}");
    let ekm = dir.path().join("ekm");
    let err = common::refused(&["ekm", "serve", "--listen", "0.0.0.0:0", "--data-dir", ekm.to_str().unwrap()]);
    assert!(err.contains("refusing to serve plain HTTP on 0.0.0.0:0") && err.contains("--allow-plaintext"), "{err}");
    // TLS flags that do not go together, or files that do not load: refused too.
    let err = common::refused(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--in-memory",
        "--data-dir",
        data,
        "--tls-cert-file",
        "x",
    ]);
    assert!(err.contains("--tls-key-file"), "{err}");
    let err = common::refused(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--in-memory",
        "--data-dir",
        data,
        "--tls-cert-file",
        "/nonexistent/server.pem",
        "--tls-key-file",
        "/nonexistent/server.key",
    ]);
    assert!(err.contains("/nonexistent/server.pem"), "{err}");
    let err = common::refused(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--in-memory",
        "--data-dir",
        data,
        "--tls-client-principal",
        "san-email",
    ]);
    assert!(err.contains("--tls-client-principal needs --tls-client-ca-file"), "{err}");

    // With --allow-plaintext it starts (and warns).
    let log_path = dir.path().join("plain.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyhold"))
        .args(["serve", "--listen", "0.0.0.0:0", "--in-memory", "--allow-plaintext", "--data-dir", data])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let log = loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.contains("Keyhold is serving") {
            break log;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("exited ({status}): {log}");
        }
        assert!(Instant::now() < deadline, "did not start: {log}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(log.contains("--allow-plaintext: serving plain HTTP beyond loopback"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ekm_serve_speaks_https_and_verifies_the_kms_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    dev_certs(dir.path(), &[]);
    let data: PathBuf = dir.path().join("ekm");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("policy.json"), json!({"keys": {}}).to_string()).unwrap();
    let log = dir.path().join("ekm.log");
    let (cert, key, ca) =
        (certs(dir.path(), "server.pem"), certs(dir.path(), "server.key"), certs(dir.path(), "ca.pem"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyhold"))
        .args(["ekm", "serve", "--listen", "127.0.0.1:0", "--data-dir", data.to_str().unwrap()])
        .args(["--tls-cert-file", &cert, "--tls-key-file", &key, "--tls-client-ca-file", &ca])
        .env("KEYHOLD_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let port: u16 = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(i) = text.find("Keyhold EKM is serving on https://127.0.0.1:") {
            let rest = &text[i + "Keyhold EKM is serving on https://127.0.0.1:".len()..];
            break rest[..rest.find(|c: char| !c.is_ascii_digit()).unwrap()].parse().unwrap();
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("exited ({status}): {text}");
        }
        assert!(Instant::now() < deadline, "did not start: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    wait_https(port, client(dir.path(), true), &log).await;
    assert!(https(port, client(dir.path(), false), "GET", "/healthz", None, None).await.is_err());
    let _ = child.kill();
    let _ = child.wait();
}
