//! `keyhold kms ...`: the command tree of `gcloud kms`, word for word, and what each command
//! sends to the server.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use keyhold_api::messages::{DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse};
use keyhold_api::resources::{
    AccessReason, Algorithm, CryptoKey, KeyAccessJustificationsPolicy, Purpose, VersionTemplate,
};
use keyhold_api::wire::{Bytes, Crc32c, ProtoDuration, SecretBytes, Timestamp};
use keyhold_crypto::crc32c;

use super::client::ListOptions;
use super::files::{self, MAX_CIPHERTEXT, MAX_PLAINTEXT};
use super::iam::{self, BindingFlags, IamSubject, PolicyFileArg};
use super::import::{self, ImportJobsArgs, ImportJobsCommand, VersionImport};
use super::key_ops::{
    self, AsymmetricDecryptArgs, AsymmetricSignArgs, DecapsulateArgs, GetPublicKeyArgs, MacSignArgs, MacVerifyArgs,
    RawDecryptArgs, RawEncryptArgs,
};
use super::output::Kind;
use super::parse::{
    Labels, ProtectionLevelArg, PurposeArg, algorithm_fits_purpose, algorithms_for, apply_label_changes, kebab,
    merge_labels, order_by, parse_access_reason, parse_algorithm, parse_duration, parse_labels, parse_time,
    parse_version_id,
};
use super::{CliError, Ctx};

/// `keyhold kms`.
#[derive(Args, Debug)]
pub struct KmsArgs {
    /// The command.
    #[command(subcommand)]
    pub command: KmsCommand,
}

/// The groups and commands under `keyhold kms`.
#[derive(Subcommand, Debug)]
pub enum KmsCommand {
    /// Explore the locations where key rings can be created.
    Locations(LocationsArgs),
    /// Create and manage key rings.
    Keyrings(KeyRingsArgs),
    /// Create and manage keys and their versions.
    Keys(KeysArgs),
    /// Encrypt a plaintext file using a key.
    Encrypt(EncryptArgs),
    /// Decrypt a ciphertext file using a key.
    Decrypt(DecryptArgs),
    /// Sign a file (or its digest) with an asymmetric signing key version.
    AsymmetricSign(AsymmetricSignArgs),
    /// Decrypt a file encrypted (RSA-OAEP) to an asymmetric decryption key version's public key.
    AsymmetricDecrypt(AsymmetricDecryptArgs),
    /// Compute the MAC (HMAC) of a file with a MAC key version.
    MacSign(MacSignArgs),
    /// Check the MAC of a file with a MAC key version.
    MacVerify(MacVerifyArgs),
    /// Encrypt a file with a raw AES key version (AES-GCM, AES-CBC, AES-CTR).
    RawEncrypt(RawEncryptArgs),
    /// Decrypt a file with a raw AES key version.
    RawDecrypt(RawDecryptArgs),
    /// Recover the shared secret of a KEM ciphertext with a key encapsulation (ML-KEM) version.
    Decapsulate(DecapsulateArgs),
    /// Create and manage import jobs, which keys are imported with.
    ImportJobs(ImportJobsArgs),
    /// What keys protect: resources and the key versions protecting them (Cloud KMS Inventory).
    Inventory(InventoryArgs),
}

/// `keyhold kms inventory`.
#[derive(Args, Debug)]
pub struct InventoryArgs {
    #[command(subcommand)]
    pub command: InventoryCommand,
}

/// `keyhold kms inventory ...`.
#[derive(Subcommand, Debug)]
pub enum InventoryCommand {
    /// How many resources a key protects, by type, product and location.
    GetProtectedResourcesSummary(InventoryKey),
    /// The resources a key protects in a project and the versions protecting each; with
    /// --version N only those version N still protects (safe to destroy when there are none).
    SearchProtectedResources(InventorySearch),
}

/// `--keyname`.
#[derive(Args, Debug)]
pub struct InventoryKey {
    /// The key: an ID (with --keyring and --location), or projects/P/locations/L/keyRings/R/cryptoKeys/K.
    #[arg(long, value_name = "KEY")]
    pub keyname: String,
    #[command(flatten)]
    pub ring: KeyRingFlags,
}

/// `keyhold kms inventory search-protected-resources`.
#[derive(Args, Debug)]
pub struct InventorySearch {
    #[command(flatten)]
    pub key: InventoryKey,
    /// Where to look: projects/P (default: the key's project).
    #[arg(long, value_name = "SCOPE")]
    pub scope: Option<String>,
    /// Only resources this version (an ID or a full version name) still protects.
    #[arg(long, value_name = "VERSION")]
    pub version: Option<String>,
}

// ---- shared flags ---------------------------------------------------------------------------

/// `--location`.
#[derive(Args, Debug, Clone)]
pub struct LocationFlag {
    /// Location of the key ring (`global`, `us-central1`, ...). Not needed when a full resource
    /// name is given.
    #[arg(long, value_name = "LOCATION")]
    pub location: Option<String>,
}

/// `--keyring` and `--location`.
#[derive(Args, Debug, Clone)]
pub struct KeyRingFlags {
    /// The key ring: an ID, or a full name projects/P/locations/L/keyRings/R.
    #[arg(long, value_name = "KEY_RING")]
    pub keyring: Option<String>,
    /// Location of the key ring (`global`, `us-central1`, ...). Not needed when a full resource
    /// name is given.
    #[arg(long, value_name = "LOCATION")]
    pub location: Option<String>,
}

/// `--key`, `--keyring` and `--location`.
#[derive(Args, Debug, Clone)]
pub struct KeyFlags {
    /// The key: an ID, or a full name projects/P/locations/L/keyRings/R/cryptoKeys/K.
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    #[command(flatten)]
    pub ring: KeyRingFlags,
}

/// The flags gcloud's list commands share.
#[derive(Args, Debug, Clone, Default)]
pub struct ListFlags {
    /// Only list resources matching this Cloud KMS filter, e.g. `labels.env=prod` or
    /// `state=ENABLED`.
    #[arg(long, value_name = "EXPRESSION")]
    pub filter: Option<String>,
    /// Sort by this field; prefix it with `~` for descending order (`--sort-by=~createTime`).
    #[arg(long, value_name = "FIELD", value_delimiter = ',')]
    pub sort_by: Vec<String>,
    /// List at most this many resources.
    #[arg(long, value_name = "LIMIT")]
    pub limit: Option<usize>,
    /// Ask the server for pages of this size (every page is fetched).
    #[arg(long, value_name = "PAGE_SIZE", value_parser = clap::value_parser!(u32).range(1..))]
    pub page_size: Option<u32>,
    /// Print the URI of each resource instead of the resource.
    #[arg(long)]
    pub uri: bool,
}

impl ListFlags {
    pub(super) fn options(&self) -> ListOptions {
        ListOptions {
            page_size: self.page_size,
            filter: self.filter.clone(),
            order_by: order_by(&self.sort_by),
            limit: self.limit,
        }
    }
}

// ---- locations ------------------------------------------------------------------------------

/// `keyhold kms locations`.
#[derive(Args, Debug)]
pub struct LocationsArgs {
    /// The command.
    #[command(subcommand)]
    pub command: LocationsCommand,
}

/// Commands under `keyhold kms locations`.
#[derive(Subcommand, Debug)]
pub enum LocationsCommand {
    /// List the locations available to the project.
    List(LocationsList),
    /// Show one location.
    Describe(LocationsDescribe),
}

/// `keyhold kms locations list`.
#[derive(Args, Debug)]
pub struct LocationsList {
    #[command(flatten)]
    pub list: ListFlags,
}

