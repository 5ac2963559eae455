//! Config errors in words: what serde and toml report ("invalid type: string, expected
//! usize") becomes what an operator can act on ("must be a whole number from 0 to …, not
//! \"ninety\""), with an example for addresses.
//!
//! May touch: nothing (pure string work).

use std::path::Path;

use super::sections::NET_EXPECTED;
use super::ConfigError;

/// Turns toml's multi-line error into one line naming the file, line, column and table,
/// with serde's wording put into words an operator reads (see [`in_words`]). `key` is the
/// dotted path of the value that failed (`mail.retention_days`), empty at the top.
pub(super) fn parse_error(text: &str, path: &Path, key: &str, e: &toml::de::Error) -> ConfigError {
    let offset = e.span().map_or(0, |r| r.start).min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    let section = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && !l.starts_with("[["))
        .and_then(|l| l.strip_prefix('['))
        .and_then(|l| l.split(']').next())
        .map(|s| s.trim().to_owned())
        // The error may point inside the header itself (`[mial]`): no table yet.
        .filter(|s| !s.is_empty());
    ConfigError::Parse {
        path: path.to_owned(),
        line,
        column,
        message: in_words(e.message().trim(), key, section.as_deref()),
        section,
    }
}

/// What `listen` must look like (serde says "socket address").
const LISTEN_WORDS: &str = "an IP address and port, such as 127.0.0.1:1986 or [::]:1986 \
                            (host names are not accepted)";

/// What each of `trusted_peers` must look like (serde says "IP address").
const PEER_WORDS: &str = "an IP address in quotes, such as \"127.0.0.1\" or \"::1\" \
                          (host names are not accepted)";

/// What each entry of an address list must look like ([`AddrRange`]).
const NET_WORDS: &str = "an IP address or network in quotes, such as \"10.0.0.5\", \
                         \"10.0.0.0/8\" or \"::1\" (host names are not accepted)";

/// serde's messages name Rust types ("expected u32", "expected socket address") and use
/// Rust words ("variant", "field"); an operator editing a TOML file should read what the
/// value must be, in words: "retention_days must be a whole number from 0 to 4294967295,
/// not \"ninety\"". Messages of other shapes (TOML syntax errors) pass through.
fn in_words(message: &str, key: &str, section: Option<&str>) -> String {
    // The key as the operator wrote it: the section is named separately ("in [mail]").
    let name = match key.rsplit_once('.') {
        Some((_, last)) => last,
        None if key.is_empty() || key == "?" => "this value",
        None => key,
    };
    match message {
        "invalid socket address syntax" => return format!("{name} must be {LISTEN_WORDS}"),
        "invalid IP address syntax" => return format!("{name} must be {PEER_WORDS}"),
        // toml's words for a non-string where a choice of words (an enum) belongs.
        "wanted string or table" => {
            let choices = match name {
                "mode" => "\"password\" or \"trusted\"",
                _ => "one of the words config/espmail.toml lists for it, in quotes",
            };
            return format!("{name} must be {choices}");
        }
        _ => {}
    }
    let kinds = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))
        .and_then(|rest| rest.rsplit_once(", expected "));
    if let Some((found, expected)) = kinds {
        return format!(
            "{name} must be {}, not {}",
            expected_in_words(expected),
            found_in_words(found)
        );
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        if let Some((found, allowed)) = rest.split_once(", expected ") {
            let allowed = allowed.strip_prefix("one of ").unwrap_or(allowed);
            return format!("{name} must be {allowed}, not {found}");
        }
    }
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let (found, allowed) = rest.split_once(", expected ").unwrap_or((rest, ""));
        let allowed = allowed.strip_prefix("one of ").unwrap_or(allowed);
        // The path ends in the unknown key itself: a top-level one is a section.
        let table = key.rsplit_once('.').map(|(table, _)| table);
        return match table {
            None => format!("unknown section {found} (the sections are {allowed})"),
            // Already named by the `(in [table])` of the message.
            Some(t) if Some(t) == section => {
                format!("unknown key {found} (the keys allowed here are {allowed})")
            }
            Some(t) => {
                format!("unknown key {found} in [{t}] (the keys allowed there are {allowed})")
            }
        };
    }
    message.to_owned()
}

/// serde's name for what was expected, in words.
fn expected_in_words(expected: &str) -> String {
    let words = match expected {
        "u8" => "a whole number from 0 to 255",
        "u16" => "a whole number from 0 to 65535",
        "u32" => "a whole number from 0 to 4294967295",
        // TOML integers stop at 2^63-1, so only negative numbers can miss these.
        "u64" | "u128" | "usize" => "a whole number, 0 or more",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
        "a boolean" => "true or false",
        "a string" => "text in quotes",
        "path string" => "a path in quotes",
        "a sequence" => "a list in brackets, such as [\"127.0.0.1\"]",
        "socket address" => LISTEN_WORDS,
        "IP address" => PEER_WORDS,
        NET_EXPECTED => NET_WORDS,
        "enum AuthMode" => "\"password\" or \"trusted\"",
        other if other.starts_with("struct ") => "a section (a table)",
        other => other,
    };
    words.to_owned()
}

/// serde's description of the value found, in words.
fn found_in_words(found: &str) -> String {
    let quoted = |kind: &str| {
        found
            .strip_prefix(kind)
            .and_then(|v| v.strip_prefix(" `"))
            .and_then(|v| v.strip_suffix('`'))
            .map(str::to_owned)
    };
    if let Some(v) = quoted("integer")
        .or_else(|| quoted("floating point"))
        .or_else(|| quoted("boolean"))
    {
        return v;
    }
    if let Some(text) = found.strip_prefix("string ") {
        return text.to_owned();
    }
    match found {
        "sequence" => "a list".to_owned(),
        "map" => "a table".to_owned(),
        other => other.to_owned(),
    }
}
