//! `google.cloud.kms.v1.KeyManagementService`: each method is the REST method's twin
//! (`keyhold-server`'s `kms_routes`), one call of the KMS façade.

use keyhold_api::messages::{ListCryptoKeyVersionsResponse, ListCryptoKeysResponse, ListKeyRingsResponse};
use keyhold_api::page::PageRequest;
use keyhold_api::resources::{CryptoKey, CryptoKeyVersion};
use keyhold_api::{CryptoKeyName, CryptoKeyVersionName, KeyRingName, LocationName};
use keyhold_kms::{EncryptTarget, ListQuery};
use keyhold_server::error::ApiError;
use tonic::{Request, Response, Status};

use crate::call::{Front, name};
use crate::convert::{self, from_wire, to_wire};
use crate::pb::google::cloud::kms::v1 as pb;
use crate::pb::google::cloud::kms::v1::key_management_service_server::KeyManagementService;

type Answer<T> = Result<Response<T>, Status>;

fn list_query(page_size: i32, page_token: String, filter: String, order_by: String) -> ListQuery {
    ListQuery { page: PageRequest { page_size: i64::from(page_size), page_token }, filter, order_by }
}

/// A method Keyhold does not serve: `UNIMPLEMENTED`, after authentication and with its audit
/// entry, as over REST.
async fn not_served<T>(front: &Front, request: Request<impl Send>, resource: &str, message: String) -> Answer<T> {
    front
        .call(request.into_parts().0, resource, async |_| {
            Err::<T, _>(ApiError::new(keyhold_api::Code::Unimplemented, message))
        })
        .await
}

fn not_yet(method: &str) -> String {
    format!("{method} is not implemented by Keyhold yet; see docs/api.md for the methods it serves.")
}

#[tonic::async_trait]
impl KeyManagementService for Front {
    async fn list_key_rings(&self, request: Request<pb::ListKeyRingsRequest>) -> Answer<pb::ListKeyRingsResponse> {
        let (metadata, _, r) = request.into_parts();
        self.call(metadata, &r.parent.clone(), async |caller| {
            let parent: LocationName = name("parent", &r.parent)?;
            let page = self
                .state
                .kms
                .list_key_rings(caller, &parent, &list_query(r.page_size, r.page_token, r.filter, r.order_by))
                .await?;
            to_wire(&ListKeyRingsResponse {
                key_rings: page.items,
                next_page_token: page.next_page_token,
                total_size: page.total_size,
            })
        })
        .await
    }

    async fn list_crypto_keys(
        &self,
        request: Request<pb::ListCryptoKeysRequest>,
    ) -> Answer<pb::ListCryptoKeysResponse> {
        let (metadata, _, r) = request.into_parts();
        self.call(metadata, &r.parent.clone(), async |caller| {
            let parent: KeyRingName = name("parent", &r.parent)?;
            let q = list_query(r.page_size, r.page_token, r.filter, r.order_by);
            let page = self.state.kms.list_crypto_keys(caller, &parent, &q).await?;
            to_wire(&ListCryptoKeysResponse {
                crypto_keys: page.items,
                next_page_token: page.next_page_token,
                total_size: page.total_size,
            })
        })
        .await
    }

    async fn list_crypto_key_versions(
        &self,
        request: Request<pb::ListCryptoKeyVersionsRequest>,
    ) -> Answer<pb::ListCryptoKeyVersionsResponse> {
        let (metadata, _, r) = request.into_parts();
        self.call(metadata, &r.parent.clone(), async |caller| {
            let parent: CryptoKeyName = name("parent", &r.parent)?;
            let q = list_query(r.page_size, r.page_token, r.filter, r.order_by);
            let page = self.state.kms.list_versions(caller, &parent, &q).await?;
            to_wire(&ListCryptoKeyVersionsResponse {
                crypto_key_versions: page.items,
                next_page_token: page.next_page_token,
                total_size: page.total_size,
            })
        })
        .await
    }

    async fn list_import_jobs(
        &self,
        request: Request<pb::ListImportJobsRequest>,
    ) -> Answer<pb::ListImportJobsResponse> {
        let parent = request.get_ref().parent.clone();
        not_served(self, request, &parent, not_yet("ListImportJobs")).await
    }

    async fn list_retired_resources(
        &self,
        request: Request<pb::ListRetiredResourcesRequest>,
    ) -> Answer<pb::ListRetiredResourcesResponse> {
        let parent = request.get_ref().parent.clone();
        not_served(self, request, &parent, not_yet("ListRetiredResources")).await
    }

