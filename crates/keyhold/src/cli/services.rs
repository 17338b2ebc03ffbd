//! `keyhold beta services identity create`: the service agent of a Keyhold-integrated service
//! in a project, as `gcloud beta services identity create` creates it.

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use super::output::Kind;
use super::{CliError, Ctx, print_stdout};

/// `keyhold beta`.
#[derive(Args, Debug)]
pub struct BetaArgs {
    /// The command.
    #[command(subcommand)]
    pub command: BetaCommand,
}

/// Commands under `keyhold beta`.
#[derive(Subcommand, Debug)]
pub enum BetaCommand {
    /// Manage the services that use Keyhold keys.
    Services(ServicesArgs),
}

/// `keyhold beta services`.
#[derive(Args, Debug)]
pub struct ServicesArgs {
    /// The command.
    #[command(subcommand)]
    pub command: ServicesCommand,
}

/// Commands under `keyhold beta services`.
#[derive(Subcommand, Debug)]
pub enum ServicesCommand {
    /// Manage service identities (service agents).
    Identity(IdentityArgs),
}

/// `keyhold beta services identity`.
#[derive(Args, Debug)]
pub struct IdentityArgs {
    /// The command.
    #[command(subcommand)]
    pub command: IdentityCommand,
}

/// Commands under `keyhold beta services identity`.
#[derive(Subcommand, Debug)]
pub enum IdentityCommand {
    /// Create (or look up) the service agent of a service in the project:
    /// service-PROJECT_NUMBER@gcp-sa-NAME.iam.gserviceaccount.com.
    Create(IdentityCreate),
}

/// `keyhold beta services identity create`.
#[derive(Args, Debug)]
pub struct IdentityCreate {
    /// The service, e.g. store.keyhold.dev or financialservices.googleapis.com.
    #[arg(long, value_name = "SERVICE")]
    pub service: String,
}

impl BetaCommand {
    /// The command's path below `keyhold` (`beta.services.identity.create`).
    pub fn path(&self) -> String {
        match self {
            BetaCommand::Services(s) => match s.command {
                ServicesCommand::Identity(ref i) => match i.command {
                    IdentityCommand::Create(_) => "beta.services.identity.create".to_string(),
                },
            },
        }
    }

    /// Runs the command.
    pub async fn run(self, ctx: &Ctx) -> Result<(), CliError> {
        match self {
            BetaCommand::Services(s) => match s.command {
                ServicesCommand::Identity(i) => match i.command {
                    IdentityCommand::Create(c) => identity_create(ctx, &c).await,
                },
            },
        }
    }
}

async fn identity_create(ctx: &Ctx, c: &IdentityCreate) -> Result<(), CliError> {
    let project = ctx.project()?;
    let service = c.service.trim();
    if service.is_empty() || service.contains(['/', ':', '?', '#']) || service.contains(char::is_whitespace) {
        return Err(CliError::Usage(format!(
            "Invalid --service \"{}\": give a service name such as store.keyhold.dev.",
            c.service
        )));
    }
    let path = format!("projects/{project}/services/{service}:generateServiceIdentity");
    let op: Value = ctx.client.call_versioned("v1beta1", Method::POST, &path, &[], Some(b"{}".to_vec())).await?;
    let identity = op.get("response").cloned().unwrap_or_else(|| json!({}));
    let Some(email) = identity.get("email").and_then(Value::as_str).filter(|e| !e.is_empty()) else {
        return Err(CliError::Other(
            "the server's answer to generateServiceIdentity has no service identity email".to_string(),
        ));
    };
    match &ctx.format {
        Some(f) => print_stdout(&super::output::render_one(f, Kind::Other, &identity)),
        None => print_stdout(&format!("Service identity created: {email}\n")),
    }
}
