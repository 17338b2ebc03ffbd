//! Files and directories only the server's own user may read (hardening finding 4).
//!
//! The database, its WAL and SHM, the root key, the owner token and export archives hold
//! secrets or sealed secrets, and were created 0644 in 0755 directories: readable by every
//! local user. Everything Keyhold creates goes through here instead, so it is 0600 (files) or
//! 0700 (directories) whatever the umask: the mode is given at creation (no window in which
//! the file is readable) and then set explicitly, since the umask only ever removes bits and a
//! umask such as 0277 would otherwise leave even the owner without write access.

use std::io;
use std::path::Path;

/// Mode of every file Keyhold creates.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory Keyhold creates.
pub const DIR_MODE: u32 = 0o700;

/// Creates `dir` and any missing parent, each new one 0700. Existing directories are left as
/// they are (a parent such as `~/.config` or `/var/lib` is not Keyhold's to change).
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_all(parent)?;
    }
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, DIR_MODE);
    match builder.create(dir) {
        Ok(()) => set_mode(dir, DIR_MODE),
        // Created meanwhile by another process (or node): theirs, leave it.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// What [`ensure_private_dir`] did to an existing directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tightened {
    /// The directory was new, or already private.
    No,
    /// The directory was group- or other-accessible (this mode) and is now 0700.
    From(u32),
}

/// Creates `dir` (0700) if missing; if it exists with group or other bits, sets it to 0700 and
/// says so, so the caller can warn. For Keyhold's own data directory: every file in it is a
/// secret or names one.
///
/// Only a directory of our own is tightened (found by the hardening probe: a 1777 directory such as `/tmp` was
/// made 0700 and lost its sticky bit, locking every other user out). A sticky directory is a
/// shared one whoever owns it, and a group- or other-accessible directory of another user is
/// not ours to change: both are refused ([`io::ErrorKind::PermissionDenied`], the message says
/// what to do), and nothing in them is touched.
pub fn ensure_private_dir(dir: &Path) -> io::Result<Tightened> {
    if !dir.exists() {
        create_dir_all(dir)?;
        return Ok(Tightened::No);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let meta = std::fs::metadata(dir)?;
        let mode = meta.permissions().mode() & 0o7777;
        let refuse = |why: &str| {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} {why} (mode {mode:o}); it is left as it is. Keyhold keeps secrets in its data directory: \
                     pass a --data-dir of your own (a new path is created 0700), or make this one yours and 0700",
                    dir.display()
                ),
            ))
        };
        if mode & 0o1000 != 0 {
            return refuse("is a shared directory (sticky bit set)");
        }
        if mode & 0o077 != 0 {
            if meta.uid() != rustix::process::geteuid().as_raw() {
                return refuse("is accessible to other users and belongs to another user");
            }
            set_mode(dir, DIR_MODE)?;
            return Ok(Tightened::From(mode & 0o777));
        }
    }
    Ok(Tightened::No)
}

/// Opens `path` with `opts`, a file created so being 0600 from the start, and then 0600 in
/// any case (tightened if an earlier version left it loose).
fn open_private(opts: &mut std::fs::OpenOptions, path: &Path) -> io::Result<std::fs::File> {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(opts, FILE_MODE);
    let f = opts.open(path)?;
    set_file_mode(&f, FILE_MODE)?;
    Ok(f)
}

/// Opens (creating it 0600 if missing) the lock file at `path`, for
/// [`std::fs::File::try_lock`]: never truncated, tightened if loose.
pub fn open_lock_file(path: &Path) -> io::Result<std::fs::File> {
    // Not truncating, never following to a fresh file elsewhere than `path` names.
    open_private(std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false), path)
}

/// Opens `path` for appending, creating it 0600 if missing (tightened if loose).
pub fn open_append_file(path: &Path) -> io::Result<std::fs::File> {
    open_private(std::fs::OpenOptions::new().append(true).create(true), path)
}

/// Opens `path` for writing as a new file, 0600, failing if it exists (never a file left
/// behind, whose mode or symlink target could be anyone's).
pub fn create_new_file(path: &Path) -> io::Result<std::fs::File> {
    open_private(std::fs::OpenOptions::new().write(true).create_new(true), path)
}

/// Makes sure the file at `path` exists and is 0600: created empty if missing, tightened if
/// an earlier version left it group- or other-readable. Used for the SQLite file before SQLite
/// opens it, because SQLite gives its WAL and SHM the main file's mode.
pub fn ensure_private_file(path: &Path) -> io::Result<()> {
    open_lock_file(path).map(drop)
}

/// Sets the mode of an existing file to 0600 if it has group or other bits (a WAL or SHM left
/// by an earlier version). Missing files are fine.
pub fn tighten_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::File::open(path) {
        Ok(f) => set_file_mode(&f, FILE_MODE),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

fn set_file_mode(f: &std::fs::File, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if f.metadata()?.permissions().mode() & 0o777 != mode {
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
    }
    #[cfg(not(unix))]
    let _ = (f, mode);
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn new_directories_and_files_are_private_and_loose_ones_are_tightened() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        create_dir_all(&dir).unwrap();
        assert_eq!(mode(&root.path().join("a")), 0o700);
        assert_eq!(mode(&dir), 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(ensure_private_dir(&dir).unwrap(), Tightened::From(0o755));
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(ensure_private_dir(&dir).unwrap(), Tightened::No);

        let file = dir.join("f");
        std::fs::write(&file, b"x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        ensure_private_file(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
        assert_eq!(std::fs::read(&file).unwrap(), b"x", "an existing file is not truncated");
        let new = dir.join("g");
        create_new_file(&new).unwrap();
        assert_eq!(mode(&new), 0o600);
        assert!(create_new_file(&new).is_err(), "never over an existing file");
    }

    /// Found by the hardening probe: a sticky directory (1777, like /tmp) is refused and left as it was, sticky
    /// bit included; so is one with the sticky bit and no other access.
    #[test]
    fn a_sticky_directory_is_refused_and_left_alone() {
        let root = tempfile::tempdir().unwrap();
        for m in [0o1777, 0o1700] {
            let dir = root.path().join(format!("shared-{m:o}"));
            std::fs::create_dir(&dir).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(m)).unwrap();
            let e = ensure_private_dir(&dir).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
            assert!(e.to_string().contains("sticky bit set") && e.to_string().contains("--data-dir"), "{e}");
            let now = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
            assert_eq!(now, m, "the directory was changed");
        }
    }
}
