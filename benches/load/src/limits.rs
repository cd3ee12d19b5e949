//! The machine's own limits, measured in the same run as lanyard so that the ratios hold
//! whatever the machine: RSA-2048 signatures on one core, argon2id hashes on one core.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use argon2::{Algorithm, Argon2, Params, Version};
use lanyard_connectors::password_hash::Argon2idParams;

/// The parameters lanyard hashes new passwords with (OWASP's).
pub const ARGON2: Argon2idParams = Argon2idParams::OWASP;

fn argon2() -> anyhow::Result<Argon2<'static>> {
    let params = Params::new(
        ARGON2.memory_kib,
        ARGON2.iterations,
        ARGON2.parallelism,
        None,
    )
    .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// A PHC string for `password` at OWASP's parameters, for the config's static password.
pub fn argon2id_hash(password: &str) -> anyhow::Result<String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    argon2()?
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("argon2id: {e}"))
}

/// argon2id hashes per second on one core, hashing for about `time`.
pub fn argon2id_per_core(time: Duration) -> anyhow::Result<f64> {
    let argon2 = argon2()?;
    let mut out = [0u8; 32];
    let salt = [7u8; 16];
    let started = Instant::now();
    let mut n = 0u32;
    while n == 0 || started.elapsed() < time {
        argon2
            .hash_password_into(b"benchmark password", &salt, &mut out)
            .map_err(|e| anyhow::anyhow!("argon2id: {e}"))?;
        n += 1;
    }
    Ok(f64::from(n) / started.elapsed().as_secs_f64())
}

/// argon2id hashes per second with `threads` hashing at once: what the cores really give
/// when they share caches and memory bandwidth, beside the per-core figure times cores.
pub fn argon2id_parallel(threads: usize, time: Duration) -> anyhow::Result<f64> {
    let workers: Vec<_> = (0..threads)
        .map(|_| std::thread::spawn(move || argon2id_per_core(time)))
        .collect();
    let mut total = 0.0;
    for w in workers {
        total += w
            .join()
            .map_err(|_| anyhow::anyhow!("an argon2id thread panicked"))??;
    }
    Ok(total)
}

/// RSA-2048 signatures per second on one core, as `openssl speed` measures them.
pub fn openssl_rsa2048_signs_per_sec(seconds: u32) -> anyhow::Result<f64> {
    let out = Command::new("openssl")
        .args(["speed", "-mr", "-seconds", &seconds.to_string(), "rsa2048"])
        .output()
        .context("running `openssl speed` (is openssl installed?)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // `+F2:<n>:2048:<sign>:<verify>`: OpenSSL 3 prints signatures per second there,
    // OpenSSL 1.1 seconds per signature.
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("+F2:") else {
            continue;
        };
        let fields: Vec<&str> = rest.split(':').collect();
        if fields.get(1) != Some(&"2048") {
            continue;
        }
        let sign: f64 = fields
            .get(2)
            .and_then(|v| v.parse().ok())
            .context("openssl speed printed an unreadable rate")?;
        return Ok(if sign < 1.0 { 1.0 / sign } else { sign });
    }
    bail!(
        "`openssl speed rsa2048` printed no rsa2048 line: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    )
}
