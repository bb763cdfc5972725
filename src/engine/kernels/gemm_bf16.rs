//! Products with bf16 operands and f32 sums: the CPU's opt-in fast mode (`--dtype bf16`).
//!
//! Both operands are rounded to bf16 (to nearest, ties to even), as PyTorch's bf16 autocast
//! rounds a matmul's or convolution's inputs; every sum stays f32. With AMX the products run
//! on its tiles (`tdpbf16ps`, 16×16 outputs from 16×32 by 32×16 per instruction), with
//! AVX512-BF16 on `vdpbf16ps`. Elsewhere the rounded operands go through the f32 `gemm`, which
//! gives the same numbers up to the order of the sums: bf16 products are exact in f32. That
//! emulation is what proves the mode's drift on any CPU and what the hardware kernels are
//! tested against.
//!
//! Around the products: right operands are rounded and packed into the engines' pair layout
//! once where they can be (a layer keeps its weights packed, [`PackedWeights`]; a convolution
//! packs its im2col tile as it makes it, [`PackedRight::from_rows`]), and the kernels write
//! whole blocks of sums in place.

use std::sync::OnceLock;

use super::dispatch::avx2_dispatch;
use super::gemm::{Rows, View};

/// What computes the products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// AMX tiles (Intel Sapphire Rapids and later).
    Amx,
    /// `vdpbf16ps` on 512-bit vectors (Intel Cooper Lake, AMD Zen 4 and later).
    Avx512,
    /// Rounded operands through the f32 `gemm`: no faster than f32.
    Emulated,
}

impl Engine {
    /// The fastest engine this CPU runs, detected once.
    pub fn detect() -> Engine {
        static DETECTED: OnceLock<Engine> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            let available = available();
            available.first().copied().unwrap_or(Engine::Emulated)
        })
    }

    /// Whether the engine is hardware, so that bf16 runs faster than f32.
    pub fn is_hardware(self) -> bool {
        self != Engine::Emulated
    }

    /// Whether bf16 products replace Foley's specialised f32 kernels: convolutions leave
    /// Winograd and the direct kernel for im2col products, attention its f32 register tiles.
    /// AMX multiplies bf16 an order of magnitude faster than f32 FMA, so its products beat
    /// them all. `vdpbf16ps` does only twice the multiply-adds of an f32 FMA, which F(4×4)'s 4×
    /// fewer multiplies beat (Zen 3: F(4×4) ran [2,320,256,16] at 425 effective GFLOP/s, the
    /// f32 reference product at 107–173), so with AVX512-BF16 those kernels stay f32 and bf16
    /// takes the products f32 also hands to `gemm`. The emulation follows AMX, whose numbers
    /// the tests prove.
    pub fn replaces_f32_kernels(self) -> bool {
        self != Engine::Avx512
    }
}

/// The hardware engines this CPU runs, fastest first.
pub fn available() -> Vec<Engine> {
    let mut engines = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if x86::amx_usable() {
            engines.push(Engine::Amx);
        }
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16") {
            engines.push(Engine::Avx512);
        }
    }
    engines
}

/// Rounds `value` to the nearest bf16, ties to even, as bits; a NaN stays a (quiet) NaN.
pub fn round(value: f32) -> u16 {
    round_bits(value.to_bits())
}

/// [`round`] on an f32's bits, without branches so that loops over it vectorise.
#[inline(always)]
fn round_bits(bits: u32) -> u16 {
    let nearest = bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16;
    let quiet_nan = (bits >> 16) | 0x0040;
    let is_nan = bits & 0x7fff_ffff > 0x7f80_0000;
    (if is_nan { quiet_nan } else { nearest }) as u16
}

/// The f32 a bf16 stands for.
#[inline(always)]
pub fn widen(half: u16) -> f32 {
    f32::from_bits(u32::from(half) << 16)
}

/// `value` rounded to the nearest bf16, as an f32.
pub fn rounded(value: f32) -> f32 {
    widen(round(value))
}

#[inline(always)]
fn round_all_body(values: &[f32], out: &mut [u16]) {
    for (slot, value) in out.iter_mut().zip(values) {
        *slot = round_bits(value.to_bits());
    }
}

avx2_dispatch! {
    /// [`round`] on each of `values` into `out`, eight at a time where the CPU has AVX2.
    fn round_all = round_all_body(values: &[f32], out: &mut [u16]);
}

#[inline(always)]
fn extend_rounded_body(values: &[f32], out: &mut Vec<f32>) {
    out.extend(
        values
            .iter()
            .map(|value| widen(round_bits(value.to_bits()))),
    );
}

avx2_dispatch! {
    /// Appends each of `values` rounded to bf16 (as f32) to `out`.
    fn extend_rounded = extend_rounded_body(values: &[f32], out: &mut Vec<f32>);
}

#[inline(always)]
fn round_in_place_body(values: &mut [f32]) {
    for value in values {
        *value = widen(round_bits(value.to_bits()));
    }
}

