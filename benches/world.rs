//! World layer costs the server's load targets depend on: a password check at the default
//! scrypt parameters (one per password login), live ESP through the registry with 8,000
//! avatars present, and a broadcast to 8,000 outboxes.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion};
use espmail::avatar::{AvatarName, Password};
use espmail::espmail::accounts::{Accounts, AccountsHandle, ScryptParams, ThrottleLimits};
use espmail::espmail::crypto::Keyring;
use espmail::espmail::keyfile::Keyfile;
use espmail::espmail::Limits;
use espmail::world::esp::{EspState, LiveEsp, MailRate, RegistryDirectory};
use espmail::world::Registry;
use tokio::sync::mpsc;

const AVATARS: usize = 8_000;

fn password_check(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let acc = Accounts::open_with(
        &dir.path().join("db"),
        &Keyring::new(&Keyfile::generate().unwrap()).unwrap(),
        &Limits::default(),
        ScryptParams::default(),
    )
    .unwrap();
    let pw = Password::from("correct horse".to_string());
    acc.add("Bob", &pw, SystemTime::now()).unwrap();
    let mut g = c.benchmark_group("password_check");
    g.sample_size(20);
    g.bench_function("verify_right_scrypt_2^14_8_1", |b| {
        b.iter(|| acc.verify("bob", &pw).unwrap())
    });
    let wrong = Password::from("wrong horse".to_string());
    g.bench_function("verify_wrong_password", |b| {
        b.iter(|| acc.verify("bob", &wrong).unwrap_err())
    });
    g.bench_function("verify_unknown_name", |b| {
        b.iter(|| acc.verify("nobody", &pw).unwrap_err())
    });
    // Logins in parallel through the handle, 2 hashing slots (the core count).
    g.sample_size(10);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let handle = AccountsHandle::new(acc, 2, ThrottleLimits::default()).unwrap();
    g.bench_function("handle_verify_20_concurrent", |b| {
        b.iter(|| {
            rt.block_on(async {
                let tasks: Vec<_> = (0..20)
                    .map(|_| {
                        let h = handle.clone();
                        let pw = pw.clone();
                        tokio::spawn(async move { h.verify("bob", pw).await.is_ok() })
                    })
                    .collect();
                for t in tasks {
                    assert!(t.await.unwrap());
                }
            })
        })
    });
    g.finish();
}

enum Msg {
    Esp(#[allow(dead_code)] LiveEsp),
    Tick,
}

impl Clone for Msg {
    fn clone(&self) -> Msg {
        Msg::Tick
    }
}

fn registry(c: &mut Criterion) {
    let reg: Arc<Registry<Msg>> = Arc::new(Registry::new());
    let mut members = Vec::new();
    let mut inboxes = Vec::new();
    for i in 0..AVATARS {
        let m = reg.seat();
        let (tx, rx) = mpsc::channel(64);
        m.enter(&AvatarName::parse(&format!("avatar{i}")).unwrap(), tx);
        members.push(m);
        inboxes.push(rx);
    }
    let dir = RegistryDirectory::new(&reg, Msg::Esp);
    let rate = MailRate::default();
    let mut alice = EspState::new(AvatarName::parse("avatar1").unwrap());
    alice.start("avatar7999", None, &dir);
    let mut g = c.benchmark_group("registry_8000_present");
    g.bench_function("live_esp_line", |b| {
        b.iter(|| {
            let out = alice.esp(b"ESP:meet me by the fountain", &dir, &rate, Instant::now());
            assert_eq!(out.len(), 2);
            while inboxes[7999].try_recv().is_ok() {}
        })
    });
    g.bench_function("broadcast", |b| {
        b.iter(|| {
            assert_eq!(reg.broadcast(None, &Msg::Tick), AVATARS);
            for rx in inboxes.iter_mut() {
                while rx.try_recv().is_ok() {}
            }
        })
    });
    g.finish();
}

criterion_group!(benches, password_check, registry);
criterion_main!(benches);
