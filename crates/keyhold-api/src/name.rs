//! Resource names of [K1]:
//! `projects/{p}/locations/{l}/keyRings/{r}/cryptoKeys/{k}/cryptoKeyVersions/{v}`.
//!
//! Each level is its own type, so a function that needs a crypto key cannot be handed a key ring.
//! Parsing validates every segment; `Display` gives back the canonical string.

use std::fmt;
use std::str::FromStr;

/// Why a string is not a valid resource name or ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// A user-chosen ID (key ring, crypto key) does not match `[a-zA-Z0-9_-]{1,63}`.
    #[error("{kind} id \"{id}\" is invalid: it must match [a-zA-Z0-9_-]{{1,63}}")]
    InvalidId {
        /// What the ID names (`KeyRing`, `CryptoKey`).
        kind: &'static str,
        /// The offending ID.
        id: String,
    },
    /// The string does not have the shape of the expected resource name.
    #[error("\"{name}\" is not a valid {kind} resource name; expected {pattern}")]
    Malformed {
        /// The expected kind of resource.
        kind: &'static str,
        /// The string given.
        name: String,
        /// The expected pattern.
        pattern: &'static str,
    },
    /// The string is not `projects/P/locations/L/instances/I` (an instance of the store).
    #[error("\"{name}\" is not an instance name (projects/PROJECT/locations/LOCATION/instances/INSTANCE).")]
    NotInstance {
        /// The string given.
        name: String,
    },
}

/// Whether `id` is a valid key ring / crypto key ID: `[a-zA-Z0-9_-]{1,63}`.
pub fn is_valid_id(id: &str) -> bool {
    (1..=63).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Validates a key ring or crypto key ID.
pub fn check_id(kind: &'static str, id: &str) -> Result<(), NameError> {
    if is_valid_id(id) { Ok(()) } else { Err(NameError::InvalidId { kind, id: id.to_string() }) }
}

fn valid_project(p: &str) -> bool {
    // Project IDs (`my-project`), numbers (`123456789012`) and domain-scoped IDs
    // (`example.com:my-project`).
    (1..=100).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

fn valid_location(l: &str) -> bool {
    (1..=63).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `projects/{project}/locations/{location}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocationName {
    /// Project ID or number.
    pub project: String,
    /// Location ID (`global`, `us-central1`, ...).
    pub location: String,
}

/// `projects/{p}/locations/{l}/keyRings/{key_ring}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyRingName {
    /// The parent location.
    pub location: LocationName,
    /// Key ring ID.
    pub key_ring: String,
}

/// `.../keyRings/{r}/cryptoKeys/{crypto_key}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CryptoKeyName {
    /// The parent key ring.
    pub key_ring: KeyRingName,
    /// Crypto key ID.
    pub crypto_key: String,
}

/// `.../cryptoKeys/{k}/cryptoKeyVersions/{version}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CryptoKeyVersionName {
    /// The parent crypto key.
    pub crypto_key: CryptoKeyName,
    /// Version ID: 1, 2, ... in order of creation.
    pub version: u64,
}

impl LocationName {
    /// Builds and validates a location name.
    pub fn new(project: &str, location: &str) -> Result<Self, NameError> {
        if !valid_project(project) || !valid_location(location) {
            return Err(malformed::<Self>(&format!("projects/{project}/locations/{location}")));
        }
        Ok(Self { project: project.into(), location: location.into() })
    }
    /// `projects/{project}`.
    pub fn project_name(&self) -> String {
        format!("projects/{}", self.project)
    }
}

impl KeyRingName {
    /// A key ring name under `location`, validating the ID.
    pub fn new(location: &LocationName, key_ring: &str) -> Result<Self, NameError> {
        check_id("KeyRing", key_ring)?;
        Ok(Self { location: location.clone(), key_ring: key_ring.into() })
    }
}

/// `.../keyRings/{r}/importJobs/{import_job}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImportJobName {
    /// The parent key ring.
    pub key_ring: KeyRingName,
    /// Import job ID.
    pub import_job: String,
}

impl ImportJobName {
    /// An import job name under `key_ring`, validating the ID.
    pub fn new(key_ring: &KeyRingName, import_job: &str) -> Result<Self, NameError> {
        check_id("ImportJob", import_job)?;
        Ok(Self { key_ring: key_ring.clone(), import_job: import_job.into() })
    }
}

