//! Change notices for services that enforce key state (the CMEK key guards [C5]).
//!
//! The KMS announces, in process, every change that can make a key usable or unusable: a key
//! or version update (enable, disable, destroy, restore, rotation) and an IAM policy change,
//! made on this node or, read from the database's change log, on another node sharing it (so
//! across nodes a notice follows a change within the poll period, 250 ms); and a change it
//! cannot name (`StoreChanged`). Notices carry no secrets and say only *what* may have
//! changed; listeners re-check the key themselves.

use keyhold_api::CryptoKeyName;
use tokio::sync::broadcast;

/// What may have changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KmsEvent {
    /// A crypto key or one of its versions changed state.
    KeyChanged(CryptoKeyName),
    /// An IAM policy changed on this resource (and so on everything below it).
    PolicyChanged(String),
    /// The shared store changed in a way the change log does not name (or this node fell too
    /// far behind it); anything may have changed.
    StoreChanged,
}

impl KmsEvent {
    /// Whether a listener guarding `key` (a crypto key name) should re-check it.
    pub fn concerns(&self, key: &str) -> bool {
        match self {
            KmsEvent::KeyChanged(k) => k.to_string() == key,
            KmsEvent::PolicyChanged(resource) => keyhold_iam::policy_change_affects(resource, key),
            KmsEvent::StoreChanged => true,
        }
    }
}

/// Room for notices a slow listener has not read yet; a listener that falls further behind
/// gets `Lagged` and must re-check everything (which key guards do).
const CAPACITY: usize = 1024;

/// The sending side, owned by the KMS.
#[derive(Debug, Clone)]
pub(crate) struct EventBus(broadcast::Sender<KmsEvent>);

impl Default for EventBus {
    fn default() -> Self {
        Self(broadcast::channel(CAPACITY).0)
    }
}

impl EventBus {
    pub(crate) fn send(&self, event: KmsEvent) {
        // No listener is fine: nobody is guarding anything.
        let _ = self.0.send(event);
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<KmsEvent> {
        self.0.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concerns_the_key_and_its_ancestors() {
        let key = "projects/p/locations/global/keyRings/r/cryptoKeys/k";
        let name: CryptoKeyName = key.parse().unwrap();
        assert!(KmsEvent::KeyChanged(name).concerns(key));
        let other: CryptoKeyName = "projects/p/locations/global/keyRings/r/cryptoKeys/other".parse().unwrap();
        assert!(!KmsEvent::KeyChanged(other).concerns(key));
        assert!(KmsEvent::PolicyChanged("projects/p".into()).concerns(key));
        assert!(KmsEvent::PolicyChanged("projects/p/locations/global/keyRings/r".into()).concerns(key));
        assert!(KmsEvent::PolicyChanged(keyhold_iam::ROOT_RESOURCE.into()).concerns(key));
        assert!(!KmsEvent::PolicyChanged("projects/q".into()).concerns(key));
        assert!(KmsEvent::StoreChanged.concerns(key));
    }
}
