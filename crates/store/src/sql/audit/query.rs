//! Listing events with filters and an opaque cursor.

use sqlx::any::AnyArguments;
use sqlx::query::Query;

use super::{COLUMNS, EVENTS, chain_of, from_row, stored_id};
use crate::sql::page::invalid_cursor;
use crate::sql::{Dialect, SqlStore, column, db_error, micros, one_row};
use crate::{AuditEvent, AuditFilter, AuditOrder, AuditPage, PageRequest, StoreError};

/// A value bound to a `$n` placeholder of a query built at run time.
pub(super) enum Arg {
    Text(String),
    Int(i64),
    Bytes(Vec<u8>),
}

/// A `WHERE` clause under construction, numbering its placeholders.
#[derive(Default)]
pub(super) struct Conditions {
    sql: String,
    args: Vec<Arg>,
}

impl Conditions {
    /// Binds `arg` and returns its placeholder.
    pub(super) fn bind(&mut self, arg: Arg) -> String {
        self.args.push(arg);
        format!("${}", self.args.len())
    }

    /// Adds `AND <condition>`.
    pub(super) fn and(&mut self, condition: &str) {
        self.sql.push_str(" AND ");
        self.sql.push_str(condition);
    }

    pub(super) fn where_clause(&self) -> String {
        format!("WHERE 1 = 1{}", self.sql)
    }

    /// The values bound, in placeholder order.
    pub(super) fn into_args(self) -> Vec<Arg> {
        self.args
    }

    pub(super) fn query<'q>(self, sql: &'q str) -> Query<'q, sqlx::Any, AnyArguments<'q>> {
        self.args
            .into_iter()
            .fold(sqlx::query(sql), |query, arg| match arg {
                Arg::Text(text) => query.bind(text),
                Arg::Int(number) => query.bind(number),
                Arg::Bytes(bytes) => query.bind(bytes),
            })
    }

    /// Events (`audit_events e`) of the agent with an id-shaped `agent`, else of the agent
    /// named `agent` ([`crate::AgentKey`]): a name can never select another agent's events by
    /// its id. The id is looked up once: rows store its number, indexed with `pos`.
    pub(super) fn agent(&mut self, agent: &str) {
        let condition = self.agent_condition(agent, true);
        self.and(&condition);
    }

    /// The condition [`Conditions::agent`] adds, with its value bound, for a query on
    /// `audit_events e` that places it itself. Without `indexed`, the agent's index is kept
    /// out of the plan (`+`, on both databases): a query bounded by a short time range reads
    /// that range instead of every event of the agent.
    pub(super) fn agent_condition(&mut self, agent: &str, indexed: bool) -> String {
        let p = self.bind(Arg::Text(agent.to_owned()));
        let unindexed = if indexed { "" } else { "+" };
        match crate::AgentKey::of(agent) {
            crate::AgentKey::Id(_) => format!(
                "{unindexed}e.agent = (SELECT agent FROM audit_agents WHERE agent_id = {p})"
            ),
            crate::AgentKey::Name(_) => format!("e.agent_name = {p}"),
        }
    }

    /// The same condition on a table that keeps the agent's id and name as text (the rollups).
    pub(super) fn agent_text_condition(&mut self, agent: &str) -> String {
        let column = match crate::AgentKey::of(agent) {
            crate::AgentKey::Id(_) => "agent_id",
            crate::AgentKey::Name(_) => "agent_name",
        };
        let p = self.bind(Arg::Text(agent.to_owned()));
        format!("{column} = {p}")
    }
}

/// `column` matches `pattern`, where `*` is any run of characters and `?` one character and
/// everything else is literal and case-sensitive (the policy pattern rules).
fn glob(dialect: Dialect, conditions: &mut Conditions, column: &str, pattern: &str) {
    match dialect {
        Dialect::Sqlite => {
            // GLOB is case-sensitive and knows `*` and `?`; only `[` needs escaping.
            let p = conditions.bind(Arg::Text(pattern.replace('[', "[[]")));
            conditions.and(&format!("{column} GLOB {p}"));
        }
        Dialect::Postgres => {
            let mut like = String::with_capacity(pattern.len());
            for c in pattern.chars() {
                match c {
                    '\\' | '%' | '_' => {
                        like.push('\\');
                        like.push(c);
                    }
                    '*' => like.push('%'),
                    '?' => like.push('_'),
                    c => like.push(c),
                }
            }
            let p = conditions.bind(Arg::Text(like));
            conditions.and(&format!("{column} LIKE {p} ESCAPE '\\'"));
        }
    }
}

/// One committed event by id.
pub(crate) async fn event(store: &SqlStore, id: &str) -> Result<AuditEvent, StoreError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM {EVENTS} WHERE e.id = $1"))
        .bind(stored_id::to_stored(id))
        .fetch_optional(&store.pool)
        .await
        .map_err(db_error)?;
    one_row(row, from_row, || {
        StoreError::not_found(format!("audit event `{id}`"))
    })
}

