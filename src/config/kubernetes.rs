//! lanyard's `kubernetes:`: the clusters whose API servers trust lanyard, the RBAC bindings
//! rendered for them, and the issuer's private CA.

use std::collections::HashMap;
use std::path::PathBuf;

use base64::Engine as _;
use serde::Deserialize;
use serde_yaml_ng::Value;
use url::Url;

use super::path::{index_path, key_path};
use super::raw::LenientBool;
use super::resolve::{list_at, Ctx};
use super::static_clients::StaticClient;

/// lanyard's `kubernetes:` section: the clusters whose API servers trust lanyard, and the
/// RBAC bindings lanyard renders for them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubernetesConfig {
    pub clusters: Vec<KubeCluster>,
    pub rbac: Vec<RbacBinding>,
    /// The CA of the issuer's TLS certificate, when it is not publicly trusted
    /// (`issuerCertificateAuthorityData` or `issuerCertificateAuthorityFile`): what renders
    /// for kubectl and kube-apiserver carries it.
    pub issuer_ca: Option<IssuerCa>,
}

/// The issuer's private CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerCa {
    /// CERTIFICATE blocks only, re-encoded.
    pub pem: String,
    /// The file it was read from, when it came from `issuerCertificateAuthorityFile`.
    pub file: Option<PathBuf>,
}

impl KubernetesConfig {
    pub fn cluster(&self, name: &str) -> Option<&KubeCluster> {
        self.clusters.iter().find(|c| c.name == name)
    }

    pub fn cluster_names(&self) -> Vec<&str> {
        self.clusters.iter().map(|c| c.name.as_str()).collect()
    }
}

/// An entry of `kubernetes.clusters`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeCluster {
    /// Letters, digits, `.`, `_` and `-`: it names kubeconfig entries and files.
    pub name: String,
    /// Shown on pages; the name when the config gives none.
    pub display_name: String,
    /// The API server's https URL, as written.
    pub server: String,
    /// The API server's CA certificates as PEM (only CERTIFICATE blocks, re-encoded), from
    /// `certificateAuthorityData` (base64 of PEM, as in kubeconfig) or `certificateAuthorityFile`.
    pub certificate_authority_pem: String,
    /// A client in `staticClients`: the audience of the ID tokens this cluster accepts.
    pub client_id: String,
    /// The context's default namespace (default `default`).
    pub namespace: String,
    /// The kubeconfig context (default: the name).
    pub context_name: String,
    /// Default `email`.
    pub username_claim: String,
    /// Default `oidc:`. May be empty (no prefix). Never starts with `system:`.
    pub username_prefix: String,
    /// Default `groups`.
    pub groups_claim: String,
    /// Default `oidc:`. May be empty (no prefix). Never starts with `system:`.
    pub groups_prefix: String,
    /// The operator marked this cluster's client as handing its secret to users: the
    /// kubeconfig and login commands carry it.
    pub client_secret_for_users: bool,
}

/// An entry of `kubernetes.rbac`: members of `group` get `role` (in `namespace`, or
/// cluster-wide for a cluster role without a namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbacBinding {
    /// As the upstream names it (e.g. GitHub's `acme:platform`), without the cluster's
    /// groups prefix.
    pub group: String,
    pub role: RbacRole,
    /// Always set for [`RbacRole::Role`].
    pub namespace: Option<String>,
    /// The clusters the binding is for; empty: every cluster.
    pub clusters: Vec<String>,
}

impl RbacBinding {
    pub fn applies_to(&self, cluster: &str) -> bool {
        self.clusters.is_empty() || self.clusters.iter().any(|c| c == cluster)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RbacRole {
    Role(String),
    ClusterRole(String),
}

impl RbacRole {
    pub fn name(&self) -> &str {
        match self {
            RbacRole::Role(n) | RbacRole::ClusterRole(n) => n,
        }
    }

    /// The `roleRef.kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            RbacRole::Role(_) => "Role",
            RbacRole::ClusterRole(_) => "ClusterRole",
        }
    }
}

