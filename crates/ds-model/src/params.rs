//! Scoped read access to a model's parameters.
//!
//! A model opens a group before reading its parameters and closes it after. What opening
//! costs is the trainer's business, behind [`ParamSource`]: nothing when every rank holds the
//! parameters whole, an all-gather at ZeRO stage 3. [`Params`] keeps the scope rules the
//! same everywhere, so a model that runs at stage 0 runs unchanged at stage 3: a read outside
//! an open scope, opening a group twice or closing one that is not open are errors that name
//! the parameter and the group, at every stage.

use crate::{ParamTable, Slot};
use ds_core::kernels::View;
use ds_core::{Backend, BufferExt, Error, Result};

/// Where [`Params`] gets parameter data from; the trainer implements it.
pub trait ParamSource<B: Backend> {
    /// Makes group `group`'s parameters readable (a no-op when they always are; an
    /// all-gather at ZeRO stage 3). Called once per scope, in the model's order.
    ///
    /// # Errors
    /// Allocation and collective errors, a trainer limit exceeded.
    fn gather(&mut self, group: usize) -> Result<()>;

    /// The model is done with group `group` for now: its gathered copy may be freed.
    ///
    /// # Errors
    /// Trainer errors.
    fn release(&mut self, group: usize) -> Result<()>;

    /// Parameter `index` (of a gathered group), in the training dtype.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when its data is not there.
    fn view(&self, index: usize) -> Result<View<'_, B>>;
}

/// Parameters laid out whole in one buffer: every group is always readable.
struct Flat<'a, B: Backend> {
    buf: &'a B::Buffer,
    slots: &'a [Slot],
}

enum Source<'a, B: Backend> {
    Flat(Flat<'a, B>),
    Trainer(&'a mut dyn ParamSource<B>),
}

/// Read access to the model's parameters for one forward or backward, group scope by group
/// scope.
pub struct Params<'a, B: Backend> {
    source: Source<'a, B>,
    table: &'a ParamTable,
    open: Vec<bool>,
}

impl<'a, B: Backend> Params<'a, B> {
    /// Parameters laid out whole in `buf` at `slots`: what tools and tests that drive a model
    /// without a trainer use (scopes cost nothing but are still checked).
    pub fn flat(buf: &'a B::Buffer, slots: &'a [Slot], table: &'a ParamTable) -> Self {
        Self::with(Source::Flat(Flat { buf, slots }), table)
    }

    /// Parameters from a trainer's `source`.
    pub fn from_source(source: &'a mut dyn ParamSource<B>, table: &'a ParamTable) -> Self {
        Self::with(Source::Trainer(source), table)
    }

    fn with(source: Source<'a, B>, table: &'a ParamTable) -> Self {
        Params {
            source,
            table,
            open: vec![false; table.groups().len()],
        }
    }

    fn group_name(&self, group: usize) -> &str {
        self.table.groups()[group].name.as_str()
    }

    fn check_group(&self, op: &'static str, group: usize) -> Result<()> {
        if group >= self.open.len() {
            return Err(Error::invalid(
                op,
                "group",
                format!("{group} is past the model's {} groups", self.open.len()),
            ));
        }
        Ok(())
    }

    /// Opens group `group`'s scope: its parameters are readable until [`Params::close`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown group or one already open; the trainer's
    /// gather errors.
    pub fn open(&mut self, group: usize) -> Result<()> {
        self.check_group("Params::open", group)?;
        if self.open[group] {
            return Err(Error::invalid(
                "Params::open",
                "group",
                format!("group `{}` is already open", self.group_name(group)),
            ));
        }
        if let Source::Trainer(s) = &mut self.source {
            s.gather(group)?;
        }
        self.open[group] = true;
        Ok(())
    }

    /// Closes group `group`'s scope.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown group or one not open; the trainer's errors.
    pub fn close(&mut self, group: usize) -> Result<()> {
        self.check_group("Params::close", group)?;
        if !self.open[group] {
            return Err(Error::invalid(
                "Params::close",
                "group",
                format!("group `{}` is not open", self.group_name(group)),
            ));
        }
        self.open[group] = false;
        if let Source::Trainer(s) = &mut self.source {
            s.release(group)?;
        }
        Ok(())
    }

