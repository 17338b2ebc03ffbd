//! `google.cloud.kms.v1.KeyManagementService`: each served method is `keyhold_server::methods`'
//! implementation, the one REST transcodes its requests to.

use keyhold_server::error::ApiError;
use keyhold_server::methods;
use tonic::{Request, Response, Status};

use crate::call::Front;
use crate::pb::google::cloud::kms::v1 as pb;
use crate::pb::google::cloud::kms::v1::key_management_service_server::KeyManagementService;

type Answer<T> = Result<Response<T>, Status>;

/// A method Keyhold does not serve: `UNIMPLEMENTED`, after authentication and with its audit
/// entry, as over REST.
pub(crate) async fn not_served<T>(
    front: &Front,
    request: Request<impl Send>,
    resource: &str,
    message: String,
) -> Answer<T> {
    front
        .call(request.into_parts().0, resource, async |_| {
            Err::<T, _>(ApiError::new(keyhold_api::Code::Unimplemented, message))
        })
        .await
}

pub(crate) fn not_yet(method: &str) -> String {
    format!("{method} is not implemented by Keyhold yet; see docs/api.md for the methods it serves.")
}

#[tonic::async_trait]
impl KeyManagementService for Front {
    async fn list_key_rings(&self, request: Request<pb::ListKeyRingsRequest>) -> Answer<pb::ListKeyRingsResponse> {
        self.serve(request, |r| r.parent.clone(), methods::list_key_rings).await
    }

    async fn list_crypto_keys(
        &self,
        request: Request<pb::ListCryptoKeysRequest>,
    ) -> Answer<pb::ListCryptoKeysResponse> {
        self.serve(request, |r| r.parent.clone(), methods::list_crypto_keys).await
    }

    async fn list_crypto_key_versions(
        &self,
        request: Request<pb::ListCryptoKeyVersionsRequest>,
    ) -> Answer<pb::ListCryptoKeyVersionsResponse> {
        self.serve(request, |r| r.parent.clone(), methods::list_crypto_key_versions).await
    }

    async fn list_import_jobs(
        &self,
        request: Request<pb::ListImportJobsRequest>,
    ) -> Answer<pb::ListImportJobsResponse> {
        self.serve(request, |r| r.parent.clone(), methods::list_import_jobs).await
    }

    async fn list_retired_resources(
        &self,
        request: Request<pb::ListRetiredResourcesRequest>,
    ) -> Answer<pb::ListRetiredResourcesResponse> {
        self.serve(request, |r| r.parent.clone(), methods::list_retired_resources).await
    }

    async fn get_key_ring(&self, request: Request<pb::GetKeyRingRequest>) -> Answer<pb::KeyRing> {
        self.serve(request, |r| r.name.clone(), methods::get_key_ring).await
    }

    async fn get_crypto_key(&self, request: Request<pb::GetCryptoKeyRequest>) -> Answer<pb::CryptoKey> {
        self.serve(request, |r| r.name.clone(), methods::get_crypto_key).await
    }

    async fn get_crypto_key_version(
        &self,
        request: Request<pb::GetCryptoKeyVersionRequest>,
    ) -> Answer<pb::CryptoKeyVersion> {
        self.serve(request, |r| r.name.clone(), methods::get_crypto_key_version).await
    }

    async fn get_public_key(&self, request: Request<pb::GetPublicKeyRequest>) -> Answer<pb::PublicKey> {
        self.serve(request, |r| r.name.clone(), methods::get_public_key).await
    }

    async fn get_import_job(&self, request: Request<pb::GetImportJobRequest>) -> Answer<pb::ImportJob> {
        self.serve(request, |r| r.name.clone(), methods::get_import_job).await
    }

    async fn get_retired_resource(
        &self,
        request: Request<pb::GetRetiredResourceRequest>,
    ) -> Answer<pb::RetiredResource> {
        self.serve(request, |r| r.name.clone(), methods::get_retired_resource).await
    }

    async fn create_key_ring(&self, request: Request<pb::CreateKeyRingRequest>) -> Answer<pb::KeyRing> {
        self.serve(request, |r| r.parent.clone(), methods::create_key_ring).await
    }

    async fn create_crypto_key(&self, request: Request<pb::CreateCryptoKeyRequest>) -> Answer<pb::CryptoKey> {
        self.serve(request, |r| r.parent.clone(), methods::create_crypto_key).await
    }

    async fn create_crypto_key_version(
        &self,
        request: Request<pb::CreateCryptoKeyVersionRequest>,
    ) -> Answer<pb::CryptoKeyVersion> {
        self.serve(request, |r| r.parent.clone(), methods::create_crypto_key_version).await
    }

