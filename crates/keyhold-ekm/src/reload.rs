//! A configuration file re-read when it changes: the policy and tokens files.
//!
//! Every request stats the file (a microsecond) and, if its size, modification time, change
//! time or inode moved, reads and parses it again. A file that no longer parses, or has
//! disappeared, is reported once in the log and the last valid version stays in force, so a
//! half-written edit never opens or closes everything by accident. Replace the file atomically
//! (write a temporary file, then `mv`) to avoid the half-written state altogether.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use keyhold_crypto::Secret;

use crate::key_store::FileSignature;

struct State<T> {
    signature: Option<FileSignature>,
    current: Arc<T>,
}

pub(crate) struct Reloading<T> {
    path: PathBuf,
    what: &'static str,
    parse: fn(&[u8]) -> Result<T, String>,
    state: Mutex<State<T>>,
}

impl<T> Reloading<T> {
    /// Loads `path` for the first time; it must exist and parse.
    pub(crate) fn load(path: &Path, what: &'static str, parse: fn(&[u8]) -> Result<T, String>) -> Result<Self, String> {
        let meta = std::fs::metadata(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
        // The file may hold secrets (tokens): its bytes are wiped once parsed.
        let bytes = Secret::new(std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))?);
        let value = parse(bytes.expose()).map_err(|e| format!("{what} {}: {e}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            what,
            parse,
            state: Mutex::new(State { signature: Some(FileSignature::of(&meta)), current: Arc::new(value) }),
        })
    }

    /// The current version, re-read first if the file changed.
    pub(crate) fn current(&self) -> Arc<T> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let signature = match std::fs::metadata(&self.path) {
            Ok(m) => FileSignature::of(&m),
            Err(e) => {
                if state.signature.take().is_some() {
                    tracing::error!(
                        what = self.what,
                        path = %self.path.display(),
                        error = %e,
                        "cannot read the {}; the last valid version stays in force", self.what
                    );
                }
                return state.current.clone();
            }
        };
        if state.signature == Some(signature) {
            return state.current.clone();
        }
        state.signature = Some(signature);
        let parsed = std::fs::read(&self.path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| (self.parse)(Secret::new(bytes).expose()));
        match parsed {
            Ok(value) => {
                state.current = Arc::new(value);
                tracing::info!(what = self.what, path = %self.path.display(), "reloaded the {}", self.what);
            }
            Err(e) => tracing::error!(
                what = self.what,
                path = %self.path.display(),
                error = %e,
                "the changed {} is invalid; the last valid version stays in force", self.what
            ),
        }
        state.current.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_number(b: &[u8]) -> Result<u32, String> {
        std::str::from_utf8(b)
            .map_err(|e| e.to_string())?
            .trim()
            .parse()
            .map_err(|e: std::num::ParseIntError| e.to_string())
    }

    #[test]
    fn reloads_on_change_and_keeps_last_valid() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("n");
        std::fs::write(&p, "1").unwrap();
        let r = Reloading::load(&p, "number file", parse_number).unwrap();
        assert_eq!(*r.current(), 1);
        std::fs::write(&p, "22").unwrap();
        assert_eq!(*r.current(), 22);
        std::fs::write(&p, "x").unwrap();
        assert_eq!(*r.current(), 22, "an invalid file keeps the last valid version");
        std::fs::remove_file(&p).unwrap();
        assert_eq!(*r.current(), 22);
        let tmp = dir.path().join("n.tmp");
        std::fs::write(&tmp, "3").unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        assert_eq!(*r.current(), 3);
        assert!(Reloading::load(&dir.path().join("missing"), "number file", parse_number).is_err());
    }
}
