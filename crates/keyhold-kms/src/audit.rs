//! The audit log ([K10]): one entry per request, allowed or denied, hash-chained.
//!
//! An entry records who did what to which resource with which key version, and how it ended;
//! never plaintext, ciphertext or key material. Entries for changes are committed in the same
//! transaction as the change (the store appends them); entries for reads, cryptographic calls
//! and refusals go through [`AuditWriter`], which commits them in batches (group commit) and
//! answers each request only once its entry is durable.
//!
//! Each stored entry carries `hash = SHA-256(prev_hash "\n" seq "\n" entry_json)`, so editing,
//! removing or reordering a stored entry breaks the chain at that point ([`verify_chain`]).
//! Truncating the newest entries cannot be detected from inside the database: operators who
//! need that anchor the head hash elsewhere (`keyhold audit verify` prints it).
//!
//! The entry and its chain are the format of the `keyhold-audit` crate, re-exported here; this
//! module is the writer and the KMS's reads of the log.

pub use keyhold_audit::*;

use std::sync::Arc;

use keyhold_api::wire::Timestamp;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use keyhold_iam::{Caller, role};

use crate::audit_journal::{AuditJournalConfig, JournalProgress};
use crate::error::KmsError;
use crate::repo::{AuditPosition, AuditQuery, KmsRepository, RepoError};

/// An entry and the request waiting for it to be recorded.
pub(crate) type Pending = (EncodedRecord, oneshot::Sender<Result<(), RepoError>>);

/// Most entries one group commit writes.
const MAX_BATCH: usize = 512;

/// Appends entries in batches: every request waiting at the same moment shares one commit
/// (or, with a journal, one write: see [`crate::audit_journal`]).
#[derive(Debug, Clone)]
pub struct AuditWriter {
    tx: mpsc::UnboundedSender<Pending>,
    /// With a journal: how far entries are written and in the log.
    journal: Option<Arc<JournalProgress>>,
}

impl AuditWriter {
    /// Starts the writer task on the current Tokio runtime. It ends when every clone of the
    /// writer is dropped.
    pub fn start(store: Arc<dyn KmsRepository>) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Pending>();
        tokio::spawn(async move {
            let mut records: Vec<EncodedRecord> = Vec::new();
            let mut waiting: Vec<oneshot::Sender<Result<(), RepoError>>> = Vec::new();
            while let Some((first, done)) = rx.recv().await {
                records.push(first);
                waiting.push(done);
                while records.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok((r, done)) => {
                            records.push(r);
                            waiting.push(done);
                        }
                        Err(_) => break,
                    }
                }
                let result = store.append_audit(&records).await;
                records.clear();
                for done in waiting.drain(..) {
                    let _ = done.send(result.clone());
                }
            }
        });
        Self { tx, journal: None }
    }

    /// Starts a writer on the journal directory of `config`, once whatever a previous run left
    /// there is in the log. With an interval, it answers once an entry is in the journal; without
    /// one (strict), it is [`AuditWriter::start`]'s.
    pub async fn start_journaled(
        store: Arc<dyn KmsRepository>,
        config: &AuditJournalConfig,
    ) -> Result<Self, RepoError> {
        let Some(interval) = config.sync_interval else {
            crate::audit_journal::drain(store.as_ref(), &config.dir).await?;
            return Ok(Self::start(store));
        };
        let (tx, progress) = crate::audit_journal::start(store, &config.dir, interval).await?;
        Ok(Self { tx, journal: Some(progress) })
    }

    /// At shutdown, once no request is in flight: with a journal, waits for the log to take
    /// every entry written and fsyncs the journal (nothing to do without one).
    pub async fn finish(&self) -> Result<(), RepoError> {
        match &self.journal {
            Some(journal) => journal.finish().await,
            None => Ok(()),
        }
    }

    /// Waits until every entry recorded before the call is in the audit log, so that a read of
    /// the log shows the reader's own requests (at once without a journal).
    pub async fn settle(&self) -> Result<(), RepoError> {
        match &self.journal {
            Some(journal) => journal.settle().await,
            None => Ok(()),
        }
    }

    /// Records `entry`; returns once it is durable (with a journal: in the journal, see
    /// [`crate::audit_journal`] for what that means).
    pub async fn record(&self, entry: AuditRecord) -> Result<(), RepoError> {
        // Serialized here, on the request's own task, once: the journal frames this text and
        // the log stores and chains it.
        let entry = EncodedRecord::new(entry)
            .map_err(|e| RepoError::Corrupt(format!("audit entry not recorded: it does not serialize: {e}")))?;
        let (done, wait) = oneshot::channel();
        self.tx.send((entry, done)).map_err(|_| RepoError::Unavailable("the audit writer has stopped".into()))?;
        wait.await.map_err(|_| RepoError::Unavailable("the audit writer has stopped".into()))?
    }
}

