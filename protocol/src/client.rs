//! The client's side of a token request: its credentials, how it authenticates (RFC 6749
//! section 2.3) and how the request body is encoded.

use grantry_core::{ClientSecret, ConfigError, ProviderSettings};
use reqwest::RequestBuilder;
use url::Url;

/// The app registration at the provider: `client_id`, `client_secret`, `redirect_uri`.
#[derive(Debug, Clone)]
pub struct Client {
    /// The client's id.
    pub id: String,
    /// The client's secret; absent for a public client.
    pub secret: Option<ClientSecret>,
    /// The callback registered with the provider.
    pub redirect_uri: Url,
}

impl Client {
    /// Reads `client_id`, `client_secret` and `redirect_uri` from a provider section, in that
    /// order; errors name the variable.
    pub fn from_settings(s: &ProviderSettings) -> Result<Self, ConfigError> {
        Ok(Self {
            id: s.require("client_id")?.to_owned(),
            secret: Some(s.require_secret("client_secret")?),
            redirect_uri: s.url("redirect_uri", None)?,
        })
    }
}

/// How the client authenticates at the token and revocation endpoints (RFC 6749 section 2.3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TokenAuthMethod {
    /// `client_id` and `client_secret` in the request body.
    #[default]
    ClientSecretPost,
    /// HTTP Basic with the form-encoded `client_id` and `client_secret`.
    ClientSecretBasic,
    /// A public client: `client_id` in the body, no secret (use PKCE).
    None,
}

impl TokenAuthMethod {
    /// The registration name of the method.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecretPost => "client_secret_post",
            Self::ClientSecretBasic => "client_secret_basic",
            Self::None => "none",
        }
    }

    /// The method with this registration name, ignoring case.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::ClientSecretPost, Self::ClientSecretBasic, Self::None]
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(text))
    }
}

/// How a token request's parameters travel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BodyEncoding {
    /// `application/x-www-form-urlencoded`, as RFC 6749 says.
    #[default]
    Form,
    /// A JSON object of strings (Atlassian Cloud's token endpoint).
    Json,
}

/// A POST to `url` carrying `params` in `encoding`, authenticated as `client` by `method`.
pub fn post<'a>(
    http: &reqwest::Client,
    url: &Url,
    client: &'a Client,
    method: TokenAuthMethod,
    encoding: BodyEncoding,
    mut params: Vec<(&'a str, &'a str)>,
) -> RequestBuilder {
    let secret = client.secret.as_ref().map(ClientSecret::secret);
    let mut request = http.post(url.clone());
    match method {
        TokenAuthMethod::ClientSecretBasic => {
            // RFC 6749 section 2.3.1: both parts form-encoded before Basic encoding.
            let encode = |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect();
            request = request.basic_auth::<String, String>(encode(&client.id), secret.map(encode));
        }
        TokenAuthMethod::ClientSecretPost => {
            params.push(("client_id", &client.id));
            params.extend(secret.map(|s| ("client_secret", s)));
        }
        TokenAuthMethod::None => params.push(("client_id", &client.id)),
    }
    match encoding {
        BodyEncoding::Form => request.form(&params),
        BodyEncoding::Json => {
            let object: serde_json::Map<String, serde_json::Value> = params
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.into()))
                .collect();
            request.json(&object)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use base64::Engine as _;

    use super::*;

    fn client(secret: Option<&str>) -> Client {
        Client {
            id: "my app:1".into(),
            secret: secret.map(ClientSecret::new),
            redirect_uri: Url::parse("https://app.example/cb").expect("url"),
        }
    }

    fn built(
        method: TokenAuthMethod,
        encoding: BodyEncoding,
        secret: Option<&str>,
    ) -> reqwest::Request {
        let url = Url::parse("https://idp.example/token").expect("url");
        post(
            &reqwest::Client::new(),
            &url,
            &client(secret),
            method,
            encoding,
            vec![("grant_type", "refresh_token")],
        )
        .build()
        .expect("request")
    }

    fn body(request: &reqwest::Request) -> String {
        let bytes = request
            .body()
            .and_then(|b| b.as_bytes())
            .unwrap_or_default();
        String::from_utf8_lossy(bytes).into_owned()
    }

    #[test]
    fn basic_form_encodes_both_parts_before_base64() {
        let request = built(
            TokenAuthMethod::ClientSecretBasic,
            BodyEncoding::Form,
            Some("p@ss word/+"),
        );
        let header = request.headers()["authorization"].to_str().expect("ascii");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(header.trim_start_matches("Basic "))
            .expect("base64");
        assert_eq!(
            String::from_utf8(decoded).expect("utf8"),
            "my+app%3A1:p%40ss+word%2F%2B"
        );
        assert_eq!(body(&request), "grant_type=refresh_token");
    }

    #[test]
    fn post_and_none_put_the_client_in_the_body() {
        let request = built(
            TokenAuthMethod::ClientSecretPost,
            BodyEncoding::Form,
            Some("s"),
        );
        assert!(request.headers().get("authorization").is_none());
        let form: BTreeMap<String, String> = url::form_urlencoded::parse(body(&request).as_bytes())
            .into_owned()
            .collect();
        assert_eq!(form["client_id"], "my app:1");
        assert_eq!(form["client_secret"], "s");
        let public = built(TokenAuthMethod::None, BodyEncoding::Form, Some("s"));
        assert_eq!(
            body(&public),
            "grant_type=refresh_token&client_id=my+app%3A1"
        );
    }

    #[test]
    fn json_encoding_sends_an_object_of_strings() {
        let request = built(
            TokenAuthMethod::ClientSecretPost,
            BodyEncoding::Json,
            Some("s"),
        );
        assert_eq!(
            request.headers()["content-type"].to_str().expect("ascii"),
            "application/json"
        );
        let value: serde_json::Value = serde_json::from_str(&body(&request)).expect("json");
        assert_eq!(
            value,
            serde_json::json!({"grant_type": "refresh_token", "client_id": "my app:1", "client_secret": "s"})
        );
    }

    #[test]
    fn auth_methods_parse_by_registration_name() {
        assert_eq!(
            TokenAuthMethod::parse("Client_Secret_Basic"),
            Some(TokenAuthMethod::ClientSecretBasic)
        );
        assert_eq!(TokenAuthMethod::parse("none"), Some(TokenAuthMethod::None));
        assert_eq!(TokenAuthMethod::parse("private_key_jwt"), None);
    }
}
