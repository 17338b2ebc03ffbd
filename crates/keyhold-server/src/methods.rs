//! Every Google API method Keyhold serves, implemented once over the generated messages
//! (`keyhold-proto`): a request message in, a response message out, for the caller a front end
//! has authenticated. The REST surface (`kms_routes`, `store_routes`) transcodes a request's
//! path, query and JSON body into the request message, as Google's front ends do by the
//! protos' `google.api.http` rules, and writes the answer as proto3 JSON; the gRPC surface
//! (`keyhold-grpc`) receives the message as it is. Either way the same code runs, so the two
//! wire forms accept the same fields, answer the same messages and fail the same way.

use keyhold_api::page::PageRequest;
use keyhold_api::resources::{CryptoKey, CryptoKeyVersion, ImportJob, KeyRing};
use keyhold_api::{CryptoKeyName, CryptoKeyVersionName, ImportJobName, KeyRingName, LocationName, NameError};
use keyhold_kms::{Caller, EncryptTarget, IamResource, ListQuery};
use keyhold_proto::convert::{self, from_wire, to_wire};
use keyhold_proto::google::cloud::kms::inventory::v1 as inv;
use keyhold_proto::google::cloud::kms::v1 as pb;
use keyhold_proto::google::cloud::location as loc;
use keyhold_proto::google::iam::v1 as iam;
use keyhold_store::model::{ProtectedResourcesSummary, SearchProtectedResourcesResponse};

use crate::AppState;
use crate::error::ApiError;
use crate::route;

type Answer<T> = Result<T, ApiError>;

/// A resource name from a request field (REST puts the path's name there), parsed as REST
/// parses the same name in a path.
pub fn name<N: std::str::FromStr<Err = NameError>>(field: &str, value: &str) -> Answer<N> {
    if value.is_empty() {
        return Err(ApiError::invalid(format!("The {field} field is required.")));
    }
    value.parse().map_err(|e: NameError| ApiError::invalid(e.to_string()))
}

/// The resource of an IAM method (`organizations/keyhold`, a project, a key ring or a key).
pub fn iam_resource(resource: &str) -> Answer<IamResource> {
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
            "{} has no IAM policy in Keyhold: policies are held by organizations/keyhold, projects, key rings, \
             crypto keys and import jobs.",
            resource.chars().take(300).collect::<String>()
        ))
    })
}

fn list_query(page_size: i32, page_token: String, filter: String, order_by: String) -> ListQuery {
    ListQuery { page: PageRequest { page_size: i64::from(page_size), page_token }, filter, order_by }
}

/// `ListKeyRings`.
pub async fn list_key_rings(
    s: &AppState,
    caller: &Caller,
    r: pb::ListKeyRingsRequest,
) -> Answer<pb::ListKeyRingsResponse> {
    let parent: LocationName = name("parent", &r.parent)?;
    let page =
        s.kms.list_key_rings(caller, &parent, &list_query(r.page_size, r.page_token, r.filter, r.order_by)).await?;
    Ok(pb::ListKeyRingsResponse {
        key_rings: page.items.iter().map(to_wire).collect::<Result<_, _>>()?,
        next_page_token: page.next_page_token,
        total_size: page.total_size,
    })
}

/// `ListCryptoKeys`.
pub async fn list_crypto_keys(
    s: &AppState,
    caller: &Caller,
    r: pb::ListCryptoKeysRequest,
) -> Answer<pb::ListCryptoKeysResponse> {
    let parent: KeyRingName = name("parent", &r.parent)?;
    let q = list_query(r.page_size, r.page_token, r.filter, r.order_by);
    let page = s.kms.list_crypto_keys(caller, &parent, &q).await?;
    Ok(pb::ListCryptoKeysResponse {
        crypto_keys: page.items.iter().map(to_wire).collect::<Result<_, _>>()?,
        next_page_token: page.next_page_token,
        total_size: page.total_size,
    })
}

