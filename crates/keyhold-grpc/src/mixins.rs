//! The mixins Google's KMS clients call on the same channel: `google.iam.v1.IAMPolicy` (on
//! key rings, keys, projects and `organizations/keyhold`) and `google.cloud.location.Locations`.

use keyhold_api::LocationName;
use keyhold_api::iam::{Policy, SetIamPolicyRequest};
use keyhold_api::page::PageRequest;
use keyhold_kms::{IamResource, ListQuery};
use keyhold_server::error::ApiError;
use keyhold_server::route;
use tonic::{Request, Response, Status};

use crate::call::{Front, name};
use crate::convert::{self, from_wire, to_wire};
use crate::pb::google::cloud::location as loc;
use crate::pb::google::iam::v1 as iam;

type Answer<T> = Result<Response<T>, Status>;

/// The resource of an IAM call, as REST reads it from the path.
fn iam_resource(resource: &str) -> Result<IamResource, ApiError> {
    if resource.is_empty() {
        return Err(ApiError::invalid("The resource field is required."));
    }
    let held = match route::parse(resource) {
        Ok((target, None)) => target.iam_resource(),
        Err(route::RouteError::BadName(e)) => return Err(ApiError::invalid(e.to_string())),
        _ => None,
    };
    held.ok_or_else(|| {
        ApiError::invalid(format!(
            "{} has no IAM policy in Keyhold: policies are held by organizations/keyhold, projects, key rings and \
             crypto keys.",
            resource.chars().take(300).collect::<String>()
        ))
    })
}

#[tonic::async_trait]
impl iam::iam_policy_server::IamPolicy for Front {
    async fn set_iam_policy(&self, request: Request<iam::SetIamPolicyRequest>) -> Answer<iam::Policy> {
        let (metadata, _, mut r) = request.into_parts();
        let resource = std::mem::take(&mut r.resource);
        self.call(metadata, &resource, async |caller| {
            let on = iam_resource(&resource)?;
            let policy = r.policy.as_ref().map(from_wire).transpose()?;
            let req = SetIamPolicyRequest { policy, update_mask: convert::field_mask(r.update_mask) };
            to_wire(&self.state.kms.set_iam_policy(caller, &on, &req).await?)
        })
        .await
    }

    async fn get_iam_policy(&self, request: Request<iam::GetIamPolicyRequest>) -> Answer<iam::Policy> {
        let (metadata, _, r) = request.into_parts();
        self.call(metadata, &r.resource, async |caller| {
            let on = iam_resource(&r.resource)?;
            let policy: Policy = self.state.kms.get_iam_policy(caller, &on).await?;
            to_wire(&policy)
        })
        .await
    }

    async fn test_iam_permissions(
        &self,
        request: Request<iam::TestIamPermissionsRequest>,
    ) -> Answer<iam::TestIamPermissionsResponse> {
        let (metadata, _, r) = request.into_parts();
        self.call(metadata, &r.resource, async |caller| {
            let on = iam_resource(&r.resource)?;
            let permissions = self.state.kms.test_iam_permissions(caller, &on, &r.permissions).await?;
            Ok(iam::TestIamPermissionsResponse { permissions })
        })
        .await
    }
}

#[tonic::async_trait]
impl loc::locations_server::Locations for Front {
    async fn list_locations(&self, request: Request<loc::ListLocationsRequest>) -> Answer<loc::ListLocationsResponse> {
        let (metadata, _, r) = request.into_parts();
        self.call(metadata, &r.name, async |caller| {
            let project = match r.name.strip_prefix("projects/") {
                Some(p) if !p.contains('/') => p,
                _ => return Err(ApiError::invalid("The name field must be projects/PROJECT_ID.")),
            };
            LocationName::new(project, "global").map_err(|e| ApiError::invalid(e.to_string()))?;
            let q = ListQuery {
                page: PageRequest { page_size: i64::from(r.page_size), page_token: r.page_token },
                filter: r.filter,
                order_by: String::new(),
            };
            let page = self.state.kms.list_locations(caller, project, &q).await?;
            let locations = page.items.into_iter().map(convert::location).collect::<Result<_, _>>()?;
            Ok(loc::ListLocationsResponse { locations, next_page_token: page.next_page_token })
        })
        .await
    }

    async fn get_location(&self, request: Request<loc::GetLocationRequest>) -> Answer<loc::Location> {
        let (metadata, _, r) = request.into_parts();
        self.call(metadata, &r.name, async |caller| {
            let n: LocationName = name("name", &r.name)?;
            convert::location(self.state.kms.location(caller, &n).await?)
        })
        .await
    }
}
