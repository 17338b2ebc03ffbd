//! `keyhold serve`: the server process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use keyhold_api::wire::ProtoDuration;
use keyhold_kms::clock::SystemClock;
use keyhold_kms::quota::{Limit, QuotaConfig, QuotaMetric};
use keyhold_kms::root_key::{LocalRootKey, RootKey};
use keyhold_kms::{Kms, KmsConfig};
use keyhold_sql::Database;

/// Options of `keyhold serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on. Plain HTTP only on a loopback address (or with
    /// --allow-plaintext); anywhere else, serve HTTPS with --tls-cert-file and --tls-key-file.
    #[arg(long, default_value = "127.0.0.1:8080", env = "KEYHOLD_LISTEN")]
    pub listen: SocketAddr,
    /// Serve HTTPS with this certificate chain (PEM, leaf first). Reloaded without a restart
    /// when the file changes. `keyhold tls dev-certs` makes development certificates.
    #[arg(long, env = "KEYHOLD_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// The private key of --tls-cert-file (PEM: PKCS#8, PKCS#1 or SEC1). Reloaded with it.
    #[arg(long, env = "KEYHOLD_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// Require client certificates issued by these CAs (PEM) and verify them (mutual TLS).
    #[arg(long, env = "KEYHOLD_TLS_CLIENT_CA_FILE", requires = "tls_cert_file")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// What a verified client certificate stands for in requests without a bearer token (a
    /// bearer token always wins): `none` (requests still need a token) or `san-email` (the
    /// certificate's first SAN email as `serviceAccount:EMAIL` for a service account's address,
    /// `user:EMAIL` otherwise). It gets the same IAM checks and audit entries as a token's.
    #[arg(long, value_enum, default_value = "none", env = "KEYHOLD_TLS_CLIENT_PRINCIPAL")]
    pub tls_client_principal: crate::listen::ClientPrincipalArg,
    /// Serve plain HTTP on a non-loopback address (a private link, or behind a
    /// TLS-terminating proxy). Without it, `serve` refuses to listen in clear beyond loopback.
    #[arg(long, env = "KEYHOLD_ALLOW_PLAINTEXT")]
    pub allow_plaintext: bool,
    /// Directory for the embedded SQLite database and, by default, the root key.
    #[arg(long, default_value = "./keyhold-data", env = "KEYHOLD_DATA_DIR")]
    pub data_dir: PathBuf,
    /// PostgreSQL URL (postgres://user:password@host:port/db) instead of the embedded SQLite
    /// file; any number of nodes may share it.
    #[arg(long, env = "KEYHOLD_DATABASE", conflicts_with = "in_memory", hide_env_values = true)]
    pub database: Option<String>,
    /// Keep everything in memory (tests, emulation): nothing is written to disk and a random
    /// root key is used.
    #[arg(long)]
    pub in_memory: bool,
    /// With --in-memory: how many audit entries to keep (the newest; older ones are dropped as
    /// new ones arrive, so memory stays bounded: about 0.9 KB an entry).
    #[arg(
        long,
        env = "KEYHOLD_IN_MEMORY_AUDIT_ENTRIES",
        requires = "in_memory",
        default_value_t = keyhold_sql::DEFAULT_IN_MEMORY_AUDIT_ENTRIES,
        value_parser = clap::value_parser!(u64).range(1..),
        value_name = "N"
    )]
    pub in_memory_audit_entries: u64,
    /// Root key file (32 random bytes, base64). Default: DATA_DIR/root.key, created on first
    /// start with a warning. Required with --database.
    #[arg(long, env = "KEYHOLD_ROOT_KEY_FILE")]
    pub root_key_file: Option<PathBuf>,
    /// Locations offered, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = keyhold_kms::config::DEFAULT_LOCATIONS.map(String::from))]
    pub locations: Vec<String>,
    /// destroyScheduledDuration of keys that set none (the AML AI page shows 86400s; Cloud KMS
    /// today uses 30 days).
    #[arg(long, default_value = "86400s", value_parser = parse_duration)]
    pub default_destroy_scheduled_duration: ProtoDuration,
    /// Shortest destroyScheduledDuration accepted (Cloud KMS: 24 h). Lower only for tests.
    #[arg(long, default_value = "86400s", value_parser = parse_duration)]
    pub min_destroy_scheduled_duration: ProtoDuration,
    /// Shortest rotationPeriod accepted (Cloud KMS: 24 h). Lower only for tests.
    #[arg(long, default_value = "86400s", value_parser = parse_duration)]
    pub min_rotation_period: ProtoDuration,
    /// Emulator mode for client libraries that send no token or a fake one: such requests act
    /// as PRINCIPAL (default user:anonymous@keyhold.local), owner of every project. Off by
    /// default; never use it on a server that holds real keys.
    #[arg(long, value_name = "PRINCIPAL", num_args = 0..=1, default_missing_value = "user:anonymous@keyhold.local")]
    pub allow_anonymous: Option<String>,
    /// The server's owner, made owner of every project and token admin on first start.
    #[arg(long, default_value = "user:owner@keyhold.local", env = "KEYHOLD_OWNER")]
    pub owner: String,
    /// Where the owner's bearer token is written (mode 0600) on first start, and re-minted if
    /// it is missing, expired or revoked. Default: DATA_DIR/owner.token, where the CLI looks.
    #[arg(long, env = "KEYHOLD_OWNER_TOKEN_FILE")]
    pub owner_token_file: Option<PathBuf>,
    /// Store: refuse instances without a kmsKey (service-managed encryption), as AML AI does.
    #[arg(long, env = "KEYHOLD_STORE_REQUIRE_CMEK")]
    pub store_require_cmek: bool,
    /// Store: how often each instance's key is re-checked (besides the immediate re-checks on
    /// key and IAM changes of an in-process KMS). At least 1s.
    #[arg(long, default_value = "300s", value_parser = parse_duration, env = "KEYHOLD_STORE_KEY_CHECK_PERIOD")]
    pub store_key_check_period: ProtoDuration,
    /// Store: how long instances keep serving from their cached keys while the KMS cannot be
    /// reached (if the key was usable when it was last reached).
    #[arg(long, default_value = "3600s", value_parser = parse_duration, env = "KEYHOLD_STORE_KMS_GRACE")]
    pub store_kms_grace: ProtoDuration,
    /// Store: the directory instance exports are written to and imports read from; requests
    /// name files inside it, never elsewhere. Default: DATA_DIR/exports.
    #[arg(long, env = "KEYHOLD_STORE_EXPORT_DIR")]
    pub store_export_dir: Option<PathBuf>,
    /// Store: how often read replicas catch up with their primaries (they also do right after
    /// every write made through this node).
    #[arg(long, default_value = "2s", value_parser = parse_duration, env = "KEYHOLD_STORE_REPLICATION_PERIOD")]
    pub store_replication_period: ProtoDuration,
    /// Store: most bytes a second each background copy (backup, restore, clone, export,
    /// import, :reencrypt) reads, so that copies leave the disk to live traffic. Default:
    /// unlimited.
    #[arg(long, env = "KEYHOLD_STORE_COPY_BYTES_PER_SECOND")]
    pub store_copy_bytes_per_second: Option<std::num::NonZeroU64>,
    /// Store: use the KMS at this URL for instance keys instead of the one in this process.
    /// The store then authenticates there as service:store.keyhold.dev (--kms-token-file) and
    /// acts through its service agents' short-lived tokens.
    #[arg(long, env = "KEYHOLD_KMS_ENDPOINT", requires = "kms_token_file")]
    pub kms_endpoint: Option<String>,
    /// Bearer token of service:store.keyhold.dev at --kms-endpoint.
    #[arg(long, env = "KEYHOLD_KMS_TOKEN_FILE")]
    pub kms_token_file: Option<PathBuf>,
    #[command(flatten)]
    pub kms_tls: crate::client_tls::KmsLinkTls,
    /// HSM keys: the PKCS#11 module (shared library), e.g. /usr/lib/softhsm/libsofthsm2.so.
    /// Without it, HSM keys answer 501 UNIMPLEMENTED.
    #[arg(long, env = "KEYHOLD_PKCS11_MODULE", requires = "pkcs11_token_label")]
    pub pkcs11_module: Option<PathBuf>,
    /// HSM keys: the label of the token to use (as `softhsm2-util --show-slots` prints it).
    #[arg(long, env = "KEYHOLD_PKCS11_TOKEN_LABEL")]
    pub pkcs11_token_label: Option<String>,
    /// HSM keys: a file holding the token's user PIN. Without it, the PIN is read from the
    /// environment variable KEYHOLD_PKCS11_PIN. Never on the command line.
    #[arg(long, env = "KEYHOLD_PKCS11_PIN_FILE")]
    pub pkcs11_pin_file: Option<PathBuf>,
    /// The root key in the HSM instead of a file: `pkcs11:object=LABEL` names an AES key object
    /// in the --pkcs11-token-label token, generated there on first start. SOFTWARE key material
    /// is then sealed inside the token, by a key that never leaves it.
    #[arg(long, env = "KEYHOLD_ROOT_KEY", conflicts_with_all = ["root_key_file", "in_memory"], requires = "pkcs11_module")]
    pub root_key: Option<String>,
    /// HSM keys: at start, the token's key objects are compared with the database in the
    /// background and orphans are logged (never destroyed: `keyhold hsm reconcile --apply`). An
    /// object counts as orphaned only if it still is after this long, so that a version being
    /// created on another node is not taken for one.
    #[arg(long, default_value = "120s", value_parser = parse_duration, env = "KEYHOLD_PKCS11_RECONCILE_GRACE")]
    pub pkcs11_reconcile_grace: ProtoDuration,
    /// EXTERNAL keys: the tokens this server presents to external key managers, one per line,
    /// `TOKEN` (any manager) or `http://host:port TOKEN` (that manager). Without it, EXTERNAL
    /// keys answer 501 UNIMPLEMENTED. See docs/ekm-protocol.md.
    #[arg(long, env = "KEYHOLD_EKM_CREDENTIALS_FILE")]
    pub ekm_credentials_file: Option<PathBuf>,
    /// EXTERNAL keys: how long a wrap or unwrap may take before the request fails with 503
    /// UNAVAILABLE (and CMEK services start their grace period).
    #[arg(long, default_value = "5s", value_parser = parse_duration, env = "KEYHOLD_EKM_TIMEOUT")]
    pub ekm_timeout: ProtoDuration,
    #[command(flatten)]
    pub ekm_tls: crate::client_tls::EkmTls,
    /// Quotas: cryptographic requests (encrypt, decrypt, generateRandomBytes, ...) per minute
    /// and project, as Cloud KMS's `crypto_requests`. Over it: 429 RESOURCE_EXHAUSTED. Quotas
    /// are off unless set. See docs/operations.md, "Quotas".
    #[arg(long, value_name = "N", value_parser = Limit::parse, env = "KEYHOLD_QUOTA_CRYPTO_PER_MINUTE")]
    pub quota_crypto_per_minute: Option<Limit>,
    /// Quotas: other reading requests (get, list, getIamPolicy, ...) per minute, project and
    /// service, as Cloud KMS's `read_requests`.
    #[arg(long, value_name = "N", value_parser = Limit::parse, env = "KEYHOLD_QUOTA_READ_PER_MINUTE")]
    pub quota_read_per_minute: Option<Limit>,
    /// Quotas: changing requests (create, update, destroy, setIamPolicy, ...) per minute,
    /// project and service, as Cloud KMS's `write_requests`.
    #[arg(long, value_name = "N", value_parser = Limit::parse, env = "KEYHOLD_QUOTA_WRITE_PER_MINUTE")]
    pub quota_write_per_minute: Option<Limit>,
    /// Quotas: both --quota-read-per-minute and --quota-write-per-minute (each flag given
    /// separately wins).
    #[arg(long, value_name = "N", value_parser = Limit::parse, env = "KEYHOLD_QUOTA_ADMIN_PER_MINUTE")]
    pub quota_admin_per_minute: Option<Limit>,
    /// Quotas: a project's own limit, PROJECT:METRIC=LIMIT with METRIC crypto, read or write and
    /// LIMIT a number or `unlimited` (e.g. big-tenant:crypto=600000). Repeatable; the
    /// environment variable takes a comma-separated list.
    #[arg(long, value_name = "PROJECT:METRIC=LIMIT", value_delimiter = ',', env = "KEYHOLD_QUOTA_OVERRIDES")]
    pub quota_override: Vec<String>,
    /// Quotas: at most N Cloud KMS requests of one project are handled at once (after their
    /// authorization); the others wait their turn. A flood of one project then competes with
    /// the others with N requests, not with all its connections. Off unless set.
    #[arg(long, value_name = "N", env = "KEYHOLD_QUOTA_MAX_IN_FLIGHT_PER_PROJECT")]
    pub quota_max_in_flight_per_project: Option<std::num::NonZeroUsize>,
    /// Memory the key cache may take, in MiB (an estimate per key: its records and versions).
    /// Keys beyond it are read from the database again when used; raise it when many more
    /// keys are in steady use than fit.
    #[arg(long, value_name = "MIB", default_value_t = 64, env = "KEYHOLD_KEY_CACHE_MB")]
    pub key_cache_mb: u64,
    /// Memory the IAM policy cache may take, in MiB: the policy of every resource a request
    /// names, "none set" included (about 180 bytes for a key with no policy of its own, so the
    /// default holds about 180,000). Resources beyond it have their policies read again.
    #[arg(long, value_name = "MIB", default_value_t = 32, env = "KEYHOLD_POLICY_CACHE_MB")]
    pub policy_cache_mb: u64,
    /// How the audit entries of reads, cryptographic calls and refusals are made durable.
    /// An interval (1ms to 10s; the default, 100ms): a request is answered once its entry is
    /// in this node's journal (DATA_DIR/audit-journal), which is fsynced every interval and
    /// moved into the log behind the requests: a killed process loses nothing, a power loss at
    /// most the last interval's entries. `strict`: once its entry is committed to the
    /// database, fsync included. Entries of changes always commit with their change.
    /// `--in-memory` is always strict (its log lives in memory). See docs/operations.md,
    /// "Audit durability".
    #[arg(long, value_name = "strict|INTERVAL", value_parser = AuditSync::parse, env = "KEYHOLD_AUDIT_SYNC")]
    pub audit_sync: Option<AuditSync>,
    /// Limits of the public listener (issue 15, finding 3).
    #[command(flatten)]
    pub listener: crate::listen::ListenerArgs,
}

