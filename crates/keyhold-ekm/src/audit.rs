//! The manager's own record of every decision: one JSON line per request in its audit file,
//! and the same fields as a structured log event (target `keyhold_ekm::audit`).
//!
//! The operator of an external key keeps this record on their own machine, independent of the
//! KMS's audit log; `requestId` correlates the two. Entries never hold a token, plaintext,
//! AAD or wrapped blob: only who asked, for what, why, and the outcome.
//!
//! The file is as trustworthy as the KMS's audit log (issue 15, finding 10):
//!
//! * **Hash-chained.** Each line starts with `{"seq":N,"prevHash":"…","hash":"…",` followed by
//!   the entry's fields, and `hash = SHA-256(prevHash "\n" N "\n" ENTRY)` (hex), where `ENTRY`
//!   is the entry's own JSON object: the line with the three chain fields taken out
//!   (`{` + everything after `"hash":"…",`). It is the KMS's formula
//!   (`keyhold_kms::audit::chain_hash`), so editing, removing or reordering a line breaks the
//!   chain there; [`verify_file`] (`keyhold ekm audit verify --file F`) finds the first break.
//!   The first entry's `prevHash` is 64 zeros. A line is still one flat JSON object, so
//!   `jq .method` keeps working.
//! * **Durable before the answer.** A request is answered only once its line is on disk
//!   (`fdatasync`); concurrent requests share one sync (group commit). If the line cannot be
//!   written or synced the request fails (`503 UNAVAILABLE`): no record, no key. After a failed
//!   sync the file's state is unknown, so every later request fails too until a restart.
//! * **Continued across restarts.** At start the manager reads the last line and continues
//!   its chain. A last line without its newline is a write torn by a crash: it was never
//!   synced, so its request was never answered, and it is cut off with a warning. A complete
//!   last line that does not verify, or a file in the older unchained format, is refused.
//! * **0600** whatever the umask, including a file that existed with wider permissions; a
//!   regular file, locked (`flock`) while a manager uses it, so a second manager on the same
//!   file is refused instead of forking the chain.

use std::io::{BufRead as _, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use keyhold_api::Code;
use keyhold_api::wire::Timestamp;
use serde::Serialize;

/// The `prevHash` of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

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

/// The chain hash of an entry, hex: `SHA-256(prev_hash "\n" seq "\n" entry_json)`, the KMS's
/// audit-log formula itself ([`keyhold_kms::audit::chain_hash`]), so that both chains are
/// verified the same way. A file can never hold `i64::MAX` entries.
pub fn chain_hash(prev_hash: &str, seq: u64, entry_json: &str) -> String {
    keyhold_kms::audit::chain_hash(prev_hash, i64::try_from(seq).unwrap_or(i64::MAX), entry_json)
}

/// One line of the audit file, split into its chain fields and the entry's own JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainedLine {
    /// The entry's sequence number (1, 2, ...).
    pub seq: u64,
    /// The previous entry's hash.
    pub prev_hash: String,
    /// This entry's hash.
    pub hash: String,
    /// The entry's JSON object, exactly as hashed.
    pub entry_json: String,
}

/// Why a line is not a chained entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// A line of the format before the hash chain (no `seq` first).
    #[error(
        "it is in the older, unchained format (written by a Keyhold before the hash chain); such a file cannot be \
         verified: move it aside (it stays readable as JSON lines) and let the manager start a new one"
    )]
    OldFormat,
    /// Anything else.
    #[error("it is not a chained audit entry: {0}")]
    Malformed(&'static str),
}

impl ChainedLine {
    /// The line as written (without its newline).
    fn render(&self) -> String {
        // The entry is a non-empty JSON object: `{"time":...}`.
        format!(
            r#"{{"seq":{},"prevHash":"{}","hash":"{}",{}"#,
            self.seq,
            self.prev_hash,
            self.hash,
            &self.entry_json[1..]
        )
    }

