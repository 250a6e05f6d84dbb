//! A BERT encoder (all-MiniLM-L6-v2's shape: absolute positions, post-layer
//! normalisation) over `f32` rows, from a `config.json` and a
//! `model.safetensors` in Hugging Face's naming, as sentence-transformers
//! runs it: WordPiece ids in, each text's mean-pooled, unit-length vector out.
//!
//! The texts of a pass are not padded to a common length: the dense layers
//! see their tokens as one matrix, and attention runs over each text's own
//! tokens. That is what padding with an attention mask computes for the real
//! tokens, without the work on the padding.

use rayon::prelude::*;
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

use super::kernels::{Activation, Linear, Norm, softmax, widest_simd};

/// The fields of `config.json` the encoder needs.
#[derive(Debug, Deserialize)]
pub(super) struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: usize,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

fn default_type_vocab_size() -> usize {
    2
}

fn default_layer_norm_eps() -> f64 {
    1e-12
}

struct Layer {
    /// Query, key and value in one product: three `hidden` blocks per row.
    qkv: Linear,
    attention_out: Linear,
    attention_norm: Norm,
    intermediate: Linear,
    output: Linear,
    output_norm: Norm,
}

pub(super) struct Bert {
    /// `vocab × hidden`.
    words: Vec<f32>,
    /// `max_positions × hidden`.
    positions: Vec<f32>,
    /// Token type 0's row: every text is one segment.
    segment: Vec<f32>,
    embedding_norm: Norm,
    layers: Vec<Layer>,
    activation: Activation,
    hidden: usize,
    heads: usize,
    vocab: usize,
    max_positions: usize,
}

/// Reads named tensors as `f32`, checking their shapes.
struct Weights<'a> {
    file: SafeTensors<'a>,
    /// `bert.` when the file holds a whole `BertForXxx` model.
    prefix: &'static str,
}

impl Weights<'_> {
    fn read(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, String> {
        let name = format!("{}{name}", self.prefix);
        let view = self.file.tensor(&name).map_err(|_| format!("it has no tensor {name}"))?;
        if view.shape() != shape {
            return Err(format!("{name} has shape {:?}, the configuration says {shape:?}", view.shape()));
        }
        let bytes = view.data();
        Ok(match view.dtype() {
            Dtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::F16 => bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::BF16 => bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            other => return Err(format!("{name} is {other:?}; only F32, F16 and BF16 weights are read")),
        })
    }

    fn linear(&self, name: &str, inputs: usize, outputs: usize) -> Result<Linear, String> {
        Ok(Linear {
            weight: self.read(&format!("{name}.weight"), &[outputs, inputs])?,
            bias: self.read(&format!("{name}.bias"), &[outputs])?,
            inputs,
            outputs,
        })
    }

    fn norm(&self, name: &str, width: usize, eps: f32) -> Result<Norm, String> {
        Ok(Norm {
            weight: self.read(&format!("{name}.weight"), &[width])?,
            bias: self.read(&format!("{name}.bias"), &[width])?,
            eps,
        })
    }
}

