//! Cloud KMS v1 over gRPC against the real app and listener on loopback, with tonic's client
//! generated from the same protos: the seed workflow, the same answers as REST (messages,
//! statuses, error details, audit entries), authentication by token and by client
//! certificate, unserved methods, message limits, health, and REST beside it on the port.

mod common;

use common::{CLIENT_PRINCIPAL, H2, MAX_MESSAGE, Mode, Server, with_token};
use keyhold_grpc::pb::google::cloud::kms::v1 as pb;
use keyhold_grpc::pb::google::cloud::kms::v1::key_management_service_client::KeyManagementServiceClient;
use keyhold_grpc::pb::google::cloud::location as loc;
use keyhold_grpc::pb::google::iam::v1 as iam;
use keyhold_grpc::pb::google::rpc;
use prost::Message as _;
use reqwest::Method;
use serde_json::{Value, json};
use tonic::Code;

const LOCATION: &str = "projects/p/locations/global";

async fn client(server: &Server) -> KeyManagementServiceClient<H2> {
    KeyManagementServiceClient::with_origin(server.connect(false).await, server.origin())
}

/// A key ring and an ENCRYPT_DECRYPT key in it, over gRPC.
async fn ring_and_key(c: &mut KeyManagementServiceClient<H2>, token: &str, ring: &str) -> pb::CryptoKey {
    let r = c
        .create_key_ring(with_token(
            pb::CreateKeyRingRequest { parent: LOCATION.into(), key_ring_id: ring.into(), key_ring: None },
            Some(token),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.name, format!("{LOCATION}/keyRings/{ring}"));
    c.create_crypto_key(with_token(
        pb::CreateCryptoKeyRequest {
            parent: r.name,
            crypto_key_id: "k".into(),
            crypto_key: Some(pb::CryptoKey { purpose: 1, ..Default::default() }),
            ..Default::default()
        },
        Some(token),
    ))
    .await
    .unwrap()
    .into_inner()
}

/// The audit entries of `method` in project `p`, over REST.
async fn audit_entries(server: &Server, method: &str) -> Vec<Value> {
    let (s, v) = server.rest(Method::GET, &format!("projects/p/auditLogs?methodName={method}"), None).await;
    assert_eq!(s, 200, "{v}");
    v["entries"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn seed_workflow_over_h2c_matches_rest() {
    let server = common::start(Mode::Clear).await;
    let token = server.token.clone();
    let mut c = client(&server).await;
    let key = ring_and_key(&mut c, &token, "r").await;
    assert_eq!(key.name, format!("{LOCATION}/keyRings/r/cryptoKeys/k"));
    let primary = key.primary.clone().expect("a new key has a primary version");
    assert_eq!(primary.name, format!("{}/cryptoKeyVersions/1", key.name));
    assert_eq!(primary.state, pb::crypto_key_version::CryptoKeyVersionState::Enabled as i32);

    // The same resource read over both wire forms is the same message: the gRPC answer, in
    // proto3 JSON, equals the REST body, timestamps Z-normalized on both.
    let got = c
        .get_crypto_key(with_token(pb::GetCryptoKeyRequest { name: key.name.clone() }, Some(&token)))
        .await
        .unwrap()
        .into_inner();
    let (s, rest) = server.rest(Method::GET, &key.name, None).await;
    assert_eq!(s, 200);
    assert!(rest["createTime"].as_str().unwrap().ends_with('Z'), "{rest}");
    assert_eq!(serde_json::to_value(&got).unwrap(), rest);

    // Encrypt and decrypt, with AAD and checksums.
    let plaintext = b"attack at dawn".to_vec();
    let crc = |b: &[u8]| Some(pbjson_types::Int64Value::from(i64::from(crc32c_of(b))));
    let enc = c
        .encrypt(with_token(
            pb::EncryptRequest {
                name: key.name.clone(),
                plaintext: plaintext.clone(),
                additional_authenticated_data: b"aad".to_vec(),
                plaintext_crc32c: crc(&plaintext),
                additional_authenticated_data_crc32c: crc(b"aad"),
            },
            Some(&token),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(enc.name, primary.name);
    assert!(enc.verified_plaintext_crc32c && enc.verified_additional_authenticated_data_crc32c);
    assert_eq!(enc.ciphertext_crc32c, crc(&enc.ciphertext));
    assert_eq!(enc.protection_level, pb::ProtectionLevel::Software as i32);
    let dec = c
        .decrypt(with_token(
            pb::DecryptRequest {
                name: key.name.clone(),
                ciphertext: enc.ciphertext.clone(),
                additional_authenticated_data: b"aad".to_vec(),
                ..Default::default()
            },
            Some(&token),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dec.plaintext, plaintext);
    assert!(dec.used_primary);
    // What gRPC encrypted, REST decrypts.
    let (s, v) = server
        .rest(
            Method::POST,
            &format!("{}:decrypt", key.name),
            Some(json!({"ciphertext": b64(&enc.ciphertext), "additionalAuthenticatedData": b64(b"aad")})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["plaintext"], b64(&plaintext));

    // Rotate: a new version made primary; the old ciphertext still decrypts.
    let v2 = c
        .create_crypto_key_version(with_token(
            pb::CreateCryptoKeyVersionRequest { parent: key.name.clone(), crypto_key_version: None },
            Some(&token),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(v2.name.ends_with("/cryptoKeyVersions/2"));
    let k = c
        .update_crypto_key_primary_version(with_token(
            pb::UpdateCryptoKeyPrimaryVersionRequest { name: key.name.clone(), crypto_key_version_id: "2".into() },
            Some(&token),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(k.primary.unwrap().name, v2.name);
    let again = c
        .decrypt(with_token(
            pb::DecryptRequest {
                name: key.name.clone(),
                ciphertext: enc.ciphertext.clone(),
                additional_authenticated_data: b"aad".to_vec(),
                ..Default::default()
            },
            Some(&token),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.plaintext, plaintext);
    assert!(!again.used_primary);

    // Labels through an update mask; versions listed with a filter.
    let labelled = c
        .update_crypto_key(with_token(
            pb::UpdateCryptoKeyRequest {
                crypto_key: Some(pb::CryptoKey {
                    name: key.name.clone(),
                    labels: [("team".to_string(), "blue".to_string())].into(),
                    ..Default::default()
                }),
                update_mask: Some(keyhold_proto::wkt::FieldMask { paths: vec!["labels".into()] }),
            },
            Some(&token),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(labelled.labels.get("team").map(String::as_str), Some("blue"));
    let disabled = c
        .update_crypto_key_version(with_token(
            pb::UpdateCryptoKeyVersionRequest {
                crypto_key_version: Some(pb::CryptoKeyVersion {
                    name: primary.name.clone(),
                    state: pb::crypto_key_version::CryptoKeyVersionState::Disabled as i32,
                    ..Default::default()
                }),
                update_mask: Some(keyhold_proto::wkt::FieldMask { paths: vec!["state".into()] }),
            },
            Some(&token),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(disabled.state, pb::crypto_key_version::CryptoKeyVersionState::Disabled as i32);
    let enabled = c
        .list_crypto_key_versions(with_token(
            pb::ListCryptoKeyVersionsRequest {
                parent: key.name.clone(),
                filter: "state=ENABLED".into(),
                ..Default::default()
            },
            Some(&token),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(enabled.crypto_key_versions.len(), 1);
    assert_eq!(enabled.crypto_key_versions[0].name, v2.name);
    assert_eq!(enabled.total_size, 1);

    // Destroy and restore.
    let destroyed = c
        .destroy_crypto_key_version(with_token(
            pb::DestroyCryptoKeyVersionRequest { name: primary.name.clone() },
            Some(&token),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(destroyed.state, pb::crypto_key_version::CryptoKeyVersionState::DestroyScheduled as i32);
    assert!(destroyed.destroy_time.is_some());
    let restored = c
        .restore_crypto_key_version(with_token(
            pb::RestoreCryptoKeyVersionRequest { name: primary.name.clone() },
            Some(&token),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(restored.state, pb::crypto_key_version::CryptoKeyVersionState::Disabled as i32);

    // Key rings listed with paging.
    for id in ["r2", "r3"] {
        c.create_key_ring(with_token(
            pb::CreateKeyRingRequest { parent: LOCATION.into(), key_ring_id: id.into(), key_ring: None },
            Some(&token),
        ))
        .await
        .unwrap();
    }
    let page = c
        .list_key_rings(with_token(
            pb::ListKeyRingsRequest { parent: LOCATION.into(), page_size: 2, ..Default::default() },
            Some(&token),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.key_rings.len(), 2);
    assert_eq!(page.total_size, 3);
    let rest_of = c
        .list_key_rings(with_token(
            pb::ListKeyRingsRequest {
                parent: LOCATION.into(),
                page_size: 2,
                page_token: page.next_page_token,
                ..Default::default()
            },
            Some(&token),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest_of.key_rings.len(), 1);
    assert!(rest_of.next_page_token.is_empty());

    // Random bytes: SOFTWARE is refused as Cloud KMS refuses it, the same way on both forms.
    let e = c
        .generate_random_bytes(with_token(
            pb::GenerateRandomBytesRequest { location: LOCATION.into(), length_bytes: 16, protection_level: 1 },
            Some(&token),
        ))
        .await
        .unwrap_err();
    let (s, v) = server
        .rest(
            Method::POST,
            &format!("{LOCATION}:generateRandomBytes"),
            Some(json!({"lengthBytes": 16, "protectionLevel": "SOFTWARE"})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.message(), v["error"]["message"].as_str().unwrap());

    // Every gRPC call was audited like its REST twin.
    let encrypts = audit_entries(&server, "Encrypt").await;
    assert!(!encrypts.is_empty(), "no Encrypt entry");
    assert!(encrypts.iter().any(|e| e.to_string().contains(common::OWNER.trim_start_matches("user:"))), "{encrypts:?}");
    assert!(!audit_entries(&server, "CreateKeyRing").await.is_empty());
}

/// REST reads its bodies into the generated messages gRPC carries, and writes its answers from
/// them: what proto3 JSON allows (proto field names, int64 as a number, a FieldMask as one
/// string) works over REST, what the message lacks is refused, and a REST answer read as the
/// gRPC message and written again is the same JSON.
#[tokio::test]
async fn rest_speaks_the_generated_messages() {
    let server = common::start(Mode::Clear).await;
    let token = server.token.clone();
    let mut c = client(&server).await;
    let key = ring_and_key(&mut c, &token, "same").await;

    // The proto's own field names and an int64 given as a JSON number.
    let body = json!({"plaintext": b64(b"hi"), "plaintext_crc32c": crc32c_of(b"hi"), "additionalAuthenticatedData": b64(b"a")});
    let (s, enc) = server.rest(Method::POST, &format!("{}:encrypt", key.name), Some(body)).await;
    assert_eq!(s, 200, "{enc}");
    assert_eq!(enc["verifiedPlaintextCrc32c"], true, "{enc}");
    // The answer is the message gRPC sends: read as pb::EncryptResponse and written again, the
    // same JSON (int64 as a string, defaults left out).
    let message: pb::EncryptResponse = serde_json::from_value(enc.clone()).unwrap();
    assert_eq!(serde_json::to_value(&message).unwrap(), enc);
    assert!(enc["ciphertextCrc32c"].is_string(), "{enc}");
    assert!(enc.get("verifiedAdditionalAuthenticatedDataCrc32c").is_none(), "false is left out: {enc}");
    let body = json!({"ciphertext": enc["ciphertext"], "additional_authenticated_data": b64(b"a")});
    let (s, dec) = server.rest(Method::POST, &format!("{}:decrypt", key.name), Some(body)).await;
    assert_eq!((s, dec["plaintext"].as_str()), (200, Some(b64(b"hi").as_str())), "{dec}");

    // A field the message does not have: refused, nothing done.
    let (s, e) = server
        .rest(Method::POST, &format!("{}:encrypt", key.name), Some(json!({"plaintext": "aGk=", "plaintxet": 1})))
        .await;
    assert_eq!(s, 400, "{e}");
    let m = e["error"]["message"].as_str().unwrap();
    assert!(m.starts_with("Invalid JSON payload received.") && m.contains("plaintxet"), "{m}");

    // setIamPolicy's updateMask is a FieldMask: one comma-separated string in JSON.
    let (s, policy) = server.rest(Method::GET, &format!("{}:getIamPolicy", key.name), None).await;
    assert_eq!(s, 200, "{policy}");
    let binding = json!({"role": "roles/cloudkms.viewer", "members": ["user:v@example.com"]});
    let body = json!({"policy": {"bindings": [binding], "etag": policy["etag"]}, "updateMask": "bindings,etag"});
    let (s, set) = server.rest(Method::POST, &format!("{}:setIamPolicy", key.name), Some(body)).await;
    assert_eq!(s, 200, "{set}");
    assert!(set["bindings"].as_array().unwrap().contains(&binding), "{set}");
    let (s, e) = server
        .rest(
            Method::POST,
            &format!("{}:setIamPolicy", key.name),
            Some(json!({"policy": {}, "updateMask": {"paths": ["bindings"]}})),
        )
        .await;
    assert_eq!(s, 400, "a FieldMask is not an object in proto3 JSON: {e}");
}

fn crc32c_of(b: &[u8]) -> u32 {
    keyhold_crypto::crc32c(b)
}

fn b64(b: &[u8]) -> String {
    keyhold_api::wire::encode_base64(b)
}

#[tokio::test]
async fn errors_have_rest_codes_messages_and_details() {
    let server = common::start(Mode::Clear).await;
    let token = server.token.clone();
    let mut c = client(&server).await;
    let key = ring_and_key(&mut c, &token, "r").await;

    // NOT_FOUND and ALREADY_EXISTS, with REST's messages.
    let missing = format!("{LOCATION}/keyRings/nope");
    let e =
        c.get_key_ring(with_token(pb::GetKeyRingRequest { name: missing.clone() }, Some(&token))).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(e.message(), format!("KeyRing {missing} not found."));
    let e = c
        .create_key_ring(with_token(
            pb::CreateKeyRingRequest { parent: LOCATION.into(), key_ring_id: "r".into(), key_ring: None },
            Some(&token),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);

    // A bad name, refused like a bad path.
    let e = c
        .get_key_ring(with_token(pb::GetKeyRingRequest { name: "projects/p/bad".into() }, Some(&token)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // Checksum mismatch.
    let e = c
        .encrypt(with_token(
            pb::EncryptRequest {
                name: key.name.clone(),
                plaintext: b"abc".to_vec(),
                plaintext_crc32c: Some(pbjson_types::Int64Value::from(i64::from(crc32c_of(b"abd")))),
                ..Default::default()
            },
            Some(&token),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.message(), "The checksum in field plaintext_crc32c did not match the data in field plaintext.");

    // A disabled primary: FAILED_PRECONDITION with the same google.rpc details as REST's JSON.
    let primary = key.primary.unwrap().name;
    let (s, _) =
        server.rest(Method::PATCH, &format!("{primary}?updateMask=state"), Some(json!({"state": "DISABLED"}))).await;
    assert_eq!(s, 200);
    let e = c
        .encrypt(with_token(
            pb::EncryptRequest { name: key.name.clone(), plaintext: b"x".to_vec(), ..Default::default() },
            Some(&token),
        ))
        .await
        .unwrap_err();
    let (s, rest) =
        server.rest(Method::POST, &format!("{}:encrypt", key.name), Some(json!({"plaintext": "eA=="}))).await;
    assert_eq!(s, 400, "{rest}");
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(rest["error"]["status"], "FAILED_PRECONDITION");
    assert_eq!(e.message(), rest["error"]["message"].as_str().unwrap());
    let details = rpc::Status::decode(e.details()).expect("grpc-status-details-bin holds a google.rpc.Status");
    assert_eq!(details.code, Code::FailedPrecondition as i32);
    let rest_details = rest["error"]["details"].as_array().cloned().unwrap_or_default();
    assert!(!rest_details.is_empty(), "REST sends details here: {rest}");
    let types: Vec<&str> = details.details.iter().map(|a| a.type_url.as_str()).collect();
    let rest_types: Vec<&str> = rest_details.iter().map(|d| d["@type"].as_str().unwrap()).collect();
    assert_eq!(types, rest_types);
    for (any, json) in details.details.iter().zip(&rest_details) {
        let mut fields = json.as_object().unwrap().clone();
        fields.remove("@type");
        let decoded = match any.type_url.as_str() {
            "type.googleapis.com/google.rpc.PreconditionFailure" => {
                serde_json::to_value(rpc::PreconditionFailure::decode(any.value.as_ref()).unwrap()).unwrap()
            }
            "type.googleapis.com/google.rpc.ErrorInfo" => {
                serde_json::to_value(rpc::ErrorInfo::decode(any.value.as_ref()).unwrap()).unwrap()
            }
            other => panic!("unexpected detail {other}"),
        };
        assert_eq!(decoded, Value::Object(fields));
    }
}

#[tokio::test]
async fn without_a_credential_is_unauthenticated_and_audited() {
    let server = common::start(Mode::Clear).await;
    let mut c = client(&server).await;
    let e = c
        .get_key_ring(with_token(pb::GetKeyRingRequest { name: format!("{LOCATION}/keyRings/r") }, None))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = c
        .get_key_ring(with_token(pb::GetKeyRingRequest { name: format!("{LOCATION}/keyRings/r") }, Some("not-a-token")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    // Both refusals are in the audit log, on the resource named in the request.
    let (s, v) = server.rest(Method::GET, "projects/-/auditLogs?orderBy=timestamp%20desc&pageSize=50", None).await;
    assert_eq!(s, 200, "{v}");
    let refusals = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["protoPayload"]["resourceName"] == format!("{LOCATION}/keyRings/r")
                && e["protoPayload"]["status"]["code"] == 16
        })
        .count();
    assert_eq!(refusals, 2, "{v}");
}

#[tokio::test]
async fn iam_and_locations_mixins() {
    let server = common::start(Mode::Clear).await;
    let token = server.token.clone();
    let mut c = client(&server).await;
    let key = ring_and_key(&mut c, &token, "r").await;
    let conn = server.connect(false).await;
    let mut iam_client = iam::iam_policy_client::IamPolicyClient::with_origin(conn.clone(), server.origin());
    let alice = "user:alice@example.com";
    let alice_token = server
        .kms
        .create_token(
            &keyhold_kms::Caller::new(keyhold_iam::Principal::parse(common::OWNER).unwrap(), String::new()),
            alice,
            None,
            "",
        )
        .await
        .unwrap()
        .token
        .expose()
        .to_string();
    let e = c
        .encrypt(with_token(
            pb::EncryptRequest { name: key.name.clone(), plaintext: b"x".to_vec(), ..Default::default() },
            Some(&alice_token),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let policy = iam_client
        .get_iam_policy(with_token(
            iam::GetIamPolicyRequest { resource: key.name.clone(), options: None },
            Some(&token),
        ))
        .await
        .unwrap()
        .into_inner();
    let set = iam_client
        .set_iam_policy(with_token(
            iam::SetIamPolicyRequest {
                resource: key.name.clone(),
                policy: Some(iam::Policy {
                    bindings: vec![iam::Binding {
                        role: "roles/cloudkms.cryptoKeyEncrypterDecrypter".into(),
                        members: vec![alice.into()],
                        condition: None,
                    }],
                    etag: policy.etag,
                    ..Default::default()
                }),
                update_mask: None,
            },
            Some(&token),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set.bindings.len(), 1);
    let tested = iam_client
        .test_iam_permissions(with_token(
            iam::TestIamPermissionsRequest {
                resource: key.name.clone(),
                permissions: vec![
                    "cloudkms.cryptoKeyVersions.useToEncrypt".into(),
                    "cloudkms.cryptoKeys.update".into(),
                ],
            },
            Some(&alice_token),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tested.permissions, ["cloudkms.cryptoKeyVersions.useToEncrypt"]);
    c.encrypt(with_token(
        pb::EncryptRequest { name: key.name.clone(), plaintext: b"x".to_vec(), ..Default::default() },
        Some(&alice_token),
    ))
    .await
    .expect("granted by the policy set over gRPC");
    let e = iam_client
        .get_iam_policy(with_token(
            iam::GetIamPolicyRequest { resource: format!("{}/cryptoKeyVersions/1", key.name), options: None },
            Some(&token),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    let mut locations = loc::locations_client::LocationsClient::with_origin(conn, server.origin());
    let list = locations
        .list_locations(with_token(
            loc::ListLocationsRequest { name: "projects/p".into(), ..Default::default() },
            Some(&token),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(list.locations.iter().any(|l| l.location_id == "global"));
    let global = locations
        .get_location(with_token(loc::GetLocationRequest { name: LOCATION.into() }, Some(&token)))
        .await
        .unwrap()
        .into_inner();
    let meta = global.metadata.expect("LocationMetadata");
    assert_eq!(meta.type_url, "type.googleapis.com/google.cloud.kms.v1.LocationMetadata");
    let (_, rest) = server.rest(Method::GET, LOCATION, None).await;
    let decoded = pb::LocationMetadata::decode(meta.value.as_ref()).unwrap();
    // REST writes the same message in proto3 JSON: `@type` and the fields not at their default.
    assert_eq!(rest["metadata"], serde_json::to_value(&meta).unwrap());
    assert_eq!(rest["metadata"]["@type"], "type.googleapis.com/google.cloud.kms.v1.LocationMetadata");
    assert_eq!(decoded.ekm_available, rest["metadata"]["ekmAvailable"].as_bool().unwrap_or(false));
}

#[tokio::test]
async fn unserved_methods_and_services_are_unimplemented_and_health_serves() {
    let server = common::start(Mode::Clear).await;
    let token = server.token.clone();
    let mut c = client(&server).await;
    let e = c
        .import_trusted_key_wrapped_crypto_key_version(with_token(
            pb::ImportTrustedKeyWrappedCryptoKeyVersionRequest {
                parent: format!("{LOCATION}/keyRings/r/cryptoKeys/k"),
                ..Default::default()
            },
            Some(&token),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    assert!(
        e.message().contains("ImportTrustedKeyWrappedCryptoKeyVersion")
            && e.message().contains("not implemented by Keyhold"),
        "{}",
        e.message()
    );

    // A whole service Keyhold does not serve: UNIMPLEMENTED naming the method, not a 404.
    let mut raw = tonic::client::Grpc::with_origin(server.connect(false).await, server.origin());
    raw.ready().await.unwrap();
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/google.cloud.kms.v1.EkmService/ListEkmConnections");
    let e = raw
        .unary::<pb::ListKeyRingsRequest, pb::ListKeyRingsResponse, _>(
            with_token(pb::ListKeyRingsRequest::default(), Some(&token)),
            path,
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    assert!(e.message().contains("google.cloud.kms.v1.EkmService/ListEkmConnections"), "{}", e.message());

    // A method a served service does not have: the same, not tonic's empty message.
    raw.ready().await.unwrap();
    let e = raw
        .unary::<pb::ListKeyRingsRequest, pb::ListKeyRingsResponse, _>(
            with_token(pb::ListKeyRingsRequest::default(), Some(&token)),
            tonic::codegen::http::uri::PathAndQuery::from_static("/google.cloud.kms.v1.KeyManagementService/Nope"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    assert!(e.message().contains("KeyManagementService/Nope is not served by Keyhold"), "{}", e.message());

    // grpc.health.v1.Health/Check: SERVING, overall and for the KMS service.
    for service in ["", "google.cloud.kms.v1.KeyManagementService"] {
        raw.ready().await.unwrap();
        let reply = raw
            .unary::<HealthCheckRequest, HealthCheckResponse, _>(
                tonic::Request::new(HealthCheckRequest { service: service.into() }),
                tonic::codegen::http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check"),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.status, 1, "SERVING for {service:?}");
    }
}

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

#[tokio::test]
async fn an_oversized_message_is_resource_exhausted_and_the_server_goes_on() {
    let server = common::start(Mode::Clear).await;
    let token = server.token.clone();
    let mut c = client(&server).await;
    let key = ring_and_key(&mut c, &token, "r").await;
    let e = c
        .encrypt(with_token(
            pb::EncryptRequest {
                name: key.name.clone(),
                plaintext: vec![7; MAX_MESSAGE as usize + 1],
                ..Default::default()
            },
            Some(&token),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("exceeds the limit"), "{}", e.message());
    // A new connection works (the refused one may be closed).
    let mut c = client(&server).await;
    let enc = c
        .encrypt(with_token(
            pb::EncryptRequest { name: key.name.clone(), plaintext: b"fine".to_vec(), ..Default::default() },
            Some(&token),
        ))
        .await
        .unwrap();
    assert!(!enc.into_inner().ciphertext.is_empty());
}

#[tokio::test]
async fn over_tls_by_alpn_h2_and_a_client_certificate_is_a_principal() {
    // TLS: h2 chosen by ALPN (asserted in the connector), a bearer token as over h2c.
    let server = common::start(Mode::Tls).await;
    let token = server.token.clone();
    let mut c = KeyManagementServiceClient::with_origin(server.connect(false).await, server.origin());
    let key = ring_and_key(&mut c, &token, "r").await;
    let enc = c
        .encrypt(with_token(
            pb::EncryptRequest { name: key.name.clone(), plaintext: b"tls".to_vec(), ..Default::default() },
            Some(&token),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!enc.ciphertext.is_empty());

    // mTLS: without a token, the certificate's SAN email is the principal: refused until a
    // policy grants it, then allowed, and audited under that principal.
    let server = common::start(Mode::MutualTls).await;
    let token = server.token.clone();
    let mut owner = KeyManagementServiceClient::with_origin(server.connect(true).await, server.origin());
    let key = ring_and_key(&mut owner, &token, "r").await;
    let mut svc = KeyManagementServiceClient::with_origin(server.connect(true).await, server.origin());
    let e = svc
        .encrypt(with_token(
            pb::EncryptRequest { name: key.name.clone(), plaintext: b"x".to_vec(), ..Default::default() },
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("cloudkms.cryptoKeyVersions.useToEncrypt"), "{}", e.message());
    let mut iam_client =
        iam::iam_policy_client::IamPolicyClient::with_origin(server.connect(true).await, server.origin());
    iam_client
        .set_iam_policy(with_token(
            iam::SetIamPolicyRequest {
                resource: key.name.clone(),
                policy: Some(iam::Policy {
                    bindings: vec![iam::Binding {
                        role: "roles/cloudkms.cryptoKeyEncrypterDecrypter".into(),
                        members: vec![CLIENT_PRINCIPAL.into()],
                        condition: None,
                    }],
                    ..Default::default()
                }),
                update_mask: None,
            },
            Some(&token),
        ))
        .await
        .unwrap();
    svc.encrypt(with_token(
        pb::EncryptRequest { name: key.name.clone(), plaintext: b"x".to_vec(), ..Default::default() },
        None,
    ))
    .await
    .expect("the certificate's principal is granted");
    let q = keyhold_kms::audit::AuditLogQuery {
        method: "Encrypt".into(),
        principal: CLIENT_PRINCIPAL.into(),
        ..Default::default()
    };
    let owner_caller = keyhold_kms::Caller::new(keyhold_iam::Principal::parse(common::OWNER).unwrap(), String::new());
    let page = server.kms.read_audit_log(&owner_caller, "p", &q).await.unwrap();
    assert_eq!(
        serde_json::to_value(&page).unwrap()["entries"].as_array().map(Vec::len),
        Some(2),
        "a refusal and a success"
    );
}

#[tokio::test]
async fn rest_is_served_beside_grpc_over_http2_too() {
    let server = common::start(Mode::Clear).await;
    keyhold_tls::install_default_provider();
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let resp = h2.get(format!("http://{}/v1/{LOCATION}", server.addr)).bearer_auth(&server.token).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["locationId"], "global");
    // A REST error over HTTP/2 is still Google's error JSON.
    let resp = h2
        .get(format!("http://{}/v1/{LOCATION}/keyRings/nope", server.addr))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["status"], "NOT_FOUND");
}
