//! The operator console (issue 22, its first part), through the real binary: users made with
//! `onboard console users`, the login, sessions, CSRF, roles, escaping and headers, and a dead
//! letter replayed from the browser's forms through the CLI's own replay, audited.

use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use tokio::io::AsyncWriteExt;

use crate::ops::{cure, poison, wait_dead_lettered};
use crate::support::*;

/// `onboard console users add NAME --role ROLE`, the password on standard input.
pub(crate) async fn add_user(app: &TestApp, name: &str, role: &str, password: &str) {
    let mut child = onboard_bin(&app.settings)
        .args(["console", "users", "add", name, "--role", role])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{password}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains(password), "the password was printed");
}

/// A running `onboard console` and a client that keeps no cookies and follows no redirect.
pub(crate) struct Console {
    pub(crate) base: String,
    http: reqwest::Client,
    _child: tokio::process::Child,
}

impl Console {
    pub(crate) async fn start(app: &TestApp) -> Console {
        let port = free_port();
        let child = onboard_bin(&app.settings)
            .arg("console")
            .env("ONBOARD__CONSOLE__LISTEN", format!("127.0.0.1:{port}"))
            .env("ONBOARD__CONSOLE__INSECURE_COOKIES", "true")
            .env("ONBOARD__CONSOLE__SAMPLE_SECONDS", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let deadline = Instant::now() + WAIT;
        while http.get(format!("{base}/healthz")).send().await.is_err() {
            assert!(Instant::now() < deadline, "the console never answered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Console {
            base,
            http,
            _child: child,
        }
    }

    async fn get(&self, path: &str, session: Option<&str>) -> (StatusCode, HeaderMap, String) {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(s) = session {
            request = request.header("cookie", format!("onboard_session={s}"));
        }
        let response = request.send().await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        (status, headers, response.text().await.unwrap())
    }

    async fn post(
        &self,
        path: &str,
        cookie: &str,
        form: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, String) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(form))
            .send()
            .await
            .unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        (status, headers, response.text().await.unwrap())
    }

    /// The login form's token and its cookie.
    async fn login_form(&self) -> (String, String) {
        let (status, headers, page) = self.get("/login", None).await;
        assert_eq!(status, StatusCode::OK);
        let token = hidden(&page, "csrf_token");
        let cookie = set_cookie(&headers, "onboard_login_csrf").expect("a login CSRF cookie");
        (token, format!("onboard_login_csrf={cookie}"))
    }

    async fn try_login(&self, name: &str, password: &str) -> (StatusCode, HeaderMap, String) {
        let (token, cookie) = self.login_form().await;
        self.post(
            "/login",
            &cookie,
            &[
                ("username", name),
                ("password", password),
                ("csrf_token", &token),
            ],
        )
        .await
    }

    /// Logs in; the session token and the session's CSRF token (from the overview's form).
    async fn login(&self, name: &str, password: &str) -> (String, String) {
        let (status, headers, _) = self.try_login(name, password).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(headers[LOCATION], "/");
        let raw = headers[SET_COOKIE].to_str().unwrap().to_string();
        assert!(
            raw.contains("HttpOnly") && raw.contains("SameSite=Strict"),
            "{raw}"
        );
        let session = set_cookie(&headers, "onboard_session").unwrap();
        let (status, _, page) = self.get("/", Some(&session)).await;
        assert_eq!(status, StatusCode::OK);
        (session.clone(), hidden(&page, "csrf_token"))
    }
}

/// A form's fields, urlencoded as a browser sends them.
fn form_body(form: &[(&str, &str)]) -> String {
    let mut url = reqwest::Url::parse("http://form/").unwrap();
    url.query_pairs_mut().extend_pairs(form);
    url.query().unwrap_or_default().to_string()
}

fn hidden(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {page}"))
        + marker.len();
    page[at..].split('"').next().unwrap().to_string()
}

fn set_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap().to_string())
}

