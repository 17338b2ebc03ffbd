//! The audit log's resource index, filled behind the log (issue 18, sixth part).
//!
//! Every other read index of `audit_log` grows at its right edge: a commit of many entries
//! writes a few pages of each. An index by resource cannot: with load spread over many keys
//! each entry lands on its own key's page, so a commit of N entries wrote up to N pages of it,
//! and SQLite's cost per entry doubled and kept rising as the log grew. So the appends leave it
//! out. A background task of each node adds the entries to `audit_resources` a window at a time
//! ([`AUDIT_RESOURCE_WINDOW`] entries), sorted by resource, so that a key's entries of a whole
//! window share one page write; the window's last transaction moves the mark
//! (`audit_resources_mark`). Reads by resource take the entries up to the mark from the
//! index and the entries after it from the log, through the right-edge index `audit_tail`
//! (`crate::schema::AuditRead`): at most a window and what arrived since the last fill.
//!
//! Any node may fill any window: rows already there are skipped and the mark only moves
//! forward, so nodes sharing a PostgreSQL database, or a fill a crash cut short, only repeat
//! work. A log that is more than a window ahead when the database is opened (one written
//! before this index existed, or by an older build) is caught up at once, in one statement.

use std::sync::{Arc, Weak};
use std::time::Duration;

use keyhold_kms::repo::RepoError;

use crate::kms_repo::SqlStore;
use crate::schema::{
    AUDIT_RESOURCES_MARK, GET_AUDIT_HEAD, INSERT_AUDIT_RESOURCE, SET_AUDIT_RESOURCES_MARK, audit_resources_window,
    catch_up_audit_resources,
};
use crate::sql::{SqlBackend, Value};

/// Entries the resource index is filled with at a time. Larger windows share more page writes
/// between a key's entries (`bench/audit_ingest.py` measures it); a read by resource scans at
/// most this many entries of `audit_tail` (plus those since the last fill) for its recent part.
pub const AUDIT_RESOURCE_WINDOW: i64 = 131_072;

/// Rows a fill inserts per transaction: a window is several, so that the log's appends and the
/// node's other writes (one SQLite connection) wait at most for one of them.
const ROWS_PER_TRANSACTION: usize = 16_384;

/// How often the background task looks at how far the log is ahead of the index.
const POLL: Duration = Duration::from_millis(500);

/// One row of the resource index: the entry's kind, resource, time and seq, in the index's order.
type IndexRow = (String, String, i64, i64);

impl<B: SqlBackend> SqlStore<B> {
    /// The mark (entries up to it are in the index) and the log's head.
    async fn resource_index_lag(&self) -> Result<(i64, i64), RepoError> {
        let mark = self.read_rows(AUDIT_RESOURCES_MARK, vec![]).await?;
        let mark =
            mark.first().ok_or_else(|| RepoError::Corrupt("audit_resources_mark row missing".into()))?[0].int()?;
        let head = self.read_rows(GET_AUDIT_HEAD, vec![]).await?;
        let head = head.first().ok_or_else(|| RepoError::Corrupt("audit head row missing".into()))?[0].int()?;
        Ok((mark, head))
    }

    /// If the log is more than `window` entries ahead of the index, adds all of them in one
    /// statement (as a `CREATE INDEX` would) and moves the mark to the head.
    pub(crate) async fn catch_up_resource_index(&self, window: i64) -> Result<(), RepoError> {
        let (mark, head) = self.resource_index_lag().await?;
        if head - mark <= window {
            return Ok(());
        }
        tracing::info!(entries = head - mark, "adding the audit log's entries to its resource index");
        let fill = (catch_up_audit_resources(self.backend().dialect()), vec![Value::Int(mark), Value::Int(head)]);
        let set_mark = (SET_AUDIT_RESOURCES_MARK, vec![Value::Int(head)]);
        self.backend().begin().await?.execute_many_and_commit(vec![fill, set_mark]).await
    }

