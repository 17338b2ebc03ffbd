//! Parsing of `/v1/...` paths into the resource they address and the custom verb, if any
//! (`projects/p/locations/l/keyRings/r/cryptoKeys/k:encrypt`).

use keyhold_api::name::{check_id, parse_version_id};
use keyhold_api::{CryptoKeyName, CryptoKeyVersionName, ImportJobName, KeyRingName, LocationName, NameError};

/// What a path addresses.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// `projects/{p}/locations`.
    Locations(String),
    /// `projects/{p}/locations/{l}`.
    Location(LocationName),
    /// `.../locations/{l}/keyRings`.
    KeyRings(LocationName),
    /// `.../keyRings/{r}`.
    KeyRing(KeyRingName),
    /// `.../keyRings/{r}/cryptoKeys`.
    CryptoKeys(KeyRingName),
    /// `.../keyRings/{r}/importJobs`.
    ImportJobs(KeyRingName),
    /// `.../importJobs/{j}`.
    ImportJob(ImportJobName),
    /// `.../locations/{l}/retiredResources`.
    RetiredResources(LocationName),
    /// `.../locations/{l}/retiredResources/{id}` (the full name).
    RetiredResource(String),
    /// `.../cryptoKeys/{k}`.
    CryptoKey(CryptoKeyName),
    /// `.../cryptoKeys/{k}/cryptoKeyVersions`.
    Versions(CryptoKeyName),
    /// `.../cryptoKeyVersions/{v}`.
    Version(CryptoKeyVersionName),
    /// `.../cryptoKeyVersions/{v}/publicKey`.
    PublicKey(CryptoKeyVersionName),
    /// `projects/{p}` (Resource Manager: describe, IAM).
    Project(String),
    /// `projects/{p}/auditLogs` (`p` may be `-`: every project).
    AuditLogs(String),
    /// `projects/{p}/services/{s}` (Service Usage, under `/v1beta1/`).
    Service {
        /// Project ID.
        project: String,
        /// Service name, e.g. `store.keyhold.dev`.
        service: String,
    },
    /// `projects/-/serviceAccounts/{email}` (IAM Credentials).
    ServiceAccount(String),
    /// `organizations/keyhold`: the whole server.
    Organization,
    /// `tokens` (Keyhold's token admin API).
    Tokens,
    /// `tokens/{id}`.
    Token(String),
}

impl Target {
    /// The resource whose IAM policy this target is, if it holds one: the server, a project,
    /// a key ring or a crypto key.
    pub fn iam_resource(&self) -> Option<keyhold_kms::IamResource> {
        use keyhold_kms::IamResource;
        match self {
            Target::Organization => Some(IamResource::Root),
            Target::Project(p) => Some(IamResource::Project(p.clone())),
            Target::KeyRing(r) => Some(IamResource::KeyRing(r.clone())),
            Target::CryptoKey(k) => Some(IamResource::CryptoKey(k.clone())),
            Target::ImportJob(j) => Some(IamResource::ImportJob(j.clone())),
            _ => None,
        }
    }
}

/// Why a path is not served.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteError {
    /// Not a Cloud KMS resource path at all.
    Unknown,
    /// The shape is right but a name part is invalid.
    BadName(NameError),
}

impl From<NameError> for RouteError {
    fn from(e: NameError) -> Self {
        RouteError::BadName(e)
    }
}

