//! ecr-sync: pull-based replication of container images between OCI registries, built for
//! Amazon ECR fleets of thousands of repositories.
//!
//! # Layout
//! - [`aws_error`] — one readable line for any AWS SDK error.
//! - [`config`] — the user's config (the seed's schema plus documented additions), validated in two
//!   phases, loaded from a file or S3.
//! - [`tag_filter`] — the seed's tag glob table.
//! - [`digest`] — `sha256:` digests and streaming verification.
//! - [`manifest`] — media types and what a manifest references.
//! - [`registry`] — the OCI distribution API client: auth, retries, shared per-host backoff.
//! - [`ecr`] — the ECR control plane: tokens, repositories, bulk tag listing.
//! - [`retry`] — the retry policy.
//! - [`copy`] — the copy engine: pure decisions, image copy, single-flight blob moves.
//! - [`job`] — the copy job and its stable id.
//! - [`ledger`] — the one-machine SQLite ledger.
//! - [`fleet`] — the distributed path: planner → SQS → workers → DynamoDB ledger, and operations.
//! - [`registries`] — registry clients per host, made from the config's settings.
//! - [`scan`] — reading both sides of a repository pair: create/skip, list, look up a tag.
//! - [`sync`] — one-machine sync: config → jobs → copies → ledger → report.
#![deny(missing_docs)]

pub mod aws_error;
pub mod config;
pub mod copy;
pub mod digest;
pub mod ecr;
pub mod fleet;
pub mod job;
pub mod ledger;
pub mod manifest;
pub mod registries;
pub mod registry;
pub mod retry;
pub mod scan;
pub mod sync;
pub mod tag_filter;
