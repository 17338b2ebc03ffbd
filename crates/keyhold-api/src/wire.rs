//! proto3 JSON scalars as Google APIs write them.
//!
//! * enums: names on output; names *or numbers* on input (newer Google clients send
//!   `$alt=json;enum-encoding=int` and integer enums in bodies);
//! * `google.protobuf.Timestamp`: RFC 3339, UTC, nanoseconds (`2026-11-23T10:00:00.123456789Z`);
//! * `google.protobuf.Duration`: `"86400s"`, `"1.5s"`;
//! * `google.protobuf.Int64Value` (the `*Crc32c` fields): a decimal string;
//! * `bytes`: base64 (standard or URL-safe alphabet, padding optional on input).

use std::fmt;

use base64::Engine as _;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use keyhold_crypto::Secret;

/// Declares a proto enum with its wire names and numbers, serialized as the name and
/// deserialized from either.
macro_rules! wire_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $wire:literal => $num:literal,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vmeta])* $variant,)* }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];
            /// The wire name.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire,)* }
            }
            /// The proto number.
            pub const fn number(self) -> i32 {
                match self { $($name::$variant => $num,)* }
            }
            /// Parses a wire name.
            pub fn from_name(s: &str) -> Option<Self> {
                match s { $($wire => Some($name::$variant),)* _ => None }
            }
            /// Parses a proto number.
            pub fn from_number(n: i64) -> Option<Self> {
                match n { $($num => Some($name::$variant),)* _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(f, "a {} name or number", stringify!($name))
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$name, E> {
                        $name::from_name(v).ok_or_else(|| E::custom(format!(
                            "invalid value \"{}\" for enum {}", v, stringify!($name))))
                    }
                    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<$name, E> {
                        $name::from_number(v).ok_or_else(|| E::custom(format!(
                            "invalid value {} for enum {}", v, stringify!($name))))
                    }
                    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<$name, E> {
                        self.visit_i64(i64::try_from(v).unwrap_or(-1))
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}
pub(crate) use wire_enum;

/// A point in time, UTC, nanosecond precision (`google.protobuf.Timestamp`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Self(OffsetDateTime::now_utc())
    }
    /// From nanoseconds since the Unix epoch.
    pub fn from_unix_nanos(n: i128) -> Option<Self> {
        OffsetDateTime::from_unix_timestamp_nanos(n).ok().map(Self)
    }
    /// Nanoseconds since the Unix epoch.
    pub fn unix_nanos(self) -> i128 {
        self.0.unix_timestamp_nanos()
    }
    /// Nanoseconds since the Unix epoch, saturated into an `i64` (for database columns).
    pub fn unix_nanos_i64(self) -> i64 {
        i64::try_from(self.unix_nanos()).unwrap_or(i64::MAX)
    }
    /// This time plus a duration, saturating at the representable range.
    // Not `std::ops::Add`: callers across the workspace write `t.add(d)` without importing the
    // trait, and the saturating, never-panicking behaviour is the point of this method.
    #[allow(clippy::should_implement_trait)]
    pub fn add(self, d: ProtoDuration) -> Self {
        Self::from_unix_nanos(self.unix_nanos().saturating_add(d.as_nanos())).unwrap_or(self)
    }
    /// Parses RFC 3339 (any offset; normalised to UTC).
    pub fn parse(s: &str) -> Option<Self> {
        OffsetDateTime::parse(s, &Rfc3339).ok().map(|t| Self(t.to_offset(time::UtcOffset::UTC)))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.0;
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.nanosecond()
        )
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s).ok_or_else(|| de::Error::custom(format!("invalid RFC 3339 timestamp \"{s}\"")))
    }
}

/// A `google.protobuf.Duration`: whole seconds plus nanoseconds, written `"86400s"` or `"1.5s"`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ProtoDuration {
    nanos: i128,
}

