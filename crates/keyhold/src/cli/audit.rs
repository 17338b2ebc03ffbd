//! `keyhold audit verify`: checks the audit log's hash chain by reading the database directly,
//! not through a server (which might be the thing that was tampered with).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use keyhold_kms::audit::{ChainVerdict, verify_store_chain};
use keyhold_sql::Database;

use super::credentials::DEFAULT_DATA_DIR;
use super::{CliError, print_stderr, print_stdout};

/// The SQLite file inside the data directory, as `keyhold serve` names it.
const SQLITE_FILE: &str = "keyhold.db";

/// `keyhold audit`.
#[derive(Args, Debug)]
pub struct AuditArgs {
    /// The command.
    #[command(subcommand)]
    pub command: AuditCommand,
}

/// Commands under `keyhold audit`.
#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Verify the audit log's hash chain in the database (SQLite in the data directory, or
    /// PostgreSQL with --database). Exits 0 when intact, 1 when broken or unreadable.
    Verify(AuditVerify),
}

/// `keyhold audit verify`.
#[derive(Args, Debug)]
pub struct AuditVerify {
    /// The server's data directory, holding keyhold.db.
    #[arg(long, env = "KEYHOLD_DATA_DIR", default_value = DEFAULT_DATA_DIR, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// A PostgreSQL URL (postgres://...) instead of the SQLite file.
    #[arg(long, env = "KEYHOLD_DATABASE", hide_env_values = true, value_name = "URL")]
    pub database: Option<String>,
}

impl AuditCommand {
    /// The command's path below `keyhold` (`audit.verify`).
    pub fn path(&self) -> String {
        match self {
            AuditCommand::Verify(_) => "audit.verify".to_string(),
        }
    }

    /// Runs the command and prints its outcome; errors are printed with `path` as every
    /// command's are.
    pub async fn run(self, path: &str) -> ExitCode {
        let AuditCommand::Verify(v) = self;
        match verify(&v).await {
            Ok(ChainVerdict::Intact { entries, head }) => {
                match print_stdout(&format!("Audit log intact: {entries} entries; head hash {head}\n")) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        print_stderr(&format!("ERROR: ({path}) {e}"));
                        ExitCode::FAILURE
                    }
                }
            }
            Ok(ChainVerdict::Broken { seq, reason }) => {
                print_stderr(&format!("Audit log BROKEN at entry {seq}: {reason}"));
                ExitCode::FAILURE
            }
            Err(e) => {
                print_stderr(&format!("ERROR: ({path}) {e}"));
                ExitCode::FAILURE
            }
        }
    }
}

/// Which database to open.
fn database(v: &AuditVerify) -> Result<Database, CliError> {
    match v.database.as_deref().map(str::trim).filter(|d| !d.is_empty()) {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(Database::Postgres(url.to_string()))
        }
        Some(_) => Err(CliError::Usage(
            "--database must be a PostgreSQL URL (postgres://USER@HOST:PORT/DB); for SQLite give --data-dir.".into(),
        )),
        None => {
            let file = v.data_dir.join(SQLITE_FILE);
            // Opening a missing file would create an empty database, which verifies trivially.
            if !file.is_file() {
                return Err(CliError::Io(format!(
                    "There is no Keyhold database at {}: give the server's --data-dir (or KEYHOLD_DATA_DIR), or \
                     --database for PostgreSQL.",
                    file.display()
                )));
            }
            Ok(Database::SqliteFile(file))
        }
    }
}

async fn verify(v: &AuditVerify) -> Result<ChainVerdict, CliError> {
    let db = database(v)?;
    let store = keyhold_sql::open_read_only(&db)
        .await
        .map_err(|e| CliError::Other(format!("Unable to open the database {db:?}: {e}")))?;
    verify_store_chain(store.as_ref())
        .await
        .map_err(|e| CliError::Other(format!("Unable to read the audit log from {db:?}: {e}")))
}