    async fn get_key_ring(&self, request: Request<pb::GetKeyRingRequest>) -> Answer<pb::KeyRing> {
        let (metadata, _, r) = request.into_parts();
        self.call(metadata, &r.name, async |caller| {
            let n: KeyRingName = name("name", &r.name)?;
            to_wire(&self.state.kms.key_ring(caller, &n).await?)
        })
        .await
    }

    async fn get_crypto_key(&self, request: Request<pb::GetCryptoKeyRequest>) -> Answer<pb::CryptoKey> {
        let (metadata, _, r) = request.into_parts();
        self.call(metadata, &r.name, async |caller| {
            let n: CryptoKeyName = name("name", &r.name)?;
            to_wire(&self.state.kms.crypto_key(caller, &n).await?)
        })
        .await
    }

    async fn get_crypto_key_version(
        &self,
        request: Request<pb::GetCryptoKeyVersionRequest>,
    ) -> Answer<pb::CryptoKeyVersion> {
        let (metadata, _, r) = request.into_parts();
        self.call(metadata, &r.name, async |caller| {
            let n: CryptoKeyVersionName = name("name", &r.name)?;
            to_wire(&self.state.kms.version(caller, &n).await?)
        })
        .await
    }

    async fn get_public_key(&self, request: Request<pb::GetPublicKeyRequest>) -> Answer<pb::PublicKey> {
        let n = request.get_ref().name.clone();
        not_served(self, request, &n, not_yet("GetPublicKey (asymmetric keys)")).await
    }

    async fn get_import_job(&self, request: Request<pb::GetImportJobRequest>) -> Answer<pb::ImportJob> {
        let n = request.get_ref().name.clone();
        not_served(self, request, &n, not_yet("GetImportJob")).await
    }

    async fn get_retired_resource(
        &self,
        request: Request<pb::GetRetiredResourceRequest>,
    ) -> Answer<pb::RetiredResource> {
        let n = request.get_ref().name.clone();
        not_served(self, request, &n, not_yet("GetRetiredResource")).await
    }

    async fn create_key_ring(&self, request: Request<pb::CreateKeyRingRequest>) -> Answer<pb::KeyRing> {
        let (metadata, _, r) = request.into_parts();
        self.call(metadata, &r.parent.clone(), async |caller| {
            let parent: LocationName = name("parent", &r.parent)?;
            // Its fields are all output only; any set is refused, as REST refuses them.
            let _: keyhold_api::resources::KeyRing = from_wire(&r.key_ring.unwrap_or_default())?;
            if r.key_ring_id.is_empty() {
                return Err(ApiError::invalid("The key_ring_id field is required."));
            }
            to_wire(&self.state.kms.create_key_ring(caller, &parent, &r.key_ring_id).await?)
        })
        .await
    }

    async fn create_crypto_key(&self, request: Request<pb::CreateCryptoKeyRequest>) -> Answer<pb::CryptoKey> {
        let (metadata, _, r) = request.into_parts();
        self.call(metadata, &r.parent.clone(), async |caller| {
            let parent: KeyRingName = name("parent", &r.parent)?;
            if r.trusted_wrapping_enabled {
                return Err(ApiError::invalid("trusted_wrapping_enabled is not supported by Keyhold."));
            }
            let key: CryptoKey = from_wire(&r.crypto_key.unwrap_or_default())?;
            if r.crypto_key_id.is_empty() {
                return Err(ApiError::invalid("The crypto_key_id field is required."));
            }
            let created = self
                .state
                .kms
                .create_crypto_key(caller, &parent, &r.crypto_key_id, key, r.skip_initial_version_creation)
                .await?;
            to_wire(&created)
        })
        .await
    }

    async fn create_crypto_key_version(
        &self,
        request: Request<pb::CreateCryptoKeyVersionRequest>,
    ) -> Answer<pb::CryptoKeyVersion> {
        let (metadata, _, r) = request.into_parts();
        self.call(metadata, &r.parent.clone(), async |caller| {
            let parent: CryptoKeyName = name("parent", &r.parent)?;
            let v: CryptoKeyVersion = from_wire(&r.crypto_key_version.unwrap_or_default())?;
            to_wire(&self.state.kms.create_version(caller, &parent, v).await?)
        })
        .await
    }

