//! `keyhold ekm ...`: a small external key manager for EXTERNAL keys (`keyhold ekm serve`) and
//! the commands that manage its keys (`keyhold ekm keys create|list|enable|disable|destroy`)
//! and check its audit file (`keyhold ekm audit verify`).
//!
//! The manager is meant to run on a machine its operator controls, apart from the KMS: it keeps
//! its own keys under its own root key, decides every request with its own policy file and
//! records every decision in its own audit file. The key commands work on its data directory
//! directly (run them on the manager's machine); a running manager sees their changes on its
//! next request. See `docs/ekm-protocol.md`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use keyhold_ekm::protocol::KeyState;
use keyhold_ekm::{EkmServerConfig, KeyRecord, KeyStore};

/// `keyhold ekm`.
#[derive(clap::Args, Debug)]
pub struct EkmArgs {
    #[command(subcommand)]
    command: EkmCommand,
}

#[derive(clap::Subcommand, Debug)]
enum EkmCommand {
    /// Run the external key manager: wrap/unwrap for a KMS's EXTERNAL keys, decided by a
    /// policy file, recorded in an audit file.
    // Boxed: its options are far larger than the other commands' (clippy::large_enum_variant).
    Serve(Box<ServeArgs>),
    /// Create, list, enable, disable and destroy the manager's keys.
    Keys(KeysArgs),
    /// Check the manager's audit file.
    Audit(AuditArgs),
}

#[derive(clap::Args, Debug)]
struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(clap::Subcommand, Debug)]
enum AuditCommand {
    /// Verify the audit file's hash chain. Exits 0 when intact (printing the entry count and
    /// the head hash, to anchor elsewhere), 1 when an entry was edited, removed, reordered or
    /// torn (naming the first such entry), or when the file cannot be read.
    Verify {
        /// The audit file (the manager's --audit-file; by default DATA_DIR/audit.jsonl).
        #[arg(long)]
        file: PathBuf,
    },
}

/// Where the manager's keys live.
#[derive(clap::Args, Debug)]
struct StoreArgs {
    /// The manager's data directory: its keys, and by default its root key, tokens, policy and
    /// audit files.
    #[arg(long, default_value = "./keyhold-ekm-data", env = "KEYHOLD_EKM_DATA_DIR")]
    data_dir: PathBuf,
    /// The manager's root key file (32 random bytes, base64), which seals its keys. Default:
    /// DATA_DIR/root.key, created on first use.
    #[arg(long, env = "KEYHOLD_EKM_ROOT_KEY_FILE")]
    root_key_file: Option<PathBuf>,
}

impl StoreArgs {
    fn open(&self) -> Result<KeyStore, String> {
        let store = KeyStore::open(&self.data_dir, self.root_key_file.as_deref()).map_err(|e| e.to_string())?;
        if store.root_key_created() {
            eprintln!(
                "Created a new root key for the external key manager at {}. Keep a backup of it: without it the \
                 manager's keys are lost.",
                store.root_key_file().display()
            );
        }
        Ok(store)
    }
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address to listen on. Plain HTTP only on a loopback address (or with
    /// --allow-plaintext); anywhere else, serve HTTPS with --tls-cert-file and --tls-key-file.
    #[arg(long, default_value = "127.0.0.1:9090", env = "KEYHOLD_EKM_LISTEN")]
    listen: SocketAddr,
    /// Serve HTTPS with this certificate chain (PEM, leaf first); reloaded when it changes.
    #[arg(long, env = "KEYHOLD_EKM_TLS_CERT_FILE", requires = "tls_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// The private key of --tls-cert-file (PEM); reloaded with it.
    #[arg(long, env = "KEYHOLD_EKM_TLS_KEY_FILE", requires = "tls_cert_file")]
    tls_key_file: Option<PathBuf>,
    /// Require and verify client certificates issued by these CAs (PEM): the KMS's client
    /// certificate, as Google's Cloud EKM requires mutual TLS. Bearer tokens are still checked.
    #[arg(long, env = "KEYHOLD_EKM_TLS_CLIENT_CA_FILE", requires = "tls_cert_file")]
    tls_client_ca_file: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address (a private link, or behind a TLS proxy).
    /// Without it, `ekm serve` refuses to listen in clear beyond loopback.
    #[arg(long, env = "KEYHOLD_EKM_ALLOW_PLAINTEXT")]
    allow_plaintext: bool,
    #[command(flatten)]
    store: StoreArgs,
    /// The policy file (JSON): per key, the allowed callers, reasons, resources and clients,
    /// and the allowed cache duration. Re-read when it changes. Default: DATA_DIR/policy.json.
    #[arg(long, env = "KEYHOLD_EKM_POLICY")]
    policy: Option<PathBuf>,
    /// The bearer tokens the manager accepts, one "LABEL TOKEN" a line. Re-read when it
    /// changes. Default: DATA_DIR/tokens, created with one fresh token if missing.
    #[arg(long, env = "KEYHOLD_EKM_TOKENS_FILE")]
    tokens_file: Option<PathBuf>,
    /// The audit file: one JSON line per decision. Default: DATA_DIR/audit.jsonl.
    #[arg(long, env = "KEYHOLD_EKM_AUDIT_FILE")]
    audit_file: Option<PathBuf>,
    /// Limits of the listener, as `keyhold serve` has them (issue 15, finding 3).
    #[command(flatten)]
    listener: crate::listen::ListenerArgs,
}

#[derive(clap::Args, Debug)]
struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(clap::Args, Debug)]
struct BaseUrlArg {
    /// The manager's URL as the KMS reaches it, to print external key URIs.
    #[arg(long, default_value = "http://127.0.0.1:9090", env = "KEYHOLD_EKM_BASE_URL")]
    base_url: String,
}

