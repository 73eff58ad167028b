//! Tokenization with `tokenizers`, overriding `tokenizer.json`'s own truncation and padding the
//! way sentence-transformers does: truncate at `max_seq_length` (special tokens included), pad to
//! the longest sentence of each batch.

use std::path::Path;
use std::sync::Arc;

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{EncoderError, Result};

/// One tokenized sentence, unpadded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids, `[CLS] ... [SEP]`.
    pub ids: Vec<u32>,
    /// Segment ids (all 0 for a single sentence).
    pub type_ids: Vec<u32>,
}

impl Encoded {
    /// The number of tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when there are no tokens at all.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// A WordPiece tokenizer set up for sentence embedding.
#[derive(Debug, Clone)]
pub struct SentenceTokenizer {
    tokenizer: Tokenizer,
    max_seq_length: usize,
    pad_id: u32,
}

impl SentenceTokenizer {
    /// Loads `tokenizer.json`, truncating at `max_seq_length` tokens and padding nothing.
    pub fn from_file(path: &Path, max_seq_length: usize, pad_id: u32) -> Result<Self> {
        if !path.is_file() {
            return Err(EncoderError::MissingFile {
                path: path.to_path_buf(),
            });
        }
        let tokenizer = Tokenizer::from_file(path).map_err(|e| EncoderError::Tokenizer {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::new(tokenizer, max_seq_length, pad_id).map_err(|e| match e {
            EncoderError::Tokenize(message) => EncoderError::Tokenizer {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Wraps a tokenizer, replacing its truncation and padding settings.
    pub fn new(mut tokenizer: Tokenizer, max_seq_length: usize, pad_id: u32) -> Result<Self> {
        if max_seq_length < 2 {
            return Err(EncoderError::InvalidArgument(format!(
                "max_seq_length must leave room for [CLS] and [SEP], got {max_seq_length}"
            )));
        }
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_seq_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| EncoderError::Tokenize(e.to_string()))?;
        tokenizer.with_padding(None);
        Ok(Self {
            tokenizer,
            max_seq_length,
            pad_id,
        })
    }

    /// The truncation length, special tokens included.
    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// The id used for padding.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Tokenizes sentences (in parallel), adding `[CLS]`/`[SEP]` and truncating.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<Encoded>> {
        Ok(self
            .encode_checked(texts)?
            .into_iter()
            .map(|(e, _)| e)
            .collect())
    }

    /// Like [`Self::encode`], with each sentence's flag "was truncated" (it had more than
    /// `max_seq_length` tokens).
    pub fn encode_checked(&self, texts: &[&str]) -> Result<Vec<(Encoded, bool)>> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| EncoderError::Tokenize(e.to_string()))?;
        Ok(encodings
            .into_iter()
            .map(|e| {
                let encoded = Encoded {
                    ids: e.get_ids().to_vec(),
                    type_ids: e.get_type_ids().to_vec(),
                };
                (encoded, !e.get_overflowing().is_empty())
            })
            .collect())
    }
}

/// Row indices ordered by decreasing token count (ties keep input order), cut into batches of
/// `size`: sorting by length keeps padding minimal.
pub fn length_sorted_batches(encoded: &[Encoded], size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..encoded.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(encoded[i].len()));
    order.chunks(size.max(1)).map(<[usize]>::to_vec).collect()
}

/// Row indices ordered by decreasing token count, cut into batches of at most `max_tokens`
/// padded tokens (rows times the batch's longest row) and `max_rows` rows: long sentences go
/// in small batches and short ones in large ones, so that batches cost about the same and
/// padding stays minimal. A row longer than `max_tokens` forms a batch of its own.
pub fn token_budget_batches(
    encoded: &[Encoded],
    max_tokens: usize,
    max_rows: usize,
) -> Vec<Vec<usize>> {
    let mut batches: Vec<Vec<usize>> = Vec::new();
    for row in length_sorted_batches(encoded, usize::MAX)
        .into_iter()
        .flatten()
    {
        match batches.last_mut() {
            // Sorted longest first: the batch's first row is its longest.
            Some(batch)
                if batch.len() < max_rows.max(1)
                    && (batch.len() + 1) * encoded[batch[0]].len() <= max_tokens =>
            {
                batch.push(row)
            }
            _ => batches.push(vec![row]),
        }
    }
    batches
}

/// Puts rows computed batch by batch (in the order of `batches`, concatenated) back in input
/// order.
///
/// # Shapes
/// - parts: `[batch_i, width]` per batch -> `[n, width]` (`[0, width]` without batches)
pub(crate) fn unsort_rows<B: Backend>(
    parts: Vec<Tensor<B, 2>>,
    batches: &[Vec<usize>],
    width: usize,
    device: &B::Device,
) -> Tensor<B, 2> {
    let n: usize = batches.iter().map(Vec::len).sum();
    if parts.is_empty() {
        return Tensor::zeros([0, width], device);
    }
    let mut inverse = vec![0i64; n];
    for (position, &row) in batches.iter().flatten().enumerate() {
        inverse[row] = position as i64;
    }
    let index = Tensor::<B, 1, Int>::from_data(TensorData::new(inverse, [n]), device);
    Tensor::cat(parts, 0).select(0, index)
}

/// A padded batch of token ids on a device, and the same tokens packed where the encoder runs
/// packed batches.
#[derive(Debug, Clone)]
pub struct TokenBatch<B: Backend> {
    /// `[batch, seq]`
    pub input_ids: Tensor<B, 2, Int>,
    /// `[batch, seq]`
    pub token_type_ids: Tensor<B, 2, Int>,
    /// `[batch, seq]`, 1.0 for tokens and 0.0 for padding.
    pub attention_mask: Tensor<B, 2>,
    /// The unpadded length of each row.
    pub lengths: Vec<usize>,
    /// The rows one after another without padding ([`TokenBatch::packed`]).
    pub packed: Option<PackedTokens<B>>,
}

/// A batch's sentences one after another in one row, without padding.
#[derive(Debug, Clone)]
pub struct PackedTokens<B: Backend> {
    /// `[1, rows]`
    pub input_ids: Tensor<B, 2, Int>,
    /// `[1, rows]`
    pub token_type_ids: Tensor<B, 2, Int>,
    /// `[1, rows]`, each token's position in its sentence.
    pub position_ids: Tensor<B, 2, Int>,
    /// The sentences' lengths (`rows` is their sum).
    pub lengths: Arc<[usize]>,
}

impl<B: Backend> PackedTokens<B> {
    /// Packs `encoded`; `None` for no sentences or a sentence without tokens (such a batch
    /// stays padded only).
    pub fn new(encoded: &[&Encoded], device: &B::Device) -> Option<Self> {
        if encoded.is_empty() || encoded.iter().any(|e| e.is_empty()) {
            return None;
        }
        let rows: usize = encoded.iter().map(|e| e.len()).sum();
        let (mut ids, mut types, mut positions) = (
            Vec::with_capacity(rows),
            Vec::with_capacity(rows),
            Vec::with_capacity(rows),
        );
        for e in encoded {
            ids.extend(e.ids.iter().map(|&id| id as i64));
            types.extend(e.type_ids.iter().map(|&ty| ty as i64));
            positions.extend(0..e.len() as i64);
        }
        let int = |values: Vec<i64>| Tensor::from_data(TensorData::new(values, [1, rows]), device);
        Some(Self {
            input_ids: int(ids),
            token_type_ids: int(types),
            position_ids: int(positions),
            lengths: encoded.iter().map(|e| e.len()).collect(),
        })
    }
}

impl<B: Backend> TokenBatch<B> {
    /// Pads `encoded` to its longest member.
    pub fn new(encoded: &[&Encoded], pad_id: u32, device: &B::Device) -> Self {
        let batch = encoded.len();
        let seq = encoded.iter().map(|e| e.len()).max().unwrap_or(0).max(1);
        let mut ids = vec![pad_id as i64; batch * seq];
        let mut types = vec![0i64; batch * seq];
        let mut mask = vec![0f32; batch * seq];
        for (row, e) in encoded.iter().enumerate() {
            for (col, (&id, &ty)) in e.ids.iter().zip(&e.type_ids).enumerate() {
                ids[row * seq + col] = id as i64;
                types[row * seq + col] = ty as i64;
                mask[row * seq + col] = 1.0;
            }
        }
        Self {
            input_ids: Tensor::from_data(TensorData::new(ids, [batch, seq]), device),
            token_type_ids: Tensor::from_data(TensorData::new(types, [batch, seq]), device),
            attention_mask: Tensor::from_data(TensorData::new(mask, [batch, seq]), device),
            lengths: encoded.iter().map(|e| e.len()).collect(),
            packed: None,
        }
    }

    /// Pads `encoded` to its longest member, and packs it too ([`PackedTokens`]).
    pub fn packed(encoded: &[&Encoded], pad_id: u32, device: &B::Device) -> Self {
        Self {
            packed: PackedTokens::new(encoded, device),
            ..Self::new(encoded, pad_id, device)
        }
    }

    /// The number of rows.
    pub fn len(&self) -> usize {
        self.lengths.len()
    }

    /// True for a batch without rows.
    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }
}
