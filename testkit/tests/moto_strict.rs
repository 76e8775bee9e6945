//! testkit's moto is as strict as DynamoDB on conditional writes: of many writes to one item
//! at the same moment, each conditioned on the item not existing yet, exactly one passes.
//! moto as shipped checks and writes without a lock; its item reads are slowed here
//! (`MOTO_STRICT_WIDEN_MS`) so the race shows every time instead of once in many runs (a
//! worker's `running` then lands on a `succeeded` written a moment before, and the load test
//! sees a job that never ends).

use ecr_sync_testkit::moto::MotoProcess;
use serde_json::{json, Value};

/// One DynamoDB call (JSON protocol) to moto; the status and the answer.
async fn dynamodb(
    http: &reqwest::Client,
    moto: &MotoProcess,
    op: &str,
    body: Value,
) -> (u16, Value) {
    let resp = http
        .post(moto.endpoint())
        .header("x-amz-target", format!("DynamoDB_20120810.{op}"))
        .header("content-type", "application/x-amz-json-1.0")
        // moto routes a request by the service in its credential scope (unsigned: S3).
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/dynamodb/aws4_request, \
             SignedHeaders=host, Signature=0",
        )
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// For each of `keys` items, `writers` conditional "create if absent" writes at once; the
/// number that passed, per item.
async fn winners(moto: &MotoProcess, keys: usize, writers: usize) -> Vec<usize> {
    let http = reqwest::Client::new();
    let (status, answer) = dynamodb(
        &http,
        moto,
        "CreateTable",
        json!({
            "TableName": "t",
            "KeySchema": [{ "AttributeName": "pk", "KeyType": "HASH" }],
            "AttributeDefinitions": [{ "AttributeName": "pk", "AttributeType": "S" }],
            "BillingMode": "PAY_PER_REQUEST",
        }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["TableDescription"]["TableName"], "t", "{answer}");
    let mut out = Vec::new();
    for k in 0..keys {
        let writes = (0..writers).map(|w| {
            let http = http.clone();
            async move {
                let (status, answer) = dynamodb(
                    &http,
                    moto,
                    "UpdateItem",
                    json!({
                        "TableName": "t",
                        "Key": { "pk": { "S": format!("k{k}") } },
                        "UpdateExpression": "SET w = :w",
                        "ConditionExpression": "attribute_not_exists(pk)",
                        "ExpressionAttributeValues": { ":w": { "S": w.to_string() } },
                    }),
                )
                .await;
                match status {
                    200 if answer.is_object() => true,
                    400 if answer["__type"]
                        .as_str()
                        .is_some_and(|t| t.ends_with("ConditionalCheckFailedException")) =>
                    {
                        false
                    }
                    _ => panic!("UpdateItem answered {status}: {answer}"),
                }
            }
        });
        let passed = futures_util::future::join_all(writes).await;
        out.push(passed.into_iter().filter(|p| *p).count());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_writes_to_one_item_pass_one_at_a_time() {
    let widen = ("MOTO_STRICT_WIDEN_MS", "20");
    let strict = MotoProcess::start_with_env(&[widen]).await;
    assert_eq!(winners(&strict, 5, 8).await, vec![1; 5]);

    // The same writes on moto as shipped: more than one passes (if this fails, moto now
    // serialises conditional writes itself, and moto_strict.py's lock can go).
    let lax = MotoProcess::start_with_env(&[widen, ("MOTO_STRICT_LAX", "1")]).await;
    let raced = winners(&lax, 5, 8).await;
    assert!(raced.iter().any(|n| *n > 1), "moto as shipped: {raced:?}");
}
