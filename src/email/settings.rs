//! Settings of the welcome email, as they come out of the configuration file.
//!
//! Every field has a default, so an `[email]` section can be left out entirely and the worker
//! still writes the welcome emails as `.eml` files under `.local/mail` (the quick start).
//! Values that would only fail later (a malformed sender, a password too short to be safe, a
//! frontend URL we cannot append a path to) are refused while the settings are read.

use std::fmt;
use std::num::{NonZeroU32, NonZeroU64};
use std::path::PathBuf;

use lettre::message::Mailbox;
use secrecy::SecretString;
use serde::{Deserialize, Deserializer};

/// How the welcome email lets the admin in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessMode {
    /// A one-time link to a page where the admin chooses a password. The default: the email
    /// never holds anything that works as a password once the link is used or has expired.
    #[default]
    ActivationLink,
    /// A generated password the admin must change at first login; for frontends that have no
    /// activation page yet.
    TemporaryPassword,
}

/// Settings of the welcome email (the `[email]` section).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct EmailSettings {
    /// Sender of the welcome email. Default `Onboarding <onboarding@localhost>`.
    #[serde(deserialize_with = "mailbox_from_str")]
    pub from: Mailbox,
    /// Subject line. Default `Your AOL Core Admin Account`, the subject the old handler used,
    /// so mail filters set up for it keep working.
    pub subject: String,
    /// Base URL of the web frontend; the login and activation links are built on it.
    /// Default `http://localhost:3000`.
    pub frontend_url: FrontendUrl,
    /// Which first-access secret the email carries. Default [`AccessMode::ActivationLink`].
    pub access: AccessMode,
    /// How long an activation link stays valid, in hours. Default 72, so a link sent on a
    /// Friday still works on Monday.
    pub activation_ttl_hours: NonZeroU32,
    /// Length of a generated temporary password. Default 20; anything under 16 is refused.
    pub temporary_password_length: PasswordLength,
    /// SMTP server to deliver through. Default none: emails are written to `file_dir`.
    pub smtp: Option<SmtpSettings>,
    /// Folder the `.eml` files go to when `smtp` is not set (created if missing).
    /// Default `.local/mail`, relative to the working directory.
    pub file_dir: PathBuf,
}

impl Default for EmailSettings {
    fn default() -> Self {
        Self {
            from: default_from(),
            subject: "Your AOL Core Admin Account".to_owned(),
            frontend_url: FrontendUrl::default(),
            access: AccessMode::default(),
            activation_ttl_hours: NonZeroU32::new(72).expect("72 is not zero"),
            temporary_password_length: PasswordLength::default(),
            smtp: None,
            file_dir: PathBuf::from(".local/mail"),
        }
    }
}

fn default_from() -> Mailbox {
    "Onboarding <onboarding@localhost>"
        .parse()
        .expect("the default sender is a valid mailbox")
}

fn mailbox_from_str<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Mailbox, D::Error> {
    let raw = String::deserialize(deserializer)?;
    raw.parse()
        .map_err(|e| serde::de::Error::custom(format!("`{raw}` is not a valid sender: {e}")))
}

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain text, for a relay on the same host or a test sink only. Credentials are refused
    /// with this mode unless the host is a loopback address.
    None,
    /// Plain connection upgraded with STARTTLS, which is required: a server that does not
    /// offer it is an error, so a man in the middle cannot downgrade us to plain text.
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS, "implicit TLS").
    Tls,
}

impl SmtpTls {
    /// The port this mode conventionally uses.
    pub fn default_port(self) -> u16 {
        match self {
            SmtpTls::None => 25,
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
        }
    }
}

