//! All SQL. Postgres when `DATABASE_URL=postgres://…`, otherwise a SQLite file (`./data/switchyard.db` by
//! default, created on first start). The same statements run on both: they are written with `$1`-style
//! parameters, which SQLite reads as numbered parameters once `$` becomes `?`. Every value is bound, never
//! formatted into SQL. Ids and timestamps are made by the caller (the domain layer), not by the database.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

pub const DEFAULT_SQLITE_PATH: &str = "data/switchyard.db";

#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Setup(String),
}

impl StoreError {
    /// The database could not be reached (as opposed to refusing a statement).
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database(e) => {
                matches!(
                    e,
                    sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_)
                ) || e.as_database_error().is_some_and(|d| {
                    // SQLite's "database is locked" / "busy" (another writer holds it past the busy timeout).
                    matches!(d.code().as_deref(), Some("5" | "6" | "261" | "517"))
                })
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct OrganizationRow {
    pub id: String,
    pub name: String,
    pub blocked_providers: String,
    pub allow_cheaper_swaps: bool,
    /// A plain model name may be answered by the next model of its fallback chain.
    pub model_fallbacks: bool,
    /// A stream whose provider fails mid-way may continue on the next target.
    pub stream_continuation: bool,
    /// The regions its traffic may go to, a JSON array (`["global"]` by default).
    pub allowed_regions: String,
    /// Opted in to the response cache: how long an answer is kept, in seconds.
    pub response_cache_ttl_seconds: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct PlanRow {
    pub name: String,
    pub public_alias: Option<String>,
    pub daily_prompt_quota: Option<i64>,
    pub monthly_prompt_quota: Option<i64>,
    pub monthly_token_allowance: Option<i64>,
    pub rpm_limit: Option<i64>,
    pub tpm_limit: Option<i64>,
    pub max_parallel: Option<i64>,
    pub budget_micros: Option<i64>,
    pub budget_period: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: i64,
    #[serde(serialize_with = "rfc3339")]
    pub updated_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct KeyRow {
    pub id: String,
    pub organization_id: String,
    pub name: String,
    #[serde(skip)]
    pub key_hash: String,
    pub display_prefix: String,
    pub plan: String,
    pub status: String,
    pub expires_at: Option<i64>,
    pub models: Option<String>,
    pub metadata: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub revoked_at: Option<i64>,
    #[serde(skip)]
    pub previous_hash: Option<String>,
    pub previous_expires_at: Option<i64>,
    /// Opted in to the response cache (over its organisation's setting): seconds an answer is kept.
    pub response_cache_ttl_seconds: Option<i64>,
    /// Per-key limits; `None` falls back to the plan's.
    #[sqlx(flatten)]
    pub limits: KeyLimits,
}

#[derive(Debug, Clone, Default, sqlx::FromRow, serde::Serialize)]
pub struct KeyLimits {
    pub daily_prompt_quota: Option<i64>,
    pub monthly_prompt_quota: Option<i64>,
    pub rpm_limit: Option<i64>,
    pub tpm_limit: Option<i64>,
    pub max_parallel: Option<i64>,
    pub budget_micros: Option<i64>,
    pub budget_period: Option<String>,
}

/// Runs one statement on whichever backend is in use.
macro_rules! on_pool {
    ($store:expr, |$pool:ident, $sql:ident| $body:expr, $text:expr) => {
        match $store {
            Store::Sqlite($pool) => {
                let owned = $text.replace('$', "?");
                let $sql = sqlx::AssertSqlSafe(owned);
                $body
            }
            Store::Postgres($pool) => {
                let $sql = sqlx::AssertSqlSafe($text.to_owned());
                $body
            }
        }
    };
}

// After `on_pool!`, which they use.
pub mod accounts;
pub mod idempotency;
pub mod ledger;
pub mod objects;
pub mod responses;

pub use ledger::{LedgerTotals, UsageRow};

impl Store {
    /// Connects (creating the SQLite file if needed) and applies the migrations.
    pub async fn connect(database_url: Option<&str>) -> Result<Store, StoreError> {
        let store = match database_url.filter(|u| !u.is_empty()) {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => Store::Postgres(
                PgPoolOptions::new().max_connections(16).acquire_timeout(Duration::from_secs(3)).connect(url).await?,
            ),
            other => {
                let url = match other {
                    Some(url) => url.to_owned(),
                    None => {
                        std::fs::create_dir_all("data")
                            .map_err(|e| StoreError::Setup(format!("cannot create ./data: {e}")))?;
                        format!("sqlite://{DEFAULT_SQLITE_PATH}")
                    }
                };
                let options = SqliteConnectOptions::from_str(&url)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .busy_timeout(Duration::from_secs(5))
                    .foreign_keys(true);
                Store::Sqlite(SqlitePoolOptions::new().max_connections(8).connect_with(options).await?)
            }
        };
        store.migrate().await?;
        Ok(store)
    }

    /// One round trip to the database.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(self, |pool, sql| sqlx::query(sql).execute(pool).await.map(|_| ()), "SELECT 1")?;
        Ok(())
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(pool) => sqlx::migrate!("./migrations/sqlite").run(pool).await?,
            Store::Postgres(pool) => sqlx::migrate!("./migrations/postgres").run(pool).await?,
        }
        Ok(())
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    // --- organisations ---

    pub async fn insert_organization(&self, org: &OrganizationRow) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO organizations (id, name, blocked_providers, allow_cheaper_swaps, created_at, updated_at, \
                           model_fallbacks, stream_continuation, allowed_regions, response_cache_ttl_seconds) \
                           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
        on_pool!(
            self,
            |pool, sql| {
                sqlx::query(sql)
                    .bind(&org.id)
                    .bind(&org.name)
                    .bind(&org.blocked_providers)
                    .bind(org.allow_cheaper_swaps)
                    .bind(org.created_at)
                    .bind(org.updated_at)
                    .bind(org.model_fallbacks)
                    .bind(org.stream_continuation)
                    .bind(&org.allowed_regions)
                    .bind(org.response_cache_ttl_seconds)
                    .execute(pool)
                    .await
                    .map(|_| ())
            },
            SQL
        )?;
        Ok(())
    }

    pub async fn organization(&self, id: &str) -> Result<Option<OrganizationRow>, StoreError> {
        const SQL: &str = "SELECT * FROM organizations WHERE id = $1";
        Ok(on_pool!(
            self,
            |pool, sql| sqlx::query_as::<_, OrganizationRow>(sql).bind(id).fetch_optional(pool).await,
            SQL
        )?)
    }

    /// A page of organisations whose name contains `search` (matched literally: LIKE wildcards escaped).
    pub async fn organizations(
        &self,
        search: Option<&str>,
        sort: Sort,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<OrganizationRow>, StoreError> {
        let text = format!(
            "SELECT * FROM organizations WHERE name LIKE $1 ESCAPE '\\' ORDER BY {} LIMIT $2 OFFSET $3",
            sort.order_by()
        );
        let pattern = format!("%{}%", escape_like(search.unwrap_or("")));
        Ok(on_pool!(
            self,
            |pool, sql| sqlx::query_as::<_, OrganizationRow>(sql)
                .bind(&pattern)
                .bind(limit)
                .bind(offset)
                .fetch_all(pool)
                .await,
            text
        )?)
    }

    /// Every organisation (for the key cache's view of blocked providers).
    pub async fn all_organizations(&self) -> Result<Vec<OrganizationRow>, StoreError> {
        const SQL: &str = "SELECT * FROM organizations";
        Ok(on_pool!(self, |pool, sql| sqlx::query_as::<_, OrganizationRow>(sql).fetch_all(pool).await, SQL)?)
    }

    pub async fn update_organization(&self, org: &OrganizationRow) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE organizations SET name = $2, blocked_providers = $3, allow_cheaper_swaps = $4, updated_at = $5, \
                           model_fallbacks = $6, stream_continuation = $7, allowed_regions = $8, \
                           response_cache_ttl_seconds = $9 WHERE id = $1";
        let done = on_pool!(
            self,
            |pool, sql| {
                sqlx::query(sql)
                    .bind(&org.id)
                    .bind(&org.name)
                    .bind(&org.blocked_providers)
                    .bind(org.allow_cheaper_swaps)
                    .bind(org.updated_at)
                    .bind(org.model_fallbacks)
                    .bind(org.stream_continuation)
                    .bind(&org.allowed_regions)
                    .bind(org.response_cache_ttl_seconds)
                    .execute(pool)
                    .await
                    .map(|r| r.rows_affected())
            },
            SQL
        )?;
        Ok(done == 1)
    }

    pub async fn delete_organization(&self, id: &str) -> Result<bool, StoreError> {
        const SQL: &str = "DELETE FROM organizations WHERE id = $1";
        let done =
            on_pool!(self, |pool, sql| sqlx::query(sql).bind(id).execute(pool).await.map(|r| r.rows_affected()), SQL)?;
        Ok(done == 1)
    }

    // --- plans ---

    /// Inserts a plan unless one of that name exists (seeding never overwrites an admin's edits).
    pub async fn seed_plan(&self, plan: &PlanRow) -> Result<(), StoreError> {
        self.write_plan(plan, "DO NOTHING").await
    }

    /// One insert for seeding and saving plans; `on_conflict` is one of the two fixed clauses above.
    async fn write_plan(&self, plan: &PlanRow, on_conflict: &'static str) -> Result<(), StoreError> {
        let text = format!(
            "INSERT INTO plans (name, public_alias, daily_prompt_quota, monthly_prompt_quota, monthly_token_allowance, \
             rpm_limit, tpm_limit, max_parallel, budget_micros, budget_period, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (name) {on_conflict}"
        );
        on_pool!(
            self,
            |pool, sql| {
                sqlx::query(sql)
                    .bind(&plan.name)
                    .bind(&plan.public_alias)
                    .bind(plan.daily_prompt_quota)
                    .bind(plan.monthly_prompt_quota)
                    .bind(plan.monthly_token_allowance)
                    .bind(plan.rpm_limit)
                    .bind(plan.tpm_limit)
                    .bind(plan.max_parallel)
                    .bind(plan.budget_micros)
                    .bind(&plan.budget_period)
                    .bind(plan.created_at)
                    .bind(plan.updated_at)
                    .execute(pool)
                    .await
                    .map(|_| ())
            },
            text
        )?;
        Ok(())
    }

    pub async fn plans(&self) -> Result<Vec<PlanRow>, StoreError> {
        const SQL: &str = "SELECT * FROM plans ORDER BY created_at, name";
        Ok(on_pool!(self, |pool, sql| sqlx::query_as::<_, PlanRow>(sql).fetch_all(pool).await, SQL)?)
    }

    pub async fn plan(&self, name: &str) -> Result<Option<PlanRow>, StoreError> {
        const SQL: &str = "SELECT * FROM plans WHERE name = $1";
        Ok(on_pool!(self, |pool, sql| sqlx::query_as::<_, PlanRow>(sql).bind(name).fetch_optional(pool).await, SQL)?)
    }

    // --- keys ---

    pub async fn insert_key(&self, key: &KeyRow) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO api_keys (id, organization_id, name, key_hash, display_prefix, plan, status, expires_at, \
                           models, metadata, created_at, updated_at, revoked_at, daily_prompt_quota, monthly_prompt_quota, \
                           rpm_limit, tpm_limit, max_parallel, budget_micros, budget_period, response_cache_ttl_seconds) \
                           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)";
        on_pool!(
            self,
            |pool, sql| {
                sqlx::query(sql)
                    .bind(&key.id)
                    .bind(&key.organization_id)
                    .bind(&key.name)
                    .bind(&key.key_hash)
                    .bind(&key.display_prefix)
                    .bind(&key.plan)
                    .bind(&key.status)
                    .bind(key.expires_at)
                    .bind(&key.models)
                    .bind(&key.metadata)
                    .bind(key.created_at)
                    .bind(key.updated_at)
                    .bind(key.revoked_at)
                    .bind(key.limits.daily_prompt_quota)
                    .bind(key.limits.monthly_prompt_quota)
                    .bind(key.limits.rpm_limit)
                    .bind(key.limits.tpm_limit)
                    .bind(key.limits.max_parallel)
                    .bind(key.limits.budget_micros)
                    .bind(&key.limits.budget_period)
                    .bind(key.response_cache_ttl_seconds)
                    .execute(pool)
                    .await
                    .map(|_| ())
            },
            SQL
        )?;
        Ok(())
    }

    pub async fn key(&self, id: &str) -> Result<Option<KeyRow>, StoreError> {
        const SQL: &str = "SELECT * FROM api_keys WHERE id = $1";
        Ok(on_pool!(self, |pool, sql| sqlx::query_as::<_, KeyRow>(sql).bind(id).fetch_optional(pool).await, SQL)?)
    }

    /// Keys, optionally of one organisation and matching `search` in their name or display prefix.
    pub async fn keys(
        &self,
        organization_id: Option<&str>,
        search: Option<&str>,
        sort: Sort,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<KeyRow>, StoreError> {
        let text = format!(
            "SELECT * FROM api_keys WHERE ($1 IS NULL OR organization_id = $1) \
             AND (name LIKE $2 ESCAPE '\\' OR display_prefix LIKE $2 ESCAPE '\\') ORDER BY {} LIMIT $3 OFFSET $4",
            sort.order_by()
        );
        let pattern = format!("%{}%", escape_like(search.unwrap_or("")));
        Ok(on_pool!(
            self,
            |pool, sql| sqlx::query_as::<_, KeyRow>(sql)
                .bind(organization_id)
                .bind(&pattern)
                .bind(limit)
                .bind(offset)
                .fetch_all(pool)
                .await,
            text
        )?)
    }

    /// Every key that can still authenticate, for the in-memory cache.
    pub async fn active_keys(&self) -> Result<Vec<KeyRow>, StoreError> {
        const SQL: &str = "SELECT * FROM api_keys WHERE status = 'active'";
        Ok(on_pool!(self, |pool, sql| sqlx::query_as::<_, KeyRow>(sql).fetch_all(pool).await, SQL)?)
    }

    /// Saves a key's editable fields (name, plan, models, expiry, metadata).
    pub async fn update_key(&self, k: &KeyRow) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE api_keys SET name = $2, plan = $3, models = $4, expires_at = $5, metadata = $6, updated_at = $7, \
                           daily_prompt_quota = $8, monthly_prompt_quota = $9, rpm_limit = $10, tpm_limit = $11, \
                           max_parallel = $12, budget_micros = $13, budget_period = $14, response_cache_ttl_seconds = $15 \
                           WHERE id = $1";
        let done = on_pool!(
            self,
            |pool, sql| {
                sqlx::query(sql)
                    .bind(&k.id)
                    .bind(&k.name)
                    .bind(&k.plan)
                    .bind(&k.models)
                    .bind(k.expires_at)
                    .bind(&k.metadata)
                    .bind(k.updated_at)
                    .bind(k.limits.daily_prompt_quota)
                    .bind(k.limits.monthly_prompt_quota)
                    .bind(k.limits.rpm_limit)
                    .bind(k.limits.tpm_limit)
                    .bind(k.limits.max_parallel)
                    .bind(k.limits.budget_micros)
                    .bind(&k.limits.budget_period)
                    .bind(k.response_cache_ttl_seconds)
                    .execute(pool)
                    .await
                    .map(|r| r.rows_affected())
            },
            SQL
        )?;
        Ok(done == 1)
    }

    /// Saves a plan's limits (insert or replace).
    pub async fn upsert_plan(&self, plan: &PlanRow) -> Result<(), StoreError> {
        self.write_plan(
            plan,
            "DO UPDATE SET public_alias = $2, daily_prompt_quota = $3, monthly_prompt_quota = $4, \
             monthly_token_allowance = $5, rpm_limit = $6, tpm_limit = $7, max_parallel = $8, budget_micros = $9, \
             budget_period = $10, updated_at = $12",
        )
        .await
    }

    /// Deletes a plan no key uses; `false` when it does not exist or is in use.
    pub async fn delete_plan(&self, name: &str) -> Result<bool, StoreError> {
        const SQL: &str = "DELETE FROM plans WHERE name = $1 AND NOT EXISTS (SELECT 1 FROM api_keys WHERE plan = $1)";
        let done = on_pool!(
            self,
            |pool, sql| sqlx::query(sql).bind(name).execute(pool).await.map(|r| r.rows_affected()),
            SQL
        )?;
        Ok(done == 1)
    }

    /// Gives a key a new secret; the old one keeps working until `grace_until`.
    pub async fn rotate_key(
        &self,
        id: &str,
        new_hash: &str,
        display_prefix: &str,
        grace_until: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE api_keys SET previous_hash = key_hash, previous_expires_at = $4, key_hash = $2, \
                           display_prefix = $3, updated_at = $5 WHERE id = $1 AND status = 'active'";
        let done = on_pool!(
            self,
            |pool, sql| {
                sqlx::query(sql)
                    .bind(id)
                    .bind(new_hash)
                    .bind(display_prefix)
                    .bind(grace_until)
                    .bind(now)
                    .execute(pool)
                    .await
                    .map(|r| r.rows_affected())
            },
            SQL
        )?;
        Ok(done == 1)
    }

    pub async fn revoke_key(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE api_keys SET status = 'revoked', revoked_at = $2, updated_at = $2, previous_hash = NULL \
                           WHERE id = $1 AND status <> 'revoked'";
        let done = on_pool!(
            self,
            |pool, sql| sqlx::query(sql).bind(id).bind(now).execute(pool).await.map(|r| r.rows_affected()),
            SQL
        )?;
        Ok(done == 1)
    }

    /// Deletes a key for good (its usage rows stay: they name the key by id).
    /// Whether any key of the organisation is on this plan.
    pub async fn organization_has_plan(&self, organization_id: &str, plan: &str) -> Result<bool, StoreError> {
        const SQL: &str = "SELECT id FROM api_keys WHERE organization_id = $1 AND plan = $2 LIMIT 1";
        let found = on_pool!(
            self,
            |pool, sql| sqlx::query(sql)
                .bind(organization_id)
                .bind(plan)
                .fetch_optional(pool)
                .await
                .map(|r| r.is_some()),
            SQL
        )?;
        Ok(found)
    }

    pub async fn delete_key(&self, id: &str) -> Result<bool, StoreError> {
        const SQL: &str = "DELETE FROM api_keys WHERE id = $1";
        let done =
            on_pool!(self, |pool, sql| sqlx::query(sql).bind(id).execute(pool).await.map(|r| r.rows_affected()), SQL)?;
        Ok(done == 1)
    }
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct AuditRow {
    pub id: String,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub before_state: Option<String>,
    pub after_state: Option<String>,
}

