//! Where the operator's passwords come from: typed at a terminal (asked on stderr with
//! echo off through [`crate::terminal::EchoOff`], and asked twice for a new one), or one
//! line of stdin from a script; tests hand in their own [`PasswordSource`].
//!
//! May touch: stdin, stderr (the prompts) and the terminal's echo flag.

use std::io::{self, BufRead, IsTerminal, Write};

use super::OpsError;
use crate::avatar::Password;
use crate::terminal::EchoOff;

/// Where a password comes from: the terminal, or a test's script.
pub trait PasswordSource {
    /// Reads one password. `confirm`: a new password, asked twice when a person types it.
    fn read_password(&mut self, prompt: &str, confirm: bool) -> Result<Password, OpsError>;
}

/// Passwords from the process's stdin: on a terminal, prompted on stderr without echo (and
/// asked twice for a new one); otherwise one line of stdin (scripts, tests).
#[derive(Debug, Default)]
pub struct StdinPasswords;

impl PasswordSource for StdinPasswords {
    fn read_password(&mut self, prompt: &str, confirm: bool) -> Result<Password, OpsError> {
        let stdin = io::stdin();
        if !stdin.is_terminal() {
            return read_line_password(&mut stdin.lock());
        }
        let first = prompt_no_echo(prompt)?;
        if confirm {
            let again = prompt_no_echo("Again: ")?;
            if !first.same_as(&again) {
                return Err(OpsError::PasswordMismatch);
            }
        }
        Ok(first)
    }
}

/// Reads one line as a password (without its line end). EOF before any byte is an error.
/// Bytes, not text: a password need not be UTF-8.
pub fn read_line_password(input: &mut dyn BufRead) -> Result<Password, OpsError> {
    let mut line = zeroize::Zeroizing::new(Vec::new());
    let n = input
        .read_until(b'\n', &mut line)
        .map_err(OpsError::PasswordRead)?;
    if n == 0 {
        return Err(OpsError::NoPassword);
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    Ok(Password::new(line.to_vec()))
}

/// Asks for one password at the terminal. The terminal echoes the Enter (ECHONL), so the
/// cursor moves on as after any answer.
fn prompt_no_echo(prompt: &str) -> Result<Password, OpsError> {
    let mut err = io::stderr();
    // Echo goes off before the prompt shows, so nothing typed after seeing it is echoed;
    // if it cannot go off, the password is not asked at all.
    let echo = EchoOff::new().map_err(OpsError::EchoStaysOn)?;
    write!(err, "{prompt}")?;
    err.flush()?;
    let pw = read_line_password(&mut io::stdin().lock());
    // Echo comes back on however the read ended.
    drop(echo);
    pw
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_passwords_drop_the_line_end_and_refuse_eof() {
        let mut input: &[u8] = b"hunter2hunter2\r\nsecond\n\xff\xfe bytes\n";
        assert_eq!(
            read_line_password(&mut input).unwrap().expose(),
            b"hunter2hunter2"
        );
        assert_eq!(read_line_password(&mut input).unwrap().expose(), b"second");
        assert_eq!(
            read_line_password(&mut input).unwrap().expose(),
            b"\xff\xfe bytes"
        );
        assert!(matches!(
            read_line_password(&mut input),
            Err(OpsError::NoPassword)
        ));
    }
}
