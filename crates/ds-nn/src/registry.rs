//! The list of a model's parameters, built layer by layer in groups, with each one's
//! initializer.

use ds_model::splitmix;
use ds_model::{ParamGroup, ParamSpec};

/// How a parameter starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// All zeros (biases).
    Zeros,
    /// All ones (LayerNorm gains).
    Ones,
    /// Normal with this standard deviation (GPT-2: 0.02).
    Normal(f32),
    /// Uniform in `[-bound, bound]` (PyTorch's Linear default: `1/sqrt(fan_in)`).
    Uniform(f32),
}

/// Parameters in the order layers registered them, in groups; a layer keeps the indices it
/// got and a model the group indices.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    specs: Vec<ParamSpec>,
    inits: Vec<Init>,
    groups: Vec<ParamGroup>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts group `name`: the parameters registered from now on, until the next call, belong
    /// to it. Returns its index (what the model opens scopes with).
    pub fn group(&mut self, name: impl Into<String>) -> usize {
        let at = self.specs.len();
        self.groups.push(ParamGroup::new(name, at..at));
        self.groups.len() - 1
    }

    /// Registers a parameter in the current group (a group named `params` when none was
    /// started) and returns its index.
    pub fn add(&mut self, name: impl Into<String>, shape: &[usize], init: Init) -> usize {
        if self.groups.is_empty() {
            self.group("params");
        }
        self.specs.push(ParamSpec::new(name, shape));
        self.inits.push(init);
        if let Some(g) = self.groups.last_mut() {
            g.params.end = self.specs.len();
        }
        self.specs.len() - 1
    }

    /// The groups, in registration order.
    pub fn groups(&self) -> Vec<ParamGroup> {
        self.groups.clone()
    }

    /// The parameters, in index order.
    pub fn specs(&self) -> Vec<ParamSpec> {
        self.specs.clone()
    }

    /// The number of scalar parameters.
    pub fn numel(&self) -> usize {
        self.specs.iter().map(ParamSpec::numel).sum()
    }

    /// Fills `out` with parameter `index`'s initial values, deterministic in `seed` (a
    /// [`splitmix`] stream per parameter, Box-Muller for normals).
    pub fn init(&self, index: usize, seed: u64, out: &mut [f32]) {
        let mut state = seed ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut uniform = move || {
            // (0, 1]: never 0, so the logarithm below is finite.
            ((splitmix(&mut state) >> 11) as f64 + 1.0) / (1u64 << 53) as f64
        };
        match self.inits.get(index).copied().unwrap_or(Init::Zeros) {
            Init::Zeros => out.fill(0.0),
            Init::Ones => out.fill(1.0),
            Init::Uniform(bound) => {
                for v in out.iter_mut() {
                    *v = ((uniform() * 2.0 - 1.0) * f64::from(bound)) as f32;
                }
            }
            Init::Normal(std) => {
                for v in out.iter_mut() {
                    let (u1, u2) = (uniform(), uniform());
                    let n = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                    *v = (n * f64::from(std)) as f32;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initializers_have_their_documented_statistics() {
        let mut r = Registry::new();
        let n = r.add("w", &[100, 100], Init::Normal(0.02));
        let u = r.add("u", &[10_000], Init::Uniform(0.5));
        let g1 = r.group("norm");
        let o = r.add("g", &[3], Init::Ones);
        assert_eq!(r.numel(), 20_003);
        assert_eq!(g1, 1);
        assert_eq!(
            r.groups(),
            [
                ParamGroup::new("params", 0..2),
                ParamGroup::new("norm", 2..3)
            ]
        );
        let mut w = vec![0.0; 10_000];
        r.init(n, 7, &mut w);
        let mean = w.iter().map(|&v| f64::from(v)).sum::<f64>() / 1e4;
        let var = w
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / 1e4;
        assert!(
            mean.abs() < 1e-3 && (var.sqrt() - 0.02).abs() < 1e-3,
            "{mean} {var}"
        );
        let mut again = vec![0.0; 10_000];
        r.init(n, 7, &mut again);
        assert_eq!(w, again, "deterministic in the seed");
        let mut x = vec![0.0; 10_000];
        r.init(u, 7, &mut x);
        assert!(x.iter().all(|v| v.abs() <= 0.5) && x.iter().any(|v| v.abs() > 0.45));
        let mut g = vec![0.0; 3];
        r.init(o, 1, &mut g);
        assert_eq!(g, vec![1.0; 3]);
    }
}
