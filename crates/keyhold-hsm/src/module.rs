//! The process-wide registry of loaded PKCS#11 modules.
//!
//! `C_Initialize` may be called once per module per process (a second call returns
//! `CKR_CRYPTOKI_ALREADY_INITIALIZED`), and loading the same shared library twice yields the
//! same library state anyway. So each module is loaded and initialized once, keyed by its
//! canonical path (a symlink and its target are one module), and shared by every
//! [`HsmToken`](crate::HsmToken) in the process — two in-process servers in one test share it.
//!
//! A module can be *re-initialized* (`C_Finalize` then `C_Initialize`) to recover from a
//! token that was removed and inserted again: some modules, SoftHSM among them, only
//! discover tokens at `C_Initialize`. PKCS#11 forbids `C_Finalize` while other threads are in
//! calls, so every call runs under a read lock of the module and re-initialization takes the
//! write lock. Each initialization has an *epoch*; sessions and object handles from an older
//! epoch are invalid (handle numbers are reused) and are forgotten, never closed.
//!
//! Failed loads are not remembered: the next use tries again, so a module that appears later
//! (package installed, file system mounted) is picked up without a restart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, RwLockReadGuard, TryLockError};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as Pkcs11Error, RvError};

use crate::HsmError;
use crate::error::describe;

/// A loaded module.
pub(crate) struct Module {
    path: PathBuf,
    state: RwLock<ModuleState>,
    last_reinit: Mutex<Option<Instant>>,
}

/// The module's context, its epoch and whether it is initialized.
pub(crate) struct ModuleState {
    pub(crate) ctx: Pkcs11,
    pub(crate) epoch: u64,
    initialized: bool,
    slot_calls: Mutex<()>,
}

impl ModuleState {
    /// Held around every call that names a slot (`C_GetSlotList`, `C_GetSlotInfo`,
    /// `C_GetTokenInfo`, `C_OpenSession`, `C_InitToken`): SoftHSM 2.6 adds a slot to its slot
    /// table inside `C_GetSlotList` without a lock, and two threads doing it at once abort the
    /// process (`SlotManager::insertToken: Assertion 'result.second' failed`) or corrupt the
    /// table under a concurrent lookup. Calls on a session need no such lock.
    pub(crate) fn slot_calls(&self) -> MutexGuard<'_, ()> {
        self.slot_calls.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

static REGISTRY: OnceLock<Mutex<HashMap<PathBuf, Arc<Module>>>> = OnceLock::new();

/// Re-initializations of one module are at least this far apart, whoever asks.
const MIN_REINIT_INTERVAL: Duration = Duration::from_millis(20);

/// The module at `path`, loaded on first use.
pub(crate) fn get(path: &Path) -> Result<Arc<Module>, HsmError> {
    let canonical = std::fs::canonicalize(path)
        .map_err(|e| HsmError::unavailable(format!("the PKCS#11 module {} cannot be found: {e}", path.display())))?;
    let registry = REGISTRY.get_or_init(Default::default);
    let mut map = registry.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(module) = map.get(&canonical) {
        return Ok(Arc::clone(module));
    }
    let ctx = Pkcs11::new(&canonical)
        .map_err(|e| HsmError::unavailable(format!("cannot load the PKCS#11 module {}: {e}", path.display())))?;
    let module = Arc::new(Module {
        path: canonical.clone(),
        state: RwLock::new(ModuleState { ctx, epoch: 0, initialized: false, slot_calls: Mutex::new(()) }),
        last_reinit: Mutex::new(None),
    });
    map.insert(canonical, Arc::clone(&module));
    tracing::debug!(module = %path.display(), "PKCS#11 module loaded");
    Ok(module)
}

impl Module {
    /// The initialized context, under the read lock. Initializes the module first if needed
    /// (first use, or a failed re-initialization).
    pub(crate) fn read(&self) -> Result<RwLockReadGuard<'_, ModuleState>, HsmError> {
        {
            let guard = self.state.read().unwrap_or_else(PoisonError::into_inner);
            if guard.initialized {
                return Ok(guard);
            }
        }
        {
            let _scan = before_initialize();
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            if !state.initialized {
                self.initialize(&mut state)?;
            }
        }
        let guard = self.state.read().unwrap_or_else(PoisonError::into_inner);
        if guard.initialized {
            Ok(guard)
        } else {
            // Someone re-initialized in between and failed; report rather than loop.
            Err(HsmError::unavailable(format!("the PKCS#11 module {} is not initialized", self.path.display())))
        }
    }

