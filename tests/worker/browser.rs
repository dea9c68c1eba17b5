//! The console in a real headless Chromium (Debian's `chromium` and `chromium-driver`, which
//! `scripts/services.sh tools` installs), driven over WebDriver by fantoccini: what an operator
//! and a viewer do with the mouse and the keyboard, checked by what they see and by what the
//! worker did. Every page visited is saved as a screenshot under
//! `target/console-screenshots/` (the images in `docs/console.md` are copies of them).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::console::{Console, add_user};
use crate::ops::{cure, handled_once, poison, wait_dead_lettered};
use crate::support::*;

/// A chromedriver of its own and one headless Chromium session on it.
struct Browser {
    client: Client,
    base: String,
    _driver: tokio::process::Child,
}

impl Browser {
    async fn open(console: &Console) -> Browser {
        let port = free_port();
        let driver = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; scripts/services.sh tools)");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({"args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--lang=en-US",
            ]}),
        );
        let webdriver = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + WAIT;
        let client = loop {
            match ClientBuilder::rustls()
                .unwrap()
                .capabilities(capabilities.clone())
                .connect(&webdriver)
                .await
            {
                Ok(c) => break c,
                Err(e) => {
                    assert!(Instant::now() < deadline, "no WebDriver session: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        Browser {
            client,
            base: console.base.clone(),
            _driver: driver,
        }
    }

    async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap();
    }

    async fn path(&self) -> String {
        let url = self.client.current_url().await.unwrap();
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        }
    }

    /// The page's text. The overview reloads itself: a read that met the page as it was
    /// replaced is made again on the new one.
    async fn text(&self) -> String {
        let mut last = None;
        for _ in 0..20 {
            let read = async { self.client.find(Locator::Css("body")).await?.text().await };
            match read.await {
                Ok(text) => return text,
                // Met mid-navigation: stale, missing, or a node of the document before.
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the page kept changing: {last:?}")
    }

    /// Clicks a link or a form's button and waits for the page it leads to: the document
    /// is marked before the click, and the wait ends when a loaded document has no mark
    /// (WebDriver's click does not always wait for a form's navigation).
    async fn click(&self, css: &str) {
        self.client
            .execute("window.onboardBefore = true;", vec![])
            .await
            .unwrap();
        let mut clicked = false;
        for _ in 0..10 {
            let click = async { self.client.find(Locator::Css(css)).await?.click().await };
            match click.await {
                Ok(()) => {
                    clicked = true;
                    break;
                }
                Err(e) if stale(&e) => continue,
                Err(e) => panic!("no {css}: {e}"),
            }
        }
        assert!(clicked, "{css} kept changing");
        let deadline = Instant::now() + WAIT;
        loop {
            let state = self
                .client
                .execute(
                    "return window.onboardBefore === undefined && document.readyState === 'complete';",
                    vec![],
                )
                .await;
            if matches!(state, Ok(Value::Bool(true))) {
                return;
            }
            assert!(Instant::now() < deadline, "clicking {css} led nowhere");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn type_into(&self, css: &str, text: &str) {
        let field = self.client.find(Locator::Css(css)).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    async fn log_in(&self, name: &str, password: &str) {
        self.goto("/").await;
        assert_eq!(self.path().await, "/login", "no session: to the login page");
        self.screenshot("login").await;
        self.type_into("input[name=username]", name).await;
        self.type_into("input[name=password]", password).await;
        self.click("form[action='/login'] button").await;
        assert_eq!(self.path().await, "/", "{}", self.text().await);
    }

    /// Reloads the overview until `check` accepts what `css`'s element says (text, or the
    /// attribute `attr`), and returns it.
    async fn overview_until(
        &self,
        css: &str,
        attr: Option<&str>,
        check: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            self.goto("/").await;
            let element = self.client.find(Locator::Css(css)).await.unwrap();
            let seen = match attr {
                Some(a) => element.attr(a).await.unwrap().unwrap_or_default(),
                None => element.text().await.unwrap(),
            };
            if check(&seen) {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "the overview's {css} shows {seen}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Saves what the browser shows as `target/console-screenshots/NAME.png`.
    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// Every button on the page, with the method and action of its form.
    async fn buttons(&self) -> Vec<(String, String, String)> {
        let mut found = Vec::new();
        for button in self
            .client
            .find_all(Locator::Css("button, input[type=submit]"))
            .await
            .unwrap()
        {
            let form = button.find(Locator::XPath("ancestor::form")).await.unwrap();
            let method = form.attr("method").await.unwrap().unwrap_or_default();
            let action = form.attr("action").await.unwrap().unwrap_or_default();
            found.push((button.text().await.unwrap(), method, action));
        }
        found
    }

    async fn close(self) {
        self.client.close().await.unwrap();
    }
}

fn stale(e: &fantoccini::error::CmdError) -> bool {
    matches!(
        e,
        fantoccini::error::CmdError::Standard(w)
            if w.error == fantoccini::error::ErrorStatus::StaleElementReference
    )
}

/// A dead letter's body as the console's edit form holds it.
async fn edit_form_body(browser: &Browser) -> Value {
    let area = browser
        .client
        .find(Locator::Css("textarea[name=body]"))
        .await
        .unwrap();
    let text = area.prop("value").await.unwrap().unwrap();
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn an_operator_finds_why_an_onboarding_failed_fixes_the_message_and_replays_it_in_the_browser()
 {
    let mut app = spawn_app().await;
    add_user(&app, "ana", "operator", "operator password").await;
    // Two onboardings dead-lettered while a rule in the database refuses every client.
    poison(&app).await;
    let typo = app.create_client(&client_with_email("typo@example")).await;
    let plain = app
        .create_client(&client_with_email("plain@example.com"))
        .await;
    wait_dead_lettered(&app, 2).await;
    cure(&app).await;
    let console = Console::start(&app).await;
    let browser = Browser::open(&console).await;
    browser.log_in("ana", "operator password").await;

    // The overview: the figures and the chart of the last hour, refreshing by itself.
    browser
        .overview_until("#dead-letters", None, |seen| seen == "2")
        .await;
    browser
        .client
        .find(Locator::Css("svg#chart polyline.commands"))
        .await
        .unwrap();
    let refresh = browser
        .client
        .find(Locator::Css("meta[http-equiv=refresh]"))
        .await
        .unwrap();
    assert_eq!(refresh.attr("content").await.unwrap().as_deref(), Some("5"));

    // Why it failed: the dead letters page, then the letter with its failure history.
    browser.click("header a[href='/dead-letters']").await;
    let page = browser.text().await;
    assert!(page.contains("Dead letters (2)"), "{page}");
    assert!(
        page.contains("blocked by rule 17"),
        "the reason is shown: {page}"
    );
    browser.screenshot("dead-letters").await;

    // The CLI's filters, as a form: by type, by reason, by age (a bad age is said, not hidden).
    let letters_shown = |page: &str| {
        [&typo, &plain]
            .iter()
            .filter(|id| page.contains(id.as_str()))
            .count()
    };
    for (field, value, shown) in [
        ("input[name=type]", "client.update", 0),
        ("input[name=type]", "client.create", 2),
        ("input[name=reason]", "RULE 17", 2),
        ("input[name=older_than]", "1d", 0),
    ] {
        browser.goto("/dead-letters").await;
        browser.type_into(field, value).await;
        browser.click("form.filters button").await;
        let page = browser.text().await;
        assert_eq!(letters_shown(&page), shown, "{field}={value}: {page}");
    }
    browser.goto("/dead-letters?older_than=soon").await;
    let page = browser.text().await;
    assert!(page.contains("older than \"soon\""), "{page}");
    browser.goto("/dead-letters").await;
    browser
        .click(&format!("a[href='/dead-letters/{typo}']"))
        .await;
    let page = browser.text().await;
    assert!(page.contains("blocked by rule 17"), "{page}");
    assert!(page.contains("typo@example"), "{page}");
    browser.screenshot("dead-letter").await;

    // A fix the schema refuses is shown with its errors, and nothing is sent.
    browser
        .type_into("textarea[name=body]", r#"{"email": 42}"#)
        .await;
    browser.click("button#edit").await;
    let page = browser.text().await;
    assert!(page.contains("/email: fails type"), "{page}");
    assert_eq!(
        edit_form_body(&browser).await,
        json!({"email": 42}),
        "the refused body is kept in the form, to correct"
    );
    browser.screenshot("edit-refused").await;
    assert_eq!(app.count("SELECT count(*) FROM dlq_audit").await, 0);

    // The real fix: the address corrected in the form, sent, gone from the list.
    browser.goto(&format!("/dead-letters/{typo}")).await;
    let mut body = edit_form_body(&browser).await;
    body["email"] = json!("fixed@example.com");
    browser
        .type_into(
            "textarea[name=body]",
            &serde_json::to_string_pretty(&body).unwrap(),
        )
        .await;
    browser.click("button#edit").await;
    assert!(
        browser.path().await.starts_with("/dead-letters?"),
        "{}",
        browser.path().await
    );
    let page = browser.text().await;
    assert!(!page.contains(&typo), "still listed: {page}");

    // And the other one replayed as it was, with the button.
    browser
        .click(&format!("a[href='/dead-letters/{plain}']"))
        .await;
    browser.click("button#replay").await;
    let page = browser.text().await;
    assert!(page.contains("Dead letters (0)"), "{page}");
    browser.screenshot("dead-letters-replayed").await;

    // The worker made each onboarding once, the first with the corrected address.
    app.wait_for_event("client.created", Some(&typo)).await;
    app.wait_for_event("client.created", Some(&plain)).await;
    app.settled
        .wait_until("both handled", |log| {
            handled_once(log, &typo) && handled_once(log, &plain)
        })
        .await;
    assert_eq!(app.count("SELECT count(*) FROM clients").await, 2);
    assert_eq!(
        app.count("SELECT count(*) FROM clients WHERE email = 'fixed@example.com'")
            .await,
        1
    );

    // The client found by the search box, and its timeline, events included.
    browser.click("header a[href='/clients']").await;
    browser.type_into("input[name=q]", "fixed@example").await;
    browser.click("form[action='/clients'] button").await;
    browser.screenshot("clients").await;
    browser.click("td a[href^='/clients/']").await;
    app.wait_for_event("client.onboarding_completed", Some(&typo))
        .await;
    browser.client.refresh().await.unwrap();
    let page = browser.text().await;
    for seen in [
        "client.create",
        "client.created",
        "published",
        "welcome email SENT",
        "dead letter replay by console:ana",
        "edited and retried",
    ] {
        assert!(page.contains(seen), "{seen} missing from {page}");
    }
    browser.screenshot("client").await;

    // The audit says who did it, from where, and keeps the original body.
    browser.click("header a[href='/audit']").await;
    let page = browser.text().await;
    for seen in [
        "console:ana",
        "edited and retried",
        "typo@example",
        "127.0.0.1",
    ] {
        assert!(page.contains(seen), "{seen} missing from {page}");
    }
    // Its long JSON wraps in its cell: the page is no wider than the window.
    let overflow = browser
        .client
        .execute(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(overflow, json!(0), "the audit page scrolls sideways");
    browser.screenshot("audit").await;
    for (path, name) in [("/sagas", "sagas"), ("/webhooks", "webhooks")] {
        browser.goto(path).await;
        browser.screenshot(name).await;
    }

    // Back on the overview, the chart has drawn the commands the replays caused.
    browser
        .overview_until("svg#chart polyline.commands", Some("points"), |points| {
            points
                .split(' ')
                .filter_map(|p| p.split_once(','))
                .any(|(_, y)| y.parse::<i64>().is_ok_and(|y| y < 160))
        })
        .await;
    browser.screenshot("overview").await;
    browser.close().await;
    app.finish().await;
}

#[tokio::test]
async fn a_viewer_in_the_browser_finds_no_button_that_acts_and_markup_shows_as_text() {
    let app = spawn_app().await;
    add_user(&app, "vic", "viewer", "viewer password").await;
    poison(&app).await;
    let mut body = client_with_email("xss@example.com");
    body["client_alias"] = json!("<script>alert(1)</script>");
    let id = app.create_client(&body).await;
    wait_dead_lettered(&app, 1).await;
    let console = Console::start(&app).await;
    let browser = Browser::open(&console).await;
    browser.log_in("vic", "viewer password").await;

    let letter = format!("/dead-letters/{id}");
    for path in [
        "/",
        "/dead-letters",
        &letter,
        "/sagas",
        "/webhooks",
        "/clients",
        "/audit",
    ] {
        browser.goto(path).await;
        assert_eq!(browser.path().await, path);
        // Only logging out and searching: no form that changes anything.
        for (text, method, action) in browser.buttons().await {
            assert!(
                action == "/logout" || method == "get",
                "{path}: a viewer sees \"{text}\" posting to {action}"
            );
        }
    }
    // The alias is text on the page, not a script that ran.
    browser.goto(&letter).await;
    let page = browser.text().await;
    assert!(page.contains("<script>alert(1)</script>"), "{page}");
    assert!(
        browser.client.get_alert_text().await.is_err(),
        "a script ran"
    );
    browser.screenshot("viewer-dead-letter").await;

    // A replay forged from the viewer's own session, with its CSRF token: 403.
    let token = browser
        .client
        .find(Locator::Css(
            "form[action='/logout'] input[name=csrf_token]",
        ))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    let status = browser
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch(arguments[0], {method: 'POST', credentials: 'same-origin',
                 headers: {'content-type': 'application/x-www-form-urlencoded'},
                 body: 'csrf_token=' + encodeURIComponent(arguments[1])})
               .then(r => done(r.status), e => done(String(e)));",
            vec![json!(format!("{letter}/replay")), json!(token)],
        )
        .await
        .unwrap();
    assert_eq!(status, json!(403));
    assert_eq!(app.count("SELECT count(*) FROM dlq_audit").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM clients").await, 0);
    browser.close().await;
    app.finish().await;
}
