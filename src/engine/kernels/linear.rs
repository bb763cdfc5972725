//! `nn.Linear` as one product over every token, written onto the bias.
//!
//! candle's `Linear` multiplies each batch entry on its own (so `gemm` packs the weights once
//! per entry), zero-fills its output first and adds the bias in a second pass over a second
//! buffer. Here, on the CPU in f32, the output starts as the bias rows and one product over all
//! tokens is added onto it: one weight packing, no zero fill, no extra pass. A residual joins the
//! bias the same way, and a 1×1 convolution over an image is the same product read or written
//! through a transposed view, so the permutes around a transformer's `proj_in`/`proj_out` cost
//! no copies. The sums differ from candle's only in where the bias and residual join them
//! (float reassociation).

use std::ops::Deref;
use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp2, Layout, Module, Result, Shape, Storage, Tensor};

use super::fill::{self, Repeat};
use super::gemm::{self, Precision, View};
use super::gemm_bf16::{PackedLeft, PackedRight, PackedWeights, Prepared};
use super::{contiguous_f32, is_cpu_f32, previous_kernels};

/// `y = x · Wᵀ + b` over the last dimension of `x`, with `W` stored `(out, in)` as in PyTorch.
#[derive(Clone, Debug)]
pub struct Linear {
    /// candle's layer over the same tensors: the path for other devices and dtypes.
    candle: candle_nn::Linear,
    /// The weights rounded and packed for each bf16 engine that multiplied them (`--dtype
    /// bf16` on the CPU): kept once the layer has run a few times ([`PackedWeights`]), not
    /// converted on every call. Shared by clones, as the weights.
    packed: Arc<Kept>,
}

/// A layer's weights as each bf16 engine multiplies them: the right operand of a product
/// onto tokens, the left of a product onto an image's planes (its transpose).
#[derive(Debug, Default)]
struct Kept {
    right: PackedWeights<PackedRight>,
    left: PackedWeights<PackedLeft>,
}

/// The kept weights one product multiplies.
enum Weights<'a> {
    Right(Prepared<'a, PackedRight>),
    Left(Prepared<'a, PackedLeft>),
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            candle: candle_nn::Linear::new(weight, bias),
            packed: Arc::default(),
        }
    }

    /// A layer whose weight is stored (in, out), as GPT-2's `Conv1D` keeps it: read in place
    /// through a transposed view rather than copied.
    pub fn from_input_major(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        Ok(Self::new(weight.t()?, bias))
    }

    pub fn weight(&self) -> &Tensor {
        self.candle.weight()
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.candle.bias()
    }

    /// `forward(input) + residual`, the residual added where the bias is.
    pub fn forward_add(&self, input: &Tensor, residual: &Tensor) -> Result<Tensor> {
        self.project(input, Order::Tokens, Order::Tokens, Some(residual))
    }

    /// A 1×1 convolution of `image` (batch, channels, h, w, …) returned as tokens (batch,
    /// positions, outputs): `proj_in` and the permute after it in one product.
    pub fn image_to_tokens(&self, image: &Tensor) -> Result<Tensor> {
        self.project(image, Order::Channels, Order::Tokens, None)
    }

    /// Tokens (batch, positions, inputs) through a 1×1 convolution, returned in the layout of
    /// `residual` (batch, outputs, h, w, …) and added to it: `proj_out`, the permute before it
    /// and the residual add in one product.
    pub fn tokens_onto_image(&self, tokens: &Tensor, residual: &Tensor) -> Result<Tensor> {
        self.project(tokens, Order::Tokens, Order::Channels, Some(residual))
    }

    fn project(
        &self,
        input: &Tensor,
        from: Order,
        to: Order,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let weight = self.weight();
        let on_cpu = |tensor: &Tensor| is_cpu_f32(tensor) && tensor.is_contiguous();
        let fast = is_cpu_f32(input)
            && is_cpu_f32(weight)
            && weight_view(weight.layout()).is_some()
            && self.bias().is_none_or(on_cpu)
            && residual.is_none_or(on_cpu)
            && !previous_kernels();
        if fast {
            let op = LinearOp {
                from,
                to,
                bias: self.bias(),
                residual,
                packed: &self.packed,
            };
            return input.contiguous()?.apply_op2_no_bwd(weight, &op);
        }
        // candle's ops, the path for other devices and dtypes. candle's `Linear` needs a
        // contiguous input: on a transposed view its batched product is wrong.
        let tokens = match from {
            Order::Tokens => input.clone(),
            Order::Channels => input.flatten_from(2)?.transpose(1, 2)?,
        };
        let output = self.candle.forward(&tokens.contiguous()?)?;
        let output = match (to, residual) {
            (Order::Channels, Some(residual)) => {
                output.transpose(1, 2)?.reshape(residual.shape())?
            }
            (Order::Channels, None) => {
                candle_core::bail!("linear: an image output needs its shape")
            }
            (Order::Tokens, _) => output,
        };
        match residual {
            Some(residual) => output + residual,
            None => Ok(output),
        }
    }
}

