//! One gRPC call around a Keyhold method: the caller from the metadata, the method, and the
//! refusal's audit entry, the same steps as REST's (`keyhold_server::front`).

use keyhold_kms::Caller;
use keyhold_server::AppState;
use keyhold_server::error::ApiError;
use keyhold_server::front;
use tonic::metadata::MetadataMap;

use crate::status::to_grpc;

/// The state every service of the gRPC front end shares.
#[derive(Clone, Debug)]
pub struct Front {
    pub(crate) state: AppState,
}

impl Front {
    /// Serves `request` with `method` (one of `keyhold_server::methods`, which REST runs too),
    /// its refusals audited on the resource `resource` names.
    pub(crate) async fn serve<R, T>(
        &self,
        request: tonic::Request<R>,
        resource: impl FnOnce(&R) -> String,
        method: impl AsyncFnOnce(&AppState, &Caller, R) -> Result<T, ApiError>,
    ) -> Result<tonic::Response<T>, tonic::Status> {
        let (metadata, _, message) = request.into_parts();
        let on = resource(&message);
        self.call(metadata, &on, async |caller| method(&self.state, caller, message).await).await
    }

    /// Runs `method` for the caller the metadata authenticate, on `resource` (the name the
    /// audit entry of a refusal records): `UNAUTHENTICATED` without a valid credential, and
    /// every error as REST sends it.
    pub(crate) async fn call<T>(
        &self,
        metadata: MetadataMap,
        resource: &str,
        method: impl AsyncFnOnce(&Caller) -> Result<T, ApiError>,
    ) -> Result<tonic::Response<T>, tonic::Status> {
        let headers = metadata.into_headers();
        let caller = match front::authenticate(&self.state, &headers, resource).await {
            Ok(c) => c,
            Err(e) => return Err(to_grpc(&e.into_status())),
        };
        match method(&caller).await {
            Ok(answer) => Ok(tonic::Response::new(answer)),
            Err(e) => Err(to_grpc(&front::refused(&self.state, &caller, resource, e).await.into_status())),
        }
    }
}
