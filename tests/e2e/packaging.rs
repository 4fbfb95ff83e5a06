//! The Dockerfile, docker-compose.yml and the Kubernetes manifests, read as their tools read them
//! (no Docker engine here): every worker runs a binary the image holds, every WARREN_* key is one
//! the configuration knows, health checks ask the served port, the broker's permissions cover the
//! namespace, ingest has a way in for files. .ci/run adds hadolint, `docker-compose config` and a
//! chroot run of the image's binaries (.ci/image-root).

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
        // warren-exec runs steps written in other languages; it is no step of its own.
        .filter(|e| e.file_name() != "exec")
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// docker-compose.yml as Compose reads it: YAML with its anchors and `<<` merge keys applied
/// (.ci/run also runs `docker-compose config -q`, which checks it against the Compose schema).
fn compose() -> serde_json::Value {
    use serde::Deserialize;
    let mut doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&read("docker-compose.yml")).expect("compose YAML");
    doc.apply_merge().expect("compose merge keys");
    serde_json::Value::deserialize(doc).expect("compose as JSON")
}

/// The binaries the Dockerfile copies into the image.
fn image_binaries() -> BTreeSet<String> {
    read("Dockerfile").split_whitespace().filter_map(|w| w.strip_prefix("target/release/")).map(str::to_owned).collect()
}

