//! IAM policy commands shared by key rings, keys, projects and the organization (the whole
//! server): `get-iam-policy`, `set-iam-policy`, `add-iam-policy-binding` and
//! `remove-iam-policy-binding`, with gcloud's read-modify-write and messages.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use keyhold_api::Code;
use serde_json::{Value, json};

use super::output::Kind;
use super::{CliError, Ctx, print_stderr};

/// How many times a binding change is tried when the policy changes underneath it (`ABORTED`):
/// the first attempt and five retries.
const ATTEMPTS: u32 = 6;

/// gcloud's message when `remove-iam-policy-binding` finds nothing to remove.
pub const BINDING_NOT_FOUND: &str = "Policy binding with the specified principal and role not found!";

/// `--member` and `--role`.
#[derive(Args, Debug, Clone)]
pub struct BindingFlags {
    /// The principal: user:EMAIL, serviceAccount:EMAIL, domain:DOMAIN, allUsers or
    /// allAuthenticatedUsers.
    #[arg(long, value_name = "PRINCIPAL")]
    pub member: String,
    /// The role, e.g. roles/cloudkms.cryptoKeyEncrypterDecrypter.
    #[arg(long, value_name = "ROLE")]
    pub role: String,
}

/// The policy file of `set-iam-policy`.
#[derive(Args, Debug, Clone)]
pub struct PolicyFileArg {
    /// A file holding the policy, in JSON or YAML, as get-iam-policy prints it (--format=json
    /// or the default YAML). If it has an etag, the update fails when the policy changed since;
    /// without one, the policy is replaced unconditionally.
    #[arg(value_name = "POLICY_FILE")]
    pub policy_file: PathBuf,
}

/// A resource with an IAM policy, as the messages name it.
#[derive(Clone, Debug)]
pub struct IamSubject {
    /// Its full resource name (`projects/p/locations/l/keyRings/r`).
    pub resource: String,
    /// `key`, `keyring`, `project` or `organization`.
    pub kind: &'static str,
    /// What the message shows: the key or key ring ID, the project ID, the organization ID.
    pub id: String,
}

impl IamSubject {
    /// What gcloud prints to stderr after changing the policy: `Updated IAM policy for key k.`
    /// (as Cloud KMS documentation shows it) or `Updated IAM policy for project [p].`.
    pub fn updated_message(&self) -> String {
        match self.kind {
            "key" | "keyring" => format!("Updated IAM policy for {} {}.", self.kind, self.id),
            _ => format!("Updated IAM policy for {} [{}].", self.kind, self.id),
        }
    }
}

/// Adds `member` to the binding of `role` (without a condition), creating the binding if
/// needed. Returns whether the policy changed.
pub fn add_member(policy: &mut Value, role: &str, member: &str) -> Result<bool, CliError> {
    let Some(obj) = policy.as_object_mut() else {
        return Err(CliError::Other("the server returned a policy that is not a JSON object".into()));
    };
    let bindings = obj.entry("bindings").or_insert_with(|| json!([]));
    let Some(bindings) = bindings.as_array_mut() else {
        return Err(CliError::Other("the server returned a policy whose bindings are not a list".into()));
    };
    for b in bindings.iter_mut() {
        if b.get("role").and_then(Value::as_str) != Some(role) || b.get("condition").is_some_and(|c| !c.is_null()) {
            continue;
        }
        let members = b.as_object_mut().map(|o| o.entry("members").or_insert_with(|| json!([])));
        let Some(Value::Array(members)) = members else { continue };
        if members.iter().any(|m| m.as_str() == Some(member)) {
            return Ok(false);
        }
        members.push(json!(member));
        return Ok(true);
    }
    bindings.push(json!({"members": [member], "role": role}));
    Ok(true)
}

