//! Multi-head attention on (batch, tokens, heads·head_dim) tensors.
//!
//! On the CPU in f32 the scores of one block of queries for one head are computed, soft-maxed and
//! applied while they are still in cache: the 16M-entry score tensor of a 1024-token UNet layer
//! (64 MB, 4096 tokens in the VAE) is never built, and q/k/v are read in place, with no head
//! split or merge copies.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::attention_tiles::{Block, Head, QUERY_BLOCK, Tiles, transpose_keys};
use super::exp::{softmax_numerators, softmax_numerators_rounded, softmax_row};
use super::gemm::{Precision, View, matmul, matmul_kept, matmul_packed};
use super::gemm_bf16::{PackedLeft, PackedRight};
use super::{contiguous_f32, is_cpu_f32, previous_kernels};
use crate::engine::models::layers::{attention as split_attention, split_heads};

/// softmax(q·kᵀ·scale + key_bias)·v per head. `query` (batch, queries, heads·d),
/// `key`/`value` (batch, keys, heads·d and heads·d_v), `key_bias` (batch, keys) additive.
/// Returns (batch, queries, heads·d_v).
pub fn attention(
    query: &Tensor,
    key: &Tensor,
    value: &Tensor,
    heads: usize,
    scale: f64,
    key_bias: Option<&Tensor>,
) -> Result<Tensor> {
    if [query, key, value].into_iter().all(is_cpu_f32) {
        let bias = key_bias
            .map(|bias| {
                bias.to_dtype(candle_core::DType::F32)?
                    .flatten_all()?
                    .to_vec1()
            })
            .transpose()?;
        let op = AttentionOp {
            heads,
            scale: scale as f32,
            bias,
        };
        return query
            .contiguous()?
            .apply_op3_no_bwd(&key.contiguous()?, &value.contiguous()?, &op);
    }
    let bias = key_bias
        .map(|bias| {
            let (batch, keys) = bias.dims2()?;
            bias.reshape((batch, 1, 1, keys))
        })
        .transpose()?;
    split_attention(
        &split_heads(query, heads)?,
        &split_heads(key, heads)?,
        &split_heads(value, heads)?,
        scale,
        bias.as_ref(),
    )
}

struct AttentionOp {
    heads: usize,
    scale: f32,
    /// (batch, keys), row-major.
    bias: Option<Vec<f32>>,
}

/// One batch item's contiguous operands.
struct Item<'a> {
    query: &'a [f32],
    key: &'a [f32],
    value: &'a [f32],
    bias: Option<&'a [f32]>,
}

impl AttentionOp {
    /// One batch item through the register tiles: each head's keys transposed once, then each
    /// block of queries attends head by head.
    fn tiled(&self, tiles: Tiles, item: Item, out: &mut [f32], (dim, value_dim): (usize, usize)) {
        let heads = self.heads;
        let (width, value_width) = (heads * dim, heads * value_dim);
        let keys = item.key.len() / width;
        let keys_t: Vec<Vec<f32>> = (0..heads)
            .into_par_iter()
            .map(|head| transpose_keys(tiles, &item.key[head * dim..], keys, dim, width))
            .collect();
        let heads: Vec<Head> = keys_t
            .iter()
            .enumerate()
            .map(|(head, keys_t)| Head {
                keys_t,
                keys,
                values: &item.value[head * value_dim..],
                value_stride: value_width,
                value_dim,
                bias: item.bias,
            })
            .collect();
        out.par_chunks_mut(QUERY_BLOCK * value_width)
            .enumerate()
            .for_each(|(block, out)| {
                let rows = out.len() / value_width;
                let query = &item.query[block * QUERY_BLOCK * width..][..rows * width];
                let mut scratch = Block::new(tiles, dim, keys);
                for (index, head) in heads.iter().enumerate() {
                    scratch.attend(
                        head,
                        (&query[index * dim..], width),
                        rows,
                        self.scale,
                        (&mut out[index * value_dim..], value_width),
                    );
                }
            });
    }
}