/// A service's environment as a map, whether compose wrote it as a map or as `KEY=value` lines.
fn environment(service: &serde_json::Value) -> std::collections::BTreeMap<String, String> {
    match &service["environment"] {
        serde_json::Value::Object(m) => {
            m.iter().map(|(k, v)| (k.clone(), v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()))).collect()
        }
        serde_json::Value::Array(lines) => lines
            .iter()
            .filter_map(|l| l.as_str()?.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        _ => Default::default(),
    }
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

#[test]
fn every_worker_has_a_compose_service_running_a_binary_the_image_holds() {
    let compose = compose();
    let services = compose["services"].as_object().expect("services");
    let image = image_binaries();
    let workers = worker_crates();
    assert_eq!(workers.len(), 9, "{workers:?}");
    for w in &workers {
        assert!(image.contains(&format!("warren-{w}")), "the image holds warren-{w}");
        let s = services.get(&format!("warren-{w}")).unwrap_or_else(|| panic!("a service warren-{w}"));
        assert_eq!(strings(&s["command"]), [format!("warren-{w}")], "warren-{w} runs its own binary");
        assert_eq!(s["restart"], "unless-stopped");
        assert!(s["deploy"]["replicas"].as_u64().is_some_and(|r| r >= 1), "warren-{w}: replicas");
        assert!(s["deploy"]["resources"]["limits"]["memory"].is_string(), "warren-{w}: a memory limit");
        assert!(strings(&s["volumes"]).iter().any(|v| v == "artifacts:/var/lib/warren/artifacts"));
    }
    // Every command or entrypoint of the file names a binary the image holds (or RabbitMQ's).
    for (name, s) in services {
        for program in [strings(&s["command"]), strings(&s["entrypoint"])].iter().filter_map(|c| c.first()) {
            if program.starts_with("warren") {
                assert!(image.contains(program), "service {name} runs {program}, which the image does not hold");
            }
        }
    }
    let rabbit = &services["rabbitmq"];
    assert!(rabbit["image"].as_str().is_some_and(|i| i.starts_with("rabbitmq:4-management")));
    assert!(strings(&rabbit["volumes"]).iter().any(|v| v.ends_with(":/etc/rabbitmq/definitions.json:ro")));
    assert!(read("Dockerfile").contains("USER 10001") && read("Dockerfile").contains("AS runtime"));
    assert!(read(".dockerignore").lines().any(|l| l.trim() == "target/"), "the build context leaves out target/");
}

#[test]
fn every_environment_key_in_compose_is_one_the_config_knows() {
    let known: BTreeSet<String> = warren::config::keys()
        .map(|k| format!("WARREN_{}", k.to_uppercase()))
        .chain(["WARREN_CONFIG".to_owned(), "WARREN_BIN_DIR".to_owned()])
        .collect();
    let compose = compose();
    let mut seen = 0;
    for (name, s) in compose["services"].as_object().expect("services") {
        for key in environment(s).keys().filter(|k| k.starts_with("WARREN_")) {
            seen += 1;
            assert!(known.contains(key), "service {name} sets {key}, which the configuration does not read");
        }
    }
    assert!(seen > 0);
}

/// Each worker's health check asks the port its WARREN_HEALTH_ADDR serves, and no two services
/// publish the same host port.
#[test]
fn health_checks_ask_the_port_each_worker_serves_and_host_ports_do_not_collide() {
    let compose = compose();
    let mut published = BTreeSet::new();
    for (name, s) in compose["services"].as_object().expect("services") {
        for port in strings(&s["ports"]) {
            let host = port.rsplit_once(':').map_or(port.as_str(), |(h, _)| h).to_owned();
            assert!(published.insert(host.clone()), "host port {host} is published twice (again by {name})");
        }
        let env = environment(s);
        let Some(addr) = env.get("WARREN_HEALTH_ADDR") else { continue };
        let port = addr.rsplit(':').next().expect("a port");
        let test = strings(&s["healthcheck"]["test"]).join(" ");
        if !test.is_empty() {
            assert!(
                test.contains(&format!(":{port}/readyz")),
                "service {name}: health check {test:?} asks another port"
            );
        }
    }
}

/// The user and vhost of a broker URL, read by lapin's own AMQP URI parser.
fn user_and_vhost(url: &str) -> (String, String) {
    let uri: lapin::uri::AMQPUri = url.parse().unwrap_or_else(|e| panic!("{url} is not an AMQP URL: {e}"));
    (uri.authority.userinfo.username, uri.vhost)
}

/// The workers' broker user may configure, write and read every name of the namespace compose
/// sets, and nothing of another namespace; the submitter only what submitting and following take.
#[test]
fn the_broker_users_permissions_cover_the_namespace_compose_sets() {
    let compose = compose();
    let defs: serde_json::Value = serde_json::from_str(&read("deploy/rabbitmq-definitions.json")).expect("definitions");
    let worker_env = environment(&compose["services"]["warren-train"]);
    let ns = &worker_env["WARREN_NAMESPACE"];
    let url = &worker_env["WARREN_AMQP_URL"];
    let (user, vhost) = user_and_vhost(url);
    assert!(defs["vhosts"].as_array().expect("vhosts").iter().any(|v| v["name"] == vhost.as_str()));
    let permission = |who: &str| {
        defs["permissions"]
            .as_array()
            .expect("permissions")
            .iter()
            .find(|p| p["user"] == who && p["vhost"] == vhost.as_str())
            .unwrap_or_else(|| panic!("user {who} has permissions on vhost {vhost}"))
            .clone()
    };
    let matches = |p: &serde_json::Value, what: &str, name: &str| {
        let re = regex::Regex::new(p[what].as_str().expect("a pattern")).expect("a valid pattern");
        re.is_match(name)
    };
    let names = warren::Names::new(ns.as_str());
    let own = [
        names.steps_exchange(),
        names.step_queue("train"),
        names.dead_exchange(),
        names.dead_queue("train"),
        names.retry_queue("train", 1000),
        names.events(),
        names.registry(),
        names.control(),
    ];
    let worker = permission(&user);
    for name in &own {
        for what in ["configure", "write", "read"] {
            assert!(matches(&worker, what, name), "user {user} may not {what} {name} of namespace {ns}");
        }
    }
    assert!(matches(&worker, "write", "amq.default"), "hand-offs publish through the default exchange");
    let other = warren::Names::new("elsewhere");
    assert!(!matches(&worker, "configure", &other.step_queue("train")), "user {user} reaches another namespace");
    // The tools service acts as the operator, whose `monitoring` tag lets `warren queues` read
    // unacked counts from the management API (the image has no rabbitmqctl).
    let tools = environment(&compose["services"]["warren"]);
    let (tools_user, _) = user_and_vhost(&tools["WARREN_AMQP_URL"]);
    let tools_user = tools_user.as_str();
    let tools_tags =
        defs["users"].as_array().expect("users").iter().find(|u| u["name"] == tools_user).expect("the tools user");
    assert!(
        strings(&tools_tags["tags"]).iter().any(|t| t == "monitoring" || t == "administrator"),
        "{tools_user} may read queue counts"
    );
    assert!(
        matches(&permission(tools_user), "configure", &names.dead_queue("train")),
        "{tools_user} may replay and purge"
    );
    let submitter = permission("warren-submitter");
    assert!(matches(&submitter, "write", "amq.default") && matches(&submitter, "read", &names.events()));
    assert!(!matches(&submitter, "configure", &names.step_queue("train")), "the submitter declares nothing");
}

/// Files from the host reach ingest through a read-only bind mount at its data root, and
/// docs/OPERATIONS.md says how.
#[test]
fn ingest_reads_host_files_from_a_documented_mount() {
    let compose = compose();
    let ingest = &compose["services"]["warren-ingest"];
    let root = environment(ingest).get("WARREN_DATA_ROOT").cloned().expect("ingest has a data root");
    // `HOST:CONTAINER[:MODE]`, where HOST may be `${VAR:-default}`.
    let split = |v: &str| -> (String, String) {
        let v = v.strip_suffix(":ro").or_else(|| v.strip_suffix(":rw")).unwrap_or(v);
        v.rsplit_once(':').map(|(h, c)| (h.to_owned(), c.to_owned())).unwrap_or_default()
    };
    let mount = strings(&ingest["volumes"])
        .into_iter()
        .find(|v| split(v).1 == root)
        .unwrap_or_else(|| panic!("a volume mounted at ingest's data root {root}"));
    assert!(mount.ends_with(":ro"), "read-only: {mount}");
    let host = split(&mount).0;
    assert!(host.starts_with("${WARREN_INPUT") || host.starts_with("./"), "a host folder: {mount}");
    let operations = read("docs/OPERATIONS.md");
    assert!(
        operations.contains("WARREN_INPUT") && operations.contains("./input"),
        "OPERATIONS.md tells how files get in"
    );
}

/// One service builds each image (the others run it), no worker that runs long steps sets a
/// prefetch above its concurrency (docs/OPERATIONS.md, "Prefetch and concurrency"), steps that
/// hold a table run one at a time, and the tools container sees the same input folder as ingest.
#[test]
fn compose_builds_each_image_once_keeps_prefetch_to_short_steps_and_lets_the_tools_submit_input() {
    let compose = compose();
    let services = compose["services"].as_object().expect("services");
    let mut builders = std::collections::BTreeMap::<String, Vec<String>>::new();
    for (name, s) in services {
        if s.get("build").is_some() {
            builders
                .entry(s["image"].as_str().expect("a built image has a tag").to_owned())
                .or_default()
                .push(name.clone());
        }
        let env = environment(s);
        if env.contains_key("WARREN_PREFETCH") {
            assert_eq!(name, "warren-predict", "{name} sets WARREN_PREFETCH: only short request steps may");
        }
    }
    assert_eq!(builders.len(), 2, "two images: {builders:?}");
    assert!(builders.values().all(|b| b.len() == 1), "each image built by one service: {builders:?}");
    for step in ["ingest", "validate", "features", "evaluate"] {
        let env = environment(&services[&format!("warren-{step}")]);
        assert_eq!(
            env.get("WARREN_CONCURRENCY").map(String::as_str),
            Some("1"),
            "warren-{step} holds one table at a time"
        );
    }
    let input = |service: &str| -> String {
        strings(&services[service]["volumes"])
            .into_iter()
            .find(|v| v.starts_with("${WARREN_INPUT"))
            .and_then(|v| v.split(':').find(|p| p.ends_with('}')).map(str::to_owned))
            .unwrap_or_else(|| panic!("{service} mounts ${{WARREN_INPUT}}"))
    };
    assert_eq!(input("warren-ingest"), input("warren"), "ingest and the tools mount the same folder");
    let tools = strings(&services["warren"]["volumes"]);
    assert!(tools.iter().any(|v| v.ends_with(":/opt/warren/input:ro")), "the tools see it as input/: {tools:?}");
    let url = environment(&services["warren-train"]).get("WARREN_AMQP_URL").cloned().expect("a broker URL");
    assert!(url.contains("heartbeat="), "a heartbeat short enough to notice a cut-off worker: {url}");
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

/// The fields KEDA documents for a ScaledObject's spec.
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

/// The metadata KEDA documents for its RabbitMQ scaler.
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

/// The manifests in deploy/k8s/base: per step a Deployment with probes on the worker's health
/// port and a grace period beyond its shutdown grace, and a KEDA ScaledObject on the step's queue
/// using only the fields KEDA documents for ScaledObject and its RabbitMQ scaler.
#[test]
fn kubernetes_manifests_scale_every_step_on_its_own_queue() {
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
    let known_env: Vec<String> = warren::config::keys().map(|k| format!("WARREN_{}", k.to_uppercase())).collect();
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

/// The base and every kustomize overlay as `kubectl kustomize` renders them: (folder, documents).
fn renders() -> Vec<(std::path::PathBuf, Vec<serde_json::Value>)> {
    use serde::Deserialize;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/k8s");
    let mut dirs = vec![root.join("base")];
    let overlays = std::fs::read_dir(root.join("overlays")).expect("deploy/k8s/overlays");
    dirs.extend(overlays.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.join("kustomization.yaml").exists()));
    assert!(dirs.len() >= 3, "a base and at least two overlays: {dirs:?}");
    dirs.into_iter()
        .map(|dir| {
            let out = std::process::Command::new("kubectl")
                .args(["kustomize", &dir.display().to_string()])
                .output()
                .expect("kubectl runs (kubectl with kustomize 5 is needed for the Kubernetes checks)");
            assert!(out.status.success(), "{}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
            let text = String::from_utf8_lossy(&out.stdout);
            let docs = serde_yaml_ng::Deserializer::from_str(&text)
                .map(|d| serde_json::Value::deserialize(d).expect("rendered YAML"))
                .collect();
            (dir, docs)
        })
        .collect()
}

/// In every render, scale-in never kills work in flight: each step's trigger counts the messages
/// its pods hold (the management API's ready + unacked, not AMQP's ready only, so a pod working
/// on the queue's only message is not scaled away), and a pod told to stop may finish what it
/// holds: its worker's shutdown grace covers the step's maximum duration and Kubernetes waits
/// longer than that grace; scale-in is rate-limited.
#[test]
fn rendered_manifests_count_work_in_flight_and_let_pods_with_work_finish() {
    for (dir, docs) in renders() {
        let at = dir.display();
        let auth: std::collections::BTreeMap<String, &serde_json::Value> = docs
            .iter()
            .filter(|d| d["kind"] == "TriggerAuthentication")
            .map(|d| (d["metadata"]["name"].as_str().unwrap_or_default().to_owned(), d))
            .collect();
        for so in docs.iter().filter(|d| d["kind"] == "ScaledObject") {
            let name = so["metadata"]["name"].as_str().unwrap_or_default();
            let step = name.trim_start_matches("warren-");
            let trigger = &so["spec"]["triggers"][0];
            let meta = &trigger["metadata"];
            assert_eq!(
                meta["protocol"], "http",
                "{at}: {name} reads the management API, which counts unacked messages"
            );
            assert_eq!(meta["mode"], "QueueLength", "{at}: {name}");
            let exclude = &meta["excludeUnacknowledged"];
            assert!(exclude.is_null() || exclude == "false", "{at}: {name} counts messages in flight: {exclude}");
            let auth_name = trigger["authenticationRef"]["name"].as_str().unwrap_or_default();
            let host = auth.get(auth_name).and_then(|a| {
                a["spec"]["secretTargetRef"].as_array()?.iter().find(|r| r["parameter"] == "host").cloned()
            });
            let host = host.unwrap_or_else(|| panic!("{at}: {name}'s TriggerAuthentication gives a host"));
            assert_eq!(host["key"], "management-url", "{at}: the host is the management API's URL, not AMQP's");
            let down = &so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"];
            assert!(down["stabilizationWindowSeconds"].as_u64().is_some_and(|s| s >= 60), "{at}: {name}: {down}");
            assert!(
                down["policies"].as_array().is_some_and(|p| p.iter().all(|p| p["type"] == "Pods" && p["value"] == 1)),
                "{at}: {name} scales in one pod at a time: {down}"
            );

            let target = &so["spec"]["scaleTargetRef"]["name"];
            let deployment = docs
                .iter()
                .find(|d| d["kind"] == "Deployment" && &d["metadata"]["name"] == target)
                .unwrap_or_else(|| panic!("{at}: {name} scales a Deployment of the render"));
            let pod = &deployment["spec"]["template"]["spec"];
            let env = pod["containers"][0]["env"].as_array().cloned().unwrap_or_default();
            let grace_ms: u64 = env
                .iter()
                .find(|e| e["name"] == "WARREN_SHUTDOWN_GRACE_MS")
                .and_then(|e| e["value"].as_str()?.parse().ok())
                .unwrap_or_else(|| panic!("{at}: {name} sets WARREN_SHUTDOWN_GRACE_MS"));
            let term_s = pod["terminationGracePeriodSeconds"].as_u64().expect("terminationGracePeriodSeconds");
            assert!(term_s * 1000 > grace_ms, "{at}: {name}: Kubernetes ({term_s} s) waits out the worker's grace");
            let longest = warren_steps::options(step).max_duration.unwrap_or(std::time::Duration::from_secs(60));
            assert!(
                grace_ms >= longest.as_millis() as u64,
                "{at}: {name}: a pod stopped mid-message may take {longest:?} to finish it; its grace is {grace_ms} ms"
            );
        }
    }
}

/// Every kustomize overlay (and the base) renders with kustomize (`kubectl kustomize`), and what
/// it renders keeps KEDA's objects to the fields KEDA documents, each ScaledObject aimed at a
/// Deployment of the same render, on its own step's queue. .ci/run also validates each render
/// with `kubernetes-validate --strict` against Kubernetes' own schemas.
#[test]
fn every_overlay_renders_and_keeps_keda_to_its_documented_fields() {
    for (dir, docs) in renders() {
        let deployments: Vec<&serde_json::Value> = docs.iter().filter(|d| d["kind"] == "Deployment").collect();
        let scaled: Vec<&serde_json::Value> = docs.iter().filter(|d| d["kind"] == "ScaledObject").collect();
        assert_eq!(scaled.len(), deployments.len(), "{}: one ScaledObject per Deployment", dir.display());
        for so in scaled {
            let name = so["metadata"]["name"].as_str().unwrap_or_default();
            for k in keys(&so["spec"]) {
                assert!(SCALED_OBJECT_SPEC.contains(&k.as_str()), "{}: {name} has no field `{k}`", dir.display());
            }
            let (min, max) = (so["spec"]["minReplicaCount"].as_u64(), so["spec"]["maxReplicaCount"].as_u64());
            assert!(
                min.zip(max).is_some_and(|(a, b)| a <= b && b >= 1),
                "{}: {name} replicas {min:?}..{max:?}",
                dir.display()
            );
            let target = &so["spec"]["scaleTargetRef"]["name"];
            assert!(
                deployments.iter().any(|d| &d["metadata"]["name"] == target),
                "{}: {name} scales {target}",
                dir.display()
            );
            let trigger = &so["spec"]["triggers"][0];
            for k in keys(&trigger["metadata"]) {
                assert!(RABBITMQ_METADATA.contains(&k.as_str()), "{}: the RabbitMQ scaler has no `{k}`", dir.display());
            }
            let step = name.trim_start_matches("warren-");
            assert!(trigger["metadata"]["queueName"].as_str().is_some_and(|q| q.ends_with(&format!(".step.{step}"))));
        }
    }
}

/// The Dockerfile builds the dependencies first from the manifests alone, with a stub for every
/// target a manifest names: a bench or binary without one fails that layer, and so the image
/// (as a new bench once did). Every `[[bench]]` and `[[bin]]` path of every manifest has its stub.
#[test]
fn the_dependency_layer_stubs_every_bench_and_binary_a_manifest_names() {
    let docker = read("Dockerfile");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut manifests = vec![String::new(), "schemas".to_owned()];
    for dir in ["crates", "examples"] {
        for e in std::fs::read_dir(root.join(dir)).expect("dir").flatten() {
            if e.path().join("Cargo.toml").exists() {
                manifests.push(format!("{dir}/{}", e.file_name().to_string_lossy()));
            }
        }
    }
    let mut checked = 0;
    for dir in manifests {
        let text = read(&format!("{dir}{}Cargo.toml", if dir.is_empty() { "" } else { "/" }));
        let mut section = String::new();
        let (mut name, mut path) = (None::<String>, None::<String>);
        let mut targets = Vec::new();
        for line in text.lines().map(str::trim).chain(std::iter::once("[end]")) {
            if line.starts_with('[') {
                match (section.as_str(), name.take(), path.take()) {
                    ("[[bench]]", Some(n), p) => targets.push(p.unwrap_or(format!("benches/{n}.rs"))),
                    ("[[bin]]", _, Some(p)) => targets.push(p),
                    _ => {}
                }
                section = line.to_owned();
            } else if let Some((k, v)) = line.split_once('=') {
                let v = v.trim().trim_matches('"').to_owned();
                match k.trim() {
                    "name" => name = Some(v),
                    "path" => path = Some(v),
                    _ => {}
                }
            }
        }
        for t in targets {
            let full = if dir.is_empty() { t } else { format!("{dir}/{t}") };
            let stubbed =
                docker.contains(&full) || docker.contains(&format!("{dir}/src/bin")) && full.contains("/src/bin/");
            assert!(stubbed, "the Dockerfile's dependency layer has no stub for {full}");
            checked += 1;
        }
    }
    assert!(checked >= 8, "found only {checked} bench and binary targets");
}
