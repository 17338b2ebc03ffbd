//! The listener limits of `keyhold serve` and `keyhold ekm serve` (issue 15, finding 3): flags
//! and environment variables over [`keyhold_server::listener::Limits`]; TLS and the plaintext
//! rule (issue 17).

use std::net::SocketAddr;
use std::time::Duration;

use keyhold_api::wire::ProtoDuration;
use keyhold_server::listener::{self, Limits};

/// Limits of the public listener; docs/operations.md, "Limits on a public listener".
#[derive(clap::Args, Debug, Clone)]
pub struct ListenerArgs {
    /// Listener: the longest a request's head (request line and headers) may take to arrive,
    /// from its first byte; then the connection is closed.
    #[arg(long, default_value = "10s", value_parser = parse_timeout, env = "KEYHOLD_HEADER_READ_TIMEOUT")]
    pub header_read_timeout: Duration,
    /// Listener: the longest a connection may wait for its next request (keep-alive), or for
    /// its first after connecting; then it is closed.
    #[arg(long, default_value = "60s", value_parser = parse_timeout, env = "KEYHOLD_IDLE_TIMEOUT")]
    pub idle_timeout: Duration,
    /// Listener: the longest a request body may take to arrive after the request's head; then
    /// the request is answered 408. Object uploads and downloads are streamed and bounded by
    /// --stream-stall-timeout instead.
    #[arg(long, default_value = "60s", value_parser = parse_timeout, env = "KEYHOLD_REQUEST_TIMEOUT")]
    pub request_timeout: Duration,
    /// Listener: the longest an object upload may go without receiving data, and the longest
    /// a client may leave an answer or a download unread; then the connection is closed.
    #[arg(long, default_value = "60s", value_parser = parse_timeout, env = "KEYHOLD_STREAM_STALL_TIMEOUT")]
    pub stream_stall_timeout: Duration,
    /// Listener: the least average rate, in bytes per second, at which an object upload must
    /// arrive once --stream-min-rate-grace has passed since its body started; slower uploads
    /// are cut. 0 turns the check off.
    #[arg(long, default_value_t = listener::DEFAULT_STREAM_MIN_RATE, env = "KEYHOLD_STREAM_MIN_RATE")]
    pub stream_min_rate: u64,
    /// Listener: how long an object upload may take before --stream-min-rate applies.
    #[arg(long, default_value = "10s", value_parser = parse_timeout, env = "KEYHOLD_STREAM_MIN_RATE_GRACE")]
    pub stream_min_rate_grace: Duration,
    /// Listener: the most connections open at once; beyond it new connections wait in the
    /// kernel's backlog until some close. Default: three quarters of the open-file limit
    /// (`ulimit -n`), at most 4096.
    #[arg(long, env = "KEYHOLD_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,
    /// Listener: the largest request body in bytes, object uploads excepted; a larger
    /// Content-Length is answered 413 before the body is read.
    #[arg(long, default_value_t = listener::DEFAULT_MAX_BODY_BYTES, env = "KEYHOLD_MAX_BODY_BYTES",
          value_parser = clap::value_parser!(u64).range(1024..))]
    pub max_body_bytes: u64,
}

impl ListenerArgs {
    /// The limits these flags describe; logs them, and warns when the connection cap leaves
    /// too few file descriptors for the rest of the server.
    pub fn limits(&self) -> Limits {
        let limits = Limits {
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            request_timeout: self.request_timeout,
            stream_stall_timeout: self.stream_stall_timeout,
            stream_min_rate: self.stream_min_rate,
            stream_min_rate_grace: self.stream_min_rate_grace,
            max_connections: self.max_connections.map_or_else(listener::default_max_connections, |n| n as usize),
            max_body_bytes: self.max_body_bytes,
        };
        if let Some(nofile) = listener::open_files_limit()
            && limits.max_connections as u64 + 64 > nofile
        {
            tracing::warn!(
                max_connections = limits.max_connections,
                open_files_limit = nofile,
                "--max-connections is close to or above the open-file limit: connections can use up every descriptor \
                 and stop the database and accept(); raise `ulimit -n` or lower --max-connections"
            );
        }
        tracing::info!(
            header_read_timeout = ?limits.header_read_timeout,
            idle_timeout = ?limits.idle_timeout,
            request_timeout = ?limits.request_timeout,
            stream_stall_timeout = ?limits.stream_stall_timeout,
            stream_min_rate = limits.stream_min_rate,
            stream_min_rate_grace = ?limits.stream_min_rate_grace,
            max_connections = limits.max_connections,
            max_body_bytes = limits.max_body_bytes,
            "listener limits"
        );
        limits
    }
}

