//! The config tree: defaults, TOML, validation.

use super::*;

#[test]
fn defaults_are_valid_and_listen_on_loopback() {
    let c = Config::default();
    c.validate().unwrap();
    assert!(c.grpc_listen.ip().is_loopback());
}

#[test]
fn toml_fills_the_tree_and_rejects_unknown_fields() {
    let c: Config = toml::from_str(
        r#"
        grpc_listen = "0.0.0.0:6000"
        [health_check]
        interval_ms = 100
        timeout_ms = 50
        [[workers]]
        url = "grpc://127.0.0.1:7001"
        model_id = "llama"
        "#,
    )
    .unwrap();
    assert_eq!(c.grpc_listen.port(), 6000);
    assert_eq!(c.health_check.unhealthy_threshold, 3);
    assert_eq!(c.workers[0].role, "regular");
    let err = toml::from_str::<Config>("grpc_listn = \"x\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("grpc_listn"), "{err}");
}

#[test]
fn a_bad_trace_endpoint_or_ratio_is_refused_naming_it() {
    let mut c = Config::default();
    for (endpoint, ok) in [
        ("http://collector:4317", true),
        ("https://collector:4317", true),
        ("collector:4317", false),
        ("grpc://collector:4317", false),
        ("http://", false),
    ] {
        c.tracing.otlp_endpoint = Some(endpoint.into());
        match c.validate() {
            Ok(()) => assert!(ok, "{endpoint} accepted"),
            Err(e) => {
                assert!(!ok, "{endpoint}: {e}");
                assert!(e.to_string().contains("tracing.otlp_endpoint"), "{e}");
            }
        }
    }
    c.tracing.otlp_endpoint = None;
    c.tracing.sample_ratio = 1.5;
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("tracing.sample_ratio"), "{err}");
}

#[test]
fn validate_names_the_bad_field() {
    let mut c = Config::default();
    c.health_check.timeout_ms = c.health_check.interval_ms + 1;
    assert!(c.validate().unwrap_err().to_string().contains("timeout_ms"));
}
