//! The settings page: plain HTML, CSS and JS shipped in the binary.
//!
//! `GET /settings/connections` is public HTML that knows no provider and holds no data. Its
//! script discovers the mounted providers through `GET /api/v1/providers`, reads each one's
//! `connection/status`, completes a returning OAuth callback (the page is the redirect URI),
//! and learns whether the user is an admin by trying `admin/connections` (403: not an admin);
//! an admin's lists load a page at a time, following the `Link: rel="next"` header.
//! The API calls are same-origin, so the browser sends the `token` cookie; the API never
//! answers a token to them. The assets live under `/settings/assets/` and are referenced
//! relatively, so the page also works when the router is nested under a prefix.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

/// The page's HTML.
const PAGE: &str = include_str!("connections.html");
/// Its style sheet.
const STYLE: &str = include_str!("connections.css");
/// Its script.
const SCRIPT: &str = include_str!("connections.js");

/// Scripts and styles only from this origin, no inline code; API calls only to this origin;
/// avatars from anywhere over HTTPS; never framed, never a form target.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' https: data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// The routes of the settings page.
pub(crate) fn router() -> Router {
    Router::new()
        .route("/settings/connections", get(page))
        .route("/settings/assets/connections.css", get(style))
        .route("/settings/assets/connections.js", get(script))
}

/// Headers every response of the page carries.
fn headers(content_type: &'static str) -> [(header::HeaderName, &'static str); 6] {
    [
        (header::CONTENT_TYPE, content_type),
        (header::CACHE_CONTROL, "no-cache"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        // The callback URL carries a code: never leak it to avatar hosts through Referer.
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CONTENT_SECURITY_POLICY, CSP),
    ]
}

async fn page() -> impl IntoResponse {
    (headers("text/html; charset=utf-8"), PAGE)
}

async fn style() -> impl IntoResponse {
    (headers("text/css; charset=utf-8"), STYLE)
}

async fn script() -> impl IntoResponse {
    (headers("text/javascript; charset=utf-8"), SCRIPT)
}

#[cfg(test)]
mod tests {
    use axum::body::{Body, to_bytes};
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    async fn get(path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
        let response = router()
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let status = response.status();
        let headers = response.headers().clone();
        let body = to_bytes(response.into_body(), 1 << 20).await.expect("body");
        (
            status,
            headers,
            String::from_utf8(body.to_vec()).expect("utf-8"),
        )
    }

    #[tokio::test]
    async fn page_and_assets_are_served_with_strict_headers() {
        for (path, kind) in [
            ("/settings/connections", "text/html"),
            ("/settings/assets/connections.css", "text/css"),
            ("/settings/assets/connections.js", "text/javascript"),
        ] {
            let (status, headers, body) = get(path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert!(
                headers[header::CONTENT_TYPE]
                    .to_str()
                    .expect("type")
                    .starts_with(kind)
            );
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
            let csp = headers[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .expect("csp");
            assert!(csp.contains("script-src 'self';"), "{csp}");
            assert!(!csp.contains("unsafe"), "{csp}");
            assert!(!body.is_empty());
        }
    }

    #[tokio::test]
    async fn the_page_references_its_assets_relatively_and_inlines_no_code() {
        let (_, _, html) = get("/settings/connections").await;
        assert!(html.contains(r#"href="assets/connections.css""#));
        assert!(html.contains(r#"src="assets/connections.js""#));
        assert!(!html.contains("<style"), "the CSP forbids inline styles");
        assert!(!html.contains(" style="), "the CSP forbids inline styles");
        assert!(!html.contains("<script>"), "the CSP forbids inline scripts");
        assert!(!html.contains("onclick"), "the CSP forbids inline handlers");
    }

    #[tokio::test]
    async fn the_script_names_no_provider_and_writes_no_html() {
        let (_, _, js) = get("/settings/assets/connections.js").await;
        for banned in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!js.contains(banned), "the script uses {banned}");
        }
        assert!(
            !js.to_ascii_lowercase().contains("atlassian"),
            "providers are discovered"
        );
        assert!(js.contains("/providers"));
        assert!(js.contains("history.replaceState"));
    }
}
