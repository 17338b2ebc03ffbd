//! The audit journal: `keyhold serve --audit-sync INTERVAL` (issue 18; 100 ms by default).
//!
//! With `--audit-sync strict` a request is answered once its entry is committed to the
//! database, fsync included: the audit commit is the hot path's cost. With an interval, the
//! entries of reads, cryptographic calls and refusals take another way, the one database WAL
//! writers and Vault's file audit device take:
//!
//! 1. the writer thread appends each batch to a journal segment on the node's disk
//!    (`DATA_DIR/audit-journal/`, the format of `keyhold_audit::journal`) and answers the
//!    batch's requests once the kernel has the bytes: a killed process loses nothing;
//! 2. the flusher thread fsyncs the segment every INTERVAL: a power loss (or a kernel crash)
//!    can cost at most the entries of the last INTERVAL;
//! 3. the ingest task moves the entries into the audit log in large batches (it gathers until
//!    [`INGEST_INTERVAL`] after the last commit began, or until a read waits or the batch is
//!    full), where they are chained like any other, and records in the same transaction how far
//!    the journal is in the log (`audit_journals`), so that the replay at the next start appends
//!    exactly the rest; segments wholly in the log are deleted.
//!
//! Entries of changes still commit with their change. A read of the log first waits for the
//! entries written before it ([`crate::audit::AuditWriter::settle`]), so a caller always reads
//! its own requests (and has the ingest task commit at once). If the database stops taking
//! entries, or takes them slower than they come, the journal holds them (retrying), and
//! requests wait once [`MAX_LAG`] entries are behind (and fail after [`LAG_TIMEOUT`]), so
//! memory stays bounded. An entry the database refuses on its own while it takes others is set
//! aside in `quarantine.jsonl` beside the segments, loudly, rather than holding up the log.
//!
//! A strict server started on a directory whose journal still holds entries (a journaled run
//! was killed, then restarted strict) moves them into the log first ([`drain`]).

use std::collections::VecDeque;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyhold_audit::journal::{
    SegmentDefect, encode_frame, is_cut_header, parse_segment_file_name, read_segment, segment_file_name,
    segment_header,
};
use tokio::sync::{mpsc, watch};

use crate::audit::{EncodedRecord, Pending};
use crate::private_files;
use crate::repo::{KmsRepository, RepoError};

/// Where the journal lives and how often it is made durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditJournalConfig {
    /// The journal's directory (0700; one per node, never shared).
    pub dir: PathBuf,
    /// How often written entries are fsynced: the most a power loss can cost. `None`: strict
    /// (entries are committed before the answer); the directory is then only emptied at start,
    /// of whatever a journaled run left in it.
    pub sync_interval: Option<Duration>,
}

/// A segment is closed and a new one begun once it holds this many bytes.
const SEGMENT_BYTES: u64 = 64 << 20;
/// Most entries the writer appends in one write.
const WRITE_BATCH: usize = 1024;
/// Most entries one ingest transaction appends to the log.
const INGEST_BATCH: usize = 16384;
/// How long the ingest task gathers entries before it commits them (unless a read of the log
/// waits, or the batch is full).
const INGEST_INTERVAL: Duration = Duration::from_millis(200);
/// Most entries written but not yet in the log; beyond it the writer waits for the ingest task.
pub const MAX_LAG: u64 = 131_072;
/// How often, at most, the writer says that requests wait for the log.
const LAG_WARNING_EVERY: Duration = Duration::from_secs(10);
/// How long the writer waits for the log to catch up before failing a batch's requests.
pub const LAG_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a read of the log waits for entries to reach it.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Failed attempts at a batch, with the database answering, before its entries are tried one
/// at a time (and those refused on their own set aside).
const REFUSALS_BEFORE_SINGLES: u32 = 3;
/// Held (flock) while a server uses the directory.
const LOCK_FILE: &str = "LOCK";
/// Entries the database refused on their own, one JSON object a line.
const QUARANTINE_FILE: &str = "quarantine.jsonl";

