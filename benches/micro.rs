//! Micro-benchmarks for what a token response and a login spend their CPU on: signing an ID
//! token, minting one from a grant, and verifying a password. `cargo bench --bench micro`.
//! The end-to-end figures come from `benches/run.sh`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use lanyard::config::Config;
use lanyard::oidc::Provider;
use lanyard::server::app::{build, BuildOptions};
use lanyard::storage::{Grant, UserClaims};
use lanyard_connectors::password_hash::PasswordHasher;
use serde_json::{json, Map, Value};

const NOW: i64 = 1_800_000_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A provider on in-memory storage whose keys use `algorithm`.
fn provider(rt: &tokio::runtime::Runtime, algorithm: &str) -> Arc<Provider> {
    let yaml = format!(
        "issuer: https://login.example.com\n\
         storage:\n  type: memory\n\
         web:\n  http: 127.0.0.1:0\n\
         staticClients:\n  - id: kubernetes\n    secret: bench\n    redirectURIs: [\"http://127.0.0.1:8000\"]\n\
         keys:\n  algorithm: {algorithm}\n  encryptionKey: \"QkVOQ0hNQVJLLUtFSy1CRU5DSE1BUkstS0VLLUJFTkM=\"\n"
    );
    let config = Config::from_yaml_str(&yaml, &|_| None).expect("the benchmark config is valid");
    let app = rt
        .block_on(build(&config, BuildOptions::new(false)))
        .expect("the provider builds");
    app.provider
}

fn grant() -> Grant {
    Grant {
        id: "grant-0123456789".into(),
        client_id: "kubernetes".into(),
        connector_id: "local".into(),
        claims: UserClaims {
            user_id: "7d3c1a52-2c5e-4c3e-9b1e-5f0f6f7a9b10".into(),
            username: "Jane Doe".into(),
            preferred_username: "jane".into(),
            email: "jane@example.com".into(),
            email_verified: true,
            groups: vec!["platform".into(), "sre".into(), "developers".into()],
        },
        scopes: ["openid", "email", "profile", "groups", "offline_access"]
            .map(str::to_string)
            .to_vec(),
        nonce: Some("n-0S6_WzA2Mj".into()),
        auth_time: NOW,
        connector_data: None,
        created_at: NOW,
        revoked_at: None,
    }
}

fn id_token_claims() -> Map<String, Value> {
    let Value::Object(claims) = json!({
        "iss": "https://login.example.com",
        "sub": "CiQ3ZDNjMWE1Mi0yYzVlLTRjM2UtOWIxZS01ZjBmNmY3YTliMTASBWxvY2Fs",
        "aud": "kubernetes",
        "exp": NOW + 3600,
        "iat": NOW,
        "email": "jane@example.com",
        "email_verified": true,
        "groups": ["platform", "sre", "developers"],
        "name": "Jane Doe",
    }) else {
        unreachable!("a JSON object literal")
    };
    claims
}

fn signing(c: &mut Criterion) {
    let rt = runtime();
    let claims = id_token_claims();
    let grant = grant();
    for alg in ["RS256", "ES256"] {
        let provider = provider(&rt, alg);
        c.bench_function(&format!("sign ID token claims/{alg}"), |b| {
            b.iter(|| provider.keys.sign(black_box(&claims)).expect("signs"))
        });
        // Through the signing pool, as the token endpoint does: the hand-off is counted too.
        c.bench_function(&format!("mint ID token from a grant/{alg}"), |b| {
            b.iter(|| {
                rt.block_on(provider.mint_id_token(
                    black_box(&grant),
                    Some("access-token"),
                    NOW,
                    true,
                ))
                .expect("mints")
            })
        });
    }
}

fn passwords(c: &mut Criterion) {
    let rt = runtime();
    let hasher = PasswordHasher::new();
    let argon2id = rt
        .block_on(hasher.hash("correct horse battery staple"))
        .expect("hashes");
    // Cost 10, as Dex's docs and `htpasswd -bnBC 10` make them.
    let bcrypt = "$2a$10$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W";
    let mut group = c.benchmark_group("verify password");
    group.sample_size(10);
    group.bench_function("argon2id m=19456 t=2 p=1", |b| {
        b.iter(|| rt.block_on(hasher.verify(&argon2id, black_box("correct horse battery staple"))))
    });
    group.bench_function("bcrypt cost 10", |b| {
        b.iter(|| rt.block_on(hasher.verify(bcrypt, black_box("password"))))
    });
    group.finish();
}

criterion_group!(benches, signing, passwords);
criterion_main!(benches);
