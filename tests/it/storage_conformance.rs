//! One suite of storage behaviours, run against SQLite (a temporary file) and PostgreSQL (a
//! fresh database per test). `conformance!` generates `sqlite::<name>` and `postgres::<name>`.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use lanyard::storage::postgres::PostgresStorage;
use lanyard::storage::sqlite::SqliteStorage;
use lanyard::storage::{
    self, AccessToken, AuthCode, AuthRequest, AuthRequestParams, Client, DevicePoll, DeviceRequest,
    DeviceStatus, Grant, IssuedTokens, LoginResult, Password, PostgresSettings, Redemption,
    RefreshOutcome, RefreshToken, Rotation, Session, SharedStorage, SigningKey, Storage,
    StorageError, StorageSettings, StoredConnector, SweepCutoffs, Swept, UserClaims,
};
use lanyard::storage::{AttemptDecision, AttemptPolicy, GrantFilter, RevokedAccess, UpstreamLogin};
use tempfile::TempDir;
use tokio::sync::Barrier;

use common::postgres::TestDatabase;

const NOW: i64 = 1_700_000_000;

struct TestDb {
    storage: SharedStorage,
    settings: StorageSettings,
    // Dropped after `storage`, so the database outlives the pool.
    _sqlite_dir: Option<TempDir>,
    _postgres: Option<TestDatabase>,
}

impl TestDb {
    async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let settings = StorageSettings::Sqlite {
            file: dir.path().join("data").join("lanyard.db"),
        };
        let storage = storage::open(&settings).await.expect("open sqlite");
        TestDb {
            storage,
            settings,
            _sqlite_dir: Some(dir),
            _postgres: None,
        }
    }

    async fn postgres() -> Option<TestDb> {
        let db = common::postgres::fresh_database().await?;
        let settings = StorageSettings::Postgres(PostgresSettings {
            url: Some(db.url().to_string()),
            ..Default::default()
        });
        let storage = storage::open(&settings).await.expect("open postgres");
        Some(TestDb {
            storage,
            settings,
            _sqlite_dir: None,
            _postgres: Some(db),
        })
    }

    /// `type: memory`: one connection, which is the database (never closed while in use).
    async fn memory() -> TestDb {
        let settings = StorageSettings::Memory;
        let storage = storage::open(&settings).await.expect("open memory");
        TestDb {
            storage,
            settings,
            _sqlite_dir: None,
            _postgres: None,
        }
    }

    /// A second, independent pool on the same database: another process, as far as the
    /// database can tell.
    async fn open_another(&self) -> SharedStorage {
        storage::open(&self.settings)
            .await
            .expect("open second pool")
    }

    fn s(&self) -> &dyn Storage {
        self.storage.as_ref()
    }

    /// Runs one statement with SQL, `key` bound to $1, rather than through the storage trait:
    /// for states the trait no longer makes (an earlier version's, or a race's).
    async fn execute(&self, sql: &str, key: &str) {
        match &self.settings {
            StorageSettings::Sqlite { file } => {
                let url = format!("sqlite://{}", file.display());
                let pool = sqlx::SqlitePool::connect(&url).await.expect("connect");
                sqlx::query(sql).bind(key).execute(&pool).await.expect(sql);
                pool.close().await;
            }
            StorageSettings::Postgres(pg) => {
                let url = pg.url.as_deref().expect("a test database's url");
                let pool = sqlx::PgPool::connect(url).await.expect("connect");
                sqlx::query(sql).bind(key).execute(&pool).await.expect(sql);
                pool.close().await;
            }
            StorageSettings::Memory => unreachable!("only the storage's own connection sees it"),
        }
    }
}

macro_rules! conformance {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = super::TestDb::sqlite().await;
                    super::$name(&db).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(db) = super::TestDb::postgres().await else { return };
                    super::$name(&db).await;
                }
            )+
        }
    };
}

conformance!(
    migrate_twice_is_harmless_and_ping_answers,
    sweep_deletes_client_credentials_grants_once_their_token_is_gone,
    revoking_the_last_access_token_of_a_grant_deletes_the_grant,
    sweep_deletes_an_unrevoked_grant_with_its_last_token,
    sweep_keeps_the_grant_a_concurrent_rotation_gives_a_token_to,
    refresh_last_used_follows_rotation_and_is_none_without_a_refresh_token,
    client_crud_round_trips,
    duplicate_client_already_exists,
    update_or_delete_of_missing_client,
    password_email_is_case_insensitive,
    password_found_by_username,
    duplicate_password_email_or_username_already_exists,
    password_update_and_delete,
    auth_request_completes_once,
    expired_or_missing_auth_request_cannot_be_completed,
    upstream_login_is_recorded_only_on_an_open_request,
    auth_request_exchanges_for_one_code_only,
    expired_auth_request_exchange_writes_nothing,
    redeemed_code_issues_grant_access_and_refresh_token,
    an_access_tokens_own_scopes_are_stored_and_read_back,
    replayed_code_revokes_grant_and_its_tokens,
    expired_code_is_expired_and_stays_unredeemed,
    unknown_code_is_not_found,
    concurrent_redemptions_issue_exactly_once,
    access_token_is_invalid_from_its_expiry,
    grant_is_revoked_once,
    signing_keys_insert_list_delete,
    conflicting_successor_is_refused,
    duplicate_kid_already_exists,
    concurrent_rotations_from_two_pools_have_one_winner,
    sweep_removes_expired_and_keeps_live,
    sweep_deletes_at_most_batch_rows_of_each_kind,
    refresh_rotates_and_the_successor_works,
    rotation_writes_the_connectors_claims_to_the_grant,
    rotated_token_reused_within_interval_yields_the_same_successor,
    rotated_token_replayed_after_interval_revokes_the_family,
    rotated_token_without_sealed_successor_is_a_replay_at_once,
    disabled_rotation_keeps_the_same_token_working,
    expired_or_idle_refresh_token_is_expired_and_nothing_written,
    unknown_or_revoked_refresh_token_is_refused,
    concurrent_rotations_of_one_token_rotate_once,
    failed_rotation_writes_nothing_and_the_next_one_succeeds,
    concurrent_rotations_and_grants_settle_each_on_its_own,
    refresh_token_reads_among_writes_each_find_their_own,
    replays_and_current_use_of_one_family_at_once_revoke_it,
    cancelled_rotations_write_all_or_nothing_and_leave_no_lock,
    cancelled_redemptions_write_all_or_nothing_and_leave_no_lock,
    issued_grant_stores_its_tokens_and_access_tokens_revoke_one_by_one,
    issued_grant_keeps_every_field_exactly,
    concurrent_grants_succeed_or_fail_each_on_its_own,
    device_request_round_trips_and_user_codes_are_unique,
    device_request_completes_once,
    device_poll_waits_slows_down_issues_once,
    device_poll_denied_expired_or_foreign,
    concurrent_polls_of_an_approved_request_issue_once,
    sessions_create_get_revoke,
    sweep_removes_dead_refresh_tokens_device_requests_and_sessions,
    sweep_batches_tokens_of_revoked_grants_before_the_grant,
    grants_and_sessions_are_listed_by_user_client_and_state,
    revoking_a_users_access_revokes_their_grants_tokens_and_sessions,
    login_attempts_are_reserved_atomically_across_pools,
    stored_connectors_round_trip_and_count_versions,
    connector_changes_through_one_pool_move_the_generation_another_reads,
    sweep_clears_a_large_backlog_in_one_call,
    password_hashes_are_read_one_by_one,
);

// ---------------------------------------------------------------------------------------
// Fixtures

fn client(id: &str) -> Client {
    Client {
        id: id.to_string(),
        secret_sha256: Some(format!("{:064x}", 7)),
        redirect_uris: vec![
            "https://app.example/callback".into(),
            "http://127.0.0.1:8000".into(),
        ],
        trusted_peers: vec!["kubectl".into()],
        public: false,
        name: format!("Client {id}"),
        logo_url: None,
        grant_types: vec!["authorization_code".into(), "refresh_token".into()],
        post_logout_redirect_uris: vec![],
        allowed_connectors: vec!["github".into()],
        created_at: NOW,
    }
}

fn password(email: &str, username: &str) -> Password {
    Password {
        email: email.to_string(),
        hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        username: username.to_string(),
        user_id: format!("id-{username}"),
        groups: vec!["admins".into(), "devs".into()],
        created_at: NOW,
        updated_at: NOW,
    }
}

fn claims() -> UserClaims {
    UserClaims {
        user_id: "u-1".into(),
        username: "Jane".into(),
        preferred_username: "jane".into(),
        email: "jane@example.com".into(),
        email_verified: true,
        groups: vec!["ops".into()],
    }
}

fn auth_request(id: &str, expires_at: i64) -> AuthRequest {
    AuthRequest {
        id: id.to_string(),
        client_id: "kubectl".into(),
        params: AuthRequestParams {
            redirect_uri: "http://localhost:8000".into(),
            response_type: "code".into(),
            scopes: vec!["openid".into(), "groups".into()],
            state: Some("st".into()),
            nonce: Some("n".into()),
            code_challenge: Some("ch".into()),
            code_challenge_method: Some("S256".into()),
            ..Default::default()
        },
        csrf_token: "csrf".into(),
        browser_binding: format!("{:064x}", 1),
        login: None,
        upstream: None,
        created_at: NOW - 10,
        expires_at,
    }
}

fn login() -> LoginResult {
    LoginResult {
        connector_id: "github".into(),
        claims: claims(),
        connector_data: Some(r#"{"token":"x"}"#.into()),
        auth_time: NOW,
    }
}

fn grant(id: &str) -> Grant {
    Grant {
        id: id.to_string(),
        client_id: "kubectl".into(),
        connector_id: "github".into(),
        claims: claims(),
        scopes: vec!["openid".into(), "email".into()],
        nonce: Some("n".into()),
        auth_time: NOW - 5,
        connector_data: None,
        created_at: NOW,
        revoked_at: None,
    }
}

fn auth_code(code_hash: &str, grant_id: &str, expires_at: i64) -> AuthCode {
    AuthCode {
        code_hash: code_hash.to_string(),
        redirect_uri: "http://localhost:8000".into(),
        code_challenge: Some("ch".into()),
        code_challenge_method: Some("S256".into()),
        grant: grant(grant_id),
        created_at: NOW,
        expires_at,
        redeemed_at: None,
    }
}

fn access_token(token_hash: &str, grant_id: &str, expires_at: i64) -> AccessToken {
    AccessToken {
        token_hash: token_hash.to_string(),
        grant_id: grant_id.to_string(),
        client_id: "kubectl".into(),
        created_at: NOW,
        expires_at,
        scopes: None,
    }
}

fn signing_key(kid: &str, successor_of: &str) -> SigningKey {
    SigningKey {
        kid: kid.to_string(),
        alg: "RS256".into(),
        public_jwk: format!(r#"{{"kty":"RSA","kid":"{kid}"}}"#),
        private_key_enc: vec![0, 1, 2, 255, kid.len() as u8],
        successor_of: successor_of.to_string(),
        created_at: NOW,
        sign_from: NOW + 3600,
    }
}

fn only(access: AccessToken) -> IssuedTokens {
    IssuedTokens {
        access,
        refresh: None,
    }
}

fn refresh_token(token_hash: &str, grant_id: &str, expires_at: Option<i64>) -> RefreshToken {
    RefreshToken {
        token_hash: token_hash.to_string(),
        grant_id: grant_id.to_string(),
        client_id: "kubectl".into(),
        created_at: NOW,
        last_used_at: NOW,
        expires_at,
        rotated_at: None,
        successor_hash: None,
    }
}

/// Housekeeping with `now = NOW`, no idle limit, and rotated tokens kept for a week.
fn cutoffs(code_cutoff: i64, grant_cutoff: i64, batch: u32) -> SweepCutoffs {
    SweepCutoffs {
        now: NOW,
        code_cutoff,
        grant_cutoff,
        refresh_idle_cutoff: None,
        rotated_cutoff: NOW - 7 * 86400,
        client_grant_cutoff: grant_cutoff,
        batch,
    }
}

/// Every client_credentials request leaves a grant (connector `""`) with one access token and
/// never a refresh token: once the token is gone and the grant is older than
/// `client_grant_cutoff`, the grant goes too, so such grants do not pile up forever. A token
/// revoked now takes its grant with it (see
/// `revoking_the_last_access_token_of_a_grant_deletes_the_grant`); this step finds the grants
/// an earlier version left without a token, made here with SQL. A client grant whose token
/// lives on or that is younger than the cutoff stays, and so does a user's grant (finding
/// those would read every user's grant).
async fn sweep_deletes_client_credentials_grants_once_their_token_is_gone(db: &TestDb) {
    let s = &db.storage;
    let client_grant = |id: &str, created_at: i64| Grant {
        connector_id: String::new(),
        created_at,
        ..grant(id)
    };
    let old = NOW - 3 * 86400;
    for (id, created_at) in [
        ("cc-tokenless", old),
        ("cc-live", old),
        ("cc-young", NOW - 20),
    ] {
        let token = access_token(&format!("at-{id}"), id, NOW + 10);
        s.issue_grant(&client_grant(id, created_at), &only(token))
            .await
            .unwrap();
    }
    s.issue_grant(
        &Grant {
            created_at: old,
            ..grant("user-grant")
        },
        &only(access_token("at-user-grant", "user-grant", NOW + 10)),
    )
    .await
    .unwrap();
    for earlier_version_revoked in ["at-cc-tokenless", "at-cc-young", "at-user-grant"] {
        db.execute(
            "DELETE FROM access_tokens WHERE token_hash = $1",
            earlier_version_revoked,
        )
        .await;
    }

    let swept = s
        .sweep(&SweepCutoffs {
            client_grant_cutoff: NOW - 86400,
            ..cutoffs(NOW, NOW - 86400, 100)
        })
        .await
        .unwrap();
    assert_eq!((swept.access_tokens, swept.grants), (0, 1), "{swept:?}");
    assert_eq!(s.get_grant("cc-tokenless").await.unwrap(), None);
    for kept in ["cc-live", "cc-young", "user-grant"] {
        assert!(s.get_grant(kept).await.unwrap().is_some(), "{kept}");
    }
}

/// RFC 7009 revocation of an access token: a grant left with no token and not revoked (a
/// login without `offline_access`, a client_credentials grant) is deleted with it, or no
/// sweep would ever meet it again. A grant that keeps a refresh or another access token
/// stays, and so does a revoked grant (it keeps its own cutoff). Two revocations of a grant's
/// last two tokens at once, from two pools, leave no grant behind either.
async fn revoking_the_last_access_token_of_a_grant_deletes_the_grant(db: &TestDb) {
    let s = db.s();
    grant_via_code(s, "login-only", NOW + 600).await;
    s.issue_grant(
        &Grant {
            connector_id: String::new(),
            ..grant("client")
        },
        &only(access_token("at-client", "client", NOW + 600)),
    )
    .await
    .unwrap();
    let with_refresh = IssuedTokens {
        access: access_token("at-offline", "offline", NOW + 600),
        refresh: Some(refresh_token("rt-offline", "offline", None)),
    };
    s.issue_grant(&grant("offline"), &with_refresh)
        .await
        .unwrap();
    grant_via_code(s, "revoked", NOW + 600).await;
    assert!(s.revoke_grant("revoked", NOW - 5).await.unwrap());
    let twin =
        "INSERT INTO access_tokens (token_hash, grant_id, client_id, created_at, expires_at) \
                SELECT token_hash || '-twin', grant_id, client_id, created_at, expires_at \
                FROM access_tokens WHERE token_hash = $1";
    grant_via_code(s, "two-tokens", NOW + 600).await;
    db.execute(twin, "at-two-tokens").await;

    for token in ["at-login-only", "at-client", "at-offline", "at-two-tokens"] {
        assert!(s.revoke_access_token(token).await.unwrap(), "{token}");
    }
    assert_eq!(s.get_grant("login-only").await.unwrap(), None);
    assert_eq!(s.get_grant("client").await.unwrap(), None);
    assert!(s.get_grant("offline").await.unwrap().is_some());
    assert!(s.get_refresh_token("rt-offline").await.unwrap().is_some());
    assert!(s.get_grant("two-tokens").await.unwrap().is_some());
    // A revoked grant waits for its own cutoff, whether or not its tokens are gone yet.
    s.revoke_access_token("at-revoked").await.unwrap();
    assert!(s.get_grant("revoked").await.unwrap().is_some());
    assert!(s.revoke_access_token("at-two-tokens-twin").await.unwrap());
    assert_eq!(s.get_grant("two-tokens").await.unwrap(), None);

    let other = db.open_another().await;
    for i in 0..12 {
        let id = format!("race-{i}");
        grant_via_code(s, &id, NOW + 600).await;
        let token = format!("at-{id}");
        db.execute(twin, &token).await;
        let barrier = Arc::new(Barrier::new(2));
        let revoke = |storage: SharedStorage, token: String| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                storage.revoke_access_token(&token).await.unwrap()
            })
        };
        let first = revoke(db.storage.clone(), token.clone());
        let second = revoke(other.clone(), format!("{token}-twin"));
        assert!(first.await.unwrap() && second.await.unwrap(), "{id}");
        assert_eq!(s.get_grant(&id).await.unwrap(), None, "{id}");
    }
}

