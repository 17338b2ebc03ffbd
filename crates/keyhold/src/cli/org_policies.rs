//! `keyhold org-policies ...`: the Organization Policy API v2 commands of `gcloud org-policies`
//! for a project's policies, e.g. `gcp.restrictNonCmekServices`, which makes services such as
//! `store.keyhold.dev` refuse to create resources without a customer-managed key.
//!
//! * `set-policy FILE` → `PUT /v2/{name}` with the policy read from the file;
//! * `describe` / `delete CONSTRAINT` → `GET` / `DELETE /v2/projects/P/policies/CONSTRAINT`;
//! * `list` → `GET /v2/projects/P/policies`.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::Value;

use super::output::Kind;
use super::output::{Column, PagingFlags, list_all, show_list, text_at};
use super::{CliError, Ctx, print_stderr};

/// The API version of the Organization Policy API.
const VERSION: &str = "v2";
/// The pattern of a policy name, for messages.
const POLICY_PATTERN: &str = "projects/PROJECT/policies/CONSTRAINT";

/// `keyhold org-policies`.
#[derive(Args, Debug)]
pub struct OrgPoliciesArgs {
    /// The command.
    #[command(subcommand)]
    pub command: OrgPoliciesCommand,
}

/// Commands under `keyhold org-policies`.
#[derive(Subcommand, Debug)]
pub enum OrgPoliciesCommand {
    /// Create or replace a policy with one read from a JSON or YAML file.
    SetPolicy(SetPolicyArgs),
    /// Show the policy of a constraint on a project.
    Describe(ConstraintTarget),
    /// Delete the policy of a constraint on a project (the constraint's default applies again).
    Delete(ConstraintTarget),
    /// List the policies set on a project.
    List(ListArgs),
}

/// `keyhold org-policies set-policy`.
#[derive(Args, Debug)]
pub struct SetPolicyArgs {
    /// A file holding the policy, in JSON or YAML, with its name, e.g.
    /// `{"name": "projects/P/policies/gcp.restrictNonCmekServices", "spec": {"rules":
    /// [{"values": {"deniedValues": ["store.keyhold.dev"]}}]}}`.
    #[arg(value_name = "POLICY_FILE")]
    pub policy_file: PathBuf,
}

/// A command on the policy of one constraint.
#[derive(Args, Debug)]
pub struct ConstraintTarget {
    /// The constraint (`gcp.restrictNonCmekServices` or
    /// `constraints/gcp.restrictNonCmekServices`), or the policy's full name
    /// projects/P/policies/CONSTRAINT.
    #[arg(value_name = "CONSTRAINT")]
    pub constraint: String,
}

/// `keyhold org-policies list`.
#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub paging: PagingFlags,
}

impl OrgPoliciesCommand {
    /// The command's path below `keyhold` (`org-policies.set-policy`).
    pub fn path(&self) -> String {
        let tail = match self {
            OrgPoliciesCommand::SetPolicy(_) => "set-policy",
            OrgPoliciesCommand::Describe(_) => "describe",
            OrgPoliciesCommand::Delete(_) => "delete",
            OrgPoliciesCommand::List(_) => "list",
        };
        format!("org-policies.{tail}")
    }

    /// Runs the command.
    pub async fn run(self, ctx: &Ctx) -> Result<(), CliError> {
        match self {
            OrgPoliciesCommand::SetPolicy(c) => set_policy(ctx, &c.policy_file).await,
            OrgPoliciesCommand::Describe(c) => {
                let name = policy_name(&c.constraint, ctx.project.as_deref())?;
                let policy: Value = ctx.client.call_versioned(VERSION, Method::GET, &name, &[], None).await?;
                ctx.show(Kind::Other, &policy)
            }
            OrgPoliciesCommand::Delete(c) => {
                let name = policy_name(&c.constraint, ctx.project.as_deref())?;
                let _: Value = ctx.client.call_versioned(VERSION, Method::DELETE, &name, &[], None).await?;
                print_stderr(&format!("Deleted policy [{name}]."));
                Ok(())
            }
            OrgPoliciesCommand::List(c) => {
                let project = ctx.project()?;
                check_project(project)?;
                let items =
                    list_all(ctx, VERSION, &format!("projects/{project}/policies"), "policies", &[], &c.paging).await?;
                show_list(ctx, &items, POLICY_COLUMNS)
            }
        }
    }
}