    /// Splits a line (without its newline). The chain fields must come first, in this order,
    /// exactly as [`AuditLog`] writes them: the hashed entry is the rest of the line, byte for
    /// byte, so nothing is re-serialized.
    pub fn parse(line: &str) -> Result<Self, LineError> {
        let Some(rest) = line.strip_prefix(r#"{"seq":"#) else {
            return Err(if line.starts_with(r#"{"time":"#) {
                LineError::OldFormat
            } else {
                LineError::Malformed("it does not start with {\"seq\":")
            });
        };
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let seq: u64 = rest[..digits].parse().map_err(|_| LineError::Malformed("bad seq"))?;
        if digits > 1 && rest.starts_with('0') {
            return Err(LineError::Malformed("bad seq"));
        }
        let rest = rest[digits..].strip_prefix(r#","prevHash":""#).ok_or(LineError::Malformed("no prevHash"))?;
        let (prev_hash, rest) = take_hash(rest).ok_or(LineError::Malformed("bad prevHash"))?;
        let rest = rest.strip_prefix(r#"","hash":""#).ok_or(LineError::Malformed("no hash"))?;
        let (hash, rest) = take_hash(rest).ok_or(LineError::Malformed("bad hash"))?;
        let rest = rest.strip_prefix(r#"","#).ok_or(LineError::Malformed("no entry after the hash"))?;
        let entry_json = format!("{{{rest}");
        match serde_json::from_str::<serde_json::Value>(&entry_json) {
            Ok(serde_json::Value::Object(_)) => {}
            _ => return Err(LineError::Malformed("the entry is not a JSON object")),
        }
        Ok(Self { seq, prev_hash: prev_hash.to_string(), hash: hash.to_string(), entry_json })
    }

    /// Whether the line's hash is the hash of its content.
    pub fn hash_matches(&self) -> bool {
        chain_hash(&self.prev_hash, self.seq, &self.entry_json) == self.hash
    }
}

/// 64 lowercase hex digits, and what follows.
fn take_hash(s: &str) -> Option<(&str, &str)> {
    let h = s.get(..64)?;
    h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)).then(|| (h, &s[64..]))
}

/// What [`verify_file`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditVerdict {
    /// Every line links to the one before and hashes to what it records.
    Intact {
        /// Entries checked.
        entries: u64,
        /// The newest entry's hash (anchor it elsewhere to detect truncation).
        head: String,
    },
    /// The first entry that does not verify, and why.
    Broken {
        /// The sequence number the entry at that place should have had.
        seq: u64,
        /// Its line in the file (1-based).
        line: u64,
        /// What is wrong.
        reason: String,
    },
}

/// Checks the whole chain of the audit file at `path`, line by line (memory stays bounded by
/// the longest line). An I/O error is `Err`; everything wrong with the content is a
/// [`AuditVerdict::Broken`] naming the first entry that does not verify.
pub fn verify_file(path: &Path) -> std::io::Result<AuditVerdict> {
    let mut reader = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut expected = 1u64;
    let mut prev = GENESIS_HASH.to_string();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            return Ok(AuditVerdict::Intact { entries: expected - 1, head: prev });
        }
        let line_no = expected;
        let broken = |reason: String| Ok(AuditVerdict::Broken { seq: expected, line: line_no, reason });
        if buf.last() != Some(&b'\n') {
            return broken(
                "the last line is incomplete (a write torn by a crash; it was never acknowledged, and the manager \
                 cuts it off at its next start)"
                    .into(),
            );
        }
        buf.pop();
        let Ok(text) = std::str::from_utf8(&buf) else {
            return broken("the line is not UTF-8 text".into());
        };
        let line = match ChainedLine::parse(text) {
            Ok(l) => l,
            Err(e) => return broken(e.to_string()),
        };
        if line.seq != expected {
            return broken(if line.seq > expected {
                format!("entry {expected} is missing (the next line holds entry {})", line.seq)
            } else {
                format!("the line holds entry {}, out of order or repeated", line.seq)
            });
        }
        if line.prev_hash != prev {
            return broken("its previous-hash does not match the entry before it".into());
        }
        if !line.hash_matches() {
            return broken("its content does not match its hash (the entry was modified)".into());
        }
        prev = line.hash;
        expected += 1;
    }
}

