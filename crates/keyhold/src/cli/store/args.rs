//! The clap tree of `keyhold store`: every group, command and flag, with gcloud's names.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::super::output::PagingFlags;
use super::super::parse::{Labels, parse_labels};
use super::{CUSTOMER_MANAGED, DEFAULT_CONTENT_TYPE};

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
    /// Follow, list and cancel the long-running operations that copies run as (backups,
    /// restores, clones, exports, imports, re-encryptions).
    Operations(OperationsArgs),
}

/// `keyhold store operations`.
#[derive(Args, Debug)]
pub struct OperationsArgs {
    /// The command.
    #[command(subcommand)]
    pub command: OperationsCommand,
}

/// Commands under `keyhold store operations`.
#[derive(Subcommand, Debug)]
pub enum OperationsCommand {
    /// Show an operation: what it does, how far it got, and how it ended.
    Describe(OperationTarget),
    /// List the operations in a location, oldest first.
    List(OperationList),
    /// Ask a running operation to stop: what it built is deleted and it ends CANCELLED.
    Cancel(OperationTarget),
    /// Wait for an operation to finish, then show what it made (or why it failed).
    Wait(OperationTarget),
}

/// A command on one operation.
#[derive(Args, Debug)]
pub struct OperationTarget {
    /// The operation ID, or its full name projects/P/locations/L/operations/ID.
    #[arg(value_name = "OPERATION")]
    pub operation: String,
    #[command(flatten)]
    pub location: StoreLocationFlag,
}

/// `keyhold store operations list`.
#[derive(Args, Debug)]
pub struct OperationList {
    /// Location to list the operations of.
    #[arg(long, value_name = "LOCATION")]
    pub location: String,
    #[command(flatten)]
    pub paging: PagingFlags,
}

/// `--async`, of the commands that run as long-running operations.
#[derive(Args, Debug, Clone, Default)]
pub struct AsyncFlag {
    /// Return at once with the operation instead of waiting for it to finish (follow it with
    /// `keyhold store operations describe|wait`).
    #[arg(long = "async")]
    pub run_async: bool,
}

/// `keyhold store instances reencrypt`.
#[derive(Args, Debug)]
pub struct InstanceReencrypt {
    #[command(flatten)]
    pub target: InstanceTarget,
    #[command(flatten)]
    pub wait: AsyncFlag,
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
    /// Re-encrypt every object of the instance under new data keys (a long-running operation:
    /// waited for unless --async).
    Reencrypt(InstanceReencrypt),
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
    pub fn wire_name(self) -> &'static str {
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
    pub fn wire_name(self) -> &'static str {
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
    #[command(flatten)]
    pub wait: AsyncFlag,
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
    #[command(flatten)]
    pub wait: AsyncFlag,
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
    #[command(flatten)]
    pub wait: AsyncFlag,
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
    #[command(flatten)]
    pub wait: AsyncFlag,
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
    #[command(flatten)]
    pub wait: AsyncFlag,
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
