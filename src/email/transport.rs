//! Delivery: through an SMTP server when one is configured, otherwise into `.eml` files.
//!
//! The file transport is the no-server default, so a fresh checkout sends "real" emails that
//! can be opened in any mail client, without an SMTP server to set up first.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::{self, AsyncSmtpTransportBuilder, PoolConfig};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;

use super::settings::{EmailSettings, SmtpSettings, SmtpTls};

/// Sends the welcome emails. Cheap to clone: clones share the SMTP connection pool.
#[derive(Clone)]
pub struct Mailer {
    /// Where messages go.
    transport: Transport,
}

#[derive(Clone)]
enum Transport {
    /// Pooled async SMTP, shared by the clones of a mailer.
    Smtp(Arc<Smtp>),
    /// One `.eml` file per message.
    File {
        /// Writes `<uuid>.eml` into `dir`.
        transport: AsyncFileTransport<Tokio1Executor>,
        /// The folder, for `Debug` and logs.
        dir: PathBuf,
    },
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.transport {
            Transport::Smtp(smtp) => f
                .debug_struct("Mailer::Smtp")
                .field("server", &smtp.server)
                .finish(),
            Transport::File { dir, .. } => {
                f.debug_struct("Mailer::File").field("dir", dir).finish()
            }
        }
    }
}

/// The SMTP side of a [`Mailer`].
///
/// lettre's async client bounds only the TCP connect with its timeout, not the replies, so a
/// server that stops answering would hold a send (and a worker) forever. We bound the whole
/// send ourselves. A send cut short may leave its connection in the middle of a command, or
/// of DATA; were that connection reused, the next message's commands and text (its secret
/// included) could end up inside the unfinished one. So a timed-out send retires the whole
/// pool, and only then lets go of its connection, which the retired pool closes.
struct Smtp {
    /// Builds a fresh pool to replace a retired one.
    builder: AsyncSmtpTransportBuilder,
    /// The pool in use, with a generation number so two sends timing out together on the
    /// same pool replace it once.
    current: Mutex<(u64, AsyncSmtpTransport<Tokio1Executor>)>,
    /// Bound on one whole send: connect, TLS, greeting, every command and the data.
    deadline: Duration,
    /// `host:port`, for `Debug` and logs.
    server: String,
}

impl Smtp {
    async fn send(&self, message: Message) -> Result<(), SendError> {
        let (generation, transport) = self.current.lock().expect("not poisoned").clone();
        // A boxed future (lettre's trait is `async_trait`), so it can be dropped explicitly.
        let mut send = transport.send(message);
        tokio::select! {
            result = &mut send => {
                let response = result.map_err(SendError::from_smtp)?;
                tracing::debug!(
                    server = %self.server,
                    code = %response.code(),
                    "the SMTP server accepted the email"
                );
                Ok(())
            }
            () = tokio::time::sleep(self.deadline) => {
                {
                    let mut current = self.current.lock().expect("not poisoned");
                    if current.0 == generation {
                        *current = (generation + 1, self.builder.clone().build());
                    }
                }
                // Order matters: shut the old pool down while `send` still holds its
                // connection, so that dropping `send` closes the connection instead of
                // parking it for reuse.
                transport.shutdown().await;
                drop(send);
                tracing::warn!(
                    server = %self.server,
                    deadline_ms = self.deadline.as_millis(),
                    "the SMTP server did not finish the send in time; its connections are closed"
                );
                Err(SendError::Unavailable(Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no complete SMTP exchange within {} ms", self.deadline.as_millis()),
                ))))
            }
        }
    }
}

/// The settings cannot make a working mailer; the message says which one to fix.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// `username` without `password`, or the reverse.
    #[error("email.smtp.username and email.smtp.password must be set together")]
    IncompleteCredentials,
    /// Credentials would cross the network in clear text.
    #[error(
        "email.smtp.tls = \"none\" with credentials is only allowed for a loopback host, \
         not `{0}`: the password would travel in clear text"
    )]
    CredentialsWithoutTls(String),
    /// The TLS parameters for the host could not be built (e.g. no usable root certificates).
    #[error("could not set up TLS for `{host}`")]
    Tls {
        /// The SMTP host.
        host: String,
        /// What lettre reported.
        #[source]
        source: smtp::Error,
    },
    /// The SMTP pool starts a background task, which needs a running Tokio runtime.
    #[error("the SMTP mailer must be built inside a Tokio runtime")]
    NoRuntime,
    /// The folder for `.eml` files could not be created.
    #[error("could not create the mail folder `{dir}`")]
    FileDir {
        /// The folder.
        dir: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
}

