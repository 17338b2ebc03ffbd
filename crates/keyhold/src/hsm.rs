//! The PKCS#11 token ([`keyhold_hsm::HsmToken`]) as the KMS's HSM backend and, with
//! `--root-key pkcs11:...`, as its root key; and `keyhold hsm reconcile`, which finds the key
//! objects of the token that no version uses.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use async_trait::async_trait;
use keyhold_api::CryptoKeyVersionName;
use keyhold_api::resources::ProtectionLevel;
use keyhold_api::wire::ProtoDuration;
use keyhold_crypto::keys::{KeySpec, RawCiphertext};
use keyhold_crypto::{KeyBytes, Secret};
use keyhold_hsm::{HsmError, HsmKeyRef, HsmToken};
use keyhold_kms::repo::KmsRepository;
use keyhold_kms::root_key::RootKey;
use keyhold_kms::{BackendError, HsmBackend, HsmObjectRef, KeyOrigin, VersionMaterial};
use keyhold_sql::Database;

fn backend_error(e: HsmError) -> BackendError {
    match e {
        HsmError::KeyNotFound { key } => BackendError::KeyNotFound(format!("no object {key} in the token")),
        HsmError::Decrypt { .. } => BackendError::DecryptFailed,
        HsmError::InvalidInput { detail } => BackendError::InvalidInput(detail),
        // Module, token, session, login, configuration: nothing the caller can fix, and it may
        // pass (a token reinserted, a module restarted): 503, and CMEK services' grace period.
        other => BackendError::Unavailable(other.to_string()),
    }
}

fn key_ref(key: &HsmObjectRef) -> Result<HsmKeyRef, BackendError> {
    key.as_str().parse().map_err(|e: HsmError| BackendError::InvalidInput(format!("bad HSM key reference: {e}")))
}

/// HSM key versions live in this token.
#[derive(Debug, Clone)]
pub struct TokenBackend(pub HsmToken);

#[async_trait]
impl HsmBackend for TokenBackend {
    async fn generate_key(&self, label: &str) -> Result<HsmObjectRef, BackendError> {
        self.0.generate_key(label).await.map(|k| HsmObjectRef::new(k.to_string())).map_err(backend_error)
    }

    async fn import_key(&self, label: &str, material: &Secret) -> Result<HsmObjectRef, BackendError> {
        self.0.import_key(label, material).await.map(|k| HsmObjectRef::new(k.to_string())).map_err(backend_error)
    }

