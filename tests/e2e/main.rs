//! End-to-end tests: keyledger's real router on real PostgreSQL and SQLite.

mod access;
mod bad_input;
mod concurrency;
mod keys;
mod lifecycle;
mod plans;
mod secrecy;
mod snapshots;
