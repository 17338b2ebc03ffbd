//! [`KmsClient`] over Cloud KMS v1 REST: Keyhold's own server or any compatible endpoint.
//!
//! Both `http://` and `https://` endpoints work. TLS is Keyhold's one stack (`keyhold-tls`:
//! rustls on ring): the system's root certificates by default, or only the certificates of a
//! CA file, and a client certificate for mutual TLS, given as a [`ClientTls`]:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use keyhold_cmek::{RestKmsClient, StaticToken};
//! # fn example(token: StaticToken) -> Result<(), keyhold_tls::TlsError> {
//! let tls = keyhold_tls::ClientTls {
//!     ca_file: Some("/etc/keyhold/kms-ca.pem".into()),
//!     identity: Some(("/etc/keyhold/client.pem".into(), "/etc/keyhold/client.key".into())),
//! };
//! let kms = RestKmsClient::with_tls("https://kms.example:8443", Arc::new(token), &tls)?;
//! # let _ = kms; Ok(()) }
//! ```
//!
//! A handshake that fails because of certificates (the server's is not trusted, or the server
//! refused the client's) is [`KmsClientError::tls_configuration`], not an outage.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keyhold_api::messages::{DecryptResponse, EncryptResponse};
use keyhold_api::resources::{Purpose, VersionState};
use keyhold_api::status::ErrorBodyKind;
use keyhold_api::wire::Timestamp;
use keyhold_api::{Code, CryptoKeyName, CryptoKeyVersionName, Status};
use keyhold_crypto::{Secret, SecretString, crc32c};
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

pub use keyhold_tls::{ClientTls, TlsError};

use crate::client::{AccessReason, Encrypted, KeyDescription, KmsClient, decrypt_request, encrypt_request};
use crate::error::KmsClientError;

/// How long one KMS request may take before the KMS counts as unreachable.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where bearer tokens come from.
#[async_trait]
pub trait TokenSource: Send + Sync + std::fmt::Debug {
    /// A token valid now.
    async fn token(&self) -> Result<SecretString, KmsClientError>;
}

/// A fixed token (from a file or the environment).
#[derive(Debug, Clone)]
pub struct StaticToken(pub SecretString);

#[async_trait]
impl TokenSource for StaticToken {
    async fn token(&self) -> Result<SecretString, KmsClientError> {
        Ok(self.0.clone())
    }
}

/// Short-lived tokens of a service account (a service agent), minted with IAM Credentials
/// `generateAccessToken` by a caller allowed to (the service the agent belongs to), cached
/// until five minutes before they expire.
#[derive(Debug)]
pub struct ImpersonatedToken {
    http: reqwest::Client,
    endpoint: String,
    base: Arc<dyn TokenSource>,
    service_account: String,
    cached: Mutex<Option<(SecretString, Timestamp)>>,
}

impl ImpersonatedToken {
    /// Tokens of `service_account` (an email), minted at `endpoint` with `base`'s token.
    pub fn new(endpoint: &str, base: Arc<dyn TokenSource>, service_account: &str) -> Self {
        Self::with_http(endpoint, base, service_account, default_http_client(endpoint))
    }

    /// As [`ImpersonatedToken::new`], over `http` (from [`http_client`]: TLS settings, pooled
    /// connections shared with other clients of the same KMS).
    pub fn with_http(endpoint: &str, base: Arc<dyn TokenSource>, service_account: &str, http: reqwest::Client) -> Self {
        Self {
            http,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            base,
            service_account: service_account.to_string(),
            cached: Mutex::new(None),
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccessToken {
    access_token: String,
    expire_time: Timestamp,
}

#[async_trait]
impl TokenSource for ImpersonatedToken {
    async fn token(&self) -> Result<SecretString, KmsClientError> {
        let mut cached = self.cached.lock().await;
        let margin = keyhold_api::wire::ProtoDuration::from_secs(300);
        if let Some((token, expires)) = cached.as_ref()
            && Timestamp::now().add(margin) < *expires
        {
            return Ok(token.clone());
        }
        let url =
            format!("{}/v1/projects/-/serviceAccounts/{}:generateAccessToken", self.endpoint, self.service_account);
        let base = self.base.token().await?;
        let req = self.http.post(url).bearer_auth(base.expose()).json(&serde_json::json!({"lifetime": "3600s"}));
        let t: AccessToken = send(req).await?;
        let token = SecretString::new(t.access_token);
        *cached = Some((token.clone(), t.expire_time));
        Ok(token)
    }
}

/// A reqwest client builder for `endpoint` whose TLS is Keyhold's (`tls`: trusted roots and
/// client identity; plain `http://` endpoints keep working, and need no root certificates).
/// Every Keyhold HTTP client is built from one of these.
pub fn http_client_builder(endpoint: &str, tls: &ClientTls) -> Result<reqwest::ClientBuilder, TlsError> {
    let mut config = tls.config_for(endpoint)?;
    // As reqwest's own TLS set-up offers: HTTP/2 when the server agrees, else HTTP/1.1.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(reqwest::Client::builder().tls_backend_preconfigured(config))
}

/// The HTTP client of [`RestKmsClient`] and [`ImpersonatedToken`] for the KMS at `endpoint`
/// ([`REQUEST_TIMEOUT`] per request); one may be shared by every client of that KMS.
pub fn http_client(endpoint: &str, tls: &ClientTls) -> Result<reqwest::Client, TlsError> {
    http_client_builder(endpoint, tls)?
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| TlsError::Config(format!("the HTTP client cannot be set up: {e}")))
}

/// The client of the constructors without TLS settings: the system's roots. If they cannot be
/// loaded, every TLS handshake fails (as "not trusted"), and plain HTTP works.
fn default_http_client(endpoint: &str) -> reqwest::Client {
    http_client(endpoint, &ClientTls::default()).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "no system root certificates: the KMS client trusts no TLS server");
        http_client("http://", &ClientTls::default()).expect("a client that trusts no root always builds")
    })
}

