//! A small pool of LDAP connections bound as the service account.
//!
//! A connection serves one login or refresh at a time, because a user's password check
//! re-binds it: it goes back to the pool only after a successful operation left it bound
//! as the service account again. Every network step has a deadline, so a slow or stopped
//! server turns into `ConnectorError::Unavailable`, never a hang.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, LdapResult, SearchEntry};
use rustls::ClientConfig;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crate::ConnectorError;

/// Timeouts and sizes of the connector's connection handling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LdapLimits {
    /// TCP connect plus TLS handshake (and StartTLS).
    pub connect_timeout: Duration,
    /// One bind or search.
    pub operation_timeout: Duration,
    /// Connections open at once; further logins wait (up to `operation_timeout`).
    pub max_connections: usize,
    /// A pooled connection unused this long is closed rather than reused (servers and
    /// firewalls drop idle connections silently).
    pub idle_timeout: Duration,
    /// Levels of parent groups followed through `recursionGroupAttr`.
    pub max_group_depth: usize,
}

impl Default for LdapLimits {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(5),
            max_connections: 8,
            idle_timeout: Duration::from_secs(60),
            max_group_depth: 10,
        }
    }
}

pub(crate) struct Pool {
    url: String,
    tls: Option<Arc<ClientConfig>>,
    start_tls: bool,
    skip_verify: bool,
    /// `None`: anonymous searches.
    service: Option<(String, String)>,
    limits: LdapLimits,
    idle: Mutex<Vec<(Ldap, Instant)>>,
    permits: Semaphore,
}

pub(crate) struct PoolOptions {
    pub url: String,
    pub tls: Option<Arc<ClientConfig>>,
    pub start_tls: bool,
    pub skip_verify: bool,
    pub service: Option<(String, String)>,
    pub limits: LdapLimits,
}

impl Pool {
    pub fn new(o: PoolOptions) -> Pool {
        Pool {
            url: o.url,
            tls: o.tls,
            start_tls: o.start_tls,
            skip_verify: o.skip_verify,
            service: o.service,
            limits: o.limits,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(o.limits.max_connections.max(1)),
        }
    }

    pub fn limits(&self) -> &LdapLimits {
        &self.limits
    }

    /// A connection bound as the service account.
    pub async fn get(&self) -> Result<Conn<'_>, ConnectorError> {
        let permit = tokio::time::timeout(self.limits.operation_timeout, self.permits.acquire())
            .await
            .map_err(|_| {
                ConnectorError::Unavailable(format!(
                    "all {} LDAP connections stayed busy for {:?}",
                    self.limits.max_connections, self.limits.operation_timeout
                ))
            })?
            .map_err(|_| ConnectorError::Internal("LDAP pool closed".into()))?;
        if let Some(ldap) = self.take_idle() {
            return Ok(Conn {
                ldap,
                pool: self,
                clean: true,
                _permit: permit,
            });
        }
        let ldap = self.connect().await?;
        let mut conn = Conn {
            ldap,
            pool: self,
            clean: false,
            _permit: permit,
        };
        conn.bind_service().await?;
        Ok(conn)
    }

    fn take_idle(&self) -> Option<Ldap> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((mut ldap, since)) = idle.pop() {
            if since.elapsed() < self.limits.idle_timeout && !ldap.is_closed() {
                return Some(ldap);
            }
        }
        None
    }

    fn put_idle(&self, ldap: Ldap) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.push((ldap, Instant::now()));
    }

    async fn connect(&self) -> Result<Ldap, ConnectorError> {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(self.limits.connect_timeout)
            .set_starttls(self.start_tls)
            .set_no_tls_verify(self.skip_verify);
        if let Some(tls) = &self.tls {
            settings = settings.set_config(tls.clone());
        }
        // ldap3 applies conn_timeout to TCP, StartTLS and the TLS handshake together; the
        // outer deadline is a guard should that ever change.
        let connecting = LdapConnAsync::with_settings(settings, &self.url);
        let (conn, ldap) = tokio::time::timeout(self.limits.connect_timeout * 2, connecting)
            .await
            .map_err(|_| self.unavailable("connecting timed out"))?
            .map_err(|e| self.unavailable(&format!("cannot connect: {e}")))?;
        let url = self.url.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(%url, error = %e, "LDAP connection closed");
            }
        });
        Ok(ldap)
    }

    fn unavailable(&self, what: &str) -> ConnectorError {
        ConnectorError::Unavailable(format!("LDAP server {}: {what}", self.url))
    }
}