impl CryptoKeyName {
    /// A crypto key name under `key_ring`, validating the ID.
    pub fn new(key_ring: &KeyRingName, crypto_key: &str) -> Result<Self, NameError> {
        check_id("CryptoKey", crypto_key)?;
        Ok(Self { key_ring: key_ring.clone(), crypto_key: crypto_key.into() })
    }
    /// The name of version `version` of this key.
    pub fn version(&self, version: u64) -> CryptoKeyVersionName {
        CryptoKeyVersionName { crypto_key: self.clone(), version }
    }
}

trait Kind {
    const KIND: &'static str;
    const PATTERN: &'static str;
}
impl Kind for LocationName {
    const KIND: &'static str = "Location";
    const PATTERN: &'static str = "projects/{project}/locations/{location}";
}
impl Kind for KeyRingName {
    const KIND: &'static str = "KeyRing";
    const PATTERN: &'static str = "projects/{project}/locations/{location}/keyRings/{keyRing}";
}
impl Kind for ImportJobName {
    const KIND: &'static str = "ImportJob";
    const PATTERN: &'static str = "projects/{project}/locations/{location}/keyRings/{keyRing}/importJobs/{importJob}";
}
impl Kind for CryptoKeyName {
    const KIND: &'static str = "CryptoKey";
    const PATTERN: &'static str = "projects/{project}/locations/{location}/keyRings/{keyRing}/cryptoKeys/{cryptoKey}";
}
impl Kind for CryptoKeyVersionName {
    const KIND: &'static str = "CryptoKeyVersion";
    const PATTERN: &'static str =
        "projects/{project}/locations/{location}/keyRings/{keyRing}/cryptoKeys/{cryptoKey}/cryptoKeyVersions/{version}";
}

fn malformed<T: Kind>(s: &str) -> NameError {
    NameError::Malformed { kind: T::KIND, name: s.to_string(), pattern: T::PATTERN }
}

/// Splits `s` into exactly `N` segments separated by `/`.
fn segments<const N: usize>(s: &str) -> Option<[&str; N]> {
    let v: Vec<&str> = s.split('/').collect();
    <[&str; N]>::try_from(v).ok()
}

impl FromStr for LocationName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        match segments::<4>(s) {
            Some(["projects", p, "locations", l]) => Self::new(p, l).map_err(|_| malformed::<Self>(s)),
            _ => Err(malformed::<Self>(s)),
        }
    }
}

impl FromStr for KeyRingName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        match segments::<6>(s) {
            Some(["projects", p, "locations", l, "keyRings", r]) => {
                let loc = LocationName::new(p, l).map_err(|_| malformed::<Self>(s))?;
                Self::new(&loc, r)
            }
            _ => Err(malformed::<Self>(s)),
        }
    }
}

impl FromStr for CryptoKeyName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        match s.rsplit_once("/cryptoKeys/") {
            Some((ring, key)) if !key.contains('/') => {
                let ring: KeyRingName = ring.parse().map_err(|_| malformed::<Self>(s))?;
                Self::new(&ring, key)
            }
            _ => Err(malformed::<Self>(s)),
        }
    }
}

impl FromStr for ImportJobName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        match s.rsplit_once("/importJobs/") {
            Some((ring, job)) if !job.contains('/') => {
                let ring: KeyRingName = ring.parse().map_err(|_| malformed::<Self>(s))?;
                Self::new(&ring, job)
            }
            _ => Err(malformed::<Self>(s)),
        }
    }
}

impl FromStr for CryptoKeyVersionName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        let (key, v) = s.rsplit_once("/cryptoKeyVersions/").ok_or_else(|| malformed::<Self>(s))?;
        let key: CryptoKeyName = key.parse().map_err(|_| malformed::<Self>(s))?;
        let version = parse_version_id(v).ok_or_else(|| malformed::<Self>(s))?;
        Ok(Self { crypto_key: key, version })
    }
}

