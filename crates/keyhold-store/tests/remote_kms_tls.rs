//! The store's link to a remote KMS (`keyhold serve --kms-endpoint https://...`) over real TLS:
//! its own calls (`generateServiceIdentity`) and its agents' (`generateAccessToken`, then the
//! key's calls) all use the CA file and the client certificate; an unknown CA is a TLS
//! configuration error, not "unavailable".

#[path = "../../keyhold-cmek/tests/support/tls.rs"]
mod support;

use std::sync::Arc;

use keyhold_cmek::rest::ClientTls;
use keyhold_cmek::{Failure, StaticToken};
use keyhold_crypto::SecretString;
use keyhold_store::{AgentProvider, RemoteAgents};

const AGENT: &str = "service-1@gcp-sa-store.iam.gserviceaccount.com";

/// A KMS stand-in: a service identity, agent tokens, and every permission asked about.
fn kms() -> axum::Router {
    axum::Router::new().fallback(|uri: axum::http::Uri| async move {
        let path = uri.path();
        axum::Json(if path.ends_with(":generateServiceIdentity") {
            serde_json::json!({ "done": true, "response": { "email": AGENT } })
        } else if path.ends_with(":generateAccessToken") {
            serde_json::json!({ "accessToken": "agent-token", "expireTime": "2999-01-01T00:00:00Z" })
        } else {
            serde_json::json!({ "permissions": ["cloudkms.cryptoKeyVersions.useToEncrypt"] })
        })
    })
}

fn token() -> Arc<StaticToken> {
    Arc::new(StaticToken(SecretString::new("store-token".into())))
}

#[tokio::test]
async fn the_store_reaches_a_kms_over_mutual_tls() {
    let pki = support::pki();
    let addr = support::serve_https(kms(), &pki, true).await;
    let endpoint = format!("https://{addr}");
    let tls =
        ClientTls { ca_file: Some(pki.ca.clone()), identity: Some((pki.client_cert.clone(), pki.client_key.clone())) };
    let agents = RemoteAgents::with_tls(&endpoint, token(), &tls).unwrap();
    let agent = agents.agent("p").await.unwrap();
    assert_eq!(agent.email, AGENT);
    let key = "projects/p/locations/global/keyRings/r/cryptoKeys/k".parse().unwrap();
    let held = agent.client.test_permissions(&key, &["cloudkms.cryptoKeyVersions.useToEncrypt"]).await.unwrap();
    assert_eq!(held, ["cloudkms.cryptoKeyVersions.useToEncrypt"]);

    // Without the client certificate, or trusting another CA: a configuration error.
    for tls in [
        ClientTls { ca_file: Some(pki.ca.clone()), identity: None },
        ClientTls {
            ca_file: Some(pki.other_ca.clone()),
            identity: Some((pki.client_cert.clone(), pki.client_key.clone())),
        },
    ] {
        let err = RemoteAgents::with_tls(&endpoint, token(), &tls).unwrap().agent("p").await.unwrap_err();
        assert!(err.is_tls_configuration(), "{err:?}");
        assert_ne!(err.failure(), Failure::Unreachable, "{err:?}");
    }
}