    async fn encrypt(&self, key: &HsmObjectRef, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, BackendError> {
        self.0.encrypt(&key_ref(key)?, plaintext, aad).await.map_err(backend_error)
    }

    async fn decrypt(&self, key: &HsmObjectRef, blob: &[u8], aad: &[u8]) -> Result<Secret, BackendError> {
        self.0.decrypt(&key_ref(key)?, blob, aad).await.map_err(backend_error)
    }

    async fn destroy_key(&self, key: &HsmObjectRef) -> Result<(), BackendError> {
        self.0.destroy_key(&key_ref(key)?).await.map_err(backend_error)
    }

    async fn random_bytes(&self, n: usize) -> Result<Secret, BackendError> {
        self.0.random_bytes(n).await.map_err(backend_error)
    }

    fn supports(&self, spec: KeySpec) -> bool {
        keyhold_hsm::supports(spec)
    }

    async fn generate_key_of(&self, spec: KeySpec, label: &str) -> Result<HsmObjectRef, BackendError> {
        self.0.generate_key_of(spec, label).await.map(|k| HsmObjectRef::new(k.to_string())).map_err(backend_error)
    }

    async fn import_key_of(&self, spec: KeySpec, label: &str, material: &Secret) -> Result<HsmObjectRef, BackendError> {
        self.0
            .import_key_of(spec, label, material)
            .await
            .map(|k| HsmObjectRef::new(k.to_string()))
            .map_err(backend_error)
    }

    async fn sign(&self, key: &HsmObjectRef, spec: KeySpec, input: &[u8]) -> Result<Vec<u8>, BackendError> {
        self.0.sign(&key_ref(key)?, spec, input).await.map_err(backend_error)
    }

    async fn decrypt_oaep(&self, key: &HsmObjectRef, spec: KeySpec, ciphertext: &[u8]) -> Result<Secret, BackendError> {
        self.0.decrypt_oaep(&key_ref(key)?, spec, ciphertext).await.map_err(backend_error)
    }

    async fn public_key(&self, key: &HsmObjectRef, spec: KeySpec) -> Result<Vec<u8>, BackendError> {
        self.0.public_key(&key_ref(key)?, spec).await.map_err(backend_error)
    }

    async fn raw_encrypt(
        &self,
        key: &HsmObjectRef,
        spec: KeySpec,
        plaintext: &[u8],
        aad: &[u8],
        iv: Option<&[u8]>,
    ) -> Result<RawCiphertext, BackendError> {
        self.0.raw_encrypt(&key_ref(key)?, spec, plaintext, aad, iv).await.map_err(backend_error)
    }

    async fn raw_decrypt(
        &self,
        key: &HsmObjectRef,
        spec: KeySpec,
        ciphertext: &[u8],
        aad: &[u8],
        iv: &[u8],
    ) -> Result<Secret, BackendError> {
        self.0.raw_decrypt(&key_ref(key)?, spec, ciphertext, aad, iv).await.map_err(backend_error)
    }

    async fn attestation(&self, key: &HsmObjectRef, origin: KeyOrigin) -> Result<String, BackendError> {
        let info = self.0.info().await.map_err(backend_error)?;
        let certified = if info.is_software_token() {
            "This is a software token, not a certified HSM: the key is non-extractable only as far as the software enforces it."
        } else {
            "Keyhold has no vendor attestation for this token; this statement is what the token reports about itself."
        };
        let how = match origin {
            KeyOrigin::Generated => {
                "Keyhold generated this key inside the PKCS#11 token with CKA_SENSITIVE=true and CKA_EXTRACTABLE=false;"
            }
            KeyOrigin::Imported => {
                "Keyhold imported this key: it unwrapped the key material from the import job's wrapping in its own memory (not in the token) and created the key in the PKCS#11 token with CKA_SENSITIVE=true and CKA_EXTRACTABLE=false, wiping its copy;"
            }
        };
        Ok(serde_json::json!({
            "statement": format!("{how} every operation with its private or secret part runs in the token. {certified}"),
            "origin": match origin { KeyOrigin::Generated => "GENERATED", KeyOrigin::Imported => "IMPORTED" },
            "keyObject": key.as_str(),
            "token": info.description(),
            "tokenLabel": info.token_label,
            "manufacturer": info.token_manufacturer,
            "model": info.model,
            "serialNumber": info.serial_number,
            "library": format!("{} {} ({})", info.library_description, info.library_version, info.library_manufacturer),
            "softwareToken": info.is_software_token(),
        })
        .to_string())
    }
}

/// A root key that never leaves the token: each SOFTWARE version's material is sealed by the
/// token's AES key (AES-GCM inside the token, bound to the version's name).
#[derive(Debug)]
pub struct TokenRootKey {
    token: HsmToken,
    key: HsmKeyRef,
    fingerprint: String,
}

impl TokenRootKey {
    /// Finds the object labelled `label` in the token, or generates it on first start.
    pub async fn open(token: HsmToken, label: &str) -> Result<Arc<Self>, HsmError> {
        let key = token.find_or_generate_key(label).await?;
        let info = token.info().await?;
        let fingerprint = format!("pkcs11:serial={};{}", info.serial_number, key);
        Ok(Arc::new(Self { token, key, fingerprint }))
    }
}

#[async_trait]
impl RootKey for TokenRootKey {
    async fn seal(&self, material: &KeyBytes, context: &str) -> Result<Vec<u8>, BackendError> {
        self.token.encrypt(&self.key, material.expose(), &root_aad(context)).await.map_err(backend_error)
    }

    async fn unseal(&self, sealed: &[u8], context: &str) -> Result<KeyBytes, BackendError> {
        let secret = self.token.decrypt(&self.key, sealed, &root_aad(context)).await.map_err(backend_error)?;
        KeyBytes::from_slice(secret.expose()).ok_or(BackendError::DecryptFailed)
    }

    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }
}

fn root_aad(context: &str) -> Vec<u8> {
    let mut aad = b"keyhold/root-key/v1:".to_vec();
    aad.extend_from_slice(context.as_bytes());
    aad
}

