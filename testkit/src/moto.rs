//! A moto server from the project's virtualenv on a free loopback port: moto's own server, run
//! through `moto_strict.py` (beside this crate's `Cargo.toml`), which makes it as strict as AWS
//! where moto is laxer — atomic conditional writes in DynamoDB, no message lost by SQS when a
//! send meets a delete, IAM checked as AWS does when enforcement is on. The virtualenv is
//! `$ECR_SYNC_VENV`, else `.venv` at the workspace root; `scripts/test.sh` creates it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A running moto server, killed on drop.
pub struct MotoProcess {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Child,
}

/// Where `moto_server` is expected.
pub fn moto_binary() -> PathBuf {
    let venv = std::env::var_os("ECR_SYNC_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv"));
    venv.join("bin/moto_server")
}

/// The stand-in's patches to moto, run with the virtualenv's Python (`python -c`), so that a
/// binary built from this crate needs no file beside it.
pub const MOTO_STRICT: &str = include_str!("../moto_strict.py");

impl MotoProcess {
    /// Starts moto and waits until it answers.
    pub async fn start() -> MotoProcess {
        MotoProcess::start_with_env(&[]).await
    }

    /// [`MotoProcess::start`] with extra environment for the server (`MOTO_STRICT_LAX`,
    /// `MOTO_STRICT_WIDEN_MS`: see `moto_strict.py`).
    pub async fn start_with_env(env: &[(&str, &str)]) -> MotoProcess {
        let bin = moto_binary();
        assert!(
            bin.exists(),
            "{} is missing: run scripts/test.sh (it creates the virtualenv with moto[server])",
            bin.display()
        );
        let python = bin.with_file_name("python");
        let (child, port) = crate::spawn_listening("moto", 60, |port| {
            Command::new(&python)
                .args([
                    "-c",
                    MOTO_STRICT,
                    "-H",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                ])
                .envs(env.iter().copied())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start moto_server")
        })
        .await;
        let m = MotoProcess { port, child };
        crate::wait_until_up(&m.endpoint(), 60, &reqwest::Client::new()).await;
        m
    }

    /// The server's process id (for its CPU time in benchmarks).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Environment for a child process to use this moto with dummy credentials.
    pub fn env(&self) -> Vec<(String, String)> {
        let e = self.endpoint();
        vec![
            ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
            ("AWS_ENDPOINT_URL".into(), e.clone()),
            ("AWS_ENDPOINT_URL_ECR".into(), e.clone()),
            ("AWS_ENDPOINT_URL_S3".into(), e),
        ]
    }
}

impl Drop for MotoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
