//! A really full disk (issue 5): the data directory on a small tmpfs, filled to the last
//! byte by another file, so the database, its WAL and everything else meet ENOSPC. The
//! server must answer "ESP Mail could not be saved. Not sent.", stay up, deliver what it
//! saved before (delivery may not be able to delete while the disk is full: then the mail
//! stays and comes again, never lost), and work normally once space is freed.
//!
//! Mounting needs root (CAP_SYS_ADMIN), which CI may not have, so this test is ignored by
//! default; `tests/durability_disk.rs` covers the same promise everywhere with SQLite's
//! page cap. Run it by hand, as root:
//! `cargo test --test durability_tmpfs -- --ignored --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;
mod durability_support;

use espmail_test_macros::bounded;
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::TestServer;
use durability_support::{enter, integrity_check, offer, read_all, visit, CONFIG};

const SAVED: &str = "ESP Mail for Bob saved.";
const FAILED: &str = "ESP Mail could not be saved. Not sent.";

/// A tmpfs mounted for the test; unmounted (lazily, so a straggling file handle cannot
/// keep it) when dropped.
struct Tmpfs {
    mnt: PathBuf,
}

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount -t tmpfs failed (this test needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            mnt: at.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
    }
}

/// Writes zeros into `path` until the file system says it is full; returns the bytes
/// written. Bounded by the file system's size.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 4096];
    let mut written = 0u64;
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    // Whatever is still buffered cannot fit either.
    let _ = f.sync_all();
    written
}

#[bounded]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root to mount a tmpfs; run with --ignored"]
async fn a_full_file_system_refuses_new_mail_and_keeps_what_it_saved() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(&tmp.path().join("mnt"), "4m");
    let cfg = tmp.path().join("espmail.toml");
    let secret = tmp.path().join("front-end.secret");
    common::write_private(&secret, common::FRONT_END_SECRET);
    std::fs::write(
        &cfg,
        CONFIG.replace("@FRONT_END_SECRET_FILE@", secret.to_str().unwrap()),
    )
    .unwrap();
    let data = fs.mnt.join("data");
    let args = ["--config", cfg.to_str().unwrap()];
    let server = tokio::task::block_in_place(|| TestServer::start_in(&data, &args));
    let host = server.host();
    for name in ["Alice", "Bob"] {
        visit(&host, name).await;
    }

    let mut saved = Vec::new();
    let mut alice = enter(&host, "Alice").await.unwrap();
    for i in 0..3 {
        let text = format!("before-enospc {i} 51d7");
        assert_eq!(offer(&mut alice, "Bob", &text).await.unwrap(), SAVED);
        saved.push(text);
    }
    alice.quit().await.unwrap();
    alice.wait_closed().await.unwrap();

    // Fill the disk to the last byte.
    let filler = fs.mnt.join("filler");
    let filled = fill(&filler);
    assert!(filled > 0);

    // Offers until one is refused (space SQLite already holds, e.g. in its WAL, may take
    // a few more first). A fresh connection per offer: the per-connection line bucket.
    let mut refused = None;
    for i in 0..200 {
        let mut c = enter(&host, "Alice").await.unwrap();
        let text = format!("on-full-disk {i} 0e44");
        let answer = offer(&mut c, "Bob", &text).await.unwrap();
        c.quit().await.unwrap();
        c.wait_closed().await.unwrap();
        match answer.as_str() {
            SAVED => saved.push(text),
            FAILED => {
                refused = Some(text);
                break;
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    let refused = refused.expect("a full file system never refused a save");
    let line = server.wait_for_log("ESP Mail could not be saved");
    assert!(line.contains("full"), "log line without the cause: {line}");

    // Up, and what it saved is there: Bob reads exactly the saved texts. Deleting them
    // may fail on the full disk; then they wait for the next login.
    let got: HashSet<String> = read_all(&host, "Bob")
        .await
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    let want: HashSet<String> = saved.iter().cloned().collect();
    assert_eq!(
        got, want,
        "delivered on a full disk differs from what was saved"
    );
    assert!(!got.contains(&refused));

    // Space again: whatever was not deleted comes once more, nothing new or refused
    // appears, and then the box is empty.
    std::fs::remove_file(&filler).unwrap();
    let again: Vec<String> = read_all(&host, "Bob")
        .await
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    let again_set: HashSet<String> = again.iter().cloned().collect();
    assert_eq!(
        again.len(),
        again_set.len(),
        "a message came twice in one login"
    );
    assert!(again_set.is_subset(&want), "unexpected mail: {again:?}");
    assert!(read_all(&host, "Bob").await.is_empty());

    // And saving works again.
    let mut alice = enter(&host, "Alice").await.unwrap();
    assert_eq!(
        offer(&mut alice, "Bob", "after-space-freed 77aa")
            .await
            .unwrap(),
        SAVED
    );
    alice.quit().await.unwrap();
    alice.wait_closed().await.unwrap();
    assert_eq!(
        read_all(&host, "Bob").await,
        vec![("Alice".to_string(), "after-space-freed 77aa".to_string())]
    );

    let mut server = server;
    server.signal("TERM");
    let status = tokio::task::block_in_place(|| server.wait_exit());
    assert!(status.success(), "server exit: {status:?}");
    assert_eq!(integrity_check(&data.join("espmail.db")), "ok");
    eprintln!(
        "tmpfs full: {} saved ({} after filling {} bytes), refused, {} delivered again after \
         space was freed",
        saved.len(),
        saved.len() - 3,
        filled,
        again.len()
    );
}
