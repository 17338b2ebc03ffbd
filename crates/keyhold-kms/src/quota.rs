//! Per-project request quotas, as Cloud KMS has them (hardening issue 15).
//!
//! Cloud KMS counts each project's requests per minute in three metrics: cryptographic
//! requests (`cloudkms.googleapis.com/crypto_requests`), read requests and write requests, and
//! answers `429 RESOURCE_EXHAUSTED` with a `google.rpc.ErrorInfo` (`RATE_LIMIT_EXCEEDED`) when
//! one runs out. Keyhold keeps the same three metrics, per project and per service (the KMS,
//! the store, IAM and org-policy calls each have their own), as token buckets: a bucket holds
//! a minute's worth of requests and refills continuously at the per-minute rate, so a burst
//! of one minute's quota is allowed and a steady flood gets exactly the rate.
//!
//! Quotas are off unless configured (as Vault's rate-limit quotas are): a single-tenant server
//! and the benchmark suite never meet them.
//!
//! Fairness and memory: a request is charged to the project of the resource it names, and only
//! after its caller was authenticated and granted the permission, so nobody can spend another
//! project's quota and only projects that exist are counted. A flood from one project empties
//! that project's bucket only. The buckets live in a bounded, sharded map: a bucket that has
//! refilled to full carries no information and is dropped when room is needed, and projects
//! beyond the bound share one overflow bucket per metric and service, so a client naming
//! millions of projects neither grows memory nor escapes its quota.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use keyhold_iam::Principal;

use keyhold_audit::AuditKind;
use keyhold_iam::Caller;

/// The service name of Cloud KMS's own methods, the only service with cryptographic requests.
pub(crate) const KMS_SERVICE: &str = "cloudkms.googleapis.com";

/// The methods Cloud KMS counts as cryptographic requests (those Keyhold serves and those it
/// may serve later; the audit log's method names).
const CRYPTO_METHODS: &[&str] = &[
    "Encrypt",
    "Decrypt",
    "AsymmetricSign",
    "AsymmetricDecrypt",
    "MacSign",
    "MacVerify",
    "RawEncrypt",
    "RawDecrypt",
    "GenerateRandomBytes",
    "Decapsulate",
];

/// Shards of the bucket map: a flood of one project locks one shard, not every project's.
const SHARDS: usize = 16;

/// One of Cloud KMS's per-project quota metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuotaMetric {
    /// `crypto_requests`: the cryptographic methods of Cloud KMS (encrypt, decrypt, sign, ...).
    Crypto,
    /// `read_requests`: every other method that only reads (`data_access` in the audit log).
    Read,
    /// `write_requests`: every method that changes something (`activity` in the audit log).
    Write,
}

impl QuotaMetric {
    /// The metric's display name, as Google's messages spell it.
    pub fn display_name(self) -> &'static str {
        match self {
            QuotaMetric::Crypto => "Cryptographic requests",
            QuotaMetric::Read => "Read requests",
            QuotaMetric::Write => "Write requests",
        }
    }

    /// The metric's ID (`SERVICE/ID` in `ErrorInfo.metadata.quota_metric`).
    pub fn id(self) -> &'static str {
        match self {
            QuotaMetric::Crypto => "crypto_requests",
            QuotaMetric::Read => "read_requests",
            QuotaMetric::Write => "write_requests",
        }
    }

    /// The limit's name in `ErrorInfo.metadata.quota_limit`.
    pub fn limit_name(self) -> &'static str {
        match self {
            QuotaMetric::Crypto => "CryptoRequestsPerMinutePerProject",
            QuotaMetric::Read => "ReadRequestsPerMinutePerProject",
            QuotaMetric::Write => "WriteRequestsPerMinutePerProject",
        }
    }

    /// Parses `crypto`, `read` or `write` (the spelling of `--quota-override`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "crypto" => Some(QuotaMetric::Crypto),
            "read" => Some(QuotaMetric::Read),
            "write" => Some(QuotaMetric::Write),
            _ => None,
        }
    }

    /// The metric a call is counted in: the cryptographic methods of Cloud KMS, else by what
    /// the audit log calls it (a data-access entry is a read, an activity entry a write).
    pub fn of_call(service: &str, method: &str, kind: AuditKind) -> Self {
        if service == KMS_SERVICE && CRYPTO_METHODS.contains(&method) {
            return QuotaMetric::Crypto;
        }
        match kind {
            AuditKind::DataAccess => QuotaMetric::Read,
            AuditKind::Activity => QuotaMetric::Write,
        }
    }

    fn index(self) -> usize {
        match self {
            QuotaMetric::Crypto => 0,
            QuotaMetric::Read => 1,
            QuotaMetric::Write => 2,
        }
    }
}

