//! The stored responses' SQL: a response row per stored response and an index row per item id (for
//! `item_reference`), both scoped and expiring. The rules (what is stored, for whom, for how long, the
//! in-memory copy that makes a response readable before its row lands) live in `response_store`.

use super::{Store, StoreError};

/// One stored response as its rows hold it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ResponseRow {
    pub id: String,
    /// The owning organisation's id, or '' for the master key.
    pub scope: String,
    pub key_id: Option<String>,
    /// The provider that answered.
    pub provider: Option<String>,
    pub previous_response_id: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    /// JSON array of the turn's input items.
    pub input: String,
    /// JSON array of the output items, encrypted reasoning included.
    pub output: String,
    /// JSON of the response object.
    pub body: String,
}

/// A response to write, with the ids of its items.
#[derive(Debug, Clone)]
pub struct NewResponse {
    pub row: ResponseRow,
    pub item_ids: Vec<String>,
}

const COLUMNS: &str = "id, scope, key_id, provider, previous_response_id, created_at, expires_at, input, output, body";

impl Store {
    /// Writes responses and their item index in one transaction; a response id already present is left as
    /// it is, and an item id belongs to the latest response that holds it (deleting that one leaves the
    /// earlier copies unreferenced, which is what the caller asked for).
    pub async fn insert_responses(&self, responses: &[NewResponse]) -> Result<(), StoreError> {
        macro_rules! insert_all {
            ($pool:expr, $response_sql:expr, $item_sql:expr) => {{
                let mut tx = $pool.begin().await?;
                for r in responses {
                    let row = &r.row;
                    sqlx::query($response_sql)
                        .bind(&row.id)
                        .bind(&row.scope)
                        .bind(&row.key_id)
                        .bind(&row.provider)
                        .bind(&row.previous_response_id)
                        .bind(row.created_at)
                        .bind(row.expires_at)
                        .bind(&row.input)
                        .bind(&row.output)
                        .bind(&row.body)
                        .execute(&mut *tx)
                        .await?;
                    for item in &r.item_ids {
                        sqlx::query($item_sql)
                            .bind(&row.scope)
                            .bind(item)
                            .bind(&row.id)
                            .bind(row.expires_at)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                tx.commit().await?;
            }};
        }
        // The same statements in each backend's placeholder style.
        const RESPONSE: [&str; 2] = [
            "INSERT INTO responses (id, scope, key_id, provider, previous_response_id, created_at, expires_at, input, \
             output, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            "INSERT INTO responses (id, scope, key_id, provider, previous_response_id, created_at, expires_at, input, \
             output, body) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING",
        ];
        const ITEM: [&str; 2] = [
            "INSERT INTO response_items (scope, item_id, response_id, expires_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (scope, item_id) DO UPDATE SET response_id = excluded.response_id, expires_at = excluded.expires_at",
            "INSERT INTO response_items (scope, item_id, response_id, expires_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (scope, item_id) DO UPDATE SET response_id = excluded.response_id, expires_at = excluded.expires_at",
        ];
        match self {
            Store::Sqlite(pool) => insert_all!(pool, RESPONSE[0], ITEM[0]),
            Store::Postgres(pool) => insert_all!(pool, RESPONSE[1], ITEM[1]),
        }
        Ok(())
    }

    /// The response `id` of `scope`, unless it has expired by `now`.
    pub async fn response(&self, scope: &str, id: &str, now: i64) -> Result<Option<ResponseRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM responses WHERE id = $1 AND scope = $2 AND expires_at > $3");
        Ok(on_pool!(
            self,
            |pool, sql| sqlx::query_as::<_, ResponseRow>(sql).bind(id).bind(scope).bind(now).fetch_optional(pool).await,
            sql
        )?)
    }

    /// Which stored response of `scope` holds the item `item_id`.
    pub async fn response_of_item(&self, scope: &str, item_id: &str, now: i64) -> Result<Option<String>, StoreError> {
        const SQL: &str =
            "SELECT response_id FROM response_items WHERE scope = $1 AND item_id = $2 AND expires_at > $3";
        Ok(on_pool!(
            self,
            |pool, sql| sqlx::query_scalar::<_, String>(sql)
                .bind(scope)
                .bind(item_id)
                .bind(now)
                .fetch_optional(pool)
                .await,
            SQL
        )?)
    }

    /// Deletes the response `id` of `scope` and its item index; `false` when there was none.
    pub async fn delete_response(&self, scope: &str, id: &str) -> Result<bool, StoreError> {
        const ITEMS: &str = "DELETE FROM response_items WHERE response_id = $1 AND scope = $2";
        const RESPONSE: &str = "DELETE FROM responses WHERE id = $1 AND scope = $2";
        on_pool!(self, |pool, sql| sqlx::query(sql).bind(id).bind(scope).execute(pool).await.map(|_| ()), ITEMS)?;
        let done = on_pool!(
            self,
            |pool, sql| sqlx::query(sql).bind(id).bind(scope).execute(pool).await.map(|r| r.rows_affected()),
            RESPONSE
        )?;
        Ok(done > 0)
    }

    /// Removes every response and item index row expired by `now`; returns the responses removed.
    pub async fn delete_expired_responses(&self, now: i64) -> Result<u64, StoreError> {
        const ITEMS: &str = "DELETE FROM response_items WHERE expires_at <= $1";
        const RESPONSES: &str = "DELETE FROM responses WHERE expires_at <= $1";
        on_pool!(self, |pool, sql| sqlx::query(sql).bind(now).execute(pool).await.map(|_| ()), ITEMS)?;
        Ok(on_pool!(
            self,
            |pool, sql| sqlx::query(sql).bind(now).execute(pool).await.map(|r| r.rows_affected()),
            RESPONSES
        )?)
    }
}
