//! RFC 8693 token exchange: a CI job trades an ID token from an upstream issuer (here a
//! second lanyard) for a lanyard token, through the `oidc` connector that trusts that issuer.
//! Every forged, expired or misaddressed subject token is refused, and a refusal records
//! nothing.

use crate::common;

use common::federation::{
    alice_downstream_sub, alice_upstream_sub, jwt_claims, jwt_header, unsigned, Federation, Forger,
    Setup, CONNECTOR, DOWNSTREAM_CLIENT, DOWNSTREAM_SECRET,
};
use common::server::{Backend, TestServer, WEB_CLIENT, WEB_REDIRECT, WEB_SECRET};
use lanyard::clock::Clock;
use serde_json::{json, Value};

const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
/// A public client for pipelines: no secret, token exchange only, only the upstream.
const CI_CLIENT: &str = "ci-deploy";
/// A confidential client that may use only the password database.
const LOCAL_ONLY: &str = "local-only";
const LOCAL_ONLY_SECRET: &str = "local-only-secret-with-enough-entropy";

const CLIENTS: &str = r#"- id: ci-deploy
  name: CI deployments
  public: true
  redirectURIs: []
  grantTypes: [urn:ietf:params:oauth:grant-type:token-exchange]
  allowedConnectors: [upstream]
- id: local-only
  name: Local only
  secret: local-only-secret-with-enough-entropy
  redirectURIs: ['https://local.example.com/cb']
  allowedConnectors: [local]
"#;

on_both!(
    a_ci_id_token_becomes_a_lanyard_token_for_the_requesting_client,
    an_upstream_access_token_counts_only_when_the_upstream_says_it_was_issued_to_the_connector,
);

/// An upstream client that trusts the downstream's: the upstream's introspection shows the
/// downstream its tokens as active, but they were issued to `partner`.
const PARTNER: &str = "partner";
const PARTNER_SECRET: &str = "partner-secret-with-enough-entropy";
const PARTNER_REDIRECT: &str = "https://partner.example.com/cb";
/// The upstream's extra YAML: the partner, and access tokens that live 10 minutes.
const UPSTREAM_WITH_PARTNER: &str = r#"- id: partner
  name: Partner
  secret: partner-secret-with-enough-entropy
  redirectURIs: ['https://partner.example.com/cb']
  trustedPeers: [lanyard-downstream]
expiry:
  idTokens: 10m
"#;

async fn federation(backend: Backend) -> Option<Federation> {
    Federation::start(
        backend,
        Setup {
            downstream_clients: CLIENTS,
            ..Setup::default()
        },
    )
    .await
}

/// POSTs a token exchange as the CI client (public: client_id in the body).
async fn exchange(server: &TestServer, params: &[(&str, &str)]) -> reqwest::Response {
    let mut form: Vec<(&str, &str)> = vec![("grant_type", GRANT), ("client_id", CI_CLIENT)];
    form.extend_from_slice(params);
    reqwest::Client::new()
        .post(server.url("/token"))
        .form(&form)
        .send()
        .await
        .expect("token exchange")
}

fn standard(subject_token: &str) -> Vec<(&str, &str)> {
    vec![
        ("subject_token", subject_token),
        ("subject_token_type", ID_TOKEN),
        ("connector_id", CONNECTOR),
        ("scope", "openid email profile groups"),
    ]
}

