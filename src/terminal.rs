//! The controlling terminal: reading a secret without echoing it, and putting the terminal
//! back however the program ends.
//!
//! One place for this so every command that asks for a password behaves the same.
//! [`EchoOff`] turns echo off on standard input and restores the exact settings it found
//! when dropped; [`restore`] does the same from anywhere (a Ctrl-C handler), since a
//! thread blocked in a read cannot run its destructor before the process exits. Both act
//! only on a terminal: a pipe has no echo to hide.
//!
//! May touch: standard input's terminal settings, standard error (the prompt).

use std::io::{self, BufRead, IsTerminal, Write};
use std::sync::Mutex;

use rustix::termios::{self, LocalModes, OptionalActions, Termios};
use zeroize::Zeroizing;

/// The settings found before echo was turned off, while it is off.
static SAVED: Mutex<Option<Termios>> = Mutex::new(None);

/// Echo is off on standard input while this lives.
#[derive(Debug)]
pub struct EchoOff(());

impl EchoOff {
    /// Turns echo off (keeping the newline echoed, so the cursor moves on after Enter).
    /// Fails rather than let a secret show.
    pub fn new() -> io::Result<EchoOff> {
        let stdin = io::stdin();
        let before = termios::tcgetattr(&stdin)?;
        let mut quiet = before.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        quiet.local_modes.insert(LocalModes::ECHONL);
        *SAVED.lock().unwrap_or_else(|p| p.into_inner()) = Some(before);
        if let Err(e) = termios::tcsetattr(&stdin, OptionalActions::Flush, &quiet) {
            restore();
            return Err(e.into());
        }
        Ok(EchoOff(()))
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        restore();
    }
}

/// Puts back the settings an [`EchoOff`] found, if one is in force; otherwise nothing.
pub fn restore() {
    let saved = SAVED.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(before) = saved {
        // Nothing useful to do if this fails: the terminal is gone.
        let _ = termios::tcsetattr(io::stdin(), OptionalActions::Now, &before);
    }
}

/// Whether standard input is a terminal (a person typing, rather than a pipe or file).
pub fn stdin_is_terminal() -> bool {
    io::stdin().is_terminal()
}

/// Reads one line as a secret: on a terminal, `prompt` goes to standard error and echo is
/// off while the line is typed; from a pipe, the line is read as it comes. The line ends
/// are removed. `None` at the end of input.
pub fn read_secret(prompt: &str) -> io::Result<Option<Zeroizing<String>>> {
    let stdin = io::stdin();
    let mut line = Zeroizing::new(String::new());
    let n = if stdin.is_terminal() {
        let mut err = io::stderr();
        // Echo goes off before the prompt shows, so nothing typed after it is echoed.
        let echo = EchoOff::new()?;
        write!(err, "{prompt}")?;
        err.flush()?;
        let n = stdin.lock().read_line(&mut line);
        drop(echo);
        n?
    } else {
        stdin.lock().read_line(&mut line)?
    };
    if n == 0 {
        return Ok(None);
    }
    let keep = line.trim_end_matches(['\r', '\n']).len();
    line.truncate(keep);
    Ok(Some(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_without_echo_off_does_nothing() {
        // No EchoOff in force: nothing saved, nothing touched (and no panic off a tty).
        restore();
        assert!(SAVED.lock().unwrap().is_none());
    }

    #[test]
    fn echo_off_fails_cleanly_when_stdin_is_not_a_terminal() {
        if stdin_is_terminal() {
            return; // run by hand at a terminal: nothing to show here
        }
        assert!(EchoOff::new().is_err());
        assert!(SAVED.lock().unwrap().is_none(), "nothing left saved");
    }
}
