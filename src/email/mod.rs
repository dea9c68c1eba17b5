//! The welcome email: transport, rendering and the admin's first-access secret.
//!
//! Layout:
//! - `settings`: the `[email]` section (sender, subject, frontend URL, access mode, SMTP).
//! - `secret`: the first-access secret ([`FirstAccess`]) and what the database keeps of it
//!   ([`StoredAccess`]): a hash, never the secret. Public for its generators and hashes,
//!   which the activation endpoint and the tests use.
//! - `template`: [`WelcomeEmail`] renders the text and HTML bodies into a lettre `Message`.
//! - `transport`: [`Mailer`] delivers through SMTP, or into `.eml` files when no server is
//!   configured; [`SendError::is_transient`] tells a retry from a give-up.
//!
//! One send, as the saga step does it:
//!
//! ```no_run
//! # async fn step(settings: &onboard::email::EmailSettings, mailer: &onboard::email::Mailer)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! use onboard::email::{FirstAccess, WelcomeEmail};
//!
//! let (access, stored) = FirstAccess::issue(settings, chrono::Utc::now())?;
//! // ... commit `stored` on the admin user row first, so the secret in the email works ...
//! let message = WelcomeEmail {
//!     admin_name: "Tech Company Ltd",
//!     admin_email: "admin@company.com",
//!     client_code: "CL-202401-0001",
//!     client_alias: "Tech Company Ltd",
//!     access: &access,
//!     frontend_url: &settings.frontend_url,
//! }
//! .message(&settings.from, &settings.subject)?;
//! mailer.send(message).await?;
//! # Ok(())
//! # }
//! ```

pub mod secret;
mod settings;
mod template;
mod transport;

pub use secret::{FirstAccess, SecretError, StoredAccess, hash_activation_token, verify_password};
pub use settings::{
    AccessMode, EmailSettings, FrontendUrl, InvalidSetting, PasswordLength, SmtpSettings, SmtpTls,
};
pub use template::{RenderError, WelcomeEmail};
pub use transport::{BuildError, Mailer, SendError};