/// Settings of the SMTP server (the `[email.smtp]` section).
#[derive(Debug, Clone, Deserialize)]
pub struct SmtpSettings {
    /// Host name of the server; also the name its TLS certificate is checked against.
    pub host: String,
    /// Port. Default by `tls`: 25 for `none`, 587 for `starttls`, 465 for `tls`.
    #[serde(default)]
    pub port: Option<u16>,
    /// Connection protection. Default `starttls`.
    #[serde(default)]
    pub tls: SmtpTls,
    /// User to authenticate as; set together with `password`, or neither.
    #[serde(default)]
    pub username: Option<String>,
    /// Password of `username`. A secret: never printed, never logged.
    #[serde(default)]
    pub password: Option<SecretString>,
    /// Bound on one whole send (connect, TLS, every command, the data), in milliseconds.
    /// Default 10 000: ample for one small message, short enough that a hung server fails the
    /// attempt (to be retried) instead of holding a worker.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: NonZeroU64,
    /// Most idle connections kept open for reuse. Default 4. lettre's pool does not cap how
    /// many sends run at once (the worker's concurrency does); it caps what stays open after.
    #[serde(default = "default_pool_max_size")]
    pub pool_max_size: NonZeroU32,
}

impl SmtpSettings {
    /// A server at `host:port` with every other setting at its default.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port: Some(port),
            tls: SmtpTls::default(),
            username: None,
            password: None,
            timeout_ms: default_timeout_ms(),
            pool_max_size: default_pool_max_size(),
        }
    }

    /// The configured port, or the conventional one for the TLS mode.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or_else(|| self.tls.default_port())
    }
}

fn default_timeout_ms() -> NonZeroU64 {
    NonZeroU64::new(10_000).expect("not zero")
}

fn default_pool_max_size() -> NonZeroU32 {
    NonZeroU32::new(4).expect("not zero")
}

/// Length of a generated temporary password: at least [`PasswordLength::MIN`] characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "usize")]
pub struct PasswordLength(usize);

impl PasswordLength {
    /// Under 16 characters from our 74-symbol alphabet (about 99 bits) a password is weaker
    /// than we want for an account that can move money.
    pub const MIN: usize = 16;
    /// Long enough for any policy; longer only makes the email awkward to use.
    pub const MAX: usize = 128;

    /// Refuses lengths outside `MIN..=MAX`.
    pub fn new(length: usize) -> Result<Self, InvalidSetting> {
        if (Self::MIN..=Self::MAX).contains(&length) {
            Ok(Self(length))
        } else {
            Err(InvalidSetting(format!(
                "temporary_password_length must be between {} and {}, got {length}",
                Self::MIN,
                Self::MAX
            )))
        }
    }

    /// The length in characters.
    pub fn get(self) -> usize {
        self.0
    }
}

impl Default for PasswordLength {
    fn default() -> Self {
        Self(20)
    }
}

impl TryFrom<usize> for PasswordLength {
    type Error = InvalidSetting;

    fn try_from(length: usize) -> Result<Self, Self::Error> {
        Self::new(length)
    }
}

/// Base URL of the web frontend, without a trailing slash, so `{url}/activate` is well formed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct FrontendUrl(String);

impl FrontendUrl {
    /// Accepts an absolute `http` or `https` URL with no query, fragment or whitespace: we
    /// append paths and a query to it, and it ends up in an `href`.
    pub fn parse(raw: &str) -> Result<Self, InvalidSetting> {
        let trimmed = raw.trim().trim_end_matches('/');
        let rest = trimmed
            .strip_prefix("https://")
            .or_else(|| trimmed.strip_prefix("http://"));
        let valid = match rest {
            Some(rest) => {
                !rest.is_empty()
                    && !rest.starts_with('/')
                    && !rest
                        .chars()
                        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#'))
            }
            None => false,
        };
        if valid {
            Ok(Self(trimmed.to_owned()))
        } else {
            Err(InvalidSetting(format!(
                "frontend_url must be an absolute http(s) URL without query or fragment, got `{raw}`"
            )))
        }
    }

    /// The URL, without a trailing slash.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Where the admin signs in.
    pub fn login_url(&self) -> String {
        format!("{}/login", self.0)
    }
}

impl Default for FrontendUrl {
    fn default() -> Self {
        Self("http://localhost:3000".to_owned())
    }
}

