//! Authentication: SCRAM-SHA-256 as the server (checking clients), MD5 both
//! ways, and SCRAM as the client (logging in to backends).
//!
//! The client side of SCRAM is rust-postgres's implementation, re-exported:
//! it is the one libpq-compatible SCRAM client in the ecosystem and has no I/O.

mod md5;
mod scram;

pub use self::md5::{md5_hash, md5_response, md5_verify};
pub use self::scram::{ScramError, ScramSecret, ScramServer, SCRAM_SHA_256};
pub use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256 as ScramClient};

/// Compares secrets in time independent of where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
