//! Conv2d, Conv1d and ConvTranspose1d layers with PyTorch's weight names.
//!
//! On the CPU in f32 a convolution runs as im2col tiles (each a bounded block of output
//! positions) multiplied by the weight matrix with `gemm`, the bias preloaded into the output.
//! A transposed convolution multiplies first and scatters the columns after, so HiFi-GAN's padded
//! upsamplers skip candle's naive padded kernel. Other devices use candle's ops.

use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Module, Result, Shape, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use super::fill::{self, Repeat};
use super::gemm::{Precision, View, matmul, matmul_kept, product, product_kept};
use super::gemm_bf16::{
    Engine, PackedLeft, PackedRight, PackedWeights, PairImage, Prepared, Taps, tap_major_weights,
};
use super::scratch::Scratch;
use super::{contiguous_f32, direct, is_cpu_f32, winograd, winograd_1d};

/// Floats an im2col tile may hold (4 MB): as fast as 32 MB tiles for the UNet and VAE and up to
/// 1.4× faster for the vocoder's 1-D convolutions, whose columns then stay in cache
/// (`cargo bench --bench kernels`); long clips never need more than this per convolution.
const TILE_FLOATS: usize = 1 << 20;

/// Output positions an im2col tile holds at least, whatever its depth: `gemm` packs the weights
/// again for every tile, and HiFi-GAN's 512-channel, 11-tap layers (5632 deep) got tiles of
/// 186 positions under `TILE_FLOATS` alone, 1.1–1.45× slower (`cargo bench --bench kernels`;
/// 1024 positions gained no more there and cost the 3-tap layers up to 20 %).
const MIN_TILE_POSITIONS: usize = 512;

/// A layer's weights packed for the kernels that keep them (the direct kernel's blocks, the
/// bf16 engines' left rows), shared by its clones. The one clone whose weights differ, the f32
/// copy a half-precision layer computes through ([`Widen`]), is made the same way every time,
/// and the half layer itself never packs, so sharing stays right.
#[derive(Clone, Default)]
struct Packing(Arc<Kept>);

#[derive(Default)]
struct Kept {
    direct: OnceLock<direct::Packed>,
    /// Over im2col's (channel, tap) inner order.
    bf16: PackedWeights<PackedLeft>,
    /// Over the tap-major order of tiles copied from channel pairs ([`tap_major_weights`]).
    bf16_tap_major: PackedWeights<PackedLeft>,
}

impl Kept {
    /// The weights (`outputs × channels × taps`) as `engine`'s left operand, which bf16
    /// products multiply with every im2col tile of the call: packed for the call, or kept by
    /// the layer once it has run a few times ([`PackedWeights`]).
    fn bf16(
        &self,
        engine: Engine,
        weight: &[f32],
        (outputs, channels, taps): (usize, usize, usize),
        tap_major: bool,
    ) -> Result<Prepared<'_, PackedLeft>> {
        let (kept, rows) = if tap_major {
            let depth = taps * channels.div_ceil(2) * 2;
            let pack = || {
                let rows = tap_major_weights(weight, outputs, channels, taps);
                PackedLeft::new(engine, &rows, View::rows(outputs, depth, depth))
            };
            (self.bf16_tap_major.get(engine, pack), (outputs, depth))
        } else {
            let depth = channels * taps;
            let pack = || PackedLeft::new(engine, weight, View::rows(outputs, depth, depth));
            (self.bf16.get(engine, pack), (outputs, depth))
        };
        if kept.dims() != rows {
            candle_core::bail!("conv2d: weights changed shape since they were packed");
        }
        Ok(kept)
    }
}

impl std::fmt::Debug for Packing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packing")
            .field("direct", &self.0.direct.get().is_some())
            .field("bf16", &self.0.bf16)
            .field("bf16_tap_major", &self.0.bf16_tap_major)
            .finish()
    }
}

#[derive(Debug, Clone, Copy)]
struct Geometry {
    stride: usize,
    padding: (usize, usize),
    dilation: (usize, usize),
}

/// `nn.Conv2d` with square stride, as the UNet and VAE use it.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Tensor,
    geometry: Geometry,
    packed: Packing,
}

impl Conv2d {
    /// The dtype of the weights, which the layer computes in.
    pub fn dtype(&self) -> DType {
        self.weight.dtype()
    }

    /// Loads `weight` (out, in, k, k) and `bias` (out) from `vb`.
    pub fn new(
        input: usize,
        output: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            weight: vb.get((output, input, kernel, kernel), "weight")?,
            bias: vb.get(output, "bias")?,
            geometry: Geometry {
                stride,
                padding: (padding, padding),
                dilation: (1, 1),
            },
            packed: Packing::default(),
        })
    }
}

impl Module for Conv2d {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if is_cpu_f32(xs) && is_cpu_f32(&self.weight) {
            let op = ConvOp {
                geometry: self.geometry,
                input_slope: None,
                packed: &self.packed.0,
            };
            return xs
                .contiguous()?
                .apply_op3_no_bwd(&self.weight, &self.bias, &op);
        }
        if half_on_cpu(xs) {
            return self.in_f32(xs, |layer, xs| layer.forward(xs));
        }
        let (padding, _) = self.geometry.padding;
        let convolved = xs.conv2d(&self.weight, padding, self.geometry.stride, 1, 1)?;
        convolved.broadcast_add(&self.bias.reshape((1, (), 1, 1))?)
    }
}

