//! The welcome email from the outside: the secrets it carries, what it says, and how it
//! leaves (files, a real SMTP conversation, and the failures a saga must tell apart).

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use onboard::email::secret::{
    PASSWORD_CLASSES, has_every_class, password_alphabet, temporary_password,
};
use onboard::email::{
    AccessMode, EmailSettings, FirstAccess, FrontendUrl, Mailer, PasswordLength, SendError,
    SmtpSettings, SmtpTls, WelcomeEmail, hash_activation_token, verify_password,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{CryptoRng, Rng, SeedableRng};
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;

use crate::smtp_sink::{SinkScript, SmtpSink};

// ---------------------------------------------------------------------------------------------
// The temporary password: length, classes, and no visible bias.
// ---------------------------------------------------------------------------------------------

/// Passwords drawn per distribution check: 400 000 characters at length 20, enough for a
/// bias of a few percent in one character to stand far above the noise.
const DRAWS: usize = 20_000;

/// Upper tail of the chi-square distribution with `df` degrees of freedom at about
/// p = 3e-7 (z = 5), by the Wilson–Hilferty approximation. With a fixed seed the checks are
/// repeatable; the strict level keeps them from failing on a new seed by bad luck alone.
fn chi_square_critical(df: usize) -> f64 {
    let df = df as f64;
    let z = 5.0;
    let a = 2.0 / (9.0 * df);
    df * (1.0 - a + z * a.sqrt()).powi(3)
}

fn chi_square(observed: &[u64], expected: &[f64]) -> f64 {
    observed
        .iter()
        .zip(expected)
        .map(|(&o, &e)| (o as f64 - e).powi(2) / e)
        .sum()
}

/// Per class, counts of each of its characters over all `passwords`.
fn counts_per_class(passwords: &[String]) -> Vec<Vec<u64>> {
    let mut counts: Vec<Vec<u64>> = PASSWORD_CLASSES
        .iter()
        .map(|class| vec![0; class.len()])
        .collect();
    for password in passwords {
        for b in password.bytes() {
            for (class, counts) in PASSWORD_CLASSES.iter().zip(counts.iter_mut()) {
                if let Some(i) = class.iter().position(|&c| c == b) {
                    counts[i] += 1;
                }
            }
        }
    }
    counts
}

/// Inside each class every character must be equally likely: true of any unbiased draw,
/// whatever rule makes sure each class appears. A `byte % len` draw fails it, since the
/// first `256 % len` characters of the alphabet come up a third more often.
fn within_class_bias(passwords: &[String]) -> Result<(), String> {
    for (class, counts) in PASSWORD_CLASSES.iter().zip(counts_per_class(passwords)) {
        let total: u64 = counts.iter().sum();
        let expected = vec![total as f64 / class.len() as f64; class.len()];
        let statistic = chi_square(&counts, &expected);
        let critical = chi_square_critical(class.len() - 1);
        if statistic > critical {
            return Err(format!(
                "class {:?}: chi-square {statistic:.1} > {critical:.1}, counts {counts:?}",
                String::from_utf8_lossy(class)
            ));
        }
    }
    Ok(())
}

/// Share of each class among all characters when passwords are uniform over every
/// `length`-character string that holds all classes (inclusion–exclusion over the classes
/// left out).
fn expected_class_shares(length: usize) -> Vec<f64> {
    let sizes: Vec<f64> = PASSWORD_CLASSES.iter().map(|c| c.len() as f64).collect();
    let n: f64 = sizes.iter().sum();
    // Probability that `draws` uniform characters cover every class in `needed`.
    let covers = |needed: &[usize], draws: usize| -> f64 {
        (0u32..1 << needed.len())
            .map(|left_out| {
                let missing: f64 = needed
                    .iter()
                    .enumerate()
                    .filter(|(bit, _)| left_out & (1 << bit) != 0)
                    .map(|(_, &class)| sizes[class])
                    .sum();
                let sign = if left_out.count_ones() % 2 == 0 {
                    1.0
                } else {
                    -1.0
                };
                sign * ((n - missing) / n).powi(draws as i32)
            })
            .sum()
    };
    let all: Vec<usize> = (0..sizes.len()).collect();
    let valid = covers(&all, length);
    (0..sizes.len())
        .map(|class| {
            let others: Vec<usize> = all.iter().copied().filter(|&c| c != class).collect();
            // A given position holds this class and the other positions cover the rest.
            sizes[class] / n * covers(&others, length - 1) / valid
        })
        .collect()
}

/// The classes must appear as often as in a uniform draw of a valid password. Forcing one
/// character per class fails it: the small classes (digits, symbols) come up too often.
fn class_share_bias(passwords: &[String], length: usize) -> Result<(), String> {
    let observed: Vec<u64> = counts_per_class(passwords)
        .iter()
        .map(|counts| counts.iter().sum())
        .collect();
    let total: u64 = observed.iter().sum();
    let expected: Vec<f64> = expected_class_shares(length)
        .iter()
        .map(|share| share * total as f64)
        .collect();
    let statistic = chi_square(&observed, &expected);
    let critical = chi_square_critical(observed.len() - 1);
    if statistic > critical {
        Err(format!(
            "class shares: chi-square {statistic:.1} > {critical:.1}, observed {observed:?}, \
             expected {expected:.0?}"
        ))
    } else {
        Ok(())
    }
}

fn draw_passwords(mut generate: impl FnMut() -> String) -> Vec<String> {
    (0..DRAWS).map(|_| generate()).collect()
}

/// The mistake the old handler made: `byte % alphabet.len()`.
fn modulo_biased_password<R: Rng>(length: usize, rng: &mut R) -> String {
    let alphabet = password_alphabet();
    loop {
        let candidate: String = (0..length)
            .map(|_| char::from(alphabet[usize::from(rng.random::<u8>()) % alphabet.len()]))
            .collect();
        if has_every_class(&candidate) {
            return candidate;
        }
    }
}

/// A common way to guarantee the classes that skews their shares: one of each, then fill.
fn forced_classes_password<R: Rng>(length: usize, rng: &mut R) -> String {
    use rand::seq::IndexedRandom;
    let alphabet = password_alphabet();
    let mut chars: Vec<u8> = PASSWORD_CLASSES
        .iter()
        .map(|class| *class.choose(rng).expect("not empty"))
        .collect();
    while chars.len() < length {
        chars.push(*alphabet.choose(rng).expect("not empty"));
    }
    chars.shuffle(rng);
    String::from_utf8(chars).expect("ascii")
}

#[test]
fn temporary_passwords_are_never_shorter_than_sixteen_and_hold_every_class() {
    assert!(PasswordLength::new(15).is_err());
    let mut rng = rand::rng();
    for length in [16, 17, 20, 128] {
        let length = PasswordLength::new(length).expect("allowed length");
        for _ in 0..500 {
            let password = temporary_password(length, &mut rng);
            let password = password.expose_secret();
            assert_eq!(password.len(), length.get());
            assert!(password.len() >= 16);
            assert!(has_every_class(password), "{password}");
        }
    }
}

#[test]
fn temporary_password_characters_are_uniform_within_each_class() {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let length = PasswordLength::default();
    let passwords = draw_passwords(|| {
        temporary_password(length, &mut rng)
            .expose_secret()
            .to_owned()
    });
    within_class_bias(&passwords).unwrap();
}

#[test]
fn temporary_password_classes_appear_as_often_as_in_a_uniform_draw() {
    let expected = expected_class_shares(20);
    assert!(
        (expected.iter().sum::<f64>() - 1.0).abs() < 1e-12,
        "{expected:?}"
    );
    for length in [16, 20] {
        let mut rng = StdRng::seed_from_u64(0xc1a55 + length as u64);
        let password_length = PasswordLength::new(length).expect("allowed");
        let passwords = draw_passwords(|| {
            temporary_password(password_length, &mut rng)
                .expose_secret()
                .to_owned()
        });
        class_share_bias(&passwords, length).unwrap();
    }
}

#[test]
fn the_bias_checks_catch_known_biased_generators() {
    // Without this, the two checks above could pass because they check nothing.
    let mut rng = StdRng::seed_from_u64(0xbad);
    let modulo = draw_passwords(|| modulo_biased_password(20, &mut rng));
    assert!(within_class_bias(&modulo).is_err());
    let forced = draw_passwords(|| forced_classes_password(20, &mut rng));
    assert!(class_share_bias(&forced, 20).is_err());
}

// ---------------------------------------------------------------------------------------------
// What gets stored.
// ---------------------------------------------------------------------------------------------

fn now() -> DateTime<Utc> {
    "2025-03-01T10:00:00Z".parse().expect("valid timestamp")
}

fn settings_with(access: AccessMode) -> EmailSettings {
    EmailSettings {
        access,
        ..EmailSettings::default()
    }
}

#[test]
fn the_stored_token_hash_matches_only_the_mailed_token() {
    let (access, stored) =
        FirstAccess::issue(&settings_with(AccessMode::ActivationLink), now()).expect("issued");
    let FirstAccess::ActivationLink { token, .. } = &access else {
        panic!("the default is an activation link, got {access:?}");
    };
    let stored_hash = stored.activation_token_sha256.expect("hash stored");
    assert_eq!(hash_activation_token(token.expose_secret()), stored_hash);

    let mut tampered = token.expose_secret().to_owned();
    let last = tampered.pop().expect("not empty");
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert_ne!(hash_activation_token(&tampered), stored_hash);
    assert_eq!(stored.password_hash, None);
}

#[test]
fn the_stored_password_hash_verifies_the_mailed_password_and_is_not_it() {
    let (access, stored) =
        FirstAccess::issue(&settings_with(AccessMode::TemporaryPassword), now()).expect("issued");
    let FirstAccess::TemporaryPassword { password } = &access else {
        panic!("expected a temporary password, got {access:?}");
    };
    let hash = stored.password_hash.expect("hash stored");
    assert_ne!(hash, password.expose_secret());
    assert!(!hash.contains(password.expose_secret()));
    assert!(hash.starts_with("$argon2id$"));
    assert!(verify_password(password.expose_secret(), &hash));
    assert!(!verify_password(
        &password.expose_secret().to_uppercase(),
        &hash
    ));
    assert!(stored.must_change_password);
}

#[test]
fn debug_output_never_shows_a_secret() {
    for mode in [AccessMode::ActivationLink, AccessMode::TemporaryPassword] {
        let settings = settings_with(mode);
        let (access, stored) = FirstAccess::issue(&settings, now()).expect("issued");
        let secret = secret_of(&access);
        let welcome = welcome(&access, &settings.frontend_url, "Ada Admin");
        for debug in [
            format!("{access:?}"),
            format!("{welcome:?}"),
            format!("{stored:?}"),
        ] {
            assert!(!debug.contains(&secret), "{debug}");
        }
    }

    let mut settings = EmailSettings::default();
    let mut smtp = SmtpSettings::new("smtp.example.com", 587);
    smtp.username = Some("mailer".to_owned());
    smtp.password = Some(SecretString::from("smtp-password-123"));
    settings.smtp = Some(smtp);
    assert!(!format!("{settings:?}").contains("smtp-password-123"));
}

// ---------------------------------------------------------------------------------------------
// What the email says.
// ---------------------------------------------------------------------------------------------

fn secret_of(access: &FirstAccess) -> String {
    match access {
        FirstAccess::ActivationLink { token, .. } => token.expose_secret().to_owned(),
        FirstAccess::TemporaryPassword { password } => password.expose_secret().to_owned(),
    }
}

fn welcome<'a>(
    access: &'a FirstAccess,
    frontend_url: &'a FrontendUrl,
    admin_name: &'a str,
) -> WelcomeEmail<'a> {
    WelcomeEmail {
        admin_name,
        admin_email: "ada@example.com",
        client_code: "CL-202503-0001",
        client_alias: "Tech Company Ltd",
        access,
        frontend_url,
    }
}

