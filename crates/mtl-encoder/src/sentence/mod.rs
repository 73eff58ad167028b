//! `SentenceEncoder`: a BERT model with its tokenizer and pooling, loaded from a Hugging Face /
//! sentence-transformers directory, turning sentences into embeddings.

use std::path::Path;
use std::sync::Arc;

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};

mod files;
mod pooling;
mod tokenize;

use crate::bert::BertModel;
use crate::config::BertConfig;
use crate::error::{EncoderError, Result};
use crate::io::{bert_key_rule, load_module, Checkpoint, NamedTensors};
use crate::runtime::{default_workers, is_cpu, map_parallel};
pub use pooling::{l2_normalize, Pooling, PoolingConfig};
use tokenize::unsort_rows;
pub use tokenize::{
    length_sorted_batches, token_budget_batches, Encoded, PackedTokens, SentenceTokenizer,
    TokenBatch,
};

/// The default number of sentences per forward pass in [`SentenceEncoder::encode`].
pub const DEFAULT_BATCH_SIZE: usize = 32;

/// The default cap on padded tokens per forward pass on CPU backends (see
/// [`EncoderSettings::max_batch_tokens`]). A batch's activations grow with its tokens; past
/// about a thousand tokens the feed-forward block's (tokens x 1536 floats for MiniLM, 6 MB
/// here) no longer stay in a core's cache, and every elementwise pass goes to memory. Measured
/// with MiniLM on 2 cores (Intel Xeon, interleaved runs), batch 128 of the bench corpus: 466-491
/// sentences/s uncapped, 528-544 capped at 1024 tokens; batch 32 unchanged (512-544 either way).
pub const DEFAULT_CPU_BATCH_TOKENS: usize = 1024;

