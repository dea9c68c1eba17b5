//! The seeds' remaining fields and rules (issue 21), as an upstream service sees them:
//! `client.create`'s seed 002/003/004 fields and the derived full name, phone numbers and
//! country codes checked at the edge, and `client.list`'s search, date filters, orders and
//! page counts.

use serde_json::{Value, json};

use crate::arrange;
use crate::profile::{ask, create, create_body, refused};
use crate::support::*;

const CREATION_FAILED: &str = "client.creation_failed";

#[tokio::test]
async fn client_create_takes_the_seeds_fields_and_derives_the_full_name() {
    let mut app = spawn_app().await;
    let corporate = create(
        &mut app,
        create_body(
            "maju@example.com",
            "ID",
            json!({
                "client_alias": "PT. Maju & Co.",
                "phone": "+62 (812) 3456-7890",
                "is_active": false,
                "description": "  Wholesale of spices  ",
                "corporation_type": "pt",
                "contact": {"name": " Budi ", "email": "budi@maju.example", "phone": "0812.3456.7890"},
                "identity": {"type": "corporate", "legal_name": "PT Maju Bersama"}
            }),
        ),
    )
    .await;
    assert_eq!(corporate["phone"], json!("+6281234567890"));
    assert_eq!(corporate["is_active"], json!(false));
    assert_eq!(corporate["description"], json!("Wholesale of spices"));
    assert_eq!(
        corporate["contact"],
        json!({"name": "Budi", "email": "budi@maju.example", "phone": "081234567890"})
    );
    assert_eq!(corporate["identity"]["corporation_type"], json!("pt"));
    assert_eq!(corporate["full_name"], json!("PT Maju Bersama"));

    let person = create(
        &mut app,
        create_body(
            "ann@example.com",
            "SG",
            json!({"identity": {"type": "individual", "given_name": "Ann", "family_name": "Lee"}}),
        ),
    )
    .await;
    assert_eq!(person["full_name"], json!("Ann Lee"));
    assert_eq!(person["is_active"], json!(true));
    assert_eq!(person["contact"], Value::Null);
    assert_eq!(person["description"], Value::Null);

    // What client.get answers is what was stored.
    let (_, got) = ask(
        &app,
        "client.get",
        json!({"client_id": corporate["client_id"]}),
    )
    .await;
    for key in [
        "phone",
        "is_active",
        "description",
        "contact",
        "full_name",
        "identity",
    ] {
        assert_eq!(got.body["client"][key], corporate[key], "{key}");
    }
    // An inactive client's admin may not change instances (client.deactivate's rule).
    let admin: i32 = sqlx::query_scalar("SELECT user_id FROM users WHERE client_id = $1")
        .bind(corporate["client_id"].as_i64().unwrap() as i32)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let (_, reply) = ask(
        &app,
        "instance.create",
        json!({"actor_user_id": admin, "instance_name": "API"}),
    )
    .await;
    assert_eq!(reply.body, json!({"error": "Client is inactive"}));

    // The full name follows an identity change; description and contact are patched.
    let (_, updated) = ask(
        &app,
        "client.update",
        json!({"client_id": corporate["client_id"], "identity": {"legal_name": "PT Maju Jaya"},
               "description": null, "contact": {"name": "Sari"}}),
    )
    .await;
    assert_eq!(arrange::status(&updated), Some(200), "{}", updated.body);
    let client = &updated.body["client"];
    assert_eq!(client["full_name"], json!("PT Maju Jaya"));
    assert_eq!(client["description"], Value::Null);
    assert_eq!(
        client["contact"],
        json!({"name": "Sari", "email": null, "phone": null})
    );

    // corporation_type belongs to corporate identities.
    refused(
        &mut app,
        "client.create",
        create_body(
            "solo@example.com",
            "SG",
            json!({"corporation_type": "ltd",
                   "identity": {"type": "individual", "given_name": "Solo", "family_name": "Tan"}}),
        ),
        (
            CREATION_FAILED,
            "CORPORATION_TYPE_NOT_CORPORATE",
            400,
            "corporation_type applies to corporate identities only.",
        ),
    )
    .await;
    app.finish().await;
}