/// `keyhold kms locations describe`.
#[derive(Args, Debug)]
pub struct LocationsDescribe {
    /// The location ID, or its full name projects/P/locations/L.
    #[arg(value_name = "LOCATION")]
    pub location_id: String,
}

// ---- key rings ------------------------------------------------------------------------------

/// `keyhold kms keyrings`.
#[derive(Args, Debug)]
pub struct KeyRingsArgs {
    /// The command.
    #[command(subcommand)]
    pub command: KeyRingsCommand,
}

/// Commands under `keyhold kms keyrings`.
#[derive(Subcommand, Debug)]
pub enum KeyRingsCommand {
    /// Create a new key ring.
    Create(KeyRingTarget),
    /// List the key rings in a location.
    List(KeyRingList),
    /// Show a key ring.
    Describe(KeyRingTarget),
    /// Grant a role to a principal on a key ring.
    AddIamPolicyBinding(KeyRingBinding),
    /// Revoke a role from a principal on a key ring.
    RemoveIamPolicyBinding(KeyRingBinding),
    /// Show the IAM policy of a key ring.
    GetIamPolicy(KeyRingTarget),
    /// Replace the IAM policy of a key ring with one read from a JSON or YAML file.
    SetIamPolicy(KeyRingSetPolicy),
}

/// A command on one key ring.
#[derive(Args, Debug)]
pub struct KeyRingTarget {
    /// The key ring ID, or its full name projects/P/locations/L/keyRings/R.
    #[arg(value_name = "KEY_RING")]
    pub key_ring_id: String,
    #[command(flatten)]
    pub location: LocationFlag,
}

/// `keyhold kms keyrings add-iam-policy-binding` / `remove-iam-policy-binding`.
#[derive(Args, Debug)]
pub struct KeyRingBinding {
    #[command(flatten)]
    pub target: KeyRingTarget,
    #[command(flatten)]
    pub binding: BindingFlags,
}

/// `keyhold kms keyrings set-iam-policy`.
#[derive(Args, Debug)]
pub struct KeyRingSetPolicy {
    #[command(flatten)]
    pub target: KeyRingTarget,
    #[command(flatten)]
    pub file: PolicyFileArg,
}

/// `keyhold kms keyrings list`.
#[derive(Args, Debug)]
pub struct KeyRingList {
    #[command(flatten)]
    pub location: LocationFlag,
    #[command(flatten)]
    pub list: ListFlags,
}

// ---- keys -----------------------------------------------------------------------------------

/// `keyhold kms keys`.
#[derive(Args, Debug)]
pub struct KeysArgs {
    /// The command.
    #[command(subcommand)]
    pub command: KeysCommand,
}

/// Commands under `keyhold kms keys`.
#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a new key.
    Create(KeyCreate),
    /// List the keys in a key ring.
    List(KeyList),
    /// Show a key.
    Describe(KeyTarget),
    /// Update a key: rotation schedule, labels, primary version, default algorithm, Key Access
    /// Justifications policy.
    Update(KeyUpdate),
    /// Make a version the key's primary version.
    SetPrimaryVersion(KeySetPrimaryVersion),
    /// Delete a key whose versions are all deleted; its name is never used again.
    Delete(KeyTarget),
    /// Create and manage the versions of a key.
    Versions(VersionsArgs),
    /// Grant a role to a principal on a key.
    AddIamPolicyBinding(KeyBinding),
    /// Revoke a role from a principal on a key.
    RemoveIamPolicyBinding(KeyBinding),
    /// Show the IAM policy of a key.
    GetIamPolicy(KeyTarget),
    /// Replace the IAM policy of a key with one read from a JSON or YAML file.
    SetIamPolicy(KeySetPolicy),
}

/// A command on one key.
#[derive(Args, Debug)]
pub struct KeyTarget {
    /// The key ID, or its full name projects/P/locations/L/keyRings/R/cryptoKeys/K.
    #[arg(value_name = "KEY")]
    pub key_id: String,
    #[command(flatten)]
    pub ring: KeyRingFlags,
}

/// `keyhold kms keys add-iam-policy-binding` / `remove-iam-policy-binding`.
#[derive(Args, Debug)]
pub struct KeyBinding {
    #[command(flatten)]
    pub target: KeyTarget,
    #[command(flatten)]
    pub binding: BindingFlags,
}

/// `keyhold kms keys set-iam-policy`.
#[derive(Args, Debug)]
pub struct KeySetPolicy {
    #[command(flatten)]
    pub target: KeyTarget,
    #[command(flatten)]
    pub file: PolicyFileArg,
}

/// `keyhold kms keys create`.
#[derive(Args, Debug)]
pub struct KeyCreate {
    #[command(flatten)]
    pub target: KeyTarget,
    /// What the key is for.
    #[arg(long, value_enum)]
    pub purpose: PurposeArg,
    /// Where the material of the key's versions lives.
    #[arg(long, value_enum)]
    pub protection_level: Option<ProtectionLevelArg>,
    /// The algorithm of new versions (`google-symmetric-encryption`, `aes-256-gcm`,
    /// `hmac-sha256`, ...). Required unless --purpose=encryption.
    #[arg(long, value_name = "ALGORITHM", value_parser = parse_algorithm)]
    pub default_algorithm: Option<Algorithm>,
    /// Automatic rotation period, e.g. 30d, 12h, 86400s.
    #[arg(long, value_name = "ROTATION_PERIOD", value_parser = parse_duration)]
    pub rotation_period: Option<ProtoDuration>,
    /// Next automatic rotation, e.g. 2026-12-01T00:00:00Z or +30d.
    #[arg(long, value_name = "NEXT_ROTATION_TIME", value_parser = parse_time)]
    pub next_rotation_time: Option<Timestamp>,
    /// Labels, as KEY=VALUE pairs separated by commas.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_labels)]
    pub labels: Vec<Labels>,
    /// How long versions stay scheduled for destruction before being destroyed, e.g. 1d.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub destroy_scheduled_duration: Option<ProtoDuration>,
    /// Create the key without a first version.
    #[arg(long)]
    pub skip_initial_version_creation: bool,
    /// Restrict the key to imported versions.
    #[arg(long)]
    pub import_only: bool,
    /// The EKM connection of an `external-vpc` key.
    #[arg(long, value_name = "CRYPTO_KEY_BACKEND")]
    pub crypto_key_backend: Option<String>,
    /// The access reasons allowed by the Key Access Justifications policy, separated by commas
    /// (`customer-initiated-access,...`).
    #[arg(long, value_name = "REASONS", value_delimiter = ',', value_parser = parse_access_reason)]
    pub allowed_access_reasons: Vec<AccessReason>,
}

/// `keyhold kms keys list`.
#[derive(Args, Debug)]
pub struct KeyList {
    #[command(flatten)]
    pub ring: KeyRingFlags,
    #[command(flatten)]
    pub list: ListFlags,
}

