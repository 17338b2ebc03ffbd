//! Keyhold's one TLS stack: rustls with the ring crypto provider (no OpenSSL, one provider for
//! the whole workspace), PEM certificates and keys, and the client configuration every Keyhold
//! client uses (the CLI, the CMEK library's REST client, the store's link to a remote KMS, the
//! EKM client).
//!
//! Trust: the system's roots (`/etc/ssl/certs` and the like, through `rustls-native-certs`)
//! unless a CA file is given, in which case only that file's certificates are trusted (the way
//! gcloud's `core/custom_ca_certs_file` works). A client identity (certificate chain and key)
//! is presented for mutual TLS when configured.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use rustls;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub mod server;
pub use server::{ClientPrincipal, DevCerts, ServerTls, ServerTlsFiles};

/// Why a TLS configuration cannot be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file cannot be read or holds nothing usable.
    #[error("{path}: {detail}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// rustls refused the configuration (a key that does not match its certificate, ...).
    #[error("TLS configuration: {0}")]
    Config(String),
    /// No trusted root at all (no system roots found and no CA file given).
    #[error("no trusted root certificates: the system has none and no CA file was given")]
    NoRoots,
}

/// The crypto provider of every TLS connection Keyhold makes or accepts.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process-wide default crypto provider (a no-op when one is installed). Every
/// Keyhold client passes its own configuration ([`ClientTls::config`]); this only keeps an HTTP
/// client built without one (reqwest's `Client::new()`) from failing for want of a provider.
pub fn install_default_provider() {
    if CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// Every certificate in a PEM file, in order (a chain: leaf first).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file = |detail: String| TlsError::File { path: path.to_path_buf(), detail };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file(e.to_string()))?;
    if certs.is_empty() {
        return Err(file("no PEM certificate (-----BEGIN CERTIFICATE-----) in the file".into()));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File { path: path.to_path_buf(), detail: e.to_string() })
}

/// How a client reaches a TLS server.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// Trust only the certificates in this PEM file (instead of the system's roots).
    pub ca_file: Option<PathBuf>,
    /// Present this certificate chain and key (PEM files) for mutual TLS.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl ClientTls {
    /// Whether nothing is configured (system roots, no client identity).
    pub fn is_default(&self) -> bool {
        self.ca_file.is_none() && self.identity.is_none()
    }

    /// The configuration of a client of `url`: [`ClientTls::config`], except that for a plain
    /// `http://` URL with nothing configured, a system without root certificates is no error
    /// (the client then trusts no server, and never needs to).
    pub fn config_for(&self, url: &str) -> Result<rustls::ClientConfig, TlsError> {
        match self.config() {
            Err(TlsError::NoRoots) if !is_https(url) => Ok(rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| TlsError::Config(e.to_string()))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()),
            other => other,
        }
    }

    /// The rustls client configuration (ALPN is left to the HTTP client).
    pub fn config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let roots = self.roots()?;
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots);
        match &self.identity {
            None => Ok(builder.with_no_client_auth()),
            Some((cert, key)) => builder
                .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
                .map_err(|e| TlsError::Config(format!("client certificate {}: {e}", cert.display()))),
        }
    }

    /// The trusted roots: the CA file's certificates, else the system's.
    pub fn roots(&self) -> Result<rustls::RootCertStore, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                for cert in load_certs(path)? {
                    roots.add(cert).map_err(|e| TlsError::File {
                        path: path.clone(),
                        detail: format!("not a CA certificate: {e}"),
                    })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for e in &found.errors {
                    tracing::debug!(error = %e, "a system root certificate could not be loaded");
                }
                let (_added, _ignored) = roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(TlsError::NoRoots);
                }
            }
        }
        Ok(roots)
    }
}

fn is_https(url: &str) -> bool {
    url.trim_start().get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://"))
}

/// What went wrong in a TLS handshake, as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The server's certificate was refused: not issued by a trusted CA (a CA file is needed,
    /// or the wrong one is configured), expired, or for another name. A configuration error,
    /// not an outage: trying again will not help.
    ServerNotTrusted(String),
    /// The server refused the connection during the handshake, typically because it requires
    /// a client certificate (mutual TLS) that was not presented or that it does not trust.
    Refused(String),
    /// Any other TLS failure (the server does not speak TLS, no common protocol version, ...).
    Other(String),
}

impl TlsFailure {
    /// Whether this failure comes from the configuration of one side or the other (certificates,
    /// trust), rather than from the network: trying again unchanged will not help.
    pub fn is_configuration(&self) -> bool {
        matches!(self, TlsFailure::ServerNotTrusted(_) | TlsFailure::Refused(_))
    }
}

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsFailure::ServerNotTrusted(d) => write!(f, "the server's TLS certificate is not trusted: {d}"),
            TlsFailure::Refused(d) => write!(
                f,
                "the server refused the TLS handshake ({d}); it may require a client certificate that was not \
                 presented or that it does not trust"
            ),
            TlsFailure::Other(d) => write!(f, "TLS failure: {d}"),
        }
    }
}

/// The TLS failure somewhere in an error's chain of causes (an HTTP client's connection error,
/// an I/O error from a TLS stream), if there is one.
pub fn diagnose(error: &(dyn std::error::Error + 'static)) -> Option<TlsFailure> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(found) = as_rustls(e) {
            return Some(classify(found));
        }
        // `io::Error::source` skips the error it wraps: look inside it too.
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            if let Some(found) = as_rustls(inner) {
                return Some(classify(found));
            }
            if let Some(found) = diagnose(inner) {
                return Some(found);
            }
        }
        next = e.source();
    }
    None
}

fn as_rustls<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    e.downcast_ref::<rustls::Error>()
}

fn classify(e: &rustls::Error) -> TlsFailure {
    use rustls::AlertDescription as A;
    match e {
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
            TlsFailure::ServerNotTrusted(e.to_string())
        }
        rustls::Error::AlertReceived(
            A::CertificateRequired
            | A::BadCertificate
            | A::UnknownCA
            | A::CertificateUnknown
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::UnsupportedCertificate
            | A::AccessDenied
            | A::HandshakeFailure,
        ) => TlsFailure::Refused(e.to_string()),
        _ => TlsFailure::Other(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_found_through_io_errors() {
        let rustls_error = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls_error);
        let outer = std::io::Error::other(io);
        match diagnose(&outer) {
            Some(TlsFailure::ServerNotTrusted(d)) => assert!(d.contains("UnknownIssuer"), "{d}"),
            other => panic!("{other:?}"),
        }
        let alert = std::io::Error::other(rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired));
        assert!(matches!(diagnose(&alert), Some(TlsFailure::Refused(_))));
        assert_eq!(diagnose(&std::io::Error::other("connection refused")), None);
    }

    #[test]
    fn plain_http_needs_no_roots() {
        assert!(is_https("HTTPS://x") && !is_https("http://x"));
        ClientTls::default().config_for("http://127.0.0.1:1").unwrap();
    }
}