/// A convolution that widens half-precision input on the CPU: candle 0.11 has no bf16 CPU
/// convolution at all (its matmul widens, its im2col path does not), and its direct f16
/// kernels accumulate in f16. Widened, a half convolution runs in f32 and rounds its output
/// once, which is what PyTorch's CPU kernels and CUDA's half convolutions compute (they
/// accumulate in f32).
trait Widen: Clone {
    fn parameters(&mut self) -> (&mut Tensor, &mut Tensor);

    /// `forward` applied to this layer with f32 weights and to `xs` in f32, rounded back to
    /// `xs`'s dtype.
    fn in_f32(
        &self,
        xs: &Tensor,
        forward: impl FnOnce(&Self, &Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let mut layer = self.clone();
        let (weight, bias) = layer.parameters();
        *weight = weight.to_dtype(DType::F32)?;
        *bias = bias.to_dtype(DType::F32)?;
        forward(&layer, &xs.to_dtype(DType::F32)?)?.to_dtype(xs.dtype())
    }
}

/// Whether a convolution of `xs` takes the widened path ([`Widen`]).
fn half_on_cpu(xs: &Tensor) -> bool {
    xs.device().is_cpu() && matches!(xs.dtype(), DType::BF16 | DType::F16)
}

impl Widen for Conv2d {
    fn parameters(&mut self) -> (&mut Tensor, &mut Tensor) {
        (&mut self.weight, &mut self.bias)
    }
}

impl Widen for Conv1d {
    fn parameters(&mut self) -> (&mut Tensor, &mut Tensor) {
        (&mut self.weight, &mut self.bias)
    }
}

impl Widen for ConvTranspose1d {
    fn parameters(&mut self) -> (&mut Tensor, &mut Tensor) {
        (&mut self.weight, &mut self.bias)
    }
}

/// `nn.Conv1d` with stride 1 and symmetric padding, as HiFi-GAN uses it.
#[derive(Debug, Clone)]
pub struct Conv1d {
    weight: Tensor,
    bias: Tensor,
    kernel: usize,
    padding: usize,
    dilation: usize,
    packed: Packing,
}

impl Conv1d {
    /// The dtype of the weights, which the layer computes in.
    pub fn dtype(&self) -> DType {
        self.weight.dtype()
    }

    pub fn new(
        input: usize,
        output: usize,
        kernel: usize,
        padding: usize,
        dilation: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            weight: vb.get((output, input, kernel), "weight")?,
            bias: vb.get(output, "bias")?,
            kernel,
            padding,
            dilation,
            packed: Packing::default(),
        })
    }
}

impl Conv1d {
    /// `conv(leaky_relu(xs, slope))`; on the CPU the activation is applied while gathering the
    /// im2col tiles, so the activated input is never written out.
    pub fn forward_leaky(&self, xs: &Tensor, slope: f64) -> Result<Tensor> {
        self.run(xs, Some(slope))
    }

    fn run(&self, xs: &Tensor, input_slope: Option<f64>) -> Result<Tensor> {
        if is_cpu_f32(xs) && is_cpu_f32(&self.weight) {
            // A 1-D convolution is a 2-D one over a single row.
            let (output, input, _) = self.weight.dims3()?;
            let weight = self.weight.reshape((output, input, 1, self.kernel))?;
            let geometry = Geometry {
                stride: 1,
                padding: (0, self.padding),
                dilation: (1, self.dilation),
            };
            let op = ConvOp {
                geometry,
                input_slope: input_slope.map(|slope| slope as f32),
                packed: &self.packed.0,
            };
            return xs
                .unsqueeze(2)?
                .contiguous()?
                .apply_op3_no_bwd(&weight, &self.bias, &op)?
                .squeeze(2);
        }
        if half_on_cpu(xs) {
            return self.in_f32(xs, |layer, xs| layer.run(xs, input_slope));
        }
        let xs = match input_slope {
            Some(slope) => leaky_relu(xs, slope)?,
            None => xs.clone(),
        };
        let convolved = xs.conv1d(&self.weight, self.padding, 1, self.dilation, 1)?;
        convolved.broadcast_add(&self.bias.reshape((1, (), 1))?)
    }
}

impl Module for Conv1d {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.run(xs, None)
    }
}

/// `F.leaky_relu`: two passes instead of candle_nn's five for the usual slopes in [0, 1].
pub fn leaky_relu(xs: &Tensor, slope: f64) -> Result<Tensor> {
    if (0.0..=1.0).contains(&slope) {
        // max(x, s·x) is x for x ≥ 0 and s·x below: the same products PyTorch forms.
        xs.maximum(&(xs * slope)?)
    } else {
        candle_nn::ops::leaky_relu(xs, slope)
    }
}

/// `nn.ConvTranspose1d` (no output padding, no dilation), as HiFi-GAN's upsamplers use it.
#[derive(Debug, Clone)]
pub struct ConvTranspose1d {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    padding: usize,
}

impl ConvTranspose1d {
    pub fn new(
        input: usize,
        output: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            weight: vb.get((input, output, kernel), "weight")?,
            bias: vb.get(output, "bias")?,
            stride,
            padding,
        })
    }
}

impl Module for ConvTranspose1d {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if is_cpu_f32(xs) && is_cpu_f32(&self.weight) {
            let op = TransposedOp {
                stride: self.stride,
                padding: self.padding,
            };
            return xs
                .contiguous()?
                .apply_op3_no_bwd(&self.weight, &self.bias, &op);
        }
        if half_on_cpu(xs) {
            return self.in_f32(xs, |layer, xs| layer.forward(xs));
        }
        // candle's fast transposed kernel needs padding 0; cropping afterwards is identical.
        let full = xs.conv_transpose1d(&self.weight, 0, 0, self.stride, 1, 1)?;
        let length = full.dim(2)? - 2 * self.padding;
        let cropped = full.narrow(2, self.padding, length)?;
        cropped.broadcast_add(&self.bias.reshape((1, (), 1))?)
    }
}