/// `keyhold kms keys update`.
#[derive(Args, Debug)]
pub struct KeyUpdate {
    #[command(flatten)]
    pub target: KeyTarget,
    /// New automatic rotation period, e.g. 30d.
    #[arg(long, value_name = "ROTATION_PERIOD", value_parser = parse_duration)]
    pub rotation_period: Option<ProtoDuration>,
    /// New next rotation time, e.g. 2026-12-01T00:00:00Z or +30d.
    #[arg(long, value_name = "NEXT_ROTATION_TIME", value_parser = parse_time)]
    pub next_rotation_time: Option<Timestamp>,
    /// Stop rotating the key automatically.
    #[arg(long, conflicts_with_all = ["rotation_period", "next_rotation_time"])]
    pub remove_rotation_schedule: bool,
    /// Labels to add or overwrite, as KEY=VALUE pairs separated by commas.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_labels)]
    pub update_labels: Vec<Labels>,
    /// Label keys to remove, separated by commas.
    #[arg(long, value_name = "KEY", value_delimiter = ',')]
    pub remove_labels: Vec<String>,
    /// Remove every label (then apply --update-labels).
    #[arg(long, conflicts_with = "remove_labels")]
    pub clear_labels: bool,
    /// Make this version the primary version.
    #[arg(long, value_name = "VERSION", value_parser = parse_version_id)]
    pub primary_version: Option<u64>,
    /// New algorithm for new versions.
    #[arg(long, value_name = "ALGORITHM", value_parser = parse_algorithm)]
    pub default_algorithm: Option<Algorithm>,
    /// Replace the Key Access Justifications policy with one allowing these reasons.
    #[arg(long, value_name = "REASONS", value_delimiter = ',', value_parser = parse_access_reason)]
    pub allowed_access_reasons: Vec<AccessReason>,
    /// Remove the Key Access Justifications policy (every reason allowed).
    #[arg(long, conflicts_with = "allowed_access_reasons")]
    pub remove_key_access_justifications_policy: bool,
}

/// `keyhold kms keys set-primary-version`.
#[derive(Args, Debug)]
#[command(disable_version_flag = true)]
pub struct KeySetPrimaryVersion {
    #[command(flatten)]
    pub target: KeyTarget,
    /// The version to make primary.
    #[arg(long, value_name = "VERSION", value_parser = parse_version_id)]
    pub version: u64,
}

// ---- versions -------------------------------------------------------------------------------

/// `keyhold kms keys versions`.
#[derive(Args, Debug)]
pub struct VersionsArgs {
    /// The command.
    #[command(subcommand)]
    pub command: VersionsCommand,
}

/// Commands under `keyhold kms keys versions`.
#[derive(Subcommand, Debug)]
pub enum VersionsCommand {
    /// Create a new version of a key.
    Create(VersionCreate),
    /// List the versions of a key.
    List(VersionList),
    /// Show a version.
    Describe(VersionTarget),
    /// Enable a disabled version.
    Enable(VersionTarget),
    /// Disable a version.
    Disable(VersionTarget),
    /// Schedule a version for destruction.
    Destroy(VersionTarget),
    /// Cancel the scheduled destruction of a version (it is restored disabled).
    Restore(VersionTarget),
    /// Write the public key of an asymmetric key version (PEM or DER).
    GetPublicKey(GetPublicKeyArgs),
    /// Import a key (wrapped here for the import job, or wrapped already) as a new version, or
    /// into a destroyed imported version.
    Import(VersionImport),
    /// Delete a version whose material is gone (DESTROYED, IMPORT_FAILED or GENERATION_FAILED;
    /// not one holding imported material) for good.
    Delete(VersionTarget),
}

/// `keyhold kms keys versions create`.
#[derive(Args, Debug)]
pub struct VersionCreate {
    #[command(flatten)]
    pub parent: KeyFlags,
    /// Also make the new version the key's primary version.
    #[arg(long)]
    pub primary: bool,
}

/// `keyhold kms keys versions list`.
#[derive(Args, Debug)]
pub struct VersionList {
    #[command(flatten)]
    pub parent: KeyFlags,
    #[command(flatten)]
    pub list: ListFlags,
}

/// A command on one version.
#[derive(Args, Debug)]
pub struct VersionTarget {
    /// The version ID (`1`), or its full resource name.
    #[arg(value_name = "VERSION")]
    pub version_id: String,
    #[command(flatten)]
    pub parent: KeyFlags,
}

// ---- encrypt / decrypt ----------------------------------------------------------------------

/// `keyhold kms encrypt`.
#[derive(Args, Debug)]
#[command(disable_version_flag = true)]
pub struct EncryptArgs {
    /// The key: an ID, or a full name projects/P/locations/L/keyRings/R/cryptoKeys/K.
    #[arg(long, value_name = "KEY")]
    pub key: String,
    #[command(flatten)]
    pub ring: KeyRingFlags,
    /// Encrypt with this version instead of the primary.
    #[arg(long, value_name = "VERSION")]
    pub version: Option<String>,
    /// File to encrypt (`-` for standard input); at most 64 KiB.
    #[arg(long, value_name = "PATH")]
    pub plaintext_file: PathBuf,
    /// File to write the ciphertext to (`-` for standard output).
    #[arg(long, value_name = "PATH")]
    pub ciphertext_file: PathBuf,
    /// File holding additional authenticated data (`-` for standard input); at most 64 KiB.
    #[arg(long, value_name = "PATH")]
    pub additional_authenticated_data_file: Option<PathBuf>,
    /// Do not send or check CRC32C checksums.
    #[arg(long)]
    pub skip_integrity_verification: bool,
}

/// `keyhold kms decrypt`.
#[derive(Args, Debug)]
pub struct DecryptArgs {
    /// The key: an ID, or a full name projects/P/locations/L/keyRings/R/cryptoKeys/K.
    #[arg(long, value_name = "KEY")]
    pub key: String,
    #[command(flatten)]
    pub ring: KeyRingFlags,
    /// File to decrypt (`-` for standard input).
    #[arg(long, value_name = "PATH")]
    pub ciphertext_file: PathBuf,
    /// File to write the plaintext to (`-` for standard output); created readable by its owner
    /// only.
    #[arg(long, value_name = "PATH")]
    pub plaintext_file: PathBuf,
    /// File holding the additional authenticated data given to encrypt (`-` for standard input).
    #[arg(long, value_name = "PATH")]
    pub additional_authenticated_data_file: Option<PathBuf>,
    /// Do not send or check CRC32C checksums.
    #[arg(long)]
    pub skip_integrity_verification: bool,
}

// ---- dispatch -------------------------------------------------------------------------------