/// A grant that is not revoked is dead once its tokens are: a login without
/// `offline_access` (an access token only) once the token expired, a refresh family once it
/// expired or idled. The sweep that deletes the last token deletes the grant, however many
/// sweeps its tokens took. A grant with a live access or refresh token stays, and a revoked
/// one keeps its own cutoff.
async fn sweep_deletes_an_unrevoked_grant_with_its_last_token(db: &TestDb) {
    let s = db.s();
    grant_via_code(s, "login-only", NOW - 10).await;
    grant_via_code(s, "live-access", NOW + 600).await;
    grant_via_code(s, "revoked", NOW - 10).await;
    assert!(s.revoke_grant("revoked", NOW - 100).await.unwrap());
    let families = [
        ("live-refresh", Some(NOW + 1000), NOW),
        ("expired-family", Some(NOW - 1), NOW - 100),
        ("idle-family", None, NOW - 2000),
    ];
    for (id, expires_at, last_used_at) in families {
        let issued = IssuedTokens {
            access: access_token(&format!("at-{id}"), id, NOW - 10),
            refresh: Some(RefreshToken {
                last_used_at,
                ..refresh_token(&format!("rt-{id}"), id, expires_at)
            }),
        };
        s.issue_grant(&grant(id), &issued).await.unwrap();
    }

    let without_idle_limit = cutoffs(NOW - 300, NOW - 500, 100);
    assert_eq!(
        s.sweep(&without_idle_limit).await.unwrap(),
        Swept {
            access_tokens: 5,
            refresh_tokens: 1,
            grants: 2,
            ..Swept::default()
        }
    );
    for gone in ["login-only", "expired-family"] {
        assert_eq!(s.get_grant(gone).await.unwrap(), None, "{gone}");
    }
    for kept in ["live-access", "live-refresh", "idle-family", "revoked"] {
        assert!(s.get_grant(kept).await.unwrap().is_some(), "{kept}");
    }

    // The idle family's refresh token goes, and its grant with it; the revoked grant goes at
    // its cutoff.
    let with_idle_limit = SweepCutoffs {
        refresh_idle_cutoff: Some(NOW - 1000),
        ..cutoffs(NOW - 300, NOW - 50, 100)
    };
    assert_eq!(
        s.sweep(&with_idle_limit).await.unwrap(),
        Swept {
            refresh_tokens: 1,
            grants: 2,
            ..Swept::default()
        }
    );
    for gone in ["idle-family", "revoked"] {
        assert_eq!(s.get_grant(gone).await.unwrap(), None, "{gone}");
    }
    for kept in ["live-access", "live-refresh"] {
        assert!(s.get_grant(kept).await.unwrap().is_some(), "{kept}");
    }
    assert!(s
        .get_refresh_token("rt-live-refresh")
        .await
        .unwrap()
        .is_some());
    assert_eq!(s.sweep(&with_idle_limit).await.unwrap(), Swept::default());
}

/// A sweep that deletes a refresh token as idle races a rotation of it that does not look at
/// idleness (its own limit may differ): whichever wins, the other sees it. Either the sweep
/// deleted the family and its grant, and the rotation finds nothing, or the rotation gave
/// the grant its new tokens, and the grant stays with them; neither fails.
async fn sweep_keeps_the_grant_a_concurrent_rotation_gives_a_token_to(db: &TestDb) {
    const ROUNDS: usize = 30;
    let mut outcomes = [0; 2];
    for round in 0..ROUNDS {
        let id = format!("g{round}");
        let issued = IssuedTokens {
            access: access_token(&format!("at-{id}"), &id, NOW - 10),
            refresh: Some(RefreshToken {
                last_used_at: NOW - 2000,
                ..refresh_token(&format!("rt-{id}"), &id, None)
            }),
        };
        db.s().issue_grant(&grant(&id), &issued).await.unwrap();
        let rotation = Rotation {
            successor: Some(RefreshToken {
                last_used_at: NOW,
                ..refresh_token(&format!("rt2-{id}"), &id, None)
            }),
            access: access_token(&format!("at2-{id}"), &id, NOW + 600),
            ..rotation(&format!("rt-{id}"), Some("unused"), "unused", NOW)
        };
        let barrier = Arc::new(Barrier::new(2));
        let (rotator, sweeper) = (db.storage.clone(), db.storage.clone());
        let start = barrier.clone();
        // Later and later, so that some rounds' sweeps reach the refresh token first.
        let delay = Duration::from_micros(500 * round as u64);
        let rotate = tokio::spawn(async move {
            start.wait().await;
            tokio::time::sleep(delay).await;
            rotator.rotate_refresh_token(&rotation, NOW).await
        });
        let sweep = tokio::spawn(async move {
            barrier.wait().await;
            sweeper
                .sweep(&SweepCutoffs {
                    refresh_idle_cutoff: Some(NOW - 1000),
                    ..cutoffs(NOW - 300, NOW - 500, 100)
                })
                .await
        });
        let rotated = rotate.await.unwrap().expect("the rotation failed");
        let swept = sweep.await.unwrap().expect("the sweep failed");
        let s = db.s();
        match rotated {
            RefreshOutcome::Rotated(_) => {
                outcomes[0] += 1;
                assert!(s.get_grant(&id).await.unwrap().is_some(), "{id}: {swept:?}");
                assert!(s
                    .get_refresh_token(&format!("rt2-{id}"))
                    .await
                    .unwrap()
                    .is_some());
                assert!(s
                    .get_access_token(&format!("at2-{id}"), NOW)
                    .await
                    .unwrap()
                    .is_some());
            }
            RefreshOutcome::NotFound => {
                outcomes[1] += 1;
                assert_eq!(s.get_grant(&id).await.unwrap(), None, "{id}: {swept:?}");
            }
            other => panic!("{id}: unexpected {other:?}"),
        }
    }
    // Either order is correct; which one a round takes depends on the machine.
    eprintln!("rotated first {}, swept first {}", outcomes[0], outcomes[1]);
}

/// What the connector reports on a refresh: the user changed their name and groups.
fn refreshed_claims() -> UserClaims {
    UserClaims {
        username: "Jane Q".into(),
        groups: vec!["ops".into(), "admins".into()],
        ..claims()
    }
}

fn sealed(successor: &str) -> Vec<u8> {
    format!("sealed:{successor}").into_bytes()
}

