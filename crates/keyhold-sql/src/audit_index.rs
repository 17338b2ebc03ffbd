//! The audit log's resource index, filled behind the log (issue 18, seventh part).
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
//! A node claims a window before it fills it (`audit_resources_mark.claimed_through`), so that
//! nodes sharing a PostgreSQL database do not all fill the same one; a claim older than
//! [`CLAIM_LEASE`] was left by a node that stopped and is taken over. Correctness does not rest
//! on the claim: rows already there are skipped and the mark only moves forward, so two fills of
//! one window, or a fill a crash cut short, only repeat work. A log that is more than a window
//! ahead when the database is opened (one written before this index existed, or by an older
//! build) is caught up at once, in one statement.

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use keyhold_kms::repo::RepoError;

use crate::kms_repo::SqlStore;
use crate::schema::{
    AUDIT_RESOURCES_MARK, CLAIM_AUDIT_RESOURCES_WINDOW, GET_AUDIT_HEAD, INSERT_AUDIT_RESOURCE,
    SET_AUDIT_RESOURCES_MARK, audit_resources_window, catch_up_audit_resources,
};
use crate::sql::{SqlBackend, Value};

/// Entries the resource index is filled with at a time. Larger windows share more page writes
/// between a key's entries (`bench/audit_ingest.py` measures it); a read by resource scans at
/// most this many entries of `audit_tail` (plus those since the last fill) for its recent part.
pub const AUDIT_RESOURCE_WINDOW: i64 = 131_072;

/// Rows a fill inserts per transaction: a window is several, so that the log's appends and the
/// node's other writes (one SQLite connection) wait at most for one of them.
pub(crate) const ROWS_PER_TRANSACTION: usize = 16_384;