impl KmsCommand {
    /// The command's path below `keyhold`, as gcloud names it in errors (`kms.keys.create`).
    pub fn path(&self) -> String {
        let tail = match self {
            KmsCommand::Locations(a) => match a.command {
                LocationsCommand::List(_) => "locations.list",
                LocationsCommand::Describe(_) => "locations.describe",
            },
            KmsCommand::Keyrings(a) => match a.command {
                KeyRingsCommand::Create(_) => "keyrings.create",
                KeyRingsCommand::List(_) => "keyrings.list",
                KeyRingsCommand::Describe(_) => "keyrings.describe",
                KeyRingsCommand::AddIamPolicyBinding(_) => "keyrings.add-iam-policy-binding",
                KeyRingsCommand::RemoveIamPolicyBinding(_) => "keyrings.remove-iam-policy-binding",
                KeyRingsCommand::GetIamPolicy(_) => "keyrings.get-iam-policy",
                KeyRingsCommand::SetIamPolicy(_) => "keyrings.set-iam-policy",
            },
            KmsCommand::Keys(a) => match &a.command {
                KeysCommand::Create(_) => "keys.create",
                KeysCommand::List(_) => "keys.list",
                KeysCommand::Describe(_) => "keys.describe",
                KeysCommand::Update(_) => "keys.update",
                KeysCommand::SetPrimaryVersion(_) => "keys.set-primary-version",
                KeysCommand::Delete(_) => "keys.delete",
                KeysCommand::AddIamPolicyBinding(_) => "keys.add-iam-policy-binding",
                KeysCommand::RemoveIamPolicyBinding(_) => "keys.remove-iam-policy-binding",
                KeysCommand::GetIamPolicy(_) => "keys.get-iam-policy",
                KeysCommand::SetIamPolicy(_) => "keys.set-iam-policy",
                KeysCommand::Versions(v) => match v.command {
                    VersionsCommand::Create(_) => "keys.versions.create",
                    VersionsCommand::List(_) => "keys.versions.list",
                    VersionsCommand::Describe(_) => "keys.versions.describe",
                    VersionsCommand::Enable(_) => "keys.versions.enable",
                    VersionsCommand::Disable(_) => "keys.versions.disable",
                    VersionsCommand::Destroy(_) => "keys.versions.destroy",
                    VersionsCommand::Restore(_) => "keys.versions.restore",
                    VersionsCommand::GetPublicKey(_) => "keys.versions.get-public-key",
                    VersionsCommand::Import(_) => "keys.versions.import",
                    VersionsCommand::Delete(_) => "keys.versions.delete",
                },
            },
            KmsCommand::Encrypt(_) => "encrypt",
            KmsCommand::Decrypt(_) => "decrypt",
            KmsCommand::AsymmetricSign(_) => "asymmetric-sign",
            KmsCommand::AsymmetricDecrypt(_) => "asymmetric-decrypt",
            KmsCommand::MacSign(_) => "mac-sign",
            KmsCommand::MacVerify(_) => "mac-verify",
            KmsCommand::RawEncrypt(_) => "raw-encrypt",
            KmsCommand::RawDecrypt(_) => "raw-decrypt",
            KmsCommand::Decapsulate(_) => "decapsulate",
            KmsCommand::ImportJobs(a) => match a.command {
                ImportJobsCommand::Create(_) => "import-jobs.create",
                ImportJobsCommand::Describe(_) => "import-jobs.describe",
                ImportJobsCommand::List(_) => "import-jobs.list",
            },
            KmsCommand::Inventory(a) => match a.command {
                InventoryCommand::GetProtectedResourcesSummary(_) => "inventory.get-protected-resources-summary",
                InventoryCommand::SearchProtectedResources(_) => "inventory.search-protected-resources",
            },
        };
        format!("kms.{tail}")
    }

