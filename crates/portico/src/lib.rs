//! The `portico` binary's library half: command line, settings, and the wiring of the
//! store, control loop, gateway and admin API. `main.rs` only parses and dispatches.

pub mod app;
pub mod budgets;
pub mod cli;
pub mod commands;
pub mod control;
pub mod logging;
pub mod registry;
pub mod settings;
pub mod traffic_store;

pub use app::{start, Running};
pub use settings::Settings;
