//! The bearer tokens a manager accepts, from its tokens file.
//!
//! One token a line, optionally preceded by a label that names the client in the audit file
//! and in `allowedClients`; blank lines and lines starting with `#` are ignored:
//!
//! ```text
//! # Keyhold KMS, production
//! keyhold-prod 3f0c9a...64 hex characters...
//! 9b1e77...                      <- label "token-3" (its line number)
//! ```
//!
//! Tokens are at least [`MIN_TOKEN_LEN`] characters, compared in constant time, held in
//! zeroizing memory, and never logged or echoed in an error (errors name line numbers only).

use std::io::Write as _;
use std::path::Path;

use keyhold_crypto::{CryptoError, Secret, SecretString};

/// Shortest token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// Why a tokens file cannot be used. Never contains a token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid tokens file: {0}")]
pub struct TokensError(pub String);

/// The accepted tokens.
pub struct Tokens {
    entries: Vec<(String, Secret)>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let labels: Vec<&str> = self.entries.iter().map(|(l, _)| l.as_str()).collect();
        f.debug_struct("Tokens").field("labels", &labels).finish_non_exhaustive()
    }
}

fn valid_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 64
        && l.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b':'))
}

impl Tokens {
    /// Parses a tokens file's text.
    pub fn parse(text: &[u8]) -> Result<Self, TokensError> {
        let text = std::str::from_utf8(text).map_err(|_| TokensError("the file is not UTF-8 text".into()))?;
        let mut entries: Vec<(String, Secret)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (label, token) = match fields.as_slice() {
                [token] => (format!("token-{n}"), *token),
                [label, token] => ((*label).to_string(), *token),
                _ => return Err(TokensError(format!("line {n}: expected TOKEN or LABEL TOKEN"))),
            };
            if !valid_label(&label) {
                return Err(TokensError(format!("line {n}: a label is 1 to 64 characters from A-Z a-z 0-9 . _ - @ :")));
            }
            if token.len() < MIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(TokensError(format!(
                    "line {n}: a token is at least {MIN_TOKEN_LEN} printable ASCII characters"
                )));
            }
            if entries.iter().any(|(l, _)| *l == label) {
                return Err(TokensError(format!("line {n}: label {label} is used twice")));
            }
            entries.push((label, Secret::new(token.as_bytes().to_vec())));
        }
        Ok(Self { entries })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none (every request is then refused).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The label of the token equal to `presented`, if any. Every token is compared, in
    /// constant time, whatever matches.
    pub fn authenticate(&self, presented: &str) -> Option<&str> {
        let mut found = None;
        for (label, token) in &self.entries {
            if token.ct_eq(presented.as_bytes()) && found.is_none() {
                found = Some(label.as_str());
            }
        }
        found
    }
}

/// A fresh random token: 32 bytes from the OS CSPRNG, as 64 hex characters.
pub fn generate_token() -> Result<SecretString, CryptoError> {
    // KeyBytes: 32 bytes from the CSPRNG, wiped on drop.
    let raw = keyhold_crypto::KeyBytes::generate()?;
    Ok(SecretString::new(keyhold_crypto::hex(raw.expose())))
}

/// Creates a tokens file at `path` (mode 0600; fails if it exists) holding one fresh token
/// labelled `label`, and returns the token.
pub fn create_tokens_file(path: &Path, label: &str) -> std::io::Result<SecretString> {
    if !valid_label(label) {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("invalid token label {label:?}")));
    }
    let token = generate_token().map_err(std::io::Error::other)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::key_store::create_private_dirs(dir)?;
    }
    let mut f = crate::key_store::create_private_file(path)?;
    let line = Secret::new(
        format!(
            "# Bearer tokens accepted by this external key manager: one a line, \"LABEL TOKEN\" or \"TOKEN\".\n\
             # The manager re-reads this file when it changes. Give a token to the KMS that uses this manager.\n\
             {label} {}\n",
            token.expose()
        )
        .into_bytes(),
    );
    f.write_all(line.expose())?;
    f.sync_all()?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_authenticate() {
        let t = Tokens::parse(b"# comment\n\nkms-prod 0123456789abcdef0123\n  fedcba9876543210fedc  \n").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.authenticate("0123456789abcdef0123"), Some("kms-prod"));
        assert_eq!(t.authenticate("fedcba9876543210fedc"), Some("token-4"));
        assert_eq!(t.authenticate("0123456789abcdef012"), None);
        assert_eq!(t.authenticate(""), None);
        assert!(!format!("{t:?}").contains("0123456789"));
    }

    #[test]
    fn errors_never_show_tokens() {
        for bad in [
            &b"short"[..],
            b"a b c-0123456789abcdef",
            b"bad/label 0123456789abcdef0123",
            b"x 0123456789abcdef0123\nx 0123456789abcdef0124",
            b"\xff\xfe",
        ] {
            let e = Tokens::parse(bad).unwrap_err();
            assert!(!e.0.contains("0123456789") && !e.0.contains("short"), "{e}");
        }
    }

    #[test]
    fn create_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens");
        let token = create_tokens_file(&p, "keyhold-kms").unwrap();
        assert_eq!(token.expose().len(), 64);
        let t = Tokens::parse(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(t.authenticate(token.expose()), Some("keyhold-kms"));
        assert!(create_tokens_file(&p, "again").is_err(), "never overwrites");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }
}
