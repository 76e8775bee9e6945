//! The worker as a Lambda function: the real binary, started as the Lambda runtime starts it
//! (`AWS_LAMBDA_RUNTIME_API` pointing at testkit's local Runtime API), fed batches of real SQS
//! messages from an events queue on moto as an event source mapping feeds it, copying between
//! real registries. Testkit's event source mapping, driven one turn at a time by the test,
//! receives up to ten messages, invokes the function with them as an SQS event, and deletes
//! those not reported in `batchItemFailures`.

mod common;

use common::*;
use ecr_sync_testkit::esm::{EventSourceMapping, Turn};
use ecr_sync_testkit::events::events_queue;
use ecr_sync_testkit::lambda_api::{LambdaApi, Outcome};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// The events queue a function is fed from: its own queue, dead-lettering into the fleet's
/// dead-letter queue, as the Terraform module makes it.
struct Events {
    url: String,
    arn: String,
}

impl Events {
    async fn create(stack: &Stack, max_receive_count: u32) -> Events {
        let (url, arn) = events_queue(
            &stack.sqs().await,
            "test-events",
            Duration::from_secs(20),
            &stack.dlq_url,
            max_receive_count,
        )
        .await
        .unwrap();
        Events { url, arn }
    }

    async fn send(&self, stack: &Stack, body: &str) {
        stack
            .sqs()
            .await
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }
}

/// The function: the worker binary under the local Runtime API.
struct Function {
    api: Arc<LambdaApi>,
    child: Child,
    stderr: std::path::PathBuf,
}

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Function {
    /// Starts the binary as Lambda would (its environment, the events queue as its queue),
    /// with `args` as the image's command override would give them.
    async fn start(stack: &Stack, events: &Events, args: &[&str]) -> Function {
        let api = Arc::new(LambdaApi::start().await);
        let stderr = stack.dir.path().join("function.err");
        let child = Command::new(env!("CARGO_BIN_EXE_ecr-sync-worker"))
            .args(args)
            .envs(stack.env())
            .env("ECR_SYNC_QUEUE_URL", &events.url)
            .env("AWS_LAMBDA_RUNTIME_API", api.runtime_api())
            .env("AWS_LAMBDA_FUNCTION_NAME", "test-events")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env(
                "AWS_LAMBDA_LOG_STREAM_NAME",
                "2026/12/03/[$LATEST]0123456789abcdef",
            )
            .env_remove("AWS_PROFILE")
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&stderr).unwrap()))
            .spawn()
            .expect("start ecr-sync-worker");
        Function { api, child, stderr }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// One turn of the event source mapping (testkit's, driven by hand): receives up to ten
    /// messages from `events`, invokes the function with them as an SQS event (allowing it
    /// `timeout`), and deletes what Lambda would delete.
    async fn poll(&self, stack: &Stack, events: &Events, timeout: Duration) -> Turn {
        let mapping = EventSourceMapping::new(
            stack.sqs().await,
            &events.url,
            &events.arn,
            self.api.clone(),
            10,
            timeout,
        );
        let turn = mapping
            .poll_once(Duration::from_secs(1))
            .await
            .unwrap()
            .expect("a message on the events queue");
        if turn.outcome == Outcome::TimedOut {
            panic!("no answer; function log:\n{}", self.stderr());
        }
        turn
    }
}

/// The message ids a turn's response reported in `batchItemFailures`.
fn failures(turn: &Turn) -> Vec<String> {
    if let Some(why) = &turn.batch_failed {
        panic!(
            "the invocation did not answer usably ({why}): {:?}",
            turn.outcome
        );
    }
    turn.reported.clone()
}

