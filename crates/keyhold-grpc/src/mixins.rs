//! The mixins Google's KMS clients call on the same channel: `google.iam.v1.IAMPolicy` (on
//! key rings, keys, import jobs, projects and `organizations/keyhold`),
//! `google.cloud.location.Locations` and `google.longrunning.Operations` (`GetOperation` of the
//! KMS's deletions), each method `keyhold_server::methods`' implementation.

use keyhold_server::methods;
use tonic::{Request, Response, Status};

use crate::call::Front;
use crate::kms_service::{not_served, not_yet};
use crate::pb::google::cloud::location as loc;
use crate::pb::google::iam::v1 as iam;
use crate::pb::google::longrunning as lro;

type Answer<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl iam::iam_policy_server::IamPolicy for Front {
    async fn set_iam_policy(&self, request: Request<iam::SetIamPolicyRequest>) -> Answer<iam::Policy> {
        self.serve(request, |r| r.resource.clone(), methods::set_iam_policy).await
    }

    async fn get_iam_policy(&self, request: Request<iam::GetIamPolicyRequest>) -> Answer<iam::Policy> {
        self.serve(request, |r| r.resource.clone(), methods::get_iam_policy).await
    }

    async fn test_iam_permissions(
        &self,
        request: Request<iam::TestIamPermissionsRequest>,
    ) -> Answer<iam::TestIamPermissionsResponse> {
        self.serve(request, |r| r.resource.clone(), methods::test_iam_permissions).await
    }
}

#[tonic::async_trait]
impl loc::locations_server::Locations for Front {
    async fn list_locations(&self, request: Request<loc::ListLocationsRequest>) -> Answer<loc::ListLocationsResponse> {
        self.serve(request, |r| r.name.clone(), methods::list_locations).await
    }

    async fn get_location(&self, request: Request<loc::GetLocationRequest>) -> Answer<loc::Location> {
        self.serve(request, |r| r.name.clone(), methods::get_location).await
    }
}

#[tonic::async_trait]
impl lro::operations_server::Operations for Front {
    async fn get_operation(&self, request: Request<lro::GetOperationRequest>) -> Answer<lro::Operation> {
        self.serve(request, |r| r.name.clone(), methods::get_operation).await
    }

    async fn list_operations(
        &self,
        request: Request<lro::ListOperationsRequest>,
    ) -> Answer<lro::ListOperationsResponse> {
        let n = request.get_ref().name.clone();
        not_served(self, request, &n, not_yet("ListOperations")).await
    }

    async fn delete_operation(&self, request: Request<lro::DeleteOperationRequest>) -> Answer<pbjson_types::Empty> {
        let n = request.get_ref().name.clone();
        not_served(self, request, &n, not_yet("DeleteOperation")).await
    }

    async fn cancel_operation(&self, request: Request<lro::CancelOperationRequest>) -> Answer<pbjson_types::Empty> {
        let n = request.get_ref().name.clone();
        not_served(self, request, &n, not_yet("CancelOperation")).await
    }

    async fn wait_operation(&self, request: Request<lro::WaitOperationRequest>) -> Answer<lro::Operation> {
        let n = request.get_ref().name.clone();
        not_served(self, request, &n, not_yet("WaitOperation")).await
    }
}
