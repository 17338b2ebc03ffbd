//! `RestKmsClient` over real TLS on loopback: a CA file is trusted, an unknown CA or a missing
//! client certificate is a configuration error (not an outage), mutual TLS works with an
//! identity, and plain HTTP keeps working.

#[path = "support/tls.rs"]
mod support;

use std::sync::Arc;

use keyhold_cmek::rest::ClientTls;
use keyhold_cmek::{Failure, KmsClient, RestKmsClient, StaticToken};
use keyhold_crypto::SecretString;

const KEY: &str = "projects/p/locations/global/keyRings/r/cryptoKeys/k";
const PERMISSION: &str = "cloudkms.cryptoKeyVersions.useToEncrypt";

/// A KMS stand-in that grants every permission asked about (`:testIamPermissions`).
fn kms() -> axum::Router {
    axum::Router::new().fallback(|| async { axum::Json(serde_json::json!({ "permissions": [PERMISSION] })) })
}

fn client(endpoint: &str, tls: &ClientTls) -> RestKmsClient {
    RestKmsClient::with_tls(endpoint, Arc::new(StaticToken(SecretString::new("t".into()))), tls).unwrap()
}

async fn ask(client: &RestKmsClient) -> Result<Vec<String>, keyhold_cmek::KmsClientError> {
    client.test_permissions(&KEY.parse().unwrap(), &[PERMISSION]).await
}

#[tokio::test]
async fn https_with_the_ca_file_works_and_plain_http_still_does() {
    let pki = support::pki();
    let addr = support::serve_https(kms(), &pki, false).await;
    let tls = ClientTls { ca_file: Some(pki.ca.clone()), identity: None };
    assert_eq!(ask(&client(&format!("https://{addr}"), &tls)).await.unwrap(), [PERMISSION]);
    assert_eq!(ask(&client(&format!("https://localhost:{}", addr.port()), &tls)).await.unwrap(), [PERMISSION]);

    let plain = support::serve_http(kms()).await;
    assert_eq!(ask(&client(&format!("http://{plain}"), &tls)).await.unwrap(), [PERMISSION]);
    let default = RestKmsClient::new(&format!("http://{plain}"), Arc::new(StaticToken(SecretString::new("t".into()))));
    assert_eq!(ask(&default).await.unwrap(), [PERMISSION]);
}

#[tokio::test]
async fn an_untrusted_server_certificate_is_a_configuration_error_not_an_outage() {
    let pki = support::pki();
    let addr = support::serve_https(kms(), &pki, false).await;
    for tls in [ClientTls { ca_file: Some(pki.other_ca.clone()), identity: None }, ClientTls::default()] {
        let Ok(c) = RestKmsClient::with_tls(
            &format!("https://{addr}"),
            Arc::new(StaticToken(SecretString::new("t".into()))),
            &tls,
        ) else {
            continue; // no system roots on this machine: nothing to try with the default
        };
        let err = ask(&c).await.unwrap_err();
        assert!(err.is_tls_configuration(), "{err:?}");
        assert_eq!(err.failure(), Failure::Other, "not an outage: {err:?}");
        assert!(err.message.contains("not trusted") && err.message.contains("CA"), "{}", err.message);
    }
}

#[tokio::test]
async fn mutual_tls_needs_the_client_identity() {
    let pki = support::pki();
    let addr = support::serve_https(kms(), &pki, true).await;
    let endpoint = format!("https://{addr}");
    let with =
        ClientTls { ca_file: Some(pki.ca.clone()), identity: Some((pki.client_cert.clone(), pki.client_key.clone())) };
    assert_eq!(ask(&client(&endpoint, &with)).await.unwrap(), [PERMISSION]);

    let without = ClientTls { ca_file: Some(pki.ca.clone()), identity: None };
    // The server's refusal is an alert that, with TLS 1.3, arrives after the client's handshake:
    // it is either read (a TLS configuration error) or lost in the race with sending the request
    // (the connection closed: unreachable). Either way the message says what to configure.
    // Fresh clients, so that the race is run again each time.
    for _ in 0..20 {
        let err = ask(&client(&endpoint, &without)).await.unwrap_err();
        assert!(err.is_tls_configuration() || err.failure() == Failure::Unreachable, "{err:?}");
        assert!(err.message.contains("client certificate"), "{}", err.message);
    }

    // A key that does not match the certificate is refused when the client is built.
    let mismatched = ClientTls { ca_file: None, identity: Some((pki.client_cert.clone(), pki.server_key.clone())) };
    assert!(
        RestKmsClient::with_tls(&endpoint, Arc::new(StaticToken(SecretString::new("t".into()))), &mismatched).is_err()
    );
}
