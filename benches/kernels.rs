//! Op-level CPU benchmark: candle 0.11's own kernels against Foley's fast paths
//! (src/engine/kernels) at the shapes of a 10.24 s AudioLDM 2 generation.
//!
//! `cargo bench --bench kernels` (release profile). Prints one Markdown row per op: median
//! milliseconds of 5 runs after a warm-up, and GFLOP/s (2 FLOP per multiply-add). A second
//! table sets each kernel that was replaced against its previous version
//! (`with_previous_kernels`), a third the CPU's bf16 products (`--dtype bf16`) against f32 on
//! every bf16 engine this CPU runs (AMX, AVX512-BF16; the emulation everywhere, which is no
//! faster than f32 and shows what the rounding costs). `cargo bench --bench kernels -- bf16`
//! prints the third table alone, `-- bf16 conv1d` a table of HiFi-GAN's layers under it alone,
//! `-- winograd` the Winograd products' rows, `-- products` the f32 products' rows.

use std::time::Instant;

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use foley::engine::kernels::attention::attention;
use foley::engine::kernels::conv::{Conv1d, Conv2d, ConvTranspose1d};
use foley::engine::kernels::geglu::geglu;
use foley::engine::kernels::gemm::{self, Precision, View};
use foley::engine::kernels::gemm_bf16::{self, Engine};
use foley::engine::kernels::group_norm::GroupNorm;
use foley::engine::kernels::layer_norm::LayerNorm;
use foley::engine::kernels::linear::Linear;
use foley::engine::kernels::upsample;
use foley::engine::kernels::{with_bf16_products, with_previous_kernels};
use foley::engine::models::layers::{attention as split_attention, split_heads};

/// mimalloc with the `foley` binary's purge setting (src/main.rs), as the binary allocates: the
/// kernels' large buffers come from reused pages there, and with the system allocator a layer's
/// timings swung 1.5× between runs as its buffers came from reused or freshly zeroed pages.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn median_ms(mut run: impl FnMut() -> Result<Tensor>) -> Result<f64> {
    run()?;
    let mut times = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        run()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[2])
}

fn row(op: &str, shape: &str, gflop: f64, candle_ms: f64, foley_ms: f64) {
    let rate = |ms: f64| {
        if gflop > 0.0 {
            format!("{:.0}", gflop / ms * 1e3)
        } else {
            "–".into()
        }
    };
    println!(
        "| {op} | {shape} | {candle_ms:.1} ({}) | {foley_ms:.1} ({}) | {:.2}× |",
        rate(candle_ms),
        rate(foley_ms),
        candle_ms / foley_ms
    );
}

fn random(shape: &[usize], device: &Device) -> Result<Tensor> {
    Tensor::randn(0f32, 1.0, shape, device)
}

fn weights(device: &Device) -> VarBuilder<'static> {
    // Random weights by name: the benchmark only needs shapes.
    VarBuilder::from_varmap(&candle_nn::VarMap::new(), DType::F32, device)
}

fn conv2d(device: &Device, shape: [usize; 4], out: usize, kernel: usize) -> Result<()> {
    let [batch, channels, height, width] = shape;
    let vb = weights(device);
    let layer = Conv2d::new(channels, out, kernel, 1, kernel / 2, vb.pp("conv"))?;
    let weight = random(&[out, channels, kernel, kernel], device)?;
    let xs = random(&shape, device)?;
    let gflop = 2.0 * (batch * out * height * width * channels * kernel * kernel) as f64 / 1e9;
    let candle = median_ms(|| xs.conv2d(&weight, kernel / 2, 1, 1, 1))?;
    let ours = median_ms(|| layer.forward(&xs))?;
    row(
        &format!("conv2d {kernel}×{kernel}"),
        &format!("{shape:?}→{out}"),
        gflop,
        candle,
        ours,
    );
    Ok(())
}

