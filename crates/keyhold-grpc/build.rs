//! Generates the tonic services (servers, and clients for the tests) of every Google API
//! Keyhold serves over gRPC, from the protos `keyhold-proto` vendors, over the message types
//! `keyhold-proto` generates from the same protos: this build emits no message of its own, so
//! the gRPC surface speaks exactly the messages the REST surface reads and writes.

const PROTOS: &[&str] = &[
    "google/cloud/kms/v1/service.proto",
    "google/cloud/kms/inventory/v1/key_tracking_service.proto",
    "google/cloud/location/locations.proto",
    "google/iam/v1/iam_policy.proto",
    "google/longrunning/operations.proto",
];

/// Where `keyhold-proto` keeps the protos.
const PROTO_DIR: &str = "../keyhold-proto/proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_DIR}");
    let mut fds = protox::compile(PROTOS, [PROTO_DIR])?;
    for file in &mut fds.file {
        // Services only: the messages are keyhold-proto's (the extern paths below).
        file.message_type.clear();
        file.enum_type.clear();
        file.extension.clear();
        file.source_code_info = None;
    }
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .build_transport(false)
        .generate_default_stubs(false)
        .compile_well_known_types(true)
        .extern_path(".google.cloud", "::keyhold_proto::google::cloud")
        .extern_path(".google.iam", "::keyhold_proto::google::iam")
        .extern_path(".google.longrunning", "::keyhold_proto::google::longrunning")
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(fds)?;
    Ok(())
}
