//! `keyhold store objects ...`: object metadata as JSON calls, object data streamed through
//! [`Media`] (never held in memory whole, never shown in a message).

use keyhold_api::Code;
use keyhold_api::name::InstanceName;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use serde_json::Value;

use super::super::files::is_stdio;
use super::super::output::{Column, Kind, list_all, show_list, text_at};
use super::super::transfer::{
    DOWNLOAD_IDLE_TIMEOUT, Download, Media, UPLOAD_CHUNK, stdin_file, write_file_atomically, write_stdout,
};
use super::super::{CliError, Ctx, print_stderr};
use super::args::*;
use super::instances::instance_of;
use super::names::InstanceArg;

pub(super) const OBJECT_COLUMNS: &[Column] = &[
    ("NAME", |v| object_short_name(&text_at(v, "name")).to_string()),
    ("SIZE", |v| text_at(v, "size")),
    ("CONTENT_TYPE", |v| text_at(v, "contentType")),
    ("UPDATED", |v| text_at(v, "updateTime")),
];

/// The object's name within its instance: what follows `.../instances/I/objects/`.
pub fn object_short_name(name: &str) -> &str {
    let mut parts = name.splitn(8, '/');
    let head: Vec<&str> = parts.by_ref().take(7).collect();
    match (head.as_slice(), parts.next()) {
        (["projects", _, "locations", _, "instances", _, "objects"], Some(rest)) => rest,
        _ => name,
    }
}

pub(super) async fn objects_describe(ctx: &Ctx, c: &ObjectTarget) -> Result<(), CliError> {
    let path = instance_of(ctx, &c.instance, &c.location)?.object_path(&c.object)?;
    let object = ctx.client.get(&path).await?;
    ctx.show(Kind::Other, &object)
}

pub(super) async fn objects_list(ctx: &Ctx, c: &ObjectList) -> Result<(), CliError> {
    let instance = instance_of(ctx, &c.instance, &c.location)?;
    let mut query = Vec::new();
    if let Some(p) = c.prefix.as_deref().filter(|p| !p.is_empty()) {
        query.push(("prefix", p.to_string()));
    }
    let items = list_all(ctx, "v1", &format!("{}/objects", instance.path()), "objects", &query, &c.paging).await?;
    show_list(ctx, &items, OBJECT_COLUMNS)
}

pub(super) async fn objects_delete(ctx: &Ctx, c: &ObjectTarget) -> Result<(), CliError> {
    let path = instance_of(ctx, &c.instance, &c.location)?.object_path(&c.object)?;
    ctx.client.delete(&path).await?;
    print_stderr(&format!("Deleted object [{}].", c.object));
    Ok(())
}

pub(super) async fn objects_put(ctx: &Ctx, media: &Media<'_>, c: &ObjectPut) -> Result<(), CliError> {
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
pub(super) async fn explain_cut_upload(ctx: &Ctx, instance: &InstanceName, cut: String) -> CliError {
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

pub(super) async fn objects_get(ctx: &Ctx, media: &Media<'_>, c: &ObjectGet) -> Result<(), CliError> {
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
