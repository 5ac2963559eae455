//! ESP Mail store throughput, all in one run (issue 3):
//! (a) one transaction + fsync per message, (b) the group-commit writer with 1, 64 and
//! 1,000 concurrent senders, (c) every row in one transaction (the ceiling), plus the
//! encryption cost per message on its own. Every figure includes sealing each message.
//!
//! Run: `cargo bench --bench store` (set `ESPMAIL_BENCH_SCALE=4` for longer runs).
//! The database lives under the target directory (a real disk; /tmp may be tmpfs, where
//! fsync costs nothing).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout
)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use espmail::espmail::crypto::{Keyring, Letter, MailId};
use espmail::espmail::keyfile::{self, Keyfile};
use espmail::espmail::store::{day_of, Store};
use espmail::espmail::{Limits, MailHandle};
use espmail::log_redact::Sensitive;

/// The expiry day the benchmark's rows are sealed for (far in the future).
const EXPIRY: i64 = 99_999;

fn limits() -> Limits {
    Limits {
        max_per_recipient: 1_000_000,
        // One sender ("benchmarker") writes them all: the per-sender cap is not measured.
        max_per_sender: usize::MAX,
        ..Limits::default()
    }
}

fn letter(i: usize) -> Letter {
    Letter {
        sender: "benchmarker".into(),
        recipient: format!("avatar{}", i % 1000),
        sent_secs: 1_764_000_000 + i as u64,
        sent_nanos: 0,
        text: Sensitive::new(
            format!("benchmark message number {i}: {}", "x".repeat(60)).into_bytes(),
        ),
    }
}

fn fresh(name: &str) -> (tempfile::TempDir, std::path::PathBuf, Arc<Keyring>, Keyfile) {
    let dir = tempfile::Builder::new()
        .prefix(name)
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let key = dir.path().join("key");
    let kf = keyfile::create(&key).unwrap();
    let ring = Arc::new(Keyring::new(&kf).unwrap());
    let db = dir.path().join("mail.db");
    (dir, db, ring, kf)
}

fn rate(n: usize, secs: f64) -> f64 {
    n as f64 / secs
}

fn per_txn(db: &Path, ring: &Arc<Keyring>, n: usize) -> f64 {
    let mut store = Store::open(db, Arc::clone(ring), limits()).unwrap();
    let expiry = day_of(SystemTime::now()) + 90;
    let t = Instant::now();
    for i in 0..n {
        let l = letter(i);
        let row = ring.seal(MailId::random().unwrap(), &l, expiry).unwrap();
        let blinds = ring.blinds(&l.recipient).unwrap();
        store.save_one(&row, expiry, &blinds).unwrap();
    }
    rate(n, t.elapsed().as_secs_f64())
}

fn one_txn(db: &Path, ring: &Arc<Keyring>, n: usize) -> f64 {
    let mut store = Store::open(db, Arc::clone(ring), limits()).unwrap();
    let expiry = day_of(SystemTime::now()) + 90;
    let t = Instant::now();
    let rows: Vec<_> = (0..n)
        .map(|i| {
            let l = letter(i);
            let row = ring.seal(MailId::random().unwrap(), &l, expiry).unwrap();
            (row, expiry, ring.blinds(&l.recipient).unwrap())
        })
        .collect();
    store.save_many(&rows).unwrap();
    rate(n, t.elapsed().as_secs_f64())
}

fn group(
    rt: &tokio::runtime::Runtime,
    db: &Path,
    kf: &Keyfile,
    senders: usize,
    each: usize,
) -> f64 {
    let h = MailHandle::with_keyfile(db, kf, limits()).unwrap();
    let r = rt.block_on(async {
        let t = Instant::now();
        let mut tasks = Vec::with_capacity(senders);
        for s in 0..senders {
            let h = h.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..each {
                    let l = letter(s * each + i);
                    h.save(&l.recipient, &l.sender, l.text, SystemTime::now())
                        .await
                        .unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let r = rate(senders * each, t.elapsed().as_secs_f64());
        h.shutdown().await.unwrap();
        r
    });
    r
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too: keep it tiny then.
    let quick = !std::env::args().any(|a| a == "--bench");
    let scale: usize = std::env::var("ESPMAIL_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let scale = if quick { 0 } else { scale };
    let n = |full: usize, tiny: usize| if scale == 0 { tiny } else { full * scale };

    let (_d, _, ring, _) = fresh("enc");
    let enc_n = n(20_000, 50);
    let t = Instant::now();
    for i in 0..enc_n {
        let l = letter(i);
        let _ = ring.seal(MailId::random().unwrap(), &l, EXPIRY).unwrap();
    }
    let enc_us = t.elapsed().as_secs_f64() * 1e6 / enc_n as f64;
    let t = Instant::now();
    let row = ring
        .seal(MailId::random().unwrap(), &letter(0), EXPIRY)
        .unwrap();
    for _ in 0..enc_n {
        let _ = ring.open(&row).unwrap();
    }
    let dec_us = t.elapsed().as_secs_f64() * 1e6 / enc_n as f64;

    let (_d, db, ring_a, _) = fresh("a");
    let a = per_txn(&db, &ring_a, n(300, 5));
    let (_d, db, ring_c, _) = fresh("c");
    let c = one_txn(&db, &ring_c, n(20_000, 20));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut b = Vec::new();
    for (senders, each) in [(1, n(300, 5)), (64, n(50, 2)), (1000, n(20, 1))] {
        let (_d, db, _, kf) = fresh("b");
        b.push((senders, group(&rt, &db, &kf, senders, each)));
    }

    println!("ESP Mail store benchmark (messages per second, sealing included)");
    println!("| case | msgs/s | vs (a) | vs (c) |");
    println!("|---|---:|---:|---:|");
    println!(
        "| (a) one transaction + fsync per message | {a:.0} | 1.0x | {:.1}% |",
        100.0 * a / c
    );
    for (senders, r) in &b {
        println!(
            "| (b) group commit, {senders} concurrent senders | {r:.0} | {:.1}x | {:.1}% |",
            r / a,
            100.0 * r / c
        );
    }
    println!(
        "| (c) all rows in one transaction | {c:.0} | {:.1}x | 100% |",
        c / a
    );
    println!("encryption per message: seal {enc_us:.1} us, open {dec_us:.1} us");
    let b1000 = b.last().map_or(0.0, |x| x.1);
    println!(
        "targets: (b@1000) >= 10x (a): {} ({:.1}x); >= 50% of (c): {} ({:.1}%)",
        if b1000 >= 10.0 * a { "met" } else { "NOT met" },
        b1000 / a,
        if b1000 >= 0.5 * c { "met" } else { "NOT met" },
        100.0 * b1000 / c
    );
}
