//! Sealing and opening a token with AES-256-GCM and its associated data.

use criterion::{Criterion, criterion_group, criterion_main};
use grantry_core::keyring::{KeyRing, SealContext, TokenField};
use secrecy::SecretString;
use std::hint::black_box;

fn keyring(c: &mut Criterion) {
    let ring = KeyRing::from_base64(&SecretString::from(KeyRing::generate_key_base64()), None)
        .unwrap_or_else(|e| panic!("key: {e}"));
    let context = SealContext {
        connection_id: "2f1c7d5e-9a44-4c1e-8d0e-3b7a1f2c9e10",
        user_id: "u",
        provider: "atlassian",
        field: TokenField::Access,
    };
    // Atlassian access tokens are JWTs of roughly 1-2 KB.
    let token = "e".repeat(1500);
    let sealed = ring
        .seal(&token, context)
        .unwrap_or_else(|e| panic!("seal: {e}"));
    c.bench_function("seal 1.5 KB token", |b| {
        b.iter(|| ring.seal(black_box(&token), black_box(context)))
    });
    c.bench_function("open 1.5 KB token", |b| {
        b.iter(|| ring.open(black_box(&sealed), black_box(context)))
    });
}

criterion_group!(benches, keyring);
criterion_main!(benches);
