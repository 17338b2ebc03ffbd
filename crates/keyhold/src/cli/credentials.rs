//! Finding the bearer token the client sends: `KEYHOLD_TOKEN`, else `--token-file` (or
//! `KEYHOLD_TOKEN_FILE`), else, for a server on this machine only, the owner token that
//! `keyhold serve` writes to `DATA_DIR/owner.token`.
//!
//! The token is kept in a [`SecretString`] (wiped when dropped, `Debug` redacted) and never
//! appears in a message: errors name where it came from, not what it is.

use std::path::{Path, PathBuf};

use keyhold_crypto::SecretString;
use reqwest::Url;

use super::CliError;

/// The environment variable holding a token.
pub const TOKEN_ENV: &str = "KEYHOLD_TOKEN";
/// The data directory `keyhold serve` uses when `--data-dir` / `KEYHOLD_DATA_DIR` is not set.
pub const DEFAULT_DATA_DIR: &str = "./keyhold-data";
/// The owner token's file name inside the data directory.
pub const OWNER_TOKEN_FILE: &str = "owner.token";

/// Where the token came from (for messages; the token itself is never shown).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// `KEYHOLD_TOKEN`.
    Env,
    /// `--token-file` / `KEYHOLD_TOKEN_FILE`.
    File(PathBuf),
    /// The server owner's token in the data directory.
    OwnerFile(PathBuf),
    /// No token was found; `looked_at` is the owner token file that was looked for, if any
    /// (none when the endpoint is not on this machine).
    None {
        /// The owner token path checked.
        looked_at: Option<PathBuf>,
    },
}

/// The token to send, and where it came from.
#[derive(Clone, Debug)]
pub struct Credentials {
    token: Option<SecretString>,
    source: TokenSource,
}

/// Whether the endpoint's host is this machine (`127.0.0.1`, `::1`, `localhost`): only then
/// is the owner token file used without being asked for.
pub fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else { return false };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => bare.eq_ignore_ascii_case("localhost"),
    }
}

/// `s` without surrounding whitespace, trimmed in place (no copy of the secret is left behind
/// in a reallocated buffer).
fn trim_in_place(mut s: String) -> SecretString {
    let end = s.trim_end().len();
    s.truncate(end);
    let start = s.len() - s.trim_start().len();
    s.drain(..start);
    SecretString::new(s)
}

/// Reads a token file: one line, surrounding whitespace ignored.
fn read_token_file(path: &Path, what: &str) -> Result<SecretString, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Io(format!("Unable to read the {what} {}: {e}", path.display())))?;
    let token = trim_in_place(text);
    if token.expose().is_empty() {
        return Err(CliError::Usage(format!("The {what} {} is empty.", path.display())));
    }
    Ok(token)
}

impl Credentials {
    /// No token.
    pub fn none() -> Self {
        Self { token: None, source: TokenSource::None { looked_at: None } }
    }

    /// Finds the token for `endpoint`: `env_token` (`KEYHOLD_TOKEN`), else `token_file`, else
    /// `DATA_DIR/owner.token` when the endpoint is loopback and the file exists, DATA_DIR being
    /// `data_dir` (`KEYHOLD_DATA_DIR`) or `./keyhold-data`. Blank values count as unset.
    pub fn discover(
        endpoint: &Url,
        env_token: Option<String>,
        token_file: Option<&Path>,
        data_dir: Option<PathBuf>,
    ) -> Result<Self, CliError> {
        if let Some(t) = env_token.map(trim_in_place).filter(|t| !t.expose().is_empty()) {
            return Ok(Self { token: Some(t), source: TokenSource::Env });
        }
        if let Some(path) = token_file.filter(|p| !p.as_os_str().is_empty()) {
            let token = read_token_file(path, "token file")?;
            return Ok(Self { token: Some(token), source: TokenSource::File(path.to_path_buf()) });
        }
        if !is_loopback(endpoint) {
            return Ok(Self::none());
        }
        let dir = data_dir.filter(|d| !d.as_os_str().is_empty()).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let path = dir.join(OWNER_TOKEN_FILE);
        if !path.is_file() {
            return Ok(Self { token: None, source: TokenSource::None { looked_at: Some(path) } });
        }
        let token = read_token_file(&path, "owner token file")?;
        Ok(Self { token: Some(token), source: TokenSource::OwnerFile(path) })
    }

    /// The token, if one was found.
    pub fn token(&self) -> Option<&SecretString> {
        self.token.as_ref()
    }

