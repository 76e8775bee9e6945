//! A local Lambda Runtime API (the interface a function's runtime polls inside Lambda,
//! `AWS_LAMBDA_RUNTIME_API`), for running a function binary as Lambda would: the test queues
//! invocations with [`LambdaApi::invoke`], the function takes them one at a time with
//! `GET /2018-06-01/runtime/invocation/next` and answers each with `…/{id}/response` or
//! `…/{id}/error`, and the test reads the outcome with [`LambdaApi::outcome`]. As Lambda, it
//! hands the next invocation to a runtime only after the previous one was answered, gives each
//! a deadline (`Lambda-Runtime-Deadline-Ms`; an answer after it counts as a timeout), refuses
//! answers for unknown or already answered request ids (400), and records a runtime's
//! `init/error`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

/// The path prefix of every Runtime API call.
const PREFIX: &str = "/2018-06-01/runtime";

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The function's response (JSON).
    Response(Value),
    /// The function's error report (`errorType`, `errorMessage`).
    Error(Value),
    /// The answer came after the invocation's deadline: Lambda would have stopped the
    /// function and counted a timeout.
    TimedOut,
}

struct Invocation {
    id: String,
    event: Value,
    timeout: Duration,
}

#[derive(Default)]
struct State {
    /// Invocations not yet taken by the runtime.
    queued: Mutex<VecDeque<Invocation>>,
    queued_changed: Notify,
    /// Request ids handed out and not answered yet.
    in_flight: Mutex<HashMap<String, SystemTime>>,
    /// Answers by request id.
    outcomes: Mutex<HashMap<String, Outcome>>,
    answered: Notify,
    init_error: Mutex<Option<Value>>,
    next_id: std::sync::atomic::AtomicU64,
}

/// The running API, stopped when dropped.
pub struct LambdaApi {
    port: u16,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LambdaApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LambdaApi {
    /// Starts the API on a free loopback port.
    pub async fn start() -> LambdaApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State::default());
        let st = state.clone();
        let task = crate::serve(listener, move |req| handle(req, st.clone()));
        LambdaApi { port, state, task }
    }

    /// `127.0.0.1:PORT`, the value of `AWS_LAMBDA_RUNTIME_API` for the function.
    pub fn runtime_api(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Queues an invocation with `event`, which must be answered within `timeout` of being
    /// handed out; returns its request id.
    pub fn invoke(&self, event: Value, timeout: Duration) -> String {
        let n = self
            .state
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("req-{n:06}");
        self.state.queued.lock().unwrap().push_back(Invocation {
            id: id.clone(),
            event,
            timeout,
        });
        self.state.queued_changed.notify_waiters();
        id
    }

    /// The outcome of invocation `id`, waiting up to `wait` for it.
    pub async fn outcome(&self, id: &str, wait: Duration) -> Option<Outcome> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let answered = self.state.answered.notified();
            if let Some(o) = self.state.outcomes.lock().unwrap().get(id) {
                return Some(o.clone());
            }
            if tokio::time::timeout_at(deadline, answered).await.is_err() {
                return None;
            }
        }
    }

    /// What the runtime reported with `init/error`, if it did.
    pub fn init_error(&self) -> Option<Value> {
        self.state.init_error.lock().unwrap().clone()
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

fn answer(status: u16, body: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(
            Full::new(Bytes::from(body.to_string()))
                .map_err(|never| match never {})
                .boxed(),
        )
        .unwrap()
}

async fn handle(req: Request<Incoming>, st: Arc<State>) -> Result<Response<Body>, hyper::Error> {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return Ok(answer(404, serde_json::json!({"errorType": "NotFound"})));
    };
    if method == hyper::Method::GET && rest == "/invocation/next" {
        return Ok(next(&st).await);
    }
    let body = req.into_body().collect().await?.to_bytes();
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if method == hyper::Method::POST && rest == "/init/error" {
        *st.init_error.lock().unwrap() = Some(json);
        return Ok(answer(202, serde_json::json!({"status": "OK"})));
    }
    let ended = rest
        .strip_prefix("/invocation/")
        .and_then(|r| r.rsplit_once('/'));
    match (method, ended) {
        (hyper::Method::POST, Some((id, kind @ ("response" | "error")))) => {
            let Some(deadline) = st.in_flight.lock().unwrap().remove(id) else {
                return Ok(answer(
                    400,
                    serde_json::json!({"errorType": "InvalidRequestID", "errorMessage": format!("no invocation {id} waits for an answer")}),
                ));
            };
            let outcome = if SystemTime::now() > deadline {
                Outcome::TimedOut
            } else if kind == "response" {
                Outcome::Response(json)
            } else {
                Outcome::Error(json)
            };
            st.outcomes.lock().unwrap().insert(id.to_string(), outcome);
            st.answered.notify_waiters();
            Ok(answer(202, serde_json::json!({"status": "OK"})))
        }
        _ => Ok(answer(404, serde_json::json!({"errorType": "NotFound"}))),
    }
}

/// Hands out the next invocation once there is one (a runtime's poll waits as long as it
/// takes).
async fn next(st: &State) -> Response<Body> {
    let inv = loop {
        let changed = st.queued_changed.notified();
        if let Some(inv) = st.queued.lock().unwrap().pop_front() {
            break inv;
        }
        changed.await;
    };
    let deadline = SystemTime::now() + inv.timeout;
    st.in_flight
        .lock()
        .unwrap()
        .insert(inv.id.clone(), deadline);
    let deadline_ms = deadline
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("lambda-runtime-aws-request-id", &inv.id)
        .header("lambda-runtime-deadline-ms", deadline_ms.to_string())
        .header(
            "lambda-runtime-invoked-function-arn",
            "arn:aws:lambda:us-east-1:123456789012:function:ecr-sync-events",
        )
        .header("lambda-runtime-trace-id", format!("Root=1-{}", inv.id))
        .body(
            Full::new(Bytes::from(inv.event.to_string()))
                .map_err(|never| match never {})
                .boxed(),
        )
        .unwrap()
}
