//! Throwaway SoftHSM2 tokens for tests (feature `softhsm`), for this crate and for others
//! (the server's HSM tests).
//!
//! ```no_run
//! # async fn demo() {
//! use keyhold_hsm::{HsmToken, testing::SoftHsm};
//! let hsm = SoftHsm::new(); // a fresh token; deleted when `hsm` is dropped
//! let token = HsmToken::new(hsm.config());
//! let key = token.generate_key("projects/p/.../cryptoKeyVersions/1").await.unwrap();
//! # }
//! ```
//!
//! # SOFTHSM2_CONF must come from outside the process
//!
//! SoftHSM reads its configuration file from the `SOFTHSM2_CONF` environment variable at
//! `C_Initialize`, and nothing else. Setting a variable from inside a process that runs
//! threads is unsound (Rust 2024 makes `std::env::set_var` unsafe, and this workspace forbids
//! unsafe code), so the variable must be set by whoever starts the tests: the workspace's
//! `.cargo/config.toml` (`[env] SOFTHSM2_CONF = { value = "target/softhsm/softhsm2.conf",
//! relative = true }`), or the environment. If the file does not exist, the first test
//! process writes it, with a token directory next to it. All test processes share that
//! directory; every [`SoftHsm`] is its own token in it, with a unique label and random PINs,
//! deleted on drop.
//!
//! # One module per process, one token directory for all
//!
//! SoftHSM scans its token directory only at `C_Initialize`, which happens once per process
//! (see the crate docs), so a token made by `softhsm2-util` in another process would stay
//! invisible to a test process that already uses the module (as under `cargo test`, where
//! tests are threads; `cargo nextest` runs one process per test). Tokens are therefore
//! initialized in-process with `C_InitToken` and `C_InitPIN` through the shared module, and
//! deleted by removing their directory.
//!
//! Token directories created and deleted while other processes ran `C_Initialize` left
//! directories holding only a `generation` file, and made `C_Initialize` abort the process
//! (`SlotManager::insertToken: Assertion 'result.second' failed`: two slots with one ID),
//! most likely from a scan that met a token half created or half deleted. So test processes
//! coordinate through a file lock next to the token directory: every `C_Initialize` of the
//! module (first use and re-initialization) holds it shared; creating, deleting and
//! "removing" a token hold it exclusively. With it, hundreds of runs (threads and processes
//! together) passed.
//!
//! Missing SoftHSM2 is a failure, never a skip.

use std::cell::Cell;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use cryptoki::error::{Error as Pkcs11Error, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use keyhold_crypto::SecretString;

use crate::Pkcs11Config;
use crate::error::describe;
use crate::module;

/// The `cryptoki` crate, for tests that inspect token objects directly
/// ([`SoftHsm::with_session`]).
pub use cryptoki;

/// Where the SoftHSM2 module is looked for, in this order.
pub const MODULE_CANDIDATES: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
];

const INSTALL_HINT: &str = "scripts/test.sh installs it (Debian package softhsm2: \
                            apt-get install softhsm2)";

/// The SoftHSM2 module of this machine. Also sets up the process's test environment (see
/// the module docs), so call it before using the module in any other way.
pub fn softhsm_module() -> Result<PathBuf, String> {
    env().map(|e| e.module.clone())
}

fn find_module() -> Result<PathBuf, String> {
    MODULE_CANDIDATES.iter().map(PathBuf::from).find(|p| p.is_file()).ok_or_else(|| {
        format!("SoftHSM2 is not installed (no libsofthsm2.so in {}): {INSTALL_HINT}", MODULE_CANDIDATES.join(", "))
    })
}

/// The process's SoftHSM environment: module, token directory and its lock file.
#[derive(Debug)]
struct Env {
    module: PathBuf,
    token_dir: PathBuf,
    lock_path: PathBuf,
}

static ENV: OnceLock<Result<Env, String>> = OnceLock::new();

fn env() -> Result<&'static Env, String> {
    ENV.get_or_init(setup).as_ref().map_err(Clone::clone)
}

