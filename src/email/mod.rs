//! The welcome email: transport, rendering and the admin's first-access secret.

mod settings;

pub use settings::{
    AccessMode, EmailSettings, FrontendUrl, InvalidSetting, PasswordLength, SmtpSettings, SmtpTls,
};