/// Sending failed. [`SendError::is_transient`] says whether trying again later can help.
#[derive(thiserror::Error)]
pub enum SendError {
    /// The message did not get through but may later: server unreachable, connection refused,
    /// timeout, connection dropped, a 4xx reply, or the mail folder not writable.
    #[error("the mail service could not take the message now")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The server refused our credentials or security (SMTP 530, 534, 535, 538, no STARTTLS
    /// offered, a TLS handshake that failed). The message is fine, every other one fails the
    /// same way until an operator fixes the settings, so it is retried rather than given up.
    #[error(
        "the SMTP server refused our settings (credentials or TLS); fix the email.smtp settings"
    )]
    Misconfigured(#[source] smtp::Error),
    /// The server refused this message for good (a 5xx reply to it: unknown mailbox, bad
    /// address, policy). Sending it again gets the same answer.
    #[error("the SMTP server rejected the message permanently (code {code})")]
    Rejected {
        /// The SMTP reply code, e.g. 550.
        code: u16,
        /// The full error, with the server's text.
        #[source]
        source: smtp::Error,
    },
}

impl SendError {
    /// Whether a later attempt may succeed: `true` for [`SendError::Unavailable`] and
    /// [`SendError::Misconfigured`], `false` for [`SendError::Rejected`].
    pub fn is_transient(&self) -> bool {
        !matches!(self, SendError::Rejected { .. })
    }

    /// The SMTP reply code, when the server gave one.
    pub fn smtp_code(&self) -> Option<u16> {
        match self {
            SendError::Rejected { code, .. } => Some(*code),
            SendError::Misconfigured(e) => e.status().map(u16::from),
            SendError::Unavailable(e) => e
                .downcast_ref::<smtp::Error>()
                .and_then(|e| e.status())
                .map(u16::from),
        }
    }

    fn from_smtp(error: smtp::Error) -> Self {
        let code = error.status().map(u16::from);
        match code {
            // Authentication required / mechanism too weak / credentials invalid /
            // encryption required: about our session, not this message (RFC 4954).
            Some(530 | 534 | 535 | 538) => SendError::Misconfigured(error),
            Some(code) if error.is_permanent() => SendError::Rejected {
                code,
                source: error,
            },
            // lettre reports "server does not offer STARTTLS" and "no compatible AUTH
            // mechanism" as client errors; with a failed TLS handshake (certificate not
            // trusted, wrong host name) these are settings to fix, not message faults.
            None if error.is_client() || error.is_tls() => SendError::Misconfigured(error),
            // 4xx, connection refused, timeouts, network and TLS failures.
            _ => SendError::Unavailable(Box::new(error)),
        }
    }
}