avx2_dispatch! {
    /// Rounds each of `values` to bf16 (as f32).
    fn round_in_place = round_in_place_body(values: &mut [f32]);
}

/// Rows and columns of the output block one kernel call computes: 2×2 AMX tiles.
const BLOCK: usize = 32;
/// Columns of one AMX B tile, or of one 512-bit vector of f32 sums.
const LANES: usize = 16;
/// Inner-dimension elements one AMX tile row holds (64 bytes of bf16).
const DEPTH_STEP: usize = 32;

/// A left operand as row-major bf16 rows, padded with zeros to whole blocks.
struct LeftRows {
    data: Vec<u16>,
    /// Inner dimension padded to [`DEPTH_STEP`].
    depth: usize,
}

impl LeftRows {
    /// Rows `first..first + rows` of the `m × k` matrix `lhs`.
    fn pack(lhs: &[f32], view: View, first: usize, rows: usize) -> Self {
        let depth = view.cols.div_ceil(DEPTH_STEP) * DEPTH_STEP;
        let mut data = vec![0u16; rows.div_ceil(BLOCK) * BLOCK * depth];
        if view.row_stride == 1 && view.col_stride != 1 {
            // Read transposed (an image's channels as a token's features): each column's rows
            // lie together, so round a column at a time and deal it out.
            let mut column = vec![0u16; rows];
            for col in 0..view.cols {
                round_all(&lhs[first + col * view.col_stride..][..rows], &mut column);
                for (row, &value) in column.iter().enumerate() {
                    data[row * depth + col] = value;
                }
            }
            return Self { data, depth };
        }
        for row in 0..rows {
            let packed = &mut data[row * depth..][..view.cols];
            let start = (first + row) * view.row_stride;
            if view.col_stride == 1 {
                round_all(&lhs[start..][..view.cols], packed);
            } else {
                for (col, slot) in packed.iter_mut().enumerate() {
                    *slot = round(lhs[start + col * view.col_stride]);
                }
            }
        }
        Self { data, depth }
    }
}

/// A right operand in the layout AMX's B tiles and `vdpbf16ps` read: for each run of
/// [`LANES`] columns, for each pair of inner elements, the pair of every column side by side
/// (64 bytes). Columns are padded to whole blocks, the inner dimension to [`DEPTH_STEP`].
struct RightPairs {
    data: Vec<u16>,
    depth: usize,
}

impl RightPairs {
    /// Packs `rhs`.
    fn pack(rhs: &[f32], view: View) -> Self {
        Self::build((view.rows, view.cols), |group, out, cols| {
            if view.row_stride == 1 {
                group.pack_columns(out, rhs, view, cols);
            } else if view.col_stride == 1 {
                let row = |inner: usize| &rhs[inner * view.row_stride + group.first..][..cols];
                let rows = (view.rows, cols);
                group.pack_rows(out, rows, |inner, rounded| round_all(row(inner), rounded));
            } else {
                group.pack_each(out, rhs, view, cols);
            }
        })
    }

    /// A `rows × cols` operand whose rows `fill(row, first, values)` writes, columns
    /// `first..first + values.len()`: an im2col matrix packed as it is made, without its f32
    /// copy.
    fn from_rows(
        (rows, cols): (usize, usize),
        fill: &(impl Fn(usize, usize, &mut [f32]) + Sync),
    ) -> Self {
        Self::build((rows, cols), |group, out, cols| {
            let mut values = [0f32; GROUP_RUNS * LANES];
            group.pack_rows(out, (rows, cols), |inner, rounded| {
                fill(inner, group.first, &mut values[..cols]);
                round_all(&values[..cols], rounded);
            });
        })
    }

    /// A `rows × cols` operand packed a group of runs at a time by `fill_group(group, its
    /// runs, its column count)`, the groups spread over rayon's threads when there are enough
    /// values to pay for it (a layer's weights the first time, an im2col matrix on every call).
    fn build(
        (rows, cols): (usize, usize),
        fill_group: impl Fn(&Group, &mut [u16], usize) + Sync,
    ) -> Self {
        use rayon::prelude::*;
        let depth = rows.div_ceil(DEPTH_STEP) * DEPTH_STEP;
        let runs = cols.div_ceil(BLOCK) * (BLOCK / LANES);
        let mut data = vec![0u16; runs * depth * LANES];
        let fill = |(index, out): (usize, &mut [u16])| {
            let group = Group {
                first: index * GROUP_RUNS * LANES,
                run_len: depth * LANES,
            };
            let group_cols = (GROUP_RUNS * LANES).min(cols.saturating_sub(group.first));
            // Runs that only pad the columns to a whole block stay zeros.
            if group_cols > 0 {
                fill_group(&group, out, group_cols);
            }
        };
        let chunks = GROUP_RUNS * depth * LANES;
        if chunks == 0 {
            // No inner dimension: nothing to pack, and the product is zeros.
        } else if rows * cols >= PARALLEL_PACKING {
            data.par_chunks_mut(chunks).enumerate().for_each(fill);
        } else {
            data.chunks_mut(chunks).enumerate().for_each(fill);
        }
        Self { data, depth }
    }

