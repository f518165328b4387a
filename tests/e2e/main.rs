//! End-to-end tests: keyledger's real router on real PostgreSQL and SQLite.

mod access;
mod audit;
mod bad_input;
mod chat;
mod concurrency;
mod cost_cap;
mod directory;
mod endpoints;
mod fuzz;
mod gateway;
mod gateway_paths;
mod global_order;
mod keys;
mod lifecycle;
mod material_commits;
mod plans;
mod projections;
mod recovery;
mod replicas;
mod secrecy;
mod snapshots;
mod timeouts;
mod unified;
mod usage;
mod usage_backlog;
mod usage_bounds;