/// `--root-key pkcs11:object=LABEL`: the label of the root key's object in the configured token.
pub fn parse_root_key_uri(uri: &str) -> Result<String, String> {
    let rest =
        uri.strip_prefix("pkcs11:").ok_or_else(|| format!("--root-key {uri:?}: expected pkcs11:object=LABEL"))?;
    let label = rest
        .split(';')
        .find_map(|part| part.strip_prefix("object="))
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .ok_or_else(|| {
            format!("--root-key {uri:?}: expected pkcs11:object=LABEL (the token is --pkcs11-token-label)")
        })?;
    // A version's object (a raw AES-GCM key, whose users choose nonce and AAD) must never be
    // taken for the root key, nor the root key be listed among versions' objects.
    if label.starts_with(VERSION_LABEL_PREFIX) {
        return Err(format!(
            "--root-key {uri:?}: labels starting with {VERSION_LABEL_PREFIX:?} are the objects of key versions; name the root key otherwise"
        ));
    }
    Ok(label)
}

/// The label prefix of the objects Keyhold generates for key versions:
/// `keyhold:VERSION_NAME:RANDOM` (see `Kms::new_version_record`).
pub const VERSION_LABEL_PREFIX: &str = "keyhold:";

/// The version a key object was generated for, from its label; `None` for objects that are not
/// a Keyhold version's (the root key, anybody else's).
pub fn version_of_label(label: &str) -> Option<CryptoKeyVersionName> {
    let (name, suffix) = label.strip_prefix(VERSION_LABEL_PREFIX)?.rsplit_once(':')?;
    if suffix.is_empty() {
        return None;
    }
    name.parse().ok()
}

/// A key object in the token that no version of the database names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    /// The object.
    pub key: HsmKeyRef,
    /// The version its label names.
    pub version: String,
    /// Why it is orphaned.
    pub why: String,
}

/// What [`reconcile`] found (and did).
#[derive(Debug, Default)]
pub struct Reconciliation {
    /// Objects of versions that name them.
    pub live: usize,
    /// Objects no version names, still so after the grace period.
    pub orphans: Vec<Orphan>,
    /// HSM versions (not destroyed) whose object is not in the token: `(version, object)`.
    /// Reported, never changed: the database is the record, and the object may come back (a
    /// token restored from its backup).
    pub missing: Vec<(String, String)>,
    /// With `apply`: orphans destroyed.
    pub destroyed: Vec<HsmKeyRef>,
    /// With `apply`: orphans that could not be destroyed, and why.
    pub failed: Vec<(HsmKeyRef, String)>,
}

/// One look at the token, then the database: the version objects no version names.
async fn survey(token: &HsmToken, store: &dyn KmsRepository) -> Result<(usize, Vec<Orphan>), String> {
    let keys = token
        .list_keys(VERSION_LABEL_PREFIX)
        .await
        .map_err(|e| format!("cannot list the key objects of the token: {e}"))?;
    let mut live = 0;
    let mut orphans = Vec::new();
    for key in keys {
        let Some(version) = version_of_label(key.label()) else { continue };
        let stored = store
            .version(&version)
            .await
            .map_err(|e| format!("cannot read version {version} from the database: {e}"))?;
        let why = match stored {
            None => "no such version in the database".to_string(),
            Some(v) => {
                let named = match &v.material {
                    VersionMaterial::Hsm(object) => object.as_str().parse::<HsmKeyRef>().ok(),
                    _ => None,
                };
                match named {
                    Some(k) if k == key => {
                        live += 1;
                        continue;
                    }
                    Some(_) => "the version uses another object of the token".to_string(),
                    None => "the version has no key material (destroyed)".to_string(),
                }
            }
        };
        orphans.push(Orphan { key, version: version.to_string(), why });
    }
    Ok((live, orphans))
}

/// Compares the token's version objects with the database (issue 15, finding 10).
///
/// An object is orphaned when no version names it. A version being created on another node
/// has its object before its row, so an object is only called orphaned if it is so in a first
/// look and still so after `grace`: any create in flight has committed or failed by then.
/// With `apply`, orphans are destroyed (they cannot hold data: no ciphertext can name them).
/// HSM versions whose object is missing are reported only.
pub async fn reconcile(
    token: &HsmToken,
    store: &dyn KmsRepository,
    grace: std::time::Duration,
    apply: bool,
) -> Result<Reconciliation, String> {
    let (mut live, mut orphans) = survey(token, store).await?;
    if !orphans.is_empty() && !grace.is_zero() {
        tokio::time::sleep(grace).await;
        let (live_now, again) = survey(token, store).await?;
        orphans.retain(|o| again.iter().any(|a| a.key == o.key));
        live = live_now;
    }
    let mut missing = Vec::new();
    let versions =
        store.list_all_versions().await.map_err(|e| format!("cannot list the versions in the database: {e}"))?;
    for v in versions {
        if v.version.protection_level != Some(ProtectionLevel::Hsm) {
            continue;
        }
        let VersionMaterial::Hsm(object) = &v.material else { continue };
        let object = object.as_str();
        let Ok(key) = object.parse::<HsmKeyRef>() else {
            missing.push((v.name.to_string(), format!("{object} (not a valid object reference)")));
            continue;
        };
        let exists = token.key_exists(&key).await.map_err(|e| format!("cannot look up {key} in the token: {e}"))?;
        if !exists {
            missing.push((v.name.to_string(), key.to_string()));
        }
    }
    let mut report = Reconciliation { live, orphans, missing, ..Default::default() };
    if apply {
        for o in &report.orphans {
            match token.destroy_key(&o.key).await {
                Ok(()) | Err(HsmError::KeyNotFound { .. }) => {
                    tracing::info!(object = %o.key, version = %o.version, why = %o.why, "destroyed an orphaned HSM key object");
                    report.destroyed.push(o.key.clone());
                }
                Err(e) => report.failed.push((o.key.clone(), e.to_string())),
            }
        }
    }
    Ok(report)
}

