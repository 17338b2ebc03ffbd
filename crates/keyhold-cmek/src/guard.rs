//! The key guard ([C5]–[C7]): one per protected resource. It holds the resource's unwrapped
//! KEKs in memory, checks on a period (and at once when told the key may have changed) that the
//! customer's key still unwraps them, and refuses access the moment it does not.
//!
//! States:
//! * `Usable`: the last check unwrapped every KEK.
//! * `Suspended(KmsKeyIssue)`: the KMS answered that the key cannot be used (disabled or
//!   destroyed version, permission revoked, key gone). KEKs are dropped (wiped) at once. Checks
//!   go on, so the resource resumes by itself when the key is usable again ([C6]).
//! * `Grace { until }`: the KMS did not answer, but the key was usable when it last did: the
//!   cached KEKs keep serving until `last usable check + grace` ([C7]), then
//!   `Suspended(KmsUnreachable)` until the KMS answers and says the key is usable. A key that
//!   was already unusable when the KMS became unreachable gets no grace.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use keyhold_api::CryptoKeyName;
use keyhold_api::wire::Timestamp;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::client::{AccessReason, KmsClient};
use crate::envelope::{Kek, WrappedKek, kek_aad};
use crate::error::{Failure, KmsClientError};

/// How often and how patiently a guard checks.
#[derive(Debug, Clone, Copy)]
pub struct GuardConfig {
    /// Period of the key check while usable (default 5 minutes; at least 1 second).
    pub check_period: Duration,
    /// How long cached KEKs keep serving while the KMS is unreachable (default 1 hour).
    pub grace: Duration,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self { check_period: Duration::from_secs(300), grace: Duration::from_secs(3600) }
    }
}

/// Where a guard reads the wall-clock time it shows (`lastCheck`, the end of a grace period) and
/// compares the end of a grace period with. Durations (how long since the key was last usable)
/// are measured on `tokio::time::Instant`, which tests control with `tokio::time::pause`; a
/// test clock reads the same paused time, so both move together (`testing::TokioClock`, with
/// the `testing` feature).
pub trait GuardClock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now(&self) -> Timestamp;
}

/// The system's clock: what every guard outside tests reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl GuardClock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// Shortest retry while the KMS is unreachable (so service comes back soon after it does).
const UNREACHABLE_RETRY: Duration = Duration::from_secs(2);

/// Wraps and unwraps a resource's KEKs: with the customer's key through the KMS (CMEK), or with
/// the service's own key (service-managed encryption).
#[async_trait]
pub trait KekWrapper: Send + Sync + std::fmt::Debug {
    /// The customer's key, or `None` for service-managed encryption.
    fn key_name(&self) -> Option<&str>;
    /// Wraps `kek` for `resource` (with the key's primary version), for `reason`.
    async fn wrap(&self, resource: &str, kek: &Kek, reason: AccessReason) -> Result<WrappedKek, KmsClientError>;
    /// Unwraps a KEK of `resource`, for `reason`.
    async fn unwrap(&self, resource: &str, wrapped: &WrappedKek, reason: AccessReason) -> Result<Kek, KmsClientError>;
}

/// [`KekWrapper`] with a customer-managed key through a [`KmsClient`].
#[derive(Debug, Clone)]
pub struct CmekWrapper {
    client: Arc<dyn KmsClient>,
    key: String,
    /// `key` parsed; `None` if it is not a crypto key name (every use then fails as the KMS
    /// would refuse it: `INVALID_ARGUMENT`, the key unusable).
    name: Option<CryptoKeyName>,
}

impl CmekWrapper {
    /// Wraps with `key` (`projects/.../cryptoKeys/K`) through `client`.
    pub fn new(client: Arc<dyn KmsClient>, key: impl Into<String>) -> Self {
        let key = key.into();
        Self { client, name: key.parse().ok(), key }
    }

    fn name(&self) -> Result<&CryptoKeyName, KmsClientError> {
        self.name.as_ref().ok_or_else(|| {
            KmsClientError::new(
                keyhold_api::Code::InvalidArgument,
                format!("\"{}\" is not a crypto key name", self.key),
            )
        })
    }
}

#[async_trait]
impl KekWrapper for CmekWrapper {
    fn key_name(&self) -> Option<&str> {
        Some(&self.key)
    }

