//! Idempotency keys' SQL: claiming a key (the primary key decides between replicas), keeping the first
//! answer, releasing a claim whose request did not answer, and the sweep. The rules (which routes, what
//! is kept, what a repeat gets) live in `http::idempotency`.

use super::{Store, StoreError};

/// Who a key belongs to: the organisation ('' for the master key) and the API key ('' likewise).
#[derive(Debug, Clone)]
pub struct IdempotencyScope<'a> {
    pub scope: &'a str,
    pub key_id: &'a str,
    pub idempotency_key: &'a str,
    /// The claiming request's token.
    pub owner: &'a str,
}

/// A claimed key as its row holds it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct IdempotencyRow {
    pub fingerprint: String,
    /// `running`, `done` or `too_large`.
    pub state: String,
    pub status: Option<i64>,
    /// JSON array of `[name, value]` pairs.
    pub headers: Option<String>,
    pub body: Option<String>,
    pub created_at: i64,
}

/// What claiming a key found.
#[derive(Debug)]
pub enum Claim {
    /// This request holds the key now.
    Claimed,
    /// Another request holds it (running, or done and kept).
    Held(IdempotencyRow),
    /// Another request held it and gave it up while this one looked: try again.
    Released,
}

impl Store {
    /// Claims `key` for a request with `fingerprint`, unless a live claim holds it. A claim expired by
    /// `now`, or `running` since before `abandoned_before` (its replica died), is taken over.
    pub async fn claim_idempotency_key(
        &self,
        key: &IdempotencyScope<'_>,
        fingerprint: &str,
        now: i64,
        expires_at: i64,
        abandoned_before: i64,
    ) -> Result<Claim, StoreError> {
        const STALE: &str = "DELETE FROM idempotency_keys WHERE scope = $1 AND key_id = $2 AND idempotency_key = $3 \
                             AND (expires_at <= $4 OR (state = 'running' AND created_at < $5))";
        const CLAIM: &str = "INSERT INTO idempotency_keys (scope, key_id, idempotency_key, fingerprint, owner, state, \
                             created_at, expires_at) VALUES ($1, $2, $3, $4, $7, 'running', $5, $6) \
                             ON CONFLICT (scope, key_id, idempotency_key) DO NOTHING";
        const READ: &str = "SELECT fingerprint, state, status, headers, body, created_at FROM idempotency_keys \
                            WHERE scope = $1 AND key_id = $2 AND idempotency_key = $3";
        let (scope, key_id, idem) = (key.scope, key.key_id, key.idempotency_key);
        on_pool!(
            self,
            |pool, sql| sqlx::query(sql)
                .bind(scope)
                .bind(key_id)
                .bind(idem)
                .bind(now)
                .bind(abandoned_before)
                .execute(pool)
                .await
                .map(|_| ()),
            STALE
        )?;
        let claimed = on_pool!(
            self,
            |pool, sql| sqlx::query(sql)
                .bind(scope)
                .bind(key_id)
                .bind(idem)
                .bind(fingerprint)
                .bind(now)
                .bind(expires_at)
                .bind(key.owner)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()),
            CLAIM
        )?;
        if claimed == 1 {
            return Ok(Claim::Claimed);
        }
        let row: Option<IdempotencyRow> = on_pool!(
            self,
            |pool, sql| sqlx::query_as(sql).bind(scope).bind(key_id).bind(idem).fetch_optional(pool).await,
            READ
        )?;
        Ok(match row {
            Some(row) => Claim::Held(row),
            // Given up between the two statements: the key is free to claim again.
            None => Claim::Released,
        })
    }

    /// Keeps the answer of the request holding `key`: `done` with its status, headers and body, or
    /// `too_large` without them.
    pub async fn keep_idempotent_answer(
        &self,
        key: &IdempotencyScope<'_>,
        status: u16,
        headers: Option<&str>,
        body: Option<&str>,
    ) -> Result<(), StoreError> {
        const SQL: &str = "UPDATE idempotency_keys SET state = $4, status = $5, headers = $6, body = $7 \
                           WHERE scope = $1 AND key_id = $2 AND idempotency_key = $3 AND owner = $8 AND state = 'running'";
        let state = if body.is_some() { "done" } else { "too_large" };
        on_pool!(
            self,
            |pool, sql| sqlx::query(sql)
                .bind(key.scope)
                .bind(key.key_id)
                .bind(key.idempotency_key)
                .bind(state)
                .bind(i64::from(status))
                .bind(headers)
                .bind(body)
                .bind(key.owner)
                .execute(pool)
                .await
                .map(|_| ()),
            SQL
        )?;
        Ok(())
    }

    /// Gives up a claim whose request did not answer (failed, or its client left): a repeat runs again.
    pub async fn release_idempotency_key(&self, key: &IdempotencyScope<'_>) -> Result<(), StoreError> {
        const SQL: &str = "DELETE FROM idempotency_keys WHERE scope = $1 AND key_id = $2 AND idempotency_key = $3 \
                           AND owner = $4 AND state = 'running'";
        on_pool!(
            self,
            |pool, sql| sqlx::query(sql)
                .bind(key.scope)
                .bind(key.key_id)
                .bind(key.idempotency_key)
                .bind(key.owner)
                .execute(pool)
                .await
                .map(|_| ()),
            SQL
        )?;
        Ok(())
    }

    /// Removes every key expired by `now`.
    pub async fn delete_expired_idempotency_keys(&self, now: i64) -> Result<u64, StoreError> {
        const SQL: &str = "DELETE FROM idempotency_keys WHERE expires_at <= $1";
        Ok(on_pool!(self, |pool, sql| sqlx::query(sql).bind(now).execute(pool).await.map(|r| r.rows_affected()), SQL)?)
    }
}