impl Store {
    pub async fn insert_audit(&self, row: &AuditRow) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO audit_log (id, at, actor, action, target_type, target_id, before_state, after_state) \
                           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
        on_pool!(
            self,
            |pool, sql| {
                sqlx::query(sql)
                    .bind(&row.id)
                    .bind(row.at)
                    .bind(&row.actor)
                    .bind(&row.action)
                    .bind(&row.target_type)
                    .bind(&row.target_id)
                    .bind(&row.before_state)
                    .bind(&row.after_state)
                    .execute(pool)
                    .await
                    .map(|_| ())
            },
            SQL
        )?;
        Ok(())
    }

    /// The newest admin actions first.
    pub async fn audit(&self, limit: i64, offset: i64) -> Result<Vec<AuditRow>, StoreError> {
        const SQL: &str = "SELECT * FROM audit_log ORDER BY at DESC, id DESC LIMIT $1 OFFSET $2";
        Ok(on_pool!(
            self,
            |pool, sql| sqlx::query_as::<_, AuditRow>(sql).bind(limit).bind(offset).fetch_all(pool).await,
            SQL
        )?)
    }
}

/// A list's order: a field from a fixed list (never text from the request) and a direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sort {
    pub field: SortField,
    pub descending: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SortField {
    Name,
    #[default]
    CreatedAt,
    UpdatedAt,
}