#[tokio::test]
async fn the_console_needs_a_login_limits_failures_and_sends_strict_headers() {
    let app = spawn_app().await;
    add_user(&app, "ana", "operator", "correct horse battery").await;
    let console = Console::start(&app).await;

    // Without a session: to the login page.
    for path in ["/", "/dead-letters", "/dead-letters/x"] {
        let (status, headers, _) = console.get(path, None).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(headers[LOCATION], "/login", "{path}");
    }
    let (_, headers, page) = console.get("/login", None).await;
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"));
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "same-origin");
    assert!(page.contains("<form method=\"post\" action=\"/login\">"));

    // A login without the form's token is refused.
    let (status, _, _) = console
        .post(
            "/login",
            "",
            &[("username", "ana"), ("password", "correct horse battery")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A wrong password and an unknown user get the same page.
    let (wrong, _, wrong_page) = console.try_login("ana", "wrong").await;
    let (unknown, _, unknown_page) = console.try_login("nobody", "wrong").await;
    assert_eq!(
        (wrong, unknown),
        (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED)
    );
    let strip = |p: &str| {
        p.replace(&hidden(p, "csrf_token"), "")
            .replace("nobody", "ana")
    };
    assert_eq!(strip(&wrong_page), strip(&unknown_page));

    // A session works; logging out ends it.
    let (session, csrf) = console.login("ana", "correct horse battery").await;
    let (status, _, overview) = console.get("/", Some(&session)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(overview.contains("id=\"dead-letters\""), "{overview}");
    let cookie = format!("onboard_session={session}");
    let (status, _, _) = console
        .post("/logout", &cookie, &[("csrf_token", "nope")])
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "logout needs the CSRF token too"
    );
    let (status, headers, _) = console
        .post("/logout", &cookie, &[("csrf_token", &csrf)])
        .await;
    assert_eq!(
        (status, &headers[LOCATION]),
        (StatusCode::SEE_OTHER, &"/login".parse().unwrap())
    );
    let (status, _, _) = console.get("/", Some(&session)).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "the session is gone");

    // From the sixth failed try in a minute for one name: 429, even with the right password.
    for _ in 0..4 {
        console.try_login("ana", "wrong again").await;
    }
    let (status, _, _) = console.try_login("ana", "correct horse battery").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    app.finish().await;
}

