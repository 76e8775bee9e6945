//! A `docker-registry` process on 127.0.0.1 with its own config, storage and (optionally) TLS and
//! htpasswd auth. Killed and reaped on drop — exactly the process started, nothing else.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// Options for a registry.
#[derive(Debug, Default, Clone)]
pub struct RegistryOpts {
    /// Serve HTTPS with a fresh CA (see [`RegistryProcess::ca_file`]).
    pub tls: bool,
    /// Require Basic auth with this user and password (bcrypt htpasswd).
    pub htpasswd: Option<(String, String)>,
    /// Write an access log to `access.log` in the registry's directory.
    pub access_log: bool,
    /// Require bearer tokens from this token server (see [`crate::token`]).
    pub token: Option<crate::token::TokenAuth>,
}

/// A running registry.
pub struct RegistryProcess {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
    tls: bool,
}

/// Makes a CA and a server certificate for 127.0.0.1/localhost in `dir` with the openssl CLI.
fn make_certs(dir: &Path) {
    let ext = dir.join("ext.cnf");
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n").unwrap();
    crate::openssl_new_p256(
        dir,
        "ca",
        "/CN=ecr-sync test CA",
        true,
        &[
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    crate::openssl_new_p256(dir, "server", "/CN=127.0.0.1", false, &[]);
    crate::openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "3",
            "-extfile",
            "ext.cnf",
        ],
    );
}

impl RegistryProcess {
    /// Starts a registry and waits until it answers.
    pub async fn start(opts: RegistryOpts) -> RegistryProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        let (child, port) = crate::spawn_listening("docker-registry", 20, |port| {
            Self::spawn(dir.path(), &opts, port)
        })
        .await;
        let reg = RegistryProcess {
            port,
            child,
            dir,
            tls: opts.tls,
        };
        let client = reg.client();
        crate::wait_until_up(&format!("{}/v2/", reg.url()), 20, &client).await;
        reg
    }

    /// Writes the config for `port` into `dir` and starts `docker-registry serve` on it.
    fn spawn(dir: &Path, opts: &RegistryOpts, port: u16) -> std::process::Child {
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: {}\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: ecr-sync-test\n",
            !opts.access_log,
            dir.join("data").display()
        );
        if opts.tls && !dir.join("server.pem").exists() {
            make_certs(dir);
        }
        if opts.tls {
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                dir.join("server.pem").display(),
                dir.join("server.key").display()
            ));
        }
        if let Some((user, pass)) = &opts.htpasswd {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, pass])
                .output()
                .expect("htpasswd (apache2-utils) is installed");
            assert!(out.status.success());
            std::fs::write(dir.join("htpasswd"), out.stdout).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: ecr-sync-test\n    path: {}\n",
                dir.join("htpasswd").display()
            ));
        }
        if let Some(t) = &opts.token {
            config.push_str(&format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                t.realm,
                crate::token::SERVICE,
                crate::token::ISSUER,
                t.cert_file.display()
            ));
        }
        std::fs::write(dir.join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.join("access.log")).unwrap();
        Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry is installed (apt-get install docker-registry)")
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http(s)://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!(
            "{}://127.0.0.1:{}",
            if self.tls { "https" } else { "http" },
            self.port
        )
    }

    /// The CA certificate (PEM) a client must trust, for TLS registries.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The registry's stdout/stderr (access log when enabled).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// The digest `repo:tag` points at, read straight from the registry (None when absent).
    pub async fn digest(&self, repo: &str, tag: &str) -> Option<String> {
        let resp = self
            .client()
            .head(format!("{}/v2/{repo}/manifests/{tag}", self.url()))
            .header("Accept", crate::seed::MANIFEST_ACCEPT)
            .send()
            .await
            .unwrap();
        if !resp.status().is_success() {
            return None;
        }
        resp.headers()
            .get("docker-content-digest")
            .map(|v| v.to_str().unwrap().to_string())
    }

    /// A reqwest client that trusts this registry's CA.
    pub fn client(&self) -> reqwest::Client {
        let mut b = reqwest::Client::builder();
        if self.tls {
            let pem = std::fs::read(self.ca_file()).unwrap();
            b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
        }
        b.build().unwrap()
    }
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
