//! Request validation shared by the service methods.

use std::collections::BTreeMap;

use keyhold_api::resources::{Algorithm, ProtectionLevel, Purpose, VersionTemplate};
use keyhold_api::wire::ProtoDuration;

use crate::KmsError;

/// An EXTERNAL version's key URI: an absolute http(s) URL of at most 2048 characters. The
/// manager is reached there for every wrap and unwrap (`docs/ekm-protocol.md`).
pub(crate) fn external_key_uri(uri: &str) -> Result<(), KmsError> {
    let rest = uri.strip_prefix("https://").or_else(|| uri.strip_prefix("http://"));
    let host_ok = rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'));
    if !host_ok || uri.len() > 2048 || uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(KmsError::InvalidArgument(format!(
            "external_key_uri must be an absolute http:// or https:// URL of at most 2048 characters, not {uri:?}."
        )));
    }
    Ok(())
}

/// Labels as Google Cloud allows them: at most 64; keys start with a lowercase letter; keys and
/// values at most 63 characters of lowercase letters, digits, `_` and `-`.
pub(crate) fn labels(labels: &BTreeMap<String, String>) -> Result<(), KmsError> {
    if labels.len() > 64 {
        return Err(KmsError::InvalidArgument(format!(
            "A resource may have at most 64 labels; {} were given.",
            labels.len()
        )));
    }
    let ok_chars = |s: &str| s.chars().all(|c| c.is_lowercase() || c.is_numeric() || c == '_' || c == '-');
    for (k, v) in labels {
        let starts_ok = k.chars().next().is_some_and(|c| c.is_lowercase());
        if !starts_ok || k.chars().count() > 63 || !ok_chars(k) {
            return Err(KmsError::InvalidArgument(format!(
                "Label key \"{k}\" is invalid: it must start with a lowercase letter and contain at most 63 lowercase letters, digits, underscores or dashes."
            )));
        }
        if v.chars().count() > 63 || !ok_chars(v) {
            return Err(KmsError::InvalidArgument(format!(
                "Label value \"{v}\" of key \"{k}\" is invalid: it may contain at most 63 lowercase letters, digits, underscores or dashes."
            )));
        }
    }
    Ok(())
}

/// Checks `d` lies in `[min, max]`.
pub(crate) fn duration_in(
    field: &str,
    d: ProtoDuration,
    min: ProtoDuration,
    max: ProtoDuration,
) -> Result<(), KmsError> {
    if d < min || d > max {
        return Err(KmsError::InvalidArgument(format!("{field} must be between {min} and {max}; got {d}.")));
    }
    Ok(())
}

/// Fills in and checks a version template for a key of `purpose`: the algorithm is required
/// except for ENCRYPT_DECRYPT, and must be one of the purpose's. Returns the template as it will
/// be stored and echoed (both fields set, as Cloud KMS echoes them).
pub(crate) fn template(purpose: Purpose, t: Option<VersionTemplate>) -> Result<VersionTemplate, KmsError> {
    let t = t.unwrap_or_default();
    let level = match t.protection_level {
        None | Some(ProtectionLevel::Unspecified) => ProtectionLevel::Software,
        Some(l) => l,
    };
    let default_alg = match level {
        ProtectionLevel::External | ProtectionLevel::ExternalVpc => Algorithm::ExternalSymmetricEncryption,
        _ => Algorithm::GoogleSymmetricEncryption,
    };
    let alg = match t.algorithm {
        None | Some(Algorithm::Unspecified) if purpose == Purpose::EncryptDecrypt => default_alg,
        None | Some(Algorithm::Unspecified) => {
            return Err(KmsError::InvalidArgument("versionTemplate.algorithm is required for this purpose.".into()));
        }
        Some(a) => a,
    };
    if alg.purpose() != Some(purpose) {
        return Err(KmsError::InvalidArgument(format!("Algorithm {alg} is not valid for purpose {purpose}.")));
    }
    if purpose != Purpose::EncryptDecrypt {
        // Which levels serve which algorithm is each backend's to say (`KeyBackend::check_algorithm`).
        return Ok(VersionTemplate { protection_level: Some(level), algorithm: Some(alg) });
    }
    match (level, alg) {
        (ProtectionLevel::Software | ProtectionLevel::Hsm, Algorithm::GoogleSymmetricEncryption) => {}
        (ProtectionLevel::External | ProtectionLevel::ExternalVpc, Algorithm::ExternalSymmetricEncryption) => {}
        (l, a) => {
            return Err(KmsError::InvalidArgument(format!(
                "Algorithm {a} is not valid for purpose ENCRYPT_DECRYPT at protection level {l}; use GOOGLE_SYMMETRIC_ENCRYPTION (SOFTWARE, HSM) or EXTERNAL_SYMMETRIC_ENCRYPTION (EXTERNAL)."
            )));
        }
    }
    Ok(VersionTemplate { protection_level: Some(level), algorithm: Some(alg) })
}

/// Splits an `updateMask` and normalises each path to camelCase (clients send either).
pub(crate) fn update_mask(mask: &str) -> Vec<String> {
    mask.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|path| path.split('.').map(camel).collect::<Vec<_>>().join("."))
        .collect()
}

fn camel(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut upper = false;
    for c in s.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_normalise() {
        assert_eq!(
            update_mask("labels, rotation_period,version_template.algorithm"),
            vec!["labels", "rotationPeriod", "versionTemplate.algorithm"]
        );
        assert!(update_mask("").is_empty());
    }

    #[test]
    fn label_rules() {
        let ok = BTreeMap::from([("team".to_string(), "payments-1".to_string())]);
        assert!(labels(&ok).is_ok());
        for (k, v) in [("Team", "x"), ("1team", "x"), ("team", "X"), ("te am", "x")] {
            assert!(labels(&BTreeMap::from([(k.to_string(), v.to_string())])).is_err(), "{k}={v}");
        }
    }

    #[test]
    fn template_defaults() {
        let t = template(Purpose::EncryptDecrypt, None).unwrap();
        assert_eq!(t.protection_level, Some(ProtectionLevel::Software));
        assert_eq!(t.algorithm, Some(Algorithm::GoogleSymmetricEncryption));
        let bad = VersionTemplate { protection_level: None, algorithm: Some(Algorithm::RsaSignPss2048Sha256) };
        assert!(template(Purpose::EncryptDecrypt, Some(bad)).is_err());
        assert!(matches!(template(Purpose::AsymmetricSign, None), Err(KmsError::InvalidArgument(_))));
        let sign = VersionTemplate { protection_level: None, algorithm: Some(Algorithm::EcSignP256Sha256) };
        let t = template(Purpose::AsymmetricSign, Some(sign.clone())).unwrap();
        assert_eq!(t.protection_level, Some(ProtectionLevel::Software));
        let e = template(Purpose::AsymmetricDecrypt, Some(sign)).unwrap_err();
        assert_eq!(e.to_string(), "Algorithm EC_SIGN_P256_SHA256 is not valid for purpose ASYMMETRIC_DECRYPT.");
        let mac = VersionTemplate { protection_level: None, algorithm: Some(Algorithm::HmacSha256) };
        assert!(template(Purpose::Mac, Some(mac.clone())).is_ok());
        assert!(matches!(template(Purpose::AsymmetricSign, Some(mac)), Err(KmsError::InvalidArgument(_))));
    }
}