/// Filters of `GET /v1/projects/P/auditLogs` and `keyhold logging read`.
#[derive(Debug, Clone, Default)]
pub struct AuditLogQuery {
    /// Entries at or after this time.
    pub start_time: Option<Timestamp>,
    /// Entries before this time.
    pub end_time: Option<Timestamp>,
    /// `Encrypt`, `SetIamPolicy`, ...
    pub method: String,
    /// Resource-name prefix.
    pub resource_prefix: String,
    /// Principal: `user:alice@example.com` or just the email.
    pub principal: String,
    /// `activity` or `data_access` (or the log names ending in them); empty for both.
    pub log: String,
    /// Newest first (`orderBy=timestamp desc`).
    pub descending: bool,
    /// Page size (default 50, at most 1000).
    pub page_size: i64,
    /// Token from a previous page.
    pub page_token: String,
}

/// One page of entries in Cloud Logging's shape.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditLogPage {
    /// `LogEntry` objects.
    pub entries: Vec<serde_json::Value>,
    /// Token for the next page; absent on the last.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub next_page_token: String,
}

/// One page of `project`'s entries ("-": every project and the server-wide entries) for a
/// caller already allowed to list them; `private` says whether it may also read data-access
/// entries (`logging.privateLogEntries.list`).
pub(crate) async fn read_page(
    repo: &dyn KmsRepository,
    project: &str,
    resource: &str,
    private: bool,
    q: &AuditLogQuery,
) -> Result<AuditLogPage, KmsError> {
    let wanted = match q.log.rsplit(['/', '.']).next().unwrap_or_default() {
        "" => "",
        "activity" | "2Factivity" => "activity",
        "data_access" | "2Fdata_access" => "data_access",
        other => {
            return Err(KmsError::InvalidArgument(format!("Unknown log \"{other}\"; use activity or data_access.")));
        }
    };
    let kind = match (wanted, private) {
        ("data_access", false) => {
            return Err(KmsError::PermissionDenied {
                permission: role::PRIVATE_LOG_ENTRIES_LIST,
                resource: resource.to_string(),
            });
        }
        ("", false) => "activity",
        (w, _) => w,
    };
    let page_size = match q.page_size {
        0 => 50,
        n if n < 0 => return Err(KmsError::InvalidArgument("page_size must not be negative.".into())),
        n => n.min(1000),
    };
    let after = if q.page_token.is_empty() {
        None
    } else {
        Some(parse_page_token(&q.page_token).ok_or_else(|| {
            KmsError::InvalidArgument("page_token is not valid; pass nextPageToken from the previous page.".into())
        })?)
    };
    let principal_filter = match q.principal.as_str() {
        "" => String::new(),
        p if p.contains(':') => p.to_string(),
        p if p.contains('@') => {
            // An email: match either kind of principal by asking for both below.
            format!("user:{p}")
        }
        p => p.to_string(),
    };
    let mut query = AuditQuery {
        project: if project == "-" { "-".into() } else { project.to_string() },
        start_nanos: q.start_time.map_or(i64::MIN, Timestamp::unix_nanos_i64),
        end_nanos: q.end_time.map_or(i64::MAX, Timestamp::unix_nanos_i64),
        method: q.method.clone(),
        principal: principal_filter.clone(),
        resource_prefix: q.resource_prefix.clone(),
        kind: kind.to_string(),
        after,
        descending: q.descending,
        limit: page_size + 1,
    };
    let mut rows = repo.read_audit(&query).await?;
    if rows.is_empty() && principal_filter.starts_with("user:") && !q.principal.contains(':') {
        query.principal = format!("serviceAccount:{}", q.principal);
        rows = repo.read_audit(&query).await?;
    }
    let more = rows.len() as i64 > page_size;
    rows.truncate(page_size as usize);
    let mut entries = Vec::with_capacity(rows.len());
    let mut next_page_token = String::new();
    for (position, row) in rows {
        let record: AuditRecord = serde_json::from_str(&row.entry_json)
            .map_err(|e| KmsError::Internal(format!("audit entry {} does not decode: {e}", row.seq)))?;
        if more {
            next_page_token = page_token(position);
        }
        entries.push(record.to_log_entry(row.seq));
    }
    Ok(AuditLogPage { entries, next_page_token })
}

