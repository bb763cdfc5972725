use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use foley::engine::models::unet::{UNet2DConditionModel, UNetConditioning, UNetConfig};
fn main() {
    let config: UNetConfig = serde_json::from_str(r#"{"attention_head_dim": 8, "block_out_channels": [128, 256, 384, 640],
        "cross_attention_dim": [[null, 768, 1024], [null, 768, 1024], [null, 768, 1024], [null, 768, 1024]],
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "in_channels": 8, "out_channels": 8, "layers_per_block": 2, "sample_size": 256,
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]}"#).unwrap();
    let dev = Device::Cpu;
    let vb = VarBuilder::zeros(DType::F32, &dev);
    let unet = UNet2DConditionModel::new(&config, vb).unwrap();
    let x = Tensor::randn(0f32, 1., (2, 8, 256, 16), &dev).unwrap();
    let g = Tensor::randn(0f32, 1., (2, 8, 768), &dev).unwrap();
    let t = Tensor::randn(0f32, 1., (2, 16, 1024), &dev).unwrap();
    let m = Tensor::ones((2, 16), DType::U32, &dev).unwrap();
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    for _ in 0..n {
        let start = std::time::Instant::now();
        let out = unet
            .forward(
                &x,
                500.0,
                UNetConditioning {
                    generated: Some(&g),
                    text: Some(&t),
                    text_mask: Some(&m),
                    class_labels: None,
                },
            )
            .unwrap();
        println!("{:?} {:.2}s", out.dims(), start.elapsed().as_secs_f64());
    }
}
