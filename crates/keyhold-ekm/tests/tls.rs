//! `EkmClient` reaches an external key manager over mutual TLS, as Cloud EKM does: the
//! in-process manager's router behind a real TLS acceptor on loopback that requires a client
//! certificate issued by its CA.

#[path = "../../keyhold-cmek/tests/support/tls.rs"]
mod support;

use std::time::Duration;

use keyhold_api::resources::AccessReason;
use keyhold_crypto::SecretString;
use keyhold_ekm::client::ClientTls;
use keyhold_ekm::{EkmClient, EkmCredentials, EkmError, EkmServer, EkmServerConfig, KeyStore, RequestContext};
use serde_json::json;

const TOKEN: &str = "test-token-0123456789abcdef";
const ALICE: &str = "user:alice@example.com";

fn alice() -> RequestContext {
    RequestContext {
        key_version_name: "projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1".into(),
        caller_principal: ALICE.into(),
        reason: AccessReason::CustomerInitiatedAccess,
        request_id: "req-1".into(),
        operation: "Encrypt".into(),
        via_service: String::new(),
    }
}

/// A manager holding key `k1` (usable by Alice), served over TLS that requires a client
/// certificate; its base URL.
async fn manager(pki: &support::Pki) -> String {
    let data = pki.dir.path().join("ekm");
    let store = KeyStore::open(&data, None).unwrap();
    store.create(Some("k1")).unwrap();
    let policy = json!({"keys": {"k1": {"allowedCallers": [ALICE], "allowedReasons": ["*"]}}});
    std::fs::write(data.join("policy.json"), policy.to_string()).unwrap();
    std::fs::write(data.join("tokens"), format!("kms-test {TOKEN}\n")).unwrap();
    let server = EkmServer::open(&EkmServerConfig::new(&data)).unwrap();
    let addr = support::serve_https(server.router(), pki, true).await;
    format!("https://{addr}")
}

fn client(tls: &ClientTls) -> EkmClient {
    EkmClient::with_tls(EkmCredentials::single(SecretString::new(TOKEN.into())), Duration::from_secs(5), tls).unwrap()
}

#[tokio::test]
async fn wrap_and_unwrap_over_mutual_tls() {
    let pki = support::pki();
    let base = manager(&pki).await;
    let uri = format!("{base}/v1/keys/k1");
    let tls =
        ClientTls { ca_file: Some(pki.ca.clone()), identity: Some((pki.client_cert.clone(), pki.client_key.clone())) };
    let c = client(&tls);
    let blob = c.wrap(&uri, b"a data encryption key", b"aad", &alice()).await.unwrap();
    let back = c.unwrap(&uri, &blob, b"aad", &alice()).await.unwrap();
    assert_eq!(back.plaintext.expose(), b"a data encryption key");
    assert_eq!(c.key_metadata(&uri).await.unwrap().state, keyhold_ekm::protocol::KeyState::Enabled);
}

#[tokio::test]
async fn certificate_problems_are_tls_errors_that_say_what_to_configure() {
    let pki = support::pki();
    let base = manager(&pki).await;
    let uri = format!("{base}/v1/keys/k1");

    // No client certificate: the manager refuses. With TLS 1.3 its alert comes after the
    // client's handshake and is either read (a TLS error) or lost in the race with the request
    // (the connection closed: unavailable); the message names the flags either way.
    let err = client(&ClientTls { ca_file: Some(pki.ca.clone()), identity: None })
        .wrap(&uri, b"x", b"", &alice())
        .await
        .unwrap_err();
    let (EkmError::Tls { detail } | EkmError::Unavailable { detail }) = &err else { panic!("{err:?}") };
    assert!(detail.contains("--ekm-client-cert-file"), "{detail}");

    // The manager's certificate is from a CA the client does not trust.
    let identity = Some((pki.client_cert.clone(), pki.client_key.clone()));
    let err = client(&ClientTls { ca_file: Some(pki.other_ca.clone()), identity })
        .wrap(&uri, b"x", b"", &alice())
        .await
        .unwrap_err();
    let EkmError::Tls { detail } = &err else { panic!("{err:?}") };
    assert!(detail.contains("not trusted") && detail.contains("--ekm-ca-file"), "{detail}");
}
