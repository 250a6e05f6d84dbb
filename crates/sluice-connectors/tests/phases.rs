//! Which later phases a pipeline file may ask for, and what the refusals say,
//! checked on `examples/intercom.toml` edited as its comments tell.

use std::path::{Path, PathBuf};

use sluice_connectors::PipelineFile;
use sluice_connectors::phase::{PhasesConfig, build_phases};

fn example() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/intercom.toml");
    std::fs::read_to_string(path).expect("examples/intercom.toml")
}

/// The example's text with its `[phases.*]` tables left out (they come last but for `[store]`).
fn without_phases(text: &str) -> String {
    let (head, rest) = text.split_once("\n[phases.").expect("the example has phases");
    let store = rest.find("\n[store]").map(|at| &rest[at..]).expect("the example has a store");
    format!("{head}{store}")
}

/// The refusal `build_phases` gives.
fn refusal(config: &PhasesConfig, auto_create_stories: bool) -> String {
    match build_phases(config, auto_create_stories) {
        Ok(_) => panic!("the phases were accepted"),
        Err(error) => error.to_string(),
    }
}

fn load(dir: &Path, text: &str) -> PipelineFile {
    let path: PathBuf = dir.join("intercom.toml");
    std::fs::write(&path, text).unwrap();
    PipelineFile::load(&path).expect("the edited example loads")
}

#[test]
fn stories_without_themes_name_both_ways_out() {
    let error = refusal(&PhasesConfig::default(), true);
    assert!(error.contains("add a [phases.theme_extraction] table"), "{error}");
    assert!(error.contains("[phases.embedding_generation]"), "themes need embeddings: {error}");
    assert!(error.contains("or set auto_create_stories = false"), "{error}");

    // With embeddings there, only the themes are missing.
    let config: PhasesConfig = toml::from_str("[embedding_generation]\n").unwrap();
    let error = refusal(&config, true);
    assert!(error.contains("add a [phases.theme_extraction] table, or set auto_create_stories = false"), "{error}");
    assert!(!error.contains("embedding_generation"), "{error}");
}

#[test]
fn the_intercom_example_does_what_its_comment_says() {
    let dir = tempfile::tempdir().unwrap();
    let text = example();
    let full = load(dir.path(), &text);
    let p = &full.phases;
    assert!(p.embedding_generation.is_some() && p.facet_extraction.is_some() && p.theme_extraction.is_some());

    // Only the tables removed: refused, with the advice.
    let file = load(dir.path(), &without_phases(&text));
    assert!(file.phases.is_empty() && file.auto_create_stories == Some(true));
    let error = refusal(&file.phases, true);
    assert!(error.contains("or set auto_create_stories = false"), "{error}");

    // The comment: remove the tables and the auto_create_stories line (or set it to false).
    assert!(text.contains("remove every [phases.*] table and the auto_create_stories line"), "the comment says so");
    for flag in ["", "auto_create_stories = false\n"] {
        let edited = without_phases(&text).replace("auto_create_stories = true\n", flag);
        let file = load(dir.path(), &edited);
        let phases = build_phases(&file.phases, file.auto_create_stories.unwrap_or(false));
        assert!(phases.is_ok_and(|p| p.is_empty()), "classification only");
    }
}
