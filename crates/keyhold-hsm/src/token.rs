//! [`HsmToken`]: a connection to one token, a pool of logged-in sessions, and the operations.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use cryptoki::context::Function;
use cryptoki::error::{Error as Pkcs11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use keyhold_crypto::Secret;
use tokio::sync::Semaphore;

use crate::error::{classify, describe, is_pin_error, is_stale_handle, rv_of};
use crate::key_ref::validate_label;
use crate::module::{self, Module, ModuleState};
use crate::{HsmError, HsmKeyRef, HsmOptions, Pkcs11Config, TokenInfo, format};

mod keys;
pub use keys::supports;

/// Fewest bytes [`HsmToken::random_bytes`] returns (Cloud KMS `generateRandomBytes`).
pub const MIN_RANDOM_BYTES: usize = 8;
/// Most bytes [`HsmToken::random_bytes`] returns (Cloud KMS `generateRandomBytes`).
pub const MAX_RANDOM_BYTES: usize = 1024;
/// Length of the random `CKA_ID` given to generated keys.
pub const KEY_ID_LEN: usize = 16;

/// One PKCS#11 token: AES-256 keys, and EC, Ed25519, RSA, HMAC and raw AES keys, generated and
/// used inside it.
///
/// Cheap to clone (an `Arc` inside); clones share the session pool. Creating one does not
/// touch the module: it connects on first use and reconnects after failures (see the crate
/// documentation). Every PKCS#11 call runs on tokio's blocking pool, so the async methods
/// must be called from within a tokio runtime.
#[derive(Clone)]
pub struct HsmToken {
    inner: Arc<Inner>,
}

struct Inner {
    config: Pkcs11Config,
    options: HsmOptions,
    /// One permit per session: bounds the calls in flight, hence the sessions opened.
    permits: Arc<Semaphore>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    conn: Option<Arc<Connection>>,
    /// The last failure to connect, for the back-off.
    last_failure: Option<(Instant, HsmError)>,
    /// Set once the token refused the PIN: it is never tried again (tokens lock PINs).
    login_refused: Option<HsmError>,
}

/// The token found in one epoch of the module: its slot, idle sessions and object handles.
struct Connection {
    module: Arc<Module>,
    epoch: u64,
    slot: Slot,
    idle: Mutex<Vec<Session>>,
    /// Object handles by key: valid only within this epoch of the module.
    handles: Mutex<HashMap<HsmKeyRef, ObjectHandle>>,
    /// The same for keys of the other purposes (signing, RSA-OAEP, HMAC, raw AES): their
    /// private, public and secret objects (`token/keys.rs`), so a signature costs no search.
    parts: Mutex<HashMap<HsmKeyRef, keys::KeyParts>>,
    /// Set when a call failed in a way that suggests the token or session is gone.
    broken: AtomicBool,
}

/// What the operations get: the module context, the connection and a logged-in session.
struct Call<'a> {
    module: &'a ModuleState,
    conn: &'a Connection,
    session: &'a Session,
    token_label: &'a str,
}

/// A failure to connect, and whether re-initializing the module might cure it.
struct ConnectError {
    error: HsmError,
    reinit: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl fmt::Debug for HsmToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HsmToken")
            .field("module", &self.inner.config.module)
            .field("token_label", &self.inner.config.token_label)
            .finish_non_exhaustive()
    }
}

impl HsmToken {
    /// A token with default [`HsmOptions`]. Never fails and does no I/O: an HSM that is down
    /// at startup only makes calls fail until it is back.
    pub fn new(config: Pkcs11Config) -> Self {
        Self::with_options(config, HsmOptions::default())
    }