/// `ListCryptoKeyVersions`.
pub async fn list_crypto_key_versions(
    s: &AppState,
    caller: &Caller,
    r: pb::ListCryptoKeyVersionsRequest,
) -> Answer<pb::ListCryptoKeyVersionsResponse> {
    let parent: CryptoKeyName = name("parent", &r.parent)?;
    let q = list_query(r.page_size, r.page_token, r.filter, r.order_by);
    let page = s.kms.list_versions(caller, &parent, &q).await?;
    Ok(pb::ListCryptoKeyVersionsResponse {
        crypto_key_versions: page.items.iter().map(to_wire).collect::<Result<_, _>>()?,
        next_page_token: page.next_page_token,
        total_size: page.total_size,
    })
}

/// `GetKeyRing`.
pub async fn get_key_ring(s: &AppState, caller: &Caller, r: pb::GetKeyRingRequest) -> Answer<pb::KeyRing> {
    let n: KeyRingName = name("name", &r.name)?;
    Ok(to_wire(&s.kms.key_ring(caller, &n).await?)?)
}

/// `GetCryptoKey`.
pub async fn get_crypto_key(s: &AppState, caller: &Caller, r: pb::GetCryptoKeyRequest) -> Answer<pb::CryptoKey> {
    let n: CryptoKeyName = name("name", &r.name)?;
    Ok(to_wire(&s.kms.crypto_key(caller, &n).await?)?)
}

/// `GetCryptoKeyVersion`.
pub async fn get_crypto_key_version(
    s: &AppState,
    caller: &Caller,
    r: pb::GetCryptoKeyVersionRequest,
) -> Answer<pb::CryptoKeyVersion> {
    let n: CryptoKeyVersionName = name("name", &r.name)?;
    Ok(to_wire(&s.kms.version(caller, &n).await?)?)
}

/// `CreateKeyRing`.
pub async fn create_key_ring(s: &AppState, caller: &Caller, r: pb::CreateKeyRingRequest) -> Answer<pb::KeyRing> {
    let parent: LocationName = name("parent", &r.parent)?;
    // Its fields are all output only; any set is refused.
    let _: KeyRing = from_wire(&r.key_ring.unwrap_or_default())?;
    if r.key_ring_id.is_empty() {
        return Err(ApiError::invalid("The key_ring_id field is required."));
    }
    Ok(to_wire(&s.kms.create_key_ring(caller, &parent, &r.key_ring_id).await?)?)
}

/// `CreateCryptoKey`.
pub async fn create_crypto_key(s: &AppState, caller: &Caller, r: pb::CreateCryptoKeyRequest) -> Answer<pb::CryptoKey> {
    let parent: KeyRingName = name("parent", &r.parent)?;
    if r.trusted_wrapping_enabled {
        return Err(ApiError::invalid("trusted_wrapping_enabled is not supported by Keyhold."));
    }
    let key: CryptoKey = from_wire(&r.crypto_key.unwrap_or_default())?;
    if r.crypto_key_id.is_empty() {
        return Err(ApiError::invalid("The crypto_key_id field is required."));
    }
    let created =
        s.kms.create_crypto_key(caller, &parent, &r.crypto_key_id, key, r.skip_initial_version_creation).await?;
    Ok(to_wire(&created)?)
}

/// `DeleteCryptoKeyVersion`: a finished `google.longrunning.Operation`.
pub async fn delete_crypto_key_version(
    s: &AppState,
    caller: &Caller,
    r: pb::DeleteCryptoKeyVersionRequest,
) -> Answer<keyhold_proto::google::longrunning::Operation> {
    let n: CryptoKeyVersionName = name("name", &r.name)?;
    Ok(to_wire(&s.kms.delete_version(caller, &n).await?)?)
}

/// `DeleteCryptoKey`: a finished `google.longrunning.Operation`.
pub async fn delete_crypto_key(
    s: &AppState,
    caller: &Caller,
    r: pb::DeleteCryptoKeyRequest,
) -> Answer<keyhold_proto::google::longrunning::Operation> {
    let n: CryptoKeyName = name("name", &r.name)?;
    Ok(to_wire(&s.kms.delete_crypto_key(caller, &n).await?)?)
}

