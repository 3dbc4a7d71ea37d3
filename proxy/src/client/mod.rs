//! Client side: one task per client connection, from startup to Terminate.

mod auth;
mod reads;
mod relay;
mod route;
mod session;
mod startup;
mod state;

pub use session::serve_client;