/// A use of `old` at `at`, rotating to `successor` (None: rotation disabled), with its own
/// access token `access`.
fn rotation(old: &str, successor: Option<&str>, access: &str, at: i64) -> Rotation {
    Rotation {
        old_hash: old.to_string(),
        successor: successor.map(|next| RefreshToken {
            created_at: at,
            last_used_at: at,
            ..refresh_token(next, "g1", Some(NOW + 86400))
        }),
        successor_sealed: successor.map(sealed),
        access: AccessToken {
            created_at: at,
            ..access_token(access, "g1", at + 3600)
        },
        claims: refreshed_claims(),
        connector_data: Some(r#"{"token":"y"}"#.into()),
        reuse_interval: 5,
        idle_cutoff: None,
    }
}

/// Grant "g1" with access token "at-g1" and refresh token `refresh`, as client_credentials
/// or token exchange would store it.
async fn grant_with_refresh(s: &dyn Storage, refresh: RefreshToken) {
    let tokens = IssuedTokens {
        access: access_token("at-g1", "g1", NOW + 3600),
        refresh: Some(refresh),
    };
    s.issue_grant(&grant("g1"), &tokens).await.unwrap();
}

fn device_request(user_code: &str, expires_at: i64) -> DeviceRequest {
    DeviceRequest {
        user_code: user_code.to_string(),
        device_code_hash: format!("dc-{user_code}"),
        client_id: "kubectl".into(),
        scopes: vec!["openid".into(), "offline_access".into()],
        created_at: NOW,
        expires_at,
        poll_interval: 5,
        last_poll_at: None,
        status: DeviceStatus::Pending,
        grant: None,
    }
}

/// What a device poll would store; the grant id is unknown to the poller.
fn device_tokens(tag: &str) -> IssuedTokens {
    IssuedTokens {
        access: access_token(&format!("at-{tag}"), "unknown-to-the-poller", NOW + 3600),
        refresh: Some(refresh_token(
            &format!("rt-{tag}"),
            "unknown-to-the-poller",
            None,
        )),
    }
}

fn session(id_hash: &str, expires_at: i64) -> Session {
    Session {
        id_hash: id_hash.to_string(),
        connector_id: "github".into(),
        claims: claims(),
        connector_data: Some(r#"{"token":"x"}"#.into()),
        auth_time: NOW - 30,
        created_at: NOW - 30,
        expires_at,
        revoked_at: None,
    }
}

/// Stores a code the only way the trait allows: through a fresh auth request.
async fn store_code(s: &dyn Storage, code: &AuthCode) {
    let request_id = format!("req-for-{}", code.code_hash);
    s.create_auth_request(&auth_request(&request_id, NOW + 600))
        .await
        .unwrap();
    assert!(s
        .exchange_auth_request_for_code(&request_id, code, NOW)
        .await
        .unwrap());
}

/// A grant with one access token, through a code redeemed at `NOW`.
async fn grant_via_code(s: &dyn Storage, grant_id: &str, token_expires_at: i64) -> Grant {
    let code = auth_code(&format!("code-{grant_id}"), grant_id, NOW + 60);
    store_code(s, &code).await;
    let token = access_token(&format!("at-{grant_id}"), grant_id, token_expires_at);
    match s
        .redeem_auth_code(&code.code_hash, &only(token), NOW)
        .await
        .unwrap()
    {
        Redemption::Issued(g) => g,
        other => panic!("expected Issued, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// The suite

async fn migrate_twice_is_harmless_and_ping_answers(db: &TestDb) {
    let s = db.s();
    s.create_client(&client("a")).await.unwrap();
    s.migrate().await.unwrap();
    s.migrate().await.unwrap();
    s.ping().await.unwrap();
    assert_eq!(s.get_client("a").await.unwrap(), Some(client("a")));
    assert!(["sqlite", "postgres"].contains(&s.kind()));
}

async fn client_crud_round_trips(db: &TestDb) {
    let s = db.s();
    assert_eq!(s.get_client("a").await.unwrap(), None);
    let mut public = client("b");
    public.public = true;
    public.secret_sha256 = None;
    public.logo_url = Some("https://logo.example/b.png".into());
    s.create_client(&client("a")).await.unwrap();
    s.create_client(&public).await.unwrap();
    assert_eq!(s.get_client("a").await.unwrap(), Some(client("a")));
    assert_eq!(s.get_client("b").await.unwrap(), Some(public.clone()));
    assert_eq!(
        s.list_clients().await.unwrap(),
        vec![client("a"), public.clone()]
    );

    let mut changed = client("a");
    changed.name = "Renamed".into();
    changed.redirect_uris = vec!["https://new.example/cb".into()];
    changed.trusted_peers = vec![];
    changed.public = true;
    changed.secret_sha256 = None;
    changed.logo_url = Some("https://logo.example/a.png".into());
    changed.grant_types = vec!["urn:ietf:params:oauth:grant-type:device_code".into()];
    changed.post_logout_redirect_uris = vec!["https://app.example/bye".into()];
    changed.allowed_connectors = vec!["ldap".into(), "local".into()];
    s.update_client(&changed).await.unwrap();
    assert_eq!(s.get_client("a").await.unwrap(), Some(changed));

    assert!(s.delete_client("a").await.unwrap());
    assert!(!s.delete_client("a").await.unwrap());
    assert_eq!(s.get_client("a").await.unwrap(), None);
    assert_eq!(s.list_clients().await.unwrap(), vec![public]);
}

async fn duplicate_client_already_exists(db: &TestDb) {
    let s = db.s();
    s.create_client(&client("a")).await.unwrap();
    let mut other = client("a");
    other.name = "Impostor".into();
    let err = s.create_client(&other).await.unwrap_err();
    assert!(matches!(err, StorageError::AlreadyExists(_)), "got {err:?}");
    assert_eq!(s.get_client("a").await.unwrap(), Some(client("a")));
}

async fn update_or_delete_of_missing_client(db: &TestDb) {
    let s = db.s();
    let err = s.update_client(&client("ghost")).await.unwrap_err();
    assert!(matches!(err, StorageError::NotFound(_)), "got {err:?}");
    assert!(!s.delete_client("ghost").await.unwrap());
    assert_eq!(s.get_client("ghost").await.unwrap(), None);
}

async fn password_email_is_case_insensitive(db: &TestDb) {
    let s = db.s();
    s.create_password(&password("Jane.Doe@Example.COM", "jane"))
        .await
        .unwrap();
    let expected = password("jane.doe@example.com", "jane");
    for lookup in [
        "jane.doe@example.com",
        "JANE.DOE@EXAMPLE.COM",
        "Jane.Doe@example.Com",
    ] {
        assert_eq!(
            s.get_password(lookup).await.unwrap(),
            Some(expected.clone()),
            "{lookup}"
        );
    }
    assert_eq!(s.get_password("jane@example.com").await.unwrap(), None);
    assert_eq!(s.list_passwords().await.unwrap(), vec![expected]);
}

async fn password_found_by_username(db: &TestDb) {
    let s = db.s();
    s.create_password(&password("a@example.com", "alice"))
        .await
        .unwrap();
    s.create_password(&password("b@example.com", "bob"))
        .await
        .unwrap();
    let found = s.get_password_by_username("bob").await.unwrap().unwrap();
    assert_eq!(found.email, "b@example.com");
    assert_eq!(s.get_password_by_username("carol").await.unwrap(), None);
    assert_eq!(
        s.list_passwords()
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.username)
            .collect::<Vec<_>>(),
        vec!["alice", "bob"]
    );
}

async fn duplicate_password_email_or_username_already_exists(db: &TestDb) {
    let s = db.s();
    s.create_password(&password("a@example.com", "alice"))
        .await
        .unwrap();
    let err = s
        .create_password(&password("A@EXAMPLE.com", "alice2"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::AlreadyExists(_)),
        "same email, other case: {err:?}"
    );
    let err = s
        .create_password(&password("other@example.com", "alice"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::AlreadyExists(_)),
        "same username: {err:?}"
    );
    assert_eq!(s.list_passwords().await.unwrap().len(), 1);
}

async fn password_update_and_delete(db: &TestDb) {
    let s = db.s();
    s.create_password(&password("a@example.com", "alice"))
        .await
        .unwrap();
    let mut changed = password("A@Example.com", "alicia");
    changed.hash = "$2y$10$other".into();
    changed.user_id = "new-id".into();
    changed.groups = vec![];
    changed.created_at = NOW + 99; // creation time is not updatable
    changed.updated_at = NOW + 100;
    s.update_password(&changed).await.unwrap();
    let stored = s.get_password("a@example.com").await.unwrap().unwrap();
    assert_eq!(
        stored,
        Password {
            email: "a@example.com".into(),
            created_at: NOW,
            ..changed
        }
    );
    assert_eq!(s.get_password_by_username("alice").await.unwrap(), None);

    let err = s
        .update_password(&password("nobody@example.com", "nobody"))
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::NotFound(_)), "got {err:?}");

    assert!(s.delete_password("A@EXAMPLE.COM").await.unwrap());
    assert!(!s.delete_password("a@example.com").await.unwrap());
    assert_eq!(s.get_password("a@example.com").await.unwrap(), None);
}

async fn auth_request_completes_once(db: &TestDb) {
    let s = db.s();
    let request = auth_request("r1", NOW + 600);
    s.create_auth_request(&request).await.unwrap();
    assert_eq!(
        s.get_auth_request("r1").await.unwrap(),
        Some(request.clone())
    );

    assert!(s.complete_auth_request("r1", &login(), NOW).await.unwrap());
    let mut second = login();
    second.connector_id = "ldap".into();
    assert!(!s.complete_auth_request("r1", &second, NOW).await.unwrap());
    let stored = s.get_auth_request("r1").await.unwrap().unwrap();
    assert_eq!(stored.login, Some(login()), "the first login stays");
    assert_eq!(
        AuthRequest {
            login: None,
            ..stored
        },
        request
    );

    assert!(s.delete_auth_request("r1").await.unwrap());
    assert!(!s.delete_auth_request("r1").await.unwrap());
    assert_eq!(s.get_auth_request("r1").await.unwrap(), None);
}

async fn expired_or_missing_auth_request_cannot_be_completed(db: &TestDb) {
    let s = db.s();
    s.create_auth_request(&auth_request("r1", NOW))
        .await
        .unwrap();
    assert!(!s.complete_auth_request("r1", &login(), NOW).await.unwrap());
    let stored = s.get_auth_request("r1").await.unwrap();
    assert_eq!(
        stored.map(|r| r.login),
        Some(None),
        "expired requests are still returned, unchanged"
    );
    assert!(s
        .complete_auth_request("r1", &login(), NOW - 1)
        .await
        .unwrap());
    assert!(!s
        .complete_auth_request("missing", &login(), NOW)
        .await
        .unwrap());
}

async fn upstream_login_is_recorded_only_on_an_open_request(db: &TestDb) {
    let s = db.s();
    s.create_auth_request(&auth_request("r1", NOW + 600))
        .await
        .unwrap();
    let upstream = |connector: &str| UpstreamLogin {
        connector_id: connector.into(),
        state_hash: format!("{:064x}", 7),
        pending: "bm9uY2U=".into(),
    };
    assert!(s
        .begin_upstream_login("r1", &upstream("github"), NOW)
        .await
        .unwrap());
    // Going back and picking another connector replaces the first attempt.
    assert!(s
        .begin_upstream_login("r1", &upstream("okta"), NOW)
        .await
        .unwrap());
    let stored = s.get_auth_request("r1").await.unwrap().unwrap();
    assert_eq!(stored.upstream, Some(upstream("okta")));
    assert_eq!(stored.login, None);

    assert!(s.complete_auth_request("r1", &login(), NOW).await.unwrap());
    assert!(
        !s.begin_upstream_login("r1", &upstream("github"), NOW)
            .await
            .unwrap(),
        "a completed login cannot be sent upstream again"
    );
    s.create_auth_request(&auth_request("old", NOW))
        .await
        .unwrap();
    assert!(!s
        .begin_upstream_login("old", &upstream("github"), NOW)
        .await
        .unwrap());
    assert!(!s
        .begin_upstream_login("missing", &upstream("github"), NOW)
        .await
        .unwrap());
    assert_eq!(
        s.get_auth_request("old").await.unwrap().unwrap().upstream,
        None
    );
}

async fn auth_request_exchanges_for_one_code_only(db: &TestDb) {
    let s = db.s();
    s.create_auth_request(&auth_request("r1", NOW + 600))
        .await
        .unwrap();
    let first = auth_code("c1", "g1", NOW + 60);
    assert!(s
        .exchange_auth_request_for_code("r1", &first, NOW)
        .await
        .unwrap());
    assert_eq!(s.get_auth_request("r1").await.unwrap(), None);
    assert_eq!(s.get_auth_code("c1").await.unwrap(), Some(first));

    let second = auth_code("c2", "g2", NOW + 60);
    assert!(!s
        .exchange_auth_request_for_code("r1", &second, NOW)
        .await
        .unwrap());
    assert_eq!(s.get_auth_code("c2").await.unwrap(), None);
}

async fn expired_auth_request_exchange_writes_nothing(db: &TestDb) {
    let s = db.s();
    let request = auth_request("r1", NOW);
    s.create_auth_request(&request).await.unwrap();
    assert!(!s
        .exchange_auth_request_for_code("r1", &auth_code("c1", "g1", NOW + 60), NOW)
        .await
        .unwrap());
    assert_eq!(s.get_auth_code("c1").await.unwrap(), None);
    assert_eq!(s.get_auth_request("r1").await.unwrap(), Some(request));
}

async fn redeemed_code_issues_grant_access_and_refresh_token(db: &TestDb) {
    let s = db.s();
    let code = auth_code("c1", "g1", NOW + 60);
    store_code(s, &code).await;
    let token = access_token("t1", "g1", NOW + 3600);
    let refresh = refresh_token("r1", "g1", Some(NOW + 86400));
    let tokens = IssuedTokens {
        access: token.clone(),
        refresh: Some(refresh.clone()),
    };
    let outcome = s.redeem_auth_code("c1", &tokens, NOW).await.unwrap();
    assert_eq!(outcome, Redemption::Issued(grant("g1")));
    assert_eq!(s.get_grant("g1").await.unwrap(), Some(grant("g1")));
    assert_eq!(
        s.get_access_token("t1", NOW).await.unwrap(),
        Some((token, grant("g1")))
    );
    assert_eq!(
        s.get_refresh_token("r1").await.unwrap(),
        Some((refresh, grant("g1")))
    );
    let stored = s.get_auth_code("c1").await.unwrap().unwrap();
    assert_eq!(stored.redeemed_at, Some(NOW));
}

/// An access token may carry fewer scopes than its grant (a refresh that narrowed them); every
/// way a token is written keeps them, and `None` (its grant's scopes) stays `None`.
async fn an_access_tokens_own_scopes_are_stored_and_read_back(db: &TestDb) {
    let s = db.s();
    let narrowed = |mut token: AccessToken, scopes: &[&str]| {
        token.scopes = Some(scopes.iter().map(|s| s.to_string()).collect());
        token
    };
    let tokens = IssuedTokens {
        access: narrowed(access_token("at-g1", "g1", NOW + 3600), &["openid"]),
        refresh: Some(refresh_token("rt0", "g1", None)),
    };
    s.issue_grant(&grant("g1"), &tokens).await.unwrap();
    s.issue_grant(&grant("g2"), &only(access_token("at-g2", "g2", NOW + 3600)))
        .await
        .unwrap();

    // A rotation, its retry inside the reuse interval, and a use with rotation disabled.
    let mut current = rotation("rt0", Some("rt1"), "at1", NOW);
    current.access = narrowed(current.access, &["email"]);
    s.rotate_refresh_token(&current, NOW).await.unwrap();
    let mut retry = rotation("rt0", Some("rt1-retry"), "at1-retry", NOW + 1);
    retry.access = narrowed(retry.access, &[]);
    assert!(matches!(
        s.rotate_refresh_token(&retry, NOW + 1).await.unwrap(),
        RefreshOutcome::Reused { .. }
    ));
    let mut touch = rotation("rt1", None, "at2", NOW + 2);
    touch.access = narrowed(touch.access, &["openid", "email"]);
    s.rotate_refresh_token(&touch, NOW + 2).await.unwrap();

    for (token, scopes) in [
        ("at-g1", Some(vec!["openid"])),
        ("at-g2", None),
        ("at1", Some(vec!["email"])),
        ("at1-retry", Some(vec![])),
        ("at2", Some(vec!["openid", "email"])),
    ] {
        let (access, grant) = s.get_access_token(token, NOW + 3).await.unwrap().unwrap();
        assert_eq!(
            access.scopes,
            scopes.map(|v| v.into_iter().map(String::from).collect::<Vec<_>>()),
            "{token}"
        );
        assert_eq!(
            grant.scopes,
            vec!["openid", "email"],
            "{token}: the grant's stay"
        );
    }
}

async fn replayed_code_revokes_grant_and_its_tokens(db: &TestDb) {
    let s = db.s();
    let code = auth_code("c1", "g1", NOW + 60);
    store_code(s, &code).await;
    let first = access_token("t1", "g1", NOW + 3600);
    assert!(matches!(
        s.redeem_auth_code("c1", &only(first), NOW).await.unwrap(),
        Redemption::Issued(_)
    ));
    let second = access_token("t2", "g1", NOW + 3600);
    assert_eq!(
        s.redeem_auth_code("c1", &only(second.clone()), NOW + 1)
            .await
            .unwrap(),
        Redemption::Replayed {
            grant_id: "g1".into()
        }
    );
    assert_eq!(
        s.get_grant("g1").await.unwrap().unwrap().revoked_at,
        Some(NOW + 1)
    );
    assert_eq!(s.get_access_token("t1", NOW + 2).await.unwrap(), None);
    assert_eq!(s.get_access_token("t2", NOW + 2).await.unwrap(), None);
    // Later replays, even after the code expired, still count as replays.
    assert_eq!(
        s.redeem_auth_code("c1", &only(second), NOW + 120)
            .await
            .unwrap(),
        Redemption::Replayed {
            grant_id: "g1".into()
        }
    );
    assert_eq!(
        s.get_grant("g1").await.unwrap().unwrap().revoked_at,
        Some(NOW + 1),
        "the first revocation time stays"
    );
}

async fn expired_code_is_expired_and_stays_unredeemed(db: &TestDb) {
    let s = db.s();
    store_code(s, &auth_code("c1", "g1", NOW)).await;
    assert_eq!(
        s.redeem_auth_code("c1", &only(access_token("t1", "g1", NOW + 3600)), NOW)
            .await
            .unwrap(),
        Redemption::Expired
    );
    assert_eq!(
        s.get_auth_code("c1").await.unwrap().unwrap().redeemed_at,
        None
    );
    assert_eq!(s.get_grant("g1").await.unwrap(), None);
    assert_eq!(s.get_access_token("t1", NOW - 1).await.unwrap(), None);
}

async fn unknown_code_is_not_found(db: &TestDb) {
    let s = db.s();
    assert_eq!(
        s.redeem_auth_code("nope", &only(access_token("t1", "g1", NOW + 3600)), NOW)
            .await
            .unwrap(),
        Redemption::NotFound
    );
    assert_eq!(s.get_grant("g1").await.unwrap(), None);
}

async fn concurrent_redemptions_issue_exactly_once(db: &TestDb) {
    const TASKS: usize = 10;
    let other = db.open_another().await;
    let pools = [db.storage.clone(), other];
    for round in 0..3 {
        let grant_id = format!("g{round}");
        let code_hash = format!("c{round}");
        store_code(db.s(), &auth_code(&code_hash, &grant_id, NOW + 60)).await;
        let barrier = Arc::new(Barrier::new(TASKS));
        let tasks: Vec<_> = (0..TASKS)
            .map(|i| {
                let s = pools[i % pools.len()].clone();
                let barrier = barrier.clone();
                let tokens = IssuedTokens {
                    access: access_token(&format!("t{round}-{i}"), &grant_id, NOW + 3600),
                    refresh: Some(refresh_token(&format!("r{round}-{i}"), &grant_id, None)),
                };
                let code_hash = code_hash.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    s.redeem_auth_code(&code_hash, &tokens, NOW).await
                })
            })
            .collect();
        let mut issued = 0;
        let mut replayed = 0;
        for task in tasks {
            match task.await.unwrap().unwrap() {
                Redemption::Issued(g) => {
                    assert_eq!(g.id, grant_id);
                    issued += 1;
                }
                Redemption::Replayed { grant_id: g } => {
                    assert_eq!(g, grant_id);
                    replayed += 1;
                }
                other => panic!("unexpected outcome {other:?}"),
            }
        }
        assert_eq!(issued, 1, "round {round}: exactly one redemption wins");
        assert_eq!(replayed, TASKS - 1);
        let mut refresh_stored = 0;
        for i in 0..TASKS {
            let hash = format!("r{round}-{i}");
            if db.s().get_refresh_token(&hash).await.unwrap().is_some() {
                refresh_stored += 1;
            }
        }
        assert_eq!(
            refresh_stored, 1,
            "only the winner's refresh token is stored"
        );
        // The losers saw a replay, so the grant is revoked, as for any replay.
        assert!(db
            .s()
            .get_grant(&grant_id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some());
    }
}

async fn access_token_is_invalid_from_its_expiry(db: &TestDb) {
    let s = db.s();
    let g = grant_via_code(s, "g1", NOW + 100).await;
    let (token, found) = s
        .get_access_token("at-g1", NOW + 99)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(token, access_token("at-g1", "g1", NOW + 100));
    assert_eq!(found, g);
    assert_eq!(s.get_access_token("at-g1", NOW + 100).await.unwrap(), None);
    assert_eq!(s.get_access_token("missing", NOW).await.unwrap(), None);
}

async fn grant_is_revoked_once(db: &TestDb) {
    let s = db.s();
    grant_via_code(s, "g1", NOW + 100).await;
    assert!(s.revoke_grant("g1", NOW + 5).await.unwrap());
    assert!(!s.revoke_grant("g1", NOW + 6).await.unwrap());
    assert!(!s.revoke_grant("missing", NOW).await.unwrap());
    assert_eq!(
        s.get_grant("g1").await.unwrap().unwrap().revoked_at,
        Some(NOW + 5)
    );
    assert_eq!(s.get_access_token("at-g1", NOW + 7).await.unwrap(), None);
}

async fn signing_keys_insert_list_delete(db: &TestDb) {
    let s = db.s();
    assert_eq!(s.list_signing_keys().await.unwrap(), vec![]);
    let first = signing_key("k1", "");
    let mut second = signing_key("k2", "k1");
    second.created_at = NOW + 10;
    second.alg = "ES256".into();
    assert!(s.insert_signing_key(&second).await.unwrap());
    assert!(s.insert_signing_key(&first).await.unwrap());
    assert_eq!(
        s.list_signing_keys().await.unwrap(),
        vec![first.clone(), second.clone()],
        "oldest first"
    );
    assert!(s.delete_signing_key("k1").await.unwrap());
    assert!(!s.delete_signing_key("k1").await.unwrap());
    assert_eq!(s.list_signing_keys().await.unwrap(), vec![second]);
}

async fn conflicting_successor_is_refused(db: &TestDb) {
    let s = db.s();
    assert!(s.insert_signing_key(&signing_key("k1", "")).await.unwrap());
    assert!(!s.insert_signing_key(&signing_key("k1b", "")).await.unwrap());
    assert!(s
        .insert_signing_key(&signing_key("k2", "k1"))
        .await
        .unwrap());
    assert!(!s
        .insert_signing_key(&signing_key("k2b", "k1"))
        .await
        .unwrap());
    let kids: Vec<_> = s
        .list_signing_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert_eq!(kids, vec!["k1", "k2"]);
}

async fn duplicate_kid_already_exists(db: &TestDb) {
    let s = db.s();
    assert!(s.insert_signing_key(&signing_key("k1", "")).await.unwrap());
    let err = s
        .insert_signing_key(&signing_key("k1", "other"))
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::AlreadyExists(_)), "got {err:?}");
}

