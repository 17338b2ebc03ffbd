//! The TLS settings of `keyhold serve`'s own clients: the store's link to a remote KMS
//! (`--kms-endpoint`) and the EKM client (EXTERNAL keys). Each is a group of flags flattened
//! into `ServeArgs`; `https://` endpoints trust the system's roots unless a CA file is given.

use std::path::PathBuf;

use keyhold_tls::ClientTls;

/// TLS of the store's link to the KMS at `--kms-endpoint https://...`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct KmsLinkTls {
    /// Store with --kms-endpoint https://...: trust only the CA certificate(s) in this PEM
    /// file instead of the system's roots.
    #[arg(long, env = "KEYHOLD_KMS_CA_FILE", value_name = "PATH")]
    pub kms_ca_file: Option<PathBuf>,
    /// Store with --kms-endpoint https://...: the client certificate (PEM, leaf first) to
    /// present to a KMS that requires mutual TLS, with --kms-client-key-file.
    #[arg(long, env = "KEYHOLD_KMS_CLIENT_CERT_FILE", value_name = "PATH", requires = "kms_client_key_file")]
    pub kms_client_cert_file: Option<PathBuf>,
    /// The private key (PEM) of --kms-client-cert-file.
    #[arg(long, env = "KEYHOLD_KMS_CLIENT_KEY_FILE", value_name = "PATH", requires = "kms_client_cert_file")]
    pub kms_client_key_file: Option<PathBuf>,
}

impl KmsLinkTls {
    /// The client TLS settings.
    pub fn client_tls(&self) -> ClientTls {
        client_tls(&self.kms_ca_file, &self.kms_client_cert_file, &self.kms_client_key_file)
    }
}

/// TLS of the EKM client: how `https://` external key managers are reached (mutual TLS, as
/// Cloud EKM authenticates to its managers).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct EkmTls {
    /// EXTERNAL keys: trust only the CA certificate(s) in this PEM file for https:// external
    /// key managers, instead of the system's roots.
    #[arg(long, env = "KEYHOLD_EKM_CA_FILE", value_name = "PATH")]
    pub ekm_ca_file: Option<PathBuf>,
    /// EXTERNAL keys: the client certificate (PEM, leaf first) presented to https:// external
    /// key managers (mutual TLS), with --ekm-client-key-file.
    #[arg(long, env = "KEYHOLD_EKM_CLIENT_CERT_FILE", value_name = "PATH", requires = "ekm_client_key_file")]
    pub ekm_client_cert_file: Option<PathBuf>,
    /// The private key (PEM) of --ekm-client-cert-file.
    #[arg(long, env = "KEYHOLD_EKM_CLIENT_KEY_FILE", value_name = "PATH", requires = "ekm_client_cert_file")]
    pub ekm_client_key_file: Option<PathBuf>,
}

impl EkmTls {
    /// The client TLS settings.
    pub fn client_tls(&self) -> ClientTls {
        client_tls(&self.ekm_ca_file, &self.ekm_client_cert_file, &self.ekm_client_key_file)
    }
}

fn client_tls(ca: &Option<PathBuf>, cert: &Option<PathBuf>, key: &Option<PathBuf>) -> ClientTls {
    ClientTls { ca_file: ca.clone(), identity: cert.clone().zip(key.clone()) }
}