    /// Adds the next `window` entries to the index, if the log holds that many after the mark;
    /// whether it did.
    pub(crate) async fn fill_resource_index(&self, window: i64) -> Result<bool, RepoError> {
        let (mark, head) = self.resource_index_lag().await?;
        if head - mark < window {
            return Ok(false);
        }
        let through = mark + window;
        let dialect = self.backend().dialect();
        let rows = self.read_rows(audit_resources_window(dialect), vec![Value::Int(mark), Value::Int(through)]).await?;
        let mut rows = rows
            .into_iter()
            .map(|row| Ok((row[0].text()?.to_string(), row[1].text()?.to_string(), row[2].int()?, row[3].int()?)))
            .collect::<Result<Vec<IndexRow>, RepoError>>()?;
        // The index's order (resource byte by byte, as its collation compares), so that each
        // transaction walks the index once from left to right.
        rows.sort_unstable();
        let transactions = rows.len().div_ceil(ROWS_PER_TRANSACTION).max(1);
        let mut chunks = rows.chunks(ROWS_PER_TRANSACTION);
        for i in 0..transactions {
            let mut statements: Vec<(&'static str, Vec<Value>)> = chunks
                .next()
                .unwrap_or_default()
                .iter()
                .map(|(kind, resource, time, seq)| {
                    let values = vec![
                        Value::Text(kind.clone()),
                        Value::Text(resource.clone()),
                        Value::Int(*time),
                        Value::Int(*seq),
                    ];
                    (INSERT_AUDIT_RESOURCE, values)
                })
                .collect();
            if i + 1 == transactions {
                statements.push((SET_AUDIT_RESOURCES_MARK, vec![Value::Int(through)]));
            }
            self.backend().begin().await?.execute_many_and_commit(statements).await?;
        }
        Ok(true)
    }
}

/// Fills the store's resource index while the store is alive (it holds only a weak reference
/// between fills).
pub(crate) fn fill_in_background<B: SqlBackend>(store: &Arc<SqlStore<B>>, window: i64) {
    let store: Weak<SqlStore<B>> = Arc::downgrade(store);
    tokio::spawn(async move {
        let mut failing = false;
        loop {
            tokio::time::sleep(POLL).await;
            let Some(store) = store.upgrade() else { return };
            loop {
                match store.fill_resource_index(window).await {
                    Ok(true) => failing = false,
                    Ok(false) => {
                        failing = false;
                        break;
                    }
                    Err(e) => {
                        // Reads stay correct (they scan what is not indexed); said once per
                        // spell of failures, not every poll.
                        if !failing {
                            tracing::warn!(error = %e, "filling the audit log's resource index failed; retrying");
                        }
                        failing = true;
                        break;
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use keyhold_api::wire::Timestamp;
    use keyhold_kms::audit::{AuditKind, AuditRecord};
    use keyhold_kms::repo::{AuditQuery, KmsRepository};

    use super::*;
    use crate::sqlite::Sqlite;

    fn entry(i: i64, resource: &str) -> AuditRecord {
        // Every 7th entry is late (another node's clock): reads follow the time, not the seq.
        let secs = if i % 7 == 3 { i - 5 } else { i };
        AuditRecord {
            time: Timestamp::from_unix_nanos(1_700_000_000_000_000_000 + i128::from(secs) * 1_000_000_000).unwrap(),
            project: "acme".into(),
            principal: format!("user:u{}@example.com", i % 3),
            service: "cloudkms.googleapis.com".into(),
            method: if i % 2 == 0 { "Encrypt".into() } else { "Decrypt".into() },
            resource: resource.into(),
            kind: if i % 5 == 0 { AuditKind::Activity } else { AuditKind::DataAccess },
            permission: None,
            granted: true,
            key_version: None,
            justification: None,
            request_id: format!("req-{i}"),
            code: 0,
            message: String::new(),
            anonymous: false,
            access_justification: None,
            warning: None,
            operation: None,
        }
    }

    const KEYS: [&str; 5] = [
        "projects/acme/locations/global/keyRings/r/cryptoKeys/a",
        "projects/acme/locations/global/keyRings/r/cryptoKeys/a/cryptoKeyVersions/1",
        "projects/acme/locations/global/keyRings/r/cryptoKeys/ab",
        "projects/acme/locations/global/keyRings/r/cryptoKeys/b",
        "projects/acme/locations/global/keyRings/s/cryptoKeys/a",
    ];

    /// Every read by resource the tests compare: each prefix, both orders, with and without
    /// the other filters, whole and paged.
    fn queries() -> Vec<AuditQuery> {
        let mut all = Vec::new();
        for prefix in [
            KEYS[0],
            KEYS[3],
            "projects/acme/locations/global/keyRings/r/",
            "projects/acme/locations/global/keyRings/s",
        ] {
            for descending in [false, true] {
                for (kind, method, principal) in
                    [("", "", ""), ("data_access", "Encrypt", ""), ("activity", "", "user:u1@example.com")]
                {
                    for limit in [3, 1000] {
                        all.push(AuditQuery {
                            project: if limit == 3 { "acme".into() } else { "-".into() },
                            start_nanos: i64::MIN,
                            end_nanos: i64::MAX,
                            method: method.into(),
                            principal: principal.into(),
                            resource_prefix: prefix.into(),
                            kind: kind.into(),
                            after: None,
                            descending,
                            limit,
                        });
                    }
                }
            }
        }
        all
    }

    /// Each query's answer, every page followed to the end.
    async fn answers(s: &dyn KmsRepository) -> Vec<Vec<i64>> {
        let mut out = Vec::new();
        for mut q in queries() {
            let mut seqs = Vec::new();
            loop {
                let page = s.read_audit(&q).await.unwrap();
                let Some((last, _)) = page.last() else { break };
                q.after = Some(*last);
                seqs.extend(page.iter().map(|(_, e)| e.seq));
            }
            out.push(seqs);
        }
        out
    }

    async fn append(s: &dyn KmsRepository, from: i64, to: i64) {
        let entries: Vec<AuditRecord> = (from..to).map(|i| entry(i, KEYS[(i * 7 % 5) as usize])).collect();
        s.append_audit(&entries).await.unwrap();
    }

    /// The answers of every read by resource are the same whatever part of the log the index
    /// holds, and the same as the in-memory database's (which has no index and scans).
    async fn reads_agree_on_every_side_of_the_mark<B: SqlBackend>(store: Arc<SqlStore<B>>) {
        let reference =
            Arc::new(SqlStore::new(Sqlite::open_in_memory().await.unwrap()).keeping_audit_entries(u64::MAX));
        for (from, to) in [(0, 23), (23, 61)] {
            append(store.as_ref(), from, to).await;
            append(reference.as_ref(), from, to).await;
        }
        let expected = answers(reference.as_ref()).await;
        assert!(expected.iter().any(|seqs| seqs.len() > 10), "the queries find entries");
        assert_eq!(store.resource_index_lag().await.unwrap(), (0, 61), "nothing is indexed by the appends");
        assert_eq!(answers(store.as_ref()).await, expected, "all from the log");
        // Windows of 16: filled three times, then there are 13 left, less than a window.
        for filled in [16, 32, 48] {
            assert!(store.fill_resource_index(16).await.unwrap());
            assert_eq!(store.resource_index_lag().await.unwrap(), (filled, 61));
            assert_eq!(answers(store.as_ref()).await, expected, "indexed through {filled}");
        }
        assert!(!store.fill_resource_index(16).await.unwrap(), "less than a window waits");
        assert_eq!(store.resource_index_lag().await.unwrap(), (48, 61));
        // A window filled again (a second node, a fill a crash cut short) changes nothing.
        store
            .backend()
            .begin()
            .await
            .unwrap()
            .execute_many_and_commit(vec![(crate::schema::SET_AUDIT_RESOURCES_MARK, vec![Value::Int(48)])])
            .await
            .unwrap();
        store.catch_up_resource_index(20).await.unwrap();
        assert_eq!(store.resource_index_lag().await.unwrap(), (48, 61), "13 behind is within the window");
        store.catch_up_resource_index(5).await.unwrap();
        assert_eq!(store.resource_index_lag().await.unwrap(), (61, 61), "caught up at once");
        assert_eq!(answers(store.as_ref()).await, expected, "all from the index");
        // Rows filled twice are one row each.
        let rows = store.read_rows("SELECT count(*) FROM audit_resources", vec![]).await.unwrap();
        assert_eq!(rows[0][0].int().unwrap(), 61);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_reads_agree_on_every_side_of_the_mark() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqlStore::new(Sqlite::open_file(&dir.path().join("k.db")).await.unwrap()));
        reads_agree_on_every_side_of_the_mark(store).await;
    }

    /// A new, empty database on the test PostgreSQL server (`scripts/test.sh with-postgres`).
    async fn fresh_postgres() -> String {
        let url = std::env::var("KEYHOLD_TEST_POSTGRES_URL")
            .expect("KEYHOLD_TEST_POSTGRES_URL is not set: run the tests with `scripts/test.sh with-postgres ...`");
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let db = format!("audit_index_{}_{}", std::process::id(), nanos % 1_000_000_000_000);
        client.batch_execute(&format!("CREATE DATABASE {db}")).await.unwrap();
        let (base, _) = url.rsplit_once('/').unwrap();
        format!("{base}/{db}")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_reads_agree_on_every_side_of_the_mark() {
        let url = fresh_postgres().await;
        let store = Arc::new(SqlStore::new(crate::postgres::Postgres::connect(&url).await.unwrap()));
        reads_agree_on_every_side_of_the_mark(store).await;
    }

    /// The background task fills whole windows as the log grows, and stops with the store.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_background_task_fills_whole_windows() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqlStore::new(Sqlite::open_file(&dir.path().join("k.db")).await.unwrap()));
        fill_in_background(&store, 10);
        append(store.as_ref(), 0, 35).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while store.resource_index_lag().await.unwrap().0 < 30 {
            assert!(std::time::Instant::now() < deadline, "the task did not fill the index");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(store.resource_index_lag().await.unwrap(), (30, 35), "whole windows only");
        let weak = Arc::downgrade(&store);
        drop(store);
        assert!(weak.upgrade().is_none(), "the task holds no reference between fills");
    }
}
