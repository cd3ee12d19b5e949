//! Signing keys against an in-memory key store and a manual clock: the rotation timeline,
//! racing replicas, encryption at rest, JWKS, and verification that trusts nothing in the header.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use lanyard::clock::{ManualClock, SharedClock};
use lanyard::keys::{
    open_private_key, run_rotation, KeyError, KeyManager, KeySettings, KeyState, KeyStore,
    MemoryKeyStore, SigningAlg,
};
use lanyard::storage::{self, SigningKey};
use serde_json::{json, Map, Value};

const T0: i64 = 1_700_000_000;
const ROTATION: i64 = 1000;
const AHEAD: i64 = 100;
const LIFETIME: i64 = 300;
const KEK: [u8; 32] = [0x42; 32];

fn settings(alg: SigningAlg) -> KeySettings {
    KeySettings {
        algorithm: alg,
        rotation_period: Duration::from_secs(ROTATION as u64),
        publish_ahead: Duration::from_secs(AHEAD as u64),
        token_lifetime: Duration::from_secs(LIFETIME as u64),
        encryption_key: KEK,
    }
}

async fn start(
    store: &Arc<MemoryKeyStore>,
    clock: &ManualClock,
    settings: KeySettings,
) -> Arc<KeyManager> {
    let store: Arc<dyn KeyStore> = store.clone();
    let clock: SharedClock = Arc::new(clock.clone());
    KeyManager::start(store, clock, settings).await.unwrap()
}

fn claims(sub: &str) -> Map<String, Value> {
    let Value::Object(map) = json!({
        "iss": "https://lanyard.example",
        "sub": sub,
        "exp": 4_000_000_000i64,
        "groups": ["a", "b"],
    }) else {
        unreachable!()
    };
    map
}