/// The audit journal's directory inside the data directory.
const AUDIT_JOURNAL_DIR: &str = "audit-journal";

/// `--audit-sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditSync {
    /// Answer once the entry is committed.
    Strict,
    /// Answer once the entry is in the journal, fsynced this often.
    Interval(std::time::Duration),
}

impl AuditSync {
    /// The default of a server whose data directory is on disk: the journal, fsynced every
    /// 100 ms (one connection's p99 under 1 ms; `strict` waits for an fsync per request).
    pub const DEFAULT: AuditSync = AuditSync::Interval(std::time::Duration::from_millis(100));

    /// How often the journal is fsynced; `None` when strict.
    fn interval(self) -> Option<std::time::Duration> {
        match self {
            AuditSync::Strict => None,
            AuditSync::Interval(interval) => Some(interval),
        }
    }

    fn parse(s: &str) -> Result<Self, String> {
        if s == "strict" {
            return Ok(AuditSync::Strict);
        }
        let interval = match s.strip_suffix("ms") {
            Some(ms) => ms.parse::<u64>().ok().map(std::time::Duration::from_millis),
            None => ProtoDuration::parse(s).map(ProtoDuration::to_std),
        }
        .ok_or_else(|| format!("\"{s}\" is neither strict nor an interval like 100ms or 0.5s"))?;
        if !(std::time::Duration::from_millis(1)..=std::time::Duration::from_secs(10)).contains(&interval) {
            return Err(format!("the interval must be between 1ms and 10s, not {s}"));
        }
        Ok(AuditSync::Interval(interval))
    }
}

