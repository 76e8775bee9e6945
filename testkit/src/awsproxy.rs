//! A counting, fault-injecting proxy in front of moto (the AWS endpoint). It names every call
//! by its operation — the `X-Amz-Target` header of the JSON protocols (`AmazonSQS.SendMessage`,
//! `DynamoDB_20120810.UpdateItem`) or the `Action` parameter of the query protocol — counts
//! calls and DynamoDB item writes per operation, and can lose or delay the response to chosen
//! calls:
//! - **lose**: the call reaches moto and takes effect, then the connection is closed without an
//!   answer — the "did it happen?" crash point of a timeout after the service committed;
//! - **stall**: the call is held before it reaches moto, as on a stalled connection;
//! - **fail**: the call does not reach moto and gets a given AWS error instead — or, for a
//!   batch call with [`OpFault::entries`], a 200 answer in which every entry failed with it, as
//!   SQS answers a batch whose receipt handles went stale.
//!
//! Index writes are counted too: an item written with the index key attribute
//! ([`INDEX_KEY`]) is in the index, and every later write to it (it is remembered by key) costs
//! one index write as well — DynamoDB's bill for a global secondary index that projects all
//! attributes.

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
    /// For batch operations: answer the failed calls with HTTP 200 and every entry of the
    /// request failed with [`OpFault::error`]'s code, instead of failing the whole call.
    pub entries: bool,
}

/// Random faults on every call, for chaos runs: each call independently, one in `error_every`
/// is answered 500 `InternalFailure` without reaching the service, one in `throttle_every` 400
/// `ThrottlingException` (not reaching it either), one in `stall_every` is held for `stall`
/// before it is passed on, and one in `lose_every` reaches it and loses its answer. `0`
/// disables one.
#[derive(Debug, Clone, Copy, Default)]
pub struct Chaos {
    /// Answer 500 (the call does not happen).
    pub error_every: u64,
    /// Pass the call on, then drop the connection (the call happened).
    pub lose_every: u64,
    /// Answer 400 `ThrottlingException` (the call does not happen).
    pub throttle_every: u64,
    /// Hold the call for `stall`, then pass it on (if the caller still waits).
    pub stall_every: u64,
    /// How long a stalled call is held.
    pub stall: Duration,
}

/// What the chaos dice chose for one call.
#[derive(Debug, Clone, Copy, Default)]
struct Roll {
    fail: bool,
    throttle: bool,
    stall: Option<Duration>,
    lose: bool,
}

/// The attribute that puts a DynamoDB item in the ledger's index (`gsi1pk`).
pub const INDEX_KEY: &str = "gsi1pk";

/// Calls and item writes seen, per operation name (`SendMessage`, `UpdateItem`, …).
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// Calls per operation.
    pub calls: HashMap<String, u64>,
    /// DynamoDB items written per operation (`BatchWriteItem` counts its items).
    pub item_writes: HashMap<String, u64>,
    /// DynamoDB index entries written per operation (see the module docs).
    pub index_writes: HashMap<String, u64>,
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

    /// DynamoDB index entries written in all.
    pub fn dynamodb_index_writes(&self) -> u64 {
        self.index_writes.values().sum()
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
    /// Keys (`pk`, `sk`) of the items that are in the index.
    indexed: Mutex<std::collections::HashSet<(String, String)>>,
    faults: Mutex<HashMap<String, (OpFault, u64)>>,
    chaos: Mutex<(Chaos, fastrand::Rng)>,
    chaos_injected: std::sync::atomic::AtomicU64,
    client: reqwest::Client,
}

impl State {
    /// Rolls the chaos dice for one call (at most one fault).
    fn roll(&self) -> Roll {
        let mut guard = self.chaos.lock().unwrap();
        let (chaos, rng) = &mut *guard;
        let mut hit = |every: u64| every > 0 && rng.u64(..every) == 0;
        let mut roll = Roll::default();
        if hit(chaos.error_every) {
            roll.fail = true;
        } else if hit(chaos.throttle_every) {
            roll.throttle = true;
        } else if hit(chaos.stall_every) {
            roll.stall = Some(chaos.stall);
        } else if hit(chaos.lose_every) {
            roll.lose = true;
        } else {
            return roll;
        }
        self.chaos_injected
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        roll
    }
}

