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

/// A free TCP port on 127.0.0.1, bound and released: another process (or a listener of this
/// one) may take it before the server it is picked for binds it — start servers with
/// [`spawn_listening`], which checks.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a server on a free port — `spawn(port)` starts it — and waits until that very
/// process listens there. A port taken by someone else between the pick and the bind makes
/// the server exit (or never listen) while the other answers in its place, so tests running
/// side by side would talk to each other's servers; then it is stopped and started again on
/// another port. Panics after five tries or when a try does not listen within `secs` seconds.
pub async fn spawn_listening(
    what: &str,
    secs: u64,
    mut spawn: impl FnMut(u16) -> std::process::Child,
) -> (std::process::Child, u16) {
    for _ in 0..5 {
        let port = free_port();
        let mut child = spawn(port);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            if listens(child.id(), port) {
                return (child, port);
            }
            if matches!(child.try_wait(), Ok(Some(_))) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what} did not listen on 127.0.0.1:{port} within {secs}s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("{what} could not get a port of its own in five tries");
}

/// Whether process `pid` holds a socket listening on 127.0.0.1:`port` (Linux: the listening
/// sockets in /proc/net/tcp, by inode, among the process's open files).
fn listens(pid: u32, port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let local = format!("0100007F:{port:04X}");
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > 9 && f[1] == local && f[3] == "0A")
        .map(|f| format!("socket:[{}]", f[9]))
        .collect();
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn a_port_is_told_apart_by_the_process_listening_on_it() {
        let mine = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = mine.local_addr().unwrap().port();
        let mut other = Command::new("sleep").arg("30").spawn().unwrap();
        assert!(listens(std::process::id(), port));
        assert!(!listens(other.id(), port), "answering is not owning");
        other.kill().unwrap();
        other.wait().unwrap();
    }

    #[tokio::test]
    async fn a_server_that_did_not_get_its_port_is_started_again_on_another() {
        let mut tries = Vec::new();
        let (mut child, port) = spawn_listening("a test server", 20, |port| {
            tries.push(port);
            if tries.len() == 1 {
                // Stands for a server whose port was taken: it exits without listening.
                return Command::new("true").spawn().unwrap();
            }
            Command::new("python3")
                .args([
                    "-m",
                    "http.server",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .await;
        assert_eq!(tries.len(), 2);
        assert_eq!(port, tries[1]);
        assert!(listens(child.id(), port));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
