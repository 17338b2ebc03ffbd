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
//! * operations: copies (backups, restores, clones, exports, imports, `:reencrypt`) answer
//!   with a long-running operation, followed by the command until it is done (`--async`
//!   returns at once); `GET /v1/projects/P/locations/L/operations[/ID]`, `POST ...:cancel`;
//! * objects: `PUT|GET|DELETE /v1/.../instances/ID/objects/NAME` (`?alt=media` for the data),
//!   `GET .../objects?prefix=`.
//!
//! Object data is streamed both ways, never held in memory whole (objects can be 5 GiB), by a
//! client of its own ([`Media`]): it sends the same bearer token as every other command, but
//! without the two-minute deadline of the JSON calls. Downloaded data goes only to the file the
//! user named (written to a temporary file and renamed into place) or to standard output; it
//! never appears in a message.
//!
//! The module is split by command group: [`args`] (the clap tree), [`names`] (resource names
//! and URL paths), [`instances`] (with exports), [`backups`], [`objects`] and [`operations`]; list and table
//! helpers shared with other commands are in `cli::output`, the streaming transfer of object
//! data in `cli::transfer`.

mod args;
mod backups;
mod instances;
mod names;
mod objects;
mod operations;

pub use args::*;

use super::credentials::Credentials;
use super::transfer::Media;
use super::{CliError, Ctx};

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
            StoreCommand::Operations(a) => match a.command {
                OperationsCommand::Describe(_) => "operations.describe",
                OperationsCommand::List(_) => "operations.list",
                OperationsCommand::Cancel(_) => "operations.cancel",
                OperationsCommand::Wait(_) => "operations.wait",
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
        let media = Media { endpoint: endpoint.trim().trim_end_matches('/'), credentials, tls: ctx.client.tls() };
        match self {
            StoreCommand::Instances(a) => match a.command {
                InstancesCommand::Create(c) => instances::instances_create(ctx, &c).await,
                InstancesCommand::Describe(c) => instances::instances_describe(ctx, &c).await,
                InstancesCommand::List(c) => instances::instances_list(ctx, &c).await,
                InstancesCommand::Delete(c) => instances::instances_delete(ctx, &c).await,
                InstancesCommand::Rewrap(c) => instances::instances_action(ctx, &c, "rewrap").await,
                InstancesCommand::Reencrypt(c) => instances::instances_reencrypt(ctx, &c).await,
                InstancesCommand::Restore(c) => instances::instances_restore(ctx, &c).await,
                InstancesCommand::Clone(c) => instances::instances_clone(ctx, &c).await,
                InstancesCommand::Export(c) => instances::instances_export(ctx, &c).await,
                InstancesCommand::Import(c) => instances::instances_import(ctx, &c).await,
            },
            StoreCommand::Backups(a) => match a.command {
                BackupsCommand::Create(c) => backups::backups_create(ctx, &c).await,
                BackupsCommand::Describe(c) => backups::backups_describe(ctx, &c).await,
                BackupsCommand::List(c) => backups::backups_list(ctx, &c).await,
                BackupsCommand::Delete(c) => backups::backups_delete(ctx, &c).await,
            },
            StoreCommand::Exports(a) => match a.command {
                ExportsCommand::Reconcile(_) => instances::exports_reconcile(ctx).await,
            },
            StoreCommand::Operations(a) => match a.command {
                OperationsCommand::Describe(c) => operations::operations_describe(ctx, &c).await,
                OperationsCommand::List(c) => operations::operations_list(ctx, &c).await,
                OperationsCommand::Cancel(c) => operations::operations_cancel(ctx, &c).await,
                OperationsCommand::Wait(c) => operations::operations_wait(ctx, &c).await,
            },
            StoreCommand::Objects(a) => match a.command {
                ObjectsCommand::Put(c) => objects::objects_put(ctx, &media, &c).await,
                ObjectsCommand::Get(c) => objects::objects_get(ctx, &media, &c).await,
                ObjectsCommand::Describe(c) => objects::objects_describe(ctx, &c).await,
                ObjectsCommand::List(c) => objects::objects_list(ctx, &c).await,
                ObjectsCommand::Delete(c) => objects::objects_delete(ctx, &c).await,
            },
        }
    }
}

/// The last segment of a resource name.
fn basename(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::files::is_stdio;
    use crate::cli::output::table;
    use crate::cli::{CliCommand, ClientOptions};
    use backups::BACKUP_COLUMNS;
    use clap::{CommandFactory, Parser};
    use instances::INSTANCE_COLUMNS;
    use keyhold_api::name::InstanceName;
    use objects::{OBJECT_COLUMNS, object_short_name};
    use serde_json::json;

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

    pub(super) fn instance(p: &str, l: &str, i: &str) -> InstanceName {
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
            ("store instances reencrypt i --location l --async", "store.instances.reencrypt"),
            ("store backups create b --instance i --location l --async", "store.backups.create"),
            ("store operations describe op-1 --location l", "store.operations.describe"),
            ("store operations list --location l --page-size 3", "store.operations.list"),
            ("store operations cancel projects/p/locations/l/operations/op-1", "store.operations.cancel"),
            ("store operations wait op-1 --location l", "store.operations.wait"),
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
}
