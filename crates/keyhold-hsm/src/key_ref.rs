//! [`HsmKeyRef`]: what the database stores for an HSM key (no key material).

use std::fmt;
use std::str::FromStr;

use crate::HsmError;

/// Longest label accepted for a key object, in bytes. Cloud KMS resource names of key
/// versions stay far below it.
pub const MAX_LABEL_LEN: usize = 1024;

/// A reference to a secret-key object in the token: its `CKA_LABEL` and its `CKA_ID` (random,
/// chosen at generation). This, and never key material, is what the database stores.
///
/// Object *handles* are not stored: PKCS#11 handles are only valid within one process's
/// session with the module and change after a restart; label and ID identify the object for
/// good. The ID alone is unique (16 random bytes); the label makes the object recognizable
/// to an operator listing the token (`pkcs11-tool -O`), and both must match.
///
/// Its string form is a PKCS#11 URI (RFC 7512), stable across releases:
/// `pkcs11:object=<label>;type=secret-key;id=<bytes>`, both values percent-encoded, e.g.
/// `pkcs11:object=projects%2Fp%2F...%2FcryptoKeyVersions%2F1;type=secret-key;id=%9a%01...`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct HsmKeyRef {
    label: String,
    id: Vec<u8>,
}

impl HsmKeyRef {
    /// A reference from its parts; the label must be 1 to [`MAX_LABEL_LEN`] bytes and the ID
    /// 1 to 64 bytes.
    pub fn new(label: impl Into<String>, id: Vec<u8>) -> Result<Self, HsmError> {
        let label = label.into();
        validate_label(&label)?;
        if id.is_empty() || id.len() > 64 {
            return Err(HsmError::invalid("a key object ID must be 1 to 64 bytes"));
        }
        Ok(Self { label, id })
    }

    /// The object's `CKA_LABEL`.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The object's `CKA_ID`.
    pub fn id(&self) -> &[u8] {
        &self.id
    }
}

pub(crate) fn validate_label(label: &str) -> Result<(), HsmError> {
    if label.is_empty() {
        return Err(HsmError::invalid("a key label must not be empty"));
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(HsmError::invalid(format!("a key label must be at most {MAX_LABEL_LEN} bytes")));
    }
    Ok(())
}

impl fmt::Debug for HsmKeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not secret: label and ID are public identifiers.
        f.write_str(&self.to_string())
    }
}

impl fmt::Display for HsmKeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("pkcs11:object=")?;
        for &b in self.label.as_bytes() {
            if is_path_safe(b) {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "%{b:02x}")?;
            }
        }
        f.write_str(";type=secret-key;id=")?;
        for b in &self.id {
            write!(f, "%{b:02x}")?;
        }
        Ok(())
    }
}

/// Characters RFC 7512 allows unencoded in a path attribute value (`pk11-pchar` without
/// `pct-encoded`).
fn is_path_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b':'
                | b'['
                | b']'
                | b'@'
                | b'!'
                | b'$'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b'='
                | b'&'
        )
}

fn percent_decode(s: &str) -> Result<Vec<u8>, HsmError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| bad_ref("a '%' is not followed by two hex digits"))?;
                out.push(hex);
                i += 3;
            }
            b if is_path_safe(b) => {
                out.push(b);
                i += 1;
            }
            _ => return Err(bad_ref("a character must be percent-encoded")),
        }
    }
    Ok(out)
}

fn bad_ref(why: &str) -> HsmError {
    HsmError::invalid(format!("not an HSM key reference (pkcs11: URI): {why}"))
}

impl FromStr for HsmKeyRef {
    type Err = HsmError;

    /// Parses the string form written by `Display`. The attributes may come in any order;
    /// `object` and `id` are required, `type` must be `secret-key` if present, anything else
    /// (another attribute, a query) is refused rather than silently ignored.
    fn from_str(s: &str) -> Result<Self, HsmError> {
        let path = s.strip_prefix("pkcs11:").ok_or_else(|| bad_ref("it does not start with 'pkcs11:'"))?;
        if path.contains('?') {
            return Err(bad_ref("query attributes are not supported"));
        }
        let (mut label, mut id) = (None, None);
        for part in path.split(';') {
            let (name, value) = part.split_once('=').ok_or_else(|| bad_ref("an attribute has no '='"))?;
            match name {
                "object" if label.is_none() => {
                    let bytes = percent_decode(value)?;
                    label = Some(String::from_utf8(bytes).map_err(|_| bad_ref("the object label is not UTF-8"))?);
                }
                "id" if id.is_none() => id = Some(percent_decode(value)?),
                "type" if value == "secret-key" => {}
                "type" => return Err(bad_ref("the object type must be secret-key")),
                "object" | "id" => return Err(bad_ref("an attribute is repeated")),
                _ => return Err(bad_ref("unknown attribute")),
            }
        }
        match (label, id) {
            (Some(label), Some(id)) => HsmKeyRef::new(label, id),
            _ => Err(bad_ref("'object' and 'id' are required")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_form_round_trips() {
        let r = HsmKeyRef::new(
            "projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1",
            vec![0x00, 0x9a, 0xff, b'a'],
        )
        .unwrap();
        let s = r.to_string();
        assert_eq!(
            s,
            "pkcs11:object=projects%2fp%2flocations%2fglobal%2fkeyRings%2fr%2fcryptoKeys%2fk\
             %2fcryptoKeyVersions%2f1;type=secret-key;id=%00%9a%ff%61"
        );
        assert_eq!(s.parse::<HsmKeyRef>().unwrap(), r);
        assert_eq!(format!("{r:?}"), s);

        let odd = HsmKeyRef::new("a b;c=d%é/?", vec![1]).unwrap();
        assert_eq!(odd.to_string().parse::<HsmKeyRef>().unwrap(), odd);
    }

    #[test]
    fn parse_accepts_any_order_and_upper_case_hex() {
        let r: HsmKeyRef = "pkcs11:id=%0A%0b;object=root".parse().unwrap();
        assert_eq!(r.label(), "root");
        assert_eq!(r.id(), &[0x0a, 0x0b]);
    }

    #[test]
    fn parse_refuses_what_it_does_not_understand() {
        for bad in [
            "",
            "object=a;id=%01",
            "pkcs11:",
            "pkcs11:object=a",
            "pkcs11:id=%01",
            "pkcs11:object=a;id=%01;type=private-key",
            "pkcs11:object=a;id=%01;token=t",
            "pkcs11:object=a;id=%01?pin-value=1",
            "pkcs11:object=a;object=b;id=%01",
            "pkcs11:object=a;id=%0",
            "pkcs11:object=a;id=%zz",
            "pkcs11:object=a b;id=%01",
            "pkcs11:object=;id=%01",
            "pkcs11:object=a;id=",
            "pkcs11:object=%ff;id=%01",
            "pkcs11:object=a;id",
        ] {
            let e = bad.parse::<HsmKeyRef>().unwrap_err();
            assert!(matches!(e, HsmError::InvalidInput { .. }), "{bad}: {e:?}");
        }
    }

    #[test]
    fn labels_are_checked() {
        assert!(HsmKeyRef::new("", vec![1]).is_err());
        assert!(HsmKeyRef::new("x".repeat(MAX_LABEL_LEN + 1), vec![1]).is_err());
        assert!(HsmKeyRef::new("x".repeat(MAX_LABEL_LEN), vec![1]).is_ok());
        assert!(HsmKeyRef::new("x", vec![]).is_err());
        assert!(HsmKeyRef::new("x", vec![0; 65]).is_err());
    }
}
