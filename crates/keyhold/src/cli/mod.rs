//! The command-line client: `keyhold kms ...`, whose commands, flags and output mirror
//! `gcloud kms ...`, talking to a Keyhold server over its Cloud KMS v1 REST API; and the
//! gcloud commands around it that Keyhold serves too (`projects`, `organizations`,
//! `beta services identity`, `logging read`, `org-policies`), plus Keyhold's own `auth
//! tokens`, `audit verify` and the encrypted object store, `store`.
//!
//! * [`kms`]: the command tree and what each command sends;
//! * [`iam`]: `get-` / `set-iam-policy` and `add-` / `remove-iam-policy-binding`, for key
//!   rings, keys ([`kms`]), projects and the organization ([`projects`]);
//! * [`services`], [`tokens`], [`logging`], [`audit`]: the other command groups;
//! * [`store`]: `store instances create|describe|list|delete|rewrap|reencrypt|restore|clone|
//!   export|import` (`create --replica-of` for read replicas), `store backups
//!   create|describe|list|delete` and `store objects put|get|describe|list|delete`, the object
//!   store of service `store.keyhold.dev` (object data streamed both ways, downloads written
//!   atomically);
//! * [`org_policies`]: `org-policies set-policy|describe|delete|list` (Org Policy API v2), e.g.
//!   `gcp.restrictNonCmekServices` to require a customer-managed key for `store.keyhold.dev`;
//! * [`client`]: HTTP, errors and paging; [`credentials`]: which bearer token is sent;
//! * [`output`]: YAML, JSON, table and `value()` printing;
//! * [`parse`]: gcloud's spellings of durations, times, labels and enums;
//! * [`resource`]: resource names from IDs and flags, or full names;
//! * [`files`]: `encrypt` / `decrypt` input and output files (`-` for stdin / stdout);
//! * [`yaml`]: reading the YAML policy files of `set-iam-policy`.
//!
//! Plaintext only ever goes to the file the user named: it is never printed, logged or put in
//! an error message.

mod audit;
mod client;
mod credentials;
mod files;
mod iam;
mod import;
mod key_ops;
mod kms;
mod logging;
mod org_policies;
mod output;
mod parse;
mod projects;
mod resource;
mod services;
mod store;
mod tls;
mod tokens;
mod transfer;
mod yaml;

use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use keyhold_api::Code;
use serde_json::Value;

pub use kms::KmsArgs;
pub use output::OutputFormat;

use client::ApiClient;
use credentials::Credentials;
use output::Kind;
use resource::ResourceArgs;

/// The endpoint used when neither `--endpoint` nor `KEYHOLD_ENDPOINT` is set.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:8080";

/// The client commands: everything except `serve`.
#[derive(clap::Subcommand, Debug)]
pub enum CliCommand {
    /// Manage keys and use them to encrypt and decrypt, as `gcloud kms` does.
    Kms(KmsArgs),
    /// Describe projects and manage their IAM policies, as `gcloud projects` does.
    Projects(projects::ProjectsArgs),
    /// Manage the IAM policy of the whole server (the organization `keyhold`).
    Organizations(projects::OrganizationsArgs),
    /// Commands in beta, as `gcloud beta`: service identities.
    Beta(services::BetaArgs),
    /// Manage the server's bearer tokens (server admins).
    Auth(tokens::AuthArgs),
    /// Read the audit log, as `gcloud logging read` does.
    Logging(logging::LoggingArgs),
    /// Verify the audit log's hash chain, reading the database directly.
    Audit(audit::AuditArgs),
    /// Manage the encrypted object store (service store.keyhold.dev): instances and objects.
    Store(store::StoreArgs),
    /// Manage organization policies on projects, as `gcloud org-policies` does.
    OrgPolicies(org_policies::OrgPoliciesArgs),
    /// TLS helpers: `tls dev-certs` creates development certificates for HTTPS and mTLS.
    Tls(tls::TlsArgs),
}

