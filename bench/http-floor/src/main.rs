//! `http-floor hyper|axum|encrypt PORT [ANSWER_FILE]`: answers every request on 127.0.0.1:PORT.
//! - `hyper` and `axum` answer with the bytes of ANSWER_FILE as `application/json`
//!   (bench/http-floor.sh gives them the nginx baseline's answer from bench/suite.py): `hyper`
//!   with hyper alone, `axum` through an axum router with one fallback handler. What an HTTP
//!   request costs before any work of Keyhold's: the floor its health check stands on.
//! - `encrypt` is a bare `:encrypt`: it parses the JSON body (`{"plaintext": base64}`), seals
//!   the plaintext with AES-256-GCM under one fixed key and a fresh random nonce (ring), and
//!   answers Google's `EncryptResponse` (name, ciphertext, its CRC32C, protection level) as
//!   pretty JSON, as Keyhold does. No token, no IAM, no key lookup, no audit entry: the floor
//!   Keyhold's `:encrypt` stands on, with the crates Keyhold uses for each step.
//!
//! All on a multi-threaded tokio runtime with a worker per core and `TCP_NODELAY`, as
//! `keyhold serve` runs.

use std::convert::Infallible;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom as _, SystemRandom};
use serde::{Deserialize, Serialize};

/// The content type of nginx's baseline answer (bench/suite.py).
const JSON: &str = "application/json; charset=UTF-8";

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(mode), Some(port)) = (args.next(), args.next().and_then(|p| p.parse::<u16>().ok())) else {
        usage();
    };
    let answer = match (mode.as_str(), args.next()) {
        ("encrypt", None) => Bytes::new(),
        ("hyper" | "axum", Some(file)) => Bytes::from(std::fs::read(file).unwrap_or_else(|_| usage())),
        _ => usage(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        match mode.as_str() {
            "axum" => {
                // As Keyhold's listener and the hyper floor do (axum::serve does not).
                use axum::serve::ListenerExt as _;
                let listener = listener.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                let app = axum::Router::new().fallback(move || {
                    let answer = answer.clone();
                    async move { ([(CONTENT_TYPE, JSON)], answer) }
                });
                axum::serve(listener, app).await.expect("serve");
            }
            "encrypt" => {
                use axum::serve::ListenerExt as _;
                let listener = listener.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                let key = Arc::new(Sealer::new());
                let app = axum::Router::new().fallback(move |body: Bytes| {
                    let key = key.clone();
                    async move { key.encrypt(&body) }
                });
                axum::serve(listener, app).await.expect("serve");
            }
            "hyper" => loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let _ = stream.set_nodelay(true);
                let answer = answer.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_: Request<hyper::body::Incoming>| {
                        let mut resp = Response::new(Full::new(answer.clone()));
                        resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
                        async move { Ok::<_, Infallible>(resp) }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            },
            _ => usage(),
        }
    });
}

fn usage() -> ! {
    eprintln!("usage: http-floor hyper|axum PORT ANSWER_FILE | http-floor encrypt PORT");
    std::process::exit(2);
}

/// The name in every answer: the key version bench/lib.sh's Keyhold encrypts with.
const VERSION: &str = "projects/bench/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1";

#[derive(Deserialize)]
struct EncryptRequest {
    plaintext: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EncryptResponse {
    name: &'static str,
    ciphertext: String,
    /// int64 in proto3 JSON: a string.
    ciphertext_crc32c: String,
    protection_level: &'static str,
}

/// One AES-256-GCM key, drawn at start.
struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl Sealer {
    fn new() -> Self {
        let rng = SystemRandom::new();
        let mut bytes = [0u8; 32];
        rng.fill(&mut bytes).expect("random key");
        Self { key: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &bytes).expect("key")), rng }
    }

    /// `{"plaintext": base64}` in, `EncryptResponse` out; 400 for a body that is not one.
    fn encrypt(&self, body: &[u8]) -> Response<axum::body::Body> {
        let Some(plaintext) =
            serde_json::from_slice::<EncryptRequest>(body).ok().and_then(|r| B64.decode(r.plaintext).ok())
        else {
            let mut resp = Response::new(axum::body::Body::from("{\"error\": \"bad request\"}"));
            *resp.status_mut() = StatusCode::BAD_REQUEST;
            resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
            return resp;
        };
        // As Keyhold's format begins: a format byte and the version number, then nonce,
        // ciphertext and tag.
        let mut out = Vec::with_capacity(9 + NONCE_LEN + plaintext.len() + AES_256_GCM.tag_len());
        out.push(1);
        out.extend_from_slice(&1u64.to_be_bytes());
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).expect("random nonce");
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(&plaintext);
        let tag = self
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut out[start..])
            .expect("seal");
        out.extend_from_slice(tag.as_ref());
        let answer = EncryptResponse {
            name: VERSION,
            ciphertext_crc32c: crc32c::crc32c(&out).to_string(),
            ciphertext: B64.encode(&out),
            protection_level: "SOFTWARE",
        };
        let mut resp = Response::new(axum::body::Body::from(serde_json::to_vec_pretty(&answer).expect("json")));
        resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
        resp
    }
}