    fn initialize(&self, state: &mut ModuleState) -> Result<(), HsmError> {
        match state.ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) => {}
            // Initialized by other code in this process (or by a registry entry under
            // another path that canonicalization could not unify): the context is usable.
            Err(Pkcs11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {
                tracing::debug!(module = %self.path.display(), "PKCS#11 module was already initialized");
            }
            Err(e) => {
                return Err(HsmError::unavailable(format!(
                    "cannot initialize the PKCS#11 module {}: {}",
                    self.path.display(),
                    describe(&e)
                )));
            }
        }
        state.initialized = true;
        state.epoch += 1;
        Ok(())
    }

    /// `C_Finalize` + `C_Initialize`, unless another caller already did it since `seen_epoch`
    /// or did it moments ago. `None` forces it (tests: make SoftHSM read its token directory
    /// again). Must not be called while the caller holds a read guard of this module.
    pub(crate) fn reinitialize(&self, seen_epoch: Option<u64>) {
        let _scan = before_initialize();
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(seen) = seen_epoch {
            if state.epoch != seen {
                return;
            }
            let last = self.last_reinit.lock().unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|t| t.elapsed() < MIN_REINIT_INTERVAL) {
                return;
            }
        }
        *self.last_reinit.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        tracing::warn!(module = %self.path.display(), "re-initializing the PKCS#11 module (C_Finalize, C_Initialize)");
        if state.initialized {
            if let Err(e) = state.ctx.clone().finalize() {
                tracing::warn!(module = %self.path.display(), error = %describe(&e), "C_Finalize failed");
            }
            state.initialized = false;
        }
        if let Err(e) = self.initialize(&mut state) {
            // Bump the epoch anyway so nothing from before is reused; `read` retries.
            state.epoch += 1;
            tracing::warn!(error = %e, "re-initialization failed");
        }
    }

    /// Runs `f` under the read lock if the module is still in `epoch`; skips it if not, or if
    /// the lock is not immediately available (never blocks, so it is safe in `Drop`).
    pub(crate) fn if_current(&self, epoch: u64, f: impl FnOnce()) {
        let guard = match self.state.try_read() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        if guard.initialized && guard.epoch == epoch {
            f();
        }
    }

    /// The write lock: no call into the module runs while it is held (test support: the
    /// token files of SoftHSM are changed under it).
    #[cfg(feature = "softhsm")]
    pub(crate) fn exclusive(&self) -> std::sync::RwLockWriteGuard<'_, ModuleState> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The canonical path of the module.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// Test support (feature `softhsm`): a guard taken before every `C_Initialize` (and before
/// the module's write lock, so the lock order is always this guard, then the module).
///
/// Test processes share one SoftHSM token directory, and a `C_Initialize` running while
/// another process creates or deletes a token there can abort the process inside SoftHSM;
/// [`crate::testing`] installs a hook taking a shared file lock here, and creates and deletes
/// tokens under the exclusive lock. Without the feature this is a no-op.
#[cfg(feature = "softhsm")]
static BEFORE_INITIALIZE: OnceLock<BeforeInitialize> = OnceLock::new();

/// The hook's type: returns a guard held until `C_Initialize` returned.
#[cfg(feature = "softhsm")]
pub(crate) type BeforeInitialize = fn() -> Option<Box<dyn std::any::Any>>;

#[cfg(feature = "softhsm")]
pub(crate) fn set_before_initialize(hook: BeforeInitialize) {
    let _ = BEFORE_INITIALIZE.set(hook);
}

#[cfg(feature = "softhsm")]
fn before_initialize() -> Option<Box<dyn std::any::Any>> {
    BEFORE_INITIALIZE.get().and_then(|hook| hook())
}

#[cfg(not(feature = "softhsm"))]
fn before_initialize() -> Option<()> {
    None
}
