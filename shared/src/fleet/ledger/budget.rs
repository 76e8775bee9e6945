//! Leases on a shared rate budget: one item per registry and kind of request, holding each
//! worker's lease as one attribute, so a worker renews its own with one UpdateItem and reads
//! everyone's with one GetItem.
//!
//! | item | `pk` | `sk` | attributes |
//! |---|---|---|---|
//! | budget | `BUDGET#<registry host>#<kind>` | `#BUDGET` | `lease:<worker id>` = `{until, want}` |
//!
//! `until` is epoch milliseconds; `want` (requests per second) is absent for a worker that
//! would use any share it gets.

use super::items::{expires_at, n, s, Item};
use super::{FleetLedger, TableError};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use std::collections::HashMap;

const LEASE_PREFIX: &str = "lease:";

/// One worker's claim on a budget.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    /// The worker.
    pub worker: String,
    /// When the claim lapses unless renewed (epoch milliseconds).
    pub until: u64,
    /// The rate it asks for; `None`: as much as it gets.
    pub want: Option<f64>,
}

fn budget_key(host: &str, kind: &str) -> Item {
    HashMap::from([
        ("pk".to_string(), s(format!("BUDGET#{host}#{kind}"))),
        ("sk".to_string(), s("#BUDGET")),
    ])
}

fn leases(item: Option<&Item>) -> Vec<Lease> {
    let Some(item) = item else {
        return Vec::new();
    };
    item.iter()
        .filter_map(|(name, value)| {
            let worker = name.strip_prefix(LEASE_PREFIX)?;
            let m = value.as_m().ok()?;
            let number = |k: &str| m.get(k)?.as_n().ok()?.parse::<f64>().ok();
            Some(Lease {
                worker: worker.to_string(),
                until: number("until")? as u64,
                want: number("want"),
            })
        })
        .collect()
}

impl FleetLedger {
    /// Every lease on the budget of `kind` requests to `host` (a strongly consistent read).
    pub async fn budget_leases(&self, host: &str, kind: &str) -> Result<Vec<Lease>, TableError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(budget_key(host, kind)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.error("GetItem", e))?;
        Ok(leases(out.item()))
    }

    /// Writes `lease` (`until` 0 withdraws it) and drops the `lapsed` workers' leases; returns
    /// every lease the item then holds.
    pub async fn write_budget_lease(
        &self,
        host: &str,
        kind: &str,
        lease: &Lease,
        lapsed: &[String],
    ) -> Result<Vec<Lease>, TableError> {
        let mut names = HashMap::from([
            ("#me".to_string(), format!("{LEASE_PREFIX}{}", lease.worker)),
            ("#ttl".to_string(), "expires_at".to_string()),
        ]);
        let mut values = HashMap::from([(":ttl".to_string(), expires_at())]);
        let mut expression = if lease.until == 0 {
            "SET #ttl = :ttl REMOVE #me".to_string()
        } else {
            let mut m = HashMap::from([("until".to_string(), n(lease.until))]);
            if let Some(want) = lease.want {
                m.insert("want".to_string(), AttributeValue::N(format!("{want:.3}")));
            }
            values.insert(":me".to_string(), AttributeValue::M(m));
            "SET #me = :me, #ttl = :ttl".to_string()
        };
        let lapsed: Vec<&String> = lapsed.iter().filter(|w| **w != lease.worker).collect();
        for (i, worker) in lapsed.iter().enumerate() {
            names.insert(format!("#x{i}"), format!("{LEASE_PREFIX}{worker}"));
            let sep = if i == 0 && lease.until != 0 {
                " REMOVE "
            } else {
                ", "
            };
            expression.push_str(&format!("{sep}#x{i}"));
        }
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(budget_key(host, kind)))
            .update_expression(expression)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(|e| self.error("UpdateItem", e))?;
        Ok(leases(out.attributes()))
    }
}
