//! The callback parser: any body gives a validated callback or a 400, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match grantry_core::callback::parse(data) {
        Ok(callback) => assert!(!callback.state.secret().is_empty()),
        Err(e) => assert_eq!(e.status.as_u16(), 400),
    }
});
