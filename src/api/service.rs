//! The `api.Dex` service: each RPC with Dex v2.45.1's semantics (`server/api.go`), over the
//! operations `lanyard admin` uses ([`crate::manage`]).
//!
//! Dex answers "already exists" and "not found" in the response's fields and everything else
//! (validation, read-only static entries, storage failures) as an error status; Go's gRPC turns
//! a plain error into `UNKNOWN` with the error's text, and so does this service, so clients
//! that match on either keep working.

use std::sync::Arc;

use lanyard_connectors::PasswordHasher;
use tonic::{Request, Response, Status};

use super::proto::{self, dex_server::Dex};
use super::Running;
use crate::config::Config;
use crate::manage::{
    Actor, ClientChanges, ClientView, ConnectorChanges, Directory, ManageError, NewClient,
    NewConnector, NewPassword, PasswordChanges, PasswordInput,
};
use crate::oidc::ratelimit::PasswordAttempt;
use crate::oidc::subject::decode_subject;
use crate::oidc::Provider;
use crate::server::stored_connector::ConnectorOpening;

/// The API version Dex v2.45.1 reports: it counts the calls its API has gained.
pub const API_VERSION: i32 = 3;

/// What `GetVersion` reports as the server: Dex's release whose API this is, with lanyard's
/// version as semver build metadata, so tools that compare versions see v2.45.1.
pub fn server_version() -> String {
    format!("v2.45.1+lanyard.{}", env!("CARGO_PKG_VERSION"))
}

/// Dex's text when connector CRUD through the API is off (`DEX_API_CONNECTORS_CRUD` unset or
/// false).
const CONNECTORS_CRUD_OFF: &str = "api_connectors_crud feature flag is not enabled";

pub struct DexApi {
    pub(super) running: Arc<dyn Running>,
    pub(super) hasher: Arc<PasswordHasher>,
    /// `DEX_API_CONNECTORS_CRUD`: the connector RPCs answer as Dex's do with the flag off
    /// unless it is true.
    pub(super) connectors_crud: bool,
}

/// Who is calling, for the audit log: the subject of the client certificate (mutual TLS),
/// or `insecure` when the connection carries none.
fn actor<T>(request: &Request<T>) -> Actor {
    let subject = request.peer_certs().and_then(|certs| {
        let leaf = certs.first()?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
        Some(cert.subject().to_string())
    });
    Actor {
        name: subject.unwrap_or_else(|| "insecure".to_string()),
        via: "grpc",
    }
}

/// Dex returns plain Go errors, which gRPC sends as UNKNOWN with the error's text.
fn unknown(message: impl Into<String>) -> Status {
    Status::unknown(message.into())
}

fn failed(what: &str, e: ManageError) -> Status {
    match e {
        ManageError::Storage(e) => {
            crate::metrics::count_storage_error();
            tracing::error!(error = %e, "gRPC API: {what} failed");
            unknown(format!("{what}: storage error"))
        }
        ManageError::Hash(e) => {
            tracing::error!(error = %e, "gRPC API: {what} failed");
            unknown(format!("{what}: internal error"))
        }
        other => unknown(other.to_string()),
    }
}

/// Dex's answers for a connector change: validation and read-only static connectors in
/// their own words; storage failures as "<what>: storage error".
fn connector_failed(what: &str, e: ManageError) -> Status {
    match e {
        ManageError::StaticConnector(message) => unknown(format!("{what}: {message}")),
        other => failed(what, other),
    }
}

impl DexApi {
    async fn context(&self) -> (Arc<Provider>, Config) {
        (self.running.provider(), self.running.config().await)
    }

    fn connectors_crud(&self) -> Result<(), Status> {
        if self.connectors_crud {
            Ok(())
        } else {
            Err(unknown(CONNECTORS_CRUD_OFF))
        }
    }

    /// How this server opens connectors, to check one before it is stored.
    fn opening(&self, provider: &Provider, config: &Config) -> ConnectorOpening {
        ConnectorOpening {
            config: config.clone(),
            storage: provider.storage.clone(),
            hasher: self.hasher.clone(),
            clock: provider.clock.clone(),
        }
    }
}

macro_rules! directory {
    ($provider:expr, $config:expr, $hasher:expr) => {
        Directory {
            storage: &$provider.storage,
            config: &$config,
            clock: $provider.clock.as_ref(),
            hasher: $hasher,
        }
    };
}

