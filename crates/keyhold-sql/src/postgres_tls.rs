//! TLS to PostgreSQL, as libpq's connection parameters ask for it, over Keyhold's one TLS
//! stack (rustls on ring, `keyhold-tls`) through `tokio-postgres-rustls`:
//!
//! | `sslmode` | what Keyhold does |
//! |---|---|
//! | `disable` | plain TCP |
//! | `prefer` (the default) | plain TCP, as before: Keyhold does not try TLS unless asked (libpq would try TLS, unverified, then plain; ask for `require` or stronger) |
//! | `require` | TLS, the server's certificate not verified (as libpq); with `sslrootcert`, verified as `verify-ca` (as libpq) |
//! | `verify-ca` | TLS, the server's certificate chain verified against `sslrootcert`, the host name not checked |
//! | `verify-full` | TLS, the chain and the host name verified |
//!
//! `sslrootcert=PATH` is the CA file (PEM); without it, or with `sslrootcert=system`, the
//! system's roots are trusted (`system` also implies `verify-full`, as in libpq 16). `sslcert`
//! and `sslkey` present a client certificate. tokio-postgres knows only `disable`, `prefer` and
//! `require` and none of the file parameters: they are taken out of the connection string here,
//! in both its URL (`postgres://...?sslmode=verify-full&sslrootcert=/etc/ca.pem`) and its
//! key-value (`host=... sslmode=verify-full`) forms.

use std::path::PathBuf;
use std::sync::Arc;

use keyhold_tls::rustls;
use keyhold_tls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use keyhold_tls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use keyhold_tls::rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

/// libpq's `sslmode`, as far as Keyhold implements it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// Plain TCP (see the module's documentation).
    Prefer,
    /// TLS without verifying the server.
    Require,
    /// TLS, the server's chain verified, not its name.
    VerifyCa,
    /// TLS, the server's chain and name verified.
    VerifyFull,
}

/// The TLS parameters of a connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTls {
    /// `sslmode`.
    pub mode: SslMode,
    /// `sslrootcert` (None: the system's roots).
    pub root_cert: Option<PathBuf>,
    /// `sslcert` and `sslkey`.
    pub identity: Option<(PathBuf, PathBuf)>,
}

const OURS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// Splits `url` into what tokio-postgres parses (with `sslmode` reduced to `disable`, `prefer`
/// or `require`) and its TLS parameters.
pub fn split(url: &str) -> Result<(String, PgTls), String> {
    let trimmed = url.trim();
    let is_url = trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://");
    let (rest, params) = if is_url { split_url(trimmed) } else { split_key_values(trimmed)? };
    let get = |k: &str| params.iter().rev().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let system_roots = get("sslrootcert").is_some_and(|r| r == "system");
    let root_cert = get("sslrootcert").filter(|r| r != "system" && !r.is_empty()).map(PathBuf::from);
    let mut mode = match get("sslmode").as_deref() {
        None | Some("prefer") => SslMode::Prefer,
        Some("disable") => SslMode::Disable,
        Some("require") => SslMode::Require,
        Some("verify-ca") => SslMode::VerifyCa,
        Some("verify-full") => SslMode::VerifyFull,
        Some(other) => {
            return Err(format!(
                "sslmode={other} is not supported: use disable, prefer, require, verify-ca or verify-full"
            ));
        }
    };
    if mode == SslMode::Require && root_cert.is_some() {
        mode = SslMode::VerifyCa; // libpq: a root certificate given turns require into verify-ca
    }
    if system_roots {
        if mode == SslMode::Disable {
            return Err("sslrootcert=system needs TLS, but sslmode=disable".into());
        }
        mode = SslMode::VerifyFull; // libpq 16: sslrootcert=system implies verify-full
    }
    let identity = match (get("sslcert"), get("sslkey")) {
        (Some(c), Some(k)) => Some((PathBuf::from(c), PathBuf::from(k))),
        (None, None) => None,
        _ => return Err("sslcert and sslkey go together: give both or neither".into()),
    };
    let driver_mode = match mode {
        SslMode::Disable => "disable",
        SslMode::Prefer => "prefer",
        _ => "require",
    };
    let rest = if is_url {
        let sep = if rest.contains('?') { '&' } else { '?' };
        format!("{rest}{sep}sslmode={driver_mode}")
    } else {
        format!("{rest} sslmode={driver_mode}").trim().to_string()
    };
    Ok((rest, PgTls { mode, root_cert, identity }))
}