#[tokio::test]
async fn phones_are_stored_canonical_and_countries_must_be_iso_codes() {
    let mut app = spawn_app().await;
    let phone_text = "phone must be 7 to 15 digits, optionally after a +; spaces, dashes, dots and \
                      parentheses are ignored.";
    for bad in [
        "12-34",
        "+62 812 3456 7890 123",
        "call me",
        "+62-812-3456-789x",
    ] {
        refused(
            &mut app,
            "client.create",
            create_body("phone@example.com", "SG", json!({"phone": bad})),
            (CREATION_FAILED, "INVALID_PHONE", 400, phone_text),
        )
        .await;
    }
    for bad in ["XX", "ZZ", "UK", "IDN"] {
        refused(
            &mut app,
            "client.create",
            create_body("country@example.com", bad, json!({})),
            (
                CREATION_FAILED,
                "INVALID_COUNTRY",
                400,
                "country_code must be an ISO 3166-1 alpha-2 code.",
            ),
        )
        .await;
    }
    let client = create(
        &mut app,
        create_body("ok@example.com", "sg", json!({"phone": " +65 9123.4567 "})),
    )
    .await;
    assert_eq!(client["country_code"], json!("SG"));
    assert_eq!(client["phone"], json!("+6591234567"));
    let stored: String = sqlx::query_scalar("SELECT phone FROM clients WHERE client_id = $1")
        .bind(client["client_id"].as_i64().unwrap() as i32)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, "+6591234567");
    // And on update, with its own refusal.
    refused(
        &mut app,
        "client.update",
        json!({"client_id": client["client_id"], "phone": "(0)"}),
        ("client.command_failed", "INVALID_PHONE", 400, phone_text),
    )
    .await;
    app.finish().await;
}

/// `client.list` with `body`, answered 200.
async fn list(app: &TestApp, body: Value) -> Value {
    let (_, reply) = ask(app, "client.list", body.clone()).await;
    assert_eq!(arrange::status(&reply), Some(200), "{body}: {}", reply.body);
    reply.body
}

