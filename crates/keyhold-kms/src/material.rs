//! Key material as the KMS keeps it at rest, typed by protection level: what the database's
//! material column holds, and what each [`crate::backend`] reads. No behaviour, no I/O.

use std::fmt;

use keyhold_api::resources::{CryptoKeyVersion, ProtectionLevel, VersionState};

/// A version's key material in the form its protection level keeps it at rest.
#[derive(Clone, PartialEq, Eq)]
pub enum VersionMaterial {
    /// `SOFTWARE`: the key, sealed by the root key for this version.
    Sealed(Vec<u8>),
    /// `HSM`: the reference of the key object inside the token.
    Hsm(HsmObjectRef),
    /// `EXTERNAL`: the key's URI in the external key manager (kept in the version's
    /// `externalProtectionLevelOptions`; no material is stored).
    External(String),
    /// Nothing: the version is destroyed (its material erased).
    Erased,
}

impl VersionMaterial {
    /// What the database keeps in the version's material column (the URI of an EXTERNAL key is
    /// in the version's JSON, not here).
    pub fn to_column(&self) -> Option<Vec<u8>> {
        match self {
            VersionMaterial::Sealed(b) => Some(b.clone()),
            VersionMaterial::Hsm(r) => Some(r.as_str().as_bytes().to_vec()),
            VersionMaterial::External(_) | VersionMaterial::Erased => None,
        }
    }

    /// Reads a material column back, given the version it belongs to.
    pub fn from_column(version: &CryptoKeyVersion, column: Option<Vec<u8>>) -> Result<Self, String> {
        let Some(bytes) = column else {
            let uri = version.external_protection_level_options.as_ref().map(|o| o.external_key_uri.as_str());
            let destroyed = version.state == Some(VersionState::Destroyed);
            return Ok(match (version.protection_level, uri) {
                (Some(ProtectionLevel::External), Some(uri)) if !uri.is_empty() && !destroyed => {
                    VersionMaterial::External(uri.to_string())
                }
                _ => VersionMaterial::Erased,
            });
        };
        match version.protection_level {
            Some(ProtectionLevel::Hsm) => String::from_utf8(bytes)
                .map(|r| VersionMaterial::Hsm(HsmObjectRef::new(r)))
                .map_err(|_| format!("{}: the HSM object reference is not UTF-8", version.name)),
            _ => Ok(VersionMaterial::Sealed(bytes)),
        }
    }

    /// Whether the material is gone.
    pub fn is_erased(&self) -> bool {
        matches!(self, VersionMaterial::Erased)
    }
}

impl fmt::Debug for VersionMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionMaterial::Sealed(_) => f.write_str("Sealed([sealed])"),
            VersionMaterial::Hsm(r) => f.debug_tuple("Hsm").field(r).finish(),
            VersionMaterial::External(uri) => f.debug_tuple("External").field(uri).finish(),
            VersionMaterial::Erased => f.write_str("Erased"),
        }
    }
}

/// The reference of a key object inside the token (what `keyhold-hsm` calls a key ref); not a
/// secret, and meaningless outside the token.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct HsmObjectRef(String);

impl HsmObjectRef {
    /// Wraps a reference the token gave.
    pub fn new(reference: impl Into<String>) -> Self {
        Self(reference.into())
    }

    /// The reference, as the token reads it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for HsmObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for HsmObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use keyhold_api::resources::ExternalProtectionLevelOptions;

    use super::*;

    fn version(level: ProtectionLevel, state: VersionState, uri: Option<&str>) -> CryptoKeyVersion {
        CryptoKeyVersion {
            name: "projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1".into(),
            state: Some(state),
            protection_level: Some(level),
            external_protection_level_options: uri.map(|u| ExternalProtectionLevelOptions {
                external_key_uri: u.into(),
                ekm_connection_key_path: String::new(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn each_level_round_trips_through_the_column() {
        let cases = [
            (version(ProtectionLevel::Software, VersionState::Enabled, None), VersionMaterial::Sealed(vec![7; 60])),
            (
                version(ProtectionLevel::Hsm, VersionState::Enabled, None),
                VersionMaterial::Hsm(HsmObjectRef::new("token-1/4b2f")),
            ),
            (
                version(ProtectionLevel::External, VersionState::Disabled, Some("https://ekm.example/keys/k")),
                VersionMaterial::External("https://ekm.example/keys/k".into()),
            ),
            (version(ProtectionLevel::Software, VersionState::Destroyed, None), VersionMaterial::Erased),
            (version(ProtectionLevel::Hsm, VersionState::Destroyed, None), VersionMaterial::Erased),
        ];
        for (v, material) in cases {
            let column = material.to_column();
            assert_eq!(VersionMaterial::from_column(&v, column).unwrap(), material, "{v:?}");
        }
    }

    #[test]
    fn the_column_holds_no_uri_and_a_destroyed_external_version_has_nothing() {
        let m = VersionMaterial::External("https://ekm.example/keys/k".into());
        assert_eq!(m.to_column(), None, "the URI lives in the version's JSON, not in the material column");
        let destroyed = version(ProtectionLevel::External, VersionState::Destroyed, Some("https://ekm.example/keys/k"));
        assert!(VersionMaterial::from_column(&destroyed, None).unwrap().is_erased());
        let no_uri = version(ProtectionLevel::External, VersionState::Enabled, Some(""));
        assert!(VersionMaterial::from_column(&no_uri, None).unwrap().is_erased());
    }

    #[test]
    fn a_bad_hsm_reference_is_corrupt_and_sealed_bytes_never_print() {
        let hsm = version(ProtectionLevel::Hsm, VersionState::Enabled, None);
        assert!(VersionMaterial::from_column(&hsm, Some(vec![0xff, 0xfe])).is_err());
        let printed = format!("{:?}", VersionMaterial::Sealed(b"secret-sealed-bytes".to_vec()));
        assert!(!printed.contains("secret") && printed.contains("[sealed]"), "{printed}");
    }
}
