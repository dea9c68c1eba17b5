//! The welcome email: transport, rendering and the admin's first-access secret.

pub mod secret;
mod settings;
mod template;

pub use secret::{FirstAccess, SecretError, StoredAccess, hash_activation_token, verify_password};
pub use settings::{
    AccessMode, EmailSettings, FrontendUrl, InvalidSetting, PasswordLength, SmtpSettings, SmtpTls,
};
pub use template::{RenderError, WelcomeEmail};
