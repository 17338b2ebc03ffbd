//! Where each protection level keeps a version's key material, and what it does with it
//! ([K4], [K11]). One [`KeyBackend`] per protection level, chosen from the version's level;
//! the rest of the KMS never matches on the level.
//!
//! * `SOFTWARE` ([`software`]): generated here, sealed by the [`crate::root_key::RootKey`]
//!   before it reaches the database ([`crate::VersionMaterial::Sealed`]).
//! * `HSM` ([`hsm`]): generated inside a PKCS#11 token and never leaves it; the database holds
//!   only the token object's reference ([`crate::VersionMaterial::Hsm`]). The token is reached through
//!   the [`HsmBackend`] port.
//! * `EXTERNAL` ([`external`]): Keyhold holds no material at all; every encrypt and decrypt is a
//!   wrap or unwrap call to the external key manager named by the version's `externalKeyUri`
//!   ([`crate::VersionMaterial::External`]), through the [`ExternalKeyManager`] port, which sees the
//!   access reason and may refuse.
//!
//! The ports ([`HsmBackend`], [`ExternalKeyManager`]) live here, in the domain, so the KMS does
//! not depend on PKCS#11 or HTTP; the binary implements the first over `keyhold-hsm`, and
//! `keyhold-ekm` the second, and both are plugged in through [`KeyBackends`].
//!
//! Adding a protection level: a new module with a type implementing [`KeyBackend`], a variant
//! of [`crate::VersionMaterial`] if its material has a new shape, and one arm in
//! [`Backends::for_level`]. Each level says which algorithms it makes keys of
//! ([`KeyBackend::check_algorithm`]); signing, asymmetric decryption, public keys and MACs are
//! methods of [`KeyBackend`] beside `encrypt` / `decrypt`, served by `SOFTWARE` and `HSM`, as is
//! [`KeyBackend::import`] of key material unwrapped from an import job's wrapping.

mod external;
mod hsm;
mod key_backend;
pub mod ports;
mod software;

use std::sync::Arc;

use keyhold_api::resources::ProtectionLevel;

use crate::error::KmsError;
use crate::root_key::RootKey;

pub(crate) use key_backend::{Erasing, KeyBackend, KeyUse, NewMaterial, SignInput};
pub use ports::{BackendError, ExternalKeyManager, ExternalRequest, HsmBackend, KeyBackends, KeyOrigin};
pub(crate) use software::run_slow;

/// The backend of each protection level this server was started with.
#[derive(Debug)]
pub(crate) struct Backends {
    software: software::SoftwareKeys,
    hsm: Option<hsm::HsmKeys>,
    external: Option<external::ExternalKeys>,
}

impl Backends {
    pub(crate) fn new(root: Arc<dyn RootKey>, configured: &KeyBackends) -> Self {
        Self {
            software: software::SoftwareKeys::new(root),
            hsm: configured.hsm.clone().map(hsm::HsmKeys::new),
            external: configured.external.clone().map(external::ExternalKeys::new),
        }
    }

    /// The backend of `level`, or why this server cannot serve it.
    pub(crate) fn for_level(&self, level: Option<ProtectionLevel>) -> Result<&dyn KeyBackend, KmsError> {
        match level {
            Some(ProtectionLevel::Software) => Ok(&self.software),
            Some(ProtectionLevel::Hsm) => self.hsm().map(|h| h as &dyn KeyBackend),
            Some(ProtectionLevel::External) => self.external.as_ref().map(|e| e as &dyn KeyBackend).ok_or_else(|| {
                KmsError::Unimplemented(
                    "Protection level EXTERNAL is not available on this server; start it with --ekm-credentials-file (see docs/operations.md)."
                        .into(),
                )
            }),
            Some(l) => Err(KmsError::Unimplemented(format!("Protection level {l} is not available on this server."))),
            None => Err(KmsError::Internal("template without protection level".into())),
        }
    }

    /// The HSM, or why HSM keys cannot be used on this server.
    pub(crate) fn hsm(&self) -> Result<&hsm::HsmKeys, KmsError> {
        self.hsm.as_ref().ok_or_else(|| {
            KmsError::Unimplemented(
                "Protection level HSM is not available on this server; start it with --pkcs11-module (see docs/operations.md)."
                    .into(),
            )
        })
    }

    /// The SOFTWARE backend (its root key also seals the keys of in-process services).
    pub(crate) fn software(&self) -> &software::SoftwareKeys {
        &self.software
    }
}

#[cfg(test)]
mod tests {
    use keyhold_api::Code;

    use super::*;
    use crate::root_key::LocalRootKey;

    #[test]
    fn each_level_is_served_by_its_backend_or_says_how_to_get_one() {
        let root: Arc<dyn RootKey> = Arc::new(LocalRootKey::ephemeral().unwrap());
        let backends = Backends::new(root, &KeyBackends::default());
        assert!(backends.for_level(Some(ProtectionLevel::Software)).is_ok());
        for (level, flag) in
            [(ProtectionLevel::Hsm, "--pkcs11-module"), (ProtectionLevel::External, "--ekm-credentials-file")]
        {
            let e = backends.for_level(Some(level)).unwrap_err();
            assert_eq!(e.code(), Code::Unimplemented, "{level}");
            assert!(e.to_string().contains(flag), "{e}");
        }
        let e = backends.for_level(Some(ProtectionLevel::ExternalVpc)).unwrap_err();
        assert_eq!(e.code(), Code::Unimplemented);
        assert_eq!(backends.for_level(None).unwrap_err().code(), Code::Internal);
    }
}
