//! RFC 9700 hardening that is not about one grant: rate limits, CORS, JWT inputs, implicit
//! flows only when enabled, bounded storage for abandoned logins.

use crate::common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::server::*;
use serde_json::Value;

fn with(mut q: Vec<(String, String)>, key: &str, value: &str) -> Vec<(String, String)> {
    q.retain(|(k, _)| k != key);
    q.push((key.into(), value.into()));
    q
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_guessing_is_rate_limited_with_retry_after() {
    let s = TestServer::start(Backend::Sqlite, "").await.unwrap();
    let browser = TestServer::new_browser();
    let (login_url, html) = s.open_login(&browser, &AuthRequest::public()).await;
    let mut statuses = Vec::new();
    for _ in 0..7 {
        let r = s
            .submit_login(&browser, &login_url, &html, "alice@example.com", "wrong")
            .await;
        if r.status() == 429 {
            let retry: u64 = r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(retry >= 1);
        }
        statuses.push(r.status().as_u16());
    }
    assert_eq!(&statuses[..5], &[401; 5]);
    assert_eq!(statuses[5], 429, "the sixth guess is refused: {statuses:?}");
    // Even the right password waits out the lockout.
    let r = s.submit_alice(&browser, &login_url, &html).await;
    assert_eq!(r.status(), 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_only_for_allowed_origins_and_never_on_auth() {
    let s = TestServer::builder(Backend::Sqlite)
        .web("  allowedOrigins: ['https://dash.example.com']\n")
        .start()
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let r = http
        .get(s.url("/keys"))
        .header("origin", "https://dash.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://dash.example.com"
    );
    let r = http
        .get(s.url("/keys"))
        .header("origin", "https://evil.example.com")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let r = http
        .get(s.url("/auth"))
        .header("origin", "https://dash.example.com")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_id_token_hints_are_refused() {
    let s = TestServer::start(Backend::Sqlite, "oauth2:\n  skipApprovalScreen: true\n")
        .await
        .unwrap();
    let browser = TestServer::new_browser();
    let req = AuthRequest::public();
    let redirect = s.login_and_approve(&browser, &req).await;
    let t: Value = s
        .redeem(&req, &query_param(&redirect, "code").unwrap())
        .await
        .json()
        .await
        .unwrap();
    let good = t["id_token"].as_str().unwrap().to_string();
    let parts: Vec<&str> = good.split('.').collect();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let kid = header["kid"].as_str().unwrap();

    let jwks: Value = reqwest::get(s.url("/keys"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .unwrap()
        .clone();
    let public_bytes = serde_json::to_vec(&jwk).unwrap();
    let hs256 = {
        use hmac_sha256_for_test::sign;
        let h = b64(&serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": kid}));
        let signing_input = format!("{h}.{}", parts[1]);
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(sign(&public_bytes, signing_input.as_bytes()))
        )
    };
    let mut wrong_iss = claims.clone();
    wrong_iss["iss"] = Value::String("https://evil.example.com".into());

    let forged = vec![
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&serde_json::json!({"alg": "none", "kid": kid})),
                parts[1]
            ),
        ),
        (
            "alg NoNe",
            format!(
                "{}.{}.",
                b64(&serde_json::json!({"alg": "NoNe", "kid": kid})),
                parts[1]
            ),
        ),
        ("HS256 with the public key", hs256),
        (
            "unknown kid",
            format!(
                "{}.{}.{}",
                b64(&serde_json::json!({"alg": "RS256", "kid": "nope"})),
                parts[1],
                parts[2]
            ),
        ),
        (
            "wrong issuer (re-used signature)",
            format!("{}.{}.{}", parts[0], b64(&wrong_iss), parts[2]),
        ),
        ("garbage", "not.a.jwt".to_string()),
    ];
    for (what, hint) in forged {
        let q = with(with(req.query(), "prompt", "none"), "id_token_hint", &hint);
        let r = browser.get(s.url("/auth")).query(&q).send().await.unwrap();
        let to = location(&r);
        assert_eq!(
            query_param(&to, "error").as_deref(),
            Some("invalid_request"),
            "{what}: {to}"
        );
    }
    let q = with(with(req.query(), "prompt", "none"), "id_token_hint", &good);
    let r = browser.get(s.url("/auth")).query(&q).send().await.unwrap();
    assert!(
        query_param(&location(&r), "code").is_some(),
        "the genuine hint works"
    );
}

/// HMAC-SHA256, written out for the forgery test (the attacker's tool, not lanyard's).
mod hmac_sha256_for_test {
    use sha2::{Digest, Sha256};
    pub fn sign(key: &[u8], msg: &[u8]) -> Vec<u8> {
        let mut k = if key.len() > 64 {
            Sha256::digest(key).to_vec()
        } else {
            key.to_vec()
        };
        k.resize(64, 0);
        let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
        let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
        let inner = Sha256::digest([ipad.as_slice(), msg].concat());
        Sha256::digest([opad.as_slice(), inner.as_slice()].concat()).to_vec()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_and_hybrid_are_refused_at_auth_and_in_config() {
    let s = TestServer::start(Backend::Sqlite, "").await.unwrap();
    let d: Value = reqwest::get(s.url("/.well-known/openid-configuration"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["response_types_supported"], serde_json::json!(["code"]));
    let browser = TestServer::new_browser();
    let q = with(
        AuthRequest::public().query(),
        "response_type",
        "id_token token",
    );
    let r = browser.get(s.url("/auth")).query(&q).send().await.unwrap();
    let to = location(&r);
    assert!(to.contains("error=unsupported_response_type"), "{to}");

    // RFC 9700: tokens are never issued in the front channel; enabling it is a config error
    // that says what to use instead.
    for (types, refused) in [
        ("[code, id_token, token]", "id_token"),
        ("[token]", "token"),
    ] {
        let yaml = format!(
            "issuer: http://127.0.0.1:5556\nstorage:\n  type: memory\noauth2:\n  responseTypes: {types}\n"
        );
        let errors = lanyard::config::Config::from_yaml_str(&yaml, &|_| None).unwrap_err();
        let e = errors
            .0
            .iter()
            .find(|e| e.path.starts_with("oauth2.responseTypes["))
            .unwrap_or_else(|| panic!("{errors}"));
        assert!(
            e.message.contains(&format!("`{refused}`"))
                && e.message.contains("use `code` with PKCE"),
            "{e}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_logins_are_swept_in_bounded_batches() {
    let s = TestServer::start(Backend::Sqlite, "").await.unwrap();
    let browser = TestServer::new_browser();
    for _ in 0..300 {
        let r = browser
            .get(s.url("/auth"))
            .query(&AuthRequest::public().query())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
    }
    assert_eq!(s.count("auth_requests").await, 300);
    s.clock.advance(31 * 60); // past the 30 min default lifetime
    let swept = lanyard::server::app::sweep_once(&s.provider, 100)
        .await
        .unwrap();
    assert_eq!(
        swept.auth_requests, 300,
        "batches repeat until the backlog is gone"
    );
    assert_eq!(s.count("auth_requests").await, 0);
}

/// Where a `prompt=none` login of `browser` lands: a code while it is signed in.
async fn silently_signed_in(s: &TestServer, browser: &reqwest::Client) -> bool {
    let r = browser
        .get(s.url("/auth"))
        .query(&with(AuthRequest::public().query(), "prompt", "none"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    query_param(&location(&r), "code").is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_hint_of_another_user_asks_before_signing_out() {
    let s = TestServer::start(Backend::Sqlite, "oauth2:\n  skipApprovalScreen: true\n")
        .await
        .unwrap();
    let now = s.provider.now();
    s.provider
        .storage
        .create_password(&lanyard::storage::Password {
            email: "mallory@example.com".into(),
            hash: ALICE_HASH.into(),
            username: "mallory".into(),
            user_id: "u-mallory".into(),
            groups: Vec::new(),
            created_at: now,
            updated_at: now,
        })
        .await
        .unwrap();
    // The attacker's own, perfectly valid ID token.
    let req = AuthRequest::confidential();
    let attacker = TestServer::new_browser();
    let redirect = s
        .login_and_approve_as(&attacker, &req, "mallory@example.com", ALICE_PASSWORD)
        .await;
    let t: Value = s
        .redeem(&req, &query_param(&redirect, "code").unwrap())
        .await
        .json()
        .await
        .unwrap();
    let mallory_token = t["id_token"].as_str().unwrap().to_string();

    // The victim's browser is sent to the logout URL with it: a confirmation page.
    let victim = TestServer::new_browser();
    s.login_and_approve(&victim, &AuthRequest::public()).await;
    let r = victim
        .get(s.url("/logout"))
        .query(&[
            ("id_token_hint", mallory_token.as_str()),
            ("post_logout_redirect_uri", WEB_LOGGED_OUT),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    let csrf = hidden_field(&html, "csrf").expect("a confirmation form");
    assert!(silently_signed_in(&s, &victim).await, "still signed in");
    // A hint that is not a valid ID token asks too.
    let r = victim
        .get(s.url("/logout"))
        .query(&[("id_token_hint", "not.a.token")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(hidden_field(&r.text().await.unwrap(), "csrf").is_some());
    assert!(silently_signed_in(&s, &victim).await, "still signed in");

    // Confirming without the form's token is refused.
    let r = victim
        .post(s.url("/logout"))
        .form(&[("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(silently_signed_in(&s, &victim).await, "still signed in");
    // The attacker's hint sent by POST (a logout request may be a POST) asks too.
    let r = victim
        .post(s.url("/logout"))
        .form(&[("id_token_hint", mallory_token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(hidden_field(&r.text().await.unwrap(), "csrf").is_some());
    assert!(silently_signed_in(&s, &victim).await, "still signed in");
    // Confirming with it signs out, and goes on to the hint's client's registered URI.
    let fields: Vec<(String, String)> = ["csrf", "client_id", "post_logout_redirect_uri"]
        .iter()
        .map(|k| {
            let escaped = hidden_field(&html, k).unwrap();
            (k.to_string(), escaped.replace("&#x2f;", "/"))
        })
        .collect();
    assert_eq!(fields[0].1, csrf);
    let r = victim
        .post(s.url("/logout"))
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), WEB_LOGGED_OUT);
    assert!(!silently_signed_in(&s, &victim).await, "signed out");

    // The signed-in user's own hint still signs out at once.
    let own = TestServer::new_browser();
    let redirect = s
        .login_and_approve_as(&own, &req, "mallory@example.com", ALICE_PASSWORD)
        .await;
    let t: Value = s
        .redeem(&req, &query_param(&redirect, "code").unwrap())
        .await
        .json()
        .await
        .unwrap();
    let r = own
        .get(s.url("/logout"))
        .query(&[("id_token_hint", t["id_token"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Signed out"));
    assert!(!silently_signed_in(&s, &own).await, "signed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_cookie_lanyard_did_not_issue_is_replaced() {
    let s = TestServer::start(Backend::Sqlite, "").await.unwrap();
    let login_cookie = |sent: Option<String>| {
        let url = s.url("/auth");
        async move {
            let mut r = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap()
                .get(url)
                .query(&AuthRequest::public().query());
            if let Some(value) = sent {
                r = r.header("cookie", format!("lanyard_login={value}"));
            }
            let r = r.send().await.unwrap();
            assert_eq!(r.status(), 303);
            let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
            set.strip_prefix("lanyard_login=")
                .and_then(|v| v.split(';').next())
                .unwrap()
                .to_string()
        }
    };
    let issued = login_cookie(None).await;
    // A planted value of the right shape (an attacker's own, or one they made up) is not
    // adopted: the binding of this browser's logins stays unknown to them.
    for planted in [
        "A".repeat(43),
        format!("{}.{}", "A".repeat(43), "B".repeat(43)),
        issued.split('.').next().unwrap().to_string(),
    ] {
        let got = login_cookie(Some(planted.clone())).await;
        assert_ne!(got, planted);
    }
    // The value lanyard issued is kept, so logins in two tabs both complete.
    assert_eq!(login_cookie(Some(issued.clone())).await, issued);
}

/// The password-login budget per account and per address (`RateLimitPolicy::login`).
const LOGIN_BUDGET: usize = 5;

/// 100 wrong passwords for one account at once, on one login request: how many were checked
/// (answered 401 rather than 429).
async fn simultaneous_guesses_checked(backend: Backend) -> usize {
    let Some(s) = TestServer::start(backend, "").await else {
        return 0;
    };
    let browser = TestServer::new_browser();
    let (login_url, html) = s.open_login(&browser, &AuthRequest::public()).await;
    let passwords: Vec<String> = (0..100).map(|i| format!("guess-{i}")).collect();
    let guesses = passwords
        .iter()
        .map(|pw| s.submit_login(&browser, &login_url, &html, "alice@example.com", pw));
    let statuses: Vec<u16> = futures_util::future::join_all(guesses)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert!(
        statuses.iter().all(|s| [401, 429].contains(s)),
        "{statuses:?}"
    );
    statuses.iter().filter(|s| **s == 401).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_guesses_check_no_more_passwords_than_the_budget() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let checked = simultaneous_guesses_checked(backend).await;
        assert!(
            checked <= LOGIN_BUDGET,
            "{backend:?}: {checked} of 100 simultaneous guesses were checked"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_account_stays_locked_however_its_name_is_typed() {
    let s = TestServer::builder(Backend::Sqlite)
        .web(TRUST_LOCAL_PROXY)
        .start()
        .await
        .unwrap();
    let browser = TestServer::new_browser();
    let (login_url, html) = s.open_login(&browser, &AuthRequest::public()).await;
    for i in 0..LOGIN_BUDGET {
        let r = s
            .submit_login_from(
                &browser,
                &login_url,
                &html,
                "alice@example.com",
                "no",
                &format!("10.0.0.{i}"),
            )
            .await;
        assert_eq!(r.status(), 401);
    }
    // Each from an address of its own, with the right password: the local connector would
    // log each of these in as alice.
    for (i, typed) in [
        " alice@example.com",
        "alice@example.com\t",
        "\u{a0}Alice@Example.COM\u{a0}",
        "\u{2003}ALICE@EXAMPLE.COM\n",
    ]
    .into_iter()
    .enumerate()
    {
        let r = s
            .submit_login_from(
                &browser,
                &login_url,
                &html,
                typed,
                ALICE_PASSWORD,
                &format!("10.0.1.{i}"),
            )
            .await;
        assert_eq!(r.status(), 429, "{typed:?} got past alice's lockout");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_one_database_share_one_budget_per_account_and_per_address() {
    let Some(first) = TestServer::builder(Backend::Postgres)
        .web(TRUST_LOCAL_PROXY)
        .start()
        .await
    else {
        return;
    };
    let second = first
        .replica()
        .web(TRUST_LOCAL_PROXY)
        .start()
        .await
        .expect("a replica needs no database of its own");
    let mut forms = Vec::new();
    for s in [&first, &second] {
        let browser = TestServer::new_browser();
        let (login_url, html) = s.open_login(&browser, &AuthRequest::public()).await;
        forms.push((s, browser, login_url, html));
    }
    // One account, guessed from a new address each time, alternately on each replica.
    let mut checked = 0;
    for i in 0..4 * LOGIN_BUDGET {
        let (s, browser, url, html) = &forms[i % 2];
        let addr = format!("10.1.0.{i}");
        let r = s
            .submit_login_from(browser, url, html, "alice@example.com", "no", &addr)
            .await;
        checked += usize::from(r.status() == 401);
    }
    assert_eq!(
        checked, LOGIN_BUDGET,
        "guesses at alice checked across replicas"
    );
    // One address guessing a new account each time.
    let mut checked = 0;
    for i in 0..4 * LOGIN_BUDGET {
        let (s, browser, url, html) = &forms[i % 2];
        let user = format!("user{i}@example.com");
        let r = s
            .submit_login_from(browser, url, html, &user, "no", "10.2.0.1")
            .await;
        checked += usize::from(r.status() == 401);
    }
    assert_eq!(
        checked, LOGIN_BUDGET,
        "guesses from one address checked across replicas"
    );
}

fn median(mut times: Vec<std::time::Duration>) -> f64 {
    times.sort();
    times[times.len() / 2].as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusing_an_unknown_name_takes_as_long_as_refusing_a_user_of_any_hash_kind() {
    let s = TestServer::builder(Backend::Sqlite)
        .web(TRUST_LOCAL_PROXY)
        .start()
        .await
        .unwrap();
    // In the password database: argon2id as `lanyard admin passwords create` makes it, and
    // bcrypt at cost 10 as Dex's API stores it (alice's hash); alice herself is bcrypt in
    // `staticPasswords`.
    let argon2id = lanyard_connectors::PasswordHasher::new()
        .hash("some-password")
        .await
        .unwrap();
    const USERS: usize = 12;
    for i in 0..USERS {
        for (kind, hash) in [("argon2id", argon2id.as_str()), ("bcrypt", ALICE_HASH)] {
            let user = lanyard::storage::Password {
                email: format!("{kind}{i}@example.com"),
                username: format!("{kind}{i}"),
                user_id: format!("{kind}-{i}"),
                hash: hash.to_string(),
                groups: Vec::new(),
                created_at: 0,
                updated_at: 0,
            };
            s.provider.storage.create_password(&user).await.unwrap();
        }
    }
    let browser = TestServer::new_browser();
    let (login_url, html) = s.open_login(&browser, &AuthRequest::public()).await;
    let kinds = ["unknown", "argon2id", "bcrypt"];
    let mut times = vec![Vec::new(); kinds.len()];
    // Interleaved, so that load from elsewhere falls on every kind alike; each user is tried
    // at most 3 times and each attempt comes from an address of its own, so no lockout
    // shortens an answer. The first two rounds warm up.
    for round in 0..32 {
        for (k, kind) in kinds.iter().enumerate() {
            let login = match *kind {
                "unknown" => format!("ghost{round}@example.com"),
                kind => format!("{kind}{}@example.com", round % USERS),
            };
            let addr = format!("10.20.{round}.{k}");
            let started = std::time::Instant::now();
            let r = s
                .submit_login_from(&browser, &login_url, &html, &login, "wrong", &addr)
                .await;
            let took = started.elapsed();
            assert_eq!(r.status(), 401, "{login}");
            if round >= 2 {
                times[k].push(took);
            }
        }
    }
    let medians: Vec<f64> = times.into_iter().map(median).collect();
    for (k, kind) in kinds.iter().enumerate().skip(1) {
        let ratio = medians[k] / medians[0];
        assert!(
            (0.8..=1.25).contains(&ratio),
            "median refusal: {kind} user {:.1} ms, unknown name {:.1} ms",
            medians[k] * 1e3,
            medians[0] * 1e3
        );
    }
}

/// Wrong passwords for one user, alternating its username and its email, each from an address
/// of its own: how many were checked (401 rather than 429).
async fn guesses_checked_alternating_names(s: &TestServer, names: [&str; 2]) -> usize {
    let browser = TestServer::new_browser();
    let (login_url, html) = s.open_login(&browser, &AuthRequest::public()).await;
    let mut checked = 0;
    for i in 0..4 * LOGIN_BUDGET {
        let addr = format!("10.30.{}.{i}", names[0].len());
        let r = s
            .submit_login_from(&browser, &login_url, &html, names[i % 2], "no", &addr)
            .await;
        assert!([401, 429].contains(&r.status().as_u16()), "{r:?}");
        checked += usize::from(r.status() == 401);
    }
    checked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_username_and_email_share_one_budget() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(s) = TestServer::builder(backend)
            .web(TRUST_LOCAL_PROXY)
            .start()
            .await
        else {
            continue;
        };
        // alice is in `staticPasswords`; bob is in the password database.
        let bob = lanyard::storage::Password {
            email: "bob@example.com".to_string(),
            username: "bob".to_string(),
            user_id: "bob-id".to_string(),
            hash: ALICE_HASH.to_string(),
            groups: Vec::new(),
            created_at: 0,
            updated_at: 0,
        };
        s.provider.storage.create_password(&bob).await.unwrap();
        for names in [["alice", "alice@example.com"], ["bob@example.com", "bob"]] {
            let checked = guesses_checked_alternating_names(&s, names).await;
            assert_eq!(
                checked, LOGIN_BUDGET,
                "{backend:?}: guesses checked alternating {names:?}"
            );
        }
    }
}

/// A pass repeats while any kind's batch came back full, also when the grants that went with
/// their last token (not part of any kind's batch) push the grants' count past the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_batch_of_grants_repeats_the_pass_beside_grants_freed_by_their_tokens() {
    use lanyard::storage::{AccessToken, Grant, IssuedTokens, UserClaims};
    let s = TestServer::start(Backend::Sqlite, "").await.unwrap();
    let storage = &s.provider.storage;
    let now = s.provider.now();
    let grant = |id: &str| Grant {
        id: id.into(),
        client_id: "kubectl".into(),
        connector_id: "local".into(),
        claims: UserClaims {
            user_id: "u".into(),
            ..Default::default()
        },
        scopes: vec!["openid".into()],
        nonce: None,
        auth_time: now - 3 * 86400,
        connector_data: None,
        created_at: now - 3 * 86400,
        revoked_at: None,
    };
    let token = |id: &str, expires_at| IssuedTokens {
        access: AccessToken {
            token_hash: format!("at-{id}"),
            grant_id: id.into(),
            client_id: "kubectl".into(),
            created_at: now - 3 * 86400,
            expires_at,
            scopes: None,
        },
        refresh: None,
    };
    // Three grants revoked two days ago whose token is gone already (revoked after its
    // grant: a revoked grant stays for its own cutoff), and one live grant whose token has
    // just expired.
    for id in ["revoked-1", "revoked-2", "revoked-3"] {
        storage
            .issue_grant(&grant(id), &token(id, now + 600))
            .await
            .unwrap();
        assert!(storage.revoke_grant(id, now - 2 * 86400).await.unwrap());
        assert!(storage
            .revoke_access_token(&format!("at-{id}"))
            .await
            .unwrap());
        assert!(storage.get_grant(id).await.unwrap().is_some(), "{id}");
    }
    storage
        .issue_grant(&grant("ended"), &token("ended", now - 10))
        .await
        .unwrap();

    let swept = lanyard::server::app::sweep_once(&s.provider, 2)
        .await
        .unwrap();
    assert_eq!((swept.access_tokens, swept.grants), (1, 4), "{swept:?}");
    for id in ["revoked-1", "revoked-2", "revoked-3", "ended"] {
        assert_eq!(storage.get_grant(id).await.unwrap(), None, "{id}");
    }
}
