//! Dex's `sub` encoding: base64url (no padding) of the protobuf message
//! `IDTokenSubject { string user_id = 1; string conn_id = 2; }`, so that RBAC bindings written
//! against Dex-issued subjects keep matching after a move to lanyard.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

pub fn encode_subject(user_id: &str, connector_id: &str) -> String {
    let mut buf = Vec::with_capacity(user_id.len() + connector_id.len() + 8);
    put_string_field(&mut buf, 1, user_id);
    put_string_field(&mut buf, 2, connector_id);
    URL_SAFE_NO_PAD.encode(buf)
}

/// The inverse, for tools that need to show whom a subject names.
pub fn decode_subject(sub: &str) -> Option<(String, String)> {
    let bytes = URL_SAFE_NO_PAD.decode(sub).ok()?;
    let (mut user_id, mut conn_id) = (String::new(), String::new());
    let mut i = 0;
    while i < bytes.len() {
        let (tag, n) = read_varint(&bytes[i..])?;
        i += n;
        if tag & 7 != 2 {
            return None;
        }
        let (len, n) = read_varint(&bytes[i..])?;
        i += n;
        let end = i.checked_add(usize::try_from(len).ok()?)?;
        let value = String::from_utf8(bytes.get(i..end)?.to_vec()).ok()?;
        i = end;
        match tag >> 3 {
            1 => user_id = value,
            2 => conn_id = value,
            _ => return None,
        }
    }
    Some((user_id, conn_id))
}

// proto3 omits empty strings.
fn put_string_field(buf: &mut Vec<u8>, field: u64, value: &str) {
    if value.is_empty() {
        return;
    }
    put_varint(buf, (field << 3) | 2);
    put_varint(buf, value.len() as u64);
    buf.extend_from_slice(value.as_bytes());
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn read_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_dex_subject_for_its_example_static_user() {
        // Dex's docs show this subject for userID 08a8684b-db88-4b73-90a9-3cd1661f5466 on the
        // "local" connector.
        assert_eq!(
            encode_subject("08a8684b-db88-4b73-90a9-3cd1661f5466", "local"),
            "CiQwOGE4Njg0Yi1kYjg4LTRiNzMtOTBhOS0zY2QxNjYxZjU0NjYSBWxvY2Fs"
        );
    }

    #[test]
    fn long_ids_use_multi_byte_lengths_and_round_trip() {
        let user = "u".repeat(300);
        let sub = encode_subject(&user, "github");
        assert_eq!(decode_subject(&sub), Some((user, "github".to_string())));
    }

    #[test]
    fn garbage_does_not_decode() {
        assert_eq!(decode_subject("!!!"), None);
        assert_eq!(decode_subject("CgE"), None);
    }
}