fn main() -> Result<()> {
    foley::mimalloc_options::hold_freed_pages();
    let device = Device::Cpu;
    println!("| op | shape | candle ms (GFLOP/s) | Foley ms (GFLOP/s) | speed-up |");
    println!("|---|---|---|---|---|");

    let a = random(&[2048, 1024], &device)?;
    let b = random(&[1024, 1024], &device)?;
    let matmul = median_ms(|| a.matmul(&b))?;
    row(
        "matmul (reference)",
        "2048×1024·1024×1024",
        2.0 * 2048.0 * 1024.0 * 1024.0 / 1e9,
        matmul,
        matmul,
    );

    if std::env::args().any(|arg| arg == "bf16") {
        if std::env::args().any(|arg| arg == "conv1d") {
            // `cargo bench --bench kernels -- bf16 conv1d`: HiFi-GAN's layers alone.
            return bf16_hifigan(&device);
        }
        // `cargo bench --bench kernels -- bf16`: the bf16 table alone.
        return bf16_products(&device);
    }
    // `cargo bench --bench kernels -- winograd` (or `-- products`): the Winograd products' (or
    // the f32 products') rows alone.
    let alone: [(&str, fn()); 2] = [("winograd", winograd_products), ("products", f32_products)];
    for (name, rows) in alone {
        if std::env::args().any(|arg| arg == name) {
            previous_header();
            rows();
            return Ok(());
        }
    }
    conv2d(&device, [2, 128, 256, 16], 128, 3)?;
    conv2d(&device, [2, 256, 128, 8], 256, 3)?;
    conv2d(&device, [2, 640, 32, 2], 640, 3)?;
    conv2d(&device, [2, 256, 128, 8], 256, 1)?;
    conv2d(&device, [1, 128, 1024, 64], 128, 3)?;
    conv2d(&device, [1, 256, 512, 32], 256, 3)?;
    conv2d(&device, [1, 512, 256, 16], 512, 3)?;
    conv2d(&device, [2, 384, 64, 4], 384, 3)?;
    // The VAE's upsampling at its two largest sizes.
    for [channels, height, width] in [[512, 256, 16], [256, 512, 32]] {
        let xs = random(&[1, channels, height, width], &device)?;
        let size = (2 * height, 2 * width);
        let candle = median_ms(|| xs.upsample_nearest2d(size.0, size.1))?;
        let ours = median_ms(|| upsample::nearest2d(&xs, size))?;
        let shape = format!("[1,{channels},{height},{width}]→{}×{}", size.0, size.1);
        row("upsample nearest", &shape, 0.0, candle, ours);
    }

    let vb = weights(&device);
    let (channels, length, kernel, dilation) = (128, 40960, 7, 3);
    let layer = Conv1d::new(
        channels,
        channels,
        kernel,
        dilation * (kernel - 1) / 2,
        dilation,
        vb.pp("c1"),
    )?;
    let weight = random(&[channels, channels, kernel], &device)?;
    let xs = random(&[1, channels, length], &device)?;
    let gflop = 2.0 * (channels * channels * kernel * length) as f64 / 1e9;
    let candle = median_ms(|| xs.conv1d(&weight, dilation * (kernel - 1) / 2, 1, dilation, 1))?;
    let ours = median_ms(|| layer.forward(&xs))?;
    row("conv1d k7 d3", "[1,128,40960]→128", gflop, candle, ours);

    let (input, output, length, kernel, stride, padding) = (1024, 512, 1024, 16, 5, 5);
    let layer = ConvTranspose1d::new(input, output, kernel, stride, padding, vb.pp("ct"))?;
    let weight = random(&[input, output, kernel], &device)?;
    let xs = random(&[1, input, length], &device)?;
    let gflop = 2.0 * (input * output * kernel * length) as f64 / 1e9;
    let candle = median_ms(|| xs.conv_transpose1d(&weight, padding, 0, stride, 1, 1))?;
    let ours = median_ms(|| layer.forward(&xs))?;
    row(
        "conv_transpose1d k16 s5 p5",
        "[1,1024,1024]→512",
        gflop,
        candle,
        ours,
    );

    for (tokens, width, heads) in [(1024, 256, 8), (4096, 512, 1)] {
        let batch = if heads == 1 { 1 } else { 2 };
        let q = random(&[batch, tokens, width], &device)?;
        let k = random(&[batch, tokens, width], &device)?;
        let v = random(&[batch, tokens, width], &device)?;
        let scale = 1.0 / ((width / heads) as f64).sqrt();
        let gflop = 4.0 * (batch * tokens * tokens * width) as f64 / 1e9;
        let candle = median_ms(|| {
            let (q, k, v) = (
                split_heads(&q, heads)?,
                split_heads(&k, heads)?,
                split_heads(&v, heads)?,
            );
            split_attention(&q, &k, &v, scale, None)
        })?;
        let ours = median_ms(|| attention(&q, &k, &v, heads, scale, None))?;
        row(
            "self-attention",
            &format!("{batch}×{heads} heads, {tokens} tokens, width {width}"),
            gflop,
            candle,
            ours,
        );
    }

    let xs = random(&[2, 128, 256, 16], &device)?;
    let norm = GroupNorm::new(32, 128, 1e-5, vb.pp("gn"))?;
    let reference = candle_nn::GroupNorm::new(
        Tensor::ones(128, DType::F32, &device)?,
        Tensor::zeros(128, DType::F32, &device)?,
        128,
        32,
        1e-5,
    )?;
    let candle = median_ms(|| reference.forward(&xs)?.silu())?;
    let ours = median_ms(|| norm.forward_silu(&xs))?;
    row("group norm + SiLU", "[2,128,256,16]", 0.0, candle, ours);

    // LayerNorm over 256 channels, rows as many as two UNet level-1 images' tokens, times four
    // so a call lasts long enough to time.
    let xs = random(&[8, 1024, 256], &device)?;
    let (gamma, beta) = (random(&[256], &device)?, random(&[256], &device)?);
    let reference = candle_nn::LayerNorm::new(gamma.clone(), beta.clone(), 1e-5);
    let varmap = candle_nn::VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let norm = LayerNorm::new(256, 1e-5, vb.pp("ln"))?;
    let candle = median_ms(|| reference.forward(&xs))?;
    let ours = median_ms(|| norm.forward(&xs))?;
    row("layer norm", "[8,1024,256]", 0.0, candle, ours);
    previous_versions(&device)?;
    bf16_products(&device)
}

