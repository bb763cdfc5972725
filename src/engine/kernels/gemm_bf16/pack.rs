//! The engines' operands: left rows and right pairs rounded to bf16 and laid out as the
//! AMX tiles and `vdpbf16ps` read them, and a layer's weights kept in that form.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::super::dispatch::avx2_dispatch;
use super::super::gemm::View;
use super::round::{round, round_all, round_bits, round_in_place};
use super::{BLOCK, DEPTH_STEP, Engine, LANES, rounded_copy};

/// A left operand as row-major bf16 rows, padded with zeros to whole blocks.
pub(super) struct LeftRows {
    pub(super) data: Vec<u16>,
    /// Inner dimension padded to [`DEPTH_STEP`].
    pub(super) depth: usize,
}

impl LeftRows {
    /// Rows `first..first + rows` of the `m × k` matrix `lhs`.
    pub(super) fn pack(lhs: &[f32], view: View, first: usize, rows: usize) -> Self {
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
pub(super) struct RightPairs {
    data: Vec<u16>,
    depth: usize,
    /// The operand's rows and columns: which slots hold values and which padding.
    dims: (usize, usize),
}

impl RightPairs {
    fn empty() -> Self {
        Self {
            data: Vec::new(),
            depth: 0,
            dims: (0, 0),
        }
    }

    /// Packs `rhs`.
    fn pack(rhs: &[f32], view: View) -> Self {
        let mut packed = Self::empty();
        packed.build((view.rows, view.cols), |group, out, cols| {
            if view.row_stride == 1 {
                group.pack_columns(out, rhs, view, cols);
            } else if view.col_stride == 1 {
                let row = |inner: usize| &rhs[inner * view.row_stride + group.first..][..cols];
                group.deal_rows(out, view.rows, row);
            } else {
                group.pack_each(out, rhs, view, cols);
            }
        });
        packed
    }

    /// Makes this the `rows × cols` operand whose rows `fill(row, first, values)` writes,
    /// columns `first..first + values.len()`: an im2col matrix packed as it is made, without
    /// its f32 copy.
    fn fill_rows(
        &mut self,
        (rows, cols): (usize, usize),
        fill: &(impl Fn(usize, usize, &mut [f32]) + Sync),
    ) {
        self.build((rows, cols), |group, out, cols| {
            group.pack_rows(out, (rows, cols), |inner, values| {
                fill(inner, group.first, values)
            });
        });
    }

    /// Makes this the `rows × cols` operand whose runs `copy(first, columns, run)` writes
    /// already rounded and interleaved: for columns `first..first + columns` (at most
    /// [`LANES`]), pair of rows `p` at `run[p * 2 * LANES..]`, each column's two values side by
    /// side (a missing last row as zeros).
    fn fill_runs(
        &mut self,
        (rows, cols): (usize, usize),
        copy: &(impl Fn(usize, usize, &mut [u16]) + Sync),
    ) {
        self.build((rows, cols), |group, out, cols| {
            for run in 0..cols.div_ceil(LANES) {
                let columns = LANES.min(cols - run * LANES);
                let slots = &mut out[run * group.run_len..][..group.run_len];
                copy(group.first + run * LANES, columns, slots);
            }
        });
    }

    /// Makes this a `rows × cols` operand packed a group of runs at a time by
    /// `fill_group(group, its runs, its column count)`, the groups spread over rayon's threads
    /// when there are enough values to pay for it (a layer's weights the first time, an im2col
    /// matrix on every call). The memory is reused; it is cleared only when the shape changes,
    /// since the same shape leaves the same slots as padding.
    fn build(
        &mut self,
        (rows, cols): (usize, usize),
        fill_group: impl Fn(&Group, &mut [u16], usize) + Sync,
    ) {
        use rayon::prelude::*;
        let depth = rows.div_ceil(DEPTH_STEP) * DEPTH_STEP;
        let runs = cols.div_ceil(BLOCK) * (BLOCK / LANES);
        let len = runs * depth * LANES;
        if self.dims != (rows, cols) || self.data.len() != len {
            self.data.clear();
            self.data.resize(len, 0);
            (self.depth, self.dims) = (depth, (rows, cols));
        }
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
            self.data.par_chunks_mut(chunks).enumerate().for_each(fill);
        } else {
            self.data.chunks_mut(chunks).enumerate().for_each(fill);
        }
    }

    /// Inner dimension padded to [`DEPTH_STEP`]: the values each run holds a column.
    pub(super) fn depth(&self) -> usize {
        self.depth
    }

    /// The packed run holding columns `first..first + LANES`.
    pub(super) fn run(&self, first: usize) -> &[u16] {
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

    /// The group's `cols` columns of rows that lie in memory as a view's contiguous rows
    /// (`row(inner)` each): each pair of rows rounded and interleaved in one pass, read where
    /// they lie (copying each into a buffer first was 0.5 % of a bf16 UNet step).
    fn deal_rows<'a>(&self, out: &mut [u16], rows: usize, row: impl Fn(usize) -> &'a [f32]) {
        let zeros = [0f32; GROUP_RUNS * LANES];
        for pair in 0..rows.div_ceil(2) {
            let even = row(2 * pair);
            let odd = match 2 * pair + 1 < rows {
                true => row(2 * pair + 1),
                false => &zeros[..even.len()],
            };
            deal_pair(even, odd, &mut out[self.index(2 * pair, 0)..], self.run_len);
        }
    }

    /// The same from rows whose stretch under the group `row(inner, values)` writes (an im2col
    /// matrix as it is made).
    fn pack_rows(
        &self,
        out: &mut [u16],
        (rows, cols): (usize, usize),
        mut row: impl FnMut(usize, &mut [f32]),
    ) {
        let mut buffers = [0f32; 2 * GROUP_RUNS * LANES];
        let (even, odd) = buffers.split_at_mut(GROUP_RUNS * LANES);
        let (even, odd) = (&mut even[..cols], &mut odd[..cols]);
        for pair in 0..rows.div_ceil(2) {
            row(2 * pair, even);
            if 2 * pair + 1 < rows {
                row(2 * pair + 1, odd);
            } else {
                odd.fill(0.0);
            }
            deal_pair(even, odd, &mut out[self.index(2 * pair, 0)..], self.run_len);
        }
    }
}

#[inline(always)]
fn deal_pair_body(even: &[f32], odd: &[f32], out: &mut [u16], run_len: usize) {
    for (run, (even, odd)) in even.chunks(LANES).zip(odd.chunks(LANES)).enumerate() {
        let slots = &mut out[run * run_len..][..2 * even.len()];
        let pairs = slots.as_mut_ptr().cast::<u32>();
        for (lane, (&even, &odd)) in even.iter().zip(odd).enumerate() {
            let [a, b] = round_bits(even.to_bits()).to_ne_bytes();
            let [c, d] = round_bits(odd.to_bits()).to_ne_bytes();
            // SAFETY: `slots` holds two u16s for each lane, so the lane's four bytes lie inside
            // it; the write is unaligned.
            unsafe {
                pairs
                    .add(lane)
                    .write_unaligned(u32::from_ne_bytes([a, b, c, d]))
            };
        }
    }
}

avx2_dispatch! {
    fn deal_pair_avx2 = deal_pair_body(even: &[f32], odd: &[f32], out: &mut [u16], run_len: usize);
}

/// Rounds a pair of rows to bf16 ([`round`]'s bits) and deals them into a group's runs: run
/// `r` takes columns `16r..16r + 16`, each one's two values side by side, at
/// `out[r * run_len..]`. With AVX512-BF16's conversion where the CPU has it.
pub(super) fn deal_pair(even: &[f32], odd: &[f32], out: &mut [u16], run_len: usize) {
    #[cfg(target_arch = "x86_64")]
    if super::round::has_avx512_bf16() {
        // SAFETY: the CPU was just checked to support AVX-512F and AVX512-BF16.
        return unsafe { converting::deal_pair(even, odd, out, run_len) };
    }
    deal_pair_avx2(even, odd, out, run_len)
}

#[cfg(target_arch = "x86_64")]
mod converting {
    use std::arch::x86_64::*;

