//! Client side: one task per client connection, from startup to Terminate.
//!
//! `session` holds the [`Session`](session::Session): its `Phase`
//! (`phase`) and what outlives phases (`Client`). Each other module is one
//! job: `route` (phase changes per request), `decide` (what a request is),
//! `attach` (getting a server), `relay` (frames to it), `response`
//! (replies back), `failover` (losing it), `local` (answered by pgsplit),
//! `reads` and `own` (read-your-writes needs, pgsplit's own settings),
//! `stream` and `large` (large messages passed through unbuffered),
//! `socket` (the client's connection, plaintext or TLS).

mod attach;
mod auth;
mod decide;
mod failover;
mod large;
mod ledger;
mod local;
mod own;
mod phase;
mod reads;
mod relay;
mod response;
mod route;
mod serve;
mod session;
mod socket;
mod startup;
mod state;
mod stream;
mod text;

pub use serve::serve_client;
