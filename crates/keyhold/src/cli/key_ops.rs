//! The key operations of the other purposes, in gcloud's words: `keyhold kms asymmetric-sign`,
//! `asymmetric-decrypt`, `mac-sign`, `mac-verify`, `raw-encrypt`, `raw-decrypt`, `decapsulate`
//! and `keys versions get-public-key`. Like
//! `kms encrypt`, each sends CRC32C checksums and checks the answer's unless
//! `--skip-integrity-verification` is given.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use reqwest::Method;

use keyhold_api::CryptoKeyVersionName;
use keyhold_api::messages::{
    AsymmetricDecryptRequest, AsymmetricDecryptResponse, AsymmetricSignRequest, AsymmetricSignResponse,
    DecapsulateRequest, DecapsulateResponse, Digest, MacSignRequest, MacSignResponse, MacVerifyRequest,
    MacVerifyResponse, PublicKey, RawDecryptRequest, RawDecryptResponse, RawEncryptRequest, RawEncryptResponse,
};
use keyhold_api::wire::{Bytes, Crc32c, SecretBytes};
use keyhold_crypto::crc32c;
use keyhold_crypto::keys::Hash;

use super::files::{self, MAX_PLAINTEXT};
use super::kms::{KeyRingFlags, REQUEST_CORRUPTED, RESPONSE_CORRUPTED, VersionTarget};
use super::output::Kind;
use super::{CliError, Ctx};

/// `--version`, `--key`, `--keyring`, `--location`: the version a key operation uses.
#[derive(Args, Debug)]
#[command(disable_version_flag = true)]
pub struct VersionFlags {
    /// The version: an ID (with --key), or a full name .../cryptoKeys/K/cryptoKeyVersions/N.
    #[arg(long, value_name = "VERSION")]
    pub version: String,
    /// The key: an ID, or a full name projects/P/locations/L/keyRings/R/cryptoKeys/K.
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    #[command(flatten)]
    pub ring: KeyRingFlags,
    /// Do not send or check CRC32C checksums.
    #[arg(long)]
    pub skip_integrity_verification: bool,
}

impl VersionFlags {
    fn name(&self, ctx: &Ctx) -> Result<CryptoKeyVersionName, CliError> {
        ctx.resources(self.ring.location.as_deref(), self.ring.keyring.as_deref(), self.key.as_deref())
            .version_name(&self.version, "key")
    }
}

/// `--digest-algorithm`.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum DigestAlgorithm {
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

/// `keyhold kms asymmetric-sign`.
#[derive(Args, Debug)]
pub struct AsymmetricSignArgs {
    #[command(flatten)]
    pub target: VersionFlags,
    /// Hash the input with this algorithm here and send the digest (the key's algorithm names
    /// it). Without it the input itself is sent: for EC_SIGN_ED25519, and for inputs up to
    /// 64 KiB with the others.
    #[arg(long, value_enum, value_name = "DIGEST_ALGORITHM")]
    pub digest_algorithm: Option<DigestAlgorithm>,
    /// File to sign (`-` for standard input).
    #[arg(long, value_name = "PATH")]
    pub input_file: PathBuf,
    /// File to write the signature to (`-` for standard output).
    #[arg(long, value_name = "PATH")]
    pub signature_file: PathBuf,
}

/// `keyhold kms asymmetric-decrypt`.
#[derive(Args, Debug)]
pub struct AsymmetricDecryptArgs {
    #[command(flatten)]
    pub target: VersionFlags,
    /// File to decrypt (`-` for standard input).
    #[arg(long, value_name = "PATH")]
    pub ciphertext_file: PathBuf,
    /// File to write the plaintext to (`-` for standard output); created readable by its owner
    /// only.
    #[arg(long, value_name = "PATH")]
    pub plaintext_file: PathBuf,
}

/// `keyhold kms mac-sign`.
#[derive(Args, Debug)]
pub struct MacSignArgs {
    #[command(flatten)]
    pub target: VersionFlags,
    /// File to tag (`-` for standard input); at most 64 KiB.
    #[arg(long, value_name = "PATH")]
    pub input_file: PathBuf,
    /// File to write the tag to (`-` for standard output).
    #[arg(long, value_name = "PATH")]
    pub signature_file: PathBuf,
}

/// `keyhold kms mac-verify`.
#[derive(Args, Debug)]
pub struct MacVerifyArgs {
    #[command(flatten)]
    pub target: VersionFlags,
    /// File the tag is claimed for (`-` for standard input); at most 64 KiB.
    #[arg(long, value_name = "PATH")]
    pub input_file: PathBuf,
    /// File holding the tag to check.
    #[arg(long, value_name = "PATH")]
    pub signature_file: PathBuf,
}