    use super::super::round::converting::{has_subnormal, widened};
    use super::LANES;

    /// [`super::deal_pair`] with `vcvtneps2bf16` on whole runs: each column's pair is one
    /// 32-bit lane, the even row's half below. A run holding a subnormal (which the
    /// instruction flushes) and a partial last run take the portable code.
    ///
    /// # Safety
    /// The CPU has AVX-512F and AVX512-BF16.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn deal_pair(even: &[f32], odd: &[f32], out: &mut [u16], run_len: usize) {
        for (run, (even, odd)) in even.chunks(LANES).zip(odd.chunks(LANES)).enumerate() {
            let slots = &mut out[run * run_len..][..2 * even.len()];
            if even.len() < LANES || odd.len() < LANES {
                super::deal_pair_body(even, odd, slots, 2 * even.len());
                continue;
            }
            // SAFETY: both rows hold `LANES` values here and `slots` twice that.
            unsafe {
                let low = _mm512_loadu_ps(even.as_ptr());
                let high = _mm512_loadu_ps(odd.as_ptr());
                if has_subnormal(low) || has_subnormal(high) {
                    super::deal_pair_body(even, odd, slots, 2 * LANES);
                    continue;
                }
                let pairs = _mm512_or_si512(widened(low), _mm512_slli_epi32::<16>(widened(high)));
                _mm512_storeu_si512(slots.as_mut_ptr().cast(), pairs);
            }
        }
    }
}

