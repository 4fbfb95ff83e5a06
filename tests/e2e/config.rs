//! One configuration: every key through every layer (defaults < step defaults < file <
//! environment < flags), in every binary, read back with `--print-config`.

use std::{collections::BTreeMap, path::PathBuf, process::Command};

use crate::ml::{ML_STEPS, warren_bin, worker_bin};

/// A value per layer for each key: file, environment, flag.
fn values(key: &str) -> [&'static str; 3] {
    match key {
        "amqp_url" => {
            ["amqp://f:filepw@file-host:5672/%2f", "amqp://e:envpw@env-host/%2f", "amqps://c:flagpw@flag-host/%2f"]
        }
        "namespace" => ["file-ns", "env-ns", "flag-ns"],
        "artifacts" => ["/srv/file-artifacts", "/srv/env-artifacts", "/srv/flag-artifacts"],
        "events" => ["true", "false", "true"],
        "events_version" => ["1", "2", "1"],
        "envelope_version" => ["1", "2", "auto"],
        "health_addr" => ["127.0.0.1:9101", "127.0.0.1:9102", "127.0.0.1:9103"],
        "data_root" => ["/srv/file-data", "/srv/env-data", "/srv/flag-data"],
        "tls_ca_file" => ["/srv/file-ca.pem", "/srv/env-ca.pem", "/srv/flag-ca.pem"],
        "log_format" => ["json", "text", "json"],
        "concurrency" => ["11", "12", "13"],
        "prefetch" => ["21", "22", "23"],
        "max_attempts" => ["31", "32", "33"],
        "retry_base_ms" => ["41", "42", "43"],
        "retry_max_ms" => ["51", "52", "53"],
        "delivery_limit" => ["61", "62", "63"],
        "max_duration_ms" => ["91", "92", "93"],
        "shutdown_grace_ms" => ["71", "72", "73"],
        "dedup_window" => ["81", "82", "83"],
        "registry_namespace" => ["file-models", "env-models", "flag-models"],
        other => panic!("the test has no values for key `{other}`: add them"),
    }
}

/// `key -> (value, origin)` from `--print-config`.
fn printed(bin: &PathBuf, file: Option<&PathBuf>, env: bool, flags: bool) -> BTreeMap<String, (String, String)> {
    let mut cmd = Command::new(bin);
    for key in warren::config::keys() {
        cmd.env_remove(format!("WARREN_{}", key.to_uppercase()));
        if env {
            cmd.env(format!("WARREN_{}", key.to_uppercase()), values(key)[1]);
        }
        if flags {
            cmd.arg(format!("--{}={}", key.replace('_', "-"), values(key)[2]));
        }
    }
    cmd.env_remove("WARREN_CONFIG");
    if let Some(f) = file {
        cmd.arg("--config").arg(f);
    }
    cmd.arg("--print-config");
    let out = cmd.output().expect("run the binary");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{} --print-config: {}", bin.display(), String::from_utf8_lossy(&out.stderr));
    for secret in ["filepw", "envpw", "flagpw"] {
        assert!(!text.contains(secret), "{} printed a password: {text}", bin.display());
    }
    text.lines()
        .map(|line| {
            let (setting, origin) = line.split_once(" # ").unwrap_or((line, ""));
            let setting = setting.trim();
            let (key, value) = match setting.strip_prefix("# ") {
                Some(unset) => (unset.trim_end_matches(" (unset)").to_owned(), String::new()),
                None => {
                    let (k, v) = setting.split_once(" = ").unwrap_or_else(|| panic!("not key = value: {line}"));
                    (k.to_owned(), v.trim_matches('"').to_owned())
                }
            };
            (key, (value, origin.trim().to_owned()))
        })
        .collect()
}

fn expected(key: &str, layer: usize) -> String {
    let v = values(key)[layer];
    if key == "amqp_url" { warren::config::redact_url(v) } else { v.to_owned() }
}

#[test]
fn every_key_resolves_through_every_layer_in_every_binary() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("config-layers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("warren.toml");
    let text: String = warren::config::keys()
        .map(|k| {
            let v = values(k)[0];
            if v.parse::<u64>().is_ok() || v == "true" { format!("{k} = {v}\n") } else { format!("{k} = \"{v}\"\n") }
        })
        .collect();
    std::fs::write(&file, text).expect("write config file");

    let mut bins: Vec<PathBuf> = ML_STEPS.iter().map(|s| worker_bin(s)).collect();
    bins.push(warren_bin());
    for bin in &bins {
        let layers = [
            (printed(bin, Some(&file), true, true), 2, "command line"),
            (printed(bin, Some(&file), true, false), 1, "environment"),
            (printed(bin, Some(&file), false, false), 0, "file"),
        ];
        for (shown, layer, origin) in &layers {
            for key in warren::config::keys() {
                let (value, from) =
                    shown.get(key).unwrap_or_else(|| panic!("{} does not print `{key}`", bin.display()));
                assert_eq!(value, &expected(key, *layer), "{} `{key}` with layers up to {origin}", bin.display());
                assert!(from.starts_with(origin), "{} `{key}` came from {from}, not {origin}", bin.display());
            }
        }
        // Nothing set: Warren's defaults, and a step's own (train runs one model at a time).
        let defaults = printed(bin, None, false, false);
        let (concurrency, from) = &defaults["concurrency"];
        if bin.ends_with("warren-train") {
            assert_eq!((concurrency.as_str(), from.as_str()), ("1", "step default"));
        } else {
            assert_eq!((concurrency.as_str(), from.as_str()), ("64", "default"));
        }
        assert_eq!(defaults["prefetch"].0, "", "unset prefetch follows concurrency");
    }
    std::fs::remove_dir_all(&dir).ok();
}
