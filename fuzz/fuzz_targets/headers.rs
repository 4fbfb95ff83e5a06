//! Any header table on the wire (parsed by lapin's own AMQP parser): reading the delivery facts
//! and deciding never panics, and what a publisher can set stays in its bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warren::{
    envelope::headers,
    worker::decide::{Body, DeliveryFacts, Limits, Stage, decide},
};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let Ok((_, table)) = lapin::types::parsing::parse_field_table(rest) else { return };
    let props = lapin::BasicProperties::default().with_headers(table);
    let redelivered = flags & 1 == 1;
    let max_attempts = u32::from(flags >> 1).max(1);
    let facts = DeliveryFacts::read(&props, redelivered, max_attempts);
    assert!((1..=max_attempts).contains(&facts.attempt));
    if !redelivered {
        assert_eq!(facts.crashes, 0, "a first delivery never counts a crash");
    }
    let _ = warren::envelope::header_str(&props, headers::JOB);
    let _ = warren::envelope::header_int(&props, headers::ATTEMPT);
    let limits = Limits { max_attempts, delivery_limit: 5 };
    let body = Body::Decoded { step: "a", duplicate: false, cancelled: false };
    let _ = decide("a", facts, body, limits, Stage::Received);
    let _ = warren::envelope::with_headers(&props, vec![(headers::ERROR, warren::envelope::text("x"))]);
});