/// At start (`keyhold serve` with an HSM): reconciles in the background and logs what it finds,
/// changing nothing. Destroying key material is irreversible and a database restored from an
/// older backup makes newer versions' objects look orphaned, so only the operator destroys
/// orphans (`keyhold hsm reconcile --apply`); the usual orphan, a failed insert, is destroyed
/// on the spot by the KMS.
pub fn spawn_startup_check(token: HsmToken, store: Arc<dyn KmsRepository>, grace: std::time::Duration) {
    tokio::spawn(async move {
        match reconcile(&token, store.as_ref(), grace, false).await {
            Ok(r) => {
                for o in &r.orphans {
                    tracing::warn!(
                        object = %o.key, version = %o.version, why = %o.why,
                        "orphaned HSM key object: no version uses it; review and remove with `keyhold hsm reconcile --apply` \
                         (docs/operations.md, \"HSM reconciliation\")"
                    );
                }
                for (version, object) in &r.missing {
                    tracing::error!(
                        %version, %object,
                        "the HSM key object of this version is missing from the token: the version cannot encrypt or \
                         decrypt (was the token restored from an older backup?)"
                    );
                }
                tracing::info!(
                    live = r.live,
                    orphaned = r.orphans.len(),
                    missing = r.missing.len(),
                    "HSM reconciliation at start: done"
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "HSM reconciliation at start could not run; run `keyhold hsm reconcile`")
            }
        }
    });
}

/// `keyhold hsm`.
#[derive(clap::Args, Debug)]
pub struct HsmArgs {
    #[command(subcommand)]
    command: HsmCommand,
}

#[derive(clap::Subcommand, Debug)]
enum HsmCommand {
    /// Compare the token's key objects with the database's versions: list objects no version
    /// uses (orphans) and HSM versions whose object is missing. Changes nothing unless --apply
    /// is given, which destroys the orphans. Exits 0 when the token and the database agree
    /// (or, with --apply, once every orphan is destroyed), 1 otherwise.
    Reconcile(ReconcileArgs),
}

#[derive(clap::Args, Debug)]
struct ReconcileArgs {
    /// The server's data directory, holding keyhold.db (as for `keyhold serve`).
    #[arg(long, default_value = "./keyhold-data", env = "KEYHOLD_DATA_DIR")]
    data_dir: PathBuf,
    /// PostgreSQL URL instead of the SQLite file (as for `keyhold serve`).
    #[arg(long, env = "KEYHOLD_DATABASE", hide_env_values = true)]
    database: Option<String>,
    /// The PKCS#11 module (as for `keyhold serve`).
    #[arg(long, env = "KEYHOLD_PKCS11_MODULE")]
    pkcs11_module: PathBuf,
    /// The token's label (as for `keyhold serve`).
    #[arg(long, env = "KEYHOLD_PKCS11_TOKEN_LABEL")]
    pkcs11_token_label: String,
    /// A file holding the token's user PIN; without it, KEYHOLD_PKCS11_PIN.
    #[arg(long, env = "KEYHOLD_PKCS11_PIN_FILE")]
    pkcs11_pin_file: Option<PathBuf>,
    /// An object is orphaned only if it still is after this long (a version being created on
    /// another node has its object a moment before its row).
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    grace: ProtoDuration,
    /// Destroy the orphaned objects (irreversible). Without it, only list them.
    #[arg(long)]
    apply: bool,
}

fn parse_duration(s: &str) -> Result<ProtoDuration, String> {
    ProtoDuration::parse(s).ok_or_else(|| format!("\"{s}\" is not a duration like \"120s\""))
}