/// `GetOperation` over gRPC: the KMS's operations (its deletions). The store's copies are
/// long-running operations of another API, served over REST (`GET /v1/{name}`).
pub async fn get_operation(
    s: &AppState,
    caller: &Caller,
    r: keyhold_proto::google::longrunning::GetOperationRequest,
) -> Answer<keyhold_proto::google::longrunning::Operation> {
    let parts: Vec<&str> = r.name.split('/').collect();
    match parts.as_slice() {
        ["projects", p, "locations", l, "operations", id] if LocationName::new(p, l).is_ok() => {
            if id.starts_with(keyhold_kms::KMS_OPERATION_PREFIX) {
                Ok(to_wire(&s.kms.operation(caller, &r.name).await?)?)
            } else {
                Err(ApiError::new(
                    keyhold_api::Code::Unimplemented,
                    format!("The store's operations are served over REST: GET /v1/{}.", r.name),
                ))
            }
        }
        _ => Err(ApiError::invalid(format!(
            "Invalid operation name {:?}: expected projects/P/locations/L/operations/ID.",
            r.name.chars().take(300).collect::<String>()
        ))),
    }
}

/// `GetRetiredResource`.
pub async fn get_retired_resource(
    s: &AppState,
    caller: &Caller,
    r: pb::GetRetiredResourceRequest,
) -> Answer<pb::RetiredResource> {
    match route::parse(&r.name) {
        Ok((route::Target::RetiredResource(n), None)) => Ok(to_wire(&s.kms.retired_resource(caller, &n).await?)?),
        Err(route::RouteError::BadName(e)) => Err(ApiError::invalid(e.to_string())),
        _ => Err(ApiError::invalid(format!(
            "Invalid retired resource name {:?}: expected projects/P/locations/L/retiredResources/ID.",
            r.name.chars().take(300).collect::<String>()
        ))),
    }
}

/// `ListRetiredResources`.
pub async fn list_retired_resources(
    s: &AppState,
    caller: &Caller,
    r: pb::ListRetiredResourcesRequest,
) -> Answer<pb::ListRetiredResourcesResponse> {
    let parent: LocationName = name("parent", &r.parent)?;
    let q = list_query(r.page_size, r.page_token, String::new(), String::new());
    let page = s.kms.list_retired_resources(caller, &parent, &q).await?;
    Ok(pb::ListRetiredResourcesResponse {
        retired_resources: page.items.iter().map(to_wire).collect::<Result<_, _>>()?,
        next_page_token: page.next_page_token,
        total_size: i64::from(page.total_size),
    })
}

/// `CreateImportJob`: output-only fields a client echoes back are ignored, as Cloud KMS does.
pub async fn create_import_job(s: &AppState, caller: &Caller, r: pb::CreateImportJobRequest) -> Answer<pb::ImportJob> {
    let parent: KeyRingName = name("parent", &r.parent)?;
    let mut job: ImportJob = from_wire(&r.import_job.unwrap_or_default())?;
    if r.import_job_id.is_empty() {
        return Err(ApiError::invalid("The import_job_id field is required."));
    }
    if job.public_key_format.is_some_and(|f| f != keyhold_api::messages::PublicKeyFormat::Unspecified) {
        return Err(ApiError::invalid("public_key_format is for HPKE import jobs, which Keyhold does not serve."));
    }
    job.public_key_format = None;
    Ok(to_wire(&s.kms.create_import_job(caller, &parent, &r.import_job_id, job).await?)?)
}

/// `GetImportJob`.
pub async fn get_import_job(s: &AppState, caller: &Caller, r: pb::GetImportJobRequest) -> Answer<pb::ImportJob> {
    let n: ImportJobName = name("name", &r.name)?;
    Ok(to_wire(&s.kms.import_job(caller, &n).await?)?)
}

/// `ListImportJobs`.
pub async fn list_import_jobs(
    s: &AppState,
    caller: &Caller,
    r: pb::ListImportJobsRequest,
) -> Answer<pb::ListImportJobsResponse> {
    let parent: KeyRingName = name("parent", &r.parent)?;
    let q = list_query(r.page_size, r.page_token, r.filter, r.order_by);
    let page = s.kms.list_import_jobs(caller, &parent, &q).await?;
    Ok(pb::ListImportJobsResponse {
        import_jobs: page.items.iter().map(to_wire).collect::<Result<_, _>>()?,
        next_page_token: page.next_page_token,
        total_size: page.total_size,
    })
}

