//! Creating the ledger table with the schema the code expects (`ecr-sync bootstrap`).

use super::{TableError, GSI};
use crate::aws::describe;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use std::time::Duration;

/// Creates the ledger table with the schema above (on-demand, TTL on `expires_at`) unless it
/// exists, and waits until it is active.
pub async fn bootstrap_table(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<(), TableError> {
    let err = |op, e: &dyn std::fmt::Display| TableError {
        class: crate::vocab::ErrorClass::Rejected,
        op,
        table: table.to_string(),
        message: e.to_string(),
    };
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .expect("name and type are set")
    };
    let attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .expect("name and type are set")
    };
    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .attribute_definitions(attr("pk"))
        .attribute_definitions(attr("sk"))
        .attribute_definitions(attr("gsi1pk"))
        .attribute_definitions(attr("gsi1sk"))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(GSI)
                .key_schema(key("gsi1pk", KeyType::Hash))
                .key_schema(key("gsi1sk", KeyType::Range))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
                .expect("index fields are set"),
        )
        .send()
        .await;
    match created {
        Ok(_) => {}
        Err(e) if e.as_service_error().and_then(|s| s.code()) == Some("ResourceInUseException") => {
        }
        Err(e) => return Err(err("CreateTable", &describe(&e))),
    }
    for _ in 0..120 {
        let out = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| err("DescribeTable", &describe(&e)))?;
        let status = out.table().and_then(|t| t.table_status().cloned());
        if status == Some(aws_sdk_dynamodb::types::TableStatus::Active) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name("expires_at")
                .enabled(true)
                .build()
                .expect("name and flag are set"),
        )
        .send()
        .await
        .map(|_| ())
        .or_else(|e| {
            // Enabling TTL twice is an error on AWS; the second call changes nothing.
            if e.as_service_error()
                .and_then(|s| s.message())
                .is_some_and(|m| m.contains("already enabled"))
            {
                Ok(())
            } else {
                Err(err("UpdateTimeToLive", &describe(&e)))
            }
        })
}
