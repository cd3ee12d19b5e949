//! `oauth2:`: the response and grant types offered, the approval screen, and the password
//! grant's connector.

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::connectors::{connector_exists, DeclaredConnector};
use super::path::index_path;
use super::raw::LenientBool;
use super::resolve::Ctx;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuth2Config {
    pub response_types: Vec<ResponseType>,
    /// The grant types the server offers. When the config lists none, Dex's defaults:
    /// authorization_code, refresh_token, device_code, token-exchange, and password when
    /// `password_connector` is set.
    pub grant_types: Vec<GrantType>,
    pub skip_approval_screen: bool,
    pub always_show_login_screen: bool,
    /// The connector id the password grant checks credentials against.
    pub password_connector: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResponseType {
    Code,
    Token,
    IdToken,
}

impl ResponseType {
    pub const ALL: [ResponseType; 3] = [
        ResponseType::Code,
        ResponseType::Token,
        ResponseType::IdToken,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ResponseType::Code => "code",
            ResponseType::Token => "token",
            ResponseType::IdToken => "id_token",
        }
    }

    pub fn parse(s: &str) -> Option<ResponseType> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GrantType {
    AuthorizationCode,
    RefreshToken,
    DeviceCode,
    TokenExchange,
    ClientCredentials,
    Password,
}

impl GrantType {
    pub const ALL: [GrantType; 6] = [
        GrantType::AuthorizationCode,
        GrantType::RefreshToken,
        GrantType::DeviceCode,
        GrantType::TokenExchange,
        GrantType::ClientCredentials,
        GrantType::Password,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GrantType::AuthorizationCode => "authorization_code",
            GrantType::RefreshToken => "refresh_token",
            GrantType::DeviceCode => "urn:ietf:params:oauth:grant-type:device_code",
            GrantType::TokenExchange => "urn:ietf:params:oauth:grant-type:token-exchange",
            GrantType::ClientCredentials => "client_credentials",
            GrantType::Password => "password",
        }
    }

    pub fn parse(s: &str) -> Option<GrantType> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The `grant` label of the token metrics: the wire name, but short for token exchange.
    pub fn metrics_label(self) -> &'static str {
        match self {
            GrantType::TokenExchange => "token_exchange",
            other => other.as_str(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawOAuth2 {
    pub response_types: Option<Vec<String>>,
    pub grant_types: Option<Vec<String>>,
    pub skip_approval_screen: Option<LenientBool>,
    pub always_show_login_screen: Option<LenientBool>,
    pub password_connector: Option<String>,
}

pub(super) fn resolve_oauth2(
    value: Value,
    connectors: &[DeclaredConnector],
    enable_password_db: bool,
    ctx: &mut Ctx,
) -> OAuth2Config {
    let raw: RawOAuth2 = ctx.de(value, "oauth2").unwrap_or_default();

    let password_connector = raw.password_connector.filter(|p| !p.is_empty());
    if let Some(id) = &password_connector {
        match connectors.iter().find(|c| &c.id == id) {
            Some(c) if !c.type_.checks_passwords() => ctx.err(
                "oauth2.passwordConnector",
                format!(
                    "connector `{id}` is of type {}, which cannot check passwords (use a local or ldap connector)",
                    c.type_.as_str()
                ),
            ),
            Some(_) => {}
            None if connector_exists(id, connectors, enable_password_db) => {}
            None => ctx.err(
                "oauth2.passwordConnector",
                format!("no connector has the id `{id}`"),
            ),
        }
    }

    let mut response_types = Vec::new();
    for (i, t) in raw
        .response_types
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let path = index_path("oauth2.responseTypes", i);
        match ResponseType::parse(&t) {
            // RFC 9700 §2.1.2: access and ID tokens issued in the front channel leak through
            // browser history, referrers and injected scripts, and cannot be bound to the
            // client; the code flow with PKCE does what they did, safely.
            Some(ResponseType::Token | ResponseType::IdToken) => ctx.err(
                path,
                format!(
                    "response type `{t}` (the implicit and hybrid flows) is refused, as RFC 9700 \
                     advises: use `code` with PKCE, which every OIDC client library supports"
                ),
            ),
            Some(rt) if !response_types.contains(&rt) => response_types.push(rt),
            Some(_) => {}
            None => ctx.err(
                path,
                format!("unknown response type `{t}`; the one supported is `code`"),
            ),
        }
    }
    if response_types.is_empty() {
        response_types.push(ResponseType::Code);
    }

    let mut grant_types = Vec::new();
    let listed = raw.grant_types.unwrap_or_default();
    for (i, g) in listed.iter().enumerate() {
        let path = index_path("oauth2.grantTypes", i);
        match GrantType::parse(g) {
            Some(GrantType::Password) if password_connector.is_none() => ctx.err(
                path,
                "grant type `password` needs oauth2.passwordConnector (the connector that checks the passwords)",
            ),
            Some(gt) if !grant_types.contains(&gt) => grant_types.push(gt),
            Some(_) => {}
            None if g == "implicit" => ctx.err(
                path,
                "grant type `implicit` is not supported by lanyard; use authorization_code (with PKCE for browser apps)",
            ),
            None => ctx.err(
                path,
                format!(
                    "unknown grant type `{g}`; expected one of {}",
                    GrantType::ALL.map(|g| g.as_str()).join(", ")
                ),
            ),
        }
    }
    if listed.is_empty() {
        grant_types = vec![
            GrantType::AuthorizationCode,
            GrantType::RefreshToken,
            GrantType::DeviceCode,
            GrantType::TokenExchange,
            // Harmless by default: a client must still list it in its own grantTypes.
            GrantType::ClientCredentials,
        ];
        if password_connector.is_some() {
            grant_types.push(GrantType::Password);
        }
    }

    OAuth2Config {
        response_types,
        grant_types,
        skip_approval_screen: raw.skip_approval_screen.is_some_and(|b| b.0),
        always_show_login_screen: raw.always_show_login_screen.is_some_and(|b| b.0),
        password_connector,
    }
}