#[test]
fn a_script_tag_in_a_name_is_escaped_in_the_html() {
    let settings = EmailSettings::default();
    let (access, _) = FirstAccess::issue(&settings, now()).expect("issued");
    let mut email = welcome(
        &access,
        &settings.frontend_url,
        "<script>alert('x')</script>",
    );
    email.client_alias = "Evil \"Corp\" & <b>Co</b>";
    let html = email.html_body();
    assert!(!html.contains("<script>"), "{html}");
    assert!(!html.contains("<b>Co</b>"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"),
        "{html}"
    );
    assert!(
        html.contains("Evil &quot;Corp&quot; &amp; &lt;b&gt;Co&lt;/b&gt;"),
        "{html}"
    );
}

#[test]
fn an_activation_email_has_the_link_its_expiry_the_admin_and_next_steps() {
    let mut settings = settings_with(AccessMode::ActivationLink);
    settings.frontend_url = FrontendUrl::parse("https://app.example.com").expect("valid");
    let (access, _) = FirstAccess::issue(&settings, now()).expect("issued");
    let url = format!(
        "https://app.example.com/activate?token={}",
        secret_of(&access)
    );
    let email = welcome(&access, &settings.frontend_url, "Ada Admin");

    for body in [email.text_body(), email.html_body()] {
        assert!(body.contains(&url), "{body}");
        assert!(body.contains("Ada Admin"), "{body}");
        assert!(body.contains("ada@example.com"), "{body}");
        assert!(body.contains("CL-202503-0001"), "{body}");
        assert!(body.contains("expires on"), "{body}");
        assert!(body.contains("2025-03-04 10:00 UTC"), "{body}");
        assert!(body.contains("Next steps"), "{body}");
        assert!(body.contains("Complete the KYC"), "{body}");
        assert!(
            body.contains("cannot be used before the KYC is approved"),
            "{body}"
        );
    }
    assert!(email.html_body().contains(&format!("href=\"{url}\"")));
}

#[test]
fn a_temporary_password_email_has_the_password_and_the_login_url() {
    let settings = settings_with(AccessMode::TemporaryPassword);
    let (access, _) = FirstAccess::issue(&settings, now()).expect("issued");
    let password = secret_of(&access);
    let email = welcome(&access, &settings.frontend_url, "Ada Admin");
    for body in [email.text_body(), email.html_body()] {
        assert!(body.contains(&password), "{body}");
        assert!(body.contains("http://localhost:3000/login"), "{body}");
        assert!(body.contains("choose a new password"), "{body}");
        assert!(!body.contains("/activate"), "{body}");
        assert!(body.contains("Complete the KYC"), "{body}");
    }
}

// ---------------------------------------------------------------------------------------------
// Reading a sent message back.
// ---------------------------------------------------------------------------------------------

/// A sent message taken apart: top-level headers and decoded bodies by content type.
struct ParsedMail {
    /// Top-level headers, unfolded, as (lowercase name, value).
    headers: Vec<(String, String)>,
    /// Decoded `text/plain` part.
    text: String,
    /// Decoded `text/html` part.
    html: String,
}

impl ParsedMail {
    fn parse(raw: &str) -> Self {
        let raw = raw.replace("\r\n", "\n");
        let (head, body) = raw
            .split_once("\n\n")
            .expect("headers end with a blank line");
        let headers = parse_headers(head);
        let content_type = header(&headers, "content-type").expect("a content type");
        assert!(
            content_type.starts_with("multipart/alternative"),
            "{content_type}"
        );
        let boundary = content_type
            .split("boundary=")
            .nth(1)
            .expect("a boundary")
            .trim_matches('"')
            .to_owned();
        let mut text = None;
        let mut html = None;
        for part in body.split(&format!("--{boundary}")).skip(1) {
            let Some((part_head, part_body)) = part.trim_start_matches('\n').split_once("\n\n")
            else {
                continue; // the closing `--` after the last boundary
            };
            let part_headers = parse_headers(part_head);
            let decoded = decode(
                part_body.trim_end_matches('\n'),
                header(&part_headers, "content-transfer-encoding").unwrap_or("7bit"),
            );
            let kind = header(&part_headers, "content-type").unwrap_or_default();
            if kind.starts_with("text/plain") {
                text = Some(decoded);
            } else if kind.starts_with("text/html") {
                html = Some(decoded);
            }
        }
        Self {
            headers,
            text: text.expect("a text/plain part"),
            html: html.expect("a text/html part"),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

fn parse_headers(head: &str) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = headers.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    headers
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn decode(body: &str, encoding: &str) -> String {
    match encoding.to_ascii_lowercase().as_str() {
        "quoted-printable" => decode_quoted_printable(body),
        "base64" => String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(body.split_whitespace().collect::<String>())
                .expect("valid base64"),
        )
        .expect("utf-8"),
        _ => body.to_owned(),
    }
}

fn decode_quoted_printable(body: &str) -> String {
    let mut bytes = Vec::with_capacity(body.len());
    let mut lines = body.split('\n').peekable();
    while let Some(line) = lines.next() {
        let (line, soft_break) = match line.strip_suffix('=') {
            Some(line) => (line, true),
            None => (line, false),
        };
        let mut rest = line.as_bytes();
        while let Some((&b, tail)) = rest.split_first() {
            if b == b'=' && tail.len() >= 2 {
                let hex = std::str::from_utf8(&tail[..2]).expect("ascii");
                bytes.push(u8::from_str_radix(hex, 16).expect("hex escape"));
                rest = &tail[2..];
            } else {
                bytes.push(b);
                rest = tail;
            }
        }
        if !soft_break && lines.peek().is_some() {
            bytes.push(b'\n');
        }
    }
    String::from_utf8(bytes).expect("utf-8")
}

fn rendered(settings: &EmailSettings, access: &FirstAccess) -> lettre::Message {
    welcome(access, &settings.frontend_url, "Ada Admin")
        .message(&settings.from, &settings.subject)
        .expect("renders")
}

// ---------------------------------------------------------------------------------------------
// The file transport.
// ---------------------------------------------------------------------------------------------

/// A fresh folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        Self(std::env::temp_dir().join(format!("onboard-email-{}", uuid::Uuid::new_v4())))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn without_smtp_one_eml_file_with_both_parts_is_written() {
    let dir = TempDir::new();
    let settings = EmailSettings {
        // A folder that does not exist yet: the mailer creates it.
        file_dir: dir.path().join("nested/mail"),
        ..EmailSettings::default()
    };
    let mailer = Mailer::from_settings(&settings).expect("file mailer");
    let (access, _) = FirstAccess::issue(&settings, now()).expect("issued");
    let url = access
        .activation_url(&settings.frontend_url)
        .expect("a link");

    mailer
        .send(rendered(&settings, &access))
        .await
        .expect("written");

    let files: Vec<PathBuf> = std::fs::read_dir(&settings.file_dir)
        .expect("folder exists")
        .map(|entry| entry.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].extension().and_then(|e| e.to_str()), Some("eml"));
    let mail = ParsedMail::parse(&std::fs::read_to_string(&files[0]).expect("readable"));
    assert_eq!(mail.header("subject"), Some("Your AOL Core Admin Account"));
    assert!(mail.header("to").expect("To").contains("<ada@example.com>"));
    assert!(
        mail.header("from")
            .expect("From")
            .contains("onboarding@localhost")
    );
    assert!(mail.header("message-id").is_some());
    assert!(mail.text.contains(url.expose_secret()), "{}", mail.text);
    assert!(mail.html.contains(url.expose_secret()), "{}", mail.html);
    assert!(mail.html.contains("<ol>"));
}

// ---------------------------------------------------------------------------------------------
// SMTP.
// ---------------------------------------------------------------------------------------------

async fn send_within_seconds(mailer: &Mailer, message: lettre::Message) -> Result<(), SendError> {
    tokio::time::timeout(Duration::from_secs(10), mailer.send(message))
        .await
        .expect("send finishes in time")
}

fn smtp_settings(smtp: SmtpSettings) -> EmailSettings {
    EmailSettings {
        smtp: Some(smtp),
        ..EmailSettings::default()
    }
}

#[tokio::test]
async fn the_smtp_sink_receives_the_message_with_recipient_and_subject() {
    let mut sink = SmtpSink::start(SinkScript::default()).await;
    let settings = smtp_settings(sink.settings());
    let mailer = Mailer::from_settings(&settings).expect("smtp mailer");
    let (access, _) = FirstAccess::issue(&settings, now()).expect("issued");

    send_within_seconds(&mailer, rendered(&settings, &access))
        .await
        .expect("accepted");
    // A second send reuses the pooled connection (NOOP, then MAIL on the same session).
    send_within_seconds(&mailer, rendered(&settings, &access))
        .await
        .expect("accepted");

    let mails = sink.wait_for(2).await;
    assert_eq!(mails.len(), 2);
    let mail = &mails[0];
    assert_eq!(mail.mail_from, "onboarding@localhost");
    assert_eq!(mail.rcpt_to, vec!["ada@example.com".to_owned()]);
    let parsed = ParsedMail::parse(&mail.data);
    assert_eq!(
        parsed.header("subject"),
        Some("Your AOL Core Admin Account")
    );
    assert!(
        parsed
            .header("to")
            .expect("To")
            .contains("<ada@example.com>")
    );
    assert!(parsed.text.contains(&secret_of(&access)));
    assert!(parsed.html.contains(&secret_of(&access)));
    mailer.shutdown().await;
}

#[tokio::test]
async fn smtp_to_a_port_where_nothing_listens_is_transient() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    }; // dropped: nothing listens there any more
    let mut smtp = SmtpSettings::new("127.0.0.1", port);
    smtp.tls = SmtpTls::None;
    let settings = smtp_settings(smtp);
    let mailer = Mailer::from_settings(&settings).expect("smtp mailer");
    let (access, _) = FirstAccess::issue(&settings, now()).expect("issued");

    let err = send_within_seconds(&mailer, rendered(&settings, &access))
        .await
        .expect_err("nobody listens");
    assert!(err.is_transient(), "{err:?}");
    assert!(matches!(err, SendError::Unavailable(_)), "{err:?}");
    assert_eq!(err.smtp_code(), None);
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_as_transient() {
    // Accepts the connection and says nothing, like a hung server.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let mut smtp = SmtpSettings::new("127.0.0.1", addr.port());
    smtp.tls = SmtpTls::None;
    smtp.timeout_ms = 300.try_into().expect("not zero");
    let settings = smtp_settings(smtp);
    let mailer = Mailer::from_settings(&settings).expect("smtp mailer");
    let (access, _) = FirstAccess::issue(&settings, now()).expect("issued");

    let err = send_within_seconds(&mailer, rendered(&settings, &access))
        .await
        .expect_err("times out");
    assert!(err.is_transient(), "{err:?}");
    assert!(matches!(err, SendError::Unavailable(_)), "{err:?}");
    silent.abort();
}

