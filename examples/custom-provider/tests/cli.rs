//! The example's binary links grantry's providers and this one: `providers` lists them all.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_grantry-example");

fn providers(env: &[(&str, &str)]) -> (bool, String, String) {
    let scratch = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .arg("providers")
        .current_dir(scratch.path())
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run grantry-example");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn line<'a>(stdout: &'a str, id: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .unwrap_or_else(|| panic!("no line for {id} in:\n{stdout}"))
}

#[test]
fn the_example_provider_appears_beside_grantrys_own() {
    let (ok, stdout, stderr) = providers(&[]);
    assert!(ok, "{stderr}");
    assert!(line(&stdout, "example").ends_with("disabled"), "{stdout}");
    assert!(line(&stdout, "atlassian").ends_with("disabled"), "{stdout}");

    let (ok, stdout, _) = providers(&[
        ("ENABLE_EXAMPLE_INTEGRATION", "true"),
        ("EXAMPLE_CLIENT_ID", "id"),
        ("EXAMPLE_CLIENT_SECRET", "do-not-print-me"),
        (
            "EXAMPLE_REDIRECT_URI",
            "http://127.0.0.1:8080/settings/connections",
        ),
        ("EXAMPLE_BASE_URL", "https://tasks.example.com"),
    ]);
    assert!(ok);
    assert!(
        line(&stdout, "example").ends_with("enabled (example)"),
        "{stdout}"
    );
    assert!(!stdout.contains("do-not-print-me"));

    let (ok, stdout, stderr) = providers(&[("ENABLE_EXAMPLE_INTEGRATION", "true")]);
    assert!(!ok);
    assert!(
        line(&stdout, "example").contains("misconfigured"),
        "{stdout}"
    );
    assert!(stderr.contains("EXAMPLE_CLIENT_ID"), "{stderr}");
}

#[test]
fn the_binary_is_grantrys_whole_command_line() {
    let out = Command::new(BIN)
        .arg("keygen")
        .env_clear()
        .output()
        .expect("run grantry-example");
    assert!(out.status.success());
    let key = String::from_utf8_lossy(&out.stdout);
    assert_eq!(key.trim().len(), 44, "base64 of 32 bytes: {key}");

    let (ok, stdout, stderr) = providers(&[
        ("ENABLE_DOCS_MCP_INTEGRATION", "true"),
        ("DOCS_MCP_KIND", "mcp"),
    ]);
    assert!(!ok, "{stdout}");
    assert!(stderr.contains("`docs-mcp` (kind `mcp`)"), "{stderr}");
    assert!(
        stderr.contains("example"),
        "the example is a known kind: {stderr}"
    );
}
