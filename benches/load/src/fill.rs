//! A database of realistic size before the scenarios run (`--fill`), and a backlog of expired
//! rows for housekeeping to clear while people log in (`--housekeeping`).
//!
//! lanyard's first start creates the schema; the generator stops it, fills the tables with
//! one set-based statement per kind of row (PostgreSQL's `generate_series`, the same table
//! function in the sqlite3 shell) in one transaction, and starts it again. The rows have the
//! shape lanyard writes (JSON claims, scopes and parameters, hex SHA-256 keys, sealed
//! connector data as text) so that they cost what real rows cost in every index and page,
//! and a listing through `lanyard admin` proves lanyard reads them.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sha2::Digest;

use std::sync::Arc;

use crate::flows::{self, Client};
use crate::load::{self, Figures};
use crate::process::{self, Server, Setup, Storage};
use crate::{mib, ms, Options, Report, LOGIN, REFRESH};

/// The secret of every filled client (stored, as lanyard does, as its hex SHA-256).
const CLIENT_SECRET: &str = "fill-client-secret";
const DAY: i64 = 24 * 3600;
const SCOPES: &str = r#"["openid","email","groups","offline_access"]"#;

/// What to put in the database before lanyard starts again.
#[derive(Clone, Copy, Debug)]
pub enum Fill {
    /// A year of use as housekeeping leaves it: `rows` grants and refresh tokens (a quarter
    /// more tokens: rotated ones kept for replay detection), a tenth as many users with a
    /// sign-in session each, a hundredth as many clients, and the dead rows housekeeping
    /// keeps for a while (rotated tokens, revoked grants, redeemed codes).
    Steady { rows: u64 },
    /// About `rows` rows that housekeeping deletes at its next pass, beside a few live ones.
    Expired { rows: u64 },
}

/// How many rows of each kind a fill writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub clients: u64,
    pub passwords: u64,
    pub grants: u64,
    pub refresh_tokens: u64,
    pub access_tokens: u64,
    pub sessions: u64,
    pub auth_requests: u64,
    pub auth_codes: u64,
    pub device_requests: u64,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.clients
            + self.passwords
            + self.grants
            + self.refresh_tokens
            + self.access_tokens
            + self.sessions
            + self.auth_requests
            + self.auth_codes
            + self.device_requests
    }
}

/// What differs between the two databases' SQL for the same rows.
#[derive(Clone, Copy)]
struct Sql {
    postgres: bool,
}

impl Sql {
    /// `n` rows, numbered from 1 in column `i`.
    fn series(self, n: u64) -> String {
        if self.postgres {
            format!("generate_series(1::bigint, {n}) AS s(i)")
        } else {
            format!("(SELECT value AS i FROM generate_series(1, {n})) AS s")
        }
    }

    /// Random lower-case hex of `bytes` bytes: what a SHA-256 key looks like to an index.
    fn hex(self, bytes: u32) -> String {
        if self.postgres {
            let md5s = bytes.div_ceil(16);
            let parts: Vec<&str> = (0..md5s).map(|_| "md5(random()::text)").collect();
            format!("substr({}, 1, {})", parts.join(" || "), bytes * 2)
        } else {
            format!("lower(hex(randomblob({bytes})))")
        }
    }

    /// The key lanyard stores a token, code or session cookie under (`secret_token_key`): its
    /// issue time, then a SHA-256's hex.
    fn token_key(self, created_at: &str) -> String {
        format!("{} || {}", self.time_hex(created_at), self.hex(32))
    }

    /// `created_at` seconds as milliseconds in 12 hex digits, how lanyard's keys that grow
    /// with time begin.
    fn time_hex(self, created_at: &str) -> String {
        if self.postgres {
            format!("lpad(to_hex(CAST(({created_at}) AS bigint) * 1000), 12, '0')")
        } else {
            format!("printf('%012x', ({created_at}) * 1000)")
        }
    }

    fn blob(self, bytes: u32) -> String {
        if self.postgres {
            format!("decode({}, 'hex')", self.hex(bytes))
        } else {
            format!("randomblob({bytes})")
        }
    }

    /// An upper-case letter from a number below 26.
    fn letter(self, n: &str) -> String {
        if self.postgres {
            format!("chr(CAST(65 + ({n}) AS integer))")
        } else {
            format!("char(65 + ({n}))")
        }
    }
}

/// A user's claims as lanyard stores them (`UserClaims` as JSON), for user number `u`.
fn claims(u: &str) -> String {
    format!(
        "'{{\"user_id\":\"fill-' || ({u}) || '\",\"username\":\"fill' || ({u}) || \
         '\",\"preferred_username\":\"fill' || ({u}) || '\",\"email\":\"fill' || ({u}) || \
         '@example.com\",\"email_verified\":true,\"groups\":[\"fill\",\"team-' || (({u}) % 100) \
         || '\"]}}'"
    )
}

/// Sealed connector data is base64 text of about this length (nonce, fingerprint, tag).
fn sealed_text(sql: Sql) -> String {
    sql.hex(48)
}