/// The quota settings of `keyhold serve`'s flags.
fn quota_config(args: &ServeArgs) -> Result<QuotaConfig, String> {
    let mut quotas = QuotaConfig::default();
    let read = args.quota_read_per_minute.or(args.quota_admin_per_minute);
    let write = args.quota_write_per_minute.or(args.quota_admin_per_minute);
    for (metric, limit) in
        [(QuotaMetric::Crypto, args.quota_crypto_per_minute), (QuotaMetric::Read, read), (QuotaMetric::Write, write)]
    {
        quotas.set(metric, limit.unwrap_or_default());
    }
    quotas.max_in_flight = args.quota_max_in_flight_per_project;
    for spec in &args.quota_override {
        quotas.apply_override(spec).map_err(|e| format!("--quota-override: {e}"))?;
    }
    Ok(quotas)
}

/// The longest an unwrapped EXTERNAL result is reused, whatever `allowedCacheDuration` the
/// manager allows: a key disabled at the manager takes effect within this bound.
const EKM_CACHE_MAX: std::time::Duration = std::time::Duration::from_secs(300);

fn parse_duration(s: &str) -> Result<ProtoDuration, String> {
    ProtoDuration::parse(s).ok_or_else(|| format!("\"{s}\" is not a duration like \"86400s\""))
}

