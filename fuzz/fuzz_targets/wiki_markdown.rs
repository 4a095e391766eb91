//! Jira wiki markup to Markdown: any text converts, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = grantry_atlassian_markdown::wiki_to_markdown(text, None);
    }
});