fn split_url(url: &str) -> (String, Vec<(String, String)>) {
    let Some((base, query)) = url.split_once('?') else { return (url.to_string(), Vec::new()) };
    let mut kept = Vec::new();
    let mut ours = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if OURS.contains(&k) {
            ours.push((k.to_string(), percent_decode(v)));
        } else {
            kept.push(pair);
        }
    }
    let base = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
    (base, ours)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// libpq's key-value form: `key=value` pairs separated by spaces, values optionally in single
/// quotes with `\` escapes. Keyhold's parameters are taken out; the rest is kept verbatim.
fn split_key_values(s: &str) -> Result<(String, Vec<(String, String)>), String> {
    let mut kept = String::new();
    let mut ours = Vec::new();
    let mut chars = s.char_indices().peekable();
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = chars.peek() else { break };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            return Err(format!("invalid connection string: \"{key}\" has no value"));
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if(|(_, c)| *c == '\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err("invalid connection string: unterminated quoted value".into()),
                    Some((_, '\'')) => break,
                    Some((_, '\\')) => value.extend(chars.next().map(|(_, c)| c)),
                    Some((_, c)) => value.push(c),
                }
            }
        } else {
            while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace()) {
                value.push(c);
            }
        }
        let end = chars.peek().map_or(s.len(), |(i, _)| *i);
        if OURS.contains(&key.as_str()) {
            ours.push((key, value));
        } else {
            kept.push_str(s[start..end].trim_end());
            kept.push(' ');
        }
    }
    Ok((kept.trim_end().to_string(), ours))
}

impl PgTls {
    /// Whether connections use TLS.
    pub fn uses_tls(&self) -> bool {
        matches!(self.mode, SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull)
    }

    /// The rustls configuration of the connections (when [`PgTls::uses_tls`]).
    pub fn client_config(&self) -> Result<rustls::ClientConfig, String> {
        let tls = keyhold_tls::ClientTls { ca_file: self.root_cert.clone(), identity: self.identity.clone() };
        let what = |e: keyhold_tls::TlsError| format!("PostgreSQL TLS (sslrootcert, sslcert, sslkey): {e}");
        if self.mode == SslMode::Require {
            // libpq's require: encrypted, the server not verified.
            let mut config = keyhold_tls::ClientTls { ca_file: None, identity: self.identity.clone() }
                .config_for("http://")
                .map_err(what)?;
            config.dangerous().set_certificate_verifier(Arc::new(Unverified(keyhold_tls::provider())));
            return Ok(config);
        }
        let mut config = tls.config().map_err(what)?;
        if self.mode == SslMode::VerifyCa {
            let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(tls.roots().map_err(what)?),
                keyhold_tls::provider(),
            )
            .build()
            .map_err(|e| format!("PostgreSQL TLS: {e}"))?;
            config.dangerous().set_certificate_verifier(Arc::new(ChainOnly(verifier)));
        }
        Ok(config)
    }
}

/// `verify-ca`: the chain up to a trusted root is verified, the host name is not.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki verifies the chain first: a name error means the chain was good.
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `require`: any certificate is accepted (the handshake's signatures are still checked, so the
/// server holds the key of the certificate it sent). Encryption without authentication, as
/// libpq's `require` gives.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_taken_out_of_urls() {
        let (rest, tls) = split(
            "postgres://u:p@db.example:5432/k?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p@db.example:5432/k?application_name=x&sslmode=require");
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.root_cert, Some(PathBuf::from("/etc/ca.pem")));

        let (rest, tls) = split("postgres://u@h/k").unwrap();
        assert_eq!((rest.as_str(), tls.mode), ("postgres://u@h/k?sslmode=prefer", SslMode::Prefer));
        assert!(!tls.uses_tls());
        let (_, tls) = split("postgres://u@h/k?sslmode=require&sslrootcert=/ca.pem").unwrap();
        assert_eq!(tls.mode, SslMode::VerifyCa, "libpq: require with a root certificate is verify-ca");
        let (_, tls) = split("postgres://u@h/k?sslmode=require&sslrootcert=system").unwrap();
        assert_eq!((tls.mode, tls.root_cert), (SslMode::VerifyFull, None));
        assert!(split("postgres://u@h/k?sslmode=allow").is_err());
        assert!(split("postgres://u@h/k?sslmode=require&sslcert=/c.pem").is_err());
    }

    #[test]
    fn parameters_are_taken_out_of_key_value_strings() {
        let (rest, tls) =
            split("host=h password='a b\\'c' sslmode=verify-ca sslrootcert='/x y/ca.pem' dbname=k").unwrap();
        assert_eq!(rest, "host=h password='a b\\'c' dbname=k sslmode=require");
        assert_eq!((tls.mode, tls.root_cert), (SslMode::VerifyCa, Some(PathBuf::from("/x y/ca.pem"))));
        assert!(split("host=h sslmode").is_err());
    }
}
