//! `keyhold`: the server (`keyhold serve`) and a command-line client whose commands mirror
//! `gcloud kms ...`.

#![forbid(unsafe_code)]

mod cli;
mod client_tls;
mod ekm;
mod hsm;
mod listen;
mod serve;

use clap::{Parser, Subcommand};

/// mimalloc rather than glibc's malloc: under load the server's small, short-lived allocations
/// (requests, responses, audit entries) spent an eighth of the CPU in glibc's arenas. (SQLite
/// keeps calling the C library's malloc for its own pages.)
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keyhold: customer-managed encryption keys anyone can run.
#[derive(Parser, Debug)]
#[command(name = "keyhold", version, about)]
struct Cli {
    #[command(flatten)]
    client: cli::ClientOptions,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server: the Cloud KMS v1 REST API on 127.0.0.1:8080, state in ./keyhold-data.
    // Boxed: the server's options are far larger than any other command's (clippy::large_enum_variant).
    Serve(Box<serve::ServeArgs>),
    /// Run an external key manager for EXTERNAL keys (`ekm serve`), or manage its keys.
    Ekm(ekm::EkmArgs),
    /// HSM maintenance: `hsm reconcile` compares the token's key objects with the database.
    Hsm(hsm::HsmArgs),
    #[command(flatten)]
    Client(cli::CliCommand),
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("KEYHOLD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("KEYHOLD_LOG_FORMAT").is_ok_and(|v| v == "json");
    use std::io::IsTerminal as _;
    // Colour only on a terminal: log files and pipes get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ERROR: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve(args) => {
            init_logging();
            match rt.block_on(serve::run(*args)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("ERROR: {e}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Command::Ekm(args) => rt.block_on(ekm::run(args)),
        Command::Hsm(args) => rt.block_on(hsm::run(args)),
        Command::Client(cmd) => rt.block_on(cli::run(cmd, cli.client)),
    }
}
