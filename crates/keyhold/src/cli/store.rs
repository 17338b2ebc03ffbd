//! `keyhold store ...`: the encrypted object store (service `store.keyhold.dev`). Instances
//! are containers of objects whose data is encrypted with a key of the instance (its CMEK, a
//! Keyhold key given by `--kms-key`, or a Keyhold-managed one); objects are uploaded and
//! downloaded as raw bytes.
//!
//! * instances: `POST|GET|DELETE /v1/projects/P/locations/L/instances[/ID][:rewrap|:reencrypt]`
//!   (`replicaOf` in the body of a create makes a read replica);
//! * copies of instances: `POST .../instances/ID:clone`, `POST .../instances/ID:export` and
//!   `POST /v1/projects/P/locations/L/instances:import` (archive files in the server's export
//!   directory), `POST /v1/projects/P/locations/L/instances:restore` (from a backup);
//! * backups: `POST|GET|DELETE /v1/.../instances/ID/backups[/BACKUP]`;
//! * objects: `PUT|GET|DELETE /v1/.../instances/ID/objects/NAME` (`?alt=media` for the data),
//!   `GET .../objects?prefix=`.
//!
//! Object data is streamed both ways, never held in memory whole (objects can be 5 GiB), by a
//! client of its own ([`Media`]): it sends the same bearer token as every other command, but
//! without the two-minute deadline of the JSON calls. Downloaded data goes only to the file the
//! user named (written to a temporary file and renamed into place) or to standard output; it
//! never appears in a message.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use reqwest::{Response, Url};
use serde_json::{Map, Value, json};
use tokio::io::AsyncWriteExt;

use keyhold_api::Code;
use keyhold_api::name::{CryptoKeyName, InstanceName, KeyRingName, LocationName};

use super::client::api_error;
use super::credentials::Credentials;
use super::output::{self, Kind, OutputFormat};
use super::parse::{Labels, merge_labels, parse_labels};
use super::{CliError, Ctx, print_stderr, print_stdout};

/// The pattern of a full instance name, for messages.
const INSTANCE_PATTERN: &str = "projects/PROJECT/locations/LOCATION/instances/INSTANCE";
/// The pattern of a full backup name, for messages.
const BACKUP_PATTERN: &str = "projects/PROJECT/locations/LOCATION/instances/INSTANCE/backups/BACKUP";
/// The wire name of customer-managed encryption in an `encryptionConfig`.
const CUSTOMER_MANAGED: &str = "CUSTOMER_MANAGED_ENCRYPTION";
/// The pattern of a full key name, for messages.
const KEY_PATTERN: &str = "projects/PROJECT/locations/LOCATION/keyRings/KEY_RING/cryptoKeys/KEY";
/// The content type of an upload without `--content-type`.
const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";
/// How long a download may wait for the server's answer, or for the next piece of data.
const DOWNLOAD_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Size of the reads of an uploaded file.
const UPLOAD_CHUNK: usize = 256 * 1024;

// ---- command tree ---------------------------------------------------------------------------

/// `keyhold store`.
#[derive(Args, Debug)]
pub struct StoreArgs {
    /// The command.
    #[command(subcommand)]
    pub command: StoreCommand,
}

/// The groups under `keyhold store`.
#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Create and manage store instances: containers of encrypted objects.
    Instances(InstancesArgs),
    /// Take, list, describe and delete the backups of an instance (restore one with
    /// `store instances restore`).
    Backups(BackupsArgs),
    /// Upload, download, list and delete the objects of an instance.
    Objects(ObjectsArgs),
    /// The export registry of a project against the archives in its export directory.
    Exports(ExportsArgs),
}

/// `keyhold store exports`.
#[derive(Args, Debug)]
pub struct ExportsArgs {
    /// The command.
    #[command(subcommand)]
    pub command: ExportsCommand,
}

/// Commands under `keyhold store exports`.
#[derive(Subcommand, Debug)]
pub enum ExportsCommand {
    /// Reconcile the project's export registry with the files in its export directory
    /// (EXPORT_DIR/PROJECT): exports whose file is gone are marked missing (and no longer
    /// listed as protected by their key until the file is back); files no export wrote are
    /// listed, never deleted. The server does the same at every start.
    Reconcile(ExportsReconcile),
}

/// `keyhold store exports reconcile`.
#[derive(Args, Debug)]
pub struct ExportsReconcile {}

/// `keyhold store instances`.
#[derive(Args, Debug)]
pub struct InstancesArgs {
    /// The command.
    #[command(subcommand)]
    pub command: InstancesCommand,
}

/// Commands under `keyhold store instances`.
#[derive(Subcommand, Debug)]
pub enum InstancesCommand {
    /// Create an instance, optionally encrypted with a customer-managed key (--kms-key).
    Create(InstanceCreate),
    /// Show an instance: its key, state and encryption status.
    Describe(InstanceTarget),
    /// List the instances in a location.
    List(InstanceList),
    /// Delete an instance.
    Delete(InstanceTarget),
    /// Re-wrap the instance's data keys with the primary version of its key.
    Rewrap(InstanceTarget),
    /// Re-encrypt every object of the instance under new data keys.
    Reencrypt(InstanceTarget),
    /// Create an instance from a backup, under the backup's key unless --encryption-type or
    /// --kms-key says otherwise.
    Restore(InstanceRestore),
    /// Create an instance with a point-in-time copy of another's objects, in the same location
    /// and under the same key (another key is refused: use a backup and restore, or export and
    /// import, to change keys).
    Clone(InstanceClone),
    /// Write a point-in-time copy of an instance's objects to an archive file in the server's
    /// export directory, encrypted under the instance's key unless --kms-key or
    /// --allow-plaintext says otherwise.
    Export(InstanceExport),
    /// Create an instance from an archive file in the server's export directory, under
    /// --kms-key (without it, a Keyhold-managed key).
    Import(InstanceImport),
}

/// `--location`.
#[derive(Args, Debug, Clone)]
pub struct StoreLocationFlag {
    /// Location of the instance (`global`, `us-central1`, ...). Not needed when the instance is
    /// given as a full name projects/P/locations/L/instances/I.
    #[arg(long, value_name = "LOCATION")]
    pub location: Option<String>,
}

/// A command on one instance.
#[derive(Args, Debug)]
pub struct InstanceTarget {
    /// The instance ID, or its full name projects/P/locations/L/instances/I.
    #[arg(value_name = "INSTANCE")]
    pub instance: String,
    #[command(flatten)]
    pub location: StoreLocationFlag,
}

/// The key flags of `instances create` and the commands that copy data, as gcloud's
/// `--kms-key` resource argument.
#[derive(Args, Debug, Clone, Default)]
pub struct KmsKeyFlags {
    /// The Keyhold key that encrypts the data (of the new instance, the backup or the archive):
    /// a full name projects/P/locations/L/keyRings/R/cryptoKeys/K, or a key ID with
    /// --kms-keyring. Without it, `instances create` uses a Keyhold-managed key.
    #[arg(long, value_name = "KMS_KEY")]
    pub kms_key: Option<String>,
    /// The key ring of --kms-key (an ID, or a full key ring name).
    #[arg(long, value_name = "KMS_KEYRING")]
    pub kms_keyring: Option<String>,
    /// The location of --kms-key's key ring (default: the instance's location).
    #[arg(long, value_name = "KMS_LOCATION")]
    pub kms_location: Option<String>,
    /// The project of --kms-key's key ring (default: the instance's project).
    #[arg(long, value_name = "KMS_PROJECT")]
    pub kms_project: Option<String>,
}

/// `keyhold store instances create`.
#[derive(Args, Debug)]
pub struct InstanceCreate {
    #[command(flatten)]
    pub target: InstanceTarget,
    #[command(flatten)]
    pub kms: KmsKeyFlags,
    /// Labels, as KEY=VALUE pairs separated by commas.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_labels)]
    pub labels: Vec<Labels>,
    /// Make the new instance a read replica of this instance, which it follows in the
    /// background: an instance ID (in the new instance's project and location), or a full name
    /// projects/P/locations/L/instances/I. In its primary's location a replica uses the
    /// primary's key; elsewhere give --kms-key, a key in the replica's location.
    #[arg(long, value_name = "INSTANCE")]
    pub replica_of: Option<String>,
}

/// The new instance of a restore or an import.
#[derive(Args, Debug)]
pub struct NewInstanceTarget {
    /// The new instance's ID, or its full name projects/P/locations/L/instances/I.
    #[arg(value_name = "NEW_INSTANCE")]
    pub instance: String,
    #[command(flatten)]
    pub location: StoreLocationFlag,
}

/// `--encryption-type` of `backups create`, with gcloud's names.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupEncryptionType {
    /// As the instance: its key, or a Keyhold-managed one (`USE_DATABASE_ENCRYPTION`).
    #[value(name = "use-database-encryption")]
    UseDatabase,
    /// The key given by --kms-key (`CUSTOMER_MANAGED_ENCRYPTION`).
    #[value(name = "customer-managed-encryption")]
    CustomerManaged,
    /// A Keyhold-managed key (`GOOGLE_DEFAULT_ENCRYPTION`).
    #[value(name = "google-default-encryption")]
    GoogleDefault,
}

impl BackupEncryptionType {
    /// The `encryptionConfig.encryptionType` this stands for.
    fn wire_name(self) -> &'static str {
        match self {
            BackupEncryptionType::UseDatabase => "USE_DATABASE_ENCRYPTION",
            BackupEncryptionType::CustomerManaged => CUSTOMER_MANAGED,
            BackupEncryptionType::GoogleDefault => "GOOGLE_DEFAULT_ENCRYPTION",
        }
    }
}