impl Module for Linear {
    fn forward(&self, input: &Tensor) -> Result<Tensor> {
        self.project(input, Order::Tokens, Order::Tokens, None)
    }
}

/// Where a tensor keeps each token's features.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Order {
    /// (…, tokens, features): features adjacent, as `nn.Linear` reads them.
    Tokens,
    /// (batch, features, positions…): one plane per feature, as a convolution reads them.
    Channels,
}

struct LinearOp<'a> {
    from: Order,
    to: Order,
    bias: Option<&'a Tensor>,
    /// Added to the output; has the output's shape and order.
    residual: Option<&'a Tensor>,
    packed: &'a Kept,
}

/// How a product reads the (out, in) weights of `layout` as its `in × out` right operand:
/// stored (out, in) as `nn.Linear` keeps them, or (in, out) ([`Linear::from_input_major`]).
/// `None` for any other layout.
fn weight_view(layout: &Layout) -> Option<View> {
    let (outputs, width) = layout.shape().dims2().ok()?;
    if layout.is_contiguous() {
        Some(View::transposed(width, outputs, width))
    } else if layout.stride() == [1, outputs] {
        Some(View::rows(width, outputs, outputs))
    } else {
        None
    }
}

/// The f32 values of a contiguous CPU tensor held under its storage's read lock (the tuple
/// `Tensor::storage_and_layout` returns): the bias and residual, which candle does not hand
/// the op itself.
fn locked_f32<'a, Guard: Deref<Target = Storage>>(
    (storage, layout): &'a (Guard, &Layout),
    what: &str,
) -> Result<&'a [f32]> {
    let Storage::Cpu(storage) = &**storage else {
        candle_core::bail!("{what}: expected a CPU tensor");
    };
    contiguous_f32(storage, layout, what)
}

