//! Real local servers for ecr-sync's tests, demo and benchmarks — no mocks:
//!
//! - [`registry`] — Debian's `docker-registry` (CNCF distribution) on a free loopback port, plain
//!   TLS, htpasswd or token auth, stopped when dropped.
//! - [`moto`] — a moto server (SQS, DynamoDB, S3, ECR control plane) from the project's virtualenv.
//! - [`ecr`] — a stand-in for an ECR registry host: moto's control plane, a registry for the
//!   bytes, and a proxy applying ECR's rules (auth with expiring tokens, immutability, rate
//!   limits, part sizes, redirects to an S3 stand-in, no mounts, referrers API).
//! - [`proxy`] — a counting, fault-injecting HTTP proxy to put between the engine and a registry.
//! - [`lambda_api`] — a local Lambda Runtime API, to run a function binary as Lambda does.
//! - [`esm`] — an SQS event source mapping: feeds a queue's messages to the function behind
//!   [`lambda_api`] in batches and deletes what it did not report failed, as Lambda does.
//! - [`token`] — a bearer-token server for a registry run with `auth: token`.
//! - [`seed`] — pushes synthetic images (random layers, multi-arch indexes, big blobs) straight
//!   through the distribution API, independently of the engine under test.

pub mod artifacts;
pub mod awsproxy;
pub mod ecr;
pub mod esm;
pub mod events;
pub mod lambda_api;
pub mod moto;
pub mod proxy;
pub mod registry;
pub mod seed;
pub mod token;

use std::net::TcpListener;
use std::path::Path;

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

/// Runs `openssl ARGS` in `dir`, panicking with its stderr when it fails.
pub(crate) fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `openssl req` with a new P-256 key in `NAME.key`: a self-signed certificate `NAME.pem` (valid
/// 3 days) when `self_signed`, else a signing request `NAME.csr`; `extra` adds arguments.
pub(crate) fn openssl_new_p256(
    dir: &Path,
    name: &str,
    subject: &str,
    self_signed: bool,
    extra: &[&str],
) {
    let (key, out) = (
        format!("{name}.key"),
        format!("{name}.{}", if self_signed { "pem" } else { "csr" }),
    );
    let mut args = vec!["req"];
    if self_signed {
        args.extend(["-x509", "-days", "3"]);
    }
    args.extend([
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &out,
        "-subj",
        subject,
    ]);
    args.extend(extra);
    openssl(dir, &args);
}

/// Serves HTTP/1.1 on `listener`, one task per connection, until the returned task is aborted.
pub(crate) fn serve<F, Fut, B, E>(
    listener: tokio::net::TcpListener,
    handle: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<hyper::Response<B>, E>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handle = handle.clone();
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(
                        hyper_util::rt::TokioIo::new(stream),
                        hyper::service::service_fn(handle),
                    )
                    .await;
            });
        }
    })
}
