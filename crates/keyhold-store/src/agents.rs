//! How the store reaches the KMS: always as its service agent in the resource's project
//! ([K9]), never as itself and never as the caller.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use keyhold_api::status::ErrorBodyKind;
use keyhold_api::{Code, Status};
use keyhold_cmek::rest::{ClientTls, TlsError};
use keyhold_cmek::{ImpersonatedToken, KmsClient, KmsClientError, RestKmsClient, TokenSource};
use keyhold_iam::{Caller, Principal};

use crate::host::ServiceHost;

use crate::model::SERVICE;

/// A project's service agent and a KMS client acting as it.
#[derive(Debug, Clone)]
pub struct Agent {
    /// `service-N@gcp-sa-store.iam.gserviceaccount.com`.
    pub email: String,
    /// Calls the KMS as the agent.
    pub client: Arc<dyn KmsClient>,
}

/// Gives the store its agent in a project.
#[async_trait]
pub trait AgentProvider: Send + Sync + std::fmt::Debug {
    /// The agent of `project` (created in the KMS if it does not exist yet).
    async fn agent(&self, project: &str) -> Result<Agent, KmsClientError>;
}

fn service_principal() -> Principal {
    Principal::parse(&format!("service:{SERVICE}")).expect("valid service principal")
}

/// Agents in the KMS of this process, reached through the store's host.
#[derive(Debug)]
pub struct LocalAgents {
    host: Arc<dyn ServiceHost>,
    cache: Mutex<HashMap<String, Agent>>,
}

impl LocalAgents {
    /// Agents in `host`'s KMS.
    pub fn new(host: Arc<dyn ServiceHost>) -> Self {
        Self { host, cache: Mutex::default() }
    }
}

#[async_trait]
impl AgentProvider for LocalAgents {
    async fn agent(&self, project: &str) -> Result<Agent, KmsClientError> {
        if let Some(a) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(project) {
            return Ok(a.clone());
        }
        let me = Caller::new(service_principal(), "");
        let email = self
            .host
            .generate_service_identity(&me, project, SERVICE)
            .await
            .map_err(|e| KmsClientError::from_status(e.status))?;
        let principal = Principal::parse(&format!("serviceAccount:{email}"))
            .map_err(|e| KmsClientError::new(Code::Internal, e.to_string()))?;
        let agent = Agent { client: self.host.kms_client(Caller::new(principal, "")), email };
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(project.to_string(), agent.clone());
        Ok(agent)
    }
}

/// Agents in a KMS reached over HTTP: the store authenticates as `service:store.keyhold.dev`
/// with `token`, looks up its agent (`generateServiceIdentity`) and acts through the agent's
/// short-lived tokens (`generateAccessToken`).
#[derive(Debug)]
pub struct RemoteAgents {
    endpoint: String,
    token: Arc<dyn TokenSource>,
    http: reqwest::Client,
    cache: Mutex<HashMap<String, Agent>>,
}

impl RemoteAgents {
    /// Agents at the KMS `endpoint` (`http://` or `https://`; TLS with the system's roots),
    /// found with the service's `token`.
    pub fn new(endpoint: &str, token: Arc<dyn TokenSource>) -> Self {
        let http = keyhold_cmek::rest::http_client(endpoint, &ClientTls::default()).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the store's KMS client cannot use the system's root certificates");
            keyhold_cmek::rest::http_client("http://", &ClientTls::default())
                .expect("a client that trusts no root always builds")
        });
        Self::with_http(endpoint, token, http)
    }

    /// Agents at the KMS `endpoint` with TLS settings (a CA file, a client certificate for
    /// mutual TLS): every request of the store to that KMS, its agents' included, uses them.
    pub fn with_tls(endpoint: &str, token: Arc<dyn TokenSource>, tls: &ClientTls) -> Result<Self, TlsError> {
        Ok(Self::with_http(endpoint, token, keyhold_cmek::rest::http_client(endpoint, tls)?))
    }

    fn with_http(endpoint: &str, token: Arc<dyn TokenSource>, http: reqwest::Client) -> Self {
        Self { endpoint: endpoint.trim_end_matches('/').to_string(), token, http, cache: Mutex::default() }
    }
}