impl CliCommand {
    /// The command's path as gcloud shows it in errors: `keyhold.kms.keys.create`.
    pub fn command_path(&self) -> String {
        let tail = match self {
            CliCommand::Kms(k) => k.command.path(),
            CliCommand::Projects(p) => p.command.path(),
            CliCommand::Organizations(o) => o.command.path(),
            CliCommand::Beta(b) => b.command.path(),
            CliCommand::Auth(a) => a.command.path(),
            CliCommand::Logging(l) => l.command.path(),
            CliCommand::Audit(a) => a.command.path(),
            CliCommand::Store(s) => s.command.path(),
            CliCommand::OrgPolicies(o) => o.command.path(),
            CliCommand::Tls(t) => t.command.path(),
        };
        format!("keyhold.{tail}")
    }
}

/// Options shared by the client commands; accepted anywhere on the command line.
#[derive(clap::Args, Debug, Clone)]
pub struct ClientOptions {
    /// URL of the Keyhold server.
    #[arg(long, global = true, env = "KEYHOLD_ENDPOINT", default_value = DEFAULT_ENDPOINT, value_name = "URL")]
    pub endpoint: String,
    /// Project of the resources (also read from CLOUDSDK_CORE_PROJECT). Not needed when full
    /// resource names are given.
    #[arg(long, global = true, env = "KEYHOLD_PROJECT", value_name = "PROJECT_ID")]
    pub project: Option<String>,
    /// Output format: yaml (default for one resource), table (default for lists), json, none,
    /// or value(FIELD,...).
    #[arg(long, global = true, value_name = "FORMAT", value_parser = OutputFormat::parse)]
    pub format: Option<OutputFormat>,
    /// File holding the bearer token to send (one line). The environment variable
    /// KEYHOLD_TOKEN takes precedence; with neither, a server on this machine is sent the
    /// owner token from KEYHOLD_DATA_DIR/owner.token (default ./keyhold-data/owner.token).
    #[arg(long, global = true, env = "KEYHOLD_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// For an https:// endpoint: trust only the CA certificate(s) in this PEM file instead of
    /// the system's roots (also read from CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE, as gcloud's
    /// core/custom_ca_certs_file).
    #[arg(long, global = true, env = "KEYHOLD_CA_FILE", value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
    /// For an https:// endpoint that requires mutual TLS: the client certificate (PEM, leaf
    /// first) to present, with --client-key-file.
    #[arg(long, global = true, env = "KEYHOLD_CLIENT_CERT_FILE", value_name = "PATH")]
    pub client_cert_file: Option<PathBuf>,
    /// The private key (PEM) of --client-cert-file.
    #[arg(long, global = true, env = "KEYHOLD_CLIENT_KEY_FILE", value_name = "PATH")]
    pub client_key_file: Option<PathBuf>,
}

/// The environment variable of gcloud's `core/custom_ca_certs_file`, honoured when neither
/// `--ca-file` nor `KEYHOLD_CA_FILE` is set.
pub const GCLOUD_CA_FILE_ENV: &str = "CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE";

impl ClientOptions {
    /// The TLS settings of the client: `--ca-file` (else gcloud's `gcloud_ca_file`) and the
    /// client identity, which takes both files or neither.
    pub fn tls(&self, gcloud_ca_file: Option<PathBuf>) -> Result<keyhold_tls::ClientTls, CliError> {
        let ca_file = self.ca_file.clone().or(gcloud_ca_file.filter(|p| !p.as_os_str().is_empty()));
        let identity = match (&self.client_cert_file, &self.client_key_file) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            _ => {
                return Err(CliError::Usage(
                    "--client-cert-file and --client-key-file (KEYHOLD_CLIENT_CERT_FILE, KEYHOLD_CLIENT_KEY_FILE) go \
                     together: give both or neither"
                        .into(),
                ));
            }
        };
        Ok(keyhold_tls::ClientTls { ca_file, identity })
    }
}