/// `--encryption-type` of `instances restore`, with gcloud's names.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreEncryptionType {
    /// As the backup: its key, or a Keyhold-managed one (`USE_CONFIG_DEFAULT_OR_BACKUP_ENCRYPTION`).
    #[value(name = "use-config-default-or-backup-encryption")]
    UseConfigDefaultOrBackup,
    /// The key given by --kms-key (`CUSTOMER_MANAGED_ENCRYPTION`).
    #[value(name = "customer-managed-encryption")]
    CustomerManaged,
    /// A Keyhold-managed key (`GOOGLE_DEFAULT_ENCRYPTION`).
    #[value(name = "google-default-encryption")]
    GoogleDefault,
}

impl RestoreEncryptionType {
    /// The `encryptionConfig.encryptionType` this stands for.
    fn wire_name(self) -> &'static str {
        match self {
            RestoreEncryptionType::UseConfigDefaultOrBackup => "USE_CONFIG_DEFAULT_OR_BACKUP_ENCRYPTION",
            RestoreEncryptionType::CustomerManaged => CUSTOMER_MANAGED,
            RestoreEncryptionType::GoogleDefault => "GOOGLE_DEFAULT_ENCRYPTION",
        }
    }
}

/// `keyhold store instances restore`.
#[derive(Args, Debug)]
pub struct InstanceRestore {
    #[command(flatten)]
    pub target: NewInstanceTarget,
    /// The backup to restore: its full name projects/P/locations/L/instances/I/backups/B, or a
    /// backup ID with --backup-instance.
    #[arg(long, value_name = "BACKUP")]
    pub backup: String,
    /// The instance the backup was taken from, when --backup is an ID: an instance ID (in the
    /// new instance's project and location), or a full name projects/P/locations/L/instances/I.
    #[arg(long, value_name = "INSTANCE")]
    pub backup_instance: Option<String>,
    /// How the new instance is encrypted: use-config-default-or-backup-encryption (the
    /// default: as the backup), customer-managed-encryption (with --kms-key) or
    /// google-default-encryption. --kms-key alone implies customer-managed-encryption.
    #[arg(long, value_enum, value_name = "ENCRYPTION_TYPE")]
    pub encryption_type: Option<RestoreEncryptionType>,
    #[command(flatten)]
    pub kms: KmsKeyFlags,
    /// Labels of the new instance, as KEY=VALUE pairs separated by commas.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_labels)]
    pub labels: Vec<Labels>,
}

/// `keyhold store instances clone`.
#[derive(Args, Debug)]
pub struct InstanceClone {
    /// The instance to copy: its ID, or its full name projects/P/locations/L/instances/I.
    #[arg(value_name = "SOURCE")]
    pub source: String,
    /// The new instance's ID; it is created in the source's project and location.
    #[arg(value_name = "DESTINATION_ID")]
    pub destination: String,
    #[command(flatten)]
    pub location: StoreLocationFlag,
    // A clone keeps its source's key: --kms-key, if given, must name that key.
    #[command(flatten)]
    pub kms: KmsKeyFlags,
    /// Labels of the new instance, as KEY=VALUE pairs separated by commas.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_labels)]
    pub labels: Vec<Labels>,
}

/// `keyhold store instances export`.
#[derive(Args, Debug)]
pub struct InstanceExport {
    #[command(flatten)]
    pub target: InstanceTarget,
    /// The archive file to write, relative to the server's export directory
    /// (`keyhold serve --store-export-dir`); an existing file is never overwritten.
    #[arg(long, value_name = "FILE")]
    pub destination: String,
    // The key the archive is encrypted under (default: the instance's own key).
    #[command(flatten)]
    pub kms: KmsKeyFlags,
    /// Write the archive unencrypted: anyone who can read the file can read the objects. The
    /// export's audit entry carries a warning.
    #[arg(long, conflicts_with = "kms_key")]
    pub allow_plaintext: bool,
}

/// `keyhold store instances import`.
#[derive(Args, Debug)]
pub struct InstanceImport {
    #[command(flatten)]
    pub target: NewInstanceTarget,
    /// The archive file to read, relative to the server's export directory (as given to
    /// `instances export --destination`).
    #[arg(long, value_name = "FILE")]
    pub source: String,
    #[command(flatten)]
    pub kms: KmsKeyFlags,
    /// Labels of the new instance, as KEY=VALUE pairs separated by commas.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_labels)]
    pub labels: Vec<Labels>,
}

/// `keyhold store backups`.
#[derive(Args, Debug)]
pub struct BackupsArgs {
    /// The command.
    #[command(subcommand)]
    pub command: BackupsCommand,
}

/// Commands under `keyhold store backups`.
#[derive(Subcommand, Debug)]
pub enum BackupsCommand {
    /// Take a backup: a point-in-time copy of an instance's objects, under the instance's key
    /// unless --encryption-type or --kms-key says otherwise. Writes go on meanwhile.
    Create(BackupCreate),
    /// Show a backup: its state, key versions, size and point in time.
    Describe(BackupTarget),
    /// List the backups of an instance.
    List(BackupList),
    /// Delete a backup.
    Delete(BackupTarget),
}

/// `--instance` and `--location`, which complete a backup ID.
#[derive(Args, Debug, Clone)]
pub struct BackupInstanceFlags {
    /// The instance of the backup: an instance ID, or a full name
    /// projects/P/locations/L/instances/I. Not needed when the backup is given as a full name.
    #[arg(long, value_name = "INSTANCE")]
    pub instance: Option<String>,
    #[command(flatten)]
    pub location: StoreLocationFlag,
}

/// A command on one backup.
#[derive(Args, Debug)]
pub struct BackupTarget {
    /// The backup ID, or its full name projects/P/locations/L/instances/I/backups/B.
    #[arg(value_name = "BACKUP")]
    pub backup: String,
    #[command(flatten)]
    pub instance: BackupInstanceFlags,
}

/// `keyhold store backups create`.
#[derive(Args, Debug)]
pub struct BackupCreate {
    #[command(flatten)]
    pub target: BackupTarget,
    /// How the backup is encrypted: use-database-encryption (the default: as its instance),
    /// customer-managed-encryption (with --kms-key) or google-default-encryption. --kms-key
    /// alone implies customer-managed-encryption.
    #[arg(long, value_enum, value_name = "ENCRYPTION_TYPE")]
    pub encryption_type: Option<BackupEncryptionType>,
    #[command(flatten)]
    pub kms: KmsKeyFlags,
}

/// `keyhold store backups list`.
#[derive(Args, Debug)]
pub struct BackupList {
    /// The instance to list the backups of: an instance ID, or a full name
    /// projects/P/locations/L/instances/I.
    #[arg(long, value_name = "INSTANCE")]
    pub instance: String,
    #[command(flatten)]
    pub location: StoreLocationFlag,
    #[command(flatten)]
    pub paging: PagingFlags,
}

/// `--page-size` and `--limit`.
#[derive(Args, Debug, Clone, Default)]
pub struct PagingFlags {
    /// Ask the server for pages of this size (every page is fetched).
    #[arg(long, value_name = "PAGE_SIZE", value_parser = clap::value_parser!(u32).range(1..))]
    pub page_size: Option<u32>,
    /// List at most this many resources.
    #[arg(long, value_name = "LIMIT")]
    pub limit: Option<usize>,
}

/// `keyhold store instances list`.
#[derive(Args, Debug)]
pub struct InstanceList {
    /// Location to list the instances of (`-` for every location, if the server allows it).
    #[arg(long, value_name = "LOCATION")]
    pub location: Option<String>,
    #[command(flatten)]
    pub paging: PagingFlags,
}

/// `keyhold store objects`.
#[derive(Args, Debug)]
pub struct ObjectsArgs {
    /// The command.
    #[command(subcommand)]
    pub command: ObjectsCommand,
}

/// Commands under `keyhold store objects`.
#[derive(Subcommand, Debug)]
pub enum ObjectsCommand {
    /// Upload an object (replacing any object of that name), streamed from a file or stdin.
    Put(ObjectPut),
    /// Download an object's data to a file or stdout.
    Get(ObjectGet),
    /// Show an object's metadata: size, content type, CRC32C, key version.
    Describe(ObjectTarget),
    /// List the objects of an instance.
    List(ObjectList),
    /// Delete an object.
    Delete(ObjectTarget),
}

/// A command on one object.
#[derive(Args, Debug)]
pub struct ObjectTarget {
    /// The instance ID, or its full name projects/P/locations/L/instances/I.
    #[arg(value_name = "INSTANCE")]
    pub instance: String,
    /// The object name; it may contain `/` (`reports/2025/q1.pdf`).
    #[arg(value_name = "OBJECT")]
    pub object: String,
    #[command(flatten)]
    pub location: StoreLocationFlag,
}

/// `keyhold store objects put`.
#[derive(Args, Debug)]
pub struct ObjectPut {
    #[command(flatten)]
    pub target: ObjectTarget,
    /// File to upload (`-`, the default, for standard input).
    #[arg(long, value_name = "PATH", default_value = "-")]
    pub file: PathBuf,
    /// The object's content type.
    #[arg(long, value_name = "CONTENT_TYPE", default_value = DEFAULT_CONTENT_TYPE)]
    pub content_type: String,
}

/// `keyhold store objects get`.
#[derive(Args, Debug)]
pub struct ObjectGet {
    #[command(flatten)]
    pub target: ObjectTarget,
    /// File to write the data to (`-`, the default, for standard output). It is replaced only
    /// once the whole object has arrived, and created readable by its owner only.
    #[arg(long, value_name = "PATH", default_value = "-")]
    pub output_file: PathBuf,
}

/// `keyhold store objects list`.
#[derive(Args, Debug)]
pub struct ObjectList {
    /// The instance ID, or its full name projects/P/locations/L/instances/I.
    #[arg(value_name = "INSTANCE")]
    pub instance: String,
    #[command(flatten)]
    pub location: StoreLocationFlag,
    /// Only list objects whose names start with this prefix.
    #[arg(long, value_name = "PREFIX")]
    pub prefix: Option<String>,
    #[command(flatten)]
    pub paging: PagingFlags,
}

