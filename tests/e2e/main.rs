//! End-to-end tests: real worker processes against a real RabbitMQ, each test in its own
//! namespace. Start the broker first (`rabbitmq-server -detached`, or
//! `docker compose up -d rabbitmq`); `WARREN_AMQP_URL` points elsewhere.

mod helpers;

mod browser;
mod chaos;
mod cli;
mod compose;
mod config;
mod console;
mod exec;
mod failures;
mod health;
mod history;
mod lifecycle;
mod ml;
mod onnx;
mod packaging;
mod pipeline;
mod production;
mod protocol;
mod registry;
mod roles;
mod security;
mod topology;
mod traces;