fn published_kids(manager: &KeyManager) -> BTreeSet<String> {
    let jwks: Value = serde_json::from_slice(&manager.jwks().body).unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

fn set(kids: &[&str]) -> BTreeSet<String> {
    kids.iter().map(|k| k.to_string()).collect()
}

fn header_kid(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

async fn rows(store: &MemoryKeyStore) -> Vec<SigningKey> {
    store.list_signing_keys().await.unwrap()
}

#[tokio::test]
async fn timeline_publishes_ahead_signs_retires_keeps_publishing_then_drops() {
    let store = Arc::new(MemoryKeyStore::new());
    let clock = ManualClock::new(T0);
    let m = start(&store, &clock, settings(SigningAlg::ES256)).await;

    // First start: key A signs at once.
    let a = m.signing_kid().unwrap();
    let first = rows(&store).await;
    assert_eq!(first.len(), 1);
    assert_eq!(
        (first[0].sign_from, first[0].successor_of.as_str()),
        (T0, "")
    );
    assert_eq!(published_kids(&m), set(&[&a]));

    // Not yet due one second before rotation_period - publish_ahead.
    clock.set(T0 + ROTATION - AHEAD - 1);
    assert_eq!(m.rotate_if_due().await.unwrap().created, None);

    // Due: B is created, published now, signs publish_ahead later.
    clock.set(T0 + ROTATION - AHEAD);
    let b = m.rotate_if_due().await.unwrap().created.unwrap();
    let b_row = rows(&store).await.into_iter().find(|r| r.kid == b).unwrap();
    assert_eq!(b_row.successor_of, a);
    assert_eq!(b_row.created_at, T0 + ROTATION - AHEAD);
    assert_eq!(b_row.sign_from, T0 + ROTATION);
    assert_eq!(published_kids(&m), set(&[&a, &b]));
    assert_eq!(m.signing_kid().unwrap(), a);

    // Calling again creates nothing: B is now the latest key and not due.
    clock.set(T0 + ROTATION - AHEAD / 2);
    assert_eq!(m.rotate_if_due().await.unwrap(), Default::default());

    clock.set(T0 + ROTATION - 1);
    let by_a = m.sign(&claims("alice")).unwrap();
    assert_eq!(header_kid(&by_a), a);

    // B takes over at its sign_from, without a reload.
    clock.set(T0 + ROTATION);
    let by_b = m.sign(&claims("bob")).unwrap();
    assert_eq!(header_kid(&by_b), b);
    let statuses = m.key_statuses();
    assert_eq!(statuses[0].state, KeyState::Retired);
    assert_eq!(statuses[0].publish_until, Some(T0 + ROTATION + LIFETIME));
    assert_eq!(statuses[1].state, KeyState::Signing);

    // Retired A stays published, and its tokens verify, for one token lifetime.
    clock.set(T0 + ROTATION + LIFETIME - 1);
    assert!(m.rotate_if_due().await.unwrap().pruned.is_empty());
    assert_eq!(published_kids(&m), set(&[&a, &b]));
    assert_eq!(m.verify(&by_a).unwrap()["sub"], "alice");

    // Then it drops out of JWKS, even before any rotation call, and is deleted by the next.
    clock.set(T0 + ROTATION + LIFETIME);
    assert_eq!(published_kids(&m), set(&[&b]));
    assert!(matches!(
        m.verify(&by_a),
        Err(KeyError::InvalidToken("unknown kid"))
    ));
    assert_eq!(m.key_statuses()[0].state, KeyState::Expired);
    let outcome = m.rotate_if_due().await.unwrap();
    assert_eq!(outcome.pruned, vec![a.clone()]);
    assert_eq!(outcome.created, None);
    let left: Vec<_> = rows(&store).await.into_iter().map(|r| r.kid).collect();
    assert_eq!(left, vec![b.clone()]);
    assert_eq!(m.verify(&by_b).unwrap()["sub"], "bob");
}

#[tokio::test]
async fn after_long_downtime_the_successor_is_still_published_ahead_and_the_old_key_signs_meanwhile(
) {
    let store = Arc::new(MemoryKeyStore::new());
    let clock = ManualClock::new(T0);
    let a = start(&store, &clock, settings(SigningAlg::ES256))
        .await
        .signing_kid()
        .unwrap();

    // The process comes back long after A was due.
    let back = T0 + 50 * ROTATION;
    clock.set(back);
    let m = start(&store, &clock, settings(SigningAlg::ES256)).await;
    assert_eq!(m.signing_kid().unwrap(), a);
    let b = m.rotate_if_due().await.unwrap().created.unwrap();
    let b_row = rows(&store).await.into_iter().find(|r| r.kid == b).unwrap();
    assert_eq!(b_row.sign_from, back + AHEAD);
    assert_eq!(published_kids(&m), set(&[&a, &b]));

    clock.set(back + AHEAD - 1);
    assert_eq!(header_kid(&m.sign(&claims("x")).unwrap()), a);
    assert_eq!(m.rotate_if_due().await.unwrap().created, None);
    clock.set(back + AHEAD);
    assert_eq!(header_kid(&m.sign(&claims("x")).unwrap()), b);
    assert_eq!(m.rotate_if_due().await.unwrap().created, None);
}

/// Lets every racer get as far as the insert before any insert happens.
struct RacingStore {
    inner: MemoryKeyStore,
    barrier: tokio::sync::Barrier,
    armed: AtomicBool,
}

#[async_trait]
impl KeyStore for RacingStore {
    async fn list_signing_keys(&self) -> storage::Result<Vec<SigningKey>> {
        self.inner.list_signing_keys().await
    }
    async fn insert_signing_key(&self, key: &SigningKey) -> storage::Result<bool> {
        if self.armed.load(Ordering::SeqCst) {
            self.barrier.wait().await;
        }
        self.inner.insert_signing_key(key).await
    }
    async fn delete_signing_key(&self, kid: &str) -> storage::Result<bool> {
        self.inner.delete_signing_key(kid).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_that_start_together_on_an_empty_store_agree_on_one_first_key() {
    let store = Arc::new(RacingStore {
        inner: MemoryKeyStore::new(),
        barrier: tokio::sync::Barrier::new(2),
        armed: AtomicBool::new(true),
    });
    let clock: SharedClock = Arc::new(ManualClock::new(T0));
    let starts = [0, 1].map(|_| {
        let store: Arc<dyn KeyStore> = store.clone();
        let clock = clock.clone();
        tokio::spawn(KeyManager::start(store, clock, settings(SigningAlg::ES256)))
    });
    let [one, two] = starts;
    let one = one.await.unwrap().unwrap();
    let two = two.await.unwrap().unwrap();
    assert_eq!(store.inner.list_signing_keys().await.unwrap().len(), 1);
    assert_eq!(one.signing_kid(), two.signing_kid());
    assert_eq!(one.jwks().etag, two.jwks().etag);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_rotating_at_the_same_time_create_exactly_one_successor() {
    let store = Arc::new(RacingStore {
        inner: MemoryKeyStore::new(),
        barrier: tokio::sync::Barrier::new(2),
        armed: AtomicBool::new(false),
    });
    let clock = ManualClock::new(T0);
    let shared: SharedClock = Arc::new(clock.clone());
    let mut managers = Vec::new();
    for _ in 0..2 {
        let s: Arc<dyn KeyStore> = store.clone();
        managers.push(
            KeyManager::start(s, shared.clone(), settings(SigningAlg::RS256))
                .await
                .unwrap(),
        );
    }
    let a = managers[0].signing_kid().unwrap();
    assert_eq!(managers[1].signing_kid().unwrap(), a);

    clock.set(T0 + ROTATION - AHEAD);
    store.armed.store(true, Ordering::SeqCst);
    let racers: Vec<_> = managers
        .iter()
        .map(|m| {
            let m = m.clone();
            tokio::spawn(async move { m.rotate_if_due().await })
        })
        .collect();
    let mut created = Vec::new();
    for r in racers {
        created.extend(r.await.unwrap().unwrap().created);
    }
    assert_eq!(created.len(), 1, "exactly one replica wins: {created:?}");
    let stored = store.inner.list_signing_keys().await.unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored.iter().filter(|r| r.successor_of == a).count(), 1);

    // Both replicas now publish the same set and switch to the same key.
    assert_eq!(managers[0].jwks(), managers[1].jwks());
    clock.set(T0 + ROTATION);
    assert_eq!(managers[0].signing_kid().unwrap(), created[0]);
    assert_eq!(managers[1].signing_kid().unwrap(), created[0]);
}

fn jwk_of(manager: &KeyManager, kid: &str) -> Value {
    let jwks: Value = serde_json::from_slice(&manager.jwks().body).unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .unwrap()
        .clone()
}

async fn independent_verification(alg: SigningAlg) {
    let store = Arc::new(MemoryKeyStore::new());
    let clock = ManualClock::new(T0);
    let m = start(&store, &clock, settings(alg)).await;
    assert_eq!(m.algorithm(), alg);
    let token = m.sign(&claims("alice")).unwrap();

    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    let kid = header.kid.unwrap();
    assert_eq!(Some(kid.clone()), m.signing_kid());
    let jwk = jwk_of(&m, &kid);
    let (key, algorithm) = match alg {
        SigningAlg::RS256 => (
            jsonwebtoken::DecodingKey::from_rsa_components(
                jwk["n"].as_str().unwrap(),
                jwk["e"].as_str().unwrap(),
            )
            .unwrap(),
            jsonwebtoken::Algorithm::RS256,
        ),
        SigningAlg::ES256 => (
            jsonwebtoken::DecodingKey::from_ec_components(
                jwk["x"].as_str().unwrap(),
                jwk["y"].as_str().unwrap(),
            )
            .unwrap(),
            jsonwebtoken::Algorithm::ES256,
        ),
    };
    assert_eq!(header.alg, algorithm);
    let data =
        jsonwebtoken::decode::<Value>(&token, &key, &jsonwebtoken::Validation::new(algorithm))
            .unwrap();
    assert_eq!(data.claims["sub"], "alice");
    assert_eq!(data.claims["groups"], json!(["a", "b"]));
    assert_eq!(m.verify(&token).unwrap(), claims("alice"));
}

#[tokio::test]
async fn rs256_tokens_verify_with_an_independent_verifier_from_the_published_jwk() {
    independent_verification(SigningAlg::RS256).await;
}

#[tokio::test]
async fn es256_tokens_verify_with_an_independent_verifier_from_the_published_jwk() {
    independent_verification(SigningAlg::ES256).await;
}

#[tokio::test]
async fn jwks_publishes_only_public_members() {
    for (alg, expected) in [
        (
            SigningAlg::RS256,
            ["alg", "e", "kid", "kty", "n", "use"].as_slice(),
        ),
        (
            SigningAlg::ES256,
            ["alg", "crv", "kid", "kty", "use", "x", "y"].as_slice(),
        ),
    ] {
        let store = Arc::new(MemoryKeyStore::new());
        let clock = ManualClock::new(T0);
        let m = start(&store, &clock, settings(alg)).await;
        clock.set(T0 + ROTATION - AHEAD);
        m.rotate_if_due().await.unwrap();
        let jwks: Value = serde_json::from_slice(&m.jwks().body).unwrap();
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        for key in keys {
            let mut members: Vec<&str> = key
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.as_str())
                .collect();
            members.sort_unstable();
            assert_eq!(members, expected, "{alg}");
            assert_eq!(key["use"], "sig");
            assert_eq!(key["alg"], alg.as_str());
            for private in ["d", "p", "q", "dp", "dq", "qi"] {
                assert!(key.get(private).is_none());
            }
        }
        // The stored public JWK is the published one.
        for row in rows(&store).await {
            let stored: Value = serde_json::from_str(&row.public_jwk).unwrap();
            assert_eq!(stored, jwk_of(&m, &row.kid));
        }
    }
}

#[tokio::test]
async fn private_keys_are_stored_encrypted_under_the_kek() {
    for alg in [SigningAlg::RS256, SigningAlg::ES256] {
        let store = Arc::new(MemoryKeyStore::new());
        let clock = ManualClock::new(T0);
        start(&store, &clock, settings(alg)).await;
        let row = rows(&store).await.remove(0);
        assert_eq!(row.alg, alg.as_str());
        let der = open_private_key(&KEK, &row.kid, &row.private_key_enc).unwrap();
        assert_eq!(der[0], 0x30, "PKCS#8 DER is a SEQUENCE");
        // No 16-byte run of the DER appears in the stored blob.
        assert!(!row
            .private_key_enc
            .windows(16)
            .any(|w| der.windows(16).any(|d| d == w)));
        assert!(matches!(
            open_private_key(&[0x43; 32], &row.kid, &row.private_key_enc),
            Err(KeyError::Decrypt { .. })
        ));
    }
}

#[tokio::test]
async fn starting_with_another_kek_fails_with_a_decrypt_error_that_says_so() {
    let store = Arc::new(MemoryKeyStore::new());
    let clock = ManualClock::new(T0);
    start(&store, &clock, settings(SigningAlg::ES256)).await;
    let mut other = settings(SigningAlg::ES256);
    other.encryption_key = [0x43; 32];
    let s: Arc<dyn KeyStore> = store.clone();
    let err = KeyManager::start(s, Arc::new(clock.clone()), other)
        .await
        .unwrap_err();
    assert!(matches!(err, KeyError::Decrypt { .. }));
    assert!(err
        .to_string()
        .contains("the key-encryption key does not match the one the keys were written with"));
}

#[tokio::test]
async fn etag_changes_when_the_published_set_changes_and_not_otherwise() {
    let store = Arc::new(MemoryKeyStore::new());
    let clock = ManualClock::new(T0);
    let m = start(&store, &clock, settings(SigningAlg::ES256)).await;
    let first = m.jwks();
    assert!(first.etag.starts_with('"') && first.etag.ends_with('"') && first.etag.len() == 45);

    m.reload().await.unwrap();
    clock.set(T0 + 10);
    assert_eq!(m.jwks(), first);
    clock.set(T0 + ROTATION - AHEAD - 1);
    assert!(m.rotate_if_due().await.unwrap().created.is_none());
    assert_eq!(m.jwks(), first);

    clock.set(T0 + ROTATION - AHEAD);
    m.rotate_if_due().await.unwrap();
    let second = m.jwks();
    assert_ne!(second.etag, first.etag);

    // A replica reading the same store serves the same bytes and ETag.
    let other = start(&store, &clock, settings(SigningAlg::ES256)).await;
    assert_eq!(other.jwks(), second);

    clock.set(T0 + ROTATION + LIFETIME - 1);
    assert_eq!(m.jwks(), second);
    clock.set(T0 + ROTATION + LIFETIME);
    let third = m.jwks();
    assert_ne!(third.etag, second.etag);
    assert_ne!(third.etag, first.etag);
    m.rotate_if_due().await.unwrap();
    assert_eq!(m.jwks(), third);
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

#[tokio::test]
async fn verify_rejects_alg_none_in_any_casing() {
    let store = Arc::new(MemoryKeyStore::new());
    let m = start(&store, &ManualClock::new(T0), settings(SigningAlg::RS256)).await;
    let good = m.sign(&claims("alice")).unwrap();
    let kid = header_kid(&good);
    let payload = good.split('.').nth(1).unwrap();
    let signature = good.split('.').nth(2).unwrap();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = b64(&json!({"alg": alg, "kid": kid, "typ": "JWT"}));
        for sig in ["", signature] {
            let forged = format!("{header}.{payload}.{sig}");
            assert!(
                matches!(
                    m.verify(&forged),
                    Err(KeyError::InvalidToken("unsigned tokens are not accepted"))
                ),
                "{alg} accepted"
            );
        }
    }
    assert!(m.verify(&good).is_ok());
}

#[tokio::test]
async fn verify_rejects_hs256_signed_with_the_public_key() {
    let store = Arc::new(MemoryKeyStore::new());
    let m = start(&store, &ManualClock::new(T0), settings(SigningAlg::RS256)).await;
    let kid = m.signing_kid().unwrap();
    let jwk = jwk_of(&m, &kid);
    let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
    let secrets: Vec<Vec<u8>> = vec![
        serde_json::to_vec(&jwk).unwrap(),
        m.jwks().body.to_vec(),
        n,
        jwk["n"].as_str().unwrap().as_bytes().to_vec(),
    ];
    for secret in secrets {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(kid.clone());
        let forged = jsonwebtoken::encode(
            &header,
            &claims("mallory"),
            &jsonwebtoken::EncodingKey::from_secret(&secret),
        )
        .unwrap();
        assert!(matches!(
            m.verify(&forged),
            Err(KeyError::InvalidToken(
                "header alg does not match the key's algorithm"
            ))
        ));
    }
}

#[tokio::test]
async fn verify_rejects_an_alg_other_than_the_keys_own() {
    let store = Arc::new(MemoryKeyStore::new());
    let m = start(&store, &ManualClock::new(T0), settings(SigningAlg::RS256)).await;
    let good = m.sign(&claims("alice")).unwrap();
    let kid = header_kid(&good);
    let (_, rest) = good.split_once('.').unwrap();
    for alg in ["ES256", "PS256", "RS512", "rs256"] {
        let header = b64(&json!({"alg": alg, "kid": kid, "typ": "JWT"}));
        assert!(
            matches!(
                m.verify(&format!("{header}.{rest}")),
                Err(KeyError::InvalidToken(
                    "header alg does not match the key's algorithm"
                ))
            ),
            "{alg}"
        );
    }
}

#[tokio::test]
async fn verify_rejects_unknown_kid_tampering_and_garbage() {
    let clock = ManualClock::new(T0);
    let m = start(
        &Arc::new(MemoryKeyStore::new()),
        &clock,
        settings(SigningAlg::ES256),
    )
    .await;
    let stranger = start(
        &Arc::new(MemoryKeyStore::new()),
        &clock,
        settings(SigningAlg::ES256),
    )
    .await;
    let good = m.sign(&claims("alice")).unwrap();
    assert_eq!(m.verify(&good).unwrap()["sub"], "alice");

    let foreign = stranger.sign(&claims("alice")).unwrap();
    assert!(matches!(
        m.verify(&foreign),
        Err(KeyError::InvalidToken("unknown kid"))
    ));

    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(&Value::Object(claims("mallory"))),
        parts[2]
    );
    assert!(matches!(
        m.verify(&tampered),
        Err(KeyError::InvalidToken("signature does not verify"))
    ));

    let mut flipped = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    flipped[10] ^= 1;
    let bad_sig = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        URL_SAFE_NO_PAD.encode(flipped)
    );
    assert!(m.verify(&bad_sig).is_err());

    let crit = format!(
        "{}.{}.{}",
        b64(&json!({"alg": "ES256", "kid": header_kid(&good), "crit": ["exp"]})),
        parts[1],
        parts[2]
    );
    assert!(m.verify(&crit).is_err());

    for garbage in [
        "",
        "a.b",
        "a.b.c.d",
        "a.b.c.d.e",
        "!!!.e30.",
        &format!("{}.{}", good, "x"),
        &"A".repeat(70_000),
    ] {
        assert!(
            matches!(m.verify(garbage), Err(KeyError::InvalidToken(_))),
            "{garbage:.40}"
        );
    }
}

#[tokio::test]
async fn a_changed_algorithm_applies_from_the_next_key_on() {
    let store = Arc::new(MemoryKeyStore::new());
    let clock = ManualClock::new(T0);
    let rs = start(&store, &clock, settings(SigningAlg::RS256)).await;
    let old_token = rs.sign(&claims("alice")).unwrap();

    let es = start(&store, &clock, settings(SigningAlg::ES256)).await;
    assert_eq!(es.algorithm(), SigningAlg::ES256);
    let still_rs = es.sign(&claims("alice")).unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(&still_rs).unwrap().alg,
        jsonwebtoken::Algorithm::RS256
    );
    assert!(es.verify(&old_token).is_ok());

    clock.set(T0 + ROTATION);
    let b = es.rotate_if_due().await.unwrap().created.unwrap();
    clock.set(T0 + ROTATION + AHEAD);
    let token = es.sign(&claims("alice")).unwrap();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.kid.unwrap(), b);
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    assert!(es.verify(&old_token).is_ok());
}

