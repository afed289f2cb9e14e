//! Running a kernel: the cached pipeline, binding windows, parameters, and pieces.
//!
//! A binding may not span more than the adapter's storage-binding limit (128 MiB on Mesa's
//! lavapipe) and must start at a multiple of its offset alignment (256 bytes). Each view is
//! therefore bound as the aligned window that covers it, and the kernel receives the view's
//! element offset inside that window as a parameter. Kernels whose views are all indexed by the
//! same element index (elementwise, reductions, optimizer steps) run in pieces when a view is
//! larger than one binding; the others refuse such views by name.

use crate::buffer::WgpuBuffer;
use crate::context::WgpuBackend;
use crate::shader::{self, MAX_PARAM_WORDS, ParamType, Signature, Store};
use ds_core::{Error, Result, Slice, SliceMut};
use std::num::NonZeroU64;
use wgpu::util::DeviceExt;

/// One binding of a launch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bind<'a> {
    name: &'static str,
    buf: Option<&'a WgpuBuffer>,
    start: usize,
    len: usize,
    store: Store,
    write: bool,
    /// Indexed by the launch's element index, so cut with it into pieces.
    sliced: bool,
}

impl<'a> Bind<'a> {
    /// A read-only view.
    pub(crate) fn read(name: &'static str, v: &Slice<'a, WgpuBuffer>, store: Store) -> Self {
        Bind {
            name,
            buf: Some(v.buffer()),
            start: v.offset(),
            len: v.len(),
            store,
            write: false,
            sliced: true,
        }
    }

    /// A writable view.
    pub(crate) fn write(name: &'static str, v: &'a SliceMut<'_, WgpuBuffer>, store: Store) -> Self {
        Bind {
            name,
            buf: Some(v.buffer()),
            start: v.offset(),
            len: v.len(),
            store,
            write: true,
            sliced: true,
        }
    }

    /// A whole internal buffer (scratch), writable.
    pub(crate) fn scratch(name: &'static str, buf: &'a WgpuBuffer) -> Self {
        Bind {
            name,
            buf: Some(buf),
            start: 0,
            len: buf.len,
            store: Store::F32,
            write: true,
            sliced: false,
        }
    }

    /// An optional binding that is not there.
    pub(crate) fn absent(name: &'static str) -> Self {
        Bind {
            name,
            buf: None,
            start: 0,
            len: 0,
            store: Store::Absent,
            write: false,
            sliced: false,
        }
    }

    /// Not cut into pieces with the element index (read whole in every piece).
    pub(crate) fn whole(mut self) -> Self {
        self.sliced = false;
        self
    }

    /// The same binding viewed read-only (scratch read by a later pass).
    pub(crate) fn read_only(mut self) -> Self {
        self.write = false;
        self
    }
}

/// A scalar parameter.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Param {
    U(u32),
    F(f32),
    I(i32),
}

impl Param {
    fn ty(self) -> ParamType {
        match self {
            Param::U(_) => ParamType::U32,
            Param::F(_) => ParamType::F32,
            Param::I(_) => ParamType::I32,
        }
    }

    fn bits(self) -> u32 {
        match self {
            Param::U(v) => v,
            Param::F(v) => v.to_bits(),
            Param::I(v) => v as u32,
        }
    }
}

/// How many workgroups run.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Grid {
    /// `n` elements, `per_group` per workgroup; may run in pieces (`p_base()` is the first
    /// element of the piece, `p_n()` its length).
    Elements { n: usize, per_group: usize },
    /// A fixed number of workgroups (rows); `p_n()` is that number.
    Groups(usize),
    /// One kernel call per element of `n`, [`UNROLL`] calls per invocation; may run in pieces
    /// like `Elements`.
    Each(usize),
}

/// Elements each invocation of an [`Grid::Each`] kernel handles: fewer, fatter invocations
/// cost less per element on every driver measured (lavapipe most of all).
pub(crate) const UNROLL: u32 = 8;

/// One kernel launch.
#[derive(Debug)]
pub(crate) struct Launch<'a> {
    pub name: &'static str,
    pub body: &'static str,
    pub binds: Vec<Bind<'a>>,
    pub params: Vec<(&'static str, Param)>,
    pub grid: Grid,
}

/// The bound window of one view: byte offset and size, and the view's element offset in it.
struct Window {
    offset: u64,
    size: u64,
    elem: u32,
}

/// Converts an element count to the u32 WGSL indexes with.
pub(crate) fn u32_of(v: usize, op: &'static str, arg: &'static str) -> Result<u32> {
    u32::try_from(v).map_err(|_| {
        Error::invalid(
            op,
            arg,
            format!("{v} exceeds the 32-bit indices of WGSL kernels"),
        )
    })
}

impl WgpuBackend {
    fn window(&self, b: &Bind<'_>, start: usize, len: usize) -> Window {
        let es = b.store.elem_bytes() as u64;
        let start_b = start as u64 * es;
        let end_b = (start + len) as u64 * es;
        let offset = start_b / self.inner.offset_align * self.inner.offset_align;
        let size = (end_b - offset).div_ceil(4).max(1) * 4;
        Window {
            offset,
            size,
            elem: ((start_b - offset) / es) as u32,
        }
    }

