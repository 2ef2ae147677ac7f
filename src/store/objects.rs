//! Who owns which upstream file and batch (`upstream_objects`): recorded when the gateway makes one for
//! a caller, looked up before any read, cancel or delete, listed per organisation. The rules (what is
//! passed where, what a stranger gets) live in `http::files`.

use super::{Store, StoreError};

/// `file` or `batch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    File,
    Batch,
}

impl ObjectKind {
    fn as_str(self) -> &'static str {
        match self {
            ObjectKind::File => "file",
            ObjectKind::Batch => "batch",
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ObjectRow {
    pub provider: String,
    pub id: String,
    /// The provider's JSON for it as last seen.
    pub object: String,
}

impl Store {
    /// Records that `scope` owns `id` at `provider`, as `object` says it is (a repeat is a no-op: the
    /// first owner keeps it).
    #[allow(clippy::too_many_arguments)]
    pub async fn record_object(
        &self,
        kind: ObjectKind,
        provider: &str,
        id: &str,
        scope: &str,
        key_id: &str,
        now: i64,
        object: &str,
        purpose: &str,
    ) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO upstream_objects (kind, provider, id, scope, key_id, created_at, object, \
                           purpose) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                           ON CONFLICT (kind, provider, id) DO NOTHING";
        on_pool!(
            self,
            |pool, sql| sqlx::query(sql)
                .bind(kind.as_str())
                .bind(provider)
                .bind(id)
                .bind(scope)
                .bind(key_id)
                .bind(now)
                .bind(object)
                .bind(purpose)
                .execute(pool)
                .await
                .map(|_| ()),
            SQL
        )?;
        Ok(())
    }

    /// The provider holding `scope`'s object `id`, if `scope` owns one by that id.
    pub async fn owned_object(&self, kind: ObjectKind, id: &str, scope: &str) -> Result<Option<String>, StoreError> {
        const SQL: &str = "SELECT provider FROM upstream_objects WHERE kind = $1 AND id = $2 AND scope = $3 \
                           ORDER BY created_at LIMIT 1";
        let row: Option<(String,)> = on_pool!(
            self,
            |pool, sql| sqlx::query_as(sql).bind(kind.as_str()).bind(id).bind(scope).fetch_optional(pool).await,
            SQL
        )?;
        Ok(row.map(|(p,)| p))
    }

    /// `scope`'s objects, newest first, after the one called `after` when given, with `purpose` when
    /// given, at most `limit`.
    pub async fn owned_objects(
        &self,
        kind: ObjectKind,
        scope: &str,
        after: Option<&str>,
        purpose: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ObjectRow>, StoreError> {
        const SQL: &str = "SELECT provider, id, object FROM upstream_objects WHERE kind = $1 \
                           AND scope = $2 AND ($5 = '' OR purpose = $5) \
                           AND ($3 = '' OR (created_at, id) < (SELECT created_at, id FROM upstream_objects \
                           WHERE kind = $1 AND scope = $2 AND id = $3 LIMIT 1)) \
                           ORDER BY created_at DESC, id DESC LIMIT $4";
        let rows = on_pool!(
            self,
            |pool, sql| sqlx::query_as(sql)
                .bind(kind.as_str())
                .bind(scope)
                .bind(after.unwrap_or_default())
                .bind(limit)
                .bind(purpose.unwrap_or_default())
                .fetch_all(pool)
                .await,
            SQL
        )?;
        Ok(rows)
    }

    /// Keeps what the provider now says of an object.
    pub async fn update_object(
        &self,
        kind: ObjectKind,
        provider: &str,
        id: &str,
        object: &str,
    ) -> Result<(), StoreError> {
        const SQL: &str = "UPDATE upstream_objects SET object = $4 WHERE kind = $1 AND provider = $2 AND id = $3";
        on_pool!(
            self,
            |pool, sql| sqlx::query(sql)
                .bind(kind.as_str())
                .bind(provider)
                .bind(id)
                .bind(object)
                .execute(pool)
                .await
                .map(|_| ()),
            SQL
        )?;
        Ok(())
    }

    /// Forgets `scope`'s object `id` (deleted upstream).
    pub async fn forget_object(&self, kind: ObjectKind, id: &str, scope: &str) -> Result<(), StoreError> {
        const SQL: &str = "DELETE FROM upstream_objects WHERE kind = $1 AND id = $2 AND scope = $3";
        on_pool!(
            self,
            |pool, sql| sqlx::query(sql).bind(kind.as_str()).bind(id).bind(scope).execute(pool).await.map(|_| ()),
            SQL
        )?;
        Ok(())
    }
}