fn client_message(c: ClientView, secret: Option<String>) -> proto::Client {
    proto::Client {
        id: c.id,
        secret: secret.unwrap_or_default(),
        redirect_uris: c.redirect_uris,
        trusted_peers: c.trusted_peers,
        public: c.public,
        name: c.name,
        logo_url: c.logo_url.unwrap_or_default(),
    }
}

/// Dex's `user_id` in ListRefresh and RevokeRefresh is the ID token's `sub`.
fn subject(sub: &str) -> Result<(String, String), Status> {
    decode_subject(sub)
        .ok_or_else(|| unknown("user_id is not a subject (the \"sub\" claim of an ID token)"))
}

#[tonic::async_trait]
impl Dex for DexApi {
    async fn get_client(
        &self,
        request: Request<proto::GetClientReq>,
    ) -> Result<Response<proto::GetClientResp>, Status> {
        let (provider, config) = self.context().await;
        let directory = directory!(provider, config, &self.hasher);
        // Dex answers a missing client with its storage's "not found" error. Secrets are
        // kept hashed, so the client comes back without one.
        let client = directory
            .get_client(&request.get_ref().id)
            .await
            .map_err(|e| match e {
                ManageError::NotFound(_) => unknown("not found"),
                other => failed("get client", other),
            })?;
        Ok(Response::new(proto::GetClientResp {
            client: Some(client_message(client, None)),
        }))
    }

    async fn create_client(
        &self,
        request: Request<proto::CreateClientReq>,
    ) -> Result<Response<proto::CreateClientResp>, Status> {
        let actor = actor(&request);
        let Some(c) = request.into_inner().client else {
            return Err(unknown("no client supplied"));
        };
        let (provider, config) = self.context().await;
        let directory = directory!(provider, config, &self.hasher);
        let created = directory
            .create_client(
                &actor,
                NewClient {
                    id: Some(c.id),
                    secret: Some(c.secret),
                    public: c.public,
                    name: Some(c.name),
                    logo_url: Some(c.logo_url),
                    redirect_uris: c.redirect_uris,
                    trusted_peers: c.trusted_peers,
                    grant_types: Vec::new(),
                    post_logout_redirect_uris: Vec::new(),
                },
            )
            .await;
        match created {
            Ok(created) => Ok(Response::new(proto::CreateClientResp {
                already_exists: false,
                client: Some(client_message(created.view, created.secret)),
            })),
            Err(ManageError::AlreadyExists(_)) => Ok(Response::new(proto::CreateClientResp {
                already_exists: true,
                client: None,
            })),
            Err(e) => Err(failed("create client", e)),
        }
    }