impl Sort {
    /// `name`, `created_at` or `updated_at`, with a leading `-` for descending.
    pub fn parse(s: &str) -> Option<Sort> {
        let (descending, field) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let field = match field {
            "name" => SortField::Name,
            "created_at" => SortField::CreatedAt,
            "updated_at" => SortField::UpdatedAt,
            _ => return None,
        };
        Some(Sort { field, descending })
    }

    fn order_by(self) -> &'static str {
        match (self.field, self.descending) {
            (SortField::Name, false) => "name ASC, id ASC",
            (SortField::Name, true) => "name DESC, id DESC",
            (SortField::CreatedAt, false) => "created_at ASC, id ASC",
            (SortField::CreatedAt, true) => "created_at DESC, id DESC",
            (SortField::UpdatedAt, false) => "updated_at ASC, id ASC",
            (SortField::UpdatedAt, true) => "updated_at DESC, id DESC",
        }
    }
}

/// How `usage_summary` groups rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UsageGroup {
    Day,
    Model,
    Key,
}

/// Filters for `usage_summary`; times are Unix milliseconds, `to` exclusive.
#[derive(Debug, Clone, Default)]
pub struct UsageFilter {
    pub organization_id: Option<String>,
    pub key_id: Option<String>,
    pub model: Option<String>,
    pub from: i64,
    pub to: i64,
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct UsageSummaryRow {
    pub group_key: Option<String>,
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_micros: i64,
}

impl Store {
    /// Requests, tokens and spend grouped by day, model or key.
    pub async fn usage_summary(
        &self,
        filter: &UsageFilter,
        group: UsageGroup,
    ) -> Result<Vec<UsageSummaryRow>, StoreError> {
        // The grouping expression comes from this fixed list, never from the request.
        let expr = match group {
            UsageGroup::Day => "CAST(created_at / 86400000 AS TEXT)",
            UsageGroup::Model => "served_model",
            UsageGroup::Key => "key_id",
        };
        let text = format!(
            "SELECT {expr} AS group_key, COUNT(*) AS requests, CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT) AS prompt_tokens, \
             CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) AS completion_tokens, \
             CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) AS cost_micros FROM usage_events \
             WHERE ($1 IS NULL OR organization_id = $1) AND ($2 IS NULL OR key_id = $2) AND ($3 IS NULL OR served_model = $3) \
             AND created_at >= $4 AND created_at < $5 GROUP BY {expr} ORDER BY {expr}"
        );
        Ok(on_pool!(
            self,
            |pool, sql| sqlx::query_as::<_, UsageSummaryRow>(sql)
                .bind(&filter.organization_id)
                .bind(&filter.key_id)
                .bind(&filter.model)
                .bind(filter.from)
                .bind(filter.to)
                .fetch_all(pool)
                .await,
            text
        )?)
    }
}

/// A key's metered month: what it used, what its plan includes, and what is beyond (overage).
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct BillingRow {
    pub key_id: String,
    pub organization_id: Option<String>,
    pub requests: i64,
    pub tokens: i64,
    pub cost_micros: i64,
    pub included_tokens: Option<i64>,
    pub overage_tokens: i64,
    pub overage_micros: i64,
}

impl Store {
    /// Each key's tokens and cost in `[from, to)`, and the part beyond its plan's monthly token allowance:
    /// requests are taken in order, and the one that crosses the allowance is split pro rata. Overage is
    /// priced at the passthrough cost of those tokens.
    pub async fn billing(
        &self,
        from: i64,
        to: i64,
        organization_id: Option<&str>,
    ) -> Result<Vec<BillingRow>, StoreError> {
        const SQL: &str = "WITH w AS ( \
             SELECT u.key_id, u.organization_id, (u.prompt_tokens + u.completion_tokens) AS t, \
               COALESCE(u.cost_micros, 0) AS c, p.monthly_token_allowance AS a, \
               CAST(SUM(u.prompt_tokens + u.completion_tokens) OVER (PARTITION BY u.key_id \
                 ORDER BY u.created_at, u.request_id ROWS UNBOUNDED PRECEDING) AS BIGINT) AS cum \
             FROM usage_events u JOIN api_keys k ON k.id = u.key_id JOIN plans p ON p.name = k.plan \
             WHERE u.created_at >= $1 AND u.created_at < $2 AND ($3 IS NULL OR u.organization_id = $3)) \
           SELECT key_id, MAX(organization_id) AS organization_id, COUNT(*) AS requests, \
             CAST(SUM(t) AS BIGINT) AS tokens, CAST(SUM(c) AS BIGINT) AS cost_micros, MAX(a) AS included_tokens, \
             CAST(SUM(CASE WHEN a IS NULL OR cum <= a THEN 0 WHEN cum - t >= a THEN t ELSE cum - a END) AS BIGINT) \
               AS overage_tokens, \
             CAST(SUM(CASE WHEN a IS NULL OR cum <= a OR t = 0 THEN 0 WHEN cum - t >= a THEN c \
               ELSE c * (cum - a) / t END) AS BIGINT) AS overage_micros \
           FROM w GROUP BY key_id ORDER BY key_id";
        Ok(on_pool!(
            self,
            |pool, sql| sqlx::query_as::<_, BillingRow>(sql)
                .bind(from)
                .bind(to)
                .bind(organization_id)
                .fetch_all(pool)
                .await,
            SQL
        )?)
    }
}

/// One ledger row as the admin API shows it.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct UsageEvent {
    pub request_id: String,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: i64,
    pub organization_id: Option<String>,
    pub key_id: Option<String>,
    pub requested_model: String,
    pub served_model: Option<String>,
    pub provider: Option<String>,
    pub attempts: i32,
    pub streamed: bool,
    pub outcome: String,
    pub status: i32,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub cache_write_tokens: i64,
    pub reasoning_tokens: i64,
    pub usage_source: String,
    pub cost_micros: Option<i64>,
    pub latency_ms: i64,
    pub ttft_ms: Option<i64>,
    pub error: Option<String>,
    pub prompt_counted: bool,
    pub client_request_id: Option<String>,
    /// A continued stream's earlier attempts (JSON as stored), shown as a list.
    #[serde(serialize_with = "raw_json")]
    pub continued_from: Option<String>,
}

