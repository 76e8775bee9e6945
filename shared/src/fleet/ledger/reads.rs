//! Reading the ledger: one job, a run and its contents, a job across runs and its history —
//! the queries behind `status`, `job show`, `dlq list` and the planner's pending check.

use super::items::{
    get_n, get_s, history_entries, job_item, job_key, job_partition, parse_word, run_key, s, Item,
    JOB_SHARDS,
};
use super::{FleetJob, FleetLedger, HistoryEntry, RunRecord, TableError, GSI};
use crate::job::RepoPlan;
use crate::vocab::{JobState, RunState};
use aws_sdk_dynamodb::types::KeysAndAttributes;
use futures_util::{StreamExt, TryStreamExt};

/// How many of the latest runs `job show` looks through for a job.
pub const JOB_LOOKUP_RUNS: i32 = 100;
/// DynamoDB's BatchGetItem limit.
const GET_BATCH: usize = 100;
/// Times a BatchGetItem is sent for keys DynamoDB left unprocessed (doubling from 50 ms).
const GET_ROUNDS: u32 = 8;
/// Partition queries in flight at once.
const QUERIES_AT_ONCE: usize = 8;

impl FleetLedger {
    /// One job of one run.
    pub async fn job(&self, run_id: &str, job_id: &str) -> Result<Option<FleetJob>, TableError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(job_key(run_id, job_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.error("GetItem", e))?;
        Ok(out.item().map(job_item))
    }

    /// A run, or the latest one when `run_id` is `None`.
    pub async fn run(&self, run_id: Option<&str>) -> Result<Option<RunRecord>, TableError> {
        let item = match run_id {
            Some(id) => self
                .client
                .get_item()
                .table_name(&self.table)
                .set_key(Some(run_key(id)))
                .send()
                .await
                .map_err(|e| self.error("GetItem", e))?
                .item()
                .cloned(),
            None => self.query_index("RUNS", 1, false).await?.into_iter().next(),
        };
        Ok(item.map(|i| RunRecord {
            run_id: get_s(&i, "run_id").unwrap_or_default(),
            state: parse_word(&i, "state").unwrap_or(RunState::Failed),
            started_at: get_s(&i, "started_at").unwrap_or_default(),
            planned_at: get_s(&i, "planned_at"),
            updated_at: get_s(&i, "updated_at"),
            config_source: get_s(&i, "config_source").unwrap_or_default(),
            config_version: get_s(&i, "config_version").unwrap_or_default(),
            planned: get_n(&i, "planned"),
            up_to_date: get_n(&i, "up_to_date"),
            failed_repos: get_n(&i, "failed_repos"),
        }))
    }

    /// The repositories and jobs of a run: its own partition, then its job partitions.
    pub async fn run_contents(
        &self,
        run_id: &str,
    ) -> Result<(Vec<RepoPlan>, Vec<FleetJob>), TableError> {
        let items = self.query_pk(&format!("RUN#{run_id}"), None, None).await?;
        let repos = items
            .iter()
            .filter(|i| get_s(i, "kind").as_deref() == Some("repo"))
            .map(|i| RepoPlan {
                source: get_s(i, "source").unwrap_or_default(),
                destination: get_s(i, "destination").unwrap_or_default(),
                planned: get_n(i, "planned"),
                up_to_date: get_n(i, "up_to_date"),
                failed: get_n(i, "failed_tags"),
                pending_elsewhere: get_n(i, "pending_elsewhere"),
                event: parse_word(i, "event"),
                reason: get_s(i, "reason"),
            })
            .collect();
        Ok((repos, self.jobs_in_state(run_id, &[]).await?))
    }

    /// The jobs of a run that ever started, in one of `states` (all when empty): a query per
    /// job partition with a filter, not a scan.
    pub async fn jobs_in_state(
        &self,
        run_id: &str,
        states: &[JobState],
    ) -> Result<Vec<FleetJob>, TableError> {
        let filter = (!states.is_empty()).then_some(states);
        let pages: Vec<Vec<Item>> = futures_util::stream::iter(0..JOB_SHARDS)
            .map(|shard| {
                let pk = job_partition(run_id, shard);
                async move { self.query_pk(&pk, Some("JOB#"), filter).await }
            })
            .buffer_unordered(QUERIES_AT_ONCE)
            .try_collect()
            .await?;
        Ok(pages.iter().flatten().map(job_item).collect())
    }