    async fn delete_crypto_key(
        &self,
        request: Request<pb::DeleteCryptoKeyRequest>,
    ) -> Answer<crate::pb::google::longrunning::Operation> {
        let n = request.get_ref().name.clone();
        let message = format!(
            "DeleteCryptoKey is not implemented by Keyhold yet. To stop a key being used, disable or destroy its \
             versions (DestroyCryptoKeyVersion on {n}/cryptoKeyVersions/N); see docs/api.md."
        );
        not_served(self, request, &n, message).await
    }

    async fn delete_crypto_key_version(
        &self,
        request: Request<pb::DeleteCryptoKeyVersionRequest>,
    ) -> Answer<crate::pb::google::longrunning::Operation> {
        let n = request.get_ref().name.clone();
        let message = format!(
            "DeleteCryptoKeyVersion is not implemented by Keyhold yet. To erase a version's key material, destroy it \
             (DestroyCryptoKeyVersion on {n}); see docs/api.md."
        );
        not_served(self, request, &n, message).await
    }

    async fn import_crypto_key_version(
        &self,
        request: Request<pb::ImportCryptoKeyVersionRequest>,
    ) -> Answer<pb::CryptoKeyVersion> {
        let n = request.get_ref().parent.clone();
        not_served(self, request, &n, not_yet("ImportCryptoKeyVersion")).await
    }

    async fn import_trusted_key_wrapped_crypto_key_version(
        &self,
        request: Request<pb::ImportTrustedKeyWrappedCryptoKeyVersionRequest>,
    ) -> Answer<pb::CryptoKeyVersion> {
        let n = request.get_ref().parent.clone();
        not_served(self, request, &n, not_yet("ImportTrustedKeyWrappedCryptoKeyVersion")).await
    }

    async fn export_trusted_key_wrapped_crypto_key_version(
        &self,
        request: Request<pb::ExportTrustedKeyWrappedCryptoKeyVersionRequest>,
    ) -> Answer<pb::ExportTrustedKeyWrappedCryptoKeyVersionResponse> {
        let n = request.get_ref().name.clone();
        not_served(self, request, &n, not_yet("ExportTrustedKeyWrappedCryptoKeyVersion")).await
    }

    async fn create_import_job(&self, request: Request<pb::CreateImportJobRequest>) -> Answer<pb::ImportJob> {
        let n = request.get_ref().parent.clone();
        not_served(self, request, &n, not_yet("CreateImportJob")).await
    }

    async fn update_crypto_key(&self, request: Request<pb::UpdateCryptoKeyRequest>) -> Answer<pb::CryptoKey> {
        let (metadata, _, r) = request.into_parts();
        let mut key = r.crypto_key.unwrap_or_default();
        let resource = key.name.clone();
        self.call(metadata, &resource, async |caller| {
            let n: CryptoKeyName = name("crypto_key.name", &key.name)?;
            key.name.clear();
            let patch: CryptoKey = from_wire(&key)?;
            to_wire(&self.state.kms.update_crypto_key(caller, &n, patch, &convert::field_mask(r.update_mask)).await?)
        })
        .await
    }

    async fn update_crypto_key_version(
        &self,
        request: Request<pb::UpdateCryptoKeyVersionRequest>,
    ) -> Answer<pb::CryptoKeyVersion> {
        let (metadata, _, r) = request.into_parts();
        let mut version = r.crypto_key_version.unwrap_or_default();
        let resource = version.name.clone();
        self.call(metadata, &resource, async |caller| {
            let n: CryptoKeyVersionName = name("crypto_key_version.name", &version.name)?;
            version.name.clear();
            let patch: CryptoKeyVersion = from_wire(&version)?;
            to_wire(&self.state.kms.update_version(caller, &n, patch, &convert::field_mask(r.update_mask)).await?)
        })
        .await
    }

    async fn update_crypto_key_primary_version(
        &self,
        request: Request<pb::UpdateCryptoKeyPrimaryVersionRequest>,
    ) -> Answer<pb::CryptoKey> {
        let (metadata, _, r) = request.into_parts();
        self.call(metadata, &r.name, async |caller| {
            let n: CryptoKeyName = name("name", &r.name)?;
            to_wire(&self.state.kms.update_primary_version(caller, &n, &r.crypto_key_version_id).await?)
        })
        .await
    }

