//! The CLI over TLS (issue 17): `--endpoint https://...` with `--ca-file` (or KEYHOLD_CA_FILE,
//! or gcloud's CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE), client certificates for mutual TLS, and a
//! clear error naming the option to use when the handshake fails over certificates. The
//! server is a real HTTPS server on loopback standing in for Keyhold (a fixed answer per
//! request kind; the CLI runs as a child process, so the server runs on its own worker
//! threads). Both clients of the CLI are exercised: JSON calls and object downloads.

#[path = "../../keyhold-cmek/tests/support/tls.rs"]
mod support;

use std::process::Command;

/// Lists one key ring; downloads (`?alt=media`) get fixed bytes.
fn server() -> axum::Router {
    axum::Router::new().fallback(|req: axum::extract::Request| async move {
        if req.uri().query().is_some_and(|q| q.contains("alt=media")) {
            return axum::response::IntoResponse::into_response("object data over TLS");
        }
        axum::response::IntoResponse::into_response(axum::Json(
            serde_json::json!({ "keyRings": [{ "name": "projects/p/locations/global/keyRings/over-tls" }] }),
        ))
    })
}

/// Runs `keyhold ARGS` against `endpoint` with `env`; returns (success, stdout, stderr).
fn cli(endpoint: &str, args: &[&str], env: &[(&str, &std::path::Path)]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyhold"));
    cmd.args(args)
        .env("KEYHOLD_ENDPOINT", endpoint)
        .env("KEYHOLD_TOKEN", "a-token")
        .env("KEYHOLD_PROJECT", "p")
        .env_remove("KEYHOLD_CA_FILE")
        .env_remove("KEYHOLD_CLIENT_CERT_FILE")
        .env_remove("KEYHOLD_CLIENT_KEY_FILE")
        .env_remove("CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const LIST: &[&str] = &["kms", "keyrings", "list", "--location", "global", "--format", "value(name)"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_endpoint_with_a_ca_file() {
    let pki = support::pki();
    let addr = support::serve_https(server(), &pki, false).await;
    let endpoint = format!("https://{addr}");
    let ca = pki.ca.to_str().unwrap();

    let mut with_flag = LIST.to_vec();
    with_flag.extend(["--ca-file", ca]);
    let (ok, out, err) = cli(&endpoint, &with_flag, &[]);
    assert!(ok && out.contains("keyRings/over-tls"), "{out}{err}");
    for var in ["KEYHOLD_CA_FILE", "CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE"] {
        let (ok, out, err) = cli(&endpoint, LIST, &[(var, &pki.ca)]);
        assert!(ok && out.contains("keyRings/over-tls"), "{var}: {out}{err}");
    }

    // Object data goes through the streaming client, with the same TLS settings.
    let (ok, out, err) = cli(
        &endpoint,
        &["store", "objects", "get", "inst", "obj", "--location", "global"],
        &[("KEYHOLD_CA_FILE", &pki.ca)],
    );
    assert!(ok && out == "object data over TLS", "{out}{err}");

    // Plain HTTP is unchanged, with or without a CA file.
    let plain = format!("http://{}", support::serve_http(server()).await);
    let (ok, out, err) = cli(&plain, &with_flag, &[]);
    assert!(ok && out.contains("keyRings/over-tls"), "{out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_says_which_option_to_use() {
    let pki = support::pki();
    let addr = support::serve_https(server(), &pki, false).await;
    let endpoint = format!("https://{addr}");
    for env in [vec![], vec![("KEYHOLD_CA_FILE", pki.other_ca.as_path())]] {
        let (ok, out, err) = cli(&endpoint, LIST, &env);
        assert!(!ok && out.is_empty(), "{out}");
        assert!(err.contains("not trusted") && err.contains("--ca-file"), "{err}");
        assert!(!err.contains("Is it running"), "{err}");
    }
    let (ok, _, err) = cli(
        &endpoint,
        &["store", "objects", "get", "inst", "obj", "--location", "global"],
        &[("KEYHOLD_CA_FILE", &pki.other_ca)],
    );
    assert!(!ok && err.contains("--ca-file"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_client_certificate_options() {
    let pki = support::pki();
    let addr = support::serve_https(server(), &pki, true).await;
    let endpoint = format!("https://{addr}");
    let ca = [("KEYHOLD_CA_FILE", pki.ca.as_path())];

    let mut args = LIST.to_vec();
    args.extend([
        "--client-cert-file",
        pki.client_cert.to_str().unwrap(),
        "--client-key-file",
        pki.client_key.to_str().unwrap(),
    ]);
    let (ok, out, err) = cli(&endpoint, &args, &ca);
    assert!(ok && out.contains("keyRings/over-tls"), "{out}{err}");
    let env = [
        ("KEYHOLD_CA_FILE", pki.ca.as_path()),
        ("KEYHOLD_CLIENT_CERT_FILE", pki.client_cert.as_path()),
        ("KEYHOLD_CLIENT_KEY_FILE", pki.client_key.as_path()),
    ];
    let (ok, out, err) = cli(&endpoint, LIST, &env);
    assert!(ok && out.contains("keyRings/over-tls"), "{out}{err}");

    let (ok, _, err) = cli(&endpoint, LIST, &ca);
    assert!(!ok && err.contains("--client-cert-file"), "{err}");

    // One file of the pair alone is a usage error.
    let mut half = LIST.to_vec();
    half.extend(["--client-cert-file", pki.client_cert.to_str().unwrap()]);
    let (ok, _, err) = cli(&endpoint, &half, &ca);
    assert!(!ok && err.contains("--client-key-file"), "{err}");
}