pub(crate) async fn query(store: &SqlStore, filter: &AuditFilter) -> Result<AuditPage, StoreError> {
    let limit = PageRequest::first(filter.limit).size();
    let mut conditions = Conditions::default();
    if let Some(decision) = &filter.decision {
        let p = conditions.bind(Arg::Text(decision.clone()));
        conditions.and(&format!("{} = {p}", outcome_column!("decision")));
    }
    if let Some(code) = &filter.code {
        let p = conditions.bind(Arg::Text(code.clone()));
        conditions.and(&format!("{} = {p}", outcome_column!("code")));
    }
    if let Some(agent) = &filter.agent {
        conditions.agent(agent);
    }
    if let Some(action) = &filter.action {
        if action.contains(['*', '?']) {
            glob(store.dialect, &mut conditions, "e.action", action);
        } else {
            let p = conditions.bind(Arg::Text(action.clone()));
            conditions.and(&format!("e.action = {p}"));
        }
    }
    if let Some(trace_id) = &filter.trace_id {
        let p = conditions.bind(Arg::Bytes(stored_id::to_stored(trace_id)));
        conditions.and(&format!("e.trace_id = {p}"));
    }
    // On SQLite, `ts` and the chain are kept out of index selection (`+column`; `kind` is read
    // from the outcome, which no index has): the page is read in `pos` order from the cursor
    // (a seek on the primary key), with the time window bounding `pos` below; through an index
    // on them every page sorted the whole window (or chain) again, so walking a long one cost
    // its length squared.
    let unindexed = |column: &str| match store.dialect {
        Dialect::Sqlite => format!("+{column}"),
        Dialect::Postgres => column.to_owned(),
    };
    if let Some(kind) = filter.kind {
        let p = conditions.bind(Arg::Text(kind.as_str().to_owned()));
        conditions.and(&format!("{} = {p}", outcome_column!("kind")));
    }
    if let Some(gateway) = &filter.gateway {
        let p = conditions.bind(Arg::Text(gateway.clone()));
        conditions.and(&format!("{} = {}", unindexed("e.chain"), chain_of(&p)));
    }
    if let Some(from) = filter.from {
        let p = conditions.bind(Arg::Int(micros(from)));
        conditions.and(&format!("{} >= {p}", unindexed("e.ts")));
        // No event of the window comes before the first one at or after `from` (the ts index
        // finds it); on later pages the cursor bounds `pos` tighter.
        if store.dialect == Dialect::Sqlite && filter.cursor.is_none() {
            let q = conditions.bind(Arg::Int(micros(from)));
            conditions.and(&format!(
                "e.pos >= COALESCE((SELECT MIN(pos) FROM audit_events WHERE ts >= {q}), 0)"
            ));
        }
    }
    if let Some(to) = filter.to {
        let p = conditions.bind(Arg::Int(micros(to)));
        conditions.and(&format!("{} < {p}", unindexed("e.ts")));
    }
    if let Some(cursor) = &filter.cursor {
        let position = decode_cursor(cursor, filter.order)?;
        let p = conditions.bind(Arg::Int(position));
        match filter.order {
            AuditOrder::NewestFirst => conditions.and(&format!("e.pos < {p}")),
            AuditOrder::OldestFirst => conditions.and(&format!("e.pos > {p}")),
        }
    }
    let direction = match filter.order {
        AuditOrder::NewestFirst => "DESC",
        AuditOrder::OldestFirst => "ASC",
    };
    let where_clause = conditions.where_clause();
    let fetch = conditions.bind(Arg::Int(i64::from(limit) + 1));
    let sql = format!(
        "SELECT {COLUMNS}, e.pos FROM {EVENTS} {where_clause} ORDER BY e.pos {direction} \
         LIMIT {fetch}"
    );
    let rows = match &store.sqlite_reader {
        // Listing and export read whole pages: in place on SQLite (sqlite_walk).
        Some(reader) => {
            let reader = reader.clone();
            let args = conditions.into_args();
            tokio::task::spawn_blocking(move || reader.events(&sql, &args))
                .await
                .map_err(|err| StoreError::Unavailable(format!("reading events failed: {err}")))??
        }
        None => {
            let rows = conditions
                .query(&sql)
                .fetch_all(&store.pool)
                .await
                .map_err(db_error)?;
            rows.iter()
                .map(|row| Ok((from_row(row)?, column::<i64>(row, "pos")?)))
                .collect::<Result<Vec<_>, StoreError>>()?
        }
    };
    let more = rows.len() > limit as usize;
    let mut entries = Vec::with_capacity(rows.len());
    let mut last_position = None;
    for (event, position) in rows.into_iter().take(limit as usize) {
        entries.push(event);
        last_position = Some(position);
    }
    let next_cursor = match (more, last_position) {
        (true, Some(position)) => Some(encode_cursor(position, filter.order)),
        _ => None,
    };
    Ok(AuditPage {
        entries,
        next_cursor,
    })
}

/// Cursors name the commit position of the last event of a page and the order they belong to;
/// clients treat them as opaque.
fn encode_cursor(position: i64, order: AuditOrder) -> String {
    let prefix = match order {
        AuditOrder::NewestFirst => 'n',
        AuditOrder::OldestFirst => 'o',
    };
    format!("{prefix}{position:x}")
}

fn decode_cursor(cursor: &str, order: AuditOrder) -> Result<i64, StoreError> {
    let invalid = || invalid_cursor(cursor);
    let expected = match order {
        AuditOrder::NewestFirst => "n",
        AuditOrder::OldestFirst => "o",
    };
    let digits = cursor.strip_prefix(expected).ok_or_else(invalid)?;
    i64::from_str_radix(digits, 16)
        .ok()
        .filter(|position| *position >= 0)
        .ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_the_other_order() {
        let cursor = encode_cursor(1234, AuditOrder::NewestFirst);
        assert_eq!(
            decode_cursor(&cursor, AuditOrder::NewestFirst).unwrap(),
            1234
        );
        assert!(decode_cursor(&cursor, AuditOrder::OldestFirst).is_err());
        assert!(decode_cursor("nzz", AuditOrder::NewestFirst).is_err());
        assert!(decode_cursor("", AuditOrder::NewestFirst).is_err());
    }
}
