//! `keyhold tls dev-certs`: a development CA, a server certificate for this machine and a
//! client certificate, to run the quick start over HTTPS (and mutual TLS). Never for
//! production: the CA's key sits next to the certificates it signs.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use keyhold_kms::private_files;
use keyhold_tls::DevCerts;

use super::{CliError, print_stderr, print_stdout};

/// The client certificate's SAN email when `--client-email` is not given.
pub const DEFAULT_CLIENT_EMAIL: &str = "dev-client@keyhold.local";

/// `keyhold tls`.
#[derive(Args, Debug)]
pub struct TlsArgs {
    /// The command.
    #[command(subcommand)]
    pub command: TlsCommand,
}

/// Commands under `keyhold tls`.
#[derive(Subcommand, Debug)]
pub enum TlsCommand {
    /// Create a development CA (ca.pem, ca.key), a server certificate for localhost,
    /// 127.0.0.1 and ::1 (server.pem, server.key) and a client certificate (client.pem,
    /// client.key) in a private directory, and print how to use them. Not for production.
    DevCerts(DevCertsArgs),
}

/// `keyhold tls dev-certs`.
#[derive(Args, Debug)]
pub struct DevCertsArgs {
    /// The directory to write to (created 0700; files 0600).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The client certificate's SAN email, the principal it stands for with
    /// `keyhold serve --tls-client-principal san-email` (`user:EMAIL`, or
    /// `serviceAccount:EMAIL` for a `…gserviceaccount.com` address).
    #[arg(long, default_value = DEFAULT_CLIENT_EMAIL, value_name = "EMAIL")]
    pub client_email: String,
    /// Replace the files if they exist.
    #[arg(long)]
    pub force: bool,
}

/// The files `dev-certs` writes, in order.
pub const FILES: [&str; 6] = ["ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key"];

impl TlsCommand {
    /// The command's path below `keyhold` (`tls.dev-certs`).
    pub fn path(&self) -> String {
        match self {
            TlsCommand::DevCerts(_) => "tls.dev-certs".to_string(),
        }
    }

    /// Runs the command; errors are printed with `path` as every command's are.
    pub async fn run(self, path: &str) -> ExitCode {
        let TlsCommand::DevCerts(args) = self;
        match dev_certs(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                print_stderr(&format!("ERROR: ({path}) {e}"));
                ExitCode::FAILURE
            }
        }
    }
}

fn dev_certs(args: &DevCertsArgs) -> Result<(), CliError> {
    let io = |what: &Path, e: std::io::Error| CliError::Io(format!("{}: {e}", what.display()));
    if keyhold_kms::Principal::parse(&format!("user:{}", args.client_email)).is_err() {
        return Err(CliError::Usage(format!("--client-email: {:?} is not an email address", args.client_email)));
    }
    let existing: Vec<&str> = FILES.iter().copied().filter(|f| args.out.join(f).exists()).collect();
    if !existing.is_empty() && !args.force {
        return Err(CliError::Usage(format!(
            "{} already holds {}; pass --force to replace them",
            args.out.display(),
            existing.join(", ")
        )));
    }
    private_files::ensure_private_dir(&args.out).map_err(|e| io(&args.out, e))?;
    let certs = DevCerts::generate(&args.client_email).map_err(|e| CliError::Other(e.to_string()))?;
    let contents =
        [&certs.ca_cert, &certs.ca_key, &certs.server_cert, &certs.server_key, &certs.client_cert, &certs.client_key];
    for (name, text) in FILES.iter().zip(contents) {
        let path = args.out.join(name);
        if args.force {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&path, e)),
            }
        }
        let mut f = private_files::create_new_file(&path).map_err(|e| io(&path, e))?;
        f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(|e| io(&path, e))?;
    }
    let dir = std::fs::canonicalize(&args.out).unwrap_or_else(|_| args.out.clone());
    let d = |f: &str| shell_quote(&dir.join(f));
    let (ca, cert, key, ccert, ckey) =
        (d("ca.pem"), d("server.pem"), d("server.key"), d("client.pem"), d("client.key"));
    print_stdout(&format!(
        "Wrote a development CA, a server certificate for localhost, 127.0.0.1 and ::1, and a client certificate for \
         {email} to {dir} (valid {days} days; for development only, never production).\n\
         \n\
         Serve HTTPS:\n\
         \x20 keyhold serve --tls-cert-file {cert} --tls-key-file {key}\n\
         \x20 curl --cacert {ca} https://127.0.0.1:8080/healthz\n\
         \n\
         Require client certificates (mutual TLS), the client certificate's email as its principal when no token is \
         sent:\n\
         \x20 keyhold serve --tls-cert-file {cert} --tls-key-file {key} --tls-client-ca-file {ca} \
         --tls-client-principal san-email\n\
         \x20 curl --cacert {ca} --cert {ccert} --key {ckey} \
         https://127.0.0.1:8080/v1/projects/my-project/locations/global/keyRings\n",
        email = args.client_email,
        dir = dir.display(),
        days = keyhold_tls::server::DEV_CERT_VALIDITY_DAYS,
    ))
}

/// A path as a shell word: as is when it needs no quoting, else in single quotes.
fn shell_quote(p: &Path) -> String {
    let s = p.display().to_string();
    if s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+=:@,".contains(c)) {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}
