//! Parsers for flag values, spelled as gcloud spells them: durations (`30d`), times
//! (`2026-12-01T00:00:00Z`, `+30d`), labels (`k=v,k2=v2`), purposes (`encryption`), protection
//! levels (`hsm`), algorithms (`google-symmetric-encryption`) and access reasons
//! (`customer-initiated-access`).
//!
//! Every parser returns a `String` error, which clap shows as an invalid-value error.

use std::collections::BTreeMap;

use keyhold_api::resources::{AccessReason, Algorithm, ProtectionLevel, Purpose};
use keyhold_api::wire::{ProtoDuration, Timestamp};

/// The largest duration protobuf can carry: 10,000 years, in seconds.
const MAX_DURATION_SECS: i128 = 315_576_000_000;
const NANOS_PER_SEC: i128 = 1_000_000_000;

/// `--purpose`: what a key is for, with gcloud's names.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PurposeArg {
    /// Symmetric encryption (`ENCRYPT_DECRYPT`).
    Encryption,
    /// Asymmetric signing (`ASYMMETRIC_SIGN`).
    AsymmetricSigning,
    /// Asymmetric encryption (`ASYMMETRIC_DECRYPT`).
    AsymmetricEncryption,
    /// Raw symmetric encryption (`RAW_ENCRYPT_DECRYPT`).
    RawEncryption,
    /// MAC signing (`MAC`).
    Mac,
    /// Key encapsulation, ML-KEM (`KEY_ENCAPSULATION`).
    KeyEncapsulation,
}

impl PurposeArg {
    /// The Cloud KMS purpose this gcloud name stands for.
    pub fn to_api(self) -> Purpose {
        match self {
            PurposeArg::Encryption => Purpose::EncryptDecrypt,
            PurposeArg::AsymmetricSigning => Purpose::AsymmetricSign,
            PurposeArg::AsymmetricEncryption => Purpose::AsymmetricDecrypt,
            PurposeArg::RawEncryption => Purpose::RawEncryptDecrypt,
            PurposeArg::Mac => Purpose::Mac,
            PurposeArg::KeyEncapsulation => Purpose::KeyEncapsulation,
        }
    }

    /// The gcloud name (`asymmetric-signing`).
    pub fn name(self) -> &'static str {
        match self {
            PurposeArg::Encryption => "encryption",
            PurposeArg::AsymmetricSigning => "asymmetric-signing",
            PurposeArg::AsymmetricEncryption => "asymmetric-encryption",
            PurposeArg::RawEncryption => "raw-encryption",
            PurposeArg::Mac => "mac",
            PurposeArg::KeyEncapsulation => "key-encapsulation",
        }
    }
}

/// `--protection-level`, with gcloud's names.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtectionLevelArg {
    /// Key material sealed by the server's root key (`SOFTWARE`).
    Software,
    /// Key material inside an HSM (`HSM`).
    Hsm,
    /// Key material in an external key manager (`EXTERNAL`).
    External,
    /// Key material in an external key manager reached over a VPC (`EXTERNAL_VPC`).
    ExternalVpc,
}

impl ProtectionLevelArg {
    /// The Cloud KMS protection level this gcloud name stands for.
    pub fn to_api(self) -> ProtectionLevel {
        match self {
            ProtectionLevelArg::Software => ProtectionLevel::Software,
            ProtectionLevelArg::Hsm => ProtectionLevel::Hsm,
            ProtectionLevelArg::External => ProtectionLevel::External,
            ProtectionLevelArg::ExternalVpc => ProtectionLevel::ExternalVpc,
        }
    }
}

/// The gcloud spelling of a proto enum name: `GOOGLE_SYMMETRIC_ENCRYPTION` ->
/// `google-symmetric-encryption`.
pub fn kebab(wire_name: &str) -> String {
    wire_name.to_ascii_lowercase().replace('_', "-")
}

/// The proto enum name of a gcloud spelling: `google-symmetric-encryption` ->
/// `GOOGLE_SYMMETRIC_ENCRYPTION` (the enum name itself is accepted too).
pub(super) fn wire_name(arg: &str) -> String {
    arg.trim().replace('-', "_").to_ascii_uppercase()
}