/// Runs the server until SIGTERM or Ctrl-C.
pub async fn run(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    if args.tls_client_ca_file.is_none() && args.tls_client_principal != crate::listen::ClientPrincipalArg::None {
        return Err("--tls-client-principal needs --tls-client-ca-file (client certificates to map)".into());
    }
    // Before anything is opened: TLS files that do not load, or plain HTTP beyond loopback,
    // are refused at once.
    let tls = crate::listen::TlsSettings {
        cert_file: args.tls_cert_file.clone(),
        key_file: args.tls_key_file.clone(),
        client_ca_file: args.tls_client_ca_file.clone(),
        client_principal: args.tls_client_principal.into(),
        allow_plaintext: args.allow_plaintext,
    }
    .listener_tls(args.listen, "keyhold serve")?;
    let hsm = match &args.pkcs11_module {
        Some(module) => {
            let pin = match &args.pkcs11_pin_file {
                Some(file) => keyhold_hsm::PinSource::File(file.clone()),
                None => keyhold_hsm::PinSource::Env("KEYHOLD_PKCS11_PIN".into()),
            }
            .read()?;
            let label = args.pkcs11_token_label.clone().unwrap_or_default();
            let token = keyhold_hsm::HsmToken::new(keyhold_hsm::Pkcs11Config::new(module, &label, pin));
            // Reached now to report a misconfiguration at start; an outage later is a 503.
            match token.info().await {
                Ok(info) => tracing::info!(token = %info.description(), "HSM keys enabled"),
                Err(e) => tracing::warn!(error = %e, "HSM keys enabled, but the token cannot be reached yet"),
            }
            Some(token)
        }
        None => None,
    };
    let token_file = args.owner_token_file.clone().unwrap_or_else(|| args.data_dir.join("owner.token"));
    // `_data_dir_lock` is held until `run` returns.
    let (db, root, _data_dir_lock): (Database, Arc<dyn RootKey>, Option<std::fs::File>) = if args.in_memory {
        tracing::warn!("--in-memory: all keys live only in this process and vanish when it exits");
        refuse_real_servers_token_file(&token_file, args.owner_token_file.is_some())?;
        let db = Database::InMemory { audit_entries: args.in_memory_audit_entries };
        (db, Arc::new(LocalRootKey::ephemeral()?), None)
    } else {
        // Finding 4: the data directory holds the database, the default root key and the owner
        // token; it is made 0700 whatever the umask, and tightened (with a warning) if it
        // exists with group or other access.
        match keyhold_kms::private_files::ensure_private_dir(&args.data_dir)
            .map_err(|e| format!("cannot use the data directory {}: {e}", args.data_dir.display()))?
        {
            keyhold_kms::private_files::Tightened::No => {}
            keyhold_kms::private_files::Tightened::From(mode) => tracing::warn!(
                path = %args.data_dir.display(),
                "the data directory was accessible to other users (mode {mode:o}); it is now 0700"
            ),
        }
        let (db, lock) = match &args.database {
            Some(url) => (Database::Postgres(url.clone()), None),
            // Before anything reads or cleans up the SQLite file.
            None => (Database::SqliteFile(args.data_dir.join("keyhold.db")), Some(lock_data_dir(&args.data_dir)?)),
        };
        let root: Arc<dyn RootKey> = match (&args.root_key, &args.root_key_file) {
            (Some(uri), _) => {
                let label = crate::hsm::parse_root_key_uri(uri)?;
                let token = hsm.clone().ok_or("--root-key pkcs11:... needs --pkcs11-module")?;
                let root = crate::hsm::TokenRootKey::open(token, &label)
                    .await
                    .map_err(|e| format!("--root-key {uri}: {e}"))?;
                tracing::info!(object = %label, "root key: in the HSM");
                root
            }
            (None, Some(path)) => Arc::new(LocalRootKey::load(path)?),
            (None, None) if args.database.is_some() => {
                return Err("--database needs --root-key-file or --root-key pkcs11:...: every node must use the same root key, \
                            and it must not be created implicitly (see docs/operations.md)"
                    .into());
            }
            (None, None) => {
                let path = args.data_dir.join("root.key");
                refuse_new_root_key_beside_sealed_data(&path, &args.data_dir.join("keyhold.db")).await?;
                let (key, created) = LocalRootKey::load_or_create(&path)?;
                if created {
                    tracing::warn!(
                        path = %path.display(),
                        "CREATED A NEW ROOT KEY next to the database. Anyone who can read this directory can unseal every \
                         SOFTWARE key. For anything but local development, keep the root key elsewhere and pass \
                         --root-key-file (see docs/operations.md)."
                    );
                }
                Arc::new(key)
            }
        };
        (db, root, lock)
    };
    let opened = keyhold_sql::open_all(&db).await?;
    let anonymous_principal = match &args.allow_anonymous {
        Some(p) => Some(keyhold_iam::Principal::parse(p).map_err(|e| format!("--allow-anonymous: {e}"))?),
        None => None,
    };
    let owner = keyhold_iam::Principal::parse(&args.owner).map_err(|e| format!("--owner: {e}"))?;
    if let Some(anon) = &anonymous_principal
        && (anon.service().is_some() || *anon == owner)
    {
        return Err(format!(
            "--allow-anonymous={anon}: the anonymous principal must be a user or service account other than the owner"
        )
        .into());
    }
    let mut backends = keyhold_kms::KeyBackends::default();
    if let Some(token) = &hsm {
        crate::hsm::spawn_startup_check(token.clone(), opened.kms.clone(), args.pkcs11_reconcile_grace.to_std());
    }
    if let Some(token) = hsm {
        backends.hsm = Some(Arc::new(crate::hsm::TokenBackend(token)));
    }
    if let Some(file) = &args.ekm_credentials_file {
        let text = keyhold_crypto::Secret::new(
            std::fs::read(file).map_err(|e| format!("cannot read --ekm-credentials-file {}: {e}", file.display()))?,
        );
        let credentials = keyhold_ekm::client::EkmCredentials::parse(text.expose())
            .map_err(|e| format!("--ekm-credentials-file {}: {e}", file.display()))?;
        let tls = args.ekm_tls.client_tls();
        let client = keyhold_ekm::client::EkmClient::with_tls(credentials, args.ekm_timeout.to_std(), &tls)
            .map_err(|e| format!("EXTERNAL keys: --ekm-ca-file/--ekm-client-cert-file/--ekm-client-key-file: {e}"))?
            .with_unwrap_cache(Arc::new(keyhold_ekm::client::UnwrapCache::new(10_000, EKM_CACHE_MAX)));
        backends.external = Some(Arc::new(client));
        tracing::info!(timeout = ?args.ekm_timeout.to_std(), "EXTERNAL keys enabled");
    }
    let quotas = quota_config(&args)?;
    if quotas.is_on() {
        tracing::info!(quotas = ?quotas, "per-project request quotas are on");
    }
    let config = KmsConfig {
        quotas,
        backends,
        anonymous_principal: anonymous_principal.clone(),
        locations: args.locations,
        default_destroy_scheduled_duration: args.default_destroy_scheduled_duration,
        min_destroy_scheduled_duration: args.min_destroy_scheduled_duration,
        min_rotation_period: args.min_rotation_period,
        key_cache_bytes: args.key_cache_mb.saturating_mul(1024 * 1024),
        policy_cache_bytes: args.policy_cache_mb.saturating_mul(1024 * 1024),
        audit_journal: match args.audit_sync {
            Some(AuditSync::Interval(_)) if args.in_memory => {
                return Err(
                    "--audit-sync INTERVAL needs a data directory for its journal; an in-memory server's audit log \
                     lives in memory (leave --audit-sync out, or strict)"
                        .into(),
                );
            }
            _ if args.in_memory => None,
            // Strict still empties a journal a journaled run left behind.
            sync => Some(keyhold_kms::audit_journal::AuditJournalConfig {
                dir: args.data_dir.join(AUDIT_JOURNAL_DIR),
                sync_interval: sync.unwrap_or(AuditSync::DEFAULT).interval(),
            }),
        },
        ..KmsConfig::default()
    };
    let kms = Arc::new(Kms::new(opened.kms.clone(), root, config, Arc::new(SystemClock)).await?);
    bootstrap_owner(&kms, &owner, &token_file).await?;
    if let Some(anon) = &anonymous_principal {
        tracing::warn!(
            principal = %anon,
            "--allow-anonymous: REQUESTS WITHOUT A VALID TOKEN ARE ACCEPTED and act as {anon}, owner of every project. \
             This is emulator mode for tests; never use it on a server holding real keys."
        );
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let background = tokio::spawn(kms.clone().run_background(wait_for(stop_rx.clone())));

    let shutdown = shutdown_signal();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, database = ?db, "Keyhold is serving the Cloud KMS v1 API on {scheme}://{addr}");
    let host = keyhold_server::host::KmsHost::shared(kms.clone());
    let agents: Arc<dyn keyhold_store::AgentProvider> = match (&args.kms_endpoint, &args.kms_token_file) {
        (Some(endpoint), Some(file)) => {
            let token = std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read --kms-token-file {}: {e}", file.display()))?;
            let token = keyhold_cmek::StaticToken(keyhold_crypto::SecretString::new(token.trim().to_string()));
            tracing::info!(%endpoint, "store: instance keys are used through the KMS at {endpoint}");
            let tls = args.kms_tls.client_tls();
            Arc::new(
                keyhold_store::RemoteAgents::with_tls(endpoint, Arc::new(token), &tls)
                    .map_err(|e| format!("--kms-ca-file/--kms-client-cert-file/--kms-client-key-file: {e}"))?,
            )
        }
        _ => Arc::new(keyhold_store::LocalAgents::new(host.clone())),
    };
    let store_config = keyhold_store::StoreConfig {
        require_cmek: args.store_require_cmek,
        guard: keyhold_cmek::GuardConfig {
            check_period: args.store_key_check_period.to_std(),
            grace: args.store_kms_grace.to_std(),
        },
        locations: kms.config().locations.clone(),
        export_dir: Some(args.store_export_dir.clone().unwrap_or_else(|| args.data_dir.join("exports"))),
        replication_period: args.store_replication_period.to_std().max(std::time::Duration::from_millis(100)),
        copy_bytes_per_second: args.store_copy_bytes_per_second,
    };
    let store = keyhold_store::Store::new(host, opened.objects.clone(), agents, store_config);
    // Finding 6: what a crash left is deleted now, not an hour later (never what another
    // node sharing the database is still writing), and the operations it interrupted run again.
    match store.clean_up_after_crash().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(count = n, "store: removed what interrupted uploads, backups and copies left"),
        Err(e) => tracing::warn!(error = %e, "store: cannot clean up interrupted uploads"),
    }
    // Finding 10: the export registry against the export directory (`keyhold store exports
    // reconcile` does the same on demand).
    if let Err(e) = store.reconcile_all_exports().await {
        tracing::warn!(error = %e, "store: cannot reconcile the export registry");
    }
    let state = keyhold_server::AppState { kms: kms.clone(), store: Some(store) };
    let limits = args.listener.limits();
    // gRPC on the same port (issue 17): its messages bounded like REST bodies.
    let max_message = usize::try_from(limits.max_body_bytes).unwrap_or(usize::MAX);
    let grpc = keyhold_grpc::router(state.clone(), max_message).await;
    let app = keyhold_server::app_with(state, Some(grpc));
    // Timeouts, a connection cap and body limits (finding 3): never plain `axum::serve`.
    keyhold_server::listener::serve_with(listener, app, limits, tls, async move {
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight requests");
    })
    .await?;
    // No request is in flight now: the journal's entries into the log, the journal fsynced.
    if let Err(e) = kms.finish_audit().await {
        tracing::error!(error = %e, "audit journal: not every entry reached the log before the stop; the next start moves the rest");
    }
    let _ = stop_tx.send(true);
    let _ = background.await;
    if args.in_memory && args.owner_token_file.is_none() {
        // Its token died with the keys; removed so the next `--in-memory` start in this
        // directory is not refused for it (an existing token file is never overwritten).
        if let Err(e) = std::fs::remove_file(&token_file)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %token_file.display(), error = %e, "cannot remove the in-memory server's owner token");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Finding 8: restarted without `--root-key-file` on a data directory whose database was
