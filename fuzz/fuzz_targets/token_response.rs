//! The token-endpoint answer parser of grantry-protocol: any status and body give tokens or an
//! error, never a panic; tokens only from a 2xx answer, and a refresh answer without a refresh
//! token keeps the previous one.
#![no_main]

use grantry_core::RefreshToken;
use grantry_core::provider::classify_token_error;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (head, body) = data.split_at(data.len().min(2));
    let status = 100 + head.iter().fold(0u16, |acc, b| acc.wrapping_mul(256).wrapping_add(u16::from(*b))) % 500;
    let previous = RefreshToken::new("previous-refresh-token");
    let parsed = grantry_protocol::parse_token_response(status, body, Some(1), Some(&previous), classify_token_error);
    if let Ok(tokens) = parsed {
        assert!((200..300).contains(&status));
        assert!(!tokens.access_token.secret().is_empty());
        assert!(tokens.refresh_token.is_some());
    }
});
