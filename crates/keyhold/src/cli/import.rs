//! Key import in gcloud's words: `keyhold kms import-jobs create|describe|list` and
//! `keyhold kms keys versions import`, which wraps a key file for the import job itself (as
//! `gcloud kms keys versions import --target-key-file` does) or sends one wrapped already.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use keyhold_api::resources::{Algorithm, ImportJobState, ImportMethod};
use keyhold_api::wire::encode_base64;
use keyhold_api::{ImportJobName, KeyRingName};

use super::files;
use super::kms::{KeyFlags, KeyRingFlags, ListFlags};
use super::output::Kind;
use super::parse::{ProtectionLevelArg, kebab, parse_algorithm, wire_name};
use super::{CliError, Ctx};

/// The largest key file read: an RSA-4096 private key in PKCS#8 DER is about 2.4 KB.
const MAX_KEY_FILE: usize = 16 * 1024;

/// `keyhold kms import-jobs`.
#[derive(Args, Debug)]
pub struct ImportJobsArgs {
    /// The command.
    #[command(subcommand)]
    pub command: ImportJobsCommand,
}

/// Commands under `keyhold kms import-jobs`.
#[derive(Subcommand, Debug)]
pub enum ImportJobsCommand {
    /// Create an import job: an RSA wrapping key that key material is wrapped for.
    Create(ImportJobCreate),
    /// Show an import job (its state and wrapping public key).
    Describe(ImportJobTarget),
    /// List the import jobs of a key ring.
    List(ImportJobList),
}

/// A command on one import job.
#[derive(Args, Debug)]
pub struct ImportJobTarget {
    /// The import job ID, or its full name .../keyRings/R/importJobs/J.
    #[arg(value_name = "IMPORT_JOB")]
    pub import_job: String,
    #[command(flatten)]
    pub ring: KeyRingFlags,
}

/// `keyhold kms import-jobs create`.
#[derive(Args, Debug)]
pub struct ImportJobCreate {
    #[command(flatten)]
    pub target: ImportJobTarget,
    /// How key material is wrapped: rsa-oaep-3072-sha256-aes-256, rsa-oaep-4096-sha256-aes-256,
    /// rsa-oaep-3072-sha1-aes-256, rsa-oaep-4096-sha1-aes-256, rsa-oaep-3072-sha256 or
    /// rsa-oaep-4096-sha256.
    #[arg(long, value_name = "IMPORT_METHOD", value_parser = parse_import_method)]
    pub import_method: ImportMethod,
    /// The protection level of the keys the job imports into.
    #[arg(long, value_enum)]
    pub protection_level: ProtectionLevelArg,
}

/// `keyhold kms import-jobs list`.
#[derive(Args, Debug)]
pub struct ImportJobList {
    #[command(flatten)]
    pub ring: KeyRingFlags,
    #[command(flatten)]
    pub list: ListFlags,
}

/// `keyhold kms keys versions import`.
#[derive(Args, Debug)]
pub struct VersionImport {
    #[command(flatten)]
    pub parent: KeyFlags,
    /// The import job: an ID (in the key's key ring), or its full name.
    #[arg(long, value_name = "IMPORT_JOB")]
    pub import_job: String,
    /// The algorithm of the key material (`google-symmetric-encryption`, `ec-sign-p256-sha256`,
    /// `hmac-sha256`, ...).
    #[arg(long, value_name = "ALGORITHM", value_parser = parse_algorithm)]
    pub algorithm: Algorithm,
    /// The key to import, unwrapped: the raw key for symmetric and HMAC keys, a DER PKCS#8
    /// private key for asymmetric ones. It is wrapped here for the import job's public key.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["wrapped_key_file", "rsa_aes_wrapped_key_file"])]
    pub target_key_file: Option<PathBuf>,
    /// The import job's public key (PEM), instead of fetching it.
    #[arg(long, value_name = "PATH", requires = "target_key_file")]
    pub public_key_file: Option<PathBuf>,
    /// Key material wrapped for the import job already, by its import method.
    #[arg(long, value_name = "PATH", conflicts_with = "rsa_aes_wrapped_key_file")]
    pub wrapped_key_file: Option<PathBuf>,
    /// The same, sent in the older `rsaAesWrappedKey` field.
    #[arg(long, value_name = "PATH")]
    pub rsa_aes_wrapped_key_file: Option<PathBuf>,
    /// Import into this existing (destroyed) version instead of a new one: an ID or a full name.
    #[arg(long = "version", value_name = "VERSION")]
    pub target_version: Option<String>,
}

fn parse_import_method(s: &str) -> Result<ImportMethod, String> {
    match ImportMethod::from_name(&wire_name(s)) {
        Some(m) if m != ImportMethod::Unspecified => Ok(m),
        _ => {
            let valid: Vec<String> = ImportMethod::ALL
                .iter()
                .filter(|m| **m != ImportMethod::Unspecified)
                .map(|m| kebab(m.as_str()))
                .collect();
            Err(format!("unknown import method \"{s}\"; valid methods are: {}", valid.join(", ")))
        }
    }
}

fn job_name(ctx: &Ctx, ring: &KeyRingFlags, job: &str) -> Result<ImportJobName, CliError> {
    if job.contains('/') {
        return job.parse().map_err(|e: keyhold_api::NameError| CliError::Usage(e.to_string()));
    }
    let ring: KeyRingName =
        ctx.resources(ring.location.as_deref(), ring.keyring.as_deref(), None).key_ring_name("keyring")?;
    ImportJobName::new(&ring, job).map_err(|e| CliError::Usage(e.to_string()))
}