/// sealed under a key kept elsewhere, the server used to create a new `root.key` and only then
/// refuse (the fingerprints differ), leaving a stray key that the next start would load. The
/// database is read first: a root key is never created next to data sealed under another.
async fn refuse_new_root_key_beside_sealed_data(
    key_path: &std::path::Path,
    db_path: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    if key_path.exists() {
        return Ok(());
    }
    let stored = keyhold_sql::Sqlite::stored_meta(db_path, "root_key_fingerprint")
        .await
        .map_err(|e| format!("cannot read {}: {e}", db_path.display()))?;
    match stored {
        None => Ok(()),
        Some(fingerprint) => Err(format!(
            "{db} holds keys sealed under the root key with fingerprint {fingerprint}, and there is no {key} beside it; \
             start with --root-key-file naming that root key (a new root key is never created next to existing data; \
             see docs/operations.md)",
            db = db_path.display(),
            key = key_path.display(),
        )
        .into()),
    }
}

/// Name of the lock file in the data directory.
const LOCK_FILE: &str = "keyhold.lock";

/// Hardening review: nothing stopped two `keyhold serve` on one SQLite file (a rolling restart that starts
/// the new server before the old one exits), and the second's start-up cleanup deleted the
/// first's uploads in progress. The server takes an exclusive lock on DATA_DIR/keyhold.lock
/// (0600) and holds it for its life; a second server on the same directory refuses to start.
/// The lock goes with the process (the kernel releases it on exit or crash), so a stale lock
/// file never blocks a restart. PostgreSQL nodes share a database on purpose and take no lock.
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, Box<dyn std::error::Error>> {
    let path = dir.join(LOCK_FILE);
    let file = keyhold_kms::private_files::open_lock_file(&path)
        .map_err(|e| format!("cannot open the lock file {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "another keyhold serve is using the data directory {} (it holds the lock on {}); stop it before starting \
             this one (two servers on one SQLite database would undo each other's work), or pass another --data-dir",
            dir.display(),
            path.display()
        )
        .into()),
        Err(std::fs::TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display()).into()),
    }
}