/// What the writer and the readers of the log share.
#[derive(Debug)]
pub(crate) struct JournalProgress {
    /// The number of the newest entry written (and answered).
    written: AtomicU64,
    /// The number of the newest entry in the audit log.
    ingested: watch::Sender<u64>,
    /// A handle on the open segment, for the flusher and the final sync.
    current: Mutex<std::fs::File>,
    /// Set by a read waiting for entries: the ingest task commits what it has at once.
    hurry: tokio::sync::Notify,
}

impl JournalProgress {
    /// Waits until every entry written before the call is in the log.
    pub(crate) async fn settle(&self) -> Result<(), RepoError> {
        let target = self.written.load(Ordering::Acquire);
        let mut ingested = self.ingested.subscribe();
        // Hurries the ingest task again after each commit that fell short (a full batch
        // leaves the rest queued), so that no commit waits for the interval meanwhile.
        let caught_up = async {
            while *ingested.borrow_and_update() < target {
                self.hurry.notify_one();
                ingested.changed().await?;
            }
            Ok::<(), watch::error::RecvError>(())
        };
        match tokio::time::timeout(SETTLE_TIMEOUT, caught_up).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(RepoError::Unavailable("the audit journal has stopped".into())),
            Err(_) => Err(RepoError::Unavailable(
                "audit entries are still being moved from the journal into the log; try again".into(),
            )),
        }
    }

    /// At shutdown, once no request is in flight: waits for the log to take every entry
    /// written, and fsyncs the open segment whatever happens.
    pub(crate) async fn finish(&self) -> Result<(), RepoError> {
        let settled = self.settle().await;
        let synced = lock(&self.current).sync_data();
        settled?;
        synced.map_err(|e| RepoError::Unavailable(format!("audit journal: cannot sync: {e}")))
    }
}

/// What the writer thread owns besides its channel.
struct Segments {
    dir: PathBuf,
    /// This process's journal name, in every segment's version line.
    name: String,
    /// The open segment: its first entry's number, its file and how many bytes it holds.
    first: u64,
    file: std::fs::File,
    len: u64,
    /// The length of its version line.
    header_len: u64,
    /// After a failed write that could not be undone: start a new segment before the next
    /// (never append after damage).
    broken: bool,
    /// Closed segments not yet wholly in the log: (their last entry, path).
    closed: Arc<Mutex<VecDeque<(u64, PathBuf)>>>,
    progress: Arc<JournalProgress>,
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> RepoError {
    RepoError::Unavailable(format!("audit journal: cannot {what} {}: {e}", path.display()))
}

/// Creates segment `first` of journal `name` (0600, its version line written and fsynced, the
/// directory too); on failure nothing is left behind, so that a retry can create it. Returns
/// the file and its length.
fn create_segment(dir: &Path, first: u64, name: &str) -> Result<(std::fs::File, u64), RepoError> {
    let header = segment_header(name).ok_or_else(|| RepoError::Corrupt(format!("audit journal: bad name {name}")))?;
    let path = dir.join(segment_file_name(first));
    let mut file = private_files::create_new_file(&path).map_err(|e| io_error("create", &path, e))?;
    let written = file.write_all(&header).and_then(|()| file.sync_data()).map_err(|e| io_error("write", &path, e));
    if let Err(e) = written.and_then(|()| sync_dir(dir)) {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok((file, header.len() as u64))
}

fn sync_dir(dir: &Path) -> Result<(), RepoError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_error("sync", dir, e))
}

impl Segments {
    /// Closes the open segment (fsynced, so that the flusher need only ever sync the open one)
    /// and begins segment `first`.
    fn rotate(&mut self, first: u64) -> Result<(), RepoError> {
        let old = self.dir.join(segment_file_name(self.first));
        self.file.sync_data().map_err(|e| io_error("sync", &old, e))?;
        let (file, len) = create_segment(&self.dir, first, &self.name)?;
        let handle = file.try_clone().map_err(|e| io_error("open", &self.dir, e))?;
        // The old segment's entries end just before `first`.
        lock(&self.closed).push_back((first - 1, old));
        *lock(&self.progress.current) = handle;
        self.file = file;
        self.first = first;
        self.len = len;
        self.header_len = len;
        self.broken = false;
        Ok(())
    }

