//! Model resolution: from the model string a caller sent to the ordered targets that may answer it.
//!
//! The result is a [`RoutePlan`], a value computed once per request, then logged, shown in response
//! headers and kept for the usage record. Names match exactly: no case folding, no trimming.
//! Not here: upstream I/O (`providers::exec`) or admission (limits).

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::Config;
use crate::providers::Provider;

/// One servable model: a public name bound to a provider's model id.
#[derive(Debug)]
pub struct ModelEntry {
    pub name: String,
    pub provider: Arc<Provider>,
    pub upstream: String,
}

/// Every model a caller can ask for, in configuration order.
#[derive(Debug, Default)]
pub struct Catalog {
    models: Vec<Arc<ModelEntry>>,
    by_name: HashMap<String, Arc<ModelEntry>>,
}

/// The targets to try for one request, in order.
#[derive(Debug, Clone)]
pub struct RoutePlan {
    /// The model string exactly as the caller sent it.
    pub requested: String,
    pub targets: Vec<Arc<ModelEntry>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("The model `{0}` does not exist or you do not have access to it.")]
    UnknownModel(String),
}

impl Catalog {
    /// Binds the configured models to their providers. Configuration validation has already checked
    /// that every model names a provider that exists.
    pub fn new(config: &Config, providers: &[Arc<Provider>]) -> Catalog {
        let mut catalog = Catalog::default();
        for m in &config.models {
            let Some(provider) = providers.iter().find(|p| p.name == m.provider) else {
                continue;
            };
            let entry = Arc::new(ModelEntry {
                name: m.name.clone(),
                provider: provider.clone(),
                upstream: m.upstream_id().to_owned(),
            });
            catalog.by_name.insert(entry.name.clone(), entry.clone());
            catalog.models.push(entry);
        }
        catalog
    }

    pub fn models(&self) -> &[Arc<ModelEntry>] {
        &self.models
    }

    pub fn get(&self, name: &str) -> Option<&Arc<ModelEntry>> {
        self.by_name.get(name)
    }

    pub fn resolve(&self, requested: &str) -> Result<RoutePlan, RouteError> {
        let entry = self.get(requested).ok_or_else(|| RouteError::UnknownModel(requested.to_owned()))?;
        Ok(RoutePlan { requested: requested.to_owned(), targets: vec![entry.clone()] })
    }
}
