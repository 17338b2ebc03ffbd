//! Names of the store's resources as the CLI takes them (an ID completed with `--location` and
//! the project, or a full name) and as they go in URL paths (percent-encoded).

use keyhold_api::name::{CryptoKeyName, InstanceName, KeyRingName, LocationName};

use super::super::CliError;
use super::args::KmsKeyFlags;
use super::{BACKUP_PATTERN, INSTANCE_PATTERN, KEY_PATTERN};

/// Appends `segment` to `out`, percent-encoding every byte but RFC 3986's unreserved
/// characters, so that `/`, `?`, `#`, `%`, `:` and spaces in it reach the server as data.
pub(super) fn encode_segment(segment: &str, out: &mut String) {
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// An object name as it goes in a URL path: each `/`-separated segment percent-encoded, the
/// `/` kept. `.` and `..` segments are refused: URLs resolve them away.
pub fn encode_object_name(name: &str) -> Result<String, CliError> {
    if name.is_empty() {
        return Err(CliError::Usage("The object name is empty.".to_string()));
    }
    let mut out = String::with_capacity(name.len());
    for (i, segment) in name.split('/').enumerate() {
        if segment == "." || segment == ".." {
            return Err(CliError::Usage(format!(
                "Invalid object name \"{name}\": \".\" and \"..\" cannot be segments of an object name."
            )));
        }
        if i > 0 {
            out.push('/');
        }
        encode_segment(segment, &mut out);
    }
    Ok(out)
}

/// What the CLI adds to the one [`InstanceName`] (`keyhold-api`): completing an `INSTANCE`
/// argument the way gcloud does, and the percent-encoded paths of its URLs.
pub trait InstanceArg: Sized {
    /// The instance named by an `INSTANCE` argument: a full name, or an ID completed with
    /// `--location` and the project.
    fn resolve(arg: &str, location: Option<&str>, project: Option<&str>) -> Result<Self, CliError>;
    /// Checks the parts: the project and location as Keyhold checks them everywhere, the
    /// instance ID only for what would change the URL's shape (the server checks the rest).
    fn checked(project: &str, location: &str, instance: &str) -> Result<Self, CliError>;
    /// The path of the instance below `/v1/`, its ID percent-encoded.
    fn path(&self) -> String;
    /// The path of one of its objects below `/v1/`.
    fn object_path(&self, object: &str) -> Result<String, CliError>;
}

impl InstanceArg for InstanceName {
    fn resolve(arg: &str, location: Option<&str>, project: Option<&str>) -> Result<Self, CliError> {
        let arg = arg.trim();
        if arg.starts_with("projects/") {
            let segments: Vec<&str> = arg.split('/').collect();
            return match segments.as_slice() {
                ["projects", p, "locations", l, "instances", i] => Self::checked(p, l, i),
                _ => Err(CliError::Usage(format!(
                    "\"{arg}\" is not a valid instance name; expected {INSTANCE_PATTERN}."
                ))),
            };
        }
        let Some(location) = location else {
            return Err(CliError::Usage(format!(
                "Error parsing [instance]. The [instance] resource is not properly specified: failed to find \
                 attribute [location]. Provide the argument [--location] on the command line, or give [instance] \
                 as a full resource name ({INSTANCE_PATTERN})."
            )));
        };
        let project = project.ok_or_else(super::super::resource::missing_project)?;
        Self::checked(project, location, arg)
    }

    fn checked(project: &str, location: &str, instance: &str) -> Result<Self, CliError> {
        let loc = LocationName::new(project, location).map_err(|e| CliError::Usage(e.to_string()))?;
        if instance.is_empty() || instance.contains('/') {
            return Err(CliError::Usage(format!(
                "Invalid instance ID \"{instance}\": give an ID (no `/`), or a full name {INSTANCE_PATTERN}."
            )));
        }
        Ok(Self { project: loc.project, location: loc.location, instance: instance.to_string() })
    }

    fn path(&self) -> String {
        let mut out = self.collection();
        out.push('/');
        encode_segment(&self.instance, &mut out);
        out
    }

    fn object_path(&self, object: &str) -> Result<String, CliError> {
        Ok(format!("{}/objects/{}", self.path(), encode_object_name(object)?))
    }
}

/// A backup: `projects/{project}/locations/{location}/instances/{instance}/backups/{backup}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupName {
    /// The instance it was taken from.
    pub instance: InstanceName,
    /// The backup ID.
    pub backup: String,
}