async fn concurrent_rotations_from_two_pools_have_one_winner(db: &TestDb) {
    const ROUNDS: usize = 25;
    let pools = [db.storage.clone(), db.open_another().await];
    let mut current = String::new();
    for round in 0..ROUNDS {
        let barrier = Arc::new(Barrier::new(pools.len()));
        let tasks: Vec<_> = pools
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let s = s.clone();
                let barrier = barrier.clone();
                let mut key = signing_key(&format!("r{round}-p{i}"), &current);
                key.created_at = NOW + round as i64;
                tokio::spawn(async move {
                    barrier.wait().await;
                    let won = s.insert_signing_key(&key).await.unwrap();
                    (won, key.kid)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            let (won, kid) = task.await.unwrap();
            if won {
                winners.push(kid);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        current = winners.remove(0);
    }
    let keys = db.s().list_signing_keys().await.unwrap();
    assert_eq!(keys.len(), ROUNDS);
    assert_eq!(keys.last().unwrap().kid, current);
}

async fn sweep_removes_expired_and_keeps_live(db: &TestDb) {
    let s = db.s();
    let grant_cutoff = NOW - 500;
    let code_cutoff = NOW - 300;

    for id in ["old1", "old2", "old3"] {
        s.create_auth_request(&auth_request(id, NOW - 10))
            .await
            .unwrap();
    }
    s.create_auth_request(&auth_request("live", NOW + 600))
        .await
        .unwrap();

    store_code(s, &auth_code("code-old", "gx1", NOW - 400)).await;
    store_code(s, &auth_code("code-recent", "gx2", NOW - 100)).await;

    // Grants come from codes that stay live (NOW + 60), so they count as kept codes.
    // A revoked grant goes with its tokens, live or not.
    grant_via_code(s, "revoked-old", NOW - 10).await;
    grant_via_code(s, "revoked-old-live-token", NOW + 600).await;
    grant_via_code(s, "revoked-recent", NOW - 10).await;
    grant_via_code(s, "unrevoked", NOW - 10).await;
    grant_via_code(s, "unrevoked-live", NOW + 600).await;
    assert!(s.revoke_grant("revoked-old", NOW - 1000).await.unwrap());
    assert!(s
        .revoke_grant("revoked-old-live-token", NOW - 1000)
        .await
        .unwrap());
    assert!(s.revoke_grant("revoked-recent", NOW - 100).await.unwrap());

    let swept = s
        .sweep(&cutoffs(code_cutoff, grant_cutoff, 100))
        .await
        .unwrap();
    assert_eq!(
        swept,
        Swept {
            auth_requests: 3,
            auth_codes: 1,
            access_tokens: 4,
            grants: 3,
            ..Swept::default()
        }
    );

    assert!(s.get_auth_request("live").await.unwrap().is_some());
    assert!(s.get_auth_request("old1").await.unwrap().is_none());
    assert!(s.get_auth_code("code-old").await.unwrap().is_none());
    assert!(s.get_auth_code("code-recent").await.unwrap().is_some());
    assert!(s.get_auth_code("code-unrevoked").await.unwrap().is_some());
    assert!(s.get_grant("revoked-old").await.unwrap().is_none());
    assert!(s
        .get_grant("revoked-old-live-token")
        .await
        .unwrap()
        .is_none());
    assert!(
        s.get_grant("unrevoked").await.unwrap().is_none(),
        "an unrevoked grant goes with its last token"
    );
    for kept in ["revoked-recent", "unrevoked-live"] {
        assert!(s.get_grant(kept).await.unwrap().is_some(), "{kept}");
    }
    assert!(s
        .get_access_token("at-unrevoked-live", NOW)
        .await
        .unwrap()
        .is_some());

    assert_eq!(
        s.sweep(&cutoffs(code_cutoff, grant_cutoff, 100))
            .await
            .unwrap(),
        Swept::default(),
        "a second sweep finds nothing"
    );
}

async fn sweep_deletes_at_most_batch_rows_of_each_kind(db: &TestDb) {
    let s = db.s();
    for i in 0..5 {
        s.create_auth_request(&auth_request(&format!("r{i}"), NOW - 10))
            .await
            .unwrap();
    }
    for i in 0..3 {
        store_code(
            s,
            &auth_code(&format!("c{i}"), &format!("gc{i}"), NOW - 400),
        )
        .await;
    }
    let mut counts = Vec::new();
    loop {
        let swept = s.sweep(&cutoffs(NOW - 300, NOW - 500, 2)).await.unwrap();
        counts.push((swept.auth_requests, swept.auth_codes));
        if swept == Swept::default() {
            break;
        }
        assert!(counts.len() < 10, "sweep does not converge: {counts:?}");
    }
    assert_eq!(counts, vec![(2, 2), (2, 1), (1, 0), (0, 0)]);
    assert_eq!(
        s.sweep(&SweepCutoffs {
            refresh_idle_cutoff: Some(NOW),
            rotated_cutoff: NOW,
            ..cutoffs(NOW, NOW, 0)
        })
        .await
        .unwrap(),
        Swept::default(),
        "batch 0 deletes nothing"
    );
}

async fn refresh_last_used_follows_rotation_and_is_none_without_a_refresh_token(db: &TestDb) {
    let s = db.s();
    assert_eq!(s.refresh_last_used("g1").await.unwrap(), None);
    let first = refresh_token("rt0", "g1", Some(NOW + 86400));
    grant_with_refresh(s, first.clone()).await;
    assert_eq!(
        s.refresh_last_used("g1").await.unwrap(),
        Some(first.last_used_at)
    );
    s.rotate_refresh_token(&rotation("rt0", Some("rt1"), "at1", NOW + 10), NOW + 10)
        .await
        .unwrap();
    assert_eq!(s.refresh_last_used("g1").await.unwrap(), Some(NOW + 10));
}

async fn refresh_rotates_and_the_successor_works(db: &TestDb) {
    let s = db.s();
    let first = refresh_token("rt0", "g1", Some(NOW + 86400));
    grant_with_refresh(s, first.clone()).await;

    let outcome = s
        .rotate_refresh_token(&rotation("rt0", Some("rt1"), "at1", NOW + 10), NOW + 10)
        .await
        .unwrap();
    assert!(matches!(outcome, RefreshOutcome::Rotated(_)), "{outcome:?}");
    let (old, _) = s.get_refresh_token("rt0").await.unwrap().unwrap();
    assert_eq!(
        old,
        RefreshToken {
            last_used_at: NOW + 10,
            rotated_at: Some(NOW + 10),
            successor_hash: Some("rt1".into()),
            ..first
        }
    );
    let (successor, _) = s.get_refresh_token("rt1").await.unwrap().unwrap();
    assert_eq!(successor.rotated_at, None);
    assert_eq!(successor.expires_at, Some(NOW + 86400));
    assert!(s.get_access_token("at1", NOW + 11).await.unwrap().is_some());

    let outcome = s
        .rotate_refresh_token(&rotation("rt1", Some("rt2"), "at2", NOW + 20), NOW + 20)
        .await
        .unwrap();
    assert!(matches!(outcome, RefreshOutcome::Rotated(_)), "{outcome:?}");
    assert!(s.get_refresh_token("rt2").await.unwrap().is_some());
    assert!(s.get_access_token("at2", NOW + 21).await.unwrap().is_some());
}

/// The rotation's last write (its access token) collides with an existing one: the three
/// writes before it (old token marked, successor, grant identity) are undone, and the
/// database is not left locked for the next rotation.
async fn failed_rotation_writes_nothing_and_the_next_one_succeeds(db: &TestDb) {
    let s = db.s();
    let first = refresh_token("rt0", "g1", Some(NOW + 86400));
    grant_with_refresh(s, first.clone()).await;
    let (_, grant_before) = s.get_refresh_token("rt0").await.unwrap().unwrap();

    let failed = s
        .rotate_refresh_token(&rotation("rt0", Some("rt1"), "at-g1", NOW + 10), NOW + 10)
        .await;
    assert!(failed.is_err(), "{failed:?}");
    assert_eq!(
        s.get_refresh_token("rt0").await.unwrap(),
        Some((first, grant_before)),
        "neither the old token nor the grant changed"
    );
    assert_eq!(s.get_refresh_token("rt1").await.unwrap(), None);

    let next = tokio::time::timeout(
        Duration::from_secs(3),
        s.rotate_refresh_token(&rotation("rt0", Some("rt1"), "at1", NOW + 20), NOW + 20),
    )
    .await
    .expect("the failed rotation left the database locked")
    .unwrap();
    assert!(matches!(next, RefreshOutcome::Rotated(_)), "{next:?}");
    assert!(s.get_access_token("at1", NOW + 21).await.unwrap().is_some());
}

/// `rotation`, for grant `grant_id`'s family.
fn family_rotation(
    grant_id: &str,
    old: &str,
    successor: Option<&str>,
    access: &str,
    at: i64,
) -> Rotation {
    let mut r = rotation(old, successor, access, at);
    if let Some(successor) = r.successor.as_mut() {
        successor.grant_id = grant_id.to_string();
    }
    r.access.grant_id = grant_id.to_string();
    r
}

/// Reads of refresh tokens that arrive together with rotations and new grants (on SQLite
/// they join the same batches) each find their own token and grant, or nothing for a token
/// that does not exist; a token read while it rotates is seen either before or after.
async fn refresh_token_reads_among_writes_each_find_their_own(db: &TestDb) {
    const FAMILIES: usize = 20;
    let s = db.s();
    for i in 0..FAMILIES {
        let id = format!("read{i}");
        let tokens = IssuedTokens {
            access: access_token(&format!("at-{id}"), &id, NOW + 3600),
            refresh: Some(refresh_token(&format!("rt-{id}-0"), &id, None)),
        };
        s.issue_grant(&grant(&id), &tokens).await.unwrap();
    }
    let start = Arc::new(Barrier::new(4 * FAMILIES));
    let mut tasks = Vec::new();
    for i in 0..FAMILIES {
        let id = format!("read{i}");
        let rotation = family_rotation(
            &id,
            &format!("rt-{id}-0"),
            Some(&format!("rt-{id}-1")),
            &format!("at-{id}-1"),
            NOW + 10,
        );
        let (storage, go) = (db.storage.clone(), start.clone());
        let rotate = tokio::spawn(async move {
            go.wait().await;
            storage.rotate_refresh_token(&rotation, NOW + 10).await
        });
        let (storage, go, hash) = (db.storage.clone(), start.clone(), format!("rt-{id}-0"));
        let read = tokio::spawn(async move {
            go.wait().await;
            storage.get_refresh_token(&hash).await
        });
        let (storage, go, hash) = (db.storage.clone(), start.clone(), format!("rt-none{i}"));
        let missing = tokio::spawn(async move {
            go.wait().await;
            storage.get_refresh_token(&hash).await
        });
        let (storage, go, new) = (db.storage.clone(), start.clone(), format!("readnew{i}"));
        let issue = tokio::spawn(async move {
            go.wait().await;
            let tokens = only(access_token(&format!("at-{new}"), &new, NOW + 60));
            storage.issue_grant(&grant(&new), &tokens).await
        });
        tasks.push((id, rotate, read, missing, issue));
    }
    for (id, rotate, read, missing, issue) in tasks {
        match rotate.await.unwrap().unwrap() {
            RefreshOutcome::Rotated(g) => assert_eq!(g.id, id),
            other => panic!("{id}: expected Rotated, got {other:?}"),
        }
        let (token, of) = read.await.unwrap().unwrap().expect("the token is found");
        assert_eq!(token.token_hash, format!("rt-{id}-0"));
        assert_eq!((token.grant_id.as_str(), of.id.as_str()), (&*id, &*id));
        match token.rotated_at {
            None => assert_eq!(token.successor_hash, None, "{id}: before the rotation"),
            Some(at) => {
                assert_eq!(at, NOW + 10, "{id}");
                assert_eq!(token.successor_hash, Some(format!("rt-{id}-1")));
            }
        }
        assert_eq!(missing.await.unwrap().unwrap(), None, "{id}");
        issue.await.unwrap().unwrap();
    }
}

/// Thirty families rotating at once alongside thirty new grants (SQLite settles them in
/// shared transactions), one rotation failing on an access token that already exists: every
/// other use is decided and written as if alone, and the failing one writes nothing.
async fn concurrent_rotations_and_grants_settle_each_on_its_own(db: &TestDb) {
    const FAMILIES: usize = 30;
    const FAILING: usize = 7;
    let s = db.s();
    for i in 0..FAMILIES {
        let id = format!("fam{i}");
        let tokens = IssuedTokens {
            access: access_token(&format!("at-{id}"), &id, NOW + 3600),
            refresh: Some(refresh_token(&format!("rt-{id}-0"), &id, None)),
        };
        s.issue_grant(&grant(&id), &tokens).await.unwrap();
    }
    let start = Arc::new(Barrier::new(2 * FAMILIES));
    let mut rotations = Vec::new();
    let mut grants = Vec::new();
    for i in 0..FAMILIES {
        let id = format!("fam{i}");
        let access = if i == FAILING {
            "at-fam8".to_string()
        } else {
            format!("at-{id}-1")
        };
        let r = family_rotation(
            &id,
            &format!("rt-{id}-0"),
            Some(&format!("rt-{id}-1")),
            &access,
            NOW + 10,
        );
        let (storage, go) = (db.storage.clone(), start.clone());
        rotations.push(tokio::spawn(async move {
            go.wait().await;
            storage.rotate_refresh_token(&r, NOW + 10).await
        }));
        let (storage, go) = (db.storage.clone(), start.clone());
        let new = format!("new{i}");
        grants.push(tokio::spawn(async move {
            go.wait().await;
            let tokens = only(access_token(&format!("at-{new}"), &new, NOW + 60));
            storage.issue_grant(&grant(&new), &tokens).await
        }));
    }
    for (i, task) in rotations.into_iter().enumerate() {
        let id = format!("fam{i}");
        let outcome = task.await.unwrap();
        let (old, family) = s
            .get_refresh_token(&format!("rt-{id}-0"))
            .await
            .unwrap()
            .unwrap();
        let successor = s.get_refresh_token(&format!("rt-{id}-1")).await.unwrap();
        if i == FAILING {
            assert!(outcome.is_err(), "{outcome:?}");
            assert_eq!(old.rotated_at, None, "the old token stays current");
            assert_eq!(successor, None);
            assert_eq!(family, grant(&id), "the grant kept its claims");
            continue;
        }
        match outcome.unwrap() {
            RefreshOutcome::Rotated(g) => assert_eq!(g.id, id),
            other => panic!("{id}: expected Rotated, got {other:?}"),
        }
        assert_eq!(old.rotated_at, Some(NOW + 10), "{id}");
        assert_eq!(old.successor_hash, Some(format!("rt-{id}-1")));
        let (successor, _) = successor.expect("the successor is stored");
        assert_eq!(
            (successor.grant_id, successor.rotated_at),
            (id.clone(), None)
        );
        assert_eq!(family.claims, refreshed_claims(), "{id}");
        let (access, of) = s
            .get_access_token(&format!("at-{id}-1"), NOW + 11)
            .await
            .unwrap()
            .expect("the rotation's access token is stored");
        assert_eq!((access.grant_id.as_str(), of.id.as_str()), (&*id, &*id));
    }
    assert_eq!(
        s.get_access_token("at-fam8", NOW)
            .await
            .unwrap()
            .map(|(_, g)| g.id),
        Some("fam8".to_string()),
        "the token the failed rotation collided with is untouched"
    );
    for (i, task) in grants.into_iter().enumerate() {
        task.await.unwrap().unwrap();
        assert!(s
            .get_access_token(&format!("at-new{i}"), NOW)
            .await
            .unwrap()
            .is_some());
    }
}

/// Replays of a family's two rotated tokens and a use of its current token arrive together
/// (SQLite may read them in one batch): whichever is decided first, the family ends revoked,
/// and the current token's use either rotated before the revocation or is refused.
async fn replays_and_current_use_of_one_family_at_once_revoke_it(db: &TestDb) {
    let s = db.s();
    for round in 0..10 {
        let id = format!("fr{round}");
        let token = |n: usize| format!("{id}-{n}");
        let tokens = IssuedTokens {
            access: access_token(&format!("at-{id}"), &id, NOW + 3600),
            refresh: Some(refresh_token(&token(0), &id, None)),
        };
        s.issue_grant(&grant(&id), &tokens).await.unwrap();
        for n in 0..2 {
            let at = NOW + n as i64;
            let next = family_rotation(&id, &token(n), Some(&token(n + 1)), &token(n + 10), at);
            assert!(matches!(
                s.rotate_refresh_token(&next, at).await.unwrap(),
                RefreshOutcome::Rotated(_)
            ));
        }
        // Past the reuse interval: using either rotated token again is a replay.
        let at = NOW + 60;
        let uses = [
            family_rotation(&id, &token(0), Some(&token(20)), &token(30), at),
            family_rotation(&id, &token(1), Some(&token(21)), &token(31), at),
            family_rotation(&id, &token(2), Some(&token(22)), &token(32), at),
        ];
        let start = Arc::new(Barrier::new(uses.len()));
        let tasks: Vec<_> = uses
            .into_iter()
            .map(|r| {
                let (storage, go) = (db.storage.clone(), start.clone());
                tokio::spawn(async move {
                    go.wait().await;
                    storage.rotate_refresh_token(&r, at).await
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.unwrap().unwrap());
        }
        let replayed = RefreshOutcome::Replayed {
            grant_id: id.clone(),
        };
        assert!(
            outcomes[..2].contains(&replayed)
                && outcomes[..2]
                    .iter()
                    .all(|o| *o == replayed || *o == RefreshOutcome::Revoked),
            "round {round}: {outcomes:?}"
        );
        let (_, family) = s.get_refresh_token(&token(2)).await.unwrap().unwrap();
        assert_eq!(
            family.revoked_at,
            Some(at),
            "round {round}: the family is revoked"
        );
        match &outcomes[2] {
            RefreshOutcome::Rotated(_) => {
                assert!(s.get_refresh_token(&token(22)).await.unwrap().is_some())
            }
            RefreshOutcome::Revoked => {
                assert_eq!(s.get_refresh_token(&token(22)).await.unwrap(), None);
                assert_eq!(s.get_access_token(&token(32), at).await.unwrap(), None);
            }
            other => panic!("round {round}: unexpected {other:?}"),
        }
        for replay in [20, 21, 30, 31] {
            assert_eq!(s.get_refresh_token(&token(replay)).await.unwrap(), None);
            assert_eq!(s.get_access_token(&token(replay), at).await.unwrap(), None);
        }
    }
}

/// Rotations dropped at every point of their progress (a client hanging up): each one wrote
/// all of its rows or none, and none leaves a transaction open behind it.
async fn cancelled_rotations_write_all_or_nothing_and_leave_no_lock(db: &TestDb) {
    let storage = db.storage.clone();
    for round in 0..ABORT_ROUNDS {
        let (old, next, access) = (
            format!("c{round}"),
            format!("c{round}-next"),
            format!("c{round}-at"),
        );
        let grant_id = format!("cg{round}");
        let tokens = IssuedTokens {
            access: access_token(&format!("{grant_id}-at"), &grant_id, NOW + 3600),
            refresh: Some(refresh_token(&old, &grant_id, None)),
        };
        storage
            .issue_grant(&grant(&grant_id), &tokens)
            .await
            .unwrap();
        let mut r = rotation(&old, Some(&next), &access, NOW + 10);
        if let Some(successor) = r.successor.as_mut() {
            successor.grant_id = grant_id.clone();
        }
        r.access.grant_id = grant_id.clone();

        let s = storage.clone();
        let task = tokio::spawn(async move { s.rotate_refresh_token(&r, NOW + 10).await });
        let written = || async {
            vec![
                storage.get_refresh_token(&next).await.unwrap().is_some(),
                storage
                    .get_access_token(&access, NOW + 11)
                    .await
                    .unwrap()
                    .is_some(),
                storage
                    .get_refresh_token(&old)
                    .await
                    .unwrap()
                    .is_some_and(|(t, _)| t.rotated_at.is_some()),
            ]
        };
        abort_and_check_all_or_nothing(&storage, round, task, written).await;
    }
}

/// The same for code redemptions.
async fn cancelled_redemptions_write_all_or_nothing_and_leave_no_lock(db: &TestDb) {
    let storage = db.storage.clone();
    for round in 0..ABORT_ROUNDS {
        let (code, grant_id) = (format!("code{round}"), format!("rg{round}"));
        store_code(storage.as_ref(), &auth_code(&code, &grant_id, NOW + 60)).await;
        let (access, refresh) = (format!("{code}-at"), format!("{code}-rt"));
        let tokens = IssuedTokens {
            access: access_token(&access, &grant_id, NOW + 3600),
            refresh: Some(refresh_token(&refresh, &grant_id, None)),
        };

        let s = storage.clone();
        let redeemed = code.clone();
        let task =
            tokio::spawn(async move { s.redeem_auth_code(&redeemed, &tokens, NOW + 1).await });
        let written = || async {
            vec![
                storage.get_refresh_token(&refresh).await.unwrap().is_some(),
                storage
                    .get_access_token(&access, NOW + 2)
                    .await
                    .unwrap()
                    .is_some(),
                storage.get_grant(&grant_id).await.unwrap().is_some(),
                storage
                    .get_auth_code(&code)
                    .await
                    .unwrap()
                    .is_some_and(|c| c.redeemed_at.is_some()),
            ]
        };
        abort_and_check_all_or_nothing(&storage, round, task, written).await;
    }
}

const ABORT_ROUNDS: u64 = 40;

/// Aborts `task` (a write) after `round` x 50 us, from before it starts to after it finished
/// over the rounds, then checks that the write left all of its rows or none (`written` says,
/// for each row, whether it is there) and no transaction open behind it.
async fn abort_and_check_all_or_nothing<T, F>(
    storage: &SharedStorage,
    round: u64,
    task: tokio::task::JoinHandle<T>,
    written: impl Fn() -> F,
) where
    F: std::future::Future<Output = Vec<bool>>,
{
    tokio::time::sleep(Duration::from_micros(round * 50)).await;
    task.abort();
    let _ = task.await;
    // A commit already on its way when the task was aborted may land between the reads;
    // `written` reads in an order in which that can only make a later read see more.
    let seen = written().await;
    assert!(
        seen.windows(2).all(|w| !w[0] || w[1]),
        "round {round}: part of a write is there: {seen:?}"
    );
    // A write waits for, or fails on, a transaction left open.
    tokio::time::timeout(
        Duration::from_secs(3),
        storage.create_client(&client(&format!("after{round}"))),
    )
    .await
    .unwrap_or_else(|_| panic!("round {round}: the database stayed locked"))
    .unwrap();
    // On PostgreSQL a statement that is its own transaction (a current token's rotation) may
    // still be on its way on another connection, and land between two of the reads: only a
    // part that stays is a broken write.
    let started = Instant::now();
    loop {
        let settled = written().await;
        if settled.iter().all(|w| *w) || settled.iter().all(|w| !*w) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "round {round}: part of a write is there: {settled:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn rotation_writes_the_connectors_claims_to_the_grant(db: &TestDb) {
    let s = db.s();
    grant_with_refresh(s, refresh_token("rt0", "g1", None)).await;
    let expected = Grant {
        claims: refreshed_claims(),
        connector_data: Some(r#"{"token":"y"}"#.into()),
        ..grant("g1")
    };
    assert_eq!(
        s.rotate_refresh_token(&rotation("rt0", Some("rt1"), "at1", NOW), NOW)
            .await
            .unwrap(),
        RefreshOutcome::Rotated(expected.clone())
    );
    assert_eq!(s.get_grant("g1").await.unwrap(), Some(expected.clone()));
    let (_, via_token) = s.get_access_token("at1", NOW).await.unwrap().unwrap();
    assert_eq!(via_token, expected);
}

async fn rotated_token_reused_within_interval_yields_the_same_successor(db: &TestDb) {
    let s = db.s();
    grant_with_refresh(s, refresh_token("rt0", "g1", None)).await;
    let RefreshOutcome::Rotated(rotated) = s
        .rotate_refresh_token(&rotation("rt0", Some("rt1"), "at1", NOW), NOW)
        .await
        .unwrap()
    else {
        panic!("expected Rotated");
    };

    // A retry (say, the response was lost) draws another successor and reports other
    // claims; neither may be stored.
    let mut retry = rotation("rt0", Some("rt1-retry"), "at1-retry", NOW + 5);
    retry.claims.username = "Someone Else".into();
    assert_eq!(
        s.rotate_refresh_token(&retry, NOW + 5).await.unwrap(),
        RefreshOutcome::Reused {
            grant: rotated.clone(),
            successor_sealed: sealed("rt1"),
        }
    );
    assert!(s
        .get_access_token("at1-retry", NOW + 6)
        .await
        .unwrap()
        .is_some());
    assert_eq!(s.get_refresh_token("rt1-retry").await.unwrap(), None);
    assert_eq!(s.get_grant("g1").await.unwrap(), Some(rotated));
    let (old, _) = s.get_refresh_token("rt0").await.unwrap().unwrap();
    assert_eq!(old.successor_hash.as_deref(), Some("rt1"));
    assert_eq!(
        old.rotated_at,
        Some(NOW),
        "a reuse does not move the rotation"
    );
}

async fn rotated_token_replayed_after_interval_revokes_the_family(db: &TestDb) {
    let s = db.s();
    grant_with_refresh(s, refresh_token("rt0", "g1", None)).await;
    assert!(matches!(
        s.rotate_refresh_token(&rotation("rt0", Some("rt1"), "at1", NOW), NOW)
            .await
            .unwrap(),
        RefreshOutcome::Rotated(_)
    ));
    assert_eq!(
        s.rotate_refresh_token(&rotation("rt0", Some("rt-x"), "at-x", NOW + 6), NOW + 6)
            .await
            .unwrap(),
        RefreshOutcome::Replayed {
            grant_id: "g1".into()
        }
    );
    assert_eq!(
        s.get_grant("g1").await.unwrap().unwrap().revoked_at,
        Some(NOW + 6)
    );
    assert_eq!(s.get_access_token("at-x", NOW + 7).await.unwrap(), None);
    assert_eq!(s.get_access_token("at1", NOW + 7).await.unwrap(), None);
    assert_eq!(s.get_refresh_token("rt-x").await.unwrap(), None);

    // The legitimate holder's successor is dead too.
    assert_eq!(
        s.rotate_refresh_token(&rotation("rt1", Some("rt2"), "at2", NOW + 7), NOW + 7)
            .await
            .unwrap(),
        RefreshOutcome::Revoked
    );
    assert_eq!(s.get_refresh_token("rt2").await.unwrap(), None);
    assert_eq!(s.get_access_token("at2", NOW + 8).await.unwrap(), None);
    // Whatever their state, tokens stay readable for introspection and revocation.
    let (token, family) = s.get_refresh_token("rt1").await.unwrap().unwrap();
    assert_eq!(token.rotated_at, None);
    assert_eq!(family.revoked_at, Some(NOW + 6));
}

async fn rotated_token_without_sealed_successor_is_a_replay_at_once(db: &TestDb) {
    let s = db.s();
    grant_with_refresh(s, refresh_token("rt0", "g1", None)).await;
    let mut first = rotation("rt0", Some("rt1"), "at1", NOW);
    first.successor_sealed = None;
    assert!(matches!(
        s.rotate_refresh_token(&first, NOW).await.unwrap(),
        RefreshOutcome::Rotated(_)
    ));
    assert_eq!(
        s.rotate_refresh_token(&rotation("rt0", Some("rt-x"), "at-x", NOW), NOW)
            .await
            .unwrap(),
        RefreshOutcome::Replayed {
            grant_id: "g1".into()
        },
        "nothing to hand out again"
    );
}

async fn disabled_rotation_keeps_the_same_token_working(db: &TestDb) {
    let s = db.s();
    let first = refresh_token("rt0", "g1", None);
    grant_with_refresh(s, first.clone()).await;
    for (i, at) in [NOW + 10, NOW + 100, NOW + 1000].into_iter().enumerate() {
        let access = format!("at{i}");
        let outcome = s
            .rotate_refresh_token(&rotation("rt0", None, &access, at), at)
            .await
            .unwrap();
        assert!(matches!(outcome, RefreshOutcome::Rotated(_)), "{outcome:?}");
        assert!(s.get_access_token(&access, at).await.unwrap().is_some());
        let (token, _) = s.get_refresh_token("rt0").await.unwrap().unwrap();
        assert_eq!(
            token,
            RefreshToken {
                last_used_at: at,
                ..first.clone()
            }
        );
    }
}

async fn expired_or_idle_refresh_token_is_expired_and_nothing_written(db: &TestDb) {
    let s = db.s();
    let first = refresh_token("rt0", "g1", Some(NOW + 100));
    grant_with_refresh(s, first.clone()).await;

    let past_end = rotation("rt0", Some("rt1"), "at1", NOW + 100);
    assert_eq!(
        s.rotate_refresh_token(&past_end, NOW + 100).await.unwrap(),
        RefreshOutcome::Expired
    );
    let mut idle = rotation("rt0", Some("rt1"), "at1", NOW + 50);
    idle.idle_cutoff = Some(NOW + 1);
    assert_eq!(
        s.rotate_refresh_token(&idle, NOW + 50).await.unwrap(),
        RefreshOutcome::Expired
    );
    assert_eq!(
        s.get_refresh_token("rt0").await.unwrap(),
        Some((first, grant("g1"))),
        "neither the token nor the grant changed"
    );
    assert_eq!(s.get_refresh_token("rt1").await.unwrap(), None);
    assert_eq!(s.get_access_token("at1", NOW + 51).await.unwrap(), None);

    // Used exactly at the idle cutoff is still alive.
    idle.idle_cutoff = Some(NOW);
    assert!(matches!(
        s.rotate_refresh_token(&idle, NOW + 50).await.unwrap(),
        RefreshOutcome::Rotated(_)
    ));
}

async fn unknown_or_revoked_refresh_token_is_refused(db: &TestDb) {
    let s = db.s();
    assert_eq!(
        s.rotate_refresh_token(&rotation("nope", Some("rt1"), "at1", NOW), NOW)
            .await
            .unwrap(),
        RefreshOutcome::NotFound
    );
    assert_eq!(s.get_refresh_token("nope").await.unwrap(), None);

    grant_with_refresh(s, refresh_token("rt0", "g1", None)).await;
    assert!(s.revoke_grant("g1", NOW).await.unwrap());
    assert_eq!(
        s.rotate_refresh_token(&rotation("rt0", Some("rt1"), "at1", NOW + 1), NOW + 1)
            .await
            .unwrap(),
        RefreshOutcome::Revoked
    );
    assert_eq!(s.get_refresh_token("rt1").await.unwrap(), None);
    let (token, _) = s.get_refresh_token("rt0").await.unwrap().unwrap();
    assert_eq!(token.last_used_at, NOW, "nothing written");
    assert_eq!(s.get_grant("g1").await.unwrap().unwrap().claims, claims());
}

async fn concurrent_rotations_of_one_token_rotate_once(db: &TestDb) {
    const TASKS: usize = 8;
    let pools = [db.storage.clone(), db.open_another().await];
    grant_with_refresh(db.s(), refresh_token("rt0", "g1", None)).await;
    let barrier = Arc::new(Barrier::new(TASKS));
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let s = pools[i % pools.len()].clone();
            let barrier = barrier.clone();
            let rotation = rotation("rt0", Some(&format!("rt1-{i}")), &format!("at-{i}"), NOW);
            tokio::spawn(async move {
                barrier.wait().await;
                s.rotate_refresh_token(&rotation, NOW).await
            })
        })
        .collect();
    let mut rotated = 0;
    let mut reused = Vec::new();
    for task in tasks {
        match task.await.unwrap().unwrap() {
            RefreshOutcome::Rotated(_) => rotated += 1,
            RefreshOutcome::Reused {
                successor_sealed, ..
            } => reused.push(successor_sealed),
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(rotated, 1, "exactly one use rotates");
    assert_eq!(reused.len(), TASKS - 1);
    let (old, _) = db.s().get_refresh_token("rt0").await.unwrap().unwrap();
    let winner = old.successor_hash.expect("rotated");
    for bytes in &reused {
        assert_eq!(
            bytes,
            &sealed(&winner),
            "every retry gets the winner's successor"
        );
    }
    for i in 0..TASKS {
        let successor = db.s().get_refresh_token(&format!("rt1-{i}")).await.unwrap();
        assert_eq!(successor.is_some(), format!("rt1-{i}") == winner);
        let access = db
            .s()
            .get_access_token(&format!("at-{i}"), NOW)
            .await
            .unwrap();
        assert!(
            access.is_some(),
            "every answered use stores its access token"
        );
    }
}

async fn issued_grant_keeps_every_field_exactly(db: &TestDb) {
    let s = db.s();
    let mut tricky = grant("g-\"quoted\"\\");
    tricky.claims.username = "Zoë \"Z\" O'Neil\n\t\u{1F600}".into();
    tricky.claims.groups = vec!["a,b".into(), "[]{}".into(), String::new()];
    tricky.scopes = vec![];
    tricky.nonce = None;
    tricky.connector_data = Some(r#"{"refresh":"r\"1","n":[1,2]}"#.into());
    tricky.revoked_at = Some(NOW + 1);
    let mut refresh = refresh_token("rt\"x", &tricky.id, Some(NOW + 99));
    refresh.rotated_at = Some(NOW + 2);
    refresh.successor_hash = Some("next".into());
    let tokens = IssuedTokens {
        access: access_token("at\u{e9}", &tricky.id, NOW + 3600),
        refresh: Some(refresh.clone()),
    };
    s.issue_grant(&tricky, &tokens).await.unwrap();
    assert_eq!(s.get_grant(&tricky.id).await.unwrap(), Some(tricky.clone()));
    let stored = s.get_refresh_token("rt\"x").await.unwrap();
    assert_eq!(stored, Some((refresh, tricky)));
}

/// Writers may batch grants together; one that conflicts must fail alone, and write nothing.
async fn concurrent_grants_succeed_or_fail_each_on_its_own(db: &TestDb) {
    db.s()
        .issue_grant(
            &grant("taken"),
            &only(access_token("at-first", "taken", NOW + 60)),
        )
        .await
        .unwrap();
    let start = Arc::new(Barrier::new(40));
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let storage = db.storage.clone();
            let start = start.clone();
            tokio::spawn(async move {
                let id = if i == 17 {
                    "taken".to_string()
                } else {
                    format!("g{i}")
                };
                let tokens = IssuedTokens {
                    access: access_token(&format!("at{i}"), &id, NOW + 60),
                    refresh: (i % 2 == 0).then(|| refresh_token(&format!("rt{i}"), &id, None)),
                };
                start.wait().await;
                storage.issue_grant(&grant(&id), &tokens).await
            })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let outcome = task.await.unwrap();
        if i == 17 {
            assert!(
                matches!(outcome, Err(StorageError::AlreadyExists(_))),
                "got {outcome:?}"
            );
            assert_eq!(db.s().get_access_token("at17", NOW).await.unwrap(), None);
            assert_eq!(db.s().get_refresh_token("rt17").await.unwrap(), None);
        } else {
            outcome.unwrap();
            let (_, grant_of_token) = db
                .s()
                .get_access_token(&format!("at{i}"), NOW)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(grant_of_token, grant(&format!("g{i}")));
            assert_eq!(
                db.s()
                    .get_refresh_token(&format!("rt{i}"))
                    .await
                    .unwrap()
                    .is_some(),
                i % 2 == 0
            );
        }
    }
}

async fn issued_grant_stores_its_tokens_and_access_tokens_revoke_one_by_one(db: &TestDb) {
    let s = db.s();
    let refresh = refresh_token("rt0", "g1", None);
    let tokens = IssuedTokens {
        access: access_token("at1", "g1", NOW + 3600),
        refresh: Some(refresh.clone()),
    };
    s.issue_grant(&grant("g1"), &tokens).await.unwrap();
    s.issue_grant(&grant("g2"), &only(access_token("at2", "g2", NOW + 3600)))
        .await
        .unwrap();
    assert_eq!(s.get_grant("g1").await.unwrap(), Some(grant("g1")));
    assert!(s.get_access_token("at1", NOW).await.unwrap().is_some());
    assert_eq!(
        s.get_refresh_token("rt0").await.unwrap(),
        Some((refresh, grant("g1")))
    );

    let again = IssuedTokens {
        access: access_token("at3", "g1", NOW + 3600),
        refresh: None,
    };
    let err = s.issue_grant(&grant("g1"), &again).await.unwrap_err();
    assert!(matches!(err, StorageError::AlreadyExists(_)), "got {err:?}");
    assert_eq!(
        s.get_access_token("at3", NOW).await.unwrap(),
        None,
        "a failed issue writes nothing"
    );

    assert!(s.revoke_access_token("at1").await.unwrap());
    assert!(!s.revoke_access_token("at1").await.unwrap());
    assert!(!s.revoke_access_token("missing").await.unwrap());
    assert_eq!(s.get_access_token("at1", NOW).await.unwrap(), None);
    assert!(s.get_access_token("at2", NOW).await.unwrap().is_some());
    assert_eq!(
        s.get_grant("g1").await.unwrap().unwrap().revoked_at,
        None,
        "revoking an access token leaves its grant alone"
    );
    assert!(s.get_refresh_token("rt0").await.unwrap().is_some());
    assert!(s.revoke_access_token("at2").await.unwrap());
    assert_eq!(
        s.get_grant("g2").await.unwrap(),
        None,
        "a grant left without tokens goes with its last one"
    );
}

async fn device_request_round_trips_and_user_codes_are_unique(db: &TestDb) {
    let s = db.s();
    let request = device_request("ABCDEFGH", NOW + 600);
    s.create_device_request(&request).await.unwrap();
    assert_eq!(
        s.get_device_request("ABCDEFGH").await.unwrap(),
        Some(request.clone())
    );
    assert_eq!(s.get_device_request("ZZZZZZZZ").await.unwrap(), None);

    let mut clash = device_request("ABCDEFGH", NOW + 900);
    clash.device_code_hash = "dc-other".into();
    clash.client_id = "other".into();
    let err = s.create_device_request(&clash).await.unwrap_err();
    assert!(matches!(err, StorageError::AlreadyExists(_)), "got {err:?}");
    assert_eq!(
        s.get_device_request("ABCDEFGH").await.unwrap(),
        Some(request)
    );
}

async fn device_request_completes_once(db: &TestDb) {
    let s = db.s();
    for code in ["APPROVED", "DENIEDXX", "EXPIREDX"] {
        let expires_at = if code == "EXPIREDX" { NOW } else { NOW + 600 };
        s.create_device_request(&device_request(code, expires_at))
            .await
            .unwrap();
    }
    let approved = grant("gd");
    assert!(s
        .complete_device_request("APPROVED", Some(&approved), NOW)
        .await
        .unwrap());
    assert!(!s
        .complete_device_request("APPROVED", None, NOW)
        .await
        .unwrap());
    assert!(!s
        .complete_device_request("APPROVED", Some(&grant("other")), NOW)
        .await
        .unwrap());
    let stored = s.get_device_request("APPROVED").await.unwrap().unwrap();
    assert_eq!(stored.status, DeviceStatus::Approved);
    assert_eq!(stored.grant, Some(approved));

    assert!(s
        .complete_device_request("DENIEDXX", None, NOW)
        .await
        .unwrap());
    assert!(!s
        .complete_device_request("DENIEDXX", Some(&grant("gd2")), NOW)
        .await
        .unwrap());
    let stored = s.get_device_request("DENIEDXX").await.unwrap().unwrap();
    assert_eq!(stored.status, DeviceStatus::Denied);
    assert_eq!(stored.grant, None);

    assert!(!s
        .complete_device_request("EXPIREDX", Some(&grant("gd3")), NOW)
        .await
        .unwrap());
    assert_eq!(
        s.get_device_request("EXPIREDX")
            .await
            .unwrap()
            .unwrap()
            .status,
        DeviceStatus::Pending
    );
    assert!(!s
        .complete_device_request("MISSINGX", None, NOW)
        .await
        .unwrap());
}

async fn device_poll_waits_slows_down_issues_once(db: &TestDb) {
    let s = db.s();
    s.create_device_request(&device_request("ABCDEFGH", NOW + 600))
        .await
        .unwrap();
    let tokens = device_tokens("d");
    let poll = |at: i64| s.poll_device_request("dc-ABCDEFGH", "kubectl", &tokens, at);

    assert_eq!(poll(NOW).await.unwrap(), DevicePoll::Pending);
    assert_eq!(poll(NOW + 2).await.unwrap(), DevicePoll::SlowDown);
    let stored = s.get_device_request("ABCDEFGH").await.unwrap().unwrap();
    assert_eq!(stored.poll_interval, 10, "slow_down adds 5 seconds");
    assert_eq!(stored.last_poll_at, Some(NOW + 2));
    assert_eq!(
        poll(NOW + 11).await.unwrap(),
        DevicePoll::SlowDown,
        "the longer interval counts from the last poll"
    );
    assert_eq!(poll(NOW + 26).await.unwrap(), DevicePoll::Pending);

    assert!(s
        .complete_device_request("ABCDEFGH", Some(&grant("gd")), NOW + 27)
        .await
        .unwrap());
    assert_eq!(
        poll(NOW + 41).await.unwrap(),
        DevicePoll::Issued(grant("gd"))
    );
    assert_eq!(s.get_grant("gd").await.unwrap(), Some(grant("gd")));
    let (access, _) = s.get_access_token("at-d", NOW + 42).await.unwrap().unwrap();
    assert_eq!(access.grant_id, "gd", "tokens belong to the approved grant");
    let (refresh, _) = s.get_refresh_token("rt-d").await.unwrap().unwrap();
    assert_eq!(refresh.grant_id, "gd");
    let stored = s.get_device_request("ABCDEFGH").await.unwrap().unwrap();
    assert_eq!(stored.status, DeviceStatus::Redeemed);

    let later = s
        .poll_device_request("dc-ABCDEFGH", "kubectl", &device_tokens("again"), NOW + 60)
        .await
        .unwrap();
    assert_eq!(later, DevicePoll::AlreadyRedeemed);
    assert_eq!(
        s.get_access_token("at-again", NOW + 61).await.unwrap(),
        None
    );
}

async fn device_poll_denied_expired_or_foreign(db: &TestDb) {
    let s = db.s();
    s.create_device_request(&device_request("DENIEDXX", NOW + 600))
        .await
        .unwrap();
    s.create_device_request(&device_request("EXPIREDX", NOW + 10))
        .await
        .unwrap();
    assert!(s
        .complete_device_request("DENIEDXX", None, NOW)
        .await
        .unwrap());
    let tokens = device_tokens("d");
    assert_eq!(
        s.poll_device_request("dc-DENIEDXX", "kubectl", &tokens, NOW)
            .await
            .unwrap(),
        DevicePoll::Denied
    );
    assert_eq!(
        s.poll_device_request("dc-EXPIREDX", "kubectl", &tokens, NOW + 10)
            .await
            .unwrap(),
        DevicePoll::Expired
    );
    assert_eq!(
        s.poll_device_request("dc-EXPIREDX", "other-client", &tokens, NOW)
            .await
            .unwrap(),
        DevicePoll::NotFound
    );
    assert_eq!(
        s.get_device_request("EXPIREDX")
            .await
            .unwrap()
            .unwrap()
            .last_poll_at,
        None,
        "neither an expired poll nor another client's is recorded"
    );
    assert_eq!(
        s.poll_device_request("dc-MISSING", "kubectl", &tokens, NOW)
            .await
            .unwrap(),
        DevicePoll::NotFound
    );
    assert_eq!(s.get_access_token("at-d", NOW).await.unwrap(), None);
}

async fn concurrent_polls_of_an_approved_request_issue_once(db: &TestDb) {
    const TASKS: usize = 8;
    let pools = [db.storage.clone(), db.open_another().await];
    db.s()
        .create_device_request(&device_request("ABCDEFGH", NOW + 600))
        .await
        .unwrap();
    assert!(db
        .s()
        .complete_device_request("ABCDEFGH", Some(&grant("gd")), NOW)
        .await
        .unwrap());
    let barrier = Arc::new(Barrier::new(TASKS));
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let s = pools[i % pools.len()].clone();
            let barrier = barrier.clone();
            let tokens = device_tokens(&i.to_string());
            tokio::spawn(async move {
                barrier.wait().await;
                s.poll_device_request("dc-ABCDEFGH", "kubectl", &tokens, NOW + 1)
                    .await
            })
        })
        .collect();
    let mut issued = 0;
    for task in tasks {
        match task.await.unwrap().unwrap() {
            DevicePoll::Issued(g) => {
                assert_eq!(g, grant("gd"));
                issued += 1;
            }
            DevicePoll::SlowDown | DevicePoll::AlreadyRedeemed => {}
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(issued, 1, "exactly one poll redeems");
    let mut stored = 0;
    for i in 0..TASKS {
        if db
            .s()
            .get_access_token(&format!("at-{i}"), NOW + 1)
            .await
            .unwrap()
            .is_some()
        {
            stored += 1;
        }
    }
    assert_eq!(stored, 1, "only the redeeming poll stores tokens");
}

async fn sessions_create_get_revoke(db: &TestDb) {
    let s = db.s();
    let first = session("sess1", NOW + 3600);
    s.create_session(&first).await.unwrap();
    assert_eq!(s.get_session("sess1").await.unwrap(), Some(first.clone()));
    assert_eq!(s.get_session("missing").await.unwrap(), None);
    let err = s
        .create_session(&session("sess1", NOW + 10))
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::AlreadyExists(_)), "got {err:?}");

    assert!(s.revoke_session("sess1", NOW + 5).await.unwrap());
    assert!(!s.revoke_session("sess1", NOW + 6).await.unwrap());
    assert!(!s.revoke_session("missing", NOW).await.unwrap());
    assert_eq!(
        s.get_session("sess1").await.unwrap(),
        Some(Session {
            revoked_at: Some(NOW + 5),
            ..first
        }),
        "revoked sessions are still returned"
    );
}

async fn sweep_removes_dead_refresh_tokens_device_requests_and_sessions(db: &TestDb) {
    let s = db.s();
    let rotated_cutoff = NOW - 700;
    // One grant per refresh token, since a token response carries one.
    let tokens = [
        ("expired", Some(NOW - 1), NOW, None),
        ("live", Some(NOW + 1000), NOW, None),
        ("idle", None, NOW - 2000, None),
        ("rotated-old", None, NOW - 800, Some(NOW - 800)),
        ("rotated-recent", None, NOW - 100, Some(NOW - 100)),
    ];
    for (name, expires_at, last_used_at, rotated_at) in tokens {
        let refresh = RefreshToken {
            last_used_at,
            rotated_at,
            ..refresh_token(&format!("rt-{name}"), &format!("g-{name}"), expires_at)
        };
        let issued = IssuedTokens {
            access: access_token(&format!("at-{name}"), &format!("g-{name}"), NOW + 600),
            refresh: Some(refresh),
        };
        s.issue_grant(&grant(&format!("g-{name}")), &issued)
            .await
            .unwrap();
    }
    for (code, expires_at) in [("EXPIRED1", NOW - 1), ("LIVEXXXX", NOW + 600)] {
        s.create_device_request(&device_request(code, expires_at))
            .await
            .unwrap();
    }
    for (id, expires_at) in [
        ("expired", NOW - 1),
        ("revoked", NOW + 600),
        ("live", NOW + 600),
    ] {
        s.create_session(&session(id, expires_at)).await.unwrap();
    }
    assert!(s.revoke_session("revoked", NOW - 5).await.unwrap());

    let without_idle_limit = SweepCutoffs {
        rotated_cutoff,
        ..cutoffs(NOW - 300, NOW - 500, 100)
    };
    assert_eq!(
        s.sweep(&without_idle_limit).await.unwrap(),
        Swept {
            refresh_tokens: 2,
            device_requests: 1,
            sessions: 2,
            ..Swept::default()
        }
    );
    assert_eq!(s.get_refresh_token("rt-expired").await.unwrap(), None);
    assert_eq!(s.get_refresh_token("rt-rotated-old").await.unwrap(), None);
    for kept in ["rt-live", "rt-idle", "rt-rotated-recent"] {
        assert!(s.get_refresh_token(kept).await.unwrap().is_some(), "{kept}");
    }
    assert_eq!(s.get_device_request("EXPIRED1").await.unwrap(), None);
    assert!(s.get_device_request("LIVEXXXX").await.unwrap().is_some());
    assert_eq!(s.get_session("expired").await.unwrap(), None);
    assert_eq!(s.get_session("revoked").await.unwrap(), None);
    assert!(s.get_session("live").await.unwrap().is_some());
    assert!(
        s.get_grant("g-expired").await.unwrap().is_some(),
        "an unrevoked grant stays when its refresh token goes"
    );

    let with_idle_limit = SweepCutoffs {
        refresh_idle_cutoff: Some(NOW - 1000),
        ..without_idle_limit
    };
    assert_eq!(
        s.sweep(&with_idle_limit).await.unwrap(),
        Swept {
            refresh_tokens: 1,
            ..Swept::default()
        }
    );
    assert_eq!(s.get_refresh_token("rt-idle").await.unwrap(), None);
    assert!(s.get_refresh_token("rt-live").await.unwrap().is_some());
}

async fn sweep_batches_tokens_of_revoked_grants_before_the_grant(db: &TestDb) {
    let s = db.s();
    // Grant g1 with three access tokens and one refresh token, revoked long ago.
    grant_with_refresh(s, refresh_token("rt0", "g1", None)).await;
    for access in ["at-a", "at-b"] {
        assert!(matches!(
            s.rotate_refresh_token(&rotation("rt0", None, access, NOW), NOW)
                .await
                .unwrap(),
            RefreshOutcome::Rotated(_)
        ));
    }
    assert!(s.revoke_grant("g1", NOW - 1000).await.unwrap());
    // Three sessions and three device requests, all expired.
    for i in 0..3 {
        s.create_session(&session(&format!("s{i}"), NOW - 1))
            .await
            .unwrap();
        s.create_device_request(&device_request(&format!("CODE000{i}"), NOW - 1))
            .await
            .unwrap();
    }
    let mut counts = Vec::new();
    loop {
        let swept = s.sweep(&cutoffs(NOW - 300, NOW - 500, 2)).await.unwrap();
        counts.push(swept);
        if swept == Swept::default() {
            break;
        }
        assert!(counts.len() < 10, "sweep does not converge: {counts:?}");
    }
    let batch = |access_tokens, refresh_tokens, grants, rest| Swept {
        access_tokens,
        refresh_tokens,
        grants,
        device_requests: rest,
        sessions: rest,
        ..Swept::default()
    };
    assert_eq!(
        counts,
        vec![batch(2, 1, 0, 2), batch(1, 0, 1, 1), Swept::default(),],
        "the grant goes in the sweep that deletes its last token"
    );
    assert_eq!(s.get_grant("g1").await.unwrap(), None);
}

async fn login_attempts_are_reserved_atomically_across_pools(db: &TestDb) {
    let policy = AttemptPolicy {
        max_failures: 3,
        window: 60,
        base_lockout: 10,
        max_lockout: 40,
    };
    let keys = |k: &[&str]| k.iter().map(|k| k.to_string()).collect::<Vec<_>>();
    let first = db
        .s()
        .reserve_login_attempt(&keys(&["acct", "addr"]), &policy, NOW)
        .await
        .unwrap();
    if db.s().kind() == "sqlite" {
        // One process: the server keeps the budget in memory, without a round trip.
        assert_eq!(first, None);
        return;
    }
    assert_eq!(first, Some(AttemptDecision::Reserved));
    // 40 attempts at once from two pools, each from an address of its own: the account has
    // two attempts left, and only two are counted.
    let other = db.open_another().await;
    let barrier = Arc::new(Barrier::new(40));
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (storage, barrier) = if i % 2 == 0 {
            (db.storage.clone(), barrier.clone())
        } else {
            (other.clone(), barrier.clone())
        };
        let keys = keys(&["acct", &format!("addr{i}")]);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            storage
                .reserve_login_attempt(&keys, &policy, NOW)
                .await
                .unwrap()
        }));
    }
    let mut decisions = Vec::new();
    for t in tasks {
        decisions.push(t.await.unwrap());
    }
    let reserved = decisions
        .iter()
        .filter(|d| **d == Some(AttemptDecision::Reserved))
        .count();
    assert_eq!(reserved, 2, "{decisions:?}");
    assert!(decisions
        .iter()
        .all(|d| *d == Some(AttemptDecision::Reserved)
            || *d == Some(AttemptDecision::Locked { until: NOW + 10 })));
    // Refused attempts counted nothing against their addresses: a fresh one of them still
    // has its whole budget.
    let refused = (0..40)
        .find(|i| decisions[*i] != Some(AttemptDecision::Reserved))
        .unwrap();
    for _ in 0..3 {
        let d = db
            .s()
            .reserve_login_attempt(&keys(&[&format!("addr{refused}")]), &policy, NOW)
            .await
            .unwrap();
        assert_eq!(d, Some(AttemptDecision::Reserved));
    }

    // After the lockout, one more failure doubles it.
    let later = NOW + 10;
    let d = db
        .s()
        .reserve_login_attempt(&keys(&["acct"]), &policy, later)
        .await
        .unwrap();
    assert_eq!(d, Some(AttemptDecision::Reserved));
    let d = db
        .s()
        .reserve_login_attempt(&keys(&["acct"]), &policy, later)
        .await
        .unwrap();
    assert_eq!(d, Some(AttemptDecision::Locked { until: later + 20 }));
    // A success forgives the account, and takes back from the address only its own failure.
    db.s()
        .settle_login_attempt(Some("acct"), &keys(&["addr"]), NOW)
        .await
        .unwrap();
    let d = db
        .s()
        .reserve_login_attempt(&keys(&["acct"]), &policy, later)
        .await
        .unwrap();
    assert_eq!(
        d,
        Some(AttemptDecision::Reserved),
        "the account was forgiven"
    );
    let reserve = |keys: Vec<String>, at: i64| async move {
        db.s()
            .reserve_login_attempt(&keys, &policy, at)
            .await
            .unwrap()
            .unwrap()
    };
    for _ in 0..3 {
        assert_eq!(
            reserve(keys(&["addr"]), later).await,
            AttemptDecision::Reserved
        );
    }
    assert_eq!(
        reserve(keys(&["addr"]), later).await,
        AttemptDecision::Locked { until: later + 10 }
    );

    // Housekeeping deletes counters with nothing left to remember, and only those.
    let sweep_time = later + 100;
    for _ in 0..2 {
        assert_eq!(
            reserve(keys(&["fresh"]), sweep_time).await,
            AttemptDecision::Reserved
        );
    }
    let mut sweep_at = cutoffs(NOW, NOW, 1000);
    sweep_at.now = sweep_time;
    let swept = db.s().sweep(&sweep_at).await.unwrap();
    // acct, addr, the two reserved addresses and the refused one; and the address of any
    // attempt that lost the race to the lockout inside the statement (counted, then given back).
    assert!(swept.login_attempts >= 5, "{swept:?}");
    assert_eq!(db.s().sweep(&sweep_at).await.unwrap(), Swept::default());
    assert_eq!(
        reserve(keys(&["fresh"]), sweep_time).await,
        AttemptDecision::Reserved
    );
    assert_eq!(
        reserve(keys(&["fresh"]), sweep_time).await,
        AttemptDecision::Locked {
            until: sweep_time + 10
        },
        "fresh kept its two failures"
    );
}

// ---------------------------------------------------------------------------------------
// Database-specific behaviour

#[tokio::test]
async fn sqlite_file_runs_in_wal_mode_with_foreign_keys_and_normal_sync() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a").join("b").join("lanyard.db");
    let storage = SqliteStorage::open_file(&file).await.unwrap();
    storage.migrate().await.unwrap();
    assert!(file.exists(), "file and parent directories are created");
    let mut conn = storage.pool().acquire().await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(fk, 1);
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(sync, 1, "synchronous = NORMAL");
    let page: i64 = sqlx::query_scalar("PRAGMA page_size")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(page, 1024, "a new database has 1 KiB pages");
}