#[tokio::test]
async fn after_a_send_times_out_mid_data_the_next_message_gets_a_fresh_connection() {
    let mut sink = SmtpSink::start(SinkScript {
        stall_first_data: true,
        ..SinkScript::default()
    })
    .await;
    let mut smtp = sink.settings();
    smtp.timeout_ms = 500.try_into().expect("not zero");
    let settings = smtp_settings(smtp);
    let mailer = Mailer::from_settings(&settings).expect("smtp mailer");
    let (first, _) = FirstAccess::issue(&settings, now()).expect("issued");
    let (second, _) = FirstAccess::issue(&settings, now()).expect("issued");

    let err = send_within_seconds(&mailer, rendered(&settings, &first))
        .await
        .expect_err("the server hangs after the data");
    assert!(err.is_transient(), "{err:?}");
    // Give the cut-short send's connection time to go back to a pool, as it would under
    // load, so the next send would find it there.
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Reusing the hung connection would either hang again or pour this message into the
    // unfinished one; it must go through on a new connection instead.
    send_within_seconds(&mailer, rendered(&settings, &second))
        .await
        .expect("accepted on a fresh connection");
    let mails = sink.wait_for(1).await;
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_ne!(mails[0].connection, 0, "the stalled connection was reused");
    let parsed = ParsedMail::parse(&mails[0].data);
    assert!(parsed.text.contains(&secret_of(&second)));
    assert!(!parsed.text.contains(&secret_of(&first)));
}