impl BackupName {
    /// The backup named by a `BACKUP` argument: a full name, or an ID completed with
    /// `--instance` (itself an ID completed with `--location` and the project, or a full name).
    pub fn resolve(
        arg: &str,
        instance: Option<&str>,
        location: Option<&str>,
        project: Option<&str>,
    ) -> Result<Self, CliError> {
        let arg = arg.trim();
        if arg.starts_with("projects/") {
            let segments: Vec<&str> = arg.split('/').collect();
            return match segments.as_slice() {
                ["projects", p, "locations", l, "instances", i, "backups", b] => {
                    Self::new(InstanceName::checked(p, l, i)?, b)
                }
                _ => Err(CliError::Usage(format!("\"{arg}\" is not a valid backup name; expected {BACKUP_PATTERN}."))),
            };
        }
        let Some(instance) = instance else {
            return Err(CliError::Usage(format!(
                "Error parsing [backup]. The [backup] resource is not properly specified: failed to find attribute \
                 [instance]. Provide the argument [--instance] on the command line, or give [backup] as a full \
                 resource name ({BACKUP_PATTERN})."
            )));
        };
        Self::new(InstanceName::resolve(instance, location, project)?, arg)
    }

    /// Checks the backup ID only for what would change the URL's shape (the server checks the
    /// rest).
    fn new(instance: InstanceName, backup: &str) -> Result<Self, CliError> {
        if backup.is_empty() || backup.contains('/') {
            return Err(CliError::Usage(format!(
                "Invalid backup ID \"{backup}\": give an ID (no `/`), or a full name {BACKUP_PATTERN}."
            )));
        }
        Ok(Self { instance, backup: backup.to_string() })
    }

    /// The path of the backup below `/v1/`, its IDs percent-encoded.
    pub fn path(&self) -> String {
        let mut out = format!("{}/backups/", self.instance.path());
        encode_segment(&self.backup, &mut out);
        out
    }

    /// The full name as the server spells it, for request bodies (`backup` of a restore).
    pub fn full_name(&self) -> String {
        format!("{}/backups/{}", self.instance, self.backup)
    }
}

/// The key of `instances create`: `--kms-key` as a full name, or completed from `--kms-keyring`,
/// `--kms-location` (default: the instance's location) and `--kms-project` (default: the
/// instance's project). `None` without `--kms-key`.
pub fn resolve_kms_key(flags: &KmsKeyFlags, instance: &InstanceName) -> Result<Option<String>, CliError> {
    let invalid = |e: keyhold_api::NameError| CliError::Usage(format!("Invalid --kms-key: {e}"));
    let Some(key) = flags.kms_key.as_deref().map(str::trim) else {
        if flags.kms_keyring.is_some() || flags.kms_location.is_some() || flags.kms_project.is_some() {
            return Err(CliError::Usage(
                "--kms-keyring, --kms-location and --kms-project only complete --kms-key; give --kms-key too."
                    .to_string(),
            ));
        }
        return Ok(None);
    };
    if key.starts_with("projects/") {
        return Ok(Some(key.parse::<CryptoKeyName>().map_err(invalid)?.to_string()));
    }
    let ring = match flags.kms_keyring.as_deref().map(str::trim) {
        Some(r) if r.starts_with("projects/") => r.parse::<KeyRingName>().map_err(invalid)?,
        Some(r) => {
            let project = flags.kms_project.as_deref().unwrap_or(&instance.project);
            let location = flags.kms_location.as_deref().unwrap_or(&instance.location);
            KeyRingName::new(&LocationName::new(project, location).map_err(invalid)?, r).map_err(invalid)?
        }
        None => {
            return Err(CliError::Usage(format!(
                "Error parsing [kms-key]. The [kms-key] resource is not properly specified: failed to find \
                 attribute [kms-keyring]. Provide the argument [--kms-keyring] on the command line, or give \
                 [--kms-key] as a full resource name ({KEY_PATTERN})."
            )));
        }
    };
    Ok(Some(CryptoKeyName::new(&ring, key).map_err(invalid)?.to_string()))
}

/// `projects/P/locations/L` of the current project and `location`, checked.
pub(super) fn location_path(ctx: &super::super::Ctx, location: &str) -> Result<String, CliError> {
    let loc = LocationName::new(ctx.project()?, location).map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(format!("projects/{}/locations/{}", loc.project, loc.location))
}

