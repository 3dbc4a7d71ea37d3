//! Client side: one task per client connection, from startup to Terminate.

mod attach;
mod auth;
mod failover;
mod local;
mod reads;
mod relay;
mod response;
mod route;
mod session;
mod startup;
mod state;

pub use session::serve_client;