fn sha256_hex(text: &str) -> String {
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

impl Fill {
    pub fn counts(self) -> Counts {
        match self {
            Fill::Steady { rows } => {
                let users = (rows / 10).max(1);
                Counts {
                    clients: (rows / 100).max(1),
                    passwords: (users / 10).max(1),
                    grants: rows,
                    refresh_tokens: rows + rows / 4,
                    access_tokens: rows / 2,
                    sessions: users,
                    auth_requests: rows / 100,
                    auth_codes: rows / 100,
                    device_requests: rows / 1000,
                }
            }
            Fill::Expired { rows } => {
                let part = |percent: u64| rows * percent / 100;
                let live = live_grants(rows);
                Counts {
                    grants: part(15) + live,
                    // Revoked grants' tokens, rotated ones, ones past their family's end,
                    // and each live grant's current one.
                    refresh_tokens: part(15) + part(15) + part(10) + live,
                    access_tokens: part(5),
                    sessions: part(15),
                    auth_requests: part(15),
                    auth_codes: part(10),
                    ..Counts::default()
                }
            }
        }
    }

    /// The statements, in one transaction; `now` is lanyard's clock (Unix seconds).
    fn statements(self, sql: Sql, now: i64, password_hash: &str) -> String {
        // This session's own settings: a page cache that holds the indexes being filled
        // (random keys touch every page of them), and no waiting for the disk.
        let mut out = String::from(if sql.postgres {
            "SET synchronous_commit = off;\nSET maintenance_work_mem = '256MB';\nBEGIN;\n"
        } else {
            "PRAGMA cache_size = -262144;\nPRAGMA synchronous = OFF;\nBEGIN;\n"
        });
        match self {
            Fill::Steady { .. } => steady(&mut out, sql, self.counts(), now, password_hash),
            Fill::Expired { rows } => expired(&mut out, sql, self.counts(), rows, now),
        }
        out.push_str("COMMIT;\n");
        if sql.postgres {
            // A database this size has been vacuumed and analysed by autovacuum many times
            // in production. Left to autovacuum here, its first VACUUM of a million fresh
            // inserts (and the hint bits the first readers set) would run in the middle of
            // the scenarios, on the same two cores.
            out.push_str("VACUUM ANALYZE;\n");
        }
        out
    }

    /// Stops nothing and starts nothing: lanyard must not be running. Fills the database of
    /// `setup` and checks that lanyard reads what was written.
    pub fn apply(
        self,
        lanyard: &Path,
        setup: &Setup,
        storage: &Storage,
        password_hash: &str,
    ) -> anyhow::Result<Duration> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs() as i64;
        let started = Instant::now();
        match storage {
            Storage::Sqlite => {
                let sql = self.statements(Sql { postgres: false }, now, password_hash);
                run_sql("sqlite3", &[&sqlite_file(setup)], &sql)?;
            }
            Storage::Postgres(url) => {
                let sql = self.statements(Sql { postgres: true }, now, password_hash);
                run_sql("psql", &[url, "-qAt", "-v", "ON_ERROR_STOP=1"], &sql)?;
            }
        }
        let took = started.elapsed();
        settle(setup, storage)?;
        if let Fill::Steady { .. } = self {
            check_readable(lanyard, setup, self.counts())?;
        }
        Ok(took)
    }
}

/// Puts the fill on disk before lanyard starts. Written without waiting for the disk, it is a
/// gigabyte of dirty pages that the kernel (or PostgreSQL's checkpointer) would write back
/// while the scenarios run: lanyard's first fsync would wait for all of it, and the writing
/// scenarios would measure that backlog, not a database that grew over a year.
fn settle(setup: &Setup, storage: &Storage) -> anyhow::Result<()> {
    match storage {
        Storage::Sqlite => {
            let file = sqlite_file(setup);
            for path in [file.clone(), format!("{file}-wal")] {
                match std::fs::File::open(&path) {
                    Ok(f) => f.sync_all().with_context(|| format!("syncing {path}"))?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e).with_context(|| format!("opening {path}")),
                }
            }
        }
        Storage::Postgres(url) => {
            // CHECKPOINT needs a superuser or pg_checkpoint; without it the checkpointer
            // settles the fill on its own schedule, which the figures then include.
            if let Err(e) = run_sql(
                "psql",
                &[url, "-qAt", "-v", "ON_ERROR_STOP=1"],
                "CHECKPOINT;\n",
            ) {
                eprintln!("the fill was not checkpointed ({e}); the first minutes may include its write-back");
            }
        }
    }
    Ok(())
}

pub fn sqlite_file(setup: &Setup) -> String {
    setup.dir.join("lanyard.db").display().to_string()
}

fn live_grants(rows: u64) -> u64 {
    (rows / 20).max(1)
}

