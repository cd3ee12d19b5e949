//! How kube-apiserver trusts lanyard: `--oidc-*` flags, or a structured
//! AuthenticationConfiguration (with a validator that applies the API server's own rules).

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use serde_yaml_ng::Value;
use url::Url;

use super::{to_yaml, KubeError};
use crate::config::{normalize_pem_certificates, KubeCluster, SigningAlg};

/// Where the flags expect the CA of lanyard's TLS certificate on the control-plane node, when
/// it is private: the operator copies the CA there (kubeadm keeps its PKI in this directory).
pub const APISERVER_CA_FILE: &str = "/etc/kubernetes/pki/lanyard-ca.pem";

/// The API server refuses more than this many `jwt` entries.
const MAX_JWT_AUTHENTICATORS: usize = 64;

const EMAIL_VERIFIED_RULE: &str = "claims.?email_verified.orValue(true) == true";
const NO_SYSTEM_USERNAME_RULE: &str = "!user.username.startsWith('system:')";
const NO_SYSTEM_GROUPS_RULE: &str = "user.groups.all(group, !group.startsWith('system:'))";

/// kube-apiserver's `--oidc-*` flags for `cluster`, one per element.
///
/// An empty username prefix is written `-`: without a prefix flag kube-apiserver prefixes
/// every claim but `email` with the issuer URL, and `-` is how the flag says "none". An empty
/// groups prefix is left out (no prefix is the flag's default). `--oidc-ca-file` (pointing
/// at [`APISERVER_CA_FILE`]) only when the issuer's CA is private: without it the API server
/// trusts its host's CAs, as it should a publicly trusted issuer.
pub fn apiserver_flags(
    issuer: &str,
    cluster: &KubeCluster,
    alg: SigningAlg,
    private_issuer_ca: bool,
) -> Vec<String> {
    let username_prefix = if cluster.username_prefix.is_empty() {
        "-"
    } else {
        cluster.username_prefix.as_str()
    };
    let mut flags = vec![
        format!("--oidc-issuer-url={issuer}"),
        format!("--oidc-client-id={}", cluster.client_id),
        format!("--oidc-username-claim={}", cluster.username_claim),
        format!("--oidc-username-prefix={username_prefix}"),
        format!("--oidc-groups-claim={}", cluster.groups_claim),
    ];
    if !cluster.groups_prefix.is_empty() {
        flags.push(format!("--oidc-groups-prefix={}", cluster.groups_prefix));
    }
    if private_issuer_ca {
        flags.push(format!("--oidc-ca-file={APISERVER_CA_FILE}"));
    }
    flags.push(format!("--oidc-signing-algs={}", alg.as_str()));
    flags
}

/// The `apiVersion` of an AuthenticationConfiguration: `v1` (Kubernetes 1.34 and later) or
/// `v1beta1` (1.30 to 1.33).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthnConfigVersion {
    #[default]
    V1,
    V1beta1,
}

impl AuthnConfigVersion {
    pub fn api_version(self) -> &'static str {
        match self {
            AuthnConfigVersion::V1 => "apiserver.config.k8s.io/v1",
            AuthnConfigVersion::V1beta1 => "apiserver.config.k8s.io/v1beta1",
        }
    }
}

impl fmt::Display for AuthnConfigVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthnConfigVersion::V1 => "v1",
            AuthnConfigVersion::V1beta1 => "v1beta1",
        })
    }
}

impl FromStr for AuthnConfigVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.strip_prefix("apiserver.config.k8s.io/").unwrap_or(s) {
            "v1" => Ok(AuthnConfigVersion::V1),
            "v1beta1" => Ok(AuthnConfigVersion::V1beta1),
            _ => Err(format!("unknown version `{s}`; expected v1 or v1beta1")),
        }
    }
}