fn id_of<'a>(turn: &'a Turn, body: &str) -> &'a str {
    turn.id_of(body).expect("in the batch")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_event_source_mapping_feeds_every_push_to_the_function_and_deletes_it() {
    let stack = Stack::start(5).await;
    let events = Events::create(&stack, 5).await;
    let want = stack.small_images("team/app", 3, 20).await;
    stack.ecr_source_config(&[("team/app", &["v*"])]);
    let function = Function::start(&stack, &events, &[]).await;
    let mapping = EventSourceMapping::start(
        stack.sqs().await,
        &events.url,
        &events.arn,
        function.api.clone(),
        10,
        Duration::from_secs(60),
    );
    for (repo, tag, digest) in &want {
        events.send(&stack, &push_event(repo, tag, digest)).await;
    }
    stack.until_copied(&want, Duration::from_secs(60)).await;
    eventually(Duration::from_secs(20), "the batches deleted", || {
        mapping.counts().deleted == 3
    })
    .await;
    let counts = mapping.counts();
    assert_eq!((counts.records, counts.reported), (3, 0), "{counts:?}");
    assert_eq!(counts.batches_failed + counts.sqs_errors, 0, "{counts:?}");
    assert!(
        (1..=3).contains(&counts.invocations),
        "{counts:?}: {:?}",
        mapping.last_error()
    );
    let turns = mapping.take_turns();
    assert_eq!(turns.len() as u64, counts.invocations);
    assert!(turns.iter().all(|t| t.batch_failed.is_none()), "{turns:?}");
    assert_eq!(stack.depth(&events.url).await, 0);
    let status = stack.planner(&["status", "--json"]).ok().json();
    assert_eq!(status["states"]["succeeded"], 3, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_copies_dead_letters_and_hands_back_each_message_on_its_own() {
    let stack = Stack::start(5).await;
    let events = Events::create(&stack, 5).await;
    let v1 = stack.small_image("team/app", "v1", 4).await;
    let dev = stack.small_image("team/app", "dev", 5).await;
    stack.ecr_source_config(&[("team/app", &["v*"])]);
    let function = Function::start(&stack, &events, &["--config-refresh-seconds", "1"]).await;

    let copied = push_event("team/app", "v1", &v1.digest);
    let uncovered = push_event("team/app", "dev", &dev.digest);
    // A push whose image is not at the source: the job fails for good.
    let missing_digest = format!("sha256:{}", "0".repeat(64));
    let missing = push_event("team/app", "v9", &missing_digest);
    let malformed = "this is not a job".to_string();
    let newer = json!({"v": 99, "run_id": "r"}).to_string();
    for body in [&copied, &uncovered, &missing, &malformed, &newer] {
        events.send(&stack, body).await;
    }
    let turn = function
        .poll(&stack, &events, Duration::from_secs(60))
        .await;
    assert_eq!(turn.messages.len(), 5, "one batch: {:?}", turn.messages);
    // Only the message for a newer worker comes back; Lambda deletes the others.
    assert_eq!(
        failures(&turn),
        vec![id_of(&turn, &newer).to_string()],
        "{}",
        function.stderr()
    );
    assert_eq!(stack.dst_digest("team/app", "v1").await, Some(v1.digest));
    assert_eq!(stack.dst_digest("team/app", "dev").await, None);
    let dlq = stack.dlq();
    let classes: Vec<&str> = dlq
        .iter()
        .map(|m| m["error_class"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        dlq.len(),
        2,
        "the malformed message and the missing image: {dlq:?}"
    );
    assert!(classes.contains(&"bad_message"), "{dlq:?}");
    assert!(classes.contains(&"not_found"), "{dlq:?}");
    let status = stack.planner(&["status", "--json"]).ok().json();
    assert!(
        status["run"]["run_id"]
            .as_str()
            .unwrap()
            .starts_with("events-"),
        "{status}"
    );
    assert_eq!(status["states"]["succeeded"], 1, "{status}");
    assert_eq!(status["states"]["dead"], 1, "{status}");
    // The handed-back message is the only one left, hidden for its retry delay.
    assert_eq!(stack.depth(&events.url).await, 1);
    let log = function.stderr();
    assert!(
        log.contains("lambda-0123456789ab"),
        "named after its environment: {log}"
    );

    // The config is refreshed between invocations, as in the fleet worker: a repository
    // added to it is copied by the next push.
    let other = stack.small_image("team/other", "v1", 6).await;
    stack.ecr_source_config(&[("team/app", &["v*"]), ("team/other", &["v*"])]);
    eventually(Duration::from_secs(20), "the config reload", || {
        function.stderr().contains("config changed")
    })
    .await;
    let pushed = push_event("team/other", "v1", &other.digest);
    events.send(&stack, &pushed).await;
    // The newer-worker message comes back too once its delay passes; poll until the push
    // is copied.
    let mut copied_other = false;
    for _ in 0..5 {
        let turn = function
            .poll(&stack, &events, Duration::from_secs(60))
            .await;
        if let Some(id) = turn.id_of(&pushed) {
            assert!(
                !failures(&turn).contains(&id.to_string()),
                "{}",
                function.stderr()
            );
            copied_other = true;
            break;
        }
    }
    assert!(copied_other, "the push never reached the function");
    assert_eq!(
        stack.dst_digest("team/other", "v1").await,
        Some(other.digest)
    );
}

/// An image `slow/app:v1` behind a source that answers blob GETs only after 20 s (a copy that
/// cannot end within a short invocation), its push event on the events queue, and the function.
async fn slow_push(
    stack: &Stack,
    events: &Events,
) -> (seed::Pushed, proxy::Proxy, Function, String) {
    let image = stack.small_image("slow/app", "v1", 7).await;
    let proxy = proxy::Proxy::start(
        &stack.src.url(),
        proxy::Faults {
            blob_delay: Duration::from_secs(20),
            ..Default::default()
        },
    )
    .await;
    stack.ecr_source_config(&[("slow/app", &["**"])]);
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(stack.dir.path().join("config.json")).unwrap())
            .unwrap();
    config["registries"][ECR_SOURCE]["endpoint"] = json!(format!("http://{}", proxy.host()));
    stack.write_config(&config);
    let function = Function::start(stack, events, &[]).await;
    let body = push_event("slow/app", "v1", &image.digest);
    events.send(stack, &body).await;
    (image, proxy, function, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_still_running_near_the_deadline_is_released_and_finishes_next_time() {
    let stack = Stack::start(5).await;
    let events = Events::create(&stack, 5).await;
    let (image, proxy, function, body) = slow_push(&stack, &events).await;

    // An 8 s invocation: the job is released 2 s before its deadline (a quarter of it).
    let started = std::time::Instant::now();
    let turn = function.poll(&stack, &events, Duration::from_secs(8)).await;
    let took = started.elapsed();
    assert_eq!(
        failures(&turn),
        vec![turn.messages[0].message_id.clone()],
        "{}",
        function.stderr()
    );
    assert!(
        took < Duration::from_secs(8),
        "answered after the deadline: {took:?}"
    );
    let status = stack.planner(&["status", "--json"]).ok().json();
    // Released before it was marked running: the ledger holds nothing of it yet (a job marked
    // running would be back to `queued`); nothing says it ran or ended.
    let states = status["states"].as_object().unwrap();
    assert!(
        states.keys().all(|s| s == "queued"),
        "released, not half-recorded: {status}"
    );
    assert_eq!(stack.dst_digest("slow/app", "v1").await, None);
    let log = function.stderr();
    assert!(log.contains("released to the queue"), "{log}");

    // Visible again at once; with the source fast again the next invocation copies it.
    proxy.set_faults(proxy::Faults::default());
    let turn = function
        .poll(&stack, &events, Duration::from_secs(60))
        .await;
    assert_eq!(turn.messages[0].body, body);
    assert!(failures(&turn).is_empty(), "{}", function.stderr());
    assert_eq!(stack.dst_digest("slow/app", "v1").await, Some(image.digest));
    let status = stack.planner(&["status", "--json"]).ok().json();
    assert_eq!(status["states"]["succeeded"], 1, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_its_last_delivery_a_job_past_the_deadline_is_recorded_dead_not_released() {
    let stack = Stack::start(5).await;
    // One delivery: a release would let SQS move the message to the dead-letter queue with
    // no reason and no ledger record.
    let events = Events::create(&stack, 1).await;
    let (_image, _proxy, function, _) = slow_push(&stack, &events).await;
    let turn = function.poll(&stack, &events, Duration::from_secs(8)).await;
    assert!(failures(&turn).is_empty(), "{}", function.stderr());
    let dlq = stack.dlq();
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert_eq!(dlq[0]["error_class"], "timeout", "{dlq:?}");
    let reason = dlq[0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("the function's timeout"), "{dlq:?}");
    assert_eq!(dlq[0]["source"], format!("{ECR_SOURCE}/slow/app:v1"));
    let status = stack.planner(&["status", "--json"]).ok().json();
    assert_eq!(status["states"]["dead"], 1, "{status}");
    assert_eq!(stack.depth(&events.url).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_that_cannot_start_tells_lambda_why() {
    let stack = Stack::start(5).await;
    let events = Events::create(&stack, 5).await;
    stack.write_config(&json!({"repos": [{"source": "registry.example/app", "tagz": ["v*"]}]}));
    let mut function = Function::start(&stack, &events, &[]).await;
    let status = function.child.wait().unwrap();
    assert_eq!(status.code(), Some(2));
    let error = function.api.init_error().expect("an init error reported");
    let message = error["errorMessage"].as_str().unwrap();
    assert!(message.contains("tagz"), "{error}");
}
