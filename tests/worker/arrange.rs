//! Arranging what the instance, lifecycle and query tests start from: clients made through
//! the real `client.create`, states set in SQL, extra users, and publishing with a reply.

use onboard::worker::Disposition;
use serde_json::Value;

use crate::support::*;

/// A client made by the worker, and its admin user.
#[derive(Debug, Clone, Copy)]
pub struct Made {
    pub client_id: i32,
    pub admin_id: i32,
}

/// Creates a client through `client.create` and waits until it is committed.
pub async fn client(app: &mut TestApp, email: &str) -> Made {
    let id = app.create_client(&client_with_email(email)).await;
    let created = app.wait_for_event("client.created", Some(&id)).await;
    made(&created)
}

fn made(created: &Received) -> Made {
    let data = &created.body["data"];
    Made {
        client_id: data["client"]["client_id"].as_i64().unwrap() as i32,
        admin_id: data["admin_user"]["user_id"].as_i64().unwrap() as i32,
    }
}

/// `n` clients at once (published together, then awaited).
pub async fn clients(app: &mut TestApp, prefix: &str, n: usize) -> Vec<Made> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        ids.push(
            app.create_client(&client_with_email(&format!("{prefix}{i}@example.com")))
                .await,
        );
    }
    let mut out = Vec::with_capacity(n);
    for id in &ids {
        out.push(made(&app.wait_for_event("client.created", Some(id)).await));
    }
    out
}

/// A value PostgreSQL refuses for some clients only, as a CHECK would (SQLSTATE 23514): every
/// client whose email starts with `poison`.
pub async fn refuse_poison_emails(app: &TestApp) {
    refuse_rows(app, "clients", "NEW.email LIKE 'poison%'").await;
}

/// Makes PostgreSQL refuse (SQLSTATE 23514, as a CHECK would) every row inserted into `table`
/// for which `condition` (over `NEW`) holds.
pub async fn refuse_rows(app: &TestApp, table: &str, condition: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE FUNCTION refuse_{table}() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF {condition} THEN
                 RAISE EXCEPTION 'poisoned row' USING ERRCODE = 'check_violation';
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table}
             FOR EACH ROW EXECUTE FUNCTION refuse_{table}();"
    )))
    .execute(&app.pool)
    .await
    .unwrap();
}

/// Puts a client in a lifecycle state and an eKYC state directly, as an arrangement.
pub async fn set_state(app: &TestApp, client_id: i32, status: &str, ekyc: &str) {
    sqlx::query("UPDATE clients SET client_status = $2, ekyc_status = $3 WHERE client_id = $1")
        .bind(client_id)
        .bind(status)
        .bind(ekyc)
        .execute(&app.pool)
        .await
        .unwrap();
}

/// A user of `client_id` with `role` (not an admin unless asked).
pub async fn user(app: &TestApp, client_id: i32, role: &str) -> i32 {
    sqlx::query_scalar(
        "INSERT INTO users (client_id, username, email, phone, role)
         VALUES ($1, 'Member', gen_random_uuid()::text || '@example.com', '+6500000000', $2)
         RETURNING user_id",
    )
    .bind(client_id)
    .bind(role)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

/// Publishes a command (with `reply_to` when given); returns its message_id, which is also
/// its correlation id.
pub async fn send(app: &TestApp, routing_key: &str, body: Value, reply_to: Option<&str>) -> String {
    let mut msg = Msg::json(routing_key, &body);
    msg.reply_to = reply_to.map(str::to_string);
    app.publish(msg).await.unwrap()
}

/// Waits until the worker settled `message_id` as handled (acked after commit or answer).
pub async fn handled(app: &TestApp, message_id: &str) {
    app.settled
        .wait_until(&format!("{message_id} to be handled"), |log| {
            log.iter().any(|s| {
                s.message_id.as_deref() == Some(message_id) && s.disposition == Disposition::Handled
            })
        })
        .await;
}

/// The `status` header of a reply.
pub fn status(reply: &Received) -> Option<i64> {
    reply.headers.get("status").and_then(Value::as_i64)
}

/// The inbox's outcome code of a command (None when it succeeded).
pub async fn inbox_code(app: &TestApp, message_id: &str) -> Option<String> {
    sqlx::query_scalar("SELECT outcome_code FROM inbox WHERE message_id = $1")
        .bind(message_id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// A table's rows as JSON, ordered, to compare before and after a refusal.
pub async fn snapshot(app: &TestApp, table: &'static str, order: &'static str) -> Value {
    let sql = format!("SELECT COALESCE(json_agg(t ORDER BY {order}), '[]'::json) FROM {table} t");
    sqlx::query_scalar::<_, Value>(sqlx::AssertSqlSafe(sql))
        .fetch_one(&app.pool)
        .await
        .unwrap()
}
