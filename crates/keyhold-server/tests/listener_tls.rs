//! The public listener over TLS (issue 17), over real loopback sockets: the real app on a real
//! SQLite file served by `keyhold_server::listener::serve_with` with development certificates
//! from `keyhold_tls::DevCerts`, and a rustls client (keyhold-tls's client configuration) that
//! writes HTTP/1.1 itself. HTTPS, plain HTTP refused on the TLS port, certificate reload, mTLS
//! and the principal of a client certificate (IAM and audit), and the listener's limits during
//! the handshake. Tests wait on events with generous deadlines; none measures latency.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keyhold_kms::KmsConfig;
use keyhold_kms::clock::SystemClock;
use keyhold_server::listener::{self, ClientPrincipal, Limits, ServerTls, ServerTlsFiles, Tls};
use keyhold_sql::Database;
use keyhold_tls::DevCerts;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;

/// Long enough for anything that should happen on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(20);
/// A limit that no test reaches.
const LONG: Duration = Duration::from_secs(3600);
/// The client certificate's email.
const CLIENT_EMAIL: &str = "svc@p.iam.gserviceaccount.com";
const CLIENT_PRINCIPAL: &str = "serviceAccount:svc@p.iam.gserviceaccount.com";

struct Server {
    addr: SocketAddr,
    token: String,
    dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Server {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A client trusting the server's CA, presenting the development client certificate when
    /// `with_cert`.
    fn client(&self, with_cert: bool) -> Arc<tokio_rustls::rustls::ClientConfig> {
        let identity = with_cert.then(|| (self.path("client.pem"), self.path("client.key")));
        client_config(&self.path("ca.pem"), identity)
    }
}

fn limits() -> Limits {
    Limits {
        header_read_timeout: LONG,
        idle_timeout: LONG,
        request_timeout: LONG,
        stream_stall_timeout: LONG,
        stream_min_rate: 0,
        stream_min_rate_grace: LONG,
        max_connections: 1000,
        max_body_bytes: listener::DEFAULT_MAX_BODY_BYTES,
    }
}

fn write_certs(dir: &Path, certs: &DevCerts) {
    for (name, text) in [
        ("ca.pem", &certs.ca_cert),
        ("server.pem", &certs.server_cert),
        ("server.key", &certs.server_key),
        ("client.pem", &certs.client_cert),
        ("client.key", &certs.client_key),
    ] {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

/// The server, with mTLS (client certificates of the development CA required, mapped by
/// their SAN email) when `mtls`.
async fn start(limits: Limits, mtls: bool) -> Server {
    start_with_client(limits, mtls, CLIENT_EMAIL).await
}

/// [`start`], the development client certificate's SAN email being `client_email`.
async fn start_with_client(limits: Limits, mtls: bool, client_email: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let certs = DevCerts::generate(client_email).unwrap();
    write_certs(dir.path(), &certs);
    let db = Database::SqliteFile(dir.path().join("keyhold.db"));
    let root = keyhold_crypto::KeyBytes::generate().unwrap();
    let common::Built { app, token, .. } =
        common::build(&db, dir.path(), KmsConfig::default(), root, Arc::new(SystemClock)).await;
    let files = ServerTlsFiles {
        cert_file: dir.path().join("server.pem"),
        key_file: dir.path().join("server.key"),
        client_ca_file: mtls.then(|| dir.path().join("ca.pem")),
    };
    let tls = Tls {
        config: Arc::new(ServerTls::new(files, listener::ALPN_PROTOCOLS).unwrap()),
        client_principal: if mtls { ClientPrincipal::SanEmail } else { ClientPrincipal::None },
    };
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(listener::serve_with(tcp, app, limits, Some(tls), async move {
        let _ = stopped.await;
    }));
    Server { addr, token, dir, _stop: stop }
}

fn client_config(ca: &Path, identity: Option<(PathBuf, PathBuf)>) -> Arc<tokio_rustls::rustls::ClientConfig> {
    let mut config = keyhold_tls::ClientTls { ca_file: Some(ca.to_path_buf()), identity }.config().unwrap();
    // This file's client writes HTTP/1.1 itself, so it offers only that.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

type Tls13Stream = tokio_rustls::client::TlsStream<TcpStream>;

async fn connect(addr: SocketAddr, config: Arc<tokio_rustls::rustls::ClientConfig>) -> std::io::Result<Tls13Stream> {
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(config).connect(ServerName::try_from("localhost").unwrap(), tcp).await
}

/// One HTTPS request on a new connection (`Connection: close`): the status and body, or the
/// error of the handshake or of the exchange.
async fn https(
    addr: SocketAddr,
    config: Arc<tokio_rustls::rustls::ClientConfig>,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> std::io::Result<(u16, String)> {
    let mut s = connect(addr, config).await?;
    exchange(&mut s, method, path, token, body).await
}

async fn exchange(
    s: &mut Tls13Stream,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> std::io::Result<(u16, String)> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut out)).await.expect("no answer in time")?;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

fn error_of(body: &str) -> Value {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    v["error"].clone()
}

/// The start of a TLS handshake record, and no more: a handshake that never completes.
const PARTIAL_CLIENT_HELLO: &[u8] = &[0x16, 0x03, 0x01, 0x00, 0xf0, 0x01];

#[tokio::test]
async fn https_serves_the_api_and_negotiates_h2_or_http1() {
    let srv = start(limits(), false).await;
    // Offered h2 and http/1.1, the listener prefers h2 (gRPC's transport; keyhold-grpc's
    // tests speak it).
    let mut both = (*srv.client(false)).clone();
    both.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let s = connect(srv.addr, Arc::new(both)).await.unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // Offered http/1.1 only, it serves HTTP/1.1.
    let mut s = connect(srv.addr, srv.client(false)).await.unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (status, body) = exchange(&mut s, "GET", "/healthz", None, None).await.unwrap();
    assert_eq!((status, body.contains("SERVING")), (200, true), "{body}");
    let (status, body) = https(
        srv.addr,
        srv.client(false),
        "POST",
        "/v1/projects/p/locations/global/keyRings?keyRingId=r",
        Some(&srv.token),
        Some(json!({})),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn plain_http_on_the_tls_port_is_refused_in_words() {
    let srv = start(limits(), false).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: k\r\n\r\n").await.unwrap();
    let raw = String::from_utf8_lossy(&common::read_to_close(&mut s).await).to_string();
    assert!(raw.starts_with("HTTP/1.1 400 "), "{raw}");
    let body = raw.split_once("\r\n\r\n").unwrap().1;
    assert!(error_of(body)["message"].as_str().unwrap().contains("https://"), "{body}");
}

#[tokio::test]
async fn the_certificate_is_reloaded_when_its_files_change_and_a_bad_pair_is_not() {
    let srv = start(limits(), false).await;
    let old_client = srv.client(false);
    assert_eq!(https(srv.addr, old_client.clone(), "GET", "/healthz", None, None).await.unwrap().0, 200);

    // A certificate whose key does not match: logged, the old pair kept.
    let new = DevCerts::generate(CLIENT_EMAIL).unwrap();
    std::fs::write(srv.path("server.pem"), &new.server_cert).unwrap();
    tokio::time::sleep(keyhold_tls::server::RELOAD_CHECK_INTERVAL + Duration::from_millis(200)).await;
    for _ in 0..3 {
        assert_eq!(https(srv.addr, old_client.clone(), "GET", "/healthz", None, None).await.unwrap().0, 200);
    }

    // The matching key arrives: the new certificate is served from then on.
    std::fs::write(srv.path("server.key"), &new.server_key).unwrap();
    let new_dir = tempfile::tempdir().unwrap();
    std::fs::write(new_dir.path().join("ca.pem"), &new.ca_cert).unwrap();
    let new_client = client_config(&new_dir.path().join("ca.pem"), None);
    let expected = keyhold_tls::load_certs(&srv.path("server.pem")).unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Ok(mut s) = connect(srv.addr, new_client.clone()).await {
            assert_eq!(s.get_ref().1.peer_certificates().unwrap()[0], expected[0]);
            assert_eq!(exchange(&mut s, "GET", "/healthz", None, None).await.unwrap().0, 200);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the new certificate was never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Clients trusting only the old CA now fail.
    assert!(https(srv.addr, old_client, "GET", "/healthz", None, None).await.is_err());
}

#[tokio::test]
async fn mtls_requires_a_client_certificate_of_the_configured_ca() {
    let srv = start(limits(), true).await;
    // No certificate: refused (in TLS 1.3 the client learns it at its first read).
    assert!(https(srv.addr, srv.client(false), "GET", "/healthz", None, None).await.is_err());
    // A certificate of another CA: refused.
    let other = DevCerts::generate(CLIENT_EMAIL).unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    write_certs(other_dir.path(), &other);
    let stranger = client_config(
        &srv.path("ca.pem"),
        Some((other_dir.path().join("client.pem"), other_dir.path().join("client.key"))),
    );
    assert!(https(srv.addr, stranger, "GET", "/healthz", None, None).await.is_err());
    // The development client's certificate: served.
    let (status, body) = https(srv.addr, srv.client(true), "GET", "/healthz", None, None).await.unwrap();
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_client_certificate_is_its_principal_for_iam_and_audit_and_a_token_wins() {
    let srv = start(limits(), true).await;
    let (owner, cert) = (Some(srv.token.as_str()), srv.client(true));
    let ring = "/v1/projects/p/locations/global/keyRings/r";
    let created = https(
        srv.addr,
        cert.clone(),
        "POST",
        "/v1/projects/p/locations/global/keyRings?keyRingId=r",
        owner,
        Some(json!({})),
    )
    .await
    .unwrap();
    assert_eq!(created.0, 200, "{}", created.1);

    // No token: the certificate's principal, which holds no role yet.
    let (status, body) = https(srv.addr, cert.clone(), "GET", ring, None, None).await.unwrap();
    assert_eq!(status, 403, "{body}");
    assert_eq!(error_of(&body)["status"], "PERMISSION_DENIED");

    // Granted a role, the same principal passes the same IAM check.
    let policy = json!({"policy": {"bindings": [{"role": "roles/cloudkms.viewer", "members": [CLIENT_PRINCIPAL]}]}});
    let (status, body) =
        https(srv.addr, cert.clone(), "POST", &format!("{ring}:setIamPolicy"), owner, Some(policy)).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, body) = https(srv.addr, cert.clone(), "GET", ring, None, None).await.unwrap();
    assert_eq!(status, 200, "{body}");

    // A bearer token wins over the certificate: an invalid one is refused, not replaced.
    let (status, body) = https(srv.addr, cert.clone(), "GET", ring, Some("not-a-token"), None).await.unwrap();
    assert_eq!(status, 401, "{body}");

    // The audit log names the certificate's principal for its calls, the owner for the owner's.
    let (status, body) =
        https(srv.addr, cert, "GET", "/v1/projects/p/auditLogs?pageSize=1000&methodName=GetKeyRing", owner, None)
            .await
            .unwrap();
    assert_eq!(status, 200, "{body}");
    let log: Value = serde_json::from_str(&body).unwrap();
    let subjects: Vec<&str> = log["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .filter_map(|e| e["protoPayload"]["authenticationInfo"]["principalSubject"].as_str())
        .collect();
    assert_eq!(subjects.iter().filter(|s| **s == CLIENT_PRINCIPAL).count(), 2, "{body}");
    // The key ring was created with the owner's token over the same certificate: the owner's.
    let (status, body) = https(
        srv.addr,
        srv.client(true),
        "GET",
        "/v1/projects/p/auditLogs?pageSize=1000&methodName=CreateKeyRing",
        owner,
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let log: Value = serde_json::from_str(&body).unwrap();
    let entries = log["entries"].as_array().unwrap_or_else(|| panic!("{body}"));
    assert_eq!(entries.len(), 1, "{body}");
    assert_eq!(entries[0]["protoPayload"]["authenticationInfo"]["principalSubject"], "user:owner@keyhold.local");
}

/// Like a token (finding 5), a certificate cannot stand for a service agent: only its own
/// service may act as it.
#[tokio::test]
async fn a_client_certificate_cannot_stand_for_a_service_agent() {
    let srv = start_with_client(limits(), true, "service-1@gcp-sa-store.iam.gserviceaccount.com").await;
    let (status, body) =
        https(srv.addr, srv.client(true), "GET", "/v1/projects/p/locations/global/keyRings", None, None).await.unwrap();
    assert_eq!(status, 401, "{body}");
    // A token still works over it.
    let (status, body) =
        https(srv.addr, srv.client(true), "GET", "/v1/projects/p/locations/global/keyRings", Some(&srv.token), None)
            .await
            .unwrap();
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_handshake_that_stalls_is_cut_by_the_header_timeout() {
    let srv = start(Limits { header_read_timeout: Duration::from_millis(500), ..limits() }, false).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(PARTIAL_CLIENT_HELLO).await.unwrap();
    // The idle timeout is an hour: only the header timeout can close it.
    assert!(common::read_to_close(&mut s).await.is_empty());
    // The server still serves.
    assert_eq!(https(srv.addr, srv.client(false), "GET", "/healthz", None, None).await.unwrap().0, 200);
}

#[tokio::test]
async fn a_silent_connection_is_closed_by_the_idle_timeout_before_its_handshake() {
    let srv = start(Limits { idle_timeout: Duration::from_millis(500), ..limits() }, false).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    assert!(common::read_to_close(&mut s).await.is_empty());
}

#[tokio::test]
async fn handshakes_count_against_the_connection_cap_and_make_room_when_it_is_reached() {
    const CAP: usize = 2;
    // Every timeout is an hour: only the cap can close these.
    let srv = start(Limits { max_connections: CAP, ..limits() }, false).await;
    let mut stalled = Vec::new();
    for _ in 0..CAP {
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        s.write_all(PARTIAL_CLIENT_HELLO).await.unwrap();
        stalled.push(s);
    }
    let (status, _) = https(srv.addr, srv.client(false), "GET", "/healthz", None, None).await.unwrap();
    assert_eq!(status, 200);
    for s in &mut stalled {
        assert!(common::read_to_close(s).await.is_empty());
    }
}
