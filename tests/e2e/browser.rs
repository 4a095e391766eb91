//! The settings page in a real headless Chromium (Debian's `chromium` and `chromium-driver`,
//! which `.ci/browser-deps.sh` installs), driven over WebDriver with fantoccini.
//!
//! The first test runs `grantry demo` as README.md tells a new user to: sign in through
//! `/demo/login`, decline once, connect (clicking Accept on the fake's consent page), see the
//! sites, disconnect, then as the demo admin remove a connection. The second serves the router
//! nested under a prefix, over a fake whose names carry markup, and checks that nothing of it
//! runs. Screenshots go to `target/browser-test/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use grantry_atlassian_fake::{FakeConfig, FakeSite, FakeUser};
use grantry_server::testing::TestDatabase;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use crate::harness::{Harness, fake_config};
use crate::helpers::{Scratch, free_port};

const CHROMIUM: &str = "/usr/bin/chromium";
const WAIT: Duration = Duration::from_secs(30);

fn missing_browser(what: &str) -> ! {
    panic!(
        "the browser test needs {what}: install Debian's chromium and chromium-driver with \
         `bash .ci/browser-deps.sh` (as root), then run the test again"
    )
}

/// Installs Chromium and chromedriver with `.ci/browser-deps.sh` once, when either is missing,
/// so that `cargo test --workspace` sets up what it needs (as the oidc-provider tests do).
fn install_browser_once() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        if Path::new(CHROMIUM).is_file() && find_chromedriver().is_some() {
            return;
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/browser-deps.sh");
        eprintln!("installing Chromium for the browser test: bash {script}");
        let status = std::process::Command::new("bash").arg(script).status();
        if !status.as_ref().is_ok_and(|s| s.success()) {
            eprintln!("`bash {script}` failed: {status:?}");
        }
    });
}

fn find_chromedriver() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("chromedriver"))
        .find(|p| p.is_file())
}

/// `chromedriver` on PATH (Debian's chromium-driver puts it in /usr/bin).
fn chromedriver() -> PathBuf {
    install_browser_once();
    if !Path::new(CHROMIUM).is_file() {
        missing_browser(&format!("Chromium at {CHROMIUM}"));
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("chromedriver"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| missing_browser("chromedriver on PATH"))
}

/// Where the screenshots go: `target/browser-test/`.
fn output_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.parent().unwrap_or(tmp).join("browser-test");
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    dir
}

/// A child process killed on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// chromedriver and a WebDriver session of a fresh headless Chromium profile.
struct Browser {
    client: Client,
    _driver: Process,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Self {
        let driver_bin = chromedriver();
        let port = free_port();
        let driver = Process(
            Command::new(&driver_bin)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| missing_browser(&format!("a working chromedriver ({e})"))),
        );
        let webdriver = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(r) = http.get(format!("{webdriver}/status")).send().await
                && let Ok(status) = r.json::<Value>().await
                && status["value"]["ready"] == true
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer on port {port}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().expect("profile folder");
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-dev-shm-usage",
                    "--window-size=1280,1100",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("an object literal")
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&webdriver)
            .await
            .unwrap_or_else(|e| {
                missing_browser(&format!("a Chromium that chromedriver can start ({e})"))
            });
        Self {
            client,
            _driver: driver,
            _profile: profile,
        }
    }

    /// Runs `steps` with the client, then always ends the session (a failing step included).
    async fn run<F, Fut>(self, steps: F)
    where
        F: FnOnce(Page) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let page = Page {
            client: self.client.clone(),
        };
        let outcome = tokio::spawn(steps(page)).await;
        let _ = self.client.clone().close().await;
        drop(self);
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

/// The steps' view of the browser.
#[derive(Clone)]
struct Page {
    client: Client,
}

impl Page {
    async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    /// The element `css` selects, looked for again until [`WAIT`] has passed: a page still
    /// loading answers "no such element", one being navigated away "aborted by navigation".
    async fn wait(&self, css: &str) -> Element {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.client.find(Locator::Css(css)).await {
                Ok(element) => return element,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    let url = self.client.current_url().await.map(|u| u.to_string());
                    let body = self.text("body").await;
                    panic!("no `{css}` on {url:?} ({e}); the page says:\n{body}")
                }
            }
        }
    }

    async fn click(&self, css: &str) {
        self.wait(css).await.click().await.expect("click");
    }

    async fn text(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .map(|v| v.len())
            .unwrap_or(0)
    }

    async fn script(&self, js: &str) -> Value {
        self.client.execute(js, vec![]).await.expect("script")
    }

    async fn url(&self) -> String {
        self.client.current_url().await.expect("url").to_string()
    }

    /// Waits until the page has loaded everything it asks the API for.
    async fn ready(&self) {
        self.wait("body[data-ready='true']").await;
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let path = output_dir().join(name);
        std::fs::write(&path, png).expect("write screenshot");
        eprintln!("screenshot: {}", path.display());
    }
}