fn steady(out: &mut String, sql: Sql, c: Counts, now: i64, password_hash: &str) {
    let secret = sha256_hex(CLIENT_SECRET);
    let users = c.sessions;
    // Most grants belong to a few clients (the clusters' kubeconfig clients), the rest are
    // spread over all of them.
    let client_of = |i: &str| {
        format!(
            "CASE WHEN ({i}) % 5 = 0 THEN ({i}) % {} ELSE ({i}) % 10 END",
            c.clients
        )
    };
    let user_of = |i: &str| format!("(({i}) * 7919) % {users}");
    let hex32 = sql.hex(32);
    let _ = writeln!(
        out,
        "INSERT INTO clients (id, secret_sha256, redirect_uris, trusted_peers, is_public, name, \
         logo_url, grant_types, post_logout_redirect_uris, allowed_connectors, created_at) \
         SELECT 'fill-client-' || (i - 1), '{secret}', \
         '[\"https://fill-client-' || (i - 1) || '.example.com/callback\"]', '[]', FALSE, \
         'Fill client ' || (i - 1), NULL, '[\"authorization_code\",\"refresh_token\"]', '[]', '[]', \
         {now} - 365 * {DAY} + i FROM {};",
        sql.series(c.clients)
    );
    let _ = writeln!(
        out,
        "INSERT INTO passwords (email, hash, username, user_id, user_groups, created_at, updated_at) \
         SELECT 'fill' || (i - 1) || '@example.com', '{password_hash}', 'fill' || (i - 1), \
         'fill-' || (i - 1), '[\"fill\"]', {now} - 300 * {DAY}, {now} - 300 * {DAY} FROM {};",
        sql.series(c.passwords)
    );
    // A fiftieth of the grants revoked within the last day (housekeeping keeps them a day).
    let _ = writeln!(
        out,
        "INSERT INTO grants (id, client_id, connector_id, user_id, claims, scopes, nonce, \
         auth_time, connector_data, created_at, revoked_at) \
         SELECT 'fill-g-' || i, 'fill-client-' || ({client}), 'local', 'fill-' || ({user}), \
         {claims}, '{SCOPES}', {nonce}, {now} - i % (30 * {DAY}), {sealed}, \
         {now} - i % (30 * {DAY}), \
         CASE WHEN i % 50 = 0 THEN {now} - i % {kept} ELSE NULL END FROM {series};",
        kept = DAY - 60,
        client = client_of("i"),
        user = user_of("i"),
        claims = claims(&user_of("i")),
        nonce = sql.hex(16),
        sealed = sealed_text(sql),
        series = sql.series(c.grants),
    );
    // Each grant's current token, then a quarter of them with a predecessor rotated within
    // the week housekeeping keeps rotated tokens for.
    let created = format!("{now} - i % (30 * {DAY})");
    let _ = writeln!(
        out,
        "INSERT INTO refresh_tokens (token_hash, grant_id, client_id, created_at, last_used_at, \
         expires_at, rotated_at, successor_hash, successor_sealed) \
         SELECT {key}, 'fill-g-' || i, 'fill-client-' || ({client}), {created}, \
         {now} - i % (7 * {DAY}), NULL, NULL, NULL, NULL FROM {series};",
        key = sql.token_key(&created),
        client = client_of("i"),
        series = sql.series(c.grants),
    );
    let rotated = c.refresh_tokens - c.grants;
    let created = format!("{now} - 8 * {DAY} - i % (30 * {DAY})");
    let rotated_at = format!("{now} - i % (6 * {DAY})");
    let _ = writeln!(
        out,
        "INSERT INTO refresh_tokens (token_hash, grant_id, client_id, created_at, last_used_at, \
         expires_at, rotated_at, successor_hash, successor_sealed) \
         SELECT {key}, 'fill-g-' || (i * 4), 'fill-client-' || ({client}), \
         {created}, {rotated_at}, NULL, {rotated_at}, {successor}, {blob} FROM {series};",
        key = sql.token_key(&created),
        successor = sql.token_key(&rotated_at),
        client = client_of("i * 4"),
        blob = sql.blob(60),
        series = sql.series(rotated),
    );
    let _ = writeln!(
        out,
        "INSERT INTO access_tokens (token_hash, grant_id, client_id, created_at, expires_at, scopes) \
         SELECT {key}, 'fill-g-' || (i * 2), 'fill-client-' || ({client}), \
         {now} - i % {DAY}, {now} + {DAY} - i % {DAY}, NULL FROM {series};",
        key = sql.token_key(&format!("{now} - i % {DAY}")),
        client = client_of("i * 2"),
        series = sql.series(c.access_tokens),
    );
    let _ = writeln!(
        out,
        "INSERT INTO sessions (id, user_id, connector_id, claims, connector_data, auth_time, \
         created_at, expires_at, revoked_at) \
         SELECT {key}, 'fill-' || (i - 1), 'local', {claims}, {sealed}, \
         {now} - i % {DAY}, {now} - i % {DAY}, {now} + {DAY} - i % {DAY}, NULL FROM {series};",
        key = sql.token_key(&format!("{now} - i % {DAY}")),
        claims = claims("i - 1"),
        sealed = sealed_text(sql),
        series = sql.series(users),
    );
    auth_requests(out, sql, c.auth_requests, "", now + 1800);
    // Redeemed codes, kept a day past their expiry to catch a replay.
    auth_codes(out, sql, c.auth_codes, "", now - 3600);
    let code = (0..6)
        .map(|d| sql.letter(&format!("(i / {}) % 26", 26u64.pow(d))))
        .collect::<Vec<_>>()
        .join(" || ");
    let _ = writeln!(
        out,
        "INSERT INTO device_requests (user_code, device_code_hash, client_id, scopes, created_at, \
         expires_at, poll_interval, last_poll_at, status, grant_json) \
         SELECT 'FF' || {code}, {hex32}, 'fill-client-' || (i % {clients}), '{SCOPES}', \
         {now} - i % 300, {now} + 300 - i % 300, 5, NULL, 'pending', NULL FROM {series};",
        clients = c.clients,
        series = sql.series(c.device_requests),
    );
}