    /// Runs the command.
    pub async fn run(self, ctx: &Ctx) -> Result<(), CliError> {
        match self {
            KmsCommand::Locations(a) => match a.command {
                LocationsCommand::List(c) => locations_list(ctx, &c).await,
                LocationsCommand::Describe(c) => locations_describe(ctx, &c).await,
            },
            KmsCommand::Keyrings(a) => match a.command {
                KeyRingsCommand::Create(c) => keyrings_create(ctx, &c).await,
                KeyRingsCommand::List(c) => keyrings_list(ctx, &c).await,
                KeyRingsCommand::Describe(c) => keyrings_describe(ctx, &c).await,
                KeyRingsCommand::AddIamPolicyBinding(c) => {
                    iam::add_binding(ctx, &key_ring_subject(ctx, &c.target)?, &c.binding).await
                }
                KeyRingsCommand::RemoveIamPolicyBinding(c) => {
                    iam::remove_binding(ctx, &key_ring_subject(ctx, &c.target)?, &c.binding).await
                }
                KeyRingsCommand::GetIamPolicy(c) => iam::get_policy(ctx, &key_ring_subject(ctx, &c)?).await,
                KeyRingsCommand::SetIamPolicy(c) => {
                    iam::set_policy(ctx, &key_ring_subject(ctx, &c.target)?, &c.file.policy_file).await
                }
            },
            KmsCommand::Keys(a) => match a.command {
                KeysCommand::Create(c) => keys_create(ctx, &c).await,
                KeysCommand::List(c) => keys_list(ctx, &c).await,
                KeysCommand::Describe(c) => keys_describe(ctx, &c).await,
                KeysCommand::Update(c) => keys_update(ctx, &c).await,
                KeysCommand::SetPrimaryVersion(c) => keys_set_primary_version(ctx, &c).await,
                KeysCommand::Delete(c) => keys_delete(ctx, &c).await,
                KeysCommand::AddIamPolicyBinding(c) => {
                    iam::add_binding(ctx, &key_subject(ctx, &c.target)?, &c.binding).await
                }
                KeysCommand::RemoveIamPolicyBinding(c) => {
                    iam::remove_binding(ctx, &key_subject(ctx, &c.target)?, &c.binding).await
                }
                KeysCommand::GetIamPolicy(c) => iam::get_policy(ctx, &key_subject(ctx, &c)?).await,
                KeysCommand::SetIamPolicy(c) => {
                    iam::set_policy(ctx, &key_subject(ctx, &c.target)?, &c.file.policy_file).await
                }
                KeysCommand::Versions(v) => match v.command {
                    VersionsCommand::Create(c) => versions_create(ctx, &c).await,
                    VersionsCommand::List(c) => versions_list(ctx, &c).await,
                    VersionsCommand::Describe(c) => versions_describe(ctx, &c).await,
                    VersionsCommand::Enable(c) => versions_set_state(ctx, &c, "ENABLED").await,
                    VersionsCommand::Disable(c) => versions_set_state(ctx, &c, "DISABLED").await,
                    VersionsCommand::Destroy(c) => versions_action(ctx, &c, "destroy").await,
                    VersionsCommand::Restore(c) => versions_action(ctx, &c, "restore").await,
                    VersionsCommand::GetPublicKey(c) => key_ops::get_public_key(ctx, &c).await,
                    VersionsCommand::Import(c) => import::import_version(ctx, &c).await,
                    VersionsCommand::Delete(c) => versions_delete(ctx, &c).await,
                },
            },
            KmsCommand::Encrypt(c) => encrypt(ctx, &c).await,
            KmsCommand::Decrypt(c) => decrypt(ctx, &c).await,
            KmsCommand::AsymmetricSign(c) => key_ops::asymmetric_sign(ctx, &c).await,
            KmsCommand::AsymmetricDecrypt(c) => key_ops::asymmetric_decrypt(ctx, &c).await,
            KmsCommand::MacSign(c) => key_ops::mac_sign(ctx, &c).await,
            KmsCommand::MacVerify(c) => key_ops::mac_verify(ctx, &c).await,
            KmsCommand::RawEncrypt(c) => key_ops::raw_encrypt(ctx, &c).await,
            KmsCommand::RawDecrypt(c) => key_ops::raw_decrypt(ctx, &c).await,
            KmsCommand::Decapsulate(c) => key_ops::decapsulate(ctx, &c).await,
            KmsCommand::ImportJobs(a) => match a.command {
                ImportJobsCommand::Create(c) => import::create(ctx, &c).await,
                ImportJobsCommand::Describe(c) => import::describe(ctx, &c).await,
                ImportJobsCommand::List(c) => import::list(ctx, &c).await,
            },
            KmsCommand::Inventory(a) => match a.command {
                InventoryCommand::GetProtectedResourcesSummary(c) => inventory_summary(ctx, &c).await,
                InventoryCommand::SearchProtectedResources(c) => inventory_search(ctx, &c).await,
            },
        }
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Value, CliError> {
    serde_json::to_value(v).map_err(|e| CliError::Other(format!("cannot encode the request: {e}")))
}

// ---- inventory ([K12]) ----------------------------------------------------------------------

fn inventory_key(ctx: &Ctx, c: &InventoryKey) -> Result<keyhold_api::CryptoKeyName, CliError> {
    ctx.resources(c.ring.location.as_deref(), c.ring.keyring.as_deref(), Some(&c.keyname)).crypto_key_name("keyname")
}

async fn inventory_summary(ctx: &Ctx, c: &InventoryKey) -> Result<(), CliError> {
    let key = inventory_key(ctx, c)?;
    let summary = ctx.client.get(&format!("{key}/protectedResourcesSummary")).await?;
    ctx.show(Kind::Other, &summary)
}

async fn inventory_search(ctx: &Ctx, c: &InventorySearch) -> Result<(), CliError> {
    let key = inventory_key(ctx, &c.key)?;
    let scope = c.scope.clone().unwrap_or_else(|| format!("projects/{}", key.key_ring.location.project));
    if !scope.starts_with("projects/") || scope.matches('/').count() != 1 {
        return Err(CliError::Usage(format!("--scope must be projects/PROJECT, not {scope:?}")));
    }
    let version = match &c.version {
        Some(v) if v.contains('/') => Some(v.clone()),
        Some(v) => Some(
            key.version(v.parse().map_err(|_| CliError::Usage(format!("--version {v:?} is not a version ID")))?)
                .to_string(),
        ),
        None => None,
    };
    let mut found = Vec::new();
    let mut token = String::new();
    loop {
        let mut query = vec![("cryptoKey", key.to_string())];
        if !token.is_empty() {
            query.push(("pageToken", token.clone()));
        }
        let page: Value =
            ctx.client.call(Method::GET, &format!("{scope}/protectedResources:search"), &query, None).await?;
        found.extend(page["protectedResources"].as_array().cloned().unwrap_or_default());
        match page["nextPageToken"].as_str() {
            Some(t) if !t.is_empty() => token = t.to_string(),
            _ => break,
        }
    }
    if let Some(v) = &version {
        found.retain(|r| r["cryptoKeyVersions"].as_array().is_some_and(|vs| vs.iter().any(|x| x == v.as_str())));
        if found.is_empty() {
            // The answer to "is version N still protecting anything?", said plainly.
            eprintln!("{v} protects no resource in {scope}.");
        }
    }
    ctx.show_list(Kind::Other, &found, false)
}

// ---- locations ------------------------------------------------------------------------------

async fn locations_list(ctx: &Ctx, c: &LocationsList) -> Result<(), CliError> {
    let project = ctx.project()?;
    let items = ctx.client.list(&format!("projects/{project}/locations"), "locations", &c.list.options()).await?;
    ctx.show_list(Kind::Location, &items, c.list.uri)
}

async fn locations_describe(ctx: &Ctx, c: &LocationsDescribe) -> Result<(), CliError> {
    let name = ctx.resources(Some(&c.location_id), None, None).location_name("location")?;
    let loc = ctx.client.get(&name.to_string()).await?;
    ctx.show(Kind::Location, &loc)
}

// ---- key rings ------------------------------------------------------------------------------

async fn keyrings_create(ctx: &Ctx, c: &KeyRingTarget) -> Result<(), CliError> {
    let name = ctx.resources(c.location.location.as_deref(), Some(&c.key_ring_id), None).key_ring_name("keyring")?;
    let query = [("keyRingId", name.key_ring.clone())];
    let ring = ctx.client.post(&format!("{}/keyRings", name.location), &query, &json!({})).await?;
    ctx.show_created(Kind::KeyRing, &ring)
}

async fn keyrings_list(ctx: &Ctx, c: &KeyRingList) -> Result<(), CliError> {
    let loc = ctx.resources(c.location.location.as_deref(), None, None).location_name("location")?;
    let items = ctx.client.list(&format!("{loc}/keyRings"), "keyRings", &c.list.options()).await?;
    ctx.show_list(Kind::KeyRing, &items, c.list.uri)
}

async fn keyrings_describe(ctx: &Ctx, c: &KeyRingTarget) -> Result<(), CliError> {
    let name = ctx.resources(c.location.location.as_deref(), Some(&c.key_ring_id), None).key_ring_name("keyring")?;
    let ring = ctx.client.get(&name.to_string()).await?;
    ctx.show(Kind::KeyRing, &ring)
}

/// The key ring of a key-ring command, as an IAM resource.
fn key_ring_subject(ctx: &Ctx, c: &KeyRingTarget) -> Result<IamSubject, CliError> {
    let name = ctx.resources(c.location.location.as_deref(), Some(&c.key_ring_id), None).key_ring_name("keyring")?;
    Ok(IamSubject { id: name.key_ring.clone(), resource: name.to_string(), kind: "keyring" })
}

// ---- keys -----------------------------------------------------------------------------------

/// The key of a key command, as an IAM resource.
fn key_subject(ctx: &Ctx, c: &KeyTarget) -> Result<IamSubject, CliError> {
    let name =
        ctx.resources(c.ring.location.as_deref(), c.ring.keyring.as_deref(), Some(&c.key_id)).crypto_key_name("key")?;
    Ok(IamSubject { id: name.crypto_key.clone(), resource: name.to_string(), kind: "key" })
}

/// Checks `--default-algorithm` against `--purpose` as gcloud does before sending anything.
fn check_algorithm(purpose: PurposeArg, algorithm: Option<Algorithm>) -> Result<(), CliError> {
    let p = purpose.to_api();
    let valid = || algorithms_for(p).join(", ");
    match algorithm {
        None if p == Purpose::EncryptDecrypt => Ok(()),
        None => Err(CliError::Usage(format!(
            "--default-algorithm needs to be specified when creating a key with --purpose={}. Valid algorithms: {}.",
            purpose.name(),
            valid()
        ))),
        Some(a) if algorithm_fits_purpose(p, a) => Ok(()),
        Some(a) => Err(CliError::Usage(format!(
            "Default algorithm [{}] is not compatible with --purpose={}. Valid algorithms: {}.",
            kebab(a.as_str()),
            purpose.name(),
            valid()
        ))),
    }
}

/// The `CryptoKey` body of `keys create`.
fn create_body(c: &KeyCreate) -> Result<CryptoKey, CliError> {
    check_algorithm(c.purpose, c.default_algorithm)?;
    let protection_level = c.protection_level.map(ProtectionLevelArg::to_api);
    let version_template = (protection_level.is_some() || c.default_algorithm.is_some())
        .then_some(VersionTemplate { protection_level, algorithm: c.default_algorithm });
    Ok(CryptoKey {
        purpose: Some(c.purpose.to_api()),
        version_template,
        rotation_period: c.rotation_period,
        next_rotation_time: c.next_rotation_time,
        labels: merge_labels(&c.labels),
        destroy_scheduled_duration: c.destroy_scheduled_duration,
        import_only: c.import_only,
        crypto_key_backend: c.crypto_key_backend.clone().unwrap_or_default(),
        key_access_justifications_policy: (!c.allowed_access_reasons.is_empty())
            .then(|| KeyAccessJustificationsPolicy { allowed_access_reasons: c.allowed_access_reasons.clone() }),
        ..CryptoKey::default()
    })
}

async fn keys_create(ctx: &Ctx, c: &KeyCreate) -> Result<(), CliError> {
    let t = &c.target;
    let name =
        ctx.resources(t.ring.location.as_deref(), t.ring.keyring.as_deref(), Some(&t.key_id)).crypto_key_name("key")?;
    let body = to_json(&create_body(c)?)?;
    let mut query = vec![("cryptoKeyId", name.crypto_key.clone())];
    if c.skip_initial_version_creation {
        query.push(("skipInitialVersionCreation", "true".to_string()));
    }
    let key = ctx.client.post(&format!("{}/cryptoKeys", name.key_ring), &query, &body).await?;
    ctx.show_created(Kind::CryptoKey, &key)
}

async fn keys_list(ctx: &Ctx, c: &KeyList) -> Result<(), CliError> {
    let ring = ctx.resources(c.ring.location.as_deref(), c.ring.keyring.as_deref(), None).key_ring_name("keyring")?;
    let items = ctx.client.list(&format!("{ring}/cryptoKeys"), "cryptoKeys", &c.list.options()).await?;
    ctx.show_list(Kind::CryptoKey, &items, c.list.uri)
}

async fn keys_describe(ctx: &Ctx, c: &KeyTarget) -> Result<(), CliError> {
    let name =
        ctx.resources(c.ring.location.as_deref(), c.ring.keyring.as_deref(), Some(&c.key_id)).crypto_key_name("key")?;
    let key = ctx.client.get(&name.to_string()).await?;
    ctx.show(Kind::CryptoKey, &key)
}

/// The labels of a resource as the server returned them.
fn labels_of(resource: &Value) -> BTreeMap<String, String> {
    resource
        .get("labels")
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string()))).collect())
        .unwrap_or_default()
}

