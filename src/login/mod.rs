//! `lanyard login`: a kubectl credential plugin (the `client.authentication.k8s.io/v1` exec
//! protocol) that replaces kubelogin. It prints one ExecCredential with an ID token from the
//! issuer on stdout and nothing else; every message goes to stderr, which kubectl shows.
//!
//! A cached ID token is used until shortly before it expires, then refreshed with the
//! refresh token; without either it logs in, by the authorization code flow with PKCE on a
//! loopback redirect (a browser on this machine) or by the device grant (anywhere else).

pub mod cache;
pub mod client;
pub mod loopback;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::{Clock, UnixTime};
use crate::oidc::pkce;

use base64::Engine as _;
use cache::{Cache, CacheEntry};
use client::{ClientCredentials, ExtraCa, Http, Provider, TokenResponse};
use loopback::Loopback;

pub const DEFAULT_SCOPES: [&str; 5] = ["openid", "email", "profile", "groups", "offline_access"];
/// How long the browser part of an authorization code login may take.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// RFC 8628 §3.5: poll every 5 seconds when the issuer names no interval; `slow_down` adds 5.
const DEFAULT_POLL_INTERVAL: u64 = 5;
const SLOW_DOWN_STEP: u64 = 5;

pub const EXEC_API_VERSION: &str = "client.authentication.k8s.io/v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GrantMode {
    /// The authorization code flow when a browser can be opened here, the device grant otherwise.
    Auto,
    /// Authorization code with PKCE, redirected to a loopback listener.
    Authcode,
    /// The device authorization grant (RFC 8628): open a URL on any device and enter a code.
    Device,
}

/// The flags of `lanyard login`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoginArgs {
    /// The issuer URL (as in kube-apiserver's --oidc-issuer-url).
    #[arg(long)]
    pub issuer: String,
    /// The OAuth client id (kube-apiserver's --oidc-client-id, or a client it trusts).
    #[arg(long)]
    pub client_id: String,
    /// The client secret, for a confidential client.
    #[arg(long)]
    pub client_secret: Option<String>,
    /// A PEM file of the CA that signed the issuer's TLS certificate, trusted besides the
    /// system's CAs (SSL_CERT_FILE, SSL_CERT_DIR) and the public web roots.
    #[arg(long, visible_alias = "ca-file", value_name = "FILE")]
    pub certificate_authority: Option<PathBuf>,
    /// The same as base64 of the PEM, as in a kubeconfig's certificate-authority-data.
    #[arg(long, value_name = "BASE64")]
    pub certificate_authority_data: Option<String>,
    /// A scope to ask for; repeat for several. `openid` is always asked for.
    #[arg(long = "scope", value_name = "SCOPE", default_values = DEFAULT_SCOPES)]
    pub scopes: Vec<String>,
    /// How to log in when there is no usable cached token.
    #[arg(long, value_enum, default_value_t = GrantMode::Auto)]
    pub grant: GrantMode,
    /// The loopback address for the login redirect (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Where tokens are cached [default: $XDG_CACHE_HOME/lanyard or ~/.cache/lanyard].
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Print the login URL on stderr instead of opening a browser.
    #[arg(long)]
    pub no_browser: bool,
    /// A command run with the login URL as its last argument instead of the system's browser
    /// opener (split on whitespace; for tests).
    #[arg(long, hide = true)]
    pub browser_command: Option<String>,
}

/// The kubectl exec protocol's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecCredential {
    pub api_version: String,
    pub kind: String,
    pub status: ExecCredentialStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecCredentialStatus {
    pub token: String,
    /// RFC 3339, from the ID token's `exp`.
    pub expiration_timestamp: String,
}