/// `keyhold kms raw-encrypt`.
#[derive(Args, Debug)]
pub struct RawEncryptArgs {
    #[command(flatten)]
    pub target: VersionFlags,
    /// File to encrypt (`-` for standard input); at most 64 KiB (a multiple of 16 bytes for
    /// AES-CBC: there is no padding).
    #[arg(long, value_name = "PATH")]
    pub plaintext_file: PathBuf,
    /// File to write the ciphertext to (`-` for standard output); for AES-GCM the tag follows.
    #[arg(long, value_name = "PATH")]
    pub ciphertext_file: PathBuf,
    /// File holding additional authenticated data (AES-GCM only); at most 64 KiB.
    #[arg(long, value_name = "PATH")]
    pub additional_authenticated_data_file: Option<PathBuf>,
    /// File holding the 16-byte IV (AES-CBC and AES-CTR only). Without it the server draws one,
    /// and it is written, as gcloud does, to a new file `./initialization_vector_XXXXXXXX`
    /// (named on standard error).
    #[arg(long, value_name = "PATH")]
    pub initialization_vector_file: Option<PathBuf>,
}

/// `keyhold kms raw-decrypt`.
#[derive(Args, Debug)]
pub struct RawDecryptArgs {
    #[command(flatten)]
    pub target: VersionFlags,
    /// File to decrypt (`-` for standard input).
    #[arg(long, value_name = "PATH")]
    pub ciphertext_file: PathBuf,
    /// File to write the plaintext to (`-` for standard output); created readable by its owner
    /// only.
    #[arg(long, value_name = "PATH")]
    pub plaintext_file: PathBuf,
    /// File holding the IV that raw-encrypt used.
    #[arg(long, value_name = "PATH")]
    pub initialization_vector_file: PathBuf,
    /// File holding the additional authenticated data given to raw-encrypt (AES-GCM only).
    #[arg(long, value_name = "PATH")]
    pub additional_authenticated_data_file: Option<PathBuf>,
}

/// `keyhold kms decapsulate`.
#[derive(Args, Debug)]
pub struct DecapsulateArgs {
    #[command(flatten)]
    pub target: VersionFlags,
    /// File holding the KEM ciphertext (`-` for standard input).
    #[arg(long, value_name = "PATH")]
    pub ciphertext_file: PathBuf,
    /// File to write the shared secret to (`-` for standard output); created readable by its
    /// owner only.
    #[arg(long, value_name = "PATH")]
    pub shared_secret_file: PathBuf,
}

/// `--public-key-format`.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum PublicKeyFormatArg {
    /// PEM (the default).
    Pem,
    /// DER.
    Der,
    /// The raw FIPS 203, 204 or 205 encoding (post-quantum keys).
    NistPqc,
    /// The raw X-Wing public key (`KEM_XWING` keys): ML-KEM-768's, then X25519's.
    XwingRawBytes,
}

/// `keyhold kms keys versions get-public-key`.
#[derive(Args, Debug)]
pub struct GetPublicKeyArgs {
    #[command(flatten)]
    pub target: VersionTarget,
    /// File to write the public key to (`-` or absent: standard output).
    #[arg(long, value_name = "PATH")]
    pub output_file: Option<PathBuf>,
    /// The format to write.
    #[arg(long, value_enum, default_value = "pem")]
    pub public_key_format: PublicKeyFormatArg,
}

fn body<T: serde::Serialize>(req: &T) -> Result<Vec<u8>, CliError> {
    serde_json::to_vec(req).map_err(|e| CliError::Other(format!("cannot encode the request: {e}")))
}

fn response_corrupted() -> CliError {
    CliError::Integrity(RESPONSE_CORRUPTED.to_string())
}