/// A database made with another page size (SQLite's default of 4 KiB, as lanyard made them
/// before) keeps it and works as before.
#[tokio::test]
async fn sqlite_file_with_4_kib_pages_keeps_them() {
    use sqlx::{ConnectOptions, Connection};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lanyard.db");
    let mut old = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&file)
        .create_if_missing(true)
        .page_size(4096)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .connect()
        .await
        .unwrap();
    sqlx::query("CREATE TABLE made_before (id INTEGER)")
        .execute(&mut old)
        .await
        .unwrap();
    old.close().await.unwrap();
    let storage = SqliteStorage::open_file(&file).await.unwrap();
    storage.migrate().await.unwrap();
    storage.create_client(&client("a")).await.unwrap();
    assert_eq!(storage.get_client("a").await.unwrap(), Some(client("a")));
    let page: i64 = sqlx::query_scalar("PRAGMA page_size")
        .fetch_one(storage.pool())
        .await
        .unwrap();
    assert_eq!(page, 4096);
}

/// A refresh token's read waits for no writer: while another connection holds the database's
/// write lock, it is answered at once (on the batch writer, a batch of reads alone takes no
/// lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_refresh_token_read_is_not_held_up_by_another_writer() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lanyard.db");
    let storage = SqliteStorage::open_file(&file).await.unwrap();
    storage.migrate().await.unwrap();
    let tokens = IssuedTokens {
        access: access_token("at-locked", "locked", NOW + 3600),
        refresh: Some(refresh_token("rt-locked", "locked", None)),
    };
    storage
        .issue_grant(&grant("locked"), &tokens)
        .await
        .unwrap();
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", file.display()))
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        storage.get_refresh_token("rt-locked"),
    )
    .await
    .expect("the read waited for the other connection's write lock")
    .unwrap();
    assert_eq!(
        read.map(|(t, _)| t.token_hash).as_deref(),
        Some("rt-locked")
    );
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
}

