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
    /// The rustls client configuration (ALPN is left to the HTTP client).
    pub fn config(&self) -> Result<rustls::ClientConfig, TlsError> {
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
}
