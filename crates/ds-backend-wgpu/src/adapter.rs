//! Choosing the adapter: by index, by name, or the first one found.

use ds_core::{Error, Result};

/// Which adapter to open.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AdapterChoice {
    /// The first adapter wgpu lists (`DS_WGPU_ADAPTER` unset).
    #[default]
    First,
    /// The adapter at this position in the list (`DS_WGPU_ADAPTER=1`).
    Index(usize),
    /// The first adapter whose name contains this text, ignoring case
    /// (`DS_WGPU_ADAPTER=llvmpipe`).
    Name(String),
}

impl AdapterChoice {
    /// Reads `DS_WGPU_ADAPTER`: a number is an index, anything else a name.
    pub fn from_env() -> Self {
        match std::env::var("DS_WGPU_ADAPTER") {
            Ok(v) if !v.trim().is_empty() => Self::parse(v.trim()),
            _ => AdapterChoice::First,
        }
    }

    /// A number is an index, anything else a name.
    pub fn parse(v: &str) -> Self {
        v.parse()
            .map(AdapterChoice::Index)
            .unwrap_or_else(|_| AdapterChoice::Name(v.to_string()))
    }
}

/// One line per adapter: `0: llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan, Cpu)`.
pub fn describe(adapters: &[wgpu::Adapter]) -> Vec<String> {
    adapters
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let info = a.get_info();
            format!(
                "{i}: {} ({:?}, {:?})",
                info.name, info.backend, info.device_type
            )
        })
        .collect()
}

/// Every adapter wgpu finds on this machine.
pub fn list(instance: &wgpu::Instance) -> Vec<wgpu::Adapter> {
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
}

/// Picks the adapter `choice` names among `adapters`, or explains which exist.
pub(crate) fn pick(adapters: Vec<wgpu::Adapter>, choice: &AdapterChoice) -> Result<wgpu::Adapter> {
    if adapters.is_empty() {
        return Err(Error::NoDevice {
            backend: "wgpu",
            reason: "no Vulkan, Metal or DX12 adapter was found; on Linux install Mesa's Vulkan \
                     driver (Debian/Ubuntu: `apt-get install mesa-vulkan-drivers libvulkan1`) or \
                     a GPU driver"
                .into(),
        });
    }
    let found = describe(&adapters).join("; ");
    let index = match choice {
        AdapterChoice::First => Some(0),
        AdapterChoice::Index(i) => (*i < adapters.len()).then_some(*i),
        AdapterChoice::Name(n) => {
            let n = n.to_lowercase();
            adapters
                .iter()
                .position(|a| a.get_info().name.to_lowercase().contains(&n))
        }
    };
    match index.and_then(|i| adapters.into_iter().nth(i)) {
        Some(a) => Ok(a),
        None => Err(Error::NoDevice {
            backend: "wgpu",
            reason: format!(
                "no adapter matches DS_WGPU_ADAPTER={}; adapters found: {found}",
                match choice {
                    AdapterChoice::Index(i) => i.to_string(),
                    AdapterChoice::Name(n) => n.clone(),
                    AdapterChoice::First => String::new(),
                }
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_indices_and_text_is_a_name() {
        assert_eq!(AdapterChoice::parse("2"), AdapterChoice::Index(2));
        assert_eq!(
            AdapterChoice::parse("llvmpipe"),
            AdapterChoice::Name("llvmpipe".into())
        );
    }

    #[test]
    fn no_adapters_is_an_error_that_says_what_to_install() {
        let err = pick(Vec::new(), &AdapterChoice::First)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("mesa-vulkan-drivers"), "{err}");
    }
}