impl ExecCredential {
    pub fn new(token: &str, expiry: UnixTime) -> Self {
        Self {
            api_version: EXEC_API_VERSION.into(),
            kind: "ExecCredential".into(),
            status: ExecCredentialStatus {
                token: token.to_string(),
                expiration_timestamp: rfc3339(expiry),
            },
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("neither XDG_CACHE_HOME nor HOME is set; pass --cache-dir")]
    NoCacheDir,
    #[error("cannot use the cache directory {}: {detail}", path.display())]
    CacheDir { path: PathBuf, detail: String },
    #[error("cannot use the cache file {}: {detail}", path.display())]
    Cache { path: PathBuf, detail: String },
    #[error("cannot use {origin}: {detail}")]
    CertificateAuthority { origin: String, detail: String },
    #[error("cannot reach the issuer at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("TLS with {url} failed: {detail}; {}", if extra_cas.is_empty() {
        "the certificate was checked against the system's CAs and the public web roots; if it comes from a private CA, add that CA to the system's trust store (or SSL_CERT_FILE), or pass it with --certificate-authority FILE or --certificate-authority-data BASE64".to_string()
    } else {
        format!("the certificate was checked against the system's CAs, the public web roots and {}", extra_cas.join(" and "))
    })]
    Tls {
        url: String,
        detail: String,
        /// Where the CAs given on the command line came from.
        extra_cas: Vec<String>,
    },
    #[error("{url}: {detail}")]
    Http { url: String, detail: String },
    #[error("bad discovery document at {url}: {detail}")]
    Discovery { url: String, detail: String },
    #[error("the issuer refused {during}: {error}{}", if description.is_empty() { String::new() } else { format!(" ({description})") })]
    OAuth {
        during: &'static str,
        error: String,
        description: String,
    },
    #[error("the issuer does not offer the device grant (no device_authorization_endpoint); use --grant authcode")]
    NoDeviceEndpoint,
    #[error("the issuer's answer has no usable ID token: {0}")]
    IdToken(String),
    #[error("the login answer came from issuer {got}, not {expected}")]
    IssuerMismatch { expected: String, got: String },
    #[error("--listen {0} is not a loopback address (use 127.0.0.1:PORT or [::1]:PORT)")]
    NotLoopback(SocketAddr),
    #[error("cannot listen on {addr} for the login redirect: {detail}")]
    Listen { addr: SocketAddr, detail: String },
    #[error("the login was not completed within {} seconds", LOGIN_TIMEOUT.as_secs())]
    LoginTimedOut,
    #[error("the device code expired before the login was completed; run the command again")]
    DeviceCodeExpired,
    #[error("KUBERNETES_EXEC_INFO is not a valid ExecCredential: {0}")]
    ExecInfo(String),
    #[error("{reason}, and kubectl runs this plugin non-interactively (KUBERNETES_EXEC_INFO spec.interactive is false), so no login can be started; run a kubectl command in a terminal to log in")]
    NonInteractive { reason: String },
}

/// What the plugin learns from its surroundings, gathered once so that tests can set it.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    /// `KUBERNETES_EXEC_INFO` as kubectl passed it.
    pub exec_info: Option<String>,
    /// Whether a browser could be opened: macOS, Windows, or DISPLAY/WAYLAND_DISPLAY set.
    pub has_display: bool,
    pub stdin_is_tty: bool,
    pub xdg_cache_home: Option<PathBuf>,
    pub home: Option<PathBuf>,
}

impl Environment {
    pub fn from_process() -> Self {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        Self {
            exec_info: std::env::var("KUBERNETES_EXEC_INFO")
                .ok()
                .filter(|v| !v.is_empty()),
            has_display: cfg!(any(target_os = "macos", windows))
                || var("DISPLAY").is_some()
                || var("WAYLAND_DISPLAY").is_some(),
            stdin_is_tty: std::io::stdin().is_terminal(),
            xdg_cache_home: var("XDG_CACHE_HOME").map(PathBuf::from),
            home: var("HOME").map(PathBuf::from),
        }
    }

    /// `Some(false)` when kubectl said this run may not interact with the person.
    pub fn exec_interactive(&self) -> Result<Option<bool>, LoginError> {
        let Some(raw) = &self.exec_info else {
            return Ok(None);
        };
        let v: serde_json::Value =
            serde_json::from_str(raw).map_err(|e| LoginError::ExecInfo(e.to_string()))?;
        Ok(v.pointer("/spec/interactive")
            .and_then(serde_json::Value::as_bool))
    }
}

/// Which login to run for `--grant`.
pub fn choose_grant(mode: GrantMode, env: &Environment, browser_command: bool) -> GrantMode {
    match mode {
        GrantMode::Auto if browser_command => GrantMode::Authcode,
        GrantMode::Auto if env.has_display && env.stdin_is_tty => GrantMode::Authcode,
        GrantMode::Auto => GrantMode::Device,
        other => other,
    }
}