impl Bert {
    /// The encoder `config` describes, with the weights in `file`; the error
    /// says what does not match.
    pub fn load(config: &Config, file: SafeTensors<'_>) -> Result<Self, String> {
        let activation = Activation::from_name(&config.hidden_act).ok_or_else(|| {
            format!("hidden_act = {:?} is not one this encoder runs (gelu, gelu_new, relu)", config.hidden_act)
        })?;
        if let Some(kind) = config.position_embedding_type.as_deref().filter(|&k| k != "absolute") {
            return Err(format!("position_embedding_type = {kind:?}: only absolute positions are supported"));
        }
        let (hidden, heads) = (config.hidden_size, config.num_attention_heads);
        if heads == 0 || hidden == 0 || !hidden.is_multiple_of(heads) {
            return Err(format!("hidden_size = {hidden} does not divide into num_attention_heads = {heads}"));
        }
        if config.intermediate_size == 0 {
            return Err("intermediate_size = 0 leaves the feed-forward layers no width".to_string());
        }
        if config.type_vocab_size == 0 {
            return Err("type_vocab_size = 0 leaves no segment embedding".to_string());
        }
        let prefix = if file.tensor("embeddings.word_embeddings.weight").is_err()
            && file.tensor("bert.embeddings.word_embeddings.weight").is_ok()
        {
            "bert."
        } else {
            ""
        };
        let weights = Weights { file, prefix };
        let eps = config.layer_norm_eps as f32;
        let inter = config.intermediate_size;
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let at = |part: &str| format!("encoder.layer.{i}.{part}");
                let [q, k, v] = ["query", "key", "value"]
                    .map(|part| weights.linear(&at(&format!("attention.self.{part}")), hidden, hidden));
                let (q, k, v) = (q?, k?, v?);
                Ok(Layer {
                    qkv: Linear {
                        weight: [q.weight, k.weight, v.weight].concat(),
                        bias: [q.bias, k.bias, v.bias].concat(),
                        inputs: hidden,
                        outputs: 3 * hidden,
                    },
                    attention_out: weights.linear(&at("attention.output.dense"), hidden, hidden)?,
                    attention_norm: weights.norm(&at("attention.output.LayerNorm"), hidden, eps)?,
                    intermediate: weights.linear(&at("intermediate.dense"), hidden, inter)?,
                    output: weights.linear(&at("output.dense"), inter, hidden)?,
                    output_norm: weights.norm(&at("output.LayerNorm"), hidden, eps)?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let segments = weights.read("embeddings.token_type_embeddings.weight", &[config.type_vocab_size, hidden])?;
        Ok(Self {
            words: weights.read("embeddings.word_embeddings.weight", &[config.vocab_size, hidden])?,
            positions: weights
                .read("embeddings.position_embeddings.weight", &[config.max_position_embeddings, hidden])?,
            segment: segments[..hidden].to_vec(),
            embedding_norm: weights.norm("embeddings.LayerNorm", hidden, eps)?,
            layers,
            activation,
            hidden,
            heads,
            vocab: config.vocab_size,
            max_positions: config.max_position_embeddings,
        })
    }

    /// One unit-length vector per row of token ids (`[CLS]`/`[SEP]`
    /// included): the mean of the last layer's outputs over the row's tokens.
    /// `scratch` keeps its buffers for the next pass.
    pub fn embed(&self, rows: &[&[u32]], scratch: &mut Scratch) -> Result<Vec<Vec<f32>>, String> {
        let h = self.hidden;
        for row in rows {
            if row.len() > self.max_positions {
                return Err(format!(
                    "{} tokens, more than the {} positions the model has",
                    row.len(),
                    self.max_positions
                ));
            }
            if let Some(id) = row.iter().find(|&&id| id as usize >= self.vocab) {
                return Err(format!("token id {id} is outside the vocabulary of {}", self.vocab));
            }
        }
        let tokens: Vec<(usize, u32)> =
            rows.iter().flat_map(|row| row.iter().enumerate().map(|(position, &id)| (position, id))).collect();
        let n = tokens.len();
        let inter = self.layers.first().map_or(0, |l| l.intermediate.outputs);
        let Scratch { x, qkv, context, attended, expanded } = scratch;
        for (buffer, width) in
            [(&mut *x, h), (&mut *qkv, 3 * h), (&mut *context, h), (&mut *attended, h), (&mut *expanded, inter)]
        {
            buffer.resize(n * width, 0.0);
        }
        x.par_chunks_mut(h).zip(&tokens).for_each(|(out, &(position, id))| {
            let word = &self.words[id as usize * h..][..h];
            let place = &self.positions[position * h..][..h];
            for (((y, w), p), s) in out.iter_mut().zip(word).zip(place).zip(&self.segment) {
                *y = w + p + s;
            }
            self.embedding_norm.apply_row(out);
        });

        let lengths: Vec<usize> = rows.iter().map(|r| r.len()).collect();
        for layer in &self.layers {
            layer.qkv.apply(x, None, qkv);
            self.attend(qkv, &lengths, context);
            layer.attention_out.apply(context, Some(x), attended);
            layer.attention_norm.apply(attended);
            layer.intermediate.apply(attended, None, expanded);
            self.activation.apply(expanded);
            layer.output.apply(expanded, Some(attended), x);
            layer.output_norm.apply(x);
        }

        let mut start = 0;
        Ok(lengths
            .iter()
            .map(|&len| {
                let mut mean = vec![0f32; h];
                for token in x[start * h..(start + len) * h].chunks_exact(h) {
                    mean.iter_mut().zip(token).for_each(|(m, v)| *m += v);
                }
                start += len;
                let norm = mean.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                mean.iter_mut().for_each(|m| *m /= norm);
                mean
            })
            .collect())
    }

    /// Self-attention of each text over its own tokens, head by head, into
    /// `context` (`tokens × hidden`, heads side by side); texts in parallel.
    fn attend(&self, qkv: &[f32], lengths: &[usize], context: &mut [f32]) {
        let h = self.hidden;
        // Each text's rows of `context`, to hand one to each task.
        let mut texts = Vec::with_capacity(lengths.len());
        let (mut rest, mut start) = (context, 0);
        for &len in lengths {
            let (mine, after) = rest.split_at_mut(len * h);
            texts.push((start, len, mine));
            rest = after;
            start += len;
        }
        let heads = self.heads;
        texts
            .into_par_iter()
            .for_each(|(start, len, out)| attend_text(&qkv[start * 3 * h..][..len * 3 * h], out, h, heads));
    }
}

/// The buffers of a forward pass, kept from one pass to the next: fresh ones
/// would be zeroed pages from the kernel every time.
#[derive(Default)]
pub(super) struct Scratch {
    x: Vec<f32>,
    qkv: Vec<f32>,
    context: Vec<f32>,
    attended: Vec<f32>,
    expanded: Vec<f32>,
}

widest_simd! {
    /// One text's attention: `qkv` is its tokens' query, key and value rows
    /// (three `hidden` blocks each), `out` its rows of the context.
    fn attend_text(qkv: &[f32], out: &mut [f32], h: usize, heads: usize) {
        let len = out.len() / h;
        // What the unsafe products below rely on: checked, not assumed.
        assert!(
            out.len() == len * h && qkv.len() == len * 3 * h && h.is_multiple_of(heads),
            "attention's rows do not fit"
        );
        let d = h / heads;
        let scale = 1.0 / (d as f32).sqrt();
        let mut scores = vec![0f32; len * len];
        let row = (3 * h) as isize;
        for head in 0..heads {
            let (q_at, k_at, v_at) = (head * d, h + head * d, 2 * h + head * d);
            // SAFETY: every matrix lies in its slice: the query, key and value
            // blocks of head `head` are d columns at q_at, k_at, v_at of `len`
            // rows of 3h (keys read transposed: element (c, j) at j·3h + k_at + c);
            // scores are len × len; the head's context is d columns at head·d
            // of len rows of h in `out`.
            unsafe {
                gemm::gemm(
                    len, len, d,
                    scores.as_mut_ptr(), 1, len as isize, false,
                    qkv.as_ptr().add(q_at), 1, row,
                    qkv.as_ptr().add(k_at), row, 1,
                    0.0, scale, false, false, false, gemm::Parallelism::None,
                );
            }
            scores.chunks_exact_mut(len).for_each(softmax);
            // SAFETY: as above; the scores are read as len × len.
            unsafe {
                gemm::gemm(
                    len, d, len,
                    out.as_mut_ptr().add(head * d), 1, h as isize, false,
                    scores.as_ptr(), 1, len as isize,
                    qkv.as_ptr().add(v_at), 1, row,
                    0.0, 1.0, false, false, false, gemm::Parallelism::None,
                );
            }
        }
    }
}
