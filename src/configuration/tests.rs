use super::*;

#[test]
fn replies_go_only_to_server_named_and_direct_reply_queues_by_default() {
    let b = Settings::defaults().broker;
    assert!(b.answers_on("amq.gen-JzTY20BRgKO-HjmUJj0wLg"));
    assert!(b.answers_on("amq.rabbitmq.reply-to.g1h2AA5yZXR.abc"));
    for other in ["billing.commands", "amq.gen", "onboarding.commands", ""] {
        assert!(!b.answers_on(other), "{other}");
    }
}

#[test]
fn defaults_parse_and_delays_repeat_the_last_one() {
    let s = Settings::defaults();
    assert_eq!(s.broker.prefix, "onboarding");
    assert_eq!(s.retry.delay_for(1), Duration::from_millis(1000));
    assert_eq!(s.retry.delay_for(2), Duration::from_millis(5000));
    assert_eq!(s.retry.delay_for(99), Duration::from_millis(600_000));
    assert!(s.lifecycle.approval_policy().require_ekyc_approved);
    assert_eq!(s.lifecycle.not_found_retries, 3);
}

#[test]
fn a_cluster_is_a_list_of_nodes_and_a_single_url_is_one() {
    let single = Settings::defaults().broker;
    assert_eq!(single.nodes().len(), 1);
    assert_eq!(
        single.nodes()[0].expose_secret(),
        single.url.expose_secret()
    );
    let dir = std::env::temp_dir().join(format!("onboard-cfg-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cluster.toml");
    std::fs::write(
        &file,
        "[broker]\nurls = [\"amqp://u:p@n1:5672/%2f\", \"amqp://u:p@n2:5673/%2f\"]\n\
         replicated_queues = true\n",
    )
    .unwrap();
    let cluster = Settings::load(Some(&file)).unwrap().broker;
    let _ = std::fs::remove_dir_all(&dir);
    let nodes: Vec<_> = cluster.nodes().iter().map(|u| u.expose_secret()).collect();
    assert_eq!(nodes, ["amqp://u:p@n1:5672/%2f", "amqp://u:p@n2:5673/%2f"]);
    assert!(cluster.replicated_queues);
    assert!(!format!("{cluster:?}").contains("u:p@"));
}

#[test]
fn a_list_of_delays_may_be_one_value() {
    #[derive(Deserialize)]
    struct D {
        #[serde(deserialize_with = "millis_list")]
        d: Vec<u64>,
    }
    let one: D = serde_json::from_str(r#"{"d": 200}"#).unwrap();
    assert_eq!(one.d, [200]);
    let many: D = serde_json::from_str(r#"{"d": [200, 500]}"#).unwrap();
    assert_eq!(many.d, [200, 500]);
    let text: D = serde_json::from_str(r#"{"d": "200, 500"}"#).unwrap();
    assert_eq!(text.d, [200, 500]);
    let texts: D = serde_json::from_str(r#"{"d": ["200", "500"]}"#).unwrap();
    assert_eq!(texts.d, [200, 500]);
    assert!(serde_json::from_str::<D>(r#"{"d": "x"}"#).is_err());
}

fn file_with(toml: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("onboard-cfg-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("settings.toml");
    std::fs::write(&file, toml).unwrap();
    (dir, file)
}

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

#[test]
fn a_misspelt_key_in_a_file_is_refused_naming_the_nearest_setting() {
    let (dir, file) = file_with("[worker]\nbatch_siz = 5\n[saga]\nlease_secs = 30\n");
    let err = Settings::load_from(Some(&file), no_env()).unwrap_err();
    let _ = std::fs::remove_dir_all(&dir);
    let LoadError::Unknown(keys) = &err else {
        panic!("{err}")
    };
    let named: Vec<(&str, Option<&str>)> =
        keys.iter().map(|k| (k.key.as_str(), k.nearest)).collect();
    assert_eq!(
        named,
        [
            ("saga.lease_secs", Some("saga.lease_seconds")),
            ("worker.batch_siz", Some("worker.batch_size")),
        ]
    );
    let text = err.to_string();
    assert!(
        text.contains("unknown setting `worker.batch_siz`; did you mean `worker.batch_size`?"),
        "{text}"
    );
}

#[test]
fn a_misspelt_environment_variable_is_refused_naming_the_variable() {
    let env = vec![
        ("ONBOARD__SAGA__LEASE_SECOND".to_string(), "30".to_string()),
        ("ONBOARD__WORKER__BATCH_SIZE".to_string(), "7".to_string()),
        // Not ours: ignored.
        ("ONBOARDING_MODE".to_string(), "x".to_string()),
    ];
    let err = Settings::load_from(None, env).unwrap_err();
    let LoadError::Unknown(keys) = &err else {
        panic!("{err}")
    };
    assert_eq!(
        keys,
        &[UnknownKey {
            key: "saga.lease_second".into(),
            variable: Some("ONBOARD__SAGA__LEASE_SECOND".into()),
            nearest: Some("saga.lease_seconds"),
        }]
    );
    assert!(
        err.to_string()
            .contains("(environment variable ONBOARD__SAGA__LEASE_SECOND)"),
        "{err}"
    );
    // A retired or invented section has no near key: said so.
    let err = Settings::load_from(None, [("ONBOARD__QUEUE__SIZE".into(), "1".into())])
        .unwrap_err()
        .to_string();
    assert!(err.contains("no setting has that name"), "{err}");
}

#[test]
fn every_setting_the_defaults_and_the_optional_sections_name_is_known() {
    let s = Settings::load_from(None, no_env()).expect("the defaults alone load");
    assert_eq!(s.worker.batch_size, Settings::defaults().worker.batch_size);
    // Every optional key, set: none of them is unknown (the list has no stray entry).
    let (dir, file) = file_with(
        r#"
        [xendit]
        base_url = "http://127.0.0.1:1"
        secret_key = "xnd_development_x"
        timeout_ms = 1
        max_attempts = 1
        min_backoff_ms = 1
        max_backoff_ms = 1
        max_rate_limit_wait_ms = 1
        requests_per_minute = 1
        [email.smtp]
        host = "localhost"
        port = 25
        tls = "none"
        username = "u"
        password = "p"
        timeout_ms = 1
        pool_max_size = 1
        [sources.legacy]
        base_url = "http://127.0.0.1:2"
        token = "t"
        timeout_ms = 1
        "#,
    );
    let loaded = Settings::load_from(Some(&file), no_env());
    let _ = std::fs::remove_dir_all(&dir);
    let loaded = loaded.unwrap_or_else(|e| panic!("{e}"));
    assert!(loaded.xendit.is_some() && loaded.email.smtp.is_some());
    assert_eq!(OPTIONAL_KEYS.len(), 18);
    // A misspelt optional key is found too, and so is a source's. (One at a time: a
    // misspelt required key also stops the reading, and what was not read yet is not
    // looked at.)
    for (toml, nearest) in [
        (
            "[xendit]\nsecret_key = \"x\"\ntimeot_ms = 5\n",
            "xendit.timeout_ms",
        ),
        (
            "[sources.legacy]\nbase_ulr = \"x\"\ntoken = \"t\"\n",
            "sources.*.base_url",
        ),
    ] {
        let (dir, file) = file_with(toml);
        let err = Settings::load_from(Some(&file), no_env()).unwrap_err();
        let _ = std::fs::remove_dir_all(&dir);
        let LoadError::Unknown(keys) = err else {
            panic!("unknown keys expected")
        };
        assert_eq!(keys.len(), 1, "{keys:?}");
        assert_eq!(keys[0].nearest, Some(nearest), "{keys:?}");
    }
}

#[test]
fn secrets_do_not_print() {
    let s = Settings::defaults();
    let shown = format!("{s:?}");
    assert!(!shown.contains("guest:guest"), "{shown}");
    assert!(!shown.contains("onboard:onboard"), "{shown}");
}

#[test]
fn redacted_urls_keep_the_user_and_drop_the_password() {
    let url = SecretString::from("postgres://onboard:s3cret@db:5432/onboard");
    assert_eq!(redact_url(&url), "postgres://onboard:***@db:5432/onboard");
    let plain = SecretString::from("amqp://localhost:5672");
    assert_eq!(redact_url(&plain), "amqp://localhost:5672");
}