// ---- dispatch -------------------------------------------------------------------------------

impl StoreCommand {
    /// The command's path below `keyhold` (`store.instances.create`).
    pub fn path(&self) -> String {
        let tail = match self {
            StoreCommand::Instances(a) => match a.command {
                InstancesCommand::Create(_) => "instances.create",
                InstancesCommand::Describe(_) => "instances.describe",
                InstancesCommand::List(_) => "instances.list",
                InstancesCommand::Delete(_) => "instances.delete",
                InstancesCommand::Rewrap(_) => "instances.rewrap",
                InstancesCommand::Reencrypt(_) => "instances.reencrypt",
                InstancesCommand::Restore(_) => "instances.restore",
                InstancesCommand::Clone(_) => "instances.clone",
                InstancesCommand::Export(_) => "instances.export",
                InstancesCommand::Import(_) => "instances.import",
            },
            StoreCommand::Backups(a) => match a.command {
                BackupsCommand::Create(_) => "backups.create",
                BackupsCommand::Describe(_) => "backups.describe",
                BackupsCommand::List(_) => "backups.list",
                BackupsCommand::Delete(_) => "backups.delete",
            },
            StoreCommand::Exports(a) => match a.command {
                ExportsCommand::Reconcile(_) => "exports.reconcile",
            },
            StoreCommand::Objects(a) => match a.command {
                ObjectsCommand::Put(_) => "objects.put",
                ObjectsCommand::Get(_) => "objects.get",
                ObjectsCommand::Describe(_) => "objects.describe",
                ObjectsCommand::List(_) => "objects.list",
                ObjectsCommand::Delete(_) => "objects.delete",
            },
        };
        format!("store.{tail}")
    }

    /// Runs the command. `endpoint` and `credentials` are those of `ctx.client`: object data
    /// goes through a streaming client built from them.
    pub async fn run(self, ctx: &Ctx, endpoint: &str, credentials: &Credentials) -> Result<(), CliError> {
        let media = Media { endpoint: endpoint.trim().trim_end_matches('/'), credentials };
        match self {
            StoreCommand::Instances(a) => match a.command {
                InstancesCommand::Create(c) => instances_create(ctx, &c).await,
                InstancesCommand::Describe(c) => instances_describe(ctx, &c).await,
                InstancesCommand::List(c) => instances_list(ctx, &c).await,
                InstancesCommand::Delete(c) => instances_delete(ctx, &c).await,
                InstancesCommand::Rewrap(c) => instances_action(ctx, &c, "rewrap").await,
                InstancesCommand::Reencrypt(c) => instances_action(ctx, &c, "reencrypt").await,
                InstancesCommand::Restore(c) => instances_restore(ctx, &c).await,
                InstancesCommand::Clone(c) => instances_clone(ctx, &c).await,
                InstancesCommand::Export(c) => instances_export(ctx, &c).await,
                InstancesCommand::Import(c) => instances_import(ctx, &c).await,
            },
            StoreCommand::Backups(a) => match a.command {
                BackupsCommand::Create(c) => backups_create(ctx, &c).await,
                BackupsCommand::Describe(c) => backups_describe(ctx, &c).await,
                BackupsCommand::List(c) => backups_list(ctx, &c).await,
                BackupsCommand::Delete(c) => backups_delete(ctx, &c).await,
            },
            StoreCommand::Exports(a) => match a.command {
                ExportsCommand::Reconcile(_) => exports_reconcile(ctx).await,
            },
            StoreCommand::Objects(a) => match a.command {
                ObjectsCommand::Put(c) => objects_put(ctx, &media, &c).await,
                ObjectsCommand::Get(c) => objects_get(ctx, &media, &c).await,
                ObjectsCommand::Describe(c) => objects_describe(ctx, &c).await,
                ObjectsCommand::List(c) => objects_list(ctx, &c).await,
                ObjectsCommand::Delete(c) => objects_delete(ctx, &c).await,
            },
        }
    }
}

// ---- names and URLs -------------------------------------------------------------------------

/// Appends `segment` to `out`, percent-encoding every byte but RFC 3986's unreserved
/// characters, so that `/`, `?`, `#`, `%`, `:` and spaces in it reach the server as data.
fn encode_segment(segment: &str, out: &mut String) {
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// An object name as it goes in a URL path: each `/`-separated segment percent-encoded, the
/// `/` kept. `.` and `..` segments are refused: URLs resolve them away.
pub fn encode_object_name(name: &str) -> Result<String, CliError> {
    if name.is_empty() {
        return Err(CliError::Usage("The object name is empty.".to_string()));
    }
    let mut out = String::with_capacity(name.len());
    for (i, segment) in name.split('/').enumerate() {
        if segment == "." || segment == ".." {
            return Err(CliError::Usage(format!(
                "Invalid object name \"{name}\": \".\" and \"..\" cannot be segments of an object name."
            )));
        }
        if i > 0 {
            out.push('/');
        }
        encode_segment(segment, &mut out);
    }
    Ok(out)
}

/// What the CLI adds to the one [`InstanceName`] (`keyhold-api`): completing an `INSTANCE`
/// argument the way gcloud does, and the percent-encoded paths of its URLs.
pub trait InstanceArg: Sized {
    /// The instance named by an `INSTANCE` argument: a full name, or an ID completed with
    /// `--location` and the project.
    fn resolve(arg: &str, location: Option<&str>, project: Option<&str>) -> Result<Self, CliError>;
    /// Checks the parts: the project and location as Keyhold checks them everywhere, the
    /// instance ID only for what would change the URL's shape (the server checks the rest).
    fn checked(project: &str, location: &str, instance: &str) -> Result<Self, CliError>;
    /// The path of the instance below `/v1/`, its ID percent-encoded.
    fn path(&self) -> String;
    /// The path of one of its objects below `/v1/`.
    fn object_path(&self, object: &str) -> Result<String, CliError>;
}

impl InstanceArg for InstanceName {
    fn resolve(arg: &str, location: Option<&str>, project: Option<&str>) -> Result<Self, CliError> {
        let arg = arg.trim();
        if arg.starts_with("projects/") {
            let segments: Vec<&str> = arg.split('/').collect();
            return match segments.as_slice() {
                ["projects", p, "locations", l, "instances", i] => Self::checked(p, l, i),
                _ => Err(CliError::Usage(format!(
                    "\"{arg}\" is not a valid instance name; expected {INSTANCE_PATTERN}."
                ))),
            };
        }
        let Some(location) = location else {
            return Err(CliError::Usage(format!(
                "Error parsing [instance]. The [instance] resource is not properly specified: failed to find \
                 attribute [location]. Provide the argument [--location] on the command line, or give [instance] \
                 as a full resource name ({INSTANCE_PATTERN})."
            )));
        };
        let project = project.ok_or_else(super::resource::missing_project)?;
        Self::checked(project, location, arg)
    }

    fn checked(project: &str, location: &str, instance: &str) -> Result<Self, CliError> {
        let loc = LocationName::new(project, location).map_err(|e| CliError::Usage(e.to_string()))?;
        if instance.is_empty() || instance.contains('/') {
            return Err(CliError::Usage(format!(
                "Invalid instance ID \"{instance}\": give an ID (no `/`), or a full name {INSTANCE_PATTERN}."
            )));
        }
        Ok(Self { project: loc.project, location: loc.location, instance: instance.to_string() })
    }

    fn path(&self) -> String {
        let mut out = self.collection();
        out.push('/');
        encode_segment(&self.instance, &mut out);
        out
    }

    fn object_path(&self, object: &str) -> Result<String, CliError> {
        Ok(format!("{}/objects/{}", self.path(), encode_object_name(object)?))
    }
}

/// A backup: `projects/{project}/locations/{location}/instances/{instance}/backups/{backup}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupName {
    /// The instance it was taken from.
    pub instance: InstanceName,
    /// The backup ID.
    pub backup: String,
}

impl BackupName {
    /// The backup named by a `BACKUP` argument: a full name, or an ID completed with
    /// `--instance` (itself an ID completed with `--location` and the project, or a full name).
    pub fn resolve(
        arg: &str,
        instance: Option<&str>,
        location: Option<&str>,
        project: Option<&str>,
    ) -> Result<Self, CliError> {
        let arg = arg.trim();
        if arg.starts_with("projects/") {
            let segments: Vec<&str> = arg.split('/').collect();
            return match segments.as_slice() {
                ["projects", p, "locations", l, "instances", i, "backups", b] => {
                    Self::new(InstanceName::checked(p, l, i)?, b)
                }
                _ => Err(CliError::Usage(format!("\"{arg}\" is not a valid backup name; expected {BACKUP_PATTERN}."))),
            };
        }
        let Some(instance) = instance else {
            return Err(CliError::Usage(format!(
                "Error parsing [backup]. The [backup] resource is not properly specified: failed to find attribute \
                 [instance]. Provide the argument [--instance] on the command line, or give [backup] as a full \
                 resource name ({BACKUP_PATTERN})."
            )));
        };
        Self::new(InstanceName::resolve(instance, location, project)?, arg)
    }

    /// Checks the backup ID only for what would change the URL's shape (the server checks the
    /// rest).
    fn new(instance: InstanceName, backup: &str) -> Result<Self, CliError> {
        if backup.is_empty() || backup.contains('/') {
            return Err(CliError::Usage(format!(
                "Invalid backup ID \"{backup}\": give an ID (no `/`), or a full name {BACKUP_PATTERN}."
            )));
        }
        Ok(Self { instance, backup: backup.to_string() })
    }

    /// The path of the backup below `/v1/`, its IDs percent-encoded.
    pub fn path(&self) -> String {
        let mut out = format!("{}/backups/", self.instance.path());
        encode_segment(&self.backup, &mut out);
        out
    }

    /// The full name as the server spells it, for request bodies (`backup` of a restore).
    pub fn full_name(&self) -> String {
        format!("{}/backups/{}", self.instance, self.backup)
    }
}