/// A rate limit: unlimited, or so many requests per minute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Limit {
    /// Not counted (the default).
    #[default]
    Unlimited,
    /// At most this many requests per minute (a minute's worth may come at once).
    PerMinute(NonZeroU32),
}

impl Limit {
    /// Parses `unlimited` or a positive number of requests per minute.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s == "unlimited" {
            return Ok(Limit::Unlimited);
        }
        s.parse::<NonZeroU32>()
            .map(Limit::PerMinute)
            .map_err(|_| format!("\"{s}\" is not a positive number of requests per minute or \"unlimited\""))
    }
}

/// Quota settings: a limit per metric for every project, and overrides for some projects.
#[derive(Clone, Debug)]
pub struct QuotaConfig {
    /// The limit of each metric, for every project without an override (`[crypto, read,
    /// write]`, see [`QuotaConfig::set`]).
    limits: [Limit; 3],
    /// Per-project overrides of single metrics.
    overrides: HashMap<String, [Option<Limit>; 3]>,
    /// At most this many buckets are kept (each about 100 bytes); projects beyond share one
    /// overflow bucket per metric and service.
    pub max_tracked: usize,
    /// At most this many Cloud KMS requests of one project are handled at once (after their
    /// authorization); the others wait their turn, first come first served (`None`: no cap).
    /// A flood then competes with other projects with this many requests, not with all its
    /// connections.
    pub max_in_flight: Option<NonZeroUsize>,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self { limits: [Limit::Unlimited; 3], overrides: HashMap::new(), max_tracked: 100_000, max_in_flight: None }
    }
}

impl QuotaConfig {
    /// Sets the limit of `metric` for every project (without an override).
    pub fn set(&mut self, metric: QuotaMetric, limit: Limit) {
        self.limits[metric.index()] = limit;
    }

    /// Sets the limit of `metric` for `project` only.
    pub fn set_for_project(&mut self, project: &str, metric: QuotaMetric, limit: Limit) {
        self.overrides.entry(project.to_string()).or_default()[metric.index()] = Some(limit);
    }

    /// Parses one `--quota-override` value, `PROJECT:METRIC=LIMIT` (`big-tenant:crypto=600000`,
    /// `batch:write=unlimited`), and applies it.
    pub fn apply_override(&mut self, spec: &str) -> Result<(), String> {
        let bad = || {
            format!(
                "\"{spec}\" is not PROJECT:METRIC=LIMIT, METRIC being crypto, read or write (e.g. my-project:crypto=6000)"
            )
        };
        let (project, rest) = spec.split_once(':').ok_or_else(bad)?;
        let (metric, limit) = rest.split_once('=').ok_or_else(bad)?;
        let metric = QuotaMetric::parse(metric.trim()).ok_or_else(bad)?;
        keyhold_api::name::check_id("project", project.trim()).map_err(|e| format!("\"{spec}\": {e}"))?;
        self.set_for_project(project.trim(), metric, Limit::parse(limit.trim())?);
        Ok(())
    }

    /// Whether any limit is set (if not, nothing is counted and no bucket is kept).
    pub fn is_on(&self) -> bool {
        self.max_in_flight.is_some()
            || self.limits.iter().chain(self.overrides.values().flatten().flatten()).any(|l| *l != Limit::Unlimited)
    }