#[tokio::test]
async fn a_viewer_sees_dead_letters_but_cannot_act_and_an_operator_replays_one_once() {
    let mut app = spawn_app().await;
    add_user(&app, "vic", "viewer", "viewer password").await;
    add_user(&app, "ana", "operator", "operator password").await;
    poison(&app).await;
    let mut body = client_with_email("xss@example.com");
    body["client_alias"] = serde_json::json!("<script>alert(1)</script>");
    let id = app.create_client(&body).await;
    wait_dead_lettered(&app, 1).await;
    let console = Console::start(&app).await;

    // The viewer sees the letter, escaped, with no button, and is refused the action.
    let (viewer, viewer_csrf) = console.login("vic", "viewer password").await;
    let (status, _, list) = console.get("/dead-letters", Some(&viewer)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(list.contains(&id), "{list}");
    let (status, _, page) = console
        .get(&format!("/dead-letters/{id}"), Some(&viewer))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
        "{page}"
    );
    assert!(!page.contains("<script>alert"), "unescaped");
    assert!(!page.contains("id=\"replay\""), "a viewer gets no button");
    let replay = format!("/dead-letters/{id}/replay");
    let (status, _, _) = console
        .post(
            &replay,
            &format!("onboard_session={viewer}"),
            &[("csrf_token", &viewer_csrf)],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The operator: refused without the CSRF token, then replays it once the cause is fixed.
    let (operator, csrf) = console.login("ana", "operator password").await;
    let cookie = format!("onboard_session={operator}");
    let (_, _, page) = console
        .get(&format!("/dead-letters/{id}"), Some(&operator))
        .await;
    assert!(page.contains("id=\"replay\""));
    let (status, _, _) = console.post(&replay, &cookie, &[("csrf_token", "")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        app.count("SELECT count(*) FROM dlq_audit").await,
        0,
        "nothing moved"
    );
    cure(&app).await;
    let (status, headers, _) = console
        .post(&replay, &cookie, &[("csrf_token", &csrf)])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(
        headers[LOCATION]
            .to_str()
            .unwrap()
            .starts_with("/dead-letters?done=replayed+1")
    );
    app.wait_for_event("client.created", Some(&id)).await;
    let (_, _, list) = console.get("/dead-letters", Some(&operator)).await;
    assert!(
        !list.contains(&format!("/dead-letters/{id}\"")),
        "still listed: {list}"
    );
    assert_eq!(app.count("SELECT count(*) FROM clients").await, 1);
    let (actor, note): (String, Option<String>) =
        sqlx::query_as("SELECT actor, note FROM dlq_audit WHERE action = 'replay'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(actor, "console:ana");
    assert!(note.unwrap_or_default().contains("127.0.0.1"));
    app.finish().await;
}

#[tokio::test]
async fn sagas_and_webhooks_are_acted_on_through_the_clis_functions_and_every_action_is_audited() {
    let mut app = spawn_app().await;
    add_user(&app, "vic", "viewer", "viewer password").await;
    add_user(&app, "ana", "operator", "operator password").await;
    let id = app
        .create_client(&client_with_email("late@example.com"))
        .await;
    let created = app.wait_for_event("client.created", Some(&id)).await;
    let client_id = created.body["data"]["client"]["client_id"]
        .as_i64()
        .unwrap();
    app.wait_for_event("client.onboarding_completed", Some(&id))
        .await;
    // No worker from here: the saga is set back to a failing email step, due in an hour.
    app.stop_worker().await;
    sqlx::query(
        "UPDATE onboarding_sagas SET status = 'running', step = 'welcome_email', attempts = 2,
             last_error = 'SMTP said 451', due_at = now() + interval '1 hour'
         WHERE client_id = $1",
    )
    .bind(client_id as i32)
    .execute(&app.pool)
    .await
    .unwrap();
    let receiver = "http://127.0.0.1:9/hook";
    let out = onboard_bin(&app.settings)
        .args(["webhooks", "add", receiver, "--events", "*"])
        .env("ONBOARD__WEBHOOKS__ALLOW_PRIVATE_ADDRESSES", "true")
        .env("ONBOARD_WEBHOOK_SECRET", onboard::webhooks::new_secret())
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let console = Console::start(&app).await;

    let (viewer, viewer_csrf) = console.login("vic", "viewer password").await;
    let (status, _, page) = console.get("/sagas", Some(&viewer)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("SMTP said 451"), "{page}");
    assert!(!page.contains("class=\"retry\""), "a viewer gets no button");
    let retry = format!("/sagas/{client_id}/retry");
    let viewer_cookie = format!("onboard_session={viewer}");
    let (status, _, _) = console
        .post(&retry, &viewer_cookie, &[("csrf_token", &viewer_csrf)])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (operator, csrf) = console.login("ana", "operator password").await;
    let cookie = format!("onboard_session={operator}");
    let (status, headers, _) = console
        .post(&retry, &cookie, &[("csrf_token", &csrf)])
        .await;
    assert_eq!(
        (status, headers[LOCATION].to_str().unwrap()),
        (StatusCode::SEE_OTHER, "/sagas")
    );
    let due_now: bool =
        sqlx::query_scalar("SELECT due_at <= now() FROM onboarding_sagas WHERE client_id = $1")
            .bind(client_id as i32)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(due_now, "the retry made the saga due");
    let (status, _, _) = console
        .post("/sagas/999999/retry", &cookie, &[("csrf_token", &csrf)])
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The endpoint disabled from the console, then enabled from the CLI.
    let (status, _, page) = console.get("/webhooks", Some(&operator)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(receiver));
    let (status, _, _) = console
        .post("/webhooks/1/disable", &cookie, &[("csrf_token", &csrf)])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (enabled, reason): (bool, Option<String>) = sqlx::query_as(
        "SELECT enabled, disabled_reason FROM webhook_endpoints WHERE endpoint_id = 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        (enabled, reason.as_deref()),
        (false, Some("disabled by ana"))
    );
    let out = onboard_bin(&app.settings)
        .args(["webhooks", "enable", "1"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());

    // The client found by search, and what happened to it, newest first.
    let (status, _, found) = console
        .get("/clients?q=LATE%40example", Some(&viewer))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        found.contains(&format!("/clients/{client_id}\"")),
        "{found}"
    );
    let (_, _, none) = console.get("/clients?q=%3Cnobody%3E", Some(&viewer)).await;
    assert!(
        !none.contains("/clients/") && !none.contains("<nobody>"),
        "{none}"
    );
    let (status, _, timeline) = console
        .get(&format!("/clients/{client_id}"), Some(&viewer))
        .await;
    assert_eq!(status, StatusCode::OK);
    for seen in [
        "client.create",
        "welcome email SENT",
        "SMTP said 451",
        "saga.retry by ana (console)",
    ] {
        assert!(timeline.contains(seen), "{seen} missing from {timeline}");
    }
    assert!(
        timeline.find("saga.retry by ana").unwrap() < timeline.find("client.create").unwrap(),
        "newest first"
    );

    // One audit for both doors: who, from where, what, on what.
    let (status, _, audit) = console.get("/audit", Some(&viewer)).await;
    assert_eq!(status, StatusCode::OK);
    for seen in [
        "saga.retry",
        "webhook_endpoint.disable",
        "webhook_endpoint.enable",
        "ana",
        "127.0.0.1",
    ] {
        assert!(audit.contains(seen), "{seen} missing from {audit}");
    }
    let rows: Vec<(String, String, String, bool)> =
        sqlx::query_as("SELECT actor, source, action, done FROM operator_actions ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let summary: Vec<(&str, &str, bool)> = rows
        .iter()
        .map(|(_, source, action, done)| (source.as_str(), action.as_str(), *done))
        .collect();
    assert_eq!(
        summary,
        [
            ("console", "saga.retry", true),
            ("console", "saga.retry", false),
            ("console", "webhook_endpoint.disable", true),
            ("cli", "webhook_endpoint.enable", true),
        ]
    );
    assert_eq!(rows[0].0, "ana");
    app.finish().await;
}

#[tokio::test]
async fn a_broken_body_is_fixed_in_the_browser_checked_first_and_replayed_once_and_groups_replay_whole()
 {
    let mut app = spawn_app().await;
    add_user(&app, "ana", "operator", "operator password").await;
    // Dead-lettered while client inserts fail: one to edit, two replayed as a group.
    poison(&app).await;
    let edited_id = app.create_client(&client_with_email("typo@example")).await;
    let mut group = Vec::new();
    for i in 0..2 {
        group.push(
            app.create_client(&client_with_email(&format!("g{i}@example.com")))
                .await,
        );
    }
    wait_dead_lettered(&app, 3).await;
    cure(&app).await;
    let console = Console::start(&app).await;
    let (operator, csrf) = console.login("ana", "operator password").await;
    let cookie = format!("onboard_session={operator}");
    let edit = format!("/dead-letters/{edited_id}/edit");

    // A body its schema refuses is not sent: the errors are shown, the letter stays.
    let (status, _, page) = console
        .post(
            &edit,
            &cookie,
            &[("csrf_token", &csrf), ("body", r#"{"email": 42}"#)],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("/email: fails type"), "{page}");
    let (status, _, _) = console
        .post(
            &edit,
            &cookie,
            &[("csrf_token", &csrf), ("body", "{not json")],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, _, list) = console.get("/dead-letters", Some(&operator)).await;
    assert!(list.contains(&edited_id), "nothing was sent");

    // The fixed body goes out under the same message id, once.
    let mut fixed = client_with_email("typo@example.com");
    fixed["client_alias"] = serde_json::json!("Fixed Ltd");
    let (status, headers, _) = console
        .post(
            &edit,
            &cookie,
            &[("csrf_token", &csrf), ("body", &fixed.to_string())],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(
        headers[LOCATION]
            .to_str()
            .unwrap()
            .contains("replayed+1+of+1")
    );
    let created = app.wait_for_event("client.created", Some(&edited_id)).await;
    assert_eq!(
        created.body["data"]["client"]["client_alias"],
        serde_json::json!("Fixed Ltd")
    );
    let messages: serde_json::Value =
        sqlx::query_scalar("SELECT messages FROM dlq_audit WHERE note LIKE '%edited%'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(messages[0]["message_id"], serde_json::json!(edited_id));
    assert_eq!(
        messages[0]["original_body"]["email"],
        serde_json::json!("typo@example")
    );

    // The other two share a cause: one button replays the group.
    let fingerprint: String = {
        let (_, _, list) = console.get("/dead-letters", Some(&operator)).await;
        let marker = "/dead-letters/groups/";
        let at = list.find(marker).expect("a group form") + marker.len();
        list[at..].split('/').next().unwrap().to_string()
    };
    let (status, headers, _) = console
        .post(
            &format!("/dead-letters/groups/{fingerprint}/replay"),
            &cookie,
            &[("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(
        headers[LOCATION]
            .to_str()
            .unwrap()
            .contains("replayed+2+of+2")
    );
    for id in &group {
        app.wait_for_event("client.created", Some(id)).await;
    }
    assert_eq!(app.count("SELECT count(*) FROM clients").await, 3);
    app.finish().await;
}