    /// The packed run holding columns `first..first + LANES`.
    fn run(&self, first: usize) -> &[u16] {
        &self.data[(first / LANES) * self.depth * LANES..][..self.depth * LANES]
    }
}

/// Values from which packing a right operand spreads over the threads.
const PARALLEL_PACKING: usize = 1 << 14;

/// Runs a packing task fills: 128 columns, so a task reads half a KiB of each row.
const GROUP_RUNS: usize = 8;

/// Where inner element `inner` of a run's column `lane` goes in the run.
fn slot(inner: usize, lane: usize) -> usize {
    (inner / 2) * 2 * LANES + lane * 2 + inner % 2
}

/// A packing task's runs: columns from `first`, each run `run_len` values.
struct Group {
    first: usize,
    run_len: usize,
}

impl Group {
    /// Where inner element `inner` of the group's column `col` goes in the group's runs.
    fn index(&self, inner: usize, col: usize) -> usize {
        (col / LANES) * self.run_len + slot(inner, col % LANES)
    }

    /// The group's `cols` columns of any view, one element at a time.
    fn pack_each(&self, out: &mut [u16], rhs: &[f32], view: View, cols: usize) {
        for col in 0..cols {
            let start = (self.first + col) * view.col_stride;
            for inner in 0..view.rows {
                out[self.index(inner, col)] = round(rhs[start + inner * view.row_stride]);
            }
        }
    }

    /// The same from a view whose columns are contiguous (a weight matrix read transposed):
    /// each column rounded in one pass, then its pairs dealt out.
    fn pack_columns(&self, out: &mut [u16], rhs: &[f32], view: View, cols: usize) {
        // Even length: an odd inner dimension's last pair ends in a zero, never overwritten.
        let mut column = vec![0u16; view.rows.div_ceil(2) * 2];
        for col in 0..cols {
            let start = (self.first + col) * view.col_stride;
            round_all(&rhs[start..][..view.rows], &mut column[..view.rows]);
            for (pair, values) in column.chunks_exact(2).enumerate() {
                out[self.index(2 * pair, col)..][..2].copy_from_slice(values);
            }
        }
    }

    /// The same from rows whose stretch under the group `row(inner, rounded)` rounds into
    /// `rounded` (a view with contiguous rows, an im2col matrix as it is made): each pair of
    /// rows interleaved run by run.
    fn pack_rows(
        &self,
        out: &mut [u16],
        (rows, cols): (usize, usize),
        mut row: impl FnMut(usize, &mut [u16]),
    ) {
        let (mut even, mut odd) = (vec![0u16; cols], vec![0u16; cols]);
        for pair in 0..rows.div_ceil(2) {
            row(2 * pair, &mut even);
            if 2 * pair + 1 < rows {
                row(2 * pair + 1, &mut odd);
            } else {
                odd.fill(0);
            }
            for (run, (even, odd)) in even.chunks(LANES).zip(odd.chunks(LANES)).enumerate() {
                let start = self.index(2 * pair, run * LANES);
                let slots = &mut out[start..][..2 * even.len()];
                for (slots, (&even, &odd)) in slots.chunks_exact_mut(2).zip(even.iter().zip(odd)) {
                    slots.copy_from_slice(&[even, odd]);
                }
            }
        }
    }
}

/// A right operand rounded (and for the hardware engines packed) once for one engine: how a
/// layer keeps its weights ready ([`PackedWeights`]) instead of converting them on every call.
pub struct PackedRight {
    engine: Engine,
    /// Inner dimension and columns.
    rows: usize,
    cols: usize,
    form: Form,
}

enum Form {
    /// AMX's and AVX512-BF16's layout.
    Pairs(RightPairs),
    /// The emulation's: the values rounded to bf16 (as f32) in the view they are read through.
    Rounded(Vec<f32>, View),
}

impl PackedRight {
    pub(super) fn new(engine: Engine, rhs: &[f32], view: View) -> Self {
        let form = match engine {
            Engine::Emulated => {
                let (values, view) = rounded_copy(rhs, view);
                Form::Rounded(values, view)
            }
            Engine::Amx | Engine::Avx512 => Form::Pairs(RightPairs::pack(rhs, view)),
        };
        Self {
            engine,
            rows: view.rows,
            cols: view.cols,
            form,
        }
    }

    /// A `rows × cols` operand whose rows `fill(row, first, values)` writes (columns
    /// `first..first + values.len()`), rounded and packed as they are made: an im2col matrix
    /// without its f32 copy on the hardware engines, in one pass with its rounding on the
    /// emulation.
    pub(super) fn from_rows(
        engine: Engine,
        (rows, cols): (usize, usize),
        fill: impl Fn(usize, usize, &mut [f32]) + Sync,
    ) -> Self {
        use rayon::prelude::*;
        let form = match engine {
            Engine::Emulated => {
                let mut values = vec![0f32; rows * cols];
                if cols > 0 {
                    values
                        .par_chunks_mut(cols)
                        .enumerate()
                        .for_each(|(row, values)| {
                            fill(row, 0, values);
                            round_in_place(values);
                        });
                }
                Form::Rounded(values, View::rows(rows, cols, cols))
            }
            Engine::Amx | Engine::Avx512 => Form::Pairs(RightPairs::from_rows((rows, cols), &fill)),
        };
        Self {
            engine,
            rows,
            cols,
            form,
        }
    }