/// A constraint as the API names it in a policy name: without the `constraints/` prefix that
/// gcloud accepts.
pub fn normalize_constraint(constraint: &str) -> Result<String, CliError> {
    let c = constraint.trim();
    let c = c.strip_prefix("constraints/").unwrap_or(c);
    if c.is_empty() || !c.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        return Err(CliError::Usage(format!(
            "Invalid constraint \"{constraint}\": expected a constraint name such as gcp.restrictNonCmekServices \
             (or constraints/gcp.restrictNonCmekServices)."
        )));
    }
    Ok(c.to_string())
}

fn check_project(project: &str) -> Result<(), CliError> {
    keyhold_api::LocationName::new(project, "global").map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(())
}

/// The policy's name, `projects/P/policies/CONSTRAINT`, from a `CONSTRAINT` argument (or a
/// full policy name) and the project.
pub fn policy_name(arg: &str, project: Option<&str>) -> Result<String, CliError> {
    let arg = arg.trim();
    if arg.starts_with("projects/") {
        return check_policy_name(arg);
    }
    let constraint = normalize_constraint(arg)?;
    let project = project.ok_or_else(super::resource::missing_project)?;
    check_project(project)?;
    Ok(format!("projects/{project}/policies/{constraint}"))
}

/// Checks a full policy name: `projects/P/policies/CONSTRAINT`.
fn check_policy_name(name: &str) -> Result<String, CliError> {
    let bad = || CliError::Usage(format!("\"{name}\" is not a valid policy name; expected {POLICY_PATTERN}."));
    match name.split('/').collect::<Vec<_>>().as_slice() {
        ["projects", p, "policies", c] => {
            check_project(p).map_err(|_| bad())?;
            let c = normalize_constraint(c).map_err(|_| bad())?;
            Ok(format!("projects/{p}/policies/{c}"))
        }
        _ => Err(bad()),
    }
}

/// Reads a policy file (JSON, else YAML) and returns the policy and its checked name.
pub fn read_policy_file(path: &Path) -> Result<(Value, String), CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Io(format!("Unable to read the policy file {}: {e}", path.display())))?;
    let policy = if text.trim_start().starts_with('{') {
        serde_json::from_str::<Value>(&text)
            .map_err(|e| CliError::Usage(format!("The policy file {} is not valid JSON: {e}", path.display())))?
    } else {
        super::yaml::parse(&text).map_err(|e| {
            CliError::Usage(format!("The policy file {} is not valid JSON or YAML: {e}", path.display()))
        })?
    };
    if !policy.is_object() {
        return Err(CliError::Usage(format!(
            "The policy file {} must hold a policy object (name, spec).",
            path.display()
        )));
    }
    let Some(name) = policy.get("name").and_then(Value::as_str).filter(|n| !n.trim().is_empty()) else {
        return Err(CliError::Usage(format!(
            "The policy file {} has no name: set \"name\" to {POLICY_PATTERN}.",
            path.display()
        )));
    };
    let name = check_policy_name(name.trim())?;
    Ok((policy, name))
}

async fn set_policy(ctx: &Ctx, file: &Path) -> Result<(), CliError> {
    let (policy, name) = read_policy_file(file)?;
    let body = serde_json::to_vec(&policy).map_err(|e| CliError::Other(format!("cannot encode the request: {e}")))?;
    let updated: Value = ctx.client.call_versioned(VERSION, Method::PUT, &name, &[], Some(body)).await?;
    ctx.show(Kind::Other, &updated)
}

/// `SET` when the policy's rules restrict values, as gcloud's LIST_POLICY column shows it.
fn list_policy(policy: &Value) -> String {
    let rules = policy.pointer("/spec/rules").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let set = rules.iter().any(|r| r.get("values").is_some_and(|v| !v.is_null()));
    (if set { "SET" } else { "-" }).to_string()
}