/// `ImportCryptoKeyVersion`.
pub async fn import_crypto_key_version(
    s: &AppState,
    caller: &Caller,
    r: pb::ImportCryptoKeyVersionRequest,
) -> Answer<pb::CryptoKeyVersion> {
    let parent: CryptoKeyName = name("parent", &r.parent)?;
    let req = convert::import_request(r)?;
    Ok(to_wire(&s.kms.import_version(caller, &parent, &req).await?)?)
}

/// `CreateCryptoKeyVersion`.
pub async fn create_crypto_key_version(
    s: &AppState,
    caller: &Caller,
    r: pb::CreateCryptoKeyVersionRequest,
) -> Answer<pb::CryptoKeyVersion> {
    let parent: CryptoKeyName = name("parent", &r.parent)?;
    let v: CryptoKeyVersion = from_wire(&r.crypto_key_version.unwrap_or_default())?;
    Ok(to_wire(&s.kms.create_version(caller, &parent, v).await?)?)
}

/// `UpdateCryptoKey`.
pub async fn update_crypto_key(s: &AppState, caller: &Caller, r: pb::UpdateCryptoKeyRequest) -> Answer<pb::CryptoKey> {
    let mut key = r.crypto_key.unwrap_or_default();
    let n: CryptoKeyName = name("crypto_key.name", &key.name)?;
    key.name.clear();
    let patch: CryptoKey = from_wire(&key)?;
    Ok(to_wire(&s.kms.update_crypto_key(caller, &n, patch, &convert::field_mask(r.update_mask)).await?)?)
}

/// `UpdateCryptoKeyVersion`.
pub async fn update_crypto_key_version(
    s: &AppState,
    caller: &Caller,
    r: pb::UpdateCryptoKeyVersionRequest,
) -> Answer<pb::CryptoKeyVersion> {
    let mut version = r.crypto_key_version.unwrap_or_default();
    let n: CryptoKeyVersionName = name("crypto_key_version.name", &version.name)?;
    version.name.clear();
    let patch: CryptoKeyVersion = from_wire(&version)?;
    Ok(to_wire(&s.kms.update_version(caller, &n, patch, &convert::field_mask(r.update_mask)).await?)?)
}

/// `UpdateCryptoKeyPrimaryVersion`.
pub async fn update_crypto_key_primary_version(
    s: &AppState,
    caller: &Caller,
    r: pb::UpdateCryptoKeyPrimaryVersionRequest,
) -> Answer<pb::CryptoKey> {
    let n: CryptoKeyName = name("name", &r.name)?;
    Ok(to_wire(&s.kms.update_primary_version(caller, &n, &r.crypto_key_version_id).await?)?)
}

/// `DestroyCryptoKeyVersion`.
pub async fn destroy_crypto_key_version(
    s: &AppState,
    caller: &Caller,
    r: pb::DestroyCryptoKeyVersionRequest,
) -> Answer<pb::CryptoKeyVersion> {
    let n: CryptoKeyVersionName = name("name", &r.name)?;
    Ok(to_wire(&s.kms.destroy_version(caller, &n).await?)?)
}

/// `RestoreCryptoKeyVersion`.
pub async fn restore_crypto_key_version(
    s: &AppState,
    caller: &Caller,
    r: pb::RestoreCryptoKeyVersionRequest,
) -> Answer<pb::CryptoKeyVersion> {
    let n: CryptoKeyVersionName = name("name", &r.name)?;
    Ok(to_wire(&s.kms.restore_version(caller, &n).await?)?)
}

