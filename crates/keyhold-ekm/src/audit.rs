//! The manager's own record of every decision: one JSON line per request in its audit file,
//! and the same fields as a structured log event (target `keyhold_ekm::audit`).
//!
//! The operator of an external key keeps this record on their own machine, independent of the
//! KMS's audit log; `requestId` correlates the two. Entries never hold a token, plaintext,
//! AAD or wrapped blob: only who asked, for what, why, and the outcome. A line is written with
//! one `write` on a file opened in append mode, before the answer is sent; if it cannot be
//! written the request fails (`503 UNAVAILABLE`): no record, no key.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use keyhold_api::Code;
use keyhold_api::wire::Timestamp;
use serde::Serialize;

/// One decision.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// When the decision was made.
    pub time: Timestamp,
    /// The KMS's request ID (or one the manager made up).
    pub request_id: String,
    /// `wrap`, `unwrap` or `getKey`.
    pub method: String,
    /// The manager's key.
    pub key_id: String,
    /// The label of the token the client authenticated with; empty if it did not.
    pub client: String,
    /// The end caller's principal.
    pub caller_principal: String,
    /// The access reason.
    pub reason: String,
    /// The KMS resource (crypto key version) the request was for.
    pub resource: String,
    /// The KMS method the request came from.
    pub operation: String,
    /// The service the caller acted through.
    pub via_service: String,
    /// The client's address.
    pub remote_addr: String,
    /// `ALLOWED` (done), `DENIED` (refused: token, policy, key state, unknown key) or `FAILED`
    /// (invalid request, wrong AAD or blob, internal error).
    pub decision: &'static str,
    /// The status answered (`OK` when allowed).
    pub code: &'static str,
    /// The error message answered; empty when allowed.
    pub message: String,
}

impl AuditEntry {
    /// The decision a status code stands for.
    pub fn decision_of(code: Code) -> &'static str {
        match code {
            Code::Ok => "ALLOWED",
            Code::Unauthenticated | Code::PermissionDenied | Code::FailedPrecondition | Code::NotFound => "DENIED",
            _ => "FAILED",
        }
    }
}

/// The audit file, opened for appending.
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("path", &self.path).finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens (or creates, mode 0600) the audit file at `path` for appending.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut opts = std::fs::OpenOptions::new();
        opts.append(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let file = opts.open(path)?;
        Ok(Self { path: path.to_path_buf(), file: Mutex::new(file) })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Logs `entry` and appends it to the file.
    pub fn record(&self, entry: &AuditEntry) -> std::io::Result<()> {
        tracing::info!(
            target: "keyhold_ekm::audit",
            request_id = %entry.request_id,
            method = %entry.method,
            key_id = %entry.key_id,
            client = %entry.client,
            caller = %entry.caller_principal,
            reason = %entry.reason,
            resource = %entry.resource,
            operation = %entry.operation,
            via_service = %entry.via_service,
            remote_addr = %entry.remote_addr,
            decision = entry.decision,
            code = entry.code,
            message = %entry.message,
            "ekm decision"
        );
        let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(&line)
    }
}
