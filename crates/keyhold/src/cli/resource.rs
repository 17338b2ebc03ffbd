//! Turning what the user typed (`KEY --keyring R --location L`, or a full resource name in any
//! of those places) into a validated resource name, as gcloud's resource arguments do.

use keyhold_api::name::{CryptoKeyName, CryptoKeyVersionName, KeyRingName, LocationName, NameError};

use super::CliError;
use super::parse::parse_version_id;

/// Full-name patterns, for error messages.
const LOCATION_PATTERN: &str = "projects/PROJECT/locations/LOCATION";
const KEY_RING_PATTERN: &str = "projects/PROJECT/locations/LOCATION/keyRings/KEY_RING";
const KEY_PATTERN: &str = "projects/PROJECT/locations/LOCATION/keyRings/KEY_RING/cryptoKeys/KEY";
const VERSION_PATTERN: &str =
    "projects/PROJECT/locations/LOCATION/keyRings/KEY_RING/cryptoKeys/KEY/cryptoKeyVersions/VERSION";

/// The resource arguments of one command: each is an ID or a full resource name.
#[derive(Clone, Copy, Debug, Default)]
pub struct ResourceArgs<'a> {
    /// `--project` / `KEYHOLD_PROJECT` / `CLOUDSDK_CORE_PROJECT`.
    pub project: Option<&'a str>,
    /// `--location`.
    pub location: Option<&'a str>,
    /// `--keyring` (or the key ring positional).
    pub keyring: Option<&'a str>,
    /// `--key` (or the key positional).
    pub key: Option<&'a str>,
}

/// Whether an argument is a full resource name rather than an ID.
fn is_full_name(s: &str) -> bool {
    s.starts_with("projects/")
}

fn invalid(e: NameError) -> CliError {
    CliError::Usage(e.to_string())
}

/// The error gcloud gives when a parent of a resource is neither given by flag nor by a full
/// name.
fn missing(subject: &str, attribute: &str, pattern: &str) -> CliError {
    CliError::Usage(format!(
        "Error parsing [{subject}]. The [{subject}] resource is not properly specified: failed to find attribute \
         [{attribute}]. Provide the argument [--{attribute}] on the command line, or give [{subject}] as a full \
         resource name ({pattern})."
    ))
}

/// The error for a command that needs a project and has none.
pub fn missing_project() -> CliError {
    CliError::Usage(
        "The required property [project] is not currently set.\nIt can be set on a per-command basis by re-running \
         your command with the [--project] flag, or for a whole shell session with the environment variable \
         KEYHOLD_PROJECT (CLOUDSDK_CORE_PROJECT is read too)."
            .to_string(),
    )
}

impl ResourceArgs<'_> {
    fn project(&self) -> Result<&str, CliError> {
        self.project.ok_or_else(missing_project)
    }

    /// The location; `subject` names the resource being parsed, for error messages.
    pub fn location_name(&self, subject: &str) -> Result<LocationName, CliError> {
        match self.location {
            Some(l) if is_full_name(l) => l.parse().map_err(invalid),
            Some(l) => LocationName::new(self.project()?, l).map_err(invalid),
            None => Err(missing(subject, "location", pattern_of(subject))),
        }
    }

    /// The key ring.
    pub fn key_ring_name(&self, subject: &str) -> Result<KeyRingName, CliError> {
        match self.keyring {
            Some(r) if is_full_name(r) => r.parse().map_err(invalid),
            Some(r) => KeyRingName::new(&self.location_name(subject)?, r).map_err(invalid),
            None => Err(missing(subject, "keyring", pattern_of(subject))),
        }
    }

    /// The crypto key.
    pub fn crypto_key_name(&self, subject: &str) -> Result<CryptoKeyName, CliError> {
        match self.key {
            Some(k) if is_full_name(k) => k.parse().map_err(invalid),
            Some(k) => CryptoKeyName::new(&self.key_ring_name(subject)?, k).map_err(invalid),
            None => Err(missing(subject, "key", pattern_of(subject))),
        }
    }

    /// A version of the crypto key: `version` is an ID (`3`) or a full version name.
    pub fn version_name(&self, version: &str, subject: &str) -> Result<CryptoKeyVersionName, CliError> {
        if is_full_name(version) {
            return version.parse().map_err(invalid);
        }
        let id = parse_version_id(version).map_err(CliError::Usage)?;
        Ok(self.crypto_key_name(subject)?.version(id))
    }
}

fn pattern_of(subject: &str) -> &'static str {
    match subject {
        "location" => LOCATION_PATTERN,
        "keyring" => KEY_RING_PATTERN,
        "key" => KEY_PATTERN,
        _ => VERSION_PATTERN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_flags() {
        let a = ResourceArgs { project: Some("p"), location: Some("global"), keyring: Some("r"), key: Some("k") };
        assert_eq!(
            a.crypto_key_name("key").unwrap().to_string(),
            "projects/p/locations/global/keyRings/r/cryptoKeys/k"
        );
        assert_eq!(
            a.version_name("2", "version").unwrap().to_string(),
            "projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/2"
        );
    }

    #[test]
    fn full_names_need_no_flags() {
        let full = "projects/q/locations/us-east1/keyRings/ring/cryptoKeys/key";
        let a = ResourceArgs { key: Some(full), ..Default::default() };
        assert_eq!(a.crypto_key_name("key").unwrap().to_string(), full);
        let ring =
            ResourceArgs { keyring: Some("projects/q/locations/l/keyRings/r"), key: Some("k"), ..Default::default() };
        assert_eq!(ring.crypto_key_name("key").unwrap().to_string(), "projects/q/locations/l/keyRings/r/cryptoKeys/k");
        let v = ResourceArgs::default().version_name(&format!("{full}/cryptoKeyVersions/7"), "version").unwrap();
        assert_eq!(v.version, 7);
    }

    #[test]
    fn missing_parts_are_explained() {
        let no_loc = ResourceArgs { project: Some("p"), keyring: Some("r"), key: Some("k"), ..Default::default() };
        let msg = no_loc.crypto_key_name("key").unwrap_err().to_string();
        assert!(msg.contains("[--location]") && msg.contains(KEY_PATTERN), "{msg}");
        let no_project = ResourceArgs { location: Some("global"), keyring: Some("r"), ..Default::default() };
        assert!(no_project.key_ring_name("keyring").unwrap_err().to_string().contains("[project]"));
        let bad_id = ResourceArgs {
            project: Some("p"),
            location: Some("global"),
            keyring: Some("bad id"),
            ..Default::default()
        };
        assert!(bad_id.key_ring_name("keyring").unwrap_err().to_string().contains("bad id"));
        let a = ResourceArgs { project: Some("p"), location: Some("global"), keyring: Some("r"), key: Some("k") };
        assert!(a.version_name("0", "version").is_err());
    }
}
