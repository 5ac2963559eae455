//! The recorded C64 handshake (vectors `c64_recorded`: login line with only the name,
//! the deliberate bad-CRC probe, `SG`, NAK and heartbeats, then IM_ALIVE, DESCRIBE,
//! HERE_I_AM) sent byte for byte over TCP leads to a working session.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use espmail_test_macros::bounded;

use common::c64::replay_recorded_session;
use common::{trusted_config, TestServer};
use tokio::net::TcpStream;

#[bounded]
#[tokio::test]
async fn the_recorded_c64_handshake_leads_to_a_working_session() {
    // The C64 launcher sends no password: believe a front end on this host.
    let server = TestServer::start_with_config(&trusted_config(&["127.0.0.1"]), &[]);
    replay_recorded_session(TcpStream::connect(server.addr).await.unwrap()).await;
    // The probe and the SG hellos are the C64's own handshake: never bad input.
    assert_eq!(server.log_count("bad input"), 0, "{}", server.log());
}