#[tokio::test]
async fn run_rotation_rotates_on_its_ticks_and_stops_on_shutdown() {
    let store = Arc::new(MemoryKeyStore::new());
    let clock = ManualClock::new(T0);
    let m = start(&store, &clock, settings(SigningAlg::ES256)).await;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(run_rotation(m.clone(), Duration::from_millis(20), rx));

    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(rows(&store).await.len(), 1, "nothing is due yet");
    clock.set(T0 + ROTATION - AHEAD);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while rows(&store).await.len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no rotation happened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rows(&store).await.len(), 2);

    tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("run_rotation did not stop")
        .unwrap();
}

#[tokio::test]
async fn settings_where_publish_ahead_is_not_shorter_than_rotation_are_refused() {
    let mut bad = settings(SigningAlg::ES256);
    bad.publish_ahead = bad.rotation_period;
    let store: Arc<dyn KeyStore> = Arc::new(MemoryKeyStore::new());
    let err = KeyManager::start(store, Arc::new(ManualClock::new(T0)), bad)
        .await
        .unwrap_err();
    assert!(matches!(err, KeyError::Settings(_)), "{err}");
}

#[tokio::test]
async fn jwks_max_age_stays_well_below_publish_ahead() {
    let store = Arc::new(MemoryKeyStore::new());
    let clock = ManualClock::new(T0);
    let m = start(&store, &clock, settings(SigningAlg::ES256)).await;
    assert_eq!(m.jwks_max_age(), Duration::from_secs(AHEAD as u64 / 4));

    let mut long = settings(SigningAlg::ES256);
    long.rotation_period = Duration::from_secs(6 * 3600);
    long.publish_ahead = Duration::from_secs(3600);
    let m = start(&Arc::new(MemoryKeyStore::new()), &clock, long).await;
    assert_eq!(m.jwks_max_age(), Duration::from_secs(300));
}

