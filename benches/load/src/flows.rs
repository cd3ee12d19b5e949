//! The protocol steps a scenario repeats: what kubelogin and a browser do against lanyard.

use anyhow::{anyhow, bail, Context};
use base64::Engine;
use hyper::header::HeaderValue;
use sha2::Digest;

use crate::http::{Conn, Jar, Reply};

pub const CLIENT_ID: &str = "bench";
pub const CLIENT_SECRET: &str = "bench-secret-0123456789";
/// Nothing listens here: the generator reads the code off the redirect, as kubelogin's
/// loopback listener would.
pub const REDIRECT_URI: &str = "http://127.0.0.1:9/callback";
/// Logins are spread over this many people (`bench<i>@example.com`), each at an address of
/// their own: lanyard counts a password attempt against its account and its address until it
/// is checked, so many simultaneous logins of one person from one address are refused (429).
pub const USERS: usize = 64;
pub const PASSWORD: &str = "correct horse battery staple";

pub struct Client {
    pub auth: HeaderValue,
}

impl Client {
    pub fn new() -> Self {
        Self {
            auth: crate::http::basic_auth(CLIENT_ID, CLIENT_SECRET),
        }
    }
}

/// What a completed login leaves the browser and the client with.
pub struct Session {
    pub jar: Jar,
    pub refresh_token: String,
}

fn random_text() -> String {
    let bytes: [u8; 16] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// An /auth request with PKCE; returns its path and the code verifier.
fn auth_request() -> (String, String) {
    let verifier = format!("{}{}", random_text(), random_text());
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", CLIENT_ID)
        .append_pair("redirect_uri", REDIRECT_URI)
        .append_pair("response_type", "code")
        .append_pair("scope", "openid email groups offline_access")
        .append_pair("state", &random_text())
        .append_pair("nonce", &random_text())
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .finish();
    (format!("/auth?{query}"), verifier)
}

/// The path part of a Location on lanyard's own origin, or None when it leaves for the client.
fn own_path(location: &str) -> Option<String> {
    if location.starts_with(REDIRECT_URI) {
        return None;
    }
    if location.starts_with('/') {
        return Some(location.to_string());
    }
    let url = url::Url::parse(location).ok()?;
    Some(match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    })
}

fn code_of(location: &str) -> anyhow::Result<String> {
    let url = url::Url::parse(location).context("redirect to the client is not a URL")?;
    if let Some((_, e)) = url.query_pairs().find(|(k, _)| k == "error") {
        bail!("authorization failed: {e}");
    }
    url.query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| anyhow!("redirect to the client carries no code"))
}

/// Follows lanyard's redirects from `reply` until it answers with a page (returned with its
/// path) or sends the browser back to the client (the code).
async fn follow(
    conn: &mut Conn,
    jar: &mut Jar,
    mut reply: Reply,
    mut path: String,
) -> anyhow::Result<Result<String, (String, Reply)>> {
    for _ in 0..8 {
        jar.take(&reply);
        match reply.status {
            200 => return Ok(Err((path, reply))),
            302 | 303 => {
                let location = reply
                    .location
                    .clone()
                    .ok_or_else(|| anyhow!("redirect without Location"))?;
                match own_path(&location) {
                    None => return Ok(Ok(code_of(&location)?)),
                    Some(next) => {
                        path = next;
                        reply = conn.get(&path, jar.header()).await?;
                    }
                }
            }
            s => bail!(
                "{path}: unexpected status {s}: {}",
                String::from_utf8_lossy(&reply.body[..reply.body.len().min(200)])
            ),
        }
    }
    bail!("too many redirects")
}

fn hidden_field(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(
        html[start..end]
            .replace("&#x2f;", "/")
            .replace("&amp;", "&"),
    )
}

/// Redeems a code; returns the token response.
pub async fn redeem(
    conn: &mut Conn,
    client: &Client,
    code: &str,
    verifier: &str,
) -> anyhow::Result<serde_json::Value> {
    conn.post_form(
        "/token",
        None,
        Some(&client.auth),
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", verifier),
        ],
    )
    .await?
    .expect(200, "code redemption")?
    .json()
}

/// A whole password login in a new browser: /auth, the login form, the password (argon2id
/// on the server), the redirect back, and the code redeemed for tokens.
pub async fn password_login(
    conn: &mut Conn,
    client: &Client,
    person: usize,
) -> anyhow::Result<Session> {
    let person = person % USERS;
    conn.set_client_address(&format!("198.51.100.{person}"))?;
    let user = format!("bench{person}@example.com");
    let mut jar = Jar::default();
    let (path, verifier) = auth_request();
    let reply = conn.get(&path, None).await?;
    let (form_path, page) = follow(conn, &mut jar, reply, path)
        .await?
        .map(|_| ())
        .err()
        .ok_or_else(|| anyhow!("/auth went back to the client without a login"))?;
    let html = String::from_utf8_lossy(&page.body);
    let csrf = hidden_field(&html, "csrf").ok_or_else(|| anyhow!("login form has no csrf"))?;
    let reply = conn
        .post_form(
            &form_path,
            jar.header(),
            None,
            &[("csrf", &csrf), ("login", &user), ("password", PASSWORD)],
        )
        .await?;
    let code = follow(conn, &mut jar, reply, form_path)
        .await?
        .map_err(|(p, _)| anyhow!("the login ended on a page ({p}), not at the client"))?;
    let tokens = redeem(conn, client, &code, &verifier).await?;
    let refresh_token = tokens["refresh_token"]
        .as_str()
        .ok_or_else(|| anyhow!("no refresh_token in the token response"))?
        .to_string();
    Ok(Session { jar, refresh_token })
}

/// A code for a browser that is already signed in (no password): /auth straight back to
/// the client. Returns the code and its PKCE verifier.
pub async fn code_from_session(conn: &mut Conn, jar: &mut Jar) -> anyhow::Result<(String, String)> {
    let (path, verifier) = auth_request();
    let reply = conn.get(&path, jar.header()).await?;
    let code = follow(conn, jar, reply, path)
        .await?
        .map_err(|(p, _)| anyhow!("a signed-in /auth stopped at a page ({p})"))?;
    Ok((code, verifier))
}

/// One refresh: a new ID token (one RS256 signature) and a rotated refresh token.
pub async fn refresh(
    conn: &mut Conn,
    client: &Client,
    refresh_token: &mut String,
) -> anyhow::Result<()> {
    let tokens = conn
        .post_form(
            "/token",
            None,
            Some(&client.auth),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token.as_str()),
            ],
        )
        .await?
        .expect(200, "refresh")?
        .json()?;
    if tokens["id_token"].as_str().is_none() {
        bail!("refresh answered without an id_token");
    }
    *refresh_token = tokens["refresh_token"]
        .as_str()
        .ok_or_else(|| anyhow!("refresh answered without a refresh_token"))?
        .to_string();
    Ok(())
}

pub async fn client_credentials(conn: &mut Conn, client: &Client) -> anyhow::Result<()> {
    conn.post_form(
        "/token",
        None,
        Some(&client.auth),
        &[("grant_type", "client_credentials"), ("scope", "openid")],
    )
    .await?
    .expect(200, "client_credentials")?;
    Ok(())
}

pub async fn get_ok(conn: &mut Conn, path: &str) -> anyhow::Result<()> {
    conn.get(path, None).await?.expect(200, path)?;
    Ok(())
}
