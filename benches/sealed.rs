//! Sealed mailboxes' cryptography (issue 13): what sealing one message to a public half
//! adds over today's keyfile-only message key, what opening it adds, and what wrapping and
//! unwrapping a private half costs (once per registration and per login).
//!
//! `cargo bench --bench sealed` (BENCHMARKS.md, "Sealed mailboxes: the primitives").

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use espmail::espmail::crypto::message_key;
use espmail::espmail::keyfile::Secret;
use espmail::espmail::sealed::{open_with, seal_to, unwrap, wrap, MailboxKeys, PasswordKeys};

fn primitives(c: &mut Criterion) {
    let secret = Secret::from_bytes([5; 32]);
    let bob = MailboxKeys::generate().unwrap();
    let mut g = c.benchmark_group("sealed");
    g.bench_function("keyfile message key (today, per message)", |b| {
        b.iter(|| message_key(&secret, black_box(&[1; 32])).unwrap())
    });
    let mk = message_key(&secret, &[1; 32]).unwrap();
    g.bench_function("seal_to a public half (added per sealed message)", |b| {
        b.iter(|| seal_to(black_box(bob.public()), &mk).unwrap())
    });
    let (_, eph) = seal_to(bob.public(), &mk).unwrap();
    g.bench_function(
        "open_with the private half (added per delivered message)",
        |b| b.iter(|| open_with(&bob, black_box(&eph), &mk).unwrap()),
    );
    let pw = PasswordKeys::from_scrypt(&[9; 32]).unwrap();
    let wrapped = wrap(&bob, &pw, "bob", &[7; 32], b"row").unwrap();
    g.bench_function(
        "unwrap a private half (per login, after its one scrypt)",
        |b| b.iter(|| unwrap(black_box(&wrapped), &pw, "bob", &[7; 32], b"row").unwrap()),
    );
    g.finish();
}

criterion_group!(benches, primitives);
criterion_main!(benches);
