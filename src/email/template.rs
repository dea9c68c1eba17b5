//! The welcome email's words: a plain-text and an HTML body of the same content, sent as one
//! multipart/alternative message so every mail client shows one of them.
//!
//! Names and aliases come from the command, i.e. from whoever filled in a form upstream, so
//! every value is HTML-escaped in the HTML body and stripped of control characters in both
//! (a newline in a name must not be able to forge a paragraph of the email).

use chrono::{DateTime, Utc};
use lettre::Message;
use lettre::message::{Mailbox, MultiPart};
use secrecy::ExposeSecret;

use super::secret::FirstAccess;
use super::settings::FrontendUrl;

/// Everything the welcome email says, borrowed from the saga step that sends it.
#[derive(Debug, Clone, Copy)]
pub struct WelcomeEmail<'a> {
    /// How the email greets the admin (the admin user's name).
    pub admin_name: &'a str,
    /// Where the email goes; also the login the admin signs in with.
    pub admin_email: &'a str,
    /// The client's code, `CL-YYYYMM-NNNN`, to quote when contacting support.
    pub client_code: &'a str,
    /// The client organisation's name.
    pub client_alias: &'a str,
    /// The secret that lets the admin in; the email is the only place it is ever written.
    pub access: &'a FirstAccess,
    /// Base of the login and activation links.
    pub frontend_url: &'a FrontendUrl,
}

/// The welcome email could not be put together; nothing was sent.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The admin's email is not a deliverable address: the command's fault, and retrying
    /// cannot help, so the send is to be recorded as failed.
    #[error("`{address}` is not a valid email address")]
    InvalidRecipient {
        /// The address as given.
        address: String,
        /// Why lettre refused it.
        #[source]
        source: lettre::address::AddressError,
    },
    /// lettre could not assemble the message. Unexpected: the headers set here are fixed.
    #[error("could not build the welcome email")]
    Build(#[source] lettre::error::Error),
}

impl RenderError {
    /// Always `false`: the same input renders the same way, so retrying never helps.
    pub fn is_transient(&self) -> bool {
        false
    }
}

impl WelcomeEmail<'_> {
    /// The message to hand to `Mailer::send`: `from` and `subject` come from the
    /// settings, `To` is the admin (name and address), the body is text plus HTML.
    pub fn message(&self, from: &Mailbox, subject: &str) -> Result<Message, RenderError> {
        let address =
            self.admin_email
                .trim()
                .parse()
                .map_err(|source| RenderError::InvalidRecipient {
                    address: self.admin_email.to_owned(),
                    source,
                })?;
        let name = one_line(self.admin_name);
        let to = Mailbox::new((!name.is_empty()).then_some(name), address);
        Message::builder()
            .from(from.clone())
            .to(to)
            .subject(subject)
            // A Message-ID helps spam filters and lets a bounce be matched to this send.
            .message_id(None)
            .multipart(MultiPart::alternative_plain_html(
                self.text_body(),
                self.html_body(),
            ))
            .map_err(RenderError::Build)
    }

    /// The plain-text body.
    pub fn text_body(&self) -> String {
        let name = one_line(self.admin_name);
        let email = one_line(self.admin_email);
        let alias = one_line(self.client_alias);
        let code = one_line(self.client_code);
        let login_url = self.frontend_url.login_url();

        let mut text = format!(
            "Hello {name},\n\n\
             An administrator account for {alias} (client code {code}) has been \
             created for you.\n\n\
             Your login: {email}\n\n"
        );
        match self.access {
            FirstAccess::ActivationLink { expires_at, .. } => {
                let url = self.activation_url();
                text.push_str(&format!(
                    "To activate your account and choose your password, open this link:\n\n\
                     {url}\n\n\
                     The link can be used once and expires on {}. \
                     Then sign in at {login_url}\n\n",
                    format_expiry(*expires_at)
                ));
            }
            FirstAccess::TemporaryPassword { password } => {
                text.push_str(&format!(
                    "Sign in at {login_url} with this temporary password:\n\n\
                     {}\n\n\
                     You will be asked to choose a new password when you first sign in.\n\n",
                    password.expose_secret()
                ));
            }
        }
        let (first_step, secret_word) = self.wording();
        text.push_str(&format!(
            "Next steps\n\n\
             1. {first_step}\n\
             2. Complete the KYC (identity verification) for {alias}.\n\
             3. Wait for the KYC to be approved: the account cannot be used before \
             the KYC is approved. We will let you know.\n\n\
             If you did not expect this email, do not use the {secret_word}; contact our \
             support and quote client code {code}.\n"
        ));
        text
    }

    /// The HTML body; every interpolated value is escaped.
    pub fn html_body(&self) -> String {
        let name = html_escape(&one_line(self.admin_name));
        let email = html_escape(&one_line(self.admin_email));
        let alias = html_escape(&one_line(self.client_alias));
        let code = html_escape(&one_line(self.client_code));
        let login_url = html_escape(&self.frontend_url.login_url());

        let (first_step, secret_word) = self.wording();
        let access = match self.access {
            FirstAccess::ActivationLink { expires_at, .. } => {
                let url = html_escape(&self.activation_url());
                format!(
                    "<p>To activate your account and choose your password, open this link:</p>\n\
                     <p><a href=\"{url}\">Activate my account</a></p>\n\
                     <p>If the link does not open, copy this address into your browser:<br>\
                     <code>{url}</code></p>\n\
                     <p>The link can be used once and expires on <strong>{}</strong>. \
                     Then sign in at <a href=\"{login_url}\">{login_url}</a>.</p>\n",
                    html_escape(&format_expiry(*expires_at))
                )
            }
            FirstAccess::TemporaryPassword { password } => format!(
                "<p>Sign in at <a href=\"{login_url}\">{login_url}</a> with this temporary \
                 password:</p>\n\
                 <p><code style=\"font-size:1.2em\">{}</code></p>\n\
                 <p>You will be asked to choose a new password when you first sign in.</p>\n",
                html_escape(password.expose_secret())
            ),
        };

        format!(
            "<!DOCTYPE html>\n\
             <html lang=\"en\">\n\
             <head><meta charset=\"utf-8\"><title>Your admin account</title></head>\n\
             <body style=\"font-family:sans-serif;line-height:1.5\">\n\
             <p>Hello {name},</p>\n\
             <p>An administrator account for <strong>{alias}</strong> (client code \
             <strong>{code}</strong>) has been created for you.</p>\n\
             <p>Your login: <strong>{email}</strong></p>\n\
             {access}\
             <h3>Next steps</h3>\n\
             <ol>\n\
             <li>{first_step}</li>\n\
             <li>Complete the KYC (identity verification) for {alias}.</li>\n\
             <li>Wait for the KYC to be approved: the account cannot be used before the KYC is \
             approved. We will let you know.</li>\n\
             </ol>\n\
             <p>If you did not expect this email, do not use the {secret_word}; contact our \
             support and quote client code {code}.</p>\n\
             </body>\n\
             </html>\n"
        )
    }

    /// The first of the next steps, and what not to use if the email was unexpected.
    fn wording(&self) -> (&'static str, &'static str) {
        match self.access {
            FirstAccess::ActivationLink { .. } => {
                ("Activate your account with the link above.", "link")
            }
            FirstAccess::TemporaryPassword { .. } => {
                ("Sign in and replace the temporary password.", "password")
            }
        }
    }

    /// The activation URL in clear, for the bodies only. Empty for a temporary password,
    /// which never asks for it.
    fn activation_url(&self) -> String {
        self.access
            .activation_url(self.frontend_url)
            .map(|url| url.expose_secret().to_owned())
            .unwrap_or_default()
    }
}

