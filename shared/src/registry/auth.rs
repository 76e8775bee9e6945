//! Registry authentication: the `WWW-Authenticate` challenge, Basic credentials, the bearer-token
//! flow (tokens cached per scope until shortly before they expire), and credentials that come
//! from a [`TokenSource`] (ECR tokens, implemented next to the ECR API — this module knows no
//! AWS).

use super::error::{from_response, transport, ErrorKind, RegistryError};
use base64::Engine;
use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where a registry's credentials come from.
pub enum Credentials {
    /// No credentials: anonymous access, or an anonymous bearer token.
    Anonymous,
    /// A fixed username and password (Basic, or exchanged for bearer tokens).
    Basic {
        /// The username.
        username: String,
        /// The password or access token.
        password: String,
    },
    /// Basic credentials that change over time, from a token source (ECR's
    /// `GetAuthorizationToken`); sent without waiting for a challenge.
    Tokens(Arc<dyn TokenSource>),
}

/// Hands out Basic credentials that expire (ECR authorization tokens).
pub trait TokenSource: Send + Sync {
    /// Current credentials, fetching new ones when the cached ones are near their end.
    fn basic(&self) -> BoxFuture<'_, Result<(String, String), RegistryError>>;
    /// Forgets the cached credentials (the registry refused them).
    fn invalidate(&self);
}

