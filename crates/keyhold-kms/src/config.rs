//! Settings of the KMS domain. Defaults are the SPEC's.

use crate::backend::ports::KeyBackends;
use std::time::Duration;

use keyhold_api::wire::ProtoDuration;

/// The eight regions of the AML AI page plus `global` ([K1]).
pub const DEFAULT_LOCATIONS: [&str; 9] = [
    "global",
    "us-central1",
    "us-east1",
    "asia-south1",
    "europe-west1",
    "europe-west2",
    "europe-west4",
    "northamerica-northeast1",
    "southamerica-east1",
];

const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;

/// KMS settings.
#[derive(Debug, Clone)]
pub struct KmsConfig {
    /// Locations key rings may be created in.
    pub locations: Vec<String>,
    /// `destroyScheduledDuration` of keys that do not set one. The AML AI page shows `86400s`;
    /// Cloud KMS today defaults to 30 days.
    pub default_destroy_scheduled_duration: ProtoDuration,
    /// Shortest `destroyScheduledDuration` accepted (Cloud KMS: 24 h). Lower it only for tests
    /// and emulation, never in production.
    pub min_destroy_scheduled_duration: ProtoDuration,
    /// Longest `destroyScheduledDuration` accepted (Cloud KMS: 120 days).
    pub max_destroy_scheduled_duration: ProtoDuration,
    /// Shortest `rotationPeriod` accepted (Cloud KMS: 24 h). Lower it only for tests.
    pub min_rotation_period: ProtoDuration,
    /// Longest `rotationPeriod` accepted (Cloud KMS: 876,000 h).
    pub max_rotation_period: ProtoDuration,
    /// How often due destructions and rotations are looked for.
    pub scheduler_interval: Duration,
    /// How often the store's change log is polled so that changes made by other nodes reach
    /// this node's caches (bounded staleness across nodes).
    pub change_poll_interval: Duration,
    /// The key cache's budget in bytes (estimated per entry; 64 MiB by default): the memory it
    /// takes stays under it whatever the number of keys.
    pub key_cache_bytes: u64,
    /// The IAM policy cache's budget in bytes (32 MiB by default): policies by resource, "none
    /// set" included, estimated per entry. Resources beyond it are read again when named.
    pub policy_cache_bytes: u64,
    /// Emulator mode (`--allow-anonymous`): requests without a valid token act as this
    /// principal, which is treated as owner of every project. `None` (the default): such
    /// requests are refused with `401 UNAUTHENTICATED`.
    pub anonymous_principal: Option<keyhold_iam::Principal>,
    /// Lifetime of a token created without one.
    pub default_token_ttl: ProtoDuration,
    /// Where HSM and EXTERNAL key versions live; without one, that protection level answers
    /// `501 UNIMPLEMENTED`.
    pub backends: KeyBackends,
    /// Per-project request quotas (hardening issue 15); off by default.
    pub quotas: crate::quota::QuotaConfig,
    /// `None`: no journal (in memory); a request is answered once its audit entry is
    /// committed. `Some`: where the node's journal is; with an interval, entries of reads and
    /// cryptographic calls go through it ([`crate::audit_journal`]), without one (strict) it is
    /// only emptied at start.
    pub audit_journal: Option<crate::audit_journal::AuditJournalConfig>,
}

impl Default for KmsConfig {
    fn default() -> Self {
        Self {
            locations: DEFAULT_LOCATIONS.iter().map(|s| s.to_string()).collect(),
            default_destroy_scheduled_duration: ProtoDuration::from_secs(DAY),
            min_destroy_scheduled_duration: ProtoDuration::from_secs(DAY),
            max_destroy_scheduled_duration: ProtoDuration::from_secs(120 * DAY),
            min_rotation_period: ProtoDuration::from_secs(DAY),
            max_rotation_period: ProtoDuration::from_secs(876_000 * HOUR),
            scheduler_interval: Duration::from_secs(1),
            change_poll_interval: Duration::from_millis(250),
            key_cache_bytes: crate::cache::DEFAULT_KEY_CACHE_BYTES,
            policy_cache_bytes: crate::authz::DEFAULT_POLICY_CACHE_BYTES,
            anonymous_principal: None,
            default_token_ttl: ProtoDuration::from_secs(90 * DAY),
            backends: KeyBackends::default(),
            quotas: crate::quota::QuotaConfig::default(),
            audit_journal: None,
        }
    }
}