    pub(super) fn engine(&self) -> Engine {
        self.engine
    }

    /// Inner dimension and columns.
    pub(super) fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// The emulation's rounded values and their view.
    pub(super) fn rounded(&self) -> Option<(&[f32], View)> {
        match &self.form {
            Form::Rounded(values, view) => Some((values, *view)),
            Form::Pairs(_) => None,
        }
    }
}

/// A layer's weights packed for each engine that multiplies them, each the first time it does.
/// A pointer-keyed cache could hand a freed layer's packing to a new one at the same address;
/// this one lives and dies with its layer.
#[derive(Default)]
pub struct PackedWeights {
    by_engine: [OnceLock<PackedRight>; 3],
}

impl PackedWeights {
    /// The weights `rhs` (always the same values and view for one layer) packed for `engine`.
    pub(super) fn get(&self, engine: Engine, rhs: &[f32], view: View) -> &PackedRight {
        let slot = match engine {
            Engine::Amx => 0,
            Engine::Avx512 => 1,
            Engine::Emulated => 2,
        };
        self.by_engine[slot].get_or_init(|| PackedRight::new(engine, rhs, view))
    }
}

impl std::fmt::Debug for PackedWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let packed: Vec<_> = self
            .by_engine
            .iter()
            .filter_map(|slot| slot.get().map(PackedRight::engine))
            .collect();
        f.debug_struct("PackedWeights")
            .field("packed", &packed)
            .finish()
    }
}

/// `dst = lhs · right` (or `+=` when `accumulate`) on a hardware engine, splitting the rows
/// over rayon's threads when `parallel`.
///
/// # Safety
/// As for the f32 product: `dst` must be valid for writes (and, when `accumulate`, reads) of
/// every element `dst_view` addresses and must not overlap the operands. The left view must
/// fit its slice and the shapes agree (the caller checked them); `right` is packed for a
/// hardware engine.
pub(super) unsafe fn run(
    (dst, dst_view): (*mut f32, View),
    (lhs, lhs_view): (&[f32], View),
    right: &PackedRight,
    accumulate: bool,
    parallel: bool,
) {
    use rayon::prelude::*;
    let (engine, Form::Pairs(right)) = (right.engine, &right.form) else {
        unreachable!("the emulation multiplies through the f32 gemm")
    };
    let (row_blocks, col_blocks) = (dst_view.rows.div_ceil(BLOCK), dst_view.cols.div_ceil(BLOCK));
    if row_blocks == 0 || col_blocks == 0 {
        return;
    }
    let threads = if parallel {
        rayon::current_num_threads().max(1)
    } else {
        1
    };
    // The rows split first: each task packs its own rows of `lhs`, which then stay in cache
    // for every column block. With fewer row blocks than threads (a few tokens through a wide
    // layer) the columns split too, each of those tasks packing the same few rows.
    let blocks_per_row_task = row_blocks.div_ceil(threads);
    let row_tasks = row_blocks.div_ceil(blocks_per_row_task);
    let blocks_per_col_task = col_blocks.div_ceil((threads / row_tasks).max(1));
    let col_tasks = col_blocks.div_ceil(blocks_per_col_task);
    let dst = Rows(dst);
    let task = |index: usize| {
        let first = (index / col_tasks) * blocks_per_row_task * BLOCK;
        let rows = (blocks_per_row_task * BLOCK).min(dst_view.rows - first);
        let first_col = (index % col_tasks) * blocks_per_col_task * BLOCK;
        let end_col = (first_col + blocks_per_col_task * BLOCK).min(dst_view.cols);
        let left = LeftRows::pack(lhs, lhs_view, first, rows);
        let mut sums = [0f32; BLOCK * BLOCK];
        let _tiles = (engine == Engine::Amx).then(x86::Tiles::configure);
        for block_row in (0..rows).step_by(BLOCK) {
            let a = &left.data[block_row * left.depth..][..BLOCK * left.depth];
            let valid_rows = BLOCK.min(rows - block_row);
            for block_col in (first_col..end_col).step_by(BLOCK) {
                let b = (right.run(block_col), right.run(block_col + LANES));
                let valid_cols = BLOCK.min(dst_view.cols - block_col);
                let corner = (first + block_row) * dst_view.row_stride + block_col;
                if dst_view.col_stride == 1 && valid_rows == BLOCK && valid_cols == BLOCK {
                    // A whole block of a row-major output: the kernel reads and writes it in
                    // place, with no pass through `sums`.
                    let out = x86::Out {
                        // SAFETY: the block lies inside `dst_view`; tasks own disjoint blocks.
                        corner: unsafe { dst.get().add(corner) },
                        row_stride: dst_view.row_stride,
                        add: accumulate,
                    };
                    // SAFETY: `a` holds BLOCK rows of `depth` values, each run `depth` pairs
                    // of LANES columns; the engine was detected on this CPU; `out` as above.
                    unsafe { x86::block(engine, a, left.depth, b, out) };
                    continue;
                }
                let out = x86::Out {
                    corner: sums.as_mut_ptr(),
                    row_stride: BLOCK,
                    add: false,
                };
                // SAFETY: as above, with `sums` as the output block.
                unsafe { x86::block(engine, a, left.depth, b, out) };
                for (row, sums) in sums.chunks_exact(BLOCK).take(valid_rows).enumerate() {
                    let row_start = (first + block_row + row) * dst_view.row_stride;
                    for (col, &sum) in sums[..valid_cols].iter().enumerate() {
                        let offset = row_start + (block_col + col) * dst_view.col_stride;
                        // SAFETY: the element is inside `dst_view`, which the caller vouches
                        // for; tasks write disjoint blocks.
                        unsafe {
                            let slot = dst.get().add(offset);
                            *slot = if accumulate { *slot + sum } else { sum };
                        }
                    }
                }
            }
        }
    };
    let tasks = row_tasks * col_tasks;
    if tasks > 1 {
        (0..tasks).into_par_iter().for_each(task);
    } else {
        task(0);
    }
}

