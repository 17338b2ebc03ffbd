//! The mixins Google's KMS clients call on the same channel: `google.iam.v1.IAMPolicy` (on
//! key rings, keys, projects and `organizations/keyhold`) and `google.cloud.location.Locations`,
//! each method `keyhold_server::methods`' implementation.

use keyhold_server::methods;
use tonic::{Request, Response, Status};

use crate::call::Front;
use crate::pb::google::cloud::location as loc;
use crate::pb::google::iam::v1 as iam;

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