/// Finding 8: `serve --in-memory` started in the directory of a real server overwrote that
/// server's owner token (DATA_DIR/owner.token). An in-memory server refuses to write its token
/// into a directory that holds a real server's database or root key; it names the way out.
/// Hardening review: nor over an existing token file it was not told to use (a PostgreSQL node's data
/// directory holds only `owner.token`): only an explicit `--owner-token-file` is overwritten.
fn refuse_real_servers_token_file(
    token_file: &std::path::Path,
    explicit: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let dir = token_file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    for name in ["keyhold.db", "root.key"] {
        if dir.join(name).exists() {
            return Err(format!(
                "--in-memory would write its owner token to {}, beside a real server's {name}, and overwrite that \
                 server's token; pass --owner-token-file with another path, or another --data-dir",
                token_file.display()
            )
            .into());
        }
    }
    if !explicit && token_file.exists() {
        return Err(format!(
            "--in-memory would overwrite the owner token in {}, which may be a real server's (a PostgreSQL node keeps \
             only its token there); pass --owner-token-file naming where this server's token should go, or another \
             --data-dir, or remove that file if it is a former --in-memory server's",
            token_file.display()
        )
        .into());
    }
    Ok(())
}

/// Makes `owner` the server's owner on first start and keeps a valid owner token in
/// `token_file` (written atomically, mode 0600). The token is never logged.
async fn bootstrap_owner(
    kms: &Kms,
    owner: &keyhold_iam::Principal,
    token_file: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let existing = match std::fs::read_to_string(token_file) {
        Ok(t) => Some(keyhold_crypto::SecretString::new(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("cannot read the owner token file {}: {e}", token_file.display()).into()),
    };
    let Some(minted) = kms.bootstrap_owner(owner, existing.as_ref().map(|t| t.expose())).await? else {
        return Ok(());
    };
    if let Some(dir) = token_file.parent().filter(|d| !d.as_os_str().is_empty()) {
        // New directories 0700 whatever the umask (finding 4).
        keyhold_kms::private_files::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let tmp = token_file.with_extension("token.tmp");
    // A fresh file (never one left behind, whose mode or symlink target could be anyone's).
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot remove {}: {e}", tmp.display()).into()),
    }
    {
        use std::io::Write;
        let mut f = keyhold_kms::private_files::create_new_file(&tmp)
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        f.write_all(minted.token.expose().as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, token_file)?;
    tracing::info!(
        principal = %owner,
        path = %token_file.display(),
        expires = %minted.record.expire_time,
        "wrote a bearer token for the server owner; the keyhold CLI on this machine uses it by default"
    );
    Ok(())
}

async fn wait_for(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Resolves on SIGTERM or Ctrl-C (also used by `keyhold ekm serve`). The handlers are installed
/// when this is called, not when the future is first polled: call it before the listener
/// accepts, so a SIGTERM that arrives as soon as the server answers still shuts it down
/// gracefully instead of killing it (seen as a rare `signal: 15` exit in the tests).
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let (interrupt, terminate) = {
        use tokio::signal::unix::{SignalKind, signal};
        (signal(SignalKind::interrupt()).ok(), signal(SignalKind::terminate()).ok())
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! { _ = wait(interrupt) => {}, _ = wait(terminate) => {} }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