/// A right operand rounded (and for the hardware engines packed) once for one engine: how a
/// layer keeps its weights ready ([`PackedWeights`]) instead of converting them on every call.
pub struct PackedRight {
    pub(super) engine: Engine,
    pub(super) form: Form,
}

pub(super) enum Form {
    /// AMX's and AVX512-BF16's layout.
    Pairs(RightPairs),
    /// The emulation's: the values rounded to bf16 (as f32) in the view they are read through.
    Rounded(Vec<f32>, View),
}

impl PackedRight {
    pub(in crate::engine::kernels) fn new(engine: Engine, rhs: &[f32], view: View) -> Self {
        let form = match engine {
            Engine::Emulated => {
                let (values, view) = rounded_copy(rhs, view);
                Form::Rounded(values, view)
            }
            Engine::Amx | Engine::Avx512 => Form::Pairs(RightPairs::pack(rhs, view)),
        };
        Self { engine, form }
    }

    /// An operand for `engine` that holds nothing yet, to be filled by the `refill_` methods.
    pub(in crate::engine::kernels) fn empty(engine: Engine) -> Self {
        let form = match engine {
            Engine::Emulated => Form::Rounded(Vec::new(), View::rows(0, 0, 0)),
            Engine::Amx | Engine::Avx512 => Form::Pairs(RightPairs::empty()),
        };
        Self { engine, form }
    }

    /// A fresh operand made by [`PackedRight::refill_rows`], which the tests compare against.
    #[cfg(test)]
    pub(super) fn from_rows(
        engine: Engine,
        dims: (usize, usize),
        fill: impl Fn(usize, usize, &mut [f32]) + Sync,
    ) -> Self {
        let mut right = Self::empty(engine);
        right.refill_rows(dims, fill);
        right
    }

    /// Makes this the `rows × cols` operand whose rows `fill(row, first, values)` writes
    /// (columns `first..first + values.len()`), rounded and packed as they are made, in the
    /// memory this one holds: a convolution's im2col tiles one after another, without an f32
    /// copy on the hardware engines and without allocating and clearing each.
    pub(in crate::engine::kernels) fn refill_rows(
        &mut self,
        (rows, cols): (usize, usize),
        fill: impl Fn(usize, usize, &mut [f32]) + Sync,
    ) {
        use rayon::prelude::*;
        match &mut self.form {
            Form::Rounded(values, view) => {
                // `fill` writes every value, so old ones need no clearing.
                values.resize(rows * cols, 0.0);
                if cols > 0 {
                    values
                        .par_chunks_mut(cols)
                        .enumerate()
                        .for_each(|(row, values)| {
                            fill(row, 0, values);
                            round_in_place(values);
                        });
                }
                *view = View::rows(rows, cols, cols);
            }
            Form::Pairs(pairs) => pairs.fill_rows((rows, cols), &fill),
        }
    }

