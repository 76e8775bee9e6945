//! UpdateItem expressions built attribute by attribute.

use super::items::{n, s, Item};
use crate::vocab::JobState;
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;

/// An UpdateItem expression under construction. Every attribute goes through a `#name`
/// placeholder, so DynamoDB's reserved words (`state`, `source`, `bytes`, …) never bite.
#[derive(Default)]
pub(super) struct Update {
    sets: Vec<String>,
    removes: Vec<String>,
    condition: Option<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Update {
    pub(super) fn name(&mut self, attr: &str) -> String {
        let key = format!("#{attr}");
        self.names.insert(key.clone(), attr.to_string());
        key
    }

    pub(super) fn value(&mut self, v: AttributeValue) -> String {
        let key = format!(":v{}", self.values.len());
        self.values.insert(key.clone(), v);
        key
    }

    pub(super) fn set(&mut self, attr: &str, v: AttributeValue) -> &mut Self {
        let (n, v) = (self.name(attr), self.value(v));
        self.sets.push(format!("{n} = {v}"));
        self
    }

    pub(super) fn set_if_missing(&mut self, attr: &str, v: AttributeValue) -> &mut Self {
        let (n, v) = (self.name(attr), self.value(v));
        self.sets.push(format!("{n} = if_not_exists({n}, {v})"));
        self
    }

    pub(super) fn increment(&mut self, attr: &str) -> &mut Self {
        let (n, zero, one) = (self.name(attr), self.value(n(0)), self.value(n(1)));
        self.sets
            .push(format!("{n} = if_not_exists({n}, {zero}) + {one}"));
        self
    }

    pub(super) fn add(&mut self, attr: &str, by: u64) -> &mut Self {
        let (n, zero, by) = (self.name(attr), self.value(n(0)), self.value(n(by)));
        self.sets
            .push(format!("{n} = if_not_exists({n}, {zero}) + {by}"));
        self
    }

    /// Appends `v` to the list `attr` (created when missing).
    pub(super) fn append(&mut self, attr: &str, v: AttributeValue) -> &mut Self {
        let (n, empty, v) = (
            self.name(attr),
            self.value(AttributeValue::L(Vec::new())),
            self.value(AttributeValue::L(vec![v])),
        );
        self.sets.push(format!(
            "{n} = list_append(if_not_exists({n}, {empty}), {v})"
        ));
        self
    }

    /// Only when the item exists (an update never creates it).
    pub(super) fn only_if_exists(&mut self) -> &mut Self {
        self.condition = Some("attribute_exists(pk)".to_string());
        self
    }

    pub(super) fn remove(&mut self, attr: &str) -> &mut Self {
        let n = self.name(attr);
        self.removes.push(n);
        self
    }

    /// Only when the job has not ended for good (`absent_ok`: or does not exist yet).
    pub(super) fn unless_final(&mut self, absent_ok: bool) -> &mut Self {
        let state = self.name("state");
        let finals: Vec<String> = JobState::FINAL
            .iter()
            .map(|f| self.value(s(f.as_str())))
            .collect();
        let exists = if absent_ok {
            "attribute_not_exists(pk) OR"
        } else {
            "attribute_exists(pk) AND"
        };
        self.condition = Some(format!("{exists} NOT ({state} IN ({}))", finals.join(", ")));
        self
    }

    pub(super) fn only_in_state(&mut self, wanted: JobState) -> &mut Self {
        let (n, v) = (self.name("state"), self.value(s(wanted.as_str())));
        self.condition = Some(format!("{n} = {v}"));
        self
    }

    pub(super) fn expression(&self) -> String {
        let mut e = format!("SET {}", self.sets.join(", "));
        if !self.removes.is_empty() {
            e.push_str(&format!(" REMOVE {}", self.removes.join(", ")));
        }
        e
    }

    /// The request for `key` in `table`.
    pub(super) fn request(
        self,
        client: &aws_sdk_dynamodb::Client,
        table: &str,
        key: Item,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        client
            .update_item()
            .table_name(table)
            .set_key(Some(key))
            .update_expression(self.expression())
            .set_condition_expression(self.condition)
            .set_expression_attribute_names(Some(self.names))
            .set_expression_attribute_values(Some(self.values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::ledger::items::s;

    #[test]
    pub(super) fn updates_name_every_attribute_through_a_placeholder() {
        let mut u = Update::default();
        u.set("state", s(JobState::Running.as_str()))
            .increment("attempts")
            .set_if_missing("source", s("x"))
            .remove("error")
            .unless_final(true);
        assert_eq!(
            u.expression(),
            "SET #state = :v0, #attempts = if_not_exists(#attempts, :v1) + :v2, \
             #source = if_not_exists(#source, :v3) REMOVE #error"
        );
        assert_eq!(
            u.condition.as_deref(),
            Some("attribute_not_exists(pk) OR NOT (#state IN (:v4, :v5, :v6, :v7, :v8))")
        );
        assert_eq!(u.names["#source"], "source");
        assert_eq!(u.values.len(), 9);
    }
}