/// lanyard's `kubernetes:` section. The lists stay trees so that each entry is read (and
/// reported) on its own.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawKubernetes {
    pub clusters: Option<Value>,
    pub rbac: Option<Value>,
    pub issuer_certificate_authority_data: Option<String>,
    pub issuer_certificate_authority_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawKubeCluster {
    pub name: Option<String>,
    pub display_name: Option<String>,
    pub server: Option<String>,
    pub certificate_authority_data: Option<String>,
    pub certificate_authority_file: Option<String>,
    #[serde(rename = "clientID")]
    pub client_id: Option<String>,
    pub namespace: Option<String>,
    pub context_name: Option<String>,
    pub username_claim: Option<String>,
    pub username_prefix: Option<String>,
    pub groups_claim: Option<String>,
    pub groups_prefix: Option<String>,
    pub client_secret_for_users: Option<LenientBool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawRbacBinding {
    pub group: Option<String>,
    pub role: Option<String>,
    pub cluster_role: Option<String>,
    pub namespace: Option<String>,
    pub clusters: Option<Vec<String>>,
}

const DEFAULT_KUBE_NAMESPACE: &str = "default";

const DEFAULT_USERNAME_CLAIM: &str = "email";

const DEFAULT_GROUPS_CLAIM: &str = "groups";

/// kube-apiserver requires a prefix whenever a claim is mapped (AuthenticationConfiguration),
/// and a prefix keeps lanyard's users and groups apart from every other authenticator's.
const DEFAULT_KUBE_PREFIX: &str = "oidc:";

/// Kubernetes reserves `system:` for its own users and groups.
const RESERVED_KUBE_PREFIX: &str = "system:";

pub(super) fn resolve_kubernetes(
    value: Value,
    clients: &[StaticClient],
    ctx: &mut Ctx,
) -> KubernetesConfig {
    let Some(raw) = ctx.de::<RawKubernetes>(value, "kubernetes") else {
        return KubernetesConfig::default();
    };
    let (clusters, names) =
        resolve_kube_clusters(raw.clusters.unwrap_or(Value::Null), clients, ctx);
    let rbac = resolve_rbac(raw.rbac.unwrap_or(Value::Null), &names, ctx);
    if !rbac.is_empty() && names.is_empty() {
        ctx.warn(
            "kubernetes.rbac",
            "no kubernetes.clusters are configured, so these bindings apply nowhere",
        );
    }
    let issuer_ca_file = raw
        .issuer_certificate_authority_file
        .clone()
        .filter(|f| !f.is_empty());
    let issuer_ca_pem = pem_data_or_file(
        raw.issuer_certificate_authority_data.as_deref(),
        issuer_ca_file.as_deref(),
        "kubernetes",
        (
            "issuerCertificateAuthorityData",
            "issuerCertificateAuthorityFile",
        ),
        ctx,
    )
    .flatten();
    KubernetesConfig {
        clusters,
        rbac,
        issuer_ca: issuer_ca_pem.map(|pem| IssuerCa {
            pem,
            file: issuer_ca_file.map(PathBuf::from),
        }),
    }
}

/// Names that become kubeconfig entries, file names and `--cluster` arguments.
fn is_cluster_name(name: &str) -> bool {
    name.bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// A DNS-1123 label, as Kubernetes requires of namespace names.
fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn names_list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The certificates in a PEM text, each re-encoded in 64-column lines; anything outside the
/// blocks (comments, "Bag Attributes") is dropped. Errors when there is no certificate, a
/// block does not decode, or a block is not a certificate (a private key pasted by mistake
/// must not end up in every kubeconfig).
pub fn normalize_pem_certificates(text: &str) -> Result<String, String> {
    use base64::engine::general_purpose::STANDARD;
    let mut out = String::new();
    let mut block: Option<(String, String)> = None;
    for line in text.lines().map(str::trim) {
        match &mut block {
            None => {
                if let Some(label) = line
                    .strip_prefix("-----BEGIN ")
                    .and_then(|l| l.strip_suffix("-----"))
                {
                    block = Some((label.to_string(), String::new()));
                }
            }
            Some((label, body)) => {
                if let Some(end) = line
                    .strip_prefix("-----END ")
                    .and_then(|l| l.strip_suffix("-----"))
                {
                    if end != label {
                        return Err(format!("PEM block `{label}` ends with `END {end}`"));
                    }
                    if label != "CERTIFICATE" {
                        return Err(format!(
                            "contains a `{label}` PEM block; only CERTIFICATE blocks belong here"
                        ));
                    }
                    let der = STANDARD
                        .decode(body.as_bytes())
                        .map_err(|_| "a CERTIFICATE block is not valid base64".to_string())?;
                    // Every X.509 certificate is a DER SEQUENCE.
                    if der.len() < 16 || der[0] != 0x30 {
                        return Err("a CERTIFICATE block does not hold a certificate".to_string());
                    }
                    out.push_str("-----BEGIN CERTIFICATE-----\n");
                    let encoded = STANDARD.encode(&der);
                    for chunk in encoded.as_bytes().chunks(64) {
                        out.push_str(&String::from_utf8_lossy(chunk));
                        out.push('\n');
                    }
                    out.push_str("-----END CERTIFICATE-----\n");
                    block = None;
                } else {
                    body.push_str(line);
                }
            }
        }
    }
    if let Some((label, _)) = block {
        return Err(format!("PEM block `{label}` has no END line"));
    }
    if out.is_empty() {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) found".to_string());
    }
    Ok(out)
}

/// The cluster's CA from exactly one of `certificateAuthorityData` and
/// `certificateAuthorityFile`, as normalised PEM.
fn kube_cluster_ca(raw: &RawKubeCluster, path: &str, ctx: &mut Ctx) -> Option<String> {
    let ca = pem_data_or_file(
        raw.certificate_authority_data.as_deref(),
        raw.certificate_authority_file.as_deref(),
        path,
        ("certificateAuthorityData", "certificateAuthorityFile"),
        ctx,
    )?;
    if ca.is_none() {
        ctx.err(
            key_path(path, "certificateAuthorityData"),
            "missing required key `certificateAuthorityData` (or `certificateAuthorityFile`): kubeconfigs always carry the API server's CA",
        );
    }
    ca
}

/// CA certificates from at most one of two keys (`keys`: the data key, base64 of the PEM as
/// in a kubeconfig, and the file key, a PEM file read at load), as normalised PEM.
/// `None` when the value is in error (recorded), `Some(None)` when neither key is set.
fn pem_data_or_file(
    data: Option<&str>,
    file: Option<&str>,
    path: &str,
    (data_key, file_key): (&str, &str),
    ctx: &mut Ctx,
) -> Option<Option<String>> {
    let data = data.filter(|s| !s.is_empty());
    let file = file.filter(|s| !s.is_empty());
    match (data, file) {
        (Some(_), Some(_)) => {
            ctx.err(
                path,
                format!("set either `{data_key}` or `{file_key}`, not both"),
            );
            None
        }
        (None, None) => Some(None),
        (Some(data), None) => {
            let at = key_path(path, data_key);
            if data.trim_start().starts_with("-----BEGIN") {
                ctx.err(
                    at,
                    format!("expected base64 of the PEM, as in a kubeconfig's certificate-authority-data (or put the PEM in a file and use {file_key})"),
                );
                return None;
            }
            let compact: String = data.chars().filter(|c| !c.is_whitespace()).collect();
            let pem = base64::engine::general_purpose::STANDARD
                .decode(compact.as_bytes())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok());
            let Some(pem) = pem else {
                ctx.err(at, "is not base64 of a PEM certificate");
                return None;
            };
            match normalize_pem_certificates(&pem) {
                Ok(pem) => Some(Some(pem)),
                Err(e) => {
                    ctx.err(at, format!("the decoded PEM is not usable: {e}"));
                    None
                }
            }
        }
        (None, Some(file)) => {
            let at = key_path(path, file_key);
            let text = match std::fs::read_to_string(file) {
                Ok(t) => t,
                Err(e) => {
                    ctx.err(at, format!("cannot read `{file}`: {e}"));
                    return None;
                }
            };
            match normalize_pem_certificates(&text) {
                Ok(pem) => Some(Some(pem)),
                Err(e) => {
                    ctx.err(at, format!("`{file}` is not a PEM certificate file: {e}"));
                    None
                }
            }
        }
    }
}