    /// The limit of `metric` for `project`.
    pub fn limit(&self, project: &str, metric: QuotaMetric) -> Limit {
        self.overrides.get(project).and_then(|o| o[metric.index()]).unwrap_or(self.limits[metric.index()])
    }
}

/// A refused request: which quota ran out, and when a token is back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exhausted {
    /// The metric.
    pub metric: QuotaMetric,
    /// Its limit per minute.
    pub per_minute: u32,
    /// How long until the next request would be allowed.
    pub retry_after: Duration,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    /// When `tokens` was last brought up to date, in nanoseconds of the KMS's clock.
    at: i128,
}

impl Bucket {
    fn full(per_minute: u32, now: i128) -> Self {
        Self { tokens: f64::from(per_minute), at: now }
    }

    /// Brings the bucket up to `now` (a clock that went back adds nothing).
    fn refill(&mut self, per_minute: u32, now: i128) {
        let elapsed = (now - self.at).max(0) as f64;
        let capacity = f64::from(per_minute);
        self.tokens = (self.tokens + elapsed * capacity / 60e9).min(capacity);
        self.at = self.at.max(now);
    }

    fn take(&mut self, per_minute: u32, now: i128) -> Result<(), Duration> {
        self.refill(per_minute, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let wait_nanos = (1.0 - self.tokens) * 60e9 / f64::from(per_minute);
        Err(Duration::from_nanos(wait_nanos.ceil() as u64))
    }

    /// Whether the bucket is full by `now`: it then says nothing a fresh one would not.
    fn is_full(&self, per_minute: u32, now: i128) -> bool {
        let mut b = *self;
        b.refill(per_minute, now);
        b.tokens >= f64::from(per_minute)
    }
}

type Key = (String, &'static str, QuotaMetric);

/// The in-flight semaphores of (project, service).
type SlotMap = HashMap<(String, &'static str), Arc<Semaphore>>;

#[derive(Debug, Default)]
struct Shard {
    buckets: HashMap<Key, Bucket>,
    /// When full buckets were last swept out (a sweep reads the whole shard, so a flood of new
    /// names triggers one per second at most).
    swept_at: Option<i128>,
}

/// The buckets of every counted (project, service, metric).
#[derive(Debug)]
pub struct Quotas {
    config: QuotaConfig,
    on: bool,
    hasher: RandomState,
    shards: Vec<Mutex<Shard>>,
    /// Shared by the projects that find their shard full.
    overflow: Mutex<HashMap<(&'static str, QuotaMetric), Bucket>>,
    /// The in-flight slots of each (project, service), when capped.
    slots: Vec<Mutex<SlotMap>>,
    /// Shared by the projects that find their slot shard full.
    overflow_slots: Mutex<HashMap<&'static str, Arc<Semaphore>>>,
}

impl Quotas {
    /// Buckets for `config`.
    pub fn new(config: QuotaConfig) -> Self {
        Self {
            on: config.is_on(),
            config,
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            overflow: Mutex::new(HashMap::new()),
            slots: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            overflow_slots: Mutex::new(HashMap::new()),
        }
    }

    /// The semaphore of `project`'s requests to `service` (`None` when in-flight requests are
    /// not capped). Bounded like the buckets: idle semaphores (no request in flight) are
    /// dropped when room is needed; beyond the bound, projects share one per service.
    fn slots(&self, project: &str, service: &'static str) -> Option<Arc<Semaphore>> {
        let cap = self.config.max_in_flight?.get();
        let per_shard = self.config.max_tracked.div_ceil(SHARDS).max(1);
        let key = (project.to_string(), service);
        let shard = &self.slots[(self.hasher.hash_one(&key) as usize) % SHARDS];
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = map.get(&key) {
            return Some(s.clone());
        }
        if map.len() >= per_shard {
            map.retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() < cap);
        }
        if map.len() < per_shard {
            return Some(map.entry(key).or_insert_with(|| Arc::new(Semaphore::new(cap))).clone());
        }
        drop(map);
        let mut overflow = self.overflow_slots.lock().unwrap_or_else(|e| e.into_inner());
        Some(overflow.entry(service).or_insert_with(|| Arc::new(Semaphore::new(cap))).clone())
    }

    /// Waits for one of `project`'s in-flight slots at `service` (at once when they are not
    /// capped); the request holds it until its audit entry is written.
    pub async fn enter(&self, project: &str, service: &'static str) -> Option<OwnedSemaphorePermit> {
        // The semaphore is never closed, so acquiring fails only if it were.
        self.slots(project, service)?.acquire_owned().await.ok()
    }

    /// [`Quotas::enter`] without waiting: `Err(())` if every slot is taken.
    #[allow(clippy::result_unit_err)]
    pub fn try_enter(&self, project: &str, service: &'static str) -> Result<Option<OwnedSemaphorePermit>, ()> {
        match self.slots(project, service) {
            None => Ok(None),
            Some(s) => s.try_acquire_owned().map(Some).map_err(|_| ()),
        }
    }

    /// How many per-project in-flight semaphores are kept now (at most `max_tracked`).
    pub fn tracked_slots(&self) -> usize {
        self.slots.iter().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len()).sum()
    }

    /// The settings.
    pub fn config(&self) -> &QuotaConfig {
        &self.config
    }

    /// Whether any quota is configured.
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// How many per-project buckets are kept now (at most `max_tracked`).
    pub fn tracked(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).buckets.len()).sum()
    }

