//! The chaos the load test injects, against real moto and a real `docker-registry`: each kind
//! of fault the AWS proxy and the registry proxy roll does what its docs say.

use ecr_sync_testkit::awsproxy::{AwsProxy, Chaos};
use ecr_sync_testkit::moto::MotoProcess;
use ecr_sync_testkit::proxy::{Faults, Proxy};
use ecr_sync_testkit::registry::{RegistryOpts, RegistryProcess};
use std::time::{Duration, Instant};

/// One SQS call in the JSON protocol through `endpoint`: (status, body) or a transport error.
async fn sqs(endpoint: &str, op: &str, input: serde_json::Value) -> Result<(u16, String), String> {
    let resp = reqwest::Client::new()
        .post(endpoint)
        .header("x-amz-target", format!("AmazonSQS.{op}"))
        .header("content-type", "application/x-amz-json-1.0")
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=0",
        )
        .body(input.to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await.unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_chaos_answers_500_throttles_stalls_and_loses_answers() {
    let moto = MotoProcess::start().await;
    let proxy = AwsProxy::start(&moto.endpoint()).await;
    let ep = proxy.endpoint();
    let list = || sqs(&ep, "ListQueues", serde_json::json!({}));
    assert_eq!(list().await.unwrap().0, 200, "no chaos: passed on");

    proxy.set_chaos(Chaos {
        error_every: 1,
        ..Default::default()
    });
    let (status, body) = list().await.unwrap();
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("InternalFailure"), "{body}");

    proxy.set_chaos(Chaos {
        throttle_every: 1,
        ..Default::default()
    });
    let (status, body) = list().await.unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("ThrottlingException"), "{body}");

    proxy.set_chaos(Chaos {
        stall_every: 1,
        stall: Duration::from_millis(700),
        ..Default::default()
    });
    let started = Instant::now();
    assert_eq!(list().await.unwrap().0, 200, "a stalled call still happens");
    assert!(started.elapsed() >= Duration::from_millis(700));

    // A lost answer: the caller sees the connection drop, but the queue was made.
    proxy.set_chaos(Chaos {
        lose_every: 1,
        ..Default::default()
    });
    let made = sqs(
        &ep,
        "CreateQueue",
        serde_json::json!({"QueueName": "lost-answer"}),
    )
    .await;
    assert!(made.is_err(), "{made:?}");
    proxy.set_chaos(Chaos::default());
    let (_, body) = list().await.unwrap();
    assert!(body.contains("lost-answer"), "{body}");
    assert_eq!(proxy.chaos_injected(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_faults_throttle_without_retry_after_and_slow_answers_down() {
    let registry = RegistryProcess::start(RegistryOpts::default()).await;
    let proxy = Proxy::start(&registry.url(), Faults::default()).await;
    let url = format!("http://{}/v2/", proxy.host());
    let client = reqwest::Client::new();
    assert_eq!(client.get(&url).send().await.unwrap().status(), 200);

    proxy.set_faults(Faults {
        throttle_bare_every: 1,
        ..Default::default()
    });
    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    assert!(
        resp.headers().get("retry-after").is_none(),
        "ECR sends none"
    );

    proxy.set_faults(Faults {
        slow_every: 1,
        slow_by: Duration::from_millis(700),
        ..Default::default()
    });
    let started = Instant::now();
    assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(700));
    assert_eq!(proxy.injected(), 2);
}