/// Parses a version ID: a positive decimal integer without sign or leading zeros.
pub fn parse_version_id(v: &str) -> Option<u64> {
    if v.is_empty() || v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

impl fmt::Display for LocationName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "projects/{}/locations/{}", self.project, self.location)
    }
}
impl fmt::Display for KeyRingName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/keyRings/{}", self.location, self.key_ring)
    }
}
impl fmt::Display for ImportJobName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/importJobs/{}", self.key_ring, self.import_job)
    }
}
impl fmt::Display for CryptoKeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/cryptoKeys/{}", self.key_ring, self.crypto_key)
    }
}
impl fmt::Display for CryptoKeyVersionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/cryptoKeyVersions/{}", self.crypto_key, self.version)
    }
}

/// An instance of the store (`store.keyhold.dev`): `projects/P/locations/L/instances/I`.
///
/// The one definition, shared by the store and the CLI. Parsing checks only the shape (three
/// non-empty IDs); the store checks a new instance's ID with its own rules, and the CLI checks
/// what would change the shape of a URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InstanceName {
    /// Project ID.
    pub project: String,
    /// Location ID.
    pub location: String,
    /// Instance ID.
    pub instance: String,
}

impl InstanceName {
    /// The parent, `projects/P/locations/L`.
    pub fn parent(&self) -> String {
        format!("projects/{}/locations/{}", self.project, self.location)
    }

    /// The collection it is in, `projects/P/locations/L/instances`.
    pub fn collection(&self) -> String {
        format!("{}/instances", self.parent())
    }
}

impl fmt::Display for InstanceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "projects/{}/locations/{}/instances/{}", self.project, self.location, self.instance)
    }
}

impl FromStr for InstanceName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        match segments::<6>(s) {
            Some(["projects", p, "locations", l, "instances", i])
                if !p.is_empty() && !l.is_empty() && !i.is_empty() =>
            {
                Ok(Self { project: p.to_string(), location: l.to_string(), instance: i.to_string() })
            }
            _ => Err(NameError::NotInstance { name: s.to_string() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let s = "projects/p-1/locations/us-central1/keyRings/ring_1/cryptoKeys/key-A/cryptoKeyVersions/12";
        let v: CryptoKeyVersionName = s.parse().unwrap();
        assert_eq!(v.version, 12);
        assert_eq!(v.crypto_key.crypto_key, "key-A");
        assert_eq!(v.to_string(), s);
        let k: CryptoKeyName = "projects/p/locations/global/keyRings/r/cryptoKeys/k".parse().unwrap();
        assert_eq!(k.key_ring.to_string(), "projects/p/locations/global/keyRings/r");
    }

    #[test]
    fn rejects_bad_names() {
        assert!("projects/p/locations/global/keyRings/r/cryptoKeys/k/x".parse::<CryptoKeyName>().is_err());
        assert!("projects/p/locations/global/keyRings/bad.id".parse::<KeyRingName>().is_err());
        assert!("projects/p/locations/global/keyRings/".parse::<KeyRingName>().is_err());
        assert!(format!("projects/p/locations/global/keyRings/{}", "a".repeat(64)).parse::<KeyRingName>().is_err());
        assert!(format!("projects/p/locations/global/keyRings/{}", "a".repeat(63)).parse::<KeyRingName>().is_ok());
        for v in ["0", "01", "-1", "x", ""] {
            let s = format!("projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/{v}");
            assert!(s.parse::<CryptoKeyVersionName>().is_err(), "{v}");
        }
        assert!(!is_valid_id("a b"));
        assert!(!is_valid_id("ключ"));
    }

    #[test]
    fn instance_names() {
        let n: InstanceName = "projects/p/locations/l/instances/i".parse().unwrap();
        assert_eq!(n.to_string(), "projects/p/locations/l/instances/i");
        assert_eq!(n.parent(), "projects/p/locations/l");
        assert_eq!(n.collection(), "projects/p/locations/l/instances");
        for bad in [
            "projects/p/locations/l/instances/",
            "projects/p/locations/l/instances",
            "p/l/i",
            "projects/p/locations/l/instances/i/x",
        ] {
            assert_eq!(
                bad.parse::<InstanceName>().unwrap_err().to_string(),
                format!("\"{bad}\" is not an instance name (projects/PROJECT/locations/LOCATION/instances/INSTANCE).")
            );
        }
    }
}
