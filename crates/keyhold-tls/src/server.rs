//! The server side: the configuration of a TLS listener (`keyhold serve`, `keyhold ekm
//! serve`) reloaded when its files change, client certificate verification (mTLS) and the
//! principal a verified client certificate stands for, and the development certificates of
//! `keyhold tls dev-certs`.
//!
//! Reload: [`ServerTls::current`] is called for every new connection; at most every
//! [`RELOAD_CHECK_INTERVAL`] it compares the files' modification times and sizes (one `stat`
//! each) with those of the configuration in use, and rebuilds the configuration when they
//! changed. A pair that does not load (a key that does not match its certificate, a file
//! half-written) is logged once and the configuration in use is kept; the next change is
//! tried again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;

pub use tokio_rustls::TlsAcceptor;
pub use tokio_rustls::server::TlsStream;

use crate::{TlsError, load_certs, load_key, provider};

/// The ALPN name of HTTP/1.1.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";
/// The ALPN name of HTTP/2 (advertised only by a listener that speaks it).
pub const ALPN_H2: &[u8] = b"h2";

/// How often, at most, the certificate files are checked for a change.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The files of a TLS listener (PEM).
#[derive(Debug, Clone)]
pub struct ServerTlsFiles {
    /// The server's certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// The server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// When set, clients must present a certificate issued by one of these CAs (mTLS).
    pub client_ca_file: Option<PathBuf>,
}

/// What identifies a version of the files: modification time and size of each.
type Stamp = Vec<Option<(SystemTime, u64)>>;

struct Current {
    config: Arc<rustls::ServerConfig>,
    stamp: Stamp,
    /// The stamp of the last version that failed to load (logged once).
    failed: Option<Stamp>,
    checked: Instant,
}

/// A TLS listener's configuration, reloaded when its files change.
pub struct ServerTls {
    files: ServerTlsFiles,
    alpn: Vec<Vec<u8>>,
    current: Mutex<Current>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("files", &self.files).finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads the files; `alpn` are the protocols the listener speaks, in order of preference
    /// (ALPN names such as [`ALPN_HTTP1`]).
    pub fn new(files: ServerTlsFiles, alpn: &[&[u8]]) -> Result<Self, TlsError> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let stamp = stamp(&files);
        let config = build(&files, &alpn)?;
        Ok(Self { files, alpn, current: Mutex::new(Current { config, stamp, failed: None, checked: Instant::now() }) })
    }

    /// The files.
    pub fn files(&self) -> &ServerTlsFiles {
        &self.files
    }

    /// Whether clients must present a certificate.
    pub fn requires_client_certificate(&self) -> bool {
        self.files.client_ca_file.is_some()
    }

    /// The configuration for a new connection, reloaded first if the files have changed
    /// (checked at most every [`RELOAD_CHECK_INTERVAL`]).
    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        let mut cur = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if cur.checked.elapsed() >= RELOAD_CHECK_INTERVAL {
            cur.checked = Instant::now();
            let now = stamp(&self.files);
            if now != cur.stamp && cur.failed.as_ref() != Some(&now) {
                match build(&self.files, &self.alpn) {
                    Ok(config) => {
                        tracing::info!(cert = %self.files.cert_file.display(), "TLS certificate reloaded");
                        cur.config = config;
                        cur.stamp = now;
                        cur.failed = None;
                    }
                    Err(e) => {
                        tracing::warn!(
                            error = %e,
                            "the TLS files changed but do not load; still serving the previous certificate"
                        );
                        cur.failed = Some(now);
                    }
                }
            }
        }
        cur.config.clone()
    }

    /// An acceptor for a new connection (see [`ServerTls::current`]).
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current())
    }
}

fn stamp(files: &ServerTlsFiles) -> Stamp {
    let one = |p: &Path| std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len())));
    let mut s = vec![one(&files.cert_file), one(&files.key_file)];
    if let Some(ca) = &files.client_ca_file {
        s.push(one(ca));
    }
    s
}

fn build(files: &ServerTlsFiles, alpn: &[Vec<u8>]) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = load_certs(&files.cert_file)?;
    let key = load_key(&files.key_file)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &files.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in load_certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| TlsError::File { path: ca.clone(), detail: format!("not a CA certificate: {e}") })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsError::Config(format!("client CA {}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        TlsError::Config(format!("{} and {}: {e}", files.cert_file.display(), files.key_file.display()))
    })?;
    config.alpn_protocols = alpn.to_vec();
    Ok(Arc::new(config))
}

/// Which identity of a verified client certificate becomes the request's principal when the
/// request carries no bearer token (a bearer token always wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientPrincipal {
    /// None: the certificate only admits the connection; requests still need a token.
    #[default]
    None,
    /// The certificate's first SAN email (rfc822Name): `serviceAccount:EMAIL` when EMAIL is a
    /// service account's (`…gserviceaccount.com`), else `user:EMAIL`.
    SanEmail,
}

impl ClientPrincipal {
    /// The principal (`user:…`, `serviceAccount:…`) that `cert`, a verified client
    /// certificate, stands for, if any.
    pub fn principal(self, cert: &CertificateDer<'_>) -> Option<String> {
        match self {
            ClientPrincipal::None => None,
            ClientPrincipal::SanEmail => san_emails(cert).into_iter().next().map(|e| principal_of_email(&e)),
        }
    }
}

