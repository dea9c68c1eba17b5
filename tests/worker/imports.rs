//! `client.import` (DESIGN.md, "Relations, imports and webhooks"): a record read from a source
//! system (the fake source, served over real HTTP on loopback) becomes a client through the
//! create saga, with `external_id = <source>:<source_id>`; a repeat, an unknown source and an
//! unknown record are refused with the contract's codes; a source that fails is retried.

use std::collections::HashMap;

use onboard::observe::Hooks;
use onboard::sources::SourceSettings;
use onboard::sources::fake::FakeSource;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::arrange;
use crate::profile::refused;
use crate::support::*;

const TOKEN: &str = "legacy-token";

/// A fake source on a free port; its base URL.
async fn fake_source() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let fake = FakeSource::new(TOKEN, HashMap::new());
    tokio::spawn(async move { axum::serve(listener, fake.router()).await });
    url
}

async fn put_record(source: &str, id: &str, record: Value) {
    let status = reqwest::Client::new()
        .put(format!("{source}/_fake/records/{id}"))
        .json(&record)
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success(), "{status}");
}

async fn reads(source: &str) -> u64 {
    let body: Value = reqwest::get(format!("{source}/_fake/reads"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["reads"].as_u64().unwrap()
}

/// A worker whose settings know the source as `legacy`.
async fn app_with_source(source: &str) -> TestApp {
    let (mut settings, database) = test_settings().await;
    settings.sources.insert(
        "legacy".into(),
        SourceSettings {
            base_url: source.to_string(),
            token: SecretString::from(TOKEN),
            timeout_ms: 2_000,
        },
    );
    spawn_app_with(settings, database, Hooks::default()).await
}

fn acme() -> Value {
    json!({
        "id": "0b6f3c1e-0000-4000-8000-000000000001",
        "fullName": "ACME PTE. LTD.",
        "identity": {"type": "corporate", "legalName": "ACME PTE. LTD.", "incorporationDate": "2001-05-04",
                     "country": "SG",
                     "identifications": [{"type": "registration-number", "identificationNumber": "200101234A",
                                          "issuingCountry": "SG"}]},
        "profile": {"identityType": "corporate", "phone": "+6561112222", "email": "finance@acme.example",
                    "registrationAddress": {"country": "SG", "city": "Singapore", "street": "Raffles Place",
                                            "houseNumber": "1", "postalCode": "048616"}},
        "relations": [{"relation": "director",
                       "identity": {"type": "individual", "givenName": "Wei", "familyName": "Lim"},
                       "profile": {"identityType": "individual", "email": "wei@acme.example"}}]
    })
}

#[tokio::test]
async fn a_record_from_the_source_becomes_a_client_once_and_unknown_ones_are_refused() {
    let source = fake_source().await;
    put_record(&source, "acme-001", acme()).await;
    let mut app = app_with_source(&source).await;

    let id = arrange::send(
        &app,
        "client.import",
        json!({"source": "legacy", "source_id": "acme-001"}),
        None,
    )
    .await;
    let created = app.wait_for_event("client.created", Some(&id)).await;
    let client = created.body["data"]["client"].clone();
    assert_eq!(client["external_id"], json!("legacy:acme-001"));
    assert_eq!(client["client_alias"], json!("ACME PTE. LTD."));
    assert_eq!(client["client_type"], json!("CORPORATE"));
    assert_eq!(client["country_code"], json!("SG"));
    assert_eq!(client["email"], json!("finance@acme.example"));
    assert_eq!(client["phone"], json!("+6561112222"));
    assert_eq!(client["identity"]["legal_name"], json!("ACME PTE. LTD."));
    assert_eq!(
        client["identity"]["identifications"][0]["identification_number"],
        json!("200101234A")
    );
    assert_eq!(client["address"]["postal_code"], json!("048616"));
    assert_eq!(
        created.body["data"]["relations"][0]["full_name"],
        json!("Wei Lim")
    );
    let connection = app
        .wait_for_event("client.connection_created", Some(&id))
        .await;
    assert_event_schema(&connection.body);
    let data = &connection.body["data"];
    assert_eq!(data["client"]["client_id"], client["client_id"]);
    assert_eq!(
        data["connect"]["connection"]["service_provider"],
        json!("legacy")
    );
    assert!(data["connect"]["connection"]["id"].is_string());
    assert_eq!(data["source_id"], json!("acme-001"));
    app.wait_for_event("client.onboarding_completed", Some(&id))
        .await;

    // The same record again: the client exists under its external id.
    let failed = "client.creation_failed";
    let data = refused(
        &mut app,
        "client.import",
        json!({"source": "legacy", "source_id": "acme-001"}),
        (
            failed,
            "EXTERNAL_ID_IN_USE",
            409,
            "A client with this external_id already exists.",
        ),
    )
    .await;
    assert_eq!(data["client_id"], client["client_id"]);
    refused(
        &mut app,
        "client.import",
        json!({"source": "crm", "source_id": "acme-001"}),
        (
            failed,
            "SOURCE_NOT_CONFIGURED",
            400,
            "No source system of this name is configured.",
        ),
    )
    .await;
    let data = refused(
        &mut app,
        "client.import",
        json!({"source": "legacy", "source_id": "nobody-404"}),
        (
            failed,
            "SOURCE_RECORD_NOT_FOUND",
            404,
            "The source system has no such record.",
        ),
    )
    .await;
    assert_eq!(data["source_id"], json!("nobody-404"));
}

#[tokio::test]
async fn a_source_answering_503_twice_then_200_makes_one_client() {
    let source = fake_source().await;
    put_record(&source, "flaky-1", acme()).await;
    let status = reqwest::Client::new()
        .post(format!("{source}/_fake/fail"))
        .json(&json!({"next": 2, "status": 503}))
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success());
    let mut app = app_with_source(&source).await;
    let id = arrange::send(
        &app,
        "client.import",
        json!({"source": "legacy", "source_id": "flaky-1"}),
        None,
    )
    .await;
    app.wait_for_event("client.onboarding_completed", Some(&id))
        .await;
    assert_eq!(reads(&source).await, 3, "two failures, then the record");
    let clients: i64 =
        sqlx::query_scalar("SELECT count(*) FROM clients WHERE external_id = 'legacy:flaky-1'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(clients, 1);
    assert_eq!(
        arrange::inbox_code(&app, &id).await,
        None,
        "succeeded, with no refusal code"
    );
}

/// Runs `onboard import` (the real binary) on `file`; its exit status and JSON summary.
async fn import_file(
    app: &TestApp,
    file: &std::path::Path,
    report: &std::path::Path,
) -> (bool, Value) {
    let out = onboard_bin(&app.settings)
        .arg("import")
        .arg(file)
        .arg("--json")
        .arg("--report")
        .arg(report)
        .args(["--idle-timeout", "60"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {stdout} / {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.success(), summary)
}

async fn count(app: &TestApp, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&app.pool).await.unwrap()
}

#[tokio::test]
async fn a_file_of_5000_rows_imported_twice_creates_each_client_once_and_reports_every_row_both_times()
 {
    let app = spawn_app().await;
    let dir = std::env::temp_dir().join(format!("onboard-import-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("clients.csv");
    // 5,000 rows: every 50th without a phone (VALIDATION_FAILED), every 40th an email of the
    // row before under another alias (EMAIL_IN_USE for one of the two), every 250th in a
    // country without a PSP, one whose metadata is not JSON, and one row twice, word for word.
    let mut csv =
        String::from("email,client_alias,client_type,country_code,phone,external_id,metadata\n");
    // Pairs of rows with one email where both are otherwise valid: one of each is refused.
    let (mut missing_phone, mut conflicts, mut no_psp) = (0, 0, 0);
    for i in 0..5000 {
        let mut email = format!("bulk{i}@example.com");
        let mut phone = format!("+659{i:07}");
        let mut country = "SG";
        let mut metadata = format!("\"{{\"\"row\"\": {i}}}\"");
        if i % 50 == 0 {
            phone.clear();
            missing_phone += 1;
        } else if i % 40 == 1 {
            email = format!("bulk{}@example.com", i - 1);
            if (i - 1) % 50 != 0 {
                conflicts += 1;
            }
        } else if i % 250 == 3 {
            country = "FR";
            no_psp += 1;
        } else if i == 4999 {
            metadata = "{broken".into();
        }
        csv.push_str(&format!(
            "{email},Bulk {i} Ltd,CORPORATE,{country},{phone},legacy-{i},{metadata}\n"
        ));
    }
    csv.push_str(
        "bulk7@example.com,Bulk 7 Ltd,CORPORATE,SG,+6590000007,legacy-7,\"{\"\"row\"\": 7}\"\n",
    );
    std::fs::write(&file, &csv).unwrap();

    let report = dir.join("first.csv");
    let (ok, first) = import_file(&app, &file, &report).await;
    assert!(ok, "every row has an outcome: {first}");
    assert_eq!(first["rows"], json!(5001));
    assert_eq!(first["missing"], json!(0));
    assert_eq!(first["outcomes"]["unreadable"], json!(1));
    assert_eq!(first["outcomes"]["duplicate"], json!(1));
    assert_eq!(first["codes"]["VALIDATION_FAILED"], json!(missing_phone));
    assert_eq!(first["codes"]["NO_PSP_FOR_COUNTRY"], json!(no_psp));
    // Of two rows with one email, one is created; the other is refused.
    assert_eq!(first["codes"]["EMAIL_IN_USE"], json!(conflicts));
    let refused = missing_phone + no_psp + conflicts;
    assert_eq!(first["outcomes"]["refused"], json!(refused));
    let created = 5000 - 1 - refused;
    assert_eq!(first["outcomes"]["succeeded"], json!(created));
    assert_eq!(
        count(&app, "SELECT count(*) FROM clients").await,
        created as i64
    );
    let report_text = std::fs::read_to_string(&report).unwrap();
    // The header, then each row that did not succeed, with its reason.
    assert_eq!(report_text.lines().count(), 1 + 1 + 1 + refused);
    assert!(report_text.contains("Email is already in use by another client."));
    assert!(report_text.contains("column metadata is not JSON"));
    let inbox = count(&app, "SELECT count(*) FROM inbox").await;

    // Again: nothing new anywhere, and the same outcome for every row.
    let again = dir.join("second.csv");
    let (ok, second) = import_file(&app, &file, &again).await;
    assert!(ok, "{second}");
    assert_eq!(second["outcomes"], first["outcomes"]);
    assert_eq!(second["codes"], first["codes"]);
    assert_eq!(
        count(&app, "SELECT count(*) FROM clients").await,
        created as i64
    );
    assert_eq!(count(&app, "SELECT count(*) FROM inbox").await, inbox);
    assert_eq!(std::fs::read_to_string(&again).unwrap(), report_text);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Item 5 of issue 20: an import reads its record in a stage of its own, outside any batch,
/// so a slow source holds up only its imports. 256 imports from a source answering each read
/// after 4 s are queued before an ordinary `client.create`: the create is decided before any
/// import is (with the reads inside the batches, it waited for a whole batch of reads, over a
/// minute at 8 reads at once).
#[tokio::test]
async fn a_slow_source_holds_up_only_its_imports() {
    use wiremock::matchers::{method, path_regex};
    let server = wiremock::MockServer::start().await;
    wiremock::Mock::given(method("GET"))
        .and(path_regex("^/clients/"))
        .respond_with(
            wiremock::ResponseTemplate::new(200)
                .set_body_json(acme())
                .set_delay(std::time::Duration::from_secs(4)),
        )
        .mount(&server)
        .await;
    let (mut settings, database) = test_settings().await;
    settings.sources.insert(
        "legacy".into(),
        SourceSettings {
            base_url: server.uri(),
            token: SecretString::from(TOKEN),
            timeout_ms: 10_000,
        },
    );
    let mut app = spawn_app_with(settings, database, Hooks::default()).await;
    let mut imports = Vec::new();
    for i in 0..256 {
        let body = json!({"source": "legacy", "source_id": format!("rec-{i}")});
        imports.push(
            app.publish(Msg::json("client.import", &body))
                .await
                .unwrap(),
        );
    }
    let id = app.create_client(&seed_sg_client()).await;
    app.wait_for_event("client.created", Some(&id)).await;
    assert_eq!(
        app.count("SELECT count(*) FROM inbox WHERE command_type = 'client.import'")
            .await,
        0,
        "an import was decided before the create"
    );
    // And the imports go on by themselves.
    app.wait_for_any(&["client.created", "client.creation_failed"], &imports[0])
        .await;
    app.finish().await;
}