/// `Encrypt`, with a key (its primary version) or one of its versions.
pub async fn encrypt(s: &AppState, caller: &Caller, r: pb::EncryptRequest) -> Answer<pb::EncryptResponse> {
    let target = if r.name.contains("/cryptoKeyVersions/") {
        EncryptTarget::Version(name("name", &r.name)?)
    } else {
        EncryptTarget::Key(name("name", &r.name)?)
    };
    let req = convert::encrypt_request(r)?;
    Ok(convert::encrypt_response(s.kms.encrypt(caller, &target, &req).await?))
}

/// `Decrypt`.
pub async fn decrypt(s: &AppState, caller: &Caller, r: pb::DecryptRequest) -> Answer<pb::DecryptResponse> {
    let n: CryptoKeyName = name("name", &r.name)?;
    let req = convert::decrypt_request(r)?;
    Ok(convert::decrypt_response(&s.kms.decrypt(caller, &n, &req).await?))
}

/// `AsymmetricSign`.
pub async fn asymmetric_sign(
    s: &AppState,
    caller: &Caller,
    r: pb::AsymmetricSignRequest,
) -> Answer<pb::AsymmetricSignResponse> {
    let n: CryptoKeyVersionName = name("name", &r.name)?;
    let req = convert::asymmetric_sign_request(r)?;
    Ok(convert::asymmetric_sign_response(s.kms.asymmetric_sign(caller, &n, &req).await?))
}

/// `AsymmetricDecrypt`.
pub async fn asymmetric_decrypt(
    s: &AppState,
    caller: &Caller,
    r: pb::AsymmetricDecryptRequest,
) -> Answer<pb::AsymmetricDecryptResponse> {
    let n: CryptoKeyVersionName = name("name", &r.name)?;
    let req = convert::asymmetric_decrypt_request(r)?;
    Ok(convert::asymmetric_decrypt_response(&s.kms.asymmetric_decrypt(caller, &n, &req).await?))
}

/// `GetPublicKey`.
pub async fn get_public_key(s: &AppState, caller: &Caller, r: pb::GetPublicKeyRequest) -> Answer<pb::PublicKey> {
    let n: CryptoKeyVersionName = name("name", &r.name)?;
    let format = convert::public_key_format(r.public_key_format)?;
    Ok(convert::public_key(s.kms.public_key(caller, &n, format).await?))
}

/// `MacSign`.
pub async fn mac_sign(s: &AppState, caller: &Caller, r: pb::MacSignRequest) -> Answer<pb::MacSignResponse> {
    let n: CryptoKeyVersionName = name("name", &r.name)?;
    let req = convert::mac_sign_request(r)?;
    Ok(convert::mac_sign_response(s.kms.mac_sign(caller, &n, &req).await?))
}

/// `MacVerify`.
pub async fn mac_verify(s: &AppState, caller: &Caller, r: pb::MacVerifyRequest) -> Answer<pb::MacVerifyResponse> {
    let n: CryptoKeyVersionName = name("name", &r.name)?;
    let req = convert::mac_verify_request(r)?;
    Ok(convert::mac_verify_response(s.kms.mac_verify(caller, &n, &req).await?))
}

/// `Decapsulate`.
pub async fn decapsulate(s: &AppState, caller: &Caller, r: pb::DecapsulateRequest) -> Answer<pb::DecapsulateResponse> {
    let n: CryptoKeyVersionName = name("name", &r.name)?;
    let req = convert::decapsulate_request(r)?;
    Ok(convert::decapsulate_response(&s.kms.decapsulate(caller, &n, &req).await?))
}

/// `RawEncrypt`.
pub async fn raw_encrypt(s: &AppState, caller: &Caller, r: pb::RawEncryptRequest) -> Answer<pb::RawEncryptResponse> {
    let n: CryptoKeyVersionName = name("name", &r.name)?;
    let req = convert::raw_encrypt_request(r)?;
    Ok(convert::raw_encrypt_response(s.kms.raw_encrypt(caller, &n, &req).await?))
}

/// `RawDecrypt`.
pub async fn raw_decrypt(s: &AppState, caller: &Caller, r: pb::RawDecryptRequest) -> Answer<pb::RawDecryptResponse> {
    let n: CryptoKeyVersionName = name("name", &r.name)?;
    let req = convert::raw_decrypt_request(r)?;
    Ok(convert::raw_decrypt_response(&s.kms.raw_decrypt(caller, &n, &req).await?))
}