#[derive(clap::Subcommand, Debug)]
enum KeysCommand {
    /// Create an AES-256 key (random ID if none is given) and print its external key URI.
    Create {
        /// The key ID: 1 to 128 characters from A-Z a-z 0-9 . _ -
        key_id: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        base: BaseUrlArg,
    },
    /// List the keys, destroyed ones included.
    List {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        base: BaseUrlArg,
    },
    /// Enable a disabled key.
    Enable {
        /// The key ID.
        key_id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Disable a key: every wrap and unwrap with it is refused until it is enabled again.
    Disable {
        /// The key ID.
        key_id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Destroy a key, irreversibly: everything it wrapped becomes unreadable.
    Destroy {
        /// The key ID.
        key_id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Runs `keyhold ekm ...`.
pub async fn run(args: EkmArgs) -> ExitCode {
    let result = match args.command {
        EkmCommand::Serve(a) => {
            crate::init_logging();
            serve(*a).await.inspect_err(|e| tracing::error!("{e}"))
        }
        EkmCommand::Keys(k) => keys(k.command),
        EkmCommand::Audit(a) => audit(a.command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ERROR: {e}");
            ExitCode::FAILURE
        }
    }
}

fn key_uri(base_url: &str, key_id: &str) -> String {
    format!("{}/v1/keys/{key_id}", base_url.trim_end_matches('/'))
}

fn keys(cmd: KeysCommand) -> Result<(), String> {
    match cmd {
        KeysCommand::Create { key_id, store, base } => {
            let record = store.open()?.create(key_id.as_deref()).map_err(|e| e.to_string())?;
            eprintln!("Created key {}. Its external key URI:", record.key_id);
            println!("{}", key_uri(&base.base_url, &record.key_id));
        }
        KeysCommand::List { store, base } => {
            print_table(&store.open()?.list().map_err(|e| e.to_string())?, &base.base_url);
        }
        KeysCommand::Enable { key_id, store } => {
            let r = store.open()?.set_enabled(&key_id, true).map_err(|e| e.to_string())?;
            println!("Key {} is {}.", r.key_id, r.state);
        }
        KeysCommand::Disable { key_id, store } => {
            let r = store.open()?.set_enabled(&key_id, false).map_err(|e| e.to_string())?;
            println!("Key {} is {}.", r.key_id, r.state);
        }
        KeysCommand::Destroy { key_id, store } => {
            let r = store.open()?.destroy(&key_id).map_err(|e| e.to_string())?;
            println!("Key {} is {}: what it wrapped can no longer be unwrapped.", r.key_id, r.state);
        }
    }
    Ok(())
}

fn audit(cmd: AuditCommand) -> Result<(), String> {
    let AuditCommand::Verify { file } = cmd;
    // Read directly, not through a manager (which might be what was tampered with).
    match keyhold_ekm::audit::verify_file(&file) {
        Ok(keyhold_ekm::audit::AuditVerdict::Intact { entries, head }) => {
            println!("EKM audit file intact: {entries} entries; head hash {head}");
            Ok(())
        }
        Ok(keyhold_ekm::audit::AuditVerdict::Broken { seq, line, reason }) => {
            Err(format!("EKM audit file BROKEN at entry {seq} (line {line} of {}): {reason}", file.display()))
        }
        Err(e) => Err(format!("cannot read the audit file {}: {e}", file.display())),
    }
}

fn print_table(keys: &[KeyRecord], base_url: &str) {
    let rows: Vec<[String; 4]> = keys
        .iter()
        .map(|k| {
            let uri = if k.state == KeyState::Destroyed { "-".to_string() } else { key_uri(base_url, &k.key_id) };
            [k.key_id.clone(), k.state.to_string(), k.create_time.to_string(), uri]
        })
        .collect();
    let header = ["KEY_ID", "STATE", "CREATE_TIME", "EXTERNAL_KEY_URI"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    for r in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = r.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", line.join("  ").trim_end());
    }
}

const EXAMPLE_POLICY: &str = r#"{
  "keys": {
    "KEY_ID": {
      "allowedCallers": ["user:alice@example.com", "serviceAccount:*@gcp-sa-store.iam.gserviceaccount.com"],
      "allowedReasons": ["CUSTOMER_INITIATED_ACCESS", "GOOGLE_INITIATED_SYSTEM_OPERATION"],
      "allowedCacheDuration": "300s"
    }
  }
}"#;

async fn serve(args: ServeArgs) -> Result<(), String> {
    // First: plain HTTP beyond loopback, or TLS files that do not load, are refused at once.
    let tls = crate::listen::TlsSettings {
        cert_file: args.tls_cert_file.clone(),
        key_file: args.tls_key_file.clone(),
        client_ca_file: args.tls_client_ca_file.clone(),
        client_principal: keyhold_tls::ClientPrincipal::None,
        allow_plaintext: args.allow_plaintext,
    }
    .listener_tls(args.listen, "keyhold ekm serve")?;
    let data_dir = &args.store.data_dir;
    let mut config = EkmServerConfig::new(data_dir);
    config.root_key_file = args.store.root_key_file.clone();
    config.audit_file = args.audit_file.clone();
    if let Some(p) = &args.policy {
        config.policy_file = p.clone();
    }
    if let Some(t) = &args.tokens_file {
        config.tokens_file = t.clone();
    }
    if !config.policy_file.exists() {
        return Err(format!(
            "the policy file {} does not exist. Without it nothing is allowed; write one (docs/ekm-protocol.md), e.g.:\n{}",
            config.policy_file.display(),
            EXAMPLE_POLICY
        ));
    }
    ensure_tokens_file(&config.tokens_file)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let shutdown = crate::serve::shutdown_signal();
    let server = tokio::task::spawn_blocking(move || keyhold_ekm::EkmServer::open(&config))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, data_dir = %data_dir.display(), "Keyhold EKM is serving on {scheme}://{addr}");
    // The same listener and limits as `keyhold serve` (finding 3); requests carry their
    // client's address for the audit file, as `EkmServer::serve` gives them.
    keyhold_server::listener::serve_with(listener, server.router(), args.listener.limits(), tls, async {
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight requests");
    })
    .await
    .map_err(|e| e.to_string())?;
    tracing::info!("stopped");
    Ok(())
}

/// Creates the tokens file with one fresh token if it does not exist. The token is never
/// logged: the operator reads it from the file.
fn ensure_tokens_file(path: &Path) -> Result<(), String> {
    if path.exists() {
        return Ok(());
    }
    keyhold_ekm::tokens::create_tokens_file(path, "keyhold-kms")
        .map_err(|e| format!("cannot create the tokens file {}: {e}", path.display()))?;
    tracing::info!(
        path = %path.display(),
        "wrote a new tokens file with one client token (label keyhold-kms); give that token to the KMS that uses \
         this manager"
    );
    Ok(())
}
