//! Unit tests of the configuration.

use std::time::Duration;

use super::*;

#[test]
fn embedded_defaults_parse() {
    let c = Config::embedded().unwrap();
    assert_eq!(c.server.listen.port(), 8080);
    assert!(c.server.listen.ip().is_loopback());
}

#[test]
fn unknown_key_is_rejected_with_its_name_and_origin() {
    let err = Config::parse("[server]\nlisten_addr = \"1.2.3.4:1\"\n", "x.toml").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("x.toml"), "{msg}");
    assert!(msg.contains("listen_addr"), "{msg}");
}

#[test]
fn unknown_key_inside_a_provider_is_rejected() {
    let text = "[providers.up]\nkind = \"openai\"\nbase_url = \"http://x\"\napi_kee_env = \"K\"\n";
    let msg = Config::parse(text, "x.toml").unwrap_err().to_string();
    assert!(msg.contains("api_kee_env"), "{msg}");
}

#[test]
fn route_to_unknown_provider_is_rejected() {
    let text = "[routes.m]\ndeployments = [{ provider = \"nope\", model = \"x\" }]\n";
    let msg = Config::parse(text, "x.toml").unwrap_err().to_string();
    assert!(msg.contains("routes.m.deployments[0].provider"), "{msg}");
    assert!(msg.contains("nope"), "{msg}");
}

#[test]
fn fallback_to_unknown_route_is_rejected() {
    let text = "[providers.up]\nkind = \"openai\"\nbase_url = \"http://x\"\n\
                [routes.m]\ndeployments = [{ provider = \"up\", model = \"x\" }]\nfallbacks = [\"ghost\"]\n";
    let msg = Config::parse(text, "x.toml").unwrap_err().to_string();
    assert!(msg.contains("routes.m.fallbacks[0]"), "{msg}");
}

#[test]
fn bad_listen_address_names_the_key() {
    let msg = Config::parse("[server]\nlisten = \"not an address\"\n", "x.toml")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("listen"), "{msg}");
}

#[test]
fn otlp_is_off_by_default_and_its_bad_settings_name_their_key() {
    let c = Config::embedded().unwrap();
    assert!(c.telemetry.otlp.endpoint.is_none());
    let ok = "[telemetry.otlp]\nendpoint = \"http://127.0.0.1:4317\"\nprotocol = \"grpc\"\n";
    let c = Config::parse(ok, "x.toml").unwrap();
    assert_eq!(c.telemetry.otlp.protocol, Some(OtlpProtocol::Grpc));
    for (toml, key) in [
        ("endpoint = \"collector:4317\"", "telemetry.otlp.endpoint"),
        ("endpoint = \"ftp://collector\"", "telemetry.otlp.endpoint"),
        ("protocol = \"http/json\"", "protocol"),
        ("sample_ratio = 1.5", "telemetry.otlp.sample_ratio"),
        (
            "headers = { \"bad header\" = \"x\" }",
            "telemetry.otlp.headers.bad header",
        ),
    ] {
        let msg = Config::parse(&format!("[telemetry.otlp]\n{toml}\n"), "x.toml")
            .unwrap_err()
            .to_string();
        assert!(msg.contains(key), "{toml}: {msg}");
    }
}

#[test]
fn bad_key_hash_is_rejected() {
    let msg = Config::parse("[auth]\napi_key_hashes = [\"md5:abc\"]\n", "x.toml")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("auth.api_key_hashes[0]"), "{msg}");
}

#[test]
fn deployment_timeouts_override_provider_timeouts() {
    let text = "[providers.up]\nkind = \"openai\"\nbase_url = \"http://x\"\ntimeout_ms = 5000\nconnect_timeout_ms = 100\n\
                [routes.m]\ndeployments = [{ provider = \"up\", model = \"x\", timeout_ms = 50 }]\n";
    let c = Config::parse(text, "x.toml").unwrap();
    let d = &c.routes["m"].deployments[0];
    let t = d.timeouts.or(*c.providers["up"].timeouts());
    assert_eq!(t.total(), Duration::from_millis(50));
    assert_eq!(t.connect(), Duration::from_millis(100));
}

#[test]
fn store_defaults_to_sqlite_under_data() {
    let c = Config::embedded().unwrap();
    assert_eq!(c.store.data_dir, PathBuf::from("data"));
    assert!(c.store.database_url.is_none());
}

