//! Faceoff: compare AI image models side by side.
//!
//! One crate, modules by domain. `main.rs` only parses the command line ([`cli`]); everything
//! else lives here so the tests build the very same [`app::app`].

pub mod accounts;
pub mod app;
pub mod arena;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod db;
pub mod jobs;
pub mod ledger;
pub mod mail;
pub mod payments;
pub mod providers;
pub mod runs;
pub mod server;
pub mod sharing;
pub mod state;
pub mod storage;
pub mod telemetry;
pub mod web;
pub mod webhooks;

pub use app::app;
pub use state::AppState;
