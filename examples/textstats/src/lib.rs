//! `textstats`: a three-step text pipeline on Warren, written as a user of Warren writes one.
//!
//! - `load` reads a text file (uploaded by `warren submit`, or from the workers' data root),
//!   normalises it and stores it in the artifact store.
//! - `count` counts its words and keeps the most frequent.
//! - `report` writes a Markdown report to the artifact store.
//!
//! Each step is a plain async function; each binary in `src/bin` is a one-line `main` around it.
//! Payloads carry artifact URIs, never the text itself.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use warren::{Context, Start, StepError};

/// The version of every step here (part of cache keys).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A stored text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Document {
    /// Where the normalised text is.
    pub uri: String,
    /// Where it came from.
    pub source: String,
    /// Lines in it.
    pub lines: u64,
}
impl warren::Payload for Document {
    const SCHEMA: &'static str = "textstats.Document/1";
}

/// Word counts of a document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Counts {
    /// The document.
    pub source: String,
    /// Words in it.
    pub words: u64,
    /// Distinct words.
    pub distinct: u64,
    /// The most frequent words with their counts, most frequent first (ties by word).
    pub top: Vec<(String, u64)>,
}
impl warren::Payload for Counts {
    const SCHEMA: &'static str = "textstats.Counts/1";
}

/// A written report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Report {
    /// Where the Markdown report is.
    pub uri: String,
    /// Words in the document.
    pub words: u64,
    /// The most frequent word.
    pub top_word: Option<String>,
}
impl warren::Payload for Report {
    const SCHEMA: &'static str = "textstats.Report/1";
}

/// `load`: which text, and how to normalise it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadParams {
    /// The text file: a local file at submit (uploaded), an artifact URI, or `data:NAME`.
    pub file: String,
    /// Fold the text to lower case.
    #[serde(default = "yes")]
    pub lowercase: bool,
}

fn yes() -> bool {
    true
}

/// `count`: how many words to keep, and which words count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CountParams {
    /// How many of the most frequent words to keep.
    #[schemars(range(min = 1, max = 1000))]
    pub top: u32,
    /// Shortest word counted, in characters.
    #[schemars(range(min = 1, max = 50))]
    pub min_length: u32,
}

impl Default for CountParams {
    fn default() -> Self {
        Self { top: 10, min_length: 1 }
    }
}

/// `report`: its title.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ReportParams {
    /// The report's heading.
    #[schemars(length(min = 1, max = 200))]
    pub title: String,
}

impl Default for ReportParams {
    fn default() -> Self {
        Self { title: "Word counts".into() }
    }
}

fn stored(e: warren::artifacts::ArtifactError) -> StepError {
    StepError::retryable(e)
}

/// Reads the text the parameters name and stores it, normalised.
pub async fn load(ctx: Context, _start: Start) -> Result<Document, StepError> {
    let p: LoadParams = ctx.params()?;
    let bytes = ctx.read_input(&p.file).await?;
    let text = String::from_utf8(bytes).map_err(|_| StepError::permanent(format!("{} is not UTF-8 text", p.file)))?;
    let text = if p.lowercase { text.to_lowercase() } else { text };
    let lines = text.lines().count() as u64;
    let stored = ctx.store()?.put(&ctx.artifact_key("text.txt"), text.into_bytes()).await.map_err(stored)?;
    Ok(Document { uri: stored.uri, source: p.file, lines })
}

/// Counts the words of a document: runs of letters, digits and apostrophes.
pub fn count_words(text: &str, min_length: usize) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for word in text.split(|c: char| !(c.is_alphanumeric() || c == '\'')) {
        let word = word.trim_matches('\'');
        if word.chars().count() >= min_length.max(1) {
            *counts.entry(word.to_owned()).or_insert(0) += 1;
        }
    }
    counts
}

/// Counts the document's words.
pub async fn count(ctx: Context, doc: Document) -> Result<Counts, StepError> {
    let p: CountParams = ctx.params()?;
    let bytes = ctx.store()?.fetch(&doc.uri, None).await.map_err(stored)?;
    let text = String::from_utf8_lossy(&bytes);
    let counts = count_words(&text, p.min_length as usize);
    let mut top: Vec<(String, u64)> = counts.iter().map(|(w, n)| (w.clone(), *n)).collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top.truncate(p.top as usize);
    Ok(Counts { source: doc.source, words: counts.values().sum(), distinct: counts.len() as u64, top })
}

/// Writes the report.
pub async fn report(ctx: Context, counts: Counts) -> Result<Report, StepError> {
    let p: ReportParams = ctx.params()?;
    let mut md = format!(
        "# {}\n\nSource: {}\n\n{} words, {} distinct.\n\n| word | count |\n|---|---|\n",
        p.title, counts.source, counts.words, counts.distinct
    );
    for (w, n) in &counts.top {
        md.push_str(&format!("| {w} | {n} |\n"));
    }
    let stored = ctx.store()?.put(&ctx.artifact_key("report.md"), md.into_bytes()).await.map_err(stored)?;
    if let Ok(detail) =
        warren::envelope::to_msgpack_value(&serde_json::json!({ "report": stored.uri, "words": counts.words }))
    {
        ctx.report(detail);
    }
    Ok(Report { uri: stored.uri, words: counts.words, top_word: counts.top.first().map(|(w, _)| w.clone()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_counted_case_as_given() {
        let c = count_words("The cat and the hat. Don't stop!", 1);
        assert_eq!(c["the"], 1);
        assert_eq!(c["The"], 1);
        assert_eq!(c["Don't"], 1);
        assert_eq!(count_words("a bb ccc", 2).len(), 2);
    }
}
