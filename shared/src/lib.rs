//! ecr-sync: pull-based replication of container images between OCI registries, built for
//! Amazon ECR fleets of thousands of repositories.
//!
//! # Layout
//! Layers, bottom up; a module imports only from its own layer or those below (checked by
//! reading the `use crate::…` lines):
//!
//! 1. Words and data — [`vocab`] (job states, events, error classes: one spelling each),
//!    [`time`], [`digest`], [`manifest`], [`tag_filter`], [`config`] (parses and validates bytes;
//!    no I/O), [`job`] (the copy job, the planned job, the typed outcome, a repository's plan),
//!    [`retry`] (the retry policy: plain data and one loop), [`fleet::message`] (the job message
//!    format), [`console`] (logging, exit codes).
//! 2. Remote services, one module each — [`registry`] (the OCI distribution API: auth through a
//!    [`registry::TokenSource`], per-host backoff, byte streams; knows no AWS), [`aws`] (the
//!    process's one set of AWS settings, S3 reads), [`ecr`] (the ECR control plane; implements
//!    the token source, so it imports `registry` and never the other way), [`fleet::queue`]
//!    (SQS) and [`fleet::ledger`] (DynamoDB), [`ledger`] (the one-machine SQLite ledger),
//!    [`config_source`] (a config from a file or S3).
//! 3. The job path — [`registries`] (registry clients per host from the config), [`copy`] (the
//!    copy engine: decisions, image copy, single-flight blob moves), [`plan`] (the planning
//!    stream: per repository prepare → list → filter → resolve → compare → a
//!    [`plan::JobSink`]), [`engine`] (run one job → a typed outcome).
//! 4. The two modes — [`sync`] (one machine: the planning stream into a bounded in-process queue,
//!    N runners, SQLite) and [`fleet`] (the planning stream into DynamoDB + SQS, workers, the
//!    dead-letter queue, operator commands, metrics).
#![deny(missing_docs)]

pub mod aws;
pub mod config;
pub mod config_source;
pub mod console;
pub mod copy;
pub mod digest;
pub mod ecr;
pub mod engine;
pub mod fleet;
pub mod job;
pub mod ledger;
pub mod manifest;
pub mod plan;
pub mod registries;
pub mod registry;
pub mod retry;
pub mod sync;
pub mod tag_filter;
pub mod time;
pub mod vocab;
