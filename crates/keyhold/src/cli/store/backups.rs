//! `keyhold store backups ...`.

use serde_json::json;

use super::super::output::{Column, Kind, list_all, show_list, text_at};
use super::super::{CliError, Ctx, print_stderr};
use super::args::*;
use super::basename;
use super::instances::{encryption_config, instance_of};
use super::names::{BackupName, InstanceArg, resolve_kms_key};

pub(super) const BACKUP_COLUMNS: &[Column] = &[
    ("NAME", |v| basename(&text_at(v, "name")).to_string()),
    ("STATE", |v| text_at(v, "state")),
    ("ENCRYPTION", |v| text_at(v, "encryptionInfo.encryptionType")),
    ("OBJECTS", |v| text_at(v, "objectCount")),
    ("SIZE", |v| text_at(v, "sizeBytes")),
    ("VERSION_TIME", |v| text_at(v, "versionTime")),
    ("KMS_KEY", |v| text_at(v, "kmsKey")),
];

pub(super) fn backup_of(ctx: &Ctx, c: &BackupTarget) -> Result<BackupName, CliError> {
    let flags = &c.instance;
    BackupName::resolve(
        &c.backup,
        flags.instance.as_deref(),
        flags.location.location.as_deref(),
        ctx.project.as_deref(),
    )
}

pub(super) async fn backups_create(ctx: &Ctx, c: &BackupCreate) -> Result<(), CliError> {
    let name = backup_of(ctx, &c.target)?;
    let encryption =
        encryption_config(c.encryption_type.map(|t| t.wire_name()), resolve_kms_key(&c.kms, &name.instance)?)?;
    let body = match encryption {
        Some(e) => json!({"encryptionConfig": e}),
        None => json!({}),
    };
    let query = [("backupId", name.backup.clone())];
    let answer = ctx.client.post(&format!("{}/backups", name.instance.path()), &query, &body).await?;
    let Some(backup) = super::operations::complete(ctx, answer, &c.wait).await? else { return Ok(()) };
    print_stderr(&format!("Created backup [{}].", name.backup));
    ctx.show(Kind::Other, &backup)
}

pub(super) async fn backups_describe(ctx: &Ctx, c: &BackupTarget) -> Result<(), CliError> {
    let name = backup_of(ctx, c)?;
    let backup = ctx.client.get(&name.path()).await?;
    ctx.show(Kind::Other, &backup)
}

pub(super) async fn backups_list(ctx: &Ctx, c: &BackupList) -> Result<(), CliError> {
    let instance = instance_of(ctx, &c.instance, &c.location)?;
    let items = list_all(ctx, "v1", &format!("{}/backups", instance.path()), "backups", &[], &c.paging).await?;
    show_list(ctx, &items, BACKUP_COLUMNS)
}

pub(super) async fn backups_delete(ctx: &Ctx, c: &BackupTarget) -> Result<(), CliError> {
    let name = backup_of(ctx, c)?;
    ctx.client.delete(&name.path()).await?;
    print_stderr(&format!("Deleted backup [{}].", name.backup));
    Ok(())
}
