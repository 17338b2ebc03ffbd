//! `google.cloud.kms.inventory.v1.KeyTrackingService`: the resources the store protects with
//! a key ([K12]), as REST's `protectedResourcesSummary` and `protectedResources:search`.

use keyhold_server::error::ApiError;
use keyhold_store::model::{ProtectedResourcesSummary, SearchProtectedResourcesResponse};
use tonic::{Request, Response, Status};

use crate::call::Front;
use crate::convert::to_wire;
use crate::pb::google::cloud::kms::inventory::v1 as inv;

type Answer<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl inv::key_tracking_service_server::KeyTrackingService for Front {
    async fn get_protected_resources_summary(
        &self,
        request: Request<inv::GetProtectedResourcesSummaryRequest>,
    ) -> Answer<inv::ProtectedResourcesSummary> {
        let (metadata, _, r) = request.into_parts();
        let key = r.name.strip_suffix("/protectedResourcesSummary").unwrap_or(&r.name).to_string();
        self.call(metadata, &key, async |caller| {
            let found = self.state.store()?.protected_resources(caller, &key, None).await?;
            to_wire(&ProtectedResourcesSummary::of(&key, &found))
        })
        .await
    }

    async fn search_protected_resources(
        &self,
        request: Request<inv::SearchProtectedResourcesRequest>,
    ) -> Answer<inv::SearchProtectedResourcesResponse> {
        let (metadata, _, r) = request.into_parts();
        self.call(metadata, &r.scope, async |caller| {
            let project = match r.scope.strip_prefix("projects/") {
                Some(p) if !p.is_empty() && !p.contains('/') => p,
                _ => {
                    return Err(ApiError::invalid(
                        "Keyhold searches one project: the scope field must be projects/PROJECT_ID.",
                    ));
                }
            };
            if !r.resource_types.is_empty() {
                return Err(ApiError::invalid(
                    "resource_types is not supported by Keyhold: search without it and filter the results.",
                ));
            }
            if r.crypto_key.is_empty() {
                return Err(ApiError::invalid("The crypto_key field is required."));
            }
            let found = self.state.store()?.protected_resources(caller, &r.crypto_key, Some(project)).await?;
            let size = (r.page_size != 0).then_some(i64::from(r.page_size));
            to_wire(&SearchProtectedResourcesResponse::page(found, size, &r.page_token))
        })
        .await
    }
}
