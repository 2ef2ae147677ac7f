//! Switchyard: a multi-tenant LLM gateway with one OpenAI-compatible endpoint in front of many providers.
//!
//! The request's path, top to bottom: `http` (decode, authenticate) → `routing` (which targets) →
//! `providers` (adapters translate, `providers::exec` does the upstream I/O) → back through `http`
//! (whole or streamed) → `usage` (one record per request). `schema` holds the canonical wire types.

pub mod app;
pub mod bus;
pub mod cli;
pub mod clock;
pub mod config;
pub mod eventstream;
pub mod fake;
pub mod http;
pub mod keys;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod otlp;
pub mod protocols;
pub mod providers;
pub mod response_cache;
pub mod response_store;
pub mod routing;
pub mod schema;
pub mod secret;
pub mod server;
pub mod sse;
pub mod store;
pub mod tenancy;
pub mod usage;
