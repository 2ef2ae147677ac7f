//! The ledger's rows: one [`UsageRecord`] per request, whatever happened to it, and the SQL that writes
//! and sums them. The record is plain data (what `usage` fills in and `metrics` reads); the rules of
//! when and how a request is recorded live in `usage`.

use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The response was delivered completely.
    Completed,
    /// The provider failed before anything was sent to the client.
    Failed,
    /// A stream broke after it started; the client got an error event.
    Interrupted,
    /// The client went away before the end.
    ClientDisconnected,
    /// The server's drain deadline cut the request.
    ShutDown,
    /// Refused at admission by one of its key's limits; nothing was sent upstream.
    Rejected,
    /// The gateway stopped abruptly (killed, crashed) while the request ran: recorded at the next start
    /// from the spool, with its prompt as estimated.
    Crashed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Failed => "failed",
            Outcome::Interrupted => "interrupted",
            Outcome::ClientDisconnected => "client_disconnected",
            Outcome::ShutDown => "shut_down",
            Outcome::Rejected => "rejected",
            Outcome::Crashed => "crashed",
        }
    }
}

/// Where the token counts came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageSource {
    /// Reported by the provider: authoritative.
    Provider,
    /// Counted by us because the provider's report never came (a cut or abandoned stream).
    #[default]
    Estimated,
    /// Answered from the response cache: no provider was asked.
    Cache,
}

impl UsageSource {
    pub fn as_str(self) -> &'static str {
        match self {
            UsageSource::Provider => "provider",
            UsageSource::Estimated => "estimated",
            UsageSource::Cache => "cache",
        }
    }
}

/// Serialized as it is into the ledger's spool (`usage::spool`), and read back from it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UsageRecord {
    /// The gateway's own id for the request (the ledger's key).
    pub request_id: String,
    /// The caller's `x-request-id`, when it sent one.
    pub client_request_id: Option<String>,
    /// Unix milliseconds when the request arrived.
    pub created_at: i64,
    pub organization_id: Option<String>,
    pub key_id: Option<String>,
    /// Upstream calls made for it.
    pub attempts: u32,
    /// Integer micro-USD at catalog prices; `None` when the model is not priced.
    pub cost_micros: Option<i64>,
    /// Whether the request used one of its key's prompts (a request nothing answered does not).
    pub prompt_counted: bool,
    pub requested_model: String,
    pub served_model: Option<String>,
    pub provider: Option<String>,
    pub streamed: bool,
    pub outcome: Outcome,
    /// The status the client saw (200 for any stream that started).
    pub status: u16,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    pub usage_source: UsageSource,
    pub latency_ms: u64,
    pub ttft_ms: Option<u64>,
    /// A short label of the failure, when there was one.
    pub error: Option<String>,
    /// The earlier attempts of a stream continued on another target after its provider failed mid-way,
    /// each with what it used; the totals above include them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub continued_from: Vec<Segment>,
}

/// One earlier attempt of a continued stream: what it used and cost, billed with the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub model: String,
    pub provider: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub cost_micros: Option<i64>,
    pub usage_source: UsageSource,
    /// Why it ended: the failure's label.
    pub error: String,
}

impl UsageRecord {
    /// `continued_from` as the ledger stores it: JSON, or NULL for a request served by one attempt.
    fn continued_from_json(&self) -> Option<String> {
        (!self.continued_from.is_empty()).then(|| serde_json::to_string(&self.continued_from).unwrap_or_default())
    }
}

impl Store {
    /// Writes a batch of ledger rows in one transaction, many rows per statement; a request id already
    /// present is left as it is. A batch is cut into chunks of the sizes in `LEDGER_CHUNKS`, so each
    /// connection prepares at most that many distinct statements, once: a statement text per batch size
    /// would be parsed anew for nearly every batch (SQLite's parser was a third of the ledger's CPU).
    pub async fn insert_usage(&self, rows: &[UsageRecord]) -> Result<(), StoreError> {
        macro_rules! insert_all {
            ($pool:expr, $db:ty, $postgres:expr) => {{
                let mut tx = $pool.begin().await?;
                let mut rest = rows;
                while !rest.is_empty() {
                    // The largest size that fits; the last size is one row, so one always does.
                    let size = LEDGER_CHUNKS.iter().position(|&n| n <= rest.len()).unwrap_or(LEDGER_CHUNKS.len() - 1);
                    let (chunk, tail) = rest.split_at(LEDGER_CHUNKS[size]);
                    let mut q = sqlx::query::<$db>(ledger_insert_sql($postgres, size));
                    for r in chunk {
                        q = q
                            .bind(r.request_id.as_str())
                            .bind(r.created_at)
                            .bind(r.organization_id.as_deref())
                            .bind(r.key_id.as_deref())
                            .bind(r.requested_model.as_str())
                            .bind(r.served_model.as_deref())
                            .bind(r.provider.as_deref())
                            .bind(i64::from(r.attempts))
                            .bind(r.streamed)
                            .bind(r.outcome.as_str())
                            .bind(i64::from(r.status))
                            .bind(r.prompt_tokens as i64)
                            .bind(r.completion_tokens as i64)
                            .bind(r.cached_tokens as i64)
                            .bind(r.cache_write_tokens as i64)
                            .bind(r.reasoning_tokens as i64)
                            .bind(r.usage_source.as_str())
                            .bind(r.cost_micros)
                            .bind(r.latency_ms as i64)
                            .bind(r.ttft_ms.map(|t| t as i64))
                            .bind(r.error.as_deref())
                            .bind(r.prompt_counted)
                            .bind(r.client_request_id.as_deref())
                            .bind(r.continued_from_json());
                    }
                    q.execute(&mut *tx).await?;
                    rest = tail;
                }
                tx.commit().await?;
            }};
        }
        match self {
            Store::Sqlite(pool) => insert_all!(pool, sqlx::Sqlite, false),
            Store::Postgres(pool) => insert_all!(pool, sqlx::Postgres, true),
        }
        Ok(())
    }