    /// Appends `bytes` (whole frames, the first numbered `first`) to the open segment, beginning
    /// a new one first if it is full or damaged. On failure the segment is cut back to its last
    /// whole frame and the next write goes there; if that fails too, to a new segment (which the
    /// replay reads in place of the damaged tail: see [`replay`]).
    fn append(&mut self, first: u64, bytes: &[u8]) -> Result<(), RepoError> {
        if self.broken || (self.len + bytes.len() as u64 > SEGMENT_BYTES && self.len > self.header_len) {
            self.rotate(first)?;
        }
        if let Err(e) = self.file.write_all(bytes) {
            let path = self.dir.join(segment_file_name(self.first));
            let len = self.len;
            let undone = self.file.set_len(len).and_then(|()| self.file.seek(SeekFrom::Start(len)));
            if undone.is_err() {
                self.broken = true;
            }
            return Err(io_error("write", &path, e));
        }
        self.len += bytes.len() as u64;
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The directory made private and locked (for as long as the returned file is open).
fn open_dir(dir: &Path) -> Result<std::fs::File, RepoError> {
    private_files::ensure_private_dir(dir).map_err(|e| io_error("create", dir, e))?;
    let lock_path = dir.join(LOCK_FILE);
    let lock_file = private_files::open_lock_file(&lock_path).map_err(|e| io_error("open", &lock_path, e))?;
    match lock_file.try_lock() {
        Ok(()) => Ok(lock_file),
        Err(std::fs::TryLockError::WouldBlock) => Err(RepoError::Unavailable(format!(
            "audit journal: another server is using {} (each node needs a journal of its own: give it its own --data-dir)",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(io_error("lock", &lock_path, e)),
    }
}

/// For a strict server: moves into the log whatever a journaled run left in `dir`, if anything.
pub(crate) async fn drain(store: &dyn KmsRepository, dir: &Path) -> Result<(), RepoError> {
    let has_segments = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().any(|e| e.file_name().to_str().and_then(parse_segment_file_name).is_some()))
        .unwrap_or(false);
    if !has_segments {
        return Ok(());
    }
    let _lock = open_dir(dir)?;
    replay(store, dir).await.map(|_| ())
}

/// Opens the journal in `config.dir`: moves every entry a previous run left in it into the log,
/// then starts the writer, the flusher and the ingest task. Returns the writer's channel.
pub(crate) async fn start(
    store: Arc<dyn KmsRepository>,
    dir: &Path,
    sync_interval: Duration,
) -> Result<(mpsc::UnboundedSender<Pending>, Arc<JournalProgress>), RepoError> {
    let lock_file = open_dir(dir)?;
    let last = replay(store.as_ref(), dir).await?;
    let first = last.checked_add(1).ok_or_else(|| RepoError::Corrupt("audit journal: numbers exhausted".into()))?;
    let id = fresh_name()?;
    let (file, len) = create_segment(dir, first, &id)?;
    let progress = Arc::new(JournalProgress {
        written: AtomicU64::new(last),
        ingested: watch::Sender::new(last),
        current: Mutex::new(file.try_clone().map_err(|e| io_error("open", dir, e))?),
        hurry: tokio::sync::Notify::new(),
    });
    let closed = Arc::new(Mutex::new(VecDeque::new()));
    let segments = Segments {
        dir: dir.to_path_buf(),
        name: id.clone(),
        first,
        file,
        len,
        header_len: len,
        broken: false,
        closed: closed.clone(),
        progress: progress.clone(),
    };
    let (tx, rx) = mpsc::unbounded_channel::<Pending>();
    let (to_ingest, ingest_rx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("audit-journal".into())
        .spawn(move || {
            // Held for as long as the journal is written.
            let _lock = lock_file;
            write_loop(rx, segments, last, &to_ingest);
        })
        .map_err(|e| io_error("start the writer for", dir, e))?;
    // The flusher holds only a weak reference: it ends with the writer.
    let weak = Arc::downgrade(&progress);
    std::thread::Builder::new()
        .name("audit-journal-sync".into())
        .spawn(move || sync_loop(&weak, sync_interval))
        .map_err(|e| io_error("start the flusher for", dir, e))?;
    tokio::spawn(ingest_loop(store, id, dir.to_path_buf(), ingest_rx, progress.clone(), closed));
    tracing::info!(dir = %dir.display(), interval = ?sync_interval, "audit entries of reads and cryptographic calls go through the journal");
    Ok((tx, progress))
}

/// A journal name of this process's own: random, so that no two processes (not even two nodes
/// started from copies of one data directory) ever share a mark in the log.
fn fresh_name() -> Result<String, RepoError> {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| RepoError::Unavailable("audit journal: no randomness for its name".into()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Appends to the log every entry of the directory's segments that is not in it yet (each
/// segment names its journal, whose mark the log keeps), then removes the segments (a damaged
/// one is kept, renamed `.damaged`). Returns the highest entry number found (0 if none), after
/// which the next journal numbers its entries.
async fn replay(store: &dyn KmsRepository, dir: &Path) -> Result<u64, RepoError> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_error("read", dir, e))? {
        let entry = entry.map_err(|e| io_error("read", dir, e))?;
        if let Some(first) = entry.file_name().to_str().and_then(parse_segment_file_name) {
            segments.push((first, entry.path()));
        }
    }
    segments.sort();
    // Per journal: how far the log has it (its mark, then what this replay appended).
    let mut done: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let (mut highest, mut replayed) = (0u64, 0usize);
    for (i, (first, path)) in segments.iter().enumerate() {
        let bytes = std::fs::read(path).map_err(|e| io_error("read", path, e))?;
        let segment = read_segment(&bytes, Some(*first));
        let is_last = i + 1 == segments.len();
        let damaged = match &segment.defect {
            None => false,
            // A write the process did not finish (never acknowledged), or a segment whose
            // version line it did not finish.
            Some(SegmentDefect::Torn { .. }) => false,
            Some(SegmentDefect::Header) if is_last && is_cut_header(&bytes) => false,
            Some(defect) => {
                tracing::error!(
                    segment = %path.display(),
                    "audit journal: {defect}; the entries after that point in this segment are lost (the file is kept as .damaged)"
                );
                true
            }
        };
        highest = highest.max(segment.entries.last().map_or(0, |(seq, _)| *seq)).max(first.saturating_sub(1));
        if !segment.entries.is_empty() {
            let mark = match done.get(&segment.journal) {
                Some(mark) => *mark,
                None => u64::try_from(store.audit_journal_through(&segment.journal).await?).unwrap_or(0),
            };
            // A write that failed and could not be cut back left frames that were never
            // acknowledged; the writer went on with a new segment from the same number, which
            // holds the acknowledged ones: a segment's entries end where the next one begins.
            let next = segments.get(i + 1).map_or(u64::MAX, |(n, _)| *n);
            let fresh: Vec<(u64, EncodedRecord)> =
                segment.entries.into_iter().filter(|(seq, _)| *seq > mark && *seq < next).collect();
            let mut last = mark;
            for chunk in fresh.chunks(INGEST_BATCH) {
                let (seqs, records): (Vec<u64>, Vec<EncodedRecord>) = chunk.iter().cloned().unzip();
                replayed += records.len();
                last = seqs.last().copied().unwrap_or(last);
                ingest_batch(store, &segment.journal, dir, seqs, records).await;
            }
            done.insert(segment.journal, last);
        }
        if damaged {
            let kept = path.with_extension("damaged");
            std::fs::rename(path, &kept).map_err(|e| io_error("rename", path, e))?;
        } else {
            std::fs::remove_file(path).map_err(|e| io_error("remove", path, e))?;
        }
    }
    if replayed > 0 {
        tracing::warn!(entries = replayed, "audit journal: moved entries left by the previous run into the log");
    }
    Ok(highest)
}

fn write_loop(
    mut rx: mpsc::UnboundedReceiver<Pending>,
    mut segments: Segments,
    mut seq: u64,
    to_ingest: &mpsc::UnboundedSender<(Vec<u64>, Vec<EncodedRecord>)>,
) {
    let mut bytes = Vec::new();
    let mut last_warned: Option<Instant> = None;
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }
        // Backpressure: the database is behind (or away); hold the requests, not the memory,
        // and fail them if it stays behind.
        let waiting_since = Instant::now();
        let mut behind = false;
        let lag = seq.saturating_sub(*segments.progress.ingested.borrow());
        if lag > MAX_LAG && last_warned.is_none_or(|t| t.elapsed() > LAG_WARNING_EVERY) {
            last_warned = Some(waiting_since);
            tracing::warn!(
                behind = lag,
                "audit journal: the audit log is behind; requests wait for it (the database cannot take entries as fast as they come)"
            );
        }
        while seq.saturating_sub(*segments.progress.ingested.borrow()) > MAX_LAG {
            if waiting_since.elapsed() > LAG_TIMEOUT {
                behind = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if behind {
            tracing::error!(behind = MAX_LAG, "audit journal: the audit log is not taking entries; requests fail");
            for (_, done) in batch {
                let _ = done.send(Err(RepoError::Unavailable("the audit log is not taking entries; try again".into())));
            }
            continue;
        }
        bytes.clear();
        let mut seqs = Vec::with_capacity(batch.len());
        let mut records = Vec::with_capacity(batch.len());
        let mut waiting = Vec::with_capacity(batch.len());
        let mut next = seq;
        for (record, done) in batch {
            match encode_frame(&mut bytes, next + 1, record.json().as_bytes()) {
                Ok(()) => {
                    next += 1;
                    seqs.push(next);
                    records.push(record);
                    waiting.push(done);
                }
                // That request fails; its entry is not recorded (as a strict server's request
                // fails when its entry cannot be committed).
                Err(e) => {
                    let _ = done.send(Err(RepoError::Corrupt(format!("audit entry not recorded: {e}"))));
                }
            }
        }
        if waiting.is_empty() {
            continue;
        }
        let result = segments.append(seq + 1, &bytes);
        match &result {
            Ok(()) => {
                seq = next;
                // Queued for the ingest task before `written` says they exist (a read that waits
                // for them finds them queued), and both before answering (a read right after the
                // answer waits for them).
                let _ = to_ingest.send((seqs, records));
                segments.progress.written.store(seq, Ordering::Release);
            }
            Err(e) => tracing::error!(error = %e, "audit journal: write failed; the batch's requests fail"),
        }
        for done in waiting {
            let _ = done.send(result.clone());
        }
    }
    // Every writer is gone: make what was written durable now.
    if let Err(e) = segments.file.sync_data() {
        tracing::error!(error = %e, "audit journal: final sync failed");
    }
}

fn sync_loop(progress: &std::sync::Weak<JournalProgress>, interval: Duration) {
    let mut synced = progress.upgrade().map_or(0, |p| p.written.load(Ordering::Acquire));
    loop {
        std::thread::sleep(interval);
        let Some(progress) = progress.upgrade() else { return };
        let written = progress.written.load(Ordering::Acquire);
        if written == synced {
            continue;
        }
        // Everything up to `written` is in the open segment or in a closed one (fsynced when
        // it was closed).
        let file = lock(&progress.current).try_clone();
        match file.and_then(|f| f.sync_data()) {
            Ok(()) => synced = written,
            // Linux may drop the failed pages' error after reporting it once: the next interval
            // syncs again, but what was lost is reported here.
            Err(e) => {
                tracing::error!(error = %e, "audit journal: fsync failed; entries since the last sync may not survive a power loss")
            }
        }
    }
}

async fn ingest_loop(
    store: Arc<dyn KmsRepository>,
    id: String,
    dir: PathBuf,
    mut rx: mpsc::UnboundedReceiver<(Vec<u64>, Vec<EncodedRecord>)>,
    progress: Arc<JournalProgress>,
    closed: Arc<Mutex<VecDeque<(u64, PathBuf)>>>,
) {
    let mut last_commit = tokio::time::Instant::now();
    while let Some((mut seqs, mut records)) = rx.recv().await {
        gather(&mut rx, &progress.hurry, last_commit + INGEST_INTERVAL, &mut seqs, &mut records).await;
        let Some(&through) = seqs.last() else { continue };
        last_commit = tokio::time::Instant::now();
        ingest_batch(store.as_ref(), &id, &dir, seqs, records).await;
        progress.ingested.send_replace(through);
        let done: Vec<PathBuf> = {
            let mut closed = lock(&closed);
            let mut done = Vec::new();
            while closed.front().is_some_and(|(last, _)| *last <= through) {
                done.extend(closed.pop_front().map(|(_, path)| path));
            }
            done
        };
        for path in done {
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(segment = %path.display(), error = %e, "audit journal: cannot remove a segment already in the log");
            }
        }
    }
}

/// Adds to `seqs` and `records` (one batch of the writer's already) what the writer sends until
/// `due`, until they hold [`INGEST_BATCH`] entries, or until a read of the log waits (`hurry`;
/// what is queued then is taken too, the read's own entries among it): fewer, larger commits
/// write each page of the log's indexes once for many entries instead of once for a few.
async fn gather<T>(
    rx: &mut mpsc::UnboundedReceiver<(Vec<u64>, Vec<T>)>,
    hurry: &tokio::sync::Notify,
    due: tokio::time::Instant,
    seqs: &mut Vec<u64>,
    records: &mut Vec<T>,
) {
    while records.len() < INGEST_BATCH {
        tokio::select! {
            biased;
            () = hurry.notified() => {
                while records.len() < INGEST_BATCH {
                    let Ok((more_seqs, more)) = rx.try_recv() else { break };
                    seqs.extend(more_seqs);
                    records.extend(more);
                }
                return;
            }
            more = rx.recv() => match more {
                Some((more_seqs, more)) => {
                    seqs.extend(more_seqs);
                    records.extend(more);
                }
                None => return,
            },
            () = tokio::time::sleep_until(due) => return,
        }
    }
}

fn as_mark(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// Drops the entries the log already has (the journal's mark is at or past them).
fn drop_done(mark: i64, seqs: &mut Vec<u64>, records: &mut Vec<EncodedRecord>) {
    let done = seqs.partition_point(|s| as_mark(*s) <= mark);
    seqs.drain(..done);
    records.drain(..done);
}

/// Moves entries (numbered `seqs`, ascending) into the log, retrying while the database is
/// away. An attempt whose answer was lost after its commit is not appended again (the mark is
/// read back before each retry). If the database answers but refuses the batch (an error other
/// than [`RepoError::Unavailable`]), its entries go one at a time, and one it refuses on its
/// own is set aside in the quarantine file so that the others reach the log.
async fn ingest_batch(
    store: &dyn KmsRepository,
    id: &str,
    dir: &Path,
    mut seqs: Vec<u64>,
    mut records: Vec<EncodedRecord>,
) {
    let mut delay = Duration::from_millis(10);
    let mut refusals = 0;
    while let Some(&through) = seqs.last() {
        let Err(e) = store.append_journaled_audit(&records, id, as_mark(through)).await else { return };
        tracing::warn!(error = %e, entries = records.len(), "audit journal: cannot move entries into the log; retrying");
        if !matches!(e, RepoError::Unavailable(_)) {
            refusals += 1;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
        let Ok(mark) = store.audit_journal_through(id).await else { continue };
        drop_done(mark, &mut seqs, &mut records);
        if refusals >= REFUSALS_BEFORE_SINGLES {
            for (seq, record) in seqs.drain(..).zip(records.drain(..)) {
                ingest_single(store, id, dir, seq, record).await;
            }
        }
    }
}

/// One entry of a batch the database refused: appended, or (refused on its own) set aside.
async fn ingest_single(store: &dyn KmsRepository, id: &str, dir: &Path, seq: u64, record: EncodedRecord) {
    let mut delay = Duration::from_millis(10);
    let mut set_aside = false;
    loop {
        let attempt = if set_aside {
            // Only the mark moves past it.
            store.append_journaled_audit(&[], id, as_mark(seq)).await
        } else {
            store.append_journaled_audit(std::slice::from_ref(&record), id, as_mark(seq)).await
        };
        match attempt {
            Ok(()) => return,
            Err(RepoError::Unavailable(_)) => {}
            Err(e) if !set_aside => match store.audit_journal_through(id).await {
                // Committed after all (its answer was lost).
                Ok(mark) if mark >= as_mark(seq) => return,
                Ok(_) => {
                    quarantine(dir, seq, &record, &e);
                    set_aside = true;
                    continue;
                }
                Err(_) => {}
            },
            Err(e) => {
                tracing::warn!(error = %e, seq, "audit journal: cannot move the mark past a set-aside entry; retrying")
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

fn quarantine(dir: &Path, seq: u64, record: &EncodedRecord, error: &RepoError) {
    let path = dir.join(QUARANTINE_FILE);
    tracing::error!(
        seq,
        error = %error,
        file = %path.display(),
        "audit journal: the database refuses this audit entry; it is set aside in the quarantine file, not in the log"
    );
    // The entry's JSON from its frame, parsed back into a value so that the line stays one JSON
    // object (its keys then sorted); as a string if it does not parse back.
    let entry = serde_json::from_str::<serde_json::Value>(record.json())
        .unwrap_or_else(|_| serde_json::Value::String(record.json().to_owned()));
    let line = serde_json::json!({"seq": seq, "error": error.to_string(), "entry": entry});
    let written = private_files::open_append_file(&path)
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()).and_then(|()| f.sync_data()));
    if let Err(e) = written {
        tracing::error!(file = %path.display(), error = %e, entry = %line, "audit journal: cannot write the quarantine file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(written: u64, ingested: u64, dir: &Path) -> JournalProgress {
        JournalProgress {
            written: AtomicU64::new(written),
            ingested: watch::Sender::new(ingested),
            current: Mutex::new(std::fs::File::create(dir.join("segment")).unwrap()),
            hurry: tokio::sync::Notify::new(),
        }
    }

    #[tokio::test]
    async fn a_read_waits_for_the_entries_written_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = Arc::new(progress(5, 3, dir.path()));
        let waiting = tokio::spawn({
            let p = p.clone();
            async move { p.settle().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "entries 4 and 5 are not in the log yet");
        let hurried = tokio::time::timeout(Duration::ZERO, p.hurry.notified()).await;
        assert!(hurried.is_ok(), "the waiting read asks the ingest task to commit at once");
        p.ingested.send_replace(4);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "entry 5 is not in the log yet");
        let hurried = tokio::time::timeout(Duration::ZERO, p.hurry.notified()).await;
        assert!(hurried.is_ok(), "a commit that fell short is followed by another hurry");
        // Entries written after the read began are not waited for.
        p.written.store(9, Ordering::Release);
        p.ingested.send_replace(5);
        waiting.await.unwrap().unwrap();
        // Already there: at once, and without hurrying the ingest task.
        let there = progress(2, 2, dir.path());
        there.settle().await.unwrap();
        assert!(tokio::time::timeout(Duration::ZERO, there.hurry.notified()).await.is_err());
    }

    /// What the writer would send: entries `first..first + n`.
    fn batch(first: u64, n: u64) -> (Vec<u64>, Vec<u64>) {
        let seqs: Vec<u64> = (first..first + n).collect();
        (seqs.clone(), seqs)
    }

    #[tokio::test(start_paused = true)]
    async fn the_ingest_gathers_entries_until_the_interval_is_over() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let hurry = tokio::sync::Notify::new();
        let start = tokio::time::Instant::now();
        tokio::spawn(async move {
            for i in 0..3 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                tx.send(batch(2 + i * 10, 10)).unwrap();
            }
            // Kept open, as the writer keeps it: only the interval ends the gathering.
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(tx);
        });
        let (mut seqs, mut records) = batch(1, 1);
        gather(&mut rx, &hurry, start + INGEST_INTERVAL, &mut seqs, &mut records).await;
        assert_eq!(start.elapsed(), INGEST_INTERVAL, "gathered until the interval was over");
        assert_eq!(records.len(), 31, "the first batch and the three sent meanwhile: {records:?}");
        assert_eq!(seqs, records);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_read_has_the_ingest_commit_at_once_with_what_is_queued() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let hurry = tokio::sync::Notify::new();
        let start = tokio::time::Instant::now();
        // A read asked while the last commit ran: its entries are queued, and the gathering
        // that follows stops at once, with them.
        tx.send(batch(2, 5)).unwrap();
        hurry.notify_one();
        let (mut seqs, mut records) = batch(1, 1);
        gather(&mut rx, &hurry, start + INGEST_INTERVAL, &mut seqs, &mut records).await;
        assert_eq!(start.elapsed(), Duration::ZERO, "did not wait for the interval");
        assert_eq!(seqs, (1..7).collect::<Vec<_>>());
        // A read asked during the gathering stops it too.
        let notified = std::sync::Arc::new(hurry);
        let later = notified.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            tx.send(batch(7, 3)).unwrap();
            later.notify_one();
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(tx);
        });
        let (mut seqs, mut records) = (Vec::new(), Vec::new());
        let start = tokio::time::Instant::now();
        gather(&mut rx, &notified, start + INGEST_INTERVAL, &mut seqs, &mut records).await;
        assert_eq!(start.elapsed(), Duration::from_millis(30));
        assert_eq!(seqs, vec![7, 8, 9]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_or_the_writer_gone_ends_the_gathering() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let hurry = tokio::sync::Notify::new();
        let start = tokio::time::Instant::now();
        let full = u64::try_from(INGEST_BATCH).unwrap();
        tx.send(batch(2, full)).unwrap();
        tx.send(batch(2 + full, 7)).unwrap();
        let (mut seqs, mut records) = batch(1, 1);
        gather(&mut rx, &hurry, start + INGEST_INTERVAL, &mut seqs, &mut records).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(records.len(), INGEST_BATCH + 1, "stopped once full; the rest waits for the next commit");
        drop(tx);
        let (mut seqs, mut records) = (Vec::new(), Vec::new());
        gather(&mut rx, &hurry, start + INGEST_INTERVAL, &mut seqs, &mut records).await;
        assert_eq!(seqs.len(), 7);
        assert_eq!(start.elapsed(), Duration::ZERO, "the writer is gone: nothing more will come");
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_gives_up_when_the_log_does_not_catch_up() {
        let dir = tempfile::tempdir().unwrap();
        let err = progress(5, 3, dir.path()).settle().await.unwrap_err();
        assert!(matches!(err, RepoError::Unavailable(m) if m.contains("still being moved")));
    }

    #[test]
    fn a_segment_that_cannot_be_made_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        assert!(create_segment(&gone, 1, "abc").is_err());
        create_segment(dir.path(), 1, "abc").unwrap();
        // Made once; a second attempt is refused, never truncating the first.
        assert!(create_segment(dir.path(), 1, "abc").is_err());
        let bytes = std::fs::read(dir.path().join(segment_file_name(1))).unwrap();
        assert_eq!(bytes, segment_header("abc").unwrap());
        assert!(create_segment(dir.path(), 2, "Not A Name").is_err());
    }
}