/// Convolution of (batch, in, height, width) with (out, in, kh, kw) plus a bias, optionally of
/// `leaky_relu(input, input_slope)`.
struct ConvOp<'a> {
    geometry: Geometry,
    input_slope: Option<f32>,
    /// The layer's weights as the direct kernel (packed on first use) and the bf16 engines
    /// (kept after the first calls, `PackedWeights`) read them.
    packed: &'a Kept,
}

/// `batch` outputs whose every channel row of `positions` holds that channel's bias, which the
/// products then add to (written on rayon's threads: on one it was 1–2 % of a UNet step).
fn bias_rows(bias: &[f32], positions: usize, batch: usize) -> Vec<f32> {
    let len = batch * bias.len() * positions;
    fill::biased(len, bias, Repeat::Planes(positions), None)
}

/// What one im2col tile reads: the input plane size, kernel and geometry.
struct Patch {
    height: usize,
    width: usize,
    kernel: (usize, usize),
    out_width: usize,
    geometry: Geometry,
    input_slope: Option<f32>,
}

/// Several small images through im2col as one product: their columns side by side.
struct Group<'a> {
    patch: &'a Patch,
    /// Floats per input image.
    planes: usize,
    taps: usize,
    positions: usize,
    /// The weights kept packed for bf16 products; f32 products when `None`.
    left: Option<&'a PackedLeft>,
}

impl Group<'_> {
    /// Adds the convolution of the images in `inputs` to `outs` (which holds the bias).
    fn convolve(&self, inputs: &[f32], (weight, weights): (&[f32], View), outs: &mut [f32]) {
        let count = inputs.len() / self.planes;
        let (depth, width) = (weights.cols, count * self.positions);
        let plane_len = self.patch.height * self.patch.width;
        // `Patch::fill` writes every value.
        let mut columns = Scratch::new(depth * width);
        columns
            .par_chunks_mut(width)
            .enumerate()
            .for_each(|(row, column)| {
                let (channel, tap) = (row / self.taps, row % self.taps);
                let (ky, kx) = (tap / self.patch.kernel.1, tap % self.patch.kernel.1);
                for (image, column) in column.chunks_mut(self.positions).enumerate() {
                    let plane = &inputs[image * self.planes + channel * plane_len..][..plane_len];
                    self.patch.fill(plane, ky, kx, 0, column);
                }
            });
        let rhs = View::rows(depth, width, width);
        let sums = match self.left {
            Some(left) => {
                let right = PackedRight::new(left.engine(), &columns, rhs);
                product_kept(left, &right)
            }
            None => product(
                (weight, weights),
                (&columns, rhs),
                (weights.rows, width),
                Precision::F32,
            ),
        };
        let positions = self.positions;
        outs.par_chunks_mut(positions)
            .enumerate()
            .for_each(|(index, out)| {
                // `outs` is (image, output, position); `sums` is (output, image · position).
                let (image, output) = (index / weights.rows, index % weights.rows);
                let sums = &sums[output * width + image * positions..][..positions];
                out.iter_mut().zip(sums).for_each(|(out, sum)| *out += sum);
            });
    }
}

impl Patch {
    /// Fills `column` with the inputs kernel tap (`ky`, `kx`) of channel plane `plane` sees at
    /// output positions `start..start + column.len()`.
    fn fill(&self, plane: &[f32], ky: usize, kx: usize, start: usize, column: &mut [f32]) {
        let Geometry {
            stride,
            padding: (pad_y, pad_x),
            dilation: (dil_y, dil_x),
        } = self.geometry;
        let mut position = start;
        let mut done = 0;
        while done < column.len() {
            let (oy, ox0) = (position / self.out_width, position % self.out_width);
            let run = (self.out_width - ox0).min(column.len() - done);
            let out = &mut column[done..done + run];
            let iy = (oy * stride + ky * dil_y) as isize - pad_y as isize;
            if iy < 0 || iy >= self.height as isize {
                out.fill(0.0);
            } else {
                let row = &plane[iy as usize * self.width..(iy as usize + 1) * self.width];
                let offset = (kx * dil_x) as isize - pad_x as isize;
                if stride == 1 {
                    // Output columns whose input column lies inside the row.
                    let first = (-offset - ox0 as isize).clamp(0, run as isize) as usize;
                    let last = (self.width as isize - offset - ox0 as isize)
                        .clamp(first as isize, run as isize)
                        as usize;
                    out[..first].fill(0.0);
                    // A run wholly in the padding (a tile that starts near a row's end) copies
                    // nothing, and its source index would lie past the row.
                    if last > first {
                        let from = ((ox0 + first) as isize + offset) as usize;
                        out[first..last].copy_from_slice(&row[from..from + last - first]);
                    }
                    out[last..].fill(0.0);
                } else {
                    for (i, value) in out.iter_mut().enumerate() {
                        let ix = ((ox0 + i) * stride) as isize + offset;
                        *value = if ix < 0 || ix >= self.width as isize {
                            0.0
                        } else {
                            row[ix as usize]
                        };
                    }
                }
            }
            if let Some(slope) = self.input_slope {
                out.iter_mut()
                    .for_each(|value| *value = if *value < 0.0 { *value * slope } else { *value });
            }
            position += run;
            done += run;
        }
    }
}

