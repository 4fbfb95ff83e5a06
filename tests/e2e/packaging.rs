//! The Dockerfile and docker-compose.yml, checked structurally (no Docker engine needed): every
//! worker crate has its service and image binary, and every WARREN_* key the compose file sets
//! is one the configuration knows.

use std::collections::BTreeSet;

fn read(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).expect(path)
}

fn worker_crates() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workers");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("workers/")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn every_worker_has_a_compose_service_and_an_image_binary() {
    let compose = read("docker-compose.yml");
    let docker = read("Dockerfile");
    let workers = worker_crates();
    assert_eq!(workers.len(), 9, "{workers:?}");
    for w in &workers {
        let service = format!("\n  warren-{w}:\n");
        assert!(compose.contains(&service), "docker-compose.yml has a service warren-{w}");
        assert!(compose.contains(&format!("command: [\"warren-{w}\"]")), "warren-{w} runs its own binary");
        assert!(docker.contains(&format!("target/release/warren-{w}")), "the image holds warren-{w}");
    }
    for key in
        ["replicas:", "restart: unless-stopped", "healthcheck:", "limits:", "artifacts:/var/lib/warren/artifacts"]
    {
        assert!(compose.contains(key), "compose sets {key}");
    }
    assert!(compose.contains("rabbitmq:4-management") && compose.contains("definitions.json"));
    assert!(!compose.contains("guest:guest"), "compose uses its own users, not guest");
    assert!(docker.contains("USER warren") && docker.contains("AS runtime"), "non-root, multi-stage");
    assert!(read(".dockerignore").lines().any(|l| l.trim() == "target/"), "the build context leaves out target/");
}

#[test]
fn every_environment_key_in_compose_is_one_the_config_knows() {
    let compose = read("docker-compose.yml");
    let known: BTreeSet<String> = warren::config::KEYS
        .iter()
        .map(|k| format!("WARREN_{}", k.to_uppercase()))
        .chain(["WARREN_CONFIG".to_owned(), "WARREN_BIN_DIR".to_owned()])
        .collect();
    let used: BTreeSet<String> = compose
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("WARREN_") && w.len() > "WARREN_".len())
        .map(str::to_owned)
        .collect();
    assert!(!used.is_empty());
    let unknown: Vec<&String> = used.difference(&known).collect();
    assert!(unknown.is_empty(), "compose sets keys the config does not read: {unknown:?}");
}