#[tokio::test]
async fn a_5xx_refusal_of_the_recipient_is_permanent() {
    let sink = SmtpSink::start(SinkScript {
        rcpt_reply: Some(550),
        ..SinkScript::default()
    })
    .await;
    let settings = smtp_settings(sink.settings());
    let mailer = Mailer::from_settings(&settings).expect("smtp mailer");
    let (access, _) = FirstAccess::issue(&settings, now()).expect("issued");

    let err = send_within_seconds(&mailer, rendered(&settings, &access))
        .await
        .expect_err("refused");
    assert!(!err.is_transient(), "{err:?}");
    assert!(
        matches!(err, SendError::Rejected { code: 550, .. }),
        "{err:?}"
    );
    assert_eq!(err.smtp_code(), Some(550));
    assert!(sink.received().is_empty());
}

#[tokio::test]
async fn a_4xx_reply_is_transient() {
    let sink = SmtpSink::start(SinkScript {
        rcpt_reply: Some(451),
        ..SinkScript::default()
    })
    .await;
    let settings = smtp_settings(sink.settings());
    let mailer = Mailer::from_settings(&settings).expect("smtp mailer");
    let (access, _) = FirstAccess::issue(&settings, now()).expect("issued");

    let err = send_within_seconds(&mailer, rendered(&settings, &access))
        .await
        .expect_err("deferred");
    assert!(err.is_transient(), "{err:?}");
    assert_eq!(err.smtp_code(), Some(451));
}

