//! The loopback redirect listener of the authorization code flow (RFC 8252 §7.3): a tiny
//! HTTP/1.1 server on 127.0.0.1 that waits for the browser's GET /callback.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::LoginError;

/// The redirect URI's path; lanyard matches it exactly against the registered URI.
pub const CALLBACK_PATH: &str = "/callback";
const MAX_REQUEST_HEAD: usize = 16 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Loopback {
    listener: TcpListener,
    redirect_uri: String,
}

impl Loopback {
    pub async fn bind(addr: SocketAddr) -> Result<Self, LoginError> {
        if !addr.ip().is_loopback() {
            return Err(LoginError::NotLoopback(addr));
        }
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| LoginError::Listen {
                addr,
                detail: e.to_string(),
            })?;
        let local = listener.local_addr().map_err(|e| LoginError::Listen {
            addr,
            detail: e.to_string(),
        })?;
        // SocketAddr's Display brackets IPv6 hosts, as a URL needs.
        let redirect_uri = format!("http://{local}{CALLBACK_PATH}");
        Ok(Self {
            listener,
            redirect_uri,
        })
    }

    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// Serves requests until the browser brings back this login's answer: the code, or the
    /// issuer's error. Requests with another `state` (or for other paths) get an error page
    /// and are otherwise ignored: any local process can connect here.
    pub async fn wait_for_code(self, state: &str, issuer: &str) -> Result<String, LoginError> {
        let (tx, mut rx) = mpsc::channel::<Result<String, LoginError>>(4);
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    // A failed accept (e.g. too many files) is transient from here.
                    let Ok((stream, _)) = accepted else { continue };
                    let tx = tx.clone();
                    let state = state.to_string();
                    let issuer = issuer.to_string();
                    // Browsers open speculative connections that never send a request; one
                    // task per connection keeps those from blocking the real one.
                    tokio::spawn(async move {
                        if let Some(outcome) = serve(stream, &state, &issuer).await {
                            let _ = tx.send(outcome).await;
                        }
                    });
                }
                Some(outcome) = rx.recv() => return outcome,
            }
        }
    }
}

/// What one request to the listener means.
#[derive(Debug, PartialEq, Eq)]
pub enum Callback {
    /// Not this login's callback: answer and keep waiting.
    Ignore {
        status: u16,
        message: &'static str,
    },
    Code(String),
    /// The issuer answered with an error, or the answer is forged: the login ends.
    Fail(String, Option<String>),
    IssuerMismatch(String),
}

/// Decides what a request target (path and query) means for the login with `state`.
pub fn decide(target: &str, state: &str, issuer: &str) -> Callback {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != CALLBACK_PATH {
        return Callback::Ignore {
            status: 404,
            message: "Not found.",
        };
    }
    let mut got_state = None;
    let mut code = None;
    let mut error = None;
    let mut description = None;
    let mut iss = None;
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "state" => got_state = Some(v.into_owned()),
            "code" => code = Some(v.into_owned()),
            "error" => error = Some(v.into_owned()),
            "error_description" => description = Some(v.into_owned()),
            "iss" => iss = Some(v.into_owned()),
            _ => {}
        }
    }
    let state_ok = got_state.is_some_and(|s| {
        bool::from(subtle::ConstantTimeEq::ct_eq(
            s.as_bytes(),
            state.as_bytes(),
        ))
    });
    if !state_ok {
        return Callback::Ignore {
            status: 400,
            message: "This is not the sign-in lanyard is waiting for. Start again from kubectl.",
        };
    }
    // RFC 9207: an answer that names another issuer is a mix-up attack or a misconfiguration.
    if let Some(iss) = iss {
        if iss.trim_end_matches('/') != issuer.trim_end_matches('/') {
            return Callback::IssuerMismatch(iss);
        }
    }
    if let Some(error) = error {
        return Callback::Fail(error, description);
    }
    match code.filter(|c| !c.is_empty()) {
        Some(code) => Callback::Code(code),
        None => Callback::Fail(
            "invalid_request".into(),
            Some("the redirect carried neither a code nor an error".into()),
        ),
    }
}

