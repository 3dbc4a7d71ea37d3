use md5::{Digest, Md5};

fn hex_md5(parts: &[&[u8]]) -> String {
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
    }
    let digest = h.finalize();
    let mut out = String::with_capacity(32);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The form PostgreSQL stores md5 passwords in: `"md5" || md5(password || user)`.
pub fn md5_hash(user: &str, password: &str) -> String {
    format!("md5{}", hex_md5(&[password.as_bytes(), user.as_bytes()]))
}

/// The response to AuthenticationMD5Password, from either a plaintext
/// password or a stored `md5...` hash (both suffice for this challenge).
pub fn md5_response(user: &str, password_or_hash: &str, salt: [u8; 4]) -> String {
    let stored = if is_md5_hash(password_or_hash) {
        password_or_hash.to_owned()
    } else {
        md5_hash(user, password_or_hash)
    };
    format!("md5{}", hex_md5(&[&stored.as_bytes()[3..], &salt]))
}

/// Checks a client's md5 response against what the config holds.
pub fn md5_verify(user: &str, password_or_hash: &str, salt: [u8; 4], response: &[u8]) -> bool {
    let expected = md5_response(user, password_or_hash, salt);
    super::constant_time_eq(expected.as_bytes(), response)
}

fn is_md5_hash(s: &str) -> bool {
    s.len() == 35 && s.starts_with("md5") && s[3..].bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_postgresql() {
        // `echo -n secretalice | md5sum`: what PostgreSQL stores for alice/secret.
        assert_eq!(
            md5_hash("alice", "secret"),
            "md54a0a68b43b6cd5cf266fa02f196e2371"
        );
    }

    #[test]
    fn response_from_plaintext_and_hash_agree() {
        let salt = [1, 2, 3, 4];
        let from_plain = md5_response("alice", "secret", salt);
        let from_hash = md5_response("alice", &md5_hash("alice", "secret"), salt);
        assert_eq!(from_plain, from_hash);
        assert!(from_plain.starts_with("md5") && from_plain.len() == 35);
        assert!(md5_verify("alice", "secret", salt, from_plain.as_bytes()));
        assert!(!md5_verify("alice", "wrong", salt, from_plain.as_bytes()));
        assert!(!md5_verify(
            "alice",
            "secret",
            [9, 9, 9, 9],
            from_plain.as_bytes()
        ));
    }
}
