//! Dashboard accounts, their sessions, and organisations' management keys (tables of migration
//! `20261203000001_accounts`). Secrets are stored as hashes only: argon2id for passwords, SHA-256 for
//! session cookies and management keys (long and random, so a fast hash is enough).

use super::{Store, StoreError};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AccountRow {
    pub id: String,
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub role: String,
    pub organization_id: Option<String>,
    pub disabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_sign_in_at: Option<i64>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub token_hash: String,
    pub account_id: Option<String>,
    pub master_digest: Option<String>,
    pub csrf_token: String,
    pub created_at: i64,
    pub expires_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ManagementKeyRow {
    pub id: String,
    pub organization_id: String,
    pub name: String,
    pub key_hash: String,
    pub display_prefix: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

impl Store {
    // --- accounts ---

    /// Inserts an account; `Ok(false)` when its email is taken.
    pub async fn insert_account(&self, a: &AccountRow) -> Result<bool, StoreError> {
        const SQL: &str = "INSERT INTO admin_accounts (id, email, name, password_hash, role, organization_id, disabled, \
                           created_at, updated_at, last_sign_in_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                           ON CONFLICT (email) DO NOTHING";
        let n = on_pool!(
            self,
            |pool, sql| sqlx::query(sql)
                .bind(&a.id)
                .bind(&a.email)
                .bind(&a.name)
                .bind(&a.password_hash)
                .bind(&a.role)
                .bind(&a.organization_id)
                .bind(a.disabled)
                .bind(a.created_at)
                .bind(a.updated_at)
                .bind(a.last_sign_in_at)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()),
            SQL
        )?;
        Ok(n == 1)
    }

    pub async fn account(&self, id: &str) -> Result<Option<AccountRow>, StoreError> {
        const SQL: &str = "SELECT * FROM admin_accounts WHERE id = $1";
        Ok(on_pool!(self, |pool, sql| sqlx::query_as::<_, AccountRow>(sql).bind(id).fetch_optional(pool).await, SQL)?)
    }

    pub async fn account_by_email(&self, email: &str) -> Result<Option<AccountRow>, StoreError> {
        const SQL: &str = "SELECT * FROM admin_accounts WHERE email = $1";
        Ok(on_pool!(
            self,
            |pool, sql| sqlx::query_as::<_, AccountRow>(sql).bind(email).fetch_optional(pool).await,
            SQL
        )?)
    }

    /// Accounts by email, those of one organisation when given.
    pub async fn accounts(
        &self,
        organization_id: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<AccountRow>, StoreError> {
        const SQL: &str = "SELECT * FROM admin_accounts WHERE ($1 IS NULL OR organization_id = $1) \
                           ORDER BY email LIMIT $2 OFFSET $3";
        Ok(on_pool!(
            self,
            |pool, sql| sqlx::query_as::<_, AccountRow>(sql)
                .bind(organization_id)
                .bind(limit)
                .bind(offset)
                .fetch_all(pool)
                .await,
            SQL
        )?)
    }

    pub async fn update_account(&self, a: &AccountRow) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE admin_accounts SET name = $2, password_hash = $3, role = $4, organization_id = $5, \
                           disabled = $6, updated_at = $7, last_sign_in_at = $8 WHERE id = $1";
        let n = on_pool!(
            self,
            |pool, sql| sqlx::query(sql)
                .bind(&a.id)
                .bind(&a.name)
                .bind(&a.password_hash)
                .bind(&a.role)
                .bind(&a.organization_id)
                .bind(a.disabled)
                .bind(a.updated_at)
                .bind(a.last_sign_in_at)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()),
            SQL
        )?;
        Ok(n == 1)
    }

    pub async fn delete_account(&self, id: &str) -> Result<bool, StoreError> {
        const SQL: &str = "DELETE FROM admin_accounts WHERE id = $1";
        let n =
            on_pool!(self, |pool, sql| sqlx::query(sql).bind(id).execute(pool).await.map(|r| r.rows_affected()), SQL)?;
        Ok(n == 1)
    }

    // --- sessions ---

    pub async fn insert_session(&self, s: &SessionRow) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO admin_sessions (token_hash, account_id, master_digest, csrf_token, created_at, \
                           expires_at) VALUES ($1, $2, $3, $4, $5, $6)";
        on_pool!(
            self,
            |pool, sql| sqlx::query(sql)
                .bind(&s.token_hash)
                .bind(&s.account_id)
                .bind(&s.master_digest)
                .bind(&s.csrf_token)
                .bind(s.created_at)
                .bind(s.expires_at)
                .execute(pool)
                .await
                .map(|_| ()),
            SQL
        )?;
        Ok(())
    }

    /// The session for a cookie's hash, if it has not expired.
    pub async fn session(&self, token_hash: &str, now: i64) -> Result<Option<SessionRow>, StoreError> {
        const SQL: &str = "SELECT * FROM admin_sessions WHERE token_hash = $1 AND expires_at > $2";
        Ok(on_pool!(
            self,
            |pool, sql| sqlx::query_as::<_, SessionRow>(sql).bind(token_hash).bind(now).fetch_optional(pool).await,
            SQL
        )?)
    }

    pub async fn delete_session(&self, token_hash: &str) -> Result<(), StoreError> {
        const SQL: &str = "DELETE FROM admin_sessions WHERE token_hash = $1";
        on_pool!(self, |pool, sql| sqlx::query(sql).bind(token_hash).execute(pool).await.map(|_| ()), SQL)?;
        Ok(())
    }

    /// Signs an account out everywhere (its password changed, it was disabled).
    pub async fn delete_sessions_of(&self, account_id: &str) -> Result<(), StoreError> {
        const SQL: &str = "DELETE FROM admin_sessions WHERE account_id = $1";
        on_pool!(self, |pool, sql| sqlx::query(sql).bind(account_id).execute(pool).await.map(|_| ()), SQL)?;
        Ok(())
    }

    /// Forgets expired sessions; the number removed.
    pub async fn sweep_sessions(&self, now: i64) -> Result<u64, StoreError> {
        const SQL: &str = "DELETE FROM admin_sessions WHERE expires_at <= $1";
        Ok(on_pool!(self, |pool, sql| sqlx::query(sql).bind(now).execute(pool).await.map(|r| r.rows_affected()), SQL)?)
    }

    // --- management keys ---

    pub async fn insert_management_key(&self, k: &ManagementKeyRow) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO management_keys (id, organization_id, name, key_hash, display_prefix, created_at, \
                           revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7)";
        on_pool!(
            self,
            |pool, sql| sqlx::query(sql)
                .bind(&k.id)
                .bind(&k.organization_id)
                .bind(&k.name)
                .bind(&k.key_hash)
                .bind(&k.display_prefix)
                .bind(k.created_at)
                .bind(k.revoked_at)
                .execute(pool)
                .await
                .map(|_| ()),
            SQL
        )?;
        Ok(())
    }

    /// The unrevoked management key with this hash.
    pub async fn management_key_by_hash(&self, hash: &str) -> Result<Option<ManagementKeyRow>, StoreError> {
        const SQL: &str = "SELECT * FROM management_keys WHERE key_hash = $1 AND revoked_at IS NULL";
        Ok(on_pool!(
            self,
            |pool, sql| sqlx::query_as::<_, ManagementKeyRow>(sql).bind(hash).fetch_optional(pool).await,
            SQL
        )?)
    }

    pub async fn management_key(&self, id: &str) -> Result<Option<ManagementKeyRow>, StoreError> {
        const SQL: &str = "SELECT * FROM management_keys WHERE id = $1";
        Ok(on_pool!(
            self,
            |pool, sql| sqlx::query_as::<_, ManagementKeyRow>(sql).bind(id).fetch_optional(pool).await,
            SQL
        )?)
    }

    pub async fn management_keys(&self, organization_id: Option<&str>) -> Result<Vec<ManagementKeyRow>, StoreError> {
        const SQL: &str = "SELECT * FROM management_keys WHERE ($1 IS NULL OR organization_id = $1) \
                           ORDER BY created_at DESC, id DESC LIMIT 500";
        Ok(on_pool!(
            self,
            |pool, sql| sqlx::query_as::<_, ManagementKeyRow>(sql).bind(organization_id).fetch_all(pool).await,
            SQL
        )?)
    }

    pub async fn revoke_management_key(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE management_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL";
        let n = on_pool!(
            self,
            |pool, sql| sqlx::query(sql).bind(id).bind(now).execute(pool).await.map(|r| r.rows_affected()),
            SQL
        )?;
        Ok(n == 1)
    }
}
