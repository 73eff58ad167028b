//! Task heads: from a sentence embedding to class logits, generic over burn backends.

mod head;

pub use head::{ClassificationHead, ClassificationHeadConfig, HeadActivation};