const POLICY_COLUMNS: &[Column] = &[
    ("CONSTRAINT", |v| text_at(v, "name").rsplit('/').next().unwrap_or_default().to_string()),
    ("LIST_POLICY", list_policy),
    ("ETAG", |v| text_at(v, "etag")),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{CliCommand, ClientOptions};
    use clap::{CommandFactory, Parser};
    use serde_json::json;

    #[derive(Parser, Debug)]
    #[command(name = "keyhold")]
    struct TestCli {
        #[command(flatten)]
        client: ClientOptions,
        #[command(subcommand)]
        command: CliCommand,
    }

    #[test]
    fn command_tree() {
        TestCli::command().debug_assert();
        for (line, path) in [
            ("org-policies set-policy policy.yaml", "org-policies.set-policy"),
            ("org-policies describe gcp.restrictNonCmekServices --project p", "org-policies.describe"),
            ("org-policies delete constraints/gcp.restrictNonCmekServices --project p", "org-policies.delete"),
            ("org-policies list --project p", "org-policies.list"),
        ] {
            let cli = TestCli::try_parse_from(std::iter::once("keyhold").chain(line.split_whitespace())).unwrap();
            assert_eq!(cli.command.command_path(), format!("keyhold.{path}"), "{line}");
        }
    }

    #[test]
    fn constraint_names() {
        assert_eq!(normalize_constraint("gcp.restrictNonCmekServices").unwrap(), "gcp.restrictNonCmekServices");
        assert_eq!(
            normalize_constraint(" constraints/gcp.restrictNonCmekServices ").unwrap(),
            "gcp.restrictNonCmekServices"
        );
        for bad in ["", "constraints/", "a/b", "gcp.restrict NonCmek", "projects/p"] {
            assert!(normalize_constraint(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            policy_name("constraints/gcp.restrictNonCmekServices", Some("p")).unwrap(),
            "projects/p/policies/gcp.restrictNonCmekServices"
        );
        assert_eq!(policy_name("projects/q/policies/gcp.x", None).unwrap(), "projects/q/policies/gcp.x");
        assert_eq!(
            policy_name("projects/q/policies/constraints/gcp.x", None).unwrap_err().to_string(),
            "\"projects/q/policies/constraints/gcp.x\" is not a valid policy name; expected \
             projects/PROJECT/policies/CONSTRAINT."
        );
        assert!(policy_name("gcp.x", None).unwrap_err().to_string().contains("[project]"));
        assert!(policy_name("gcp.x", Some("bad project")).is_err());
    }

    #[test]
    fn policy_files() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = dir.path().join("policy.yaml");
        std::fs::write(
            &yaml,
            "# deny the store without CMEK\nname: projects/p/policies/gcp.restrictNonCmekServices\nspec:\n  rules:\n  \
             - values:\n      deniedValues:\n      - store.keyhold.dev\n",
        )
        .unwrap();
        let expected = json!({
            "name": "projects/p/policies/gcp.restrictNonCmekServices",
            "spec": {"rules": [{"values": {"deniedValues": ["store.keyhold.dev"]}}]},
        });
        let (policy, name) = read_policy_file(&yaml).unwrap();
        assert_eq!(policy, expected);
        assert_eq!(name, "projects/p/policies/gcp.restrictNonCmekServices");

        let json_file = dir.path().join("policy.json");
        std::fs::write(&json_file, expected.to_string()).unwrap();
        assert_eq!(read_policy_file(&json_file).unwrap(), (expected, name));

        let nameless = dir.path().join("nameless.yaml");
        std::fs::write(&nameless, "spec:\n  rules: []\n").unwrap();
        assert!(read_policy_file(&nameless).unwrap_err().to_string().contains("has no name"));
        let bad_name = dir.path().join("bad.json");
        std::fs::write(&bad_name, r#"{"name": "gcp.restrictNonCmekServices"}"#).unwrap();
        assert!(read_policy_file(&bad_name).unwrap_err().to_string().contains(POLICY_PATTERN));
        let list = dir.path().join("list.yaml");
        std::fs::write(&list, "- a\n").unwrap();
        assert!(read_policy_file(&list).unwrap_err().to_string().contains("policy object"));
        assert!(read_policy_file(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn list_table() {
        let policies = [
            json!({"name": "projects/p/policies/gcp.restrictNonCmekServices", "etag": "CAE=",
                   "spec": {"rules": [{"values": {"deniedValues": ["store.keyhold.dev"]}}]}}),
            json!({"name": "projects/p/policies/gcp.other", "spec": {"rules": [{"enforce": true}]}}),
        ];
        assert_eq!(
            super::super::output::table(&policies, POLICY_COLUMNS),
            "CONSTRAINT                   LIST_POLICY  ETAG\n\
             gcp.restrictNonCmekServices  SET          CAE=\n\
             gcp.other                    -\n"
        );
    }
}
