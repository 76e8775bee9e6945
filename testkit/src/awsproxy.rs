//! A counting, fault-injecting proxy in front of moto (the AWS endpoint). It names every call
//! by its operation — the `X-Amz-Target` header of the JSON protocols (`AmazonSQS.SendMessage`,
//! `DynamoDB_20120810.UpdateItem`) or the `Action` parameter of the query protocol — counts
//! calls and DynamoDB item writes per operation, and can lose or delay the response to chosen
//! calls:
//! - **lose**: the call reaches moto and takes effect, then the connection is closed without an
//!   answer — the "did it happen?" crash point of a timeout after the service committed;
//! - **stall**: the call is held before it reaches moto, as on a stalled connection;
//! - **fail**: the call does not reach moto and gets a given AWS error instead.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What to do to the responses of one operation.
#[derive(Debug, Clone, Default)]
pub struct OpFault {
    /// Lose the response of the calls with these 1-based numbers (counted per operation from
    /// when the fault was set).
    pub lose: Vec<u64>,
    /// Hold every call of the operation this long before passing it on (a stalled
    /// connection: the service has not seen the call yet).
    pub stall: Duration,
    /// Answer the calls with these 1-based numbers with [`OpFault::error`] instead of passing
    /// them on (the call does not happen).
    pub fail: Vec<u64>,
    /// The error those calls get: HTTP status and AWS error code (JSON protocol shape, e.g.
    /// `(400, "ReceiptHandleIsInvalid")`).
    pub error: Option<(u16, String)>,
}

/// Calls and item writes seen, per operation name (`SendMessage`, `UpdateItem`, …).
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// Calls per operation.
    pub calls: HashMap<String, u64>,
    /// DynamoDB items written per operation (`BatchWriteItem` counts its items).
    pub item_writes: HashMap<String, u64>,
}

impl Counts {
    /// Calls of one operation.
    pub fn calls(&self, op: &str) -> u64 {
        self.calls.get(op).copied().unwrap_or(0)
    }

    /// Calls of every operation of a service (`AmazonSQS`, `DynamoDB`): named by target prefix.
    pub fn service_calls(&self, ops: &[&str]) -> u64 {
        ops.iter().map(|op| self.calls(op)).sum()
    }

    /// DynamoDB items written in all.
    pub fn dynamodb_item_writes(&self) -> u64 {
        self.item_writes.values().sum()
    }
}

/// SQS operations (to total SQS requests).
pub const SQS_OPS: [&str; 12] = [
    "SendMessage",
    "SendMessageBatch",
    "ReceiveMessage",
    "DeleteMessage",
    "DeleteMessageBatch",
    "ChangeMessageVisibility",
    "ChangeMessageVisibilityBatch",
    "GetQueueAttributes",
    "GetQueueUrl",
    "CreateQueue",
    "SetQueueAttributes",
    "PurgeQueue",
];

struct State {
    upstream: String,
    lost: std::sync::atomic::AtomicU64,
    counts: Mutex<Counts>,
    faults: Mutex<HashMap<String, (OpFault, u64)>>,
    client: reqwest::Client,
}

/// A running AWS proxy; stops when dropped.
pub struct AwsProxy {
    /// Its port on 127.0.0.1.
    pub port: u16,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

type Body = BoxBody<Bytes, std::io::Error>;

/// The operation a request calls, and the DynamoDB items it writes.
fn operation(headers: &hyper::HeaderMap, body: &[u8]) -> (String, u64) {
    let op = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.rsplit('.').next())
        .map(str::to_string)
        .or_else(|| {
            // Query protocol: Action=... in the form body.
            std::str::from_utf8(body).ok().and_then(|form| {
                form.split('&')
                    .find_map(|kv| kv.strip_prefix("Action="))
                    .map(str::to_string)
            })
        })
        .unwrap_or_else(|| "unknown".to_string());
    let writes = match op.as_str() {
        "PutItem" | "UpdateItem" | "DeleteItem" => 1,
        "BatchWriteItem" => serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| {
                v["RequestItems"].as_object().map(|tables| {
                    tables
                        .values()
                        .filter_map(|r| r.as_array())
                        .map(|r| r.len() as u64)
                        .sum()
                })
            })
            .unwrap_or(0),
        "TransactWriteItems" => serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["TransactItems"].as_array().map(|a| a.len() as u64))
            .unwrap_or(0),
        _ => 0,
    };
    (op, writes)
}