    /// Every record of a job in the latest [`JOB_LOOKUP_RUNS`] runs, newest run first, and its
    /// history across them, oldest first.
    pub async fn job_records(
        &self,
        job_id: &str,
    ) -> Result<(Vec<FleetJob>, Vec<HistoryEntry>), TableError> {
        let runs: Vec<String> = self
            .query_index("RUNS", JOB_LOOKUP_RUNS, false)
            .await?
            .iter()
            .filter_map(|r| get_s(r, "run_id"))
            .collect();
        let mut items = Vec::new();
        for chunk in runs.chunks(GET_BATCH) {
            let keys = chunk.iter().map(|run| job_key(run, job_id)).collect();
            items.extend(self.get_all(keys).await?);
        }
        let rank = |i: &Item| {
            let run = get_s(i, "run_id").unwrap_or_default();
            runs.iter().position(|r| *r == run).unwrap_or(usize::MAX)
        };
        items.sort_by_key(rank);
        let mut history: Vec<HistoryEntry> = items.iter().flat_map(history_entries).collect();
        // Fixed-width RFC 3339 timestamps in UTC compare as text.
        history.sort_by(|a, b| a.at.cmp(&b.at));
        Ok((items.iter().map(job_item).collect(), history))
    }

    /// A job's history across the latest runs, oldest first.
    pub async fn job_history(&self, job_id: &str) -> Result<Vec<HistoryEntry>, TableError> {
        Ok(self.job_records(job_id).await?.1)
    }

    /// The items with these keys (at most [`GET_BATCH`]) that exist, asking again for the keys
    /// DynamoDB left unprocessed.
    pub(super) async fn get_all(&self, keys: Vec<Item>) -> Result<Vec<Item>, TableError> {
        assert!(
            keys.len() <= GET_BATCH,
            "BatchGetItem takes at most 100 keys"
        );
        let mut found = Vec::new();
        let mut pending = keys;
        let mut delay = std::time::Duration::from_millis(50);
        for round in 0..=GET_ROUNDS {
            if pending.is_empty() {
                break;
            }
            if round == GET_ROUNDS {
                return Err(TableError {
                    class: crate::vocab::ErrorClass::Transient,
                    op: "BatchGetItem",
                    table: self.table.clone(),
                    message: format!(
                        "{} keys still unprocessed after {GET_ROUNDS} tries",
                        pending.len()
                    ),
                });
            }
            let request = KeysAndAttributes::builder()
                .set_keys(Some(pending))
                .consistent_read(true)
                .build()
                .expect("keys are set");
            let out = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(|e| self.error("BatchGetItem", e))?;
            if let Some(items) = out.responses().and_then(|r| r.get(&self.table)) {
                found.extend(items.iter().cloned());
            }
            pending = out
                .unprocessed_keys()
                .and_then(|u| u.get(&self.table))
                .map(|k| k.keys().to_vec())
                .unwrap_or_default();
            if !pending.is_empty() {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(2));
            }
        }
        Ok(found)
    }

    async fn query_pk(
        &self,
        pk: &str,
        sk_prefix: Option<&str>,
        states: Option<&[JobState]>,
    ) -> Result<Vec<Item>, TableError> {
        let mut key = "pk = :pk".to_string();
        let mut req = self
            .client
            .query()
            .table_name(&self.table)
            .expression_attribute_values(":pk", s(pk));
        if let Some(prefix) = sk_prefix {
            key.push_str(" AND begins_with(sk, :prefix)");
            req = req.expression_attribute_values(":prefix", s(prefix));
        }
        if let Some(states) = states {
            let names: Vec<String> = (0..states.len()).map(|i| format!(":s{i}")).collect();
            req = req
                .filter_expression(format!("#state IN ({})", names.join(", ")))
                .expression_attribute_names("#state", "state");
            for (name, state) in names.iter().zip(states) {
                req = req.expression_attribute_values(name, s(state.as_str()));
            }
        }
        let mut pages = req.key_condition_expression(key).into_paginator().send();
        let mut items = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error("Query", e))?;
            items.extend(page.items().iter().cloned());
        }
        Ok(items)
    }

    async fn query_index(
        &self,
        gsi1pk: &str,
        limit: i32,
        oldest_first: bool,
    ) -> Result<Vec<Item>, TableError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(GSI)
            .key_condition_expression("gsi1pk = :pk")
            .expression_attribute_values(":pk", s(gsi1pk))
            .scan_index_forward(oldest_first)
            .limit(limit)
            .send()
            .await
            .map_err(|e| self.error("Query", e))?;
        Ok(out.items().to_vec())
    }
}