/// Expiry as an unambiguous absolute time: the reader's time zone is unknown.
fn format_expiry(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// `value` with control characters (newlines included) turned into spaces and trimmed.
fn one_line(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Escapes the five characters that can change the meaning of HTML text or of a quoted
/// attribute value.
fn html_escape(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            _ => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn link() -> FirstAccess {
        FirstAccess::ActivationLink {
            token: SecretString::from("tok_abc-123_XYZ"),
            expires_at: "2025-03-04T10:00:00Z".parse().expect("valid"),
        }
    }

    fn email<'a>(access: &'a FirstAccess, frontend: &'a FrontendUrl) -> WelcomeEmail<'a> {
        WelcomeEmail {
            admin_name: "Ada Admin",
            admin_email: "ada@example.com",
            client_code: "CL-202503-0001",
            client_alias: "Tech Company Ltd",
            access,
            frontend_url: frontend,
        }
    }

    #[test]
    fn html_escape_neutralises_markup_and_quotes() {
        assert_eq!(
            html_escape(r#"<script>alert("x&y")</script>'"#),
            "&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt;&#39;"
        );
        assert_eq!(html_escape("Zoë Ltd"), "Zoë Ltd");
    }

    #[test]
    fn newlines_in_a_name_cannot_forge_lines() {
        let access = link();
        let frontend = FrontendUrl::default();
        let mut welcome = email(&access, &frontend);
        welcome.admin_name = "Ada\n\nYour password is: hunter2\r\n";
        let text = welcome.text_body();
        assert!(
            text.starts_with("Hello Ada  Your password is: hunter2,\n"),
            "{text}"
        );
    }

    #[test]
    fn expiry_is_written_in_utc() {
        let access = link();
        let frontend = FrontendUrl::default();
        let welcome = email(&access, &frontend);
        assert!(
            welcome
                .text_body()
                .contains("expires on 2025-03-04 10:00 UTC")
        );
        assert!(welcome.html_body().contains("2025-03-04 10:00 UTC"));
    }

    #[test]
    fn invalid_recipient_is_refused_for_good() {
        let access = link();
        let frontend = FrontendUrl::default();
        let mut welcome = email(&access, &frontend);
        welcome.admin_email = "not an address";
        let err = welcome
            .message(&"a@example.com".parse().expect("valid"), "Subject")
            .expect_err("refused");
        assert!(
            matches!(err, RenderError::InvalidRecipient { .. }),
            "{err:?}"
        );
        assert!(!err.is_transient());
    }
}
