//! The message types and services generated from Google's protos at build time.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// `google.*`
pub mod google {
    /// `google.api`
    pub mod api {
        tonic::include_proto!("google.api");
    }
    /// `google.rpc`
    pub mod rpc {
        tonic::include_proto!("google.rpc");
        include!(concat!(env!("OUT_DIR"), "/google.rpc.serde.rs"));
    }
    /// `google.type`
    pub mod r#type {
        tonic::include_proto!("google.r#type");
        include!(concat!(env!("OUT_DIR"), "/google.r#type.serde.rs"));
    }
    /// `google.longrunning`
    pub mod longrunning {
        tonic::include_proto!("google.longrunning");
    }
    /// `google.iam.v1`
    pub mod iam {
        pub mod v1 {
            tonic::include_proto!("google.iam.v1");
            include!(concat!(env!("OUT_DIR"), "/google.iam.v1.serde.rs"));
        }
    }
    /// `google.cloud.*`
    pub mod cloud {
        pub mod location {
            tonic::include_proto!("google.cloud.location");
            include!(concat!(env!("OUT_DIR"), "/google.cloud.location.serde.rs"));
        }
        pub mod kms {
            pub mod v1 {
                tonic::include_proto!("google.cloud.kms.v1");
                include!(concat!(env!("OUT_DIR"), "/google.cloud.kms.v1.serde.rs"));
            }
            pub mod inventory {
                pub mod v1 {
                    tonic::include_proto!("google.cloud.kms.inventory.v1");
                    include!(concat!(env!("OUT_DIR"), "/google.cloud.kms.inventory.v1.serde.rs"));
                }
            }
        }
    }
}
