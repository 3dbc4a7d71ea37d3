//! pgsplit, the PostgreSQL read/write-splitting proxy, as a library: the
//! binary is a thin CLI over [`start`], and tests run the proxy in-process on
//! port 0 against a real cluster.
//!
//! Data path: `app` accepts → `client` (startup, auth, session relay) →
//! `backend` (server connections). `shared` is the state every session sees.

pub mod admin;
mod admission;
mod app;
pub mod backend;
mod budget;
pub mod cancel;
mod client;
mod console;
pub mod demo;
pub mod errors;
pub mod events;
mod functions;
pub mod health;
pub mod http;
mod io;
pub mod lifecycle;
pub mod login;
pub mod metrics;
mod pause;
pub mod reload;
pub mod shared;
pub mod signals;
pub mod tls;
pub mod topology;
mod wire;

pub use app::{listen, start, start_with_listener, ProxyHandle};
