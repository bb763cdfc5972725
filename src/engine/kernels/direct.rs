//! Stride-1 convolution computed directly from a zero-padded copy of the input, with no im2col
//! columns and no per-call packing by `gemm`.
//!
//! Laid out flat with the padded row width `Wp`, output position `p = y·Wp + x` reads input
//! `p + ky·dy·Wp + kx·dx` at tap (ky, kx): every tap is a constant shift, so a register of
//! consecutive outputs reads consecutive inputs. Positions whose `x` falls in the padding
//! columns are computed and dropped (12 % extra at the UNet's 16-bin first level; a 1-D
//! convolution drops nothing). A block of (output channel, position) sums, 8 × 48 in AVX-512
//! registers or 6 × 16 in AVX2 ones, stays in registers over every input channel and tap, where
//! im2col + `gemm` wrote the columns out, packed them again and re-read partial sums per tile
//! (`cargo bench --bench kernels`: HiFi-GAN's layers 1.4–1.8× and the UNet's 128-channel 3×3
//! ones 1.2–2× faster than that path with AVX-512).

use rayon::prelude::*;

/// Input floats a chunk of positions should read across all channels (1 MB), so a chunk stays
/// in L2 while every output-channel block of a thread passes over it.
const CHUNK_READ_FLOATS: usize = 1 << 18;
/// Register blocks as (output channels, vectors of positions): 8 × 3 × 16 lanes for AVX-512,
/// 6 × 2 × 8 lanes for AVX2. Outside the `cfg`'d kernels so every target compiles the shapes.
const AVX512_BLOCK: (usize, usize) = (8, 3);
const AVX2_BLOCK: (usize, usize) = (6, 2);
/// The largest block of any kernel, for scratch space.
const MAX_ROWS: usize = larger(AVX512_BLOCK.0, AVX2_BLOCK.0);
const MAX_LANES: usize = larger(AVX512_BLOCK.1 * 16, AVX2_BLOCK.1 * 8);

const fn larger(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}

/// The register kernels, fastest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// 8 output channels × 48 positions in 24 AVX-512 registers: a third of the loads per
    /// multiply-add of the AVX2 block, which is what held that one back even where AVX-512
    /// runs at AVX2's width (AMD Zen 4: 12.7 against 17.5 ms at the UNet's first level).
    Avx512,
    /// 6 output channels × 16 positions in 12 AVX2 registers.
    Avx2,
}

impl Kernel {
    /// The fastest kernel this CPU runs, if any.
    pub fn detect() -> Option<Self> {
        [Self::Avx512, Self::Avx2]
            .into_iter()
            .find(|kernel| kernel.available())
    }

    /// Whether the AVX2 block is the best this CPU has (x86 with AVX2 and FMA, no AVX-512): where
    /// the convolution paths measured against it choose differently from AVX-512 machines.
    pub fn avx2_only() -> bool {
        Self::detect() == Some(Self::Avx2)
    }

    /// Whether this CPU runs this kernel.
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                Self::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
                Self::Avx2 => super::exp::has_avx2(),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// Output channels per block.
    fn rows(self) -> usize {
        match self {
            Self::Avx512 => AVX512_BLOCK.0,
            Self::Avx2 => AVX2_BLOCK.0,
        }
    }

    /// Output positions per block.
    fn lanes(self) -> usize {
        match self {
            Self::Avx512 => AVX512_BLOCK.1 * 16,
            Self::Avx2 => AVX2_BLOCK.1 * 8,
        }
    }
}

/// The shape of one stride-1 convolution.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub outputs: usize,
    pub kernel: (usize, usize),
    pub padding: (usize, usize),
    pub dilation: (usize, usize),
}

impl Shape {
    fn padded_width(&self) -> usize {
        self.width + 2 * self.padding.1
    }

    fn padded_height(&self) -> usize {
        self.height + 2 * self.padding.0
    }

    /// Output rows and columns; `None` when the kernel is larger than the padded input.
    fn output(&self) -> Option<(usize, usize)> {
        let reach = |dilation: usize, kernel: usize| Some(dilation * kernel.checked_sub(1)?);
        Some((
            self.padded_height()
                .checked_sub(reach(self.dilation.0, self.kernel.0)?)?,
            self.padded_width()
                .checked_sub(reach(self.dilation.1, self.kernel.1)?)?,
        ))
    }