/// The scopes asked for: as given (space-separated values split), `openid` first if missing.
pub fn effective_scopes(given: &[String]) -> Vec<String> {
    let mut scopes: Vec<String> = Vec::new();
    for s in given.iter().flat_map(|s| s.split_whitespace()) {
        if !scopes.iter().any(|x| x == s) {
            scopes.push(s.to_string());
        }
    }
    if !scopes.iter().any(|s| s == "openid") {
        scopes.insert(0, "openid".into());
    }
    scopes
}

/// Runs the plugin with the process's environment.
pub async fn run(args: &LoginArgs, clock: &dyn Clock) -> Result<ExecCredential, LoginError> {
    run_with(args, clock, &Environment::from_process()).await
}

/// Cache → refresh → login, all under the cache lock. `clock` decides whether the cached
/// token is still fresh.
pub async fn run_with(
    args: &LoginArgs,
    clock: &dyn Clock,
    env: &Environment,
) -> Result<ExecCredential, LoginError> {
    let interactive = env.exec_interactive()? != Some(false);
    if !args.listen.ip().is_loopback() {
        return Err(LoginError::NotLoopback(args.listen));
    }
    let issuer = client::normalize_issuer(&args.issuer);
    let scopes = effective_scopes(&args.scopes);
    let dir = match &args.cache_dir {
        Some(d) => d.clone(),
        None => cache::default_cache_dir(env.xdg_cache_home.as_deref(), env.home.as_deref())?,
    };
    let cache = Cache::new(dir, cache::cache_key(&issuer, &args.client_id, &scopes));
    let lock = cache.lock().await?;
    let cached = lock.read()?;
    if let Some(entry) = &cached {
        if entry.fresh_at(clock.now()) {
            return Ok(ExecCredential::new(&entry.id_token, entry.expiry));
        }
    }
    let refresh_token = cached.as_ref().and_then(|e| e.refresh_token.clone());
    if refresh_token.is_none() && !interactive {
        return Err(LoginError::NonInteractive {
            reason: match cached {
                Some(_) => "the cached ID token has expired and there is no refresh token".into(),
                None => "there is no cached token for this issuer and client".into(),
            },
        });
    }

    let http = Http::new(&extra_cas(args)?)?;
    let provider = client::discover(&http, &issuer).await?;
    let credentials = ClientCredentials {
        id: args.client_id.clone(),
        secret: args.client_secret.clone().filter(|s| !s.is_empty()),
    };

    if let Some(refresh_token) = refresh_token {
        match client::refresh(&http, &provider, &credentials, &refresh_token).await? {
            Ok(tokens) => {
                // Without rotation the issuer sends no new refresh token: keep the old one.
                let entry = to_entry(
                    &provider,
                    &args.client_id,
                    tokens,
                    None,
                    Some(refresh_token),
                )?;
                lock.write(&entry)?;
                return Ok(ExecCredential::new(&entry.id_token, entry.expiry));
            }
            Err(refused) => {
                // The session is gone (revoked, expired, user changed): its token is useless.
                lock.remove()?;
                let err = refused.into_error("the refresh token");
                if !interactive {
                    return Err(LoginError::NonInteractive {
                        reason: format!("the cached session could not be refreshed ({err})"),
                    });
                }
                eprintln!("lanyard: {err}; logging in again");
            }
        }
    }

    let grant = choose_grant(args.grant, env, args.browser_command.is_some());
    let (tokens, nonce) = match grant {
        GrantMode::Device => (
            device_login(&http, &provider, &credentials, &scopes).await?,
            None,
        ),
        _ => {
            let (tokens, nonce) =
                authcode_login(args, &http, &provider, &credentials, &scopes).await?;
            (tokens, Some(nonce))
        }
    };
    let entry = to_entry(&provider, &args.client_id, tokens, nonce.as_deref(), None)?;
    lock.write(&entry)?;
    eprintln!("lanyard: logged in to {}", provider.issuer);
    Ok(ExecCredential::new(&entry.id_token, entry.expiry))
}