/// The writer's commits leave checkpointing to a task beside it (`wal_autocheckpoint=0` on its
/// connection); that task must keep the WAL from growing with every write. Without it,
/// these 2,000 commits of about eight pages each would grow the WAL past 60 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_wal_stays_bounded_under_many_commits() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lanyard.db");
    let storage = SqliteStorage::open_file(&file).await.unwrap();
    storage.migrate().await.unwrap();
    for i in 0..2000 {
        let id = format!("wal{i}");
        let tokens = only(access_token(&format!("at-{id}"), &id, NOW + 60));
        storage.issue_grant(&grant(&id), &tokens).await.unwrap();
    }
    let wal = std::fs::metadata(dir.path().join("lanyard.db-wal"))
        .unwrap()
        .len();
    assert!(wal < 16 << 20, "the WAL grew to {wal} bytes");
}

#[tokio::test]
async fn sqlite_file_keeps_data_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let settings = StorageSettings::Sqlite {
        file: dir.path().join("lanyard.db"),
    };
    let first = storage::open(&settings).await.unwrap();
    first.create_client(&client("a")).await.unwrap();
    drop(first);
    let second = storage::open(&settings).await.unwrap();
    assert_eq!(second.get_client("a").await.unwrap(), Some(client("a")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_storage_is_one_database_for_all_callers() {
    let storage = storage::open(&StorageSettings::Memory).await.unwrap();
    assert_eq!(storage.kind(), "sqlite");
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let s = storage.clone();
            tokio::spawn(async move { s.create_client(&client(&format!("c{i}"))).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(storage.list_clients().await.unwrap().len(), 8);
    let other = storage::open(&StorageSettings::Memory).await.unwrap();
    assert_eq!(
        other.list_clients().await.unwrap(),
        vec![],
        "each memory storage is its own database"
    );
}

/// The in-memory database has one connection, shared by the batch writer and hand-made
/// transactions; these are the behaviours where that differs from a file.
mod memory {
    macro_rules! on_memory {
        ($($name:ident),+ $(,)?) => {$(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                super::$name(&super::TestDb::memory().await).await;
            }
        )+};
    }
    on_memory!(
        stored_connectors_round_trip_and_count_versions,
        refresh_rotates_and_the_successor_works,
        failed_rotation_writes_nothing_and_the_next_one_succeeds,
        concurrent_rotations_and_grants_settle_each_on_its_own,
        refresh_token_reads_among_writes_each_find_their_own,
        replays_and_current_use_of_one_family_at_once_revoke_it,
        cancelled_rotations_write_all_or_nothing_and_leave_no_lock,
        cancelled_redemptions_write_all_or_nothing_and_leave_no_lock,
        replayed_code_revokes_grant_and_its_tokens,
        expired_code_is_expired_and_stays_unredeemed,
        issued_grant_keeps_every_field_exactly,
        an_access_tokens_own_scopes_are_stored_and_read_back,
        concurrent_grants_succeed_or_fail_each_on_its_own,
        redeemed_code_issues_grant_access_and_refresh_token,
    );
}

/// A migrator that knows only the released first migration of `kind`, to build databases as
/// the first release left them.
async fn first_release_migrator(kind: &str) -> (TempDir, sqlx::migrate::Migrator) {
    let dir = tempfile::tempdir().unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(kind)
        .join("0001_initial.sql");
    std::fs::copy(&source, dir.path().join("0001_initial.sql")).unwrap();
    let migrator = sqlx::migrate::Migrator::new(dir.path()).await.unwrap();
    (dir, migrator)
}

const FIRST_RELEASE_SESSION: &str = "INSERT INTO sessions (id, user_id, connector_id, claims, \
     connector_data, created_at, expires_at, revoked_at) \
     VALUES ('old', 'u-1', 'github', $1, NULL, 1700000000, 1700003600, NULL)";

/// What a session written before `auth_time` existed reads back as.
fn first_release_session() -> Session {
    Session {
        id_hash: "old".into(),
        connector_id: "github".into(),
        claims: claims(),
        connector_data: None,
        auth_time: 0,
        created_at: NOW,
        expires_at: NOW + 3600,
        revoked_at: None,
    }
}

#[tokio::test]
async fn sqlite_upgrade_from_first_release_keeps_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lanyard.db");
    {
        let pool = sqlx::SqlitePool::connect_with(
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&file)
                .create_if_missing(true),
        )
        .await
        .unwrap();
        let (_migrations, first) = first_release_migrator("sqlite").await;
        first.run(&pool).await.unwrap();
        sqlx::query(FIRST_RELEASE_SESSION)
            .bind(serde_json::to_string(&claims()).unwrap())
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
    let storage = storage::open(&StorageSettings::Sqlite { file })
        .await
        .unwrap();
    assert_eq!(
        storage.get_session("old").await.unwrap(),
        Some(first_release_session())
    );
}

#[tokio::test]
async fn postgres_upgrade_from_first_release_keeps_sessions() {
    let Some(db) = common::postgres::fresh_database().await else {
        return;
    };
    {
        let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
        let (_migrations, first) = first_release_migrator("postgres").await;
        first.run(&pool).await.unwrap();
        sqlx::query(FIRST_RELEASE_SESSION)
            .bind(serde_json::to_string(&claims()).unwrap())
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
    let storage = storage::open(&StorageSettings::Postgres(PostgresSettings {
        url: Some(db.url().to_string()),
        ..Default::default()
    }))
    .await
    .unwrap();
    assert_eq!(
        storage.get_session("old").await.unwrap(),
        Some(first_release_session())
    );
}

#[tokio::test]
async fn postgres_unreachable_is_unavailable_quickly() {
    let settings = PostgresSettings {
        url: Some("postgres://postgres@127.0.0.1:1/postgres".into()),
        conn_timeout: Some(Duration::from_millis(500)),
        ..Default::default()
    };
    let started = Instant::now();
    let result = PostgresStorage::connect(&settings).await;
    let elapsed = started.elapsed();
    match result {
        Err(StorageError::Unavailable(_)) => {}
        Err(other) => panic!("expected Unavailable, got {other:?}"),
        Ok(_) => panic!("connected to 127.0.0.1:1"),
    }
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");

    let opened = storage::open(&StorageSettings::Postgres(settings)).await;
    assert!(matches!(opened, Err(StorageError::Unavailable(_))));
}

/// What a request dropped while its BEGIN was on the wire left behind with sqlx 0.8's
/// `Pool::begin` (its issue 4393): a pooled connection whose session is inside a transaction
/// sqlx does not know about, where the next single-statement write would be reported done and
/// lost with the connection. Writes that begin a transaction are dropped at every point of
/// their first round trips; no session may stay inside a transaction after one, and a write
/// after them all must be committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_writes_dropped_during_begin_leave_no_session_inside_a_transaction() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let StorageSettings::Postgres(settings) = &db.settings else {
        unreachable!("a PostgreSQL test database");
    };
    // One connection, so every write gets the connection the last one dropped.
    let one = PostgresSettings {
        max_open_conns: Some(1),
        ..settings.clone()
    };
    let storage = Arc::new(PostgresStorage::connect(&one).await.unwrap());
    let watcher = PostgresStorage::connect(settings).await.unwrap();
    let left_inside = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()",
        )
        .fetch_one(watcher.pool())
        .await
        .unwrap()
    };
    for round in 0..150u64 {
        let s = storage.clone();
        let task = tokio::spawn(async move {
            s.create_connector(&stored_connector(&format!("c{round}"), "github"))
                .await
        });
        // tokio's timer counts whole milliseconds; a thread's sleep steps through the
        // round trips of acquiring, BEGIN and the insert.
        let (done, waited) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_micros(round * 20));
            let _ = done.send(());
        });
        let _ = waited.await;
        task.abort();
        let _ = task.await;
        let started = Instant::now();
        while left_inside().await > 0 {
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "round {round}: a dropped write left a session inside a transaction"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    storage.create_client(&client("after")).await.unwrap();
    let elsewhere = db.open_another().await;
    assert_eq!(
        elsewhere.get_client("after").await.unwrap(),
        Some(client("after")),
        "the write was committed, not left in a stale transaction"
    );
}