    /// Where the token came from.
    #[cfg(test)]
    pub fn source(&self) -> &TokenSource {
        &self.source
    }

    /// What to do about a `401 UNAUTHENTICATED` answer, given where the token came from.
    pub fn unauthenticated_hint(&self) -> String {
        const HOW: &str = "Pass a token with the environment variable KEYHOLD_TOKEN or with --token-file PATH (or \
                           KEYHOLD_TOKEN_FILE); server admins create tokens with `keyhold auth tokens create`.";
        match &self.source {
            TokenSource::Env => {
                format!("The token in {TOKEN_ENV} was not accepted (unknown, expired or revoked). {HOW}")
            }
            TokenSource::File(p) => format!(
                "The token in {} (--token-file) was not accepted (unknown, expired or revoked). {HOW}",
                p.display()
            ),
            TokenSource::OwnerFile(p) => format!(
                "The owner token in {} was not accepted (unknown, expired or revoked; restarting `keyhold serve` \
                 writes a new one). {HOW}",
                p.display()
            ),
            TokenSource::None { looked_at: Some(p) } => format!(
                "No token was sent: {TOKEN_ENV} and --token-file are not set, and there is no owner token at {} \
                 (`keyhold serve` writes it to DATA_DIR/{OWNER_TOKEN_FILE}; point KEYHOLD_DATA_DIR at the server's \
                 --data-dir). {HOW}",
                p.display()
            ),
            TokenSource::None { looked_at: None } => format!(
                "No token was sent: {TOKEN_ENV} and --token-file are not set (the owner token in \
                 DATA_DIR/{OWNER_TOKEN_FILE} is only used for a server on this machine). {HOW}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn loopback_hosts() {
        for u in
            ["http://127.0.0.1:8080", "http://[::1]:1", "http://localhost:8080", "http://LOCALHOST", "http://127.0.0.2"]
        {
            assert!(is_loopback(&url(u)), "{u}");
        }
        for u in ["http://10.0.0.1:8080", "http://kms.example.com", "http://localhost.example.com"] {
            assert!(!is_loopback(&url(u)), "{u}");
        }
    }

    #[test]
    fn discovery_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(OWNER_TOKEN_FILE), "kh1.owner\n").unwrap();
        let file = dir.path().join("bob.token");
        std::fs::write(&file, "  kh1.bob \n").unwrap();
        let local = url("http://127.0.0.1:8080");
        let data = Some(dir.path().to_path_buf());

        let c = Credentials::discover(&local, Some(" kh1.env\n".into()), Some(&file), data.clone()).unwrap();
        assert_eq!(c.token().unwrap().expose(), "kh1.env");
        assert_eq!(c.source(), &TokenSource::Env);

        let c = Credentials::discover(&local, Some("  ".into()), Some(&file), data.clone()).unwrap();
        assert_eq!(c.token().unwrap().expose(), "kh1.bob");
        assert_eq!(c.source(), &TokenSource::File(file.clone()));

        let c = Credentials::discover(&local, None, None, data.clone()).unwrap();
        assert_eq!(c.token().unwrap().expose(), "kh1.owner");
        assert!(matches!(c.source(), TokenSource::OwnerFile(_)));

        // Not on this machine: the owner file is not used.
        let c = Credentials::discover(&url("http://kms.example.com"), None, None, data.clone()).unwrap();
        assert!(c.token().is_none());
        assert!(c.unauthenticated_hint().contains("KEYHOLD_TOKEN"));

        let empty = tempfile::tempdir().unwrap();
        let c = Credentials::discover(&local, None, None, Some(empty.path().to_path_buf())).unwrap();
        assert!(c.token().is_none());
        assert!(c.unauthenticated_hint().contains(&empty.path().join(OWNER_TOKEN_FILE).display().to_string()));

        let missing = dir.path().join("nope");
        assert!(Credentials::discover(&local, None, Some(&missing), data.clone()).is_err());
        std::fs::write(&file, "\n").unwrap();
        assert!(Credentials::discover(&local, None, Some(&file), data).unwrap_err().to_string().contains("empty"));
    }

    #[test]
    fn tokens_never_shown() {
        let c = Credentials { token: Some(SecretString::new("kh1.secret".into())), source: TokenSource::Env };
        assert!(!format!("{c:?}").contains("kh1.secret"));
        assert!(!c.unauthenticated_hint().contains("kh1.secret"));
    }
}
