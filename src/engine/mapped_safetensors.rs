//! A `VarBuilder` backend over memory-mapped safetensors files whose f32 weights, on the CPU,
//! borrow the mapping instead of being copied (see `crate::mapped_alloc`). Anything else (other
//! dtypes, conversions, other devices, a program without `MappedAware`) is copied through
//! candle's own loader (`Load` for a tensor view), as `VarBuilder::from_mmaped_safetensors` does.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::safetensors::Load;
use candle_core::{DType, Device, Error, Result, Shape, Tensor};
use candle_nn::Init;
use candle_nn::var_builder::SimpleBackend;
use memmap2::{MmapMut, MmapOptions};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::mapped_alloc::Region;

/// One mapped file: shared with the weights that borrow it, or kept here to copy from.
enum Mapping {
    Shared(Region),
    Private(MmapMut),
}

impl Mapping {
    fn bytes(&self) -> &[u8] {
        match self {
            Self::Shared(region) => region.bytes(),
            Self::Private(map) => map,
        }
    }
}

/// Where a tensor's bytes are.
struct Entry {
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Byte range within the file.
    start: usize,
    end: usize,
}

pub struct MappedSafetensors {
    files: Vec<Mapping>,
    entries: HashMap<String, Entry>,
}

impl MappedSafetensors {
    /// Maps `paths` (one file or the shards of one checkpoint).
    ///
    /// # Safety
    /// The files must not be truncated or written while the weights are in use: their pages
    /// back the tensors. Foley never writes a model file in place (downloads and installs
    /// rename finished files over the old ones, which leaves a mapping intact).
    pub unsafe fn new(paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut entries = HashMap::new();
        for (index, path) in paths.iter().enumerate() {
            let map = unsafe { map_copy(path) }?;
            let parsed = SafeTensors::deserialize(&map).map_err(|error| with_path(error, path))?;
            let base = map.as_ptr() as usize;
            for (name, view) in parsed.tensors() {
                let start = view.data().as_ptr() as usize - base;
                entries.insert(
                    name,
                    Entry {
                        file: index,
                        dtype: view.dtype(),
                        shape: view.shape().to_vec(),
                        start,
                        end: start + view.data().len(),
                    },
                );
            }
            files.push(match Region::new(map) {
                Ok(region) => Mapping::Shared(region),
                Err(map) => Mapping::Private(map),
            });
        }
        Ok(Self { files, entries })
    }

    fn load(&self, name: &str, device: &Device) -> Result<Tensor> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| Error::CannotFindTensor {
                path: name.to_string(),
            })?;
        let mapping = &self.files[entry.file];
        if let (Mapping::Shared(region), Dtype::F32, true) = (mapping, entry.dtype, device.is_cpu())
        {
            let count = (entry.end - entry.start) / size_of::<f32>();
            if let Some(values) = region.f32_vec(entry.start, count) {
                return Tensor::from_vec(values, entry.shape.as_slice(), device);
            }
        }
        let bytes = &mapping.bytes()[entry.start..entry.end];
        TensorView::new(entry.dtype, entry.shape.clone(), bytes)
            .map_err(|error| Error::Msg(format!("tensor {name}: {error}")))?
            .load(device)
    }
}

/// Maps `path` copy-on-write: pages are the page cache's until written, and a write (which
/// Foley never makes to a weight) would copy the page rather than fault.
unsafe fn map_copy(path: &Path) -> Result<MmapMut> {
    let file = File::open(path).map_err(|error| with_path(error, path))?;
    unsafe { MmapOptions::new().map_copy(&file) }.map_err(|error| with_path(error, path))
}

fn with_path(error: impl std::fmt::Display, path: &Path) -> Error {
    Error::Msg(format!("{}: {error}", path.display()))
}

impl SimpleBackend for MappedSafetensors {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _: Init,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let tensor = self.get_unchecked(name, dtype, device)?;
        if tensor.shape() != &shape {
            return Err(Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: shape,
                got: tensor.shape().clone(),
            });
        }
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        self.load(name, device)?.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }
}