impl fmt::Debug for SendError {
    // The whole cause chain, so one log line says what the server answered.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{self}")?;
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            writeln!(f, "Caused by:\n\t{cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl Mailer {
    /// SMTP when `settings.smtp` is set, the file transport into `settings.file_dir`
    /// otherwise. Building an SMTP mailer opens no connection (the first send does), but
    /// starts the pool's housekeeping task, so it must run inside a Tokio runtime.
    pub fn from_settings(settings: &EmailSettings) -> Result<Self, BuildError> {
        match &settings.smtp {
            Some(smtp) => Self::smtp(smtp),
            None => Self::file(&settings.file_dir),
        }
    }

    /// A mailer that writes `<uuid>.eml` files into `dir`, creating it if missing.
    pub fn file(dir: &Path) -> Result<Self, BuildError> {
        std::fs::create_dir_all(dir).map_err(|source| BuildError::FileDir {
            dir: dir.to_owned(),
            source,
        })?;
        tracing::info!(dir = %dir.display(), "welcome emails are written as .eml files");
        Ok(Self {
            transport: Transport::File {
                transport: AsyncFileTransport::new(dir),
                dir: dir.to_owned(),
            },
        })
    }

    /// A pooled SMTP mailer.
    pub fn smtp(settings: &SmtpSettings) -> Result<Self, BuildError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(BuildError::NoRuntime);
        }
        let host = settings.host.trim();
        let port = settings.port();
        let tls = match settings.tls {
            SmtpTls::None => Tls::None,
            SmtpTls::Starttls => Tls::Required(tls_parameters(host)?),
            SmtpTls::Tls => Tls::Wrapper(tls_parameters(host)?),
        };
        let deadline = Duration::from_millis(settings.timeout_ms.get());
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .tls(tls)
            .timeout(Some(deadline))
            .pool_config(PoolConfig::new().max_size(settings.pool_max_size.get()));
        match (&settings.username, &settings.password) {
            (Some(username), Some(password)) => {
                if settings.tls == SmtpTls::None && !is_loopback(host) {
                    return Err(BuildError::CredentialsWithoutTls(host.to_owned()));
                }
                builder = builder.credentials(Credentials::new(
                    username.clone(),
                    password.expose_secret().to_owned(),
                ));
            }
            (None, None) => {}
            _ => return Err(BuildError::IncompleteCredentials),
        }
        let server = format!("{host}:{port}");
        // The user name is not logged either: with many providers it is an email address.
        tracing::info!(
            %server,
            tls = ?settings.tls,
            authenticated = settings.username.is_some(),
            "welcome emails go through SMTP"
        );
        Ok(Self {
            transport: Transport::Smtp(Arc::new(Smtp {
                current: Mutex::new((0, builder.clone().build())),
                builder,
                deadline,
                server,
            })),
        })
    }

    /// Delivers `message`: accepted by the SMTP server, or written to a file.
    pub async fn send(&self, message: Message) -> Result<(), SendError> {
        match &self.transport {
            Transport::Smtp(smtp) => smtp.send(message).await?,
            Transport::File { transport, dir } => {
                let id = transport
                    .send(message)
                    .await
                    .map_err(|e| SendError::Unavailable(Box::new(e)))?;
                tracing::debug!(file = %dir.join(format!("{id}.eml")).display(), "email written");
            }
        }
        Ok(())
    }

    /// Closes pooled SMTP connections politely (QUIT); for the shutdown drain. Sends after
    /// this fail as [`SendError::Unavailable`].
    pub async fn shutdown(&self) {
        if let Transport::Smtp(smtp) = &self.transport {
            let transport = smtp.current.lock().expect("not poisoned").1.clone();
            transport.shutdown().await;
        }
    }
}

fn tls_parameters(host: &str) -> Result<TlsParameters, BuildError> {
    TlsParameters::new(host.to_owned()).map_err(|source| BuildError::Tls {
        host: host.to_owned(),
        source,
    })
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    #[test]
    fn smtp_mailer_outside_a_runtime_is_an_error_not_a_panic() {
        let err = Mailer::smtp(&SmtpSettings::new("localhost", 2525)).expect_err("no runtime");
        assert!(matches!(err, BuildError::NoRuntime), "{err:?}");
    }

    #[tokio::test]
    async fn credentials_in_clear_text_are_refused_off_loopback() {
        let mut smtp = SmtpSettings::new("mail.example.com", 25);
        smtp.tls = SmtpTls::None;
        smtp.username = Some("user".to_owned());
        smtp.password = Some(SecretString::from("hunter2"));
        let err = Mailer::smtp(&smtp).expect_err("refused");
        assert!(
            matches!(err, BuildError::CredentialsWithoutTls(_)),
            "{err:?}"
        );
        assert!(!err.to_string().contains("hunter2"));

        smtp.host = "127.0.0.1".to_owned();
        assert!(Mailer::smtp(&smtp).is_ok());
    }

    #[tokio::test]
    async fn half_credentials_are_refused() {
        let mut smtp = SmtpSettings::new("localhost", 2525);
        smtp.tls = SmtpTls::None;
        smtp.username = Some("user".to_owned());
        assert!(matches!(
            Mailer::smtp(&smtp),
            Err(BuildError::IncompleteCredentials)
        ));
        smtp.username = None;
        smtp.password = Some(SecretString::from("hunter2"));
        assert!(matches!(
            Mailer::smtp(&smtp),
            Err(BuildError::IncompleteCredentials)
        ));
    }

    #[tokio::test]
    async fn debug_of_a_mailer_shows_no_credentials() {
        let mut smtp = SmtpSettings::new("localhost", 2525);
        smtp.tls = SmtpTls::None;
        smtp.username = Some("mailer-user".to_owned());
        smtp.password = Some(SecretString::from("hunter2-secret"));
        let mailer = Mailer::smtp(&smtp).expect("built");
        let debug = format!("{mailer:?} {smtp:?}");
        assert!(debug.contains("localhost:2525"), "{debug}");
        assert!(!debug.contains("hunter2-secret"), "{debug}");
        assert!(!format!("{mailer:?}").contains("mailer-user"), "{debug}");
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        for host in ["localhost", "127.0.0.1", "::1", "[::1]", "LOCALHOST"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["mail.example.com", "10.0.0.1", "localhost.example.com"] {
            assert!(!is_loopback(host), "{host}");
        }
    }
}
