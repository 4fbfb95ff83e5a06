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
    assert!(docker.contains("USER 10001") && docker.contains("AS runtime"), "non-root, multi-stage");
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

/// Every YAML document of a file.
fn yaml_docs(path: &std::path::Path) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde_json::Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

fn keys(v: &serde_json::Value) -> Vec<String> {
    v.as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default()
}

/// The manifests in deploy/k8s/base: per step a Deployment with probes on the worker's health
/// port and a grace period beyond its shutdown grace, and a KEDA ScaledObject on the step's queue
/// using only the fields KEDA documents for ScaledObject and its RabbitMQ scaler.
#[test]
fn kubernetes_manifests_scale_every_step_on_its_own_queue() {
    const SCALED_OBJECT_SPEC: &[&str] = &[
        "scaleTargetRef",
        "pollingInterval",
        "cooldownPeriod",
        "initialCooldownPeriod",
        "idleReplicaCount",
        "minReplicaCount",
        "maxReplicaCount",
        "fallback",
        "advanced",
        "triggers",
    ];
    const RABBITMQ_METADATA: &[&str] = &[
        "host",
        "hostFromEnv",
        "protocol",
        "queueName",
        "mode",
        "value",
        "activationValue",
        "vhostName",
        "useRegex",
        "excludeUnacknowledged",
        "pageSize",
        "operation",
        "timeout",
        "usernameFromEnv",
        "passwordFromEnv",
        "unsafeSsl",
    ];
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/k8s/base");
    let docker = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile")).unwrap();
    let kustomization = yaml_docs(&base.join("kustomization.yaml")).remove(0);
    let resources: Vec<&str> =
        kustomization["resources"].as_array().expect("resources").iter().filter_map(|r| r.as_str()).collect();
    let auths: Vec<String> = resources
        .iter()
        .flat_map(|r| yaml_docs(&base.join(r)))
        .filter(|d| d["kind"] == "TriggerAuthentication")
        .filter_map(|d| d["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    let known_env: Vec<String> = warren::config::KEYS.iter().map(|k| format!("WARREN_{}", k.to_uppercase())).collect();
    for step in crate::ml::ML_STEPS {
        let file = format!("{step}.yaml");
        assert!(resources.contains(&file.as_str()), "kustomization.yaml lists {file}");
        let docs = yaml_docs(&base.join(&file));
        let deployment = docs.iter().find(|d| d["kind"] == "Deployment").expect("a Deployment");
        let scaled = docs.iter().find(|d| d["kind"] == "ScaledObject").expect("a ScaledObject");

        let pod = &deployment["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(c["command"][0], format!("warren-{step}"));
        assert!(docker.contains(&format!("target/release/warren-{step}")), "the image holds warren-{step}");
        let env: std::collections::BTreeMap<String, serde_json::Value> = c["env"]
            .as_array()
            .expect("env")
            .iter()
            .map(|e| (e["name"].as_str().unwrap_or_default().to_owned(), e.clone()))
            .collect();
        for name in env.keys() {
            assert!(known_env.contains(name), "{file}: {name} is not a key Warren reads");
        }
        let health = env["WARREN_HEALTH_ADDR"]["value"].as_str().expect("health addr");
        let port: u64 = health.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
        assert_eq!(c["ports"][0]["containerPort"], port, "{file}: the health port is the one the worker serves");
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
        let grace_ms: u64 =
            env["WARREN_SHUTDOWN_GRACE_MS"]["value"].as_str().and_then(|v| v.parse().ok()).expect("shutdown grace");
        let term = pod["terminationGracePeriodSeconds"].as_u64().expect("termination grace");
        assert!(term * 1000 > grace_ms, "{file}: Kubernetes waits longer ({term} s) than the worker's grace");
        assert!(c["resources"]["requests"].is_object() && c["resources"]["limits"]["memory"].is_string());

        assert_eq!(scaled["apiVersion"], "keda.sh/v1alpha1");
        for k in keys(&scaled["spec"]) {
            assert!(SCALED_OBJECT_SPEC.contains(&k.as_str()), "{file}: ScaledObject has no field `{k}`");
        }
        assert_eq!(scaled["spec"]["scaleTargetRef"]["name"], deployment["metadata"]["name"]);
        let trigger = &scaled["spec"]["triggers"][0];
        assert_eq!(trigger["type"], "rabbitmq");
        for k in keys(&trigger["metadata"]) {
            assert!(RABBITMQ_METADATA.contains(&k.as_str()), "{file}: the RabbitMQ scaler has no `{k}`");
        }
        let ns = env["WARREN_NAMESPACE"]["value"].as_str().expect("namespace");
        assert_eq!(trigger["metadata"]["queueName"], format!("{ns}.step.{step}"), "{file}: scales on its own queue");
        assert!(["QueueLength", "MessageRate"].contains(&trigger["metadata"]["mode"].as_str().unwrap_or("")));
        assert!(trigger["metadata"]["value"].as_str().is_some_and(|v| v.parse::<f64>().is_ok()), "value is a number");
        let auth = trigger["authenticationRef"]["name"].as_str().expect("authenticationRef");
        assert!(auths.iter().any(|a| a == auth), "{file}: TriggerAuthentication {auth} is in the base");
    }
}