/// Why a client command failed.
#[derive(Debug)]
pub enum CliError {
    /// The server answered with an error status.
    Api {
        /// The canonical code: the server's own, or taken from the HTTP status of an answer
        /// without Google's error JSON (what commands match on, never the text).
        code: Code,
        /// The HTTP status of an answer without Google's error JSON (shown as `HTTP 502`
        /// instead of the code name); `None` for the server's own `google.rpc.Status`.
        foreign_http_status: Option<u16>,
        /// The server's message (the start of the body of a foreign answer).
        message: String,
    },
    /// The server could not be reached.
    Connect {
        /// The endpoint tried.
        endpoint: String,
        /// What went wrong.
        detail: String,
    },
    /// The TLS handshake with the server failed over certificates.
    Tls {
        /// The endpoint tried.
        endpoint: String,
        /// What failed.
        failure: keyhold_tls::TlsFailure,
    },
    /// The command line is incomplete or inconsistent in a way clap cannot check.
    Usage(String),
    /// A file could not be read or written.
    Io(String),
    /// A CRC32C check failed.
    Integrity(String),
    /// Anything else.
    Other(String),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Api { code, foreign_http_status: None, message } => write!(f, "{}: {message}", code.as_str()),
            CliError::Api { foreign_http_status: Some(http), message, .. } => write!(f, "HTTP {http}: {message}"),
            CliError::Connect { endpoint, detail } => write!(
                f,
                "could not connect to the Keyhold server at {endpoint}: {detail}\nIs it running? Start one with \
                 `keyhold serve`, or point --endpoint (or KEYHOLD_ENDPOINT) at a running server."
            ),
            CliError::Tls { endpoint, failure } => {
                writeln!(f, "could not connect to the Keyhold server at {endpoint}: {failure}")?;
                match failure {
                    keyhold_tls::TlsFailure::ServerNotTrusted(_) => f.write_str(
                        "If the server's certificate comes from your own CA (such as `keyhold tls dev-certs`), \
                         trust that CA with --ca-file PATH (or KEYHOLD_CA_FILE, or gcloud's \
                         CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE); check also that --endpoint names the host the \
                         certificate is for.",
                    ),
                    _ => f.write_str(
                        "If the server requires mutual TLS, present a client certificate it trusts with \
                         --client-cert-file and --client-key-file (or KEYHOLD_CLIENT_CERT_FILE and \
                         KEYHOLD_CLIENT_KEY_FILE).",
                    ),
                }
            }
            CliError::Usage(m) | CliError::Io(m) | CliError::Integrity(m) | CliError::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for CliError {}

/// The project: `--project` / `KEYHOLD_PROJECT`, else `CLOUDSDK_CORE_PROJECT`; blank values
/// count as unset.
fn resolve_project(flag: Option<String>, gcloud_env: Option<String>) -> Option<String> {
    [flag, gcloud_env].into_iter().flatten().map(|p| p.trim().to_string()).find(|p| !p.is_empty())
}

/// What every command needs: the client, the project and the requested format.
pub(crate) struct Ctx {
    client: ApiClient,
    project: Option<String>,
    format: Option<OutputFormat>,
}

impl Ctx {
    /// The project, or the error explaining how to set it.
    fn project(&self) -> Result<&str, CliError> {
        self.project.as_deref().ok_or_else(resource::missing_project)
    }

    /// The resource arguments of a command, with the project filled in.
    fn resources<'a>(
        &'a self,
        location: Option<&'a str>,
        keyring: Option<&'a str>,
        key: Option<&'a str>,
    ) -> ResourceArgs<'a> {
        ResourceArgs { project: self.project.as_deref(), location, keyring, key }
    }

    /// Prints one resource (YAML unless `--format` says otherwise).
    fn show(&self, kind: Kind, resource: &Value) -> Result<(), CliError> {
        print_stdout(&output::render_one(self.format.as_ref().unwrap_or(&OutputFormat::Yaml), kind, resource))
    }

    /// Prints a created resource only if `--format` was given: gcloud's create commands are
    /// silent otherwise.
    fn show_created(&self, kind: Kind, resource: &Value) -> Result<(), CliError> {
        match &self.format {
            Some(f) => print_stdout(&output::render_one(f, kind, resource)),
            None => Ok(()),
        }
    }

    /// Prints the result of a list command (a table unless `--format` says otherwise), or
    /// the resources' URIs with `--uri`.
    fn show_list(&self, kind: Kind, items: &[Value], uri: bool) -> Result<(), CliError> {
        let format = self.format.clone().unwrap_or(OutputFormat::Table);
        if items.is_empty() && !matches!(format, OutputFormat::Json | OutputFormat::None) {
            print_stderr("Listed 0 items.");
            return Ok(());
        }
        if uri {
            let text: String = items
                .iter()
                .filter_map(|i| i.get("name").and_then(Value::as_str))
                .map(|n| format!("{}\n", self.client.resource_url(n)))
                .collect();
            return print_stdout(&text);
        }
        print_stdout(&output::render_list(&format, kind, items))
    }
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn print_stdout(text: &str) -> Result<(), CliError> {
    if text.is_empty() {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::Io(format!("Unable to write to standard output: {e}"))),
    }
}

