//! `keyhold store instances ...` and `keyhold store exports ...`: instances, their copies
//! (restore, clone, export, import) and the export directory.

use keyhold_api::name::{InstanceName, LocationName};
use serde_json::{Map, Value, json};

use super::super::output::{Column, Kind, list_all, show_list, text_at};
use super::super::parse::{Labels, merge_labels};
use super::super::{CliError, Ctx, print_stderr};
use super::args::*;
use super::names::{BackupName, InstanceArg, encode_segment, resolve_kms_key};
use super::operations::complete;
use super::{BACKUP_PATTERN, CUSTOMER_MANAGED, basename};

pub(super) const INSTANCE_COLUMNS: &[Column] = &[
    ("NAME", |v| basename(&text_at(v, "name")).to_string()),
    ("STATE", |v| text_at(v, "state")),
    ("ENCRYPTION", |v| text_at(v, "encryptionInfo.encryptionType")),
    ("KMS_KEY", |v| text_at(v, "kmsKey")),
];

/// The body of `instances create` (`replicaOf`: the primary's full name, for a replica).
pub(super) fn create_body(kms_key: Option<String>, labels: &[Labels], replica_of: Option<String>) -> Value {
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
pub(super) fn encryption_config(
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
            super::super::parse::kebab(t)
        ))),
    }
}

/// The body of `instances:restore`.
pub(super) fn restore_body(
    instance: &InstanceName,
    backup: &BackupName,
    encryption: Option<Value>,
    labels: &[Labels],
) -> Value {
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
pub(super) fn copy_body(
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
pub(super) fn export_body(destination: &str, kms_key: Option<String>, allow_plaintext: bool) -> Value {
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

pub(super) fn instance_of(ctx: &Ctx, arg: &str, location: &StoreLocationFlag) -> Result<InstanceName, CliError> {
    InstanceName::resolve(arg, location.location.as_deref(), ctx.project.as_deref())
}

pub(super) async fn instances_create(ctx: &Ctx, c: &InstanceCreate) -> Result<(), CliError> {
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

pub(super) async fn instances_describe(ctx: &Ctx, c: &InstanceTarget) -> Result<(), CliError> {
    let name = instance_of(ctx, &c.instance, &c.location)?;
    let instance = ctx.client.get(&name.path()).await?;
    ctx.show(Kind::Other, &instance)
}

pub(super) async fn instances_list(ctx: &Ctx, c: &InstanceList) -> Result<(), CliError> {
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

pub(super) async fn instances_delete(ctx: &Ctx, c: &InstanceTarget) -> Result<(), CliError> {
    let name = instance_of(ctx, &c.instance, &c.location)?;
    ctx.client.delete(&name.path()).await?;
    print_stderr(&format!("Deleted instance [{}].", name.instance));
    Ok(())
}

pub(super) async fn instances_action(ctx: &Ctx, c: &InstanceTarget, verb: &str) -> Result<(), CliError> {
    let name = instance_of(ctx, &c.instance, &c.location)?;
    let instance = ctx.client.post(&format!("{}:{verb}", name.path()), &[], &json!({})).await?;
    ctx.show(Kind::Other, &instance)
}

pub(super) async fn instances_reencrypt(ctx: &Ctx, c: &InstanceReencrypt) -> Result<(), CliError> {
    let name = instance_of(ctx, &c.target.instance, &c.target.location)?;
    let answer = ctx.client.post(&format!("{}:reencrypt", name.path()), &[], &json!({})).await?;
    let Some(instance) = complete(ctx, answer, &c.wait).await? else { return Ok(()) };
    print_stderr(&format!("Re-encrypted instance [{}].", name.instance));
    ctx.show(Kind::Other, &instance)
}

pub(super) async fn instances_restore(ctx: &Ctx, c: &InstanceRestore) -> Result<(), CliError> {
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
    let answer = ctx.client.post(&format!("{}:restore", name.collection()), &[], &body).await?;
    let Some(instance) = complete(ctx, answer, &c.wait).await? else { return Ok(()) };
    print_stderr(&format!("Created instance [{}] from backup [{}].", name.instance, backup.full_name()));
    ctx.show(Kind::Other, &instance)
}

pub(super) async fn instances_clone(ctx: &Ctx, c: &InstanceClone) -> Result<(), CliError> {
    let source = instance_of(ctx, &c.source, &c.location)?;
    let destination = c.destination.trim();
    if destination.is_empty() || destination.contains('/') {
        return Err(CliError::Usage(format!(
            "Invalid DESTINATION_ID \"{destination}\": give the new instance's ID (no `/`); it is created in {}.",
            source.collection()
        )));
    }
    let body = copy_body("destinationInstanceId", destination, None, resolve_kms_key(&c.kms, &source)?, &c.labels);
    let answer = ctx.client.post(&format!("{}:clone", source.path()), &[], &body).await?;
    let Some(instance) = complete(ctx, answer, &c.wait).await? else { return Ok(()) };
    print_stderr(&format!("Created instance [{destination}], a clone of [{}].", source.instance));
    ctx.show(Kind::Other, &instance)
}

pub(super) async fn instances_export(ctx: &Ctx, c: &InstanceExport) -> Result<(), CliError> {
    let name = instance_of(ctx, &c.target.instance, &c.target.location)?;
    let destination = c.destination.trim();
    if destination.is_empty() {
        return Err(CliError::Usage(
            "--destination is empty: give the archive's file name, relative to the server's export directory."
                .to_string(),
        ));
    }
    let body = export_body(destination, resolve_kms_key(&c.kms, &name)?, c.allow_plaintext);
    let answer = ctx.client.post(&format!("{}:export", name.path()), &[], &body).await?;
    let plaintext_warning = || {
        if c.allow_plaintext {
            print_stderr("WARNING: The archive is not encrypted: anyone who can read the file can read its objects.");
        }
    };
    let Some(export) = complete(ctx, answer, &c.wait).await? else {
        // Started (--async): the warning holds as much as for a finished export.
        plaintext_warning();
        return Ok(());
    };
    let written = text_at(&export, "destination");
    print_stderr(&format!(
        "Exported instance [{}] to [{}].",
        name.instance,
        if written.is_empty() { destination } else { &written }
    ));
    plaintext_warning();
    ctx.show(Kind::Other, &export)
}

pub(super) async fn instances_import(ctx: &Ctx, c: &InstanceImport) -> Result<(), CliError> {
    let name = instance_of(ctx, &c.target.instance, &c.target.location)?;
    let source = c.source.trim();
    if source.is_empty() {
        return Err(CliError::Usage(
            "--source is empty: give the archive's file name, relative to the server's export directory.".to_string(),
        ));
    }
    let body =
        copy_body("instanceId", &name.instance, Some(("source", source)), resolve_kms_key(&c.kms, &name)?, &c.labels);
    let answer = ctx.client.post(&format!("{}:import", name.collection()), &[], &body).await?;
    let Some(instance) = complete(ctx, answer, &c.wait).await? else { return Ok(()) };
    print_stderr(&format!("Created instance [{}] from archive [{source}].", name.instance));
    ctx.show(Kind::Other, &instance)
}

pub(super) async fn exports_reconcile(ctx: &Ctx) -> Result<(), CliError> {
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

#[cfg(test)]
mod tests {
    use super::super::tests::instance;
    use super::*;
    use crate::cli::parse::parse_labels;

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
}
