//! Real local servers for ecr-sync's tests, demo and benchmarks — no mocks:
//!
//! - [`registry`] — Debian's `docker-registry` (CNCF distribution) on a free loopback port, plain
//!   TLS, htpasswd or token auth, stopped when dropped.
//! - [`moto`] — a moto server (SQS, DynamoDB, S3, ECR control plane) from the project's virtualenv.
//! - [`proxy`] — a counting, fault-injecting HTTP proxy to put between the engine and a registry.
//! - [`token`] — a bearer-token server for a registry run with `auth: token`.
//! - [`seed`] — pushes synthetic images (random layers, multi-arch indexes, big blobs) straight
//!   through the distribution API, independently of the engine under test.

pub mod moto;
pub mod proxy;
pub mod registry;
pub mod seed;
pub mod token;

use std::net::TcpListener;

/// A free TCP port on 127.0.0.1 (bound and released; good enough for test servers).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `url` until it answers with any HTTP status, or panics after `secs` seconds.
pub async fn wait_until_up(url: &str, secs: u64, client: &reqwest::Client) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if client.get(url).send().await.is_ok() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{url} did not come up within {secs}s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