/// `GenerateRandomBytes`.
pub async fn generate_random_bytes(
    s: &AppState,
    caller: &Caller,
    r: pb::GenerateRandomBytesRequest,
) -> Answer<pb::GenerateRandomBytesResponse> {
    let location: LocationName = name("location", &r.location)?;
    let req = convert::generate_random_bytes_request(r)?;
    Ok(convert::generate_random_bytes_response(&s.kms.generate_random_bytes(caller, &location, &req).await?))
}

/// `google.iam.v1.IAMPolicy.GetIamPolicy`.
pub async fn get_iam_policy(s: &AppState, caller: &Caller, r: iam::GetIamPolicyRequest) -> Answer<iam::Policy> {
    let on = iam_resource(&r.resource)?;
    Ok(to_wire(&s.kms.get_iam_policy(caller, &on).await?)?)
}

/// `google.iam.v1.IAMPolicy.SetIamPolicy`.
pub async fn set_iam_policy(s: &AppState, caller: &Caller, r: iam::SetIamPolicyRequest) -> Answer<iam::Policy> {
    let on = iam_resource(&r.resource)?;
    let policy = r.policy.as_ref().map(from_wire).transpose()?;
    let req = keyhold_api::iam::SetIamPolicyRequest { policy, update_mask: convert::field_mask(r.update_mask) };
    Ok(to_wire(&s.kms.set_iam_policy(caller, &on, &req).await?)?)
}

/// `google.iam.v1.IAMPolicy.TestIamPermissions`.
pub async fn test_iam_permissions(
    s: &AppState,
    caller: &Caller,
    r: iam::TestIamPermissionsRequest,
) -> Answer<iam::TestIamPermissionsResponse> {
    let on = iam_resource(&r.resource)?;
    let permissions = s.kms.test_iam_permissions(caller, &on, &r.permissions).await?;
    Ok(iam::TestIamPermissionsResponse { permissions })
}

/// `google.cloud.location.Locations.ListLocations`.
pub async fn list_locations(
    s: &AppState,
    caller: &Caller,
    r: loc::ListLocationsRequest,
) -> Answer<loc::ListLocationsResponse> {
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
    let page = s.kms.list_locations(caller, project, &q).await?;
    let locations = page.items.iter().map(convert::location).collect::<Result<_, _>>()?;
    Ok(loc::ListLocationsResponse { locations, next_page_token: page.next_page_token })
}

/// `google.cloud.location.Locations.GetLocation`.
pub async fn get_location(s: &AppState, caller: &Caller, r: loc::GetLocationRequest) -> Answer<loc::Location> {
    let n: LocationName = name("name", &r.name)?;
    Ok(convert::location(&s.kms.location(caller, &n).await?)?)
}

/// The key a `…/protectedResourcesSummary` name is about.
pub fn summarized_key(name: &str) -> &str {
    name.strip_suffix("/protectedResourcesSummary").unwrap_or(name)
}

/// Inventory's `GetProtectedResourcesSummary`.
pub async fn get_protected_resources_summary(
    s: &AppState,
    caller: &Caller,
    r: inv::GetProtectedResourcesSummaryRequest,
) -> Answer<inv::ProtectedResourcesSummary> {
    let key = summarized_key(&r.name);
    let found = s.store()?.protected_resources(caller, key, None).await?;
    Ok(to_wire(&ProtectedResourcesSummary::of(key, &found))?)
}

/// Inventory's `SearchProtectedResources`.
pub async fn search_protected_resources(
    s: &AppState,
    caller: &Caller,
    r: inv::SearchProtectedResourcesRequest,
) -> Answer<inv::SearchProtectedResourcesResponse> {
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
    let found = s.store()?.protected_resources(caller, &r.crypto_key, Some(project)).await?;
    let size = (r.page_size != 0).then_some(i64::from(r.page_size));
    Ok(to_wire(&SearchProtectedResourcesResponse::page(found, size, &r.page_token))?)
}