/// Replaced kernels against their previous versions, at the shapes of a 10.24 s AudioLDM 2
/// generation.
/// One row of the second table: `run` with the previous kernels, then with the current ones.
fn against_previous(
    kernel: &str,
    shape: &str,
    gflop: f64,
    run: impl Fn() -> Result<Tensor> + Copy,
) -> Result<()> {
    let previous = with_previous_kernels(|| median_ms(run))?;
    let now = median_ms(run)?;
    row(kernel, shape, gflop, previous, now);
    Ok(())
}

/// Winograd's products, one a transformed position, for one image (or one chunk of a signal):
/// each split over the threads by `gemm` in turn (previous), against one parallel loop over all
/// of them (`gemm::position_products`).
fn winograd_products() {
    // (layer, positions, outputs, depth, tiles): F(4×4) at the UNet's second level and the VAE's
    // 512-channel layers, F(2×2) at its third, F(4, 3) pieces in HiFi-GAN's first stage.
    for (layer, positions, rows, inner, cols) in [
        ("F(4×4) [2,256,128,8]→256", 36, 256, 256, 64),
        ("F(2×2) [2,384,64,4]→384", 16, 384, 384, 64),
        ("F(4×4) [1,512,256,16]→512", 36, 512, 512, 256),
        ("F(4, 3) [1,512,5120] k11 d5", 6, 512, 2048, 256),
    ] {
        let lhs: Vec<f32> = (0..rows * positions * inner)
            .map(|i| (i % 7) as f32)
            .collect();
        let rhs: Vec<f32> = (0..inner * positions * cols)
            .map(|i| (i % 5) as f32)
            .collect();
        let mut dst = vec![0f32; rows * positions * cols];
        let each = |dst: &mut [f32]| {
            for p in 0..positions {
                gemm::matmul(
                    (
                        &mut dst[p * cols..],
                        View::rows(rows, cols, positions * cols),
                    ),
                    (
                        &lhs[p * inner..],
                        View::rows(rows, inner, positions * inner),
                    ),
                    (&rhs[p * cols..], View::rows(inner, cols, positions * cols)),
                    false,
                    true,
                    Precision::F32,
                );
            }
        };
        let dims = (positions, rows, inner, cols);
        let previous = median_of(|| each(&mut dst));
        let looped = median_of(|| {
            with_previous_kernels(|| gemm::position_products(&mut dst, &lhs, &rhs, dims))
        });
        let now = median_of(|| gemm::position_products(&mut dst, &lhs, &rhs, dims));
        let gflop = 2.0 * (positions * rows * inner * cols) as f64 / 1e9;
        row(
            "Winograd products (each split by `gemm` → one parallel loop of `gemm`)",
            layer,
            gflop,
            previous,
            looped,
        );
        // Equal rows where the CPU lacks AVX-512F: the loop keeps `gemm` there.
        row(
            "Winograd products (one loop: `gemm` → 16-lane panels)",
            layer,
            gflop,
            looped,
            now,
        );
    }
}