impl CustomOp3 for AttentionOp {
    fn name(&self) -> &'static str {
        "foley-attention"
    }

    fn cpu_fwd(
        &self,
        query: &CpuStorage,
        query_layout: &Layout,
        key: &CpuStorage,
        key_layout: &Layout,
        value: &CpuStorage,
        value_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (batch, queries, width) = query_layout.shape().dims3()?;
        let (key_batch, keys, key_width) = key_layout.shape().dims3()?;
        let (value_batch, value_keys, value_width) = value_layout.shape().dims3()?;
        let heads = self.heads;
        if key_batch != batch
            || value_batch != batch
            || value_keys != keys
            || key_width != width
            || width % heads != 0
            || value_width % heads != 0
        {
            candle_core::bail!(
                "attention: query {:?}, key {:?}, value {:?} do not fit {heads} heads",
                query_layout.dims(),
                key_layout.dims(),
                value_layout.dims()
            );
        }
        if let Some(bias) = &self.bias
            && bias.len() != batch * keys
        {
            candle_core::bail!(
                "attention: bias has {} entries, expected {}",
                bias.len(),
                batch * keys
            );
        }
        let query = contiguous_f32(query, query_layout, "attention query")?;
        let key = contiguous_f32(key, key_layout, "attention key")?;
        let value = contiguous_f32(value, value_layout, "attention value")?;
        let (dim, value_dim) = (width / heads, value_width / heads);
        let mut output = super::fill::zeros(batch * queries * value_width);
        if queries == 0 || keys == 0 {
            return Ok((
                CpuStorage::F32(output),
                Shape::from((batch, queries, value_width)),
            ));
        }
        // Read here: the flags are this thread's, and the loops below run on rayon's.
        let fused = !previous_kernels();
        // With bf16 products both products take bf16 operands, as under autocast: q, k, the
        // softmax numerators and v rounded, sums and softmax f32.
        let bf16 = match super::precision() {
            Precision::Bf16(engine) => Some(engine),
            Precision::F32 => None,
        };
        // With one block of queries an item the tiles' work does not spread over the threads
        // (the UNet's fourth level, 64 queries: 0.3 against 0.2 ms).
        let tiles = Tiles::detect().filter(|tiles| {
            fused && bf16.is_none() && tiles.fits_values(value_dim) && queries >= 2 * QUERY_BLOCK
        });
        output
            .par_chunks_mut(queries * value_width)
            .enumerate()
            .for_each(|(item, out)| {
                let query = &query[item * queries * width..][..queries * width];
                let key = &key[item * keys * width..][..keys * width];
                let value = &value[item * keys * value_width..][..keys * value_width];
                let bias = self.bias.as_ref().map(|bias| &bias[item * keys..][..keys]);
                if let Some(tiles) = tiles {
                    let item = Item {
                        query,
                        key,
                        value,
                        bias,
                    };
                    return self.tiled(tiles, item, out, (dim, value_dim));
                }
                // A head's keys (transposed) and values, as the two products read them.
                let keys_t = View::transposed(dim, keys, width);
                let values_view = View::rows(keys, value_dim, value_width);
                // Each head's keys and values packed once an item, for every block of queries.
                let packed: Option<Vec<(PackedRight, PackedRight)>> = bf16.map(|engine| {
                    (0..heads)
                        .into_par_iter()
                        .map(|head| {
                            (
                                PackedRight::new(engine, &key[head * dim..], keys_t),
                                PackedRight::new(engine, &value[head * value_dim..], values_view),
                            )
                        })
                        .collect()
                });
                out.par_chunks_mut(QUERY_BLOCK * value_width)
                    .enumerate()
                    .for_each(|(block, out)| {
                        let rows = out.len() / value_width;
                        let query = &query[block * QUERY_BLOCK * width..][..rows * width];
                        let mut scores = vec![0f32; rows * keys];
                        let mut totals = vec![0f32; rows];
                        // With bf16 products the softmax writes its numerators rounded, as
                        // `p·v`'s left operand, instead of f32 for the product to round.
                        let mut weights = bf16.filter(|_| fused).map(PackedLeft::empty);
                        for head in 0..heads {
                            let scores_view = View::rows(rows, keys, keys);
                            let query = (&query[head * dim..], View::rows(rows, dim, width));
                            match &packed {
                                Some(packed) => matmul_packed(
                                    (&mut scores, scores_view),
                                    query,
                                    &packed[head].0,
                                    false,
                                    false,
                                ),
                                None => matmul(
                                    (&mut scores, scores_view),
                                    query,
                                    (&key[head * dim..], keys_t),
                                    false,
                                    false,
                                    Precision::F32,
                                ),
                            }
                            let dst = (
                                &mut out[head * value_dim..],
                                View::rows(rows, value_dim, value_width),
                            );
                            if let (Some(packed), Some(weights)) = (&packed, &mut weights) {
                                weights.refill_rounded((rows, keys), |row, numerators| {
                                    let row_scores = &mut scores[row * keys..][..keys];
                                    totals[row] = softmax_numerators_rounded(
                                        row_scores, numerators, self.scale, bias,
                                    );
                                });
                                matmul_kept(dst, weights, &packed[head].1, false, false);
                            } else {
                                if fused {
                                    for (row, total) in
                                        scores.chunks_exact_mut(keys).zip(&mut totals)
                                    {
                                        *total = softmax_numerators(row, self.scale, bias);
                                    }
                                } else {
                                    scores
                                        .chunks_exact_mut(keys)
                                        .for_each(|row| softmax_row(row, self.scale, bias));
                                }
                                let weights = (&scores[..], scores_view);
                                match &packed {
                                    Some(packed) => {
                                        matmul_packed(dst, weights, &packed[head].1, false, false)
                                    }
                                    None => matmul(
                                        dst,
                                        weights,
                                        (&value[head * value_dim..], values_view),
                                        false,
                                        false,
                                        Precision::F32,
                                    ),
                                }
                            }
                            if fused {
                                for (out, total) in out.chunks_exact_mut(value_width).zip(&totals) {
                                    let inverse = 1.0 / total;
                                    out[head * value_dim..][..value_dim]
                                        .iter_mut()
                                        .for_each(|value| *value *= inverse);
                                }
                            }
                        }
                    });
            });
        Ok((
            CpuStorage::F32(output),
            Shape::from((batch, queries, value_width)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::engine::kernels::with_previous_kernels;

    /// The two-pass softmax with rows divided after `·v` equals the unfused reference and the
    /// previous kernel, with a key bias masking some keys and sizes off the vector width.
    #[test]
    fn fused_softmax_matches_the_reference_and_the_previous_kernel() {
        // A head size of 20 takes the `gemm` path, 32 the register tiles.
        for dim in [20, 32] {
            fused_matches_at(dim);
        }
    }

    fn fused_matches_at(dim: usize) {
        let device = Device::Cpu;
        // 145 queries: over the tiles' floor of two blocks, the last block partial.
        let (batch, queries, keys, heads) = (2, 145, 130, 3);
        let query = Tensor::randn(0f32, 1.0, (batch, queries, heads * dim), &device).unwrap();
        let key = Tensor::randn(0f32, 1.0, (batch, keys, heads * dim), &device).unwrap();
        let value = Tensor::randn(0f32, 1.0, (batch, keys, heads * dim), &device).unwrap();
        let mask: Vec<f32> = (0..batch * keys)
            .map(|index| {
                if index % 7 == 0 {
                    f32::NEG_INFINITY
                } else {
                    0.5
                }
            })
            .collect();
        let bias = Tensor::from_vec(mask, (batch, keys), &device).unwrap();
        let scale = 1.0 / (dim as f64).sqrt();
        let run = || attention(&query, &key, &value, heads, scale, Some(&bias)).unwrap();
        let ours = run();
        let previous = with_previous_kernels(run);
        let reference = split_attention(
            &split_heads(&query, heads).unwrap(),
            &split_heads(&key, heads).unwrap(),
            &split_heads(&value, heads).unwrap(),
            scale,
            Some(&bias.reshape((batch, 1, 1, keys)).unwrap()),
        )
        .unwrap();
        for other in [&previous, &reference] {
            let error = (&ours - other)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(error < 1e-5, "{error}");
        }
    }

    /// With AMX (and the emulation) attention multiplies the rounded operands, as under
    /// autocast: q·kᵀ of rounded q and k, softmax numerators in f32, rounded numerators times
    /// rounded v, divided by the f32 total. Against that definition in f64 the mode is within
    /// float rounding, where f32 attention is not (3.1e-3 away).
    #[test]
    fn bf16_products_attend_with_rounded_operands() {
        use super::super::gemm_bf16::{self, Engine, rounded};
        use crate::engine::kernels::with_bf16_products;
        let device = Device::Cpu;
        let (batch, queries, keys, heads, dim) = (2, 150, 70, 3, 24);
        let width = heads * dim;
        // Fixed pseudo-random values in [-2, 2): the same rounding cases on every run.
        let random = |rows: usize, seed: u32| {
            let mut state = seed;
            let values: Vec<f32> = (0..batch * rows * width)
                .map(|_| {
                    state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (state >> 8) as f32 / (1 << 22) as f32 - 2.0
                })
                .collect();
            Tensor::from_vec(values, (batch, rows, width), &device).unwrap()
        };
        let (query, key, value) = (random(queries, 1), random(keys, 2), random(keys, 3));
        let mask: Vec<f32> = (0..batch * keys)
            .map(|index| if index % 5 == 0 { -1e4 } else { 0.25 })
            .collect();
        let bias = Tensor::from_vec(mask.clone(), (batch, keys), &device).unwrap();
        let scale = 1.0 / (dim as f64).sqrt();
        let flat = |tensor: &Tensor| tensor.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (q, k, v) = (flat(&query), flat(&key), flat(&value));
        let bf = |value: f32| f64::from(rounded(value));
        let mut reference = vec![0f64; batch * queries * width];
        for item in 0..batch {
            for head in 0..heads {
                for row in 0..queries {
                    let q_at = |d: usize| bf(q[(item * queries + row) * width + head * dim + d]);
                    let scores: Vec<f64> = (0..keys)
                        .map(|col| {
                            let k_at = |d| bf(k[(item * keys + col) * width + head * dim + d]);
                            let dot: f64 = (0..dim).map(|d| q_at(d) * k_at(d)).sum();
                            dot * scale + f64::from(mask[item * keys + col])
                        })
                        .collect();
                    let top = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let numerators: Vec<f64> = scores.iter().map(|s| (s - top).exp()).collect();
                    let total: f64 = numerators.iter().sum();
                    for d in 0..dim {
                        let sum: f64 = (0..keys)
                            .map(|col| {
                                let v_at = v[(item * keys + col) * width + head * dim + d];
                                bf(numerators[col] as f32) * bf(v_at)
                            })
                            .sum();
                        reference[(item * queries + row) * width + head * dim + d] = sum / total;
                    }
                }
            }
        }
        let run = || flat(&attention(&query, &key, &value, heads, scale, Some(&bias)).unwrap());
        let f32_error = crate::engine::kernels::relative_l2_f64(&run(), &reference);
        assert!(
            f32_error > 1e-3,
            "f32 attention is {f32_error} from the bf16 definition"
        );
        let mut engines = gemm_bf16::available();
        engines.push(Engine::Emulated);
        for engine in engines {
            let ours = with_bf16_products(Some(engine), run);
            let error = crate::engine::kernels::relative_l2_f64(&ours, &reference);
            eprintln!(
                "{engine:?}: {error:.2e} from the definition (f32 attention {f32_error:.2e})"
            );
            // Numerators within float rounding of the definition's may round to the other
            // bf16 (9.7e-7 with the emulation on Zen 3; random inputs gave up to 6.8e-5).
            assert!(error < 1e-4, "{engine:?}: relative L2 {error}");
        }
    }
}
