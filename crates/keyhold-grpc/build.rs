//! Generates the message types, the tonic servers (and clients, for the tests) and the proto3
//! JSON serde of every Google API Keyhold serves over gRPC, from the protos vendored under
//! `proto/` (Apache-2.0; docs/development.md says where each comes from). Pure Rust: protox
//! compiles the protos, so no `protoc` is needed.

use prost::Message;

const PROTOS: &[&str] = &[
    "google/cloud/kms/v1/service.proto",
    "google/cloud/kms/inventory/v1/key_tracking_service.proto",
    "google/cloud/location/locations.proto",
    "google/iam/v1/iam_policy.proto",
    "google/rpc/status.proto",
    "google/rpc/error_details.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let mut fds = protox::compile(PROTOS, ["proto"])?;
    // Without the protos' comments: they hold examples in other languages, which rustdoc would
    // run as Rust doc tests (the protos under proto/ are the reference).
    for file in &mut fds.file {
        file.source_code_info = None;
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let desc = out.join("descriptor.bin");
    std::fs::write(&desc, fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .build_transport(false)
        .generate_default_stubs(false)
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(fds)?;
    pbjson_build::Builder::new().register_descriptors(&std::fs::read(&desc)?)?.build(&[
        ".google.cloud.kms.v1",
        ".google.cloud.kms.inventory.v1",
        ".google.cloud.location",
        ".google.iam.v1",
        ".google.type",
        ".google.rpc",
    ])?;
    Ok(())
}
