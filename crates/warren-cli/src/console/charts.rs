//! Charts over time, drawn on the server as inline SVG (no script, no library): done and died per
//! minute per step from the events stream, and each step's ready messages as the console sampled
//! them.

use std::{collections::BTreeMap, collections::VecDeque, time::Duration};

use super::html::{Markup, html};

/// How many samples of queue depth the console keeps (one every [`SAMPLE_EVERY`]: an hour).
pub const SAMPLES: usize = 240;
/// How often the console samples queue depth.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(15);

/// Ready messages per step over time: `(at_ms, step → ready)`, oldest first.
pub type Depths = VecDeque<(u64, BTreeMap<String, u64>)>;

/// Bars of `values` (oldest first) scaled to the largest, with a title per bar.
pub fn bars(values: &[u64], class: &str, label: &str, unit: &str) -> Markup {
    let (w, h) = (4usize, 28u64);
    let max = values.iter().copied().max().unwrap_or(0).max(1);
    let rects = Markup::concat(values.iter().enumerate().map(|(i, v)| {
        let height = v * h / max;
        html!(
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"><title>{} {}</title></rect>",
            i * w,
            h - height,
            w - 1,
            height.max(u64::from(*v > 0)),
            v,
            unit
        )
    }));
    html!(
        "<svg class=\"chart {}\" width=\"{}\" height=\"{}\" role=\"img\" aria-label=\"{}\">{}</svg>",
        class,
        values.len() * w,
        h,
        label,
        rects
    )
}

/// One step's ready messages over the sampled hour.
pub fn depth_of(depths: &Depths, step: &str) -> Vec<u64> {
    depths.iter().map(|(_, by_step)| by_step.get(step).copied().unwrap_or(0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_largest_and_say_each_value() {
        let svg = bars(&[0, 5, 10], "done", "done per minute", "done").into_string();
        assert_eq!(svg.matches("<rect").count(), 3);
        assert!(svg.contains("height=\"28\"><title>10 done</title>"), "{svg}");
        assert!(svg.contains("height=\"14\"><title>5 done</title>"), "{svg}");
        assert!(svg.contains("height=\"0\"><title>0 done</title>"), "{svg}");
    }
}
