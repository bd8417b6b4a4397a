//! API keys: worker management needs an admin key, inference a client (or
//! admin) key; refusals have the right code and register nothing; the
//! router's credentials and the client's cookies never reach a worker; a
//! router without admin keys will not listen beyond loopback.

use crate::common::*;
use switchyard::auth::AuthConfig;
use switchyard::pb;
use switchyard::{App, Config};
use tonic::Code;

const ADMIN: &str = "admin-0123456789abcdef";
const CLIENT: &str = "client-0123456789abcdef";

async fn router_with_keys() -> Router {
    start_router_with(Config {
        auth: AuthConfig {
            admin_keys: vec![ADMIN.into()],
            client_keys: vec![CLIENT.into()],
            ..AuthConfig::default()
        },
        ..test_config()
    })
    .await
}

fn with_key<T>(message: T, key: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(key) = key {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    request
}

fn add_request(url: &str) -> pb::AddWorkerRequest {
    pb::AddWorkerRequest {
        worker: Some(pb::WorkerSpec {
            url: url.into(),
            model_id: MODEL.into(),
            engine: pb::Engine::Switchyard as i32,
            ..Default::default()
        }),
    }
}

#[tokio::test]
async fn management_needs_an_admin_key_and_refusals_register_nothing() {
    let router = router_with_keys().await;
    let worker = mock("w").await;
    let mut management = router.management();

    let none = management
        .add_worker(with_key(add_request(&worker.url()), None))
        .await
        .unwrap_err();
    assert_eq!(none.code(), Code::Unauthenticated, "{none:?}");
    assert!(none.message().contains("Bearer"), "{none:?}");
    let wrong = management
        .add_worker(with_key(
            add_request(&worker.url()),
            Some("not-a-key-at-all-xxxx"),
        ))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated, "{wrong:?}");
    let client = management
        .add_worker(with_key(add_request(&worker.url()), Some(CLIENT)))
        .await
        .unwrap_err();
    assert_eq!(client.code(), Code::PermissionDenied, "{client:?}");
    assert!(client.message().contains("admin key"), "{client:?}");
    let listed = management
        .list_workers(with_key(pb::ListWorkersRequest::default(), Some(ADMIN)))
        .await
        .unwrap()
        .into_inner();
    assert!(
        listed.workers.is_empty(),
        "a refused AddWorker registered a worker"
    );

    management
        .add_worker(with_key(add_request(&worker.url()), Some(ADMIN)))
        .await
        .unwrap();
    let removed = management
        .remove_worker(with_key(
            pb::RemoveWorkerRequest {
                target: Some(pb::remove_worker_request::Target::Url(worker.url())),
            },
            Some(CLIENT),
        ))
        .await
        .unwrap_err();
    assert_eq!(removed.code(), Code::PermissionDenied);

    // Health stays open, for load balancers and probes.
    let health = router
        .health()
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await;
    assert!(health.is_ok(), "{health:?}");
}

#[tokio::test]
async fn inference_needs_a_key_and_credentials_never_reach_the_worker() {
    let router = router_with_keys().await;
    let worker = mock("w").await;
    router
        .management()
        .add_worker(with_key(add_request(&worker.url()), Some(ADMIN)))
        .await
        .unwrap();
    let mut inference = router.inference();

    let refused = inference
        .generate(with_key(request(MODEL, "x"), None))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(
        worker.stats().calls(),
        0,
        "a refused call reached the worker"
    );

    for key in [CLIENT, ADMIN] {
        let mut call = with_key(request(MODEL, "x"), Some(key));
        let metadata = call.metadata_mut();
        metadata.insert("cookie", "session=secret".parse().unwrap());
        metadata.insert("x-api-key", "the-clients-own".parse().unwrap());
        metadata.insert("x-tenant", "blue".parse().unwrap());
        let mut stream = inference.generate(call).await.unwrap().into_inner();
        while stream.message().await.unwrap().is_some() {}
    }
    let seen = worker.stats().seen();
    assert_eq!(seen.len(), 2);
    for request in seen {
        let names: Vec<&str> = request.metadata.iter().map(|(n, _)| n.as_str()).collect();
        for secret in ["authorization", "cookie", "x-api-key"] {
            assert!(
                !names.contains(&secret),
                "{secret} reached the worker: {names:?}"
            );
        }
        assert!(
            names.contains(&"x-tenant"),
            "other metadata must pass: {names:?}"
        );
    }
}

#[tokio::test]
async fn http_management_and_inference_check_keys_too() {
    let router = router_with_keys().await;
    let http = reqwest::Client::new();
    let body = serde_json::json!({"url": "http://127.0.0.1:9", "model_id": MODEL});

    let none = http
        .post(router.http_url("/workers"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 401);
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    let client = http
        .post(router.http_url("/workers"))
        .bearer_auth(CLIENT)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(client.status(), 403);
    let listed: serde_json::Value = http
        .get(router.http_url("/workers"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["workers"].as_array().unwrap().len(), 0, "{listed}");

    let generate = http
        .post(router.http_url("/generate"))
        .json(&serde_json::json!({"text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(generate.status(), 401);
    let models = http
        .get(router.http_url("/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 401);
    let models = http
        .get(router.http_url("/v1/models"))
        .bearer_auth(CLIENT)
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200);
    let health = http.get(router.http_url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn without_admin_keys_the_router_listens_on_loopback_only() {
    let wide = Config {
        grpc_listen: "0.0.0.0:0".parse().unwrap(),
        ..test_config()
    };
    let err = App::build(wide).await.unwrap_err().to_string();
    assert!(err.contains("no admin keys"), "{err}");
    assert!(err.contains("SWITCHYARD_ADMIN_KEYS"), "{err}");

    let keyed = Config {
        grpc_listen: "0.0.0.0:0".parse().unwrap(),
        auth: AuthConfig {
            admin_keys: vec![ADMIN.into()],
            ..AuthConfig::default()
        },
        ..test_config()
    };
    App::build(keyed)
        .await
        .expect("admin keys allow a wide listener");

    let short = Config {
        auth: AuthConfig {
            admin_keys: vec!["hunter2".into()],
            ..AuthConfig::default()
        },
        ..test_config()
    };
    let err = App::build(short).await.unwrap_err().to_string();
    assert!(err.contains("at least 16"), "{err}");
    assert!(!err.contains("hunter2"), "the key was quoted: {err}");
}
