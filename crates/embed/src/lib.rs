//! The built-in text embedder of latentdb.
//!
//! Loads a model directory (Hugging Face layout) and embeds text in-process with candle:
//!
//! - NV-Embed (`model_type: nvembed`): a bidirectional Mistral and NVIDIA's latent-attention
//!   pooling, with task instructions ([`tasks`]);
//! - BERT sentence encoders (`model_type: bert`), by default all-MiniLM-L6-v2, fetched into the
//!   model cache by [`fetch::fetch_default`];
//! - a trainable latent-attention head ([`head::LatentHead`]) on a sentence encoder's token
//!   states; the `default` model carries an untrained one, which is exactly mean pooling;
//! - LoRA adapters on a BERT backbone's attention projections ([`lora::LoraAdapters`]), trained
//!   with the head by [`lora_train::LoraTrainer`] and merged into the weights for inference.
//!
//! Vectors are L2-normalised. [`Embedder`] is `Send + Sync` and its methods take `&self`.
//!
//! ```
//! use latentdb_embed::{EmbedOptions, Embedder, LoadOptions};
//! # fn main() -> latentdb_embed::Result<()> {
//! let dir = std::path::Path::new(concat!(
//!     env!("CARGO_MANIFEST_DIR"),
//!     "/../../tests/fixtures/nvembed-tiny"
//! ));
//! let embedder = Embedder::from_dir(dir, &LoadOptions::default())?;
//! let vectors = embedder.embed(&["Rust", "Vector databases store embeddings."], &EmbedOptions::default())?;
//! assert_eq!(vectors.len(), 2);
//! let norm: f32 = vectors[0].iter().map(|x| x * x).sum::<f32>().sqrt();
//! assert!((norm - 1.0).abs() < 1e-4);
//! # Ok(())
//! # }
//! ```

mod adapted_linear;
mod attention_train;
pub mod bench;
pub mod bert;
pub mod config;
pub mod durable;
pub mod embedder;
mod error;
pub mod fetch;
mod frozen;
mod fused_ops;
pub mod head;
pub mod head_train;
mod kernels;
pub mod latent_attention;
pub mod lora;
pub mod lora_train;
pub mod loss;
pub mod mistral;
pub mod nvembed;
mod packed_gemm;
pub mod pooling;
pub mod tasks;
pub mod tokenize;
pub mod weights;

pub use config::{ModelConfig, Pooling};
pub use durable::{create_dir_all_durably, sync_dir, write_file_atomically};
pub use embedder::{
    EmbedOptions, Embedder, Instruction, LoadOptions, ModelIdentity, TokenStates, pad_token_states,
    weights_sha256,
};
pub use error::{Error, Result};
pub use fetch::{ModelSpec, fetch_default, models_dir};
pub use head::{BackboneRef, HeadConfig, LatentHead};
pub use latentdb_types::ErrorKind;
pub use lora::{LoraAdapters, LoraConfig, LoraTarget};