/// Parses `--default-algorithm` (`google-symmetric-encryption`, `aes-256-gcm`, `hmac-sha256`, ...).
pub fn parse_algorithm(s: &str) -> Result<Algorithm, String> {
    match Algorithm::from_name(&wire_name(s)) {
        Some(a) if a != Algorithm::Unspecified => Ok(a),
        _ => {
            let valid: Vec<String> =
                Algorithm::ALL.iter().filter(|a| **a != Algorithm::Unspecified).map(|a| kebab(a.as_str())).collect();
            Err(format!("unknown algorithm \"{s}\"; valid algorithms are: {}", valid.join(", ")))
        }
    }
}

/// Whether `algorithm` can be the algorithm of a key with `purpose` (gcloud checks this before
/// sending the request).
pub fn algorithm_fits_purpose(purpose: Purpose, algorithm: Algorithm) -> bool {
    algorithm.purpose() == Some(purpose)
}

/// The algorithms gcloud offers for `purpose`, in gcloud spelling.
pub fn algorithms_for(purpose: Purpose) -> Vec<String> {
    Algorithm::ALL.iter().filter(|a| algorithm_fits_purpose(purpose, **a)).map(|a| kebab(a.as_str())).collect()
}

/// Parses one `--allowed-access-reasons` value (`customer-initiated-access`, ...).
pub fn parse_access_reason(s: &str) -> Result<AccessReason, String> {
    match AccessReason::from_name(&wire_name(s)) {
        Some(r) if r != AccessReason::Unspecified => Ok(r),
        _ => {
            let valid: Vec<String> = AccessReason::ALL
                .iter()
                .filter(|r| **r != AccessReason::Unspecified)
                .map(|r| kebab(r.as_str()))
                .collect();
            Err(format!("unknown access reason \"{s}\"; valid reasons are: {}", valid.join(", ")))
        }
    }
}

/// Parses a positive decimal number of `unit`-long intervals, with an optional fraction of up
/// to nine digits, into nanoseconds.
fn number_to_nanos(number: &str, unit_secs: i128, whole: &str) -> Result<i128, String> {
    let bad = || format!("invalid duration \"{whole}\"; expected e.g. 30d, 12h, 90m, 86400s or P30D");
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() {
        return Err(bad());
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 9 {
        return Err(bad());
    }
    let int: i128 = if int.is_empty() { 0 } else { int.parse().map_err(|_| bad())? };
    if int > MAX_DURATION_SECS {
        return Err(format!("duration \"{whole}\" is too long"));
    }
    let frac_nanos: i128 = if frac.is_empty() { 0 } else { format!("{frac:0<9}").parse().map_err(|_| bad())? };
    // `frac_nanos * unit_secs` is a fraction of a unit expressed in nanoseconds.
    Ok(int * unit_secs * NANOS_PER_SEC + frac_nanos * unit_secs)
}

/// Seconds in a gcloud duration unit.
fn unit_secs(unit: char) -> Option<i128> {
    match unit.to_ascii_lowercase() {
        's' => Some(1),
        'm' => Some(60),
        'h' => Some(3_600),
        'd' => Some(86_400),
        _ => None,
    }
}

/// Parses an ISO 8601 duration (`P30D`, `PT12H`, `P1DT12H30M`, `P2W`). Years and months are
/// refused: their length is not fixed.
fn parse_iso_duration(s: &str, whole: &str) -> Result<i128, String> {
    let bad = || format!("invalid duration \"{whole}\"; expected e.g. P30D, PT12H or P1DT12H");
    let (date, time) = match s.split_once(['T', 't']) {
        Some((d, t)) if !t.is_empty() => (d, Some(t)),
        Some(_) => return Err(bad()),
        None => (s, None),
    };
    let mut total: i128 = 0;
    let mut components = 0;
    let mut walk = |part: &str, in_time: bool| -> Result<(), String> {
        let mut number = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                number.push(c);
                continue;
            }
            let secs = match (c.to_ascii_uppercase(), in_time) {
                ('W', false) => 7 * 86_400,
                ('D', false) => 86_400,
                ('H', true) => 3_600,
                ('M', true) => 60,
                ('S', true) => 1,
                ('Y' | 'M', false) => {
                    return Err(format!(
                        "invalid duration \"{whole}\": years and months have no fixed length; use days (e.g. P30D)"
                    ));
                }
                _ => return Err(bad()),
            };
            if number.is_empty() {
                return Err(bad());
            }
            total += number_to_nanos(&number, secs, whole)?;
            components += 1;
            number.clear();
        }
        if number.is_empty() { Ok(()) } else { Err(bad()) }
    };
    walk(date, false)?;
    if let Some(t) = time {
        walk(t, true)?;
    }
    if components == 0 {
        return Err(bad());
    }
    Ok(total)
}