impl CustomOp3 for ConvOp<'_> {
    fn name(&self) -> &'static str {
        "foley-conv2d"
    }

    fn cpu_fwd(
        &self,
        input: &CpuStorage,
        input_layout: &Layout,
        weight: &CpuStorage,
        weight_layout: &Layout,
        bias: &CpuStorage,
        bias_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let geometry = self.geometry;
        let (batch, channels, height, width) = input_layout.shape().dims4()?;
        let (outputs, weight_channels, kh, kw) = weight_layout.shape().dims4()?;
        if weight_channels != channels {
            candle_core::bail!("conv2d: input has {channels} channels, weight {weight_channels}");
        }
        let input = contiguous_f32(input, input_layout, "conv2d input")?;
        let weight = contiguous_f32(weight, weight_layout, "conv2d weight")?;
        let bias = contiguous_f32(bias, bias_layout, "conv2d bias")?;
        // Checked: sizes come from configs, and an absurd padding must be an error, not a wrap.
        let span = |size: usize, pad: usize, dil: usize, k: usize| {
            let padded = pad.checked_mul(2)?.checked_add(size)?;
            let reach = dil.checked_mul(k.checked_sub(1)?)?.checked_add(1)?;
            padded
                .checked_sub(reach)
                .map(|s| s / geometry.stride.max(1) + 1)
        };
        let (Some(out_h), Some(out_w)) = (
            span(height, geometry.padding.0, geometry.dilation.0, kh),
            span(width, geometry.padding.1, geometry.dilation.1, kw),
        ) else {
            candle_core::bail!("conv2d: kernel larger than the padded input");
        };
        let (Some(positions), Some(depth)) = (
            out_h.checked_mul(out_w),
            channels
                .checked_mul(kh)
                .and_then(|product| product.checked_mul(kw)),
        ) else {
            candle_core::bail!("conv2d: output size overflows");
        };
        let pointwise = kh == 1
            && kw == 1
            && geometry.stride == 1
            && geometry.padding == (0, 0)
            && self.input_slope.is_none();
        // Read on this thread: the flag is per thread.
        let previous = super::previous_kernels();
        let precision = super::precision();
        // bf16 products take convolutions through im2col or pointwise products, as autocast's
        // bf16 convolutions compute (Winograd's transforms would amplify the operands'
        // rounding: at 128–256 channels F(4×4) 10×, F(4, 3) pieces 3× a bf16 convolution's
        // error; the direct kernel is f32 only), except that 2-D Winograd in f32 beats
        // AVX512-BF16's products (`Engine::replaces_winograd`).
        let f32_paths = precision == Precision::F32;
        let winograd_2d = match precision {
            Precision::F32 => true,
            Precision::Bf16(engine) => !engine.replaces_winograd(),
        };
        let winograd = ((kh, kw) == (3, 3)
            && winograd_2d
            && geometry.stride == 1
            && geometry.padding == (1, 1)
            && geometry.dilation == (1, 1)
            && self.input_slope.is_none())
        .then(|| winograd::worthwhile(out_h, out_w, (channels, outputs), previous))
        .flatten();
        // A "same" 1-D convolution (HiFi-GAN's residual blocks): F(4, 3) on 3-tap pieces.
        let line = winograd_1d::Shape {
            channels,
            outputs,
            length: width,
            kernel: kw,
            dilation: geometry.dilation.1,
        };
        if kh == 1
            && height == 1
            && geometry.stride == 1
            && geometry.padding.0 == 0
            && f32_paths
            && winograd_1d::worthwhile(&line, geometry.padding.1, previous)
        {
            let weights = winograd_1d::transform_weights(weight, &line);
            let mut output = bias_rows(bias, positions, batch);
            for (signal, out) in input
                .chunks(channels * width)
                .zip(output.chunks_mut(outputs * positions))
            {
                winograd_1d::convolve(signal, &line, &weights, self.input_slope, out);
            }
            let shape = Shape::from((batch, outputs, out_h, out_w));
            return Ok((CpuStorage::F32(output), shape));
        }
        let direct_shape = direct::Shape {
            channels,
            height,
            width,
            outputs,
            kernel: (kh, kw),
            padding: geometry.padding,
            dilation: geometry.dilation,
        };
        // Where Winograd applies (from 256 channels beside the AVX-512 direct kernel), its 4
        // multiplies per output instead of 9 beat the direct kernel: 11.2 against 13.9 ms at the
        // UNet's [2,256,128,8] (`cargo bench --bench kernels`).
        let direct =
            (!pointwise && winograd.is_none() && geometry.stride == 1 && f32_paths && !previous)
                .then(direct::Kernel::detect)
                .flatten()
                .filter(|&kernel| direct_shape.worthwhile(kernel));
        if let Some(kernel) = direct {
            let packed = self
                .packed
                .direct
                .get_or_init(|| direct::Packed::new(kernel, weight, outputs, channels, kh * kw));
            if !packed.fits(&direct_shape) {
                candle_core::bail!("conv2d: weights changed shape since they were packed");
            }
            let mut output = super::fill::zeros(batch * outputs * positions);
            for (image, out) in input
                .chunks(channels * height * width)
                .zip(output.chunks_mut(outputs * positions))
            {
                direct::convolve(image, direct_shape, packed, bias, self.input_slope, out);
            }
            let shape = Shape::from((batch, outputs, out_h, out_w));
            return Ok((CpuStorage::F32(output), shape));
        }
        let mut output = bias_rows(bias, positions, batch);
        let weights = View::rows(outputs, depth, depth);
        let fewest = if previous { 1 } else { MIN_TILE_POSITIONS };
        let tile = (TILE_FLOATS / depth).max(fewest).clamp(1, positions);
        // `Patch::fill` writes every value of the columns it is handed. bf16 products pack
        // the columns as they are made.
        let mut columns = Scratch::new(
            if pointwise || winograd.is_some() || precision != Precision::F32 {
                0
            } else {
                depth * tile
            },
        );
        let patch = Patch {
            height,
            width,
            kernel: (kh, kw),
            out_width: out_w,
            geometry,
            input_slope: self.input_slope,
        };
        let transformed = winograd.map(|tile| {
            (
                winograd::transform_weights(weight, outputs, channels, tile),
                tile,
            )
        });
        // bf16 products multiply the weights as the layer keeps them packed.
        let kept_left = |tap_major: bool| match precision {
            Precision::F32 => Ok(None),
            Precision::Bf16(engine) => {
                let dims = (outputs, channels, kh * kw);
                self.packed.bf16(engine, weight, dims, tap_major).map(Some)
            }
        };
        // Small images (the UNet's fourth level, 64 positions) share one product: each image's
        // own would pack the whole weight matrix for a thin product.
        let images =
            if pointwise || winograd.is_some() || previous || positions >= MIN_TILE_POSITIONS {
                1
            } else {
                (MIN_TILE_POSITIONS / positions.max(1)).clamp(1, batch.max(1))
            };
        if images > 1 {
            let left = kept_left(false)?;
            let group = Group {
                patch: &patch,
                planes: channels * height * width,
                taps: kh * kw,
                positions,
                left: left.as_deref(),
            };
            for (inputs, outs) in input
                .chunks(images * group.planes)
                .zip(output.chunks_mut(images * outputs * positions))
            {
                group.convolve(inputs, (weight, weights), outs);
            }
            let shape = Shape::from((batch, outputs, out_h, out_w));
            return Ok((CpuStorage::F32(output), shape));
        }
        // With bf16 products every tile is packed into the memory the one before it used.
        let mut packed: Option<PackedRight> = None;
        // On the hardware engines a stride-1 convolution's tiles are copied from each item's
        // bf16 channel pairs (`PairImage`) over a tap-major inner order, which the kept
        // weights follow.
        let shifted = match precision {
            Precision::Bf16(engine)
                if engine.is_hardware() && geometry.stride == 1 && !pointwise =>
            {
                Some(Taps {
                    kernel: (kh, kw),
                    dilation: geometry.dilation,
                    out_width: out_w,
                })
            }
            _ => None,
        };
        let prepared = match transformed {
            Some(_) => None,
            None => kept_left(shifted.is_some())?,
        };
        let left = prepared.as_deref();
        for item in 0..batch {
            let planes = &input[item * channels * height * width..][..channels * height * width];
            let out = &mut output[item * outputs * positions..][..outputs * positions];
            if let Some((transformed, tile)) = &transformed {
                let dims = (channels, height, width);
                winograd::convolve(planes, dims, (transformed, *tile), outputs, out);
                continue;
            }
            if pointwise {
                let rhs = View::rows(depth, positions, positions);
                let dst = View::rows(outputs, positions, positions);
                match left {
                    Some(left) => {
                        let right = PackedRight::new(left.engine(), planes, rhs);
                        matmul_kept((out, dst), left, &right, true, true);
                    }
                    None => {
                        let (lhs, rhs) = ((weight, weights), (planes, rhs));
                        matmul((out, dst), lhs, rhs, true, true, precision);
                    }
                }
                continue;
            }
            let image = shifted.as_ref().map(|taps| {
                let dims = (channels, height, width);
                let image = PairImage::new(planes, dims, geometry.padding, self.input_slope);
                (taps, image)
            });
            if let (Some((taps, image)), Some(left)) = (&image, left)
                && image.reads_in_place(left.engine())
                && !previous
            {
                // HiFi-GAN's convolutions on AVX512-BF16: no im2col tiles at all (the copied
                // tiles are the previous kernel).
                image.convolve_in_place(left, taps, out);
                continue;
            }
            for start in (0..positions).step_by(tile) {
                let count = tile.min(positions - start);
                let dst = View::rows(outputs, count, positions);
                // Row `row` of the tile's im2col matrix (channel, tap) at its columns `first..`.
                let fill = |row: usize, first: usize, values: &mut [f32]| {
                    let (channel, tap) = (row / (kh * kw), row % (kh * kw));
                    let plane = &planes[channel * height * width..][..height * width];
                    let (ky, kx) = (tap / patch.kernel.1, tap % patch.kernel.1);
                    patch.fill(plane, ky, kx, start + first, values);
                };
                if let Some(left) = left {
                    let right = packed.get_or_insert_with(|| PackedRight::empty(left.engine()));
                    match &image {
                        Some((taps, image)) => right.refill_shifted(image, taps, (start, count)),
                        // The columns go straight into the engine's operand, each row's
                        // positions filled, rounded and packed in one pass: no f32 copy.
                        None => right.refill_rows((depth, count), fill),
                    }
                    matmul_kept((&mut out[start..], dst), left, right, true, true);
                    continue;
                }
                let columns = &mut columns[..depth * count];
                columns
                    .par_chunks_mut(count)
                    .enumerate()
                    .for_each(|(row, column)| fill(row, 0, column));
                let rhs = View::rows(depth, count, count);
                matmul(
                    (&mut out[start..], dst),
                    (weight, weights),
                    (columns, rhs),
                    true,
                    true,
                    precision,
                );
            }
        }
        let shape = Shape::from((batch, outputs, out_h, out_w));
        Ok((CpuStorage::F32(output), shape))
    }
}

