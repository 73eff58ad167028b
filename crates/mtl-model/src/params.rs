//! What a parameter of a [`MultiTaskModel`](crate::MultiTaskModel) is, from its path: the one
//! place where `encoder.bert.…` and `heads.N.…` paths are parsed (freezing policies and the
//! trainer's learning-rate groups both ask here).

/// The part of a [`MultiTaskModel`](crate::MultiTaskModel) a parameter belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamRole {
    /// `encoder.bert.embeddings.…`
    Embeddings,
    /// `encoder.bert.encoder.layer.N.…`: encoder layer `N` (0 is the bottom).
    Layer(usize),
    /// Any other parameter under `encoder.bert.`.
    OtherBert,
    /// `heads.N.…`: the head of task `N`.
    Head(usize),
    /// Anything else.
    Other,
}

impl ParamRole {
    /// The role of the parameter at `path`, a path in a `MultiTaskModel` (module names joined
    /// by `.`, as burn's module visitors enter them).
    pub fn of(path: &str) -> ParamRole {
        if let Some(rest) = path.strip_prefix("heads.") {
            return match leading_index(rest) {
                Some(i) => ParamRole::Head(i),
                None => ParamRole::Other,
            };
        }
        let Some(bert) = path.strip_prefix("encoder.bert.") else {
            return ParamRole::Other;
        };
        if bert.starts_with("embeddings.") {
            return ParamRole::Embeddings;
        }
        match bert.strip_prefix("encoder.layer.").and_then(leading_index) {
            Some(i) => ParamRole::Layer(i),
            None => ParamRole::OtherBert,
        }
    }

    /// Whether the parameter belongs to the BERT encoder (embeddings, layers or other).
    pub fn is_encoder(self) -> bool {
        matches!(
            self,
            ParamRole::Embeddings | ParamRole::Layer(_) | ParamRole::OtherBert
        )
    }
}

/// The number before the first `.` of `rest`.
fn leading_index(rest: &str) -> Option<usize> {
    rest.split('.').next().and_then(|i| i.parse::<usize>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_of_model_paths() {
        let role = ParamRole::of;
        assert_eq!(
            role("encoder.bert.embeddings.word_embeddings.weight"),
            ParamRole::Embeddings
        );
        assert_eq!(
            role("encoder.bert.encoder.layer.3.output.dense.weight"),
            ParamRole::Layer(3)
        );
        assert_eq!(
            role("encoder.bert.encoder.layer.11.attention.self.query.bias"),
            ParamRole::Layer(11)
        );
        assert_eq!(
            role("encoder.bert.pooler.dense.weight"),
            ParamRole::OtherBert
        );
        assert_eq!(role("heads.0.dense.weight"), ParamRole::Head(0));
        assert_eq!(role("heads.12.out_proj.bias"), ParamRole::Head(12));
        assert_eq!(role("heads.x.out_proj.bias"), ParamRole::Other);
        assert_eq!(role("encoder.dense.weight"), ParamRole::Other);
        assert_eq!(role("loss_weights"), ParamRole::Other);
        assert!(ParamRole::Layer(0).is_encoder() && ParamRole::OtherBert.is_encoder());
        assert!(!ParamRole::Head(0).is_encoder() && !ParamRole::Other.is_encoder());
    }
}