    /// Floats per padded channel plane, with room for the last block's reads past the end.
    fn plane(&self, lanes: usize) -> usize {
        (self.padded_height() + 1) * self.padded_width() + lanes
    }

    /// Whether `kernel` beats im2col + `gemm` here. Both need enough output columns that the
    /// dropped padding columns stay a small share (at width 4, a third of the work would be
    /// thrown away, where the channel counts are high and `gemm` is near its peak anyway).
    /// The AVX2 block, with a load for every 1.5 multiply-adds, only wins on long 1-D kernels:
    /// forced onto AMD Zen 4 it ran HiFi-GAN's 11-tap layers 1.05–1.53× faster than im2col but
    /// its 3-tap ones at 0.77–0.83× and the 128-channel 3×3 ones at 0.82–1.11×
    /// (`cargo bench --bench kernels`, docs/PERFORMANCE.md).
    pub fn worthwhile(&self, kernel: Kernel) -> bool {
        let wide = self.output().is_some_and(|(_, cols)| cols >= 8);
        let suits = match kernel {
            Kernel::Avx512 => true,
            Kernel::Avx2 => self.kernel.0 == 1 && self.kernel.1 >= 7,
        };
        wide && suits
    }
}

/// Weights (outputs, channels, taps) regrouped for one kernel as blocks of its rows, each
/// (channels, taps, rows), so the kernel reads its broadcasts in order. Missing rows of the last
/// block are zero.
pub struct Packed {
    kernel: Kernel,
    outputs: usize,
    channels: usize,
    taps: usize,
    data: Vec<f32>,
}

impl Packed {
    pub fn new(
        kernel: Kernel,
        weight: &[f32],
        outputs: usize,
        channels: usize,
        taps: usize,
    ) -> Self {
        let rows = kernel.rows();
        let block_len = channels * taps * rows;
        let mut data = vec![0f32; outputs.div_ceil(rows) * block_len];
        if block_len > 0 {
            data.par_chunks_mut(block_len)
                .enumerate()
                .for_each(|(block, out)| {
                    for row in 0..rows.min(outputs - block * rows) {
                        let source =
                            &weight[(block * rows + row) * channels * taps..][..channels * taps];
                        for (index, &value) in source.iter().enumerate() {
                            out[index * rows + row] = value;
                        }
                    }
                });
        }
        Self {
            kernel,
            outputs,
            channels,
            taps,
            data,
        }
    }

    /// Whether these are the weights of a convolution of `shape`.
    pub fn fits(&self, shape: &Shape) -> bool {
        (self.outputs, self.channels, self.taps)
            == (
                shape.outputs,
                shape.channels,
                shape.kernel.0 * shape.kernel.1,
            )
    }
}