#[test]
fn algorithm_names_are_exact() {
    assert_eq!(SigningAlg::parse("RS256"), Some(SigningAlg::RS256));
    assert_eq!("ES256".parse::<SigningAlg>().unwrap(), SigningAlg::ES256);
    assert_eq!(SigningAlg::ES256.as_str(), "ES256");
    assert_eq!(SigningAlg::parse("rs256"), None);
    assert!(matches!(
        "HS256".parse::<SigningAlg>(),
        Err(KeyError::UnsupportedAlgorithm(_))
    ));
    let debug = format!("{:?}", settings(SigningAlg::RS256));
    assert!(debug.contains("redacted") && !debug.contains("66"));
}

/// The state `manager` reports for `kid` now.
fn state_of(manager: &KeyManager, kid: &str) -> Option<KeyState> {
    manager
        .key_statuses()
        .into_iter()
        .find(|s| s.kid == kid)
        .map(|s| s.state)
}

#[tokio::test]
async fn emergency_rotation_signs_at_once_keeps_the_old_key_published_and_drops_keys_published_ahead(
) {
    let store = Arc::new(MemoryKeyStore::new());
    let clock = ManualClock::new(T0);
    let server = start(&store, &clock, settings(SigningAlg::ES256)).await;
    let a = server.signing_kid().unwrap();
    // A scheduled successor is already published ahead when the emergency happens.
    clock.set(T0 + ROTATION - AHEAD + 1);
    let b = server.rotate_if_due().await.unwrap().created.unwrap();
    assert_eq!(state_of(&server, &b), Some(KeyState::Upcoming));

    // The admin tool is another process with its own manager on the same store.
    let admin_store: Arc<dyn KeyStore> = store.clone();
    let admin = KeyManager::open(
        admin_store,
        Arc::new(clock.clone()),
        settings(SigningAlg::ES256),
    )
    .await
    .unwrap();
    let done = admin.rotate_now(false).await.unwrap();
    assert_eq!(done.previous.as_deref(), Some(a.as_str()));
    assert_eq!(done.discarded, vec![b.clone()]);
    assert_eq!(done.retired, None);
    let c = done.created;

    // The running server learns of it at its next poll and signs with it at once.
    server.reload().await.unwrap();
    assert_eq!(server.signing_kid().as_deref(), Some(c.as_str()));
    assert_eq!(header_kid(&server.sign(&claims("x")).unwrap()), c);
    assert_eq!(published_kids(&server), set(&[&a, &c]));
    assert_eq!(state_of(&server, &a), Some(KeyState::Retired));

    // A stays published exactly until the tokens it signed have expired, then goes.
    let now = T0 + ROTATION - AHEAD + 1;
    clock.set(now + LIFETIME - 1);
    assert!(published_kids(&server).contains(&a));
    clock.set(now + LIFETIME);
    server.rotate_if_due().await.unwrap();
    assert_eq!(published_kids(&server), set(&[&c]));

    // The next scheduled rotation follows the new key, not the discarded one.
    clock.set(now + ROTATION - AHEAD);
    let d = server.rotate_if_due().await.unwrap().created.unwrap();
    assert_eq!(
        rows(&store)
            .await
            .into_iter()
            .find(|r| r.kid == d)
            .unwrap()
            .successor_of,
        c
    );
}

