//! `keyhold logging read`: the server's audit log, read as `gcloud logging read` reads Cloud
//! Audit Logs (newest first, one YAML document per entry).

use clap::{Args, Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::Value;

use keyhold_api::wire::{ProtoDuration, Timestamp};

use super::output::{self, Kind, OutputFormat};
use super::parse::{parse_duration, parse_time};
use super::{CliError, Ctx, print_stdout};

/// The most entries the server sends in one page.
const MAX_PAGE: usize = 1000;

/// `keyhold logging`.
#[derive(Args, Debug)]
pub struct LoggingArgs {
    /// The command.
    #[command(subcommand)]
    pub command: LoggingCommand,
}

/// Commands under `keyhold logging`.
#[derive(Subcommand, Debug)]
pub enum LoggingCommand {
    /// Read audit log entries of a project (--project), or of every project with --project=-
    /// (which needs a role on the whole server).
    Read(LoggingRead),
}

/// Which audit log.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogArg {
    /// Admin activity: creating key rings and keys, IAM changes, ... (always readable with
    /// roles/logging.viewer).
    #[value(name = "activity")]
    Activity,
    /// Data access: encrypt, decrypt, reads (needs roles/logging.privateLogViewer).
    #[value(name = "data_access", alias = "data-access")]
    DataAccess,
}

/// Sort order.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderArg {
    /// Newest first.
    Desc,
    /// Oldest first.
    Asc,
}

/// `keyhold logging read`.
#[derive(Args, Debug)]
pub struct LoggingRead {
    /// Only entries newer than this (e.g. 1h, 1d, 30d); ignored with --start-time.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "1d")]
    pub freshness: ProtoDuration,
    /// Only entries at or after this time: RFC 3339 (2026-01-02T03:04:05Z) or a date
    /// (2026-01-02). Replaces --freshness.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub start_time: Option<Timestamp>,
    /// Only entries before this time.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub end_time: Option<Timestamp>,
    /// Only entries of this method, e.g. Encrypt, CreateKeyRing, SetIamPolicy (a full
    /// google.cloud.kms.v1.KeyManagementService.Encrypt is accepted too).
    #[arg(long, value_name = "METHOD")]
    pub method: Option<String>,
    /// Only entries of this caller: user:EMAIL, serviceAccount:EMAIL, or the email alone.
    #[arg(long, value_name = "PRINCIPAL")]
    pub principal: Option<String>,
    /// Only entries whose resource name starts with this, e.g.
    /// projects/p/locations/global/keyRings/r.
    #[arg(long, value_name = "NAME")]
    pub resource_prefix: Option<String>,
    /// Only this log (both when unset and allowed).
    #[arg(long, value_enum, value_name = "LOG")]
    pub log: Option<LogArg>,
    /// Read at most this many entries.
    #[arg(long, value_name = "LIMIT", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: u64,
    /// Newest first (desc, the default) or oldest first (asc).
    #[arg(long, value_enum, default_value = "desc")]
    pub order: OrderArg,
}

impl LoggingRead {
    /// The query parameters of one page request (without paging).
    fn query(&self, now: Timestamp) -> Vec<(&'static str, String)> {
        let start = self.start_time.unwrap_or_else(|| now.add(ProtoDuration::from_nanos(-self.freshness.as_nanos())));
        let mut q = vec![("startTime", start.to_string())];
        if let Some(t) = self.end_time {
            q.push(("endTime", t.to_string()));
        }
        if let Some(m) = self.method.as_deref().map(str::trim).filter(|m| !m.is_empty()) {
            // `google.cloud.kms.v1.KeyManagementService.Encrypt` -> `Encrypt`.
            q.push(("methodName", m.rsplit('.').next().unwrap_or(m).to_string()));
        }
        if let Some(p) = self.principal.as_deref().map(str::trim).filter(|p| !p.is_empty()) {
            q.push(("principal", p.to_string()));
        }
        if let Some(r) = self.resource_prefix.as_deref().map(str::trim).filter(|r| !r.is_empty()) {
            q.push(("resourcePrefix", r.to_string()));
        }
        if let Some(l) = self.log {
            q.push(("logName", (if l == LogArg::Activity { "activity" } else { "data_access" }).to_string()));
        }
        let order = if self.order == OrderArg::Desc { "timestamp desc" } else { "timestamp asc" };
        q.push(("orderBy", order.to_string()));
        q
    }
}

impl LoggingCommand {
    /// The command's path below `keyhold` (`logging.read`).
    pub fn path(&self) -> String {
        match self {
            LoggingCommand::Read(_) => "logging.read".to_string(),
        }
    }

    /// Runs the command.
    pub async fn run(self, ctx: &Ctx) -> Result<(), CliError> {
        match self {
            LoggingCommand::Read(c) => read(ctx, &c).await,
        }
    }
}

async fn read(ctx: &Ctx, c: &LoggingRead) -> Result<(), CliError> {
    let project = ctx.project()?;
    let path = format!("projects/{project}/auditLogs");
    let base = c.query(Timestamp::now());
    let limit = usize::try_from(c.limit).unwrap_or(usize::MAX);
    let mut entries: Vec<Value> = Vec::new();
    let mut token = String::new();
    while entries.len() < limit {
        let mut q = base.clone();
        q.push(("pageSize", (limit - entries.len()).min(MAX_PAGE).to_string()));
        if !token.is_empty() {
            q.push(("pageToken", token.clone()));
        }
        let page: Value = ctx.client.call(Method::GET, &path, &q, None).await?;
        if let Some(Value::Array(a)) = page.get("entries") {
            entries.extend(a.iter().cloned());
        }
        let next = page.get("nextPageToken").and_then(Value::as_str).unwrap_or_default();
        if next.is_empty() || next == token {
            break;
        }
        token = next.to_string();
    }
    entries.truncate(limit);
    // As gcloud: YAML documents unless --format says otherwise; nothing at all when empty.
    let format = ctx.format.clone().unwrap_or(OutputFormat::Yaml);
    if entries.is_empty() && format != OutputFormat::Json {
        return Ok(());
    }
    print_stdout(&output::render_list(&format, Kind::LogEntry, &entries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        read: LoggingRead,
    }

    #[test]
    fn query_parameters() {
        let t = T::try_parse_from([
            "t",
            "--method",
            "google.cloud.kms.v1.KeyManagementService.Encrypt",
            "--principal",
            "user:a@b.com",
            "--log",
            "data_access",
            "--order",
            "asc",
            "--start-time",
            "2026-01-01T00:00:00Z",
        ])
        .unwrap();
        let q = t.read.query(Timestamp::now());
        let get = |k: &str| q.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("methodName"), Some("Encrypt"));
        assert_eq!(get("principal"), Some("user:a@b.com"));
        assert_eq!(get("logName"), Some("data_access"));
        assert_eq!(get("orderBy"), Some("timestamp asc"));
        assert_eq!(get("startTime"), Some("2026-01-01T00:00:00.000000000Z"));
        assert_eq!(t.read.limit, 100);

        let t = T::try_parse_from(["t", "--freshness", "1h"]).unwrap();
        let now = Timestamp::parse("2026-01-01T10:00:00Z").unwrap();
        let q = t.read.query(now);
        assert_eq!(q[0], ("startTime", "2026-01-01T09:00:00.000000000Z".to_string()));
        assert!(q.contains(&("orderBy", "timestamp desc".to_string())));
        assert!(T::try_parse_from(["t", "--log", "other"]).is_err());
        assert!(T::try_parse_from(["t", "--limit", "0"]).is_err());
    }
}