/// Transposed convolution of (batch, in, length) with (in, out, k) plus a bias.
struct TransposedOp {
    stride: usize,
    padding: usize,
}

impl CustomOp3 for TransposedOp {
    fn name(&self) -> &'static str {
        "foley-conv-transpose1d"
    }

    fn cpu_fwd(
        &self,
        input: &CpuStorage,
        input_layout: &Layout,
        weight: &CpuStorage,
        weight_layout: &Layout,
        bias: &CpuStorage,
        bias_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (batch, channels, length) = input_layout.shape().dims3()?;
        let (weight_channels, outputs, kernel) = weight_layout.shape().dims3()?;
        if weight_channels != channels {
            candle_core::bail!(
                "conv_transpose1d: input has {channels} channels, weight {weight_channels}"
            );
        }
        let input = contiguous_f32(input, input_layout, "conv_transpose1d input")?;
        let weight = contiguous_f32(weight, weight_layout, "conv_transpose1d weight")?;
        let bias = contiguous_f32(bias, bias_layout, "conv_transpose1d bias")?;
        let (stride, padding) = (self.stride, self.padding);
        let precision = super::precision();
        let Some(out_len) = ((length.max(1) - 1) * stride + kernel).checked_sub(2 * padding) else {
            candle_core::bail!("conv_transpose1d: padding larger than the output");
        };
        let mut output = bias_rows(bias, out_len, batch);
        let rows = outputs * kernel;
        // Weights are (in, out·k): the transpose maps input channels to (out, tap) rows.
        let weights = View::transposed(rows, channels, rows);
        let tile = (TILE_FLOATS / rows).clamp(1, length.max(1));
        let mut columns = vec![0f32; rows * tile];
        for item in 0..batch {
            let source = &input[item * channels * length..][..channels * length];
            let out = &mut output[item * outputs * out_len..][..outputs * out_len];
            for start in (0..length).step_by(tile) {
                let count = tile.min(length - start);
                let columns = &mut columns[..rows * count];
                let rhs = View::rows(channels, count, length);
                matmul(
                    (columns, View::rows(rows, count, count)),
                    (weight, weights),
                    (&source[start..], rhs),
                    false,
                    true,
                    precision,
                );
                let columns = &*columns;
                out.par_chunks_mut(out_len)
                    .enumerate()
                    .for_each(|(channel, plane)| {
                        for tap in 0..kernel {
                            let column = &columns[(channel * kernel + tap) * count..][..count];
                            for (offset, value) in column.iter().enumerate() {
                                let t =
                                    ((start + offset) * stride + tap) as isize - padding as isize;
                                if t >= 0 && (t as usize) < out_len {
                                    plane[t as usize] += value;
                                }
                            }
                        }
                    });
            }
        }
        let shape = Shape::from((batch, outputs, out_len));
        Ok((CpuStorage::F32(output), shape))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::kernels::{gemm_bf16, with_bf16_products, with_previous_kernels};
    use candle_core::{Device, Module};
    use candle_nn::VarBuilder;

    fn relative_l2(a: &Tensor, b: &Tensor) -> f32 {
        let diff = (a - b).unwrap().sqr().unwrap().sum_all().unwrap();
        let norm = b.sqr().unwrap().sum_all().unwrap();
        (diff.to_scalar::<f32>().unwrap() / norm.to_scalar::<f32>().unwrap()).sqrt()
    }

    fn layer(
        input: usize,
        output: usize,
        kernel: usize,
        stride: usize,
    ) -> (Conv2d, Tensor, Tensor) {
        let device = Device::Cpu;
        let weight = Tensor::randn(0f32, 0.2, (output, input, kernel, kernel), &device).unwrap();
        let bias = Tensor::randn(0f32, 1.0, output, &device).unwrap();
        let tensors = [
            ("c.weight".to_string(), weight.clone()),
            ("c.bias".to_string(), bias.clone()),
        ];
        let vb = VarBuilder::from_tensors(tensors.into_iter().collect(), DType::F32, &device);
        let conv = Conv2d::new(input, output, kernel, stride, kernel / 2, vb.pp("c")).unwrap();
        (conv, weight, bias)
    }

    use candle_core::DType;

    /// Every CPU path (the direct kernel, Winograd for the 256-channel cases, im2col, pointwise,
    /// strided) against candle's convolution, on sizes that leave partial tiles and blocks.
    /// The first two Winograd cases take F(4×4), and F(2×2) with the previous kernels; the
    /// second has two images sharing transformed weights and splits its F(2×2) tile rows into
    /// two chunks, the second partial; the third (F(2×2) both ways) is narrow enough (4 tiles a
    /// row) to take its input transform tile by tile. The last two take im2col with images sharing one
    /// product: all three, then two and one.
    #[test]
    fn fast_convolutions_match_candle() {
        for (shape, out, kernel, stride) in [
            ([1, 256, 40, 30], 12, 3, 1),
            ([2, 256, 259, 31], 5, 3, 1),
            ([2, 256, 33, 7], 5, 3, 1),
            ([2, 8, 37, 21], 12, 3, 1),
            ([1, 5, 9, 7], 6, 3, 1),
            ([2, 8, 37, 21], 12, 1, 1),
            ([2, 8, 37, 21], 12, 3, 2),
            ([3, 64, 6, 2], 7, 3, 1),
            ([3, 8, 40, 20], 6, 3, 2),
        ] {
            let (conv, weight, bias) = layer(shape[1], out, kernel, stride);
            let xs = Tensor::randn(0f32, 1.0, &shape, &Device::Cpu).unwrap();
            let reference = xs
                .conv2d(&weight, kernel / 2, stride, 1, 1)
                .unwrap()
                .broadcast_add(&bias.reshape((1, out, 1, 1)).unwrap())
                .unwrap();
            // The direct kernel where the CPU has one, then im2col and Winograd alone.
            let current = conv.forward(&xs).unwrap();
            let previous = with_previous_kernels(|| conv.forward(&xs)).unwrap();
            // F(4×4)'s transform coefficients (4, 5, 8, sixths) cost accuracy: 3.4e-6 against
            // an f64 definition at 256 channels (`winograd`'s tests), F(2×2) 5e-7.
            let (height, width) = (shape[2], shape[3]);
            let four = (kernel, stride) == (3, 1)
                && winograd::worthwhile(height, width, (shape[1], out), false)
                    == Some(winograd::Tile::Four);
            for (ours, path) in [(current, "current"), (previous, "previous")] {
                assert_eq!(ours.dims(), reference.dims());
                let error = relative_l2(&ours, &reference);
                let limit = if four && path == "current" {
                    1e-5
                } else {
                    1e-6
                };
                assert!(
                    error < limit,
                    "{path} {shape:?} k{kernel} s{stride}: {error}"
                );
            }
        }
    }

    /// HiFi-GAN-like 1-D layers from 256 channels, two signals, with the fused leaky ReLU:
    /// F(4, 3) pieces on AVX2-only x86 (11 and 3 taps, dilations 5 and 1), the direct kernel or
    /// im2col elsewhere, against candle's convolution.
    #[test]
    fn residual_block_layers_match_candle() {
        let (channels, length) = (256, 301);
        let device = Device::Cpu;
        for (kernel, dilation) in [(11, 5), (3, 1)] {
            let weight = Tensor::randn(0f32, 0.05, (channels, channels, kernel), &device).unwrap();
            let bias = Tensor::randn(0f32, 1.0, channels, &device).unwrap();
            let tensors = [
                ("c.weight".to_string(), weight.clone()),
                ("c.bias".to_string(), bias.clone()),
            ];
            let vb = VarBuilder::from_tensors(tensors.into_iter().collect(), DType::F32, &device);
            let padding = dilation * (kernel - 1) / 2;
            let conv =
                Conv1d::new(channels, channels, kernel, padding, dilation, vb.pp("c")).unwrap();
            let xs = Tensor::randn(0f32, 1.0, (2, channels, length), &device).unwrap();
            let reference = candle_nn::ops::leaky_relu(&xs, 0.1)
                .unwrap()
                .conv1d(&weight, padding, 1, dilation, 1)
                .unwrap()
                .broadcast_add(&bias.reshape((1, channels, 1)).unwrap())
                .unwrap();
            let ours = conv.forward_leaky(&xs, 0.1).unwrap();
            assert_eq!(ours.dims(), reference.dims());
            let error = relative_l2(&ours, &reference);
            assert!(error < 4e-6, "k{kernel} d{dilation}: {error}");
        }
    }

    /// A long dilated 1-D convolution whose im2col tiles split the row, one starting three
    /// samples before its end (inside the right padding), with the fused leaky ReLU.
    #[test]
    fn tiles_that_split_a_row_match_candle() {
        let (channels, kernel, dilation) = (2, 3, 5);
        let tile = TILE_FLOATS / (channels * kernel);
        let length = tile + 3;
        let device = Device::Cpu;
        let weight = Tensor::randn(0f32, 0.5, (3, channels, kernel), &device).unwrap();
        let bias = Tensor::randn(0f32, 1.0, 3, &device).unwrap();
        let tensors = [
            ("c.weight".to_string(), weight.clone()),
            ("c.bias".to_string(), bias.clone()),
        ];
        let vb = VarBuilder::from_tensors(tensors.into_iter().collect(), DType::F32, &device);
        let padding = dilation * (kernel - 1) / 2;
        let conv = Conv1d::new(channels, 3, kernel, padding, dilation, vb.pp("c")).unwrap();
        let xs = Tensor::randn(0f32, 1.0, (1, channels, length), &device).unwrap();
        let reference = candle_nn::ops::leaky_relu(&xs, 0.1)
            .unwrap()
            .conv1d(&weight, padding, 1, dilation, 1)
            .unwrap()
            .broadcast_add(&bias.reshape((1, 3, 1)).unwrap())
            .unwrap();
        // im2col tiles are the previous kernel wherever the CPU has a direct one.
        let current = conv.forward_leaky(&xs, 0.1).unwrap();
        let previous = with_previous_kernels(|| conv.forward_leaky(&xs, 0.1)).unwrap();
        for (ours, path) in [(current, "current"), (previous, "previous")] {
            assert_eq!(ours.dims(), reference.dims());
            let error = relative_l2(&ours, &reference);
            assert!(error < 1e-6, "{path}: {error}");
        }
    }

    fn rounded(tensor: &Tensor) -> Tensor {
        let values: Vec<f32> = tensor.flatten_all().unwrap().to_vec1().unwrap();
        let values: Vec<f32> = values.into_iter().map(gemm_bf16::rounded).collect();
        Tensor::from_vec(values, tensor.shape(), tensor.device()).unwrap()
    }

    /// With bf16 products every path gives the convolution of the operands rounded to bf16, up
    /// to f32 rounding, as autocast's bf16 convolution does: shapes that in f32 take F(4×4),
    /// F(2×2), the direct kernel, im2col with shared products, pointwise and strided products,
    /// and HiFi-GAN's 1-D layers that take F(4, 3) pieces. (Through Winograd the rounding
    /// would grow: F(4×4) 10×, F(4, 3) 3× a bf16 convolution's error.) An engine that keeps 2-D
    /// Winograd (AVX512-BF16) gives the f32 convolution on the shapes that take it. On the
    /// emulation, and on AMX and AVX512-BF16 where the CPU has them.
    #[test]
    fn bf16_products_convolve_the_rounded_operands() {
        let mut engines = gemm_bf16::available();
        engines.push(gemm_bf16::Engine::Emulated);
        for engine in engines {
            convolve_the_rounded_operands(engine);
        }
    }

    fn convolve_the_rounded_operands(engine: gemm_bf16::Engine) {
        let device = Device::Cpu;
        // `convolve` (candle's) on the exact and the rounded operands against the layer.
        let check = |what: &str,
                     (xs, weight): (&Tensor, &Tensor),
                     convolve: &dyn Fn(&Tensor, &Tensor) -> Tensor,
                     layer: &dyn Fn() -> Tensor| {
            let exact = convolve(xs, weight);
            let bf16 = convolve(&rounded(xs), &rounded(weight));
            let ours = with_bf16_products(Some(engine), layer);
            let (from_bf16, from_exact) = (relative_l2(&ours, &bf16), relative_l2(&ours, &exact));
            // Winograd takes only 3×3 layers of stride 1 (here padding 1): their output is
            // their input's size.
            let winograd = match (xs.dims(), weight.dims()) {
                (&[_, channels, height, width], &[outputs, _, 3, 3])
                    if ours.dims()[2..] == xs.dims()[2..] =>
                {
                    winograd::worthwhile(height, width, (channels, outputs), false).is_some()
                }
                _ => false,
            };
            if winograd && !engine.replaces_winograd() {
                assert!(from_exact < 1e-5, "{engine:?} {what}: not f32 Winograd");
            } else {
                assert!(from_bf16 < 1e-5, "{engine:?} {what}: {from_bf16}");
                assert!(from_exact > 1e-4, "{engine:?} {what}: not rounded");
            }
        };
        for (shape, out, kernel, stride) in [
            ([1, 256, 40, 30], 64, 3, 1),
            ([1, 128, 64, 16], 32, 3, 1),
            ([1, 5, 24, 30], 6, 3, 1),
            ([3, 64, 6, 2], 7, 3, 1),
            ([2, 8, 37, 21], 12, 1, 1),
            ([3, 8, 40, 20], 6, 3, 2),
        ] {
            let (conv, weight, bias) = layer(shape[1], out, kernel, stride);
            let xs = Tensor::randn(0f32, 1.0, &shape, &device).unwrap();
            let convolve = |xs: &Tensor, weight: &Tensor| {
                xs.conv2d(weight, kernel / 2, stride, 1, 1)
                    .unwrap()
                    .broadcast_add(&bias.reshape((1, out, 1, 1)).unwrap())
                    .unwrap()
            };
            let what = format!("{shape:?} k{kernel} s{stride}");
            check(&what, (&xs, &weight), &convolve, &|| {
                conv.forward(&xs).unwrap()
            });
            // The same layer, its weights now kept packed, on a small input (two images share
            // one product) and on a larger one (im2col tiles): each path reads the weights in
            // its own inner order.
            for size in [[2, shape[1], 4, 3], [1, shape[1], 30, 40]] {
                let xs = Tensor::randn(0f32, 1.0, &size, &device).unwrap();
                let what = format!("{size:?} k{kernel} s{stride}, kept weights");
                check(&what, (&xs, &weight), &convolve, &|| {
                    conv.forward(&xs).unwrap()
                });
            }
        }
        // HiFi-GAN's shapes, and odd ones: channels, outputs and lengths off the block sizes,
        // through the leaky ReLU its residual blocks put before each convolution.
        for (channels, outputs, length, kernel, dilation, slope) in [
            (128, 128, 4000, 3, 1, None),
            (128, 128, 4000, 11, 5, None),
            (128, 128, 4000, 7, 3, Some(0.1)),
            (33, 40, 1001, 7, 3, Some(0.1)),
        ] {
            // Two items of the last shape: each convolved into its own part of the output.
            let batch = if channels == 33 { 2 } else { 1 };
            let padding = dilation * (kernel - 1) / 2;
            let weight = Tensor::randn(0f32, 0.1, (outputs, channels, kernel), &device).unwrap();
            let bias = Tensor::randn(0f32, 1.0, outputs, &device).unwrap();
            let tensors = [
                ("c.weight".to_string(), weight.clone()),
                ("c.bias".to_string(), bias.clone()),
            ];
            let vb = VarBuilder::from_tensors(tensors.into_iter().collect(), DType::F32, &device);
            let conv =
                Conv1d::new(channels, outputs, kernel, padding, dilation, vb.pp("c")).unwrap();
            let raw = Tensor::randn(0f32, 1.0, (batch, channels, length), &device).unwrap();
            // The layer's input after the leaky ReLU: what both convolutions multiply.
            let xs = match slope {
                Some(slope) => leaky_relu(&raw, slope).unwrap(),
                None => raw.clone(),
            };
            let convolve = |xs: &Tensor, weight: &Tensor| {
                xs.conv1d(weight, padding, 1, dilation, 1)
                    .unwrap()
                    .broadcast_add(&bias.reshape((1, outputs, 1)).unwrap())
                    .unwrap()
            };
            let what = format!("1-D {batch}×{channels}→{outputs}×{length} k{kernel} d{dilation}");
            check(&what, (&xs, &weight), &convolve, &|| match slope {
                Some(slope) => conv.forward_leaky(&raw, slope).unwrap(),
                None => conv.forward(&raw).unwrap(),
            });
        }
    }
}
