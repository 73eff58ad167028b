//! `SentenceEncoder`: a BERT model with its tokenizer and pooling, loaded from a Hugging Face /
//! sentence-transformers directory, turning sentences into embeddings.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};
use serde::Deserialize;

use crate::bert::BertModel;
use crate::config::BertConfig;
use crate::error::{read_json, EncoderError, Result};
use crate::loader::{
    bert_hf_key, bert_key_rule, load_module, module_tensors, serialize_tensors, write_atomic,
    Checkpoint,
};
use crate::pooling::{l2_normalize, Pooling, PoolingConfig};
use crate::tokenize::{length_sorted_batches, unsort_rows, Encoded, SentenceTokenizer, TokenBatch};

/// The default number of sentences per forward pass in [`SentenceEncoder::encode`].
pub const DEFAULT_BATCH_SIZE: usize = 32;

/// Tokenizer files copied verbatim when a model is saved.
const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
];

/// Whether `B` computes on the host CPU (ndarray, flex), where tensor data lives in host memory.
pub fn runs_on_cpu<B: Backend>(device: &B::Device) -> bool {
    let name = B::name(device).to_lowercase();
    name.contains("ndarray") || name.contains("flex") || name.contains("cpu")
}

/// One worker per core on CPU backends, one on accelerators (which parallelise each operation).
pub fn default_workers<B: Backend>(device: &B::Device) -> usize {
    if runs_on_cpu::<B>(device) {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        1
    }
}

/// Everything of a sentence encoder that is not a trainable weight.
#[derive(Debug, Clone)]
pub struct EncoderSettings {
    /// The BERT configuration.
    pub config: BertConfig,
    /// The tokenizer, truncating at `max_seq_length`.
    pub tokenizer: Arc<SentenceTokenizer>,
    /// How token states are pooled.
    pub pooling: Pooling,
    /// Whether embeddings are L2-normalised.
    pub normalize: bool,
    /// Sentences per forward pass in `encode`.
    pub batch_size: usize,
    /// Threads running batches concurrently in `encode` (CPU backends: one per core).
    pub workers: usize,
    /// Tokenizer files (name, bytes) written back on save.
    pub tokenizer_files: Arc<Vec<(String, Vec<u8>)>>,
}

/// A BERT sentence encoder: sentences in, fixed-length embeddings out.
#[derive(Module, Debug)]
pub struct SentenceEncoder<B: Backend> {
    /// The transformer.
    pub bert: BertModel<B>,
    /// Tokenizer, pooling and the rest.
    pub settings: EncoderSettings,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

#[derive(Deserialize)]
struct TokenizerConfig {
    model_max_length: Option<f64>,
}

fn missing_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        Ok(())
    } else {
        Err(EncoderError::MissingDirectory {
            path: dir.to_path_buf(),
        })
    }
}

/// Reads the sentence-transformers files of `dir`: (pooling, normalize, max_seq_length), each
/// `None` when the directory does not say.
fn read_sentence_transformers(
    dir: &Path,
) -> Result<(Option<Pooling>, Option<bool>, Option<usize>)> {
    let modules_path = dir.join("modules.json");
    let mut pooling_dir = dir.join("1_Pooling");
    let mut normalize = None;
    if modules_path.is_file() {
        let modules: Vec<ModuleEntry> = read_json(&modules_path)?;
        normalize = Some(modules.iter().any(|m| m.kind.ends_with("Normalize")));
        if let Some(p) = modules.iter().find(|m| m.kind.ends_with("Pooling")) {
            pooling_dir = dir.join(&p.path);
        }
    }
    let pooling_path = pooling_dir.join("config.json");
    let pooling = if pooling_path.is_file() {
        let cfg: PoolingConfig = read_json(&pooling_path)?;
        Some(
            cfg.pooling()
                .map_err(|message| EncoderError::InvalidConfig {
                    path: pooling_path.clone(),
                    message,
                })?,
        )
    } else {
        None
    };
    let sbert_path = dir.join("sentence_bert_config.json");
    let max_seq_length = if sbert_path.is_file() {
        read_json::<SentenceBertConfig>(&sbert_path)?.max_seq_length
    } else {
        None
    };
    Ok((pooling, normalize, max_seq_length))
}

