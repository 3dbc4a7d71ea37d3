//! Client side: one task per client connection, from startup to Terminate.

mod auth;
mod failover;
mod local;
mod reads;
mod relay;
mod route;
mod session;
mod startup;
mod state;

pub use session::serve_client;