fn kube_server(server: Option<String>, path: &str, ctx: &mut Ctx) -> Option<String> {
    let at = key_path(path, "server");
    let Some(server) = server.filter(|s| !s.is_empty()) else {
        ctx.err(
            at,
            "missing required key `server` (the API server's https URL)",
        );
        return None;
    };
    let problem = match Url::parse(&server) {
        Err(e) => Some(format!("`{server}` is not a valid URL: {e}")),
        Ok(url) if url.scheme() != "https" => Some(format!(
            "`{server}` must be an https URL: kube-apiserver serves TLS, and tokens must not travel in clear"
        )),
        Ok(url) if url.host().is_none() => Some(format!("`{server}` has no host")),
        Ok(url) if !url.username().is_empty() || url.password().is_some() => {
            Some("the server URL must not contain credentials".to_string())
        }
        Ok(url) if url.query().is_some() || url.fragment().is_some() => Some(format!(
            "`{server}` must not have a query or fragment"
        )),
        Ok(_) => None,
    };
    match problem {
        Some(message) => {
            ctx.err(at, message);
            None
        }
        None => Some(server),
    }
}

/// A claim name; `default` when absent.
fn kube_claim(value: Option<String>, default: &str) -> String {
    value
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// A prefix: `oidc:` when absent; an explicit empty string means no prefix.
fn kube_prefix(value: Option<String>, path: &str, key: &str, ctx: &mut Ctx) -> String {
    let prefix = value.unwrap_or_else(|| DEFAULT_KUBE_PREFIX.to_string());
    if prefix.starts_with(RESERVED_KUBE_PREFIX) {
        ctx.err(
            key_path(path, key),
            format!("must not start with `{RESERVED_KUBE_PREFIX}`: Kubernetes reserves it, and lanyard's AuthenticationConfiguration refuses such names"),
        );
    }
    prefix
}

/// Returns the clusters that resolved, and every name written (so that RBAC entries naming a
/// cluster that has some other error are not reported twice).
fn resolve_kube_clusters(
    value: Value,
    clients: &[StaticClient],
    ctx: &mut Ctx,
) -> (Vec<KubeCluster>, Vec<String>) {
    let mut out = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut seen_names: HashMap<String, usize> = HashMap::new();
    let mut seen_contexts: HashMap<String, usize> = HashMap::new();
    for (i, raw) in list_at::<RawKubeCluster>(value, "kubernetes.clusters", ctx) {
        let path = index_path("kubernetes.clusters", i);
        let before = ctx.errors.len();

        let name = raw.name.clone().filter(|n| !n.is_empty());
        match &name {
            None => ctx.err(key_path(&path, "name"), "missing required key `name`"),
            Some(name) => {
                names.push(name.clone());
                if !is_cluster_name(name) {
                    ctx.err(
                        key_path(&path, "name"),
                        format!("`{name}` is not a valid cluster name: use letters, digits, `.`, `_` and `-`, starting with a letter or digit"),
                    );
                }
                if let Some(first) = seen_names.get(name) {
                    ctx.err(
                        key_path(&path, "name"),
                        format!(
                            "duplicate cluster name `{name}` (also kubernetes.clusters[{first}])"
                        ),
                    );
                } else {
                    seen_names.insert(name.clone(), i);
                }
            }
        }

        let server = kube_server(raw.server.clone(), &path, ctx);
        let ca = kube_cluster_ca(&raw, &path, ctx);

        let client_secret_for_users = raw.client_secret_for_users.is_some_and(|b| b.0);
        let client_id = raw.client_id.filter(|c| !c.is_empty());
        match &client_id {
            None => ctx.err(
                key_path(&path, "clientID"),
                "missing required key `clientID` (the static client whose ID tokens this cluster accepts)",
            ),
            Some(id) => match clients.iter().find(|c| &c.id == id) {
                None => {
                    let ids: Vec<String> = clients.iter().map(|c| c.id.clone()).collect();
                    ctx.err(
                        key_path(&path, "clientID"),
                        format!(
                            "no static client has the id `{id}`; staticClients: {}",
                            names_list(&ids)
                        ),
                    );
                }
                Some(client) if client_secret_for_users && client.secret.is_none() => ctx.err(
                    key_path(&path, "clientSecretForUsers"),
                    format!("client `{id}` is public: it has no secret to hand to users"),
                ),
                Some(_) => {}
            },
        }

        let namespace = kube_claim(raw.namespace, DEFAULT_KUBE_NAMESPACE);
        if !is_dns_label(&namespace) {
            ctx.err(
                key_path(&path, "namespace"),
                format!("`{namespace}` is not a valid namespace name (lowercase letters, digits and `-`, at most 63)"),
            );
        }
        let context_name = raw
            .context_name
            .filter(|c| !c.is_empty())
            .or_else(|| name.clone());
        if let Some(context) = &context_name {
            if let Some(first) = seen_contexts.get(context) {
                ctx.err(
                    key_path(&path, "contextName"),
                    format!(
                        "duplicate context name `{context}` (also kubernetes.clusters[{first}])"
                    ),
                );
            } else {
                seen_contexts.insert(context.clone(), i);
            }
        }
        let username_claim = kube_claim(raw.username_claim, DEFAULT_USERNAME_CLAIM);
        let groups_claim = kube_claim(raw.groups_claim, DEFAULT_GROUPS_CLAIM);
        let username_prefix = kube_prefix(raw.username_prefix, &path, "usernamePrefix", ctx);
        let groups_prefix = kube_prefix(raw.groups_prefix, &path, "groupsPrefix", ctx);

        if ctx.errors.len() != before {
            continue;
        }
        let (Some(name), Some(server), Some(ca), Some(client_id), Some(context_name)) =
            (name, server, ca, client_id, context_name)
        else {
            continue;
        };
        out.push(KubeCluster {
            display_name: raw
                .display_name
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| name.clone()),
            name,
            server,
            certificate_authority_pem: ca,
            client_id,
            namespace,
            context_name,
            username_claim,
            username_prefix,
            groups_claim,
            groups_prefix,
            client_secret_for_users,
        });
    }
    (out, names)
}