/// Marks a configuration written by [`write_conf`]: only then is its token directory swept.
const CONF_MARKER: &str = "# Written by keyhold-hsm's tests (keyhold_hsm::testing).";

fn setup() -> Result<Env, String> {
    let module = find_module()?;
    let conf = std::env::var_os("SOFTHSM2_CONF").map(PathBuf::from).ok_or_else(|| {
        "SOFTHSM2_CONF is not set. SoftHSM reads its configuration only from that variable, and \
         a test process cannot set it safely for itself, so it must come from outside: the \
         workspace's .cargo/config.toml should have `[env] SOFTHSM2_CONF = { value = \
         \"target/softhsm/softhsm2.conf\", relative = true }` (or export \
         SOFTHSM2_CONF=/some/dir/softhsm2.conf; the file is created if missing)"
            .to_owned()
    })?;
    let token_dir = if conf.is_file() { read_token_dir(&conf)? } else { write_conf(&conf)? };
    std::fs::create_dir_all(&token_dir)
        .map_err(|e| format!("cannot create the token directory {}: {e}", token_dir.display()))?;
    let env = Env { module, lock_path: token_dir.with_extension("lock"), token_dir };
    for dir in [env.removed_dir(), env.owners_dir()] {
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    // Before anything in this process can call C_Initialize.
    module::set_before_initialize(shared_scan_lock);
    let ours = std::fs::read_to_string(&conf).is_ok_and(|t| t.starts_with(CONF_MARKER));
    if ours {
        let _exclusive = Exclusive::take(&env)?;
        sweep(&env);
    }
    Ok(env)
}

/// Opens the lock file and locks it (shared or exclusive); unlocked when the file is dropped.
fn lock(path: &Path, exclusive: bool) -> Result<File, String> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot open the lock file {}: {e}", path.display()))?;
    let locked = if exclusive { file.lock() } else { file.lock_shared() };
    locked.map_err(|e| format!("cannot lock {}: {e}", path.display()))?;
    Ok(file)
}

thread_local! {
    /// Whether this thread holds the exclusive lock: then a `C_Initialize` it causes needs no
    /// shared lock (it would wait for itself, `flock` locks of one process conflict too).
    static EXCLUSIVE_HERE: Cell<bool> = const { Cell::new(false) };
}

/// The exclusive lock: no other test process is in `C_Initialize` while it is held.
struct Exclusive {
    _file: File,
}

impl Exclusive {
    fn take(env: &Env) -> Result<Exclusive, String> {
        let file = lock(&env.lock_path, true)?;
        EXCLUSIVE_HERE.set(true);
        Ok(Exclusive { _file: file })
    }
}

impl Drop for Exclusive {
    fn drop(&mut self) {
        EXCLUSIVE_HERE.set(false);
    }
}

/// The hook run before every `C_Initialize` of this process.
fn shared_scan_lock() -> Option<Box<dyn std::any::Any>> {
    if EXCLUSIVE_HERE.get() {
        return None;
    }
    let env = ENV.get()?.as_ref().ok()?;
    match lock(&env.lock_path, false) {
        Ok(file) => Some(Box::new(file)),
        Err(e) => {
            eprintln!("keyhold-hsm testing: {e}");
            None
        }
    }
}

/// Removes what earlier test processes left in the shared token directory, so it does not
/// grow without end (every process's `C_Initialize` reads all of it): token directories
/// (and "removed" ones) whose owning process is gone, or that have no owner at all (damaged
/// remains). Only entries untouched for a minute. The caller holds the exclusive lock.
fn sweep(env: &Env) {
    for dir in [&env.token_dir, &env.removed_dir()] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for token in entries.filter_map(Result::ok).map(|e| e.path()) {
            let Some(name) = token.file_name().map(|n| n.to_string_lossy().into_owned()) else {
                continue;
            };
            let old = std::fs::metadata(&token)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(60));
            let owner = env.owner_file(&name);
            let alive = std::fs::read_to_string(&owner)
                .ok()
                .and_then(|pid| pid.trim().parse::<u32>().ok())
                .is_some_and(process_alive);
            if old && token.is_dir() && !alive {
                let _ = std::fs::remove_dir_all(&token);
                let _ = std::fs::remove_file(&owner);
            }
        }
    }
    let Ok(owners) = std::fs::read_dir(env.owners_dir()) else {
        return;
    };
    for owner in owners.filter_map(Result::ok) {
        let name = owner.file_name();
        if !env.token_dir.join(&name).exists() && !env.removed_dir().join(&name).exists() {
            let _ = std::fs::remove_file(owner.path());
        }
    }
}