/// Convolves one image (channels, height, width) with `packed` weights into `out`
/// (outputs, out_h, out_w), adding `bias`. `input_slope` applies a leaky ReLU to the input
/// first.
///
/// Panics if a slice is shorter than the shape needs or the weights belong to another shape:
/// both are programming errors.
pub fn convolve(
    image: &[f32],
    shape: Shape,
    packed: &Packed,
    bias: &[f32],
    input_slope: Option<f32>,
    out: &mut [f32],
) {
    let Shape {
        channels,
        height,
        width,
        outputs,
        kernel: (kh, kw),
        padding: (pad_y, pad_x),
        dilation: (dil_y, dil_x),
    } = shape;
    let kernel = packed.kernel;
    let (rows, lanes) = (kernel.rows(), kernel.lanes());
    let (out_h, out_w) = shape.output().expect("kernel fits the padded input");
    let (padded_width, plane) = (shape.padded_width(), shape.plane(lanes));
    let taps = kh * kw;
    assert!(
        packed.fits(&shape)
            && kernel.available()
            && taps > 0
            && image.len() >= channels * height * width
            && bias.len() >= outputs
            && out.len() >= outputs * out_h * out_w,
        "direct convolution: buffers, weights or CPU do not fit the shape"
    );
    if outputs == 0 || out_h * out_w == 0 {
        return;
    }

    let mut padded = vec![0f32; channels * plane];
    padded
        .par_chunks_mut(plane)
        .zip(image.par_chunks(height * width))
        .for_each(|(padded, source)| {
            for (y, row) in source.chunks(width).enumerate() {
                let target = &mut padded[(y + pad_y) * padded_width + pad_x..][..width];
                super::leaky::copy(row, input_slope, target);
            }
        });
    let offsets: Vec<usize> = (0..kh)
        .flat_map(|ky| (0..kw).map(move |kx| ky * dil_y * padded_width + kx * dil_x))
        .collect();
    // Blocks start below `flat_width` and read `lanes` floats past an offset: the slack in
    // `plane` keeps the last one inside the buffer, which the kernel relies on.
    let flat_width = (out_h * padded_width).next_multiple_of(lanes);
    assert!(flat_width + offsets[taps - 1] <= plane);

    // A single output row (every 1-D convolution) is its flat layout already: blocks write
    // into `out` directly, the last partial one through a scratch block. Otherwise blocks
    // fill the flat rows and the padding columns are dropped after.
    let single_row = out_h == 1;
    let mut flat = if single_row {
        Vec::new()
    } else {
        vec![0f32; outputs * flat_width]
    };
    let (target, row_len, positions) = if single_row {
        (&mut out[..outputs * out_w], out_w, out_w)
    } else {
        (&mut flat[..], flat_width, flat_width)
    };

    // Each thread takes a contiguous run of output-channel blocks and walks the positions in
    // chunks, so a chunk's inputs are read from L2 by every block of the run.
    let blocks = outputs.div_ceil(rows);
    let per_thread = blocks.div_ceil(rayon::current_num_threads().clamp(1, blocks));
    let chunk = (CHUNK_READ_FLOATS / channels.max(1))
        .next_multiple_of(lanes)
        .clamp(lanes, flat_width);
    let block_len = channels * taps * rows;
    target
        .par_chunks_mut(per_thread * rows * row_len)
        .enumerate()
        .for_each(|(run, run_rows)| {
            for start in (0..positions).step_by(chunk) {
                let end = (start + chunk).min(positions);
                for (index, block_rows) in run_rows.chunks_mut(rows * row_len).enumerate() {
                    let block = run * per_thread + index;
                    let weights = &packed.data[block * block_len..][..block_len];
                    let live = rows.min(outputs - block * rows);
                    let mut biases = [0f32; MAX_ROWS];
                    biases[..live].copy_from_slice(&bias[block * rows..][..live]);
                    for position in (start..end).step_by(lanes) {
                        let mut block = Block {
                            input: &padded[position..],
                            plane,
                            channels,
                            offsets: &offsets,
                            weights,
                            bias: &biases,
                            out: &mut [],
                            out_stride: row_len,
                            live,
                        };
                        let count = lanes.min(positions - position);
                        if count == lanes {
                            block.out = &mut block_rows[position..];
                            block.run(kernel);
                        } else {
                            let mut scratch = [0f32; MAX_ROWS * MAX_LANES];
                            block.out = &mut scratch;
                            block.out_stride = lanes;
                            block.run(kernel);
                            for (row, sums) in scratch.chunks(lanes).take(live).enumerate() {
                                block_rows[row * row_len + position..][..count]
                                    .copy_from_slice(&sums[..count]);
                            }
                        }
                    }
                }
            }
        });

    if !single_row {
        out.par_chunks_mut(out_h * out_w)
            .zip(flat.par_chunks(flat_width))
            .for_each(|(plane, flat)| {
                for (y, row) in plane.chunks_mut(out_w).enumerate() {
                    row.copy_from_slice(&flat[y * padded_width..][..out_w]);
                }
            });
    }
}

/// One register block: `out[r·out_stride..][..lanes] = bias[r] + Σ_c Σ_t weights[(c, t, r)] ·
/// input[c·plane + offsets[t]..][..lanes]` for the first `live` rows.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Block<'a> {
    input: &'a [f32],
    plane: usize,
    channels: usize,
    offsets: &'a [usize],
    weights: &'a [f32],
    bias: &'a [f32; MAX_ROWS],
    out: &'a mut [f32],
    out_stride: usize,
    live: usize,
}