/// `serviceAccount:EMAIL` for a service account's address, `user:EMAIL` for any other.
pub fn principal_of_email(email: &str) -> String {
    let domain = email.rsplit_once('@').map_or("", |(_, d)| d).to_ascii_lowercase();
    if domain == "gserviceaccount.com" || domain.ends_with(".gserviceaccount.com") {
        format!("serviceAccount:{email}")
    } else {
        format!("user:{email}")
    }
}

/// The SAN emails (rfc822Name) of a certificate, in order; none if it does not parse.
pub fn san_emails(cert: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else { return Vec::new() };
    let Ok(Some(san)) = parsed.subject_alternative_name() else { return Vec::new() };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::RFC822Name(e) => Some((*e).to_string()),
            _ => None,
        })
        .collect()
}

/// The certificates and keys of a development setup (PEM), as `keyhold tls dev-certs` writes
/// them: a CA, a server certificate for `localhost`, `127.0.0.1` and `::1`, and a client
/// certificate whose SAN is an email. Never for production.
#[derive(Clone)]
pub struct DevCerts {
    /// The development CA's certificate (`ca.pem`).
    pub ca_cert: String,
    /// The CA's key (`ca.key`).
    pub ca_key: String,
    /// The server's certificate (`server.pem`).
    pub server_cert: String,
    /// The server's key (`server.key`).
    pub server_key: String,
    /// The client's certificate (`client.pem`).
    pub client_cert: String,
    /// The client's key (`client.key`).
    pub client_key: String,
}

impl std::fmt::Debug for DevCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCerts").finish_non_exhaustive()
    }
}

/// How long development certificates are valid.
pub const DEV_CERT_VALIDITY_DAYS: i64 = 365;

/// The server names of a development server certificate.
pub const DEV_SERVER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

impl DevCerts {
    /// A new development CA and its server and client certificates (ECDSA P-256), the
    /// client's with `client_email` as SAN email.
    pub fn generate(client_email: &str) -> Result<Self, TlsError> {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
            KeyUsagePurpose, SanType,
        };
        let err = |e: rcgen::Error| TlsError::Config(format!("generating development certificates: {e}"));
        let now = time::OffsetDateTime::now_utc();
        let validity = |p: &mut CertificateParams| {
            p.not_before = now - time::Duration::days(1);
            p.not_after = now + time::Duration::days(DEV_CERT_VALIDITY_DAYS);
            // The serial number is derived from the (fresh, random) public key: unique.
        };

        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "Keyhold development CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        validity(&mut ca);
        let ca_key = KeyPair::generate().map_err(err)?;
        let ca_key_pem = ca_key.serialize_pem();
        let ca = CertifiedIssuer::self_signed(ca, ca_key).map_err(err)?;

        let mut server =
            CertificateParams::new(DEV_SERVER_NAMES.iter().map(|s| s.to_string()).collect::<Vec<_>>()).map_err(err)?;
        server.distinguished_name.push(DnType::CommonName, "localhost");
        server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        validity(&mut server);
        let server_key = KeyPair::generate().map_err(err)?;
        let server_cert = server.signed_by(&server_key, &ca).map_err(err)?;

        let mut client = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        client.distinguished_name.push(DnType::CommonName, client_email);
        client.subject_alt_names = vec![SanType::Rfc822Name(client_email.try_into().map_err(err)?)];
        client.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        validity(&mut client);
        let client_key = KeyPair::generate().map_err(err)?;
        let client_cert = client.signed_by(&client_key, &ca).map_err(err)?;

        Ok(Self {
            ca_cert: ca.pem(),
            ca_key: ca_key_pem,
            server_cert: server_cert.pem(),
            server_key: server_key.serialize_pem(),
            client_cert: client_cert.pem(),
            client_key: client_key.serialize_pem(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_map_to_principals() {
        assert_eq!(principal_of_email("svc@p.iam.gserviceaccount.com"), "serviceAccount:svc@p.iam.gserviceaccount.com");
        assert_eq!(principal_of_email("alice@example.com"), "user:alice@example.com");
    }

    #[test]
    fn dev_certs_load_and_carry_the_client_email() {
        let dir = tempfile_dir();
        let certs = DevCerts::generate("svc@p.iam.gserviceaccount.com").unwrap();
        let w = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let files = ServerTlsFiles {
            cert_file: w("server.pem", &certs.server_cert),
            key_file: w("server.key", &certs.server_key),
            client_ca_file: Some(w("ca.pem", &certs.ca_cert)),
        };
        let tls = ServerTls::new(files, &[ALPN_HTTP1]).unwrap();
        assert!(tls.requires_client_certificate());
        assert_eq!(tls.current().alpn_protocols, vec![ALPN_HTTP1.to_vec()]);
        let client = load_certs(&w("client.pem", &certs.client_cert)).unwrap();
        assert_eq!(
            ClientPrincipal::SanEmail.principal(&client[0]).as_deref(),
            Some("serviceAccount:svc@p.iam.gserviceaccount.com")
        );
        assert_eq!(ClientPrincipal::None.principal(&client[0]), None);
        // A mismatched pair is refused at start.
        let other = DevCerts::generate("x@example.com").unwrap();
        let bad = ServerTlsFiles {
            cert_file: dir.join("server.pem"),
            key_file: w("other.key", &other.server_key),
            client_ca_file: None,
        };
        assert!(ServerTls::new(bad, &[ALPN_HTTP1]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("keyhold-tls-test-{}-{:?}", std::process::id(), Instant::now()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
