//! espmail: a server for Habitat-lineage virtual worlds, with ESP Mail for offline avatars.
//!
//! The layers, in the order bytes flow through them:
//!
//! - [`protocol`]: pure codec: Q-Link frames, the link state machine, Habitat packets,
//!   typed messages, the login preamble. No sockets, no clock.
//! - [`espmail`]: ESP Mail: keyfile, encryption, the durable store, delivery and deletion.
//! - [`log_redact`]: beside them all: the only code that decides how sensitive values show
//!   in logs.

pub mod admin;
pub mod config;
pub mod espmail;
pub mod log_redact;
pub mod protocol;
