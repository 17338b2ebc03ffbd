//! Errors as data: what went wrong, in words an operator can act on, and never the PIN or any
//! key material.
//!
//! The server maps them to Google's status codes: [`HsmError::Unavailable`] and
//! [`HsmError::Login`] to 503 `UNAVAILABLE` (see [`HsmError::is_unavailable`]),
//! [`HsmError::KeyNotFound`] to `NOT_FOUND`/`FAILED_PRECONDITION` as the caller sees fit,
//! [`HsmError::Decrypt`] and [`HsmError::InvalidInput`] to `INVALID_ARGUMENT`.

use cryptoki::context::Function;
use cryptoki::error::{Error as Pkcs11Error, RvError};

/// An error from the PKCS#11 token or from this crate's checks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HsmError {
    /// The module cannot be loaded or initialized, the token is missing or removed, a session
    /// or the device failed. Transient by nature: the next call reconnects, so the server
    /// answers 503 and the client retries.
    #[error("HSM unavailable: {detail}")]
    Unavailable {
        /// What failed (module path, token label, PKCS#11 function and return code).
        detail: String,
    },

    /// The token refused the configured PIN (incorrect, locked, expired). Also a 503 for
    /// clients, but it will not heal by itself: the operator must fix the PIN and restart.
    /// Keyhold does not try a refused PIN again, because real HSMs lock the PIN after a few
    /// failures.
    #[error("HSM login refused: {detail}")]
    Login {
        /// The token and the PKCS#11 return code; never the PIN.
        detail: String,
    },

    /// No object in the token matches the key reference (it was destroyed, or never existed
    /// in this token). Only reported after the token itself answered normally, so a removed
    /// token is [`HsmError::Unavailable`], not this.
    #[error("HSM key not found: {key}")]
    KeyNotFound {
        /// The key reference, in its string form.
        key: String,
    },

    /// Decryption refused: the ciphertext is malformed, was tampered with, belongs to another
    /// key, or the additional authenticated data differs.
    #[error("HSM decryption failed: {reason}")]
    Decrypt {
        /// Why, without any byte of the ciphertext or plaintext.
        reason: &'static str,
    },

    /// The request itself is invalid (random size out of range, empty label, ...).
    #[error("invalid input: {detail}")]
    InvalidInput {
        /// What is wrong.
        detail: String,
    },

    /// A server setting is wrong: unreadable PIN file, ambiguous token label, ...
    #[error("HSM configuration error: {detail}")]
    Config {
        /// What is wrong and where.
        detail: String,
    },

    /// The token does not support what Keyhold needs (AES-256 key generation, AES-GCM with a
    /// 96-bit IV and a 128-bit tag, the attribute template).
    #[error("HSM does not support the operation: {detail}")]
    Unsupported {
        /// The PKCS#11 function and return code.
        detail: String,
    },
}

impl HsmError {
    /// Whether the HSM could not be used at all (the server answers 503 `UNAVAILABLE`).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, HsmError::Unavailable { .. } | HsmError::Login { .. })
    }

    pub(crate) fn unavailable(detail: impl Into<String>) -> Self {
        HsmError::Unavailable { detail: detail.into() }
    }

    pub(crate) fn config(detail: impl Into<String>) -> Self {
        HsmError::Config { detail: detail.into() }
    }

    pub(crate) fn invalid(detail: impl Into<String>) -> Self {
        HsmError::InvalidInput { detail: detail.into() }
    }
}

/// `C_EncryptInit: CKR_DEVICE_REMOVED`: the function and the return code, as the PKCS#11
/// specification names them (easier to look up than the long descriptions).
pub(crate) fn describe(err: &Pkcs11Error) -> String {
    match err {
        Pkcs11Error::Pkcs11(rv, function) => format!("{}: {}", function_name(*function), rv_name(*rv)),
        other => other.to_string(),
    }
}

fn function_name(f: Function) -> String {
    format!("C_{f:?}")
}

