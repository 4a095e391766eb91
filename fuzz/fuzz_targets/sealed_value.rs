//! Opening sealed values: any bytes open or fail cleanly, never a panic.
#![no_main]

use std::sync::OnceLock;

use grantry_core::keyring::{KeyRing, SealContext, SealedValue, TokenField};
use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;

fn ring() -> &'static KeyRing {
    static RING: OnceLock<KeyRing> = OnceLock::new();
    RING.get_or_init(|| {
        KeyRing::from_base64(
            &SecretString::from("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".to_owned()),
            None,
        )
        .unwrap_or_else(|e| panic!("fixed key: {e}"))
    })
}

fuzz_target!(|data: &[u8]| {
    let context = SealContext {
        connection_id: "c",
        user_id: "u",
        provider: "p",
        field: TokenField::Access,
    };
    let sealed = SealedValue::from_bytes(data.to_vec());
    let _ = sealed.key_id();
    assert!(ring().open(&sealed, context).is_err(), "forged bytes must never open");
});
