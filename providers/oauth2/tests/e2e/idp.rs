//! The real OpenID provider: npm `oidc-provider`, pinned in `tests/oidc/package.json` and
//! installed by `npm ci` into `tests/oidc/node_modules` on first use, started per test by
//! `tests/oidc/server.mjs` on a free loopback port. Without node and npm the tests fail.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};

/// The confidential client that authenticates with `client_secret_post`.
pub(crate) const POST_CLIENT: (&str, &str) = ("grantry-post", "post-client-secret-0123456789");
/// The confidential client that authenticates with `client_secret_basic` (a secret that needs
/// form-encoding before the Basic encoding).
pub(crate) const BASIC_CLIENT: (&str, &str) = ("grantry-basic", "basic secret: a&b=c+d/e%f");
/// The callback both clients registered.
pub(crate) const REDIRECT: &str = "http://localhost:3000/settings/connections";

static INSTALLED: Mutex<bool> = Mutex::new(false);

fn oidc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

fn require_tool(name: &str) {
    let found = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "`{name}` is not on PATH: the grantry-oauth2 tests run a real OpenID provider \
         (npm oidc-provider) and need Node.js 20 or later with npm; install them and run again"
    );
}

fn pinned_version(dir: &Path) -> String {
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(dir.join("package.json")).expect("tests/oidc/package.json"),
    )
    .expect("package.json is JSON");
    manifest["dependencies"]["oidc-provider"]
        .as_str()
        .expect("package.json pins oidc-provider")
        .to_owned()
}

fn installed_version(dir: &Path) -> Option<String> {
    let text = std::fs::read(dir.join("node_modules/oidc-provider/package.json")).ok()?;
    let manifest: Value = serde_json::from_slice(&text).ok()?;
    manifest["version"].as_str().map(str::to_owned)
}

