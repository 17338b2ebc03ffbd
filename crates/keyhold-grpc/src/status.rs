//! Keyhold's errors as gRPC statuses: the code and message REST sends, and the same
//! `google.rpc` details (`PreconditionFailure`, `ErrorInfo`, `RetryInfo`, ...) packed as a
//! `google.rpc.Status` in `grpc-status-details-bin`, where Google's clients read them.

use keyhold_api::Status;
use keyhold_proto::wkt::Any;
use prost::Message as _;

use crate::pb::google::rpc;

/// The gRPC status of a Keyhold status.
pub fn to_grpc(status: &Status) -> tonic::Status {
    let code = tonic::Code::from_i32(status.code.number());
    let details: Vec<Any> = status.details.iter().filter_map(detail_any).collect();
    if details.is_empty() {
        return tonic::Status::new(code, status.message.clone());
    }
    let body = rpc::Status { code: status.code.number(), message: status.message.clone(), details };
    tonic::Status::with_details(code, status.message.clone(), body.encode_to_vec().into())
}

/// One detail of the error JSON (`{"@type": "type.googleapis.com/google.rpc.ErrorInfo", ...}`)
/// as a packed `Any` (read by `keyhold-proto`'s `Any`, which knows every `google.rpc` detail
/// type); `None` for a type Keyhold does not send (never expected: a test packs every detail
/// the KMS and the store produce).
fn detail_any(detail: &serde_json::Value) -> Option<Any> {
    match Any::from_json(detail.clone()) {
        Ok(any) => Some(any),
        Err(why) => {
            tracing::warn!(%why, "an error detail could not be packed for gRPC; left out");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyhold_api::Code;

    #[test]
    fn details_are_packed_in_a_google_rpc_status() {
        let s = Status::new(Code::FailedPrecondition, "The key is disabled.")
            .with_precondition_failure("KEY_DISABLED", "projects/p/locations/l/keyRings/r/cryptoKeys/k", "disabled")
            .with_error_info("KEY_DISABLED", "cloudkms.googleapis.com", &[("key", "k".to_string())])
            .with_retry_info(std::time::Duration::from_secs(3));
        let g = to_grpc(&s);
        assert_eq!(g.code(), tonic::Code::FailedPrecondition);
        assert_eq!(g.message(), "The key is disabled.");
        let body = rpc::Status::decode(g.details()).unwrap();
        assert_eq!(body.code, 9);
        let types: Vec<_> = body.details.iter().map(|a| a.type_url.as_str()).collect();
        assert_eq!(
            types,
            [
                "type.googleapis.com/google.rpc.PreconditionFailure",
                "type.googleapis.com/google.rpc.ErrorInfo",
                "type.googleapis.com/google.rpc.RetryInfo"
            ]
        );
        let pf = rpc::PreconditionFailure::decode(body.details[0].value.as_ref()).unwrap();
        assert_eq!(pf.violations[0].r#type, "KEY_DISABLED");
        let info = rpc::ErrorInfo::decode(body.details[1].value.as_ref()).unwrap();
        assert_eq!(info.reason, "KEY_DISABLED");
        assert_eq!(info.metadata.get("key").map(String::as_str), Some("k"));
        let retry = rpc::RetryInfo::decode(body.details[2].value.as_ref()).unwrap();
        assert_eq!(retry.retry_delay.unwrap().seconds, 3);
    }

    #[test]
    fn no_details_no_details_header() {
        let g = to_grpc(&Status::new(Code::NotFound, "KeyRing projects/p/locations/l/keyRings/r not found."));
        assert_eq!(g.code(), tonic::Code::NotFound);
        assert!(g.details().is_empty());
    }
}