    /// Ledger rows for one request id (tests and support use this).
    pub async fn usage_rows(&self, request_id: &str) -> Result<Vec<UsageRow>, StoreError> {
        const SQL: &str = "SELECT request_id, key_id, outcome, prompt_tokens, completion_tokens, cost_micros, prompt_counted \
                           FROM usage_events WHERE request_id = $1";
        Ok(on_pool!(self, |pool, sql| sqlx::query_as::<_, UsageRow>(sql).bind(request_id).fetch_all(pool).await, SQL)?)
    }

    /// What each key used since `since_ms`, from the ledger (the source of truth for quotas and budgets).
    pub async fn ledger_totals_since(&self, since_ms: i64) -> Result<Vec<(String, LedgerTotals)>, StoreError> {
        const SQL: &str = "SELECT key_id, \
                           CAST(SUM(CASE WHEN prompt_counted THEN 1 ELSE 0 END) AS BIGINT), \
                           CAST(SUM(COALESCE(cost_micros, 0)) AS BIGINT), \
                           CAST(SUM(prompt_tokens + completion_tokens) AS BIGINT) \
                           FROM usage_events WHERE key_id IS NOT NULL AND created_at >= $1 GROUP BY key_id";
        let rows = on_pool!(
            self,
            |pool, sql| sqlx::query_as::<_, (String, i64, i64, i64)>(sql).bind(since_ms).fetch_all(pool).await,
            SQL
        )?;
        Ok(rows
            .into_iter()
            .map(|(key, prompts, cost_micros, tokens)| (key, LedgerTotals { prompts, cost_micros, tokens }))
            .collect())
    }
}

/// A key's totals over a span of the ledger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LedgerTotals {
    pub prompts: i64,
    pub cost_micros: i64,
    pub tokens: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UsageRow {
    pub request_id: String,
    pub key_id: Option<String>,
    pub outcome: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_micros: Option<i64>,
    pub prompt_counted: bool,
}

/// Rows per ledger statement, largest first (see `Store::insert_usage`). 32 rows of 24 values stay far
/// below either database's limit on bound parameters.
const LEDGER_CHUNKS: [usize; 6] = [32, 16, 8, 4, 2, 1];
const LEDGER_COLUMNS: &str = "request_id, created_at, organization_id, key_id, requested_model, served_model, \
                              provider, attempts, streamed, outcome, status, prompt_tokens, completion_tokens, \
                              cached_tokens, cache_write_tokens, reasoning_tokens, usage_source, cost_micros, \
                              latency_ms, ttft_ms, error, prompt_counted, client_request_id, continued_from";

/// The ledger's insert for `LEDGER_CHUNKS[size]` rows, in the backend's placeholder style; built once.
fn ledger_insert_sql(postgres: bool, size: usize) -> &'static str {
    static SQL: [std::sync::OnceLock<Vec<String>>; 2] = [std::sync::OnceLock::new(), std::sync::OnceLock::new()];
    let all = SQL[usize::from(postgres)].get_or_init(|| {
        let per_row = LEDGER_COLUMNS.split(',').count();
        LEDGER_CHUNKS
            .iter()
            .map(|&rows| {
                let mut sql = format!("INSERT INTO usage_events ({LEDGER_COLUMNS}) VALUES ");
                let mut n = 0;
                for row in 0..rows {
                    sql.push_str(if row == 0 { "(" } else { ", (" });
                    for col in 0..per_row {
                        n += 1;
                        if col > 0 {
                            sql.push_str(", ");
                        }
                        if postgres {
                            sql.push_str(&format!("${n}"));
                        } else {
                            sql.push('?');
                        }
                    }
                    sql.push(')');
                }
                sql.push_str(" ON CONFLICT (request_id) DO NOTHING");
                sql
            })
            .collect()
    });
    &all[size]
}