/// The patch and update mask of `keys update`, labels aside (they need the current key).
fn update_patch(c: &KeyUpdate) -> (CryptoKey, Vec<&'static str>) {
    let mut patch = CryptoKey::default();
    let mut mask = Vec::new();
    if let Some(p) = c.rotation_period {
        patch.rotation_period = Some(p);
        mask.push("rotationPeriod");
    }
    if let Some(t) = c.next_rotation_time {
        patch.next_rotation_time = Some(t);
        mask.push("nextRotationTime");
    }
    if c.remove_rotation_schedule {
        mask.extend(["rotationPeriod", "nextRotationTime"]);
    }
    if let Some(a) = c.default_algorithm {
        patch.version_template = Some(VersionTemplate { protection_level: None, algorithm: Some(a) });
        mask.push("versionTemplate.algorithm");
    }
    if !c.allowed_access_reasons.is_empty() {
        patch.key_access_justifications_policy =
            Some(KeyAccessJustificationsPolicy { allowed_access_reasons: c.allowed_access_reasons.clone() });
        mask.push("keyAccessJustificationsPolicy");
    }
    if c.remove_key_access_justifications_policy {
        mask.push("keyAccessJustificationsPolicy");
    }
    (patch, mask)
}

async fn keys_update(ctx: &Ctx, c: &KeyUpdate) -> Result<(), CliError> {
    let t = &c.target;
    let name =
        ctx.resources(t.ring.location.as_deref(), t.ring.keyring.as_deref(), Some(&t.key_id)).crypto_key_name("key")?;
    let (mut patch, mut mask) = update_patch(c);
    let label_flags = !c.update_labels.is_empty() || !c.remove_labels.is_empty() || c.clear_labels;
    if mask.is_empty() && !label_flags && c.primary_version.is_none() {
        return Err(CliError::Usage(
            "At least one of --update-labels, --remove-labels, --clear-labels, --rotation-period, \
             --next-rotation-time, --remove-rotation-schedule, --default-algorithm, --primary-version, \
             --allowed-access-reasons or --remove-key-access-justifications-policy must be specified."
                .to_string(),
        ));
    }
    // Like gcloud: fetch the key first (it must exist, and label changes apply to its labels).
    let mut key = ctx.client.get(&name.to_string()).await?;
    if label_flags {
        let current = labels_of(&key);
        let wanted = apply_label_changes(&current, c.clear_labels, &c.remove_labels, &merge_labels(&c.update_labels));
        if wanted != current {
            patch.labels = wanted;
            mask.push("labels");
        }
    }
    if let Some(v) = c.primary_version {
        key = set_primary(ctx, &name.to_string(), v).await?;
    }
    if !mask.is_empty() {
        let query = [("updateMask", mask.join(","))];
        key = ctx.client.patch(&name.to_string(), &query, &to_json(&patch)?).await?;
    }
    ctx.show(Kind::CryptoKey, &key)
}

async fn set_primary(ctx: &Ctx, key: &str, version: u64) -> Result<Value, CliError> {
    let body = json!({ "cryptoKeyVersionId": version.to_string() });
    ctx.client.post(&format!("{key}:updatePrimaryVersion"), &[], &body).await
}

async fn keys_set_primary_version(ctx: &Ctx, c: &KeySetPrimaryVersion) -> Result<(), CliError> {
    let t = &c.target;
    let name =
        ctx.resources(t.ring.location.as_deref(), t.ring.keyring.as_deref(), Some(&t.key_id)).crypto_key_name("key")?;
    let key = set_primary(ctx, &name.to_string(), c.version).await?;
    ctx.show(Kind::CryptoKey, &key)
}

// ---- versions -------------------------------------------------------------------------------

fn key_of<'a>(ctx: &'a Ctx, k: &'a KeyFlags) -> super::resource::ResourceArgs<'a> {
    ctx.resources(k.ring.location.as_deref(), k.ring.keyring.as_deref(), k.key.as_deref())
}

async fn versions_create(ctx: &Ctx, c: &VersionCreate) -> Result<(), CliError> {
    let key = key_of(ctx, &c.parent).crypto_key_name("key")?;
    let version = ctx.client.post(&format!("{key}/cryptoKeyVersions"), &[], &json!({})).await?;
    if c.primary {
        let created = version.get("name").and_then(Value::as_str).unwrap_or_default();
        let id = created
            .parse::<keyhold_api::CryptoKeyVersionName>()
            .map_err(|_| CliError::Other(format!("the server returned a version without a valid name: \"{created}\"")))?
            .version;
        set_primary(ctx, &key.to_string(), id).await?;
    }
    ctx.show_created(Kind::CryptoKeyVersion, &version)
}

async fn versions_list(ctx: &Ctx, c: &VersionList) -> Result<(), CliError> {
    let key = key_of(ctx, &c.parent).crypto_key_name("key")?;
    let items = ctx.client.list(&format!("{key}/cryptoKeyVersions"), "cryptoKeyVersions", &c.list.options()).await?;
    ctx.show_list(Kind::CryptoKeyVersion, &items, c.list.uri)
}

async fn versions_describe(ctx: &Ctx, c: &VersionTarget) -> Result<(), CliError> {
    let name = key_of(ctx, &c.parent).version_name(&c.version_id, "version")?;
    let version = ctx.client.get(&name.to_string()).await?;
    ctx.show(Kind::CryptoKeyVersion, &version)
}

async fn versions_set_state(ctx: &Ctx, c: &VersionTarget, state: &str) -> Result<(), CliError> {
    let name = key_of(ctx, &c.parent).version_name(&c.version_id, "version")?;
    let query = [("updateMask", "state".to_string())];
    let version = ctx.client.patch(&name.to_string(), &query, &json!({ "state": state })).await?;
    ctx.show(Kind::CryptoKeyVersion, &version)
}

/// Runs a deletion and says what it did, as gcloud does for a finished operation; with
/// `--format` the operation itself is printed.
async fn delete(ctx: &Ctx, name: &str) -> Result<(), CliError> {
    let operation = ctx.client.delete(name).await?;
    if ctx.format.is_some() {
        return ctx.show(Kind::Other, &operation);
    }
    if let Some(retired) = operation["metadata"]["retiredResource"].as_str() {
        eprintln!("Deleted [{name}]; its name is retired as [{retired}].");
    } else {
        eprintln!("Deleted [{name}].");
    }
    Ok(())
}

