//! A tiny SMTP server for tests (the adapters and worker suites include this file):
//! greets, accepts every message, keeps what it received, and can be told to refuse, stall or
//! take its time.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use onboard::email::{SmtpSettings, SmtpTls};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How an [`SmtpSink`] answers.
#[derive(Debug, Clone, Copy, Default)]
pub struct SinkScript {
    /// Reply code to `RCPT TO` instead of 250 (e.g. 550, 451).
    pub rcpt_reply: Option<u16>,
    /// Offer `AUTH PLAIN LOGIN` and answer every `AUTH` with this code (e.g. 535).
    pub auth_reply: Option<u16>,
    /// After reading the first message's data, never answer on that connection again: a
    /// server hung in the middle of DATA. The message is not counted as received.
    pub stall_first_data: bool,
    /// How long the server takes to accept each message once its data has arrived (a slow
    /// server that answers, rather than one that does not).
    pub per_message: Duration,
}

/// One message the sink accepted.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// Which connection it came on, counting from 0 in accept order.
    pub connection: usize,
    /// Argument of `MAIL FROM:`.
    pub mail_from: String,
    /// Arguments of the `RCPT TO:` commands.
    pub rcpt_to: Vec<String>,
    /// The DATA section, dot-unstuffed, CRLF line ends.
    pub data: String,
}

/// A tiny SMTP server for tests: greets with 220, says 250 to EHLO/MAIL/RCPT/RSET/NOOP, 354
/// to DATA then 250 once the message ends, 221 to QUIT; keeps what it received. Plain text
/// only, any number of connections and messages per connection (the mailer pools).
pub struct SmtpSink {
    /// Where it listens (127.0.0.1, a free port).
    pub addr: SocketAddr,
    /// Everything received so far; `watch` so a test can wait for the next message.
    received: watch::Receiver<Vec<ReceivedMail>>,
    /// The accept loop, stopped when the sink is dropped.
    task: JoinHandle<()>,
}

impl SmtpSink {
    pub async fn start(script: SinkScript) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (sender, received) = watch::channel(Vec::new());
        let sender = Arc::new(sender);
        let stalled = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(async move {
            let mut connection = 0;
            while let Ok((stream, _)) = listener.accept().await {
                let session = Session {
                    connection,
                    script,
                    stalled: Arc::clone(&stalled),
                    sender: Arc::clone(&sender),
                };
                tokio::spawn(session.serve(stream));
                connection += 1;
            }
        });
        Self {
            addr,
            received,
            task,
        }
    }

    /// Settings that point a mailer at this sink.
    pub fn settings(&self) -> SmtpSettings {
        let mut settings = SmtpSettings::new(self.addr.ip().to_string(), self.addr.port());
        settings.tls = SmtpTls::None;
        settings.timeout_ms = 5_000.try_into().expect("not zero");
        settings
    }

    /// Waits (a few seconds at most) until `count` messages have arrived.
    pub async fn wait_for(&mut self, count: usize) -> Vec<ReceivedMail> {
        tokio::time::timeout(
            Duration::from_secs(5),
            self.received.wait_for(|mails| mails.len() >= count),
        )
        .await
        .expect("messages arrive in time")
        .expect("the sink is running")
        .clone()
    }

    pub fn received(&self) -> Vec<ReceivedMail> {
        self.received.borrow().clone()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One connection to an [`SmtpSink`].
struct Session {
    /// Its number, in accept order.
    connection: usize,
    /// How to answer.
    script: SinkScript,
    /// Whether a DATA has already been stalled (only the first one is).
    stalled: Arc<AtomicBool>,
    /// Where accepted messages go.
    sender: Arc<watch::Sender<Vec<ReceivedMail>>>,
}

impl Session {
    async fn serve(self, stream: TcpStream) -> std::io::Result<()> {
        let script = self.script;
        let (reader, mut writer) = stream.into_split();
        let mut lines = BufReader::new(reader).lines();
        writer.write_all(b"220 sink ESMTP ready\r\n").await?;
        let mut mail_from = String::new();
        let mut rcpt_to = Vec::new();
        while let Some(line) = lines.next_line().await? {
            let verb = line
                .split([' ', ':'])
                .next()
                .unwrap_or_default()
                .to_ascii_uppercase();
            let reply: String = match verb.as_str() {
                "EHLO" if script.auth_reply.is_some() => {
                    "250-sink greets you\r\n250 AUTH PLAIN LOGIN\r\n".into()
                }
                "EHLO" | "HELO" => "250 sink greets you\r\n".into(),
                "AUTH" => match script.auth_reply {
                    Some(code) => format!("{code} 5.7.8 authentication failed\r\n"),
                    None => "502 5.5.1 no AUTH here\r\n".into(),
                },
                "MAIL" => {
                    mail_from = argument(&line);
                    rcpt_to.clear();
                    "250 2.1.0 ok\r\n".into()
                }
                "RCPT" => match script.rcpt_reply {
                    Some(code) => format!("{code} mailbox unavailable\r\n"),
                    None => {
                        rcpt_to.push(argument(&line));
                        "250 2.1.5 ok\r\n".into()
                    }
                },
                "DATA" => {
                    writer.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                    let mut data = String::new();
                    while let Some(line) = lines.next_line().await? {
                        if line == "." {
                            break;
                        }
                        // RFC 5321 4.5.2: a leading dot was doubled by the client.
                        data.push_str(line.strip_prefix('.').unwrap_or(&line));
                        data.push_str("\r\n");
                    }
                    if script.stall_first_data && !self.stalled.swap(true, Ordering::SeqCst) {
                        // Hold the connection open and say nothing, until the sink is dropped.
                        std::future::pending::<()>().await;
                    }
                    tokio::time::sleep(script.per_message).await;
                    let mail = ReceivedMail {
                        connection: self.connection,
                        mail_from: std::mem::take(&mut mail_from),
                        rcpt_to: std::mem::take(&mut rcpt_to),
                        data,
                    };
                    self.sender.send_modify(|mails| mails.push(mail));
                    "250 2.0.0 queued\r\n".into()
                }
                "RSET" | "NOOP" => "250 2.0.0 ok\r\n".into(),
                "QUIT" => {
                    writer.write_all(b"221 2.0.0 bye\r\n").await?;
                    return Ok(());
                }
                _ => "502 5.5.2 command not recognised\r\n".into(),
            };
            writer.write_all(reply.as_bytes()).await?;
        }
        Ok(())
    }
}

/// The `<...>` argument of `MAIL FROM:<a@b> ...` or `RCPT TO:<a@b>`.
fn argument(line: &str) -> String {
    line.split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(address, _)| address.to_owned())
        .unwrap_or_default()
}