    async fn wrap(&self, resource: &str, kek: &Kek, reason: AccessReason) -> Result<WrappedKek, KmsClientError> {
        let e = self.client.encrypt(self.name()?, kek.expose(), &kek_aad(resource), reason).await?;
        Ok(WrappedKek { ciphertext: e.ciphertext, key_version: Some(e.key_version.to_string()) })
    }

    async fn unwrap(&self, resource: &str, wrapped: &WrappedKek, reason: AccessReason) -> Result<Kek, KmsClientError> {
        let secret = self.client.decrypt(self.name()?, &wrapped.ciphertext, &kek_aad(resource), reason).await?;
        Kek::from_secret(&secret).map_err(|_| {
            KmsClientError::new(keyhold_api::Code::DataLoss, "the KMS unwrapped a KEK of the wrong length")
        })
    }
}

/// Why a resource is suspended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuspensionReason {
    /// The KMS said the key cannot be used (Cloud SQL's `KMS_KEY_ISSUE`).
    KmsKeyIssue,
    /// The KMS has not answered for longer than the grace period.
    KmsUnreachable,
}

impl SuspensionReason {
    /// The enum spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SuspensionReason::KmsKeyIssue => "KMS_KEY_ISSUE",
            SuspensionReason::KmsUnreachable => "KMS_UNREACHABLE",
        }
    }
}

/// Whether data may be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Not checked yet: refused until the first check.
    Unknown,
    /// The key works.
    Usable,
    /// The KMS is unreachable; cached KEKs serve until `until`.
    Grace {
        /// End of the grace period.
        until: Timestamp,
    },
    /// Refused.
    Suspended(SuspensionReason),
}

/// What a guard knows, for display (`state`, `keyStatus`, `encryptionStatus`).
#[derive(Debug, Clone)]
pub struct GuardStatus {
    /// Whether data may be served.
    pub access: Access,
    /// The key state as last observed: `ENABLED`, `DISABLED`, `DESTROYED`, `PERMISSION_DENIED`...
    pub observed_key_state: Option<String>,
    /// What the KMS said when something was wrong.
    pub message: String,
    /// When the key was last checked.
    pub last_check: Option<Timestamp>,
    /// When a check last found the key usable.
    pub last_usable: Option<Timestamp>,
}

impl GuardStatus {
    /// Whether data may be served now.
    pub fn serving(&self) -> bool {
        self.serving_at(Timestamp::now())
    }

    /// Whether data may be served at `now`.
    pub fn serving_at(&self, now: Timestamp) -> bool {
        match self.access {
            Access::Usable => true,
            Access::Grace { until } => now < until,
            _ => false,
        }
    }
}

/// A grace period that has run out (at `now`) counts as suspended.
fn expire_grace(mut s: GuardStatus, now: Timestamp) -> GuardStatus {
    if let Access::Grace { until } = s.access
        && now >= until
    {
        s.access = Access::Suspended(SuspensionReason::KmsUnreachable);
    }
    s
}

/// Access refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GuardError {
    /// The key cannot be used now; the status says why.
    #[error("the KMS key {key} is not accessible: {}", .status.message)]
    Inaccessible {
        /// The customer's key.
        key: String,
        /// What the guard knows.
        status: Box<GuardStatus>,
    },
    /// A KEK this guard has not been told about (created on another node): load it with
    /// [`KeyGuard::add_wrapped`] and retry.
    #[error("unknown KEK {0}")]
    UnknownKek(u64),
    /// Wrapping a new KEK failed.
    #[error("the KMS refused to wrap a key: {0}")]
    Kms(#[from] KmsClientError),
    /// The system's random number generator failed.
    #[error("random number generator failed")]
    Rng,
}

struct Inner {
    status: GuardStatus,
    wrapped: BTreeMap<u64, WrappedKek>,
    keks: HashMap<u64, Arc<Kek>>,
    last_usable_at: Option<Instant>,
}

/// The guard of one protected resource.
pub struct KeyGuard {
    resource: String,
    wrapper: Arc<dyn KekWrapper>,
    config: GuardConfig,
    inner: RwLock<Inner>,
    check_lock: tokio::sync::Mutex<()>,
    wake: Arc<Notify>,
    clock: Arc<dyn GuardClock>,
}