/// `kms asymmetric-sign`.
pub async fn asymmetric_sign(ctx: &Ctx, c: &AsymmetricSignArgs) -> Result<(), CliError> {
    let name = c.target.name(ctx)?;
    let check = !c.target.skip_integrity_verification;
    let req = match c.digest_algorithm {
        None => {
            let data = files::read_input(&c.input_file, MAX_PLAINTEXT)?;
            AsymmetricSignRequest {
                data_crc32c: check.then(|| Crc32c(crc32c(data.expose()))),
                data: Bytes(data.expose().to_vec()),
                ..Default::default()
            }
        }
        Some(alg) => {
            let hash = match alg {
                DigestAlgorithm::Sha256 => Hash::Sha256,
                DigestAlgorithm::Sha384 => Hash::Sha384,
                DigestAlgorithm::Sha512 => Hash::Sha512,
            };
            // Any size: the input is hashed here, and only the digest goes to the server.
            let d = Bytes(files::digest_input(&c.input_file, hash)?);
            let crc = check.then(|| Crc32c(crc32c(&d.0)));
            let digest = match alg {
                DigestAlgorithm::Sha256 => Digest { sha256: Some(d), ..Default::default() },
                DigestAlgorithm::Sha384 => Digest { sha384: Some(d), ..Default::default() },
                DigestAlgorithm::Sha512 => Digest { sha512: Some(d), ..Default::default() },
            };
            AsymmetricSignRequest { digest: Some(digest), digest_crc32c: crc, ..Default::default() }
        }
    };
    let digest_sent = req.digest.is_some();
    let resp: AsymmetricSignResponse =
        ctx.client.call(Method::POST, &format!("{name}:asymmetricSign"), &[], Some(body(&req)?)).await?;
    if check {
        let verified = if digest_sent { resp.verified_digest_crc32c } else { resp.verified_data_crc32c };
        if !verified {
            return Err(CliError::Integrity(REQUEST_CORRUPTED.to_string()));
        }
        if crc32c(&resp.signature.0) != resp.signature_crc32c.0 {
            return Err(response_corrupted());
        }
    }
    files::write_output(&c.signature_file, &resp.signature.0, false)
}

/// `kms asymmetric-decrypt`.
pub async fn asymmetric_decrypt(ctx: &Ctx, c: &AsymmetricDecryptArgs) -> Result<(), CliError> {
    let name = c.target.name(ctx)?;
    let check = !c.target.skip_integrity_verification;
    let ciphertext = files::read_input(&c.ciphertext_file, MAX_PLAINTEXT)?;
    let req = AsymmetricDecryptRequest {
        name: String::new(),
        ciphertext_crc32c: check.then(|| Crc32c(crc32c(ciphertext.expose()))),
        ciphertext: Bytes(ciphertext.expose().to_vec()),
    };
    let resp: AsymmetricDecryptResponse =
        ctx.client.call(Method::POST, &format!("{name}:asymmetricDecrypt"), &[], Some(body(&req)?)).await?;
    let plaintext = resp.plaintext.0.expose();
    if check {
        if !resp.verified_ciphertext_crc32c {
            return Err(CliError::Integrity(REQUEST_CORRUPTED.to_string()));
        }
        if crc32c(plaintext) != resp.plaintext_crc32c.0 {
            return Err(response_corrupted());
        }
    }
    files::write_output(&c.plaintext_file, plaintext, true)
}

/// `kms mac-sign`.
pub async fn mac_sign(ctx: &Ctx, c: &MacSignArgs) -> Result<(), CliError> {
    let name = c.target.name(ctx)?;
    let check = !c.target.skip_integrity_verification;
    let data = files::read_input(&c.input_file, MAX_PLAINTEXT)?;
    let req = MacSignRequest {
        name: String::new(),
        data_crc32c: check.then(|| Crc32c(crc32c(data.expose()))),
        data: SecretBytes(data),
    };
    let resp: MacSignResponse =
        ctx.client.call(Method::POST, &format!("{name}:macSign"), &[], Some(body(&req)?)).await?;
    if check {
        if !resp.verified_data_crc32c {
            return Err(CliError::Integrity(REQUEST_CORRUPTED.to_string()));
        }
        if crc32c(&resp.mac.0) != resp.mac_crc32c.0 {
            return Err(response_corrupted());
        }
    }
    files::write_output(&c.signature_file, &resp.mac.0, false)
}