/// A JSON text column shown as the JSON it holds (`null` when absent or unreadable).
/// Moments in the admin API's answers: RFC 3339 in UTC.
fn rfc3339<S: serde::Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::limits::rfc3339(*ms))
}

fn raw_json<S: serde::Serializer>(text: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    use serde::Serialize;
    let value: Option<serde_json::Value> = text.as_deref().and_then(|t| serde_json::from_str(t).ok());
    value.serialize(s)
}

impl Store {
    /// Ledger rows matching the filter, newest first.
    pub async fn usage_events(
        &self,
        filter: &UsageFilter,
        request_id: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<UsageEvent>, StoreError> {
        const SQL: &str = "SELECT request_id, created_at, organization_id, key_id, requested_model, served_model, \
             provider, attempts, streamed, outcome, status, prompt_tokens, completion_tokens, cached_tokens, \
             cache_write_tokens, reasoning_tokens, usage_source, cost_micros, latency_ms, ttft_ms, error, prompt_counted, \
             client_request_id, continued_from FROM usage_events \
             WHERE ($1 IS NULL OR organization_id = $1) AND ($2 IS NULL OR key_id = $2) AND ($3 IS NULL OR served_model = $3) \
             AND created_at >= $4 AND created_at < $5 \
             AND ($8 IS NULL OR request_id = $8 OR client_request_id = $8) \
             ORDER BY created_at DESC, request_id DESC LIMIT $6 OFFSET $7";
        Ok(on_pool!(
            self,
            |pool, sql| sqlx::query_as::<_, UsageEvent>(sql)
                .bind(&filter.organization_id)
                .bind(&filter.key_id)
                .bind(&filter.model)
                .bind(filter.from)
                .bind(filter.to)
                .bind(limit)
                .bind(offset)
                .bind(request_id)
                .fetch_all(pool)
                .await,
            SQL
        )?)
    }
}

/// Escapes `%`, `_` and the escape character itself, so a search matches literally.
pub fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
