//! The streaming client of object data (`keyhold store objects put|get`): the endpoint and
//! token of the JSON client, without its overall deadline (a 5 GiB transfer takes a while), and
//! a writer that replaces a file only once a download is complete.
//!
//! Error answers are decoded as every other answer ([`super::client::api_error`]); object data
//! never appears in a message.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{Response, Url};
use tokio::io::AsyncWriteExt;

use super::CliError;
use super::client::api_error;
use super::credentials::Credentials;

/// How long a download may wait for the server's answer, or for the next piece of data.
pub(super) const DOWNLOAD_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Size of the reads of an uploaded file.
pub(super) const UPLOAD_CHUNK: usize = 256 * 1024;

/// The streaming client of object uploads and downloads: the endpoint and token of
/// `ctx.client`, without its overall deadline (a 5 GiB transfer takes a while).
pub(super) struct Media<'a> {
    /// The endpoint, without a trailing `/`.
    pub(super) endpoint: &'a str,
    /// The token to send.
    pub(super) credentials: &'a Credentials,
    /// The TLS configuration of `ctx.client`.
    pub(super) tls: &'a keyhold_tls::rustls::ClientConfig,
}

impl Media<'_> {
    /// An HTTP client; `idle_timeout` bounds the wait for the answer and for each piece of a
    /// response body (not usable for uploads: it would also run while the body is being sent).
    pub(super) fn http(&self, idle_timeout: Option<Duration>) -> Result<reqwest::Client, CliError> {
        let mut b = reqwest::Client::builder()
            .tls_backend_preconfigured(self.tls.clone())
            .user_agent(concat!("keyhold-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10));
        if let Some(t) = idle_timeout {
            b = b.read_timeout(t);
        }
        b.build().map_err(|e| CliError::Other(format!("cannot set up the HTTP client: {e}")))
    }

    /// The URL of `/v1/{path}` with `query`.
    pub(super) fn url(&self, path: &str, query: &[(&str, &str)]) -> Result<Url, CliError> {
        media_url(self.endpoint, path, query)
    }

    /// Sends a request with the bearer token; a non-2xx answer becomes the server's error.
    pub(super) async fn send(&self, mut req: reqwest::RequestBuilder) -> Result<Response, CliError> {
        if let Some(token) = self.credentials.token() {
            req = req.bearer_auth(token.expose());
        }
        let resp = req.send().await.map_err(|e| self.request_error(&e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        // An error answer holds a google.rpc.Status, never object data.
        let body = resp.bytes().await.map_err(|e| self.request_error(&e))?;
        Err(api_error(status, &body, self.credentials))
    }

    /// The error for a request that got no answer: the server unreachable (with the hint of
    /// every other command), or the transfer cut off.
    pub(super) fn request_error(&self, e: &reqwest::Error) -> CliError {
        let detail = innermost(e);
        if let Some(failure) = super::client::tls_failure(e) {
            CliError::Tls { endpoint: self.endpoint.to_string(), failure }
        } else if e.is_connect() {
            CliError::Connect { endpoint: self.endpoint.to_string(), detail }
        } else if e.is_timeout() {
            CliError::Other(format!("the request to {} timed out", self.endpoint))
        } else {
            CliError::Other(format!("the request to {} failed: {detail}", self.endpoint))
        }
    }
}

/// The URL of `/v1/{path}` on `endpoint`; `path` is already percent-encoded and kept as is.
pub(super) fn media_url(endpoint: &str, path: &str, query: &[(&str, &str)]) -> Result<Url, CliError> {
    let mut url = Url::parse(&format!("{endpoint}/v1/{path}"))
        .map_err(|e| CliError::Usage(format!("invalid request URL for {path}: {e}")))?;
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    Ok(url)
}

/// The innermost cause of an error ("Connection refused (os error 111)").
pub(super) fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut source = e;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}

/// Standard input as an async file (read on tokio's blocking threads): tokio's own `stdin()`
/// needs a feature this crate does not enable.
pub(super) fn stdin_file() -> std::io::Result<tokio::fs::File> {
    #[cfg(unix)]
    let owned = std::os::fd::AsFd::as_fd(&std::io::stdin()).try_clone_to_owned()?;
    #[cfg(windows)]
    let owned = std::os::windows::io::AsHandle::as_handle(&std::io::stdin()).try_clone_to_owned()?;
    Ok(tokio::fs::File::from_std(std::fs::File::from(owned)))
}

/// Where downloaded data comes from, a piece at a time (a response body; a list in tests).
pub(super) trait ChunkSource {
    /// The next piece, `None` at the end, or why the data stopped arriving.
    async fn next_chunk(&mut self) -> Result<Option<impl AsRef<[u8]>>, CliError>;
}

/// A response body, with its failures described without its content.
pub(super) struct Download<'a> {
    pub(super) resp: Response,
    pub(super) media: &'a Media<'a>,
    pub(super) object: &'a str,
}

impl ChunkSource for Download<'_> {
    async fn next_chunk(&mut self) -> Result<Option<impl AsRef<[u8]>>, CliError> {
        self.resp.chunk().await.map_err(|e| {
            let why = if e.is_timeout() { "no data arrived for a while".to_string() } else { innermost(&e) };
            CliError::Other(format!(
                "The download of object [{}] from {} was interrupted: {why}",
                self.object, self.media.endpoint
            ))
        })
    }
}

