//! `espmail admin …`: the client side of the running server's admin socket. No vault,
//! no keyfile: one request, one answer printed.
//!
//! May touch: the admin socket (as a client).

use std::io::Write;

use super::{load_config, runtime, OpsError};
use crate::cli::{AdminArgs, AdminOp, DebugSwitch};

/// `espmail admin debug on|off|status`, `espmail admin stats`: one request to the running
/// server's admin socket; its answer is printed.
pub fn admin(args: AdminArgs, out: &mut dyn Write) -> Result<(), OpsError> {
    let config = load_config(&args.data)?;
    let line = match args.op {
        AdminOp::Debug {
            state: DebugSwitch::On,
        } => "debug on",
        AdminOp::Debug {
            state: DebugSwitch::Off,
        } => "debug off",
        AdminOp::Debug {
            state: DebugSwitch::Status,
        } => "debug status",
        AdminOp::Stats => "stats",
    };
    let socket = args.socket.unwrap_or_else(|| config.admin_socket_path());
    let answer = runtime()?.block_on(crate::admin::request(&socket, line))?;
    writeln!(out, "{answer}")?;
    Ok(())
}
