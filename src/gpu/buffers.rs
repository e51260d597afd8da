//! Typed storage buffers: upload, NaN-poisoning, and readback through a
//! reusable staging buffer.

use std::marker::PhantomData;
use std::sync::Mutex;

use bytemuck::Pod;

use crate::error::{Error, Result};
use crate::gpu::context::GpuContext;

/// A storage buffer holding `len` elements of `T`, with a name used in errors.
#[derive(Debug)]
pub struct GpuBuffer<T: Pod> {
    pub buffer: wgpu::Buffer,
    len: usize,
    name: String,
    _marker: PhantomData<T>,
}

const STORAGE_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

impl<T: Pod> GpuBuffer<T> {
    fn check_size(ctx: &GpuContext, name: &str, len: usize) -> Result<u64> {
        let bytes = (len.max(1) * std::mem::size_of::<T>()) as u64;
        let limit = ctx.max_binding_bytes().min(ctx.limits.max_buffer_size);
        if bytes > limit {
            return Err(Error::AdapterLimit {
                adapter: ctx.adapter.describe(),
                what: format!("a buffer of {bytes} bytes for tensor '{name}' (max_storage_buffer_binding_size)"),
                needed: bytes,
                available: limit,
            });
        }
        // Storage bindings must be a multiple of 4 bytes.
        Ok(bytes.next_multiple_of(4))
    }

    /// A zero-filled buffer of `len` elements.
    pub fn zeros(ctx: &GpuContext, name: &str, len: usize) -> Result<Self> {
        let size = Self::check_size(ctx, name, len)?;
        let buffer = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(name),
            size,
            usage: STORAGE_USAGE,
            mapped_at_creation: false,
        });
        Ok(GpuBuffer {
            buffer,
            len,
            name: name.to_string(),
            _marker: PhantomData,
        })
    }

    /// A zero-filled buffer of `len` elements that kernels may also bind as
    /// a uniform block (`array<vec4<f32>, ⌈len / 4⌉>`): its size is padded to
    /// 16 bytes.
    pub fn zeros_uniform(ctx: &GpuContext, name: &str, len: usize) -> Result<Self> {
        let size = Self::check_size(ctx, name, len)?.next_multiple_of(16);
        let buffer = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(name),
            size,
            usage: STORAGE_USAGE | wgpu::BufferUsages::UNIFORM,
            mapped_at_creation: false,
        });
        Ok(GpuBuffer {
            buffer,
            len,
            name: name.to_string(),
            _marker: PhantomData,
        })
    }

    /// A buffer holding a copy of `data`.
    pub fn from_slice(ctx: &GpuContext, name: &str, data: &[T]) -> Result<Self> {
        let out = Self::zeros(ctx, name, data.len())?;
        out.write(ctx, data)?;
        Ok(out)
    }

    /// Overwrites the whole buffer with `data` (queued; ordered before later submits).
    pub fn write(&self, ctx: &GpuContext, data: &[T]) -> Result<()> {
        if data.len() != self.len {
            return Err(Error::shape("upload", &self.name, self.len, data.len()));
        }
        if !data.is_empty() {
            ctx.queue
                .write_buffer(&self.buffer, 0, bytemuck::cast_slice(data));
        }
        Ok(())
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Fails with a [`Error::ShapeMismatch`] naming this tensor unless it has `expected` elements.
    pub fn expect_len(&self, op: &str, expected: usize) -> Result<()> {
        if self.len != expected {
            return Err(Error::shape(op, &self.name, expected, self.len));
        }
        Ok(())
    }

    pub fn binding(&self) -> wgpu::BindingResource<'_> {
        self.buffer.as_entire_binding()
    }

    /// Copies the buffer back to the host (waits for the device).
    pub fn read(&self, ctx: &GpuContext) -> Result<Vec<T>> {
        let mut out = vec![T::zeroed(); self.len];
        read_into(ctx, &self.buffer, bytemuck::cast_slice_mut(&mut out))?;
        Ok(out)
    }
}

impl GpuBuffer<f32> {
    /// Fills the buffer with NaN so that any element a kernel fails to write shows up.
    pub fn poison(&self, ctx: &GpuContext) -> Result<()> {
        self.write(ctx, &vec![f32::NAN; self.len])
    }
}