#[tokio::test]
async fn retiring_a_compromised_key_unpublishes_it_but_never_the_key_that_signs() {
    let store = Arc::new(MemoryKeyStore::new());
    let clock = ManualClock::new(T0);
    let server = start(&store, &clock, settings(SigningAlg::ES256)).await;
    let a = server.signing_kid().unwrap();
    let token = server.sign(&claims("x")).unwrap();

    let refused =
        lanyard::keys::retire_key(store.as_ref(), Duration::from_secs(LIFETIME as u64), &a, T0)
            .await;
    assert!(matches!(refused, Err(KeyError::RetireSigning(ref kid)) if *kid == a));
    assert_eq!(
        rows(&store).await.len(),
        1,
        "a refused retirement writes nothing"
    );
    let unknown =
        lanyard::keys::retire_key(store.as_ref(), Duration::from_secs(1), "nope", T0).await;
    assert!(matches!(unknown, Err(KeyError::UnknownKid(_))));

    // Rotating with retire_previous replaces the signing key in one step.
    let done = server.rotate_now(true).await.unwrap();
    assert_eq!(done.retired.as_deref(), Some(a.as_str()));
    assert_eq!(published_kids(&server), set(&[&done.created]));
    assert!(matches!(
        server.verify(&token),
        Err(KeyError::InvalidToken(_))
    ));
    assert_eq!(
        header_kid(&server.sign(&claims("x")).unwrap()),
        done.created
    );
}

