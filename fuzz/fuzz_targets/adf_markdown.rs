//! Atlassian Document Format to Markdown: any JSON converts, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(doc) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = grantry_atlassian_markdown::adf_to_markdown(&doc);
        let _ = grantry_atlassian_markdown::adf_to_plain_text(&doc, 200);
    }
});
