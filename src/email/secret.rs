//! The admin's first-access secret: made here, mailed once, stored only as a hash.
//!
//! [`FirstAccess::issue`] returns the raw secret (for the email, and nowhere else) together
//! with the [`StoredAccess`] the database keeps. Neither a token nor a password can be rebuilt
//! from what is stored, so a leaked row, queue message or log line does not let anyone in.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use rand::CryptoRng;
use rand::seq::IndexedRandom;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::settings::{AccessMode, EmailSettings, FrontendUrl, PasswordLength};

/// Bytes of randomness in an activation token: 256 bits, beyond any guessing.
pub const ACTIVATION_TOKEN_BYTES: usize = 32;

/// Character classes of a temporary password; every password holds at least one of each.
///
/// The symbols leave out `&<>"'` (they mean something in HTML), the backslash, quotes and
/// space, so the password survives being copied out of the email unchanged.
pub const PASSWORD_CLASSES: [&[u8]; 4] = [
    b"abcdefghijklmnopqrstuvwxyz",
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    b"0123456789",
    b"!#$%*+-=?@^_",
];

/// The secret the welcome email carries. `Debug` shows only what is not secret.
#[derive(Debug, Clone)]
pub enum FirstAccess {
    /// A one-time link to the frontend's activation page.
    ActivationLink {
        /// The raw token, URL-safe base64 of [`ACTIVATION_TOKEN_BYTES`] random bytes.
        token: SecretString,
        /// When the link stops working.
        expires_at: DateTime<Utc>,
    },
    /// A generated password that must be changed at first login.
    TemporaryPassword {
        /// The raw password.
        password: SecretString,
    },
}

/// What the database keeps of a [`FirstAccess`]: hashes and flags, never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAccess {
    /// Lowercase hex SHA-256 of the activation token, to look the token up when it comes back.
    /// A fast hash is enough here: the token has 256 bits of entropy, so nothing can be
    /// guessed from the hash, unlike a human-chosen password.
    pub activation_token_sha256: Option<String>,
    /// When the activation token stops being accepted.
    pub activation_expires_at: Option<DateTime<Utc>>,
    /// Argon2id PHC string of the temporary password (`$argon2id$v=19$...`).
    pub password_hash: Option<String>,
    /// The admin must choose a new password at first login (set for a temporary password).
    pub must_change_password: bool,
}

/// Making a secret failed; nothing was stored or sent.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// argon2 refused to hash. Unexpected with the fixed parameters used here; a bug or a
    /// host out of memory, not anything the command did.
    #[error("could not hash the temporary password: {0}")]
    Hash(String),
}

impl FirstAccess {
    /// Makes the secret `settings.access` asks for, from the operating system's CSPRNG
    /// (through `rand::rng()`), and what to store of it. `now` is when it is issued; the
    /// activation link expires `activation_ttl_hours` later.
    ///
    /// A temporary password is hashed with argon2id, which takes tens of milliseconds of CPU
    /// on purpose: call this from `tokio::task::spawn_blocking` in async code.
    pub fn issue(
        settings: &EmailSettings,
        now: DateTime<Utc>,
    ) -> Result<(FirstAccess, StoredAccess), SecretError> {
        Self::issue_with(settings, now, &mut rand::rng())
    }

    /// The secret of one saga's admin, the same on every attempt: drawn from a generator
    /// seeded with HMAC-SHA256(`key`, saga id), where `key` is the deployment's secret
    /// (`header_key`, held in PostgreSQL). A worker that takes over a saga after a crash
    /// makes the very secret the first one stored and perhaps already sent, so an email sent
    /// twice carries a link (or password) that works, and nothing is overwritten with another.
    /// Unguessable without the key, like a fresh draw.
    pub fn issue_for_saga(
        settings: &EmailSettings,
        now: DateTime<Utc>,
        key: &crate::key::DeploymentKey,
        saga_id: uuid::Uuid,
    ) -> Result<(FirstAccess, StoredAccess), SecretError> {
        use hmac::Mac;
        use rand::SeedableRng;
        let mac = key.mac(&[b"first-access", saga_id.as_bytes()]);
        let seed: [u8; 32] = mac.finalize().into_bytes().into();
        Self::issue_with(
            settings,
            now,
            &mut rand_chacha::ChaCha20Rng::from_seed(seed),
        )
    }