#[test]
fn store_accepts_postgres_and_sqlite_urls() {
    for url in [
        "postgres://pasarela@db.internal:5432/registry",
        "postgresql://pasarela@db.internal/registry?sslmode=require",
        "sqlite:///var/lib/pasarela/registry.db",
    ] {
        let text = format!("[store]\ndatabase_url = \"{url}\"\n");
        let c = Config::parse(&text, "x.toml").unwrap();
        assert_eq!(c.store.database_url.unwrap().expose_secret(), url);
    }
}

#[test]
fn store_url_with_another_scheme_is_rejected_with_its_key() {
    let text = "[store]\ndatabase_url = \"mysql://root@localhost/x\"\n";
    let msg = Config::parse(text, "x.toml").unwrap_err().to_string();
    assert!(msg.contains("store.database_url"), "{msg}");
    assert!(msg.contains("`mysql`"), "{msg}");
}

#[test]
fn store_url_with_a_password_in_the_file_is_rejected_without_echoing_it() {
    for url in [
        "postgres://pasarela:hunter2@db/registry",
        "postgres://pasarela@db/registry?password=hunter2",
    ] {
        let text = format!("[store]\ndatabase_url = \"{url}\"\n");
        let msg = Config::parse(&text, "x.toml").unwrap_err().to_string();
        assert!(msg.contains("PASARELA_DATABASE_URL"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }
}

#[test]
fn database_url_override_may_carry_a_password_but_is_checked() {
    let mut c = Config::embedded().unwrap();
    c.override_database_url("PASARELA_DATABASE_URL", "postgres://u:secret@db/x".into())
        .unwrap();
    assert_eq!(
        c.store.database_url.as_ref().unwrap().expose_secret(),
        "postgres://u:secret@db/x"
    );
    assert!(!format!("{c:?}").contains("secret"));
    let err = c
        .override_database_url("PASARELA_DATABASE_URL", "redis://secret@cache".into())
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("PASARELA_DATABASE_URL"), "{msg}");
    assert!(!msg.contains("secret"), "{msg}");
}

#[test]
fn redis_url_is_checked_and_its_password_comes_only_from_the_environment() {
    let c = Config::parse("[limits]\nredis_url = \"redis://cache:6379/2\"\n", "x.toml").unwrap();
    assert_eq!(
        c.limits.redis_url.as_ref().unwrap().expose_secret(),
        "redis://cache:6379/2"
    );
    for (url, reason) in [
        ("redis://:hunter2@cache", "PASARELA_REDIS_URL"),
        ("postgres://cache", "`postgres`"),
    ] {
        let text = format!("[limits]\nredis_url = \"{url}\"\n");
        let msg = Config::parse(&text, "x.toml").unwrap_err().to_string();
        assert!(msg.contains("limits.redis_url"), "{msg}");
        assert!(msg.contains(reason), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }
    let mut c = Config::embedded().unwrap();
    c.override_redis_url("PASARELA_REDIS_URL", "rediss://u:hunter2@cache".into())
        .unwrap();
    assert!(!format!("{c:?}").contains("hunter2"));
    let msg = Config::parse("[limits]\nredis_prefix = \"a b\"\n", "x.toml")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("limits.redis_prefix"), "{msg}");
}

#[test]
fn request_log_defaults_keep_metadata_and_no_bodies() {
    let c = Config::embedded().unwrap();
    assert!(c.request_log.enabled);
    assert_eq!(c.request_log.metadata_sample_rate, 1.0);
    assert_eq!(c.request_log.body_sample_rate, 0.0);
    assert_eq!(c.request_log.retention_days, 30);
}

#[test]
fn request_log_rates_outside_zero_to_one_are_rejected_with_their_key() {
    let text = "[request_log.keys.team-a]\nbody_sample_rate = 1.5\n";
    let msg = Config::parse(text, "x.toml").unwrap_err().to_string();
    assert!(
        msg.contains("request_log.keys.team-a.body_sample_rate"),
        "{msg}"
    );
    let text = "[request_log]\nredact_patterns = [\"(\"]\n";
    let msg = Config::parse(text, "x.toml").unwrap_err().to_string();
    assert!(msg.contains("request_log.redact_patterns[0]"), "{msg}");
}

#[test]
fn unknown_key_in_store_is_rejected() {
    let msg = Config::parse("[store]\ndatadir = \"x\"\n", "x.toml")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("datadir"), "{msg}");
}