/// An operation named by an `OPERATION` argument: its full name
/// `projects/P/locations/L/operations/ID`, or an ID completed with `--location` and the project.
pub(super) fn operation_name(ctx: &super::super::Ctx, c: &super::args::OperationTarget) -> Result<String, CliError> {
    const PATTERN: &str = "projects/PROJECT/locations/LOCATION/operations/OPERATION";
    let arg = c.operation.trim();
    let valid_id = |id: &str| !id.is_empty() && id.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-');
    if arg.starts_with("projects/") {
        let segments: Vec<&str> = arg.split('/').collect();
        return match segments.as_slice() {
            ["projects", p, "locations", l, "operations", id] if valid_id(id) => {
                let loc = LocationName::new(p, l).map_err(|e| CliError::Usage(e.to_string()))?;
                Ok(format!("projects/{}/locations/{}/operations/{id}", loc.project, loc.location))
            }
            _ => Err(CliError::Usage(format!("\"{arg}\" is not a valid operation name; expected {PATTERN}."))),
        };
    }
    if !valid_id(arg) {
        return Err(CliError::Usage(format!(
            "Invalid operation ID \"{arg}\": give the ID (letters, digits and hyphens), or a full name {PATTERN}."
        )));
    }
    let Some(location) = c.location.location.as_deref() else {
        return Err(CliError::Usage(format!(
            "The [--location] flag is required with an operation ID, or give a full name ({PATTERN})."
        )));
    };
    Ok(format!("{}/operations/{arg}", location_path(ctx, location)?))
}

#[cfg(test)]
mod tests {
    use super::super::tests::instance;
    use super::*;
    use crate::cli::transfer::media_url;

    #[test]
    fn backup_names() {
        let b = BackupName::resolve("b1", Some("inst"), Some("us-east1"), Some("p")).unwrap();
        assert_eq!(b, BackupName { instance: instance("p", "us-east1", "inst"), backup: "b1".into() });
        assert_eq!(b.path(), "projects/p/locations/us-east1/instances/inst/backups/b1");
        assert_eq!(b.full_name(), "projects/p/locations/us-east1/instances/inst/backups/b1");
        // A full name needs nothing else; a full instance name needs no --location.
        let full = BackupName::resolve("projects/q/locations/l/instances/x/backups/y", None, None, None).unwrap();
        assert_eq!(full, BackupName { instance: instance("q", "l", "x"), backup: "y".into() });
        let b = BackupName::resolve("y", Some("projects/q/locations/l/instances/x"), None, None).unwrap();
        assert_eq!(b, full);

        let e = BackupName::resolve("b1", None, Some("l"), Some("p")).unwrap_err().to_string();
        assert!(e.contains("[--instance]") && e.contains(BACKUP_PATTERN), "{e}");
        let e = BackupName::resolve("b1", Some("i"), None, Some("p")).unwrap_err().to_string();
        assert!(e.contains("[--location]"), "{e}");
        assert!(BackupName::resolve("projects/q/locations/l/instances/x/backups", None, None, None).is_err());
        assert!(BackupName::resolve("projects/q/locations/l/instances/x/objects/y", None, None, None).is_err());
        assert!(BackupName::resolve("a/b", Some("i"), Some("l"), Some("p")).is_err());
        // IDs are the server's to judge, but reach it intact.
        let odd = BackupName { instance: instance("p", "l", "i"), backup: "a b:c".into() };
        assert_eq!(odd.path(), "projects/p/locations/l/instances/i/backups/a%20b%3Ac");
        assert_eq!(odd.full_name(), "projects/p/locations/l/instances/i/backups/a b:c");
    }

    #[test]
    fn instance_names() {
        let i = InstanceName::resolve("inst", Some("us-east1"), Some("p")).unwrap();
        assert_eq!(i, instance("p", "us-east1", "inst"));
        assert_eq!(i.path(), "projects/p/locations/us-east1/instances/inst");
        assert_eq!(i.collection(), "projects/p/locations/us-east1/instances");
        // A full name needs neither --location nor a project, and wins over them.
        let full = InstanceName::resolve("projects/q/locations/l/instances/x", Some("other"), None).unwrap();
        assert_eq!(full, instance("q", "l", "x"));

        let e = InstanceName::resolve("inst", None, Some("p")).unwrap_err().to_string();
        assert!(e.contains("[--location]") && e.contains(INSTANCE_PATTERN), "{e}");
        let e = InstanceName::resolve("inst", Some("l"), None).unwrap_err().to_string();
        assert!(e.contains("[project]"), "{e}");
        assert!(InstanceName::resolve("projects/q/locations/l/instances", None, None).is_err());
        assert!(InstanceName::resolve("projects/q/locations/l/instances/a/b", None, None).is_err());
        assert!(InstanceName::resolve("a/b", Some("l"), Some("p")).is_err());
        assert!(InstanceName::resolve("i", Some("bad loc"), Some("p")).is_err());
        // IDs are the server's to judge, but reach it intact.
        assert_eq!(instance("p", "l", "a b%:c").path(), "projects/p/locations/l/instances/a%20b%25%3Ac");
    }