/// Role names are path segments in the Kubernetes API.
fn is_role_name(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('/') && !s.contains('%')
}

fn resolve_rbac(value: Value, cluster_names: &[String], ctx: &mut Ctx) -> Vec<RbacBinding> {
    let mut out: Vec<(usize, RbacBinding)> = Vec::new();
    for (i, raw) in list_at::<RawRbacBinding>(value, "kubernetes.rbac", ctx) {
        let path = index_path("kubernetes.rbac", i);
        let before = ctx.errors.len();
        let group = raw.group.filter(|g| !g.is_empty());
        if group.is_none() {
            ctx.err(
                key_path(&path, "group"),
                "missing required key `group` (the upstream group, e.g. a GitHub team `acme:platform`)",
            );
        }
        let namespace = raw.namespace.filter(|n| !n.is_empty());
        if let Some(ns) = &namespace {
            if !is_dns_label(ns) {
                ctx.err(
                    key_path(&path, "namespace"),
                    format!("`{ns}` is not a valid namespace name (lowercase letters, digits and `-`, at most 63)"),
                );
            }
        }
        let role = match (
            raw.role.filter(|r| !r.is_empty()),
            raw.cluster_role.filter(|r| !r.is_empty()),
        ) {
            (Some(_), Some(_)) => {
                ctx.err(&path, "set either `role` or `clusterRole`, not both");
                None
            }
            (None, None) => {
                ctx.err(
                    key_path(&path, "clusterRole"),
                    "missing required key `clusterRole` (or `role` with `namespace`)",
                );
                None
            }
            (Some(role), None) => {
                if namespace.is_none() {
                    ctx.err(
                        key_path(&path, "namespace"),
                        "required with `role`: a Role lives in one namespace (bind a `clusterRole` for the whole cluster)",
                    );
                }
                Some(RbacRole::Role(role))
            }
            (None, Some(role)) => Some(RbacRole::ClusterRole(role)),
        };
        if let Some(role) = &role {
            if !is_role_name(role.name()) {
                let key = match role {
                    RbacRole::Role(_) => "role",
                    RbacRole::ClusterRole(_) => "clusterRole",
                };
                ctx.err(
                    key_path(&path, key),
                    format!("`{}` is not a valid role name", role.name()),
                );
            }
        }
        let clusters = raw.clusters.unwrap_or_default();
        for (j, c) in clusters.iter().enumerate() {
            if !cluster_names.contains(c) {
                ctx.err(
                    index_path(&key_path(&path, "clusters"), j),
                    format!(
                        "no cluster is named `{c}`; kubernetes.clusters: {}",
                        names_list(cluster_names)
                    ),
                );
            }
        }
        if ctx.errors.len() != before {
            continue;
        }
        let (Some(group), Some(role)) = (group, role) else {
            continue;
        };
        let mut sorted = clusters.clone();
        sorted.sort();
        sorted.dedup();
        let binding = RbacBinding {
            group,
            role,
            namespace,
            clusters: sorted,
        };
        if let Some((first, _)) = out.iter().find(|(_, b)| *b == binding) {
            ctx.err(
                &path,
                format!("duplicate binding (also kubernetes.rbac[{first}])"),
            );
            continue;
        }
        out.push((i, binding));
    }
    out.into_iter().map(|(_, b)| b).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_pem() -> String {
        rcgen::generate_simple_self_signed(vec!["k.example.com".to_string()])
            .unwrap()
            .cert
            .pem()
    }

    #[test]
    fn pem_certificates_are_kept_and_everything_else_dropped() {
        let (a, b) = (cert_pem(), cert_pem());
        let text = format!(
            "subject=CN=a\r\n{}\nBag Attributes\n{b}",
            a.replace('\n', "\r\n")
        );
        assert_eq!(
            normalize_pem_certificates(&text).unwrap(),
            format!("{a}{b}")
        );
    }

    #[test]
    fn pem_without_a_certificate_or_with_broken_blocks_is_refused() {
        let a = cert_pem();
        assert!(normalize_pem_certificates("")
            .unwrap_err()
            .contains("no PEM certificate"));
        let unterminated = a.replace("-----END CERTIFICATE-----\n", "");
        assert!(normalize_pem_certificates(&unterminated)
            .unwrap_err()
            .contains("no END line"));
        let mismatched = a.replace("END CERTIFICATE", "END X509 CRL");
        assert!(normalize_pem_certificates(&mismatched)
            .unwrap_err()
            .contains("ends with"));
        let key = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----\n";
        let with_key = format!("{a}{key}");
        assert!(normalize_pem_certificates(&with_key)
            .unwrap_err()
            .contains("`EC PRIVATE KEY`"));
        let garbled = a.replacen("MII", "!!!", 1);
        assert!(normalize_pem_certificates(&garbled)
            .unwrap_err()
            .contains("not valid base64"));
    }
}