/// How long a node's claim on a window keeps other nodes from filling it. A fill takes about
/// a second; a claim this old was left by a node that stopped.
const CLAIM_LEASE: Duration = Duration::from_secs(60);

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

    /// Adds the next `window` entries to the index, `per_transaction` rows a transaction, if
    /// the log holds that many after the mark and no other node claimed them; whether it did.
    pub(crate) async fn fill_resource_index(&self, window: i64, per_transaction: usize) -> Result<bool, RepoError> {
        let (mark, head) = self.resource_index_lag().await?;
        if head - mark < window {
            return Ok(false);
        }
        let through = mark + window;
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        let claim =
            vec![Value::Int(through), Value::Int(nanos(now)), Value::Int(nanos(now.saturating_sub(CLAIM_LEASE)))];
        let mut tx = self.backend().begin().await?;
        let claimed = tx.execute(CLAIM_AUDIT_RESOURCES_WINDOW, claim).await?;
        tx.commit().await?;
        if claimed == 0 {
            return Ok(false);
        }
        let dialect = self.backend().dialect();
        let rows = self.read_rows(audit_resources_window(dialect), vec![Value::Int(mark), Value::Int(through)]).await?;
        let mut rows = rows
            .into_iter()
            .map(|row| {
                let mut row = row.into_iter();
                let mut next = || row.next().ok_or_else(|| RepoError::Corrupt("short audit_tail row".into()));
                let (kind, resource, time, seq) = (next()?, next()?, next()?, next()?);
                Ok((kind.text()?.to_string(), resource.text()?.to_string(), time.int()?, seq.int()?))
            })
            .collect::<Result<Vec<IndexRow>, RepoError>>()?;
        // The index's order (resource byte by byte, as its collation compares), so that each
        // transaction walks the index once from left to right.
        rows.sort_unstable();
        let per_transaction = per_transaction.max(1);
        let transactions = rows.len().div_ceil(per_transaction).max(1);
        let mut rows = rows.into_iter();
        for i in 0..transactions {
            let mut statements: Vec<(&'static str, Vec<Value>)> = rows
                .by_ref()
                .take(per_transaction)
                .map(|(kind, resource, time, seq)| {
                    (
                        INSERT_AUDIT_RESOURCE,
                        vec![Value::Text(kind), Value::Text(resource), Value::Int(time), Value::Int(seq)],
                    )
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
pub(crate) fn fill_in_background<B: SqlBackend>(store: &Arc<SqlStore<B>>, window: i64) -> tokio::task::JoinHandle<()> {
    let store: Weak<SqlStore<B>> = Arc::downgrade(store);
    tokio::spawn(async move {
        let mut failing = false;
        loop {
            tokio::time::sleep(POLL).await;
            let Some(store) = store.upgrade() else { return };
            loop {
                match store.fill_resource_index(window, ROWS_PER_TRANSACTION).await {
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
    })
}

#[cfg(test)]
mod tests {
    use keyhold_api::wire::Timestamp;
    use keyhold_kms::audit::{AuditKind, AuditRecord, EncodedRecord};
    use keyhold_kms::repo::{AuditQuery, KmsRepository};

    use super::*;
    use crate::sqlite::Sqlite;

    /// Resources below a project, each project's own.
    const KEYS: [&str; 5] = [
        "locations/global/keyRings/r/cryptoKeys/a",
        "locations/global/keyRings/r/cryptoKeys/a/cryptoKeyVersions/1",
        "locations/global/keyRings/r/cryptoKeys/ab",
        "locations/global/keyRings/r/cryptoKeys/b",
        "locations/global/keyRings/s/cryptoKeys/a",
    ];

    /// The i-th entry: a quarter of them in another project, with the same key names there.
    fn entry(i: i64) -> AuditRecord {
        // Every 7th entry is late (another node's clock): reads follow the time, not the seq.
        let secs = if i % 7 == 3 { i - 5 } else { i };
        let project = if i % 4 == 1 { "beta" } else { "acme" };
        AuditRecord {
            time: Timestamp::from_unix_nanos(1_700_000_000_000_000_000 + i128::from(secs) * 1_000_000_000).unwrap(),
            project: project.into(),
            principal: format!("user:u{}@example.com", i % 3),
            service: "cloudkms.googleapis.com".into(),
            method: if i % 2 == 0 { "Encrypt".into() } else { "Decrypt".into() },
            resource: format!("projects/{project}/{}", KEYS[(i * 7 % 5) as usize]),
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

    /// Every read by resource the tests compare: each prefix, both orders, with and without
    /// the other filters, server-wide and within project `acme`, whole and paged.
    fn queries() -> Vec<AuditQuery> {
        let mut all = Vec::new();
        for prefix in [
            "projects/acme/locations/global/keyRings/r/cryptoKeys/a",
            "projects/acme/locations/global/keyRings/r/cryptoKeys/b",
            "projects/acme/locations/global/keyRings/r/",
            "projects/acme/locations/global/keyRings/s",
            "projects/beta/locations/global/keyRings/r/cryptoKeys/a",
            "projects/",
        ] {
            for descending in [false, true] {
                for (kind, method, principal) in
                    [("", "", ""), ("data_access", "Encrypt", ""), ("activity", "", "user:u1@example.com")]
                {
                    for (project, limit) in [("-", 1000), ("acme", 3), ("-", 4)] {
                        all.push(AuditQuery {
                            project: project.into(),
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

    /// Each query's answer (seq and project of each entry), every page followed to the end.
    async fn answers(s: &dyn KmsRepository) -> Vec<Vec<(i64, String)>> {
        let mut out = Vec::new();
        for mut q in queries() {
            let mut found = Vec::new();
            loop {
                let page = s.read_audit(&q).await.unwrap();
                let Some((last, _)) = page.last() else { break };
                q.after = Some(*last);
                for (_, e) in page {
                    let record: AuditRecord = serde_json::from_str(&e.entry_json).unwrap();
                    found.push((e.seq, record.project));
                }
            }
            if q.project != "-" {
                assert!(found.iter().all(|(_, p)| *p == q.project), "{q:?}: another project's entries: {found:?}");
            }
            out.push(found);
        }
        out
    }

    async fn append(s: &dyn KmsRepository, from: i64, to: i64) {
        s.append_audit(&(from..to).map(|i| EncodedRecord::new(entry(i)).unwrap()).collect::<Vec<_>>()).await.unwrap();
    }

    /// Runs one statement in its own transaction.
    async fn run(backend: &impl SqlBackend, sql: &'static str, params: Vec<Value>) {
        backend.begin().await.unwrap().execute_many_and_commit(vec![(sql, params)]).await.unwrap();
    }

    /// The answers of every read by resource are the same whatever part of the log the index
    /// holds, and the same as the in-memory database's (which has no index and scans).
    async fn reads_agree_on_every_side_of_the_mark<B: SqlBackend>(store: Arc<SqlStore<B>>) {
        let reference = SqlStore::new(Sqlite::open_in_memory().await.unwrap()).keeping_audit_entries(u64::MAX);
        for (from, to) in [(0, 23), (23, 61)] {
            append(store.as_ref(), from, to).await;
            append(&reference, from, to).await;
        }
        let expected = answers(&reference).await;
        assert!(expected.iter().any(|found| found.len() > 10), "the queries find entries");
        assert!(expected.iter().any(|found| found.iter().any(|(_, p)| p == "beta")), "and the other project's");
        assert_eq!(store.resource_index_lag().await.unwrap(), (0, 61), "nothing is indexed by the appends");
        assert_eq!(answers(store.as_ref()).await, expected, "all from the log");
        // Windows of 16, 5 rows a transaction: filled three times, then 13 are left, less than
        // a window.
        for filled in [16, 32, 48] {
            assert!(store.fill_resource_index(16, 5).await.unwrap());
            assert_eq!(store.resource_index_lag().await.unwrap(), (filled, 61));
            assert_eq!(answers(store.as_ref()).await, expected, "indexed through {filled}");
        }
        assert!(!store.fill_resource_index(16, 5).await.unwrap(), "less than a window waits");
        assert_eq!(store.resource_index_lag().await.unwrap(), (48, 61));
        // Rows after the mark (a fill a crash cut short, another node's fill under way) are
        // not read twice.
        let some_after = "INSERT INTO audit_resources (kind, resource, time_nanos, seq) \
             SELECT kind, resource, time_nanos, seq FROM audit_log WHERE seq > $1 AND seq <= $2";
        run(store.backend(), some_after, vec![Value::Int(48), Value::Int(55)]).await;
        assert_eq!(answers(store.as_ref()).await, expected, "rows after the mark");
        store.catch_up_resource_index(20).await.unwrap();
        assert_eq!(store.resource_index_lag().await.unwrap(), (48, 61), "13 behind is within the window");
        store.catch_up_resource_index(5).await.unwrap();
        assert_eq!(store.resource_index_lag().await.unwrap(), (61, 61), "caught up at once");
        assert_eq!(answers(store.as_ref()).await, expected, "all from the index");
        // Rows added twice are one row each.
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
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos();
        let db = format!("audit_index_{}_{}_{n}", std::process::id(), nanos % 1_000_000_000_000);
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

    /// Two nodes on one PostgreSQL database: a window one of them claimed is left to it, until
    /// its claim is older than the lease.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_window_another_node_claimed_is_left_to_it_until_its_claim_lapses() {
        let url = fresh_postgres().await;
        let one = SqlStore::new(crate::postgres::Postgres::connect(&url).await.unwrap());
        let two = SqlStore::new(crate::postgres::Postgres::connect(&url).await.unwrap());
        append(&one, 0, 20).await;
        // Node two claims the first window (then, say, stops before it fills it).
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as i64;
        let claim = vec![Value::Int(8), Value::Int(now), Value::Int(now - 60_000_000_000)];
        let mut tx = two.backend().begin().await.unwrap();
        assert_eq!(tx.execute(CLAIM_AUDIT_RESOURCES_WINDOW, claim).await.unwrap(), 1);
        tx.commit().await.unwrap();
        assert!(!one.fill_resource_index(8, 3).await.unwrap(), "node one leaves the claimed window");
        assert_eq!(one.resource_index_lag().await.unwrap(), (0, 20));
        let lapsed = "UPDATE audit_resources_mark SET claim_nanos = claim_nanos - 61000000000 WHERE id = 1";
        run(one.backend(), lapsed, vec![]).await;
        assert!(one.fill_resource_index(8, 3).await.unwrap(), "a lapsed claim is taken over");
        assert!(one.fill_resource_index(8, 3).await.unwrap(), "and the next window claimed and filled");
        assert_eq!(one.resource_index_lag().await.unwrap(), (16, 20));
        assert_eq!(two.resource_index_lag().await.unwrap(), (16, 20));
    }

    /// The background task fills whole windows as the log grows, and ends with the store.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_background_task_fills_whole_windows() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqlStore::new(Sqlite::open_file(&dir.path().join("k.db")).await.unwrap()));
        let task = fill_in_background(&store, 10);
        append(store.as_ref(), 0, 35).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while store.resource_index_lag().await.unwrap().0 < 30 {
            assert!(std::time::Instant::now() < deadline, "the task did not fill the index");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(store.resource_index_lag().await.unwrap(), (30, 35), "whole windows only");
        drop(store);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the task ends once the store is gone")
            .unwrap();
    }
}
