//! The services generated from Google's protos at build time, beside the messages they carry
//! (`keyhold-proto`'s, re-exported here so that a service and its messages share one path).
#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// `google.*`
pub mod google {
    pub use keyhold_proto::google::{api, rpc, r#type};

    /// `google.longrunning`
    pub mod longrunning {
        pub use keyhold_proto::google::longrunning::*;
        include!(concat!(env!("OUT_DIR"), "/google.longrunning.rs"));
    }

    /// `google.iam.v1`
    pub mod iam {
        pub mod v1 {
            pub use keyhold_proto::google::iam::v1::*;
            include!(concat!(env!("OUT_DIR"), "/google.iam.v1.rs"));
        }
    }

    /// `google.cloud.*`
    pub mod cloud {
        pub mod location {
            pub use keyhold_proto::google::cloud::location::*;
            include!(concat!(env!("OUT_DIR"), "/google.cloud.location.rs"));
        }
        pub mod kms {
            pub mod v1 {
                pub use keyhold_proto::google::cloud::kms::v1::*;
                include!(concat!(env!("OUT_DIR"), "/google.cloud.kms.v1.rs"));
            }
            pub mod inventory {
                pub mod v1 {
                    pub use keyhold_proto::google::cloud::kms::inventory::v1::*;
                    include!(concat!(env!("OUT_DIR"), "/google.cloud.kms.inventory.v1.rs"));
                }
            }
        }
    }
}