/// [`DEFAULT_CPU_BATCH_TOKENS`] on CPU backends, no cap elsewhere.
fn default_batch_tokens<B: Backend>(device: &B::Device) -> usize {
    if is_cpu::<B>(device) {
        DEFAULT_CPU_BATCH_TOKENS
    } else {
        0
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
    /// At most this many padded tokens (rows times the longest row) per forward pass in
    /// `encode`, 0 for no cap: long sentences then go fewer to a pass. The default is
    /// [`DEFAULT_CPU_BATCH_TOKENS`] on CPU backends, where larger passes only lose the cache,
    /// and 0 on accelerators, which want the largest batches.
    pub max_batch_tokens: usize,
    /// Threads running batches concurrently in `encode` (CPU backends: one per core).
    pub workers: usize,
    /// Whether batches built by [`SentenceEncoder::batch`] at inference (not on autodiff
    /// backends) also carry their sentences packed one after another without padding, which
    /// [`SentenceEncoder::pooled`] then runs: no work on padding, whatever the mix of lengths.
    /// On by default on CPU backends; accelerators, which want few large operations, run the
    /// padded batch.
    pub packed: bool,
    /// Tokenizer files (name, bytes) written back on save.
    pub tokenizer_files: Arc<Vec<(String, Vec<u8>)>>,
    /// Checkpoint tensors the model does not use but the ecosystem expects (BERT's pooler,
    /// `pooler.*`), by Hugging Face key, written back unchanged on save.
    pub passthrough: Arc<NamedTensors>,
}

/// A BERT sentence encoder: sentences in, fixed-length embeddings out.
#[derive(Module, Debug)]
pub struct SentenceEncoder<B: Backend> {
    /// The transformer.
    pub bert: BertModel<B>,
    /// Tokenizer, pooling and the rest.
    pub settings: EncoderSettings,
}

impl<B: Backend> SentenceEncoder<B> {
    /// Loads a model directory (`config.json`, `model.safetensors`, `tokenizer.json`, and where
    /// present sentence-transformers' `modules.json`, `1_Pooling/config.json`,
    /// `sentence_bert_config.json`) onto `device`.
    pub fn load(dir: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        let dir = dir.as_ref();
        files::missing_dir(dir)?;
        let config = BertConfig::from_file(&dir.join("config.json"))?;
        let (pooling, normalize, sbert_max) = files::read_sentence_transformers(dir)?;
        let max_seq_length = files::max_seq_length(dir, sbert_max, config.max_position_embeddings)?;
        // The tokenizer (JSON parsing) loads on a second thread while the weights load here.
        let tokenizer_path = dir.join("tokenizer.json");
        let pad_id = config.pad_token_id as u32;
        let (tokenizer, bert) = std::thread::scope(|scope| {
            let tokenizer = scope
                .spawn(|| SentenceTokenizer::from_file(&tokenizer_path, max_seq_length, pad_id));
            let bert = Checkpoint::open(&dir.join("model.safetensors")).and_then(|checkpoint| {
                let bert = load_module(config.init::<B>(device), &checkpoint, bert_key_rule)?;
                Ok((bert, files::passthrough_tensors(&checkpoint)?))
            });
            (tokenizer.join().expect("tokenizer loading panicked"), bert)
        });
        // A missing tokenizer is reported before a checkpoint problem.
        let tokenizer = tokenizer?;
        let (bert, passthrough) = bert?;
        let tokenizer_files = files::read_tokenizer_files(dir)?;

        Ok(Self {
            bert,
            settings: EncoderSettings {
                config,
                tokenizer: Arc::new(tokenizer),
                pooling: pooling.unwrap_or(Pooling::Mean),
                normalize: normalize.unwrap_or(false),
                batch_size: DEFAULT_BATCH_SIZE,
                max_batch_tokens: default_batch_tokens::<B>(device),
                workers: default_workers::<B>(device),
                packed: is_cpu::<B>(device),
                tokenizer_files: Arc::new(tokenizer_files),
                passthrough: Arc::new(passthrough),
            },
        })
    }

    /// Builds an encoder from a model and tokenizer already in memory.
    pub fn from_parts(
        bert: BertModel<B>,
        config: BertConfig,
        tokenizer: SentenceTokenizer,
    ) -> Self {
        let device = bert.embeddings.word_embeddings.weight.device();
        let (workers, max_batch_tokens) = (
            default_workers::<B>(&device),
            default_batch_tokens::<B>(&device),
        );
        Self {
            bert,
            settings: EncoderSettings {
                config,
                tokenizer: Arc::new(tokenizer),
                pooling: Pooling::Mean,
                normalize: false,
                batch_size: DEFAULT_BATCH_SIZE,
                max_batch_tokens,
                workers,
                packed: is_cpu::<B>(&device),
                tokenizer_files: Arc::new(Vec::new()),
                passthrough: Arc::default(),
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

    /// Runs inference batches packed without padding, or padded (see
    /// [`EncoderSettings::packed`]).
    pub fn with_packed(mut self, packed: bool) -> Self {
        self.settings.packed = packed;
        self
    }

    /// Sets the cap on padded tokens per forward pass in `encode` (0: none; see
    /// [`EncoderSettings::max_batch_tokens`]).
    pub fn with_max_batch_tokens(mut self, max_batch_tokens: usize) -> Self {
        self.settings.max_batch_tokens = max_batch_tokens;
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

    /// Pads tokenized sentences into a batch on this encoder's device, and packs them too
    /// where this encoder runs packed batches ([`EncoderSettings::packed`], inference only).
    pub fn batch(&self, encoded: &[&Encoded]) -> TokenBatch<B> {
        let (pad_id, device) = (self.settings.tokenizer.pad_id(), self.device());
        if self.settings.packed && !B::ad_enabled(&device) {
            TokenBatch::packed(encoded, pad_id, &device)
        } else {
            TokenBatch::new(encoded, pad_id, &device)
        }
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

    /// Pooled sentence embeddings of a batch, before any normalisation: from its packed
    /// tokens where it has them, from the padded ones otherwise.
    ///
    /// # Shapes
    /// - batch: `[batch, seq]` ids -> `[batch, hidden]`
    pub fn pooled(&self, batch: &TokenBatch<B>) -> Tensor<B, 2> {
        let pooling = self.settings.pooling;
        match &batch.packed {
            Some(p) => pooling.forward_packed(
                self.bert.forward_packed(
                    p.input_ids.clone(),
                    p.token_type_ids.clone(),
                    p.position_ids.clone(),
                    p.lengths.clone(),
                ),
                &p.lengths,
            ),
            None => pooling.forward(self.hidden_states(batch), batch.attention_mask.clone()),
        }
    }

    /// Pooled (and, if set, normalised) sentence embeddings of a batch.
    ///
    /// # Shapes
    /// - batch: `[batch, seq]` ids -> `[batch, hidden]`
    pub fn forward(&self, batch: &TokenBatch<B>) -> Tensor<B, 2> {
        let pooled = self.pooled(batch);
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
        let encoded = self.tokenize(texts)?;
        Ok(self.encode_tokenized(&encoded, self.settings.batch_size))
    }

    /// Embeds tokenized sentences, in input order, in length-sorted batches of `batch_size`
    /// on the encoder's workers (see [`Self::map_sorted`]).
    ///
    /// # Shapes
    /// - encoded: `n` -> `[n, hidden]`
    pub fn encode_tokenized(&self, encoded: &[Encoded], batch_size: usize) -> Tensor<B, 2> {
        self.map_sorted(encoded, batch_size, self.dim(), |batch| self.forward(batch))
    }

    /// `f` on the tokenized sentences cut into batches by length ([`Self::sorted_batches`]:
    /// longest first, so that padding is minimal), the batches spread over the
    /// encoder's workers (on CPU backends one per core, each running its own forward passes);
    /// the rows of the results put back in input order.
    ///
    /// # Shapes
    /// - encoded: `n` sentences; `f`: batch `[b, seq]` -> `[b, width]`; result `[n, width]`
    pub fn map_sorted(
        &self,
        encoded: &[Encoded],
        batch_size: usize,
        width: usize,
        f: impl Fn(&TokenBatch<B>) -> Tensor<B, 2> + Sync,
    ) -> Tensor<B, 2> {
        self.map_batches(encoded, &self.sorted_batches(encoded, batch_size), width, f)
    }

    /// The rows of `encoded` by length, longest first, in batches of `batch_size` rows and at
    /// most [`EncoderSettings::max_batch_tokens`] padded tokens.
    pub fn sorted_batches(&self, encoded: &[Encoded], batch_size: usize) -> Vec<Vec<usize>> {
        match self.settings.max_batch_tokens {
            0 => length_sorted_batches(encoded, batch_size),
            cap => token_budget_batches(encoded, cap, batch_size),
        }
    }

    /// `f` on the given batches of rows of `encoded` (every row in exactly one batch), spread
    /// over the encoder's workers, which take them first to last; the rows of the results put
    /// back in input order.
    ///
    /// # Shapes
    /// - encoded: `n` sentences; `f`: batch `[b, seq]` -> `[b, width]`; result `[n, width]`
    pub fn map_batches(
        &self,
        encoded: &[Encoded],
        batches: &[Vec<usize>],
        width: usize,
        f: impl Fn(&TokenBatch<B>) -> Tensor<B, 2> + Sync,
    ) -> Tensor<B, 2> {
        let parts = map_parallel(
            batches.iter().collect(),
            self.settings.workers,
            |_, rows| {
                let rows: Vec<&Encoded> = rows.iter().map(|&i| &encoded[i]).collect();
                f(&self.batch(&rows))
            },
        );
        unsort_rows(parts, batches, width, &self.device())
    }

    /// Embeds sentences into plain vectors, in input order.
    pub fn encode_vec(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let dim = self.dim();
        let values = self
            .encode(texts)?
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .expect("embeddings convert to f32");
        Ok(values.chunks(dim).map(<[f32]>::to_vec).collect())
    }

    /// Writes a Hugging Face / sentence-transformers directory: `config.json`,
    /// `model.safetensors` (Hugging Face keys), the tokenizer files, `modules.json`,
    /// `1_Pooling/config.json` and `sentence_bert_config.json`. Each file is written atomically.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        files::write_folder(self, dir.as_ref())
    }
}