impl ProtoDuration {
    /// Whole seconds.
    pub const fn from_secs(secs: i64) -> Self {
        Self { nanos: secs as i128 * 1_000_000_000 }
    }
    /// From nanoseconds.
    pub const fn from_nanos(nanos: i128) -> Self {
        Self { nanos }
    }
    /// Total nanoseconds.
    pub const fn as_nanos(self) -> i128 {
        self.nanos
    }
    /// As a `std::time::Duration` (negative durations become zero).
    pub fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_nanos(u64::try_from(self.nanos.max(0)).unwrap_or(u64::MAX))
    }
    /// Parses `"86400s"`, `"1.5s"`, `"-3s"`.
    pub fn parse(s: &str) -> Option<Self> {
        let body = s.strip_suffix('s')?;
        let (neg, body) = match body.strip_prefix('-') {
            Some(b) => (true, b),
            None => (false, body),
        };
        let (whole, frac) = body.split_once('.').unwrap_or((body, ""));
        if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 9 {
            return None;
        }
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let secs: i128 = whole.parse().ok()?;
        // protobuf limits durations to ±315,576,000,000 seconds (10,000 years).
        if secs > 315_576_000_000 {
            return None;
        }
        let frac_nanos: i128 = if frac.is_empty() { 0 } else { format!("{frac:0<9}").parse().ok()? };
        let n = secs * 1_000_000_000 + frac_nanos;
        Some(Self { nanos: if neg { -n } else { n } })
    }
}

impl fmt::Display for ProtoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.nanos < 0 { "-" } else { "" };
        let n = self.nanos.unsigned_abs();
        let (secs, frac) = (n / 1_000_000_000, n % 1_000_000_000);
        if frac == 0 {
            write!(f, "{sign}{secs}s")
        } else {
            let digits = format!("{frac:09}");
            write!(f, "{sign}{secs}.{}s", digits.trim_end_matches('0'))
        }
    }
}

impl fmt::Debug for ProtoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for ProtoDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ProtoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ProtoDuration::parse(&s)
            .ok_or_else(|| de::Error::custom(format!("invalid duration \"{s}\"; expected e.g. \"86400s\"")))
    }
}

/// A CRC32C value carried in a `google.protobuf.Int64Value` field: a decimal string in JSON
/// (numbers are accepted on input too). Values above 2^32-1 are rejected.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Crc32c(pub u32);

impl fmt::Debug for Crc32c {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for Crc32c {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Crc32c {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Crc32c;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a CRC32C value (0 to 4294967295) as a decimal string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Crc32c, E> {
                let n: u64 = v.trim().parse().map_err(|_| E::custom(format!("invalid int64 value \"{v}\"")))?;
                self.visit_u64(n)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Crc32c, E> {
                u32::try_from(v).map(Crc32c).map_err(|_| E::custom(format!("CRC32C value {v} is larger than 2^32-1")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Crc32c, E> {
                u64::try_from(v).map_err(|_| E::custom("CRC32C value is negative")).and_then(|v| self.visit_u64(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// Decodes base64 as protobuf JSON accepts it: standard or URL-safe alphabet, padded or not.
pub fn decode_base64(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::engine::DecodePaddingMode;
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
    const CFG: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, CFG);
    const URL: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, CFG);
    if s.contains(['-', '_']) { URL.decode(s) } else { STD.decode(s) }
}

/// Encodes base64 (standard alphabet, padded), as Google's servers answer.
pub fn encode_base64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Public bytes (ciphertexts, attestations) as base64 in JSON.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    /// Whether there are no bytes (proto3: the field was not given).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({} bytes)", self.0.len())
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode_base64(&self.0))
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        decode_base64(&s).map(Bytes).map_err(|_| de::Error::custom("invalid base64 in a bytes field"))
    }
}

/// Secret bytes (plaintext) as base64 in JSON. The decoded bytes live in a [`Secret`] that
/// zeroizes on drop and prints as `[redacted]`.
#[derive(Clone, Default)]
pub struct SecretBytes(pub Secret);

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for SecretBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // The base64 copy is wiped as soon as it has been written out.
        let encoded = Secret::new(encode_base64(self.0.expose()).into_bytes());
        s.serialize_str(std::str::from_utf8(encoded.expose()).unwrap_or_default())
    }
}

impl<'de> Deserialize<'de> for SecretBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Secret::new(String::deserialize(d)?.into_bytes());
        let text = std::str::from_utf8(s.expose()).map_err(|_| de::Error::custom("invalid base64"))?;
        decode_base64(text)
            .map(|v| SecretBytes(Secret::new(v)))
            .map_err(|_| de::Error::custom("invalid base64 in a bytes field"))
    }
}

/// `skip_serializing_if` helper: proto3 JSON omits `false`.
pub fn is_false(b: &bool) -> bool {
    !*b
}

#[cfg(test)]
mod tests {
    use super::*;

