//! The token-endpoint answer parser: any status and body give tokens or an error, never a panic.
#![no_main]

use grantry_core::RefreshToken;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (head, body) = data.split_at(data.len().min(2));
    let status = 100 + head.iter().fold(0u16, |acc, b| acc.wrapping_mul(256).wrapping_add(u16::from(*b))) % 500;
    let previous = RefreshToken::new("previous-refresh-token");
    if let Ok(tokens) = grantry_atlassian::parse_token_response(status, body, Some(1), Some(&previous)) {
        assert!(!tokens.access_token.secret().is_empty());
        assert!(tokens.refresh_token.is_some());
    }
});
