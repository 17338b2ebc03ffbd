//! [`TokenInfo`]: what the module and the token say about themselves, for the `attestation`
//! section of HSM key versions.
//!
//! Cloud KMS attests HSM keys with statements signed by the HSM vendor's certificate chain.
//! A generic PKCS#11 token offers nothing of the kind, so Keyhold reports only what the
//! module says about itself, says that it is self-reported, and calls a software token a
//! software token.

/// Self-reported identity of the PKCS#11 module, slot and token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenInfo {
    /// `CK_INFO.libraryDescription`, e.g. `Implementation of PKCS11`.
    pub library_description: String,
    /// `CK_INFO.manufacturerID` of the module, e.g. `SoftHSM`.
    pub library_manufacturer: String,
    /// `CK_INFO.libraryVersion`, e.g. `2.6`.
    pub library_version: String,
    /// PKCS#11 version the module implements, e.g. `2.40`.
    pub cryptoki_version: String,
    /// `CK_SLOT_INFO.slotDescription`.
    pub slot_description: String,
    /// Whether the slot says it is a hardware slot (`CKF_HW_SLOT`).
    pub hardware_slot: bool,
    /// The token's label.
    pub token_label: String,
    /// `CK_TOKEN_INFO.manufacturerID`, e.g. `SoftHSM project`.
    pub token_manufacturer: String,
    /// `CK_TOKEN_INFO.model`, e.g. `SoftHSM v2`.
    pub model: String,
    /// `CK_TOKEN_INFO.serialNumber`.
    pub serial_number: String,
    /// `CK_TOKEN_INFO.hardwareVersion`.
    pub hardware_version: String,
    /// `CK_TOKEN_INFO.firmwareVersion`.
    pub firmware_version: String,
}

/// Names of modules that implement tokens in software (lower case, matched as substrings of
/// the module and token manufacturer and model).
const SOFTWARE_TOKENS: &[&str] = &[
    "softhsm",
    "kryoptic",
    "softokn",
    "nss generic",
    "mozilla",
    "p11-kit",
    "opencryptoki soft",
    "simulator",
    "emulator",
];

impl TokenInfo {
    /// Whether this is a software token: a known software implementation, or a slot that does
    /// not claim to be hardware. Keys in a software token are protected only by the host's
    /// file system and memory, not by tamper-resistant hardware.
    pub fn is_software_token(&self) -> bool {
        let names = [&self.library_manufacturer, &self.library_description, &self.token_manufacturer, &self.model]
            .map(|s| s.to_ascii_lowercase());
        !self.hardware_slot || SOFTWARE_TOKENS.iter().any(|known| names.iter().any(|n| n.contains(known)))
    }

    /// One honest sentence for the attestation section, e.g. `SoftHSM v2 by SoftHSM project,
    /// firmware 2.6, serial 1a2b..., through the PKCS#11 module "SoftHSM" 2.6: a software
    /// token, not a certified hardware security module; self-reported by the module, not
    /// signed`.
    pub fn description(&self) -> String {
        let kind = if self.is_software_token() {
            "a software token, not a certified hardware security module"
        } else {
            "a token in a slot that reports itself as hardware; no certification is verified"
        };
        format!(
            "{model} by {maker}, firmware {fw}, hardware {hw}, serial {serial}, token \"{label}\", \
             through the PKCS#11 module \"{lib}\" {libv} (PKCS#11 {ck}): {kind}; \
             self-reported by the module, not signed",
            model = or_unknown(&self.model),
            maker = or_unknown(&self.token_manufacturer),
            fw = self.firmware_version,
            hw = self.hardware_version,
            serial = or_unknown(&self.serial_number),
            label = self.token_label,
            lib = or_unknown(&self.library_manufacturer),
            libv = self.library_version,
            ck = self.cryptoki_version,
        )
    }
}

fn or_unknown(s: &str) -> &str {
    if s.trim().is_empty() { "(unknown)" } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn softhsm() -> TokenInfo {
        TokenInfo {
            library_description: "Implementation of PKCS11".into(),
            library_manufacturer: "SoftHSM".into(),
            library_version: "2.6".into(),
            cryptoki_version: "2.40".into(),
            slot_description: "SoftHSM slot ID 0x1".into(),
            hardware_slot: false,
            token_label: "kms".into(),
            token_manufacturer: "SoftHSM project".into(),
            model: "SoftHSM v2".into(),
            serial_number: "c723416f2ed20e17".into(),
            hardware_version: "2.6".into(),
            firmware_version: "2.6".into(),
        }
    }

    #[test]
    fn softhsm_is_called_a_software_token() {
        let mut t = softhsm();
        assert!(t.is_software_token());
        let d = t.description();
        assert!(d.contains("SoftHSM v2"), "{d}");
        assert!(d.contains("software token, not a certified"), "{d}");
        assert!(d.contains("not signed"), "{d}");
        // Even if SoftHSM claimed a hardware slot, its name gives it away.
        t.hardware_slot = true;
        assert!(t.is_software_token());
    }

    #[test]
    fn a_hardware_slot_of_an_unknown_vendor_is_not_called_software() {
        let t = TokenInfo {
            library_manufacturer: "Acme HSM Inc.".into(),
            library_description: "Acme PKCS#11".into(),
            token_manufacturer: "Acme".into(),
            model: "Vault 9000".into(),
            hardware_slot: true,
            ..softhsm()
        };
        assert!(!t.is_software_token());
        assert!(t.description().contains("no certification is verified"));
        let t = TokenInfo { hardware_slot: false, ..t };
        assert!(t.is_software_token(), "a non-hardware slot is software");
    }
}
