//! Parsing of `/v1/...` paths into the resource they address and the custom verb, if any
//! (`projects/p/locations/l/keyRings/r/cryptoKeys/k:encrypt`).

use keyhold_api::name::{check_id, parse_version_id};
use keyhold_api::{CryptoKeyName, CryptoKeyVersionName, KeyRingName, LocationName, NameError};

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
    /// `.../cryptoKeys/{k}`.
    CryptoKey(CryptoKeyName),
    /// `.../cryptoKeys/{k}/cryptoKeyVersions`.
    Versions(CryptoKeyName),
    /// `.../cryptoKeyVersions/{v}`.
    Version(CryptoKeyVersionName),
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
    if seg.len() < 2 || seg[0] != "projects" {
        return Err(RouteError::Unknown);
    }
    let project = seg[1];
    let location = || LocationName::new(project, seg[3]);
    let ring = || -> Result<KeyRingName, NameError> { KeyRingName::new(&location()?, seg[5]) };
    let key = || -> Result<CryptoKeyName, NameError> { CryptoKeyName::new(&ring()?, seg[7]) };
    let target = match seg.as_slice() {
        [_, _, "locations"] => {
            LocationName::new(project, "global")?;
            Target::Locations(project.to_string())
        }
        [_, _, "locations", _] => Target::Location(location()?),
        [_, _, "locations", _, "keyRings"] => Target::KeyRings(location()?),
        [_, _, "locations", _, "keyRings", _] => Target::KeyRing(ring()?),
        [_, _, "locations", _, "keyRings", _, "cryptoKeys"] => Target::CryptoKeys(ring()?),
        [_, _, "locations", _, "keyRings", _, "cryptoKeys", _] => Target::CryptoKey(key()?),
        [_, _, "locations", _, "keyRings", _, "cryptoKeys", _, "cryptoKeyVersions"] => Target::Versions(key()?),
        [_, _, "locations", _, "keyRings", _, "cryptoKeys", _, "cryptoKeyVersions", v] => {
            let key = key()?;
            let version = parse_version_id(v).ok_or_else(|| NameError::Malformed {
                kind: "CryptoKeyVersion",
                name: format!("{key}/cryptoKeyVersions/{v}"),
                pattern: "version IDs are positive integers",
            })?;
            Target::Version(key.version(version))
        }
        _ => return Err(RouteError::Unknown),
    };
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
        let (t, v) = parse("projects/p/locations/us-east1/keyRings").unwrap();
        assert!(matches!(t, Target::KeyRings(_)));
        assert_eq!(v, None);
        assert!(matches!(parse("projects/p/locations").unwrap().0, Target::Locations(_)));
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