    async fn delete_crypto_key(
        &self,
        request: Request<pb::DeleteCryptoKeyRequest>,
    ) -> Answer<crate::pb::google::longrunning::Operation> {
        self.serve(request, |r| r.name.clone(), methods::delete_crypto_key).await
    }

    async fn delete_crypto_key_version(
        &self,
        request: Request<pb::DeleteCryptoKeyVersionRequest>,
    ) -> Answer<crate::pb::google::longrunning::Operation> {
        self.serve(request, |r| r.name.clone(), methods::delete_crypto_key_version).await
    }

    async fn import_crypto_key_version(
        &self,
        request: Request<pb::ImportCryptoKeyVersionRequest>,
    ) -> Answer<pb::CryptoKeyVersion> {
        self.serve(request, |r| r.parent.clone(), methods::import_crypto_key_version).await
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
        self.serve(request, |r| r.parent.clone(), methods::create_import_job).await
    }

    async fn update_crypto_key(&self, request: Request<pb::UpdateCryptoKeyRequest>) -> Answer<pb::CryptoKey> {
        self.serve(
            request,
            |r| r.crypto_key.as_ref().map(|k| k.name.clone()).unwrap_or_default(),
            methods::update_crypto_key,
        )
        .await
    }

    async fn update_crypto_key_version(
        &self,
        request: Request<pb::UpdateCryptoKeyVersionRequest>,
    ) -> Answer<pb::CryptoKeyVersion> {
        self.serve(
            request,
            |r| r.crypto_key_version.as_ref().map(|v| v.name.clone()).unwrap_or_default(),
            methods::update_crypto_key_version,
        )
        .await
    }

    async fn update_crypto_key_primary_version(
        &self,
        request: Request<pb::UpdateCryptoKeyPrimaryVersionRequest>,
    ) -> Answer<pb::CryptoKey> {
        self.serve(request, |r| r.name.clone(), methods::update_crypto_key_primary_version).await
    }

    async fn destroy_crypto_key_version(
        &self,
        request: Request<pb::DestroyCryptoKeyVersionRequest>,
    ) -> Answer<pb::CryptoKeyVersion> {
        self.serve(request, |r| r.name.clone(), methods::destroy_crypto_key_version).await
    }

    async fn restore_crypto_key_version(
        &self,
        request: Request<pb::RestoreCryptoKeyVersionRequest>,
    ) -> Answer<pb::CryptoKeyVersion> {
        self.serve(request, |r| r.name.clone(), methods::restore_crypto_key_version).await
    }

    async fn encrypt(&self, request: Request<pb::EncryptRequest>) -> Answer<pb::EncryptResponse> {
        self.serve(request, |r| r.name.clone(), methods::encrypt).await
    }

    async fn decrypt(&self, request: Request<pb::DecryptRequest>) -> Answer<pb::DecryptResponse> {
        self.serve(request, |r| r.name.clone(), methods::decrypt).await
    }

    async fn raw_encrypt(&self, request: Request<pb::RawEncryptRequest>) -> Answer<pb::RawEncryptResponse> {
        self.serve(request, |r| r.name.clone(), methods::raw_encrypt).await
    }

    async fn raw_decrypt(&self, request: Request<pb::RawDecryptRequest>) -> Answer<pb::RawDecryptResponse> {
        self.serve(request, |r| r.name.clone(), methods::raw_decrypt).await
    }

    async fn asymmetric_sign(&self, request: Request<pb::AsymmetricSignRequest>) -> Answer<pb::AsymmetricSignResponse> {
        self.serve(request, |r| r.name.clone(), methods::asymmetric_sign).await
    }

    async fn asymmetric_decrypt(
        &self,
        request: Request<pb::AsymmetricDecryptRequest>,
    ) -> Answer<pb::AsymmetricDecryptResponse> {
        self.serve(request, |r| r.name.clone(), methods::asymmetric_decrypt).await
    }

    async fn mac_sign(&self, request: Request<pb::MacSignRequest>) -> Answer<pb::MacSignResponse> {
        self.serve(request, |r| r.name.clone(), methods::mac_sign).await
    }

    async fn mac_verify(&self, request: Request<pb::MacVerifyRequest>) -> Answer<pb::MacVerifyResponse> {
        self.serve(request, |r| r.name.clone(), methods::mac_verify).await
    }

    async fn decapsulate(&self, request: Request<pb::DecapsulateRequest>) -> Answer<pb::DecapsulateResponse> {
        self.serve(request, |r| r.name.clone(), methods::decapsulate).await
    }

    async fn generate_random_bytes(
        &self,
        request: Request<pb::GenerateRandomBytesRequest>,
    ) -> Answer<pb::GenerateRandomBytesResponse> {
        self.serve(request, |r| r.location.clone(), methods::generate_random_bytes).await
    }
}
