//! Gateways: the protocol a gateway and its node speak, and the store a
//! gateway's worker runs on, which speaks it to the node.

mod remote;
pub mod wire;

pub use remote::{RemoteConfig, RemoteStore};