/// Parses a duration as gcloud accepts it and returns it as a protobuf duration (`"86400s"`).
///
/// Accepted: `30d`, `12h`, `90m`, `86400s`, combinations such as `1d12h` or `1h30m`, decimal
/// amounts (`1.5h`), a bare number of seconds (`3600`), and ISO 8601 (`P30D`, `PT12H`).
pub fn parse_duration(s: &str) -> Result<ProtoDuration, String> {
    let t = s.trim();
    let bad = || format!("invalid duration \"{s}\"; expected e.g. 30d, 12h, 90m, 86400s or P30D");
    if t.is_empty() {
        return Err(bad());
    }
    if t.starts_with('-') {
        return Err(format!("invalid duration \"{s}\": it must not be negative"));
    }
    let nanos = if let Some(iso) = t.strip_prefix(['P', 'p']) {
        parse_iso_duration(iso, s)?
    } else if t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        number_to_nanos(t, 1, s)?
    } else {
        let mut total: i128 = 0;
        let mut number = String::new();
        for c in t.chars() {
            if c.is_ascii_digit() || c == '.' {
                number.push(c);
            } else {
                let secs = unit_secs(c).ok_or_else(bad)?;
                if number.is_empty() {
                    return Err(bad());
                }
                total += number_to_nanos(&number, secs, s)?;
                number.clear();
            }
        }
        if !number.is_empty() {
            // A trailing number without a unit after other components (`1d2`) is ambiguous.
            return Err(bad());
        }
        total
    };
    if nanos > MAX_DURATION_SECS * NANOS_PER_SEC {
        return Err(format!("duration \"{s}\" is too long"));
    }
    Ok(ProtoDuration::from_nanos(nanos))
}

/// Parses a time relative to `now`: see [`parse_time`].
pub fn parse_time_at(s: &str, now: Timestamp) -> Result<Timestamp, String> {
    let t = s.trim();
    if let Some(rel) = t.strip_prefix('+') {
        return Ok(now.add(parse_duration(rel)?));
    }
    if let Some(ts) = Timestamp::parse(t) {
        return Ok(ts);
    }
    let b = t.as_bytes();
    let is_date = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| if i == 4 || i == 7 { *c == b'-' } else { c.is_ascii_digit() });
    let candidate = if is_date { format!("{t}T00:00:00Z") } else { format!("{t}Z") };
    Timestamp::parse(&candidate).ok_or_else(|| {
        format!(
            "invalid time \"{s}\"; expected an RFC 3339 time such as 2026-12-01T00:00:00Z, a date such as 2026-12-01, \
             or a time relative to now such as +30d"
        )
    })
}

/// Parses a time as gcloud's datetime flags accept it: RFC 3339 (`2026-12-01T00:00:00Z`, any
/// offset; without one, UTC), a date (`2026-12-01`, midnight UTC), or a duration from now
/// (`+30d`, `+P1D`).
pub fn parse_time(s: &str) -> Result<Timestamp, String> {
    parse_time_at(s, Timestamp::now())
}

/// Whether `c` may appear in a label key or value: lowercase letters (international ones
/// included), digits, `_` and `-`.
fn label_char(c: char) -> bool {
    c.is_numeric() || c == '_' || c == '-' || (c.is_alphabetic() && !c.is_uppercase())
}