/// The CAs given with `--certificate-authority` and `--certificate-authority-data`.
fn extra_cas(args: &LoginArgs) -> Result<Vec<ExtraCa>, LoginError> {
    let mut cas = Vec::new();
    if let Some(path) = &args.certificate_authority {
        let origin = format!("--certificate-authority {}", path.display());
        let pem = std::fs::read(path).map_err(|e| LoginError::CertificateAuthority {
            origin: origin.clone(),
            detail: e.to_string(),
        })?;
        cas.push(ExtraCa { origin, pem });
    }
    if let Some(data) = &args.certificate_authority_data {
        let origin = "--certificate-authority-data".to_string();
        let bad = |detail: &str| LoginError::CertificateAuthority {
            origin: origin.clone(),
            detail: detail.to_string(),
        };
        if data.trim_start().starts_with("-----BEGIN") {
            return Err(bad("expected base64 of the PEM, as in a kubeconfig's certificate-authority-data (for a PEM file use --certificate-authority)"));
        }
        let compact: String = data.chars().filter(|c| !c.is_whitespace()).collect();
        let pem = base64::engine::general_purpose::STANDARD
            .decode(compact.as_bytes())
            .map_err(|_| bad("not base64"))?;
        cas.push(ExtraCa { origin, pem });
    }
    Ok(cas)
}

fn to_entry(
    provider: &Provider,
    client_id: &str,
    tokens: TokenResponse,
    nonce: Option<&str>,
    previous_refresh: Option<String>,
) -> Result<CacheEntry, LoginError> {
    let id_token = tokens
        .id_token
        .ok_or_else(|| LoginError::IdToken("the token response has no id_token".into()))?;
    let claims = client::check_id_token(&id_token, &provider.issuer, client_id, nonce)?;
    Ok(CacheEntry {
        issuer: provider.issuer.clone(),
        client_id: client_id.to_string(),
        id_token,
        refresh_token: tokens.refresh_token.or(previous_refresh),
        expiry: claims.exp,
    })
}

/// The authorization code flow with PKCE on a loopback redirect; returns the tokens and the
/// nonce the ID token must carry.
async fn authcode_login(
    args: &LoginArgs,
    http: &Http,
    provider: &Provider,
    credentials: &ClientCredentials,
    scopes: &[String],
) -> Result<(TokenResponse, String), LoginError> {
    let loopback = Loopback::bind(args.listen).await?;
    let redirect_uri = loopback.redirect_uri().to_string();
    let state = client::random_string(24);
    let nonce = client::random_string(24);
    let verifier = client::random_string(32);
    let mut url =
        url::Url::parse(&provider.authorization_endpoint).map_err(|e| LoginError::Discovery {
            url: provider.authorization_endpoint.clone(),
            detail: format!("authorization_endpoint is not a URL: {e}"),
        })?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &credentials.id)
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("scope", &scopes.join(" "))
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &pkce::s256_challenge(&verifier))
        .append_pair("code_challenge_method", pkce::S256);
    show_login_url(url.as_str(), args);
    let code = tokio::time::timeout(
        LOGIN_TIMEOUT,
        loopback.wait_for_code(&state, &provider.issuer),
    )
    .await
    .map_err(|_| LoginError::LoginTimedOut)??;
    let tokens =
        client::exchange_code(http, provider, credentials, &code, &redirect_uri, &verifier).await?;
    Ok((tokens, nonce))
}

/// Opens the login URL in a browser, or prints it. The URL always goes to stderr too, for
/// when no browser shows up.
fn show_login_url(url: &str, args: &LoginArgs) {
    if args.no_browser {
        eprintln!("lanyard: open this URL in a browser on this machine to log in:\n\n    {url}\n");
        return;
    }
    let mut command = match &args.browser_command {
        Some(cmd) => {
            let mut words = cmd.split_whitespace();
            let Some(program) = words.next() else {
                eprintln!(
                    "lanyard: --browser-command is empty; open this URL to log in:\n\n    {url}\n"
                );
                return;
            };
            let mut c = tokio::process::Command::new(program);
            c.args(words);
            c
        }
        None => system_opener(),
    };
    command
        .arg(url)
        .stdin(std::process::Stdio::null())
        // stdout belongs to kubectl: only the ExecCredential may appear there.
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    eprintln!("lanyard: opening a browser to log in; if none appears, open:\n\n    {url}\n");
    match command.spawn() {
        Ok(mut child) => {
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
        }
        Err(e) => eprintln!("lanyard: cannot start a browser ({e}); open the URL above"),
    }
}