/// A temporary file next to the destination, removed when dropped unless renamed into place.
pub(super) struct TempFile {
    path: PathBuf,
    kept: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// `dest`'s temporary sibling: `dest.tmp-<random>`.
pub(super) fn temp_path(dest: &Path) -> Result<PathBuf, CliError> {
    let Some(file_name) = dest.file_name() else {
        return Err(CliError::Usage(format!("--output-file [{}] does not name a file.", dest.display())));
    };
    let mut random = [0u8; 8];
    keyhold_crypto::random_bytes(&mut random)
        .map_err(|e| CliError::Other(format!("cannot name a temporary file: {e}")))?;
    let mut tmp_name = file_name.to_os_string();
    tmp_name.push(format!(".tmp-{}", keyhold_crypto::hex(&random)));
    Ok(dest.with_file_name(tmp_name))
}

/// Writes everything `source` yields to `dest`, atomically: into a temporary file in the same
/// directory (readable by its owner only), renamed over `dest` once complete. On any failure
/// the temporary file is removed and `dest` is left as it was.
pub(super) async fn write_file_atomically(source: &mut impl ChunkSource, dest: &Path) -> Result<(), CliError> {
    let write_err = |e: std::io::Error| CliError::Io(format!("Unable to write file [{}]: {e}", dest.display()));
    let mut tmp = TempFile { path: temp_path(dest)?, kept: false };
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(&tmp.path).await.map_err(write_err)?;
    while let Some(chunk) = source.next_chunk().await? {
        file.write_all(chunk.as_ref()).await.map_err(write_err)?;
    }
    file.flush().await.map_err(write_err)?;
    file.sync_all().await.map_err(write_err)?;
    drop(file);
    tokio::fs::rename(&tmp.path, dest).await.map_err(write_err)?;
    tmp.kept = true;
    Ok(())
}

/// Writes everything `source` yields to standard output, a piece at a time. A reader that
/// stops reading (`| head`) ends the download without an error.
pub(super) async fn write_stdout(source: &mut impl ChunkSource) -> Result<(), CliError> {
    use std::io::Write as _;
    let stdout_err = |e: std::io::Error| CliError::Io(format!("Unable to write to standard output: {e}"));
    while let Some(chunk) = source.next_chunk().await? {
        match std::io::stdout().write_all(chunk.as_ref()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(stdout_err(e)),
        }
    }
    match std::io::stdout().flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(stdout_err(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chunks from a list, then an error if `fail` is set.
    struct Chunks {
        chunks: Vec<&'static [u8]>,
        fail: bool,
    }

    impl ChunkSource for Chunks {
        async fn next_chunk(&mut self) -> Result<Option<impl AsRef<[u8]>>, CliError> {
            if self.chunks.is_empty() {
                return if self.fail { Err(CliError::Other("connection reset".into())) } else { Ok(None) };
            }
            Ok(Some(self.chunks.remove(0)))
        }
    }

    fn dir_entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn downloads_replace_the_file_only_when_complete() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.bin");
        std::fs::write(&dest, b"old").unwrap();

        let mut broken = Chunks { chunks: vec![b"new ", b"data"], fail: true };
        let e = write_file_atomically(&mut broken, &dest).await.unwrap_err();
        assert_eq!(e.to_string(), "connection reset");
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
        assert_eq!(dir_entries(dir.path()), ["out.bin"], "the temporary file is removed");

        let mut ok = Chunks { chunks: vec![b"new ", b"", b"data"], fail: false };
        write_file_atomically(&mut ok, &dest).await.unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"new data");
        assert_eq!(dir_entries(dir.path()), ["out.bin"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777, 0o600);
        }

        let missing_dir = dir.path().join("nope").join("f");
        let e = write_file_atomically(&mut Chunks { chunks: vec![b"x"], fail: false }, &missing_dir).await;
        assert!(e.unwrap_err().to_string().starts_with("Unable to write file ["));
        let tmp = temp_path(&dest).unwrap();
        assert_eq!(tmp.parent(), dest.parent());
        assert!(tmp.file_name().unwrap().to_string_lossy().starts_with("out.bin.tmp-"));
        assert!(temp_path(Path::new("/")).is_err());
    }
}