/// Removes `member` from the binding of `role` (dropping the binding when it empties); fails
/// as gcloud does when there is no such binding.
pub fn remove_member(policy: &mut Value, role: &str, member: &str) -> Result<(), CliError> {
    let not_found = || CliError::Other(BINDING_NOT_FOUND.to_string());
    let bindings = policy.get_mut("bindings").and_then(Value::as_array_mut).ok_or_else(not_found)?;
    let mut found = false;
    for b in bindings.iter_mut() {
        if b.get("role").and_then(Value::as_str) != Some(role) || b.get("condition").is_some_and(|c| !c.is_null()) {
            continue;
        }
        if let Some(members) = b.get_mut("members").and_then(Value::as_array_mut) {
            let before = members.len();
            members.retain(|m| m.as_str() != Some(member));
            found |= members.len() != before;
        }
    }
    if !found {
        return Err(not_found());
    }
    bindings.retain(|b| b.get("members").and_then(Value::as_array).is_some_and(|m| !m.is_empty()));
    Ok(())
}

/// `get-iam-policy`.
pub async fn get_policy(ctx: &Ctx, subject: &IamSubject) -> Result<(), CliError> {
    let policy = ctx.client.get(&format!("{}:getIamPolicy", subject.resource)).await?;
    ctx.show(Kind::Policy, &policy)
}

/// Sends a complete policy with gcloud's update mask (`bindings,etag`, plus `auditConfigs`
/// when the policy has them).
async fn send_policy(ctx: &Ctx, subject: &IamSubject, policy: &Value) -> Result<Value, CliError> {
    let mut mask = vec!["bindings", "etag"];
    if policy.get("auditConfigs").is_some() {
        mask.push("auditConfigs");
    }
    let body = json!({"policy": policy, "updateMask": mask.join(",")});
    ctx.client.post(&format!("{}:setIamPolicy", subject.resource), &[], &body).await
}

/// Prints the outcome of a change: the message on stderr, the new policy on stdout.
fn show_updated(ctx: &Ctx, subject: &IamSubject, policy: &Value) -> Result<(), CliError> {
    print_stderr(&subject.updated_message());
    ctx.show(Kind::Policy, policy)
}

/// Reads a policy file: JSON, else YAML.
pub fn read_policy_file(path: &Path) -> Result<Value, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Io(format!("Unable to read the policy file {}: {e}", path.display())))?;
    let trimmed = text.trim_start();
    let policy = if trimmed.starts_with('{') {
        serde_json::from_str::<Value>(&text)
            .map_err(|e| CliError::Usage(format!("The policy file {} is not valid JSON: {e}", path.display())))?
    } else {
        super::yaml::parse(&text).map_err(|e| {
            CliError::Usage(format!("The policy file {} is not valid JSON or YAML: {e}", path.display()))
        })?
    };
    // A `setIamPolicy` request body is accepted too.
    let policy = match policy {
        Value::Object(mut m) if m.len() <= 2 && m.get("policy").is_some_and(Value::is_object) => {
            m.remove("policy").unwrap_or_default()
        }
        other => other,
    };
    if !policy.is_object() {
        return Err(CliError::Usage(format!(
            "The policy file {} must hold a policy object (bindings, etag, version).",
            path.display()
        )));
    }
    Ok(policy)
}

/// `set-iam-policy POLICY_FILE`.
pub async fn set_policy(ctx: &Ctx, subject: &IamSubject, file: &Path) -> Result<(), CliError> {
    let policy = read_policy_file(file)?;
    let updated = send_policy(ctx, subject, &policy).await?;
    show_updated(ctx, subject, &updated)
}

/// Whether an error is the server's answer to a stale etag (or another concurrent write).
fn is_aborted(e: &CliError) -> bool {
    matches!(e, CliError::Api { code: Code::Aborted, .. })
}

