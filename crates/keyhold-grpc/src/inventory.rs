//! `google.cloud.kms.inventory.v1.KeyTrackingService`: the resources the store protects with
//! a key ([K12]), each method `keyhold_server::methods`' implementation (REST's
//! `protectedResourcesSummary` and `protectedResources:search` run the same).

use keyhold_server::methods;
use tonic::{Request, Response, Status};

use crate::call::Front;
use crate::pb::google::cloud::kms::inventory::v1 as inv;

type Answer<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl inv::key_tracking_service_server::KeyTrackingService for Front {
    async fn get_protected_resources_summary(
        &self,
        request: Request<inv::GetProtectedResourcesSummaryRequest>,
    ) -> Answer<inv::ProtectedResourcesSummary> {
        // A refusal is audited on the key, as over REST.
        self.serve(request, |r| methods::summarized_key(&r.name).to_string(), methods::get_protected_resources_summary)
            .await
    }

    async fn search_protected_resources(
        &self,
        request: Request<inv::SearchProtectedResourcesRequest>,
    ) -> Answer<inv::SearchProtectedResourcesResponse> {
        self.serve(request, |r| r.scope.clone(), methods::search_protected_resources).await
    }
}