impl CustomOp2 for LinearOp<'_> {
    fn name(&self) -> &'static str {
        "foley-linear"
    }

    fn cpu_fwd(
        &self,
        input: &CpuStorage,
        input_layout: &Layout,
        weight: &CpuStorage,
        weight_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (outputs, width) = weight_layout.shape().dims2()?;
        let dims = input_layout.dims();
        // (batch, tokens) products of `tokens × width` each, and the output's dims.
        let (batch, tokens, out_dims) = match (self.from, self.to) {
            (Order::Tokens, Order::Tokens) => {
                let mut out_dims = dims.to_vec();
                match out_dims.last_mut() {
                    Some(last) if *last == width => *last = outputs,
                    _ => candle_core::bail!(
                        "linear: input {dims:?} does not end in the weight's {width} inputs"
                    ),
                }
                (
                    1,
                    input_layout.shape().elem_count() / width.max(1),
                    out_dims,
                )
            }
            (Order::Channels, Order::Tokens) => match dims {
                [batch, channels, positions @ ..] if *channels == width => {
                    let positions = positions.iter().product();
                    (*batch, positions, vec![*batch, positions, outputs])
                }
                _ => {
                    candle_core::bail!("linear: image {dims:?} lacks the weight's {width} channels")
                }
            },
            (Order::Tokens, Order::Channels) => {
                let (batch, tokens, features) = input_layout.shape().dims3()?;
                let Some(residual) = self.residual else {
                    candle_core::bail!("linear: an image output needs its shape");
                };
                let out_dims = residual.dims().to_vec();
                let positions: usize = out_dims.iter().skip(2).product();
                if features != width
                    || out_dims.len() < 2
                    || out_dims[..2] != [batch, outputs]
                    || positions != tokens
                {
                    candle_core::bail!(
                        "linear: tokens {dims:?} do not map onto an image {out_dims:?} through {outputs}×{width} weights"
                    );
                }
                (batch, tokens, out_dims)
            }
            (Order::Channels, Order::Channels) => candle_core::bail!("linear: image to image"),
        };
        if let Some(residual) = self.residual
            && residual.dims() != out_dims
        {
            candle_core::bail!(
                "linear: residual {:?} for an output {out_dims:?}",
                residual.dims()
            );
        }
        let input = contiguous_f32(input, input_layout, "linear input")?;
        let CpuStorage::F32(weight) = weight else {
            candle_core::bail!("linear weight: expected f32 storage");
        };
        let Some(rhs) = weight_view(weight_layout) else {
            candle_core::bail!("linear: weight {weight_layout:?} neither (out, in) nor (in, out)");
        };
        let Some(weight) = weight
            .get(weight_layout.start_offset()..)
            .and_then(|values| values.get(..outputs * width))
        else {
            candle_core::bail!("linear: weight storage shorter than its {outputs}×{width} shape");
        };
        let Some(len) = batch
            .checked_mul(tokens)
            .and_then(|n| n.checked_mul(outputs))
        else {
            candle_core::bail!("linear: {batch}×{tokens} tokens × {outputs} outputs overflow");
        };
        let repeat = match self.to {
            Order::Tokens => Repeat::Rows,
            Order::Channels => Repeat::Planes(tokens),
        };
        let bias_lock = self.bias.map(Tensor::storage_and_layout);
        let bias = bias_lock
            .as_ref()
            .map(|locked| locked_f32(locked, "linear bias"))
            .transpose()?;
        let residual_lock = self.residual.map(Tensor::storage_and_layout);
        let residual = residual_lock
            .as_ref()
            .map(|locked| locked_f32(locked, "linear residual"))
            .transpose()?;
        if residual.is_some_and(|residual| residual.len() != len) {
            candle_core::bail!("linear: residual of the wrong size");
        }
        if bias.is_some_and(|bias| bias.len() != outputs) {
            candle_core::bail!("linear: bias of the wrong size");
        }
        let start = match (bias, residual) {
            (Some(bias), residual) => Some(fill::biased(len, bias, repeat, residual)),
            (None, Some(residual)) => Some(residual.to_vec()),
            (None, None) => None,
        };
        let lhs_view = match self.from {
            Order::Tokens => View::rows(tokens, width, width),
            Order::Channels => View::transposed(tokens, width, tokens),
        };
        let dst_view = match self.to {
            Order::Tokens => View::rows(tokens, outputs, outputs),
            Order::Channels => View::transposed(tokens, outputs, tokens),
        };
        let split = gemm::split_rows_pays(tokens, outputs);
        let precision = super::precision();
        let packed = match (precision, self.to) {
            (Precision::F32, _) => None,
            (Precision::Bf16(engine), Order::Tokens) => {
                let pack = || PackedRight::new(engine, weight, rhs);
                Some(Weights::Right(self.packed.right.get(engine, pack)))
            }
            // An image output is column-major and the engines write rows: its transpose,
            // dstᵀ = weights · inputᵀ, is row-major, with the weights on the left.
            (Precision::Bf16(engine), Order::Channels) => {
                let pack = || PackedLeft::new(engine, weight, rhs.t());
                Some(Weights::Left(self.packed.left.get(engine, pack)))
            }
        };
        let (lhs, rhs, size) = ((input, lhs_view), (weight, rhs), (tokens, outputs));
        let output = match (start, packed) {
            (None, Some(Weights::Right(right))) if batch == 1 => {
                gemm::product_packed(lhs, &right, tokens)
            }
            // One image's planes are the transposed product's rows.
            (None, Some(Weights::Left(left))) if batch == 1 => {
                let right = PackedRight::new(left.engine(), input, lhs_view.t());
                gemm::product_kept(&left, &right)
            }
            (None, None) if batch == 1 && split => {
                gemm::product_split_rows(lhs, rhs, size, precision)
            }
            (None, None) if batch == 1 => gemm::product(lhs, rhs, size, precision),
            (start, packed) => {
                let accumulate = start.is_some();
                let mut output = start.unwrap_or_else(|| vec![0f32; len]);
                for image in 0..batch {
                    let dst = (&mut output[image * tokens * outputs..], dst_view);
                    let lhs = (&input[image * tokens * width..], lhs_view);
                    match &packed {
                        Some(Weights::Right(right)) => {
                            gemm::matmul_packed(dst, lhs, right, accumulate, true)
                        }
                        Some(Weights::Left(left)) => {
                            let right = PackedRight::new(left.engine(), lhs.0, lhs_view.t());
                            let dst = (dst.0, dst_view.t());
                            gemm::matmul_kept(dst, left, &right, accumulate, true)
                        }
                        None if split => {
                            gemm::matmul_split_rows(dst, lhs, rhs, accumulate, precision)
                        }
                        None => gemm::matmul(dst, lhs, rhs, accumulate, true, precision),
                    }
                }
                output
            }
        };
        Ok((CpuStorage::F32(output), Shape::from(out_dims)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::kernels::gemm_bf16::CALLS_BEFORE_KEEPING;
    use crate::engine::kernels::with_bf16_products;
    use candle_core::{D, Device};

    fn ramp(shape: &[usize], scale: f32) -> Result<Tensor> {
        let count: usize = shape.iter().product();
        let values: Vec<f32> = (0..count)
            .map(|index| scale * ((index as f32 * 0.37).sin() + 0.1))
            .collect();
        Tensor::from_vec(values, shape, &Device::Cpu)
    }

    fn relative_l2(a: &Tensor, b: &Tensor) -> Result<f32> {
        let difference = (a - b)?.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt();
        let norm = b.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt();
        Ok(difference / norm)
    }

    /// Batched 3-D and 4-D inputs, a strided (transposed) input, with and without bias, sizes
    /// that leave partial `gemm` tiles, one large enough for the threaded bias fill, and zero
    /// tokens: each equals candle's `Linear` to float rounding.
    #[test]
    fn equals_candles_linear() -> Result<()> {
        let cases: [(&[usize], usize, bool); 6] = [
            (&[2, 37, 19], 23, true),
            (&[2, 3, 5, 19], 7, true),
            (&[2, 37, 19], 23, false),
            (&[1, 300, 64], 320, true),
            (&[0, 19], 5, true),
            (&[1, 19], 5, true),
        ];
        for (shape, outputs, with_bias) in cases {
            let width = *shape.last().unwrap_or(&0);
            let weight = ramp(&[outputs, width], 0.2)?;
            let bias = with_bias.then(|| ramp(&[outputs], 1.0)).transpose()?;
            let layer = Linear::new(weight.clone(), bias.clone());
            let input = ramp(shape, 1.0)?;
            let ours = layer.forward(&input)?;
            let candle = candle_nn::Linear::new(weight, bias).forward(&input)?;
            assert_eq!(ours.dims(), candle.dims(), "{shape:?}");
            if ours.elem_count() > 0 {
                let error = relative_l2(&ours, &candle)?;
                assert!(error < 1e-6, "{shape:?} → {outputs}: relative L2 {error}");
            }
        }
        // Weights stored (in, out), as GPT-2 keeps them, read in place.
        let input = ramp(&[2, 37, 19], 1.0)?;
        let weight = ramp(&[23, 19], 0.2)?;
        let bias = ramp(&[23], 1.0)?;
        let input_major = weight.t()?.contiguous()?;
        let layer = Linear::from_input_major(input_major, Some(bias.clone()))?;
        let error = relative_l2(
            &layer.forward(&input)?,
            &candle_nn::Linear::new(weight, Some(bias)).forward(&input)?,
        )?;
        assert!(error < 1e-6, "input-major weights: relative L2 {error}");
        // A transposed view goes through `contiguous` first. (candle 0.11's own `Linear` gives
        // this strided input a different answer, 6 % relative L2, so the reference is the
        // contiguous copy.)
        let weight = ramp(&[11, 13], 0.3)?;
        let layer = Linear::new(weight.clone(), None);
        let input = ramp(&[2, 13, 17], 1.0)?.transpose(D::Minus1, D::Minus2)?;
        let error = relative_l2(
            &layer.forward(&input)?,
            &candle_nn::Linear::new(weight, None).forward(&input.contiguous()?)?,
        )?;
        assert!(error < 1e-6, "transposed input: relative L2 {error}");
        Ok(())
    }

    /// The residual and image forms against candle's ops for the same math (the 1×1
    /// convolution as `conv2d`), on the fast path and on candle's path (other devices).
    #[test]
    fn residual_and_image_forms_equal_candles_ops() -> Result<()> {
        let (batch, channels, outputs, height, width) = (2, 19, 23, 5, 7);
        let weight = ramp(&[outputs, channels], 0.2)?;
        let bias = ramp(&[outputs], 1.0)?;
        let layer = Linear::new(weight.clone(), Some(bias.clone()));
        let image = ramp(&[batch, channels, height, width], 1.0)?;
        let conv = image
            .conv2d(&weight.reshape((outputs, channels, 1, 1))?, 0, 1, 1, 1)?
            .broadcast_add(&bias.reshape((outputs, 1, 1))?)?;
        let conv_tokens = conv.flatten_from(2)?.transpose(1, 2)?.contiguous()?;
        let tokens = ramp(&[batch, height * width, channels], 0.5)?;
        let residual_tokens = ramp(&[batch, height * width, outputs], 2.0)?;
        let residual_image = ramp(&[batch, outputs, height, width], 3.0)?;
        let linear = candle_nn::Linear::new(weight.clone(), Some(bias.clone()));
        let projected = linear.forward(&tokens)?;
        let onto_image =
            (projected.transpose(1, 2)?.reshape(residual_image.shape())? + &residual_image)?;
        let plus_residual = (&projected + &residual_tokens)?;
        for portable in [false, true] {
            let run = |work: &dyn Fn() -> Result<Tensor>| {
                if portable {
                    crate::engine::kernels::with_portable_ops(work)
                } else {
                    work()
                }
            };
            let checks = [
                (
                    "image_to_tokens",
                    run(&|| layer.image_to_tokens(&image))?,
                    &conv_tokens,
                ),
                (
                    "tokens_onto_image",
                    run(&|| layer.tokens_onto_image(&tokens, &residual_image))?,
                    &onto_image,
                ),
                (
                    "forward_add",
                    run(&|| layer.forward_add(&tokens, &residual_tokens))?,
                    &plus_residual,
                ),
            ];
            for (what, ours, expected) in checks {
                assert_eq!(ours.dims(), expected.dims(), "{what}");
                let error = relative_l2(&ours, expected)?;
                assert!(
                    error < 1e-6,
                    "{what} (portable {portable}): relative L2 {error}"
                );
            }
        }
        // Shapes that do not fit are errors, not panics.
        assert!(layer.tokens_onto_image(&tokens, &residual_tokens).is_err());
        assert!(layer.forward_add(&tokens, &residual_image).is_err());
        assert!(layer.image_to_tokens(&tokens).is_err());
        Ok(())
    }

    /// Under bf16 products every form multiplies the bf16-rounded input and weights with f32
    /// sums, on each engine this CPU runs, from weights packed on the first call and kept: the
    /// second call gives the first one's numbers.
    #[test]
    fn bf16_products_multiply_the_rounded_operands_from_kept_weights() -> Result<()> {
        use super::super::gemm_bf16::{self, Engine};
        use candle_core::DType;
        let bf16 = |tensor: &Tensor| tensor.to_dtype(DType::BF16)?.to_dtype(DType::F32);
        let (batch, channels, outputs, height, width) = (2, 70, 40, 5, 7);
        let weight = ramp(&[outputs, channels], 0.2)?;
        let bias = ramp(&[outputs], 1.0)?;
        let image = ramp(&[batch, channels, height, width], 1.0)?;
        let tokens = ramp(&[batch, height * width, channels], 0.5)?;
        let single = ramp(&[1, 33, channels], 0.7)?;
        let residual_image = ramp(&[batch, outputs, height, width], 3.0)?;
        let linear = candle_nn::Linear::new(bf16(&weight)?, Some(bias.clone()));
        let unbiased = candle_nn::Linear::new(bf16(&weight)?, None);
        let image_tokens = bf16(&image)?
            .flatten_from(2)?
            .transpose(1, 2)?
            .contiguous()?;
        let projected = linear.forward(&bf16(&tokens)?)?;
        let onto_image =
            (projected.transpose(1, 2)?.reshape(residual_image.shape())? + &residual_image)?;
        let mut engines = gemm_bf16::available();
        engines.push(Engine::Emulated);
        for engine in engines {
            let layer = Linear::new(weight.clone(), Some(bias.clone()));
            let bare = Linear::new(weight.clone(), None);
            let input_major =
                Linear::from_input_major(weight.t()?.contiguous()?, Some(bias.clone()))?;
            type Check<'a> = (&'a str, &'a dyn Fn() -> Result<Tensor>, Tensor);
            let checks: [Check; 5] = [
                ("forward", &|| layer.forward(&tokens), projected.clone()),
                (
                    "forward, weights stored (in, out)",
                    &|| input_major.forward(&tokens),
                    projected.clone(),
                ),
                (
                    "forward without bias, one batch entry",
                    &|| bare.forward(&single),
                    unbiased.forward(&bf16(&single)?)?,
                ),
                (
                    "image_to_tokens",
                    &|| layer.image_to_tokens(&image),
                    linear.forward(&image_tokens)?,
                ),
                (
                    "tokens_onto_image",
                    &|| layer.tokens_onto_image(&tokens, &residual_image),
                    onto_image.clone(),
                ),
            ];
            for (what, run, expected) in checks {
                let first = with_bf16_products(Some(engine), run)?;
                let error = relative_l2(&first, &expected)?;
                assert!(error < 1e-6, "{what} ({engine:?}): relative L2 {error}");
                // The last call multiplies the weights the layer keeps.
                for call in 2..=CALLS_BEFORE_KEEPING + 1 {
                    let again = with_bf16_products(Some(engine), run)?;
                    let same = (&first - &again)?.abs()?.max_all()?.to_scalar::<f32>()?;
                    assert_eq!(same, 0.0, "{what} ({engine:?}): call {call} differs");
                }
            }
            // Kept both ways: as the right operand onto tokens, as the left onto an image.
            for kept in [
                format!("{:?}", layer.packed.right),
                format!("{:?}", layer.packed.left),
            ] {
                assert!(kept.contains(&format!("{engine:?}")), "{kept}");
            }
        }
        Ok(())
    }

    #[test]
    fn a_width_mismatch_is_an_error() -> Result<()> {
        let layer = Linear::new(ramp(&[4, 6], 1.0)?, Some(ramp(&[4], 1.0)?));
        let error = layer.forward(&ramp(&[2, 5], 1.0)?).unwrap_err().to_string();
        assert!(error.contains("6 inputs"), "{error}");
        Ok(())
    }
}