/// A checked-out connection. Dropped while `clean` it returns to the pool; otherwise it
/// is closed (an operation failed, timed out, was cancelled, or the connection is bound as
/// a user).
pub(crate) struct Conn<'a> {
    ldap: Ldap,
    pool: &'a Pool,
    clean: bool,
    _permit: SemaphorePermit<'a>,
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if self.clean {
            self.pool.put_idle(self.ldap.clone());
        }
    }
}

impl Conn<'_> {
    async fn timed<T>(
        &self,
        what: &str,
        op: impl std::future::Future<Output = Result<T, LdapError>>,
    ) -> Result<T, ConnectorError> {
        let limit = self.pool.limits.operation_timeout;
        match tokio::time::timeout(limit, op).await {
            Err(_) => Err(self
                .pool
                .unavailable(&format!("{what} got no answer within {limit:?}"))),
            Ok(Err(e)) => Err(self.pool.unavailable(&format!("{what} failed: {e}"))),
            Ok(Ok(v)) => Ok(v),
        }
    }

    /// Binds as the service account (or anonymously), which searches then run as.
    pub async fn bind_service(&mut self) -> Result<(), ConnectorError> {
        self.clean = false;
        let (dn, pw) = match &self.pool.service {
            Some((dn, pw)) => (dn.clone(), pw.clone()),
            None => (String::new(), String::new()),
        };
        let mut ldap = self.ldap.clone();
        let result = self
            .timed("service bind", ldap.simple_bind(&dn, &pw))
            .await?;
        if result.rc != 0 {
            return Err(ConnectorError::Config(format!(
                "LDAP server {} refused the bindDN/bindPW service bind: {}",
                self.pool.url,
                describe(&result)
            )));
        }
        self.clean = true;
        Ok(())
    }

    /// Binds as `dn` with `password`: `Ok(true)` when accepted, `Ok(false)` for wrong
    /// credentials. Either way the connection is bound as the service account again after.
    pub async fn check_password(
        &mut self,
        dn: &str,
        password: &str,
    ) -> Result<bool, ConnectorError> {
        // An empty password is an unauthenticated bind, which servers report as success.
        if password.is_empty() {
            return Ok(false);
        }
        self.clean = false;
        let mut ldap = self.ldap.clone();
        let result = self
            .timed("user bind", ldap.simple_bind(dn, password))
            .await?;
        let accepted = match result.rc {
            0 => true,
            // invalidCredentials; constraintViolation is how password policies report a
            // locked or expired password (Dex treats both as a wrong password).
            49 | 19 => false,
            _ => {
                return Err(self
                    .pool
                    .unavailable(&format!("user bind failed: {}", describe(&result))))
            }
        };
        self.bind_service().await?;
        Ok(accepted)
    }

    /// A search; entries plus the final result (whose code the caller judges).
    pub async fn search(
        &mut self,
        base: &str,
        scope: ldap3::Scope,
        filter: &str,
        attrs: &[String],
    ) -> Result<(Vec<SearchEntry>, LdapResult), ConnectorError> {
        self.clean = false;
        let mut ldap = self.ldap.clone();
        let ldap3::SearchResult(raw, result) = self
            .timed("search", ldap.search(base, scope, filter, attrs.to_vec()))
            .await?;
        let mut entries = Vec::with_capacity(raw.len());
        for entry in raw {
            // ldap3 panics on a malformed entry; a broken server must not take us down.
            let parsed =
                std::panic::catch_unwind(AssertUnwindSafe(|| SearchEntry::construct(entry)))
                    .map_err(|_| self.pool.unavailable("sent a malformed search entry"))?;
            entries.push(parsed);
        }
        self.clean = true;
        Ok((entries, result))
    }
}

pub(crate) fn describe(result: &LdapResult) -> String {
    if result.text.is_empty() {
        format!("result code {}", result.rc)
    } else {
        format!("result code {} ({})", result.rc, result.text)
    }
}