async fn keys_delete(ctx: &Ctx, c: &KeyTarget) -> Result<(), CliError> {
    let name =
        ctx.resources(c.ring.location.as_deref(), c.ring.keyring.as_deref(), Some(&c.key_id)).crypto_key_name("key")?;
    delete(ctx, &name.to_string()).await
}

async fn versions_delete(ctx: &Ctx, c: &VersionTarget) -> Result<(), CliError> {
    let name = key_of(ctx, &c.parent).version_name(&c.version_id, "version")?;
    delete(ctx, &name.to_string()).await
}

async fn versions_action(ctx: &Ctx, c: &VersionTarget, verb: &str) -> Result<(), CliError> {
    let name = key_of(ctx, &c.parent).version_name(&c.version_id, "version")?;
    let version = ctx.client.post(&format!("{name}:{verb}"), &[], &json!({})).await?;
    ctx.show(Kind::CryptoKeyVersion, &version)
}

// ---- encrypt / decrypt ----------------------------------------------------------------------

pub(super) const REQUEST_CORRUPTED: &str =
    "An error occurred in-transit: the request sent to the KMS was corrupted. Please retry this operation.";
pub(super) const RESPONSE_CORRUPTED: &str =
    "An error occurred in-transit: the response received from the KMS was corrupted. Please retry this operation.";

/// Refuses to read two inputs from standard input.
fn one_stdin(data: &std::path::Path, data_flag: &str, aad: Option<&PathBuf>) -> Result<(), CliError> {
    if files::is_stdio(data) && aad.is_some_and(|a| files::is_stdio(a)) {
        return Err(CliError::Usage(format!(
            "{data_flag} and --additional-authenticated-data-file cannot both read from stdin."
        )));
    }
    Ok(())
}

/// Reads the additional authenticated data, if a file was given and it is not empty.
fn read_aad(path: Option<&PathBuf>) -> Result<Option<Vec<u8>>, CliError> {
    match path {
        Some(p) => {
            let aad = files::read_input(p, MAX_PLAINTEXT)?;
            Ok((!aad.is_empty()).then(|| aad.expose().to_vec()))
        }
        None => Ok(None),
    }
}

async fn encrypt(ctx: &Ctx, c: &EncryptArgs) -> Result<(), CliError> {
    one_stdin(&c.plaintext_file, "--plaintext-file", c.additional_authenticated_data_file.as_ref())?;
    let args = ctx.resources(c.ring.location.as_deref(), c.ring.keyring.as_deref(), Some(&c.key));
    let target = match &c.version {
        Some(v) => args.version_name(v, "key")?.to_string(),
        None => args.crypto_key_name("key")?.to_string(),
    };
    let plaintext = files::read_input(&c.plaintext_file, MAX_PLAINTEXT)?;
    let aad = read_aad(c.additional_authenticated_data_file.as_ref())?;
    let check = !c.skip_integrity_verification;
    let req = EncryptRequest {
        name: String::new(),
        plaintext_crc32c: check.then(|| Crc32c(crc32c(plaintext.expose()))),
        additional_authenticated_data_crc32c: aad.as_deref().filter(|_| check).map(|a| Crc32c(crc32c(a))),
        additional_authenticated_data: aad.clone().map(Bytes),
        plaintext: SecretBytes(plaintext),
    };
    let body = serde_json::to_vec(&req).map_err(|e| CliError::Other(format!("cannot encode the request: {e}")))?;
    drop(req);
    let resp: EncryptResponse = ctx.client.call(Method::POST, &format!("{target}:encrypt"), &[], Some(body)).await?;
    if check {
        if !resp.verified_plaintext_crc32c || (aad.is_some() && !resp.verified_additional_authenticated_data_crc32c) {
            return Err(CliError::Integrity(REQUEST_CORRUPTED.to_string()));
        }
        if crc32c(&resp.ciphertext.0) != resp.ciphertext_crc32c.0 {
            return Err(CliError::Integrity(RESPONSE_CORRUPTED.to_string()));
        }
    }
    files::write_output(&c.ciphertext_file, &resp.ciphertext.0, false)
}

