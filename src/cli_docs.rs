//! Documentation generated from the command line's own definitions ([`crate::cli`]):
//! shell completion scripts (`espmail completions SHELL`, by `clap_complete`) and manual
//! pages in roff (`espmail man`, by `clap_mangen`). Generated, so they never drift from
//! what the binary accepts.
//!
//! `espmail(1)` carries, beside what clap knows, the sections an operator looks for in a
//! daemon's page: environment, files, signals, exit status. Each subcommand has its own
//! page, `espmail-serve(1)`, `espmail-account-add(1)`, as git's commands do.
//!
//! May touch: the writer it is given, and with `--out-dir` that directory (page files).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;
use roff::{bold, roman, Roff};

use crate::cli::{Cli, ManArgs};

/// The program's name, as completions and pages call it.
const BIN: &str = "espmail";

/// Why documentation could not be produced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DocsError {
    /// `espmail man WORDS` named no command.
    #[error("there is no command `espmail {0}` (`espmail --help` lists them)")]
    UnknownCommand(String),
    /// A page file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// Standard output could not be written (e.g. the reader went away).
    #[error("cannot write the output: {0}")]
    Output(#[source] io::Error),
}

/// The command tree as the pages and completions see it: built (so every subcommand knows
/// its full name, `espmail-account-add`), without clap's `help` subcommand.
fn command() -> clap::Command {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// Writes the completion script for `shell` to `out`.
pub fn completions(shell: Shell, out: &mut dyn Write) -> Result<(), DocsError> {
    // clap_complete panics when its writer fails; a Vec cannot fail, the real output can.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command(), BIN, &mut script);
    out.write_all(&script)
        .and_then(|()| out.flush())
        .map_err(DocsError::Output)
}

/// `espmail man`: one page to `out` (espmail(1), or the command named by `args.command`),
/// or with `args.out_dir` every page into that directory, naming each file on `out`.
pub fn man(args: &ManArgs, out: &mut dyn Write) -> Result<(), DocsError> {
    if let Some(dir) = &args.out_dir {
        for path in write_pages(dir)? {
            writeln!(out, "{}", path.display()).map_err(DocsError::Output)?;
        }
        return out.flush().map_err(DocsError::Output);
    }
    let root = command();
    let mut cmd = &root;
    for word in &args.command {
        cmd = cmd
            .find_subcommand(word)
            .ok_or_else(|| DocsError::UnknownCommand(args.command.join(" ")))?;
    }
    let page = render(cmd, args.command.is_empty());
    out.write_all(&page)
        .and_then(|()| out.flush())
        .map_err(DocsError::Output)
}

/// Writes espmail.1 and a page for every subcommand into `dir` (created if missing);
/// returns the files written, espmail.1 first.
pub fn write_pages(dir: &Path) -> Result<Vec<PathBuf>, DocsError> {
    std::fs::create_dir_all(dir).map_err(|source| DocsError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let root = command();
    let mut written = Vec::new();
    let mut stack: Vec<(&clap::Command, bool)> = vec![(&root, true)];
    while let Some((cmd, top)) = stack.pop() {
        let path = dir.join(format!("{}.1", page_name(cmd)));
        std::fs::write(&path, render(cmd, top)).map_err(|source| DocsError::Write {
            path: path.clone(),
            source,
        })?;
        written.push(path);
        let subs: Vec<_> = cmd.get_subcommands().filter(|s| !s.is_hide_set()).collect();
        stack.extend(subs.into_iter().rev().map(|s| (s, false)));
    }
    Ok(written)
}

/// `espmail-account-add`: the name a page is filed under.
fn page_name(cmd: &clap::Command) -> String {
    cmd.get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_owned()
}

/// One page in roff: clap_mangen's sections, then (for espmail(1)) the daemon's own.
fn render(cmd: &clap::Command, top: bool) -> Vec<u8> {
    let mut page = Vec::new();
    let man = clap_mangen::Man::new(cmd.clone())
        .title(page_name(cmd).to_uppercase())
        .source(format!("espmail {}", env!("CARGO_PKG_VERSION")))
        .manual("espmail manual");
    // Writing to a Vec cannot fail.
    let _ = man.render(&mut page);
    let mut extra = Roff::new();
    if top {
        top_sections(cmd, &mut extra);
    } else {
        extra
            .control("SH", ["SEE ALSO"])
            .text([bold(BIN), roman("(1)")]);
    }
    page.extend_from_slice(extra.render().as_bytes());
    page
}

/// ENVIRONMENT (every variable a flag reads, from the definitions), FILES, SIGNALS,
/// EXIT STATUS and SEE ALSO, for espmail(1).
fn top_sections(root: &clap::Command, roff: &mut Roff) {
    roff.control("SH", ["ENVIRONMENT"]);
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut stack = vec![root];
    while let Some(cmd) = stack.pop() {
        for arg in cmd.get_arguments() {
            if let Some(var) = arg.get_env() {
                let var = var.to_string_lossy().into_owned();
                if !vars.iter().any(|(v, _)| *v == var) {
                    vars.push((
                        var,
                        format!("--{}", arg.get_long().unwrap_or(arg.get_id().as_str())),
                    ));
                }
            }
        }
        stack.extend(cmd.get_subcommands());
    }
    vars.sort();
    for (var, flag) in vars {
        item(
            roff,
            &var,
            &format!("The same as {flag}; the flag wins when both are given."),
        );
    }
    item(
        roff,
        "RUST_LOG",
        "The starting log filter of serve when the config file sets no [logging] level \
         and neither -d nor -q is given. If it lets debug events through, players are told \
         at login, as with -d.",
    );
    item(
        roff,
        "NOTIFY_SOCKET",
        "Set by systemd for Type=notify units: serve sends READY=1 once it listens and \
         STOPPING=1 when it shuts down.",
    );
    roff.control("SH", ["FILES"]);
    item(
        roff,
        "/etc/espmail/espmail.toml",
        "The configuration every command reads when neither --config nor ESPMAIL_CONFIG \
         names a file and this one exists; without any of them, the embedded defaults. \
         serve logs which one it used; the other commands name this file on standard error \
         when they use it. The source's config/espmail.toml documents every key with its \
         default.",
    );
    item(
        roff,
        "DATA_DIR/espmail.db",
        "The database (default data directory: ./data; serve logs the absolute paths it uses).",
    );
    item(
        roff,
        "DATA_DIR/keyfile",
        "The keyfile, unless [data] keyfile puts it elsewhere (better: outside the data \
         directory). Back it up apart from the database: without it, waiting ESP Mail \
         cannot be read.",
    );
    item(
        roff,
        "DATA_DIR/admin.sock",
        "The admin socket of the running server (mode 0600), unless [logging] admin_socket \
         says otherwise.",
    );
    roff.control("SH", ["SIGNALS"]);
    item(
        roff,
        "SIGINT, SIGTERM",
        "Stop accepting, let sessions finish what they are saving or deleting, exit 0.",
    );
    item(
        roff,
        "SIGHUP",
        "Reopen the log file at its configured path (for logrotate) and put the config \
         file's [logging] level in force.",
    );
    roff.control("SH", ["EXIT STATUS"]);
    item(roff, "0", "Done.");
    item(
        roff,
        "1",
        "Failed; one line on standard error says what is wrong and what to do.",
    );
    item(roff, "2", "Usage error on the command line.");
    roff.control("SH", ["SEE ALSO"]);
    let mut first = true;
    let mut refs = Vec::new();
    for sub in root.get_subcommands().filter(|s| !s.is_hide_set()) {
        if !first {
            refs.push(roman(", "));
        }
        first = false;
        refs.push(bold(page_name(sub)));
        refs.push(roman("(1)"));
    }
    roff.text(refs);
}

/// A tagged paragraph: `name` in bold, then its description.
fn item(roff: &mut Roff, name: &str, text: &str) {
    roff.control("TP", [] as [&str; 0])
        .text([bold(name)])
        .text([roman(text)]);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn man_text(words: &[&str]) -> String {
        let args = ManArgs {
            command: words.iter().map(|w| (*w).to_owned()).collect(),
            out_dir: None,
        };
        let mut out = Vec::new();
        man(&args, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_top_page_has_the_daemon_sections() {
        let page = man_text(&[]);
        assert!(page.contains(".TH ESPMAIL 1"), "{page}");
        for section in [
            "NAME",
            "SYNOPSIS",
            "SUBCOMMANDS",
            "ENVIRONMENT",
            "FILES",
            "SIGNALS",
            "EXIT STATUS",
            "SEE ALSO",
        ] {
            let heading = |l: &str| l.starts_with(".SH ") && l.trim_matches('"').ends_with(section);
            assert!(page.lines().any(heading), "{section}: {page}");
        }
        for var in [
            "ESPMAIL_CONFIG",
            "ESPMAIL_DATA_DIR",
            "ESPMAIL_LISTEN",
            "ESPMAIL_PASSWORD",
            "RUST_LOG",
            "NOTIFY_SOCKET",
        ] {
            assert!(page.contains(var), "{var} missing");
        }
    }

    #[test]
    fn a_subcommand_page_and_an_unknown_one() {
        let page = man_text(&["account", "add"]);
        assert!(page.contains(".TH ESPMAIL-ACCOUNT-ADD 1"), "{page}");
        let args = ManArgs {
            command: vec!["acount".into()],
            out_dir: None,
        };
        let err = man(&args, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("`espmail acount`"), "{err}");
    }

    #[test]
    fn out_dir_gets_a_page_per_command() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_pages(dir.path()).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names[0], "espmail.1");
        for name in [
            "espmail-serve.1",
            "espmail-account-add.1",
            "espmail-quarantine-drop.1",
            "espmail-completions.1",
            "espmail-man.1",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("help")), "{names:?}");
    }

    #[test]
    fn a_failing_output_is_an_error_not_a_panic() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        assert!(matches!(
            completions(Shell::Bash, &mut Closed),
            Err(DocsError::Output(_))
        ));
    }
}