/// A page token: the last entry's position, `TIME_NANOS.SEQ`.
fn page_token(p: AuditPosition) -> String {
    format!("{}.{}", p.time_nanos, p.seq)
}

fn parse_page_token(token: &str) -> Option<AuditPosition> {
    let (time, seq) = token.split_once('.')?;
    let p = AuditPosition { time_nanos: time.parse().ok()?, seq: seq.parse().ok()? };
    (p.seq > 0).then_some(p)
}

impl AuditWriter {
    /// Records a request refused before it reached a method (no or bad credentials, a path or
    /// body that does not parse), so that the audit log holds every request.
    pub(crate) async fn record_refused(
        &self,
        caller: &Caller,
        resource: &str,
        status: &keyhold_api::Status,
    ) -> Result<(), RepoError> {
        let kind = AuditKind::DataAccess;
        self.record(AuditRecord {
            time: Timestamp::now(),
            project: keyhold_iam::project_of(resource).unwrap_or_default().to_string(),
            principal: caller.principal_str().to_string(),
            service: "cloudkms.googleapis.com".into(),
            method: "Unknown".into(),
            resource: resource.to_string(),
            kind,
            permission: None,
            granted: false,
            key_version: None,
            justification: caller.justification.clone(),
            request_id: caller.request_id.clone(),
            code: status.code.number(),
            message: status.message.clone(),
            anonymous: caller.anonymous,
            access_justification: None,
            warning: None,
            operation: None,
        })
        .await
    }
}

/// Verifies the audit chain of a store (used by `keyhold audit verify`, which opens the
/// database directly rather than asking a server that might be the one tampered with).
pub async fn verify_store_chain(store: &dyn KmsRepository) -> Result<ChainVerdict, RepoError> {
    // Read the head first: entries appended while verifying come after it.
    let (head_seq, head_hash) = store.audit_head().await?;
    let mut verifier = ChainVerifier::default();
    let mut after = 0;
    loop {
        let page = store.audit_chain(after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in &page {
            if let Err(broken) = verifier.check(e) {
                return Ok(broken);
            }
        }
    }
    match verifier.finish() {
        ChainVerdict::Intact { entries, .. } if entries < head_seq => Ok(ChainVerdict::Broken {
            seq: entries + 1,
            reason: format!(
                "the chain head records {head_seq} entries but only {entries} are stored (entries were removed)"
            ),
        }),
        ChainVerdict::Intact { entries, head } if entries == head_seq && head != head_hash => {
            Ok(ChainVerdict::Broken {
                seq: entries,
                reason: "the newest entry does not match the recorded chain head".into(),
            })
        }
        verdict => Ok(verdict),
    }
}
