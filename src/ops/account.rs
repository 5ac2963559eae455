//! `espmail account add|passwd|list|remove`: the avatar accounts from the operator's side.
//! Names are checked before anything is opened, so a typo costs no password typing; the
//! accounts are opened through the vault's start-up path, which refuses a keyfile that
//! does not match the database.
//!
//! May touch: the database's accounts and, for `remove`, the avatar's waiting mail; the
//! keyfile (read); the password prompts ([`super::passwords`]).

use std::io::Write;
use std::time::SystemTime;

use super::{load_config, mail_limits, vault_paths, OpsError, PasswordSource};
use crate::avatar::{check_new_password, AvatarName, Password};
use crate::cli::AccountArgs;
use crate::cli::AccountOp;
use crate::config::Config;
use crate::espmail::accounts::{AccountError, Accounts, Avatar};
use crate::espmail::offline;
use crate::utc::utc_minute;

/// The accounts of the configured vault, with the configured minimum password length.
fn open_accounts(config: &Config) -> Result<Accounts, OpsError> {
    let vault = vault_paths(config).open(&mail_limits(config))?;
    Ok(vault
        .accounts
        .with_min_password_len(config.auth.min_password_len))
}

fn parse_name(name: &str) -> Result<AvatarName, OpsError> {
    AvatarName::parse(name).map_err(|reason| OpsError::BadName {
        name: name.to_owned(),
        reason,
    })
}

fn new_password(
    config: &Config,
    passwords: &mut dyn PasswordSource,
    prompt: &str,
) -> Result<Password, OpsError> {
    let pw = passwords.read_password(prompt, true)?;
    // The one rule, with the configured minimum (the store checks it again).
    check_new_password(&pw, config.auth.min_password_len).map_err(AccountError::from)?;
    Ok(pw)
}

/// `espmail account add|passwd|list|remove`.
pub fn account(
    args: AccountArgs,
    out: &mut dyn Write,
    note: &mut dyn Write,
    passwords: &mut dyn PasswordSource,
) -> Result<(), OpsError> {
    let config = load_config(&args.data)?;
    // Each arm checks the name before opening anything, so a typo costs no password typing.
    match args.op {
        AccountOp::Add { name } => {
            let name = parse_name(&name)?;
            let accounts = open_accounts(&config)?;
            if accounts.exists(name.display())? {
                return Err(OpsError::NameTaken {
                    name: name.display().to_owned(),
                });
            }
            let pw = new_password(
                &config,
                passwords,
                &format!("New password for {}: ", name.display()),
            )?;
            match accounts.add(name.display(), &pw, SystemTime::now()) {
                Err(AccountError::NameTaken) => {
                    return Err(OpsError::NameTaken {
                        name: name.display().to_owned(),
                    })
                }
                other => other?,
            };
            writeln!(out, "added the avatar {}", name.display())?;
        }
        AccountOp::Passwd { name } => {
            let name = parse_name(&name)?;
            let accounts = open_accounts(&config)?;
            let avatar = lookup(&accounts, &name)?;
            let pw = new_password(
                &config,
                passwords,
                &format!("New password for {}: ", avatar.name.display()),
            )?;
            match accounts.set_password(name.display(), &pw) {
                Err(AccountError::NoSuchAvatar) => {
                    return Err(OpsError::NoSuchAvatar {
                        name: name.display().to_owned(),
                    })
                }
                other => other?,
            };
            writeln!(out, "changed the password of {}", avatar.name.display())?;
        }
        AccountOp::List => {
            let list = open_accounts(&config)?.list()?;
            if list.is_empty() {
                writeln!(
                    note,
                    "no avatars yet (`espmail account add NAME` creates one)"
                )?;
            }
            for info in list {
                let how = if info.has_password {
                    ""
                } else {
                    "  (no password: trusted front end only)"
                };
                writeln!(
                    out,
                    "{}  created {}{how}",
                    info.name.display(),
                    utc_minute(info.created)
                )?;
            }
        }
        AccountOp::Remove { name } => {
            let name = parse_name(&name)?;
            let accounts = open_accounts(&config)?;
            let avatar = lookup(&accounts, &name)?;
            let paths = vault_paths(&config);
            let (db, kp) = (&paths.database, &paths.keyfile);
            let limits = mail_limits(&config);
            // Mail first: an avatar removed with mail still waiting would leave that mail
            // for whoever registers the name next. Again after the removal, for any mail a
            // running server saved in between.
            let mut deleted = offline::delete_all_for(db, kp, &limits, name.key())?;
            accounts.remove(name.display())?;
            deleted += offline::delete_all_for(db, kp, &limits, name.key())?;
            writeln!(
                out,
                "removed the avatar {} and {deleted} waiting ESP Mail",
                avatar.name.display()
            )?;
        }
    }
    Ok(())
}

fn lookup(accounts: &Accounts, name: &AvatarName) -> Result<Avatar, OpsError> {
    accounts
        .lookup(name.display())?
        .ok_or_else(|| OpsError::NoSuchAvatar {
            name: name.display().to_owned(),
        })
}