    wire_enum! {
        /// test
        pub enum Color { Red = "RED" => 1, Blue = "BLUE" => 5, }
    }

    #[test]
    fn enums_accept_names_and_numbers() {
        assert_eq!(serde_json::from_str::<Color>("\"BLUE\"").unwrap(), Color::Blue);
        assert_eq!(serde_json::from_str::<Color>("5").unwrap(), Color::Blue);
        assert!(serde_json::from_str::<Color>("2").is_err());
        assert!(serde_json::from_str::<Color>("\"blue\"").is_err());
        assert_eq!(serde_json::to_string(&Color::Red).unwrap(), "\"RED\"");
    }

    #[test]
    fn enums_list_every_value_with_its_number() {
        assert_eq!(Color::ALL, &[Color::Red, Color::Blue]);
        for c in Color::ALL {
            assert_eq!(Color::from_number(i64::from(c.number())), Some(*c));
            assert_eq!(Color::from_name(c.as_str()), Some(*c));
        }
        assert_eq!(Color::Blue.number(), 5);
    }

    #[test]
    fn durations() {
        assert_eq!(ProtoDuration::parse("86400s"), Some(ProtoDuration::from_secs(86400)));
        assert_eq!(ProtoDuration::parse("1.5s").unwrap().as_nanos(), 1_500_000_000);
        assert_eq!(ProtoDuration::from_nanos(1_500_000_000).to_string(), "1.5s");
        assert_eq!(ProtoDuration::from_secs(86400).to_string(), "86400s");
        for bad in ["86400", "s", "1.s2", "abc", "1.0000000001s", "+1s"] {
            assert_eq!(ProtoDuration::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn timestamps() {
        let t = Timestamp::parse("2024-05-01T12:34:56.789+02:00").unwrap();
        assert_eq!(t.to_string(), "2024-05-01T10:34:56.789000000Z");
        assert_eq!(Timestamp::from_unix_nanos(t.unix_nanos()).unwrap(), t);
        assert!(Timestamp::parse("yesterday").is_none());
    }

    #[test]
    fn crc32c_as_string() {
        assert_eq!(serde_json::from_str::<Crc32c>("\"4076244590\"").unwrap(), Crc32c(4076244590));
        assert_eq!(serde_json::from_str::<Crc32c>("12").unwrap(), Crc32c(12));
        assert!(serde_json::from_str::<Crc32c>("\"4294967296\"").is_err());
        assert!(serde_json::from_str::<Crc32c>("\"-1\"").is_err());
        assert_eq!(serde_json::to_string(&Crc32c(7)).unwrap(), "\"7\"");
    }

    #[test]
    fn base64_variants() {
        assert_eq!(decode_base64("aGk=").unwrap(), b"hi");
        assert_eq!(decode_base64("aGk").unwrap(), b"hi");
        assert_eq!(decode_base64("-_8").unwrap(), vec![0xfb, 0xff]);
        assert_eq!(decode_base64("+/8=").unwrap(), vec![0xfb, 0xff]);
        assert!(decode_base64("***").is_err());
        let s: SecretBytes = serde_json::from_str("\"aGk=\"").unwrap();
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"aGk=\"");
    }
}
