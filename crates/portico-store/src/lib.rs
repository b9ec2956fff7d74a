//! Portico's store: where configuration and admin state live.
//!
//! One [`Store`] serves both backends, SQLite (the embedded default, in WAL mode) and
//! PostgreSQL (for clusters), chosen by URL. The SQL is written in the dialect the two share
//! and runs through sqlx's `Any` driver, so there is one implementation to keep correct.
//!
//! Invariants kept here:
//! - every write runs in one transaction that first bumps the revision, which serialises
//!   writers and tells readers that something changed;
//! - the stored configuration always validates as a whole: a write is checked against
//!   everything else before it commits;
//! - SQL lives only in this crate, always with bind parameters;
//! - every configuration change writes an audit record in its own transaction.

mod access_log;
mod analytics;
mod audit;
mod budgets;
mod entities;
mod error;
mod registry;
mod store;
mod tokens;

pub use access_log::{AccessRecord, AiCallRecord};
pub use analytics::TopBy;
pub use audit::{Actor, AuditEntry, AuditQuery};
pub use budgets::BudgetSpend;
pub use entities::{Entity, Kind, Precondition, Stored, GLOBAL};
pub use error::StoreError;
pub use registry::{now_ms, Instance};
pub use store::{Backend, FileStamp, Heard, Store};
pub use tokens::{AdminToken, NewToken, Role};
