# syntax=docker/dockerfile:1.7
# Every Warren binary (the nine workers, `warren-exec` and the `warren` command) in one slim image;
# compose runs each worker as its own service from it. The `python` target adds Python, the
# warren-step package and the mixed example's steps, for steps written in Python.

FROM rust:1-bookworm AS build
# Every RUN below fails on the first failing command of a pipe, not only its last.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
# Stripped binaries (panics still name file and line), and `s3://` artifact stores (object_store's
# AWS backend) for a store shared by containers on several machines.
ENV CARGO_PROFILE_RELEASE_STRIP=symbols
ARG FEATURES=warren/s3
# Dependencies first: only the manifests, with stub sources, so this layer is rebuilt only when
# a Cargo.toml or Cargo.lock changes.
COPY Cargo.toml Cargo.lock ./
COPY crates/warren/Cargo.toml crates/warren/
COPY crates/warren-ops/Cargo.toml crates/warren-ops/
COPY crates/warren-cli/Cargo.toml crates/warren-cli/
COPY crates/warren-ml/Cargo.toml crates/warren-ml/
COPY crates/warren-steps/Cargo.toml crates/warren-steps/
COPY schemas/Cargo.toml schemas/
COPY workers/ workers/
COPY examples/textstats/Cargo.toml examples/textstats/
# Every target a manifest names gets a stub (a missing one fails the whole layer).
RUN set -eux; \
    for d in crates/warren crates/warren-ops crates/warren-ml crates/warren-steps schemas .; do mkdir -p "$d/src" && echo '' > "$d/src/lib.rs"; done; \
    mkdir -p crates/warren/benches crates/warren/examples crates/warren-ml/benches crates/warren-cli/src crates/warren-cli/benches src/bin benches tests/e2e; \
    echo 'fn main() {}' | tee crates/warren/benches/pipeline.rs crates/warren/examples/quickstart.rs \
        crates/warren-ml/benches/parity.rs crates/warren-ml/benches/onnx.rs crates/warren-cli/src/main.rs crates/warren-cli/benches/history.rs \
        src/bin/warren-test-step.rs src/bin/warren-chaos.rs benches/fanout.rs benches/exec.rs tests/e2e/main.rs >/dev/null; \
    for w in workers/*/; do mkdir -p "$w/src" && echo 'fn main() {}' > "$w/src/main.rs"; done; \
    mkdir -p examples/textstats/src/bin && echo '' > examples/textstats/src/lib.rs; \
    for b in load count report; do echo 'fn main() {}' > "examples/textstats/src/bin/$b.rs"; done
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo build --release --workspace --bins --exclude warren-e2e --features "$FEATURES"
# Then the sources.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    touch crates/*/src/*.rs schemas/src/*.rs workers/*/src/main.rs examples/textstats/src/*.rs examples/textstats/src/bin/*.rs \
    && cargo build --release --workspace --bins --exclude warren-e2e --features "$FEATURES" \
    && mkdir /out \
    && cp target/release/warren target/release/warren-ingest target/release/warren-validate \
          target/release/warren-features target/release/warren-tune target/release/warren-train \
          target/release/warren-select target/release/warren-evaluate target/release/warren-register \
          target/release/warren-predict target/release/warren-exec /out/ \
    && mkdir /out-examples \
    && cp target/release/textstats-load target/release/textstats-count target/release/textstats-report /out-examples/

FROM debian:bookworm-slim AS runtime
# ca-certificates is not pinned: bookworm's security and point releases replace its version (an
# exact pin would stop the image from building once the mirror drops it); the image takes the
# current one when it is built.
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /var/lib/warren --create-home warren \
    && mkdir -p /var/lib/warren/artifacts && chown warren /var/lib/warren/artifacts
COPY --from=build /out/ /usr/local/bin/
COPY pipelines/ /opt/warren/pipelines/
COPY data/ /opt/warren/data/
WORKDIR /opt/warren
# Numeric, so Kubernetes' runAsNonRoot can verify it (the user `warren` of /etc/passwd).
USER 10001
ENV WARREN_ARTIFACTS=/var/lib/warren/artifacts \
    WARREN_HEALTH_ADDR=0.0.0.0:9000
EXPOSE 9000
# A worker image runs one step: `command: ["warren-train"]` in compose.
CMD ["warren", "--help"]

# Steps written in Python: `warren-exec -- python3 my_step.py`, with the warren-step package of
# this repository, the mixed example (examples/mixed: its Python step and the textstats Rust
# steps around it) and the scikit-learn example (examples/sklearn: training in Python, exported as
# ONNX). Build with `--target python`; compose's `examples` profile runs it.
FROM python:3.11-slim-bookworm AS python
RUN useradd --system --uid 10001 --home /var/lib/warren --create-home warren \
    && mkdir -p /var/lib/warren/artifacts && chown warren /var/lib/warren/artifacts
COPY python/ /tmp/warren-step/
COPY examples/mixed/requirements.txt /tmp/mixed.txt
COPY examples/sklearn/requirements.txt /tmp/sklearn.txt
RUN pip install --no-cache-dir /tmp/warren-step -r /tmp/mixed.txt -r /tmp/sklearn.txt \
    && rm -rf /tmp/warren-step /tmp/mixed.txt /tmp/sklearn.txt
COPY --from=build /out/warren /out/warren-exec /out-examples/ /usr/local/bin/
COPY examples/ /opt/warren/examples/
WORKDIR /opt/warren
USER 10001
ENV WARREN_ARTIFACTS=/var/lib/warren/artifacts \
    WARREN_HEALTH_ADDR=0.0.0.0:9000 \
    PYTHONUNBUFFERED=1
EXPOSE 9000
CMD ["warren-exec", "--help"]