/// `DeviceRemoved` -> `CKR_DEVICE_REMOVED`; vendor and unknown codes keep their debug form.
pub(crate) fn rv_name(rv: RvError) -> String {
    let camel = format!("{rv:?}");
    if !camel.chars().all(|c| c.is_ascii_alphanumeric()) {
        return camel;
    }
    let mut out = String::from("CKR");
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// The PKCS#11 return code of an error, if it has one.
pub(crate) fn rv_of(err: &Pkcs11Error) -> Option<RvError> {
    match err {
        Pkcs11Error::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}

/// Whether the token reported that the object handle is not (or no longer) valid.
pub(crate) fn is_stale_handle(err: &Pkcs11Error) -> bool {
    matches!(rv_of(err), Some(RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid))
}

/// Whether the token refused the PIN. Such errors are latched (never retried).
pub(crate) fn is_pin_error(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::PinIncorrect
            | RvError::PinInvalid
            | RvError::PinLenRange
            | RvError::PinExpired
            | RvError::PinLocked
            | RvError::UserPinNotInitialized
    )
}

/// The general mapping of a PKCS#11 failure, `doing` saying what Keyhold was doing.
///
/// Anything not clearly a problem of the request or of the token's capabilities is
/// [`HsmError::Unavailable`]: that is the safe default (a retry may help, the connection is
/// rebuilt, and the client sees 503 rather than 500).
pub(crate) fn classify(err: &Pkcs11Error, doing: &str) -> HsmError {
    let detail = format!("{doing}: {}", describe(err));
    match err {
        Pkcs11Error::Pkcs11(rv, _) => match rv {
            rv if is_pin_error(*rv) => HsmError::Login { detail },
            RvError::MechanismInvalid
            | RvError::MechanismParamInvalid
            | RvError::FunctionNotSupported
            | RvError::KeyTypeInconsistent
            | RvError::KeyFunctionNotPermitted
            | RvError::KeySizeRange
            | RvError::TemplateInconsistent
            | RvError::TemplateIncomplete
            | RvError::AttributeTypeInvalid
            | RvError::AttributeValueInvalid
            | RvError::AttributeReadOnly
            | RvError::DomainParamsInvalid
            | RvError::RandomNoRng
            | RvError::ActionProhibited => HsmError::Unsupported { detail },
            RvError::ArgumentsBad | RvError::DataInvalid | RvError::DataLenRange => HsmError::InvalidInput { detail },
            _ => HsmError::Unavailable { detail },
        },
        Pkcs11Error::NotSupported => HsmError::Unsupported { detail },
        Pkcs11Error::TryFromInt(_) | Pkcs11Error::TryFromSlice(_) => HsmError::InvalidInput { detail },
        _ => HsmError::Unavailable { detail },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_codes_are_named_as_in_the_specification() {
        assert_eq!(rv_name(RvError::DeviceRemoved), "CKR_DEVICE_REMOVED");
        assert_eq!(rv_name(RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(
            describe(&Pkcs11Error::Pkcs11(RvError::SessionHandleInvalid, Function::EncryptInit)),
            "C_EncryptInit: CKR_SESSION_HANDLE_INVALID"
        );
    }

    #[test]
    fn device_problems_are_unavailable_and_pin_problems_are_login() {
        let removed = Pkcs11Error::Pkcs11(RvError::DeviceRemoved, Function::Encrypt);
        let e = classify(&removed, "encrypting");
        assert!(matches!(e, HsmError::Unavailable { .. }), "{e:?}");
        assert!(e.is_unavailable());
        assert_eq!(e.to_string(), "HSM unavailable: encrypting: C_Encrypt: CKR_DEVICE_REMOVED");

        let pin = Pkcs11Error::Pkcs11(RvError::PinIncorrect, Function::Login);
        let e = classify(&pin, "logging in");
        assert!(matches!(e, HsmError::Login { .. }), "{e:?}");
        assert!(e.is_unavailable());

        let mech = Pkcs11Error::Pkcs11(RvError::MechanismInvalid, Function::EncryptInit);
        assert!(matches!(classify(&mech, "x"), HsmError::Unsupported { .. }));
        assert!(!classify(&mech, "x").is_unavailable());
        assert!(is_stale_handle(&Pkcs11Error::Pkcs11(RvError::KeyHandleInvalid, Function::EncryptInit)));
    }
}