fn system_opener() -> tokio::process::Command {
    if cfg!(target_os = "macos") {
        tokio::process::Command::new("open")
    } else if cfg!(windows) {
        // Not `cmd /c start`: cmd would split the URL at every `&`.
        let mut c = tokio::process::Command::new("rundll32");
        c.arg("url.dll,FileProtocolHandler");
        c
    } else {
        tokio::process::Command::new("xdg-open")
    }
}

/// The device authorization grant (RFC 8628).
async fn device_login(
    http: &Http,
    provider: &Provider,
    credentials: &ClientCredentials,
    scopes: &[String],
) -> Result<TokenResponse, LoginError> {
    let auth = client::device_authorization(http, provider, credentials, scopes).await?;
    match &auth.verification_uri_complete {
        Some(complete) => eprintln!(
            "lanyard: to log in, open this URL on any device:\n\n    {complete}\n\nand check that it shows the code {code}, or go to {uri} and enter the code: {code}",
            code = auth.user_code,
            uri = auth.verification_uri,
        ),
        None => eprintln!(
            "lanyard: to log in, go to {uri} on any device and enter the code: {code}",
            code = auth.user_code,
            uri = auth.verification_uri,
        ),
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(auth.expires_in);
    let mut interval = auth.interval.unwrap_or(DEFAULT_POLL_INTERVAL).max(1);
    loop {
        if tokio::time::Instant::now() + Duration::from_secs(interval) > deadline {
            return Err(LoginError::DeviceCodeExpired);
        }
        tokio::time::sleep(Duration::from_secs(interval)).await;
        match client::poll_device(http, provider, credentials, &auth.device_code).await? {
            Ok(tokens) => return Ok(tokens),
            Err(f) => match f.error.as_str() {
                "authorization_pending" => {}
                "slow_down" => interval += SLOW_DOWN_STEP,
                "expired_token" => return Err(LoginError::DeviceCodeExpired),
                _ => return Err(f.into_error("the device login")),
            },
        }
    }
}

/// `1970-01-01T00:00:00Z` for a Unix time (UTC, whole seconds).
pub fn rfc3339(t: UnixTime) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc_seconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn the_exec_credential_has_the_v1_shape() {
        let v: serde_json::Value =
            serde_json::from_str(&ExecCredential::new("tok", 1_700_000_000).to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "apiVersion": "client.authentication.k8s.io/v1",
                "kind": "ExecCredential",
                "status": {"token": "tok", "expirationTimestamp": "2023-11-14T22:13:20Z"}
            })
        );
    }

    #[test]
    fn auto_picks_the_device_grant_without_a_display_or_a_terminal() {
        let env = |has_display, stdin_is_tty| Environment {
            has_display,
            stdin_is_tty,
            ..Environment::default()
        };
        assert_eq!(
            choose_grant(GrantMode::Auto, &env(true, true), false),
            GrantMode::Authcode
        );
        assert_eq!(
            choose_grant(GrantMode::Auto, &env(false, true), false),
            GrantMode::Device
        );
        assert_eq!(
            choose_grant(GrantMode::Auto, &env(true, false), false),
            GrantMode::Device
        );
        assert_eq!(
            choose_grant(GrantMode::Auto, &env(false, false), true),
            GrantMode::Authcode,
            "an explicit browser command can always be run"
        );
        assert_eq!(
            choose_grant(GrantMode::Device, &env(true, true), true),
            GrantMode::Device
        );
    }

    #[test]
    fn exec_info_decides_interactivity() {
        let env = |info: Option<&str>| Environment {
            exec_info: info.map(str::to_string),
            ..Environment::default()
        };
        assert_eq!(env(None).exec_interactive().unwrap(), None);
        assert_eq!(
            env(Some(r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","spec":{"interactive":false}}"#))
                .exec_interactive()
                .unwrap(),
            Some(false)
        );
        assert_eq!(
            env(Some(r#"{"spec":{"interactive":true}}"#))
                .exec_interactive()
                .unwrap(),
            Some(true)
        );
        assert!(env(Some("{")).exec_interactive().is_err());
    }

    #[test]
    fn scopes_always_include_openid_once() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(effective_scopes(&s(&["email"])), s(&["openid", "email"]));
        assert_eq!(
            effective_scopes(&s(&["openid email", "groups", "email"])),
            s(&["openid", "email", "groups"])
        );
    }

    fn args_with_cas(file: Option<PathBuf>, data: Option<&str>) -> LoginArgs {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            login: LoginArgs,
        }
        let mut args =
            Cli::parse_from(["login", "--issuer", "https://i", "--client-id", "k"]).login;
        args.certificate_authority = file;
        args.certificate_authority_data = data.map(str::to_string);
        args
    }

    #[test]
    fn certificate_authorities_come_from_a_file_and_from_base64_data() {
        let dir = tempfile::tempdir().unwrap();
        let pem = rcgen::generate_simple_self_signed(vec!["issuer.example".to_string()])
            .unwrap()
            .cert
            .pem();
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, &pem).unwrap();
        let data = base64::engine::general_purpose::STANDARD.encode(&pem);
        let cas = extra_cas(&args_with_cas(Some(file.clone()), Some(&data))).unwrap();
        assert_eq!(cas.len(), 2);
        assert_eq!(
            cas[0].origin,
            format!("--certificate-authority {}", file.display())
        );
        assert_eq!(cas[1].origin, "--certificate-authority-data");
        assert!(cas.iter().all(|c| c.pem == pem.as_bytes()));
        assert!(Http::new(&cas).is_ok());

        let err =
            |file: Option<PathBuf>, data: Option<&str>| match extra_cas(&args_with_cas(file, data))
                .and_then(|cas| Http::new(&cas))
            {
                Ok(_) => panic!("accepted"),
                Err(e) => e.to_string(),
            };
        let missing = err(Some(dir.path().join("nope.pem")), None);
        assert!(
            missing.starts_with("cannot use --certificate-authority ")
                && missing.contains("nope.pem"),
            "{missing}"
        );
        let pasted = err(None, Some(&pem));
        assert!(pasted.contains("expected base64 of the PEM"), "{pasted}");
        assert_eq!(
            err(None, Some("not base64!")),
            "cannot use --certificate-authority-data: not base64"
        );
        let not_pem = base64::engine::general_purpose::STANDARD.encode("hello");
        assert_eq!(
            err(None, Some(&not_pem)),
            "cannot use --certificate-authority-data: no PEM certificate in it"
        );
    }

    #[test]
    fn the_ca_file_flag_keeps_its_old_name_as_an_alias() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            login: LoginArgs,
        }
        let args = Cli::parse_from([
            "login",
            "--issuer",
            "https://i",
            "--client-id",
            "k",
            "--ca-file",
            "/x.pem",
        ])
        .login;
        assert_eq!(args.certificate_authority, Some(PathBuf::from("/x.pem")));
    }

    #[tokio::test]
    async fn non_interactive_without_a_cache_fails_before_any_network() {
        let dir = tempfile::tempdir().unwrap();
        let args = LoginArgs {
            // Nothing listens here: reaching the network would fail differently.
            issuer: "http://127.0.0.1:9".into(),
            client_id: "kubectl".into(),
            client_secret: None,
            certificate_authority: None,
            certificate_authority_data: None,
            scopes: DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect(),
            grant: GrantMode::Auto,
            listen: "127.0.0.1:0".parse().unwrap(),
            cache_dir: Some(dir.path().to_path_buf()),
            no_browser: true,
            browser_command: None,
        };
        let env = Environment {
            exec_info: Some(r#"{"spec":{"interactive":false}}"#.into()),
            ..Environment::default()
        };
        let clock = crate::clock::ManualClock::new(1_000);
        let err = run_with(&args, &clock, &env).await.unwrap_err();
        assert!(matches!(err, LoginError::NonInteractive { .. }), "{err}");

        // A fresh cached token is handed out without the issuer, as `clock` says.
        let cache = Cache::new(
            dir.path().to_path_buf(),
            cache::cache_key("http://127.0.0.1:9", "kubectl", &args.scopes),
        );
        let entry = CacheEntry {
            issuer: args.issuer.clone(),
            client_id: "kubectl".into(),
            id_token: "cached".into(),
            refresh_token: None,
            expiry: 2_000,
        };
        cache.lock().await.unwrap().write(&entry).unwrap();
        let cred = run_with(&args, &clock, &env).await.unwrap();
        assert_eq!(cred.status.token, "cached");
        clock.set(2_000 - cache::EXPIRY_SKEW_SECS);
        assert!(matches!(
            run_with(&args, &clock, &env).await,
            Err(LoginError::NonInteractive { .. })
        ));
    }
}