impl Block<'_> {
    fn run(mut self, kernel: Kernel) {
        let (rows, lanes) = (kernel.rows(), kernel.lanes());
        let last_offset = self.offsets.iter().copied().max().unwrap_or(0);
        assert!(
            self.channels > 0
                && (self.channels - 1) * self.plane + last_offset + lanes <= self.input.len()
                && self.weights.len() >= self.channels * self.offsets.len() * rows
                && self.live <= rows
                && (self.live == 0 || (self.live - 1) * self.out_stride + lanes <= self.out.len()),
            "direct convolution block out of bounds"
        );
        // SAFETY: the assertion above bounds every read and write the kernel makes, and
        // `convolve` checked this CPU runs `kernel`.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            match kernel {
                Kernel::Avx512 => avx512::block(&mut self),
                Kernel::Avx2 => avx2::block(&mut self),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = &mut self;
            unreachable!("no direct kernel runs on this architecture");
        }
    }
}

/// One register kernel: a module `$name` whose `block` keeps a `$shape` (rows, vectors) block
/// of sums in `$vector` registers of `$width` lanes. Over channels and taps it loads the block's
/// input vectors at the tap's offset and adds each row's broadcast weight times them, then
/// stores the live rows through a fixed loop with a branch (a data-dependent `take(live)` made
/// LLVM keep the sums in memory).
macro_rules! register_kernel {
    ($name:ident, $features:literal, $shape:expr, $vector:ty, $width:literal,
     $load:ident, $splat:ident, $fma:ident, $store:ident) => {
        #[cfg(target_arch = "x86_64")]
        mod $name {
            use std::arch::x86_64::*;

            use super::Block;

            const ROWS: usize = $shape.0;
            const VECTORS: usize = $shape.1;

            /// # Safety
            /// The CPU has this kernel's features, and `Block::run` checked the block's bounds.
            #[target_feature(enable = $features)]
            pub unsafe fn block(block: &mut Block) {
                let mut sums: [[$vector; VECTORS]; ROWS] =
                    std::array::from_fn(|row| [$splat(block.bias[row]); VECTORS]);
                let mut weights = block.weights.as_ptr();
                let base = block.input.as_ptr();
                for channel in 0..block.channels {
                    // SAFETY (all pointer arithmetic here): inside the bounds `Block::run`
                    // checked.
                    let channel_base = unsafe { base.add(channel * block.plane) };
                    for &offset in block.offsets {
                        let at = unsafe { channel_base.add(offset) };
                        let inputs: [$vector; VECTORS] =
                            std::array::from_fn(|index| unsafe { $load(at.add($width * index)) });
                        for (row, sums) in sums.iter_mut().enumerate() {
                            let weight = $splat(unsafe { *weights.add(row) });
                            for (sum, input) in sums.iter_mut().zip(&inputs) {
                                *sum = $fma(weight, *input, *sum);
                            }
                        }
                        weights = unsafe { weights.add(ROWS) };
                    }
                }
                for (row, sums) in sums.iter().enumerate() {
                    if row < block.live {
                        let at = unsafe { block.out.as_mut_ptr().add(row * block.out_stride) };
                        for (index, sum) in sums.iter().enumerate() {
                            unsafe { $store(at.add($width * index), *sum) };
                        }
                    }
                }
            }
        }
    };
}

