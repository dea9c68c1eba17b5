use super::*;

#[test]
fn rate_limit_reset_is_read_in_seconds_with_fractions() {
    assert_eq!(parse_rate_limit_reset("1"), Some(Duration::from_secs(1)));
    assert_eq!(
        parse_rate_limit_reset(" 58.37 "),
        Some(Duration::from_millis(58_370))
    );
    assert_eq!(parse_rate_limit_reset("-1"), None);
    assert_eq!(parse_rate_limit_reset("soon"), None);
    assert_eq!(parse_rate_limit_reset("NaN"), None);
}

#[test]
fn settings_fill_defaults_from_a_minimal_config() {
    let settings: XenditSettings =
        serde_json::from_value(serde_json::json!({ "secret_key": "xnd_development_k" })).unwrap();
    assert_eq!(settings.base_url, DEFAULT_BASE_URL);
    assert_eq!(settings.max_attempts, 3);
    assert_eq!(settings.timeout(), Duration::from_secs(10));
    assert_eq!(settings.secret_key.expose_secret(), "xnd_development_k");
}

#[test]
fn the_keys_mode_sets_the_default_rate_limit() {
    let dev = XenditSettings::new("http://x", SecretString::from("xnd_development_k"));
    assert_eq!((dev.mode(), dev.requests_per_minute()), ("development", 60));
    let live = XenditSettings::new("http://x", SecretString::from("xnd_production_k"));
    assert_eq!(
        (live.mode(), live.requests_per_minute()),
        ("production", 600)
    );
    let set = XenditSettings {
        requests_per_minute: Some(5),
        ..live
    };
    assert_eq!(set.requests_per_minute(), 5);
}

#[test]
fn a_base_url_that_is_not_http_is_refused() {
    for base_url in ["not a url", "ftp://api.xendit.co"] {
        let settings = XenditSettings::new(base_url, SecretString::from("k"));
        assert!(
            matches!(
                XenditClient::new(&settings),
                Err(SettingsError::BaseUrl { .. })
            ),
            "{base_url}"
        );
    }
}

#[test]
fn customers_url_ignores_a_trailing_slash() {
    let settings = XenditSettings::new("http://127.0.0.1:9/", SecretString::from("k"));
    let client = XenditClient::new(&settings).unwrap();
    assert_eq!(
        client.customers_url.as_str(),
        "http://127.0.0.1:9/customers"
    );
}
