//! End-to-end tests: Portico started in-process (or as its binary) on real sockets, with
//! real upstreams and a real store.

mod admin;
mod ai;
mod ai_budgets;
mod ai_cache;
mod ai_prompts;
mod ai_rates;
mod ai_sdk;
mod ai_usage;
mod analytics;
mod audit;
mod auth;
mod balancing;
mod cli;
mod client_wire;
mod config_file;
mod discovery;
mod errors;
mod health;
mod helpers;
mod jwt;
mod observe;
mod protect;
mod proxy;
mod rate_limits;
mod reload;
mod retries;
mod tls;
mod traffic;
mod upstream_wire;
mod websocket;
