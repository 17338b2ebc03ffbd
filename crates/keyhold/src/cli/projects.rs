//! `keyhold projects ...` and `keyhold organizations ...`: the Resource Manager commands of
//! gcloud that Keyhold serves (describe a project; IAM on a project and on the whole server,
//! which is the one organization, `keyhold`).

use clap::{Args, Subcommand};

use super::iam::{self, BindingFlags, IamSubject, PolicyFileArg};
use super::output::Kind;
use super::{CliError, Ctx};

/// The organization ID of the whole server.
pub const ORGANIZATION_ID: &str = "keyhold";

/// `keyhold projects`.
#[derive(Args, Debug)]
pub struct ProjectsArgs {
    /// The command.
    #[command(subcommand)]
    pub command: ProjectsCommand,
}

/// Commands under `keyhold projects`.
#[derive(Subcommand, Debug)]
pub enum ProjectsCommand {
    /// Show a project: its ID, number, state and creation time.
    Describe(ProjectTarget),
    /// Grant a role to a principal on a project (and so on everything in it).
    AddIamPolicyBinding(ProjectBinding),
    /// Revoke a role from a principal on a project.
    RemoveIamPolicyBinding(ProjectBinding),
    /// Show the IAM policy of a project.
    GetIamPolicy(ProjectTarget),
    /// Replace the IAM policy of a project with one read from a JSON or YAML file.
    SetIamPolicy(ProjectSetPolicy),
}

/// A command on one project.
#[derive(Args, Debug)]
pub struct ProjectTarget {
    /// The project ID (or projects/PROJECT_ID).
    #[arg(value_name = "PROJECT_ID")]
    pub project_id: String,
}

/// `keyhold projects add-iam-policy-binding` / `remove-iam-policy-binding`.
#[derive(Args, Debug)]
pub struct ProjectBinding {
    #[command(flatten)]
    pub target: ProjectTarget,
    #[command(flatten)]
    pub binding: BindingFlags,
}

/// `keyhold projects set-iam-policy`.
#[derive(Args, Debug)]
pub struct ProjectSetPolicy {
    #[command(flatten)]
    pub target: ProjectTarget,
    #[command(flatten)]
    pub file: PolicyFileArg,
}

/// `keyhold organizations`.
#[derive(Args, Debug)]
pub struct OrganizationsArgs {
    /// The command.
    #[command(subcommand)]
    pub command: OrganizationsCommand,
}

/// Commands under `keyhold organizations`: the organization is the whole server.
#[derive(Subcommand, Debug)]
pub enum OrganizationsCommand {
    /// Grant a role to a principal on the whole server (every project).
    AddIamPolicyBinding(OrganizationBinding),
    /// Revoke a role from a principal on the whole server.
    RemoveIamPolicyBinding(OrganizationBinding),
    /// Show the IAM policy of the whole server.
    GetIamPolicy(OrganizationTarget),
    /// Replace the IAM policy of the whole server with one read from a JSON or YAML file.
    SetIamPolicy(OrganizationSetPolicy),
}

/// A command on the organization.
#[derive(Args, Debug)]
pub struct OrganizationTarget {
    /// The organization ID: always `keyhold` (the whole server).
    #[arg(value_name = "ORGANIZATION_ID")]
    pub organization_id: String,
}

/// `keyhold organizations add-iam-policy-binding` / `remove-iam-policy-binding`.
#[derive(Args, Debug)]
pub struct OrganizationBinding {
    #[command(flatten)]
    pub target: OrganizationTarget,
    #[command(flatten)]
    pub binding: BindingFlags,
}

/// `keyhold organizations set-iam-policy`.
#[derive(Args, Debug)]
pub struct OrganizationSetPolicy {
    #[command(flatten)]
    pub target: OrganizationTarget,
    #[command(flatten)]
    pub file: PolicyFileArg,
}

impl ProjectsCommand {
    /// The command's path below `keyhold` (`projects.describe`).
    pub fn path(&self) -> String {
        let tail = match self {
            ProjectsCommand::Describe(_) => "describe",
            ProjectsCommand::AddIamPolicyBinding(_) => "add-iam-policy-binding",
            ProjectsCommand::RemoveIamPolicyBinding(_) => "remove-iam-policy-binding",
            ProjectsCommand::GetIamPolicy(_) => "get-iam-policy",
            ProjectsCommand::SetIamPolicy(_) => "set-iam-policy",
        };
        format!("projects.{tail}")
    }

