//! The well-known types whose proto3 JSON Keyhold writes itself; every other one comes from
//! `pbjson-types`.
//!
//! * [`Timestamp`]: `pbjson-types` writes `+00:00`, where proto3 JSON requires Z-normalized
//!   output (`2026-11-23T10:00:00.123456789Z`, as Google's APIs write it, and as Keyhold's REST
//!   surface always has).
//! * [`Any`]: proto3 JSON writes the packed message's own fields next to its `@type`
//!   (`{"@type": "type.googleapis.com/google.cloud.kms.v1.LocationMetadata", "hsmAvailable":
//!   true}`), which needs to know the packed types; `pbjson-types` writes the raw bytes instead.
//!   [`Any`] knows the types Keyhold packs, and refuses others rather than guess.
//! * [`FieldMask`]: proto3 JSON writes one string, the paths in lowerCamelCase joined by commas
//!   (`"bindings,auditConfigs"`); `pbjson-types` writes `{"paths": [...]}`.
//!
//! Their binary form is prost's (`#[derive(prost::Message)]`, fields and tags as in
//! `google/protobuf/timestamp.proto` and `any.proto`).

use prost::Message as _;
use serde::de::{self, Deserializer};
use serde::ser::{self, Serializer};
use serde::{Deserialize, Serialize};

use crate::google::cloud::kms::v1 as kms;
use crate::google::rpc;

/// `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct Timestamp {
    /// Seconds since the Unix epoch.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds within the second, 0 to 999,999,999.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl From<keyhold_api::wire::Timestamp> for Timestamp {
    fn from(t: keyhold_api::wire::Timestamp) -> Self {
        let n = t.unix_nanos();
        // Every `wire::Timestamp` is within ±10,000 years: both parts fit.
        Self { seconds: n.div_euclid(1_000_000_000) as i64, nanos: n.rem_euclid(1_000_000_000) as i32 }
    }
}