    /// [`FirstAccess::issue`] with a given generator, so tests can be repeatable. Only
    /// cryptographically secure generators are accepted.
    pub fn issue_with<R: CryptoRng + ?Sized>(
        settings: &EmailSettings,
        now: DateTime<Utc>,
        rng: &mut R,
    ) -> Result<(FirstAccess, StoredAccess), SecretError> {
        match settings.access {
            AccessMode::ActivationLink => {
                let token = activation_token(rng);
                let expires_at =
                    now + Duration::hours(i64::from(settings.activation_ttl_hours.get()));
                let stored = StoredAccess {
                    activation_token_sha256: Some(hash_activation_token(token.expose_secret())),
                    activation_expires_at: Some(expires_at),
                    password_hash: None,
                    must_change_password: false,
                };
                Ok((FirstAccess::ActivationLink { token, expires_at }, stored))
            }
            AccessMode::TemporaryPassword => {
                let password = temporary_password(settings.temporary_password_length, rng);
                let stored = StoredAccess {
                    activation_token_sha256: None,
                    activation_expires_at: None,
                    password_hash: Some(hash_password(&password, rng)?),
                    must_change_password: true,
                };
                Ok((FirstAccess::TemporaryPassword { password }, stored))
            }
        }
    }

    /// The activation URL, `{frontend_url}/activate?token=...`, for an activation link. It
    /// holds the token, so it is a secret too.
    pub fn activation_url(&self, frontend_url: &FrontendUrl) -> Option<SecretString> {
        match self {
            FirstAccess::ActivationLink { token, .. } => Some(SecretString::from(format!(
                "{frontend_url}/activate?token={}",
                token.expose_secret()
            ))),
            FirstAccess::TemporaryPassword { .. } => None,
        }
    }
}

/// A fresh activation token: URL-safe base64 (no padding) of 32 random bytes, 43 characters.
pub fn activation_token<R: CryptoRng + ?Sized>(rng: &mut R) -> SecretString {
    let mut bytes = [0u8; ACTIVATION_TOKEN_BYTES];
    rng.fill_bytes(&mut bytes);
    SecretString::from(URL_SAFE_NO_PAD.encode(bytes))
}

/// Lowercase hex SHA-256 of a token as it appears in the URL: what the activation endpoint
/// computes from the token it receives, to find the row.
pub fn hash_activation_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A temporary password of `length` characters with at least one of each of
/// [`PASSWORD_CLASSES`].
///
/// Every character is drawn uniformly from the whole alphabet (rand's `choose` samples an
/// index without modulo bias), and a draw missing a class is thrown away whole and redone.
/// Throwing away keeps the result uniform over all valid passwords; forcing one character per
/// class instead would make the small classes (digits, symbols) over-represented. At length
/// 16 about 15% of draws are redone, at 20 about 8%.
pub fn temporary_password<R: CryptoRng + ?Sized>(
    length: PasswordLength,
    rng: &mut R,
) -> SecretString {
    let alphabet = password_alphabet();
    loop {
        let candidate: String = (0..length.get())
            .map(|_| char::from(*alphabet.choose(rng).expect("the alphabet is not empty")))
            .collect();
        if has_every_class(&candidate) {
            return SecretString::from(candidate);
        }
    }
}

/// All characters of [`PASSWORD_CLASSES`], in class order.
pub fn password_alphabet() -> Vec<u8> {
    PASSWORD_CLASSES.concat()
}

/// Whether `password` holds at least one character of each of [`PASSWORD_CLASSES`].
pub fn has_every_class(password: &str) -> bool {
    PASSWORD_CLASSES
        .iter()
        .all(|class| password.bytes().any(|b| class.contains(&b)))
}

