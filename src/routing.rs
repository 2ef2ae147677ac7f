//! Routing: from the model string a caller sent to the ordered targets that may answer it, and the
//! walk through them.
//!
//! `catalog` binds configuration to providers; `chains` derives every model's typed fallback chains; `plan` resolves a request into a [`RoutePlan`] (a value,
//! computed once, then logged, shown in headers and recorded); `fallback` decides target by target;
//! `breaker` keeps failing targets out; `latency` measures each target's time to first token; `tokens` estimates prompt size for the context guard.
//! Not here: upstream I/O (`providers::exec`) or admission (limits).

pub mod auto;
pub mod breaker;
pub mod catalog;
pub mod chains;
pub mod fallback;
pub mod latency;
pub mod plan;
pub mod tokens;

pub use catalog::{AliasEntry, Catalog, ModelEntry};
pub use chains::ChainType;
pub use fallback::{Attempt, Fallback, Router};
pub use plan::{Caller, Prefer, RequestFeatures, Resolution, RouteError, RoutePlan, Skipped, wants_explicit_routing};
