//! espmail: a server for Habitat-lineage virtual worlds, with ESP Mail for offline avatars.
//!
//! The layers, in the order bytes flow through them; each folder is one layer and imports
//! only from the layers below it:
//!
//! - [`protocol`]: pure codec: Q-Link frames, the link state machine, Habitat packets,
//!   typed messages, the login preamble. No sockets, no clock.
//! - [`server`]: the only owner of player sockets: accept loop, permits and per-address
//!   caps, PROXY headers from listed front ends, shutdown, and one session task per
//!   connection (bad input counted, seats only for logins that may enter).
//! - [`world`]: pure: presence in the Plaza, how a login is believed and the in-world
//!   password dialogue ([`world::login`]), ESP routing and the ESP Mail offer: typed values
//!   in, typed intents out; no SQLite, no scrypt, no config, no clock.
//! - [`espmail`], the vault: everything stored and every key. One database, one schema
//!   (`migrations/`): the mail ([`espmail::store`], [`espmail::service`]) and the avatar
//!   accounts ([`espmail::accounts`]); the keyfile and what is derived from it
//!   ([`espmail::keyfile`], [`espmail::crypto`]); and the one start-up path that opens them
//!   for `serve` and every operator command ([`espmail::open`]).
//! - The bottom layer, under world and vault alike: [`avatar`] (avatar names, their one
//!   normalisation, passwords that never print and the rule for a new one), [`rate`] (the
//!   sliding window behind the ESP Mail send rate and the failed-login slowdown), [`utc`]
//!   (dates for mail headers and account listings), [`limits`] (the old clients' 114-byte
//!   speech cap, which the protocol, the world, the vault and the config all follow) and
//!   [`private_dir`] (owner-only directories: data, keyfile, logs).
//! - [`log_redact`]: beside them all: the only code that decides how sensitive values show
//!   in logs (lengths, and fingerprints keyed per session), and that wipes them on drop.
//! - [`cli`]: the command line (clap derive), used by the `espmail` binary;
//!   [`cli_docs`]: completions and man pages generated from it.
//! - [`ops`]: the operator commands beside `serve` (init, account, admin, stats, purge,
//!   quarantine, rotate-key), one file per concern, all reaching the vault through
//!   [`espmail::open`].
//! - [`talk`]: a text client speaking the real protocol (`espmail talk`, and the tests'):
//!   the protocol client, the pure screen, the terminal front end.
//! - [`terminal`]: echo off for secrets typed at a terminal, and putting it back.
//! - [`listen`] and [`supervisor`]: `serve` at the system's edge: binding the players'
//!   socket with a refusal in words; readiness for systemd (`Type=notify`).
//! - [`tls`]: TLS for the unchanged old clients: the server's acceptor (reloadable), the
//!   verifying client connector, self-signed certificates and fingerprints.
//! - [`tunnel`]: `espmail tunnel` on the player's machine: plain TCP from the old client on
//!   loopback, TLS to the server, verified before any byte is relayed.

pub mod admin;
pub mod avatar;
pub mod cli;
pub mod cli_docs;
pub mod config;
pub mod espmail;
pub mod limits;
pub mod listen;
pub mod log_redact;
pub mod ops;
pub mod private_dir;
pub mod protocol;
pub mod rate;
pub mod server;
pub mod supervisor;
pub mod talk;
pub mod terminal;
pub mod tls;
pub mod tunnel;
pub mod utc;
pub mod world;