    #[test]
    fn object_paths_keep_slashes_and_encode_the_rest() {
        let i = instance("p", "l", "i");
        assert_eq!(i.object_path("a/b/c.txt").unwrap(), "projects/p/locations/l/instances/i/objects/a/b/c.txt");
        assert_eq!(
            i.object_path("dir/sub dir/100% done.txt").unwrap(),
            "projects/p/locations/l/instances/i/objects/dir/sub%20dir/100%25%20done.txt"
        );
        assert_eq!(encode_object_name("a?b#c&d=e+f").unwrap(), "a%3Fb%23c%26d%3De%2Bf");
        assert_eq!(encode_object_name("caf\u{e9}/x:y").unwrap(), "caf%C3%A9/x%3Ay");
        assert_eq!(encode_object_name("%2F").unwrap(), "%252F");
        assert_eq!(encode_object_name("a//b/").unwrap(), "a//b/");
        assert_eq!(encode_object_name(".hidden/..x").unwrap(), ".hidden/..x");
        for bad in ["", ".", "a/../b", "a/."] {
            assert!(encode_object_name(bad).is_err(), "{bad:?}");
        }
        // The URL keeps the encoding as built, with slashes raw and the query added.
        let url =
            media_url("http://h:1", &i.object_path("dir/sub dir/100%.txt").unwrap(), &[("alt", "media")]).unwrap();
        assert_eq!(
            url.as_str(),
            "http://h:1/v1/projects/p/locations/l/instances/i/objects/dir/sub%20dir/100%25.txt?alt=media"
        );
        let url = media_url("http://h:1", &i.object_path("q?x#y").unwrap(), &[]).unwrap();
        assert_eq!(url.path(), "/v1/projects/p/locations/l/instances/i/objects/q%3Fx%23y");
        assert_eq!(url.query(), None);
        assert_eq!(url.fragment(), None);
    }

    #[test]
    fn kms_key_resolution() {
        let inst = instance("p", "us-east1", "i");
        let flags = |key: Option<&str>, ring: Option<&str>, loc: Option<&str>, proj: Option<&str>| KmsKeyFlags {
            kms_key: key.map(Into::into),
            kms_keyring: ring.map(Into::into),
            kms_location: loc.map(Into::into),
            kms_project: proj.map(Into::into),
        };
        assert_eq!(resolve_kms_key(&flags(None, None, None, None), &inst).unwrap(), None);
        let full = "projects/k/locations/global/keyRings/r/cryptoKeys/key";
        assert_eq!(resolve_kms_key(&flags(Some(full), None, None, None), &inst).unwrap().as_deref(), Some(full));
        // gcloud style: location and project default to the instance's.
        assert_eq!(
            resolve_kms_key(&flags(Some("key"), Some("r"), None, None), &inst).unwrap().as_deref(),
            Some("projects/p/locations/us-east1/keyRings/r/cryptoKeys/key")
        );
        assert_eq!(
            resolve_kms_key(&flags(Some("key"), Some("r"), Some("global"), Some("kms-proj")), &inst)
                .unwrap()
                .as_deref(),
            Some("projects/kms-proj/locations/global/keyRings/r/cryptoKeys/key")
        );
        assert_eq!(
            resolve_kms_key(&flags(Some("key"), Some("projects/x/locations/y/keyRings/z"), None, None), &inst)
                .unwrap()
                .as_deref(),
            Some("projects/x/locations/y/keyRings/z/cryptoKeys/key")
        );
        let e = resolve_kms_key(&flags(Some("key"), None, None, None), &inst).unwrap_err().to_string();
        assert!(e.contains("[--kms-keyring]") && e.contains(KEY_PATTERN), "{e}");
        let e = resolve_kms_key(&flags(None, Some("r"), None, None), &inst).unwrap_err().to_string();
        assert!(e.contains("give --kms-key"), "{e}");
        assert!(resolve_kms_key(&flags(Some("bad key"), Some("r"), None, None), &inst).is_err());
        assert!(
            resolve_kms_key(&flags(Some("projects/k/locations/global/keyRings/r"), None, None, None), &inst).is_err()
        );
    }
}
