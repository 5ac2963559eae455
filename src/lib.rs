//! espmail: a server for Habitat-lineage virtual worlds, with ESP Mail for offline avatars.
//!
//! The layers, in the order bytes flow through them:
//!
//! - [`protocol`]: pure codec: Q-Link frames, the link state machine, Habitat packets,
//!   typed messages, the login preamble. No sockets, no clock.
//! - [`server`]: the only owner of player sockets: accept loop, permits, shutdown, and one
//!   session task per connection.
//! - [`espmail`]: ESP Mail: keyfile, encryption, the durable store, delivery and deletion.
//! - [`log_redact`]: beside them all: the only code that decides how sensitive values show
//!   in logs.
//! - [`cli`]: the command line (clap derive), used by the `espmail` binary.

pub mod cli;
pub mod espmail;
pub mod log_redact;
pub mod protocol;
pub mod server;