/// `import-jobs create`.
pub async fn create(ctx: &Ctx, c: &ImportJobCreate) -> Result<(), CliError> {
    let name = job_name(ctx, &c.target.ring, &c.target.import_job)?;
    let body =
        json!({"importMethod": c.import_method.as_str(), "protectionLevel": c.protection_level.to_api().as_str()});
    let query = [("importJobId", name.import_job.clone())];
    let job = ctx.client.post(&format!("{}/importJobs", name.key_ring), &query, &body).await?;
    ctx.show_created(Kind::Other, &job)
}

/// `import-jobs describe`.
pub async fn describe(ctx: &Ctx, c: &ImportJobTarget) -> Result<(), CliError> {
    let name = job_name(ctx, &c.ring, &c.import_job)?;
    let job = ctx.client.get(&name.to_string()).await?;
    ctx.show(Kind::Other, &job)
}

/// `import-jobs list`.
pub async fn list(ctx: &Ctx, c: &ImportJobList) -> Result<(), CliError> {
    let ring = ctx.resources(c.ring.location.as_deref(), c.ring.keyring.as_deref(), None).key_ring_name("keyring")?;
    let items = ctx.client.list(&format!("{ring}/importJobs"), "importJobs", &c.list.options()).await?;
    ctx.show_list(Kind::Other, &items, c.list.uri)
}

/// The DER `SubjectPublicKeyInfo` of a PEM `PUBLIC KEY`.
fn pem_to_der(pem: &str) -> Result<Vec<u8>, CliError> {
    let body: String = pem.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("-----")).collect();
    if !pem.contains("-----BEGIN PUBLIC KEY-----") {
        return Err(CliError::Usage("the import job's public key is not a PEM PUBLIC KEY".into()));
    }
    keyhold_api::wire::decode_base64(&body)
        .map_err(|e| CliError::Usage(format!("the import job's public key is not valid PEM: {e}")))
}

/// `keys versions import`.
pub async fn import_version(ctx: &Ctx, c: &VersionImport) -> Result<(), CliError> {
    let key = ctx
        .resources(c.parent.ring.location.as_deref(), c.parent.ring.keyring.as_deref(), c.parent.key.as_deref())
        .crypto_key_name("key")?;
    let job = if c.import_job.contains('/') {
        c.import_job.parse::<ImportJobName>().map_err(|e| CliError::Usage(e.to_string()))?
    } else {
        ImportJobName::new(&key.key_ring, &c.import_job).map_err(|e| CliError::Usage(e.to_string()))?
    };
    let mut body = json!({"algorithm": c.algorithm.as_str(), "importJob": job.to_string()});
    match (&c.target_key_file, &c.wrapped_key_file, &c.rsa_aes_wrapped_key_file) {
        (Some(target), None, None) => {
            let material = files::read_input(target, MAX_KEY_FILE)?;
            // The job says how to wrap (and, unless --public-key-file is given, for which key).
            let described = ctx.client.get(&job.to_string()).await?;
            let state = described["state"].as_str().and_then(ImportJobState::from_name);
            if state != Some(ImportJobState::Active) {
                return Err(CliError::Other(format!(
                    "Import job {job} is {}; only ACTIVE import jobs can be used.",
                    described["state"].as_str().unwrap_or("in an unknown state")
                )));
            }
            let pem = match &c.public_key_file {
                Some(p) => String::from_utf8(files::read_input(p, MAX_KEY_FILE)?.expose().to_vec())
                    .map_err(|_| CliError::Usage("--public-key-file is not a PEM file".into()))?,
                None => described["publicKey"]["pem"].as_str().unwrap_or_default().to_string(),
            };
            let import_method = described["importMethod"]
                .as_str()
                .and_then(ImportMethod::from_name)
                .ok_or_else(|| CliError::Other(format!("import job {job} has no import method the CLI knows")))?;
            let (_, how) = keyhold_kms::import_wrapping(import_method).ok_or_else(|| {
                CliError::Other(format!("import method {import_method} cannot be used by keyhold to wrap keys"))
            })?;
            let wrapped = keyhold_crypto::import::wrap(&pem_to_der(&pem)?, how, material.expose())
                .map_err(|e| CliError::Usage(format!("cannot wrap {}: {e}", target.display())))?;
            body["wrappedKey"] = Value::String(encode_base64(&wrapped));
        }
        (None, Some(wrapped), None) => {
            body["wrappedKey"] = Value::String(encode_base64(files::read_input(wrapped, MAX_KEY_FILE)?.expose()));
        }
        (None, None, Some(wrapped)) => {
            body["rsaAesWrappedKey"] = Value::String(encode_base64(files::read_input(wrapped, MAX_KEY_FILE)?.expose()));
        }
        _ => {
            return Err(CliError::Usage(
                "one of --target-key-file, --wrapped-key-file or --rsa-aes-wrapped-key-file is required".into(),
            ));
        }
    }
    if let Some(v) = &c.target_version {
        let name = ctx
            .resources(c.parent.ring.location.as_deref(), c.parent.ring.keyring.as_deref(), c.parent.key.as_deref())
            .version_name(v, "version")?;
        body["cryptoKeyVersion"] = Value::String(name.to_string());
    }
    let version = ctx.client.post(&format!("{key}/cryptoKeyVersions:import"), &[], &body).await?;
    ctx.show_created(Kind::CryptoKeyVersion, &version)
}
