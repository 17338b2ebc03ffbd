//! What every front end does around a method, REST here and gRPC in `keyhold-grpc`: find the
//! caller in the request's headers (gRPC metadata are HTTP/2 headers, so one reading serves
//! both), and give a refusal made before any method ran its audit entry. The methods
//! themselves audit their own outcomes.

use axum::http::HeaderMap;
use keyhold_kms::{Caller, KmsError};

use crate::AppState;
use crate::error::ApiError;
use crate::kms_routes::{caller, read_access_reason};

/// The authenticated caller of a request on `resource`: its bearer token, else its verified
/// client certificate's principal, else the anonymous principal of emulator mode; with its
/// `X-Goog-Request-Reason` and `X-Keyhold-Access-Reason`. A caller without a valid credential
/// is refused `UNAUTHENTICATED`, and the refusal is audited.
pub async fn authenticate(state: &AppState, headers: &HeaderMap, resource: &str) -> Result<Caller, ApiError> {
    let mut caller = caller(state, headers).await?;
    if caller.principal.is_none() {
        let e = ApiError::unaudited(KmsError::Unauthenticated { missing: caller.credential_missing });
        return Err(refused(state, &caller, resource, e).await);
    }
    // After authentication, and audited when refused (finding 7).
    if let Err(e) = read_access_reason(&mut caller, headers) {
        return Err(refused(state, &caller, resource, e).await);
    }
    Ok(caller)
}

/// `e`, audited: a refusal the KMS or the store has not recorded (a request that does not
/// parse, a name that is not valid) gets its entry now, so that the audit log holds every
/// request. When the entry cannot be written, the answer is `UNAVAILABLE` instead.
pub async fn refused(state: &AppState, caller: &Caller, resource: &str, e: ApiError) -> ApiError {
    if e.audited {
        return e;
    }
    match state.kms.record_refused_request(caller, resource, e.status()).await {
        Ok(()) => e.now_audited(),
        Err(audit) => {
            tracing::error!(error = %audit, "cannot write the audit log; refusing the request");
            ApiError::from(KmsError::Unavailable(audit))
        }
    }
}