    /// Counts one request of `project` to `service` in `metric` at `now` (nanoseconds), or
    /// says which quota it exceeds.
    pub fn take(&self, project: &str, service: &'static str, metric: QuotaMetric, now: i128) -> Result<(), Exhausted> {
        if !self.on {
            return Ok(());
        }
        let Limit::PerMinute(per_minute) = self.config.limit(project, metric) else {
            return Ok(());
        };
        let per_minute = per_minute.get();
        let exhausted = |retry_after| Exhausted { metric, per_minute, retry_after };
        let per_shard = self.config.max_tracked.div_ceil(SHARDS).max(1);
        let key: Key = (project.to_string(), service, metric);
        let shard = &self.shards[(self.hasher.hash_one(&key) as usize) % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = shard.buckets.get_mut(&key) {
            return b.take(per_minute, now).map_err(exhausted);
        }
        if shard.buckets.len() >= per_shard && shard.swept_at.is_none_or(|t| now - t >= 1_000_000_000) {
            // Full buckets are indistinguishable from fresh ones: dropping them loses nothing.
            shard.buckets.retain(|(p, _, m), b| !b.is_full(self.limit_per_minute(p, *m), now));
            shard.swept_at = Some(now);
        }
        if shard.buckets.len() < per_shard {
            let mut b = Bucket::full(per_minute, now);
            let r = b.take(per_minute, now);
            shard.buckets.insert(key, b);
            return r.map_err(exhausted);
        }
        drop(shard);
        // Every bucket of the shard was used within the last minute: this project shares the
        // overflow bucket rather than getting a fresh (unlimited) one each time.
        let mut overflow = self.overflow.lock().unwrap_or_else(|e| e.into_inner());
        let limit = match self.config.limits[metric.index()] {
            Limit::PerMinute(n) => n.get(),
            Limit::Unlimited => per_minute,
        };
        overflow
            .entry((service, metric))
            .or_insert_with(|| Bucket::full(limit, now))
            .take(limit, now)
            .map_err(|retry_after| Exhausted { metric, per_minute: limit, retry_after })
    }

    fn limit_per_minute(&self, project: &str, metric: QuotaMetric) -> u32 {
        match self.config.limit(project, metric) {
            Limit::PerMinute(n) => n.get(),
            // A limit cannot become unlimited while the server runs; treat as always full.
            Limit::Unlimited => 0,
        }
    }
}

/// Whether `p` is a service acting on a customer's behalf (a Keyhold service as itself, or a
/// service agent `service-N@gcp-sa-NAME.iam.gserviceaccount.com`). Cloud KMS does not count
/// the CMEK traffic of Google services in the calling project's quotas; Keyhold's store is
/// counted at its own API instead, once per request of its user.
fn acts_for_a_customer(p: &Principal) -> bool {
    p.service().is_some()
        || (p.as_str().starts_with("serviceAccount:service-")
            && p.email()
                .split_once('@')
                .is_some_and(|(_, d)| d.starts_with("gcp-sa-") && d.ends_with(".iam.gserviceaccount.com")))
}

impl Quotas {
    /// Whether calls of `caller` are counted: never when quotas are off, nor for services
    /// acting for their customers (the store's agents, `service:` identities).
    pub(crate) fn counts(&self, caller: &Caller) -> bool {
        self.is_on() && !caller.principal.as_ref().is_some_and(acts_for_a_customer)
    }