impl Timestamp {
    /// As Keyhold's model; `None` outside the range proto3 JSON can write (years 1 to 9999) or
    /// with nanoseconds outside 0 to 999,999,999.
    pub fn to_model(self) -> Option<keyhold_api::wire::Timestamp> {
        if !(0..1_000_000_000).contains(&self.nanos) {
            return None;
        }
        // 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z, as google/protobuf/timestamp.proto
        // bounds it.
        if !(-62_135_596_800..=253_402_300_799).contains(&self.seconds) {
            return None;
        }
        keyhold_api::wire::Timestamp::from_unix_nanos(i128::from(self.seconds) * 1_000_000_000 + i128::from(self.nanos))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.to_model() {
            Some(t) => t.serialize(s),
            None => Err(ser::Error::custom(format!(
                "timestamp out of range: {} seconds, {} nanoseconds",
                self.seconds, self.nanos
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let t = keyhold_api::wire::Timestamp::deserialize(d)?;
        let out = Self::from(t);
        out.to_model().map(|_| out).ok_or_else(|| de::Error::custom("timestamp out of range (years 1 to 9999)"))
    }
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Any {
    /// `type.googleapis.com/` and the packed message's full name.
    #[prost(string, tag = "1")]
    pub type_url: String,
    /// The packed message, in its binary form.
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// The prefix of every type URL Keyhold writes.
const TYPE_PREFIX: &str = "type.googleapis.com/";

/// The messages an [`Any`] may hold in JSON: their binary form to their JSON fields, and back.
/// A type Keyhold does not pack is refused both ways.
macro_rules! packed_types {
    ($($name:literal => $ty:ty,)*) => {
        fn to_json(name: &str, value: &[u8]) -> Result<serde_json::Value, String> {
            match name {
                $($name => {
                    let m = <$ty>::decode(value).map_err(|e| format!("cannot decode the packed {name}: {e}"))?;
                    serde_json::to_value(&m).map_err(|e| e.to_string())
                })*
                _ => Err(format!("no JSON form known for a packed {name}")),
            }
        }

        fn from_json(name: &str, fields: serde_json::Value) -> Result<Vec<u8>, String> {
            match name {
                $($name => Ok(serde_json::from_value::<$ty>(fields).map_err(|e| e.to_string())?.encode_to_vec()),)*
                _ => Err(format!("\"{TYPE_PREFIX}{name}\" is not a type Keyhold takes here")),
            }
        }
    };
}

packed_types! {
    "google.cloud.kms.v1.LocationMetadata" => kms::LocationMetadata,
    "google.cloud.kms.v1.DeleteCryptoKeyMetadata" => kms::DeleteCryptoKeyMetadata,
    "google.cloud.kms.v1.DeleteCryptoKeyVersionMetadata" => kms::DeleteCryptoKeyVersionMetadata,
    "google.protobuf.Empty" => pbjson_types::Empty,
    "google.rpc.ErrorInfo" => rpc::ErrorInfo,
    "google.rpc.PreconditionFailure" => rpc::PreconditionFailure,
    "google.rpc.RetryInfo" => rpc::RetryInfo,
    "google.rpc.QuotaFailure" => rpc::QuotaFailure,
    "google.rpc.BadRequest" => rpc::BadRequest,
    "google.rpc.ResourceInfo" => rpc::ResourceInfo,
    "google.rpc.Help" => rpc::Help,
    "google.rpc.LocalizedMessage" => rpc::LocalizedMessage,
    "google.rpc.DebugInfo" => rpc::DebugInfo,
}

impl Any {
    /// `message`, whose full proto name is `name`, packed under `type.googleapis.com/NAME`.
    pub fn pack(name: &str, message: &impl prost::Message) -> Self {
        Self { type_url: format!("{TYPE_PREFIX}{name}"), value: message.encode_to_vec() }
    }

    /// The message's JSON form, `@type` first.
    pub fn to_json(&self) -> Result<serde_json::Value, String> {
        let name =
            self.type_url.strip_prefix(TYPE_PREFIX).ok_or_else(|| format!("bad type URL {:?}", self.type_url))?;
        let mut fields = match to_json(name, &self.value)? {
            serde_json::Value::Object(fields) => fields,
            _ => return Err(format!("{name} is not written as a JSON object")),
        };
        let mut out = serde_json::Map::new();
        out.insert("@type".into(), self.type_url.clone().into());
        out.append(&mut fields);
        Ok(serde_json::Value::Object(out))
    }

    /// From the JSON form (`{"@type": ..., fields}`).
    pub fn from_json(value: serde_json::Value) -> Result<Self, String> {
        let serde_json::Value::Object(mut fields) = value else {
            return Err("an Any must be a JSON object".into());
        };
        let type_url = match fields.remove("@type") {
            Some(serde_json::Value::String(t)) => t,
            _ => return Err("an Any needs its \"@type\"".into()),
        };
        let name = type_url.strip_prefix(TYPE_PREFIX).ok_or_else(|| format!("bad @type {type_url:?}"))?;
        let value = from_json(name, serde_json::Value::Object(fields))?;
        Ok(Self { type_url, value })
    }
}

impl Serialize for Any {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().map_err(ser::Error::custom)?.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Any {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::from_json(serde_json::Value::deserialize(d)?).map_err(de::Error::custom)
    }
}

/// `google.protobuf.FieldMask`. The paths are the proto's field names (`rotation_period`); in
/// JSON, lowerCamelCase joined by commas (`"rotationPeriod,labels"`).
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct FieldMask {
    /// The fields, as the proto names them.
    #[prost(string, repeated, tag = "1")]
    pub paths: Vec<String>,
}

fn lower_camel(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut upper = false;
    for c in path.chars() {
        match c {
            '_' => upper = true,
            c if upper => {
                out.extend(c.to_uppercase());
                upper = false;
            }
            c => out.push(c),
        }
    }
    out
}

fn snake(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 4);
    for c in path.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

impl Serialize for FieldMask {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.paths.iter().map(|p| lower_camel(p)).collect::<Vec<_>>().join(","))
    }
}

impl<'de> Deserialize<'de> for FieldMask {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let joined = String::deserialize(d)?;
        let paths = joined.split(',').map(str::trim).filter(|p| !p.is_empty()).map(snake).collect();
        Ok(Self { paths })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_z_normalized_with_nanoseconds() {
        let t = Timestamp { seconds: 1_767_323_045, nanos: 123_456_789 };
        let json = serde_json::to_value(t).unwrap();
        assert_eq!(json, "2026-01-02T03:04:05.123456789Z");
        assert_eq!(serde_json::from_value::<Timestamp>(json).unwrap(), t);
        // Any offset in, UTC out.
        let t: Timestamp = serde_json::from_value("2026-01-02T04:04:05+01:00".into()).unwrap();
        assert_eq!(t, Timestamp { seconds: 1_767_323_045, nanos: 0 });
        // Before the epoch: negative seconds, positive nanoseconds.
        let t: Timestamp = serde_json::from_value("1969-12-31T23:59:59.5Z".into()).unwrap();
        assert_eq!(t, Timestamp { seconds: -1, nanos: 500_000_000 });
        assert!(serde_json::to_value(Timestamp { seconds: 0, nanos: -1 }).is_err());
        assert!(serde_json::to_value(Timestamp { seconds: i64::MAX, nanos: 0 }).is_err());
        assert!(serde_json::from_value::<Timestamp>("yesterday".into()).is_err());
        // The binary form is google.protobuf.Timestamp's.
        let bin = Timestamp { seconds: 5, nanos: 7 }.encode_to_vec();
        let theirs = pbjson_types::Timestamp::decode(bin.as_slice()).unwrap();
        assert_eq!((theirs.seconds, theirs.nanos), (5, 7));
    }

    #[test]
    fn field_masks_are_one_camel_case_string() {
        let m: FieldMask = serde_json::from_value("bindings,auditConfigs, etag".into()).unwrap();
        assert_eq!(m.paths, ["bindings", "audit_configs", "etag"]);
        assert_eq!(serde_json::to_value(&m).unwrap(), "bindings,auditConfigs,etag");
        let m: FieldMask = serde_json::from_value("version_template.algorithm".into()).unwrap();
        assert_eq!(m.paths, ["version_template.algorithm"]);
        assert_eq!(serde_json::to_value(&m).unwrap(), "versionTemplate.algorithm");
        assert_eq!(serde_json::from_value::<FieldMask>("".into()).unwrap().paths, Vec::<String>::new());
        assert!(serde_json::from_value::<FieldMask>(serde_json::json!({"paths": ["a"]})).is_err());
    }

    #[test]
    fn any_is_written_as_the_packed_message_with_its_type() {
        let any = Any::pack(
            "google.cloud.kms.v1.LocationMetadata",
            &kms::LocationMetadata { hsm_available: true, ..Default::default() },
        );
        let json = serde_json::to_value(&any).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"@type": "type.googleapis.com/google.cloud.kms.v1.LocationMetadata", "hsmAvailable": true})
        );
        assert_eq!(serde_json::from_value::<Any>(json).unwrap(), any);
        let info = Any::pack(
            "google.rpc.ErrorInfo",
            &rpc::ErrorInfo { reason: "R".into(), domain: "d".into(), metadata: Default::default() },
        );
        assert_eq!(serde_json::to_value(&info).unwrap()["reason"], "R");
        // A type Keyhold does not pack, a missing @type, unknown fields: refused.
        let other = Any { type_url: "type.googleapis.com/google.protobuf.Duration".into(), value: vec![] };
        assert!(serde_json::to_value(&other).is_err());
        assert!(serde_json::from_value::<Any>(serde_json::json!({"hsmAvailable": true})).is_err());
        assert!(
            serde_json::from_value::<Any>(
                serde_json::json!({"@type": "type.googleapis.com/google.cloud.kms.v1.LocationMetadata", "x": 1})
            )
            .is_err()
        );
        // The binary form is google.protobuf.Any's.
        let theirs = pbjson_types::Any::decode(any.encode_to_vec().as_slice()).unwrap();
        assert_eq!(theirs.type_url, any.type_url);
    }
}
