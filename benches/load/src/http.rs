//! A keep-alive HTTP/1.1 connection with as little client-side work per request as hyper
//! allows, so that the generator's share of the two cores stays small.

use std::net::SocketAddr;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, COOKIE, HOST, LOCATION, SET_COOKIE};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One answer, read to the end.
pub struct Reply {
    pub status: u16,
    pub location: Option<String>,
    pub set_cookies: Vec<String>,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body).context("response body is not JSON")
    }

    pub fn expect(self, status: u16, what: &str) -> anyhow::Result<Self> {
        if self.status != status {
            bail!(
                "{what}: expected {status}, got {} ({})",
                self.status,
                String::from_utf8_lossy(&self.body[..self.body.len().min(200)])
            );
        }
        Ok(self)
    }
}

/// One TCP connection to lanyard, reopened when the server closes it.
pub struct Conn {
    addr: SocketAddr,
    host: HeaderValue,
    /// Sent as `X-Forwarded-For` (lanyard trusts it from loopback in the benchmark's config):
    /// the address of the person this connection stands for.
    client_address: Option<HeaderValue>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Self {
        let host = HeaderValue::from_str(&addr.to_string()).expect("an address is a valid header");
        Self {
            addr,
            host,
            client_address: None,
            sender: None,
        }
    }

    /// Makes the following requests come from `address`, as a proxy would forward them.
    pub fn set_client_address(&mut self, address: &str) -> anyhow::Result<()> {
        self.client_address = Some(HeaderValue::from_str(address)?);
        Ok(())
    }

    async fn sender(&mut self) -> anyhow::Result<&mut SendRequest<Full<Bytes>>> {
        let closed = self.sender.as_ref().is_none_or(|s| s.is_closed());
        if closed {
            let stream = TcpStream::connect(self.addr)
                .await
                .with_context(|| format!("connecting to {}", self.addr))?;
            stream.set_nodelay(true)?;
            let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            self.sender = Some(sender);
        }
        self.sender.as_mut().ok_or_else(|| anyhow!("no connection"))
    }

    pub async fn get(&mut self, path: &str, cookies: Option<&str>) -> anyhow::Result<Reply> {
        self.send(Method::GET, path, cookies, None, Bytes::new())
            .await
    }

    /// POSTs an `application/x-www-form-urlencoded` body.
    pub async fn post_form(
        &mut self,
        path: &str,
        cookies: Option<&str>,
        authorization: Option<&HeaderValue>,
        form: &[(&str, &str)],
    ) -> anyhow::Result<Reply> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        self.send(
            Method::POST,
            path,
            cookies,
            authorization,
            Bytes::from(body),
        )
        .await
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        cookies: Option<&str>,
        authorization: Option<&HeaderValue>,
        body: Bytes,
    ) -> anyhow::Result<Reply> {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(HOST, self.host.clone());
        if let Some(c) = cookies.filter(|c| !c.is_empty()) {
            req = req.header(COOKIE, c);
        }
        if let Some(a) = authorization {
            req = req.header(AUTHORIZATION, a.clone());
        }
        if let Some(a) = &self.client_address {
            req = req.header("x-forwarded-for", a.clone());
        }
        if method == Method::POST {
            req = req.header(CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        let req = req.body(Full::new(body))?;
        let sender = self.sender().await?;
        sender.ready().await?;
        let response = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                self.sender = None;
                return Err(e.into());
            }
        };
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let set_cookies = response
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Reply {
            status,
            location,
            set_cookies,
            body,
        })
    }
}

/// The cookies one simulated browser holds, by name.
#[derive(Default, Clone)]
pub struct Jar {
    cookies: Vec<(String, String)>,
    header: String,
}

impl Jar {
    pub fn take(&mut self, reply: &Reply) {
        for line in &reply.set_cookies {
            let pair = line.split(';').next().unwrap_or_default();
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            let (name, value) = (name.trim(), value.trim());
            self.cookies.retain(|(n, _)| n != name);
            if !value.is_empty() {
                self.cookies.push((name.to_string(), value.to_string()));
            }
        }
        self.header = self
            .cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
    }

    pub fn header(&self) -> Option<&str> {
        Some(self.header.as_str())
    }
}

/// `Authorization: Basic` for a client id and secret (RFC 6749 §2.3.1 form-encodes both).
pub fn basic_auth(id: &str, secret: &str) -> HeaderValue {
    use base64::Engine;
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let raw = format!("{}:{}", enc(id), enc(secret));
    let value = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    );
    HeaderValue::from_str(&value).expect("base64 is a valid header")
}