/// f32 products as linear layers make them (tokens × width against the layer's weights, stored
/// outputs × width, so read transposed): `gemm`'s 8-lane kernel (previous) against
/// `kernels::panels` where it pays (with AVX-512F; with AVX2 alone, the few-token rows; equal
/// rows elsewhere).
fn f32_products() {
    // (layer, tokens, width, outputs): AudioLDM 2's UNet at level 1 (2 images × 1024 tokens)
    // and level 3 (2 × 64), its cross-attention keys from GPT-2's 8 tokens, T5's feed-forward
    // over a prompt, GPT-2's one-token step.
    for (layer, tokens, width, outputs) in [
        ("UNet projection", 2048, 320, 320),
        ("UNet feed-forward in", 2048, 320, 2560),
        ("UNet feed-forward out", 2048, 1280, 320),
        ("UNet level-3 projection", 128, 1280, 1280),
        ("UNet level-3 feed-forward in", 128, 1280, 10240),
        ("UNet level-3 feed-forward out", 128, 5120, 1280),
        ("UNet cross-attention keys", 16, 768, 1280),
        ("T5 feed-forward", 32, 1024, 2816),
        ("GPT-2 step", 2, 768, 3072),
    ] {
        let lhs: Vec<f32> = (0..tokens * width).map(|i| (i % 7) as f32).collect();
        let weights: Vec<f32> = (0..outputs * width).map(|i| (i % 5) as f32).collect();
        let map = mapped(&weights);
        let rhs: &[f32] = mapped_values(&map);
        let views = (
            View::rows(tokens, width, width),
            View::transposed(width, outputs, width),
        );
        let multiply = || {
            let (lhs, rhs) = ((&lhs[..], views.0), (rhs, views.1));
            let size = (tokens, outputs);
            if gemm::split_rows_pays(tokens, outputs) {
                gemm::product_split_rows(lhs, rhs, size, Precision::F32)
            } else {
                gemm::product(lhs, rhs, size, Precision::F32)
            }
        };
        let previous = median_of(|| drop(with_previous_kernels(multiply)));
        let now = median_of(|| drop(multiply()));
        let gflop = 2.0 * (tokens * width * outputs) as f64 / 1e9;
        row(
            "f32 product (`gemm` → panels)",
            &format!("{layer} {tokens}×{width}·{width}×{outputs}"),
            gflop,
            previous,
            now,
        );
    }
}

/// `values` in a memory-mapped file, as the `foley` binary reads a model's weights: in the
/// page cache's 4 KiB pages, which the hardware prefetcher does not cross (a vector's are
/// huge pages).
fn mapped(values: &[f32]) -> memmap2::Mmap {
    use std::io::Write;
    let mut file = tempfile::tempfile().expect("a temporary file for the weights");
    let bytes: Vec<u8> = values
        .iter()
        .flat_map(|value| value.to_ne_bytes())
        .collect();
    file.write_all(&bytes).expect("the weights written");
    // SAFETY: the file is this process's own, unlinked, and never written again.
    unsafe { memmap2::Mmap::map(&file) }.expect("the weights mapped")
}

/// A mapped file's bytes as the f32 values [`mapped`] wrote.
fn mapped_values(map: &memmap2::Mmap) -> &[f32] {
    // SAFETY: the mapping is page-aligned, holds whole f32 values and lives as long as the
    // slice; every bit pattern is an f32.
    unsafe { std::slice::from_raw_parts(map.as_ptr().cast(), map.len() / size_of::<f32>()) }
}

