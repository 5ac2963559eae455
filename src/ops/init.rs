//! `espmail init`: a fresh data directory, keyfile and database (or, run again on a
//! complete setup, "already set up" and nothing changed)
//! ([`VaultPaths::create`](crate::espmail::open::VaultPaths::create)), and the words the
//! operator must read: back up the keyfile, apart from the database.
//!
//! `espmail init --tls HOSTNAME` ([`tls`]) also makes a self-signed certificate and key
//! for the TLS listener and prints the fingerprint players pin.
//!
//! May touch: the data directory, the keyfile and the database (all created through the
//! vault's start-up path); with `--tls`, the certificate and key files (never replaced).

use std::io::Write;

use super::{load_config, mail_limits, vault_paths, OpsError};
use crate::cli::DataArgs;

/// `espmail init`: the data directory (0700), a new keyfile (0600) and the database with
/// its mail and account tables. On a complete setup (a keyfile that opens the database)
/// it says so and succeeds, changing nothing. Otherwise it refuses to overwrite a keyfile,
/// and refuses a database that already exists (its keyfile must be restored, not
/// replaced). On failure after the
/// keyfile was made, the new (still unused) keyfile and database are removed again, so
/// `init` can simply be run again.
pub fn init(args: &DataArgs, out: &mut dyn Write, note: &mut dyn Write) -> Result<(), OpsError> {
    let config = load_config(args)?;
    let paths = vault_paths(&config);
    if std::fs::symlink_metadata(&paths.keyfile).is_ok() && paths.database.exists() {
        // A complete setup: done already, unless its keyfile does not open its database
        // (then the vault's refusal says what is wrong). Install scripts and configuration
        // management may run `init` on every run, so this is success, not an error.
        drop(paths.open(&mail_limits(&config))?);
        writeln!(
            out,
            "already set up: the keyfile {} opens the database {}; nothing was changed",
            paths.keyfile.display(),
            paths.database.display()
        )?;
        return Ok(());
    }
    let dir_created = paths.create(&mail_limits(&config))?;
    if !dir_created {
        // The same test as serve's warning: an existing directory is left as it is.
        if let Ok(Some(mode)) = crate::private_dir::open_to_others(&paths.dir) {
            writeln!(
                note,
                "espmail: note: the data directory {} has mode {mode:04o}; `chmod 700 {}` \
                 keeps other users away from the database",
                paths.dir.display(),
                paths.dir.display()
            )?;
        }
    }
    writeln!(
        out,
        "created the keyfile {} (mode 0600)",
        paths.keyfile.display()
    )?;
    writeln!(out, "created the database {}", paths.database.display())?;
    writeln!(
        note,
        "espmail: !!! BACK UP THE KEYFILE NOW, and keep the copy apart from the database:\n\
         espmail: !!!   {}\n\
         espmail: !!! Without it, ESP Mail waiting in the database can never be read by \
         anyone: losing it makes waiting mail unreadable.",
        paths.keyfile.display()
    )?;
    if config.data.keyfile_inside_data_dir() {
        writeln!(
            note,
            "espmail: note: the keyfile is inside the data directory, so a copy of that \
             directory holds the key with the mail; consider [data] keyfile = a path outside it"
        )?;
    }
    Ok(())
}

/// How long a certificate made by `init --tls` is valid: players pin it, and a new one means
/// every player must be given the new fingerprint, so it lasts ten years.
const SELF_SIGNED_DAYS: u32 = 3650;

/// `espmail init --tls HOSTNAME`: a self-signed certificate and key for `host` at
/// `[tls] cert` and `key` (default `DATA_DIR/tls/server.crt` and `server.key`; the key
/// 0600, its directory made 0700), then the fingerprint players pin and the `[tls]` lines
/// the config needs. A certificate already there is kept (it may be pinned by players
/// already): its fingerprint is printed, nothing is written.
pub fn tls(args: &DataArgs, host: &str, out: &mut dyn Write) -> Result<(), OpsError> {
    use crate::tls::{
        generate_self_signed, read_certificates, write_new_pair, CertPaths, Fingerprint, PemKind,
    };
    let config = load_config(args)?;
    let dir = config.data.dir.join("tls");
    let paths = CertPaths {
        cert: config
            .tls
            .cert
            .clone()
            .unwrap_or_else(|| dir.join("server.crt")),
        key: config
            .tls
            .key
            .clone()
            .unwrap_or_else(|| dir.join("server.key")),
    };
    let fingerprint = if paths.cert.exists() || paths.key.exists() {
        // Never empty: a file without a certificate is refused by the reader.
        let certs = read_certificates(&paths.cert, PemKind::Certificate)?;
        let fp = match certs.first() {
            Some(leaf) => Fingerprint::of(leaf).map_err(crate::tls::TlsError::from)?,
            None => return Ok(()),
        };
        writeln!(
            out,
            "the TLS certificate {} is already there; it was kept (players may have pinned it)",
            paths.cert.display()
        )?;
        fp
    } else {
        for parent in [paths.cert.parent(), paths.key.parent()]
            .into_iter()
            .flatten()
        {
            crate::private_dir::create(parent).map_err(OpsError::Output)?;
        }
        let made = generate_self_signed(host, SELF_SIGNED_DAYS)?;
        write_new_pair(&paths, &made.cert_pem, &made.key_pem)?;
        writeln!(
            out,
            "created a self-signed TLS certificate for {host}, valid for ten years: {} \
             (key {}, mode 0600)",
            paths.cert.display(),
            paths.key.display()
        )?;
        made.fingerprint
    };
    writeln!(out, "players pin: sha256:{fingerprint}")?;
    writeln!(
        out,
        "  (espmail tunnel {host}:PORT --pin sha256:{fingerprint})\n\
         the config needs:\n\
         [tls]\n\
         listen = \"0.0.0.0:1987\"\n\
         cert = \"{}\"\n\
         key = \"{}\"",
        paths.cert.display(),
        paths.key.display()
    )?;
    Ok(())
}