impl std::fmt::Debug for KeyGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyGuard").field("resource", &self.resource).field("key", &self.wrapper.key_name()).finish()
    }
}

impl KeyGuard {
    /// A guard for `resource` whose KEKs are `wrapped` (by ID). Nothing is served until the
    /// first [`KeyGuard::check`]; [`KeyGuard::spawn_monitor`] runs checks from then on.
    pub fn new(
        resource: impl Into<String>,
        wrapper: Arc<dyn KekWrapper>,
        config: GuardConfig,
        wrapped: impl IntoIterator<Item = (u64, WrappedKek)>,
    ) -> Arc<Self> {
        Self::with_clock(resource, wrapper, config, wrapped, Arc::new(SystemClock))
    }

    /// [`KeyGuard::new`] reading the wall-clock time from `clock` (tests: a clock that follows
    /// tokio's paused time, so a grace period can run out without waiting an hour).
    pub fn with_clock(
        resource: impl Into<String>,
        wrapper: Arc<dyn KekWrapper>,
        config: GuardConfig,
        wrapped: impl IntoIterator<Item = (u64, WrappedKek)>,
        clock: Arc<dyn GuardClock>,
    ) -> Arc<Self> {
        Arc::new(Self {
            resource: resource.into(),
            wrapper,
            config: GuardConfig { check_period: config.check_period.max(Duration::from_secs(1)), ..config },
            inner: RwLock::new(Inner {
                status: GuardStatus {
                    access: Access::Unknown,
                    observed_key_state: None,
                    message: "the key has not been checked yet".into(),
                    last_check: None,
                    last_usable: None,
                },
                wrapped: wrapped.into_iter().collect(),
                keks: HashMap::new(),
                last_usable_at: None,
            }),
            check_lock: tokio::sync::Mutex::new(()),
            wake: Arc::new(Notify::new()),
            clock,
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The protected resource.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The customer's key (`None`: service-managed encryption).
    pub fn key_name(&self) -> Option<&str> {
        self.wrapper.key_name()
    }

    /// What the guard knows now. A grace period that has run out shows as suspended.
    pub fn status(&self) -> GuardStatus {
        expire_grace(self.read().status.clone(), self.clock.now())
    }

    fn inaccessible(&self, status: GuardStatus) -> GuardError {
        GuardError::Inaccessible {
            key: self.wrapper.key_name().unwrap_or("(service-managed)").to_string(),
            status: Box::new(status),
        }
    }

    /// Fails unless data may be served now.
    pub fn require_access(&self) -> Result<(), GuardError> {
        let status = self.status();
        if status.serving_at(self.clock.now()) { Ok(()) } else { Err(self.inaccessible(status)) }
    }

    /// The unwrapped KEK `id`, if data may be served now.
    pub fn kek(&self, id: u64) -> Result<Arc<Kek>, GuardError> {
        let now = self.clock.now();
        let inner = self.read();
        if !inner.status.serving_at(now) {
            let status = inner.status.clone();
            drop(inner);
            return Err(self.inaccessible(expire_grace(status, now)));
        }
        match inner.keks.get(&id) {
            Some(k) => Ok(k.clone()),
            None => Err(GuardError::UnknownKek(id)),
        }
    }

    /// The key version that wrapped KEK `id`, if it is wrapped by a customer key.
    pub fn key_version(&self, id: u64) -> Option<String> {
        self.read().wrapped.get(&id).and_then(|w| w.key_version.clone())
    }

    /// The wrapped KEKs, by ID.
    pub fn wrapped(&self) -> BTreeMap<u64, WrappedKek> {
        self.read().wrapped.clone()
    }

    /// Every key version whose wrapping protects some KEK (so some data) of the resource.
    pub fn key_versions(&self) -> Vec<String> {
        let mut v: Vec<String> = self.read().wrapped.values().filter_map(|w| w.key_version.clone()).collect();
        v.sort();
        v.dedup();
        v
    }

    /// Tells the guard about a KEK it has not seen (made on another node), then unwraps it.
    pub async fn add_wrapped(&self, id: u64, wrapped: WrappedKek) -> Result<Arc<Kek>, GuardError> {
        self.require_access()?;
        match self.wrapper.unwrap(&self.resource, &wrapped, AccessReason::CustomerInitiatedAccess).await {
            Ok(kek) => {
                let kek = Arc::new(kek);
                let mut inner = self.write();
                inner.wrapped.insert(id, wrapped);
                inner.keks.insert(id, kek.clone());
                Ok(kek)
            }
            Err(e) => {
                self.record_failure(&e);
                Err(self.inaccessible(self.status()))
            }
        }
    }

    /// A fresh KEK, wrapped with the key's primary version. Not yet part of the guard: store
    /// it, then [`KeyGuard::insert`] it.
    pub async fn new_kek(&self) -> Result<(Kek, WrappedKek), GuardError> {
        let kek = Kek::generate().map_err(|_| GuardError::Rng)?;
        let wrapped = self.wrapper.wrap(&self.resource, &kek, AccessReason::CustomerInitiatedAccess).await?;
        Ok((kek, wrapped))
    }

    /// Adds a KEK made by [`KeyGuard::new_kek`] (and stored). A guard that has not been checked
    /// yet counts as checked: the KMS just wrapped with the key.
    pub fn insert(&self, id: u64, kek: Kek, wrapped: WrappedKek) {
        let mut inner = self.write();
        inner.wrapped.insert(id, wrapped);
        inner.keks.insert(id, Arc::new(kek));
        if inner.status.access == Access::Unknown {
            let now = self.clock.now();
            inner.status = GuardStatus {
                access: Access::Usable,
                observed_key_state: Some("ENABLED".into()),
                message: String::new(),
                last_check: Some(now),
                last_usable: Some(now),
            };
            inner.last_usable_at = Some(Instant::now());
        }
    }

    /// Forgets a KEK that no longer protects any data.
    pub fn remove(&self, id: u64) {
        let mut inner = self.write();
        inner.wrapped.remove(&id);
        inner.keks.remove(&id);
    }

    /// Wraps every KEK again with the key's current primary version ([C4] `:rewrap`); returns
    /// the new wrappings to store. Costs one KMS call per KEK, whatever the amount of data.
    pub async fn rewrap(&self) -> Result<Vec<(u64, WrappedKek)>, GuardError> {
        self.require_access()?;
        let keks: Vec<(u64, Arc<Kek>)> = self.read().keks.iter().map(|(id, k)| (*id, k.clone())).collect();
        let mut out = Vec::with_capacity(keks.len());
        for (id, kek) in keks {
            let wrapped = self
                .wrapper
                .wrap(&self.resource, &kek, AccessReason::CustomerInitiatedAccess)
                .await
                .inspect_err(|e| self.record_failure(e))?;
            out.push((id, wrapped));
        }
        let mut inner = self.write();
        for (id, w) in &out {
            inner.wrapped.insert(*id, w.clone());
        }
        Ok(out)
    }

    fn record_failure(&self, e: &KmsClientError) {
        let mut inner = self.write();
        let now = self.clock.now();
        inner.status.last_check = Some(now);
        inner.status.message = e.message.clone();
        match e.failure() {
            Failure::KeyUnusable => {
                inner.status.access = Access::Suspended(SuspensionReason::KmsKeyIssue);
                inner.status.observed_key_state = e.observed_key_state();
                inner.keks.clear();
            }
            Failure::Unreachable | Failure::Other => {
                let was_usable = matches!(inner.status.access, Access::Usable | Access::Grace { .. });
                let until = inner.last_usable_at.map(|at| at + self.config.grace);
                match (was_usable, until) {
                    (true, Some(until)) if Instant::now() < until => {
                        let left = until - Instant::now();
                        let until_ts = now.add(keyhold_api::wire::ProtoDuration::from_nanos(left.as_nanos() as i128));
                        inner.status.access = Access::Grace { until: until_ts };
                    }
                    _ => {
                        if inner.status.access != Access::Suspended(SuspensionReason::KmsKeyIssue) {
                            inner.status.access = Access::Suspended(SuspensionReason::KmsUnreachable);
                        }
                        inner.keks.clear();
                    }
                }
            }
        }
    }

    /// Checks the key now: unwraps every KEK through the KMS. Returns the new status.
    pub async fn check(&self) -> GuardStatus {
        let _one_at_a_time = self.check_lock.lock().await;
        let wrapped = self.wrapped();
        let mut keks = HashMap::with_capacity(wrapped.len());
        for (id, w) in &wrapped {
            // The periodic check is the service's own doing, not a customer request.
            match self.wrapper.unwrap(&self.resource, w, AccessReason::GoogleInitiatedSystemOperation).await {
                Ok(k) => {
                    keks.insert(*id, Arc::new(k));
                }
                Err(e) => {
                    let before = self.read().status.access;
                    self.record_failure(&e);
                    let after = self.status();
                    if before != after.access {
                        tracing::warn!(resource = %self.resource, key = ?self.wrapper.key_name(), access = ?after.access, reason = %e.message, "key guard: access changed");
                    }
                    return after;
                }
            }
        }
        let now = self.clock.now();
        let mut inner = self.write();
        if inner.status.access != Access::Usable {
            tracing::info!(resource = %self.resource, key = ?self.wrapper.key_name(), "key guard: key usable, serving");
        }
        // KEKs added while we were checking stay.
        for (id, k) in keks {
            inner.keks.insert(id, k);
        }
        inner.status = GuardStatus {
            access: Access::Usable,
            observed_key_state: Some("ENABLED".into()),
            message: String::new(),
            last_check: Some(now),
            last_usable: Some(now),
        };
        inner.last_usable_at = Some(Instant::now());
        inner.status.clone()
    }

    /// Asks the monitor to check now (the key or its permissions may have changed).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    fn next_delay(&self) -> Duration {
        match self.status().access {
            Access::Usable | Access::Suspended(SuspensionReason::KmsKeyIssue) => self.config.check_period,
            _ => self.config.check_period.min(UNREACHABLE_RETRY),
        }
    }

    /// Runs checks on the period, and whenever [`KeyGuard::wake`] is called, until the guard
    /// is dropped.
    pub fn spawn_monitor(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Self> = Arc::downgrade(self);
        let wake = self.wake.clone();
        tokio::spawn(async move {
            loop {
                let delay = match weak.upgrade() {
                    Some(g) => g.next_delay(),
                    None => return,
                };
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = wake.notified() => {}
                }
                let Some(guard) = weak.upgrade() else { return };
                guard.check().await;
            }
        })
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        // Lets the monitor notice at once that it has nothing left to guard.
        self.wake.notify_one();
    }
}

/// The guards of one service, by resource, so that change notices reach the right ones.
///
/// A resource name can be deleted and created again (on another node, even), and the new
/// resource has other KEKs, maybe under another key. So each guard is registered with the
/// *incarnation* of its resource (for example its creation time), and a guard of an earlier
/// incarnation is never handed out for a later one.
#[derive(Debug, Default)]
pub struct GuardRegistry {
    guards: Mutex<HashMap<String, (String, Arc<KeyGuard>)>>,
}

impl GuardRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Arc<KeyGuard>)>> {
        self.guards.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The guard of `resource` in its `incarnation`, if loaded.
    pub fn get(&self, resource: &str, incarnation: &str) -> Option<Arc<KeyGuard>> {
        self.lock().get(resource).filter(|(i, _)| i == incarnation).map(|(_, g)| g.clone())
    }

    /// Registers a guard for `incarnation` of its resource and returns the one in force: if
    /// another task registered one for the same incarnation first, that one. A guard of another
    /// incarnation is replaced.
    pub fn insert(&self, guard: Arc<KeyGuard>, incarnation: &str) -> Arc<KeyGuard> {
        let mut guards = self.lock();
        match guards.get(guard.resource()) {
            Some((i, existing)) if i == incarnation => existing.clone(),
            _ => {
                guards.insert(guard.resource().to_string(), (incarnation.to_string(), guard.clone()));
                guard
            }
        }
    }

    /// Forgets `resource`'s guard (its KEKs are wiped when the last user lets go).
    pub fn remove(&self, resource: &str) {
        self.lock().remove(resource);
    }

    /// Wakes the guards whose key `concerned` says may have changed.
    pub fn key_may_have_changed(&self, concerned: impl Fn(&str) -> bool) {
        for (_, g) in self.lock().values() {
            if g.key_name().is_some_and(&concerned) {
                g.wake();
            }
        }
    }

    /// Wakes every guard.
    pub fn wake_all(&self) {
        for (_, g) in self.lock().values() {
            g.wake();
        }
    }
}