#[tokio::test]
async fn refused_credentials_are_retryable_and_the_password_is_not_in_the_error() {
    let sink = SmtpSink::start(SinkScript {
        auth_reply: Some(535),
        ..SinkScript::default()
    })
    .await;
    let mut smtp = sink.settings();
    smtp.username = Some("mailer".to_owned());
    smtp.password = Some(SecretString::from("wrong-smtp-password"));
    let settings = smtp_settings(smtp);
    let mailer = Mailer::from_settings(&settings).expect("smtp mailer on loopback");
    let (access, _) = FirstAccess::issue(&settings, now()).expect("issued");

    let err = send_within_seconds(&mailer, rendered(&settings, &access))
        .await
        .expect_err("refused");
    // Every email would fail the same way until the settings are fixed: retry, do not drop.
    assert!(matches!(err, SendError::Misconfigured(_)), "{err:?}");
    assert!(err.is_transient());
    assert_eq!(err.smtp_code(), Some(535));
    let shown = format!("{err} {err:?} {mailer:?}");
    assert!(!shown.contains("wrong-smtp-password"), "{shown}");
    assert!(sink.received().is_empty());
}

/// A cryptographically secure generator is all `FirstAccess::issue_with` takes; this one is
/// seeded so two issues with the same seed can be compared.
fn seeded() -> impl CryptoRng {
    StdRng::seed_from_u64(42)
}

#[test]
fn issuing_is_repeatable_with_a_seeded_generator_and_differs_without() {
    let settings = EmailSettings::default();
    let (a, _) = FirstAccess::issue_with(&settings, now(), &mut seeded()).expect("issued");
    let (b, _) = FirstAccess::issue_with(&settings, now(), &mut seeded()).expect("issued");
    assert_eq!(secret_of(&a), secret_of(&b));
    let (c, _) = FirstAccess::issue(&settings, now()).expect("issued");
    let (d, _) = FirstAccess::issue(&settings, now()).expect("issued");
    assert_ne!(secret_of(&c), secret_of(&d));
}