fn process_alive(pid: u32) -> bool {
    // Without /proc (not Linux) every process counts as alive: nothing is removed.
    !Path::new("/proc/self").exists() || Path::new(&format!("/proc/{pid}")).exists()
}

impl Env {
    /// Where "removed" tokens wait ([`SoftHsm::remove_token`]): outside the token directory,
    /// where SoftHSM would find them under any name.
    fn removed_dir(&self) -> PathBuf {
        self.token_dir.with_extension("removed")
    }

    /// Which process owns which token: a file per token directory holding the process ID.
    fn owners_dir(&self) -> PathBuf {
        self.token_dir.with_extension("owners")
    }

    fn owner_file(&self, token_dir_name: &str) -> PathBuf {
        self.owners_dir().join(token_dir_name)
    }

    /// The directory of the token with this serial number (SoftHSM names it by a UUID that
    /// ends in the serial number).
    fn token_path(&self, serial: &str) -> Result<PathBuf, String> {
        let entries =
            std::fs::read_dir(&self.token_dir).map_err(|e| format!("cannot list {}: {e}", self.token_dir.display()))?;
        let serial = serial.to_ascii_lowercase();
        entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.is_dir()
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().replace('-', "").to_ascii_lowercase().ends_with(&serial))
            })
            .ok_or_else(|| format!("no directory for the token with serial {serial}"))
    }
}

/// Writes a configuration with a `tokens` directory next to it; atomic, so test processes
/// starting together cannot read a half-written file.
fn write_conf(conf: &Path) -> Result<PathBuf, String> {
    let dir = conf
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| format!("SOFTHSM2_CONF={} has no directory", conf.display()))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let token_dir = dir.join("tokens");
    let text = format!(
        "{CONF_MARKER}\n\
         directories.tokendir = {}\n\
         objectstore.backend = file\n\
         log.level = ERROR\n\
         slots.removable = false\n",
        token_dir.display()
    );
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
    match tmp.persist_noclobber(conf) {
        Ok(_) => Ok(token_dir),
        // Another test process was faster: use its file.
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => read_token_dir(conf),
        Err(e) => Err(format!("cannot write {}: {}", conf.display(), e.error)),
    }
}

fn read_token_dir(conf: &Path) -> Result<PathBuf, String> {
    let text = std::fs::read_to_string(conf).map_err(|e| format!("cannot read {}: {e}", conf.display()))?;
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == "directories.tokendir")
        .map(|(_, v)| PathBuf::from(v.trim()))
        .ok_or_else(|| format!("{} sets no directories.tokendir", conf.display()))
}

/// A throwaway SoftHSM2 token, deleted when dropped. Keep it alive as long as the token is
/// used.
pub struct SoftHsm {
    env: &'static Env,
    label: String,
    pin: SecretString,
    serial: String,
    /// The name of the token's directory.
    dir_name: String,
}

impl std::fmt::Debug for SoftHsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftHsm").field("label", &self.label).field("serial", &self.serial).finish_non_exhaustive()
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn random_hex(bytes: usize) -> Result<String, String> {
    let mut buf = vec![0u8; bytes];
    keyhold_crypto::random_bytes(&mut buf).map_err(|e| format!("no randomness: {e}"))?;
    Ok(keyhold_crypto::hex(&buf))
}

impl SoftHsm {
    /// A fresh token with a unique label and a random PIN. Panics, with the reason and what
    /// to do, if SoftHSM2 is missing or not configured.
    pub fn new() -> SoftHsm {
        Self::try_new().unwrap_or_else(|e| panic!("cannot create a SoftHSM2 test token: {e}"))
    }