    /// Makes this, for a hardware engine, the `rows × cols` operand whose runs
    /// `copy(first, columns, run)` writes already rounded and interleaved (see
    /// `RightPairs::fill_runs`).
    pub(super) fn refill_runs(
        &mut self,
        (rows, cols): (usize, usize),
        copy: impl Fn(usize, usize, &mut [u16]) + Sync,
    ) {
        match &mut self.form {
            Form::Pairs(pairs) => pairs.fill_runs((rows, cols), &copy),
            Form::Rounded(..) => unreachable!("pairs are the hardware engines' layout"),
        }
    }

    pub(in crate::engine::kernels) fn engine(&self) -> Engine {
        self.engine
    }

    /// Inner dimension and columns.
    pub(in crate::engine::kernels) fn dims(&self) -> (usize, usize) {
        match &self.form {
            Form::Pairs(pairs) => pairs.dims,
            Form::Rounded(_, view) => (view.rows, view.cols),
        }
    }

    /// Whether both hold the same values in the same layout.
    #[cfg(test)]
    pub(super) fn same_values(&self, other: &PackedRight) -> bool {
        match (&self.form, &other.form) {
            (Form::Pairs(a), Form::Pairs(b)) => a.data == b.data && a.depth == b.depth,
            (Form::Rounded(a, x), Form::Rounded(b, y)) => {
                let dims = |view: &View| (view.rows, view.cols, view.row_stride);
                a == b && dims(x) == dims(y)
            }
            _ => false,
        }
    }

    /// The emulation's rounded values and their view.
    pub(in crate::engine::kernels) fn rounded(&self) -> Option<(&[f32], View)> {
        match &self.form {
            Form::Rounded(values, view) => Some((values, *view)),
            Form::Pairs(_) => None,
        }
    }
}

/// A left operand rounded (and for the hardware engines packed) once for one engine: a
/// convolution's weights, which multiply every im2col tile of every call and were rounded and
/// packed again for each.
pub struct PackedLeft {
    pub(super) engine: Engine,
    pub(super) form: LeftForm,
    /// Rows and inner dimension.
    dims: (usize, usize),
}

pub(super) enum LeftForm {
    /// The hardware engines' rows, all of them, as each task would pack its own.
    Rows(LeftRows),
    /// The emulation's: the values rounded to bf16 (as f32) in the view they are read through.
    Rounded(Vec<f32>, View),
}

impl PackedLeft {
    pub(in crate::engine::kernels) fn new(engine: Engine, lhs: &[f32], view: View) -> Self {
        let form = match engine {
            Engine::Emulated => {
                let (values, view) = rounded_copy(lhs, view);
                LeftForm::Rounded(values, view)
            }
            Engine::Amx | Engine::Avx512 => LeftForm::Rows(LeftRows::pack(lhs, view, 0, view.rows)),
        };
        Self {
            engine,
            form,
            dims: (view.rows, view.cols),
        }
    }

    /// An operand for `engine` that holds nothing yet, for [`PackedLeft::refill_rounded`].
    pub(in crate::engine::kernels) fn empty(engine: Engine) -> Self {
        let form = match engine {
            Engine::Emulated => LeftForm::Rounded(Vec::new(), View::rows(0, 0, 0)),
            Engine::Amx | Engine::Avx512 => LeftForm::Rows(LeftRows {
                data: Vec::new(),
                depth: 0,
            }),
        };
        Self {
            engine,
            form,
            dims: (0, 0),
        }
    }

