//! Full-stack tests: the gateway on port 0, driven over HTTP, in front of a fake provider on another port.
//! One test binary keeps link time down.

#![expect(clippy::unwrap_used, clippy::expect_used, reason = "test setup fails loudly by design")]

mod support;

mod accounts;
mod auto;
mod azure_door;
mod bedrock;
mod browser;
mod cache;
mod chains;
mod chat;
mod cohere;
mod completions;
mod continuation;
mod crash;
mod egress;
mod errors;
mod files;
mod fixtures;
mod gemini_door;
mod hardening;
mod idempotency;
mod lifecycle;
mod media;
mod messages;
mod outage;
mod providers;
mod redis_trouble;
mod regions;
mod reload;
mod rerank;
mod responses;
mod routing;
mod secrets;
mod streaming;
mod tenancy;
mod traces;
mod uploads;
mod vertex;
