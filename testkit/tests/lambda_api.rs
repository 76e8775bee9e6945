//! testkit's local Lambda Runtime API, driven the way a function's runtime drives Lambda's:
//! poll for the next invocation, answer it, and nothing else is accepted.

use ecr_sync_testkit::lambda_api::{LambdaApi, Outcome};
use serde_json::json;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const WAIT: Duration = Duration::from_secs(5);

fn url(api: &LambdaApi, path: &str) -> String {
    format!("http://{}/2018-06-01/runtime{path}", api.runtime_api())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_polls_answers_and_is_held_to_the_deadline() {
    let api = LambdaApi::start().await;
    let http = reqwest::Client::new();

    // A poll before any invocation waits for one.
    let poll = tokio::spawn({
        let (http, next) = (http.clone(), url(&api, "/invocation/next"));
        async move { http.get(next).send().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!poll.is_finished(), "the poll answered with nothing queued");
    let event = json!({ "Records": [{ "messageId": "m1", "body": "{}" }] });
    let id = api.invoke(event.clone(), Duration::from_secs(30));
    let got = poll.await.unwrap();
    assert_eq!(got.status(), 200);
    let header = |name: &str| got.headers()[name].to_str().unwrap().to_string();
    assert_eq!(header("lambda-runtime-aws-request-id"), id);
    assert!(header("lambda-runtime-invoked-function-arn").starts_with("arn:aws:lambda:"));
    let deadline_ms: u128 = header("lambda-runtime-deadline-ms").parse().unwrap();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    assert!(
        deadline_ms > now_ms + 25_000 && deadline_ms <= now_ms + 30_000,
        "deadline {deadline_ms} vs now {now_ms}"
    );
    let body: serde_json::Value = serde_json::from_str(&got.text().await.unwrap()).unwrap();
    assert_eq!(body, event);

    // The answer is recorded once; a second one, or one for an id never handed out, is refused.
    let response = json!({ "batchItemFailures": [{ "itemIdentifier": "m1" }] });
    let post = |path: String, body: serde_json::Value| {
        let http = http.clone();
        async move {
            let sent = http.post(path).body(body.to_string()).send().await.unwrap();
            sent.status().as_u16()
        }
    };
    assert_eq!(
        post(
            url(&api, &format!("/invocation/{id}/response")),
            response.clone()
        )
        .await,
        202
    );
    assert_eq!(
        api.outcome(&id, WAIT).await,
        Some(Outcome::Response(response))
    );
    assert_eq!(
        post(url(&api, &format!("/invocation/{id}/response")), json!({})).await,
        400
    );
    assert_eq!(
        post(url(&api, "/invocation/req-999999/error"), json!({})).await,
        400
    );

    // An error report.
    let id = api.invoke(json!({}), Duration::from_secs(30));
    let next = http
        .get(url(&api, "/invocation/next"))
        .send()
        .await
        .unwrap();
    assert_eq!(next.headers()["lambda-runtime-aws-request-id"], id.as_str());
    let report = json!({ "errorType": "Boom", "errorMessage": "it broke" });
    assert_eq!(
        post(
            url(&api, &format!("/invocation/{id}/error")),
            report.clone()
        )
        .await,
        202
    );
    assert_eq!(api.outcome(&id, WAIT).await, Some(Outcome::Error(report)));

    // An answer after the deadline is a timeout, as Lambda would count it.
    let id = api.invoke(json!({}), Duration::from_millis(200));
    http.get(url(&api, "/invocation/next"))
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        post(url(&api, &format!("/invocation/{id}/response")), json!({})).await,
        202
    );
    assert_eq!(api.outcome(&id, WAIT).await, Some(Outcome::TimedOut));

    // No answer: no outcome.
    let id = api.invoke(json!({}), Duration::from_secs(30));
    assert_eq!(api.outcome(&id, Duration::from_millis(200)).await, None);

    // A runtime that cannot start says so.
    assert_eq!(api.init_error(), None);
    let init = json!({ "errorType": "Config", "errorMessage": "no queue" });
    assert_eq!(post(url(&api, "/init/error"), init.clone()).await, 202);
    assert_eq!(api.init_error(), Some(init));
}