    /// Makes this the `rows × cols` operand whose rows `fill(row, values)` writes already
    /// rounded to bf16 (every one of the `cols` values), in the memory it holds: attention's
    /// softmax numerators for `p·v`, one head after another, with no f32 copy to round and no
    /// buffer to allocate and clear for each. The padding is cleared only when the shape
    /// changes, since the same shape leaves the same slots as padding.
    pub(in crate::engine::kernels) fn refill_rounded(
        &mut self,
        (rows, cols): (usize, usize),
        mut fill: impl FnMut(usize, &mut [u16]),
    ) {
        let same_shape = self.dims == (rows, cols);
        self.dims = (rows, cols);
        match &mut self.form {
            LeftForm::Rows(left) => {
                let depth = cols.div_ceil(DEPTH_STEP) * DEPTH_STEP;
                if !same_shape {
                    left.data.clear();
                    left.data.resize(rows.div_ceil(BLOCK) * BLOCK * depth, 0);
                    left.depth = depth;
                }
                for row in 0..rows {
                    fill(row, &mut left.data[row * depth..][..cols]);
                }
            }
            LeftForm::Rounded(values, view) => {
                values.resize(rows * cols, 0.0);
                let mut halves = vec![0u16; cols];
                for (row, values) in values.chunks_exact_mut(cols.max(1)).enumerate() {
                    fill(row, &mut halves);
                    for (value, &half) in values.iter_mut().zip(&halves) {
                        *value = super::widen(half);
                    }
                }
                *view = View::rows(rows, cols, cols);
            }
        }
    }

    pub(in crate::engine::kernels) fn engine(&self) -> Engine {
        self.engine
    }

    /// Rows and inner dimension.
    pub(in crate::engine::kernels) fn dims(&self) -> (usize, usize) {
        self.dims
    }

    /// The emulation's rounded values and their view.
    pub(in crate::engine::kernels) fn rounded(&self) -> Option<(&[f32], View)> {
        match &self.form {
            LeftForm::Rounded(values, view) => Some((values, *view)),
            LeftForm::Rows(_) => None,
        }
    }

    /// Whether both hold the same values in the same layout.
    #[cfg(test)]
    fn same_values(&self, other: &PackedLeft) -> bool {
        let same_form = match (&self.form, &other.form) {
            (LeftForm::Rows(a), LeftForm::Rows(b)) => a.data == b.data && a.depth == b.depth,
            (LeftForm::Rounded(a, x), LeftForm::Rounded(b, y)) => {
                let dims = |view: &View| (view.rows, view.cols, view.row_stride);
                a == b && dims(x) == dims(y)
            }
            _ => false,
        };
        same_form && self.dims == other.dims
    }
}

/// A layer's weights packed for each engine that multiplies them: a linear layer's as the
/// right operand ([`PackedRight`]), a convolution's as the left ([`PackedLeft`]). The first
/// [`CALLS_BEFORE_KEEPING`] calls pack them for themselves only; from the next on (from the
/// first under [`with_weights_kept`](super::super::with_weights_kept)) the layer keeps them.
/// Kept weights take fresh memory, and its first touch can cost more than packing: 0.5–1.9
/// GB/s on a Zen 4 VM against 22 GB/s for memory the allocator hands out again, and
/// AudioLDM 2's text encoders, which run twice a generation (prompt and negative prompt),
/// took 3.2–3.6 s in bf16 right after another large process when they kept their weights
/// from the second call, against 1.0 s in f32. The UNet's and GPT-2's layers, which run many
/// times, keep theirs. A pointer-keyed cache could hand a freed layer's packing to a new one at
/// the same address; this one lives and dies with its layer.
pub struct PackedWeights<P = PackedRight> {
    by_engine: [OnceLock<P>; 3],
    calls: [AtomicUsize; 3],
}

/// Calls that pack a layer's weights for themselves before the layer keeps them: a text
/// encoder's two a generation.
pub(in crate::engine::kernels) const CALLS_BEFORE_KEEPING: usize = 2;

