//! The local MiniLM embedder against sentence-transformers' published
//! similarities for all-MiniLM-L6-v2, on the real model files of
//! `SLUICE_MINILM_DIR` (`.ci/run` fetches them). Without the directory the
//! tests say they are skipped, except in CI (`CI` set), where they fail.

#[cfg(feature = "minilm")]
mod with_model {

    use sluice_connectors::embedder::{Embedder, MiniLmEmbedder};
    use sluice_connectors::stage::embed::{EmbedConfig, EmbedStage};

    use sluice_testkit::setting::minilm_dir as model_dir;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        dot / (norm(a) * norm(b))
    }

    fn strings(texts: &[&str]) -> Vec<String> {
        texts.iter().map(|s| s.to_string()).collect()
    }

    /// sentence-transformers' documentation prints these for all-MiniLM-L6-v2
    /// (sbert.net, "Semantic Textual Similarity" and the quickstart), to 4 decimals.
    const PUBLISHED: [(&str, &str, f32); 12] = [
        ("The new movie is awesome", "The new movie is so great", 0.8939),
        ("The new movie is awesome", "The dog plays in the garden", 0.0543),
        ("The new movie is awesome", "A woman watches TV", -0.0502),
        ("The cat sits outside", "The dog plays in the garden", 0.2838),
        ("The cat sits outside", "The new movie is so great", -0.0029),
        ("The cat sits outside", "A woman watches TV", 0.1310),
        ("A man is playing guitar", "The dog plays in the garden", 0.2277),
        ("A man is playing guitar", "The new movie is so great", -0.0136),
        ("A man is playing guitar", "A woman watches TV", -0.0327),
        ("The weather is lovely today.", "It's so sunny outside!", 0.6660),
        ("The weather is lovely today.", "He drove to the stadium.", 0.1046),
        ("It's so sunny outside!", "He drove to the stadium.", 0.1411),
    ];

    /// Half a unit of the last printed decimal, plus float noise between torch and our encoder.
    const TOLERANCE: f32 = 0.001;

    #[tokio::test]
    async fn cosine_similarities_match_sentence_transformers() {
        let Some(dir) = model_dir() else { return };
        let model = MiniLmEmbedder::load(&dir).unwrap();
        assert_eq!(model.dimensions(), 384);
        // All the sentences in one call: padding to the longest must not change a vector.
        let mut sentences: Vec<&str> = PUBLISHED.iter().flat_map(|(a, b, _)| [*a, *b]).collect();
        sentences.sort_unstable();
        sentences.dedup();
        let vectors = model.embed(&strings(&sentences)).await.unwrap();
        let vector = |s: &str| &vectors[sentences.iter().position(|x| *x == s).unwrap()];
        for (a, b, published) in PUBLISHED {
            let ours = cosine(vector(a), vector(b));
            assert!(
                (ours - published).abs() <= TOLERANCE,
                "cos({a:?}, {b:?}) = {ours:.4}, sentence-transformers publishes {published:.4}"
            );
        }
    }

    #[tokio::test]
    async fn vectors_are_unit_length_deterministic_and_independent_of_the_batch() {
        let Some(dir) = model_dir() else { return };
        let model = MiniLmEmbedder::load(&dir).unwrap();
        let texts = strings(&["short", "a somewhat longer sentence about checkpoints and batches", ""]);
        let together = model.embed(&texts).await.unwrap();
        assert_eq!(together.len(), 3);
        for vector in &together {
            assert_eq!(vector.len(), 384);
            let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
        }
        assert_eq!(model.embed(&texts).await.unwrap(), together, "same input, same vectors");
        for (text, batched) in texts.iter().zip(&together) {
            let alone = &model.embed(std::slice::from_ref(text)).await.unwrap()[0];
            assert!(cosine(alone, batched) > 0.99999, "{text:?} alone differs from in a padded batch");
        }
    }

    /// sentence-transformers' vectors (`model.encode(texts)`, all-MiniLM-L6-v2
    /// from the same files) for texts of every length class: empty, one word,
    /// sentences, non-ASCII, one cut at 256 tokens. How it was made is in its
    /// `made_by`.
    const REFERENCE: &str = "tests/fixtures/minilm-reference.json";

    #[tokio::test]
    async fn vectors_match_the_stored_reference_in_one_call_of_mixed_lengths() {
        let Some(dir) = model_dir() else { return };
        let model = MiniLmEmbedder::load(&dir).unwrap();
        let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(REFERENCE).unwrap()).unwrap();
        let stored = reference["texts"].as_array().unwrap();
        let texts: Vec<String> = stored.iter().map(|r| r["text"].as_str().unwrap().to_string()).collect();
        assert!(texts.len() >= 8);
        // Longest first, shortest last: the embedder reorders and must put every vector back.
        let mut shuffled: Vec<usize> = (0..texts.len()).collect();
        shuffled.sort_by_key(|&i| std::cmp::Reverse(texts[i].len()));
        let call: Vec<String> = shuffled.iter().map(|&i| texts[i].clone()).collect();
        for batch in [1, 3, 32] {
            let vectors = model.embed_blocking_in(&call, batch).unwrap();
            for (&i, ours) in shuffled.iter().zip(&vectors) {
                let reference: Vec<f32> =
                    stored[i]["vector"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
                let similarity = cosine(ours, &reference);
                assert!(similarity >= 0.999, "batch {batch}: {:?} has cosine {similarity} to the reference", texts[i]);
            }
        }
    }

    #[tokio::test]
    async fn counts_tokens_past_the_shipped_128_limit_and_embeds_past_the_model_limit() {
        let Some(dir) = model_dir() else { return };
        let model = MiniLmEmbedder::load(&dir).unwrap();
        // tokenizer.json truncates at 128; counting must not.
        let long = "checkpoint ".repeat(600);
        assert_eq!(model.count_tokens(&long).unwrap(), 600);
        assert_eq!(model.count_tokens("The new movie is awesome").unwrap(), 5);
        assert_eq!(model.max_tokens(), 256, "sentence_bert_config.json's max_seq_length");
        // Longer than the position table (512): cut, not an error.
        let vectors = model.embed(&[long.clone(), "checkpoint ".repeat(300)]).await.unwrap();
        assert!(cosine(&vectors[0], &vectors[1]) > 0.9999, "both are cut to the same 256 tokens");
    }

    #[tokio::test]
    async fn the_embed_stage_builds_it_from_configuration() {
        let Some(dir) = model_dir() else { return };
        let config = EmbedConfig { provider: "minilm".into(), model_dir: Some(dir.clone()), ..EmbedConfig::default() };
        let stage = EmbedStage::new(config).unwrap();
        assert_eq!(stage.embedder().dimensions(), 384);
        assert!(stage.embedder().fingerprint().starts_with("minilm:"));
        let wrong =
            EmbedConfig { provider: "minilm".into(), model_dir: Some(dir), dimensions: 512, ..EmbedConfig::default() };
        let error = EmbedStage::new(wrong).unwrap_err().to_string();
        assert!(error.contains("embed.dimensions = 512") && error.contains("384"), "{error}");
    }

    #[test]
    fn a_model_dir_missing_a_file_is_refused_naming_the_file() {
        let missing = tempfile::tempdir().unwrap();
        let error = MiniLmEmbedder::load(missing.path()).unwrap_err().to_string();
        assert!(error.contains("config.json") && error.contains("embed.model_dir"), "{error}");

        std::fs::write(missing.path().join("config.json"), "{\"not\": \"bert\"}").unwrap();
        let error = MiniLmEmbedder::load(missing.path()).unwrap_err().to_string();
        assert!(error.contains("config.json is not a BERT configuration"), "{error}");

        let error = MiniLmEmbedder::load(&missing.path().join("nope")).unwrap_err().to_string();
        assert!(error.contains("is not a directory"), "{error}");

        let config = EmbedConfig { provider: "minilm".into(), ..EmbedConfig::default() };
        let error = EmbedStage::new(config).unwrap_err().to_string();
        assert!(error.contains("needs model_dir"), "{error}");
    }

    #[test]
    fn a_model_dir_with_broken_weights_is_refused_naming_the_file() {
        let Some(dir) = model_dir() else { return };
        let broken = tempfile::tempdir().unwrap();
        for name in ["config.json", "tokenizer.json"] {
            std::fs::copy(dir.join(name), broken.path().join(name)).unwrap();
        }
        let error = MiniLmEmbedder::load(broken.path()).unwrap_err().to_string();
        assert!(error.contains("cannot read model.safetensors"), "{error}");
        std::fs::write(broken.path().join("model.safetensors"), b"not safetensors").unwrap();
        let error = MiniLmEmbedder::load(broken.path()).unwrap_err().to_string();
        assert!(error.contains("model.safetensors cannot be read"), "{error}");

        // A real safetensors file, but not this model's: the first tensor it lacks or mis-shapes is named.
        let header = r#"{"embeddings.word_embeddings.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#;
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(header.as_bytes());
        file.extend_from_slice(&[0u8; 16]);
        std::fs::write(broken.path().join("model.safetensors"), &file).unwrap();
        let error = MiniLmEmbedder::load(broken.path()).unwrap_err().to_string();
        assert!(
            error.contains("does not match config.json: it has no tensor encoder.layer.0.attention.self.query.weight"),
            "{error}"
        );
        std::fs::copy(dir.join("model.safetensors"), broken.path().join("model.safetensors")).unwrap();
        let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
        let shrunk = config.replace("\"hidden_size\": 384", "\"hidden_size\": 192");
        assert_ne!(shrunk, config, "the test's config edit must apply");
        std::fs::write(broken.path().join("config.json"), shrunk).unwrap();
        let error = MiniLmEmbedder::load(broken.path()).unwrap_err().to_string();
        assert!(error.contains("has shape [384, 384], the configuration says [192, 192]"), "{error}");
        let swish = config.replace("\"hidden_act\": \"gelu\"", "\"hidden_act\": \"swish\"");
        assert_ne!(swish, config, "the test's config edit must apply");
        std::fs::write(broken.path().join("config.json"), swish).unwrap();
        let error = MiniLmEmbedder::load(broken.path()).unwrap_err().to_string();
        assert!(error.contains("hidden_act = \"swish\" is not one this encoder runs"), "{error}");
        let narrow = config.replace("\"intermediate_size\": 1536", "\"intermediate_size\": 0");
        assert_ne!(narrow, config, "the test's config edit must apply");
        std::fs::write(broken.path().join("config.json"), narrow).unwrap();
        let error = MiniLmEmbedder::load(broken.path()).unwrap_err().to_string();
        assert!(error.contains("intermediate_size = 0"), "{error}");
    }
}

/// Without the feature the provider is refused with the way to get it. When
/// the model is provided (`SLUICE_MINILM_DIR`, as the workspace test command in
/// CI has it) the feature must be on, or the model's tests silently did not run.
#[cfg(not(feature = "minilm"))]
#[test]
fn without_the_feature_minilm_is_a_config_error_saying_how_to_build_it() {
    use sluice_connectors::stage::embed::{EmbedConfig, EmbedStage};
    let config = EmbedConfig { provider: "minilm".into(), model_dir: Some("/x".into()), ..EmbedConfig::default() };
    let error = EmbedStage::new(config).unwrap_err().to_string();
    assert!(error.contains("--features minilm"), "{error}");
    assert!(
        std::env::var_os("SLUICE_MINILM_DIR").is_none(),
        "SLUICE_MINILM_DIR is set but sluice-connectors was built without the minilm feature: its tests did not run"
    );
}