/// Checks a label key against Google's rules.
pub fn check_label_key(k: &str) -> Result<(), String> {
    let starts_lower = k.chars().next().is_some_and(|c| c.is_alphabetic() && !c.is_uppercase());
    if !starts_lower || k.chars().count() > 63 || !k.chars().all(label_char) {
        return Err(format!(
            "invalid label key \"{k}\": keys must start with a lowercase letter, be at most 63 characters long, \
             and contain only lowercase letters, digits, underscores (_) and hyphens (-)"
        ));
    }
    Ok(())
}

/// Checks a label value against Google's rules (it may be empty).
pub fn check_label_value(k: &str, v: &str) -> Result<(), String> {
    if v.chars().count() > 63 || !v.chars().all(label_char) {
        return Err(format!(
            "invalid value \"{v}\" for label \"{k}\": values must be at most 63 characters long and contain only \
             lowercase letters, digits, underscores (_) and hyphens (-)"
        ));
    }
    Ok(())
}

/// A set of labels from one `--labels` / `--update-labels` occurrence.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels(pub BTreeMap<String, String>);

/// Parses `k=v,k2=v2` (a later duplicate key wins, as in gcloud).
pub fn parse_labels(s: &str) -> Result<Labels, String> {
    let mut out = BTreeMap::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (k, v) = item.split_once('=').ok_or_else(|| format!("invalid label \"{item}\": expected KEY=VALUE"))?;
        check_label_key(k)?;
        check_label_value(k, v)?;
        out.insert(k.to_string(), v.to_string());
    }
    Ok(Labels(out))
}

/// Merges every occurrence of a repeatable labels flag; later ones win.
pub fn merge_labels(all: &[Labels]) -> BTreeMap<String, String> {
    all.iter().flat_map(|l| l.0.iter().map(|(k, v)| (k.clone(), v.clone()))).collect()
}

/// The labels a key ends up with after `keys update`: gcloud clears first, then removes, then
/// adds or overwrites.
pub fn apply_label_changes(
    current: &BTreeMap<String, String>,
    clear: bool,
    remove: &[String],
    update: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut labels = if clear { BTreeMap::new() } else { current.clone() };
    for k in remove {
        labels.remove(k);
    }
    labels.extend(update.iter().map(|(k, v)| (k.clone(), v.clone())));
    labels
}

/// Turns gcloud's `--sort-by` fields (`~` for descending) into a Cloud KMS `orderBy`.
pub fn order_by(fields: &[String]) -> Option<String> {
    let parts: Vec<String> = fields
        .iter()
        .map(|f| f.trim())
        .filter(|f| !f.is_empty())
        .map(|f| match f.strip_prefix('~') {
            Some(desc) => format!("{} desc", desc.trim()),
            None => f.to_string(),
        })
        .collect();
    if parts.is_empty() { None } else { Some(parts.join(", ")) }
}