async fn handle(req: Request<Incoming>, st: Arc<State>) -> Result<Response<Body>, std::io::Error> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let (op, writes) = operation(&parts.headers, &body);
    {
        let mut c = st.counts.lock().unwrap();
        *c.calls.entry(op.clone()).or_insert(0) += 1;
        if writes > 0 {
            *c.item_writes.entry(op.clone()).or_insert(0) += writes;
        }
    }
    let (lose, stall, fail) = {
        let mut faults = st.faults.lock().unwrap();
        match faults.get_mut(&op) {
            Some((fault, seen)) => {
                *seen += 1;
                let fail = fault.error.clone().filter(|_| fault.fail.contains(seen));
                (fault.lose.contains(seen), fault.stall, fail)
            }
            None => (false, Duration::ZERO, None),
        }
    };
    if let Some((status, code)) = fail {
        st.lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let body = serde_json::json!({
            "__type": format!("com.amazonaws.sqs#{code}"),
            "message": format!("injected {code}"),
        })
        .to_string();
        return Ok(Response::builder()
            .status(status)
            .header("content-type", "application/x-amz-json-1.0")
            .header("x-amzn-query-error", format!("{code};Sender"))
            .body(
                Full::new(Bytes::from(body))
                    .map_err(|never| match never {})
                    .boxed(),
            )
            .unwrap());
    }
    if !stall.is_zero() {
        tokio::time::sleep(stall).await;
    }
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let mut rb = st
        .client
        .request(parts.method.clone(), format!("{}{pq}", st.upstream));
    for (k, v) in &parts.headers {
        if !matches!(
            k.as_str(),
            "host" | "connection" | "transfer-encoding" | "keep-alive" | "content-length"
        ) {
            rb = rb.header(k, v);
        }
    }
    let resp = rb.body(body).send().await.map_err(std::io::Error::other)?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.map_err(std::io::Error::other)?;
    if lose {
        st.lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Err(std::io::Error::other(format!(
            "injected: the response to {op} is lost"
        )));
    }
    let mut out = Response::builder().status(status);
    for (k, v) in &headers {
        if !matches!(
            k.as_str(),
            "connection" | "transfer-encoding" | "keep-alive" | "content-length"
        ) {
            out = out.header(k, v);
        }
    }
    Ok(out
        .body(Full::new(bytes).map_err(|never| match never {}).boxed())
        .unwrap())
}

impl AwsProxy {
    /// Starts a proxy in front of `upstream` (moto's `http://127.0.0.1:PORT`).
    pub async fn start(upstream: &str) -> AwsProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State {
            upstream: upstream.trim_end_matches('/').to_string(),
            lost: Default::default(),
            counts: Mutex::new(Counts::default()),
            faults: Mutex::new(HashMap::new()),
            client: reqwest::Client::new(),
        });
        let st = state.clone();
        let task = crate::serve(listener, move |req| handle(req, st.clone()));
        AwsProxy { port, state, task }
    }

    /// `http://127.0.0.1:PORT`, to use as the AWS endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        self.state.counts.lock().unwrap().clone()
    }

    /// Responses lost or failed so far (by [`OpFault::lose`] and [`OpFault::fail`]).
    pub fn lost(&self) -> u64 {
        self.state.lost.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Forgets the counts so far.
    pub fn reset_counts(&self) {
        *self.state.counts.lock().unwrap() = Counts::default();
    }

    /// Sets the fault for operation `op` (e.g. `UpdateItem`), counting its calls from now.
    pub fn set_fault(&self, op: &str, fault: OpFault) {
        self.state
            .faults
            .lock()
            .unwrap()
            .insert(op.to_string(), (fault, 0));
    }
}

impl Drop for AwsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