/// Logins that nobody finished: `prefix` marks the rows' ids, `expires` is when they expire.
fn auth_requests(out: &mut String, sql: Sql, n: u64, prefix: &str, expires: i64) {
    let params = format!(
        "'{{\"redirect_uri\":\"https://fill-client-' || (i % 10) || '.example.com/callback\",\
         \"response_type\":\"code\",\"response_mode\":null,\"scopes\":{SCOPES},\"state\":\"' || {h} \
         || '\",\"nonce\":\"' || {h} || '\",\"code_challenge\":\"' || {h} || '\",\
         \"code_challenge_method\":\"S256\",\"connector_id\":null,\"prompt\":null,\"max_age\":null,\
         \"login_hint\":null,\"device_user_code\":null}}'",
        h = sql.hex(16)
    );
    // A login's id as lanyard makes it: the time in hex, then random characters.
    let created = format!("{expires} - 1800 - i % 600");
    let _ = writeln!(
        out,
        "INSERT INTO auth_requests (id, client_id, params, csrf_token, browser_binding, login, \
         created_at, expires_at) \
         SELECT '{prefix}' || {time} || {random}, 'fill-client-' || (i % 10), {params}, {csrf}, \
         {binding}, NULL, {created}, {expires} - i % 600 FROM {series};",
        time = sql.time_hex(&created),
        random = sql.hex(16),
        csrf = sql.hex(32),
        binding = sql.hex(32),
        series = sql.series(n),
    );
}

/// Redeemed authorization codes that expired at `expired` or a little before.
fn auth_codes(out: &mut String, sql: Sql, n: u64, prefix: &str, expired: i64) {
    let grant = format!(
        "'{{\"id\":\"fill-code-g-' || i || '\",\"client_id\":\"fill-client-' || (i % 10) || \
         '\",\"connector_id\":\"local\",\"claims\":' || {claims} || ',\"scopes\":{SCOPES},\
         \"nonce\":\"' || {nonce} || '\",\"auth_time\":' || ({expired} - 60) || \
         ',\"connector_data\":null,\"created_at\":' || ({expired} - 60) || ',\"revoked_at\":null}}'",
        claims = claims("i % 1000"),
        nonce = sql.hex(16),
    );
    let _ = writeln!(
        out,
        "INSERT INTO auth_codes (code_hash, grant_id, redirect_uri, code_challenge, \
         code_challenge_method, grant_json, created_at, expires_at, redeemed_at) \
         SELECT '{prefix}' || {hash}, 'fill-code-g-' || i, \
         'https://fill-client-' || (i % 10) || '.example.com/callback', {challenge}, 'S256', \
         {grant}, {expired} - 60 - i % 80000, {expired} - i % 80000, {expired} - 55 - i % 80000 \
         FROM {series};",
        hash = sql.token_key(&format!("{expired} - 60 - i % 80000")),
        challenge = sql.hex(32),
        series = sql.series(n),
    );
}

/// Rows past every cutoff of housekeeping (`sweep_once`): their keys start with `x~`, which no
/// key lanyard makes does (hex, or base64url), so that what is left of them can be counted.
fn expired(out: &mut String, sql: Sql, c: Counts, rows: u64, now: i64) {
    let part = |percent: u64| rows * percent / 100;
    let live = live_grants(rows);
    let hex32 = sql.hex(32);
    let grant_columns = "INSERT INTO grants (id, client_id, connector_id, user_id, claims, \
         scopes, nonce, auth_time, connector_data, created_at, revoked_at)";
    let token_columns = "INSERT INTO refresh_tokens (token_hash, grant_id, client_id, created_at, \
         last_used_at, expires_at, rotated_at, successor_hash, successor_sealed)";
    // Live grants, each with its current token: what housekeeping must leave.
    let _ = writeln!(
        out,
        "{grant_columns} SELECT 'live-g-' || i, 'fill-client-' || (i % 10), 'local', \
         'fill-' || (i % 1000), {claims}, '{SCOPES}', NULL, {now} - 3600, {sealed}, {now} - 3600, \
         NULL FROM {series};\n\
         {token_columns} SELECT {hex32}, 'live-g-' || i, 'fill-client-' || (i % 10), \
         {now} - 3600, {now} - 60, NULL, NULL, NULL, NULL FROM {series};",
        claims = claims("i % 1000"),
        sealed = sealed_text(sql),
        series = sql.series(live),
    );
    // Grants revoked two days ago, each with the token it had.
    let _ = writeln!(
        out,
        "{grant_columns} SELECT 'x~g-' || i, 'fill-client-' || (i % 10), 'local', \
         'fill-' || (i % 1000), {claims}, '{SCOPES}', NULL, {now} - 3 * {DAY}, {sealed}, \
         {now} - 3 * {DAY}, {now} - 2 * {DAY} FROM {series};\n\
         {token_columns} SELECT 'x~' || {hex32}, 'x~g-' || i, 'fill-client-' || (i % 10), \
         {now} - 3 * {DAY}, {now} - 2 * {DAY}, NULL, NULL, NULL, NULL FROM {series};",
        claims = claims("i % 1000"),
        sealed = sealed_text(sql),
        series = sql.series(part(15)),
    );
    // Live grants' tokens rotated more than a week ago, and tokens of families past their
    // absolute lifetime.
    let _ = writeln!(
        out,
        "{token_columns} SELECT 'x~' || {hex32}, 'live-g-' || (i % {live} + 1), \
         'fill-client-' || (i % 10), {now} - 9 * {DAY}, {now} - 8 * {DAY}, NULL, \
         {now} - 8 * {DAY}, {hex32}, {blob} FROM {rotated};\n\
         {token_columns} SELECT 'x~' || {hex32}, 'live-g-' || (i % {live} + 1), \
         'fill-client-' || (i % 10), {now} - 40 * {DAY}, {now} - {DAY}, {now} - 60 - i % 3600, \
         NULL, NULL, NULL FROM {ended};",
        blob = sql.blob(60),
        rotated = sql.series(part(15)),
        ended = sql.series(part(10)),
    );
    let _ = writeln!(
        out,
        "INSERT INTO access_tokens (token_hash, grant_id, client_id, created_at, expires_at, scopes) \
         SELECT 'x~' || {hex32}, 'live-g-' || (i % {live} + 1), 'fill-client-' || (i % 10), \
         {now} - 2 * {DAY}, {now} - {DAY} - i % 3600, NULL FROM {series};",
        series = sql.series(c.access_tokens),
    );
    let _ = writeln!(
        out,
        "INSERT INTO sessions (id, user_id, connector_id, claims, connector_data, auth_time, \
         created_at, expires_at, revoked_at) \
         SELECT 'x~' || {hex32}, 'fill-' || (i % 1000), 'local', {claims}, {sealed}, \
         {now} - 2 * {DAY}, {now} - 2 * {DAY}, {now} - 60 - i % 3600, NULL FROM {series};",
        claims = claims("i % 1000"),
        sealed = sealed_text(sql),
        series = sql.series(c.sessions),
    );
    auth_requests(out, sql, c.auth_requests, "x~", now - 60);
    auth_codes(out, sql, c.auth_codes, "x~", now - 2 * DAY);
}

