//! Any body a worker may receive: decoding never panics, and what decodes re-encodes to a body
//! that decodes to the same envelope.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warren::envelope::{Envelope, EnvelopeHead};

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Probe {
    seq: u64,
    hops: u32,
}
impl warren::Payload for Probe {
    const SCHEMA: &'static str = "warren.test.Probe/1";
}

fuzz_target!(|data: &[u8]| {
    let _ = EnvelopeHead::decode(data);
    let _ = Envelope::<rmpv::Value>::decode_or_head(data);
    if let Ok(env) = Envelope::<Probe>::decode(data) {
        let again = env.encode().expect("a decoded envelope encodes");
        assert_eq!(Envelope::<Probe>::decode(&again).expect("and decodes again"), env);
    }
});
