//! The worker as a Lambda function: the real binary, started as the Lambda runtime starts it
//! (`AWS_LAMBDA_RUNTIME_API` pointing at testkit's local Runtime API), fed batches of real SQS
//! messages from an events queue on moto as an event source mapping feeds it, copying between
//! real registries. The test plays the event source mapping: it receives up to ten messages,
//! invokes the function with them as an SQS event, and deletes those not reported in
//! `batchItemFailures`.

mod common;

use common::*;
use ecr_sync_testkit::lambda_api::{LambdaApi, Outcome};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The events queue a function is fed from: its own queue, dead-lettering into the fleet's
/// dead-letter queue, as the Terraform module makes it.
struct Events {
    url: String,
    arn: String,
}

impl Events {
    async fn create(stack: &Stack, max_receive_count: u32) -> Events {
        let sqs = stack.sqs().await;
        let dlq_arn = queue_arn(&sqs, &stack.dlq_url).await;
        let redrive = json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count});
        let url = sqs
            .create_queue()
            .queue_name("test-events")
            .attributes(
                aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
                "120",
            )
            .attributes(
                aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy,
                redrive.to_string(),
            )
            .send()
            .await
            .unwrap()
            .queue_url()
            .unwrap()
            .to_string();
        let arn = queue_arn(&sqs, &url).await;
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

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> String {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap();
    out.attributes().unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn].clone()
}

/// The function: the worker binary under the local Runtime API.
struct Function {
    api: LambdaApi,
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
        let api = LambdaApi::start().await;
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

    /// One turn of the event source mapping: receives up to ten messages from `events`,
    /// invokes the function with them (with `timeout`), and deletes the ones it did not
    /// report. Returns the outcome and the batch's message ids, keyed by body.
    async fn poll(
        &self,
        stack: &Stack,
        events: &Events,
        timeout: Duration,
    ) -> (Outcome, Vec<(String, String)>) {
        let sqs = stack.sqs().await;
        let got = sqs
            .receive_message()
            .queue_url(&events.url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap();
        let records: Vec<Value> = got
            .messages()
            .iter()
            .map(|m| record(m, &events.arn))
            .collect();
        assert!(!records.is_empty(), "no message on the events queue");
        let ids: Vec<(String, String)> = got
            .messages()
            .iter()
            .map(|m| (m.body().unwrap().into(), m.message_id().unwrap().into()))
            .collect();
        let request = self.api.invoke(json!({ "Records": records }), timeout);
        let outcome = self
            .api
            .outcome(&request, timeout + Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("no answer; function log:\n{}", self.stderr()));
        let back = failures(&outcome);
        for m in got.messages() {
            if !back.contains(&m.message_id().unwrap().to_string()) {
                sqs.delete_message()
                    .queue_url(&events.url)
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
        (outcome, ids)
    }
}

/// An SQS event record as Lambda builds it from a received message.
fn record(m: &aws_sdk_sqs::types::Message, arn: &str) -> Value {
    let attributes: serde_json::Map<String, Value> = m
        .attributes()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), json!(v)))
        .collect();
    let message_attributes: serde_json::Map<String, Value> = m
        .message_attributes()
        .map(|attrs| {
            attrs
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        json!({"stringValue": v.string_value(), "dataType": v.data_type(),
                           "stringListValues": [], "binaryListValues": []}),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "messageId": m.message_id(), "receiptHandle": m.receipt_handle(), "body": m.body(),
        "attributes": attributes, "messageAttributes": message_attributes,
        "md5OfBody": m.md5_of_body(), "eventSource": "aws:sqs", "eventSourceARN": arn,
        "awsRegion": "us-east-1",
    })
}

/// The message ids a response reports in `batchItemFailures`.
fn failures(outcome: &Outcome) -> Vec<String> {
    let Outcome::Response(response) = outcome else {
        panic!("the invocation did not answer: {outcome:?}");
    };
    response["batchItemFailures"]
        .as_array()
        .unwrap_or_else(|| panic!("no batchItemFailures in {response}"))
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap().to_string())
        .collect()
}

fn id_of<'a>(ids: &'a [(String, String)], body: &str) -> &'a str {
    &ids.iter().find(|(b, _)| b == body).expect("in the batch").1
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
    let (outcome, ids) = function
        .poll(&stack, &events, Duration::from_secs(60))
        .await;
    assert_eq!(ids.len(), 5, "one batch: {ids:?}");
    // Only the message for a newer worker comes back; Lambda deletes the others.
    assert_eq!(
        failures(&outcome),
        vec![id_of(&ids, &newer).to_string()],
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
        let (outcome, ids) = function
            .poll(&stack, &events, Duration::from_secs(60))
            .await;
        if let Some((_, id)) = ids.iter().find(|(b, _)| *b == pushed) {
            assert!(!failures(&outcome).contains(id), "{}", function.stderr());
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
    let (outcome, ids) = function.poll(&stack, &events, Duration::from_secs(8)).await;
    let took = started.elapsed();
    assert_eq!(
        failures(&outcome),
        vec![ids[0].1.clone()],
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
    let (outcome, ids) = function
        .poll(&stack, &events, Duration::from_secs(60))
        .await;
    assert_eq!(ids[0].0, body);
    assert!(failures(&outcome).is_empty(), "{}", function.stderr());
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
    let (outcome, _) = function.poll(&stack, &events, Duration::from_secs(8)).await;
    assert!(failures(&outcome).is_empty(), "{}", function.stderr());
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
