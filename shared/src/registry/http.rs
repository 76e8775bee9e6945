//! The HTTP clients and TLS settings of one registry.

use super::{error, RegistryError, RegistryOptions};
use std::time::Duration;

/// Waiting for a TCP/TLS connection longer than this means the registry is unreachable for now.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A response (or a chunk of a streamed body) idle this long is a dead connection, not a slow one.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per host: enough for the default job and blob concurrency together.
const POOL_IDLE_PER_HOST: usize = 64;

/// One HTTP client for `opts` with `tls` (from [`tls_config`]), offering HTTP/2 unless
/// `http1_only` (blob bodies).
pub(super) fn http_client(
    opts: &RegistryOptions,
    mut tls: rustls::ClientConfig,
    http1_only: bool,
) -> Result<reqwest::Client, RegistryError> {
    tls.alpn_protocols = if http1_only {
        vec![b"http/1.1".to_vec()]
    } else {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    };
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("ecr-sync/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .pool_max_idle_per_host(POOL_IDLE_PER_HOST)
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::limited(5))
        .use_preconfigured_tls(tls);
    if http1_only {
        builder = builder.http1_only();
    }
    builder
        .build()
        .map_err(|e| error::transport("build client", &opts.base_url, e))
}

/// TLS for one registry: the platform's trusted roots plus the config's `ca_file`, verified by
/// the platform verifier (as reqwest would), with [`tls_provider`]'s crypto.
pub(super) fn tls_config(opts: &RegistryOptions) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let provider = std::sync::Arc::new(tls_provider());
    let extra: Vec<CertificateDer<'static>> = match &opts.ca_pem {
        Some(pem) => CertificateDer::pem_slice_iter(pem)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("bad CA certificate: {e}"))?,
        None => Vec::new(),
    };
    if opts.ca_pem.is_some() && extra.is_empty() {
        return Err("bad CA certificate: no certificate in the file".to_string());
    }
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
            .map_err(|e| format!("cannot set up certificate verification: {e}"))?;
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(verifier))
        .with_no_client_auth())
}

/// The TLS crypto for registry connections: aws-lc's cipher suites (its AVX-512 AES-GCM moves a
/// big layer with less CPU than ring's), and ring for everything that needs randomness (key
/// exchange, the random generator), because aws-lc's generator seeds itself from CPU jitter on
/// first use — measured at a sixth of a warm run's CPU. Registry clients get it through their
/// own TLS settings; other HTTP clients (the AWS SDK's, tests') keep their defaults.
fn tls_provider() -> rustls::crypto::CryptoProvider {
    let ring = rustls::crypto::ring::default_provider();
    rustls::crypto::CryptoProvider {
        cipher_suites: rustls::crypto::aws_lc_rs::default_provider().cipher_suites,
        ..ring
    }
}