/// `values` rounded to bf16 (as f32) and the view to read them through: what the f32 `gemm`
/// multiplies to emulate the mode. A view that covers most of its extent is rounded whole in
/// one vectorised pass and keeps its strides; a sparse one is gathered into a compact matrix.
pub(super) fn rounded_copy(values: &[f32], view: View) -> (Vec<f32>, View) {
    let extent = view.extent();
    let mut copy = Vec::new();
    if extent <= 2 * view.rows * view.cols {
        extend_rounded(&values[..extent], &mut copy);
        return (copy, view);
    }
    copy.reserve(view.rows * view.cols);
    for row in 0..view.rows {
        let start = row * view.row_stride;
        copy.extend((0..view.cols).map(|col| rounded(values[start + col * view.col_stride])));
    }
    (copy, View::rows(view.rows, view.cols, view.cols))
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::asm;
    use std::arch::x86_64::*;

    use super::{BLOCK, DEPTH_STEP, Engine, LANES};

    /// Whether the CPU has AMX-TILE and AMX-BF16 and the OS lets this process use the tiles.
    pub fn amx_usable() -> bool {
        // CPUID leaf 7, subleaf 0: structured extended features.
        let leaf7 = __cpuid_count(7, 0);
        let amx_bf16 = leaf7.edx & (1 << 22) != 0;
        let amx_tile = leaf7.edx & (1 << 24) != 0;
        amx_bf16 && amx_tile && tile_data_permitted()
    }

    /// Linux keeps AMX's 8 KiB of tile state off until a process asks for it.
    #[cfg(target_os = "linux")]
    fn tile_data_permitted() -> bool {
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: arch_prctl with these arguments only changes this process's permissions.
        unsafe {
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            ) == 0
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn tile_data_permitted() -> bool {
        false
    }

    /// This thread's tile configuration, released when dropped.
    pub struct Tiles;

    impl Tiles {
        /// Eight tiles of 16 rows × 64 bytes: four of sums, two of A, two of B.
        pub fn configure() -> Tiles {
            #[repr(C, align(64))]
            struct Config([u8; 64]);
            let mut config = Config([0; 64]);
            config.0[0] = 1; // palette 1
            for tile in 0..8 {
                config.0[16 + 2 * tile] = 64; // bytes a row (little-endian u16)
                config.0[48 + tile] = 16; // rows
            }
            // SAFETY: only built where `amx_usable` held; the config is a valid palette-1
            // layout, read before this returns.
            unsafe {
                asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack, readonly))
            };
            Tiles
        }
    }

    impl Drop for Tiles {
        fn drop(&mut self) {
            // SAFETY: releases the configuration `configure` loaded on this thread.
            unsafe { asm!("tilerelease", options(nostack, nomem)) };
        }
    }

    /// Where a kernel call leaves its BLOCK × BLOCK sums: rows `row_stride` floats apart from
    /// `corner`, added onto what is there when `add`.
    pub struct Out {
        pub corner: *mut f32,
        pub row_stride: usize,
        pub add: bool,
    }

    /// `out` (+)= `a` (BLOCK rows of `depth`) · the two column runs.
    ///
    /// # Safety
    /// `engine` must run on this CPU (and for AMX, [`Tiles::configure`] be live on this
    /// thread); the slices must be as long as described; `out` must address BLOCK rows of
    /// BLOCK floats valid for writes (and reads when `add`) that nothing else touches.
    pub unsafe fn block(
        engine: Engine,
        a: &[u16],
        depth: usize,
        (b0, b1): (&[u16], &[u16]),
        out: Out,
    ) {
        assert!(a.len() >= BLOCK * depth && b0.len() >= depth * LANES && b1.len() >= depth * LANES);
        match engine {
            // SAFETY: passed on from the caller.
            Engine::Amx => unsafe { amx(a, depth, (b0, b1), out) },
            Engine::Avx512 => unsafe { avx512(a, depth, (b0, b1), out) },
            Engine::Emulated => unreachable!("the emulation multiplies through the f32 gemm"),
        }
    }

    /// Four tiles of sums (rows 0–15 / 16–31 × columns 0–15 / 16–31), each step loading two A
    /// tiles (16 rows × 32 inner) and two B tiles (16 inner pairs × 16 columns).
    unsafe fn amx(a: &[u16], depth: usize, (b0, b1): (&[u16], &[u16]), out: Out) {
        let a = a.as_ptr();
        let a_stride = depth * 2;
        let c_stride = out.row_stride * 4;
        // SAFETY (all blocks below): the pointers stay inside the slices `block` checked and
        // the output block the caller vouched for; the tiles were configured by the caller.
        unsafe {
            // The four 16×16 tiles' corners in the output block.
            let c = out.corner;
            let [c00, c01, c10, c11] = [
                0,
                LANES,
                LANES * out.row_stride,
                LANES * out.row_stride + LANES,
            ]
            .map(|offset| c.add(offset));
            if out.add {
                asm!(
                    "tileloadd tmm0, [{c00} + {stride}*1]",
                    "tileloadd tmm1, [{c01} + {stride}*1]",
                    "tileloadd tmm2, [{c10} + {stride}*1]",
                    "tileloadd tmm3, [{c11} + {stride}*1]",
                    c00 = in(reg) c00,
                    c01 = in(reg) c01,
                    c10 = in(reg) c10,
                    c11 = in(reg) c11,
                    stride = in(reg) c_stride,
                    options(nostack, readonly)
                );
            } else {
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    options(nostack, nomem)
                );
            }
            for step in 0..depth / DEPTH_STEP {
                asm!(
                    "tileloadd tmm4, [{a0} + {a_stride}*1]",
                    "tileloadd tmm5, [{a1} + {a_stride}*1]",
                    "tileloadd tmm6, [{b0} + {b_stride}*1]",
                    "tileloadd tmm7, [{b1} + {b_stride}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    a0 = in(reg) a.add(step * DEPTH_STEP),
                    a1 = in(reg) a.add(LANES * depth + step * DEPTH_STEP),
                    a_stride = in(reg) a_stride,
                    b0 = in(reg) b0.as_ptr().add(step * DEPTH_STEP * LANES),
                    b1 = in(reg) b1.as_ptr().add(step * DEPTH_STEP * LANES),
                    b_stride = in(reg) 2 * LANES * 2,
                    options(nostack, readonly)
                );
            }
            asm!(
                "tilestored [{c00} + {stride}*1], tmm0",
                "tilestored [{c01} + {stride}*1], tmm1",
                "tilestored [{c10} + {stride}*1], tmm2",
                "tilestored [{c11} + {stride}*1], tmm3",
                c00 = in(reg) c00,
                c01 = in(reg) c01,
                c10 = in(reg) c10,
                c11 = in(reg) c11,
                stride = in(reg) c_stride,
                options(nostack)
            );
        }
    }

    /// Eight rows at a time: 16 vectors of sums, each inner pair one broadcast of a row's pair
    /// against the two column runs.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn avx512(a: &[u16], depth: usize, (b0, b1): (&[u16], &[u16]), out: Out) {
        const ROWS: usize = 8;
        let (a, b0, b1) = (a.as_ptr(), b0.as_ptr(), b1.as_ptr());
        for first in (0..BLOCK).step_by(ROWS) {
            let mut acc = [[_mm512_setzero_ps(); 2]; ROWS];
            if out.add {
                for (row, acc) in acc.iter_mut().enumerate() {
                    // SAFETY: the caller vouched for BLOCK rows of BLOCK floats at `corner`.
                    unsafe {
                        let c = out.corner.add((first + row) * out.row_stride);
                        *acc = [_mm512_loadu_ps(c), _mm512_loadu_ps(c.add(LANES))];
                    }
                }
            }
            for pair in 0..depth / 2 {
                // SAFETY: `block` checked that both runs hold `depth` pairs of LANES columns
                // and `a` BLOCK rows of `depth`; the transmutes reinterpret whole vectors.
                unsafe {
                    let x0 = std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                        b0.add(pair * 2 * LANES).cast(),
                    ));
                    let x1 = std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                        b1.add(pair * 2 * LANES).cast(),
                    ));
                    for (row, acc) in acc.iter_mut().enumerate() {
                        let at = a.add((first + row) * depth + pair * 2);
                        let both = at.cast::<i32>().read_unaligned();
                        let pairs =
                            std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(both));
                        acc[0] = _mm512_dpbf16_ps(acc[0], pairs, x0);
                        acc[1] = _mm512_dpbf16_ps(acc[1], pairs, x1);
                    }
                }
            }
            for (row, acc) in acc.iter().enumerate() {
                // SAFETY: as for the loads above.
                unsafe {
                    let c = out.corner.add((first + row) * out.row_stride);
                    _mm512_storeu_ps(c, acc[0]);
                    _mm512_storeu_ps(c.add(LANES), acc[1]);
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    use super::Engine;

    pub struct Tiles;

    impl Tiles {
        pub fn configure() -> Tiles {
            unreachable!("AMX is x86-64 only")
        }
    }

    pub struct Out {
        pub corner: *mut f32,
        pub row_stride: usize,
        pub add: bool,
    }

    pub unsafe fn block(_: Engine, _: &[u16], _: usize, _: (&[u16], &[u16]), _: Out) {
        unreachable!("the bf16 hardware engines are x86-64 only")
    }
}

#[cfg(test)]
mod tests {
    use super::super::gemm::{Precision, View, matmul, matmul_packed};
    use super::*;

    #[test]
    fn rounding_is_to_nearest_with_ties_to_even() {
        assert_eq!(round(1.0), 0x3f80);
        assert_eq!(round(-2.5), 0xc020);
        // Halfway between 0x3f80 and 0x3f81: to the even one; just above: up.
        assert_eq!(round(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(round(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(round(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert_eq!(round(f32::MAX), 0x7f80, "past the largest bf16: infinity");
        assert_eq!(round(f32::INFINITY), 0x7f80);
        assert!(widen(round(f32::NAN)).is_nan());
        assert!(
            widen(round(f32::from_bits(0x7f80_0001))).is_nan(),
            "a NaN never becomes inf"
        );
        assert_eq!(widen(round(3.0)), 3.0);
    }

    /// A column-major output (an image's planes, as `proj_out` writes them) gets the same
    /// products, on every engine, and nothing between its columns is written.
    #[test]
    fn column_major_outputs_get_the_same_products() {
        let mut engines = available();
        engines.push(Engine::Emulated);
        for engine in engines {
            for (m, k, n) in [(70, 100, 50), (64, 32, 64), (5, 3, 33)] {
                let lhs = values(m * k, 3);
                let rhs = values(k * n, 5);
                let (lhs_view, rhs_view) = (View::rows(m, k, k), View::transposed(k, n, k));
                let dst_view = View::transposed(m, n, m + 2);
                let start = values((m + 2) * n, 7);
                let mut dst = start.clone();
                let operands = ((&lhs[..], lhs_view), (&rhs[..], rhs_view));
                let expected = reference((&dst, dst_view), operands.0, operands.1, true);
                let bf16 = Precision::Bf16(engine);
                matmul(
                    (&mut dst, dst_view),
                    operands.0,
                    operands.1,
                    true,
                    true,
                    bf16,
                );
                for col in 0..n {
                    for row in 0..m {
                        let ours = f64::from(dst[col * (m + 2) + row]);
                        let theirs = expected[row * n + col];
                        assert!(
                            (ours - theirs).abs() <= 1e-5 * (1.0 + k as f64),
                            "{engine:?} {m}×{k}×{n} at ({row}, {col}): {ours} against {theirs}"
                        );
                    }
                    assert_eq!(
                        dst[col * (m + 2) + m..][..2],
                        start[col * (m + 2) + m..][..2]
                    );
                }
            }
        }
    }

    /// The vectorised rounding gives the scalar one's bits: ties, NaNs with and without
    /// payloads, infinities, subnormals, the largest finite values, and random patterns.
    #[test]
    fn rounding_a_slice_rounds_each_value() {
        let mut bits: Vec<u32> = vec![
            0x3f80_8000,
            0x3f81_8000,
            0xbf80_8001,
            0x7fc0_0000,
            0x7f80_0001,
            0xffbf_ffff,
            0x7f80_0000,
            0xff80_0000,
            0x0000_0001,
            0x8000_8000,
            0x7f7f_ffff,
            0xff7f_8000,
        ];
        let mut state = 12_345u32;
        bits.extend((0..1000).map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            state
        }));
        let values: Vec<f32> = bits.iter().map(|&bits| f32::from_bits(bits)).collect();
        let mut halves = vec![0u16; values.len()];
        round_all(&values, &mut halves);
        let mut widened = Vec::new();
        extend_rounded(&values, &mut widened);
        for ((&value, &half), &wide) in values.iter().zip(&halves).zip(&widened) {
            assert_eq!(half, round(value), "{:#010x}", value.to_bits());
            assert_eq!(wide.to_bits(), rounded(value).to_bits());
        }
    }

    /// Packing gives each rounded element its place in the runs whichever way the view lies
    /// (rows contiguous, columns contiguous, neither): odd inner sizes, column counts off the
    /// run and block sizes, and a matrix large enough to pack on several threads.
    #[test]
    fn packing_puts_each_rounded_element_in_its_place() {
        for (k, n) in [(7, 5), (33, 40), (64, 17), (1, 1), (0, 3), (130, 200)] {
            let rhs = values((2 * n + 1) * (k + 2), 11);
            let scattered = View {
                rows: k,
                cols: n,
                row_stride: 2 * n + 1,
                col_stride: 2,
            };
            for view in [
                View::rows(k, n, n + 1),
                View::transposed(k, n, k + 2),
                scattered,
            ] {
                let packed = RightPairs::pack(&rhs, view);
                let mut expected = vec![0u16; packed.data.len()];
                for col in 0..n {
                    for inner in 0..k {
                        let value = rhs[inner * view.row_stride + col * view.col_stride];
                        let run = (col / LANES) * packed.depth * LANES;
                        expected[run + slot(inner, col % LANES)] = round(value);
                    }
                }
                let strides = (view.row_stride, view.col_stride);
                assert!(packed.data == expected, "{k}×{n} {strides:?}");
            }
        }
    }

    /// `dst (+)= lhs · rhs` in f64 on the operands rounded to bf16.
    fn reference(
        (dst, dst_view): (&[f32], View),
        (lhs, lhs_view): (&[f32], View),
        (rhs, rhs_view): (&[f32], View),
        accumulate: bool,
    ) -> Vec<f64> {
        let at = |values: &[f32], view: View, row: usize, col: usize| {
            f64::from(rounded(
                values[row * view.row_stride + col * view.col_stride],
            ))
        };
        let mut out = Vec::new();
        for row in 0..dst_view.rows {
            for col in 0..dst_view.cols {
                let start = if accumulate {
                    f64::from(dst[row * dst_view.row_stride + col * dst_view.col_stride])
                } else {
                    0.0
                };
                out.push(
                    start
                        + (0..lhs_view.cols)
                            .map(|k| at(lhs, lhs_view, row, k) * at(rhs, rhs_view, k, col))
                            .sum::<f64>(),
                );
            }
        }
        out
    }

    fn values(count: usize, seed: u32) -> Vec<f32> {
        let mut state = seed;
        (0..count)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    /// Every engine this CPU runs (the emulation everywhere; AMX and AVX512-BF16 where
    /// present, e.g. `tools/emulate/sapphire-rapids.sh`) gives the f64 product of the rounded
    /// operands: row and column counts off the block size, an inner dimension off the tile
    /// depth, transposed operands, a strided output added onto, one thread and many.
    #[test]
    fn every_engine_multiplies_the_rounded_operands() {
        let mut engines = available();
        engines.push(Engine::Emulated);
        eprintln!("bf16 engines on this CPU: {engines:?}");
        for engine in engines {
            for (m, k, n) in [
                (70, 100, 50),
                (64, 96, 64),
                (5, 3, 33),
                (33, 64, 16),
                (1, 0, 7),
            ] {
                for (accumulate, parallel, transposed) in [
                    (false, true, false),
                    (true, false, true),
                    (true, true, true),
                ] {
                    let lhs = values(m * k, 3);
                    let rhs = values(k * n, 5);
                    let (lhs_view, rhs_view) = if transposed {
                        (View::transposed(m, k, m), View::transposed(k, n, k))
                    } else {
                        (View::rows(m, k, k), View::rows(k, n, n))
                    };
                    // Output rows 3 apart from their neighbours' starts: a strided view.
                    let dst_view = View::rows(m, n, n + 3);
                    let mut dst = values(m * (n + 3), 7);
                    let expected = reference(
                        (&dst, dst_view),
                        (&lhs, lhs_view),
                        (&rhs, rhs_view),
                        accumulate,
                    );
                    matmul(
                        (&mut dst, dst_view),
                        (&lhs, lhs_view),
                        (&rhs, rhs_view),
                        accumulate,
                        parallel,
                        Precision::Bf16(engine),
                    );
                    // The right operand packed once and multiplied twice, as a layer's weights.
                    let right = PackedRight::new(engine, &rhs, rhs_view);
                    let mut outputs = vec![("per call", dst)];
                    for call in ["packed, first call", "packed, second call"] {
                        let mut dst = values(m * (n + 3), 7);
                        let lhs = (&lhs[..], lhs_view);
                        matmul_packed((&mut dst, dst_view), lhs, &right, accumulate, parallel);
                        outputs.push((call, dst));
                    }
                    let untouched = values(m * (n + 3), 7);
                    for (how, dst) in outputs {
                        for row in 0..m {
                            for col in 0..n {
                                let ours = f64::from(dst[row * (n + 3) + col]);
                                let theirs = expected[row * n + col];
                                assert!(
                                    (ours - theirs).abs() <= 1e-5 * (1.0 + k as f64),
                                    "{engine:?} {how} {m}×{k}×{n} ({accumulate}, {parallel}, \
                                     {transposed}) at ({row}, {col}): {ours} against {theirs}"
                                );
                            }
                            // The padding between output rows is never written.
                            assert_eq!(
                                dst[row * (n + 3) + n..][..3],
                                untouched[row * (n + 3) + n..][..3]
                            );
                        }
                    }
                }
            }
        }
    }
}