    /// A fresh token with this label (at most 32 bytes, unique) and user PIN. Panics like
    /// [`SoftHsm::new`].
    pub fn new_with(label: &str, pin: &str) -> SoftHsm {
        Self::try_create(label.to_owned(), SecretString::new(pin.to_owned()))
            .unwrap_or_else(|e| panic!("cannot create a SoftHSM2 test token: {e}"))
    }

    /// [`SoftHsm::new`] without the panic.
    pub fn try_new() -> Result<SoftHsm, String> {
        // Token labels are at most 32 bytes: "kh-" + pid + counter + 8 hex digits fits.
        let label = format!("kh-{}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed), random_hex(4)?);
        let pin = SecretString::new(random_hex(8)?);
        Self::try_create(label, pin)
    }

    fn try_create(label: String, pin: SecretString) -> Result<SoftHsm, String> {
        if label.is_empty() || label.len() > 32 {
            return Err(format!("a token label must be 1 to 32 bytes: {label:?}"));
        }
        let env = env()?;
        let so_pin = SecretString::new(random_hex(8)?);
        let _exclusive = Exclusive::take(env)?;
        let serial = init_token(&env.module, &label, &so_pin, &pin)?;
        let dir = env.token_path(&serial)?;
        let dir_name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let owner = env.owner_file(&dir_name);
        std::fs::write(&owner, std::process::id().to_string())
            .map_err(|e| format!("cannot write {}: {e}", owner.display()))?;
        Ok(SoftHsm { env, label, pin, serial, dir_name })
    }

    /// Settings for an [`HsmToken`](crate::HsmToken) on this token.
    pub fn config(&self) -> Pkcs11Config {
        Pkcs11Config::new(&self.env.module, &self.label, self.pin.clone())
    }

    /// The token label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The user PIN.
    pub fn pin(&self) -> &SecretString {
        &self.pin
    }

    /// The token's serial number.
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// The SoftHSM2 module.
    pub fn module(&self) -> &Path {
        &self.env.module
    }

    /// This token's directory.
    pub fn token_path(&self) -> PathBuf {
        self.env.token_dir.join(&self.dir_name)
    }

    /// Runs `f` with a fresh session on this token, logged in as the user, through the shared
    /// module (under its lock, so a concurrent re-initialization cannot pull the session
    /// away). For tests that inspect objects with `cryptoki` directly.
    pub fn with_session<T>(&self, f: impl FnOnce(&Session) -> T) -> Result<T, String> {
        let module = module::get(&self.env.module).map_err(|e| e.to_string())?;
        let guard = module.read().map_err(|e| e.to_string())?;
        let session = {
            let _slot_calls = guard.slot_calls();
            let slot = find_slot(&guard.ctx, &self.label)?;
            guard.ctx.open_rw_session(slot).map_err(|e| format!("opening a session: {}", describe(&e)))?
        };
        let pin = AuthPin::new(self.pin.expose().into());
        match session.login(UserType::User, Some(&pin)) {
            Ok(()) | Err(Pkcs11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => return Err(format!("logging in: {}", describe(&e))),
        }
        Ok(f(&session))
    }

    /// `C_Finalize` + `C_Initialize` of the shared module: SoftHSM drops everything it holds
    /// in memory and reads the token directory again, as a restarted server would.
    pub fn reload_module(&self) -> Result<(), String> {
        let module = module::get(&self.env.module).map_err(|e| e.to_string())?;
        module.reinitialize(None);
        Ok(())
    }

    /// Simulates pulling the token out: its directory is moved out of SoftHSM's sight until
    /// the returned guard is restored or dropped.
    pub fn remove_token(&self) -> Result<RemovedToken, String> {
        let (dir, away) = (self.token_path(), self.env.removed_dir().join(&self.dir_name));
        move_dir(self.env, &dir, &away)?;
        Ok(RemovedToken { env: self.env, dir, away, restored: false })
    }
}

/// Renames a token directory under the exclusive lock (no `C_Initialize` sees it half way).
fn move_dir(env: &Env, from: &Path, to: &Path) -> Result<(), String> {
    let _exclusive = Exclusive::take(env)?;
    std::fs::rename(from, to).map_err(|e| format!("cannot move {} to {}: {e}", from.display(), to.display()))
}

impl Default for SoftHsm {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for SoftHsm {
    fn drop(&mut self) {
        let deleted = (|| -> Result<(), String> {
            let _exclusive = Exclusive::take(self.env)?;
            // No call into the module while the files go (this process's SoftHSM still
            // holds the token in memory).
            let module = module::get(&self.env.module).map_err(|e| e.to_string())?;
            let _no_calls = module.exclusive();
            std::fs::remove_dir_all(self.token_path()).map_err(|e| e.to_string())?;
            let _ = std::fs::remove_file(self.env.owner_file(&self.dir_name));
            Ok(())
        })();
        if let Err(e) = deleted {
            eprintln!("keyhold-hsm testing: could not delete the SoftHSM token {}: {e}", self.label);
        }
    }
}

/// A token "pulled out" by [`SoftHsm::remove_token`]; put back by [`RemovedToken::restore`]
/// or on drop.
#[derive(Debug)]
pub struct RemovedToken {
    env: &'static Env,
    dir: PathBuf,
    away: PathBuf,
    restored: bool,
}

impl RemovedToken {
    /// Puts the token back.
    pub fn restore(mut self) -> Result<(), String> {
        self.put_back()
    }

    fn put_back(&mut self) -> Result<(), String> {
        if self.restored {
            return Ok(());
        }
        move_dir(self.env, &self.away, &self.dir)?;
        self.restored = true;
        Ok(())
    }
}

impl Drop for RemovedToken {
    fn drop(&mut self) {
        if let Err(e) = self.put_back() {
            eprintln!("keyhold-hsm testing: {e}");
        }
    }
}

fn find_slot(ctx: &cryptoki::context::Pkcs11, label: &str) -> Result<Slot, String> {
    let slots = ctx.get_slots_with_token().map_err(|e| format!("listing slots: {}", describe(&e)))?;
    slots
        .into_iter()
        .find(|s| ctx.get_token_info(*s).is_ok_and(|t| t.label() == label))
        .ok_or_else(|| format!("no token labelled {label}"))
}

/// Initializes a token in the free slot, in this process, and returns its serial number.
fn init_token(module_path: &Path, label: &str, so_pin: &SecretString, pin: &SecretString) -> Result<String, String> {
    let module = module::get(module_path).map_err(|e| e.to_string())?;
    let guard = module.read().map_err(|e| e.to_string())?;
    let ctx = &guard.ctx;
    // Also keeps two threads from picking the same free slot.
    let _slot_calls = guard.slot_calls();
    // Listing the slots makes SoftHSM offer a fresh uninitialized one.
    let slots = ctx.get_slots_with_token().map_err(|e| format!("listing slots: {}", describe(&e)))?;
    let mut free = None;
    for slot in slots {
        let Ok(info) = ctx.get_token_info(slot) else {
            continue;
        };
        if !info.token_initialized() {
            free = free.or(Some(slot));
        } else if info.label() == label {
            return Err(format!("a token labelled {label} already exists"));
        }
    }
    let slot = free.ok_or("SoftHSM offers no free slot")?;
    let so_pin = AuthPin::new(so_pin.expose().into());
    ctx.init_token(slot, &so_pin, label).map_err(|e| format!("C_InitToken: {}", describe(&e)))?;
    let session = ctx.open_rw_session(slot).map_err(|e| format!("opening a session: {}", describe(&e)))?;
    session.login(UserType::So, Some(&so_pin)).map_err(|e| format!("SO login: {}", describe(&e)))?;
    session.init_pin(&AuthPin::new(pin.expose().into())).map_err(|e| format!("C_InitPIN: {}", describe(&e)))?;
    let _ = session.logout();
    drop(session);
    let info = ctx.get_token_info(slot).map_err(|e| format!("reading the new token: {}", describe(&e)))?;
    Ok(info.serial_number().to_owned())
}
