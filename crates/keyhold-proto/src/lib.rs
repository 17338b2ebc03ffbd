//! The wire messages of the Google APIs Keyhold serves, generated at build time from Google's
//! published protos (`proto/`): Cloud KMS v1, its Inventory, the IAM and Locations mixins,
//! `google.rpc`'s status and error details, and `google.longrunning`.
//!
//! These are the one set of message types both wire forms speak: the gRPC front end
//! (`keyhold-grpc`) sends them in the protobuf binary form (prost), the REST front end
//! (`keyhold-server`) reads every Cloud KMS request body into them and writes every answer
//! from them in proto3 JSON (pbjson, Google's JSON mapping), and each method is implemented
//! once over them. What REST accepts and answers is therefore what gRPC does, by construction.
//!
//! [`convert`] crosses between these messages and `keyhold-api`'s model, the typed
//! vocabulary the KMS domain speaks (validated names and enums, secrets that wipe themselves);
//! [`wkt`] holds the two well-known types whose JSON Keyhold writes itself.

#![forbid(unsafe_code)]

pub mod convert;
pub mod wkt;

/// The other well-known types, as the generated messages hold them.
pub use pbjson_types;

/// `google.*`: the generated messages, one module per proto package.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod google {
    /// `google.api`
    pub mod api {
        include!(concat!(env!("OUT_DIR"), "/google.api.rs"));
    }
    /// `google.rpc`
    pub mod rpc {
        include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
        include!(concat!(env!("OUT_DIR"), "/google.rpc.serde.rs"));
    }
    /// `google.type`
    pub mod r#type {
        include!(concat!(env!("OUT_DIR"), "/google.r#type.rs"));
        include!(concat!(env!("OUT_DIR"), "/google.r#type.serde.rs"));
    }
    /// `google.longrunning`
    pub mod longrunning {
        include!(concat!(env!("OUT_DIR"), "/google.longrunning.rs"));
        include!(concat!(env!("OUT_DIR"), "/google.longrunning.serde.rs"));
    }
    /// `google.iam.v1`
    pub mod iam {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/google.iam.v1.rs"));
            include!(concat!(env!("OUT_DIR"), "/google.iam.v1.serde.rs"));
        }
    }
    /// `google.cloud.*`
    pub mod cloud {
        pub mod location {
            include!(concat!(env!("OUT_DIR"), "/google.cloud.location.rs"));
            include!(concat!(env!("OUT_DIR"), "/google.cloud.location.serde.rs"));
        }
        pub mod kms {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/google.cloud.kms.v1.rs"));
                include!(concat!(env!("OUT_DIR"), "/google.cloud.kms.v1.serde.rs"));
            }
            pub mod inventory {
                pub mod v1 {
                    include!(concat!(env!("OUT_DIR"), "/google.cloud.kms.inventory.v1.rs"));
                    include!(concat!(env!("OUT_DIR"), "/google.cloud.kms.inventory.v1.serde.rs"));
                }
            }
        }
    }
}