#[async_trait]
impl AgentProvider for RemoteAgents {
    async fn agent(&self, project: &str) -> Result<Agent, KmsClientError> {
        if let Some(a) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(project) {
            return Ok(a.clone());
        }
        let url = format!("{}/v1beta1/projects/{project}/services/{SERVICE}:generateServiceIdentity", self.endpoint);
        let token = self.token.token().await?;
        let resp = self
            .http
            .post(url)
            .bearer_auth(token.expose())
            .json(&serde_json::json!({}))
            .send()
            .await
            .map_err(|e| keyhold_cmek::rest::transport_error("the KMS cannot be reached", &e))?;
        let status = resp.status();
        let bytes =
            resp.bytes().await.map_err(|e| keyhold_cmek::rest::transport_error("the KMS's answer was cut off", &e))?;
        if !status.is_success() {
            // The one decoder of error answers (`keyhold-api`), as every client of the KMS.
            let (decoded, kind) = Status::decode_http(status.as_u16(), &bytes);
            let message = match kind {
                ErrorBodyKind::Google | ErrorBodyKind::MessageOnly if !decoded.message.is_empty() => decoded.message,
                _ => format!("generateServiceIdentity failed: the KMS answered HTTP {status}"),
            };
            return Err(KmsClientError::new(decoded.code, message));
        }
        let body: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| KmsClientError::new(Code::Internal, format!("the KMS's answer does not decode: {e}")))?;
        let email = body["response"]["email"]
            .as_str()
            .ok_or_else(|| KmsClientError::new(Code::Internal, "generateServiceIdentity answered without an email"))?
            .to_string();
        let tokens =
            Arc::new(ImpersonatedToken::with_http(&self.endpoint, self.token.clone(), &email, self.http.clone()));
        let agent =
            Agent { email, client: Arc::new(RestKmsClient::with_http(&self.endpoint, tokens, self.http.clone())) };
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(project.to_string(), agent.clone());
        Ok(agent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyhold_cmek::StaticToken;
    use keyhold_crypto::SecretString;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A KMS stand-in on loopback that answers every request with `status` and `body` (a real
    /// HTTP exchange: what a proxy in front of the KMS would send).
    async fn answering(status: &'static str, content_type: &'static str, body: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // The request is small: read until its headers and its `{}` body have arrived.
                while !request.ends_with(b"{}") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
            }
        });
        format!("http://{addr}")
    }

    fn agents(endpoint: &str) -> RemoteAgents {
        RemoteAgents::new(endpoint, Arc::new(StaticToken(SecretString::new("t".into()))))
    }

    /// Error answers are decoded by `keyhold-api`'s one decoder, as every other client of the
    /// KMS decodes them (issue 16): a proxy's HTML page is summarized by its HTTP status and
    /// mapped to a code from it; Google's error JSON keeps the server's code and message.
    #[tokio::test]
    async fn error_answers_use_the_one_decoder() {
        let html = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>";
        let e = agents(&answering("502 Bad Gateway", "text/html", html).await).agent("p").await.unwrap_err();
        assert_eq!(e.code, Code::Unavailable);
        assert_eq!(e.message, "generateServiceIdentity failed: the KMS answered HTTP 502 Bad Gateway");

        let json = r#"{"error":{"code":403,"message":"Permission 'serviceusage.services.use' denied.","status":"PERMISSION_DENIED"}}"#;
        let e = agents(&answering("403 Forbidden", "application/json", json).await).agent("p").await.unwrap_err();
        assert_eq!(e.code, Code::PermissionDenied);
        assert_eq!(e.message, "Permission 'serviceusage.services.use' denied.");

        let e = agents(&answering("404 Not Found", "text/plain", "").await).agent("p").await.unwrap_err();
        assert_eq!(e.code, Code::NotFound);

        let ok = r#"{"done":true,"response":{"email":"service-1@gcp-sa-store.iam.gserviceaccount.com"}}"#;
        let a = agents(&answering("200 OK", "application/json", ok).await).agent("p").await.unwrap();
        assert_eq!(a.email, "service-1@gcp-sa-store.iam.gserviceaccount.com");
    }
}