/// Installs the pinned oidc-provider once: `npm ci` in a staging folder, then an atomic rename,
/// so parallel tests and parallel test runs never see a half-written node_modules.
fn ensure_installed() {
    let mut done = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
    if *done {
        return;
    }
    require_tool("node");
    require_tool("npm");
    let dir = oidc_dir();
    let pinned = pinned_version(&dir);
    if installed_version(&dir).as_deref() != Some(pinned.as_str()) {
        let staging = tempfile::Builder::new()
            .prefix(".install-")
            .tempdir_in(&dir)
            .expect("staging folder");
        for file in ["package.json", "package-lock.json"] {
            std::fs::copy(dir.join(file), staging.path().join(file)).expect("copy manifest");
        }
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
            .current_dir(staging.path())
            .stdin(Stdio::null())
            .output()
            .expect("run npm ci");
        assert!(
            out.status.success(),
            "npm ci of oidc-provider {pinned} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let target = dir.join("node_modules");
        if installed_version(&dir).is_some() {
            // An outdated install: move it aside first (another run may be replacing it too).
            let _ = std::fs::rename(&target, staging.path().join("old_node_modules"));
        }
        let moved = std::fs::rename(staging.path().join("node_modules"), &target);
        assert!(
            moved.is_ok() || installed_version(&dir).as_deref() == Some(pinned.as_str()),
            "cannot move node_modules into {}: {moved:?}",
            dir.display()
        );
    }
    *done = true;
}

/// A running oidc-provider, killed on drop.
pub(crate) struct Idp {
    /// The issuer, `http://127.0.0.1:PORT`.
    pub(crate) issuer: String,
    child: Child,
    log: PathBuf,
    _log_dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Idp {
    /// Installs (once) and starts oidc-provider with the two clients (two-minute access tokens).
    pub(crate) fn start() -> Self {
        Self::start_with_ttl(120)
    }

    /// Like [`Idp::start`], with access tokens that live `ttl_secs` seconds.
    pub(crate) fn start_with_ttl(ttl_secs: u64) -> Self {
        ensure_installed();
        let client = |(id, secret): (&str, &str), method: &str| {
            json!({
                "client_id": id,
                "client_secret": secret,
                "redirect_uris": [REDIRECT],
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "token_endpoint_auth_method": method,
            })
        };
        let clients = json!([
            client(POST_CLIENT, "client_secret_post"),
            client(BASIC_CLIENT, "client_secret_basic"),
        ]);
        let log_dir = tempfile::tempdir().expect("log folder");
        let log = log_dir.path().join("idp.log");
        let mut child = Command::new("node")
            .arg("server.mjs")
            .current_dir(oidc_dir())
            .env("IDP_CLIENTS", clients.to_string())
            .env("IDP_ACCESS_TOKEN_TTL", ttl_secs.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start node");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            lines.for_each(drop);
        });
        let first = rx.recv_timeout(Duration::from_secs(30));
        let issuer = match first {
            Ok(Some(Ok(line))) if line.starts_with("listening http://127.0.0.1:") => {
                line["listening ".len()..].trim().to_owned()
            }
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "oidc-provider did not start ({other:?}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        Self {
            issuer,
            child,
            log,
            _log_dir: log_dir,
            http: reqwest::Client::new(),
        }
    }

    /// What the provider wrote to standard error, for failure messages.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether `token` (of the post client) is active, by RFC 7662 introspection.
    pub(crate) async fn active(&self, token: &str) -> bool {
        self.active_as(token, POST_CLIENT, false).await
    }

    /// Whether `token` of `client` is active, introspected as that client (with HTTP Basic when
    /// `basic`; oidc-provider reports other clients' tokens inactive).
    pub(crate) async fn active_as(&self, token: &str, client: (&str, &str), basic: bool) -> bool {
        let url = format!("{}/token/introspection", self.issuer);
        let request = if basic {
            let encode =
                |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
            self.http
                .post(url)
                .basic_auth(encode(client.0), Some(encode(client.1)))
                .form(&[("token", token)])
        } else {
            self.http.post(url).form(&[
                ("token", token),
                ("client_id", client.0),
                ("client_secret", client.1),
            ])
        };
        let answer: Value = request
            .send()
            .await
            .expect("introspection")
            .json()
            .await
            .expect("introspection JSON");
        answer["active"]
            .as_bool()
            .unwrap_or_else(|| panic!("introspection answered {answer}"))
    }

    /// Every token request the provider saw, oldest first.
    pub(crate) async fn token_log(&self) -> Vec<Value> {
        self.http
            .get(format!("{}/__test/token-log", self.issuer))
            .send()
            .await
            .expect("token log")
            .json()
            .await
            .expect("token log JSON")
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Plays the user at the provider: follows the redirects, signs in as `login` and consents on the
/// dev interaction pages; returns the query of the redirect back to [`REDIRECT`].
pub(crate) async fn consent(authorization_url: &str, login: &str) -> BTreeMap<String, String> {
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("browser");
    let mut at = url::Url::parse(authorization_url).expect("authorization URL");
    let mut response = browser.get(at.clone()).send().await.expect("authorize");
    for _ in 0..12 {
        if response.status().is_redirection() {
            let location = response.headers()["location"].to_str().expect("location");
            at = at.join(location).expect("redirect URL");
            if at.as_str().starts_with(REDIRECT) {
                return at.query_pairs().into_owned().collect();
            }
            response = browser.get(at.clone()).send().await.expect("follow");
            continue;
        }
        let status = response.status();
        let page = response.text().await.expect("page");
        assert_eq!(status, 200, "{page}");
        let form: &[(&str, &str)] = if page.contains(r#"name="prompt" value="login""#) {
            &[("prompt", "login"), ("login", login), ("password", "any")]
        } else if page.contains(r#"name="prompt" value="consent""#) {
            &[("prompt", "consent")]
        } else {
            panic!("unexpected page at {at}: {page}");
        };
        response = browser
            .post(at.clone())
            .form(form)
            .send()
            .await
            .expect("submit");
    }
    panic!("the authorization did not come back to {REDIRECT}");
}