/// [`median_ms`] for work that makes no tensor.
fn median_of(mut run: impl FnMut()) -> f64 {
    run();
    let mut times: Vec<f64> = (0..15)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// The header of a table of kernels against their previous versions.
fn previous_header() {
    println!();
    println!("| kernel | shape | previous ms (GFLOP/s) | now ms (GFLOP/s) | speed-up |");
    println!("|---|---|---|---|---|");
}

fn previous_versions(device: &Device) -> Result<()> {
    previous_header();
    winograd_products();
    f32_products();
    // (batch, queries, keys, width, heads): UNet levels 1–3 self-attention, a cross-attention,
    // the VAE's mid-block.
    for (batch, queries, keys, width, heads) in [
        (2, 1024, 1024, 256, 8),
        (2, 256, 256, 384, 8),
        (2, 64, 64, 640, 8),
        (2, 1024, 80, 256, 8),
        (1, 4096, 4096, 512, 1),
    ] {
        let q = random(&[batch, queries, width], device)?;
        let k = random(&[batch, keys, width], device)?;
        let v = random(&[batch, keys, width], device)?;
        let scale = 1.0 / ((width / heads) as f64).sqrt();
        let gflop = 4.0 * (batch * queries * keys * width) as f64 / 1e9;
        against_previous(
            "attention (gemm, 4-pass softmax → register tiles, softmax down transposed scores)",
            &format!("{batch}×{heads} heads, {queries}×{keys} tokens, width {width}"),
            gflop,
            || attention(&q, &k, &v, heads, scale, None),
        )?;
    }
    // The UNet level-1 feed-forward: (batch 2, 1024 tokens, 2 × 1024).
    let projected = random(&[2, 1024, 2048], device)?;
    against_previous(
        "GEGLU (libm erf → 8-lane erf)",
        "[2,1024,2048]",
        0.0,
        || geglu(&projected),
    )?;
    // 3×3 convolutions below 256 channels (from 256 up, Winograd stays): the UNet's first
    // level and the VAE's last, (batch, channels, height, width).
    for [batch, channels, height, width] in [[2, 128, 256, 16], [1, 128, 1024, 64]] {
        let layer = Conv2d::new(channels, channels, 3, 1, 1, weights(device).pp("c2"))?;
        let xs = random(&[batch, channels, height, width], device)?;
        let gflop = 2.0 * (batch * channels * channels * 9 * height * width) as f64 / 1e9;
        against_previous(
            "conv2d 3×3 (im2col → direct)",
            &format!("[{batch},{channels},{height},{width}]"),
            gflop,
            || layer.forward(&xs),
        )?;
    }
    // The UNet's third level, 64 tiles an image: Winograd now starts there.
    let layer = Conv2d::new(384, 384, 3, 1, 1, weights(device).pp("c3"))?;
    let xs = random(&[2, 384, 64, 4], device)?;
    let gflop = 2.0 * (2 * 384 * 384 * 9 * 64 * 4) as f64 / 1e9;
    against_previous(
        "conv2d 3×3 (im2col → Winograd)",
        "[2,384,64,4]",
        gflop,
        || layer.forward(&xs),
    )?;
    // F(4×4) where an image has 64 of its tiles: the UNet's second level, the VAE's 256- and
    // 512-channel layers (F(2×2) with the previous kernels).
    for [batch, channels, height, width] in [[2, 256, 128, 8], [1, 256, 512, 32], [1, 512, 256, 16]]
    {
        let layer = Conv2d::new(channels, channels, 3, 1, 1, weights(device).pp("c4"))?;
        let xs = random(&[batch, channels, height, width], device)?;
        let gflop = 2.0 * (batch * channels * channels * 9 * height * width) as f64 / 1e9;
        against_previous(
            "conv2d 3×3 (Winograd F(2×2) → F(4×4))",
            &format!("[{batch},{channels},{height},{width}]"),
            gflop,
            || layer.forward(&xs),
        )?;
    }
    // The UNet's second level (batch 2, 1024 tokens, 256 features): an attention projection,
    // the feed-forward's GEGLU input, and a transformer's `proj_out` back onto its input.
    let tokens = random(&[2, 1024, 256], device)?;
    for outputs in [256, 2048] {
        let layer = Linear::new(
            random(&[outputs, 256], device)?,
            Some(random(&[outputs], device)?),
        );
        let gflop = 2.0 * (2 * 1024 * 256 * outputs) as f64 / 1e9;
        against_previous(
            "linear (a product per batch entry + bias pass → one product onto the bias)",
            &format!("[2,1024,256]→{outputs}"),
            gflop,
            || layer.forward(&tokens),
        )?;
    }
    let proj_out = Linear::new(random(&[256, 256], device)?, Some(random(&[256], device)?));
    let image = random(&[2, 256, 128, 8], device)?;
    against_previous(
        "proj_out (permute copy, 1×1 conv, residual add → one product onto bias + residual)",
        "[2,1024,256]→[2,256,128,8]",
        2.0 * (2 * 1024 * 256 * 256) as f64 / 1e9,
        || proj_out.tokens_onto_image(&tokens, &image),
    )?;
    // HiFi-GAN's deep 1-D convolutions (AudioLDM's vocoder, 10.24 s): (channels, samples, taps,
    // dilation).
    for (channels, length, kernel, dilation) in [
        (512, 5120, 11, 5),
        (512, 5120, 3, 1),
        (256, 20480, 11, 5),
        (128, 40960, 11, 1),
    ] {
        let (layer, xs, gflop) = conv1d_layer(device, channels, length, (kernel, dilation))?;
        against_previous(
            "conv1d + leaky ReLU (im2col tiles → direct; on AVX2 F(4, 3) pieces)",
            &format!("[1,{channels},{length}] k{kernel} d{dilation}"),
            gflop,
            || layer.forward_leaky(&xs, 0.1),
        )?;
    }
    Ok(())
}

/// The bf16 products mode against f32 at the UNet's heaviest products (AudioLDM 2, 10.24 s,
/// guidance batch of 2) and a HiFi-GAN layer.
fn bf16_products(device: &Device) -> Result<()> {
    println!();
    println!(
        "| layer (bf16 engine) | shape | f32 ms (GFLOP/s) | bf16 products ms (GFLOP/s) | speed-up |"
    );
    println!("|---|---|---|---|---|");
    let mut engines = gemm_bf16::available();
    engines.push(Engine::Emulated);
    // (tokens, inputs, outputs): a level-1 GEGLU projection, a level-2 attention projection,
    // a cross-attention key projection of 8 text tokens (all weights, few rows).
    let linears = [
        (2 * 1024, 320, 2560),
        (2 * 256, 640, 640),
        (2 * 8, 1024, 640),
    ];
    // (batch, channels, height, width) of 3×3 convolutions: the UNet's first two levels.
    let convs = [[2, 320, 256, 16], [2, 640, 128, 8]];
    for engine in engines {
        let compare = |layer: &str, shape: String, gflop: f64, run: &dyn Fn() -> Result<Tensor>| {
            let f32 = median_ms(run)?;
            let bf16 = with_bf16_products(Some(engine), || median_ms(run))?;
            row(&format!("{layer} ({engine:?})"), &shape, gflop, f32, bf16);
            Result::Ok(())
        };
        for (tokens, inputs, outputs) in linears {
            let weight = random(&[outputs, inputs], device)?;
            let layer = Linear::new(weight.clone(), None);
            let xs = random(&[tokens, inputs], device)?;
            let gflop = 2.0 * (tokens * inputs * outputs) as f64 / 1e9;
            let shape = format!("{tokens}×{inputs}→{outputs}");
            // A new layer every call packs its weights every call, as before the layers kept
            // them.
            let fresh = || Linear::new(weight.clone(), None).forward(&xs);
            compare(
                "linear, weights packed every call",
                shape.clone(),
                gflop,
                &fresh,
            )?;
            compare("linear", shape, gflop, &|| layer.forward(&xs))?;
        }
        for [batch, channels, height, width] in convs {
            let tensors = [
                ("c.weight", random(&[channels, channels, 3, 3], device)?),
                ("c.bias", random(&[channels], device)?),
            ];
            let tensors = tensors.map(|(name, tensor)| (name.to_string(), tensor));
            let vb = || VarBuilder::from_tensors(tensors.clone().into(), DType::F32, device);
            let new_layer = || Conv2d::new(channels, channels, 3, 1, 1, vb().pp("c"));
            let layer = new_layer()?;
            let xs = random(&[batch, channels, height, width], device)?;
            let gflop = 2.0 * (batch * channels * channels * 9 * height * width) as f64 / 1e9;
            let shape = format!("[{batch},{channels},{height},{width}]");
            // A new layer every call packs its weights every call, as before the layers kept
            // them (then they were packed again for every im2col tile).
            let fresh = || new_layer()?.forward(&xs);
            compare(
                "conv2d 3×3, weights packed every call",
                shape.clone(),
                gflop,
                &fresh,
            )?;
            compare("conv2d 3×3", shape, gflop, &|| layer.forward(&xs))?;
        }
        let (channels, length, kernel, dilation) = (128, 40960, 7, 3);
        let (layer, xs, gflop) = conv1d_layer(device, channels, length, (kernel, dilation))?;
        let shape = format!("[1,{channels},{length}] k{kernel} d{dilation}");
        compare("conv1d", shape, gflop, &|| layer.forward(&xs))?;
        // UNet levels 1 and 2 self-attention (batch, tokens, width), 8 heads: the bf16 products
        // with the row softmax between them (f32 takes the register tiles on AVX-512).
        for (batch, tokens, width) in [(2, 1024, 256), (2, 256, 384)] {
            let heads = 8;
            let q = random(&[batch, tokens, width], device)?;
            let k = random(&[batch, tokens, width], device)?;
            let v = random(&[batch, tokens, width], device)?;
            let scale = 1.0 / ((width / heads) as f64).sqrt();
            let gflop = 4.0 * (batch * tokens * tokens * width) as f64 / 1e9;
            let shape = format!("{batch}×{heads} heads, {tokens} tokens, width {width}");
            compare("self-attention", shape, gflop, &|| {
                attention(&q, &k, &v, heads, scale, None)
            })?;
        }
    }
    Ok(())
}

/// bf16 products against f32 at every HiFi-GAN stage's residual convolutions (AudioLDM's
/// vocoder, 10.24 s: 512 channels × 5120 samples up to 32 × 163840), on each hardware engine.
fn bf16_hifigan(device: &Device) -> Result<()> {
    println!();
    println!("| conv1d (bf16 engine) | shape | f32 ms (GFLOP/s) | bf16 ms (GFLOP/s) | speed-up |");
    println!("|---|---|---|---|---|");
    let stages = [
        (512, 5120),
        (256, 20480),
        (128, 40960),
        (64, 81920),
        (32, 163840),
    ];
    for engine in gemm_bf16::available() {
        for (channels, length) in stages {
            for (kernel, dilation) in [(3, 1), (7, 3), (11, 5)] {
                let (layer, xs, gflop) =
                    conv1d_layer(device, channels, length, (kernel, dilation))?;
                let run = || layer.forward(&xs);
                let f32 = median_ms(run)?;
                let bf16 = with_bf16_products(Some(engine), || median_ms(run))?;
                let shape = format!("[1,{channels},{length}] k{kernel} d{dilation}");
                row(&format!("{engine:?}"), &shape, gflop, f32, bf16);
            }
        }
    }
    Ok(())
}

/// A "same" 1-D convolution of `channels` to `channels` with random weights, an input of
/// `length` samples and its GFLOP.
fn conv1d_layer(
    device: &Device,
    channels: usize,
    length: usize,
    (kernel, dilation): (usize, usize),
) -> Result<(Conv1d, Tensor, f64)> {
    let padding = dilation * (kernel - 1) / 2;
    let layer = Conv1d::new(
        channels,
        channels,
        kernel,
        padding,
        dilation,
        weights(device).pp("c"),
    )?;
    let xs = random(&[1, channels, length], device)?;
    let gflop = 2.0 * (channels * channels * kernel * length) as f64 / 1e9;
    Ok((layer, xs, gflop))
}