register_kernel!(
    avx2,
    "avx2,fma",
    super::AVX2_BLOCK,
    __m256,
    8,
    _mm256_loadu_ps,
    _mm256_set1_ps,
    _mm256_fmadd_ps,
    _mm256_storeu_ps
);
register_kernel!(
    avx512,
    "avx512f",
    super::AVX512_BLOCK,
    __m512,
    16,
    _mm512_loadu_ps,
    _mm512_set1_ps,
    _mm512_fmadd_ps,
    _mm512_storeu_ps
);

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain loop over the definition, the reference the kernels must match.
    fn reference(
        image: &[f32],
        shape: Shape,
        weight: &[f32],
        bias: &[f32],
        slope: Option<f32>,
    ) -> Vec<f32> {
        let Shape {
            channels,
            height,
            width,
            outputs,
            kernel: (kh, kw),
            padding: (py, px),
            dilation: (dy, dx),
        } = shape;
        let (out_h, out_w) = shape.output().unwrap();
        let mut out = vec![0f32; outputs * out_h * out_w];
        for o in 0..outputs {
            for y in 0..out_h {
                for x in 0..out_w {
                    let mut sum = bias[o] as f64;
                    for c in 0..channels {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (y + ky * dy) as isize - py as isize;
                                let ix = (x + kx * dx) as isize - px as isize;
                                if iy < 0 || ix < 0 || iy >= height as isize || ix >= width as isize
                                {
                                    continue;
                                }
                                let mut v = image[(c * height + iy as usize) * width + ix as usize];
                                if let Some(slope) = slope {
                                    v = if v < 0.0 { v * slope } else { v };
                                }
                                let w = weight[((o * channels + c) * kh + ky) * kw + kx];
                                sum += (v * w) as f64;
                            }
                        }
                    }
                    out[(o * out_h + y) * out_w + x] = sum as f32;
                }
            }
        }
        out
    }

    /// Deterministic values in [-1, 1).
    fn values(count: usize, seed: u64) -> Vec<f32> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..count)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Both kernels (where this CPU runs them) on shapes that leave partial blocks of rows and
    /// positions, one output channel, asymmetric and zero padding, dilation, and the fused
    /// leaky ReLU, against the plain loop.
    #[test]
    fn kernels_match_the_definition() {
        let shapes = [
            // (channels, height, width, outputs, kernel, padding, dilation, slope)
            (3, 9, 16, 13, (3, 3), (1, 1), (1, 1), None),
            (8, 5, 11, 1, (3, 3), (1, 1), (1, 1), None),
            (17, 4, 8, 9, (3, 3), (1, 1), (1, 1), Some(0.1)),
            (4, 1, 301, 7, (1, 7), (0, 9), (1, 3), Some(0.2)),
            (5, 1, 64, 8, (1, 11), (0, 25), (1, 5), None),
            (2, 6, 12, 3, (2, 3), (0, 0), (1, 1), None),
            (6, 7, 9, 16, (3, 3), (2, 2), (2, 2), None),
        ];
        let kernels: Vec<Kernel> = [Kernel::Avx512, Kernel::Avx2]
            .into_iter()
            .filter(|kernel| kernel.available())
            .collect();
        for (index, (channels, height, width, outputs, kernel, padding, dilation, slope)) in
            shapes.into_iter().enumerate()
        {
            let shape = Shape {
                channels,
                height,
                width,
                outputs,
                kernel,
                padding,
                dilation,
            };
            let taps = kernel.0 * kernel.1;
            let image = values(channels * height * width, index as u64);
            let weight = values(outputs * channels * taps, 100 + index as u64);
            let bias = values(outputs, 200 + index as u64);
            let expected = reference(&image, shape, &weight, &bias, slope);
            for &isa in &kernels {
                let packed = Packed::new(isa, &weight, outputs, channels, taps);
                let mut out = vec![f32::NAN; expected.len()];
                convolve(&image, shape, &packed, &bias, slope, &mut out);
                for (position, (got, want)) in out.iter().zip(&expected).enumerate() {
                    assert!(
                        (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                        "{isa:?} {shape:?} at {position}: {got} against {want}"
                    );
                }
            }
        }
    }

    /// Each kernel takes the shapes it measured faster on, and none takes narrow outputs.
    #[test]
    fn each_kernel_takes_the_shapes_it_wins() {
        let shape = |height, width, kernel: (usize, usize)| Shape {
            channels: 128,
            height,
            width,
            outputs: 128,
            kernel,
            padding: (kernel.0 / 2, kernel.1 / 2),
            dilation: (1, 1),
        };
        let unet = shape(256, 16, (3, 3));
        let narrow = shape(64, 4, (3, 3));
        let (long, short) = (shape(1, 5120, (1, 11)), shape(1, 5120, (1, 3)));
        assert!(unet.worthwhile(Kernel::Avx512) && long.worthwhile(Kernel::Avx512));
        assert!(short.worthwhile(Kernel::Avx512) && !narrow.worthwhile(Kernel::Avx512));
        assert!(long.worthwhile(Kernel::Avx2));
        assert!(!unet.worthwhile(Kernel::Avx2) && !short.worthwhile(Kernel::Avx2));
    }

    /// Weights packed for one shape are refused for another.
    #[test]
    fn packed_weights_know_their_shape() {
        let Some(kernel) = Kernel::detect() else {
            return;
        };
        let packed = Packed::new(kernel, &[0.0; 2 * 3 * 9], 2, 3, 9);
        let shape = |outputs, channels| Shape {
            channels,
            height: 4,
            width: 8,
            outputs,
            kernel: (3, 3),
            padding: (1, 1),
            dilation: (1, 1),
        };
        assert!(packed.fits(&shape(2, 3)));
        assert!(!packed.fits(&shape(3, 2)));
    }
}
