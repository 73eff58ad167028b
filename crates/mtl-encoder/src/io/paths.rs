//! Parameter paths: visiting or mapping a module's float parameters together with their dotted
//! field paths (`encoder.layer.3.output.dense.weight`), written once for every loader, saver,
//! freezer and optimizer that needs them.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::{backend::Backend, Tensor};

/// Reads each float parameter with its path.
pub trait PathVisitor<B: Backend> {
    fn visit<const D: usize>(&mut self, path: &str, param: &Param<Tensor<B, D>>);
}

/// Replaces each float parameter, knowing its path.
pub trait PathMapper<B: Backend> {
    fn map<const D: usize>(
        &mut self,
        path: &str,
        param: Param<Tensor<B, D>>,
    ) -> Param<Tensor<B, D>>;
}

/// burn's visitor and mapper callbacks with the path kept as modules are entered and left.
struct Tracked<'a, T> {
    path: Vec<String>,
    inner: &'a mut T,
}

impl<B: Backend, V: PathVisitor<B>> ModuleVisitor<B> for Tracked<'_, V> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.inner.visit(&self.path.join("."), param);
    }
}

impl<B: Backend, P: PathMapper<B>> ModuleMapper<B> for Tracked<'_, P> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        self.inner.map(&self.path.join("."), param)
    }
}

/// Calls `visitor` on every float parameter of `module`, with its path.
pub fn visit_paths<B: Backend, M: Module<B>, V: PathVisitor<B>>(module: &M, visitor: &mut V) {
    module.visit(&mut Tracked {
        path: Vec::new(),
        inner: visitor,
    });
}

/// Maps every float parameter of `module` through `mapper`, with its path.
pub fn map_paths<B: Backend, M: Module<B>, P: PathMapper<B>>(module: M, mapper: &mut P) -> M {
    module.map(&mut Tracked {
        path: Vec::new(),
        inner: mapper,
    })
}

/// The parameter ids of a module, with their paths (for freezing and per-group learning rates).
pub fn param_paths<B: Backend, M: Module<B>>(module: &M) -> Vec<(String, ParamId)> {
    struct Paths(Vec<(String, ParamId)>);
    impl<B: Backend> PathVisitor<B> for Paths {
        fn visit<const D: usize>(&mut self, path: &str, param: &Param<Tensor<B, D>>) {
            self.0.push((path.to_string(), param.id));
        }
    }
    let mut paths = Paths(Vec::new());
    visit_paths(module, &mut paths);
    paths.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{LayerNorm, LinearConfig};
    use burn::backend::NdArray;

    #[derive(Module, Debug)]
    struct Net<B: Backend> {
        layers: Vec<crate::nn::Linear<B>>,
        norm: LayerNorm<B>,
    }

    #[test]
    fn paths_name_fields_and_indices() {
        let device = Default::default();
        let net = Net::<NdArray> {
            layers: vec![
                LinearConfig::new(2, 3).init(&device),
                LinearConfig::new(3, 1).init(&device),
            ],
            norm: LayerNorm::new(1, 1e-5, &device),
        };
        let paths: Vec<String> = param_paths(&net).into_iter().map(|(p, _)| p).collect();
        assert_eq!(
            paths,
            [
                "layers.0.weight",
                "layers.0.bias",
                "layers.1.weight",
                "layers.1.bias",
                "norm.gamma",
                "norm.beta"
            ]
        );
        struct Zero;
        impl<B: Backend> PathMapper<B> for Zero {
            fn map<const D: usize>(
                &mut self,
                path: &str,
                p: Param<Tensor<B, D>>,
            ) -> Param<Tensor<B, D>> {
                if path.starts_with("layers.1.") {
                    p.map(|t| t.zeros_like())
                } else {
                    p
                }
            }
        }
        let net = map_paths(net, &mut Zero);
        assert_eq!(net.layers[1].weight.val().sum().into_scalar(), 0.0);
        assert_eq!(net.norm.gamma.val().sum().into_scalar(), 1.0);
    }
}