/// Splits `path` (without the leading `/v1/`) into its target and optional `:verb`.
pub fn parse(path: &str) -> Result<(Target, Option<&str>), RouteError> {
    let (path, verb) = match path.rfind('/') {
        Some(slash) => match path[slash..].find(':') {
            Some(colon) => (&path[..slash + colon], Some(&path[slash + colon + 1..])),
            None => (path, None),
        },
        None => (path, None),
    };
    let seg: Vec<&str> = path.split('/').collect();
    match seg.as_slice() {
        ["organizations", "keyhold"] => return with_verb(Target::Organization, verb),
        ["tokens"] => return with_verb(Target::Tokens, verb),
        ["tokens", id] if check_id("token", id).is_ok() => return with_verb(Target::Token(id.to_string()), verb),
        ["projects", "-", "auditLogs"] => return with_verb(Target::AuditLogs("-".into()), verb),
        ["projects", "-", "serviceAccounts", email] if email.contains('@') && !email.is_empty() => {
            return with_verb(Target::ServiceAccount(email.to_string()), verb);
        }
        _ => {}
    }
    if seg.len() < 2 || seg[0] != "projects" {
        return Err(RouteError::Unknown);
    }
    let project = seg[1];
    let location = || LocationName::new(project, seg[3]);
    let ring = || -> Result<KeyRingName, NameError> { KeyRingName::new(&location()?, seg[5]) };
    let key = || -> Result<CryptoKeyName, NameError> { CryptoKeyName::new(&ring()?, seg[7]) };
    let target = match seg.as_slice() {
        [_, _] => {
            LocationName::new(project, "global")?;
            Target::Project(project.to_string())
        }
        [_, _, "auditLogs"] => {
            LocationName::new(project, "global")?;
            Target::AuditLogs(project.to_string())
        }
        [_, _, "services", service] if !service.is_empty() => {
            LocationName::new(project, "global")?;
            Target::Service { project: project.to_string(), service: service.to_string() }
        }
        [_, _, "locations"] => {
            LocationName::new(project, "global")?;
            Target::Locations(project.to_string())
        }
        [_, _, "locations", _] => Target::Location(location()?),
        [_, _, "locations", _, "keyRings"] => Target::KeyRings(location()?),
        [_, _, "locations", _, "retiredResources"] => Target::RetiredResources(location()?),
        [_, _, "locations", _, "retiredResources", id] => {
            check_id("RetiredResource", id)?;
            Target::RetiredResource(format!("{}/retiredResources/{id}", location()?))
        }
        [_, _, "locations", _, "keyRings", _] => Target::KeyRing(ring()?),
        [_, _, "locations", _, "keyRings", _, "cryptoKeys"] => Target::CryptoKeys(ring()?),
        [_, _, "locations", _, "keyRings", _, "importJobs"] => Target::ImportJobs(ring()?),
        [_, _, "locations", _, "keyRings", _, "importJobs", j] => Target::ImportJob(ImportJobName::new(&ring()?, j)?),
        [_, _, "locations", _, "keyRings", _, "cryptoKeys", _] => Target::CryptoKey(key()?),
        [_, _, "locations", _, "keyRings", _, "cryptoKeys", _, "cryptoKeyVersions"] => Target::Versions(key()?),
        [_, _, "locations", _, "keyRings", _, "cryptoKeys", _, "cryptoKeyVersions", v, rest @ ..]
            if rest.is_empty() || rest == ["publicKey"] =>
        {
            let key = key()?;
            let version = parse_version_id(v).ok_or_else(|| NameError::Malformed {
                kind: "CryptoKeyVersion",
                name: format!("{key}/cryptoKeyVersions/{v}"),
                pattern: "version IDs are positive integers",
            })?;
            if rest.is_empty() {
                Target::Version(key.version(version))
            } else {
                Target::PublicKey(key.version(version))
            }
        }
        _ => return Err(RouteError::Unknown),
    };
    with_verb(target, verb)
}

fn with_verb(target: Target, verb: Option<&str>) -> Result<(Target, Option<&str>), RouteError> {
    if let Some(v) = verb {
        check_id("verb", v).map_err(|_| RouteError::Unknown)?;
    }
    Ok((target, verb))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_and_targets() {
        let (t, v) = parse("projects/p/locations/global/keyRings/r/cryptoKeys/k:encrypt").unwrap();
        assert!(matches!(t, Target::CryptoKey(ref k) if k.crypto_key == "k"));
        assert_eq!(v, Some("encrypt"));
        let (t, v) = parse("projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/3:destroy").unwrap();
        assert!(matches!(t, Target::Version(ref n) if n.version == 3));
        assert_eq!(v, Some("destroy"));
        let (t, v) =
            parse("projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/3/publicKey").unwrap();
        assert!(matches!(t, Target::PublicKey(ref n) if n.version == 3));
        assert_eq!(v, None);
        assert!(parse("projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/3/other").is_err());
        let (t, v) = parse("projects/p/locations/us-east1/keyRings").unwrap();
        assert!(matches!(t, Target::KeyRings(_)));
        assert_eq!(v, None);
        assert!(matches!(parse("projects/p/locations").unwrap().0, Target::Locations(_)));
        let (t, v) = parse("projects/p/locations/global/keyRings/r/importJobs/j:getIamPolicy").unwrap();
        assert!(matches!(t, Target::ImportJob(ref j) if j.import_job == "j"));
        assert_eq!(v, Some("getIamPolicy"));
        assert!(matches!(parse("projects/p/locations/global/keyRings/r/importJobs").unwrap().0, Target::ImportJobs(_)));
        assert!(matches!(parse("projects/p/locations/l/keyRings/r/importJobs/a.b"), Err(RouteError::BadName(_))));
        assert_eq!(parse("projects/p:getIamPolicy").unwrap(), (Target::Project("p".into()), Some("getIamPolicy")));
        assert_eq!(parse("projects/-/auditLogs").unwrap().0, Target::AuditLogs("-".into()));
        assert_eq!(
            parse("projects/p/services/store.keyhold.dev:generateServiceIdentity").unwrap(),
            (
                Target::Service { project: "p".into(), service: "store.keyhold.dev".into() },
                Some("generateServiceIdentity")
            )
        );
        assert_eq!(
            parse("projects/-/serviceAccounts/service-1@gcp-sa-store.iam.gserviceaccount.com:generateAccessToken")
                .unwrap()
                .0,
            Target::ServiceAccount("service-1@gcp-sa-store.iam.gserviceaccount.com".into())
        );
        assert_eq!(parse("organizations/keyhold:setIamPolicy").unwrap().0, Target::Organization);
        assert_eq!(parse("tokens/abc").unwrap().0, Target::Token("abc".into()));
    }

    #[test]
    fn rejects() {
        assert_eq!(parse("foo/bar"), Err(RouteError::Unknown));
        assert_eq!(parse("projects/p/locations/l/keyRings/r/other"), Err(RouteError::Unknown));
        assert!(matches!(parse("projects/p/locations/l/keyRings/bad.id"), Err(RouteError::BadName(_))));
        assert!(matches!(
            parse("projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/0"),
            Err(RouteError::BadName(_))
        ));
    }
}