impl<B: Backend> SentenceEncoder<B> {
    /// Loads a model directory (`config.json`, `model.safetensors`, `tokenizer.json`, and where
    /// present sentence-transformers' `modules.json`, `1_Pooling/config.json`,
    /// `sentence_bert_config.json`) onto `device`.
    pub fn load(dir: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        let dir = dir.as_ref();
        missing_dir(dir)?;
        let config_path = dir.join("config.json");
        let config = BertConfig::from_file(&config_path)?;
        let (pooling, normalize, sbert_max) = read_sentence_transformers(dir)?;

        let max_seq_length = match sbert_max {
            Some(n) => n,
            None => {
                let tc_path = dir.join("tokenizer_config.json");
                let tokenizer_max = if tc_path.is_file() {
                    read_json::<TokenizerConfig>(&tc_path)?
                        .model_max_length
                        .filter(|&n| n >= 2.0 && n < 1.0e6)
                        .map(|n| n as usize)
                } else {
                    None
                };
                tokenizer_max.unwrap_or(usize::MAX)
            }
        }
        .min(config.max_position_embeddings);
        // The tokenizer (JSON parsing) loads on a second thread while the weights load here.
        let tokenizer_path = dir.join("tokenizer.json");
        let pad_id = config.pad_token_id as u32;
        let (tokenizer, bert) = std::thread::scope(|scope| {
            let tokenizer = scope
                .spawn(|| SentenceTokenizer::from_file(&tokenizer_path, max_seq_length, pad_id));
            let bert = Checkpoint::open(&dir.join("model.safetensors")).and_then(|checkpoint| {
                load_module(config.init::<B>(device), &checkpoint, bert_key_rule)
            });
            (tokenizer.join().expect("tokenizer loading panicked"), bert)
        });
        // A missing tokenizer is reported before a checkpoint problem.
        let tokenizer = tokenizer?;
        let bert = bert?;
        let mut tokenizer_files = Vec::new();
        for name in TOKENIZER_FILES {
            let path = dir.join(name);
            if path.is_file() {
                let bytes =
                    std::fs::read(&path).map_err(|source| EncoderError::Io { path, source })?;
                tokenizer_files.push((name.to_string(), bytes));
            }
        }

        Ok(Self {
            bert,
            settings: EncoderSettings {
                config,
                tokenizer: Arc::new(tokenizer),
                pooling: pooling.unwrap_or(Pooling::Mean),
                normalize: normalize.unwrap_or(false),
                batch_size: DEFAULT_BATCH_SIZE,
                workers: default_workers::<B>(device),
                tokenizer_files: Arc::new(tokenizer_files),
            },
        })
    }

    /// Builds an encoder from a model and tokenizer already in memory.
    pub fn from_parts(
        bert: BertModel<B>,
        config: BertConfig,
        tokenizer: SentenceTokenizer,
    ) -> Self {
        let workers = default_workers::<B>(&bert.embeddings.word_embeddings.weight.device());
        Self {
            bert,
            settings: EncoderSettings {
                config,
                tokenizer: Arc::new(tokenizer),
                pooling: Pooling::Mean,
                normalize: false,
                batch_size: DEFAULT_BATCH_SIZE,
                workers,
                tokenizer_files: Arc::new(Vec::new()),
            },
        }
    }

    /// Sets the pooling.
    pub fn with_pooling(mut self, pooling: Pooling) -> Self {
        self.settings.pooling = pooling;
        self
    }

    /// Sets the truncation length (special tokens included), at most `max_position_embeddings`.
    pub fn with_max_seq_length(mut self, max_seq_length: usize) -> Result<Self> {
        let limit = self.settings.config.max_position_embeddings;
        if max_seq_length > limit {
            return Err(EncoderError::InvalidArgument(format!(
                "max_seq_length {max_seq_length} exceeds max_position_embeddings {limit}"
            )));
        }
        let tokenizer = &self.settings.tokenizer;
        let retuned = SentenceTokenizer::new(
            tokenizer.inner().clone(),
            max_seq_length,
            tokenizer.pad_id(),
        )?;
        self.settings.tokenizer = Arc::new(retuned);
        Ok(self)
    }

    /// Switches L2 normalisation on or off.
    pub fn with_normalize(mut self, normalize: bool) -> Self {
        self.settings.normalize = normalize;
        self
    }