#[tokio::test]
async fn postgres_pool_respects_max_open_conns() {
    let Some(db) = common::postgres::fresh_database().await else {
        return;
    };
    let settings = PostgresSettings {
        url: Some(db.url().to_string()),
        max_open_conns: Some(2),
        conn_timeout: Some(Duration::from_millis(300)),
        ..Default::default()
    };
    let storage = PostgresStorage::connect(&settings).await.unwrap();
    let _a = storage.pool().acquire().await.unwrap();
    let _b = storage.pool().acquire().await.unwrap();
    let started = Instant::now();
    let err = storage.ping().await.unwrap_err();
    assert!(
        matches!(err, StorageError::Unavailable(_)),
        "a third connection times out as Unavailable: {err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// `connMaxLifetime` (Dex's key, in seconds) is honoured: a connection older than it is
/// closed instead of reused, so the next query runs on a new server session.
#[tokio::test]
async fn postgres_pool_closes_connections_past_conn_max_lifetime() {
    let Some(db) = common::postgres::fresh_database().await else {
        return;
    };
    let settings = PostgresSettings {
        url: Some(db.url().to_string()),
        max_open_conns: Some(1),
        conn_max_lifetime: Some(Duration::from_millis(300)),
        ..Default::default()
    };
    let storage = PostgresStorage::connect(&settings).await.unwrap();
    let backend = || async {
        sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()")
            .fetch_one(storage.pool())
            .await
            .unwrap()
    };
    let first = backend().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_ne!(backend().await, first, "the old session was replaced");
}

// ---------------------------------------------------------------------------------------
// Administration

fn other_user() -> UserClaims {
    UserClaims {
        user_id: "u-2".into(),
        email: "bob@example.com".into(),
        ..claims()
    }
}

/// jane: g-1 (kubectl), g-2 (web, revoked), g-3 (web); s-1 live, s-2 expired; bob: g-4, s-3.
async fn admin_fixture(s: &dyn Storage) {
    let mut grants = [grant("g-1"), grant("g-2"), grant("g-3"), grant("g-4")];
    grants[1].client_id = "web".into();
    grants[2].client_id = "web".into();
    grants[3].claims = other_user();
    for (i, g) in grants.iter_mut().enumerate() {
        g.created_at = NOW + i as i64;
        let tag = format!("at-{}", g.id);
        s.issue_grant(g, &only(access_token(&tag, &g.id, NOW + 600)))
            .await
            .unwrap();
    }
    assert!(s.revoke_grant("g-2", NOW).await.unwrap());
    s.create_session(&session("s-1", NOW + 600)).await.unwrap();
    s.create_session(&session("s-2", NOW - 1)).await.unwrap();
    let mut bob = session("s-3", NOW + 600);
    bob.claims = other_user();
    s.create_session(&bob).await.unwrap();
}

fn ids<T>(items: &[T], id: impl Fn(&T) -> &str) -> Vec<String> {
    items.iter().map(|i| id(i).to_string()).collect()
}

async fn grants_and_sessions_are_listed_by_user_client_and_state(db: &TestDb) {
    let s = db.s();
    admin_fixture(s).await;
    let grant_ids = |g: &[Grant]| ids(g, |g| &g.id);
    let session_ids = |v: &[Session]| ids(v, |s| &s.id_hash);

    let all = GrantFilter {
        now: NOW,
        ..Default::default()
    };
    assert_eq!(
        grant_ids(&s.list_grants(&all).await.unwrap()),
        ["g-1", "g-2", "g-3", "g-4"]
    );
    let jane = GrantFilter {
        email: Some("JANE@example.com".into()),
        ..all.clone()
    };
    assert_eq!(
        grant_ids(&s.list_grants(&jane).await.unwrap()),
        ["g-1", "g-2", "g-3"]
    );
    let jane_active = GrantFilter {
        active_only: true,
        ..jane.clone()
    };
    assert_eq!(
        grant_ids(&s.list_grants(&jane_active).await.unwrap()),
        ["g-1", "g-3"]
    );
    let web = GrantFilter {
        client_id: Some("web".into()),
        ..all.clone()
    };
    assert_eq!(
        grant_ids(&s.list_grants(&web).await.unwrap()),
        ["g-2", "g-3"]
    );
    let by_id = GrantFilter {
        connector_id: Some("github".into()),
        user_id: Some("u-2".into()),
        ..all.clone()
    };
    assert_eq!(grant_ids(&s.list_grants(&by_id).await.unwrap()), ["g-4"]);
    let elsewhere = GrantFilter {
        connector_id: Some("ldap".into()),
        ..all.clone()
    };
    assert!(s.list_grants(&elsewhere).await.unwrap().is_empty());

    assert_eq!(
        session_ids(&s.list_sessions(&jane).await.unwrap()),
        ["s-1", "s-2"]
    );
    assert_eq!(
        session_ids(&s.list_sessions(&jane_active).await.unwrap()),
        ["s-1"]
    );
    assert_eq!(
        session_ids(&s.list_sessions(&by_id).await.unwrap()),
        ["s-3"]
    );
}

async fn revoking_a_users_access_revokes_their_grants_tokens_and_sessions(db: &TestDb) {
    let s = db.s();
    admin_fixture(s).await;
    let jane = GrantFilter {
        email: Some("jane@example.com".into()),
        now: NOW + 1,
        ..Default::default()
    };
    let revoked = s.revoke_access(&jane).await.unwrap();
    assert_eq!(
        revoked,
        RevokedAccess {
            grants: 2,
            sessions: 1
        }
    );
    for id in ["g-1", "g-3"] {
        assert_eq!(
            s.get_grant(id).await.unwrap().unwrap().revoked_at,
            Some(NOW + 1)
        );
        let token = format!("at-{id}");
        assert!(s.get_access_token(&token, NOW + 1).await.unwrap().is_none());
    }
    // Revoked earlier: keeps its first revocation time.
    assert_eq!(
        s.get_grant("g-2").await.unwrap().unwrap().revoked_at,
        Some(NOW)
    );
    assert_eq!(
        s.get_session("s-1").await.unwrap().unwrap().revoked_at,
        Some(NOW + 1)
    );
    // Bob is untouched.
    assert!(s
        .get_grant("g-4")
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_none());
    assert!(s
        .get_access_token("at-g-4", NOW + 1)
        .await
        .unwrap()
        .is_some());
    assert!(s
        .get_session("s-3")
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_none());
    // Nothing left to revoke.
    assert_eq!(
        s.revoke_access(&jane).await.unwrap(),
        RevokedAccess::default()
    );

    // By client only: bob's kubectl grant, but no session (sessions belong to no client).
    let kubectl = GrantFilter {
        client_id: Some("kubectl".into()),
        now: NOW + 2,
        ..Default::default()
    };
    assert_eq!(
        s.revoke_access(&kubectl).await.unwrap(),
        RevokedAccess {
            grants: 1,
            sessions: 0
        }
    );
    assert!(s
        .get_session("s-3")
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_none());
}

/// PostgreSQL: the grant is not locked while a rotation decides, so a revocation may commit
/// between its read and its writes. The rotation must then lose, and write nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_rotation_loses_to_a_revocation_that_commits_first() {
    use sqlx::Connection;
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    grant_with_refresh(db.s(), refresh_token("rt1", "g1", None)).await;
    let url = db._postgres.as_ref().expect("postgres").url().to_string();
    let mut revoker = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut watcher = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut revoker).await.unwrap();
    sqlx::query("UPDATE grants SET revoked_at = $1 WHERE id = 'g1'")
        .bind(NOW)
        .execute(&mut revoker)
        .await
        .unwrap();

    let storage = db.storage.clone();
    let rotating = tokio::spawn(async move {
        storage
            .rotate_refresh_token(&rotation("rt1", Some("rt2"), "at2", NOW), NOW)
            .await
    });
    // The rotation has read the grant as not revoked and now waits for the revoker's lock.
    let waiting = Instant::now();
    loop {
        let (blocked,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut watcher)
        .await
        .unwrap();
        if blocked > 0 {
            break;
        }
        assert!(
            !rotating.is_finished(),
            "the rotation did not wait for the lock"
        );
        assert!(
            waiting.elapsed() < Duration::from_secs(10),
            "no rotation waited"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sqlx::query("COMMIT").execute(&mut revoker).await.unwrap();

    let outcome = rotating.await.unwrap().unwrap();
    assert!(
        matches!(outcome, RefreshOutcome::Revoked),
        "got {outcome:?}"
    );
    let s = db.s();
    assert_eq!(s.get_refresh_token("rt2").await.unwrap(), None);
    assert_eq!(s.get_access_token("at2", NOW).await.unwrap(), None);
    let (old, _) = s.get_refresh_token("rt1").await.unwrap().unwrap();
    assert_eq!(old.rotated_at, None, "the old token was not marked");
}

fn stored_connector(id: &str, name: &str) -> StoredConnector {
    StoredConnector {
        id: id.into(),
        type_: "ldap".into(),
        name: name.into(),
        resource_version: 1,
        sealed_config: format!("kek1.sealed-for-{id}"),
        created_at: NOW,
        updated_at: NOW,
    }
}

async fn stored_connectors_round_trip_and_count_versions(db: &TestDb) {
    let s = db.s();
    let start = s.connectors_generation().await.unwrap();
    assert_eq!(s.get_connector("ldap").await.unwrap(), None);
    s.create_connector(&stored_connector("ldap", "LDAP"))
        .await
        .unwrap();
    s.create_connector(&stored_connector("corp", "Corp"))
        .await
        .unwrap();
    let after_creates = s.connectors_generation().await.unwrap();
    assert!(after_creates > start, "{after_creates} after {start}");
    assert_eq!(
        s.get_connector("ldap").await.unwrap(),
        Some(stored_connector("ldap", "LDAP"))
    );
    assert_eq!(
        s.list_connectors().await.unwrap(),
        vec![
            stored_connector("corp", "Corp"),
            stored_connector("ldap", "LDAP")
        ]
    );

    // A taken id changes nothing, not even the generation.
    let err = s
        .create_connector(&stored_connector("ldap", "Impostor"))
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::AlreadyExists(_)), "got {err:?}");
    assert_eq!(s.connectors_generation().await.unwrap(), after_creates);

    let mut changed = stored_connector("ldap", "Directory");
    changed.type_ = "oidc".into();
    changed.sealed_config = "kek1.other".into();
    changed.updated_at = NOW + 60;
    // The storage counts versions; what the caller passes is ignored.
    changed.resource_version = 41;
    assert_eq!(s.update_connector(&changed).await.unwrap(), 2);
    assert_eq!(s.update_connector(&changed).await.unwrap(), 3);
    let read = s.get_connector("ldap").await.unwrap().unwrap();
    assert_eq!(
        read,
        StoredConnector {
            resource_version: 3,
            ..changed.clone()
        }
    );
    assert_eq!(read.created_at, NOW);
    let after_updates = s.connectors_generation().await.unwrap();
    assert!(after_updates > after_creates);

    let err = s
        .update_connector(&stored_connector("ghost", "Ghost"))
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::NotFound(_)), "got {err:?}");
    assert!(!s.delete_connector("ghost").await.unwrap());
    assert_eq!(s.connectors_generation().await.unwrap(), after_updates);

    assert!(s.delete_connector("ldap").await.unwrap());
    assert!(s.connectors_generation().await.unwrap() > after_updates);
    assert_eq!(s.get_connector("ldap").await.unwrap(), None);
    assert_eq!(
        s.list_connectors().await.unwrap(),
        vec![stored_connector("corp", "Corp")]
    );
}

