//! Server settings for the token: which PKCS#11 module, which token, which PIN.
//!
//! The PIN comes from a file or from an environment variable ([`PinSource`]), never from the
//! command line: arguments are visible to every user of the machine (`ps`, `/proc/*/cmdline`)
//! and end up in shell histories.

use std::path::{Path, PathBuf};
use std::time::Duration;

use keyhold_crypto::{Secret, SecretString};

use crate::HsmError;

/// Where the token lives and how to log in to it.
///
/// `Debug` prints the PIN as `[redacted]`.
#[derive(Clone, Debug)]
pub struct Pkcs11Config {
    /// Path of the PKCS#11 module (shared library), e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// Label of the token (`CKA_LABEL` of the token, as `softhsm2-util --show-slots` and
    /// `pkcs11-tool -L` print it). Slots are found by label because slot IDs change (SoftHSM
    /// derives them from the serial number; hardware renumbers them when devices come and go).
    pub token_label: String,
    /// The user PIN (`CKU_USER`).
    pub pin: SecretString,
}

impl Pkcs11Config {
    /// A configuration from its three parts.
    pub fn new(module: impl Into<PathBuf>, token_label: impl Into<String>, pin: SecretString) -> Self {
        Self { module: module.into(), token_label: token_label.into(), pin }
    }
}

/// Tuning of an [`HsmToken`](crate::HsmToken); the defaults suit a server.
#[derive(Clone, Debug)]
pub struct HsmOptions {
    /// Most sessions kept open with the token, hence most PKCS#11 calls in flight at once
    /// (further calls wait their turn). At least 1.
    pub max_sessions: usize,
    /// After a failed attempt to reach the token, calls within this period fail at once with
    /// the same error instead of hammering a module or a network HSM that is down.
    pub reconnect_backoff: Duration,
}

impl Default for HsmOptions {
    fn default() -> Self {
        Self { max_sessions: 8, reconnect_backoff: Duration::from_secs(1) }
    }
}

/// Where to read the PIN from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinSource {
    /// A file holding the PIN (one trailing newline is ignored). Keep it mode 0600: a
    /// warning is logged when group or others may read it.
    File(PathBuf),
    /// The name of an environment variable holding the PIN. Note that the variable stays in
    /// the process environment (Rust offers no safe way to remove it once threads run).
    Env(String),
}

impl PinSource {
    /// Reads the PIN. Errors name the file or variable, never its content.
    pub fn read(&self) -> Result<SecretString, HsmError> {
        match self {
            PinSource::File(path) => read_pin_file(path),
            PinSource::Env(name) => read_pin_env(name),
        }
    }
}

fn read_pin_file(path: &Path) -> Result<SecretString, HsmError> {
    warn_if_readable_by_others(path);
    let bytes = std::fs::read(path)
        .map_err(|e| HsmError::config(format!("cannot read the PIN file {}: {e}", path.display())))?;
    let mut pin = match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => {
            // Wipe what was read before reporting.
            drop(Secret::new(e.into_bytes()));
            return Err(HsmError::config(format!("the PIN file {} is not UTF-8 text", path.display())));
        }
    };
    // One trailing newline, as `echo` or an editor leaves it; truncate in place so no copy of
    // the PIN is left behind.
    if pin.ends_with('\n') {
        pin.truncate(pin.len() - 1);
        if pin.ends_with('\r') {
            pin.truncate(pin.len() - 1);
        }
    }
    let pin = SecretString::new(pin);
    if pin.expose().is_empty() {
        return Err(HsmError::config(format!("the PIN file {} is empty", path.display())));
    }
    Ok(pin)
}

fn read_pin_env(name: &str) -> Result<SecretString, HsmError> {
    match std::env::var(name) {
        Ok(value) => {
            let pin = SecretString::new(value);
            if pin.expose().is_empty() {
                Err(HsmError::config(format!("the environment variable {name} (the HSM PIN) is empty")))
            } else {
                Ok(pin)
            }
        }
        Err(std::env::VarError::NotPresent) => {
            Err(HsmError::config(format!("the environment variable {name} (the HSM PIN) is not set")))
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(HsmError::config(format!("the environment variable {name} (the HSM PIN) is not UTF-8 text")))
        }
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            file = %path.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "the HSM PIN file may be read by group or others; chmod 600 it"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_the_config_hides_the_pin() {
        let c =
            Pkcs11Config::new("/usr/lib/softhsm/libsofthsm2.so", "kms", SecretString::new("s3cr3t-pin-4711".into()));
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(!shown.contains("4711"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
        assert!(shown.contains("libsofthsm2.so"), "{shown}");
    }

    #[test]
    fn pin_file_drops_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pin");
        std::fs::write(&path, "1234 5678\r\n").unwrap();
        let pin = PinSource::File(path.clone()).read().unwrap();
        assert_eq!(pin.expose(), "1234 5678");

        std::fs::write(&path, "abcd\n\n").unwrap();
        assert_eq!(PinSource::File(path.clone()).read().unwrap().expose(), "abcd\n");

        std::fs::write(&path, "\n").unwrap();
        let e = PinSource::File(path.clone()).read().unwrap_err();
        assert!(matches!(e, HsmError::Config { .. }), "{e:?}");
        assert!(e.to_string().contains("empty"), "{e}");

        std::fs::write(&path, [0xff, 0xfe, b'1']).unwrap();
        assert!(matches!(PinSource::File(path.clone()).read(), Err(HsmError::Config { .. })));

        let missing = dir.path().join("missing");
        let e = PinSource::File(missing).read().unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }

    #[test]
    fn pin_file_error_never_shows_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pin");
        std::fs::write(&path, [b'9', b'8', 0xff, b'7']).unwrap();
        let e = PinSource::File(path).read().unwrap_err().to_string();
        assert!(!e.contains("98"), "{e}");
    }

    #[test]
    fn pin_from_environment() {
        // Rust 2024 makes `set_var` unsafe and the workspace forbids unsafe code, so read a
        // variable cargo (and nextest) set for every test process.
        let pin = PinSource::Env("CARGO_PKG_NAME".into()).read().unwrap();
        assert_eq!(pin.expose(), "keyhold-hsm");
        let e = PinSource::Env("KEYHOLD_TEST_SURELY_UNSET_PIN_VARIABLE".into()).read().unwrap_err();
        assert!(matches!(e, HsmError::Config { .. }));
        assert!(e.to_string().contains("KEYHOLD_TEST_SURELY_UNSET_PIN_VARIABLE"), "{e}");
    }
}