/// A layer's packed weights for one call: kept by the layer, or packed for this call only.
pub enum Prepared<'a, P> {
    Kept(&'a P),
    Once(P),
}

impl<P> std::ops::Deref for Prepared<'_, P> {
    type Target = P;

    fn deref(&self) -> &P {
        match self {
            Prepared::Kept(packed) => packed,
            Prepared::Once(packed) => packed,
        }
    }
}

impl<P> Default for PackedWeights<P> {
    fn default() -> Self {
        Self {
            by_engine: Default::default(),
            calls: Default::default(),
        }
    }
}

/// The engines in the order of [`PackedWeights`]' slots.
const SLOTS: [Engine; 3] = [Engine::Amx, Engine::Avx512, Engine::Emulated];

impl<P> PackedWeights<P> {
    /// The layer's weights for `engine`, made by `pack` (always from the same values and view
    /// for one layer): for each of the first calls alone, then once more to keep.
    pub(in crate::engine::kernels) fn get(
        &self,
        engine: Engine,
        pack: impl FnOnce() -> P,
    ) -> Prepared<'_, P> {
        let slot = match engine {
            Engine::Amx => 0,
            Engine::Avx512 => 1,
            Engine::Emulated => 2,
        };
        if let Some(kept) = self.by_engine[slot].get() {
            return Prepared::Kept(kept);
        }
        // Read on this thread: the flag is per thread, and layers are called from the caller's.
        if !super::super::keeps_weights()
            && self.calls[slot].fetch_add(1, Ordering::Relaxed) < CALLS_BEFORE_KEEPING
        {
            return Prepared::Once(pack());
        }
        Prepared::Kept(self.by_engine[slot].get_or_init(pack))
    }
}