#[derive(Serialize)]
struct AuthenticationConfiguration {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    jwt: Vec<JwtAuthenticator>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JwtAuthenticator {
    issuer: Issuer,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    claim_validation_rules: Vec<Rule>,
    claim_mappings: ClaimMappings,
    user_validation_rules: Vec<Rule>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Issuer {
    url: String,
    audiences: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    audience_match_policy: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate_authority: Option<String>,
}

#[derive(Serialize)]
struct Rule {
    expression: &'static str,
    message: &'static str,
}

#[derive(Serialize)]
struct ClaimMappings {
    username: PrefixedClaim,
    groups: PrefixedClaim,
}

#[derive(Serialize)]
struct PrefixedClaim {
    claim: String,
    prefix: String,
}

/// The claim mapping that must be the same for every cluster in one `jwt` entry.
fn mapping_of(c: &KubeCluster) -> (&str, &str, &str, &str) {
    (
        &c.username_claim,
        &c.username_prefix,
        &c.groups_claim,
        &c.groups_prefix,
    )
}

/// An AuthenticationConfiguration (the API server's `--authentication-config` file) that
/// trusts `issuer` for `clusters`: one `jwt` entry (the API server allows one per issuer URL)
/// whose audiences are the clusters' client ids, `MatchAny` when there are several.
/// `issuer_ca_pem` is the CA of lanyard's TLS certificate when it is not publicly trusted.
///
/// Pass one cluster to configure that cluster's API server: with several, a token minted
/// for one cluster's client is accepted by every API server given this file.
///
/// Errors when the clusters map claims differently (that would need two entries for one
/// issuer) or when the result breaks one of the API server's rules (e.g. an http issuer).
pub fn authentication_configuration(
    issuer: &str,
    clusters: &[&KubeCluster],
    version: AuthnConfigVersion,
    issuer_ca_pem: Option<&str>,
) -> Result<String, KubeError> {
    let Some(first) = clusters.first() else {
        return Err(KubeError::NoClusters);
    };
    let differing: Vec<String> = clusters
        .iter()
        .filter(|c| mapping_of(c) != mapping_of(first))
        .map(|c| c.name.clone())
        .collect();
    if !differing.is_empty() {
        let mut names = vec![first.name.clone()];
        names.extend(differing);
        return Err(KubeError::ConflictingClaimMappings { clusters: names });
    }

    let mut audiences: Vec<String> = Vec::new();
    for c in clusters {
        if !audiences.contains(&c.client_id) {
            audiences.push(c.client_id.clone());
        }
    }
    let mut claim_validation_rules = Vec::new();
    if first.username_claim == "email" {
        // An unverified address must not become a Kubernetes username; a token without the
        // claim is one whose upstream vouches for the address some other way.
        claim_validation_rules.push(Rule {
            expression: EMAIL_VERIFIED_RULE,
            message: "the email address in the token is not verified",
        });
    }
    let doc = AuthenticationConfiguration {
        api_version: version.api_version(),
        kind: "AuthenticationConfiguration",
        jwt: vec![JwtAuthenticator {
            issuer: Issuer {
                url: issuer.to_string(),
                audience_match_policy: (audiences.len() > 1).then_some("MatchAny"),
                audiences,
                certificate_authority: issuer_ca_pem.map(str::to_string),
            },
            claim_validation_rules,
            claim_mappings: ClaimMappings {
                username: PrefixedClaim {
                    claim: first.username_claim.clone(),
                    prefix: first.username_prefix.clone(),
                },
                groups: PrefixedClaim {
                    claim: first.groups_claim.clone(),
                    prefix: first.groups_prefix.clone(),
                },
            },
            user_validation_rules: vec![
                Rule {
                    expression: NO_SYSTEM_USERNAME_RULE,
                    message: "usernames starting with system: are reserved for Kubernetes",
                },
                Rule {
                    expression: NO_SYSTEM_GROUPS_RULE,
                    message: "groups starting with system: are reserved for Kubernetes",
                },
            ],
        }],
    };
    let text = to_yaml(&doc);
    let parsed: Value = serde_yaml_ng::from_str(&text).map_err(|e| {
        KubeError::InvalidAuthenticationConfiguration(vec![format!("does not parse back: {e}")])
    })?;
    let problems = validate_authentication_configuration(&parsed);
    if problems.is_empty() {
        Ok(text)
    } else {
        Err(KubeError::InvalidAuthenticationConfiguration(problems))
    }
}

// ---------------------------------------------------------------------------------------
// validation

/// The rules kube-apiserver applies to an AuthenticationConfiguration's `jwt` entries
/// (k8s.io/apiserver's validation of JWTAuthenticator), minus CEL compilation: every problem,
/// each as `path: message`. Empty means the API server would accept it.
pub fn validate_authentication_configuration(doc: &Value) -> Vec<String> {
    let mut v = Validator::default();
    let Some(root) = doc.as_mapping() else {
        v.err("", "must be a mapping");
        return v.errors;
    };
    match root.get("apiVersion").and_then(Value::as_str) {
        Some(
            "apiserver.config.k8s.io/v1"
            | "apiserver.config.k8s.io/v1beta1"
            | "apiserver.config.k8s.io/v1alpha1",
        ) => {}
        other => v.err(
            "apiVersion",
            format!(
                "must be apiserver.config.k8s.io/v1, v1beta1 or v1alpha1, not {}",
                show(other)
            ),
        ),
    }
    if root.get("kind").and_then(Value::as_str) != Some("AuthenticationConfiguration") {
        v.err("kind", "must be AuthenticationConfiguration");
    }
    let entries = match root.get("jwt") {
        // Zero authenticators is allowed (they can be added later).
        None | Some(Value::Null) => return v.errors,
        Some(Value::Sequence(entries)) => entries,
        Some(_) => {
            v.err("jwt", "must be a list");
            return v.errors;
        }
    };
    if entries.len() > MAX_JWT_AUTHENTICATORS {
        v.err(
            "jwt",
            format!(
                "too many entries: {} (at most {MAX_JWT_AUTHENTICATORS})",
                entries.len()
            ),
        );
        return v.errors;
    }
    let mut issuers = HashSet::new();
    let mut discovery_urls = HashSet::new();
    for (i, entry) in entries.iter().enumerate() {
        let path = format!("jwt[{i}]");
        let Some(entry) = entry.as_mapping() else {
            v.err(&path, "must be a mapping");
            continue;
        };
        v.issuer(
            entry.get("issuer"),
            &path,
            &mut issuers,
            &mut discovery_urls,
        );
        v.claim_validation_rules(entry.get("claimValidationRules"), &path);
        v.claim_mappings(entry.get("claimMappings"), &path);
        v.user_validation_rules(entry.get("userValidationRules"), &path);
    }
    v.errors
}

fn show(value: Option<&str>) -> String {
    match value {
        Some(s) => format!("`{s}`"),
        None => "missing".to_string(),
    }
}

#[derive(Default)]
struct Validator {
    errors: Vec<String>,
}

/// A field read as the API server's Go struct would: absent and null are "", a non-string
/// is an error.
enum Field<'a> {
    Absent,
    Str(&'a str),
    NotAString,
}

fn field<'a>(map: &'a serde_yaml_ng::Mapping, key: &str) -> Field<'a> {
    match map.get(key) {
        None | Some(Value::Null) => Field::Absent,
        Some(Value::String(s)) => Field::Str(s),
        Some(_) => Field::NotAString,
    }
}