/// The argon2id PHC string of `password`, with a fresh 16-byte salt.
pub fn hash_password<R: CryptoRng + ?Sized>(
    password: &SecretString,
    rng: &mut R,
) -> Result<String, SecretError> {
    // The salt comes from our rand 0.9 generator rather than argon2's `SaltString::generate`,
    // which wants the older rand_core 0.6 traits.
    let mut salt = [0u8; 16];
    rng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| SecretError::Hash(e.to_string()))?;
    hasher()
        .hash_password(password.expose_secret().as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| SecretError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `phc`. A malformed `phc` never matches.
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        // The parameters are read from the PHC string, so hashes made with older parameters
        // still verify after `hasher()` is tuned.
        Ok(parsed) => hasher()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Argon2id, version 0x13, with the crate's default cost (19 MiB, 2 passes, 1 lane): the
/// OWASP minimum recommendation, spelled out so a crate upgrade cannot weaken it silently.
fn hasher() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_sagas_secret_is_the_same_on_every_attempt_and_differs_between_sagas() {
        let settings = crate::configuration::Settings::defaults().email;
        let now = Utc::now();
        let saga = uuid::Uuid::new_v4();
        let key = crate::key::DeploymentKey::new(b"key".to_vec());
        let other = crate::key::DeploymentKey::new(b"other key".to_vec());
        let (a, stored_a) = FirstAccess::issue_for_saga(&settings, now, &key, saga).unwrap();
        let (b, stored_b) = FirstAccess::issue_for_saga(&settings, now, &key, saga).unwrap();
        let url = |f: &FirstAccess| {
            f.activation_url(&settings.frontend_url)
                .map(|u| u.expose_secret().to_string())
        };
        assert!(url(&a).is_some());
        assert_eq!(url(&a), url(&b));
        assert_eq!(
            stored_a.activation_token_sha256,
            stored_b.activation_token_sha256
        );
        let (c, _) =
            FirstAccess::issue_for_saga(&settings, now, &key, uuid::Uuid::new_v4()).unwrap();
        assert_ne!(url(&a), url(&c), "another saga");
        let (d, _) = FirstAccess::issue_for_saga(&settings, now, &other, saga).unwrap();
        assert_ne!(url(&a), url(&d), "another deployment");
    }

    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn settings(access: AccessMode) -> EmailSettings {
        EmailSettings {
            access,
            ..EmailSettings::default()
        }
    }

    fn now() -> DateTime<Utc> {
        "2025-03-01T10:00:00Z".parse().expect("valid timestamp")
    }

    #[test]
    fn activation_link_stores_only_the_token_hash_and_expiry() {
        let (access, stored) =
            FirstAccess::issue(&settings(AccessMode::ActivationLink), now()).expect("issued");
        let FirstAccess::ActivationLink { token, expires_at } = &access else {
            panic!("expected an activation link, got {access:?}");
        };
        let token = token.expose_secret();
        // 32 bytes in unpadded base64 are 43 characters from the URL-safe alphabet.
        assert_eq!(token.len(), 43);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(URL_SAFE_NO_PAD.decode(token).expect("base64").len(), 32);

        assert_eq!(*expires_at, now() + Duration::hours(72));
        assert_eq!(stored.activation_expires_at, Some(*expires_at));
        assert_eq!(
            stored.activation_token_sha256.as_deref(),
            Some(hash_activation_token(token).as_str())
        );
        assert_ne!(stored.activation_token_sha256.as_deref(), Some(token));
        assert_eq!(stored.password_hash, None);
        assert!(!stored.must_change_password);
    }

    #[test]
    fn activation_token_hash_is_sha256_hex_and_tells_tokens_apart() {
        // SHA-256("abc") from FIPS 180-2, so a wrong digest or encoding is caught.
        assert_eq!(
            hash_activation_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mut rng = StdRng::seed_from_u64(1);
        let a = activation_token(&mut rng);
        let b = activation_token(&mut rng);
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_ne!(
            hash_activation_token(a.expose_secret()),
            hash_activation_token(b.expose_secret())
        );
    }

    #[test]
    fn activation_expiry_follows_the_ttl_setting() {
        let mut settings = settings(AccessMode::ActivationLink);
        settings.activation_ttl_hours = 1.try_into().expect("not zero");
        let (_, stored) = FirstAccess::issue(&settings, now()).expect("issued");
        assert_eq!(
            stored.activation_expires_at,
            Some(now() + Duration::hours(1))
        );
    }

    #[test]
    fn activation_url_carries_the_token() {
        let (access, _) =
            FirstAccess::issue(&settings(AccessMode::ActivationLink), now()).expect("issued");
        let FirstAccess::ActivationLink { token, .. } = &access else {
            unreachable!()
        };
        let frontend = FrontendUrl::parse("https://app.example.com/").expect("valid");
        let url = access.activation_url(&frontend).expect("a link has a URL");
        assert_eq!(
            url.expose_secret(),
            format!(
                "https://app.example.com/activate?token={}",
                token.expose_secret()
            )
        );
    }

    #[test]
    fn temporary_password_is_argon2id_hashed_and_must_be_changed() {
        let (access, stored) =
            FirstAccess::issue(&settings(AccessMode::TemporaryPassword), now()).expect("issued");
        let FirstAccess::TemporaryPassword { password } = &access else {
            panic!("expected a temporary password, got {access:?}");
        };
        let password = password.expose_secret();
        let phc = stored.password_hash.as_deref().expect("a hash is stored");

        assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
        assert!(!phc.contains(password));
        assert!(verify_password(password, phc));
        assert!(!verify_password("not the password", phc));
        assert!(!verify_password(password, "not a phc string"));
        assert!(stored.must_change_password);
        assert_eq!(stored.activation_token_sha256, None);
        assert_eq!(stored.activation_expires_at, None);
        assert!(access.activation_url(&FrontendUrl::default()).is_none());
    }

    #[test]
    fn two_hashes_of_one_password_differ_by_salt() {
        let password = SecretString::from("Same-Password-1234");
        let mut rng = rand::rng();
        let a = hash_password(&password, &mut rng).expect("hashed");
        let b = hash_password(&password, &mut rng).expect("hashed");
        assert_ne!(a, b);
        assert!(verify_password("Same-Password-1234", &a));
        assert!(verify_password("Same-Password-1234", &b));
    }

    #[test]
    fn temporary_password_has_the_configured_length_and_every_class() {
        let mut rng = StdRng::seed_from_u64(7);
        for length in [PasswordLength::MIN, 20, 64] {
            let length = PasswordLength::new(length).expect("valid length");
            for _ in 0..2_000 {
                let password = temporary_password(length, &mut rng);
                let password = password.expose_secret();
                assert_eq!(password.chars().count(), length.get());
                assert!(has_every_class(password), "{password} misses a class");
                assert!(password.bytes().all(|b| password_alphabet().contains(&b)));
            }
        }
    }

    #[test]
    fn has_every_class_notices_a_missing_class() {
        assert!(has_every_class("aA1!"));
        assert!(!has_every_class("aA1a"));
        assert!(!has_every_class("aa1!"));
        assert!(!has_every_class("AA1!"));
        assert!(!has_every_class("aA!!"));
    }

    #[test]
    fn debug_of_a_first_access_hides_the_secret() {
        for mode in [AccessMode::ActivationLink, AccessMode::TemporaryPassword] {
            let (access, _) = FirstAccess::issue(&settings(mode), now()).expect("issued");
            let secret = match &access {
                FirstAccess::ActivationLink { token, .. } => token.expose_secret().to_owned(),
                FirstAccess::TemporaryPassword { password } => password.expose_secret().to_owned(),
            };
            let debug = format!("{access:?}");
            assert!(!debug.contains(&secret), "{debug}");
            assert!(debug.contains("REDACTED"), "{debug}");
            let url = access.activation_url(&FrontendUrl::default());
            assert!(!format!("{url:?}").contains(&secret));
        }
    }
}
