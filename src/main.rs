//! The `espmail` binary: command line, configuration and logging at the edge; everything
//! else lives in the library.

use std::process::ExitCode;

#[allow(clippy::print_stderr)] // the binary's job at this edge is to tell the operator
fn main() -> ExitCode {
    eprintln!(
        "espmail {}: the server is not built yet; only the protocol library exists so far.",
        env!("CARGO_PKG_VERSION")
    );
    ExitCode::FAILURE
}