fn aliases(page: &Value) -> Vec<String> {
    page["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client_alias"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn client_list_searches_filters_by_dates_sorts_and_counts_pages() {
    let mut app = spawn_app().await;
    let mut made = Vec::new();
    for (i, (alias, email, external)) in [
        ("Zeta Trading", "ops@zeta.example", Some("crm-100")),
        ("Alpha Maju", "hello@alpha.example", None),
        ("Beta 100% Pure", "beta@example.com", Some("crm-200")),
        ("gamma_co", "gamma@example.com", None),
        ("Delta", "delta@maju.example", None),
    ]
    .into_iter()
    .enumerate()
    {
        let mut extra = json!({"client_alias": alias});
        if let Some(e) = external {
            extra["external_id"] = json!(e);
        }
        let client = create(&mut app, create_body(email, "SG", extra)).await;
        // Distinct creation instants a day apart, oldest first, for the date filters.
        sqlx::query(
            "UPDATE clients SET created = timestamptz '2026-01-10 12:00Z' + make_interval(days => $2),
                                updated = timestamptz '2026-02-10 12:00Z' - make_interval(days => $2)
             WHERE client_id = $1",
        )
        .bind(client["client_id"].as_i64().unwrap() as i32)
        .bind(i as i32)
        .execute(&app.pool)
        .await
        .unwrap();
        made.push(client);
    }

    // q: case-insensitive, anywhere, over alias, email, code and external id.
    assert_eq!(
        aliases(&list(&app, json!({"q": "MAJU"})).await),
        ["Delta", "Alpha Maju"]
    );
    assert_eq!(
        aliases(&list(&app, json!({"q": "crm-2"})).await),
        ["Beta 100% Pure"]
    );
    let code = made[0]["client_code"].as_str().unwrap().to_lowercase();
    assert_eq!(
        aliases(&list(&app, json!({"q": code})).await),
        ["Zeta Trading"]
    );
    // LIKE's wildcards are literal characters in q.
    assert_eq!(
        aliases(&list(&app, json!({"q": "100%"})).await),
        ["Beta 100% Pure"]
    );
    assert_eq!(
        aliases(&list(&app, json!({"q": "a_c"})).await),
        ["gamma_co"]
    );
    assert_eq!(
        aliases(&list(&app, json!({"q": "nobody"})).await),
        Vec::<String>::new()
    );

    // Dates: a day is whole; instants are exact.
    let body = json!({"created_from": "2026-01-11", "created_to": "2026-01-12"});
    assert_eq!(
        aliases(&list(&app, body).await),
        ["Beta 100% Pure", "Alpha Maju"]
    );
    let body = json!({"created_from": "2026-01-12T12:00:00Z"});
    assert_eq!(
        aliases(&list(&app, body).await),
        ["Delta", "gamma_co", "Beta 100% Pure"]
    );
    let body = json!({"updated_since": "2026-02-09"});
    assert_eq!(
        aliases(&list(&app, body).await),
        ["Alpha Maju", "Zeta Trading"]
    );

    // Orders.
    let by_alias = list(&app, json!({"sort": "alias"})).await;
    let mut sorted = aliases(&by_alias);
    sorted.sort();
    assert_eq!(aliases(&by_alias), sorted);
    assert_eq!(
        aliases(&list(&app, json!({"sort": "updated", "order": "asc"})).await),
        [
            "Delta",
            "gamma_co",
            "Beta 100% Pure",
            "Alpha Maju",
            "Zeta Trading"
        ]
    );
    assert_eq!(
        aliases(&list(&app, json!({"sort": "created", "order": "asc"})).await),
        [
            "Zeta Trading",
            "Alpha Maju",
            "Beta 100% Pure",
            "gamma_co",
            "Delta"
        ]
    );

    // Cursor paging in another order serves every client once, and counts pages.
    let mut seen = Vec::new();
    let mut body = json!({"sort": "alias", "order": "desc", "page_size": 2});
    for expected_page in 1..=3 {
        let page = list(&app, body.clone()).await;
        assert_eq!(page["page"], json!(expected_page));
        assert_eq!(page["total"], json!(5));
        assert_eq!(page["total_pages"], json!(3));
        seen.extend(aliases(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => body["cursor"] = json!(cursor),
            None => break,
        }
    }
    let mut desc = sorted.clone();
    desc.reverse();
    assert_eq!(seen, desc);
    // A cursor of one order is refused in another.
    let first = list(&app, json!({"sort": "alias", "page_size": 2})).await;
    let (_, reply) = ask(
        &app,
        "client.list",
        json!({"sort": "updated", "cursor": first["next_cursor"]}),
    )
    .await;
    assert_eq!(arrange::status(&reply), Some(400));

    // take/skip paging says its page too.
    let page = list(&app, json!({"take": 2, "skip": 2})).await;
    assert_eq!(
        (page["page"].clone(), page["total_pages"].clone()),
        (json!(2), json!(3))
    );
    let (_, partners) = ask(&app, "partner.list", json!({})).await;
    assert_eq!(partners.body["total_pages"], json!(0));
    app.finish().await;
}

#[tokio::test]
async fn the_search_is_an_index_scan_not_a_scan_of_every_client() {
    let app = spawn_app().await;
    // Enough clients for the planner to prefer an index when it can use one.
    sqlx::query(
        "INSERT INTO clients (client_code, email, client_alias, client_type, country_code, phone)
         SELECT 'CL-209901-' || lpad(n::text, 6, '0'), 'bulk' || n || '@example.com',
                'Bulk Client ' || n, 'CORPORATE', 'SG', '+6590000000'
         FROM generate_series(1, 30000) AS n",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE clients")
        .execute(&app.pool)
        .await
        .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT client_id FROM clients c
         WHERE c.deleted_at IS NULL AND c.search_text LIKE '%client 4242%'",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let plan = plan.join("\n");
    assert!(plan.contains("clients_search"), "{plan}");
    let found = list(&app, json!({"q": "Client 4242"})).await;
    assert_eq!(found["total"], json!(1), "{found}");
    app.finish().await;
}
