//! Reading the ledger: one job, a run and its contents, a job across runs and its history —
//! the queries behind `status`, `job show`, `dlq list` and the planner's pending check.

use super::items::{get_n, get_s, history_entry, job_item, job_key, parse_word, run_key, s, Item};
use super::{FleetJob, FleetLedger, HistoryEntry, RunRecord, TableError, GSI};
use crate::job::RepoPlan;
use crate::vocab::{JobState, RunState};

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

    /// The repositories and jobs of a run (one paginated query).
    pub async fn run_contents(
        &self,
        run_id: &str,
    ) -> Result<(Vec<RepoPlan>, Vec<FleetJob>), TableError> {
        let items = self.query_pk(&format!("RUN#{run_id}"), None, None).await?;
        let mut repos = Vec::new();
        let mut jobs = Vec::new();
        for i in items {
            match get_s(&i, "kind").as_deref() {
                Some("repo") => repos.push(RepoPlan {
                    source: get_s(&i, "source").unwrap_or_default(),
                    destination: get_s(&i, "destination").unwrap_or_default(),
                    planned: get_n(&i, "planned"),
                    up_to_date: get_n(&i, "up_to_date"),
                    failed: get_n(&i, "failed_tags"),
                    pending_elsewhere: get_n(&i, "pending_elsewhere"),
                    event: parse_word(&i, "event"),
                    reason: get_s(&i, "reason"),
                }),
                Some("job") => jobs.push(job_item(&i)),
                _ => {}
            }
        }
        Ok((repos, jobs))
    }

    /// The jobs of a run in one of `states` (a key query with a filter, not a scan).
    pub async fn jobs_in_state(
        &self,
        run_id: &str,
        states: &[JobState],
    ) -> Result<Vec<FleetJob>, TableError> {
        let items = self
            .query_pk(&format!("RUN#{run_id}"), Some("JOB#"), Some(states))
            .await?;
        Ok(items.iter().map(job_item).collect())
    }

    /// Every run's record of a job, newest first.
    pub async fn job_runs(&self, job_id: &str) -> Result<Vec<FleetJob>, TableError> {
        let items = self
            .query_index(&format!("JOB#{job_id}"), 100, false)
            .await?;
        Ok(items.iter().map(job_item).collect())
    }

    /// The newest record of a job across runs (the index, eventually consistent).
    pub async fn latest_job(&self, job_id: &str) -> Result<Option<FleetJob>, TableError> {
        let items = self.query_index(&format!("JOB#{job_id}"), 1, false).await?;
        Ok(items.first().map(job_item))
    }

    /// A job's history, oldest first.
    pub async fn job_history(&self, job_id: &str) -> Result<Vec<HistoryEntry>, TableError> {
        let items = self.query_pk(&format!("JOB#{job_id}"), None, None).await?;
        Ok(items.iter().map(history_entry).collect())
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