async fn error_of(resp: reqwest::Response) -> (u16, String, String) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.expect("json error");
    (
        status,
        body["error"].as_str().unwrap_or_default().to_string(),
        body["error_description"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// What a refusal must leave untouched: grants, access tokens and the issued-token metric.
async fn footprint(f: &Federation) -> (i64, i64, usize) {
    let metrics = f
        .downstream
        .provider
        .metrics
        .render(&f.downstream.provider.keys, f.downstream.clock.now());
    (
        f.downstream.count("grants").await,
        f.downstream.count("access_tokens").await,
        metrics.matches("grant=\"token_exchange\"").count(),
    )
}

async fn a_ci_id_token_becomes_a_lanyard_token_for_the_requesting_client(backend: Backend) {
    let Some(f) = federation(backend).await else {
        return;
    };
    let subject = f.upstream_id_token("openid email profile groups").await;
    assert_eq!(jwt_claims(&subject)["aud"], DOWNSTREAM_CLIENT);

    // Default: an (opaque) access token, good at the downstream's userinfo.
    let resp = exchange(&f.downstream, &standard(&subject)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers().get("cache-control").unwrap(), "no-store");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["issued_token_type"], ACCESS_TOKEN);
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["expires_in"].as_u64().unwrap() > 0);
    assert!(body.get("refresh_token").is_none());
    let info: Value = reqwest::Client::new()
        .get(f.downstream.url("/userinfo"))
        .bearer_auth(body["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["sub"], alice_downstream_sub().as_str(), "{info}");
    assert_eq!(info["email"], "alice@example.com");
    assert_eq!(info["groups"], json!(["devs", "ops"]));

    // An ID token for the requesting client, as kube-apiserver reads it.
    let mut params = standard(&subject);
    params.push(("requested_token_type", ID_TOKEN));
    let resp = exchange(&f.downstream, &params).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["issued_token_type"], ID_TOKEN);
    assert_eq!(body["token_type"], "N_A");
    let id_token = body["access_token"].as_str().unwrap();
    let claims = jwt_claims(id_token);
    assert_eq!(claims["iss"], f.downstream.issuer.as_str());
    assert_eq!(claims["aud"], CI_CLIENT);
    assert_eq!(claims["sub"], alice_downstream_sub().as_str());
    assert_eq!(claims["groups"], json!(["devs", "ops"]));
    assert!(f.downstream.provider.keys.verify(id_token).is_ok());

    // Each exchange recorded its grant, and the metrics count them.
    assert_eq!(f.downstream.count("grants").await, 2);
    let (_, _, counted) = footprint(&f).await;
    assert_eq!(counted, 1, "one series for (token_exchange, ci-deploy)");
    let metrics = f
        .downstream
        .provider
        .metrics
        .render(&f.downstream.provider.keys, f.downstream.clock.now());
    assert!(
        metrics.contains("grant=\"token_exchange\"") && metrics.contains("client=\"ci-deploy\""),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_and_misaddressed_subject_tokens_are_refused_and_record_nothing() {
    let f = federation(Backend::Sqlite).await.unwrap();
    let now = f.upstream.clock.now();
    let up_kid = f.upstream.provider.keys.signing_kid().unwrap();
    let claims = |edit: &dyn Fn(&mut Value)| {
        let mut c = json!({
            "iss": f.upstream.issuer, "aud": DOWNSTREAM_CLIENT, "sub": alice_upstream_sub(),
            "name": "alice", "email": "alice@example.com", "email_verified": true,
            "iat": now, "exp": now + 600,
        });
        edit(&mut c);
        c
    };
    // Signed with the upstream's real key: only the claims are wrong.
    let upstream_signed = |c: Value| {
        f.upstream
            .provider
            .keys
            .sign(c.as_object().unwrap())
            .unwrap()
    };
    let valid = upstream_signed(claims(&|_| {}));
    let stranger = Forger::new(&up_kid);
    let mut tampered = valid.clone();
    // Flip a byte of the signature.
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    // A real upstream ID token, but issued to another client of the upstream.
    let for_web = {
        let req = common::server::AuthRequest::confidential();
        let code = f.upstream.code_for(&req).await;
        let body: Value = f.upstream.redeem(&req, &code).await.json().await.unwrap();
        body["id_token"].as_str().unwrap().to_string()
    };
    assert_eq!(jwt_claims(&for_web)["aud"], WEB_CLIENT);

    let cases: Vec<(&str, String, &str)> = vec![
        ("tampered signature", tampered, "ignature"),
        (
            "a stranger's key under the upstream's kid",
            stranger.sign(&claims(&|_| {})),
            "ignature",
        ),
        (
            "a stranger's key under a kid nobody publishes",
            Forger::new("unknown-kid").sign(&claims(&|_| {})),
            "does not publish",
        ),
        (
            "wrong issuer",
            upstream_signed(claims(&|c| c["iss"] = json!("https://ci.evil.example.com"))),
            "ssuer",
        ),
        (
            "wrong audience (forged)",
            upstream_signed(claims(&|c| c["aud"] = json!("someone-else"))),
            "udience",
        ),
        (
            "wrong audience (real token for another client)",
            for_web,
            "udience",
        ),
        (
            "expired",
            upstream_signed(claims(&|c| c["exp"] = json!(now - 5))),
            "xpired",
        ),
        (
            "issued in the future",
            upstream_signed(claims(&|c| c["iat"] = json!(now + 3600))),
            "not valid yet: `iat`",
        ),
        (
            "valid only from a future time",
            upstream_signed(claims(&|c| c["nbf"] = json!(now + 3600))),
            "not valid yet: `nbf`",
        ),
        ("alg none", unsigned(&claims(&|_| {})), ""),
        ("garbage", "not-a-token".to_string(), ""),
    ];
    let before = footprint(&f).await;
    for (name, token, hint) in cases {
        let (status, error, description) =
            error_of(exchange(&f.downstream, &standard(&token)).await).await;
        assert_eq!(
            (status, error.as_str()),
            (400, "invalid_request"),
            "{name}: {description}"
        );
        assert!(
            description.starts_with("the subject token is not acceptable")
                && description.contains(hint),
            "{name}: {description}"
        );
    }
    assert_eq!(footprint(&f).await, before, "refusals record nothing");

    // The valid one works, and stops working once the downstream's clock passes its expiry.
    assert_eq!(
        exchange(&f.downstream, &standard(&valid)).await.status(),
        200
    );
    // A little clock skew is tolerated.
    let skewed = upstream_signed(claims(&|c| {
        c["iat"] = json!(now + 30);
        c["nbf"] = json!(now + 30);
    }));
    assert_eq!(
        exchange(&f.downstream, &standard(&skewed)).await.status(),
        200
    );
    f.downstream.clock.advance(601);
    let (_, error, description) = error_of(exchange(&f.downstream, &standard(&valid)).await).await;
    assert_eq!(error, "invalid_request");
    assert!(description.contains("xpired"), "{description}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_must_be_allowed_the_connector_and_the_request_complete() {
    let f = federation(Backend::Sqlite).await.unwrap();
    let subject = f.upstream_id_token("openid email profile").await;
    let before = footprint(&f).await;

    // A client limited to other connectors.
    let resp = reqwest::Client::new()
        .post(f.downstream.url("/token"))
        .basic_auth(LOCAL_ONLY, Some(LOCAL_ONLY_SECRET))
        .form(&[
            ("grant_type", GRANT),
            ("subject_token", subject.as_str()),
            ("subject_token_type", ID_TOKEN),
            ("connector_id", CONNECTOR),
        ])
        .send()
        .await
        .unwrap();
    let (status, error, _) = error_of(resp).await;
    assert_eq!((status, error.as_str()), (400, "unauthorized_client"));

    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str, &'a str);
    let mut cases: Vec<Case> = vec![
        (
            "unknown connector",
            vec![
                ("subject_token", &subject),
                ("subject_token_type", ID_TOKEN),
                ("connector_id", "nope"),
            ],
            "invalid_request",
            "connector_id",
        ),
        (
            "a connector that takes no subject tokens",
            vec![
                ("subject_token", &subject),
                ("subject_token_type", ID_TOKEN),
                ("connector_id", "local"),
            ],
            "invalid_request",
            "connector_id",
        ),
        (
            "no subject_token",
            vec![
                ("subject_token_type", ID_TOKEN),
                ("connector_id", CONNECTOR),
            ],
            "invalid_request",
            "subject_token is required",
        ),
        (
            "no subject_token_type",
            vec![("subject_token", &subject), ("connector_id", CONNECTOR)],
            "invalid_request",
            "subject_token_type is required",
        ),
        (
            "no connector_id",
            vec![
                ("subject_token", &subject),
                ("subject_token_type", ID_TOKEN),
            ],
            "invalid_request",
            "connector_id is required",
        ),
        (
            "an unsupported subject_token_type",
            vec![
                ("subject_token", &subject),
                (
                    "subject_token_type",
                    "urn:ietf:params:oauth:token-type:saml2",
                ),
                ("connector_id", CONNECTOR),
            ],
            "invalid_request",
            "subject_token_type must be",
        ),
        (
            "an unsupported requested_token_type",
            vec![
                ("subject_token", &subject),
                ("subject_token_type", ID_TOKEN),
                ("connector_id", CONNECTOR),
                (
                    "requested_token_type",
                    "urn:ietf:params:oauth:token-type:refresh_token",
                ),
            ],
            "invalid_request",
            "requested_token_type must be",
        ),
        (
            "an access token without getUserInfo",
            vec![
                ("subject_token", "opaque-access-token"),
                ("subject_token_type", ACCESS_TOKEN),
                ("connector_id", CONNECTOR),
            ],
            "invalid_request",
            "getUserInfo",
        ),
        (
            "a target audience",
            vec![
                ("subject_token", &subject),
                ("subject_token_type", ID_TOKEN),
                ("connector_id", CONNECTOR),
                ("audience", "another-api"),
            ],
            "invalid_target",
            "requesting client",
        ),
        (
            "offline_access",
            vec![
                ("subject_token", &subject),
                ("subject_token_type", ID_TOKEN),
                ("connector_id", CONNECTOR),
                ("scope", "openid offline_access"),
            ],
            "invalid_scope",
            "refresh token",
        ),
    ];
    for (name, params, code, hint) in cases.drain(..) {
        let (status, error, description) = error_of(exchange(&f.downstream, &params).await).await;
        assert_eq!(
            (status, error.as_str()),
            (400, code),
            "{name}: {description}"
        );
        assert!(description.contains(hint), "{name}: {description}");
    }
    assert_eq!(footprint(&f).await, before, "refusals record nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_advertises_token_exchange_only_with_a_connector_that_supports_it() {
    let f = federation(Backend::Sqlite).await.unwrap();
    let grants = |server: &TestServer| {
        let url = server.url("/.well-known/openid-configuration");
        async move {
            let doc: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
            doc["grant_types_supported"].clone()
        }
    };
    let down = grants(&f.downstream).await;
    assert!(down.as_array().unwrap().contains(&json!(GRANT)), "{down}");
    // The upstream has only its password database: no token exchange there.
    let up = grants(&f.upstream).await;
    assert!(!up.as_array().unwrap().contains(&json!(GRANT)), "{up}");
    let subject = f.upstream_id_token("openid").await;
    let resp = reqwest::Client::new()
        .post(f.upstream.url("/token"))
        .basic_auth(WEB_CLIENT, Some(WEB_SECRET))
        .form(&[
            ("grant_type", GRANT),
            ("subject_token", subject.as_str()),
            ("subject_token_type", ID_TOKEN),
            ("connector_id", "local"),
        ])
        .send()
        .await
        .unwrap();
    let (_, error, _) = error_of(resp).await;
    assert_eq!(error, "unsupported_grant_type");
    let _ = jwt_header(&subject);
}

/// A federation whose connector takes access tokens (getUserInfo), with `connector` added.
async fn access_token_federation(backend: Backend, connector: &str) -> Option<Federation> {
    let connector = format!("    getUserInfo: true\n{connector}");
    Federation::start(
        backend,
        Setup {
            downstream_clients: CLIENTS,
            connector: &connector,
            upstream: UPSTREAM_WITH_PARTNER,
            ..Setup::default()
        },
    )
    .await
}

fn access_params(subject_token: &str) -> Vec<(&str, &str)> {
    vec![
        ("subject_token", subject_token),
        ("subject_token_type", ACCESS_TOKEN),
        ("connector_id", CONNECTOR),
        ("scope", "openid email profile groups"),
    ]
}

/// The upstream's tokens for alice, issued to the connector's client, `web` and `partner`.
async fn upstream_access_tokens(f: &Federation) -> (Value, Value, Value) {
    let scope = "openid email profile groups";
    let ours = f
        .upstream_tokens(DOWNSTREAM_CLIENT, DOWNSTREAM_SECRET, &f.callback(), scope)
        .await;
    let web = f
        .upstream_tokens(WEB_CLIENT, WEB_SECRET, WEB_REDIRECT, scope)
        .await;
    let partner = f
        .upstream_tokens(PARTNER, PARTNER_SECRET, PARTNER_REDIRECT, scope)
        .await;
    // Each is good at the upstream's userinfo: that proves nothing about whom it is for.
    for tokens in [&ours, &web, &partner] {
        let resp = reqwest::Client::new()
            .get(f.upstream.url("/userinfo"))
            .bearer_auth(tokens["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    (ours, web, partner)
}

async fn an_upstream_access_token_counts_only_when_the_upstream_says_it_was_issued_to_the_connector(
    backend: Backend,
) {
    let Some(f) = access_token_federation(backend, "").await else {
        return;
    };
    let (ours, web, partner) = upstream_access_tokens(&f).await;
    let at = |t: &Value| t["access_token"].as_str().unwrap().to_string();

    let before = footprint(&f).await;
    let cases = [
        (
            "another upstream client's access token",
            at(&web),
            "introspection reports the access token inactive",
        ),
        (
            "the access token of a client that trusts the connector's",
            at(&partner),
            "issued to client `partner`",
        ),
        (
            "the connector's own ID token, as an access token",
            ours["id_token"].as_str().unwrap().to_string(),
            "inactive",
        ),
    ];
    for (name, token, hint) in cases {
        let (status, error, description) =
            error_of(exchange(&f.downstream, &access_params(&token)).await).await;
        assert_eq!(
            (status, error.as_str()),
            (400, "invalid_request"),
            "{name}: {description}"
        );
        assert!(
            description.starts_with("the subject token is not acceptable")
                && description.contains(hint),
            "{name}: {description}"
        );
    }
    assert_eq!(footprint(&f).await, before, "refusals record nothing");

    // The connector's own access token counts, and what it buys ends when it does (10 min
    // at the upstream, where the downstream's own tokens live 24 h).
    let resp = exchange(&f.downstream, &access_params(&at(&ours))).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let expires_in = body["expires_in"].as_i64().unwrap();
    assert!((590..=600).contains(&expires_in), "{body}");
    let info: Value = reqwest::Client::new()
        .get(f.downstream.url("/userinfo"))
        .bearer_auth(body["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["sub"], alice_downstream_sub().as_str(), "{info}");

    let own = at(&ours);
    let mut params = access_params(&own);
    params.push(("requested_token_type", ID_TOKEN));
    let body: Value = exchange(&f.downstream, &params).await.json().await.unwrap();
    let claims = jwt_claims(body["access_token"].as_str().unwrap());
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert!((590..=600).contains(&lifetime), "{claims:?}");
    assert_eq!(body["expires_in"].as_i64(), Some(lifetime));
}

/// Also with the client secret in the request body (`basicAuthUnsupported`), as the token
/// endpoint gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_tokens_for_a_listed_audience_count_too() {
    let f = access_token_federation(
        Backend::Sqlite,
        "    accessTokenAudiences: [partner]\n    basicAuthUnsupported: true\n",
    )
    .await
    .unwrap();
    let (_, web, partner) = upstream_access_tokens(&f).await;
    let at = |t: &Value| t["access_token"].as_str().unwrap().to_string();
    let resp = exchange(&f.downstream, &access_params(&at(&partner))).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let (status, _, description) =
        error_of(exchange(&f.downstream, &access_params(&at(&web))).await).await;
    assert_eq!(status, 400, "{description}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchanged_token_never_outlives_its_subject_token() {
    let f = federation(Backend::Sqlite).await.unwrap();
    let now = f.upstream.clock.now();
    let exp = now + 120;
    let subject = f
        .upstream
        .provider
        .keys
        .sign(
            json!({
                "iss": f.upstream.issuer, "aud": DOWNSTREAM_CLIENT, "sub": alice_upstream_sub(),
                "name": "alice", "email": "alice@example.com", "email_verified": true,
                "iat": now, "exp": exp,
            })
            .as_object()
            .unwrap(),
        )
        .unwrap();

    let mut params = standard(&subject);
    params.push(("requested_token_type", ID_TOKEN));
    let body: Value = exchange(&f.downstream, &params).await.json().await.unwrap();
    let claims = jwt_claims(body["access_token"].as_str().unwrap());
    assert_eq!(claims["exp"].as_i64(), Some(exp), "{claims:?}");
    let down_now = f.downstream.clock.now();
    assert_eq!(body["expires_in"].as_i64(), Some(exp - down_now), "{body}");

    let body: Value = exchange(&f.downstream, &standard(&subject))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["expires_in"].as_i64(), Some(exp - down_now), "{body}");
    let userinfo = || {
        reqwest::Client::new()
            .get(f.downstream.url("/userinfo"))
            .bearer_auth(body["access_token"].as_str().unwrap())
            .send()
    };
    assert_eq!(userinfo().await.unwrap().status(), 200);
    // The access token ends with the subject token.
    f.downstream.clock.advance(exp - down_now);
    assert_eq!(userinfo().await.unwrap().status(), 401);
}

/// An access-token federation whose connector asks `introspection` (a URL under the
/// upstream's issuer, or any URL when it starts with `http`) instead of the advertised endpoint.
async fn federation_introspecting_at(introspection: &str) -> Federation {
    let (down_listener, down_port) = common::federation::bind().await;
    let (up_listener, up_port) = common::federation::bind().await;
    let down_issuer = common::federation::issuer(down_port, common::federation::DOWNSTREAM_PATH);
    let up_issuer = common::federation::issuer(up_port, common::federation::UPSTREAM_PATH);
    let endpoint = if introspection.starts_with("http") {
        introspection.to_string()
    } else {
        format!("{up_issuer}{introspection}")
    };
    let upstream = TestServer::builder(Backend::Sqlite)
        .listener(up_listener)
        .issuer_path(common::federation::UPSTREAM_PATH)
        .config(&format!(
            "{}{UPSTREAM_WITH_PARTNER}",
            common::federation::upstream_yaml(&down_issuer)
        ))
        .start()
        .await
        .unwrap();
    let connector = format!("    getUserInfo: true\n    introspectionEndpoint: {endpoint}\n");
    let downstream = TestServer::builder(Backend::Sqlite)
        .listener(down_listener)
        .issuer_path(common::federation::DOWNSTREAM_PATH)
        .config(&common::federation::downstream_yaml(
            &up_issuer,
            &down_issuer,
            Setup {
                downstream_clients: CLIENTS,
                connector: &connector,
                ..Setup::default()
            },
        ))
        .start()
        .await
        .unwrap();
    Federation {
        upstream,
        downstream,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_introspection_endpoint_is_the_one_asked() {
    let f = federation_introspecting_at("/token/introspect").await;
    let (ours, web, _) = upstream_access_tokens(&f).await;
    let at = |t: &Value| t["access_token"].as_str().unwrap().to_string();
    let resp = exchange(&f.downstream, &access_params(&at(&ours))).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let (status, error, description) =
        error_of(exchange(&f.downstream, &access_params(&at(&web))).await).await;
    assert_eq!((status, error.as_str()), (400, "invalid_request"));
    assert!(description.contains("inactive"), "{description}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_introspection_endpoint_accepts_no_opaque_access_token() {
    // Port 1 on loopback refuses connections; the upstream's own endpoint is not asked.
    let f = federation_introspecting_at("http://127.0.0.1:1/introspect").await;
    let (ours, _, _) = upstream_access_tokens(&f).await;
    let token = ours["access_token"].as_str().unwrap().to_string();
    let before = footprint(&f).await;
    // The upstream's advertised endpoint would have vouched for this token.
    let (status, error, _) = error_of(exchange(&f.downstream, &access_params(&token)).await).await;
    assert_eq!((status, error.as_str()), (503, "temporarily_unavailable"));
    assert_eq!(footprint(&f).await, before, "a refusal records nothing");
}
