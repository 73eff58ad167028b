//! Parameter paths as burn's module visitors and mappers walk them: module names joined by `.`
//! (`encoder.bert.encoder.layer.3.output.dense.weight`). The one path builder of this crate;
//! the gradient collector and the optimizer's update both keep one.
//!
//! TODO(runtime): mtl-encoder is to provide a shared param-path visitor; switch to it on merge.

/// The path of the module being visited.
#[derive(Debug, Default)]
pub(crate) struct ParamPath {
    names: Vec<String>,
}

impl ParamPath {
    /// Called from `enter_module`.
    pub(crate) fn enter(&mut self, name: &str) {
        self.names.push(name.to_string());
    }

    /// Called from `exit_module`.
    pub(crate) fn exit(&mut self) {
        self.names.pop();
    }

    /// The current path.
    pub(crate) fn current(&self) -> String {
        self.names.join(".")
    }
}