    async fn destroy_crypto_key_version(
        &self,
        request: Request<pb::DestroyCryptoKeyVersionRequest>,
    ) -> Answer<pb::CryptoKeyVersion> {
        let (metadata, _, r) = request.into_parts();
        self.call(metadata, &r.name, async |caller| {
            let n: CryptoKeyVersionName = name("name", &r.name)?;
            to_wire(&self.state.kms.destroy_version(caller, &n).await?)
        })
        .await
    }

    async fn restore_crypto_key_version(
        &self,
        request: Request<pb::RestoreCryptoKeyVersionRequest>,
    ) -> Answer<pb::CryptoKeyVersion> {
        let (metadata, _, r) = request.into_parts();
        self.call(metadata, &r.name, async |caller| {
            let n: CryptoKeyVersionName = name("name", &r.name)?;
            to_wire(&self.state.kms.restore_version(caller, &n).await?)
        })
        .await
    }

    async fn encrypt(&self, request: Request<pb::EncryptRequest>) -> Answer<pb::EncryptResponse> {
        let (metadata, _, r) = request.into_parts();
        let resource = r.name.clone();
        self.call(metadata, &resource, async |caller| {
            // A key (its primary) or one of its versions, as REST's `:encrypt` on either.
            let target = if resource.contains("/cryptoKeyVersions/") {
                EncryptTarget::Version(name("name", &resource)?)
            } else {
                EncryptTarget::Key(name("name", &resource)?)
            };
            let req = convert::encrypt_request(r)?;
            Ok(convert::encrypt_response(self.state.kms.encrypt(caller, &target, &req).await?))
        })
        .await
    }

    async fn decrypt(&self, request: Request<pb::DecryptRequest>) -> Answer<pb::DecryptResponse> {
        let (metadata, _, r) = request.into_parts();
        let resource = r.name.clone();
        self.call(metadata, &resource, async |caller| {
            let n: CryptoKeyName = name("name", &resource)?;
            let req = convert::decrypt_request(r)?;
            Ok(convert::decrypt_response(&self.state.kms.decrypt(caller, &n, &req).await?))
        })
        .await
    }

    async fn raw_encrypt(&self, request: Request<pb::RawEncryptRequest>) -> Answer<pb::RawEncryptResponse> {
        let n = request.get_ref().name.clone();
        not_served(self, request, &n, not_yet("RawEncrypt")).await
    }

    async fn raw_decrypt(&self, request: Request<pb::RawDecryptRequest>) -> Answer<pb::RawDecryptResponse> {
        let n = request.get_ref().name.clone();
        not_served(self, request, &n, not_yet("RawDecrypt")).await
    }

    async fn asymmetric_sign(&self, request: Request<pb::AsymmetricSignRequest>) -> Answer<pb::AsymmetricSignResponse> {
        let n = request.get_ref().name.clone();
        not_served(self, request, &n, not_yet("AsymmetricSign")).await
    }

    async fn asymmetric_decrypt(
        &self,
        request: Request<pb::AsymmetricDecryptRequest>,
    ) -> Answer<pb::AsymmetricDecryptResponse> {
        let n = request.get_ref().name.clone();
        not_served(self, request, &n, not_yet("AsymmetricDecrypt")).await
    }

    async fn mac_sign(&self, request: Request<pb::MacSignRequest>) -> Answer<pb::MacSignResponse> {
        let n = request.get_ref().name.clone();
        not_served(self, request, &n, not_yet("MacSign")).await
    }

    async fn mac_verify(&self, request: Request<pb::MacVerifyRequest>) -> Answer<pb::MacVerifyResponse> {
        let n = request.get_ref().name.clone();
        not_served(self, request, &n, not_yet("MacVerify")).await
    }

    async fn decapsulate(&self, request: Request<pb::DecapsulateRequest>) -> Answer<pb::DecapsulateResponse> {
        let n = request.get_ref().name.clone();
        not_served(self, request, &n, not_yet("Decapsulate")).await
    }

    async fn generate_random_bytes(
        &self,
        request: Request<pb::GenerateRandomBytesRequest>,
    ) -> Answer<pb::GenerateRandomBytesResponse> {
        let (metadata, _, r) = request.into_parts();
        let resource = r.location.clone();
        self.call(metadata, &resource, async |caller| {
            let location: LocationName = name("location", &resource)?;
            let req = convert::generate_random_bytes_request(r)?;
            Ok(convert::generate_random_bytes_response(
                &self.state.kms.generate_random_bytes(caller, &location, &req).await?,
            ))
        })
        .await
    }
}
