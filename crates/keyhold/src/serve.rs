//! `keyhold serve`: the server process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use keyhold_api::wire::ProtoDuration;
use keyhold_kms::clock::SystemClock;
use keyhold_kms::root_key::{LocalRootKey, RootKey};
use keyhold_kms::{Kms, KmsConfig};
use keyhold_storage::Database;

/// Options of `keyhold serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", env = "KEYHOLD_LISTEN")]
    pub listen: SocketAddr,
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
}

fn parse_duration(s: &str) -> Result<ProtoDuration, String> {
    ProtoDuration::parse(s).ok_or_else(|| format!("\"{s}\" is not a duration like \"86400s\""))
}

/// Runs the server until SIGTERM or Ctrl-C.
pub async fn run(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let (db, root): (Database, Arc<dyn RootKey>) = if args.in_memory {
        tracing::warn!("--in-memory: all keys live only in this process and vanish when it exits");
        (Database::InMemory, Arc::new(LocalRootKey::ephemeral()?))
    } else {
        let db = match &args.database {
            Some(url) => Database::Postgres(url.clone()),
            None => Database::SqliteFile(args.data_dir.join("keyhold.db")),
        };
        let root = match &args.root_key_file {
            Some(path) => LocalRootKey::load(path)?,
            None if args.database.is_some() => {
                return Err("--database needs --root-key-file: every node must use the same root key, and it must not be created \
                            implicitly (see docs/operations.md)"
                    .into());
            }
            None => {
                let path = args.data_dir.join("root.key");
                let (key, created) = LocalRootKey::load_or_create(&path)?;
                if created {
                    tracing::warn!(
                        path = %path.display(),
                        "CREATED A NEW ROOT KEY next to the database. Anyone who can read this directory can unseal every \
                         SOFTWARE key. For anything but local development, keep the root key elsewhere and pass \
                         --root-key-file (see docs/operations.md)."
                    );
                }
                key
            }
        };
        (db, Arc::new(root))
    };
    let store = keyhold_storage::open(&db).await?;
    let config = KmsConfig {
        locations: args.locations,
        default_destroy_scheduled_duration: args.default_destroy_scheduled_duration,
        min_destroy_scheduled_duration: args.min_destroy_scheduled_duration,
        min_rotation_period: args.min_rotation_period,
        ..KmsConfig::default()
    };
    let kms = Arc::new(Kms::new(store, root, config, Arc::new(SystemClock)).await?);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let background = tokio::spawn(kms.clone().run_background(wait_for(stop_rx.clone())));

    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, database = ?db, "Keyhold is serving the Cloud KMS v1 API on http://{addr}");
    let app = keyhold_server::app(keyhold_server::AppState { kms });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            tracing::info!("shutting down: finishing in-flight requests");
        })
        .await?;
    let _ = stop_tx.send(true);
    let _ = background.await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