    /// A token with explicit options.
    pub fn with_options(config: Pkcs11Config, options: HsmOptions) -> Self {
        let options = HsmOptions { max_sessions: options.max_sessions.clamp(1, Semaphore::MAX_PERMITS), ..options };
        Self {
            inner: Arc::new(Inner {
                permits: Arc::new(Semaphore::new(options.max_sessions)),
                config,
                options,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// The configured token label.
    pub fn token_label(&self) -> &str {
        &self.inner.config.token_label
    }

    /// The configured module path.
    pub fn module_path(&self) -> &Path {
        &self.inner.config.module
    }

    /// Generates an AES-256 key inside the token: a token object (`CKA_TOKEN`), sensitive and
    /// never extractable, usable only to encrypt and decrypt, labelled `label`, with a random
    /// 16-byte `CKA_ID` from the token's generator. Returns the reference to store.
    pub async fn generate_key(&self, label: &str) -> Result<HsmKeyRef, HsmError> {
        validate_label(label)?;
        let label = label.to_owned();
        self.run("generate_key", move |call| call.generate(&label)).await
    }

    /// Puts an imported AES-256 key (`material`, 32 bytes) into the token as an object like the
    /// ones [`HsmToken::generate_key`] makes (`C_CreateObject`), labelled `label`, with a random
    /// `CKA_ID`. The template's copy of `material` is wiped once the token has it.
    pub async fn import_key(&self, label: &str, material: &Secret) -> Result<HsmKeyRef, HsmError> {
        validate_label(label)?;
        if material.expose().len() != 32 {
            return Err(HsmError::invalid(format!("an AES-256 key is 32 bytes, not {}", material.expose().len())));
        }
        let label = label.to_owned();
        let material = material.clone();
        self.run("import_key", move |call| call.import(&label, &material)).await
    }

    /// The key labelled `label` if the token holds exactly one, else a new one (for the KMS
    /// root key living in the token). Two servers starting for the first time at the same
    /// moment could both generate; start one first.
    pub async fn find_or_generate_key(&self, label: &str) -> Result<HsmKeyRef, HsmError> {
        validate_label(label)?;
        let label = label.to_owned();
        self.run("find_or_generate_key", move |call| call.find_or_generate(&label)).await
    }

    /// AES-256-GCM inside the token with a fresh IV from the token's generator. Output format:
    /// see [`format`](crate::format).
    pub async fn encrypt(&self, key: &HsmKeyRef, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, HsmError> {
        let key = key.clone();
        let plaintext = Secret::new(plaintext.to_vec());
        let aad = format::token_aad(aad);
        self.run("encrypt", move |call| call.encrypt(&key, plaintext.expose(), &aad)).await
    }

    /// Decrypts what [`HsmToken::encrypt`] produced with the same key and AAD. A wrong key,
    /// AAD or an altered ciphertext gives [`HsmError::Decrypt`].
    pub async fn decrypt(&self, key: &HsmKeyRef, ciphertext: &[u8], aad: &[u8]) -> Result<Secret, HsmError> {
        // Malformed input is refused without a round trip to the token.
        let (iv, sealed) = format::parse(ciphertext)?;
        let sealed = sealed.to_vec();
        let key = key.clone();
        let aad = format::token_aad(aad);
        self.run("decrypt", move |call| call.decrypt(&key, iv, &sealed, &aad)).await
    }

    /// Destroys the key object in the token (`C_DestroyObject`). [`HsmError::KeyNotFound`] if
    /// it is already gone.
    pub async fn destroy_key(&self, key: &HsmKeyRef) -> Result<(), HsmError> {
        let key = key.clone();
        self.run("destroy_key", move |call| call.destroy(&key)).await
    }

    /// Whether the token holds the key object.
    pub async fn key_exists(&self, key: &HsmKeyRef) -> Result<bool, HsmError> {
        let key = key.clone();
        self.run("key_exists", move |call| call.exists(&key)).await
    }

    /// Every key in the token whose label starts with `label_prefix` (its AES or HMAC secret key,
    /// or the private half of its pair), as references (label and ID; objects without an ID or
    /// with a label that is not UTF-8 are skipped). For reconciling the token with the database:
    /// Keyhold labels the objects of key versions `keyhold:VERSION_NAME:RANDOM`.
    pub async fn list_keys(&self, label_prefix: &str) -> Result<Vec<HsmKeyRef>, HsmError> {
        let prefix = label_prefix.to_owned();
        self.run("list_keys", move |call| call.list(&prefix)).await
    }

    /// `n` bytes from the token's random generator (`C_GenerateRandom`), `n` from
    /// [`MIN_RANDOM_BYTES`] to [`MAX_RANDOM_BYTES`] as in Cloud KMS.
    pub async fn random_bytes(&self, n: usize) -> Result<Secret, HsmError> {
        if !(MIN_RANDOM_BYTES..=MAX_RANDOM_BYTES).contains(&n) {
            return Err(HsmError::invalid(format!(
                "the number of random bytes must be between {MIN_RANDOM_BYTES} and \
                 {MAX_RANDOM_BYTES}, not {n}"
            )));
        }
        self.run("random_bytes", move |call| call.random(n)).await
    }

    /// What the module, slot and token say about themselves.
    pub async fn info(&self) -> Result<TokenInfo, HsmError> {
        self.run("info", |call| call.info()).await
    }

    /// Runs `op` with a logged-in session, on the blocking pool, at most `max_sessions` at a
    /// time.
    async fn run<T, F>(&self, what: &'static str, op: F) -> Result<T, HsmError>
    where
        T: Send + 'static,
        F: FnOnce(&Call<'_>) -> Result<T, HsmError> + Send + 'static,
    {
        let permit = Arc::clone(&self.inner.permits)
            .acquire_owned()
            .await
            .map_err(|_| HsmError::unavailable("the HSM session pool is closed"))?;
        let inner = Arc::clone(&self.inner);
        let joined = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            inner.run_blocking(op)
        })
        .await;
        match joined {
            Ok(result) => {
                if let Err(e) = &result {
                    tracing::debug!(operation = what, error = %e, "HSM call failed");
                }
                result
            }
            Err(e) => Err(HsmError::unavailable(format!(
                "the HSM call ({what}) did not complete ({})",
                if e.is_panic() { "it panicked" } else { "it was cancelled" }
            ))),
        }
    }
}

impl Inner {
    fn run_blocking<T>(&self, op: impl FnOnce(&Call<'_>) -> Result<T, HsmError>) -> Result<T, HsmError> {
        if let Some(e) = self.fail_fast() {
            return Err(e);
        }
        let module = module::get(&self.config.module).inspect_err(|e| self.record_failure(e))?;
        let mut reinitialized = false;
        loop {
            let guard = module.read().inspect_err(|e| self.record_failure(e))?;
            let conn = match self.connection(&module, &guard) {
                Ok(conn) => conn,
                Err(ConnectError { error, reinit }) => {
                    let epoch = guard.epoch;
                    drop(guard);
                    if reinit && !reinitialized {
                        // Some modules only discover a token again at C_Initialize.
                        reinitialized = true;
                        module.reinitialize(Some(epoch));
                        continue;
                    }
                    self.record_failure(&error);
                    return Err(error);
                }
            };
            let session = match conn.checkout(&guard, &self.config) {
                Ok(session) => session,
                Err(e) => {
                    conn.broken.store(true, Ordering::Relaxed);
                    self.latch_login(&e);
                    return Err(e);
                }
            };
            let call = Call {
                module: &guard,
                conn: &conn,
                session: &session,
                token_label: self.config.token_label.trim_end(),
            };
            let result = op(&call);
            match &result {
                Ok(_) => conn.checkin(session),
                Err(e) => {
                    self.latch_login(e);
                    conn.after_error(session, e);
                }
            }
            return result;
        }
    }

    fn fail_fast(&self) -> Option<HsmError> {
        let state = lock(&self.state);
        if let Some(e) = &state.login_refused {
            return Some(e.clone());
        }
        let healthy = state.conn.as_ref().is_some_and(|c| !c.broken.load(Ordering::Relaxed));
        match &state.last_failure {
            Some((at, e)) if !healthy && at.elapsed() < self.options.reconnect_backoff => Some(e.clone()),
            _ => None,
        }
    }

    fn record_failure(&self, e: &HsmError) {
        tracing::warn!(
            module = %self.config.module.display(),
            token = %self.config.token_label,
            error = %e,
            "cannot reach the HSM token"
        );
        let mut state = lock(&self.state);
        state.last_failure = Some((Instant::now(), e.clone()));
        self.latch_login_locked(&mut state, e);
    }

    fn latch_login(&self, e: &HsmError) {
        if matches!(e, HsmError::Login { .. }) {
            let mut state = lock(&self.state);
            self.latch_login_locked(&mut state, e);
        }
    }

    fn latch_login_locked(&self, state: &mut State, e: &HsmError) {
        if matches!(e, HsmError::Login { .. }) && state.login_refused.is_none() {
            tracing::error!(
                token = %self.config.token_label,
                error = %e,
                "the HSM token refused the configured PIN; not trying again until restarted"
            );
            state.login_refused = Some(e.clone());
        }
    }

    /// The current connection, or a new one if there is none, it broke, or the module was
    /// re-initialized since.
    fn connection(&self, module: &Arc<Module>, guard: &ModuleState) -> Result<Arc<Connection>, ConnectError> {
        let mut state = lock(&self.state);
        if let Some(e) = &state.login_refused {
            return Err(ConnectError { error: e.clone(), reinit: false });
        }
        if let Some(conn) = &state.conn
            && conn.epoch == guard.epoch
            && !conn.broken.load(Ordering::Relaxed)
            && Arc::ptr_eq(&conn.module, module)
        {
            return Ok(Arc::clone(conn));
        }
        // Another caller may just have failed: do not queue up connection attempts.
        if let Some((at, e)) = &state.last_failure
            && at.elapsed() < self.options.reconnect_backoff
        {
            return Err(ConnectError { error: e.clone(), reinit: false });
        }
        if let Some(old) = state.conn.take() {
            old.release_idle(guard);
        }
        let conn = Arc::new(connect(&self.config, module, guard)?);
        tracing::info!(
            module = %self.config.module.display(),
            token = %self.config.token_label,
            slot = conn.slot.id(),
            "connected to the PKCS#11 token"
        );
        state.conn = Some(Arc::clone(&conn));
        state.last_failure = None;
        Ok(conn)
    }
}

/// Finds the token by label and opens a first logged-in session (which checks the PIN).
fn connect(config: &Pkcs11Config, module: &Arc<Module>, guard: &ModuleState) -> Result<Connection, ConnectError> {
    let ctx = &guard.ctx;
    let label = config.token_label.trim_end();
    if label.is_empty() {
        // SoftHSM's free slot has an empty label: never log in to that.
        return Err(ConnectError { error: HsmError::config("the HSM token label is empty"), reinit: false });
    }
    let slot_calls = guard.slot_calls();
    let slots = ctx.get_slots_with_token().map_err(|e| ConnectError {
        error: HsmError::unavailable(format!(
            "cannot list the slots of the PKCS#11 module {}: {}",
            module.path().display(),
            describe(&e)
        )),
        reinit: true,
    })?;
    let mut found = Vec::new();
    let mut unreadable = 0usize;
    for slot in &slots {
        match ctx.get_token_info(*slot) {
            Ok(info) if info.label() == label => found.push(*slot),
            Ok(_) => {}
            // A token being removed, or broken: it is not ours unless we find no other.
            Err(_) => unreadable += 1,
        }
    }
    let slot = match found.as_slice() {
        [slot] => *slot,
        [] => {
            return Err(ConnectError {
                error: HsmError::unavailable(format!(
                    "no token labelled \"{label}\" in the PKCS#11 module {} ({} slots with a \
                     token, {unreadable} of them unreadable)",
                    module.path().display(),
                    slots.len()
                )),
                reinit: true,
            });
        }
        _ => {
            return Err(ConnectError {
                error: HsmError::config(format!(
                    "{} tokens are labelled \"{label}\" in the PKCS#11 module {}; labels must \
                     be unique",
                    found.len(),
                    module.path().display()
                )),
                reinit: false,
            });
        }
    };
    drop(slot_calls);
    let conn = Connection {
        module: Arc::clone(module),
        epoch: guard.epoch,
        slot,
        idle: Mutex::new(Vec::new()),
        handles: Mutex::new(HashMap::new()),
        parts: Mutex::new(HashMap::new()),
        broken: AtomicBool::new(false),
    };
    let session = conn.open_session(guard, config).map_err(|error| ConnectError { error, reinit: false })?;
    lock(&conn.idle).push(session);
    Ok(conn)
}

impl Connection {
    /// A new read/write session, logged in as the user. Sessions are opened "no drop": a
    /// session from an older epoch must never be closed, because its handle number may now
    /// belong to somebody else's session.
    fn open_session(&self, module: &ModuleState, config: &Pkcs11Config) -> Result<Session, HsmError> {
        let session = {
            let _slot_calls = module.slot_calls();
            module.ctx.open_rw_session_no_drop(self.slot).map_err(|e| classify(&e, "opening a session"))?
        };
        // Login state is shared by all sessions of the process with the token, so only the
        // first login checks the PIN; the others report CKR_USER_ALREADY_LOGGED_IN.
        let pin = AuthPin::new(config.pin.expose().into());
        match session.login(UserType::User, Some(&pin)) {
            Ok(()) | Err(Pkcs11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(e) => {
                let _ = session.close();
                Err(match rv_of(&e) {
                    Some(rv) if is_pin_error(rv) => HsmError::Login {
                        detail: format!(
                            "the token \"{}\" refused the configured PIN ({}); fix the PIN \
                             setting and restart (a refused PIN is not tried again: tokens \
                             lock it after repeated failures)",
                            config.token_label,
                            describe(&e)
                        ),
                    },
                    _ => classify(&e, "logging in to the token"),
                })
            }
        }
    }

    fn checkout(&self, module: &ModuleState, config: &Pkcs11Config) -> Result<Session, HsmError> {
        if let Some(session) = lock(&self.idle).pop() {
            return Ok(session);
        }
        self.open_session(module, config)
    }

    /// Back to the pool (or closed, if the connection broke meanwhile).
    fn checkin(&self, session: Session) {
        if self.broken.load(Ordering::Relaxed) {
            let _ = session.close();
        } else {
            lock(&self.idle).push(session);
        }
    }

    /// After a failed call: errors that leave the session clean (the operation never started,
    /// or ended with the failure) keep it; anything else closes it, and token or session
    /// problems mark the connection broken so the next call reconnects.
    fn after_error(&self, session: Session, error: &HsmError) {
        match error {
            HsmError::KeyNotFound { .. } | HsmError::Decrypt { .. } | HsmError::InvalidInput { .. } => {
                self.checkin(session);
            }
            HsmError::Unavailable { .. } | HsmError::Login { .. } => {
                self.broken.store(true, Ordering::Relaxed);
                let _ = session.close();
            }
            _ => {
                let _ = session.close();
                // Some tokens (SoftHSM2) renumber object handles once the last session of the
                // slot closes: the cached handles may now name nothing, or another object.
                lock(&self.handles).clear();
                lock(&self.parts).clear();
            }
        }
    }

    /// Closes the idle sessions if they belong to the module's current epoch, else forgets
    /// them. The caller holds `guard`.
    fn release_idle(&self, guard: &ModuleState) {
        let sessions = std::mem::take(&mut *lock(&self.idle));
        if guard.epoch == self.epoch {
            for session in sessions {
                let _ = session.close();
            }
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let sessions = std::mem::take(self.idle.get_mut().unwrap_or_else(PoisonError::into_inner));
        if sessions.is_empty() {
            return;
        }
        let module = Arc::clone(&self.module);
        let epoch = self.epoch;
        let close = move || {
            module.if_current(epoch, || {
                for session in sessions {
                    let _ = session.close();
                }
            });
        };
        // C_CloseSession may block (network HSMs): keep it off the async runtime.
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn_blocking(close);
            }
            Err(_) => close(),
        }
    }
}

/// The attributes of a KMS AES-256 key object, generated or imported: a token object, sensitive
/// and never extractable, usable only to encrypt and decrypt.
fn aes_template(key: &HsmKeyRef) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Modifiable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
        Attribute::Label(key.label().as_bytes().to_vec()),
        Attribute::Id(key.id().to_vec()),
    ]
}

/// Wipes the secret values of a template once the token has its copy (`cryptoki`'s attributes
/// are plain vectors).
fn wipe(template: &mut [Attribute]) {
    use zeroize::Zeroize as _;
    for a in template {
        match a {
            Attribute::Value(v)
            | Attribute::PrivateExponent(v)
            | Attribute::Prime1(v)
            | Attribute::Prime2(v)
            | Attribute::Exponent1(v)
            | Attribute::Exponent2(v)
            | Attribute::Coefficient(v) => v.zeroize(),
            _ => {}
        }
    }
}

impl Call<'_> {
    /// A reference labelled `label` with a fresh `CKA_ID` from the token's generator.
    fn new_key_ref(&self, label: &str) -> Result<HsmKeyRef, HsmError> {
        let id = self
            .session
            .generate_random_vec(KEY_ID_LEN as u32)
            .map_err(|e| classify(&e, "drawing a key ID from the token"))?;
        HsmKeyRef::new(label, id)
    }

    fn generate(&self, label: &str) -> Result<HsmKeyRef, HsmError> {
        let key = self.new_key_ref(label)?;
        let mut template = aes_template(&key);
        template.push(Attribute::ValueLen(32.into()));
        let handle = self
            .session
            .generate_key(&Mechanism::AesKeyGen, &template)
            .map_err(|e| classify(&e, "generating an AES-256 key in the token"))?;
        lock(&self.conn.handles).insert(key.clone(), handle);
        tracing::info!(key = %key, "generated an AES-256 key in the HSM token");
        Ok(key)
    }

    fn import(&self, label: &str, material: &Secret) -> Result<HsmKeyRef, HsmError> {
        let key = self.new_key_ref(label)?;
        let mut template = aes_template(&key);
        template.push(Attribute::Value(material.expose().to_vec()));
        let created = self.session.create_object(&template);
        wipe(&mut template);
        let handle = created.map_err(|e| classify(&e, "importing an AES-256 key into the token"))?;
        lock(&self.conn.handles).insert(key.clone(), handle);
        tracing::info!(key = %key, "imported an AES-256 key into the HSM token");
        Ok(key)
    }

    fn find_or_generate(&self, label: &str) -> Result<HsmKeyRef, HsmError> {
        let found = self
            .session
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .map_err(|e| classify(&e, "looking up a key by label"))?;
        match found.as_slice() {
            [] => self.generate(label),
            [handle] => {
                let attrs = self
                    .session
                    .get_attributes(*handle, &[AttributeType::Id])
                    .map_err(|e| classify(&e, "reading the key's CKA_ID"))?;
                let id = attrs.into_iter().find_map(|a| match a {
                    Attribute::Id(id) if !id.is_empty() => Some(id),
                    _ => None,
                });
                let id = id.ok_or_else(|| {
                    HsmError::config(format!("the key object labelled \"{label}\" in the token has no CKA_ID"))
                })?;
                let key = HsmKeyRef::new(label, id)?;
                lock(&self.conn.handles).insert(key.clone(), *handle);
                Ok(key)
            }
            many => Err(HsmError::config(format!(
                "{} AES key objects are labelled \"{label}\" in the token; expected one",
                many.len()
            ))),
        }
    }

    fn encrypt(&self, key: &HsmKeyRef, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, HsmError> {
        let (iv, sealed) = self.with_key(
            key,
            |handle| {
                let mut iv = [0u8; format::IV_LEN];
                self.session.generate_random_slice(&mut iv)?;
                let mut iv_param = iv;
                let params = GcmParams::new(&mut iv_param, aad, TAG_BITS.into())?;
                let sealed = self.session.encrypt(&Mechanism::AesGcm(params), handle, plaintext)?;
                Ok((iv, sealed))
            },
            |e| classify(e, "encrypting"),
        )?;
        if sealed.len() != plaintext.len() + format::TAG_LEN {
            return Err(HsmError::Unsupported {
                detail: format!(
                    "the token returned {} bytes of AES-GCM output for {} bytes of plaintext",
                    sealed.len(),
                    plaintext.len()
                ),
            });
        }
        Ok(format::frame(&iv, &sealed))
    }

    fn decrypt(
        &self,
        key: &HsmKeyRef,
        iv: [u8; format::IV_LEN],
        sealed: &[u8],
        aad: &[u8],
    ) -> Result<Secret, HsmError> {
        self.with_key(
            key,
            |handle| {
                let mut iv = iv;
                let params = GcmParams::new(&mut iv, aad, TAG_BITS.into())?;
                self.session.decrypt(&Mechanism::AesGcm(params), handle, sealed).map(Secret::new)
            },
            |e| self.decrypt_error(e),
        )
    }

    /// Tokens report a failed tag check in different ways (SoftHSM: `CKR_GENERAL_ERROR`).
    /// Such a `C_Decrypt` failure is called a bad ciphertext only if the token is healthy.
    fn decrypt_error(&self, e: &Pkcs11Error) -> HsmError {
        let maybe_bad_ciphertext = matches!(
            e,
            Pkcs11Error::Pkcs11(
                RvError::EncryptedDataInvalid
                    | RvError::EncryptedDataLenRange
                    | RvError::DataInvalid
                    | RvError::DataLenRange
                    | RvError::GeneralError
                    | RvError::FunctionFailed,
                Function::Decrypt
            )
        );
        if !maybe_bad_ciphertext {
            return classify(e, "decrypting");
        }
        match self.probe() {
            Ok(()) => HsmError::Decrypt {
                reason: "authentication failed (wrong key or additional data, or an altered \
                         ciphertext)",
            },
            Err(unavailable) => unavailable,
        }
    }

    /// Destroys every object of the key: the AES or HMAC key, or both halves of a pair.
    fn destroy(&self, key: &HsmKeyRef) -> Result<(), HsmError> {
        let handles = self.objects_of(key)?;
        if handles.is_empty() {
            return Err(self.not_found(key));
        }
        for handle in handles {
            match self.session.destroy_object(handle) {
                Ok(()) => {}
                // Destroyed meanwhile (another node): gone either way.
                Err(e) if is_stale_handle(&e) => {}
                Err(e) => return Err(classify(&e, "destroying a key object")),
            }
        }
        // Again after: a call that looked the key up meanwhile may have cached a handle.
        lock(&self.conn.handles).remove(key);
        lock(&self.conn.parts).remove(key);
        tracing::info!(key = %key, "destroyed a key in the HSM token");
        Ok(())
    }

    fn list(&self, prefix: &str) -> Result<Vec<HsmKeyRef>, HsmError> {
        // Secret keys (AES, HMAC) and the private halves of pairs: one object per key (a pair's
        // public half carries the same label and ID, and is destroyed with it).
        let mut handles = Vec::new();
        for class in [ObjectClass::SECRET_KEY, ObjectClass::PRIVATE_KEY] {
            handles.extend(
                self.session
                    .find_objects(&[Attribute::Class(class)])
                    .map_err(|e| classify(&e, "listing the key objects"))?,
            );
        }
        let mut keys = Vec::new();
        for handle in handles {
            let attrs = match self.session.get_attributes(handle, &[AttributeType::Label, AttributeType::Id]) {
                Ok(attrs) => attrs,
                // Destroyed between the search and this call (another node): not listed.
                Err(e) if is_stale_handle(&e) => continue,
                Err(e) => return Err(classify(&e, "reading a key object's label and ID")),
            };
            let (mut label, mut id) = (None, None);
            for a in attrs {
                match a {
                    Attribute::Label(l) => label = String::from_utf8(l).ok(),
                    Attribute::Id(i) if !i.is_empty() => id = Some(i),
                    _ => {}
                }
            }
            if let (Some(label), Some(id)) = (label, id)
                && label.starts_with(prefix)
                && let Ok(key) = HsmKeyRef::new(label, id)
            {
                keys.push(key);
            }
        }
        keys.sort_by(|a, b| (a.label(), a.id()).cmp(&(b.label(), b.id())));
        keys.dedup();
        Ok(keys)
    }

    /// Whether the token holds the key: its AES key, or the private half or secret key of a
    /// key of another kind (signing, RSA-OAEP, HMAC).
    fn exists(&self, key: &HsmKeyRef) -> Result<bool, HsmError> {
        match self.find(key)? {
            Some(handle) => {
                lock(&self.conn.handles).insert(key.clone(), handle);
                Ok(true)
            }
            None if self.holds_key_of_other_kind(key)? => Ok(true),
            None => {
                self.probe()?;
                Ok(false)
            }
        }
    }

    fn random(&self, n: usize) -> Result<Secret, HsmError> {
        let n = u32::try_from(n).map_err(|_| HsmError::invalid("too many random bytes"))?;
        self.session
            .generate_random_vec(n)
            .map(Secret::new)
            .map_err(|e| classify(&e, "drawing random bytes from the token"))
    }

    fn info(&self) -> Result<TokenInfo, HsmError> {
        let ctx = &self.module.ctx;
        let _slot_calls = self.module.slot_calls();
        let lib = ctx.get_library_info().map_err(|e| classify(&e, "reading the module information"))?;
        let slot = ctx.get_slot_info(self.conn.slot).map_err(|e| classify(&e, "reading the slot information"))?;
        let token = ctx.get_token_info(self.conn.slot).map_err(|e| classify(&e, "reading the token information"))?;
        Ok(TokenInfo {
            library_description: lib.library_description().to_owned(),
            library_manufacturer: lib.manufacturer_id().to_owned(),
            library_version: lib.library_version().to_string(),
            cryptoki_version: lib.cryptoki_version().to_string(),
            slot_description: slot.slot_description().to_owned(),
            hardware_slot: slot.hardware_slot(),
            token_label: token.label().to_owned(),
            token_manufacturer: token.manufacturer_id().to_owned(),
            model: token.model().to_owned(),
            serial_number: token.serial_number().to_owned(),
            hardware_version: token.hardware_version().to_string(),
            firmware_version: token.firmware_version().to_string(),
        })
    }

    /// The object for `key`, if the token holds exactly one.
    fn find(&self, key: &HsmKeyRef) -> Result<Option<ObjectHandle>, HsmError> {
        let found = self
            .session
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Id(key.id().to_vec()),
                Attribute::Label(key.label().as_bytes().to_vec()),
            ])
            .map_err(|e| classify(&e, "looking up a key"))?;
        match found.as_slice() {
            [] => Ok(None),
            [handle] => Ok(Some(*handle)),
            many => Err(HsmError::config(format!("{} objects in the token match {key}; expected one", many.len()))),
        }
    }

    /// [`HsmError::KeyNotFound`] if the token answers normally, else why it does not: a
    /// removed token can look empty (SoftHSM answers "no such object"), and reporting that as
    /// a missing key would be wrong.
    fn not_found(&self, key: &HsmKeyRef) -> HsmError {
        match self.probe() {
            Ok(()) => HsmError::KeyNotFound { key: key.to_string() },
            Err(e) => e,
        }
    }

    /// Checks that the slot still holds our token and that it answers.
    fn probe(&self) -> Result<(), HsmError> {
        let answer = {
            let _slot_calls = self.module.slot_calls();
            self.module.ctx.get_token_info(self.conn.slot)
        };
        match answer {
            Ok(info) if info.label() == self.token_label => Ok(()),
            Ok(info) => Err(HsmError::unavailable(format!(
                "the slot now holds the token \"{}\" instead of \"{}\"",
                info.label(),
                self.token_label
            ))),
            Err(e) => Err(HsmError::unavailable(format!("the token does not answer: {}", describe(&e)))),
        }
    }

    /// Runs `f` with the key's handle (cached for the connection). A stale handle (the object
    /// was destroyed, or the cache is out of date) is looked up once more before the key is
    /// called missing; other failures go through `map_err`.
    fn with_key<T>(
        &self,
        key: &HsmKeyRef,
        f: impl Fn(ObjectHandle) -> Result<T, Pkcs11Error>,
        map_err: impl Fn(&Pkcs11Error) -> HsmError,
    ) -> Result<T, HsmError> {
        let cached = lock(&self.conn.handles).get(key).copied();
        let handle = match cached {
            Some(handle) => handle,
            None => self.lookup(key)?,
        };
        let first = match f(handle) {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if is_stale_handle(&first) {
            lock(&self.conn.handles).remove(key);
            if cached.is_some() {
                let handle = self.lookup(key)?;
                return f(handle).map_err(|e| {
                    if is_stale_handle(&e) {
                        lock(&self.conn.handles).remove(key);
                        self.not_found(key)
                    } else {
                        map_err(&e)
                    }
                });
            }
            return Err(self.not_found(key));
        }
        Err(map_err(&first))
    }

    fn lookup(&self, key: &HsmKeyRef) -> Result<ObjectHandle, HsmError> {
        let handle = self.find(key)?.ok_or_else(|| self.not_found(key))?;
        lock(&self.conn.handles).insert(key.clone(), handle);
        Ok(handle)
    }
}

/// GCM tag length in bits, as PKCS#11 wants it.
const TAG_BITS: u64 = (format::TAG_LEN * 8) as u64;