/// `grantry demo` on a free port, with output in files; killed on drop.
struct Demo {
    base: String,
    _process: Process,
    scratch: Scratch,
}

impl Demo {
    async fn start() -> Self {
        let port = free_port();
        // Real-looking Atlassian settings in the environment: the demo must ignore them.
        let scratch = Scratch::new()
            .with("GRANTRY_BIND", &format!("127.0.0.1:{port}"))
            .with("ENABLE_ATLASSIAN_INTEGRATION", "true")
            .with("ATLASSIAN_CLIENT_ID", "real-client-id")
            .with("ATLASSIAN_CLIENT_SECRET", "a-real-looking-secret")
            .with("ATLASSIAN_AUTH_URL", "https://auth.atlassian.com");
        let stdout = std::fs::File::create(scratch.path().join("demo.out")).expect("file");
        let stderr = std::fs::File::create(scratch.path().join("demo.err")).expect("file");
        let mut process = Process(
            scratch
                .command(&["demo"])
                .stdout(Stdio::from(stdout))
                .stderr(Stdio::from(stderr))
                .spawn()
                .expect("spawn grantry demo"),
        );
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(r) = http.get(format!("{base}/readyz")).send().await
                && r.status() == 200
            {
                break;
            }
            if let Ok(Some(status)) = process.0.try_wait() {
                panic!(
                    "grantry demo exited with {status}: {}",
                    std::fs::read_to_string(scratch.path().join("demo.err")).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "grantry demo did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            base,
            _process: process,
            scratch,
        }
    }

    fn printed(&self) -> String {
        std::fs::read_to_string(self.scratch.path().join("demo.out")).unwrap_or_default()
    }
}

const CARD: &str = ".card[data-provider='atlassian']";

/// Clicks Connect (or Reconnect), waits for the fake's consent page and answers it.
async fn consent(page: &Page, accept: bool, shot: Option<&str>) {
    page.click(&format!("{CARD} [data-action='connect']")).await;
    page.wait("form[action='/authorize/decision'] button.accept")
        .await;
    assert!(
        page.text("body").await.contains("Ada Lovelace"),
        "the fake's consent page"
    );
    if let Some(name) = shot {
        page.screenshot(name).await;
    }
    let button = if accept { "accept" } else { "decline" };
    page.click(&format!("button.{button}")).await;
}

#[tokio::test]
async fn settings_page_connects_and_disconnects_in_chromium() {
    chromedriver();
    let demo = Demo::start().await;
    let printed = demo.printed();
    let base = demo.base.clone();
    assert!(
        printed.contains(&format!("{base}/demo/login?as=user")),
        "the demo prints the URL to open:\n{printed}"
    );
    let browser = Browser::start().await;
    browser
        .run(move |page| async move {
            let settings = format!("{base}/settings/connections");

            // Without a sign-in the page says where to sign in, and shows no card.
            page.goto(&settings).await;
            page.ready().await;
            let signed_out = page.wait("#signed-out:not([hidden])").await;
            let words = signed_out.text().await.expect("text");
            assert!(words.contains("Sign in through your product"), "{words}");
            assert_eq!(page.count(".card").await, 0);
            page.screenshot("00-signed-out.png").await;

            // The demo's sign-in sets an HttpOnly cookie the page's script cannot read.
            page.goto(&format!("{base}/demo/login?as=user")).await;
            page.ready().await;
            assert_eq!(page.url().await, settings);
            page.wait(&format!("{CARD}[data-state='disconnected']"))
                .await;
            assert_eq!(page.script("return document.cookie").await, json!(""));
            assert_eq!(page.count("#admin:not([hidden])").await, 0, "not an admin");
            assert!(page.text(CARD).await.contains("Connect Atlassian"));
            page.screenshot("01-not-connected.png").await;

            // Declining at the provider comes back as words, and the URL is cleaned.
            consent(&page, false, None).await;
            page.ready().await;
            let error = page.wait("#error:not([hidden])").await;
            let words = error.text().await.expect("text");
            assert!(
                words.contains("You declined the request at Atlassian"),
                "{words}"
            );
            assert_eq!(page.url().await, settings);
            page.wait(&format!("{CARD}[data-state='disconnected']"))
                .await;

            // Connect, accept, land back connected with both sites.
            consent(&page, true, Some("02-consent.png")).await;
            page.ready().await;
            page.wait(&format!("{CARD}[data-state='connected']")).await;
            assert_eq!(page.url().await, settings, "code and state are removed");
            let card = page.text(CARD).await;
            for expected in [
                "Connected",
                "Ada Lovelace (ada@example.com)",
                "Acme",
                "Beta Labs",
                "https://acme.atlassian.net",
                "read:jira-work",
                "offline_access",
                "Access token valid until",
                "Disconnect",
            ] {
                assert!(card.contains(expected), "{expected} in the card:\n{card}");
            }
            assert_eq!(
                page.count(&format!("{CARD} .site")).await,
                2,
                "one entry per site"
            );
            let notice = page.text("#notice").await;
            assert!(
                notice.contains("Atlassian is connected as Ada Lovelace"),
                "{notice}"
            );
            page.screenshot("03-connected.png").await;

            // A reload sends nothing again: still connected, no error.
            page.client.refresh().await.expect("reload");
            page.ready().await;
            page.wait(&format!("{CARD}[data-state='connected']")).await;
            assert_eq!(page.count("#error:not([hidden])").await, 0);

            // Disconnect asks first, then the card resets.
            page.click(&format!("{CARD} [data-action='disconnect']"))
                .await;
            page.click(&format!("{CARD} [data-action='confirm-disconnect']"))
                .await;
            page.wait(&format!("{CARD}[data-state='disconnected']"))
                .await;
            let card = page.text(CARD).await;
            assert!(card.contains("Not connected"), "{card}");
            assert!(card.contains("Connect Atlassian"), "{card}");
            assert!(!card.contains("Beta Labs"), "{card}");
            assert!(
                page.text("#notice")
                    .await
                    .contains("Atlassian is disconnected.")
            );
            page.screenshot("04-disconnected.png").await;

            // Connected again, the demo admin sees it in the second section and removes it.
            consent(&page, true, None).await;
            page.ready().await;
            page.wait(&format!("{CARD}[data-state='connected']")).await;
            page.goto(&format!("{base}/demo/login?as=admin")).await;
            page.ready().await;
            let row =
                "#admin:not([hidden]) [data-admin-provider='atlassian'] tr[data-user='demo-user']";
            page.wait(row).await;
            let text = page.text(row).await;
            assert!(
                text.contains("Ada Lovelace") && text.contains("Acme, Beta Labs"),
                "{text}"
            );
            page.wait(&format!("{CARD}[data-state='disconnected']"))
                .await;
            page.screenshot("05-admin.png").await;
            let remove = format!("{row} [data-action='admin-remove']");
            page.click(&remove).await;
            page.click(&remove).await;
            page.wait("[data-admin-provider='atlassian'] [data-role='empty']")
                .await;
            assert!(page.text("#notice").await.contains("demo-user is removed"));
        })
        .await;
    drop(demo);
}

/// Markup in every name the provider hands over, and links that are not http(s).
fn hostile_fake() -> FakeConfig {
    let mut config = fake_config();
    config.user = FakeUser {
        account_id: "acct-1".into(),
        name: "<b id='injected'>Mallory</b>".into(),
        email: "m@example.com".into(),
    };
    config.sites = vec![FakeSite {
        id: "33333333-3333-4333-8333-333333333333".into(),
        name: "<img id='injected' src=x onerror=\"window.__pwned=1\">Evil & Co".into(),
        url: "javascript:window.__pwned=2".into(),
        scopes: vec!["read:jira-work".into()],
        avatar_url: "javascript:window.__pwned=3".into(),
    }];
    config
}

#[tokio::test]
async fn settings_page_nested_under_a_prefix_shows_markup_as_text() {
    chromedriver();
    let db = TestDatabase::sqlite();
    let harness = Harness::start(&db, hostile_fake(), true).await;
    let user = "<script>window.__pwned=4</script>";
    let connected = harness.connect(user).await;
    assert_eq!(connected["status"], "active", "{connected}");

    // The same state served the way an app embeds it: nested under a prefix.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let nested = format!("http://{}", listener.local_addr().expect("addr"));
    // The embedding app signs its users in by setting the `token` cookie, as a product would.
    let tokens = [
        ("user", harness.token(user, "user")),
        ("admin", harness.token("admin-1", "admin")),
    ];
    let sign_in = axum::routing::get(
        move |axum::extract::Path(who): axum::extract::Path<String>| async move {
            let token = tokens
                .iter()
                .find(|(name, _)| *name == who)
                .map(|(_, t)| t.clone())
                .unwrap_or_default();
            (
                [(
                    axum::http::header::SET_COOKIE,
                    format!("token={token}; HttpOnly; SameSite=Lax; Path=/"),
                )],
                axum::response::Redirect::to("/embedded/settings/connections"),
            )
        },
    );
    let app = axum::Router::new()
        .route("/sign-in/{who}", sign_in)
        .nest("/embedded", grantry_server::router(harness.state.clone()));
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let browser = Browser::start().await;
    browser
        .run(move |page| async move {
            let settings = format!("{nested}/embedded/settings/connections");
            page.goto(&format!("{nested}/sign-in/user")).await;
            assert_eq!(page.url().await, settings);
            page.ready().await;
            page.wait(&format!("{CARD}[data-state='connected']")).await;
            let card = page.text(CARD).await;
            assert!(
                card.contains("<img id='injected' src=x onerror=\"window.__pwned=1\">Evil & Co"),
                "the site name shows as text:\n{card}"
            );
            assert!(card.contains("<b id='injected'>Mallory</b>"), "{card}");
            assert_eq!(
                page.count("#injected").await,
                0,
                "no markup became an element"
            );
            assert_eq!(
                page.count("a[href^='javascript']").await,
                0,
                "no javascript: link"
            );
            assert_eq!(page.count("img[src^='javascript']").await, 0);
            assert_eq!(
                page.count(&format!("{CARD} .site .avatar")).await,
                1,
                "initials stand in for the refused avatar"
            );

            page.goto(&format!("{nested}/sign-in/admin")).await;
            page.ready().await;
            page.wait("#admin:not([hidden]) tr[data-user]").await;
            let table = page.text("#admin").await;
            assert!(
                table.contains("<script>window.__pwned=4</script>"),
                "{table}"
            );
            assert_eq!(
                page.script("return window.__pwned === undefined").await,
                json!(true)
            );
            page.screenshot("06-markup-as-text.png").await;
        })
        .await;
    server.abort();
    drop(harness);
    db.cleanup().await;
}

#[tokio::test]
async fn demo_sign_in_sets_an_http_only_cookie_for_the_page() {
    let demo = Demo::start().await;
    let base = demo.base.clone();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");

    let resp = http
        .get(format!("{base}/demo/login?as=admin"))
        .send()
        .await
        .expect("sign in");
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/settings/connections");
    let cookie = resp.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_owned();
    for part in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(part), "{part} in {cookie}");
    }
    let token = cookie
        .strip_prefix("token=")
        .and_then(|c| c.split(';').next())
        .expect("token cookie")
        .to_owned();

    // The cookie is what the page's API calls authenticate with.
    let providers: Value = http
        .get(format!("{base}/api/v1/providers"))
        .header("cookie", format!("token={token}"))
        .send()
        .await
        .expect("providers")
        .json()
        .await
        .expect("json");
    assert_eq!(providers[0]["id"], "atlassian", "{providers}");
    let admin = http
        .get(format!("{base}/api/v1/atlassian/admin/connections"))
        .header("cookie", format!("token={token}"))
        .send()
        .await
        .expect("admin list");
    assert_eq!(admin.status(), 200, "the demo admin is an admin");

    // Opened under another host name, sign-in moves to the redirect URI's host first, so the
    // cookie comes back with the provider's callback.
    let port = base.rsplit(':').next().expect("port");
    let resp = http
        .get(format!("{base}/demo/login?as=user"))
        .header("host", format!("localhost:{port}"))
        .send()
        .await
        .expect("sign in");
    assert_eq!(resp.status(), 303);
    assert_eq!(
        resp.headers()["location"],
        format!("{base}/demo/login?as=user").as_str()
    );
    assert!(resp.headers().get("set-cookie").is_none());

    // Without a role: a page to choose one. `/` leads there.
    let chooser = http
        .get(format!("{base}/demo/login?as=root"))
        .send()
        .await
        .expect("chooser");
    assert_eq!(chooser.status(), 200);
    assert!(chooser.headers().get("set-cookie").is_none());
    assert!(
        chooser
            .text()
            .await
            .expect("html")
            .contains("/demo/login?as=user")
    );
    let home = http.get(format!("{base}/")).send().await.expect("home");
    assert_eq!(home.headers()["location"], "/demo/login");

    // The page itself is public and carries no data, the token least of all.
    let page = http
        .get(format!("{base}/settings/connections"))
        .header("cookie", format!("token={token}"))
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    assert!(!page.contains(&token));

    let logs = std::fs::read_to_string(demo.scratch.path().join("demo.err")).unwrap_or_default();
    assert!(!logs.contains(&token), "no token in the logs");
    assert!(!logs.contains("a-real-looking-secret"));
}