/// A uniform buffer holding one `T`.
#[derive(Debug)]
pub struct UniformBuffer<T: Pod> {
    pub buffer: wgpu::Buffer,
    _marker: PhantomData<T>,
}

impl<T: Pod> UniformBuffer<T> {
    pub fn new(ctx: &GpuContext, name: &str, value: &T) -> Self {
        let buffer = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(name),
            size: (std::mem::size_of::<T>() as u64).next_multiple_of(16),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let out = UniformBuffer {
            buffer,
            _marker: PhantomData,
        };
        out.write(ctx, value);
        out
    }

    pub fn write(&self, ctx: &GpuContext, value: &T) {
        ctx.queue
            .write_buffer(&self.buffer, 0, bytemuck::bytes_of(value));
    }

    pub fn binding(&self) -> wgpu::BindingResource<'_> {
        self.buffer.as_entire_binding()
    }
}

/// The staging buffer reused by every readback of a context (grown as needed).
pub(crate) struct Staging {
    buffer: Mutex<Option<wgpu::Buffer>>,
}

impl Staging {
    pub(crate) fn new() -> Self {
        Staging {
            buffer: Mutex::new(None),
        }
    }
}

/// Copies the first `out.len()` bytes of `source` into `out`, through the
/// context's staging buffer, and waits for the device.
pub fn read_into(ctx: &GpuContext, source: &wgpu::Buffer, out: &mut [u8]) -> Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let bytes = (out.len() as u64).next_multiple_of(4);
    let mut guard = ctx.staging().buffer.lock().expect("staging buffer");
    if guard.as_ref().is_none_or(|b| b.size() < bytes) {
        *guard = Some(ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback staging"),
            size: bytes.next_power_of_two(),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        }));
    }
    let staging = guard.as_ref().expect("staging buffer just created");
    let mut encoder = ctx
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("readback"),
        });
    encoder.copy_buffer_to_buffer(source, 0, staging, 0, bytes);
    ctx.submit_commands(encoder.finish());
    let bytes_read = map_read(ctx, staging, bytes)?;
    out.copy_from_slice(&bytes_read[..out.len()]);
    Ok(())
}

/// Maps the first `bytes` of a MAP_READ buffer once submitted work is done,
/// waits for the device, copies them out and unmaps.
fn map_read(ctx: &GpuContext, buffer: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
    let slice = buffer.slice(0..bytes);
    let (sender, receiver) = std::sync::mpsc::channel();
    slice.map_async(wgpu::MapMode::Read, move |result| {
        let _ = sender.send(result);
    });
    ctx.wait()?;
    let gpu_error = |reason: String| Error::Gpu {
        op: "readback".into(),
        reason,
    };
    receiver
        .recv()
        .map_err(|e| gpu_error(e.to_string()))?
        .map_err(|e| gpu_error(e.to_string()))?;
    let out = slice
        .get_mapped_range()
        .map_err(|e| gpu_error(e.to_string()))?
        .to_vec();
    buffer.unmap();
    Ok(out)
}

/// A host-mappable buffer that copies are recorded into inside a larger
/// command buffer, so a whole step or update needs one submit and one wait.
#[derive(Debug)]
pub struct Readback {
    buffer: wgpu::Buffer,
}

impl Readback {
    pub fn new(ctx: &GpuContext, label: &str, bytes: u64) -> Self {
        Readback {
            buffer: ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes.max(4).next_multiple_of(4),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
        }
    }

    /// Records a copy of all of `source` to byte `offset` of this buffer.
    pub fn record_copy<T: Pod>(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        source: &GpuBuffer<T>,
        offset: u64,
    ) {
        let bytes = (source.len() * std::mem::size_of::<T>()) as u64;
        encoder.copy_buffer_to_buffer(&source.buffer, 0, &self.buffer, offset, bytes);
    }

    /// Maps the buffer after the copies were submitted, waits, and returns its bytes.
    pub fn read_bytes(&self, ctx: &GpuContext) -> Result<Vec<u8>> {
        map_read(ctx, &self.buffer, self.buffer.size())
    }
}

/// `len` elements of `T` from byte `offset` of `bytes` (no alignment needed).
pub fn decode<T: Pod>(bytes: &[u8], offset: usize, len: usize) -> Vec<T> {
    bytemuck::pod_collect_to_vec(&bytes[offset..offset + len * std::mem::size_of::<T>()])
}
