//! End-to-end tests: Portico started in-process (or as its binary) on real sockets, with
//! real upstreams and a real store.

mod admin;
mod balancing;
mod cli;
mod config_file;
mod discovery;
mod errors;
mod health;
mod helpers;
mod protect;
mod proxy;
mod reload;
mod retries;
mod traffic;