/// Writes a line to stderr, ignoring failures (there is nowhere left to report them).
fn print_stderr(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Runs a client command; errors are printed as gcloud prints them
/// (`ERROR: (keyhold.kms.keys.create) ALREADY_EXISTS: ...`) and exit with status 1.
pub async fn run(cmd: CliCommand, opts: ClientOptions) -> ExitCode {
    let path = cmd.command_path();
    let cmd = match cmd {
        // Reads the database, not the server: no endpoint or token involved.
        CliCommand::Audit(a) => return a.command.run(&path).await,
        // Writes local files: no server involved.
        CliCommand::Tls(t) => return t.command.run(&path).await,
        other => other,
    };
    let result = async {
        let url = client::endpoint_url(&opts.endpoint)?;
        let credentials = Credentials::discover(
            &url,
            std::env::var(credentials::TOKEN_ENV).ok(),
            opts.token_file.as_deref(),
            std::env::var_os("KEYHOLD_DATA_DIR").map(PathBuf::from),
        )?;
        let tls = opts.tls(std::env::var_os(GCLOUD_CA_FILE_ENV).map(PathBuf::from))?;
        let client = ApiClient::with_tls(&opts.endpoint, credentials.clone(), &tls)?;
        let project = resolve_project(opts.project, std::env::var("CLOUDSDK_CORE_PROJECT").ok());
        let ctx = Ctx { client, project, format: opts.format };
        match cmd {
            CliCommand::Kms(k) => k.command.run(&ctx).await,
            CliCommand::Projects(p) => p.command.run(&ctx).await,
            CliCommand::Organizations(o) => o.command.run(&ctx).await,
            CliCommand::Beta(b) => b.command.run(&ctx).await,
            CliCommand::Auth(a) => a.command.run(&ctx).await,
            CliCommand::Logging(l) => l.command.run(&ctx).await,
            CliCommand::Store(s) => s.command.run(&ctx, &opts.endpoint, &credentials).await,
            CliCommand::OrgPolicies(o) => o.command.run(&ctx).await,
            CliCommand::Audit(_) | CliCommand::Tls(_) => unreachable!("handled above"),
        }
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            print_stderr(&format!("ERROR: ({path}) {e}"));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_resolution() {
        assert_eq!(resolve_project(Some("a".into()), Some("b".into())).as_deref(), Some("a"));
        assert_eq!(resolve_project(None, Some("b".into())).as_deref(), Some("b"));
        assert_eq!(resolve_project(Some(" ".into()), Some("b".into())).as_deref(), Some("b"));
        assert_eq!(resolve_project(None, None), None);
    }

    #[test]
    fn error_messages() {
        let e =
            CliError::Api { code: Code::NotFound, foreign_http_status: None, message: "KeyRing r not found.".into() };
        assert_eq!(e.to_string(), "NOT_FOUND: KeyRing r not found.");
        let e = CliError::Connect { endpoint: "http://127.0.0.1:8080".into(), detail: "Connection refused".into() };
        let msg = e.to_string();
        assert!(msg.contains("http://127.0.0.1:8080") && msg.contains("keyhold serve"), "{msg}");
    }

    #[tokio::test]
    async fn unreachable_server_is_reported() {
        // Port 9 (discard) on loopback: nothing listens there on a test machine.
        let client = ApiClient::new("http://127.0.0.1:9").unwrap();
        let err = client.get("projects/p/locations/global/keyRings").await.unwrap_err();
        assert!(matches!(err, CliError::Connect { .. }), "{err}");
        assert!(err.to_string().contains("keyhold serve"));
    }
}