/// The key of `instances create`: `--kms-key` as a full name, or completed from `--kms-keyring`,
/// `--kms-location` (default: the instance's location) and `--kms-project` (default: the
/// instance's project). `None` without `--kms-key`.
pub fn resolve_kms_key(flags: &KmsKeyFlags, instance: &InstanceName) -> Result<Option<String>, CliError> {
    let invalid = |e: keyhold_api::NameError| CliError::Usage(format!("Invalid --kms-key: {e}"));
    let Some(key) = flags.kms_key.as_deref().map(str::trim) else {
        if flags.kms_keyring.is_some() || flags.kms_location.is_some() || flags.kms_project.is_some() {
            return Err(CliError::Usage(
                "--kms-keyring, --kms-location and --kms-project only complete --kms-key; give --kms-key too."
                    .to_string(),
            ));
        }
        return Ok(None);
    };
    if key.starts_with("projects/") {
        return Ok(Some(key.parse::<CryptoKeyName>().map_err(invalid)?.to_string()));
    }
    let ring = match flags.kms_keyring.as_deref().map(str::trim) {
        Some(r) if r.starts_with("projects/") => r.parse::<KeyRingName>().map_err(invalid)?,
        Some(r) => {
            let project = flags.kms_project.as_deref().unwrap_or(&instance.project);
            let location = flags.kms_location.as_deref().unwrap_or(&instance.location);
            KeyRingName::new(&LocationName::new(project, location).map_err(invalid)?, r).map_err(invalid)?
        }
        None => {
            return Err(CliError::Usage(format!(
                "Error parsing [kms-key]. The [kms-key] resource is not properly specified: failed to find \
                 attribute [kms-keyring]. Provide the argument [--kms-keyring] on the command line, or give \
                 [--kms-key] as a full resource name ({KEY_PATTERN})."
            )));
        }
    };
    Ok(Some(CryptoKeyName::new(&ring, key).map_err(invalid)?.to_string()))
}

/// The body of `instances create` (`replicaOf`: the primary's full name, for a replica).
fn create_body(kms_key: Option<String>, labels: &[Labels], replica_of: Option<String>) -> Value {
    let mut body = Map::new();
    if let Some(k) = kms_key {
        body.insert("kmsKey".into(), Value::String(k));
    }
    let labels = merge_labels(labels);
    if !labels.is_empty() {
        body.insert("labels".into(), json!(labels));
    }
    if let Some(p) = replica_of {
        body.insert("replicaOf".into(), Value::String(p));
    }
    Value::Object(body)
}

/// The `encryptionConfig` of a backup or a restore from `--encryption-type` (its wire name)
/// and the resolved `--kms-key`: a key alone implies customer-managed encryption, which needs
/// one; the other types take none. `None` without either: the server's default (as the
/// instance, or as the backup).
fn encryption_config(
    encryption_type: Option<&'static str>,
    kms_key: Option<String>,
) -> Result<Option<Value>, CliError> {
    match (encryption_type, kms_key) {
        (None, None) => Ok(None),
        (None | Some(CUSTOMER_MANAGED), Some(key)) => {
            Ok(Some(json!({"encryptionType": CUSTOMER_MANAGED, "kmsKeyName": key})))
        }
        (Some(CUSTOMER_MANAGED), None) => Err(CliError::Usage(
            "--encryption-type=customer-managed-encryption needs --kms-key: the key to encrypt with.".to_string(),
        )),
        (Some(t), None) => Ok(Some(json!({"encryptionType": t}))),
        (Some(t), Some(_)) => Err(CliError::Usage(format!(
            "--kms-key is only used with --encryption-type=customer-managed-encryption, not {}.",
            super::parse::kebab(t)
        ))),
    }
}

/// The body of `instances:restore`.
fn restore_body(instance: &InstanceName, backup: &BackupName, encryption: Option<Value>, labels: &[Labels]) -> Value {
    let mut body = Map::new();
    body.insert("instanceId".into(), Value::String(instance.instance.clone()));
    body.insert("backup".into(), Value::String(backup.full_name()));
    if let Some(e) = encryption {
        body.insert("encryptionConfig".into(), e);
    }
    let labels = merge_labels(labels);
    if !labels.is_empty() {
        body.insert("labels".into(), json!(labels));
    }
    Value::Object(body)
}

/// The body of the commands that create an instance from something (`instances:clone`,
/// `instances:import`): `id_field` names the new instance, `source` (if any) what it is built
/// from.
fn copy_body(
    id_field: &str,
    id: &str,
    source: Option<(&str, &str)>,
    kms_key: Option<String>,
    labels: &[Labels],
) -> Value {
    let mut body = Map::new();
    body.insert(id_field.into(), Value::String(id.to_string()));
    if let Some((field, value)) = source {
        body.insert(field.into(), Value::String(value.to_string()));
    }
    if let Some(k) = kms_key {
        body.insert("kmsKey".into(), Value::String(k));
    }
    let labels = merge_labels(labels);
    if !labels.is_empty() {
        body.insert("labels".into(), json!(labels));
    }
    Value::Object(body)
}

/// The body of `instances/ID:export`.
fn export_body(destination: &str, kms_key: Option<String>, allow_plaintext: bool) -> Value {
    let mut body = Map::new();
    body.insert("destination".into(), Value::String(destination.to_string()));
    if let Some(k) = kms_key {
        body.insert("kmsKey".into(), Value::String(k));
    }
    if allow_plaintext {
        body.insert("allowPlaintext".into(), Value::Bool(true));
    }
    Value::Object(body)
}

// ---- listing and printing -------------------------------------------------------------------

