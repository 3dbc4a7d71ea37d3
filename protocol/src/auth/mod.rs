//! Authentication: SCRAM-SHA-256 as the server (checking clients), MD5 both
//! ways, and SCRAM as the client (logging in to backends).
//!
//! The client side is pgsplit's own so that the salted password, the
//! costly part, can be kept between logins; the server side is checked
//! against rust-postgres's client in the tests.

mod channel_binding;
mod md5;
mod scram;
mod scram_client;

pub use self::channel_binding::tls_server_end_point;
pub use self::md5::{md5_hash, md5_response, md5_verify};
pub use self::scram::{
    ScramError, ScramKeys, ScramSecret, ScramServer, SCRAM_SHA_256, SCRAM_SHA_256_PLUS,
};
pub use self::scram_client::{salted_password, ScramClient};

/// Compares secrets in time independent of where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