    fn pipeline(&self, sig: &Signature, body: &str) -> Result<wgpu::ComputePipeline> {
        let key = sig.key();
        let mut cache = self
            .inner
            .pipelines
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(p) = cache.get(&key) {
            return Ok(p.clone());
        }
        let text = shader::module(sig, body);
        let device = &self.inner.device;
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(sig.name),
            source: wgpu::ShaderSource::Wgsl(text.into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(sig.name),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        self.check().map_err(|e| {
            self.device_error(format!("compiling WGSL kernel `{}` ({key}): {e}", sig.name))
        })?;
        cache.insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// Runs `l`, in pieces when a view exceeds one binding.
    pub(crate) fn run(&self, l: Launch<'_>) -> Result<()> {
        let (n, per_group, unroll) = match l.grid {
            Grid::Elements { n, per_group } => (n, per_group, 1),
            Grid::Each(n) => (n, UNROLL as usize * shader::WG as usize, UNROLL),
            Grid::Groups(g) => (g, 0, 1),
        };
        let sig = Signature {
            name: l.name,
            binds: l.binds.iter().map(|b| (b.name, b.store, b.write)).collect(),
            params: l.params.iter().map(|(n, p)| (*n, p.ty())).collect(),
            unroll,
        };
        if n == 0 {
            return Ok(());
        }
        let max = self.inner.max_binding;
        let fits = |piece: usize| {
            l.binds.iter().filter(|b| b.buf.is_some()).all(|b| {
                let len = if b.sliced && per_group > 0 {
                    piece
                } else {
                    b.len
                };
                self.window(b, b.start, len).size <= max
            })
        };
        let piece = if fits(n) {
            n
        } else {
            // Elements of at most 4 bytes, plus the alignment slack of the window's start.
            let words = ((max - self.inner.offset_align) / 4) as usize;
            match words.checked_div(per_group).map(|g| g * per_group) {
                Some(p) if p > 0 && fits(p) => p,
                _ => return Err(self.too_large(&l)),
            }
        };
        let pipeline = self.pipeline(&sig, l.body)?;
        let layout = pipeline.get_bind_group_layout(0);
        let mut encoder =
            self.inner
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some(l.name),
                });
        let mut base = 0;
        while base < n {
            let len = piece.min(n - base);
            let mut words = vec![0u32; MAX_PARAM_WORDS];
            let mut windows = Vec::with_capacity(l.binds.len());
            for (k, b) in l.binds.iter().enumerate() {
                let Some(buf) = b.buf else {
                    windows.push(None);
                    continue;
                };
                let (start, blen) = if b.sliced && per_group > 0 {
                    (b.start + base, len.min(b.len.saturating_sub(base)))
                } else {
                    (b.start, b.len)
                };
                let w = self.window(b, start, blen);
                words[k] = w.elem;
                windows.push(Some((buf, w)));
            }
            let nb = l.binds.len();
            words[nb] = u32_of(len, l.name, "n")?;
            words[nb + 1] = u32_of(base, l.name, "n")?;
            for (k, (_, p)) in l.params.iter().enumerate() {
                words[nb + 2 + k] = p.bits();
            }
            let uniform = self
                .inner
                .device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("ds params"),
                    contents: bytemuck_words(&words),
                    usage: wgpu::BufferUsages::UNIFORM,
                });
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: uniform.as_entire_binding(),
            }];
            for (binding, (buf, w)) in (1..).zip(windows.iter().flatten()) {
                entries.push(wgpu::BindGroupEntry {
                    binding,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: buf.raw(),
                        offset: w.offset,
                        size: NonZeroU64::new(w.size),
                    }),
                });
            }
            let group = self
                .inner
                .device
                .create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some(l.name),
                    layout: &layout,
                    entries: &entries,
                });
            let groups = if per_group > 0 {
                len.div_ceil(per_group)
            } else {
                len
            };
            let (x, y) = self.grid_2d(groups, l.name)?;
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(l.name),
                    timestamp_writes: None,
                });
                pass.set_pipeline(&pipeline);
                pass.set_bind_group(0, &group, &[]);
                pass.dispatch_workgroups(x, y, 1);
            }
            base += len;
        }
        self.inner.queue.submit([encoder.finish()]);
        self.check()
    }

    fn grid_2d(&self, groups: usize, op: &'static str) -> Result<(u32, u32)> {
        let max = self.inner.max_groups as usize;
        let x = groups.min(max);
        let y = groups.div_ceil(x);
        if y > max {
            return Err(Error::invalid(
                op,
                "n",
                format!("{groups} workgroups exceed this adapter's {max} x {max} grid"),
            ));
        }
        Ok((x as u32, y as u32))
    }

    fn too_large(&self, l: &Launch<'_>) -> Error {
        let big = l
            .binds
            .iter()
            .find(|b| {
                b.buf.is_some() && self.window(b, b.start, b.len).size > self.inner.max_binding
            })
            .map_or("a view", |b| b.name);
        Error::invalid(
            l.name,
            big,
            format!(
                "spans more than one storage binding of this adapter ({} bytes); {} does not split \
                 its operands (elementwise, reduction and optimizer kernels do)",
                self.inner.max_binding, l.name
            ),
        )
    }
}

/// The bytes of parameter words.
fn bytemuck_words(w: &[u32]) -> &[u8] {
    bytemuck::cast_slice(w)
}
