//! What every page handler reaches.

use std::sync::Arc;

use sqlx::PgPool;

use super::figures::Figures;
use crate::configuration::Settings;

/// What every handler reaches.
#[derive(Clone)]
pub struct Console {
    pub pool: PgPool,
    pub settings: Arc<Settings>,
    pub(super) figures: Figures,
}