async fn decrypt(ctx: &Ctx, c: &DecryptArgs) -> Result<(), CliError> {
    one_stdin(&c.ciphertext_file, "--ciphertext-file", c.additional_authenticated_data_file.as_ref())?;
    let key =
        ctx.resources(c.ring.location.as_deref(), c.ring.keyring.as_deref(), Some(&c.key)).crypto_key_name("key")?;
    let ciphertext = files::read_input(&c.ciphertext_file, MAX_CIPHERTEXT)?;
    let aad = read_aad(c.additional_authenticated_data_file.as_ref())?;
    let check = !c.skip_integrity_verification;
    let req = DecryptRequest {
        name: String::new(),
        ciphertext_crc32c: check.then(|| Crc32c(crc32c(ciphertext.expose()))),
        ciphertext: Bytes(ciphertext.expose().to_vec()),
        additional_authenticated_data_crc32c: aad.as_deref().filter(|_| check).map(|a| Crc32c(crc32c(a))),
        additional_authenticated_data: aad.map(Bytes),
    };
    let body = serde_json::to_vec(&req).map_err(|e| CliError::Other(format!("cannot encode the request: {e}")))?;
    let resp: DecryptResponse = ctx.client.call(Method::POST, &format!("{key}:decrypt"), &[], Some(body)).await?;
    let plaintext = resp.plaintext.0.expose();
    if check && crc32c(plaintext) != resp.plaintext_crc32c.0 {
        return Err(CliError::Integrity(RESPONSE_CORRUPTED.to_string()));
    }
    files::write_output(&c.plaintext_file, plaintext, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{CliCommand, ClientOptions};
    use clap::{CommandFactory, Parser};

    /// A stand-in for the binary's parser, shaped as main.rs uses the module.
    #[derive(Parser, Debug)]
    #[command(name = "keyhold", version)]
    struct TestCli {
        #[command(flatten)]
        client: ClientOptions,
        #[command(subcommand)]
        command: CliCommand,
    }

    fn parse(args: &str) -> TestCli {
        match TestCli::try_parse_from(std::iter::once("keyhold").chain(args.split_whitespace())) {
            Ok(c) => c,
            Err(e) => panic!("{args}: {e}"),
        }
    }

    fn kms(args: &str) -> KmsCommand {
        let CliCommand::Kms(k) = parse(args).command else { panic!("{args}: not a kms command") };
        k.command
    }

    #[test]
    fn command_tree_is_valid() {
        TestCli::command().debug_assert();
    }

    #[test]
    fn gcloud_command_lines_parse() {
        let lines = [
            ("kms locations list", "kms.locations.list"),
            ("kms keyrings create ring --location global", "kms.keyrings.create"),
            ("kms keyrings list --location global --format json", "kms.keyrings.list"),
            ("kms keyrings describe ring --location global", "kms.keyrings.describe"),
            (
                "kms keys create k --keyring r --location global --purpose encryption --protection-level hsm --rotation-period 30d --next-rotation-time 2026-12-01T00:00:00Z --labels a=1,b=2 --destroy-scheduled-duration 1d --skip-initial-version-creation",
                "kms.keys.create",
            ),
            (
                "kms keys list --keyring r --location global --filter labels.a=1 --sort-by ~name --page-size 2",
                "kms.keys.list",
            ),
            ("kms keys describe k --keyring r --location global", "kms.keys.describe"),
            (
                "kms keys update k --keyring r --location global --update-labels a=2 --remove-labels b --primary-version 2",
                "kms.keys.update",
            ),
            (
                "kms keys set-primary-version k --version 2 --keyring r --location global",
                "kms.keys.set-primary-version",
            ),
            ("kms keys versions create --key k --keyring r --location global --primary", "kms.keys.versions.create"),
            ("kms keys versions list --key k --keyring r --location global", "kms.keys.versions.list"),
            ("kms keys versions describe 1 --key k --keyring r --location global", "kms.keys.versions.describe"),
            ("kms keys versions enable 1 --key k --keyring r --location global", "kms.keys.versions.enable"),
            ("kms keys versions disable 1 --key k --keyring r --location global", "kms.keys.versions.disable"),
            ("kms keys versions destroy 1 --key k --keyring r --location global", "kms.keys.versions.destroy"),
            ("kms keys versions restore 1 --key k --keyring r --location global", "kms.keys.versions.restore"),
            (
                "kms encrypt --key k --keyring r --location global --plaintext-file - --ciphertext-file c --version 1",
                "kms.encrypt",
            ),
            (
                "kms decrypt --key k --keyring r --location global --ciphertext-file c --plaintext-file - --additional-authenticated-data-file a",
                "kms.decrypt",
            ),
            (
                "kms keys add-iam-policy-binding k --keyring r --location global --member user:a@b.com --role roles/cloudkms.viewer",
                "kms.keys.add-iam-policy-binding",
            ),
            (
                "kms keys remove-iam-policy-binding projects/p/locations/l/keyRings/r/cryptoKeys/k --member user:a@b.com --role roles/cloudkms.viewer",
                "kms.keys.remove-iam-policy-binding",
            ),
            ("kms keys get-iam-policy k --keyring r --location global", "kms.keys.get-iam-policy"),
            ("kms keys set-iam-policy k policy.yaml --keyring r --location global", "kms.keys.set-iam-policy"),
            (
                "kms keyrings add-iam-policy-binding r --location global --member user:a@b.com --role roles/cloudkms.viewer",
                "kms.keyrings.add-iam-policy-binding",
            ),
            (
                "kms keyrings remove-iam-policy-binding r --location global --member user:a@b.com --role roles/cloudkms.viewer",
                "kms.keyrings.remove-iam-policy-binding",
            ),
            ("kms keyrings get-iam-policy r --location global", "kms.keyrings.get-iam-policy"),
            ("kms keyrings set-iam-policy r policy.json --location global", "kms.keyrings.set-iam-policy"),
        ];
        for (line, path) in lines {
            assert_eq!(kms(line).path(), path, "{line}");
        }
    }

    #[test]
    fn global_options_anywhere() {
        let c = parse("kms keys list --keyring r --location l --project p --format=json --endpoint http://h:1");
        assert_eq!(c.client.project.as_deref(), Some("p"));
        assert_eq!(c.client.endpoint, "http://h:1");
        assert_eq!(c.client.format, Some(crate::cli::OutputFormat::Json));
        assert!(TestCli::try_parse_from(["keyhold", "kms", "locations", "list", "--format", "xml"]).is_err());
    }

    #[test]
    fn create_body_matches_cloud_kms_json() {
        let KmsCommand::Keys(KeysArgs { command: KeysCommand::Create(c) }) =
            kms("kms keys create k --keyring r --location global --purpose encryption --protection-level hsm \
             --rotation-period 30d --next-rotation-time 2026-12-01T00:00:00Z --labels a=1,b=2 --labels c=3 \
             --destroy-scheduled-duration 1d --allowed-access-reasons customer-initiated-access,reason-not-expected")
        else {
            panic!("not keys create")
        };
        let body = to_json(&create_body(&c).unwrap()).unwrap();
        assert_eq!(
            body,
            json!({
                "purpose": "ENCRYPT_DECRYPT",
                "versionTemplate": {"protectionLevel": "HSM"},
                "rotationPeriod": "2592000s",
                "nextRotationTime": "2026-12-01T00:00:00.000000000Z",
                "labels": {"a": "1", "b": "2", "c": "3"},
                "destroyScheduledDuration": "86400s",
                "keyAccessJustificationsPolicy": {"allowedAccessReasons": ["CUSTOMER_INITIATED_ACCESS", "REASON_NOT_EXPECTED"]},
            })
        );
    }

    #[test]
    fn algorithm_required_for_other_purposes() {
        let KmsCommand::Keys(KeysArgs { command: KeysCommand::Create(c) }) =
            kms("kms keys create k --keyring r --location global --purpose mac")
        else {
            panic!("not keys create")
        };
        let e = create_body(&c).unwrap_err().to_string();
        assert!(e.contains("--default-algorithm") && e.contains("hmac-sha256"), "{e}");
        let KmsCommand::Keys(KeysArgs { command: KeysCommand::Create(c) }) = kms(
            "kms keys create k --keyring r --location global --purpose raw-encryption --default-algorithm aes-256-gcm",
        ) else {
            panic!("not keys create")
        };
        assert_eq!(
            to_json(&create_body(&c).unwrap()).unwrap(),
            json!({"purpose": "RAW_ENCRYPT_DECRYPT", "versionTemplate": {"algorithm": "AES_256_GCM"}})
        );
        assert!(check_algorithm(PurposeArg::Encryption, Some(Algorithm::HmacSha256)).is_err());
    }

    #[test]
    fn update_masks() {
        let KmsCommand::Keys(KeysArgs { command: KeysCommand::Update(c) }) =
            kms("kms keys update k --keyring r --location global --rotation-period 7d --next-rotation-time 2027-01-01")
        else {
            panic!("not keys update")
        };
        let (patch, mask) = update_patch(&c);
        assert_eq!(mask, ["rotationPeriod", "nextRotationTime"]);
        assert_eq!(
            to_json(&patch).unwrap(),
            json!({"rotationPeriod": "604800s", "nextRotationTime": "2027-01-01T00:00:00.000000000Z"})
        );
        let KmsCommand::Keys(KeysArgs { command: KeysCommand::Update(c) }) = kms(
            "kms keys update k --keyring r --location global --remove-rotation-schedule --default-algorithm google-symmetric-encryption",
        ) else {
            panic!("not keys update")
        };
        let (patch, mask) = update_patch(&c);
        assert_eq!(mask, ["rotationPeriod", "nextRotationTime", "versionTemplate.algorithm"]);
        assert_eq!(to_json(&patch).unwrap(), json!({"versionTemplate": {"algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION"}}));
        assert!(
            TestCli::try_parse_from([
                "keyhold",
                "kms",
                "keys",
                "update",
                "k",
                "--remove-rotation-schedule",
                "--rotation-period",
                "1d"
            ])
            .is_err()
        );
        assert!(
            TestCli::try_parse_from([
                "keyhold",
                "kms",
                "keys",
                "update",
                "k",
                "--clear-labels",
                "--remove-labels",
                "a"
            ])
            .is_err()
        );
    }

    #[test]
    fn bad_flag_values_are_usage_errors() {
        for line in [
            "kms keys create k --purpose sign",
            "kms keys create k --purpose encryption --rotation-period soon",
            "kms keys create k --purpose encryption --labels Bad=1",
            "kms keys set-primary-version k --version 0",
            "kms keys list --page-size 0",
        ] {
            let args: Vec<&str> = std::iter::once("keyhold").chain(line.split_whitespace()).collect();
            assert!(TestCli::try_parse_from(args).is_err(), "{line}");
        }
    }

    #[test]
    fn labels_from_responses() {
        let key = json!({"labels": {"a": "1", "b": ""}});
        assert_eq!(labels_of(&key).len(), 2);
        assert!(labels_of(&json!({})).is_empty());
    }
}