impl Validator {
    fn err(&mut self, path: &str, message: impl fmt::Display) {
        if path.is_empty() {
            self.errors.push(message.to_string());
        } else {
            self.errors.push(format!("{path}: {message}"));
        }
    }

    /// A string field; "" when absent, recording an error when it is not a string.
    fn string<'a>(&mut self, map: &'a serde_yaml_ng::Mapping, key: &str, path: &str) -> &'a str {
        match field(map, key) {
            Field::Absent => "",
            Field::Str(s) => s,
            Field::NotAString => {
                self.err(&format!("{path}.{key}"), "must be a string");
                ""
            }
        }
    }

    /// A list of mappings; empty when absent.
    fn mappings<'a>(
        &mut self,
        value: Option<&'a Value>,
        path: &str,
    ) -> Vec<(String, &'a serde_yaml_ng::Mapping)> {
        match value {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Sequence(items)) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| {
                    let at = format!("{path}[{i}]");
                    match item.as_mapping() {
                        Some(m) => Some((at, m)),
                        None => {
                            self.err(&at, "must be a mapping");
                            None
                        }
                    }
                })
                .collect(),
            Some(_) => {
                self.err(path, "must be a list");
                Vec::new()
            }
        }
    }

    fn url(&mut self, text: &str, path: &str) {
        let url = match Url::parse(text) {
            Ok(url) => url,
            Err(e) => {
                self.err(path, format!("`{text}` is not a URL: {e}"));
                return;
            }
        };
        if url.scheme() != "https" {
            self.err(path, format!("`{text}`: URL scheme must be https"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            self.err(path, "URL must not contain a username or password");
        }
        if url.query().is_some_and(|q| !q.is_empty()) {
            self.err(path, format!("`{text}`: URL must not contain a query"));
        }
        if url.fragment().is_some_and(|f| !f.is_empty()) {
            self.err(path, format!("`{text}`: URL must not contain a fragment"));
        }
    }

    fn issuer(
        &mut self,
        issuer: Option<&Value>,
        entry_path: &str,
        issuers: &mut HashSet<String>,
        discovery_urls: &mut HashSet<String>,
    ) {
        let path = format!("{entry_path}.issuer");
        let Some(issuer) = issuer.and_then(Value::as_mapping) else {
            self.err(&path, "required: a mapping with url and audiences");
            return;
        };
        let url_path = format!("{path}.url");
        let url = self.string(issuer, "url", &path);
        if url.is_empty() {
            self.err(&url_path, "required");
        } else {
            self.url(url, &url_path);
            if !issuers.insert(url.to_string()) {
                self.err(
                    &url_path,
                    format!("duplicate issuer URL `{url}` (one jwt entry per issuer)"),
                );
            }
        }
        let discovery = self.string(issuer, "discoveryURL", &path);
        if !discovery.is_empty() {
            let discovery_path = format!("{path}.discoveryURL");
            if discovery.trim_end_matches('/') == url.trim_end_matches('/') {
                self.err(&discovery_path, "discoveryURL must be different from URL");
            }
            self.url(discovery, &discovery_path);
            if !discovery_urls.insert(discovery.to_string()) {
                self.err(
                    &discovery_path,
                    format!("duplicate discoveryURL `{discovery}`"),
                );
            }
        }

        let audiences_path = format!("{path}.audiences");
        let audiences: Vec<&str> = match issuer.get("audiences") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Sequence(items)) => items
                .iter()
                .enumerate()
                .map(|(i, a)| match a.as_str() {
                    Some(s) => s,
                    None => {
                        self.err(&format!("{audiences_path}[{i}]"), "must be a string");
                        ""
                    }
                })
                .collect(),
            Some(_) => {
                self.err(&audiences_path, "must be a list");
                return;
            }
        };
        let policy = self.string(issuer, "audienceMatchPolicy", &path);
        if audiences.is_empty() {
            self.err(&audiences_path, "required: at least one audience");
        } else {
            let mut seen = HashSet::new();
            for (i, a) in audiences.iter().enumerate() {
                let at = format!("{audiences_path}[{i}]");
                if a.is_empty() {
                    self.err(&at, "audience can't be empty");
                }
                if !seen.insert(*a) {
                    self.err(&at, format!("duplicate audience `{a}`"));
                }
            }
            let policy_path = format!("{path}.audienceMatchPolicy");
            if audiences.len() > 1 && policy != "MatchAny" {
                self.err(
                    &policy_path,
                    "audienceMatchPolicy must be MatchAny for multiple audiences",
                );
            }
            if audiences.len() == 1 && !policy.is_empty() && policy != "MatchAny" {
                self.err(
                    &policy_path,
                    "audienceMatchPolicy must be empty or MatchAny for single audience",
                );
            }
        }
        let ca = self.string(issuer, "certificateAuthority", &path);
        if !ca.is_empty() {
            if let Err(e) = normalize_pem_certificates(ca) {
                self.err(&format!("{path}.certificateAuthority"), e);
            }
        }
    }

    fn claim_validation_rules(&mut self, rules: Option<&Value>, entry_path: &str) {
        let mut claims = HashSet::new();
        let mut expressions = HashSet::new();
        for (path, rule) in self.mappings(rules, &format!("{entry_path}.claimValidationRules")) {
            let claim = self.string(rule, "claim", &path);
            let expression = self.string(rule, "expression", &path);
            let message = self.string(rule, "message", &path);
            let required_value = self.string(rule, "requiredValue", &path);
            match (claim.is_empty(), expression.is_empty()) {
                (false, false) => self.err(&path, "claim and expression can't both be set"),
                (true, true) => self.err(&path, "claim or expression is required"),
                (false, true) => {
                    if !message.is_empty() {
                        self.err(
                            &format!("{path}.message"),
                            "may not be specified when claim is set",
                        );
                    }
                    if !claims.insert(claim) {
                        self.err(
                            &format!("{path}.claim"),
                            format!("duplicate claim `{claim}`"),
                        );
                    }
                }
                (true, false) => {
                    if !required_value.is_empty() {
                        self.err(
                            &format!("{path}.requiredValue"),
                            "may not be specified when expression is set",
                        );
                    }
                    if !expressions.insert(expression) {
                        self.err(&format!("{path}.expression"), "duplicate expression");
                    }
                }
            }
        }
    }

    /// A username, groups or uid mapping: a claim or a CEL expression, never both; a claim
    /// needs a prefix (which may be ""), an expression must have none.
    fn prefixed_claim(
        &mut self,
        mapping: Option<&Value>,
        path: &str,
        required: bool,
        has_prefix: bool,
    ) {
        let empty = serde_yaml_ng::Mapping::new();
        let map = match mapping {
            None | Some(Value::Null) => &empty,
            Some(Value::Mapping(m)) => m,
            Some(_) => {
                self.err(path, "must be a mapping");
                return;
            }
        };
        let claim = self.string(map, "claim", path);
        let expression = self.string(map, "expression", path);
        let prefix = field(map, "prefix");
        if matches!(prefix, Field::NotAString) {
            self.err(&format!("{path}.prefix"), "must be a string");
        }
        let prefix_set = !matches!(prefix, Field::Absent);
        match (claim.is_empty(), expression.is_empty()) {
            (false, false) => self.err(path, "claim and expression can't both be set"),
            (true, true) if required => self.err(path, "claim or expression is required"),
            (true, true) => {}
            (true, false) => {
                if has_prefix && prefix_set {
                    self.err(
                        &format!("{path}.prefix"),
                        "may not be specified when expression is set",
                    );
                }
            }
            (false, true) => {
                if has_prefix && !prefix_set {
                    self.err(
                        &format!("{path}.prefix"),
                        "prefix is required when claim is set. It can be set to an empty string to disable prefixing",
                    );
                }
            }
        }
    }

    fn claim_mappings(&mut self, mappings: Option<&Value>, entry_path: &str) {
        let path = format!("{entry_path}.claimMappings");
        let empty = serde_yaml_ng::Mapping::new();
        let map = match mappings {
            None | Some(Value::Null) => &empty,
            Some(Value::Mapping(m)) => m,
            Some(_) => {
                self.err(&path, "must be a mapping");
                return;
            }
        };
        self.prefixed_claim(map.get("username"), &format!("{path}.username"), true, true);
        self.prefixed_claim(map.get("groups"), &format!("{path}.groups"), false, true);
        self.prefixed_claim(map.get("uid"), &format!("{path}.uid"), false, false);
        let mut keys = HashSet::new();
        for (at, extra) in self.mappings(map.get("extra"), &format!("{path}.extra")) {
            let key = self.string(extra, "key", &at);
            if key.is_empty() || !key.contains('/') {
                self.err(
                    &format!("{at}.key"),
                    "must be a domain-prefixed path such as example.org/foo",
                );
            } else if key != key.to_lowercase() {
                self.err(&format!("{at}.key"), "must be lowercase");
            } else if !keys.insert(key) {
                self.err(&format!("{at}.key"), format!("duplicate key `{key}`"));
            }
            if self.string(extra, "valueExpression", &at).is_empty() {
                self.err(&format!("{at}.valueExpression"), "required");
            }
        }
    }

    fn user_validation_rules(&mut self, rules: Option<&Value>, entry_path: &str) {
        let mut expressions = HashSet::new();
        for (path, rule) in self.mappings(rules, &format!("{entry_path}.userValidationRules")) {
            let expression = self.string(rule, "expression", &path);
            if expression.is_empty() {
                self.err(&format!("{path}.expression"), "required");
            } else if !expressions.insert(expression) {
                self.err(&format!("{path}.expression"), "duplicate expression");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::test_support::{cluster, test_ca_pem};

    const ISSUER: &str = "https://login.example.com";

    #[test]
    fn flags_carry_the_clusters_client_claims_and_prefixes() {
        let mut c = cluster("prod", "kube");
        c.username_claim = "sub".to_string();
        c.groups_prefix = "gh:".to_string();
        assert_eq!(
            apiserver_flags(ISSUER, &c, SigningAlg::ES256, true),
            vec![
                "--oidc-issuer-url=https://login.example.com",
                "--oidc-client-id=kube",
                "--oidc-username-claim=sub",
                "--oidc-username-prefix=oidc:",
                "--oidc-groups-claim=groups",
                "--oidc-groups-prefix=gh:",
                "--oidc-ca-file=/etc/kubernetes/pki/lanyard-ca.pem",
                "--oidc-signing-algs=ES256",
            ]
        );
    }

    #[test]
    fn empty_username_prefix_is_a_dash_and_empty_groups_prefix_is_left_out() {
        let mut c = cluster("prod", "kube");
        c.username_prefix = String::new();
        c.groups_prefix = String::new();
        let flags = apiserver_flags(ISSUER, &c, SigningAlg::RS256, false);
        assert!(flags.contains(&"--oidc-username-prefix=-".to_string()));
        assert!(
            !flags.iter().any(|f| f.starts_with("--oidc-ca-file")),
            "a publicly trusted issuer needs no CA file"
        );
        assert!(!flags.iter().any(|f| f.starts_with("--oidc-groups-prefix")));
        assert!(flags.contains(&"--oidc-signing-algs=RS256".to_string()));
    }

    fn render(clusters: &[&KubeCluster], version: AuthnConfigVersion, ca: Option<&str>) -> Value {
        let text = authentication_configuration(ISSUER, clusters, version, ca).unwrap();
        serde_yaml_ng::from_str(&text).unwrap()
    }

    #[test]
    fn one_jwt_entry_lists_every_clusters_audience_with_match_any() {
        let prod = cluster("prod", "kube");
        let staging = cluster("staging", "kube-staging");
        let also_prod = cluster("prod-eu", "kube");
        let doc = render(&[&prod, &staging, &also_prod], AuthnConfigVersion::V1, None);
        assert!(validate_authentication_configuration(&doc).is_empty());
        assert_eq!(doc["apiVersion"], "apiserver.config.k8s.io/v1");
        assert_eq!(doc["kind"], "AuthenticationConfiguration");
        let jwt = doc["jwt"].as_sequence().unwrap();
        assert_eq!(jwt.len(), 1);
        let issuer = &jwt[0]["issuer"];
        assert_eq!(issuer["url"], ISSUER);
        assert_eq!(
            issuer["audiences"],
            serde_yaml_ng::from_str::<Value>("[kube, kube-staging]").unwrap()
        );
        assert_eq!(issuer["audienceMatchPolicy"], "MatchAny");
        assert!(issuer.get("certificateAuthority").is_none());
    }

    #[test]
    fn single_audience_has_no_match_policy_and_v1beta1_is_available() {
        let prod = cluster("prod", "kube");
        let doc = render(&[&prod], AuthnConfigVersion::V1beta1, None);
        assert!(validate_authentication_configuration(&doc).is_empty());
        assert_eq!(doc["apiVersion"], "apiserver.config.k8s.io/v1beta1");
        assert!(doc["jwt"][0]["issuer"].get("audienceMatchPolicy").is_none());
    }

    #[test]
    fn mappings_always_carry_prefixes_and_rules_refuse_system_names() {
        let mut prod = cluster("prod", "kube");
        prod.groups_prefix = String::new();
        let ca = test_ca_pem();
        let doc = render(&[&prod], AuthnConfigVersion::V1, Some(&ca));
        assert!(validate_authentication_configuration(&doc).is_empty());
        let entry = &doc["jwt"][0];
        assert_eq!(
            entry["issuer"]["certificateAuthority"].as_str(),
            Some(ca.as_str())
        );
        assert_eq!(entry["claimMappings"]["username"]["claim"], "email");
        assert_eq!(entry["claimMappings"]["username"]["prefix"], "oidc:");
        assert_eq!(entry["claimMappings"]["groups"]["claim"], "groups");
        // Present even when empty: the API server requires a prefix with a claim.
        assert_eq!(entry["claimMappings"]["groups"]["prefix"], "");
        assert_eq!(
            entry["claimValidationRules"][0]["expression"],
            "claims.?email_verified.orValue(true) == true"
        );
        assert!(entry["claimValidationRules"][0]["message"]
            .as_str()
            .is_some());
        let user_rules: Vec<&str> = entry["userValidationRules"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|r| r["expression"].as_str().unwrap())
            .collect();
        assert_eq!(
            user_rules,
            vec![
                "!user.username.startsWith('system:')",
                "user.groups.all(group, !group.startsWith('system:'))"
            ]
        );
    }

    #[test]
    fn non_email_username_claim_has_no_email_verified_rule() {
        let mut prod = cluster("prod", "kube");
        prod.username_claim = "sub".to_string();
        let doc = render(&[&prod], AuthnConfigVersion::V1, None);
        assert!(doc["jwt"][0].get("claimValidationRules").is_none());
        assert!(validate_authentication_configuration(&doc).is_empty());
    }

    #[test]
    fn clusters_with_different_mappings_are_refused_by_name() {
        let prod = cluster("prod", "kube");
        let mut staging = cluster("staging", "kube-staging");
        staging.username_prefix = "staging:".to_string();
        let dev = cluster("dev", "kube-dev");
        let err = authentication_configuration(
            ISSUER,
            &[&prod, &staging, &dev],
            AuthnConfigVersion::V1,
            None,
        )
        .unwrap_err();
        assert_eq!(
            err,
            KubeError::ConflictingClaimMappings {
                clusters: vec!["prod".into(), "staging".into()]
            }
        );
        assert!(err.to_string().contains("prod, staging"));
    }

    #[test]
    fn an_http_issuer_is_refused_as_the_api_server_would() {
        let prod = cluster("prod", "kube");
        let err = authentication_configuration(
            "http://127.0.0.1:5556",
            &[&prod],
            AuthnConfigVersion::V1,
            None,
        )
        .unwrap_err();
        let KubeError::InvalidAuthenticationConfiguration(problems) = err else {
            panic!("{err:?}")
        };
        assert!(problems[0].contains("jwt[0].issuer.url"), "{problems:?}");
        assert!(problems[0].contains("https"), "{problems:?}");
        assert_eq!(problems.len(), 1, "{problems:?}");
    }

    #[test]
    fn versions_parse_short_and_long() {
        assert_eq!("v1".parse(), Ok(AuthnConfigVersion::V1));
        assert_eq!("v1beta1".parse(), Ok(AuthnConfigVersion::V1beta1));
        assert_eq!(
            "apiserver.config.k8s.io/v1beta1".parse(),
            Ok(AuthnConfigVersion::V1beta1)
        );
        assert!("v2".parse::<AuthnConfigVersion>().is_err());
    }

    // ----- the validator catches each rule -------------------------------------------------

    fn valid() -> Value {
        let prod = cluster("prod", "kube");
        let staging = cluster("staging", "kube-staging");
        render(
            &[&prod, &staging],
            AuthnConfigVersion::V1,
            Some(&test_ca_pem()),
        )
    }

    /// Applies `edit` to a valid configuration and returns what the validator says.
    fn broken(edit: impl FnOnce(&mut Value)) -> Vec<String> {
        let mut doc = valid();
        assert!(validate_authentication_configuration(&doc).is_empty());
        edit(&mut doc);
        validate_authentication_configuration(&doc)
    }

    fn assert_one(problems: &[String], path: &str, needle: &str) {
        assert!(
            problems.len() == 1
                && problems[0].starts_with(&format!("{path}: "))
                && problems[0].contains(needle),
            "wanted one problem at {path} containing {needle:?}, got {problems:?}"
        );
    }

    fn yaml(text: &str) -> Value {
        serde_yaml_ng::from_str(text).unwrap()
    }

    fn entry(doc: &mut Value) -> &mut Value {
        &mut doc["jwt"][0]
    }

    #[test]
    fn validator_requires_https_issuer_without_query_fragment_or_user_info() {
        for (url, needle) in [
            ("http://login.example.com", "https"),
            ("https://login.example.com/?a=b", "query"),
            ("https://login.example.com/#x", "fragment"),
            ("https://user:pw@login.example.com", "username or password"),
            ("not a url", "not a URL"),
        ] {
            let p = broken(|d| entry(d)["issuer"]["url"] = url.into());
            assert_one(&p, "jwt[0].issuer.url", needle);
        }
        let p = broken(|d| {
            entry(d)["issuer"].as_mapping_mut().unwrap().remove("url");
        });
        assert_one(&p, "jwt[0].issuer.url", "required");
    }

    #[test]
    fn validator_requires_unique_issuer_urls_across_entries() {
        let p = broken(|d| {
            let copy = d["jwt"][0].clone();
            d["jwt"].as_sequence_mut().unwrap().push(copy);
        });
        assert_one(&p, "jwt[1].issuer.url", "duplicate issuer URL");
    }

    #[test]
    fn validator_checks_audiences_and_match_policy() {
        let p = broken(|d| entry(d)["issuer"]["audiences"] = yaml("[]"));
        assert_one(&p, "jwt[0].issuer.audiences", "at least one");
        let p = broken(|d| entry(d)["issuer"]["audiences"] = yaml("[kube, kube]"));
        assert_one(&p, "jwt[0].issuer.audiences[1]", "duplicate audience");
        let p = broken(|d| entry(d)["issuer"]["audiences"] = yaml("[kube, '']"));
        assert_one(&p, "jwt[0].issuer.audiences[1]", "can't be empty");
        let p = broken(|d| {
            entry(d)["issuer"]
                .as_mapping_mut()
                .unwrap()
                .remove("audienceMatchPolicy");
        });
        assert_one(
            &p,
            "jwt[0].issuer.audienceMatchPolicy",
            "must be MatchAny for multiple",
        );
        let p = broken(|d| {
            entry(d)["issuer"]["audiences"] = yaml("[kube]");
            entry(d)["issuer"]["audienceMatchPolicy"] = "MatchExact".into();
        });
        assert_one(&p, "jwt[0].issuer.audienceMatchPolicy", "empty or MatchAny");
    }

    #[test]
    fn validator_checks_the_issuer_ca() {
        let p = broken(|d| entry(d)["issuer"]["certificateAuthority"] = "not pem".into());
        assert_one(
            &p,
            "jwt[0].issuer.certificateAuthority",
            "no PEM certificate",
        );
    }

    #[test]
    fn validator_requires_username_claim_xor_expression_and_prefixes_with_claims() {
        let p = broken(|d| {
            entry(d)["claimMappings"]["username"]
                .as_mapping_mut()
                .unwrap()
                .remove("prefix");
        });
        assert_one(
            &p,
            "jwt[0].claimMappings.username.prefix",
            "prefix is required",
        );
        let p = broken(|d| {
            entry(d)["claimMappings"]["groups"]
                .as_mapping_mut()
                .unwrap()
                .remove("prefix");
        });
        assert_one(
            &p,
            "jwt[0].claimMappings.groups.prefix",
            "prefix is required",
        );
        let p =
            broken(|d| entry(d)["claimMappings"]["username"]["expression"] = "claims.sub".into());
        assert_one(&p, "jwt[0].claimMappings.username", "can't both be set");
        let p = broken(|d| entry(d)["claimMappings"]["username"] = yaml("{}"));
        assert_one(
            &p,
            "jwt[0].claimMappings.username",
            "claim or expression is required",
        );
        let p = broken(|d| {
            entry(d)["claimMappings"]["username"] = yaml("{expression: claims.sub, prefix: 'x:'}")
        });
        assert_one(
            &p,
            "jwt[0].claimMappings.username.prefix",
            "may not be specified",
        );
        // Groups are optional.
        let p = broken(|d| {
            entry(d)["claimMappings"]
                .as_mapping_mut()
                .unwrap()
                .remove("groups");
        });
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn validator_requires_non_empty_cel_fields() {
        let p = broken(|d| entry(d)["userValidationRules"][1]["expression"] = "".into());
        assert_one(&p, "jwt[0].userValidationRules[1].expression", "required");
        let p = broken(|d| entry(d)["claimValidationRules"][0]["expression"] = "".into());
        assert_one(
            &p,
            "jwt[0].claimValidationRules[0]",
            "claim or expression is required",
        );
        let p = broken(|d| entry(d)["claimValidationRules"][0]["requiredValue"] = "x".into());
        assert_one(
            &p,
            "jwt[0].claimValidationRules[0].requiredValue",
            "may not be specified",
        );
        let p = broken(|d| {
            entry(d)["userValidationRules"][1]["expression"] = NO_SYSTEM_USERNAME_RULE.into()
        });
        assert_one(&p, "jwt[0].userValidationRules[1].expression", "duplicate");
    }

    #[test]
    fn validator_checks_api_version_and_kind() {
        let p = broken(|d| d["apiVersion"] = "apiserver.config.k8s.io/v2".into());
        assert_one(&p, "apiVersion", "must be apiserver.config.k8s.io/v1");
        let p = broken(|d| d["kind"] = "Config".into());
        assert_one(&p, "kind", "AuthenticationConfiguration");
    }
}
