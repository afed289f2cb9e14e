//! What a model's parameters are: names, shapes, groups, and where each lives in a flat
//! buffer.

use ds_core::{Error, Result};
use std::ops::Range;

/// One parameter tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSpec {
    /// A unique, stable name (checkpoints and consolidated weights use it).
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
}

impl ParamSpec {
    /// A parameter named `name` of `shape`.
    pub fn new(name: impl Into<String>, shape: &[usize]) -> Self {
        ParamSpec {
            name: name.into(),
            shape: shape.to_vec(),
        }
    }

    /// Its number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Consecutive parameters a model uses together (a layer, a block): the unit of a scope, and
/// what ZeRO stage 3 gathers at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamGroup {
    /// A unique name for errors and traces (e.g. `h.3`).
    pub name: String,
    /// The parameter indices in it.
    pub params: Range<usize>,
}

impl ParamGroup {
    /// Group `name` of parameters `params`.
    pub fn new(name: impl Into<String>, params: Range<usize>) -> Self {
        ParamGroup {
            name: name.into(),
            params,
        }
    }
}

/// A model's parameters and groups, checked: names unique, groups consecutive, non-empty and
/// covering every parameter exactly once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamTable {
    specs: Vec<ParamSpec>,
    groups: Vec<ParamGroup>,
    group_of: Vec<usize>,
}

impl ParamTable {
    /// Checks `groups` against `specs`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the group or parameter at fault.
    pub fn new(specs: Vec<ParamSpec>, groups: Vec<ParamGroup>) -> Result<Self> {
        let bad = |why: String| Err(Error::invalid("Model::groups", "groups", why));
        let mut next = 0;
        let mut group_of = Vec::with_capacity(specs.len());
        let mut names = std::collections::HashSet::new();
        for (g, group) in groups.iter().enumerate() {
            if !names.insert(group.name.as_str()) {
                return bad(format!("two groups are named `{}`", group.name));
            }
            if group.params.start != next || group.params.is_empty() {
                return bad(format!(
                    "group `{}` holds parameters {:?}; groups must be non-empty and follow each other from parameter 0 \
                     (the next group starts at {next})",
                    group.name, group.params
                ));
            }
            next = group.params.end;
            group_of.extend(std::iter::repeat_n(g, group.params.len()));
        }
        if next != specs.len() {
            let name = specs.get(next).map_or("?", |s| s.name.as_str());
            return bad(format!(
                "the groups cover {next} of the {} parameters; `{name}` is in none",
                specs.len()
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for s in &specs {
            if !seen.insert(s.name.as_str()) {
                return Err(Error::invalid(
                    "Model::parameters",
                    "name",
                    format!(
                        "two model parameters are named `{}`: names identify parameters in checkpoints and must be unique",
                        s.name
                    ),
                ));
            }
        }
        Ok(ParamTable {
            specs,
            groups,
            group_of,
        })
    }

    /// The table of `model`'s parameters and groups.
    ///
    /// # Errors
    /// As [`ParamTable::new`].
    pub fn of<B: ds_core::Backend, M: crate::Model<B>>(model: &M) -> Result<Self> {
        Self::new(model.parameters(), model.groups())
    }

    /// The parameters, in index order.
    pub fn specs(&self) -> &[ParamSpec] {
        &self.specs
    }

    /// The groups, in use order.
    pub fn groups(&self) -> &[ParamGroup] {
        &self.groups
    }

    /// The group of parameter `index` (`None` past the end).
    pub fn group_of(&self, index: usize) -> Option<usize> {
        self.group_of.get(index).copied()
    }

    /// The elements of group `group`.
    pub fn group_numel(&self, group: usize) -> usize {
        self.groups.get(group).map_or(0, |g| {
            self.specs[g.params.clone()]
                .iter()
                .map(ParamSpec::numel)
                .sum()
        })
    }

    /// The number of parameter elements (Ψ).
    pub fn numel(&self) -> usize {
        self.specs.iter().map(ParamSpec::numel).sum()
    }
}

/// Where a parameter lives in a flat parameter buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// First element.
    pub offset: usize,
    /// Number of elements.
    pub len: usize,
}

impl Slot {
    /// The parameters `specs` back to back from element 0, without a trainer's padding: the
    /// layout for tools and tests that drive a model on their own.
    pub fn packed(specs: &[ParamSpec]) -> Vec<Slot> {
        let mut offset = 0;
        specs
            .iter()
            .map(|s| {
                let slot = Slot {
                    offset,
                    len: s.numel(),
                };
                offset += s.numel();
                slot
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(n: usize) -> Vec<ParamSpec> {
        (0..n)
            .map(|i| ParamSpec::new(format!("p{i}"), &[i + 1]))
            .collect()
    }

    #[test]
    fn a_table_maps_parameters_to_groups_and_counts_them() {
        let t = ParamTable::new(
            specs(4),
            vec![ParamGroup::new("a", 0..1), ParamGroup::new("b", 1..4)],
        )
        .expect("valid");
        assert_eq!(t.group_of(0), Some(0));
        assert_eq!(t.group_of(3), Some(1));
        assert_eq!(t.group_of(4), None);
        assert_eq!(t.group_numel(1), 2 + 3 + 4);
        assert_eq!(t.numel(), 10);
    }

    #[test]
    fn bad_groups_are_named() {
        let err = |groups: Vec<ParamGroup>| {
            ParamTable::new(specs(3), groups)
                .expect_err("invalid")
                .to_string()
        };
        assert!(err(vec![ParamGroup::new("a", 0..2)]).contains("`p2` is in none"));
        assert!(
            err(vec![ParamGroup::new("a", 0..1), ParamGroup::new("b", 2..3)])
                .contains("group `b` holds parameters 2..3")
        );
        assert!(
            err(vec![ParamGroup::new("a", 0..0), ParamGroup::new("b", 0..3)]).contains("group `a`")
        );
        assert!(
            err(vec![ParamGroup::new("a", 0..1), ParamGroup::new("a", 1..3)])
                .contains("two groups are named `a`")
        );
        let dup = vec![ParamSpec::new("w", &[1]), ParamSpec::new("w", &[2])];
        let e = ParamTable::new(dup, vec![ParamGroup::new("g", 0..2)]).expect_err("dup");
        assert!(e.to_string().contains("two model parameters are named `w`"));
    }
}