/// How a registry wants requests authorized, learned from its `/v2/` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scheme {
    None,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` header into a scheme. Unknown schemes read as `None`.
pub(crate) fn parse_challenge(header: &str) -> Scheme {
    let header = header.trim();
    let (name, params) = header.split_once(' ').unwrap_or((header, ""));
    if name.eq_ignore_ascii_case("basic") {
        return Scheme::Basic;
    }
    if !name.eq_ignore_ascii_case("bearer") {
        return Scheme::None;
    }
    let mut realm = None;
    let mut service = None;
    for (k, v) in parse_params(params) {
        match k.to_ascii_lowercase().as_str() {
            "realm" => realm = Some(v),
            "service" => service = Some(v),
            _ => {}
        }
    }
    match realm {
        Some(realm) => Scheme::Bearer { realm, service },
        None => Scheme::None,
    }
}

/// `k="v", k2=v2` pairs; quoted values may contain commas.
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim().trim_start_matches(',').trim().to_string();
        let after = after.trim_start();
        let (value, remaining) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (q[..end].to_string(), &q[end + 1..]),
                None => (q.to_string(), ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (after[..end].trim().to_string(), &after[end..]),
                None => (after.trim().to_string(), ""),
            }
        };
        out.push((key, value));
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// Bearer tokens are refreshed this long before the expiry the token server states.
const TOKEN_EARLY_REFRESH: Duration = Duration::from_secs(30);
/// The Docker token spec's default lifetime when the server states none.
const TOKEN_DEFAULT_LIFETIME: Duration = Duration::from_secs(60);

/// Per-registry authorization state.
pub(crate) struct Authorizer {
    pub(crate) credentials: Credentials,
    pub(crate) scheme: tokio::sync::OnceCell<Mutex<Scheme>>,
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    /// One token fetch per scope at a time: concurrent requests that miss the cache wait for
    /// the first fetch instead of each asking the token server.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Authorizer {
    pub(crate) fn new(credentials: Credentials) -> Self {
        Authorizer {
            credentials,
            scheme: tokio::sync::OnceCell::new(),
            tokens: Mutex::new(HashMap::new()),
            fetching: Mutex::new(HashMap::new()),
        }
    }

    async fn basic(&self) -> Result<Option<(String, String)>, RegistryError> {
        match &self.credentials {
            Credentials::Anonymous => Ok(None),
            Credentials::Basic { username, password } => {
                Ok(Some((username.clone(), password.clone())))
            }
            Credentials::Tokens(tokens) => tokens.basic().await.map(Some),
        }
    }

    pub(crate) fn current_scheme(&self) -> Option<Scheme> {
        self.scheme.get().map(|s| s.lock().unwrap().clone())
    }

    pub(crate) fn set_scheme(&self, scheme: Scheme) {
        if let Some(s) = self.scheme.get() {
            *s.lock().unwrap() = scheme;
        } else {
            let _ = self.scheme.set(Mutex::new(scheme));
        }
    }

    /// Drops cached tokens and ECR credentials after a 401, so the next try fetches fresh ones.
    pub(crate) fn invalidate(&self, scope: &str) {
        self.tokens.lock().unwrap().remove(scope);
        if let Credentials::Tokens(t) = &self.credentials {
            t.invalidate();
        }
    }

    /// The `Authorization` header value for a request needing `scope`
    /// (`repository:name:pull,push` — several separated by spaces), if any.
    pub(crate) async fn header(
        &self,
        http: &reqwest::Client,
        scope: &str,
    ) -> Result<Option<String>, RegistryError> {
        match self.current_scheme().unwrap_or(Scheme::None) {
            Scheme::None => Ok(None),
            Scheme::Basic => Ok(self.basic().await?.map(|(u, p)| basic_header(&u, &p))),
            Scheme::Bearer { realm, service } => {
                if let Some(header) = self.cached_token(scope) {
                    return Ok(Some(header));
                }
                let gate = self
                    .fetching
                    .lock()
                    .unwrap()
                    .entry(scope.to_string())
                    .or_default()
                    .clone();
                let _turn = gate.lock().await;
                if let Some(header) = self.cached_token(scope) {
                    return Ok(Some(header));
                }
                let (token, lifetime) = self
                    .fetch_token(http, &realm, service.as_deref(), scope)
                    .await?;
                let until = Instant::now() + lifetime.saturating_sub(TOKEN_EARLY_REFRESH);
                self.tokens
                    .lock()
                    .unwrap()
                    .insert(scope.to_string(), (token.clone(), until));
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    /// A cached, unexpired token for `scope`, as a header value.
    fn cached_token(&self, scope: &str) -> Option<String> {
        let tokens = self.tokens.lock().unwrap();
        let (token, until) = tokens.get(scope)?;
        (Instant::now() < *until).then(|| format!("Bearer {token}"))
    }

    async fn fetch_token(
        &self,
        http: &reqwest::Client,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<(String, Duration), RegistryError> {
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(s) = service {
            query.push(("service", s));
        }
        for s in scope.split(' ').filter(|s| !s.is_empty()) {
            query.push(("scope", s));
        }
        let mut req = http.get(realm).query(&query);
        if let Some((u, p)) = self.basic().await? {
            req = req.header(reqwest::header::AUTHORIZATION, basic_header(&u, &p));
        }
        let op = "GET token";
        let resp = req.send().await.map_err(|e| transport(op, realm, e))?;
        if !resp.status().is_success() {
            return Err(from_response(op, realm, resp).await);
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let body = resp.bytes().await.map_err(|e| transport(op, realm, e))?;
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|e| RegistryError {
            op,
            url: realm.to_string(),
            kind: ErrorKind::Protocol(format!("token response is not JSON: {e}")),
        })?;
        let token = parsed
            .token
            .or(parsed.access_token)
            .ok_or_else(|| RegistryError {
                op,
                url: realm.to_string(),
                kind: ErrorKind::Protocol("token response holds no token".into()),
            })?;
        let lifetime = parsed
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(TOKEN_DEFAULT_LIFETIME);
        Ok((token, lifetime))
    }
}

pub(crate) fn basic_header(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_parsed() {
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Scheme::Basic
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull,push""#
            ),
            Scheme::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into())
            }
        );
        assert_eq!(
            parse_challenge("Bearer realm=https://x/token"),
            Scheme::Bearer {
                realm: "https://x/token".into(),
                service: None
            }
        );
        assert_eq!(parse_challenge("Negotiate"), Scheme::None);
    }

    #[test]
    fn basic_header_is_base64_of_user_colon_password() {
        assert_eq!(basic_header("AWS", "pw"), "Basic QVdTOnB3");
    }
}
