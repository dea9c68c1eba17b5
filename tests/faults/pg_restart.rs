//! PostgreSQL restarted for real (`pg_ctl restart -m fast`: every session killed, the server
//! down for a moment) under a running worker and a load: every command ends in exactly one
//! client, every onboarding completes, and nothing is left in the outbox (issue 12, item 11).
//!
//! The test boots a PostgreSQL cluster of its own (initdb in a temporary directory, its own
//! port) from the same Debian package, so the server every other test shares is not touched.
//! A drop guard stops it and deletes its data.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use lapin::{Connection, ConnectionProperties};
use onboard::worker::{Hooks, Worker};
use secrecy::{ExposeSecret, SecretString};

use crate::support::*;

fn pg_bin() -> PathBuf {
    std::fs::read_dir("/usr/lib/postgresql")
        .expect("postgresql is installed (scripts/services.sh up installs it)")
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .find(|p| p.join("pg_ctl").exists())
        .expect("a PostgreSQL bin directory")
}

/// A PostgreSQL cluster of this test's own.
struct PrivatePostgres {
    dir: PathBuf,
    port: u16,
}

impl PrivatePostgres {
    fn command(&self, program: &str) -> Command {
        let path = pg_bin().join(program);
        let mut cmd = if is_root() {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
                .arg(path);
            c
        } else {
            Command::new(path)
        };
        cmd.current_dir("/");
        cmd
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = self.command(program).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn start() -> PrivatePostgres {
        let id = &uuid::Uuid::new_v4().simple().to_string()[..10];
        let dir = std::env::temp_dir().join(format!("onboard-pg-{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            assert!(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&dir)
                    .status()
                    .unwrap()
                    .success()
            );
        }
        let pg = PrivatePostgres {
            dir,
            port: free_port(),
        };
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.data(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
            ],
        );
        pg.pg_ctl_start();
        pg
    }

    /// `pg_ctl` on this cluster with its log, port and socket directory, then `action`.
    fn pg_ctl(&self, action: &[&str]) -> Command {
        let log = self.dir.join("server.log").display().to_string();
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=100 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let mut cmd = self.command("pg_ctl");
        cmd.args(["-D", &self.data(), "-l", &log, "-o", &options, "-w"])
            .args(action);
        cmd
    }

    fn pg_ctl_start(&self) {
        let out = self.pg_ctl(&["start"]).output().unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The real thing: a fast restart kills every session and the server is down meanwhile.
    /// A command to run (off the async threads).
    fn restart_command(&self) -> Command {
        self.pg_ctl(&["-m", "fast", "restart"])
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn count(pool: &sqlx::PgPool, sql: &'static str) -> Option<i64> {
    sqlx::query_scalar(sql).fetch_one(pool).await.ok()
}

#[tokio::test]
async fn postgres_restarted_under_load_loses_nothing_and_duplicates_nothing() {
    let _one = crate::ONE_AT_A_TIME.write().await;
    let pg = PrivatePostgres::start();
    let (mut settings, database) = test_settings().await;
    settings.database.url = SecretString::from(pg.url("postgres"));
    settings.database.acquire_timeout_ms = 500;
    settings.retry.max_attempts = 50;
    settings.saga.email_max_attempts = 20;
    let pool = sqlx::PgPool::connect(&pg.url("postgres")).await.unwrap();
    let worker = Worker::start(settings.clone(), Hooks::default())
        .await
        .expect("worker starts");

    // The load: N creates published at once (SG: no Xendit), with a restart in the middle.
    let n: i64 = 1_000;
    let connection = Connection::connect(
        settings.broker.url.expose_secret(),
        ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel.confirm_select(Default::default()).await.unwrap();
    let names = onboard::broker::Names::new(&settings.broker.prefix);
    let publish = async {
        for i in 0..n {
            let id = format!("pg-restart-{i}");
            channel
                .basic_publish(
                    names.commands_exchange.as_str().into(),
                    "client.create".into(),
                    Default::default(),
                    &serde_json::to_vec(&client_with_email(&format!("pgr{i}@example.com")))
                        .unwrap(),
                    lapin::BasicProperties::default()
                        .with_message_id(id.as_str().into())
                        .with_delivery_mode(2),
                )
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    let restart = async {
        let deadline = Instant::now() + WAIT;
        while count(&pool, "SELECT count(*) FROM clients")
            .await
            .unwrap_or(0)
            < n / 5
        {
            assert!(Instant::now() < deadline, "the load never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let before = count(&pool, "SELECT count(*) FROM clients")
            .await
            .unwrap_or(0);
        assert!(
            before < n,
            "the restart must come in the middle of the load"
        );
        let mut cmd = pg.restart_command();
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl restart: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("PostgreSQL restarted with {before} of {n} clients created");
    };
    tokio::join!(publish, restart);

    // Every onboarding completes once the server is back.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = count(
            &pool,
            "SELECT count(*) FROM onboarding_sagas WHERE status = 'completed'",
        )
        .await
        .unwrap_or(0);
        let unpublished = count(&pool, "SELECT count(*) FROM outbox_pending")
            .await
            .unwrap_or(1);
        if done == n && unpublished == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{done} of {n} onboardings completed, {unpublished} outbox rows unpublished"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (what, sql) in [
        ("clients", "SELECT count(*) FROM clients"),
        (
            "distinct emails",
            "SELECT count(DISTINCT email) FROM clients",
        ),
        ("admin users", "SELECT count(*) FROM users"),
        ("sagas", "SELECT count(*) FROM onboarding_sagas"),
        (
            "commands in the inbox",
            "SELECT count(*) FROM inbox WHERE command_type = 'client.create'",
        ),
        (
            "created events",
            "SELECT count(*) FROM outbox WHERE message_type = 'client.created'",
        ),
    ] {
        assert_eq!(count(&pool, sql).await, Some(n), "{what}");
    }
    assert_eq!(
        count(&pool, "SELECT count(DISTINCT client_code) FROM clients").await,
        Some(n),
        "client codes"
    );
    worker.stop().await.unwrap();
    let _ = connection.close(200, "done".into()).await;
    pool.close().await;
    // The shared server held only the test's (unused) database: drop it and the broker objects.
    remove_test_objects(&settings, &database).await;
}