    async fn update_client(
        &self,
        request: Request<proto::UpdateClientReq>,
    ) -> Result<Response<proto::UpdateClientResp>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        if req.id.is_empty() {
            return Err(unknown("update client: no client ID supplied"));
        }
        let (provider, config) = self.context().await;
        let directory = directory!(provider, config, &self.hasher);
        let updated = directory
            .update_client(
                &actor,
                &req.id,
                ClientChanges {
                    name: Some(req.name),
                    logo_url: Some(req.logo_url),
                    redirect_uris: req.redirect_uris,
                    trusted_peers: req.trusted_peers,
                    ..ClientChanges::default()
                },
            )
            .await;
        match updated {
            Ok(_) => Ok(Response::new(proto::UpdateClientResp { not_found: false })),
            Err(ManageError::NotFound(_)) => {
                Ok(Response::new(proto::UpdateClientResp { not_found: true }))
            }
            Err(e) => Err(failed("update client", e)),
        }
    }

    async fn delete_client(
        &self,
        request: Request<proto::DeleteClientReq>,
    ) -> Result<Response<proto::DeleteClientResp>, Status> {
        let actor = actor(&request);
        let (provider, config) = self.context().await;
        let directory = directory!(provider, config, &self.hasher);
        match directory.delete_client(&actor, &request.get_ref().id).await {
            Ok(()) => Ok(Response::new(proto::DeleteClientResp { not_found: false })),
            Err(ManageError::NotFound(_)) => {
                Ok(Response::new(proto::DeleteClientResp { not_found: true }))
            }
            Err(e) => Err(failed("delete client", e)),
        }
    }

    async fn list_clients(
        &self,
        _request: Request<proto::ListClientReq>,
    ) -> Result<Response<proto::ListClientResp>, Status> {
        let (provider, config) = self.context().await;
        let directory = directory!(provider, config, &self.hasher);
        let clients = directory
            .list_clients()
            .await
            .map_err(|e| failed("list clients", e))?
            .into_iter()
            .map(|c| proto::ClientInfo {
                id: c.id,
                redirect_uris: c.redirect_uris,
                trusted_peers: c.trusted_peers,
                public: c.public,
                name: c.name,
                logo_url: c.logo_url.unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(proto::ListClientResp { clients }))
    }

    async fn create_password(
        &self,
        request: Request<proto::CreatePasswordReq>,
    ) -> Result<Response<proto::CreatePasswordResp>, Status> {
        let actor = actor(&request);
        let Some(p) = request.into_inner().password else {
            return Err(unknown("no password supplied"));
        };
        if p.user_id.is_empty() {
            return Err(unknown("no user ID supplied"));
        }
        if p.hash.is_empty() {
            return Err(unknown("no hash of password supplied"));
        }
        let hash = String::from_utf8(p.hash)
            .map_err(|_| unknown("parsing bcrypt hash: not a bcrypt hash"))?;
        let (provider, config) = self.context().await;
        let directory = directory!(provider, config, &self.hasher);
        let created = directory
            .create_password(
                &actor,
                NewPassword {
                    email: p.email,
                    password: PasswordInput::Bcrypt(hash),
                    username: p.username,
                    user_id: p.user_id,
                    groups: Vec::new(),
                },
            )
            .await;
        match created {
            Ok(()) => Ok(Response::new(proto::CreatePasswordResp {
                already_exists: false,
            })),
            Err(ManageError::AlreadyExists(_)) => Ok(Response::new(proto::CreatePasswordResp {
                already_exists: true,
            })),
            Err(e) => Err(failed("create password", e)),
        }
    }

    async fn update_password(
        &self,
        request: Request<proto::UpdatePasswordReq>,
    ) -> Result<Response<proto::UpdatePasswordResp>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        if req.email.is_empty() {
            return Err(unknown("no email supplied"));
        }
        if req.new_hash.is_empty() && req.new_username.is_empty() {
            return Err(unknown("nothing to update"));
        }
        let password = if req.new_hash.is_empty() {
            None
        } else {
            Some(PasswordInput::Bcrypt(
                String::from_utf8(req.new_hash)
                    .map_err(|_| unknown("parsing bcrypt hash: not a bcrypt hash"))?,
            ))
        };
        let (provider, config) = self.context().await;
        let directory = directory!(provider, config, &self.hasher);
        let updated = directory
            .update_password(
                &actor,
                &req.email,
                PasswordChanges {
                    username: Some(req.new_username),
                    groups: None,
                    password,
                },
            )
            .await;
        match updated {
            Ok(()) => Ok(Response::new(proto::UpdatePasswordResp {
                not_found: false,
            })),
            Err(ManageError::NotFound(_)) => {
                Ok(Response::new(proto::UpdatePasswordResp { not_found: true }))
            }
            Err(e) => Err(failed("update password", e)),
        }
    }

    async fn delete_password(
        &self,
        request: Request<proto::DeletePasswordReq>,
    ) -> Result<Response<proto::DeletePasswordResp>, Status> {
        let actor = actor(&request);
        if request.get_ref().email.is_empty() {
            return Err(unknown("no email supplied"));
        }
        let (provider, config) = self.context().await;
        let directory = directory!(provider, config, &self.hasher);
        match directory
            .delete_password(&actor, &request.get_ref().email)
            .await
        {
            Ok(()) => Ok(Response::new(proto::DeletePasswordResp {
                not_found: false,
            })),
            Err(ManageError::NotFound(_)) => {
                Ok(Response::new(proto::DeletePasswordResp { not_found: true }))
            }
            Err(e) => Err(failed("delete password", e)),
        }
    }

    async fn list_passwords(
        &self,
        _request: Request<proto::ListPasswordReq>,
    ) -> Result<Response<proto::ListPasswordResp>, Status> {
        let (provider, config) = self.context().await;
        let directory = directory!(provider, config, &self.hasher);
        let passwords = directory
            .list_passwords()
            .await
            .map_err(|e| failed("list passwords", e))?
            .into_iter()
            .map(|p| proto::Password {
                email: p.email,
                hash: Vec::new(),
                username: p.username,
                user_id: p.user_id,
            })
            .collect();
        Ok(Response::new(proto::ListPasswordResp { passwords }))
    }

    async fn create_connector(
        &self,
        request: Request<proto::CreateConnectorReq>,
    ) -> Result<Response<proto::CreateConnectorResp>, Status> {
        self.connectors_crud()?;
        let actor = actor(&request);
        let c = request.into_inner().connector.unwrap_or_default();
        let (provider, config) = self.context().await;
        let directory = directory!(provider, config, &self.hasher);
        let created = directory
            .create_connector(
                &actor,
                provider.keys.encryption_key(),
                &self.opening(&provider, &config),
                NewConnector {
                    id: c.id,
                    type_: c.r#type,
                    name: c.name,
                    config: c.config,
                },
            )
            .await;
        match created {
            Ok(()) => Ok(Response::new(proto::CreateConnectorResp {
                already_exists: false,
            })),
            Err(ManageError::AlreadyExists(_)) => Ok(Response::new(proto::CreateConnectorResp {
                already_exists: true,
            })),
            Err(e) => Err(connector_failed("create connector", e)),
        }
    }

    async fn update_connector(
        &self,
        request: Request<proto::UpdateConnectorReq>,
    ) -> Result<Response<proto::UpdateConnectorResp>, Status> {
        self.connectors_crud()?;
        let actor = actor(&request);
        let req = request.into_inner();
        let (provider, config) = self.context().await;
        let directory = directory!(provider, config, &self.hasher);
        let updated = directory
            .update_connector(
                &actor,
                provider.keys.encryption_key(),
                &self.opening(&provider, &config),
                &req.id,
                ConnectorChanges {
                    type_: Some(req.new_type),
                    name: Some(req.new_name),
                    config: Some(req.new_config),
                },
            )
            .await;
        match updated {
            Ok(_) => Ok(Response::new(proto::UpdateConnectorResp {
                not_found: false,
            })),
            Err(ManageError::NotFound(_)) => Ok(Response::new(proto::UpdateConnectorResp {
                not_found: true,
            })),
            Err(e) => Err(connector_failed("update connector", e)),
        }
    }

    async fn delete_connector(
        &self,
        request: Request<proto::DeleteConnectorReq>,
    ) -> Result<Response<proto::DeleteConnectorResp>, Status> {
        self.connectors_crud()?;
        let actor = actor(&request);
        let (provider, config) = self.context().await;
        let directory = directory!(provider, config, &self.hasher);
        match directory
            .delete_connector(&actor, &request.get_ref().id)
            .await
        {
            Ok(()) => Ok(Response::new(proto::DeleteConnectorResp {
                not_found: false,
            })),
            Err(ManageError::NotFound(_)) => Ok(Response::new(proto::DeleteConnectorResp {
                not_found: true,
            })),
            Err(e) => Err(connector_failed("delete connector", e)),
        }
    }

    async fn list_connectors(
        &self,
        _request: Request<proto::ListConnectorReq>,
    ) -> Result<Response<proto::ListConnectorResp>, Status> {
        self.connectors_crud()?;
        let (provider, config) = self.context().await;
        let directory = directory!(provider, config, &self.hasher);
        let connectors = directory
            .list_connectors(provider.keys.encryption_key())
            .await
            .map_err(|e| failed("list connectors", e))?
            .into_iter()
            .map(|c| proto::Connector {
                id: c.id,
                r#type: c.type_,
                name: c.name,
                config: c.config,
            })
            .collect();
        Ok(Response::new(proto::ListConnectorResp { connectors }))
    }

    async fn get_version(
        &self,
        _request: Request<proto::VersionReq>,
    ) -> Result<Response<proto::VersionResp>, Status> {
        Ok(Response::new(proto::VersionResp {
            server: server_version(),
            api: API_VERSION,
        }))
    }

    async fn get_discovery(
        &self,
        _request: Request<proto::DiscoveryReq>,
    ) -> Result<Response<proto::DiscoveryResp>, Status> {
        let provider = self.running.provider();
        let doc: serde_json::Value = serde_json::from_slice(&provider.discovery().body)
            .map_err(|e| unknown(format!("failed to unmarshal discovery data: {e}")))?;
        let text = |key: &str| doc[key].as_str().unwrap_or_default().to_string();
        let list = |key: &str| {
            doc[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok(Response::new(proto::DiscoveryResp {
            issuer: text("issuer"),
            authorization_endpoint: text("authorization_endpoint"),
            token_endpoint: text("token_endpoint"),
            jwks_uri: text("jwks_uri"),
            userinfo_endpoint: text("userinfo_endpoint"),
            device_authorization_endpoint: text("device_authorization_endpoint"),
            introspection_endpoint: text("introspection_endpoint"),
            grant_types_supported: list("grant_types_supported"),
            response_types_supported: list("response_types_supported"),
            subject_types_supported: list("subject_types_supported"),
            id_token_signing_alg_values_supported: list("id_token_signing_alg_values_supported"),
            code_challenge_methods_supported: list("code_challenge_methods_supported"),
            scopes_supported: list("scopes_supported"),
            token_endpoint_auth_methods_supported: list("token_endpoint_auth_methods_supported"),
            claims_supported: list("claims_supported"),
        }))
    }

    async fn list_refresh(
        &self,
        request: Request<proto::ListRefreshReq>,
    ) -> Result<Response<proto::ListRefreshResp>, Status> {
        let (user_id, connector_id) = subject(&request.get_ref().user_id)?;
        let (provider, config) = self.context().await;
        let directory = directory!(provider, config, &self.hasher);
        let refresh_tokens = directory
            .list_refresh(&user_id, &connector_id)
            .await
            .map_err(|e| failed("list refresh tokens", e))?
            .into_iter()
            .map(|r| proto::RefreshTokenRef {
                id: r.id,
                client_id: r.client_id,
                created_at: r.created_at,
                last_used: r.last_used,
            })
            .collect();
        Ok(Response::new(proto::ListRefreshResp { refresh_tokens }))
    }

    async fn revoke_refresh(
        &self,
        request: Request<proto::RevokeRefreshReq>,
    ) -> Result<Response<proto::RevokeRefreshResp>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        let (user_id, connector_id) = subject(&req.user_id)?;
        let (provider, config) = self.context().await;
        let directory = directory!(provider, config, &self.hasher);
        let revoked = directory
            .revoke_refresh(&actor, &user_id, &connector_id, &req.client_id)
            .await
            .map_err(|e| failed("revoke refresh token", e))?;
        Ok(Response::new(proto::RevokeRefreshResp {
            not_found: !revoked,
        }))
    }

    async fn verify_password(
        &self,
        request: Request<proto::VerifyPasswordReq>,
    ) -> Result<Response<proto::VerifyPasswordResp>, Status> {
        let caller = actor(&request).name;
        let peer = request
            .remote_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        let req = request.into_inner();
        if req.email.is_empty() {
            return Err(unknown("no email supplied"));
        }
        if req.password.is_empty() {
            return Err(unknown("no password to verify supplied"));
        }
        let (provider, config) = self.context().await;
        let directory = directory!(provider, config, &self.hasher);
        let entry = directory
            .password_entry(&req.email)
            .await
            .map_err(|e| failed("verify password", e))?;
        // The login form's budget for the password database (connector `local`), keyed the
        // same way, so guesses through the API and the form draw on one budget per account;
        // and one per caller: the certificate's subject and the peer address.
        let account = match &entry {
            Some(e) => format!("acct:local:id:{}", e.user_id),
            None => format!("acct:local:name:{}", req.email.to_lowercase()),
        };
        let attempt = PasswordAttempt::reserve(
            &provider.login_limiter,
            &provider.storage,
            account,
            format!("grpc:{caller}:{peer}"),
            provider.now(),
        )
        .await
        .map_err(|e| failed("verify password", ManageError::Storage(e)))?;
        let attempt = match attempt {
            Ok(attempt) => attempt,
            Err(retry) => {
                return Err(Status::resource_exhausted(format!(
                    "too many failed attempts; retry in {} seconds",
                    retry.retry_after_secs()
                )))
            }
        };
        let Some(entry) = entry else {
            return Ok(Response::new(proto::VerifyPasswordResp {
                verified: false,
                not_found: true,
            }));
        };
        match directory.check_password(&entry, &req.password).await {
            Ok(verified) => {
                if verified {
                    attempt.succeeded(&provider.login_limiter, &provider.storage);
                }
                Ok(Response::new(proto::VerifyPasswordResp {
                    verified,
                    not_found: false,
                }))
            }
            Err(e) => {
                attempt
                    .not_checked(&provider.login_limiter, &provider.storage)
                    .await;
                Err(failed("verify password", e))
            }
        }
    }
}
