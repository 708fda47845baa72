use super::*;

const VALID: &str = r#"
[server]
region = "us-east-1"
listen = "127.0.0.1:0"

[database]
url = "sqlite://./data/synaxis.db"

[regions.us-east-1]
key_prefix = "us"
jurisdiction = "US"
peer_url = "https://us.example.com"

[regions.eu-west-1]
key_prefix = "eu"
jurisdiction = "EU"
peer_url = "https://eu.example.com"

[upstreams.openai]
kind = "openai"
base_url = "https://api.openai.com/v1"
api_key_env = "OPENAI_API_KEY"

[models.gpt-4o-mini]
upstream = "openai"
input_per_million = "0.15"
output_per_million = "0.60"
"#;

fn error_of(text: &str) -> String {
    Config::from_toml(text)
        .expect_err("config must be rejected")
        .to_string()
}

#[test]
fn valid_config_parses_prices_exactly() {
    let config = Config::from_toml(VALID).expect("valid config");
    let model = &config.models["gpt-4o-mini"];
    assert_eq!(model.input_per_million.to_string(), "0.15");
    assert_eq!(model.output_per_million.to_string(), "0.60");
    assert_eq!(
        config.region_by_key_prefix("eu").map(RegionId::as_str),
        Some("eu-west-1")
    );
}

#[test]
fn unknown_key_is_named() {
    let text = VALID.replace("listen = ", "listen_address = \"x\"\nlisten = ");
    let error = error_of(&text);
    assert!(error.contains("listen_address"), "{error}");
}

#[test]
fn float_price_is_rejected_with_its_key() {
    let text = VALID.replace("input_per_million = \"0.15\"", "input_per_million = 0.15");
    let error = error_of(&text);
    assert!(error.contains("input_per_million"), "{error}");
    assert!(error.contains("as strings"), "{error}");
}

#[test]
fn unknown_served_region_is_named() {
    let text = VALID.replace("region = \"us-east-1\"", "region = \"mars-1\"");
    let error = error_of(&text);
    assert!(error.contains("server.region"), "{error}");
    assert!(error.contains("mars-1"), "{error}");
}

#[test]
fn malformed_url_is_named() {
    let text = VALID.replace("https://eu.example.com", "not a url");
    let error = error_of(&text);
    assert!(error.contains("peer_url"), "{error}");
}

#[test]
fn duplicate_key_prefix_is_rejected() {
    let text = VALID.replace("key_prefix = \"eu\"", "key_prefix = \"us\"");
    let error = error_of(&text);
    assert!(error.contains("key_prefix"), "{error}");
}

#[test]
fn model_with_unknown_upstream_is_rejected() {
    let text = VALID.replace("upstream = \"openai\"", "upstream = \"nowhere\"");
    let error = error_of(&text);
    assert!(error.contains("models.gpt-4o-mini.upstream"), "{error}");
}

#[test]
fn every_section_is_validated() {
    let cases = [
        (
            "listen = \"127.0.0.1:0\"",
            "listen = \"127.0.0.1:0\"\nshutdown_timeout_secs = 0",
            "server.shutdown_timeout_secs",
        ),
        (
            "url = \"sqlite://./data/synaxis.db\"",
            "url = \"sqlite://./data/synaxis.db\"\nmax_connections = 0",
            "database.max_connections",
        ),
        (
            "https://us.example.com",
            "ftp://us.example.com",
            "regions.us-east-1.peer_url",
        ),
        (
            "api_key_env = \"OPENAI_API_KEY\"",
            "api_key_env = \"openai key\"",
            "upstreams.openai.api_key_env",
        ),
        (
            "kind = \"openai\"",
            "kind = \"openai\"\nrequest_timeout_secs = 0",
            "upstreams.openai",
        ),
        ("[server]", "[server]\nshutdown_timeout_secs = 30", ""),
    ];
    for (from, to, key) in cases {
        let text = VALID.replace(from, to);
        assert_ne!(text, VALID, "the case for `{key}` changed nothing");
        if key.is_empty() {
            assert!(Config::from_toml(&text).is_ok(), "{text}");
            continue;
        }
        let error = error_of(&text);
        assert!(error.contains(key), "expected `{key}` in: {error}");
    }
}

#[test]
fn log_level_is_validated() {
    let text = format!("{VALID}\n[log]\nlevel = \"info,[\"\n");
    let error = error_of(&text);
    assert!(error.contains("log.level"), "{error}");
}

#[test]
fn hold_ttl_out_of_range_is_named() {
    for ttl in ["0", "86401"] {
        let error = error_of(&format!("{VALID}\n[budgets]\nhold_ttl_secs = {ttl}\n"));
        assert!(error.contains("budgets.hold_ttl_secs"), "{error}");
    }
    let config = Config::from_toml(&format!("{VALID}\n[budgets]\nhold_ttl_secs = 60\n"))
        .expect("a minute is valid");
    assert_eq!(config.budgets.hold_ttl_secs, 60);
}

#[test]
fn region_links_are_validated() {
    let cases = [
        (
            "https://us.example.com",
            "http://us.example.com",
            "regions.us-east-1.peer_url",
        ),
        (
            "peer_url = \"https://us.example.com\"",
            "peer_url = \"https://us.example.com\"\nkafka_brokers = \"127.0.0.1:99999\"",
            "regions.us-east-1.kafka_brokers",
        ),
        (
            "[server]",
            "[events]\nbus = \"kafka\"\n\n[server]",
            "regions.eu-west-1.kafka_brokers",
        ),
        (
            "[server]",
            "[health]\ndown_after = 0\n\n[server]",
            "health.down_after",
        ),
        (
            "[server]",
            "[events]\ntopic_prefix = \"has space\"\n\n[server]",
            "events.topic_prefix",
        ),
        (
            "https://us.example.com",
            "http://127.0.0.1:8102",
            "regions.us-east-1.peer_url",
        ),
        (
            "[server]",
            "[events]\ntopic_prefix = \"\"\n\n[server]",
            "events.topic_prefix",
        ),
        (
            "[server]",
            concat!(
                "[peer]\nca_file = \"",
                env!("CARGO_MANIFEST_DIR"),
                "/Cargo.toml\"\n\n[server]"
            ),
            "peer.ca_file",
        ),
        (
            "listen = \"127.0.0.1:0\"",
            concat!(
                "listen = \"127.0.0.1:0\"\n[server.tls]\ncert_file = \"",
                env!("CARGO_MANIFEST_DIR"),
                "/Cargo.toml\"\nkey_file = \"",
                env!("CARGO_MANIFEST_DIR"),
                "/Cargo.toml\""
            ),
            "server.tls",
        ),
    ];
    for (from, to, key) in cases {
        let text = VALID.replacen(from, to, 1);
        assert_ne!(text, VALID, "the case for `{key}` changed nothing");
        if key.is_empty() {
            assert!(Config::from_toml(&text).is_ok(), "{text}");
            continue;
        }
        let error = error_of(&text);
        assert!(error.contains(key), "expected `{key}` in: {error}");
    }
}