    /// Runs the command.
    pub async fn run(self, ctx: &Ctx) -> Result<(), CliError> {
        match self {
            ProjectsCommand::Describe(c) => {
                let id = project_id(&c.project_id)?;
                let project = ctx.client.get(&format!("projects/{id}")).await?;
                ctx.show(Kind::Project, &project)
            }
            ProjectsCommand::AddIamPolicyBinding(c) => {
                iam::add_binding(ctx, &project_subject(&c.target)?, &c.binding).await
            }
            ProjectsCommand::RemoveIamPolicyBinding(c) => {
                iam::remove_binding(ctx, &project_subject(&c.target)?, &c.binding).await
            }
            ProjectsCommand::GetIamPolicy(c) => iam::get_policy(ctx, &project_subject(&c)?).await,
            ProjectsCommand::SetIamPolicy(c) => {
                iam::set_policy(ctx, &project_subject(&c.target)?, &c.file.policy_file).await
            }
        }
    }
}

impl OrganizationsCommand {
    /// The command's path below `keyhold` (`organizations.get-iam-policy`).
    pub fn path(&self) -> String {
        let tail = match self {
            OrganizationsCommand::AddIamPolicyBinding(_) => "add-iam-policy-binding",
            OrganizationsCommand::RemoveIamPolicyBinding(_) => "remove-iam-policy-binding",
            OrganizationsCommand::GetIamPolicy(_) => "get-iam-policy",
            OrganizationsCommand::SetIamPolicy(_) => "set-iam-policy",
        };
        format!("organizations.{tail}")
    }

    /// Runs the command.
    pub async fn run(self, ctx: &Ctx) -> Result<(), CliError> {
        match self {
            OrganizationsCommand::AddIamPolicyBinding(c) => {
                iam::add_binding(ctx, &organization_subject(&c.target)?, &c.binding).await
            }
            OrganizationsCommand::RemoveIamPolicyBinding(c) => {
                iam::remove_binding(ctx, &organization_subject(&c.target)?, &c.binding).await
            }
            OrganizationsCommand::GetIamPolicy(c) => iam::get_policy(ctx, &organization_subject(&c)?).await,
            OrganizationsCommand::SetIamPolicy(c) => {
                iam::set_policy(ctx, &organization_subject(&c.target)?, &c.file.policy_file).await
            }
        }
    }
}

/// The project ID of a `PROJECT_ID` argument (`p` or `projects/p`), checked.
fn project_id(arg: &str) -> Result<String, CliError> {
    let id = arg.trim().strip_prefix("projects/").unwrap_or(arg.trim());
    // The server checks project IDs as the project part of a location name.
    keyhold_api::LocationName::new(id, "global").map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(id.to_string())
}

fn project_subject(c: &ProjectTarget) -> Result<IamSubject, CliError> {
    let id = project_id(&c.project_id)?;
    Ok(IamSubject { resource: format!("projects/{id}"), kind: "project", id })
}

fn organization_subject(c: &OrganizationTarget) -> Result<IamSubject, CliError> {
    let id = c.organization_id.trim();
    let id = id.strip_prefix("organizations/").unwrap_or(id);
    if id != ORGANIZATION_ID {
        return Err(CliError::Usage(format!(
            "Unknown organization \"{}\": a Keyhold server is one organization, {ORGANIZATION_ID} \
             (organizations/{ORGANIZATION_ID}); its policy applies to every project.",
            c.organization_id
        )));
    }
    Ok(IamSubject { resource: keyhold_iam::ROOT_RESOURCE.to_string(), kind: "organization", id: id.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects() {
        let p = project_subject(&ProjectTarget { project_id: "projects/my-project".into() }).unwrap();
        assert_eq!((p.resource.as_str(), p.id.as_str()), ("projects/my-project", "my-project"));
        assert!(project_id("bad id").is_err());
        let o = organization_subject(&OrganizationTarget { organization_id: "keyhold".into() }).unwrap();
        assert_eq!(o.resource, "organizations/keyhold");
        assert_eq!(o.updated_message(), "Updated IAM policy for organization [keyhold].");
        let e = organization_subject(&OrganizationTarget { organization_id: "123".into() }).unwrap_err();
        assert!(e.to_string().contains("organizations/keyhold"), "{e}");
    }
}
