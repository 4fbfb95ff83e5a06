//! Any pipeline spec text: parsing never panics; an error names the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warren::spec::PipelineSpec;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = PipelineSpec::parse(text, "fuzz.toml") {
        assert!(e.to_string().contains("fuzz.toml"), "{e}");
    }
});