#[tokio::test]
async fn retiring_a_key_between_two_others_leaves_the_earlier_one_a_finite_window() {
    let store = Arc::new(MemoryKeyStore::new());
    let clock = ManualClock::new(T0);
    let server = start(&store, &clock, settings(SigningAlg::ES256)).await;
    let a = server.signing_kid().unwrap();
    clock.set(T0 + 10);
    let b = server.rotate_now(false).await.unwrap().created;
    clock.set(T0 + 20);
    let c = server.rotate_now(false).await.unwrap().created;
    assert_eq!(published_kids(&server), set(&[&a, &b, &c]));

    let was = lanyard::keys::retire_key(
        store.as_ref(),
        Duration::from_secs(LIFETIME as u64),
        &b,
        T0 + 20,
    )
    .await
    .unwrap();
    assert_eq!(was, KeyState::Retired);
    server.reload().await.unwrap();
    assert_eq!(published_kids(&server), set(&[&a, &c]));
    // A is bounded by the next remaining key, C, instead of staying published forever.
    let until = server
        .key_statuses()
        .into_iter()
        .find(|s| s.kid == a)
        .unwrap()
        .publish_until;
    assert_eq!(until, Some(T0 + 20 + LIFETIME));
    clock.set(T0 + 20 + LIFETIME);
    server.rotate_if_due().await.unwrap();
    assert_eq!(published_kids(&server), set(&[&c]));
}