/// Read-modify-write of a policy, retried while it races with other writers.
async fn modify_policy(
    ctx: &Ctx,
    subject: &IamSubject,
    change: impl Fn(&mut Value) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let mut attempt = 1;
    loop {
        let mut policy = ctx.client.get(&format!("{}:getIamPolicy", subject.resource)).await?;
        change(&mut policy)?;
        match send_policy(ctx, subject, &policy).await {
            Ok(updated) => return show_updated(ctx, subject, &updated),
            Err(e) if is_aborted(&e) && attempt < ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// `add-iam-policy-binding --member M --role R`.
pub async fn add_binding(ctx: &Ctx, subject: &IamSubject, b: &BindingFlags) -> Result<(), CliError> {
    keyhold_iam::member::validate_member(&b.member).map_err(|e| CliError::Usage(e.to_string()))?;
    if !b.role.starts_with("roles/") {
        return Err(CliError::Usage(format!(
            "Invalid role \"{}\": roles are named roles/..., e.g. roles/cloudkms.cryptoKeyEncrypterDecrypter.",
            b.role
        )));
    }
    modify_policy(ctx, subject, |p| add_member(p, &b.role, &b.member).map(|_| ())).await
}

/// `remove-iam-policy-binding --member M --role R`.
pub async fn remove_binding(ctx: &Ctx, subject: &IamSubject, b: &BindingFlags) -> Result<(), CliError> {
    modify_policy(ctx, subject, |p| remove_member(p, &b.role, &b.member)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_members() {
        let mut p = json!({"etag": "ACAB"});
        assert!(add_member(&mut p, "roles/viewer", "user:a@b.com").unwrap());
        assert!(add_member(&mut p, "roles/viewer", "user:c@d.com").unwrap());
        assert!(!add_member(&mut p, "roles/viewer", "user:a@b.com").unwrap());
        assert!(add_member(&mut p, "roles/owner", "user:a@b.com").unwrap());
        assert_eq!(
            p,
            json!({"etag": "ACAB", "bindings": [
                {"members": ["user:a@b.com", "user:c@d.com"], "role": "roles/viewer"},
                {"members": ["user:a@b.com"], "role": "roles/owner"},
            ]})
        );
    }

    #[test]
    fn removing_members() {
        let mut p = json!({"bindings": [
            {"members": ["user:a@b.com", "user:c@d.com"], "role": "roles/viewer"},
            {"members": ["user:a@b.com"], "role": "roles/owner"},
        ], "etag": "x"});
        remove_member(&mut p, "roles/owner", "user:a@b.com").unwrap();
        remove_member(&mut p, "roles/viewer", "user:c@d.com").unwrap();
        assert_eq!(p, json!({"bindings": [{"members": ["user:a@b.com"], "role": "roles/viewer"}], "etag": "x"}));
        let e = remove_member(&mut p, "roles/owner", "user:a@b.com").unwrap_err();
        assert_eq!(e.to_string(), BINDING_NOT_FOUND);
        assert!(remove_member(&mut json!({"etag": "ACAB"}), "roles/viewer", "user:a@b.com").is_err());
    }

    #[test]
    fn messages() {
        let key = IamSubject {
            resource: "projects/p/locations/l/keyRings/r/cryptoKeys/k".into(),
            kind: "key",
            id: "k".into(),
        };
        assert_eq!(key.updated_message(), "Updated IAM policy for key k.");
        let ring = IamSubject { resource: "projects/p/locations/l/keyRings/r".into(), kind: "keyring", id: "r".into() };
        assert_eq!(ring.updated_message(), "Updated IAM policy for keyring r.");
        let project = IamSubject { resource: "projects/p".into(), kind: "project", id: "p".into() };
        assert_eq!(project.updated_message(), "Updated IAM policy for project [p].");
    }

    #[test]
    fn policy_files() {
        let dir = tempfile::tempdir().unwrap();
        let json_file = dir.path().join("p.json");
        std::fs::write(
            &json_file,
            r#"{"bindings":[{"role":"roles/viewer","members":["user:a@b.com"]}],"etag":"ACAB"}"#,
        )
        .unwrap();
        let yaml_file = dir.path().join("p.yaml");
        std::fs::write(&yaml_file, "bindings:\n- members:\n  - user:a@b.com\n  role: roles/viewer\netag: ACAB\n")
            .unwrap();
        assert_eq!(read_policy_file(&json_file).unwrap(), read_policy_file(&yaml_file).unwrap());
        let wrapped = dir.path().join("w.json");
        std::fs::write(&wrapped, r#"{"policy":{"etag":"ACAB"},"updateMask":"bindings,etag"}"#).unwrap();
        assert_eq!(read_policy_file(&wrapped).unwrap(), json!({"etag": "ACAB"}));
        let list = dir.path().join("l.yaml");
        std::fs::write(&list, "- a\n").unwrap();
        assert!(read_policy_file(&list).is_err());
        assert!(read_policy_file(&dir.path().join("missing")).is_err());
    }
}