    /// Waits for one of `project`'s in-flight slots for Cloud KMS calls (see
    /// [`QuotaConfig::max_in_flight`]); services acting for customers do not wait.
    pub(crate) async fn enter_project(
        &self,
        caller: &Caller,
        service: &'static str,
        project: &str,
    ) -> Option<OwnedSemaphorePermit> {
        // Only Cloud KMS's own calls take a slot: they never make another call of the same
        // caller while in flight (the store's calls may, and a nested call waiting for a slot
        // its parent holds would wait forever).
        if service != KMS_SERVICE || !self.counts(caller) {
            return None;
        }
        self.enter(project, service).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i128 = 1_000_000_000;

    fn config(crypto: u32) -> QuotaConfig {
        let mut c = QuotaConfig::default();
        c.set(QuotaMetric::Crypto, Limit::PerMinute(NonZeroU32::new(crypto).unwrap()));
        c
    }

    #[test]
    fn off_by_default_counts_nothing() {
        let q = Quotas::new(QuotaConfig::default());
        assert!(!q.is_on());
        for i in 0..10_000 {
            q.take(&format!("p{i}"), KMS_SERVICE, QuotaMetric::Crypto, 0).unwrap();
        }
        assert_eq!(q.tracked(), 0);
    }

    #[test]
    fn a_minute_of_burst_then_the_rate() {
        let q = Quotas::new(config(60));
        for _ in 0..60 {
            q.take("a", KMS_SERVICE, QuotaMetric::Crypto, 0).unwrap();
        }
        let e = q.take("a", KMS_SERVICE, QuotaMetric::Crypto, 0).unwrap_err();
        assert_eq!((e.metric, e.per_minute), (QuotaMetric::Crypto, 60));
        assert_eq!(e.retry_after, Duration::from_secs(1));
        // Another project, another service, another metric: untouched.
        q.take("b", KMS_SERVICE, QuotaMetric::Crypto, 0).unwrap();
        q.take("a", "store.keyhold.dev", QuotaMetric::Crypto, 0).unwrap();
        q.take("a", KMS_SERVICE, QuotaMetric::Read, 0).unwrap();
        // One per second comes back.
        q.take("a", KMS_SERVICE, QuotaMetric::Crypto, SEC).unwrap();
        assert!(q.take("a", KMS_SERVICE, QuotaMetric::Crypto, SEC).is_err());
        // A clock that goes back gives nothing.
        assert!(q.take("a", KMS_SERVICE, QuotaMetric::Crypto, 0).is_err());
    }

    #[test]
    fn overrides_and_parsing() {
        let mut c = config(10);
        c.apply_override("big:crypto=1000").unwrap();
        c.apply_override("free:crypto=unlimited").unwrap();
        c.apply_override("small:read=1").unwrap();
        assert_eq!(c.limit("big", QuotaMetric::Crypto), Limit::PerMinute(NonZeroU32::new(1000).unwrap()));
        assert_eq!(c.limit("free", QuotaMetric::Crypto), Limit::Unlimited);
        assert_eq!(c.limit("small", QuotaMetric::Crypto), Limit::PerMinute(NonZeroU32::new(10).unwrap()));
        assert_eq!(c.limit("other", QuotaMetric::Read), Limit::Unlimited);
        for bad in ["big", "big:crypto", "big:cpu=1", "big:crypto=0", "big:crypto=-1", "Bad Project:crypto=1"] {
            assert!(QuotaConfig::default().apply_override(bad).is_err(), "{bad}");
        }
        let mut only_override = QuotaConfig::default();
        only_override.apply_override("p:write=5").unwrap();
        assert!(only_override.is_on());
    }

    #[test]
    fn services_acting_for_customers_are_not_counted() {
        let agent =
            Principal::parse("serviceAccount:service-123456789012@gcp-sa-store.iam.gserviceaccount.com").unwrap();
        assert!(acts_for_a_customer(&agent));
        assert!(acts_for_a_customer(&Principal::parse("service:store.keyhold.dev").unwrap()));
        for p in [
            "user:service-1@gcp-sa-x.iam.gserviceaccount.com",
            "serviceAccount:app@my-project.iam.gserviceaccount.com",
            "serviceAccount:service-1@gcp-sa-x.example.com",
        ] {
            assert!(!acts_for_a_customer(&Principal::parse(p).unwrap()), "{p}");
        }
    }

    #[test]
    fn a_project_has_at_most_its_slots_in_flight() {
        let mut c = QuotaConfig { max_in_flight: NonZeroUsize::new(2), ..QuotaConfig::default() };
        assert!(Quotas::new(QuotaConfig::default()).try_enter("a", KMS_SERVICE).unwrap().is_none());
        c.max_tracked = 16;
        let q = Quotas::new(c);
        assert!(q.is_on());
        let one = q.try_enter("a", KMS_SERVICE).unwrap().unwrap();
        let two = q.try_enter("a", KMS_SERVICE).unwrap().unwrap();
        assert!(q.try_enter("a", KMS_SERVICE).is_err(), "a third request of the project waits");
        // Other projects and other services are not held up.
        let _b = q.try_enter("b", KMS_SERVICE).unwrap().unwrap();
        let _store = q.try_enter("a", "store.keyhold.dev").unwrap().unwrap();
        drop(one);
        let _three = q.try_enter("a", KMS_SERVICE).unwrap().unwrap();
        drop(two);
        // Many projects: idle semaphores make room, busy ones are kept, memory stays bounded.
        for i in 0..10_000 {
            let _p = q.try_enter(&format!("p{i}"), KMS_SERVICE);
        }
        assert!(q.tracked_slots() <= 16, "{}", q.tracked_slots());
    }

    #[test]
    fn classification() {
        assert_eq!(QuotaMetric::of_call(KMS_SERVICE, "Encrypt", AuditKind::DataAccess), QuotaMetric::Crypto);
        assert_eq!(
            QuotaMetric::of_call(KMS_SERVICE, "GenerateRandomBytes", AuditKind::DataAccess),
            QuotaMetric::Crypto
        );
        assert_eq!(QuotaMetric::of_call(KMS_SERVICE, "GetCryptoKey", AuditKind::DataAccess), QuotaMetric::Read);
        assert_eq!(QuotaMetric::of_call(KMS_SERVICE, "CreateKeyRing", AuditKind::Activity), QuotaMetric::Write);
        assert_eq!(QuotaMetric::of_call("store.keyhold.dev", "Encrypt", AuditKind::DataAccess), QuotaMetric::Read);
    }

    #[test]
    fn memory_is_bounded_and_the_overflow_is_still_limited() {
        let mut c = config(2);
        c.max_tracked = 32;
        let q = Quotas::new(c);
        let mut refused = 0;
        for i in 0..100_000 {
            if q.take(&format!("p{i}"), KMS_SERVICE, QuotaMetric::Crypto, 0).is_err() {
                refused += 1;
            }
        }
        assert!(q.tracked() <= 32, "{}", q.tracked());
        // Beyond the bound, projects share one bucket: nearly all of the flood is refused.
        assert!(refused > 99_000, "{refused}");
        // A minute later every bucket is full again and makes room for new projects.
        q.take("late", KMS_SERVICE, QuotaMetric::Crypto, 61 * SEC).unwrap();
        assert!(q.tracked() <= 32);
    }
}
