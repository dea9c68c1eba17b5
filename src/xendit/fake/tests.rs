use super::*;
use crate::xendit::{BusinessInput, Customer, CustomerRequest};

#[test]
fn validation_names_the_missing_field() {
    assert_eq!(
        validate(&json!({ "type": "BUSINESS" })),
        Err("reference_id is required".to_owned())
    );
    assert_eq!(
        validate(&json!({ "reference_id": "r" })),
        Err("type is required".to_owned())
    );
    assert_eq!(
        validate(&json!({ "reference_id": "r", "type": "INDIVIDUAL" })),
        Err("individual_detail.given_names is required".to_owned())
    );
    assert_eq!(
        validate(&json!({
            "reference_id": "r", "type": "BUSINESS",
            "business_detail": { "business_name": "x".repeat(51) }
        })),
        Err("business_detail.business_name must be at most 50 characters".to_owned())
    );
}

#[test]
fn validation_is_xendits_on_formats_and_values() {
    let individual = |names: &str, phone: Value| {
        json!({"reference_id": "r", "type": "INDIVIDUAL",
               "individual_detail": {"given_names": names}, "mobile_number": phone})
    };
    assert!(validate(&individual("PT Maju Co", json!("+6281234567890"))).is_ok());
    assert!(validate(&individual("PT. Maju & Co.", Value::Null)).is_err());
    assert!(validate(&individual("Ann", json!("+62 812-3456-7890"))).is_err());
    assert!(validate(&individual("Ann", json!("081234567890"))).is_err());
    let business = json!({"reference_id": "r", "type": "BUSINESS",
        "business_detail": {"business_name": "PT. Maju & Co.", "business_type": "PT"}});
    assert!(validate(&business).unwrap_err().contains("business_type"));
    assert!(is_key("xnd_development_x") && is_key("xnd_production_y"));
    assert!(!is_key("xnd_development_") && !is_key("sk_live_x"));
}

#[test]
fn what_our_builders_send_passes_the_fakes_validation() {
    let request = CustomerRequest::business(
        "onboard-client-1",
        BusinessInput {
            client_alias: "A".repeat(80),
            client_type: "CORPORATE".into(),
            email: "admin@company.com".into(),
            phone: "+628123456789".into(),
        },
    );
    assert_eq!(validate(&serde_json::to_value(&request).unwrap()), Ok(()));
    let request = crate::xendit::CustomerRequest::individual(
        "onboard-user-1",
        crate::xendit::IndividualInput {
            given_names: "PT. Maju & Co.".into(),
            email: "admin@maju.example".into(),
            phone: "+62 812-3456-7890".into(),
        },
    );
    assert_eq!(validate(&serde_json::to_value(&request).unwrap()), Ok(()));
}

#[test]
fn a_created_customer_reads_as_our_customer_type() {
    let request = json!({
        "reference_id": "onboard-client-1",
        "type": "BUSINESS",
        "business_detail": { "business_name": "ACME", "business_type": "CORPORATION" },
        "email": "a@b.co"
    });
    let customer = customer_from(&request, "cust-1");
    assert_eq!(customer["business_detail"]["trading_name"], Value::Null);
    assert_eq!(customer["individual_detail"], Value::Null);
    assert_eq!(customer["addresses"], json!([]));
    let parsed: Customer = serde_json::from_value(customer).unwrap();
    assert_eq!(parsed.reference_id, "onboard-client-1");
    assert_eq!(parsed.email.as_deref(), Some("a@b.co"));
}

#[test]
fn settings_outside_their_range_are_refused() {
    let rate = FakeSettings {
        fail_rate: 1.5,
        ..FakeSettings::default()
    };
    assert!(rate.problem().is_some());
    let status = FakeSettings {
        fail_status: 200,
        ..FakeSettings::default()
    };
    assert!(status.problem().is_some());
    assert!(FakeSettings::default().problem().is_none());
}

/// A command line with the fake's flags, as the binary will flatten them.
#[derive(clap::Parser)]
struct Cli {
    /// The flags under test.
    #[command(flatten)]
    fake: FakeArgs,
}

#[test]
fn documented_flags_set_the_switches() {
    use clap::Parser;
    let cli = Cli::try_parse_from([
        "onboard",
        "--listen",
        "0.0.0.0:9000",
        "--latency-ms",
        "50",
        "--fail-status",
        "500",
        "--fail-rate",
        "0.25",
    ])
    .unwrap();
    assert_eq!(cli.fake.listen, "0.0.0.0:9000".parse().unwrap());
    let settings = cli.fake.settings();
    assert_eq!(settings.latency_ms, 50);
    assert_eq!(settings.fail_status, 500);
    assert_eq!(settings.fail_rate, 0.25);
    assert!(Cli::try_parse_from(["onboard", "--fail-rate", "2"]).is_err());
    assert!(Cli::try_parse_from(["onboard", "--fail-status", "200"]).is_err());
}

#[test]
fn fail_rate_flag_must_be_a_share() {
    assert_eq!(parse_rate("0.5"), Ok(0.5));
    assert!(parse_rate("1.5").is_err());
    assert!(parse_rate("half").is_err());
}