/// Reads one request and answers it; `Some` when it ends the login.
async fn serve(
    mut stream: TcpStream,
    state: &str,
    issuer: &str,
) -> Option<Result<String, LoginError>> {
    let head = tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream))
        .await
        .ok()??;
    let mut parts = head.lines().next().unwrap_or("").split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" {
        respond(&mut stream, 405, "Only GET is served here.").await;
        return None;
    }
    match decide(target, state, issuer) {
        Callback::Ignore { status, message } => {
            respond(&mut stream, status, message).await;
            None
        }
        Callback::Code(code) => {
            respond(
                &mut stream,
                200,
                "You are signed in to kubectl. You can close this window.",
            )
            .await;
            Some(Ok(code))
        }
        Callback::Fail(error, description) => {
            respond(
                &mut stream,
                400,
                "Sign-in failed. The terminal says why; you can close this window.",
            )
            .await;
            Some(Err(LoginError::OAuth {
                during: "the sign-in",
                error,
                description: description.unwrap_or_default(),
            }))
        }
        Callback::IssuerMismatch(iss) => {
            respond(
                &mut stream,
                400,
                "Sign-in failed: the answer came from another issuer.",
            )
            .await;
            Some(Err(LoginError::IssuerMismatch {
                expected: issuer.to_string(),
                got: iss,
            }))
        }
    }
}

async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(end);
            return String::from_utf8(buf).ok();
        }
        if buf.len() > MAX_REQUEST_HEAD {
            return None;
        }
    }
}

/// Answers with a fixed page; nothing from the request is echoed into it.
async fn respond(stream: &mut TcpStream, status: u16, message: &str) {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Method Not Allowed",
    };
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>lanyard</title></head>\
         <body style=\"font-family:sans-serif;margin:3em\"><p>{message}</p></body></html>"
    );
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\n\
         Content-Length: {}\r\nCache-Control: no-store\r\nReferrer-Policy: no-referrer\r\n\
         X-Frame-Options: DENY\r\nContent-Security-Policy: default-src 'none'; style-src 'unsafe-inline'\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISS: &str = "https://login.example.com";

    #[test]
    fn the_callback_needs_the_path_and_the_state() {
        assert_eq!(
            decide("/callback?code=c1&state=s", "s", ISS),
            Callback::Code("c1".into())
        );
        assert_eq!(
            decide(
                "/callback?code=c1&state=s&iss=https%3A%2F%2Flogin.example.com",
                "s",
                ISS
            ),
            Callback::Code("c1".into())
        );
        assert!(matches!(
            decide("/favicon.ico", "s", ISS),
            Callback::Ignore { status: 404, .. }
        ));
        assert!(matches!(
            decide("/callback?code=c1&state=other", "s", ISS),
            Callback::Ignore { status: 400, .. }
        ));
        assert!(matches!(
            decide("/callback?code=c1", "s", ISS),
            Callback::Ignore { status: 400, .. }
        ));
    }

    #[test]
    fn another_issuer_or_an_error_ends_the_login() {
        assert_eq!(
            decide("/callback?code=c&state=s&iss=https%3A%2F%2Fevil", "s", ISS),
            Callback::IssuerMismatch("https://evil".into())
        );
        assert_eq!(
            decide(
                "/callback?error=access_denied&error_description=no+way&state=s",
                "s",
                ISS
            ),
            Callback::Fail("access_denied".into(), Some("no way".into()))
        );
        assert!(matches!(
            decide("/callback?state=s", "s", ISS),
            Callback::Fail(..)
        ));
    }

    #[tokio::test]
    async fn a_browser_request_hands_over_the_code_after_a_wrong_one() {
        let lb = Loopback::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let uri = lb.redirect_uri().to_string();
        assert!(uri.starts_with("http://127.0.0.1:") && uri.ends_with("/callback"));
        let waiter = tokio::spawn(lb.wait_for_code("st", ISS));
        let http = reqwest::Client::new();
        let wrong = http
            .get(format!("{uri}?code=x&state=bad"))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 400);
        let ok = http
            .get(format!("{uri}?code=c9&state=st"))
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
        assert!(ok.text().await.unwrap().contains("close this window"));
        assert_eq!(waiter.await.unwrap().unwrap(), "c9");
    }

    #[tokio::test]
    async fn only_loopback_addresses_are_accepted() {
        assert!(matches!(
            Loopback::bind("0.0.0.0:0".parse().unwrap()).await,
            Err(LoginError::NotLoopback(_))
        ));
    }
}
