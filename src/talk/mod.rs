//! `espmail talk`: a text client that speaks the real protocol (login line, Q-Link
//! frames, Habitat packets), so anyone without a C64 emulator can meet the world.
//!
//! Three rooms, from the wire up:
//!
//! - [`client`]: the protocol client ([`Client`]), generic over its transport; the
//!   integration tests and the load generator use it directly. No terminal.
//! - [`screen`]: pure: what a player types becomes what is sent ([`screen::Typed`]), and
//!   what the server sends becomes lines to show ([`screen::Screen`]). No I/O at all.
//! - [`ui`]: the terminal front end ([`run`]): options ([`TalkOptions`]), the login
//!   dialogue, the keyboard thread and the screen. The only part that prints.

pub mod client;
pub mod screen;
pub mod ui;

pub use client::{
    avatar_noids, avatars_in, front_end_login_line, io_words, login_line, Client, ClientError,
    Event, Transport, DEFAULT_WAIT,
};
pub use ui::{run, run_on, Ending, TalkError, TalkOptions};
