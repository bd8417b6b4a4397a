//! How `switchyard workers` shows workers: a table, or JSON.

use serde_json::{json, Value};

use crate::pb;

pub(super) fn get_target(worker: &str) -> pb::get_worker_request::Target {
    match worker.contains("://") {
        true => pb::get_worker_request::Target::Url(worker.to_string()),
        false => pb::get_worker_request::Target::Id(worker.to_string()),
    }
}

pub(super) fn url_of(w: &pb::WorkerInfo) -> &str {
    w.spec.as_ref().map_or("", |s| s.url.as_str())
}

pub(super) fn enum_name(name: Option<&str>, prefix: &str) -> String {
    name.map_or("unknown".into(), |n| {
        n.trim_start_matches(prefix).to_lowercase()
    })
}

pub(super) fn health_of(w: &pb::WorkerInfo) -> String {
    enum_name(
        pb::HealthStatus::try_from(w.health)
            .ok()
            .map(|h| h.as_str_name()),
        "HEALTH_STATUS_",
    )
}

pub(super) fn worker_json(w: &pb::WorkerInfo) -> Value {
    let spec = w.spec.clone().unwrap_or_default();
    let facts = w.model_info.clone().unwrap_or_default();
    json!({
        "id": w.id,
        "url": spec.url,
        "model": spec.model_id,
        "engine": enum_name(pb::Engine::try_from(spec.engine).ok().map(|e| e.as_str_name()), "ENGINE_"),
        "role": enum_name(pb::WorkerRole::try_from(spec.role).ok().map(|r| r.as_str_name()), "WORKER_ROLE_"),
        "bootstrap_port": spec.bootstrap_port,
        "labels": spec.labels,
        "health": health_of(w),
        "circuit": enum_name(pb::CircuitState::try_from(w.circuit).ok().map(|c| c.as_str_name()), "CIRCUIT_STATE_"),
        "in_flight": w.in_flight,
        "load": w.load,
        "served_model_name": facts.served_model_name,
        "max_context_length": facts.max_context_length,
        "kv_events": w.kv_events.as_ref().map(|k| json!({
            "state": k.state,
            "events": k.events,
            "resyncs": k.resyncs,
            "reconnects": k.reconnects,
            "sequence": k.sequence,
            "blocks": k.blocks,
        })),
    })
}

pub(super) fn print_json(value: &Value) {
    println!("{value}");
}

pub(super) fn print_table(workers: &[pb::WorkerInfo]) {
    let rows: Vec<[String; 9]> = workers
        .iter()
        .map(|w| {
            let j = worker_json(w);
            let s = |k: &str| match &j[k] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            [
                s("id"),
                s("url"),
                s("model"),
                s("engine"),
                s("role"),
                s("health"),
                s("circuit"),
                s("in_flight"),
                match &w.kv_events {
                    Some(k) if k.state == "live" => format!("live, {} blocks", k.blocks),
                    Some(k) => k.state.clone(),
                    None => "-".into(),
                },
            ]
        })
        .collect();
    let header = [
        "ID",
        "URL",
        "MODEL",
        "ENGINE",
        "ROLE",
        "HEALTH",
        "CIRCUIT",
        "IN-FLIGHT",
        "KV EVENTS",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
    if rows.is_empty() {
        println!("(no workers)");
    }
}
