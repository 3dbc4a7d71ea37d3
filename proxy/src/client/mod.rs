//! Client side: one task per client connection, from startup to Terminate.

mod auth;
mod session;
mod startup;

pub use session::serve_client;