/// A positive duration like `"10s"` or `"0.5s"`: a zero timeout would close every connection.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    match ProtoDuration::parse(s) {
        Some(d) if d.to_std() > Duration::ZERO => Ok(d.to_std()),
        _ => Err(format!("\"{s}\" is not a positive duration like \"10s\" or \"0.5s\"")),
    }
}

/// What a verified client certificate stands for (`--tls-client-principal`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientPrincipalArg {
    /// Nothing: the certificate admits the connection; requests still need a bearer token.
    #[default]
    None,
    /// The certificate's first SAN email: `serviceAccount:EMAIL` for a `…gserviceaccount.com`
    /// address, `user:EMAIL` otherwise, for requests without a bearer token.
    SanEmail,
}

impl From<ClientPrincipalArg> for keyhold_tls::ClientPrincipal {
    fn from(a: ClientPrincipalArg) -> Self {
        match a {
            ClientPrincipalArg::None => keyhold_tls::ClientPrincipal::None,
            ClientPrincipalArg::SanEmail => keyhold_tls::ClientPrincipal::SanEmail,
        }
    }
}

/// A listener's TLS settings, whichever command's flags they came from.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    /// `--tls-cert-file`.
    pub cert_file: Option<std::path::PathBuf>,
    /// `--tls-key-file`.
    pub key_file: Option<std::path::PathBuf>,
    /// `--tls-client-ca-file`.
    pub client_ca_file: Option<std::path::PathBuf>,
    /// `--tls-client-principal`.
    pub client_principal: keyhold_tls::ClientPrincipal,
    /// `--allow-plaintext`.
    pub allow_plaintext: bool,
}

impl TlsSettings {
    /// The listener's TLS (`None`: plain HTTP), after the plaintext rule: plain HTTP is served
    /// on a loopback address, or anywhere with `--allow-plaintext`, never otherwise.
    /// `command` names the command in messages (`keyhold serve`).
    pub fn listener_tls(&self, listen: SocketAddr, command: &str) -> Result<Option<listener::Tls>, String> {
        let (cert_file, key_file) = match (&self.cert_file, &self.key_file) {
            (Some(c), Some(k)) => (c.clone(), k.clone()),
            (None, None) => {
                if self.client_ca_file.is_some() {
                    return Err("--tls-client-ca-file needs --tls-cert-file and --tls-key-file".into());
                }
                if !listen.ip().is_loopback() {
                    if !self.allow_plaintext {
                        return Err(format!(
                            "{command}: refusing to serve plain HTTP on {listen}, which is not a loopback address: \
                             bearer tokens and key material would cross the network in clear. Serve HTTPS with \
                             --tls-cert-file and --tls-key-file (`keyhold tls dev-certs` makes development \
                             certificates), or, on a private link or behind a TLS-terminating proxy, pass \
                             --allow-plaintext"
                        ));
                    }
                    tracing::warn!(
                        %listen,
                        "--allow-plaintext: serving plain HTTP beyond loopback; bearer tokens and key material cross \
                         the network in clear unless this address is on a private link or behind a TLS proxy"
                    );
                }
                return Ok(None);
            }
            _ => return Err("--tls-cert-file and --tls-key-file go together".into()),
        };
        let files = keyhold_tls::ServerTlsFiles { cert_file, key_file, client_ca_file: self.client_ca_file.clone() };
        let config = keyhold_tls::ServerTls::new(files, listener::ALPN_PROTOCOLS).map_err(|e| format!("TLS: {e}"))?;
        if self.client_ca_file.is_some() {
            tracing::info!(client_principal = ?self.client_principal, "TLS: client certificates are required (mTLS)");
        }
        Ok(Some(listener::Tls { config: std::sync::Arc::new(config), client_principal: self.client_principal }))
    }
}