/// Fetches every page of a collection below `/{version}/`, `field` naming the array in each page;
/// `query` is sent with every page.
pub(super) async fn list_all(
    ctx: &Ctx,
    version: &str,
    collection: &str,
    field: &str,
    query: &[(&'static str, String)],
    paging: &PagingFlags,
) -> Result<Vec<Value>, CliError> {
    let opts = super::client::ListOptions { page_size: paging.page_size, limit: paging.limit, ..Default::default() };
    ctx.client.list_versioned(version, collection, field, query, &opts).await
}

/// One table column: its header and how a cell is taken from a resource.
pub(super) type Column = (&'static str, fn(&Value) -> String);

/// The string at a dotted path, or empty.
pub(super) fn text_at(v: &Value, path: &str) -> String {
    match output::lookup(v, path) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// Prints a list: a table of `columns` unless `--format` says otherwise.
pub(super) fn show_list(ctx: &Ctx, items: &[Value], columns: &[Column]) -> Result<(), CliError> {
    let format = ctx.format.clone().unwrap_or(OutputFormat::Table);
    if items.is_empty() && !matches!(format, OutputFormat::Json | OutputFormat::None) {
        print_stderr("Listed 0 items.");
        return Ok(());
    }
    match format {
        OutputFormat::Table => print_stdout(&table(items, columns)),
        other => print_stdout(&output::render_list(&other, Kind::Other, items)),
    }
}

/// The table of `columns` for `items`.
pub(super) fn table(items: &[Value], columns: &[Column]) -> String {
    let headers: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
    let rows: Vec<Vec<String>> = items.iter().map(|i| columns.iter().map(|(_, cell)| cell(i)).collect()).collect();
    output::render_table(&headers, &rows)
}

/// The last segment of a resource name.
fn basename(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// The object's name within its instance: what follows `.../instances/I/objects/`.
pub fn object_short_name(name: &str) -> &str {
    let mut parts = name.splitn(8, '/');
    let head: Vec<&str> = parts.by_ref().take(7).collect();
    match (head.as_slice(), parts.next()) {
        (["projects", _, "locations", _, "instances", _, "objects"], Some(rest)) => rest,
        _ => name,
    }
}

const INSTANCE_COLUMNS: &[Column] = &[
    ("NAME", |v| basename(&text_at(v, "name")).to_string()),
    ("STATE", |v| text_at(v, "state")),
    ("ENCRYPTION", |v| text_at(v, "encryptionInfo.encryptionType")),
    ("KMS_KEY", |v| text_at(v, "kmsKey")),
];

const BACKUP_COLUMNS: &[Column] = &[
    ("NAME", |v| basename(&text_at(v, "name")).to_string()),
    ("STATE", |v| text_at(v, "state")),
    ("ENCRYPTION", |v| text_at(v, "encryptionInfo.encryptionType")),
    ("OBJECTS", |v| text_at(v, "objectCount")),
    ("SIZE", |v| text_at(v, "sizeBytes")),
    ("VERSION_TIME", |v| text_at(v, "versionTime")),
    ("KMS_KEY", |v| text_at(v, "kmsKey")),
];

const OBJECT_COLUMNS: &[Column] = &[
    ("NAME", |v| object_short_name(&text_at(v, "name")).to_string()),
    ("SIZE", |v| text_at(v, "size")),
    ("CONTENT_TYPE", |v| text_at(v, "contentType")),
    ("UPDATED", |v| text_at(v, "updateTime")),
];

// ---- instances ------------------------------------------------------------------------------

fn instance_of(ctx: &Ctx, arg: &str, location: &StoreLocationFlag) -> Result<InstanceName, CliError> {
    InstanceName::resolve(arg, location.location.as_deref(), ctx.project.as_deref())
}

async fn instances_create(ctx: &Ctx, c: &InstanceCreate) -> Result<(), CliError> {
    let name = instance_of(ctx, &c.target.instance, &c.target.location)?;
    // A primary given by ID is in the replica's project and location.
    let primary = match c.replica_of.as_deref() {
        Some(p) => Some(InstanceName::resolve(p, Some(&name.location), Some(&name.project))?),
        None => None,
    };
    let body = create_body(resolve_kms_key(&c.kms, &name)?, &c.labels, primary.as_ref().map(InstanceName::to_string));
    let query = [("instanceId", name.instance.clone())];
    let instance = ctx.client.post(&name.collection(), &query, &body).await?;
    match primary {
        Some(p) => print_stderr(&format!(
            "Created instance [{}], a read replica of [{}]; it catches up in the background (see lastSyncTime).",
            name.instance, p
        )),
        None => print_stderr(&format!("Created instance [{}].", name.instance)),
    }
    ctx.show(Kind::Other, &instance)
}

async fn instances_describe(ctx: &Ctx, c: &InstanceTarget) -> Result<(), CliError> {
    let name = instance_of(ctx, &c.instance, &c.location)?;
    let instance = ctx.client.get(&name.path()).await?;
    ctx.show(Kind::Other, &instance)
}

async fn instances_list(ctx: &Ctx, c: &InstanceList) -> Result<(), CliError> {
    let project = ctx.project()?;
    let Some(location) = c.location.as_deref() else {
        return Err(CliError::Usage(
            "The [--location] flag is required: the location to list the instances of.".to_string(),
        ));
    };
    let loc = LocationName::new(project, location).map_err(|e| CliError::Usage(e.to_string()))?;
    let items = list_all(ctx, "v1", &format!("{loc}/instances"), "instances", &[], &c.paging).await?;
    show_list(ctx, &items, INSTANCE_COLUMNS)
}

async fn instances_delete(ctx: &Ctx, c: &InstanceTarget) -> Result<(), CliError> {
    let name = instance_of(ctx, &c.instance, &c.location)?;
    ctx.client.delete(&name.path()).await?;
    print_stderr(&format!("Deleted instance [{}].", name.instance));
    Ok(())
}

async fn instances_action(ctx: &Ctx, c: &InstanceTarget, verb: &str) -> Result<(), CliError> {
    let name = instance_of(ctx, &c.instance, &c.location)?;
    let instance = ctx.client.post(&format!("{}:{verb}", name.path()), &[], &json!({})).await?;
    ctx.show(Kind::Other, &instance)
}

async fn instances_restore(ctx: &Ctx, c: &InstanceRestore) -> Result<(), CliError> {
    let name = instance_of(ctx, &c.target.instance, &c.target.location)?;
    // A backup instance given by ID is in the new instance's project and location.
    let backup = BackupName::resolve(
        &c.backup,
        c.backup_instance.as_deref(),
        Some(&name.location),
        Some(&name.project),
    )
    .map_err(|e| match e {
        CliError::Usage(m) if m.contains("[--instance]") => CliError::Usage(format!(
            "--backup \"{}\" is a backup ID: give the instance it was taken from with --backup-instance, or give \
                 --backup as a full name ({BACKUP_PATTERN}).",
            c.backup.trim()
        )),
        other => other,
    })?;
    let encryption = encryption_config(c.encryption_type.map(|t| t.wire_name()), resolve_kms_key(&c.kms, &name)?)?;
    let body = restore_body(&name, &backup, encryption, &c.labels);
    let instance = ctx.client.post(&format!("{}:restore", name.collection()), &[], &body).await?;
    print_stderr(&format!("Created instance [{}] from backup [{}].", name.instance, backup.full_name()));
    ctx.show(Kind::Other, &instance)
}

async fn instances_clone(ctx: &Ctx, c: &InstanceClone) -> Result<(), CliError> {
    let source = instance_of(ctx, &c.source, &c.location)?;
    let destination = c.destination.trim();
    if destination.is_empty() || destination.contains('/') {
        return Err(CliError::Usage(format!(
            "Invalid DESTINATION_ID \"{destination}\": give the new instance's ID (no `/`); it is created in {}.",
            source.collection()
        )));
    }
    let body = copy_body("destinationInstanceId", destination, None, resolve_kms_key(&c.kms, &source)?, &c.labels);
    let instance = ctx.client.post(&format!("{}:clone", source.path()), &[], &body).await?;
    print_stderr(&format!("Created instance [{destination}], a clone of [{}].", source.instance));
    ctx.show(Kind::Other, &instance)
}

async fn instances_export(ctx: &Ctx, c: &InstanceExport) -> Result<(), CliError> {
    let name = instance_of(ctx, &c.target.instance, &c.target.location)?;
    let destination = c.destination.trim();
    if destination.is_empty() {
        return Err(CliError::Usage(
            "--destination is empty: give the archive's file name, relative to the server's export directory."
                .to_string(),
        ));
    }
    let body = export_body(destination, resolve_kms_key(&c.kms, &name)?, c.allow_plaintext);
    let export = ctx.client.post(&format!("{}:export", name.path()), &[], &body).await?;
    let written = text_at(&export, "destination");
    print_stderr(&format!(
        "Exported instance [{}] to [{}].",
        name.instance,
        if written.is_empty() { destination } else { &written }
    ));
    if c.allow_plaintext {
        print_stderr("WARNING: The archive is not encrypted: anyone who can read the file can read its objects.");
    }
    ctx.show(Kind::Other, &export)
}

async fn instances_import(ctx: &Ctx, c: &InstanceImport) -> Result<(), CliError> {
    let name = instance_of(ctx, &c.target.instance, &c.target.location)?;
    let source = c.source.trim();
    if source.is_empty() {
        return Err(CliError::Usage(
            "--source is empty: give the archive's file name, relative to the server's export directory.".to_string(),
        ));
    }
    let body =
        copy_body("instanceId", &name.instance, Some(("source", source)), resolve_kms_key(&c.kms, &name)?, &c.labels);
    let instance = ctx.client.post(&format!("{}:import", name.collection()), &[], &body).await?;
    print_stderr(&format!("Created instance [{}] from archive [{source}].", name.instance));
    ctx.show(Kind::Other, &instance)
}

// ---- backups --------------------------------------------------------------------------------

fn backup_of(ctx: &Ctx, c: &BackupTarget) -> Result<BackupName, CliError> {
    let flags = &c.instance;
    BackupName::resolve(
        &c.backup,
        flags.instance.as_deref(),
        flags.location.location.as_deref(),
        ctx.project.as_deref(),
    )
}

async fn backups_create(ctx: &Ctx, c: &BackupCreate) -> Result<(), CliError> {
    let name = backup_of(ctx, &c.target)?;
    let encryption =
        encryption_config(c.encryption_type.map(|t| t.wire_name()), resolve_kms_key(&c.kms, &name.instance)?)?;
    let body = match encryption {
        Some(e) => json!({"encryptionConfig": e}),
        None => json!({}),
    };
    let query = [("backupId", name.backup.clone())];
    let backup = ctx.client.post(&format!("{}/backups", name.instance.path()), &query, &body).await?;
    print_stderr(&format!("Created backup [{}].", name.backup));
    ctx.show(Kind::Other, &backup)
}

async fn backups_describe(ctx: &Ctx, c: &BackupTarget) -> Result<(), CliError> {
    let name = backup_of(ctx, c)?;
    let backup = ctx.client.get(&name.path()).await?;
    ctx.show(Kind::Other, &backup)
}

async fn backups_list(ctx: &Ctx, c: &BackupList) -> Result<(), CliError> {
    let instance = instance_of(ctx, &c.instance, &c.location)?;
    let items = list_all(ctx, "v1", &format!("{}/backups", instance.path()), "backups", &[], &c.paging).await?;
    show_list(ctx, &items, BACKUP_COLUMNS)
}

async fn backups_delete(ctx: &Ctx, c: &BackupTarget) -> Result<(), CliError> {
    let name = backup_of(ctx, c)?;
    ctx.client.delete(&name.path()).await?;
    print_stderr(&format!("Deleted backup [{}].", name.backup));
    Ok(())
}

// ---- exports -------------------------------------------------------------------------------

async fn exports_reconcile(ctx: &Ctx) -> Result<(), CliError> {
    let project = ctx.project()?;
    let mut path = String::from("projects/");
    encode_segment(project, &mut path);
    path.push_str("/exports:reconcile");
    let report = ctx.client.post(&path, &[], &json!({})).await?;
    let count = |field: &str| match &report[field] {
        Value::Array(a) => a.len(),
        Value::Object(o) => o.len(),
        _ => 0,
    };
    print_stderr(&format!(
        "Reconciled the exports of project [{project}]: {} present, {} missing, {} back, {} unregistered files, {} partial files.",
        count("present"),
        count("missing"),
        count("returned"),
        count("unregistered"),
        count("partial")
    ));
    ctx.show(Kind::Other, &report)
}

// ---- objects: metadata ----------------------------------------------------------------------

async fn objects_describe(ctx: &Ctx, c: &ObjectTarget) -> Result<(), CliError> {
    let path = instance_of(ctx, &c.instance, &c.location)?.object_path(&c.object)?;
    let object = ctx.client.get(&path).await?;
    ctx.show(Kind::Other, &object)
}

async fn objects_list(ctx: &Ctx, c: &ObjectList) -> Result<(), CliError> {
    let instance = instance_of(ctx, &c.instance, &c.location)?;
    let mut query = Vec::new();
    if let Some(p) = c.prefix.as_deref().filter(|p| !p.is_empty()) {
        query.push(("prefix", p.to_string()));
    }
    let items = list_all(ctx, "v1", &format!("{}/objects", instance.path()), "objects", &query, &c.paging).await?;
    show_list(ctx, &items, OBJECT_COLUMNS)
}

async fn objects_delete(ctx: &Ctx, c: &ObjectTarget) -> Result<(), CliError> {
    let path = instance_of(ctx, &c.instance, &c.location)?.object_path(&c.object)?;
    ctx.client.delete(&path).await?;
    print_stderr(&format!("Deleted object [{}].", c.object));
    Ok(())
}

// ---- objects: data --------------------------------------------------------------------------

/// The streaming client of object uploads and downloads: the endpoint and token of
/// `ctx.client`, without its overall deadline (a 5 GiB transfer takes a while).
struct Media<'a> {
    /// The endpoint, without a trailing `/`.
    endpoint: &'a str,
    /// The token to send.
    credentials: &'a Credentials,
}

impl Media<'_> {
    /// An HTTP client; `idle_timeout` bounds the wait for the answer and for each piece of a
    /// response body (not usable for uploads: it would also run while the body is being sent).
    fn http(&self, idle_timeout: Option<Duration>) -> Result<reqwest::Client, CliError> {
        let mut b = reqwest::Client::builder()
            .user_agent(concat!("keyhold-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10));
        if let Some(t) = idle_timeout {
            b = b.read_timeout(t);
        }
        b.build().map_err(|e| CliError::Other(format!("cannot set up the HTTP client: {e}")))
    }

    /// The URL of `/v1/{path}` with `query`.
    fn url(&self, path: &str, query: &[(&str, &str)]) -> Result<Url, CliError> {
        media_url(self.endpoint, path, query)
    }

    /// Sends a request with the bearer token; a non-2xx answer becomes the server's error.
    async fn send(&self, mut req: reqwest::RequestBuilder) -> Result<Response, CliError> {
        if let Some(token) = self.credentials.token() {
            req = req.bearer_auth(token.expose());
        }
        let resp = req.send().await.map_err(|e| self.request_error(&e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        // An error answer holds a google.rpc.Status, never object data.
        let body = resp.bytes().await.map_err(|e| self.request_error(&e))?;
        Err(api_error(status, &body, self.credentials))
    }

    /// The error for a request that got no answer: the server unreachable (with the hint of
    /// every other command), or the transfer cut off.
    fn request_error(&self, e: &reqwest::Error) -> CliError {
        let detail = innermost(e);
        if e.is_connect() {
            CliError::Connect { endpoint: self.endpoint.to_string(), detail }
        } else if e.is_timeout() {
            CliError::Other(format!("the request to {} timed out", self.endpoint))
        } else {
            CliError::Other(format!("the request to {} failed: {detail}", self.endpoint))
        }
    }
}

/// The URL of `/v1/{path}` on `endpoint`; `path` is already percent-encoded and kept as is.
fn media_url(endpoint: &str, path: &str, query: &[(&str, &str)]) -> Result<Url, CliError> {
    let mut url = Url::parse(&format!("{endpoint}/v1/{path}"))
        .map_err(|e| CliError::Usage(format!("invalid request URL for {path}: {e}")))?;
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    Ok(url)
}

/// The innermost cause of an error ("Connection refused (os error 111)").
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut source = e;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}

fn is_stdio(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Standard input as an async file (read on tokio's blocking threads): tokio's own `stdin()`
/// needs a feature this crate does not enable.
fn stdin_file() -> std::io::Result<tokio::fs::File> {
    #[cfg(unix)]
    let owned = std::os::fd::AsFd::as_fd(&std::io::stdin()).try_clone_to_owned()?;
    #[cfg(windows)]
    let owned = std::os::windows::io::AsHandle::as_handle(&std::io::stdin()).try_clone_to_owned()?;
    Ok(tokio::fs::File::from_std(std::fs::File::from(owned)))
}

async fn objects_put(ctx: &Ctx, media: &Media<'_>, c: &ObjectPut) -> Result<(), CliError> {
    let instance = instance_of(ctx, &c.target.instance, &c.target.location)?;
    let path = instance.object_path(&c.target.object)?;
    let content_type = HeaderValue::from_str(c.content_type.trim())
        .map_err(|_| CliError::Usage(format!("Invalid --content-type \"{}\".", c.content_type)))?;
    let read_err = |e: std::io::Error| CliError::Io(format!("Unable to read file [{}]: {e}", c.file.display()));
    let (file, length) = if is_stdio(&c.file) {
        use std::io::IsTerminal as _;
        if std::io::stdin().is_terminal() {
            return Err(CliError::Usage(
                "Standard input is a terminal: give the file to upload with --file PATH, or pipe the data in."
                    .to_string(),
            ));
        }
        (stdin_file().map_err(read_err)?, None)
    } else {
        let file = tokio::fs::File::open(&c.file).await.map_err(read_err)?;
        let meta = file.metadata().await.map_err(read_err)?;
        if meta.is_dir() {
            return Err(CliError::Io(format!("Unable to read file [{}]: it is a directory", c.file.display())));
        }
        // A regular file's size is sent as Content-Length; pipes and devices go chunked.
        (file, meta.is_file().then_some(meta.len()))
    };
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(file, UPLOAD_CHUNK));
    let mut req = media
        .http(None)?
        .put(media.url(&path, &[])?)
        .header(ACCEPT, "application/json")
        .header(CONTENT_TYPE, content_type)
        .body(body);
    if let Some(n) = length {
        req = req.header(CONTENT_LENGTH, n);
    }
    let resp = match media.send(req).await {
        Ok(r) => r,
        Err(CliError::Other(cut)) => return Err(explain_cut_upload(ctx, &instance, cut).await),
        Err(e) => return Err(e),
    };
    let bytes = resp.bytes().await.map_err(|e| media.request_error(&e))?;
    let object: Value = serde_json::from_slice(&bytes).map_err(|e| {
        CliError::Other(format!(
            "the server at {} sent a response that could not be parsed ({:?} error at line {}, column {})",
            media.endpoint,
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    ctx.show(Kind::Other, &object)
}

/// The error for an upload the server cut off. A server that refuses an upload (no such
/// instance, bad token, no permission) answers before reading the body, and closes the
/// connection; the client then sees only a broken pipe. Reading the instance tells the common
/// causes apart.
async fn explain_cut_upload(ctx: &Ctx, instance: &InstanceName, cut: String) -> CliError {
    match ctx.client.get(&instance.path()).await {
        Err(e @ CliError::Api { code: Code::NotFound | Code::Unauthenticated, .. }) => e,
        _ => CliError::Other(format!(
            "{cut}
The server closed the connection before the upload finished: it may have refused the upload \
             (check that you may write objects to instance [{}]).",
            instance.instance
        )),
    }
}

/// Where downloaded data comes from, a piece at a time (a response body; a list in tests).
trait ChunkSource {
    /// The next piece, `None` at the end, or why the data stopped arriving.
    async fn next_chunk(&mut self) -> Result<Option<impl AsRef<[u8]>>, CliError>;
}

/// A response body, with its failures described without its content.
struct Download<'a> {
    resp: Response,
    media: &'a Media<'a>,
    object: &'a str,
}

impl ChunkSource for Download<'_> {
    async fn next_chunk(&mut self) -> Result<Option<impl AsRef<[u8]>>, CliError> {
        self.resp.chunk().await.map_err(|e| {
            let why = if e.is_timeout() { "no data arrived for a while".to_string() } else { innermost(&e) };
            CliError::Other(format!(
                "The download of object [{}] from {} was interrupted: {why}",
                self.object, self.media.endpoint
            ))
        })
    }
}

/// A temporary file next to the destination, removed when dropped unless renamed into place.
struct TempFile {
    path: PathBuf,
    kept: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// `dest`'s temporary sibling: `dest.tmp-<random>`.
fn temp_path(dest: &Path) -> Result<PathBuf, CliError> {
    let Some(file_name) = dest.file_name() else {
        return Err(CliError::Usage(format!("--output-file [{}] does not name a file.", dest.display())));
    };
    let mut random = [0u8; 8];
    keyhold_crypto::random_bytes(&mut random)
        .map_err(|e| CliError::Other(format!("cannot name a temporary file: {e}")))?;
    let mut tmp_name = file_name.to_os_string();
    tmp_name.push(format!(".tmp-{}", keyhold_crypto::hex(&random)));
    Ok(dest.with_file_name(tmp_name))
}

/// Writes everything `source` yields to `dest`, atomically: into a temporary file in the same
/// directory (readable by its owner only), renamed over `dest` once complete. On any failure
/// the temporary file is removed and `dest` is left as it was.
async fn write_file_atomically(source: &mut impl ChunkSource, dest: &Path) -> Result<(), CliError> {
    let write_err = |e: std::io::Error| CliError::Io(format!("Unable to write file [{}]: {e}", dest.display()));
    let mut tmp = TempFile { path: temp_path(dest)?, kept: false };
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(&tmp.path).await.map_err(write_err)?;
    while let Some(chunk) = source.next_chunk().await? {
        file.write_all(chunk.as_ref()).await.map_err(write_err)?;
    }
    file.flush().await.map_err(write_err)?;
    file.sync_all().await.map_err(write_err)?;
    drop(file);
    tokio::fs::rename(&tmp.path, dest).await.map_err(write_err)?;
    tmp.kept = true;
    Ok(())
}

/// Writes everything `source` yields to standard output, a piece at a time. A reader that
/// stops reading (`| head`) ends the download without an error.
async fn write_stdout(source: &mut impl ChunkSource) -> Result<(), CliError> {
    use std::io::Write as _;
    let stdout_err = |e: std::io::Error| CliError::Io(format!("Unable to write to standard output: {e}"));
    while let Some(chunk) = source.next_chunk().await? {
        match std::io::stdout().write_all(chunk.as_ref()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(stdout_err(e)),
        }
    }
    match std::io::stdout().flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(stdout_err(e)),
        _ => Ok(()),
    }
}

async fn objects_get(ctx: &Ctx, media: &Media<'_>, c: &ObjectGet) -> Result<(), CliError> {
    let t = &c.target;
    let path = instance_of(ctx, &t.instance, &t.location)?.object_path(&t.object)?;
    let url = media.url(&path, &[("alt", "media")])?;
    let resp = media.send(media.http(Some(DOWNLOAD_IDLE_TIMEOUT))?.get(url)).await?;
    let mut download = Download { resp, media, object: &t.object };
    if is_stdio(&c.output_file) {
        write_stdout(&mut download).await
    } else {
        write_file_atomically(&mut download, &c.output_file).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{CliCommand, ClientOptions};
    use clap::{CommandFactory, Parser};

    #[derive(Parser, Debug)]
    #[command(name = "keyhold")]
    struct TestCli {
        #[command(flatten)]
        client: ClientOptions,
        #[command(subcommand)]
        command: CliCommand,
    }

    fn store(args: &str) -> StoreCommand {
        let cli = match TestCli::try_parse_from(std::iter::once("keyhold").chain(args.split_whitespace())) {
            Ok(c) => c,
            Err(e) => panic!("{args}: {e}"),
        };
        let CliCommand::Store(s) = cli.command else { panic!("{args}: not a store command") };
        s.command
    }

    fn instance(p: &str, l: &str, i: &str) -> InstanceName {
        InstanceName { project: p.into(), location: l.into(), instance: i.into() }
    }

    #[test]
    fn command_tree() {
        TestCli::command().debug_assert();
        let lines = [
            (
                "store instances create i --location global --kms-key k --kms-keyring r --labels a=1",
                "store.instances.create",
            ),
            ("store instances describe i --location global", "store.instances.describe"),
            ("store instances list --location - --page-size 5", "store.instances.list"),
            ("store instances delete projects/p/locations/l/instances/i", "store.instances.delete"),
            ("store instances rewrap i --location l", "store.instances.rewrap"),
            ("store instances reencrypt i --location l", "store.instances.reencrypt"),
            ("store objects put i a/b.txt --file f --content-type text/plain --location l", "store.objects.put"),
            ("store objects get i a/b.txt --output-file out --location l", "store.objects.get"),
            ("store objects describe i a/b.txt --location l", "store.objects.describe"),
            ("store objects list i --prefix a/ --page-size 2 --location l", "store.objects.list"),
            ("store objects delete i a/b.txt --location l", "store.objects.delete"),
            (
                "store instances create r --location l --replica-of i --kms-key k --kms-keyring kr",
                "store.instances.create",
            ),
            (
                "store instances restore n --location l --backup b --backup-instance i \
                 --encryption-type customer-managed-encryption --kms-key k --kms-keyring r --labels a=1",
                "store.instances.restore",
            ),
            ("store instances clone i j --location l --kms-key k --kms-keyring r", "store.instances.clone"),
            (
                "store instances export i --location l --destination a.archive --allow-plaintext",
                "store.instances.export",
            ),
            (
                "store instances import n --location l --source a.archive --kms-key k --kms-keyring r",
                "store.instances.import",
            ),
            (
                "store backups create b --instance i --location l --encryption-type google-default-encryption",
                "store.backups.create",
            ),
            ("store backups describe projects/p/locations/l/instances/i/backups/b", "store.backups.describe"),
            ("store backups list --instance i --location l --limit 3", "store.backups.list"),
            ("store backups delete b --instance projects/p/locations/l/instances/i", "store.backups.delete"),
            ("store exports reconcile", "store.exports.reconcile"),
        ];
        for (line, path) in lines {
            assert_eq!(store(line).path(), path, "{line}");
        }
        let StoreCommand::Objects(ObjectsArgs { command: ObjectsCommand::Put(p) }) = store("store objects put i o")
        else {
            panic!("not objects put")
        };
        assert_eq!((p.file.as_os_str(), p.content_type.as_str()), ("-".as_ref(), "application/octet-stream"));
        let StoreCommand::Objects(ObjectsArgs { command: ObjectsCommand::Get(g) }) = store("store objects get i o")
        else {
            panic!("not objects get")
        };
        assert!(is_stdio(&g.output_file));
        // An archive is encrypted under a key or explicitly not at all, never both.
        let parsed = TestCli::try_parse_from(
            "keyhold store instances export i --destination a --allow-plaintext --kms-key k".split_whitespace(),
        );
        assert!(parsed.is_err());
        let StoreCommand::Instances(InstancesArgs { command: InstancesCommand::Restore(r) }) =
            store("store instances restore n --backup b --encryption-type use-config-default-or-backup-encryption")
        else {
            panic!("not instances restore")
        };
        assert_eq!(
            r.encryption_type.map(RestoreEncryptionType::wire_name),
            Some("USE_CONFIG_DEFAULT_OR_BACKUP_ENCRYPTION")
        );
        let StoreCommand::Backups(BackupsArgs { command: BackupsCommand::Create(b) }) =
            store("store backups create b --instance i --encryption-type use-database-encryption")
        else {
            panic!("not backups create")
        };
        assert_eq!(b.encryption_type.map(BackupEncryptionType::wire_name), Some("USE_DATABASE_ENCRYPTION"));
    }

    #[test]
    fn backup_names() {
        let b = BackupName::resolve("b1", Some("inst"), Some("us-east1"), Some("p")).unwrap();
        assert_eq!(b, BackupName { instance: instance("p", "us-east1", "inst"), backup: "b1".into() });
        assert_eq!(b.path(), "projects/p/locations/us-east1/instances/inst/backups/b1");
        assert_eq!(b.full_name(), "projects/p/locations/us-east1/instances/inst/backups/b1");
        // A full name needs nothing else; a full instance name needs no --location.
        let full = BackupName::resolve("projects/q/locations/l/instances/x/backups/y", None, None, None).unwrap();
        assert_eq!(full, BackupName { instance: instance("q", "l", "x"), backup: "y".into() });
        let b = BackupName::resolve("y", Some("projects/q/locations/l/instances/x"), None, None).unwrap();
        assert_eq!(b, full);

        let e = BackupName::resolve("b1", None, Some("l"), Some("p")).unwrap_err().to_string();
        assert!(e.contains("[--instance]") && e.contains(BACKUP_PATTERN), "{e}");
        let e = BackupName::resolve("b1", Some("i"), None, Some("p")).unwrap_err().to_string();
        assert!(e.contains("[--location]"), "{e}");
        assert!(BackupName::resolve("projects/q/locations/l/instances/x/backups", None, None, None).is_err());
        assert!(BackupName::resolve("projects/q/locations/l/instances/x/objects/y", None, None, None).is_err());
        assert!(BackupName::resolve("a/b", Some("i"), Some("l"), Some("p")).is_err());
        // IDs are the server's to judge, but reach it intact.
        let odd = BackupName { instance: instance("p", "l", "i"), backup: "a b:c".into() };
        assert_eq!(odd.path(), "projects/p/locations/l/instances/i/backups/a%20b%3Ac");
        assert_eq!(odd.full_name(), "projects/p/locations/l/instances/i/backups/a b:c");
    }

    #[test]
    fn encryption_configs() {
        let key = || Some("projects/p/locations/l/keyRings/r/cryptoKeys/k".to_string());
        assert_eq!(encryption_config(None, None).unwrap(), None);
        let cmek = json!({"encryptionType": "CUSTOMER_MANAGED_ENCRYPTION", "kmsKeyName": key()});
        assert_eq!(encryption_config(None, key()).unwrap(), Some(cmek.clone()));
        assert_eq!(encryption_config(Some(CUSTOMER_MANAGED), key()).unwrap(), Some(cmek));
        assert_eq!(
            encryption_config(Some("GOOGLE_DEFAULT_ENCRYPTION"), None).unwrap(),
            Some(json!({"encryptionType": "GOOGLE_DEFAULT_ENCRYPTION"}))
        );
        let e = encryption_config(Some(CUSTOMER_MANAGED), None).unwrap_err().to_string();
        assert!(e.contains("needs --kms-key"), "{e}");
        let e = encryption_config(Some("USE_DATABASE_ENCRYPTION"), key()).unwrap_err().to_string();
        assert!(e.contains("not use-database-encryption"), "{e}");
    }

    #[test]
    fn copy_bodies() {
        let inst = instance("p", "l", "new");
        let backup = BackupName { instance: instance("p", "l", "old"), backup: "b".into() };
        let labels = [parse_labels("a=1").unwrap()];
        assert_eq!(
            restore_body(&inst, &backup, None, &[]),
            json!({"instanceId": "new", "backup": "projects/p/locations/l/instances/old/backups/b"})
        );
        assert_eq!(
            restore_body(&inst, &backup, Some(json!({"encryptionType": "GOOGLE_DEFAULT_ENCRYPTION"})), &labels),
            json!({
                "instanceId": "new",
                "backup": "projects/p/locations/l/instances/old/backups/b",
                "encryptionConfig": {"encryptionType": "GOOGLE_DEFAULT_ENCRYPTION"},
                "labels": {"a": "1"},
            })
        );
        assert_eq!(copy_body("destinationInstanceId", "c", None, None, &[]), json!({"destinationInstanceId": "c"}));
        assert_eq!(
            copy_body("instanceId", "n", Some(("source", "a.archive")), Some("K".into()), &labels),
            json!({"instanceId": "n", "source": "a.archive", "kmsKey": "K", "labels": {"a": "1"}})
        );
        assert_eq!(export_body("a.archive", None, false), json!({"destination": "a.archive"}));
        assert_eq!(export_body("a.archive", None, true), json!({"destination": "a.archive", "allowPlaintext": true}));
        assert_eq!(export_body("x", Some("K".into()), false), json!({"destination": "x", "kmsKey": "K"}));
    }

    #[test]
    fn instance_names() {
        let i = InstanceName::resolve("inst", Some("us-east1"), Some("p")).unwrap();
        assert_eq!(i, instance("p", "us-east1", "inst"));
        assert_eq!(i.path(), "projects/p/locations/us-east1/instances/inst");
        assert_eq!(i.collection(), "projects/p/locations/us-east1/instances");
        // A full name needs neither --location nor a project, and wins over them.
        let full = InstanceName::resolve("projects/q/locations/l/instances/x", Some("other"), None).unwrap();
        assert_eq!(full, instance("q", "l", "x"));

        let e = InstanceName::resolve("inst", None, Some("p")).unwrap_err().to_string();
        assert!(e.contains("[--location]") && e.contains(INSTANCE_PATTERN), "{e}");
        let e = InstanceName::resolve("inst", Some("l"), None).unwrap_err().to_string();
        assert!(e.contains("[project]"), "{e}");
        assert!(InstanceName::resolve("projects/q/locations/l/instances", None, None).is_err());
        assert!(InstanceName::resolve("projects/q/locations/l/instances/a/b", None, None).is_err());
        assert!(InstanceName::resolve("a/b", Some("l"), Some("p")).is_err());
        assert!(InstanceName::resolve("i", Some("bad loc"), Some("p")).is_err());
        // IDs are the server's to judge, but reach it intact.
        assert_eq!(instance("p", "l", "a b%:c").path(), "projects/p/locations/l/instances/a%20b%25%3Ac");
    }

    #[test]
    fn object_paths_keep_slashes_and_encode_the_rest() {
        let i = instance("p", "l", "i");
        assert_eq!(i.object_path("a/b/c.txt").unwrap(), "projects/p/locations/l/instances/i/objects/a/b/c.txt");
        assert_eq!(
            i.object_path("dir/sub dir/100% done.txt").unwrap(),
            "projects/p/locations/l/instances/i/objects/dir/sub%20dir/100%25%20done.txt"
        );
        assert_eq!(encode_object_name("a?b#c&d=e+f").unwrap(), "a%3Fb%23c%26d%3De%2Bf");
        assert_eq!(encode_object_name("caf\u{e9}/x:y").unwrap(), "caf%C3%A9/x%3Ay");
        assert_eq!(encode_object_name("%2F").unwrap(), "%252F");
        assert_eq!(encode_object_name("a//b/").unwrap(), "a//b/");
        assert_eq!(encode_object_name(".hidden/..x").unwrap(), ".hidden/..x");
        for bad in ["", ".", "a/../b", "a/."] {
            assert!(encode_object_name(bad).is_err(), "{bad:?}");
        }
        // The URL keeps the encoding as built, with slashes raw and the query added.
        let url =
            media_url("http://h:1", &i.object_path("dir/sub dir/100%.txt").unwrap(), &[("alt", "media")]).unwrap();
        assert_eq!(
            url.as_str(),
            "http://h:1/v1/projects/p/locations/l/instances/i/objects/dir/sub%20dir/100%25.txt?alt=media"
        );
        let url = media_url("http://h:1", &i.object_path("q?x#y").unwrap(), &[]).unwrap();
        assert_eq!(url.path(), "/v1/projects/p/locations/l/instances/i/objects/q%3Fx%23y");
        assert_eq!(url.query(), None);
        assert_eq!(url.fragment(), None);
    }

    #[test]
    fn kms_key_resolution() {
        let inst = instance("p", "us-east1", "i");
        let flags = |key: Option<&str>, ring: Option<&str>, loc: Option<&str>, proj: Option<&str>| KmsKeyFlags {
            kms_key: key.map(Into::into),
            kms_keyring: ring.map(Into::into),
            kms_location: loc.map(Into::into),
            kms_project: proj.map(Into::into),
        };
        assert_eq!(resolve_kms_key(&flags(None, None, None, None), &inst).unwrap(), None);
        let full = "projects/k/locations/global/keyRings/r/cryptoKeys/key";
        assert_eq!(resolve_kms_key(&flags(Some(full), None, None, None), &inst).unwrap().as_deref(), Some(full));
        // gcloud style: location and project default to the instance's.
        assert_eq!(
            resolve_kms_key(&flags(Some("key"), Some("r"), None, None), &inst).unwrap().as_deref(),
            Some("projects/p/locations/us-east1/keyRings/r/cryptoKeys/key")
        );
        assert_eq!(
            resolve_kms_key(&flags(Some("key"), Some("r"), Some("global"), Some("kms-proj")), &inst)
                .unwrap()
                .as_deref(),
            Some("projects/kms-proj/locations/global/keyRings/r/cryptoKeys/key")
        );
        assert_eq!(
            resolve_kms_key(&flags(Some("key"), Some("projects/x/locations/y/keyRings/z"), None, None), &inst)
                .unwrap()
                .as_deref(),
            Some("projects/x/locations/y/keyRings/z/cryptoKeys/key")
        );
        let e = resolve_kms_key(&flags(Some("key"), None, None, None), &inst).unwrap_err().to_string();
        assert!(e.contains("[--kms-keyring]") && e.contains(KEY_PATTERN), "{e}");
        let e = resolve_kms_key(&flags(None, Some("r"), None, None), &inst).unwrap_err().to_string();
        assert!(e.contains("give --kms-key"), "{e}");
        assert!(resolve_kms_key(&flags(Some("bad key"), Some("r"), None, None), &inst).is_err());
        assert!(
            resolve_kms_key(&flags(Some("projects/k/locations/global/keyRings/r"), None, None, None), &inst).is_err()
        );
    }

    #[test]
    fn create_bodies() {
        assert_eq!(create_body(None, &[], None), json!({}));
        let labels = [parse_labels("a=1,b=2").unwrap(), parse_labels("b=3").unwrap()];
        assert_eq!(
            create_body(Some("projects/p/locations/l/keyRings/r/cryptoKeys/k".into()), &labels, None),
            json!({"kmsKey": "projects/p/locations/l/keyRings/r/cryptoKeys/k", "labels": {"a": "1", "b": "3"}})
        );
        assert_eq!(
            create_body(None, &[], Some("projects/p/locations/l/instances/i".into())),
            json!({"replicaOf": "projects/p/locations/l/instances/i"})
        );
    }

    #[test]
    fn list_tables() {
        let instances = [json!({
            "name": "projects/p/locations/l/instances/i1",
            "state": "READY",
            "kmsKey": "projects/p/locations/l/keyRings/r/cryptoKeys/k",
            "encryptionInfo": {"encryptionType": "CUSTOMER_MANAGED_ENCRYPTION", "kmsKeyVersions": []},
        })];
        assert_eq!(
            table(&instances, INSTANCE_COLUMNS),
            "NAME  STATE  ENCRYPTION                   KMS_KEY\n\
             i1    READY  CUSTOMER_MANAGED_ENCRYPTION  projects/p/locations/l/keyRings/r/cryptoKeys/k\n"
        );
        let objects = [json!({
            "name": "projects/p/locations/l/instances/objects/objects/a/b c.txt",
            "size": "1048576",
            "contentType": "text/plain",
            "updateTime": "2025-01-01T00:00:00Z",
        })];
        assert_eq!(
            table(&objects, OBJECT_COLUMNS),
            "NAME       SIZE     CONTENT_TYPE  UPDATED\na/b c.txt  1048576  text/plain    2025-01-01T00:00:00Z\n"
        );
        let backups = [json!({
            "name": "projects/p/locations/l/instances/i1/backups/b1",
            "instance": "projects/p/locations/l/instances/i1",
            "state": "READY",
            "encryptionInfo": {"encryptionType": "GOOGLE_DEFAULT_ENCRYPTION", "kmsKeyVersions": []},
            "sizeBytes": "11",
            "objectCount": "1",
            "versionTime": "2025-01-01T00:00:00Z",
        })];
        assert_eq!(
            table(&backups, BACKUP_COLUMNS),
            "NAME  STATE  ENCRYPTION                 OBJECTS  SIZE  VERSION_TIME          KMS_KEY\n\
             b1    READY  GOOGLE_DEFAULT_ENCRYPTION  1        11    2025-01-01T00:00:00Z\n"
        );
        assert_eq!(object_short_name("not/an/object"), "not/an/object");
        assert_eq!(object_short_name("projects/p/locations/l/instances/i/objects/x"), "x");
    }

    #[test]
    fn server_errors() {
        use reqwest::StatusCode;
        let body = br#"{"error":{"code":400,"message":"Instance i is suspended.","status":"FAILED_PRECONDITION"}}"#;
        assert_eq!(
            api_error(StatusCode::BAD_REQUEST, body, &Credentials::none()).to_string(),
            "FAILED_PRECONDITION: Instance i is suspended."
        );
        assert_eq!(api_error(StatusCode::BAD_GATEWAY, b"", &Credentials::none()).to_string(), "HTTP 502: Bad Gateway");
    }

    /// Chunks from a list, then an error if `fail` is set.
    struct Chunks {
        chunks: Vec<&'static [u8]>,
        fail: bool,
    }

    impl ChunkSource for Chunks {
        async fn next_chunk(&mut self) -> Result<Option<impl AsRef<[u8]>>, CliError> {
            if self.chunks.is_empty() {
                return if self.fail { Err(CliError::Other("connection reset".into())) } else { Ok(None) };
            }
            Ok(Some(self.chunks.remove(0)))
        }
    }

    fn dir_entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn downloads_replace_the_file_only_when_complete() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.bin");
        std::fs::write(&dest, b"old").unwrap();

        let mut broken = Chunks { chunks: vec![b"new ", b"data"], fail: true };
        let e = write_file_atomically(&mut broken, &dest).await.unwrap_err();
        assert_eq!(e.to_string(), "connection reset");
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
        assert_eq!(dir_entries(dir.path()), ["out.bin"], "the temporary file is removed");

        let mut ok = Chunks { chunks: vec![b"new ", b"", b"data"], fail: false };
        write_file_atomically(&mut ok, &dest).await.unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"new data");
        assert_eq!(dir_entries(dir.path()), ["out.bin"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777, 0o600);
        }

        let missing_dir = dir.path().join("nope").join("f");
        let e = write_file_atomically(&mut Chunks { chunks: vec![b"x"], fail: false }, &missing_dir).await;
        assert!(e.unwrap_err().to_string().starts_with("Unable to write file ["));
        let tmp = temp_path(&dest).unwrap();
        assert_eq!(tmp.parent(), dest.parent());
        assert!(tmp.file_name().unwrap().to_string_lossy().starts_with("out.bin.tmp-"));
        assert!(temp_path(Path::new("/")).is_err());
    }
}