impl TryFrom<String> for FrontendUrl {
    type Error = InvalidSetting;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl fmt::Display for FrontendUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A setting was present but unusable; the message names it and says what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSetting(String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let settings = EmailSettings::default();
        assert_eq!(
            settings.from.to_string(),
            "Onboarding <onboarding@localhost>"
        );
        assert_eq!(settings.subject, "Your AOL Core Admin Account");
        assert_eq!(settings.frontend_url.as_str(), "http://localhost:3000");
        assert_eq!(settings.access, AccessMode::ActivationLink);
        assert_eq!(settings.activation_ttl_hours.get(), 72);
        assert_eq!(settings.temporary_password_length.get(), 20);
        assert!(settings.smtp.is_none());
        assert_eq!(settings.file_dir, PathBuf::from(".local/mail"));
    }

    #[test]
    fn password_length_under_sixteen_is_refused() {
        assert!(PasswordLength::new(15).is_err());
        assert_eq!(PasswordLength::new(16).map(PasswordLength::get), Ok(16));
        assert!(PasswordLength::new(PasswordLength::MAX + 1).is_err());
    }

    #[test]
    fn frontend_url_loses_its_trailing_slash_and_must_be_http() {
        let url = FrontendUrl::parse("https://app.example.com/").expect("valid");
        assert_eq!(url.as_str(), "https://app.example.com");
        assert_eq!(url.login_url(), "https://app.example.com/login");
        for bad in [
            "app.example.com",
            "javascript:alert(1)",
            "https://",
            "https://a.example.com/?x=1",
            "https://a b",
        ] {
            assert!(FrontendUrl::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    fn from_toml(toml: &str) -> Result<EmailSettings, config::ConfigError> {
        config::Config::builder()
            .add_source(config::File::from_str(toml, config::FileFormat::Toml))
            .build()?
            .try_deserialize()
    }

    #[test]
    fn a_full_section_is_read_and_the_password_stays_hidden() {
        let settings = from_toml(
            r#"
            from = "Payments <no-reply@pay.example.com>"
            subject = "Welcome"
            frontend_url = "https://app.example.com/"
            access = "temporary_password"
            activation_ttl_hours = 24
            temporary_password_length = 32
            file_dir = "/tmp/mail"

            [smtp]
            host = "smtp.example.com"
            tls = "tls"
            username = "mailer"
            password = "hunter2-secret"
            timeout_ms = 5000
            pool_max_size = 2
            "#,
        )
        .expect("valid settings");
        assert_eq!(settings.from.email.to_string(), "no-reply@pay.example.com");
        assert_eq!(settings.access, AccessMode::TemporaryPassword);
        assert_eq!(settings.frontend_url.as_str(), "https://app.example.com");
        assert_eq!(settings.activation_ttl_hours.get(), 24);
        assert_eq!(settings.temporary_password_length.get(), 32);
        let smtp = settings.smtp.as_ref().expect("smtp is set");
        assert_eq!((smtp.tls, smtp.port()), (SmtpTls::Tls, 465));
        assert_eq!(smtp.timeout_ms.get(), 5000);
        assert_eq!(smtp.pool_max_size.get(), 2);
        assert!(!format!("{settings:?}").contains("hunter2-secret"));
    }

    #[test]
    fn an_empty_section_gets_the_defaults() {
        let settings = from_toml("").expect("defaults");
        assert_eq!(settings.subject, EmailSettings::default().subject);
        assert!(settings.smtp.is_none());
    }

    #[test]
    fn unusable_values_are_refused_when_read() {
        for toml in [
            "temporary_password_length = 8",
            "activation_ttl_hours = 0",
            "from = \"not a mailbox\"",
            "frontend_url = \"localhost:3000\"",
            "access = \"magic_link\"",
            "[smtp]\nhost = \"h\"\ntls = \"ssl\"",
        ] {
            assert!(from_toml(toml).is_err(), "accepted: {toml}");
        }
    }

    #[test]
    fn smtp_port_defaults_by_tls_mode() {
        let mut smtp = SmtpSettings::new("mail.example.com", 2525);
        assert_eq!(smtp.port(), 2525);
        smtp.port = None;
        assert_eq!(smtp.port(), 587);
        smtp.tls = SmtpTls::Tls;
        assert_eq!(smtp.port(), 465);
        smtp.tls = SmtpTls::None;
        assert_eq!(smtp.port(), 25);
    }
}