/// The error of a request that got no (complete) answer: a TLS configuration error when the
/// handshake failed over certificates, else the KMS counts as unreachable.
pub fn transport_error(what: &str, e: &reqwest::Error) -> KmsClientError {
    match keyhold_tls::diagnose(e) {
        Some(tls) if tls.is_configuration() => KmsClientError::tls_configuration(format!(
            "the KMS cannot be used: {tls}. This is a configuration error, not an outage: give the KMS's CA \
             certificate (the CA file of the client) or the client certificate it expects"
        )),
        Some(tls) => KmsClientError::unreachable(format!("{what}: {tls}")),
        None if closed_after_tls_handshake(e) => KmsClientError::unreachable(format!(
            "{what}: {e}: the KMS closed the TLS connection without answering; if it requires mutual TLS, give \
             the client certificate it trusts"
        )),
        None => KmsClientError::unreachable(format!("{what}: {e}")),
    }
}

/// Whether `e` is an `https://` request that got no answer on a connection that was made: the
/// server closed it. With TLS 1.3 a server that refuses the client's certificate (or its
/// absence) does so after the client has finished its handshake, and its alert may be lost in
/// the race with sending the request; this is what remains of it. It may also be a server that
/// closed for another reason, so callers only add a hint to their message.
pub fn closed_after_tls_handshake(e: &reqwest::Error) -> bool {
    e.url().is_some_and(|u| u.scheme() == "https") && e.is_request() && !e.is_connect() && !e.is_timeout()
}

/// Sends a request and decodes a JSON answer or a Google error body.
async fn send<T: DeserializeOwned>(req: reqwest::RequestBuilder) -> Result<T, KmsClientError> {
    let resp = req.send().await.map_err(|e| transport_error("the KMS cannot be reached", &e))?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| transport_error("the KMS's answer was cut off", &e))?;
    if status.is_success() {
        return serde_json::from_slice(&body)
            .map_err(|e| KmsClientError::new(Code::Internal, format!("the KMS's answer does not decode: {e}")));
    }
    // The one decoder of error answers (`keyhold-api`); a foreign body (a proxy's page) is
    // summarized by its HTTP status, not quoted.
    let (decoded, kind) = Status::decode_http(status.as_u16(), &body);
    let message = match kind {
        ErrorBodyKind::Google | ErrorBodyKind::MessageOnly => decoded.message,
        ErrorBodyKind::Foreign => format!("the KMS answered HTTP {status}"),
    };
    Err(KmsClientError::from_status(Status { message, ..decoded }))
}

/// A key version name in the KMS's answer.
fn version_name(name: &str) -> Result<CryptoKeyVersionName, KmsClientError> {
    name.parse().map_err(|_| {
        KmsClientError::new(
            Code::Internal,
            format!("the KMS's answer does not decode: \"{name}\" is not a key version name"),
        )
    })
}

/// Keyhold's header for the Key Access Justification reason of a request.
pub const ACCESS_REASON_HEADER: &str = "x-keyhold-access-reason";

/// A Cloud KMS v1 REST client bound to one identity.
#[derive(Debug, Clone)]
pub struct RestKmsClient {
    http: reqwest::Client,
    endpoint: String,
    tokens: Arc<dyn TokenSource>,
}