    /// Sets the number of threads running batches concurrently in `encode` (at least 1).
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.settings.workers = workers.max(1);
        self
    }

    /// Sets the number of sentences per forward pass in `encode` (at least 1).
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.settings.batch_size = batch_size.max(1);
        self
    }

    /// The BERT configuration.
    pub fn config(&self) -> &BertConfig {
        &self.settings.config
    }

    /// The embedding width.
    pub fn dim(&self) -> usize {
        self.settings.config.hidden_size
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &SentenceTokenizer {
        &self.settings.tokenizer
    }

    /// The device the weights live on.
    pub fn device(&self) -> B::Device {
        self.bert.embeddings.word_embeddings.weight.device()
    }

    /// Tokenizes sentences (truncated, unpadded).
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Encoded>> {
        self.settings.tokenizer.encode(texts)
    }

    /// Pads tokenized sentences into a batch on this encoder's device.
    pub fn batch(&self, encoded: &[&Encoded]) -> TokenBatch<B> {
        TokenBatch::new(encoded, self.settings.tokenizer.pad_id(), &self.device())
    }

    /// The last hidden state of a batch.
    ///
    /// # Shapes
    /// - batch: `[batch, seq]` ids -> `[batch, seq, hidden]`
    pub fn hidden_states(&self, batch: &TokenBatch<B>) -> Tensor<B, 3> {
        self.bert.forward(
            batch.input_ids.clone(),
            batch.token_type_ids.clone(),
            batch.attention_mask.clone(),
        )
    }

    /// Pooled (and, if set, normalised) sentence embeddings of a batch.
    ///
    /// # Shapes
    /// - batch: `[batch, seq]` ids -> `[batch, hidden]`
    pub fn forward(&self, batch: &TokenBatch<B>) -> Tensor<B, 2> {
        let pooled = self
            .settings
            .pooling
            .forward(self.hidden_states(batch), batch.attention_mask.clone());
        if self.settings.normalize {
            l2_normalize(pooled)
        } else {
            pooled
        }
    }

    /// Embeds sentences, in input order.
    ///
    /// Sentences are sorted by token count and run `batch_size` at a time so that padding is
    /// minimal.
    ///
    /// # Shapes
    /// - texts: `n` -> `[n, hidden]`
    pub fn encode(&self, texts: &[&str]) -> Result<Tensor<B, 2>> {
        let device = self.device();
        if texts.is_empty() {
            return Ok(Tensor::zeros([0, self.dim()], &device));
        }
        let encoded = self.tokenize(texts)?;
        let batches = length_sorted_batches(&encoded, self.settings.batch_size);
        let parts = self.map_batches(&batches, |rows| {
            let rows: Vec<&Encoded> = rows.iter().map(|&i| &encoded[i]).collect();
            self.forward(&self.batch(&rows))
        });
        Ok(unsort_rows(parts, &batches, self.dim(), &device))
    }

    /// Runs `f` on every batch, spread over the encoder's worker threads (each running its own
    /// forward passes: on CPU backends this keeps every core busy, element-wise operations
    /// included); results in batch order.
    pub fn map_batches<T: Send>(
        &self,
        batches: &[Vec<usize>],
        f: impl Fn(&[usize]) -> T + Sync,
    ) -> Vec<T> {
        let workers = self.settings.workers.clamp(1, batches.len().max(1));
        if workers == 1 {
            return batches.iter().map(|b| f(b)).collect();
        }
        let _blas = crate::threads::SingleThreadedBlas::new();
        let mut results: Vec<Option<T>> = (0..batches.len()).map(|_| None).collect();
        std::thread::scope(|scope| {
            let f = &f;
            let handles: Vec<_> = (0..workers)
                .map(|w| {
                    scope.spawn(move || {
                        (w..batches.len())
                            .step_by(workers)
                            .map(|i| (i, f(&batches[i])))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for handle in handles {
                for (i, t) in handle.join().expect("encoder worker panicked") {
                    results[i] = Some(t);
                }
            }
        });
        results
            .into_iter()
            .map(|r| r.expect("every batch ran"))
            .collect()
    }

    /// Embeds sentences into plain vectors, in input order.
    pub fn encode_vec(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let dim = self.dim();
        let values = self
            .encode(texts)?
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| EncoderError::InvalidArgument(format!("{e:?}")))?;
        Ok(values.chunks(dim).map(<[f32]>::to_vec).collect())
    }

    /// Writes a Hugging Face / sentence-transformers directory: `config.json`,
    /// `model.safetensors` (Hugging Face keys), the tokenizer files, `modules.json`,
    /// `1_Pooling/config.json` and `sentence_bert_config.json`. Each file is written atomically.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        let mkdir = |path: PathBuf| {
            std::fs::create_dir_all(&path).map_err(|source| EncoderError::Io { path, source })
        };
        mkdir(dir.to_path_buf())?;
        mkdir(dir.join("1_Pooling"))?;
        let settings = &self.settings;
        let json = |value: serde_json::Value| {
            let mut s = serde_json::to_string_pretty(&value).expect("JSON value");
            s.push('\n');
            s.into_bytes()
        };
        let tensors = module_tensors(&self.bert, bert_hf_key)?;
        write_atomic(&dir.join("model.safetensors"), &serialize_tensors(&tensors))?;
        write_atomic(
            &dir.join("config.json"),
            &json(settings.config.to_hf_json()),
        )?;
        for (name, bytes) in settings.tokenizer_files.iter() {
            write_atomic(&dir.join(name), bytes)?;
        }
        if !settings
            .tokenizer_files
            .iter()
            .any(|(name, _)| name == "tokenizer.json")
        {
            // Built in memory: serialise the tokenizer itself.
            let json = settings
                .tokenizer
                .inner()
                .to_string(true)
                .map_err(|e| EncoderError::Tokenize(e.to_string()))?;
            write_atomic(&dir.join("tokenizer.json"), json.as_bytes())?;
        }
        let pooling = PoolingConfig::new(settings.pooling, self.dim());
        write_atomic(
            &dir.join("1_Pooling/config.json"),
            &json(serde_json::to_value(pooling).expect("pooling")),
        )?;
        write_atomic(
            &dir.join("sentence_bert_config.json"),
            &json(serde_json::json!({
                "max_seq_length": settings.tokenizer.max_seq_length(),
                "do_lower_case": false
            })),
        )?;
        let mut modules = vec![
            serde_json::json!({"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}),
            serde_json::json!({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}),
        ];
        if settings.normalize {
            mkdir(dir.join("2_Normalize"))?;
            modules.push(serde_json::json!({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}));
        }
        write_atomic(
            &dir.join("modules.json"),
            &json(serde_json::Value::Array(modules)),
        )?;
        Ok(())
    }
}
