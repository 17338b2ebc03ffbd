//! The real app behind the real listener on loopback (KMS and store on a SQLite file, REST and
//! gRPC on one port, in clear or over TLS), and a tonic client over one HTTP/2 connection
//! (hyper's client, h2c or rustls): what `keyhold serve` and a gRPC client do.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use keyhold_kms::clock::SystemClock;
use keyhold_kms::root_key::LocalRootKey;
use keyhold_kms::{Kms, KmsConfig};
use keyhold_server::listener::{self, ClientPrincipal, Limits, ServerTls, ServerTlsFiles, Tls};
use keyhold_sql::Database;
use keyhold_tls::DevCerts;
use tokio_rustls::rustls::pki_types::ServerName;

pub const OWNER: &str = "user:owner@keyhold.local";
/// The development client certificate's email, and the principal it stands for.
pub const CLIENT_EMAIL: &str = "svc@p.iam.gserviceaccount.com";
pub const CLIENT_PRINCIPAL: &str = "serviceAccount:svc@p.iam.gserviceaccount.com";
/// The largest message (and buffered body) the test servers take.
pub const MAX_MESSAGE: u64 = 256 * 1024;

pub struct Server {
    pub addr: SocketAddr,
    pub kms: Arc<Kms>,
    pub token: String,
    pub dir: tempfile::TempDir,
    pub tls: bool,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// How the test server listens.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// h2c and HTTP/1.1 in clear.
    Clear,
    /// TLS (ALPN h2 and http/1.1).
    Tls,
    /// TLS requiring client certificates of the development CA, mapped by SAN email.
    MutualTls,
}

pub async fn start(mode: Mode) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let certs = DevCerts::generate(CLIENT_EMAIL).unwrap();
    for (name, text) in [
        ("ca.pem", &certs.ca_cert),
        ("server.pem", &certs.server_cert),
        ("server.key", &certs.server_key),
        ("client.pem", &certs.client_cert),
        ("client.key", &certs.client_key),
    ] {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let db = Database::SqliteFile(dir.path().join("keyhold.db"));
    let opened = keyhold_sql::open_all(&db).await.unwrap();
    let root = Arc::new(LocalRootKey::from_key(keyhold_crypto::KeyBytes::generate().unwrap()));
    let kms = Arc::new(Kms::new(opened.kms.clone(), root, KmsConfig::default(), Arc::new(SystemClock)).await.unwrap());
    let host = keyhold_server::host::KmsHost::shared(kms.clone());
    let store = keyhold_store::Store::new(
        host.clone(),
        opened.objects.clone(),
        Arc::new(keyhold_store::LocalAgents::new(host)),
        keyhold_store::StoreConfig {
            require_cmek: false,
            guard: keyhold_cmek::GuardConfig::default(),
            locations: kms.config().locations.clone(),
            export_dir: Some(dir.path().join("exports")),
            replication_period: Duration::from_millis(200),
            copy_bytes_per_second: None,
        },
    );
    let owner = keyhold_iam::Principal::parse(OWNER).unwrap();
    let token = kms.bootstrap_owner(&owner, None).await.unwrap().unwrap().token.expose().to_string();
    let state = keyhold_server::AppState { kms: kms.clone(), store: Some(store) };
    let grpc = keyhold_grpc::router(state.clone(), MAX_MESSAGE as usize).await;
    let app = keyhold_server::app_with(state, Some(grpc));
    let tls = (mode != Mode::Clear).then(|| {
        let files = ServerTlsFiles {
            cert_file: dir.path().join("server.pem"),
            key_file: dir.path().join("server.key"),
            client_ca_file: (mode == Mode::MutualTls).then(|| dir.path().join("ca.pem")),
        };
        Tls {
            config: Arc::new(ServerTls::new(files, listener::ALPN_PROTOCOLS).unwrap()),
            client_principal: if mode == Mode::MutualTls { ClientPrincipal::SanEmail } else { ClientPrincipal::None },
        }
    });
    let limits = Limits { max_body_bytes: MAX_MESSAGE, ..Limits::default() };
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(listener::serve_with(tcp, app, limits, tls, async move {
        let _ = stopped.await;
    }));
    Server { addr, kms, token, dir, tls: mode != Mode::Clear, _stop: stop }
}

impl Server {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The origin a client addresses.
    pub fn origin(&self) -> axum::http::Uri {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://localhost:{}", self.addr.port()).parse().unwrap()
    }

    /// One HTTP/2 connection to the server (with the development client certificate when
    /// `client_cert`, over TLS).
    pub async fn connect(&self, client_cert: bool) -> H2 {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let exec = hyper_util::rt::TokioExecutor::new();
        let send = if self.tls {
            let identity = client_cert.then(|| (self.path("client.pem"), self.path("client.key")));
            let stream = tls_connect(tcp, &self.path("ca.pem"), identity).await;
            let (send, conn) =
                hyper::client::conn::http2::handshake(exec, hyper_util::rt::TokioIo::new(stream)).await.unwrap();
            tokio::spawn(conn);
            send
        } else {
            let (send, conn) =
                hyper::client::conn::http2::handshake(exec, hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
            tokio::spawn(conn);
            send
        };
        H2(send)
    }

    /// A REST call with the owner's token over HTTP/1.1 in clear (the JSON twin of a gRPC call).
    pub async fn rest(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        assert!(!self.tls, "the REST helper speaks plain HTTP");
        keyhold_tls::install_default_provider();
        let mut req =
            reqwest::Client::new().request(method, format!("http://{}/v1/{path}", self.addr)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }
}

async fn tls_connect(
    tcp: tokio::net::TcpStream,
    ca: &Path,
    identity: Option<(PathBuf, PathBuf)>,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut config = keyhold_tls::ClientTls { ca_file: Some(ca.to_path_buf()), identity }.config().unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "the server chose HTTP/2 by ALPN");
    stream
}

/// One HTTP/2 connection as the service a tonic client sends on.
#[derive(Clone)]
pub struct H2(hyper::client::conn::http2::SendRequest<tonic::body::Body>);

impl tower::Service<axum::http::Request<tonic::body::Body>> for H2 {
    type Response = axum::http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: axum::http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(req))
    }
}

/// A request carrying `token` as a bearer token in its metadata (none: no credential).
pub fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    if let Some(t) = token {
        r.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}
