//! Reading and writing the files of `encrypt` / `decrypt`, where `-` means standard input or
//! output, with gcloud's size limits and messages.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::Path;

use keyhold_crypto::Secret;

use super::CliError;

/// The largest plaintext or additional authenticated data Cloud KMS accepts: 64 KiB.
pub const MAX_PLAINTEXT: usize = 64 * 1024;
/// The largest ciphertext `decrypt` reads.
pub const MAX_CIPHERTEXT: usize = 2 * 64 * 1024;

/// Whether `path` is `-` (standard input or output).
pub fn is_stdio(path: &Path) -> bool {
    path.as_os_str() == "-"
}

fn shown(path: &Path) -> String {
    if is_stdio(path) { "-".to_string() } else { path.display().to_string() }
}

/// Reads at most `max` bytes from `path` (or stdin) into a [`Secret`]; a larger input is an
/// error. The buffer is allocated once, so no copy of the data is left behind by a reallocation.
pub fn read_input(path: &Path, max: usize) -> Result<Secret, CliError> {
    let mut buf = Vec::with_capacity(max + 1);
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    let result = if is_stdio(path) {
        std::io::stdin().lock().take(limit).read_to_end(&mut buf)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(limit).read_to_end(&mut buf))
    };
    let data = Secret::new(buf);
    result.map_err(|e| CliError::Io(format!("Unable to read file [{}]: {e}", shown(path))))?;
    if data.len() > max {
        return Err(CliError::Io(format!(
            "The file [{}] is larger than the maximum size of {max} bytes.",
            shown(path)
        )));
    }
    Ok(data)
}

/// The digest of the whole of `path` (or stdin), read piece by piece: any size.
pub fn digest_input(path: &Path, hash: keyhold_crypto::keys::Hash) -> Result<Vec<u8>, CliError> {
    let err = |e: std::io::Error| CliError::Io(format!("Unable to read file [{}]: {e}", shown(path)));
    let mut reader: Box<dyn Read> = if is_stdio(path) {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(path).map_err(err)?)
    };
    let mut hasher = hash.hasher();
    let mut piece = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut piece) {
            Ok(0) => return Ok(hasher.finish()),
            Ok(n) => hasher.update(&piece[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(err(e)),
        }
    }
}

/// Writes `data` to `path` (or stdout), replacing the file. A `private` file (decrypted
/// plaintext) is created readable by its owner only.
pub fn write_output(path: &Path, data: &[u8], private: bool) -> Result<(), CliError> {
    let err = |e: std::io::Error| CliError::Io(format!("Unable to write file [{}]: {e}", shown(path)));
    if is_stdio(path) {
        let mut out = std::io::stdout().lock();
        return out.write_all(data).and_then(|()| out.flush()).map_err(err);
    }
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(path).map_err(err)?;
    file.write_all(data).and_then(|()| file.flush()).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_limits() {
        let dir = std::env::temp_dir().join(format!("keyhold-cli-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("data.bin");
        write_output(&p, b"hello", true).unwrap();
        assert_eq!(read_input(&p, 5).unwrap().expose(), b"hello");
        let e = read_input(&p, 4).unwrap_err().to_string();
        assert!(e.contains("larger than the maximum size of 4 bytes"), "{e}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        }
        write_output(&p, b"hi", false).unwrap();
        assert_eq!(read_input(&p, 5).unwrap().expose(), b"hi");
        assert!(read_input(&dir.join("missing"), 5).unwrap_err().to_string().starts_with("Unable to read file ["));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