    /// Runs `f` inside group `group`'s scope: opens it, runs `f`, and closes it again (also
    /// when `f` fails, returning `f`'s error).
    ///
    /// # Errors
    /// As [`Params::open`], `f` and [`Params::close`].
    pub fn scoped<T>(
        &mut self,
        group: usize,
        f: impl FnOnce(&Params<'a, B>) -> Result<T>,
    ) -> Result<T> {
        self.open(group)?;
        let out = f(self);
        let closed = self.close(group);
        let out = out?;
        closed?;
        Ok(out)
    }

    /// A view of parameter `index` (in the training dtype); its group must be open.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an index past the parameters, or a parameter whose
    /// group is not open (naming both).
    pub fn get(&self, index: usize) -> Result<View<'_, B>> {
        let Some(group) = self.table.group_of(index) else {
            return Err(Error::invalid(
                "Params::get",
                "index",
                format!(
                    "{index} is past the {} parameters",
                    self.table.specs().len()
                ),
            ));
        };
        if !self.open[group] {
            return Err(Error::invalid(
                "Params::get",
                "index",
                format!(
                    "parameter `{}` was read outside its group's scope: open group `{}` (Params::open) before \
                     reading it and close it after",
                    self.table.specs()[index].name,
                    self.group_name(group)
                ),
            ));
        }
        match &self.source {
            Source::Flat(f) => {
                let s = f.slots.get(index).ok_or_else(|| {
                    Error::invalid("Params::get", "index", "no slot for this parameter")
                })?;
                Ok(f.buf.range(s.offset..s.offset + s.len))
            }
            Source::Trainer(s) => s.view(index),
        }
    }

    /// Fails naming the first group still open (what a trainer checks after forward and
    /// backward: a scope left open would keep its gathered parameters forever).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the open group.
    pub fn check_all_closed(&self, op: &'static str) -> Result<()> {
        match self.open.iter().position(|&o| o) {
            Some(g) => Err(Error::invalid(
                op,
                "params",
                format!(
                    "group `{}` was left open: close every scope it opens",
                    self.group_name(g)
                ),
            )),
            None => Ok(()),
        }
    }

    /// The parameters and groups.
    pub fn table(&self) -> &ParamTable {
        self.table
    }

    /// The number of parameters.
    pub fn len(&self) -> usize {
        self.table.specs().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.table.specs().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ParamGroup, ParamSpec};
    use ds_core::Device;
    use ds_core::cpu::CpuBackend;

    fn table() -> ParamTable {
        ParamTable::new(
            vec![
                ParamSpec::new("a.w", &[2]),
                ParamSpec::new("a.b", &[1]),
                ParamSpec::new("b.w", &[3]),
            ],
            vec![ParamGroup::new("a", 0..2), ParamGroup::new("b", 2..3)],
        )
        .expect("table")
    }

    #[test]
    fn scopes_gate_every_read_and_misuse_is_named() {
        let dev = Device::new(CpuBackend::with_threads(1).expect("backend"));
        let buf = dev
            .alloc_from(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0])
            .expect("buf");
        let table = table();
        let slots = Slot::packed(table.specs());
        let mut p = Params::<CpuBackend>::flat(&buf, &slots, &table);
        let err = |e: Error| e.to_string();
        assert!(
            err(p.get(2).expect_err("closed"))
                .contains("parameter `b.w` was read outside its group's scope: open group `b`")
        );
        p.open(1).expect("open");
        assert_eq!(
            dev.to_vec::<f32>(p.get(2).expect("open")).expect("read"),
            [4.0, 5.0, 6.0]
        );
        assert!(err(p.get(0).expect_err("a is closed")).contains("group `a`"));
        assert!(err(p.open(1).expect_err("twice")).contains("group `b` is already open"));
        assert!(
            err(p.check_all_closed("forward").expect_err("open"))
                .contains("group `b` was left open")
        );
        p.close(1).expect("close");
        assert!(err(p.close(1).expect_err("not open")).contains("group `b` is not open"));
        assert!(err(p.open(7).expect_err("unknown")).contains("past the model's 2 groups"));
        assert!(err(p.get(9).expect_err("unknown")).contains("past the 3 parameters"));
        // `scoped` closes again, also when the body fails.
        let failed = p.scoped(0, |q| q.get(2).map(|_| ()));
        assert!(failed.is_err());
        p.check_all_closed("forward")
            .expect("closed after a failing scope");
        let sum = p
            .scoped(0, |q| Ok(dev.to_vec::<f32>(q.get(1)?)?[0]))
            .expect("scoped");
        assert_eq!(sum, 3.0);
    }
}
