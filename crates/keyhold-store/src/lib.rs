//! Keyhold's store: an object store in Google API style whose every byte of customer data is
//! encrypted under the instance's key, and which stops serving it the moment the customer takes
//! the key away ([C1]–[C7], [C12]). Built on `keyhold-cmek`; reaches keys only through its
//! service agent ([`agents`]); authorizes and audits through the KMS's IAM and audit log;
//! persists through [`repo::StoreRepository`] (implemented by `keyhold-storage`).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod agents;
pub mod archive;
mod copies;
pub mod error;
pub mod model;
pub mod repo;
pub mod service;

pub use agents::{AgentProvider, LocalAgents, RemoteAgents};
pub use error::StoreError;
pub use model::SERVICE;
pub use repo::StoreRepository;
pub use service::{ContentStream, ListRequest, Store, StoreConfig};
