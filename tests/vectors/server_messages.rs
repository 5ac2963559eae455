//! Typed-message side of the vectors (filled in with `protocol::messages`).

use espmail::protocol::habitat::Packet;
use serde_json::Value;

/// A typed server message for the `server_to_client` vector `name`.
pub fn build(_name: &str) -> Option<Stub> {
    None
}

/// Placeholder until messages exist.
#[derive(Debug)]
pub struct Stub;

impl Stub {
    pub fn packets(&self) -> Vec<Packet> {
        Vec::new()
    }
    pub fn encode(&self) -> Vec<bytes::Bytes> {
        Vec::new()
    }
}

/// Checks the typed parse of a `client_to_server` vector; false when not yet typed.
pub fn check_client(_c: &Value, _p: &Packet) -> bool {
    false
}
