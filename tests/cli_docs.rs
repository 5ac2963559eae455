//! `espmail completions SHELL` and `espmail man`, from the real binary: every shell gets a
//! script naming every subcommand, and the shells that are installed parse it (`bash -n`
//! always; `zsh -n` and `fish --no-execute` where present); the manual page is roff that
//! names every subcommand's page, and groff reads it without a warning where it is present.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::process::{Command, Stdio};

/// Every subcommand name, nested ones included (from the definitions, so a new command
/// is checked without editing this test).
fn all_subcommands() -> Vec<String> {
    use clap::CommandFactory;
    let mut names = Vec::new();
    let root = espmail::cli::Cli::command();
    let mut stack: Vec<&clap::Command> = root.get_subcommands().collect();
    while let Some(cmd) = stack.pop() {
        names.push(cmd.get_name().to_owned());
        stack.extend(cmd.get_subcommands());
    }
    assert!(names.len() > 15, "{names:?}");
    names
}

fn espmail(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_espmail"))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    assert!(out.stderr.is_empty(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Whether `program` can be run here.
fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `program ARGS` with `input` on stdin; returns (success, stderr).
fn check_with(program: &str, args: &[&str], input: &str) -> (bool, String) {
    let out = common::run_with_stdin(Command::new(program).args(args), input);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_shell_gets_a_script_naming_every_subcommand() {
    let names = all_subcommands();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = espmail(&["completions", shell]);
        assert!(script.len() > 1000, "{shell}: {} bytes", script.len());
        for name in &names {
            assert!(script.contains(name.as_str()), "{shell}: no {name}");
        }
        // Options of subcommands are completed too (fish writes `-l data-dir`).
        for flag in ["data-dir", "listen", "older-than", "retire-old"] {
            assert!(script.contains(flag), "{shell}: no {flag}");
        }
    }
}

#[test]
fn the_installed_shells_parse_their_scripts() {
    let bash = espmail(&["completions", "bash"]);
    let (ok, err) = check_with("bash", &["-n"], &bash);
    assert!(ok, "bash -n: {err}");
    // A script with a syntax error is caught, so the check above means something.
    let (ok, _) = check_with("bash", &["-n"], &format!("{bash}\nif then fi\n"));
    assert!(!ok, "bash -n accepted a broken script");

    let mut checked = vec!["bash"];
    if installed("zsh") {
        let (ok, err) = check_with("zsh", &["-n"], &espmail(&["completions", "zsh"]));
        assert!(ok, "zsh -n: {err}");
        checked.push("zsh");
    }
    if installed("fish") {
        let (ok, err) = check_with(
            "fish",
            &["--no-execute"],
            &espmail(&["completions", "fish"]),
        );
        assert!(ok, "fish --no-execute: {err}");
        checked.push("fish");
    }
    eprintln!("completion scripts parsed by: {}", checked.join(", "));
}

#[test]
fn the_man_page_is_roff_naming_every_command() {
    let page = espmail(&["man"]);
    assert!(page.contains(".TH ESPMAIL 1"), "{page}");
    assert!(page.contains(".SH SYNOPSIS"), "{page}");
    let root = {
        use clap::CommandFactory;
        espmail::cli::Cli::command()
    };
    for sub in root.get_subcommands() {
        // roff escapes the dash: espmail\-rotate\-key(1)
        let name = format!("espmail-{}(1)", sub.get_name()).replace('-', "\\-");
        assert!(page.contains(&name), "{name} not on the page");
    }
    let serve = espmail(&["man", "serve"]);
    assert!(serve.contains(".TH ESPMAIL-SERVE 1"), "{serve}");
    for flag in ["listen", "data\\-dir", "debug", "quiet"] {
        assert!(
            serve.contains(&format!("\\-\\-{flag}")),
            "--{flag}: {serve}"
        );
    }
    if installed("groff") {
        for text in [&page, &serve] {
            let (ok, err) = check_with("groff", &["-man", "-Tutf8", "-ww", "-z"], text);
            assert!(ok && err.is_empty(), "groff: {err}");
        }
    }
}

#[test]
fn man_out_dir_writes_every_page_and_an_unknown_command_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("man1");
    let listed = espmail(&["man", "--out-dir", dir.to_str().unwrap()]);
    let files: Vec<&str> = listed.lines().collect();
    assert!(files.len() > 15, "{listed}");
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(text.contains(".SH NAME"), "{f}");
    }
    assert!(dir.join("espmail-rotate-key.1").is_file());

    let out = Command::new(env!("CARGO_BIN_EXE_espmail"))
        .args(["man", "frobnicate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("espmail: there is no command `espmail frobnicate`"),
        "{err}"
    );
}