/// Parses a version ID: a positive integer (`1`, `2`, ...).
pub fn parse_version_id(s: &str) -> Result<u64, String> {
    keyhold_api::name::parse_version_id(s.trim())
        .ok_or_else(|| format!("invalid version \"{s}\": expected a version ID such as 1"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    fn dur(s: &str) -> String {
        match parse_duration(s) {
            Ok(d) => d.to_string(),
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn gcloud_durations() {
        assert_eq!(dur("30d"), "2592000s");
        assert_eq!(dur("12h"), "43200s");
        assert_eq!(dur("90m"), "5400s");
        assert_eq!(dur("86400s"), "86400s");
        assert_eq!(dur("1h30m"), "5400s");
        assert_eq!(dur("1d12h"), "129600s");
        assert_eq!(dur("3600"), "3600s");
        assert_eq!(dur("1.5s"), "1.5s");
        assert_eq!(dur("1.5h"), "5400s");
        assert_eq!(dur("0.25d"), "21600s");
        assert_eq!(dur("7D"), "604800s");
        assert_eq!(dur(" 2h "), "7200s");
    }

    #[test]
    fn iso_durations() {
        assert_eq!(dur("P30D"), "2592000s");
        assert_eq!(dur("PT12H"), "43200s");
        assert_eq!(dur("P1DT1H"), "90000s");
        assert_eq!(dur("P2W"), "1209600s");
        assert_eq!(dur("PT1M30S"), "90s");
        assert_eq!(dur("pt1.5s"), "1.5s");
    }

    #[test]
    fn bad_durations() {
        for bad in
            ["", "d", "30x", "1d2", "-1d", "P", "PT", "P1M", "P1Y", "P1H", "1.2.3s", "1.0000000001s", "s30", "abc"]
        {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse_duration("400000000000s").is_err());
        assert!(parse_duration("-1d").unwrap_err().contains("negative"));
        assert!(parse_duration("P1M").unwrap_err().contains("days"));
    }

    #[test]
    fn times() {
        let now = Timestamp::parse("2026-01-01T00:00:00Z").unwrap();
        assert_eq!(parse_time_at("2026-12-01T00:00:00Z", now).unwrap().to_string(), "2026-12-01T00:00:00.000000000Z");
        assert_eq!(
            parse_time_at("2026-12-01T02:00:00+02:00", now).unwrap().to_string(),
            "2026-12-01T00:00:00.000000000Z"
        );
        assert_eq!(parse_time_at("2026-12-01", now).unwrap().to_string(), "2026-12-01T00:00:00.000000000Z");
        assert_eq!(parse_time_at("2026-12-01T10:30:00", now).unwrap().to_string(), "2026-12-01T10:30:00.000000000Z");
        assert_eq!(parse_time_at("+1d", now).unwrap().to_string(), "2026-01-02T00:00:00.000000000Z");
        assert_eq!(parse_time_at("+PT1H", now).unwrap().to_string(), "2026-01-01T01:00:00.000000000Z");
        for bad in ["tomorrow", "2026-13-01", "2026-12-01T25:00:00Z", "+", "+x", ""] {
            assert!(parse_time_at(bad, now).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn purposes_map_to_cloud_kms_names() {
        let expect = [
            ("encryption", "ENCRYPT_DECRYPT"),
            ("asymmetric-signing", "ASYMMETRIC_SIGN"),
            ("asymmetric-encryption", "ASYMMETRIC_DECRYPT"),
            ("raw-encryption", "RAW_ENCRYPT_DECRYPT"),
            ("mac", "MAC"),
            ("key-encapsulation", "KEY_ENCAPSULATION"),
        ];
        assert_eq!(PurposeArg::value_variants().len(), expect.len());
        for (flag, wire) in expect {
            let p = PurposeArg::from_str(flag, false).unwrap();
            assert_eq!(p.name(), flag);
            assert_eq!(p.to_api().as_str(), wire);
            assert_eq!(p.to_possible_value().unwrap().get_name(), flag);
        }
        assert!(PurposeArg::from_str("sign", false).is_err());
    }

    #[test]
    fn protection_levels_map() {
        assert_eq!(ProtectionLevelArg::from_str("software", false).unwrap().to_api(), ProtectionLevel::Software);
        assert_eq!(ProtectionLevelArg::from_str("hsm", false).unwrap().to_api(), ProtectionLevel::Hsm);
        assert_eq!(ProtectionLevelArg::from_str("external", false).unwrap().to_api(), ProtectionLevel::External);
        assert_eq!(ProtectionLevelArg::from_str("external-vpc", false).unwrap().to_api(), ProtectionLevel::ExternalVpc);
    }

    #[test]
    fn algorithms_and_purposes() {
        assert_eq!(parse_algorithm("google-symmetric-encryption").unwrap(), Algorithm::GoogleSymmetricEncryption);
        assert_eq!(parse_algorithm("AES_256_GCM").unwrap(), Algorithm::Aes256Gcm);
        assert_eq!(parse_algorithm("hmac-sha256").unwrap(), Algorithm::HmacSha256);
        assert!(parse_algorithm("aes-512").unwrap_err().contains("google-symmetric-encryption"));
        assert!(parse_algorithm("crypto-key-version-algorithm-unspecified").is_err());
        assert!(algorithm_fits_purpose(Purpose::EncryptDecrypt, Algorithm::GoogleSymmetricEncryption));
        assert!(!algorithm_fits_purpose(Purpose::EncryptDecrypt, Algorithm::Aes256Gcm));
        assert!(algorithm_fits_purpose(Purpose::RawEncryptDecrypt, Algorithm::Aes128Cbc));
        assert!(algorithm_fits_purpose(Purpose::AsymmetricSign, Algorithm::EcSignEd25519));
        assert!(algorithm_fits_purpose(Purpose::AsymmetricDecrypt, Algorithm::RsaDecryptOaep2048Sha256));
        assert!(!algorithm_fits_purpose(Purpose::AsymmetricDecrypt, Algorithm::RsaSignPss2048Sha256));
        assert_eq!(
            algorithms_for(Purpose::Mac),
            ["hmac-sha256", "hmac-sha1", "hmac-sha384", "hmac-sha512", "hmac-sha224"]
        );
        // Every algorithm of the purpose Cloud KMS names, served or not (the server says which).
        assert_eq!(algorithms_for(Purpose::KeyEncapsulation), ["ml-kem-768", "ml-kem-1024", "kem-xwing"]);
    }

    #[test]
    fn access_reasons() {
        assert_eq!(parse_access_reason("customer-initiated-access").unwrap(), AccessReason::CustomerInitiatedAccess);
        assert_eq!(parse_access_reason("REASON_NOT_EXPECTED").unwrap(), AccessReason::ReasonNotExpected);
        assert!(parse_access_reason("because").is_err());
        assert!(parse_access_reason("reason-unspecified").is_err());
    }

    #[test]
    fn labels() {
        let l = parse_labels("env=prod,team=core-1,empty=").unwrap();
        let expect: BTreeMap<String, String> = [("empty", ""), ("env", "prod"), ("team", "core-1")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(l.0, expect);
        assert_eq!(parse_labels("a=1,a=2").unwrap().0["a"], "2");
        assert_eq!(parse_labels("é_t=ünï").unwrap().0["é_t"], "ünï");
        assert!(parse_labels("").unwrap().0.is_empty());
        for bad in ["env", "Env=prod", "1env=x", "env=Prod", "env=a b", "=x", "k=v=w", &format!("{}=x", "a".repeat(64))]
        {
            assert!(parse_labels(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse_labels(&format!("k={}", "a".repeat(63))).is_ok());
        let merged = merge_labels(&[parse_labels("a=1,b=2").unwrap(), parse_labels("b=3").unwrap()]);
        assert_eq!(merged.get("b").map(String::as_str), Some("3"));
        assert_eq!(merged.len(), 2);
    }

    #[test]
    fn label_changes() {
        let current = parse_labels("a=1,b=2,c=3").unwrap().0;
        let update = parse_labels("c=30,d=4").unwrap().0;
        let got = apply_label_changes(&current, false, &["a".into(), "zz".into()], &update);
        assert_eq!(got, parse_labels("b=2,c=30,d=4").unwrap().0);
        let got = apply_label_changes(&current, true, &[], &update);
        assert_eq!(got, update);
        assert_eq!(apply_label_changes(&current, false, &[], &BTreeMap::new()), current);
    }

    #[test]
    fn sort_by_to_order_by() {
        assert_eq!(order_by(&[]), None);
        assert_eq!(order_by(&["name".into()]).as_deref(), Some("name"));
        assert_eq!(order_by(&["~name".into()]).as_deref(), Some("name desc"));
        assert_eq!(order_by(&["~createTime".into(), "name".into()]).as_deref(), Some("createTime desc, name"));
    }

    #[test]
    fn version_ids() {
        assert_eq!(parse_version_id("3"), Ok(3));
        for bad in ["0", "01", "-1", "x", ""] {
            assert!(parse_version_id(bad).is_err(), "{bad:?}");
        }
    }
}
