//! Keyhold's store: an object store in Google API style whose every byte of customer data is
//! encrypted under the instance's key, and which stops serving it the moment the customer takes
//! the key away ([C1]–[C7], [C12]). Built on `keyhold-cmek`; reaches keys only through its
//! service agent ([`agents`]); authorizes and audits through its platform's IAM and audit log,
//! reached through the port it owns ([`host::ServiceHost`]);
//! persists through [`repo::StoreRepository`] (implemented by `keyhold-sql`).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod agents;
pub mod archive;
mod copies;
pub mod error;
pub mod host;
pub mod model;
pub mod operations;
pub mod repo;
pub mod service;

pub use agents::{AgentProvider, LocalAgents, RemoteAgents};
pub use error::StoreError;
pub use host::{CallSpec, HostCall, HostError, KeyNotice, KeyNotices, ServiceHost};
pub use model::SERVICE;
pub use operations::{Job, OperationRequest};
pub use repo::StoreRepository;
pub use service::{ContentStream, ListRequest, Store, StoreConfig};