/// Why the audit file cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum AuditOpenError {
    /// Reading, writing or creating it failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Its last complete line is not a valid chained entry.
    #[error(
        "its last entry (line ending at byte {offset}) cannot be continued: {reason}. Check the file with `keyhold \
         ekm audit verify --file {path}`; the manager does not extend a chain it cannot verify"
    )]
    BadTail {
        /// The file.
        path: String,
        /// Where the bad line ends.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

/// The end of the chain: what the next line continues from.
struct Chain {
    file: std::fs::File,
    /// The last entry written (0: none).
    seq: u64,
    /// Its hash.
    head: String,
    /// The file's length after it.
    len: u64,
    /// Set when a write could not be undone or a sync failed: the file's state is unknown.
    failed: bool,
}

struct Synced {
    /// Entries up to this one are on disk.
    durable: u64,
    failed: bool,
}

/// The audit file, opened for appending.
pub struct AuditLog {
    path: PathBuf,
    chain: Mutex<Chain>,
    /// Held by the request that syncs; the others wait on it and usually find their entry
    /// synced by then (group commit).
    synced: Mutex<Synced>,
    sync_handle: std::fs::File,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("path", &self.path).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The last complete line of a file: where it starts, and its bytes without the newline.
type LastLine = Option<(u64, Vec<u8>)>;

/// Reads the end of the file: the offset just after its last newline (0 if none), and the last
/// complete line.
fn read_tail(file: &mut std::fs::File, len: u64) -> std::io::Result<(u64, LastLine)> {
    const CHUNK: u64 = 64 * 1024;
    let mut end_of_complete: Option<u64> = None;
    let mut collected: Vec<u8> = Vec::new(); // bytes from `pos` to the end of the file
    let mut pos = len;
    while pos > 0 {
        let start = pos.saturating_sub(CHUNK);
        let mut chunk = vec![0u8; (pos - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&collected);
        collected = chunk;
        pos = start;
        let newlines: Vec<usize> = collected.iter().enumerate().filter(|(_, b)| **b == b'\n').map(|(i, _)| i).collect();
        if end_of_complete.is_none()
            && let Some(&last) = newlines.last()
        {
            end_of_complete = Some(pos + last as u64 + 1);
        }
        if let Some(end) = end_of_complete {
            let end_rel = (end - pos) as usize;
            // The line before `end`: after the newline preceding it, or from the file's start.
            let before = newlines.iter().rev().find(|&&i| i + 1 < end_rel);
            match before {
                Some(&i) => return Ok((end, Some((pos + i as u64 + 1, collected[i + 1..end_rel - 1].to_vec())))),
                None if pos == 0 => return Ok((end, Some((0, collected[..end_rel - 1].to_vec())))),
                None => {}
            }
        }
    }
    Ok((end_of_complete.unwrap_or(0), None))
}

impl AuditLog {
    /// Opens (or creates, mode 0600) the audit file at `path` for appending, continuing the
    /// chain of its last entry. A torn last line is cut off with a warning.
    pub fn open(path: &Path) -> Result<Self, AuditOpenError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut opts = std::fs::OpenOptions::new();
        opts.read(true).append(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut file = opts.open(path)?;
        if !file.metadata()?.is_file() {
            return Err(AuditOpenError::Io(std::io::Error::other(
                "the audit file must be a regular file: a chain is continued from its last line at each start",
            )));
        }
        // Two managers appending to one file would fork its chain: the second is refused.
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(AuditOpenError::Io(std::io::Error::other(
                    "another external key manager is using this audit file (it holds its lock); give each manager its \
                     own --audit-file",
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
        // `mode` only applies to a new file: one that existed with wider permissions (or was
        // created by an older release) is restricted too.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            if file.metadata()?.permissions().mode() & 0o777 != 0o600 {
                file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            }
        }
        let len = file.metadata()?.len();
        let (complete, last) = read_tail(&mut file, len)?;
        if complete < len {
            // Only the last write can be torn, and its entry was never synced, so its request
            // was never answered: nothing acknowledged is lost by cutting it off.
            tracing::warn!(
                path = %path.display(),
                torn_bytes = len - complete,
                "the audit file ends with an incomplete line (a write torn by a crash, never acknowledged); cutting it off"
            );
            file.set_len(complete)?;
            file.sync_all()?;
        }
        let (seq, head) = match last {
            None => (0, GENESIS_HASH.to_string()),
            Some((offset, bytes)) => {
                let bad = |reason: String| AuditOpenError::BadTail {
                    path: path.display().to_string(),
                    offset: offset + bytes.len() as u64 + 1,
                    reason,
                };
                let text = std::str::from_utf8(&bytes).map_err(|_| bad("it is not UTF-8 text".into()))?;
                let line = ChainedLine::parse(text).map_err(|e| bad(e.to_string()))?;
                if !line.hash_matches() {
                    return Err(bad("its content does not match its hash".into()));
                }
                (line.seq, line.hash)
            }
        };
        let sync_handle = file.try_clone()?;
        Ok(Self {
            path: path.to_path_buf(),
            chain: Mutex::new(Chain { file, seq, head, len: complete, failed: false }),
            synced: Mutex::new(Synced { durable: seq, failed: false }),
            sync_handle,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Logs `entry`, appends it to the file and returns once it is on disk.
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
        let entry_json = serde_json::to_string(entry).map_err(std::io::Error::other)?;
        let seq = self.append(entry_json)?;
        self.sync_up_to(seq)
    }

    /// Writes the next line; returns its sequence number.
    fn append(&self, entry_json: String) -> std::io::Result<u64> {
        let mut chain = lock(&self.chain);
        if chain.failed {
            return Err(std::io::Error::other(
                "an earlier write or sync of the audit file failed; restart the manager",
            ));
        }
        let seq = chain.seq + 1;
        let hash = chain_hash(&chain.head, seq, &entry_json);
        let line = ChainedLine { seq, prev_hash: chain.head.clone(), hash, entry_json };
        let mut bytes = line.render().into_bytes();
        bytes.push(b'\n');
        if let Err(e) = chain.file.write_all(&bytes) {
            // Take back a partial line, so the next entry does not follow garbage.
            let len = chain.len;
            if chain.file.set_len(len).is_err() {
                chain.failed = true;
            }
            return Err(e);
        }
        chain.len += bytes.len() as u64;
        chain.seq = seq;
        chain.head = line.hash;
        Ok(seq)
    }

    /// Returns once entries up to `seq` are on disk: one `fdatasync` covers every entry
    /// written before it started.
    fn sync_up_to(&self, seq: u64) -> std::io::Result<()> {
        let mut synced = lock(&self.synced);
        if synced.failed {
            return Err(std::io::Error::other("an earlier sync of the audit file failed; restart the manager"));
        }
        if synced.durable >= seq {
            return Ok(());
        }
        let target = lock(&self.chain).seq;
        if let Err(e) = self.sync_handle.sync_data() {
            // After a failed fsync the kernel may have dropped the dirty pages: what is on
            // disk is unknown, so nothing more is acknowledged.
            synced.failed = true;
            lock(&self.chain).failed = true;
            return Err(e);
        }
        synced.durable = target;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u32) -> AuditEntry {
        AuditEntry {
            time: Timestamp::now(),
            request_id: format!("r{n}"),
            method: "wrap".into(),
            key_id: "k".into(),
            client: "c".into(),
            caller_principal: "user:alice@example.com".into(),
            reason: String::new(),
            resource: String::new(),
            operation: String::new(),
            via_service: String::new(),
            remote_addr: String::new(),
            decision: "ALLOWED",
            code: "OK",
            message: String::new(),
        }
    }

    fn lines(p: &Path) -> Vec<String> {
        std::fs::read_to_string(p).unwrap().lines().map(str::to_string).collect()
    }

    fn write_lines(p: &Path, l: &[String]) {
        std::fs::write(p, l.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    }

    fn broken_at(p: &Path) -> (u64, String) {
        match verify_file(p).unwrap() {
            AuditVerdict::Broken { seq, reason, .. } => (seq, reason),
            v => panic!("not broken: {v:?}"),
        }
    }

    #[test]
    fn chain_verifies_and_every_tampering_is_found_at_its_entry() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&p).unwrap();
        for n in 0..5 {
            log.record(&entry(n)).unwrap();
        }
        drop(log);
        let good = lines(&p);
        let head = ChainedLine::parse(&good[4]).unwrap().hash;
        assert_eq!(verify_file(&p).unwrap(), AuditVerdict::Intact { entries: 5, head });
        // Every line is still one flat JSON object.
        let v: serde_json::Value = serde_json::from_str(&good[0]).unwrap();
        assert_eq!(
            (v["seq"].as_u64(), v["method"].as_str(), v["prevHash"].as_str()),
            (Some(1), Some("wrap"), Some(GENESIS_HASH))
        );

        let mut edited = good.clone();
        edited[2] = edited[2].replace("alice", "mallory");
        write_lines(&p, &edited);
        assert_eq!(broken_at(&p).0, 3);

        // Re-hashing the edited line does not help: the next link breaks.
        let mut l = ChainedLine::parse(&edited[2]).unwrap();
        l.hash = chain_hash(&l.prev_hash, l.seq, &l.entry_json);
        edited[2] = l.render();
        write_lines(&p, &edited);
        assert_eq!(broken_at(&p), (4, "its previous-hash does not match the entry before it".into()));

        let mut deleted = good.clone();
        deleted.remove(2);
        write_lines(&p, &deleted);
        let (seq, reason) = broken_at(&p);
        assert_eq!(seq, 3);
        assert!(reason.contains("entry 3 is missing"), "{reason}");

        let mut swapped = good.clone();
        swapped.swap(1, 2);
        write_lines(&p, &swapped);
        assert_eq!(broken_at(&p).0, 2);

        let mut old = good.clone();
        old.insert(0, r#"{"time":"2026-01-01T00:00:00Z","requestId":"x"}"#.into());
        write_lines(&p, &old);
        let (seq, reason) = broken_at(&p);
        assert_eq!(seq, 1);
        assert!(reason.contains("older, unchained format"), "{reason}");
    }

    #[test]
    fn restart_continues_the_chain_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&p).unwrap();
        log.record(&entry(1)).unwrap();
        log.record(&entry(2)).unwrap();
        drop(log);
        let complete = std::fs::read(&p).unwrap();
        // A crash in the middle of the third write.
        let mut torn = complete.clone();
        torn.extend_from_slice(br#"{"seq":3,"prevHash":"00"#);
        std::fs::write(&p, &torn).unwrap();
        assert!(broken_at(&p).1.contains("incomplete"));

        let log = AuditLog::open(&p).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), complete, "the torn tail is cut off at open");
        log.record(&entry(3)).unwrap();
        drop(log);
        assert!(matches!(verify_file(&p).unwrap(), AuditVerdict::Intact { entries: 3, .. }));
        assert_eq!(ChainedLine::parse(&lines(&p)[2]).unwrap().seq, 3);

        // A complete last line that does not verify is not continued.
        let mut l = lines(&p);
        l[2] = l[2].replace("r3", "r9");
        write_lines(&p, &l);
        let err = AuditLog::open(&p).unwrap_err().to_string();
        assert!(err.contains("does not match its hash") && err.contains("keyhold ekm audit verify"), "{err}");

        // Nor a file of the older format.
        std::fs::write(&p, "{\"time\":\"2026-01-01T00:00:00Z\",\"requestId\":\"x\"}\n").unwrap();
        let err = AuditLog::open(&p).unwrap_err().to_string();
        assert!(err.contains("older, unchained format"), "{err}");
    }

    #[test]
    fn tail_reading_spans_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&p).unwrap();
        let mut big = entry(0);
        big.message = "x".repeat(150_000);
        log.record(&big).unwrap();
        log.record(&big).unwrap();
        drop(log);
        let log = AuditLog::open(&p).unwrap();
        log.record(&entry(3)).unwrap();
        drop(log);
        assert!(matches!(verify_file(&p).unwrap(), AuditVerdict::Intact { entries: 3, .. }));
    }

    #[test]
    fn a_second_manager_on_the_same_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.jsonl");
        let first = AuditLog::open(&p).unwrap();
        let err = AuditLog::open(&p).unwrap_err().to_string();
        assert!(err.contains("another external key manager is using this audit file"), "{err}");
        drop(first);
        AuditLog::open(&p).unwrap();
        let err = AuditLog::open(dir.path()).unwrap_err().to_string();
        assert!(!err.is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn file_is_0600_even_if_it_existed_wider() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.jsonl");
        std::fs::write(&p, "").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(AuditLog::open(&p).unwrap());
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