/// A running AWS proxy; stops when dropped.
pub struct AwsProxy {
    /// Its port on 127.0.0.1.
    pub port: u16,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

type Body = BoxBody<Bytes, std::io::Error>;

/// The operation a request calls (from `X-Amz-Target`, or the query protocol's `Action`).
fn operation(headers: &hyper::HeaderMap, body: &[u8]) -> String {
    headers
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
        .unwrap_or_else(|| "unknown".to_string())
}

/// One DynamoDB item a request writes: its key, and whether the write puts the index key on it.
struct ItemWrite {
    key: (String, String),
    sets_index_key: bool,
}

/// The items a DynamoDB write request writes.
fn item_writes(op: &str, body: &[u8]) -> Vec<ItemWrite> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    let key_of = |item: &serde_json::Value| {
        let s = |name: &str| item[name]["S"].as_str().unwrap_or_default().to_string();
        (s("pk"), s("sk"))
    };
    let put = |item: &serde_json::Value| ItemWrite {
        key: key_of(item),
        sets_index_key: item.get(INDEX_KEY).is_some(),
    };
    let update = |req: &serde_json::Value| ItemWrite {
        key: key_of(&req["Key"]),
        sets_index_key: req["ExpressionAttributeNames"]
            .as_object()
            .is_some_and(|names| names.values().any(|n| n == INDEX_KEY)),
    };
    match op {
        "PutItem" => vec![put(&v["Item"])],
        "UpdateItem" | "DeleteItem" => vec![update(&v)],
        "BatchWriteItem" => v["RequestItems"]
            .as_object()
            .into_iter()
            .flat_map(|tables| tables.values())
            .filter_map(|r| r.as_array())
            .flatten()
            .map(|r| match r.get("PutRequest") {
                Some(p) => put(&p["Item"]),
                None => update(&r["DeleteRequest"]),
            })
            .collect(),
        "TransactWriteItems" => v["TransactItems"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| {
                t.get("Put")
                    .map(|p| put(&p["Item"]))
                    .or_else(|| t.get("Update").map(update))
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Counts one call: the call, its item writes, and the index entries those writes touch.
fn count(st: &State, op: &str, body: &[u8]) {
    let writes = item_writes(op, body);
    let mut index = 0;
    {
        let mut indexed = st.indexed.lock().unwrap();
        for w in &writes {
            let was = indexed.contains(&w.key);
            if w.sets_index_key {
                indexed.insert(w.key.clone());
            } else if op == "PutItem" || op == "DeleteItem" {
                // A whole-item write without the index key takes it out of the index.
                indexed.remove(&w.key);
            }
            if was || w.sets_index_key {
                index += 1;
            }
        }
    }
    let mut c = st.counts.lock().unwrap();
    *c.calls.entry(op.to_string()).or_insert(0) += 1;
    if !writes.is_empty() {
        *c.item_writes.entry(op.to_string()).or_insert(0) += writes.len() as u64;
    }
    if index > 0 {
        *c.index_writes.entry(op.to_string()).or_insert(0) += index;
    }
}

/// A 200 answer to a batch request in which every entry failed with `code`.
fn all_entries_failed(body: &[u8], code: &str) -> String {
    let ids: Vec<String> = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v["Entries"].as_array().map(|e| {
                e.iter()
                    .filter_map(|e| e["Id"].as_str().map(str::to_string))
                    .collect()
            })
        })
        .unwrap_or_default();
    serde_json::json!({
        "Successful": [],
        "Failed": ids.iter().map(|id| serde_json::json!({
            "Id": id, "Code": code, "Message": format!("injected {code}"), "SenderFault": true,
        })).collect::<Vec<_>>(),
    })
    .to_string()
}

/// An answer in the AWS JSON protocol's shape, its body still to come.
fn json_answer(status: u16) -> hyper::http::response::Builder {
    Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.0")
}

/// A whole body.
fn full(body: String) -> Body {
    full_bytes(Bytes::from(body))
}

fn full_bytes(body: Bytes) -> Body {
    Full::new(body).map_err(|never| match never {}).boxed()
}

async fn handle(req: Request<Incoming>, st: Arc<State>) -> Result<Response<Body>, std::io::Error> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let op = operation(&parts.headers, &body);
    count(&st, &op, &body);
    let roll = st.roll();
    if roll.fail {
        let body = serde_json::json!({"__type": "InternalFailure", "message": "injected"});
        return Ok(json_answer(500).body(full(body.to_string())).unwrap());
    }
    if roll.throttle {
        let body = serde_json::json!({"__type": "ThrottlingException", "message": "injected"});
        return Ok(json_answer(400)
            .header("x-amzn-query-error", "ThrottlingException;Sender")
            .body(full(body.to_string()))
            .unwrap());
    }
    if let Some(stall) = roll.stall {
        tokio::time::sleep(stall).await;
    }
    let (lose, stall, fail, entries) = {
        let mut faults = st.faults.lock().unwrap();
        match faults.get_mut(&op) {
            Some((fault, seen)) => {
                *seen += 1;
                let fail = fault.error.clone().filter(|_| fault.fail.contains(seen));
                (fault.lose.contains(seen), fault.stall, fail, fault.entries)
            }
            None => (false, Duration::ZERO, None, false),
        }
    };
    let lose = lose || roll.lose;
    if let Some((_, code)) = fail.as_ref().filter(|_| entries) {
        st.lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Ok(json_answer(200)
            .body(full(all_entries_failed(&body, code)))
            .unwrap());
    }
    if let Some((status, code)) = fail {
        st.lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let body = serde_json::json!({
            "__type": format!("com.amazonaws.sqs#{code}"),
            "message": format!("injected {code}"),
        })
        .to_string();
        return Ok(json_answer(status)
            .header("x-amzn-query-error", format!("{code};Sender"))
            .body(full(body))
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
    Ok(out.body(full_bytes(bytes)).unwrap())
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
            indexed: Default::default(),
            faults: Mutex::new(HashMap::new()),
            chaos: Mutex::new((Chaos::default(), fastrand::Rng::with_seed(11))),
            chaos_injected: Default::default(),
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

    /// Random faults on every call from now on ([`Chaos`]).
    pub fn set_chaos(&self, chaos: Chaos) {
        self.state.chaos.lock().unwrap().0 = chaos;
    }

    /// Calls [`Chaos`] failed or lost so far.
    pub fn chaos_injected(&self) -> u64 {
        self.state
            .chaos_injected
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Responses lost or failed so far (by [`OpFault::lose`] and [`OpFault::fail`], and lost
    /// by [`Chaos`]).
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