/// Opens the token as `keyhold serve` does.
pub fn open_token(
    module: &std::path::Path,
    label: &str,
    pin_file: Option<&std::path::Path>,
) -> Result<HsmToken, String> {
    let pin = match pin_file {
        Some(file) => keyhold_hsm::PinSource::File(file.to_path_buf()),
        None => keyhold_hsm::PinSource::Env("KEYHOLD_PKCS11_PIN".into()),
    }
    .read()
    .map_err(|e| e.to_string())?;
    Ok(HsmToken::new(keyhold_hsm::Pkcs11Config::new(module, label, pin)))
}

/// Runs `keyhold hsm ...`.
pub async fn run(args: HsmArgs) -> ExitCode {
    let HsmCommand::Reconcile(a) = args.command;
    match reconcile_command(&a).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("ERROR: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn reconcile_command(a: &ReconcileArgs) -> Result<bool, String> {
    let db = match a.database.as_deref().map(str::trim).filter(|d| !d.is_empty()) {
        Some(url) => Database::Postgres(url.to_string()),
        None => {
            let file = a.data_dir.join("keyhold.db");
            // Opening a missing file would create an empty database, where every object looks
            // orphaned.
            if !file.is_file() {
                return Err(format!(
                    "there is no Keyhold database at {}: give the server's --data-dir, or --database",
                    file.display()
                ));
            }
            Database::SqliteFile(file)
        }
    };
    let store = keyhold_sql::open_read_only(&db).await.map_err(|e| format!("cannot open the database: {e}"))?;
    let token = open_token(&a.pkcs11_module, &a.pkcs11_token_label, a.pkcs11_pin_file.as_deref())?;
    token.info().await.map_err(|e| format!("cannot reach the token: {e}"))?;
    let grace = a.grace.to_std();
    if !grace.is_zero() {
        eprintln!(
            "Looking twice, {}s apart, so that a version being created is not taken for an orphan...",
            grace.as_secs()
        );
    }
    let r = reconcile(&token, store.as_ref(), grace, a.apply).await?;
    println!("{} key objects in use by versions.", r.live);
    if r.orphans.is_empty() {
        println!("No orphaned key objects.");
    } else {
        println!("{} orphaned key objects (no version uses them):", r.orphans.len());
        for o in &r.orphans {
            let done = if r.destroyed.contains(&o.key) { "  [destroyed]" } else { "" };
            println!("  {}  version {}: {}{done}", o.key, o.version, o.why);
        }
        if !a.apply {
            println!("Nothing was changed; run again with --apply to destroy them.");
        }
    }
    for (key, e) in &r.failed {
        println!("  could not destroy {key}: {e}");
    }
    if !r.missing.is_empty() {
        println!("{} HSM versions whose key object is missing from the token (not changed):", r.missing.len());
        for (version, object) in &r.missing {
            println!("  {version}: {object}");
        }
    }
    let orphans_left = r.orphans.len() - r.destroyed.len();
    Ok(orphans_left == 0 && r.missing.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_key_uris() {
        assert_eq!(parse_root_key_uri("pkcs11:object=keyhold-root").unwrap(), "keyhold-root");
        assert_eq!(parse_root_key_uri("pkcs11:token=t;object=r").unwrap(), "r");
        assert!(parse_root_key_uri("pkcs11:token=t").is_err());
        assert!(parse_root_key_uri("file:/x").is_err());
        assert!(parse_root_key_uri("pkcs11:object=keyhold:projects/p/x:1").unwrap_err().contains("key versions"));
    }

    #[test]
    fn version_objects_are_recognized_by_label() {
        let v = "projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/3";
        assert_eq!(version_of_label(&format!("keyhold:{v}:0123abcd")).unwrap().to_string(), v);
        for other in ["keyhold-root", "keyhold:", &format!("keyhold:{v}"), &format!("keyhold:{v}:"), "keyhold:x:1", v] {
            assert!(version_of_label(other).is_none(), "{other}");
        }
    }

    #[test]
    fn hsm_errors_map_to_kms_outcomes() {
        let down = backend_error(HsmError::Unavailable { detail: "token removed".into() });
        assert!(matches!(down, BackendError::Unavailable(_)));
        assert_eq!(backend_error(HsmError::Decrypt { reason: "tag" }), BackendError::DecryptFailed);
        assert!(matches!(backend_error(HsmError::KeyNotFound { key: "k".into() }), BackendError::KeyNotFound(_)));
    }
}