impl RestKmsClient {
    /// A client of the KMS at `endpoint` (e.g. `http://127.0.0.1:8080`, or an `https://` URL
    /// whose certificate the system's roots trust), authenticating with `tokens`.
    pub fn new(endpoint: &str, tokens: Arc<dyn TokenSource>) -> Self {
        Self::with_http(endpoint, tokens, default_http_client(endpoint))
    }

    /// A client of the KMS at `endpoint` with TLS settings: a CA file to trust instead of the
    /// system's roots, a client certificate for mutual TLS. Fails if a file cannot be read.
    pub fn with_tls(endpoint: &str, tokens: Arc<dyn TokenSource>, tls: &ClientTls) -> Result<Self, TlsError> {
        Ok(Self::with_http(endpoint, tokens, http_client(endpoint, tls)?))
    }

    /// A client of the KMS at `endpoint` over `http` (from [`http_client`]; one may serve every
    /// client of that KMS, whatever identity each acts as).
    pub fn with_http(endpoint: &str, tokens: Arc<dyn TokenSource>, http: reqwest::Client) -> Self {
        Self { http, endpoint: endpoint.trim_end_matches('/').to_string(), tokens }
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
        reason: Option<AccessReason>,
    ) -> Result<T, KmsClientError> {
        let token = self.tokens.token().await?;
        let mut request = self.http.post(format!("{}/v1/{path}", self.endpoint)).bearer_auth(token.expose()).json(body);
        if let Some(reason) = reason {
            request = request.header(ACCESS_REASON_HEADER, reason.as_str());
        }
        send(request).await
    }
}

#[async_trait]
impl KmsClient for RestKmsClient {
    async fn encrypt(
        &self,
        key: &CryptoKeyName,
        plaintext: &[u8],
        aad: &[u8],
        reason: AccessReason,
    ) -> Result<Encrypted, KmsClientError> {
        let req = encrypt_request(plaintext, aad, true);
        let resp: EncryptResponse = self.post(&format!("{key}:encrypt"), &req, Some(reason)).await?;
        // End-to-end integrity, as Google asks of its clients: the KMS saw what we sent, and we
        // got what it sent.
        if !resp.verified_plaintext_crc32c
            || !resp.verified_additional_authenticated_data_crc32c
            || resp.ciphertext_crc32c.0 != crc32c(&resp.ciphertext.0)
        {
            return Err(KmsClientError::new(Code::DataLoss, "the KMS's encrypt answer failed its CRC32C checks"));
        }
        Ok(Encrypted { ciphertext: resp.ciphertext.0, key_version: version_name(&resp.name)? })
    }

    async fn decrypt(
        &self,
        key: &CryptoKeyName,
        ciphertext: &[u8],
        aad: &[u8],
        reason: AccessReason,
    ) -> Result<Secret, KmsClientError> {
        let req = decrypt_request(ciphertext, aad, true);
        let resp: DecryptResponse = self.post(&format!("{key}:decrypt"), &req, Some(reason)).await?;
        if resp.plaintext_crc32c.0 != crc32c(resp.plaintext.0.expose()) {
            return Err(KmsClientError::new(Code::DataLoss, "the KMS's decrypt answer failed its CRC32C check"));
        }
        Ok(resp.plaintext.0)
    }

    async fn test_permissions(&self, key: &CryptoKeyName, permissions: &[&str]) -> Result<Vec<String>, KmsClientError> {
        #[derive(serde::Deserialize)]
        struct Resp {
            #[serde(default)]
            permissions: Vec<String>,
        }
        let r: Resp = self
            .post(&format!("{key}:testIamPermissions"), &serde_json::json!({ "permissions": permissions }), None)
            .await?;
        Ok(r.permissions)
    }

    async fn describe_key(&self, key: &CryptoKeyName) -> Result<Option<KeyDescription>, KmsClientError> {
        #[derive(serde::Deserialize)]
        struct Version {
            name: String,
            #[serde(default)]
            state: String,
        }
        #[derive(serde::Deserialize)]
        struct Key {
            #[serde(default)]
            purpose: String,
            #[serde(default)]
            primary: Option<Version>,
        }
        let token = self.tokens.token().await?;
        let req = self.http.get(format!("{}/v1/{key}", self.endpoint)).bearer_auth(token.expose());
        match send::<Key>(req).await {
            Ok(k) => Ok(Some(KeyDescription {
                purpose: Purpose::from_name(&k.purpose).unwrap_or(Purpose::Unspecified),
                primary: match k.primary {
                    Some(v) => Some((
                        version_name(&v.name)?,
                        VersionState::from_name(&v.state).unwrap_or(VersionState::Unspecified),
                    )),
                    None => None,
                },
            })),
            Err(e) if e.code == Code::PermissionDenied => Ok(None),
            Err(e) => Err(e),
        }
    }
}