/// `kms mac-verify`: prints the answer (`success: true` when the tag is right), as gcloud does.
pub async fn mac_verify(ctx: &Ctx, c: &MacVerifyArgs) -> Result<(), CliError> {
    if files::is_stdio(&c.input_file) && files::is_stdio(&c.signature_file) {
        return Err(CliError::Usage("--input-file and --signature-file cannot both read from stdin.".into()));
    }
    let name = c.target.name(ctx)?;
    let check = !c.target.skip_integrity_verification;
    let data = files::read_input(&c.input_file, MAX_PLAINTEXT)?;
    let mac = files::read_input(&c.signature_file, MAX_PLAINTEXT)?;
    let req = MacVerifyRequest {
        name: String::new(),
        data_crc32c: check.then(|| Crc32c(crc32c(data.expose()))),
        data: SecretBytes(data),
        mac_crc32c: check.then(|| Crc32c(crc32c(mac.expose()))),
        mac: Bytes(mac.expose().to_vec()),
    };
    let resp: MacVerifyResponse =
        ctx.client.call(Method::POST, &format!("{name}:macVerify"), &[], Some(body(&req)?)).await?;
    if check {
        if !resp.verified_data_crc32c || !resp.verified_mac_crc32c {
            return Err(CliError::Integrity(REQUEST_CORRUPTED.to_string()));
        }
        if resp.success != resp.verified_success_integrity {
            return Err(response_corrupted());
        }
    }
    let mut shown = serde_json::to_value(&resp).map_err(|e| CliError::Other(e.to_string()))?;
    // proto3 JSON leaves `false` out; say it.
    shown["success"] = resp.success.into();
    ctx.show(Kind::Other, &shown)
}

/// At most one of `paths` may be standard input.
fn one_stdin(paths: &[Option<&PathBuf>]) -> Result<(), CliError> {
    if paths.iter().flatten().filter(|p| files::is_stdio(p)).count() > 1 {
        return Err(CliError::Usage("multiple parameters cannot be read from stdin.".into()));
    }
    Ok(())
}

fn read_optional(path: Option<&PathBuf>, max: usize) -> Result<Vec<u8>, CliError> {
    Ok(match path {
        Some(p) => files::read_input(p, max)?.expose().to_vec(),
        None => Vec::new(),
    })
}

/// `kms raw-encrypt`. Like gcloud, it sends the checksums of the AAD and IV even when they are
/// empty, and expects each verified.
pub async fn raw_encrypt(ctx: &Ctx, c: &RawEncryptArgs) -> Result<(), CliError> {
    one_stdin(&[
        Some(&c.plaintext_file),
        c.additional_authenticated_data_file.as_ref(),
        c.initialization_vector_file.as_ref(),
    ])?;
    let name = c.target.name(ctx)?;
    let check = !c.target.skip_integrity_verification;
    let plaintext = files::read_input(&c.plaintext_file, MAX_PLAINTEXT)?;
    let aad = read_optional(c.additional_authenticated_data_file.as_ref(), MAX_PLAINTEXT)?;
    let iv = read_optional(c.initialization_vector_file.as_ref(), 16)?;
    if c.initialization_vector_file.is_some() && iv.len() != 16 {
        return Err(CliError::Usage("--initialization-vector-file: the IV size must be 16 bytes.".into()));
    }
    let req = RawEncryptRequest {
        name: String::new(),
        plaintext_crc32c: check.then(|| Crc32c(crc32c(plaintext.expose()))),
        additional_authenticated_data_crc32c: check.then(|| Crc32c(crc32c(&aad))),
        initialization_vector_crc32c: check.then(|| Crc32c(crc32c(&iv))),
        plaintext: SecretBytes(plaintext),
        additional_authenticated_data: Bytes(aad),
        initialization_vector: Bytes(iv),
    };
    let resp: RawEncryptResponse =
        ctx.client.call(Method::POST, &format!("{name}:rawEncrypt"), &[], Some(body(&req)?)).await?;
    if check {
        let verified = resp.verified_plaintext_crc32c
            && resp.verified_additional_authenticated_data_crc32c
            && resp.verified_initialization_vector_crc32c;
        if !verified {
            return Err(CliError::Integrity(REQUEST_CORRUPTED.to_string()));
        }
        if crc32c(&resp.ciphertext.0) != resp.ciphertext_crc32c.0
            || crc32c(&resp.initialization_vector.0) != resp.initialization_vector_crc32c.0
        {
            return Err(response_corrupted());
        }
    }
    files::write_output(&c.ciphertext_file, &resp.ciphertext.0, false)?;
    if c.initialization_vector_file.is_none() && !resp.initialization_vector.is_empty() {
        let mut suffix = [0u8; 4];
        keyhold_crypto::random_bytes(&mut suffix).map_err(|e| CliError::Other(e.to_string()))?;
        let path = PathBuf::from(format!("./initialization_vector_{}", keyhold_crypto::hex(&suffix)));
        // A new file: an existing one is never overwritten.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, &resp.initialization_vector.0))
            .map_err(|e| CliError::Io(format!("Unable to write file [{}]: {e}", path.display())))?;
        eprintln!("The initialization vector was written to [{}]; raw-decrypt needs it.", path.display());
    }
    Ok(())
}

