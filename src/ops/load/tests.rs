use super::commands::phone;
use super::*;
use crate::messages::{IncomingMessage, parse};

#[test]
fn generated_commands_are_unique_valid_and_spread_over_the_countries() {
    let mut options = Options::new(12);
    options.run_id = "r1".into();
    let commands = client_create_commands(&options);
    let schemas = crate::registry::schemas();
    let mut emails = std::collections::HashSet::new();
    for (sent, body) in &commands {
        let msg = IncomingMessage {
            routing_key: "client.create".into(),
            message_id: Some(sent.message_id.clone()),
            content_type: Some("application/json".into()),
            body: body.clone(),
            ..Default::default()
        };
        let cmd = parse(&msg, &schemas).expect("valid command");
        let create: crate::handlers::client_create::ClientCreate =
            serde_json::from_value(cmd.body).expect("a client.create body");
        let fields = crate::domain::new_client::ContactFields {
            email: create.email.as_deref(),
            client_alias: create.client_alias.as_deref(),
            client_type: create.client_type.as_deref(),
            country_code: create.country_code.as_deref(),
            phone: create.phone.as_deref(),
        };
        crate::domain::NewClient::parse(fields).expect("complete body");
        assert!(emails.insert(sent.email.clone()), "unique emails");
    }
    let per_country = |c: &str| commands.iter().filter(|(s, _)| s.country_code == c).count();
    for c in SEEDED_COUNTRIES {
        assert_eq!(per_country(c), 2, "{c}");
    }
}

#[test]
fn two_runs_never_share_an_email() {
    let a = client_create_commands(&Options::new(3));
    let b = client_create_commands(&Options::new(3));
    assert!(
        a.iter()
            .all(|(x, _)| b.iter().all(|(y, _)| x.email != y.email))
    );
}

#[test]
fn phones_fit_the_column() {
    for c in SEEDED_COUNTRIES {
        assert!(phone(c, 99_999_999).len() <= 20);
    }
}