#[tokio::test]
async fn admin_section_pages_and_its_remove_button_never_breaks_a_word() {
    chromedriver();
    let db = TestDatabase::sqlite();
    let harness = Harness::start(&db, fake_config(), true).await;
    // 120 connections: the page shows 50, then "Show more" twice (50 and 20).
    let (users, _) = crate::admin_pages::seed(&harness, 120).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let token = harness.token("admin-1", "admin");
    let sign_in = axum::routing::get(move || async move {
        (
            [(
                axum::http::header::SET_COOKIE,
                format!("token={token}; HttpOnly; SameSite=Lax; Path=/"),
            )],
            axum::response::Redirect::to("/settings/connections"),
        )
    });
    let app = axum::Router::new()
        .route("/sign-in", sign_in)
        .merge(grantry_server::router(harness.state.clone()));
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let browser = Browser::start().await;
    browser
        .run(move |page| async move {
            const BLOCK: &str = "#admin:not([hidden]) [data-admin-provider='atlassian']";
            let rows = format!("{BLOCK} tbody tr[data-user]");
            let more = format!("{BLOCK} [data-action='admin-more']");
            // A phone-sized window: the table's columns get narrow.
            page.client
                .set_window_size(400, 900)
                .await
                .expect("window size");
            page.goto(&format!("{base}/sign-in")).await;
            page.ready().await;
            page.wait(&rows).await;
            assert_eq!(page.count(&rows).await, 50, "the first page");
            assert!(
                page.text(&format!("{BLOCK} [data-role='shown']"))
                    .await
                    .contains("Showing 50 connections, more below."),
            );

            // Every Remove label sits on one line, also once armed ("Confirm removal").
            let one_line = format!(
                "return Array.from(document.querySelectorAll(\"{BLOCK} [data-action='admin-remove']\"))\
                 .map(function (b) {{ var r = document.createRange(); r.selectNodeContents(b); \
                 return r.getClientRects().length; }}).filter(function (n) {{ return n !== 1; }}).length"
            );
            assert_eq!(page.script(&one_line).await, json!(0), "a label wraps");
            let first = format!("{rows}:first-child [data-action='admin-remove']");
            page.click(&first).await;
            assert_eq!(page.text(&first).await, "Confirm removal");
            assert_eq!(page.script(&one_line).await, json!(0), "the armed label wraps");
            page.screenshot("07-admin-narrow.png").await;

            // Confirming removes that row in place; the rest stay.
            page.click(&first).await;
            page.wait(&format!("{rows}:first-child[data-user='{}']", users[1]))
                .await;
            assert_eq!(page.count(&rows).await, 49);
            assert!(
                page.text("#notice")
                    .await
                    .contains(&format!("{} is removed", users[0]))
            );

            // Show more follows the Link header, which starts after the last user shown: 99,
            // then 119 and no button left.
            page.click(&more).await;
            page.wait(&format!("{rows}:nth-child(99)")).await;
            page.click(&more).await;
            page.wait(&format!("{rows}:nth-child(119)")).await;
            assert_eq!(page.count(&rows).await, 119);
            assert_eq!(page.count(&more).await, 0, "no page after the last");
            assert!(
                page.text(&format!("{BLOCK} [data-role='shown']"))
                    .await
                    .contains("Showing 119 connections.")
            );
            let shown = page
                .script(&format!(
                    "return Array.from(document.querySelectorAll(\"{rows}\"))\
                     .map(function (r) {{ return r.getAttribute('data-user'); }})"
                ))
                .await;
            assert_eq!(shown, json!(users[1..]), "every user once, in order");
            assert_eq!(page.script(&one_line).await, json!(0), "a label wraps");
        })
        .await;
    server.abort();
    drop(harness);
    db.cleanup().await;
}