/// `kms raw-decrypt`.
pub async fn raw_decrypt(ctx: &Ctx, c: &RawDecryptArgs) -> Result<(), CliError> {
    one_stdin(&[
        Some(&c.ciphertext_file),
        c.additional_authenticated_data_file.as_ref(),
        Some(&c.initialization_vector_file),
    ])?;
    let name = c.target.name(ctx)?;
    let check = !c.target.skip_integrity_verification;
    let ciphertext = files::read_input(&c.ciphertext_file, MAX_PLAINTEXT + 16)?;
    let aad = read_optional(c.additional_authenticated_data_file.as_ref(), MAX_PLAINTEXT)?;
    let iv = files::read_input(&c.initialization_vector_file, 16)?;
    let req = RawDecryptRequest {
        name: String::new(),
        ciphertext_crc32c: check.then(|| Crc32c(crc32c(ciphertext.expose()))),
        additional_authenticated_data_crc32c: check.then(|| Crc32c(crc32c(&aad))),
        initialization_vector_crc32c: check.then(|| Crc32c(crc32c(iv.expose()))),
        ciphertext: Bytes(ciphertext.expose().to_vec()),
        additional_authenticated_data: Bytes(aad),
        initialization_vector: Bytes(iv.expose().to_vec()),
        tag_length: 0,
    };
    let resp: RawDecryptResponse =
        ctx.client.call(Method::POST, &format!("{name}:rawDecrypt"), &[], Some(body(&req)?)).await?;
    let plaintext = resp.plaintext.0.expose();
    if check {
        let verified = resp.verified_ciphertext_crc32c
            && resp.verified_additional_authenticated_data_crc32c
            && resp.verified_initialization_vector_crc32c;
        if !verified {
            return Err(CliError::Integrity(REQUEST_CORRUPTED.to_string()));
        }
        if crc32c(plaintext) != resp.plaintext_crc32c.0 {
            return Err(response_corrupted());
        }
    }
    files::write_output(&c.plaintext_file, plaintext, true)
}

/// `kms decapsulate`.
pub async fn decapsulate(ctx: &Ctx, c: &DecapsulateArgs) -> Result<(), CliError> {
    let name = c.target.name(ctx)?;
    let check = !c.target.skip_integrity_verification;
    let ciphertext = files::read_input(&c.ciphertext_file, MAX_PLAINTEXT)?;
    let req = DecapsulateRequest {
        name: String::new(),
        ciphertext_crc32c: check.then(|| Crc32c(crc32c(ciphertext.expose()))),
        ciphertext: Bytes(ciphertext.expose().to_vec()),
    };
    let resp: DecapsulateResponse =
        ctx.client.call(Method::POST, &format!("{name}:decapsulate"), &[], Some(body(&req)?)).await?;
    let secret = resp.shared_secret.0.expose();
    if check {
        if !resp.verified_ciphertext_crc32c {
            return Err(CliError::Integrity(REQUEST_CORRUPTED.to_string()));
        }
        if crc32c(secret) != resp.shared_secret_crc32c.0 {
            return Err(response_corrupted());
        }
    }
    files::write_output(&c.shared_secret_file, secret, true)
}

/// `kms keys versions get-public-key`.
pub async fn get_public_key(ctx: &Ctx, c: &GetPublicKeyArgs) -> Result<(), CliError> {
    let t = &c.target;
    let name = ctx
        .resources(t.parent.ring.location.as_deref(), t.parent.ring.keyring.as_deref(), t.parent.key.as_deref())
        .version_name(&t.version_id, "key")?;
    let format = match c.public_key_format {
        PublicKeyFormatArg::Pem => "PEM",
        PublicKeyFormatArg::Der => "DER",
        PublicKeyFormatArg::NistPqc => "NIST_PQC",
        PublicKeyFormatArg::XwingRawBytes => "XWING_RAW_BYTES",
    };
    let resp: PublicKey = ctx
        .client
        .call(Method::GET, &format!("{name}/publicKey"), &[("publicKeyFormat", format.to_string())], None)
        .await?;
    let Some(key) = resp.public_key else {
        return Err(CliError::Other(format!("the server sent no public key in format {format}")));
    };
    if crc32c(&key.data.0) != key.crc32c_checksum.0 {
        return Err(response_corrupted());
    }
    let out = c.output_file.clone().unwrap_or_else(|| PathBuf::from("-"));
    files::write_output(&out, &key.data.0, false)
}