/// What lets every replica serve the same connectors: a change through one pool moves the
/// generation another pool reads, and that pool then reads the change.
async fn connector_changes_through_one_pool_move_the_generation_another_reads(db: &TestDb) {
    let other = db.open_another().await;
    let seen = db.s().connectors_generation().await.unwrap();
    other
        .create_connector(&stored_connector("ldap", "LDAP"))
        .await
        .unwrap();
    let moved = db.s().connectors_generation().await.unwrap();
    assert_ne!(moved, seen);
    assert_eq!(
        db.s().get_connector("ldap").await.unwrap(),
        Some(stored_connector("ldap", "LDAP"))
    );
    assert!(other.delete_connector("ldap").await.unwrap());
    assert_ne!(db.s().connectors_generation().await.unwrap(), moved);
    assert_eq!(db.s().list_connectors().await.unwrap(), vec![]);
}

// ---------------------------------------------------------------------------------------
// Housekeeping of a large backlog

/// Sessions that expired before `NOW`, with ids in insertion order.
async fn expired_sessions(s: &dyn Storage, n: usize) {
    for i in 0..n {
        s.create_session(&session(&format!("old-{i:05}"), NOW - 10))
            .await
            .unwrap();
    }
}

async fn sweep_clears_a_large_backlog_in_one_call(db: &TestDb) {
    let s = db.s();
    expired_sessions(s, 1200).await;
    s.create_session(&session("live", NOW + 3600))
        .await
        .unwrap();
    let swept = s.sweep(&cutoffs(NOW - 300, NOW - 500, 5000)).await.unwrap();
    assert_eq!(swept.sessions, 1200, "every expired session, in one call");
    assert!(s.get_session("live").await.unwrap().is_some());
    assert_eq!(
        s.sweep(&cutoffs(NOW - 300, NOW - 500, 5000)).await.unwrap(),
        Swept::default()
    );
    // A batch smaller than the backlog stops at the batch, however the dialect splits it.
    expired_sessions(s, 700).await;
    let swept = s.sweep(&cutoffs(NOW - 300, NOW - 500, 450)).await.unwrap();
    assert_eq!(swept.sessions, 450);
}

async fn password_hashes_are_read_one_by_one(db: &TestDb) {
    let s = db.s();
    let mut expected = Vec::new();
    for i in 0..3 {
        let mut p = password(&format!("u{i}@example.com"), &format!("u{i}"));
        p.hash = format!("$2a$1{i}$abcdefghijklmnopqrstuv0123456789012345678901234567890");
        expected.push(p.hash.clone());
        s.create_password(&p).await.unwrap();
    }
    let mut seen = Vec::new();
    s.each_password_hash(&mut |h| seen.push(h.to_string()))
        .await
        .unwrap();
    seen.sort();
    assert_eq!(seen, expected);
}

/// SQLite has one write lock: a sweep of a backlog larger than one statement's rows lets it
/// go between statements, so a write from another connection (another process, another
/// request's pool connection) gets in while the sweep is still going instead of after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_sweep_of_a_backlog_lets_another_writer_in_before_it_ends() {
    let db = TestDb::sqlite().await;
    expired_sessions(db.s(), 4000).await;
    let other = db.open_another().await;
    let sweeper = db.storage.clone();
    let sweep =
        tokio::spawn(async move { sweeper.sweep(&cutoffs(NOW - 300, NOW - 500, 10_000)).await });
    // The sweep has begun once the first session is gone.
    while other.get_session("old-00000").await.unwrap().is_some() {
        assert!(!sweep.is_finished(), "the sweep ended before it was seen");
        tokio::task::yield_now().await;
    }
    other
        .create_session(&session("new", NOW + 3600))
        .await
        .unwrap();
    assert!(
        !sweep.is_finished(),
        "the write waited for the whole sweep to end"
    );
    assert_eq!(sweep.await.unwrap().unwrap().sessions, 4000);
    assert!(db.s().get_session("new").await.unwrap().is_some());
}

/// On SQLite a sweep statement queues behind the batch writer and runs on its connection, so
/// a grant or rotation never polls SQLite's busy handler against a sweep: with every pool
/// connection taken, the sweep still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_sweep_statements_run_on_the_batch_writer_not_a_pool_connection() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = SqliteStorage::open_file(&dir.path().join("lanyard.db"))
        .await
        .unwrap();
    s.migrate().await.unwrap();
    expired_sessions(&s, 500).await;
    let mut held = Vec::new();
    for _ in 0..s.pool().options().get_max_connections() {
        held.push(s.pool().acquire().await.unwrap());
    }
    // Shorter than the pool's acquire timeout: a statement on the pool would still be waiting.
    let swept = tokio::time::timeout(
        Duration::from_secs(3),
        s.sweep(&cutoffs(NOW - 300, NOW - 500, 10_000)),
    )
    .await
    .expect("a sweep statement waited for a pool connection")
    .unwrap();
    assert_eq!(swept.sessions, 500);
    drop(held);
}

/// A rotation submitted while a sweep of a large backlog runs is written between two of the
/// sweep's statements, not after the whole sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_rotation_during_a_large_sweep_is_written_before_the_sweep_ends() {
    let db = TestDb::sqlite().await;
    grant_with_refresh(db.s(), refresh_token("rt0", "g1", Some(NOW + 86400))).await;
    expired_sessions(db.s(), 4000).await;
    let sweeper = db.storage.clone();
    let sweep =
        tokio::spawn(async move { sweeper.sweep(&cutoffs(NOW - 300, NOW - 500, 10_000)).await });
    while db.s().get_session("old-00000").await.unwrap().is_some() {
        assert!(!sweep.is_finished(), "the sweep ended before it was seen");
        tokio::task::yield_now().await;
    }
    let outcome = db
        .s()
        .rotate_refresh_token(&rotation("rt0", Some("rt1"), "at1", NOW + 10), NOW + 10)
        .await
        .unwrap();
    assert!(
        !sweep.is_finished(),
        "the rotation waited for the whole sweep to end"
    );
    assert!(matches!(outcome, RefreshOutcome::Rotated(_)), "{outcome:?}");
    assert_eq!(sweep.await.unwrap().unwrap().sessions, 4000);
}

/// A write that finds SQLite's write lock taken (by another process, or the batch writer)
/// waits for it and gets it as soon as it is free: SQLite's own busy handler would be sleeping
/// 100 ms between tries by then, and the write would get in up to 100 ms late.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_write_waiting_for_the_lock_gets_it_promptly_once_it_is_free() {
    use sqlx::Connection;
    let db = TestDb::sqlite().await;
    let StorageSettings::Sqlite { file } = &db.settings else {
        panic!("not a SQLite file");
    };
    let mut holder = sqlx::SqliteConnection::connect(&format!("sqlite://{}", file.display()))
        .await
        .unwrap();
    let mut late = Vec::new();
    // Held past SQLite's first short sleeps, for lengths 20 ms apart: whatever the phase of
    // 100 ms sleeps, most of these would end well after the lock is let go.
    for (i, held_ms) in [300u64, 320, 340, 360, 380].into_iter().enumerate() {
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut holder)
            .await
            .unwrap();
        let s = db.storage.clone();
        let write = tokio::spawn(async move {
            s.create_session(&session(&format!("new-{i}"), NOW + 3600))
                .await
                .map(|()| Instant::now())
        });
        tokio::time::sleep(Duration::from_millis(held_ms)).await;
        assert!(!write.is_finished(), "the write did not wait for the lock");
        sqlx::query("COMMIT").execute(&mut holder).await.unwrap();
        let freed = Instant::now();
        let written = write.await.unwrap().unwrap();
        late.push(written.saturating_duration_since(freed));
    }
    assert!(
        late.iter().all(|l| *l < Duration::from_millis(20)),
        "writes got the lock this long after it was let go: {late:?}"
    );
}

/// On PostgreSQL replicas sweep at once: a sweep skips rows another transaction holds (an
/// overlapping sweep) instead of waiting for it, and deletes them in a later pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_sweep_skips_rows_another_transaction_holds() {
    use sqlx::Connection;
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    expired_sessions(db.s(), 10).await;
    let url = db._postgres.as_ref().map(|p| p.url().to_string()).unwrap();
    let mut holder = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut tx = holder.begin().await.unwrap();
    sqlx::query("SELECT id FROM sessions WHERE id = 'old-00003' FOR UPDATE")
        .execute(&mut *tx)
        .await
        .unwrap();
    // Not a speed limit: a sweep that queued on the held row would wait for as long as the
    // transaction stays open, which is until after this.
    let swept = tokio::time::timeout(
        Duration::from_secs(60),
        db.s().sweep(&cutoffs(NOW - 300, NOW - 500, 100)),
    )
    .await
    .expect("the sweep waited for the held row")
    .unwrap();
    assert_eq!(swept.sessions, 9);
    tx.rollback().await.unwrap();
    let swept = db
        .s()
        .sweep(&cutoffs(NOW - 300, NOW - 500, 100))
        .await
        .unwrap();
    assert_eq!(swept.sessions, 1);
}