impl<P> std::fmt::Debug for PackedWeights<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let packed: Vec<_> = SLOTS
            .iter()
            .zip(&self.by_engine)
            .filter_map(|(engine, slot)| slot.get().map(|_| engine))
            .collect();
        f.debug_struct("PackedWeights")
            .field("packed", &packed)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::values;
    use super::*;

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

    /// Dealing a pair of rows gives the portable code's bits on whole and partial runs: ties,
    /// NaNs, infinities and random patterns, in runs without a subnormal (the AVX512-BF16
    /// conversion's) and with one (which it would flush).
    #[test]
    fn dealing_a_pair_rounds_as_the_portable_code() {
        let mut state = 99u32;
        let mut random = move || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            state
        };
        let normal = |bits: u32| match bits & 0x7f80_0000 {
            0 => bits | 0x3f80_0000,
            _ => bits,
        };
        let specials = [
            0x3f80_8000,
            0x3f81_8000,
            0x7fc0_0000,
            0x7f80_0001,
            0xff80_0000,
        ];
        let subnormals = [0x0001_0000, 0x807f_ffff];
        for cols in [16, 40, 128] {
            let mut even: Vec<u32> = (0..cols).map(|_| normal(random())).collect();
            let mut odd: Vec<u32> = (0..cols).map(|_| normal(random())).collect();
            even[..specials.len()].copy_from_slice(&specials);
            odd[cols - specials.len()..].copy_from_slice(&specials);
            for subnormal in [None, Some(cols / 2)] {
                if let Some(col) = subnormal {
                    even[col] = subnormals[0];
                    odd[col + 1] = subnormals[1];
                }
                let even: Vec<f32> = even.iter().map(|&bits| f32::from_bits(bits)).collect();
                let odd: Vec<f32> = odd.iter().map(|&bits| f32::from_bits(bits)).collect();
                let run_len = 2 * LANES + 6;
                let mut dealt = vec![0u16; cols.div_ceil(LANES) * run_len];
                let mut expected = dealt.clone();
                deal_pair(&even, &odd, &mut dealt, run_len);
                deal_pair_body(&even, &odd, &mut expected, run_len);
                assert_eq!(dealt, expected, "{cols} columns, subnormal {subnormal:?}");
            }
        }
    }

    /// Shapes an operand is refilled with: they grow, shrink and come back, and (64, 33) takes
    /// as many slots as (33, 40), with other ones as padding.
    const REFILL_SHAPES: [(usize, usize); 7] = [
        (7, 5),
        (33, 40),
        (130, 200),
        (64, 33),
        (33, 40),
        (0, 3),
        (33, 40),
    ];

    /// One operand refilled with shapes that grow, shrink and come back holds what a fresh
    /// one would, its padding included: the slots a shape leaves as padding stay zero.
    #[test]
    fn refilled_operands_match_fresh_ones() {
        let source = values(130 * 200, 13);
        let fill = |cols: usize| {
            let source = &source;
            move |row: usize, first: usize, out: &mut [f32]| {
                out.copy_from_slice(&source[row * cols + first..][..out.len()]);
            }
        };
        for engine in [Engine::Amx, Engine::Emulated] {
            let mut reused = PackedRight::from_rows(engine, (33, 40), fill(40));
            for (rows, cols) in REFILL_SHAPES {
                reused.refill_rows((rows, cols), fill(cols));
                let fresh = PackedRight::from_rows(engine, (rows, cols), fill(cols));
                assert!(reused.same_values(&fresh), "{engine:?} {rows}×{cols}");
                assert_eq!(reused.dims(), (rows, cols));
            }
        }
    }

    /// A left operand refilled with rounded rows, in shapes that grow, shrink and come back,
    /// holds what one packed afresh from the same values would, its padding included.
    #[test]
    fn refilled_left_operands_match_fresh_ones() {
        let source = values(130 * 200, 17);
        for engine in [Engine::Amx, Engine::Emulated] {
            let mut reused = PackedLeft::empty(engine);
            for (rows, cols) in REFILL_SHAPES {
                reused.refill_rounded((rows, cols), |row, out| {
                    for (slot, value) in out.iter_mut().zip(&source[row * cols..]) {
                        *slot = round(*value);
                    }
                });
                let fresh =
                    PackedLeft::new(engine, &source[..rows * cols], View::rows(rows, cols, cols));
                assert!(reused.same_values(&fresh), "{engine:?} {rows}×{cols}");
            }
        }
    }

    /// A layer's first calls pack its weights for themselves; the next packs them once more and
    /// keeps them, and later calls use what it kept. Each engine has its own.
    #[test]
    fn weights_are_kept_after_the_first_calls() {
        let source = values(24 * 10, 5);
        let view = View::rows(24, 10, 10);
        let weights: PackedWeights = PackedWeights::default();
        let packs = std::cell::Cell::new(0);
        let get = |engine| {
            weights.get(engine, || {
                packs.set(packs.get() + 1);
                PackedRight::new(engine, &source, view)
            })
        };
        for _ in 0..CALLS_BEFORE_KEEPING {
            assert!(matches!(get(Engine::Emulated), Prepared::Once(_)));
        }
        let Prepared::Kept(first) = get(Engine::Emulated) else {
            panic!("the layer did not keep its weights");
        };
        let Prepared::Kept(next) = get(Engine::Emulated) else {
            panic!("the layer packed its kept weights again");
        };
        assert!(std::ptr::eq(first, next));
        assert_eq!(packs.get(), CALLS_BEFORE_KEEPING + 1);
        assert!(matches!(get(Engine::Amx), Prepared::Once(_)));
        assert!(first.same_values(&get(Engine::Emulated)));
        // Under `with_weights_kept` a layer keeps them from its first call, on this thread.
        let fresh: PackedWeights = PackedWeights::default();
        let pack = || PackedRight::new(Engine::Emulated, &source, view);
        let kept = crate::engine::kernels::with_weights_kept(|| {
            matches!(fresh.get(Engine::Emulated, pack), Prepared::Kept(_))
        });
        assert!(
            kept,
            "the first call under with_weights_kept packed for itself alone"
        );
        let Prepared::Kept(again) = fresh.get(Engine::Emulated, pack) else {
            panic!("kept weights were dropped after with_weights_kept");
        };
        assert!(again.same_values(first));
    }
}
