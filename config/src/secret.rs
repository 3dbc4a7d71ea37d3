//! Passwords as configured: a wrapper that keeps them out of logs, and the
//! rules for telling a plaintext password from a stored PostgreSQL hash.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What `to_masked_toml` and the `Debug`/`Display` impls print instead of a secret.
pub const MASK: &str = "********";

/// Prefix PostgreSQL gives every SCRAM-SHA-256 entry in `pg_authid.rolpassword`.
const SCRAM_PREFIX: &str = "SCRAM-SHA-256$";

/// A string that never prints itself: Debug and Display show "********".
/// Serializes as the real value (masking is done by `Config::to_masked_toml`).
///
/// `==` compares in variable time, which is fine for comparing configs (reload
/// diffs) but not for checking what a client sent: authentication code must
/// use [`Secret::expose`] with a constant-time comparison.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

/// How a configured password is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PasswordKind {
    /// The password itself: usable for every client auth method and to log in
    /// to backends.
    Plain,
    /// `SCRAM-SHA-256$<iter>:<salt>$<storedkey>:<serverkey>`, as found in
    /// `pg_authid.rolpassword`: can verify a SCRAM client, nothing else.
    ScramVerifier,
    /// `md5` followed by 32 lowercase hex digits (md5 of password + user name):
    /// can verify an md5 client, nothing else.
    Md5Hash,
}

impl Secret {
    /// Wraps a password, verifier or hash.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The real value. Every call site is a place where the secret can leak,
    /// so keep them few and never format the result.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Classifies the value the way PostgreSQL classifies `rolpassword`.
    pub fn kind(&self) -> PasswordKind {
        if self.0.starts_with(SCRAM_PREFIX) {
            // Even a malformed verifier is classified as one: treating it as a
            // plaintext password would silently send it to backends.
            PasswordKind::ScramVerifier
        } else if is_md5_hash(&self.0) {
            PasswordKind::Md5Hash
        } else {
            PasswordKind::Plain
        }
    }
}

/// Mirrors PostgreSQL's `isMD5()`: lowercase hex only, so a plaintext password
/// that merely looks similar is classified the same way the server would.
fn is_md5_hash(s: &str) -> bool {
    s.len() == 35
        && s.starts_with("md5")
        && s[3..]
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks a `SCRAM-SHA-256$<iter>:<salt>$<storedkey>:<serverkey>` string the
/// way PostgreSQL's `parse_scram_secret()` does, so a verifier accepted here is
/// one the server would accept too. The error names the first bad part.
pub(crate) fn check_scram_verifier(s: &str) -> Result<(), String> {
    let body = s
        .strip_prefix(SCRAM_PREFIX)
        .ok_or("it does not start with \"SCRAM-SHA-256$\"")?;
    let (iter_salt, keys) = body
        .split_once('$')
        .ok_or("the '$' between <iterations>:<salt> and <storedkey>:<serverkey> is missing")?;
    let (iterations, salt) = iter_salt
        .split_once(':')
        .ok_or("the ':' between iterations and salt is missing")?;
    let (stored_key, server_key) = keys
        .split_once(':')
        .ok_or("the ':' between storedkey and serverkey is missing")?;
    match iterations.parse::<u32>() {
        Ok(n) if n > 0 => {}
        _ => {
            return Err(format!(
                "iteration count {iterations:?} is not a positive integer"
            ))
        }
    }
    let salt = STANDARD
        .decode(salt)
        .map_err(|_| "the salt is not valid base64".to_string())?;
    if salt.is_empty() {
        return Err("the salt is empty".into());
    }
    for (what, key) in [("storedkey", stored_key), ("serverkey", server_key)] {
        let bytes = STANDARD
            .decode(key)
            .map_err(|_| format!("the {what} is not valid base64"))?;
        // SHA-256 output: anything else cannot be a SCRAM-SHA-256 key.
        if bytes.len() != 32 {
            return Err(format!(
                "the {what} decodes to {} bytes, not 32",
                bytes.len()
            ));
        }
    }
    Ok(())
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret::new(s)
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // The real value: the figment defaults layer round-trips through
        // serialization, so masking here would replace passwords with stars.
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VERIFIER: &str = "SCRAM-SHA-256$4096:c2FsdHNhbHQ=$\
        AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:\
        AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "********");
        assert_eq!(format!("{s}"), "********");
        assert_eq!(format!("{:?}", Some(&s)), "Some(********)");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn kind_detection() {
        assert_eq!(Secret::new("hunter2").kind(), PasswordKind::Plain);
        assert_eq!(Secret::new("").kind(), PasswordKind::Plain);
        assert_eq!(Secret::new(VERIFIER).kind(), PasswordKind::ScramVerifier);
        assert_eq!(
            Secret::new("SCRAM-SHA-256$garbage").kind(),
            PasswordKind::ScramVerifier
        );
        let md5 = "md5d41d8cd98f00b204e9800998ecf8427e";
        assert_eq!(Secret::new(md5).kind(), PasswordKind::Md5Hash);
        // PostgreSQL only recognises lowercase hex, so these are passwords.
        assert_eq!(
            Secret::new("md5D41D8CD98F00B204E9800998ECF8427E").kind(),
            PasswordKind::Plain
        );
        assert_eq!(Secret::new(&md5[..34]).kind(), PasswordKind::Plain);
        assert_eq!(Secret::new(format!("{md5}0")).kind(), PasswordKind::Plain);
        assert_eq!(
            Secret::new("md5z41d8cd98f00b204e9800998ecf8427e").kind(),
            PasswordKind::Plain
        );
    }

    #[test]
    fn well_formed_verifier_passes() {
        assert_eq!(check_scram_verifier(VERIFIER), Ok(()));
    }

    #[test]
    fn malformed_verifiers_name_the_bad_part() {
        let cases = [
            ("SCRAM-SHA-256$4096:c2FsdA==", "'$' between"),
            (
                "SCRAM-SHA-256$4096c2FsdA==$a:b",
                "between iterations and salt",
            ),
            ("SCRAM-SHA-256$0:c2FsdA==$a:b", "iteration count \"0\""),
            ("SCRAM-SHA-256$x:c2FsdA==$a:b", "iteration count \"x\""),
            ("SCRAM-SHA-256$4096:!!$a:b", "salt is not valid base64"),
            ("SCRAM-SHA-256$4096:$a:b", "salt is empty"),
            (
                "SCRAM-SHA-256$4096:c2FsdA==$ab",
                "between storedkey and serverkey",
            ),
            (
                "SCRAM-SHA-256$4096:c2FsdA==$!!:AA==",
                "storedkey is not valid base64",
            ),
            (
                "SCRAM-SHA-256$4096:c2FsdA==$AA==:AA==",
                "storedkey decodes to 1 bytes",
            ),
        ];
        for (input, want) in cases {
            let err = check_scram_verifier(input).expect_err(input);
            assert!(err.contains(want), "{input}: {err:?} lacks {want:?}");
        }
    }
}