/// Rows of an `Expired` fill that housekeeping has not deleted yet.
pub fn expired_left(storage: &Storage, setup: &Setup) -> anyhow::Result<u64> {
    let (shell, args) = shell(storage, setup);
    count_expired(shell, &args)
}

fn count_expired(shell: &str, args: &[String]) -> anyhow::Result<u64> {
    let count = |table: &str, key: &str| {
        format!("(SELECT count(*) FROM {table} WHERE {key} >= 'x~' AND {key} < 'x~~')")
    };
    let query = format!(
        "SELECT {} + {} + {} + {} + {} + {};",
        count("grants", "id"),
        count("refresh_tokens", "token_hash"),
        count("access_tokens", "token_hash"),
        count("sessions", "id"),
        count("auth_requests", "id"),
        count("auth_codes", "code_hash"),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_sql(shell, &args, &query)?;
    out.trim()
        .parse()
        .with_context(|| format!("counting expired rows: {out:?}"))
}

/// Sends `sql` to a database shell's standard input; returns what it printed.
fn run_sql(shell: &str, args: &[&str], sql: &str) -> anyhow::Result<String> {
    use std::io::Write;
    let mut child = Command::new(shell)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {shell} (is it installed?)"))?;
    let mut stdin = child.stdin.take().context("the shell's stdin")?;
    stdin.write_all(sql.as_bytes())?;
    drop(stdin);
    let out = child.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    // sqlite3 reports an error on stderr and may still exit 0 for piped input.
    if !out.status.success() || stderr.contains("Error") || stderr.contains("ERROR") {
        bail!("{shell}: {}", stderr.trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// lanyard lists the filled clients, and a client's grants (decoding their claims and scopes),
/// through its own storage code: rows of the wrong shape fail here, not silently in a scenario.
fn check_readable(lanyard: &Path, setup: &Setup, counts: Counts) -> anyhow::Result<()> {
    let admin = |args: &[&str]| -> anyhow::Result<String> {
        let out = Command::new(lanyard)
            .arg("admin")
            .arg("--config")
            .arg(&setup.config)
            .args(args)
            .current_dir(&setup.dir)
            .output()
            .context("running lanyard admin")?;
        if !out.status.success() {
            bail!(
                "lanyard admin {} failed on the filled database: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let clients = admin(&["clients", "list"])?;
    let stored = clients
        .lines()
        .filter(|l| l.starts_with("fill-client-"))
        .count() as u64;
    if stored != counts.clients {
        bail!(
            "lanyard lists {stored} of the {} filled clients",
            counts.clients
        );
    }
    let grants = admin(&["sessions", "list", "--client", "fill-client-1", "--all"])?;
    if !grants.lines().any(|l| l.starts_with("grant\t")) {
        bail!("lanyard lists no grant of fill-client-1 on the filled database");
    }
    Ok(())
}

/// What `--fill` and `--housekeeping` measured beside the fresh runs.
#[derive(Default)]
pub struct Extra {
    /// The scenarios on a filled database, one report per storage (same order as the fresh).
    pub filled: Vec<Report>,
    pub sweeps: Vec<Sweeping>,
    rows: u64,
    /// Turns each side took per scenario.
    turns: u32,
}

/// The `--housekeeping` runs the options ask for, on each storage, beside the `--fill` runs'
/// reports (made with the fresh ones, see `scenarios`).
pub async fn extra_runs(
    opts: &Options,
    password_hash: &str,
    filled: Vec<Report>,
) -> anyhow::Result<Extra> {
    let mut extra = Extra {
        rows: opts.fill_rows,
        turns: opts.turns,
        filled,
        ..Extra::default()
    };
    if opts.housekeeping {
        for storage in opts.storages() {
            extra
                .sweeps
                .push(housekeeping(opts, storage, password_hash).await?);
        }
    }
    Ok(extra)
}

/// Logins and refreshes while housekeeping clears a backlog, and the same load after.
pub struct Sweeping {
    storage: &'static str,
    /// Expired rows at the start.
    rows: u64,
    /// From the first row gone to the last.
    cleared_in: Duration,
    /// Whether the backlog outlasted the measured window (else the window saw quiet time too).
    window_inside: bool,
    during: [Figures; 2],
    quiet: [Figures; 2],
}

/// How soon after lanyard starts housekeeping makes its first pass.
const SWEEP_AFTER: Duration = Duration::from_secs(2);

async fn housekeeping(
    opts: &Options,
    storage: Storage,
    password_hash: &str,
) -> anyhow::Result<Sweeping> {
    let name = storage.name();
    let dir = std::env::temp_dir().join(format!(
        "lanyard-bench-{}-{name}-housekeeping",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir)?;
    let result = housekeeping_in(opts, &dir, storage, password_hash).await;
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn housekeeping_in(
    opts: &Options,
    dir: &Path,
    storage: Storage,
    password_hash: &str,
) -> anyhow::Result<Sweeping> {
    let name = storage.name();
    let (_database, storage) = process::own_database(&storage)?;
    let setup = process::write_config(dir, &storage, password_hash)?;
    let mut config = std::fs::read_to_string(&setup.config)?;
    let _ = writeln!(
        config,
        "housekeeping:\n  interval: {}s",
        SWEEP_AFTER.as_secs()
    );
    std::fs::write(&setup.config, config)?;
    eprintln!("[{name}] housekeeping: first start");
    Server::start(&opts.lanyard, &setup).await?.stop()?;
    let fill = Fill::Expired {
        rows: opts.fill_rows,
    };
    eprintln!(
        "[{name}] housekeeping: filling {} expired rows",
        fill.counts().total()
    );
    fill.apply(&opts.lanyard, &setup, &storage, password_hash)?;
    let rows = expired_left(&storage, &setup)?;

    let server = Server::start(&opts.lanyard, &setup).await?;
    let started = Instant::now();
    let (addr, pid) = (setup.web, server.pid());
    let client = Arc::new(Client::new());
    // Refresh tokens to rotate, from one login per connection, before the first pass.
    let cl = client.clone();
    let (warm, signed_in) = load::run(
        addr,
        pid,
        (0..opts.login_connections).map(|p| (p, None)).collect(),
        None,
        move |mut c, (person, done): (usize, Option<String>)| {
            let cl = cl.clone();
            async move {
                if done.is_some() {
                    return (c, (person, done), Ok(false));
                }
                match flows::password_login(&mut c, &cl, person).await {
                    Ok(s) => (c, (person, Some(s.refresh_token)), Ok(true)),
                    Err(e) => (c, (person, None), Err(e)),
                }
            }
        },
    )
    .await;
    let tokens: Vec<String> = signed_in.into_iter().filter_map(|(_, t)| t).collect();
    if tokens.is_empty() {
        bail!(
            "[{name}] no login succeeded: {}",
            warm.first_error.unwrap_or_default()
        );
    }
    let (shell, args) = shell(&storage, &setup);
    let poll = tokio::task::spawn_blocking(move || -> anyhow::Result<Instant> {
        let give_up = Instant::now() + Duration::from_secs(1800);
        loop {
            if count_expired(shell, &args)? == 0 {
                return Ok(Instant::now());
            }
            if Instant::now() > give_up {
                bail!("housekeeping had not cleared the expired rows after 30 minutes");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let first_pass = started + SWEEP_AFTER;
    tokio::time::sleep_until(first_pass.into()).await;
    let secs = Duration::from_secs(opts.seconds);
    eprintln!("[{name}] housekeeping: logins and refreshes while it sweeps");
    let (during, tokens) = mixed(opts, addr, pid, &client, tokens, secs).await;
    let window_inside = !poll.is_finished();
    let cleared_in = poll.await??.saturating_duration_since(first_pass);
    eprintln!("[{name}] housekeeping: the same load, quiet");
    let (quiet, _) = mixed(opts, addr, pid, &client, tokens, secs).await;
    server.stop()?;
    Ok(Sweeping {
        storage: name,
        rows,
        cleared_in,
        window_inside,
        during,
        quiet,
    })
}

/// Password logins and refreshes at once, for `secs`: their figures, and the tokens the
/// refreshes end with.
async fn mixed(
    opts: &Options,
    addr: std::net::SocketAddr,
    pid: u32,
    client: &Arc<Client>,
    tokens: Vec<String>,
    secs: Duration,
) -> ([Figures; 2], Vec<String>) {
    let cl = client.clone();
    let logins = load::run(
        addr,
        pid,
        (0..opts.login_connections).collect(),
        Some(secs),
        move |mut c, person: usize| {
            let cl = cl.clone();
            async move {
                let r = flows::password_login(&mut c, &cl, person)
                    .await
                    .map(|_| true);
                (c, person, r)
            }
        },
    );
    let cl = client.clone();
    let refreshes = load::run(addr, pid, tokens, Some(secs), move |mut c, mut token| {
        let cl = cl.clone();
        async move {
            let r = flows::refresh(&mut c, &cl, &mut token).await.map(|()| true);
            (c, token, r)
        }
    });
    let ((logins, _), (refreshes, tokens)) = tokio::join!(logins, refreshes);
    ([logins, refreshes], tokens)
}

/// The shell and arguments that reach the database of `setup`.
fn shell(storage: &Storage, setup: &Setup) -> (&'static str, Vec<String>) {
    match storage {
        Storage::Sqlite => ("sqlite3", vec![sqlite_file(setup)]),
        Storage::Postgres(url) => ("psql", vec![url.clone(), "-qAt".into()]),
    }
}

impl Extra {
    /// Scenarios that failed a request or did none, for `--smoke`.
    pub fn failures(&self) -> Vec<String> {
        self.sweeps
            .iter()
            .flat_map(|s| {
                [LOGIN, REFRESH]
                    .into_iter()
                    .zip(&s.during)
                    .chain([LOGIN, REFRESH].into_iter().zip(&s.quiet))
                    .filter(|(_, f)| f.errors > 0 || f.ok == 0)
                    .map(|(n, f)| {
                        format!(
                            "{} {n} beside housekeeping: {} ok, {} errors, first: {}",
                            s.storage,
                            f.ok,
                            f.errors,
                            f.first_error.as_deref().unwrap_or("-")
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    pub fn print(&self, fresh: &[Report]) {
        for filled in &self.filled {
            let Some(fresh) = fresh.iter().find(|r| r.storage == filled.storage) else {
                continue;
            };
            println!();
            println!(
                "{}: fresh database against one filled with {} rows ({} grants, {} refresh \
                 tokens, {} sessions, {} clients; filled in {}), the two taking {} turns each \
                 per scenario; filled/fresh in brackets, within 20% is 0.80-1.20 (1.25 for \
                 times)",
                filled.storage,
                Fill::Steady { rows: self.rows }.counts().total(),
                Fill::Steady { rows: self.rows }.counts().grants,
                Fill::Steady { rows: self.rows }.counts().refresh_tokens,
                Fill::Steady { rows: self.rows }.counts().sessions,
                Fill::Steady { rows: self.rows }.counts().clients,
                filled.filled_in.map(ms).unwrap_or_default(),
                self.turns,
            );
            // On PostgreSQL, the server's own CPU per request too: where lanyard waits.
            let postgres = filled.storage == "postgres";
            print!(
                "{:<20} | {:>22} | {:>24} | {:>24}",
                "scenario", "req/s fresh filled", "p99 fresh filled", "cpu/req fresh filled"
            );
            if postgres {
                print!(" | {:>24}", "pg cpu/req fresh filled");
            }
            println!();
            println!("{}", "-".repeat(if postgres { 127 } else { 100 }));
            for (scenario, f) in &filled.rows {
                let Some((_, o)) = fresh.rows.iter().find(|(n, _)| n == scenario) else {
                    continue;
                };
                let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
                let p99 = (o.percentile(99.0), f.percentile(99.0));
                let cpu = (o.server_cpu_per_request(), f.server_cpu_per_request());
                print!(
                    "{scenario:<20} | {:>6.0} {:>6.0} ({:>4.2}) | {:>7} {:>7} ({:>4.2}) | {:>7} {:>7} ({:>4.2})",
                    o.rate(),
                    f.rate(),
                    ratio(f.rate(), o.rate()),
                    ms(p99.0),
                    ms(p99.1),
                    ratio(p99.1.as_secs_f64(), p99.0.as_secs_f64()),
                    ms(cpu.0),
                    ms(cpu.1),
                    ratio(cpu.1.as_secs_f64(), cpu.0.as_secs_f64()),
                );
                if postgres {
                    let db = (o.postgres_cpu_per_request(), f.postgres_cpu_per_request());
                    print!(
                        " | {:>7} {:>7} ({:>4.2})",
                        ms(db.0),
                        ms(db.1),
                        ratio(db.1.as_secs_f64(), db.0.as_secs_f64())
                    );
                }
                println!();
            }
            println!(
                "resident memory: idle {} fresh, {} filled; peak {} fresh, {} filled; ready after \
                 a restart {} fresh, {} filled",
                mib(fresh.idle_rss_kib),
                mib(filled.idle_rss_kib),
                mib(fresh.peak_rss_kib),
                mib(filled.peak_rss_kib),
                ms(fresh.ready_restart),
                ms(filled.ready_restart),
            );
        }
        for s in &self.sweeps {
            println!();
            println!(
                "{}: housekeeping deleting {} expired rows under load: cleared in {} ({:.0} rows/s){}",
                s.storage,
                s.rows,
                ms(s.cleared_in),
                s.rows as f64 / s.cleared_in.as_secs_f64().max(1e-3),
                if s.window_inside {
                    ""
                } else {
                    "; it finished inside the measured window, which saw quiet time too"
                }
            );
            println!(
                "{:<20} | {:>22} | {:>24} | {:>24}",
                "scenario", "req/s sweeping quiet", "p50 sweeping quiet", "p99 sweeping quiet"
            );
            for (i, scenario) in [LOGIN, REFRESH].into_iter().enumerate() {
                let (d, q) = (&s.during[i], &s.quiet[i]);
                println!(
                    "{scenario:<20} | {:>10.0} {:>11.0} | {:>11} {:>12} | {:>11} {:>12}",
                    d.rate(),
                    q.rate(),
                    ms(d.percentile(50.0)),
                    ms(q.percentile(50.0)),
                    ms(d.percentile(99.0)),
                    ms(q.percentile(99.0)),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every table a fill writes, tokens after the grants they reference.
    const TABLES: [&str; 9] = [
        "clients",
        "passwords",
        "grants",
        "refresh_tokens",
        "access_tokens",
        "sessions",
        "auth_requests",
        "auth_codes",
        "device_requests",
    ];

    #[test]
    fn steady_fill_has_the_sizes_the_issue_asks_for() {
        let c = Fill::Steady { rows: 1_000_000 }.counts();
        assert!(c.grants >= 1_000_000 && c.refresh_tokens >= 1_000_000);
        assert_eq!(c.sessions, 100_000);
        assert_eq!(c.clients, 10_000);
    }

    #[test]
    fn expired_fill_is_mostly_rows_housekeeping_deletes() {
        let rows = 1_000_000;
        let c = Fill::Expired { rows }.counts();
        let live = 2 * live_grants(rows);
        assert!(c.total() - live >= rows * 99 / 100, "{c:?}");
    }

    /// Both fills on lanyard's real schema (its migrations, applied by the shell the fill
    /// uses): every statement runs, the counts are what `counts` says, the JSON columns parse,
    /// and what the expired fill marks as expired is what `count_expired` counts.
    fn fill_on_schema(postgres: bool, shell: &str, args: &[String]) {
        let dialect = if postgres { "postgres" } else { "sqlite" };
        let migrations = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../migrations")
            .join(dialect);
        let mut files: Vec<_> = std::fs::read_dir(&migrations)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let schema: String = files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let sql = |text: &str| run_sql(shell, &args, text).unwrap();
        let tables = TABLES;
        let json = if postgres {
            "SELECT count(*) FROM grants WHERE (claims::json->>'email') IS NULL \
             OR json_array_length(scopes::json) = 0; \
             SELECT count(*) FROM auth_codes WHERE (grant_json::json->>'id') IS NULL; \
             SELECT count(*) FROM auth_requests WHERE (params::json->>'redirect_uri') IS NULL; \
             SELECT count(*) FROM sessions WHERE (claims::json->>'user_id') IS NULL;"
        } else {
            "SELECT count(*) FROM grants WHERE NOT json_valid(claims) OR NOT json_valid(scopes); \
             SELECT count(*) FROM auth_codes WHERE NOT json_valid(grant_json); \
             SELECT count(*) FROM auth_requests WHERE NOT json_valid(params); \
             SELECT count(*) FROM sessions WHERE NOT json_valid(claims);"
        };
        for fill in [Fill::Steady { rows: 3000 }, Fill::Expired { rows: 3000 }] {
            // Tokens before the grants they reference.
            let drop: String = tables
                .iter()
                .rev()
                .chain(&[
                    "signing_keys",
                    "connectors",
                    "connectors_generation",
                    "login_attempts",
                ])
                .map(|t| format!("DROP TABLE IF EXISTS {t};\n"))
                .collect();
            sql(&drop);
            sql(&schema);
            sql(&fill.statements(
                Sql { postgres },
                1_700_000_000,
                "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
            ));
            let c = fill.counts();
            let total: u64 = tables
                .iter()
                .map(|t| {
                    sql(&format!("SELECT count(*) FROM {t};"))
                        .trim()
                        .parse::<u64>()
                        .unwrap()
                })
                .sum();
            assert_eq!(total, c.total(), "{fill:?}");
            let owned: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            let expired = count_expired(shell, &owned).unwrap();
            match fill {
                Fill::Steady { .. } => assert_eq!(expired, 0),
                Fill::Expired { rows } => assert_eq!(expired, c.total() - 2 * live_grants(rows)),
            }
            let broken = sql(json);
            assert_eq!(
                broken.split_whitespace().collect::<Vec<_>>(),
                ["0"; 4],
                "{fill:?}"
            );
        }
    }

    #[test]
    fn fills_run_on_the_sqlite_schema() {
        let dir = std::env::temp_dir().join(format!("lanyard-fill-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("fill.db").display().to_string();
        fill_on_schema(false, "sqlite3", &[db]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// On the server `DATABASE_URL` names (as the storage tests use), in a database of its own.
    #[test]
    fn fills_run_on_the_postgres_schema() {
        let Ok(url) = std::env::var("DATABASE_URL") else {
            assert!(std::env::var("CI").is_err(), "CI sets DATABASE_URL");
            return;
        };
        let db = process::Database::create(&url).unwrap();
        fill_on_schema(
            true,
            "psql",
            &[
                db.url.clone(),
                "-qAt".into(),
                "-v".into(),
                "ON_ERROR_STOP=1".into(),
            ],
        );
    }

    #[test]
    fn both_dialects_write_every_statement() {
        for postgres in [false, true] {
            let sql = Fill::Steady { rows: 2000 }.statements(Sql { postgres }, 1_700_000_000, "h");
            for table in TABLES {
                assert!(sql.contains(&format!("INSERT INTO {table} ")), "{table}");
            }
        }
    }
}
