//! The deployment's secret key: 32 random bytes made by migration 0015 (`header_key`) and
//! held in PostgreSQL, read by every worker at start. Everything the workers must agree on
//! without telling each other is an HMAC with it: the signature of their own retry count
//! (`broker::headers`), and each saga's first-access secret (`email::secret`). It never
//! leaves the process or the database.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

#[derive(Clone)]
pub struct DeploymentKey(Arc<Vec<u8>>);

impl DeploymentKey {
    pub fn new(bytes: Vec<u8>) -> DeploymentKey {
        DeploymentKey(Arc::new(bytes))
    }

    /// HMAC-SHA256 with the key over `parts`, each followed by a 0x1f separator so that no
    /// two different lists of parts run together into the same input.
    pub fn mac(&self, parts: &[&[u8]]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key");
        for part in parts {
            mac.update(part);
            mac.update(&[0x1f]);
        }
        mac
    }
}

impl std::fmt::Debug for DeploymentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeploymentKey(***)")
    }
}
