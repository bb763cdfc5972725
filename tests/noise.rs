//! `TorchGenerator` against `torch.randn(shape, generator=torch.Generator("cpu").manual_seed(S))`,
//! bit for bit, including consecutive draws and the scalar path's cached spare normal.

mod common;

use common::{Reference, fixtures, read_json};
use foley::engine::noise::TorchGenerator;

fn shapes() -> Vec<usize> {
    let json = read_json(&fixtures().join("reference/randn.json"));
    let shapes = json.get("shapes").unwrap_or(&json);
    let shapes = shapes.as_object().expect("shapes keyed by index");
    (0..shapes.len())
        .map(|index| &shapes[&index.to_string()])
        .map(|shape| {
            shape
                .as_array()
                .unwrap()
                .iter()
                .map(|dim| dim.as_u64().unwrap() as usize)
                .product()
        })
        .collect()
}

#[test]
fn randn_is_bit_exact_with_torch() {
    let reference = Reference::load_shared("randn");
    for seed in [0u64, 42, 4_294_967_301] {
        for (index, numel) in shapes().into_iter().enumerate() {
            let mut generator = TorchGenerator::new(seed);
            for call in ["first", "second"] {
                let key = format!("seed{seed}.shape{index}.{call}");
                let expected: Vec<u32> =
                    reference.values(&key).iter().map(|v| v.to_bits()).collect();
                let actual: Vec<u32> = generator
                    .randn_f32(numel)
                    .iter()
                    .map(|v| v.to_bits())
                    .collect();
                assert_eq!(actual, expected, "{key}");
            }
        }
    }
}

#[test]
fn float64_draw_leaves_the_spare_normal_for_the_next_call() {
    let reference = Reference::load_shared("randn");
    let mut generator = TorchGenerator::new(42);
    let doubles = generator.randn_f64(7);
    let expected = reference.get("seed42.f64").to_vec1::<f64>().unwrap();
    assert_eq!(doubles, expected);
    let next = generator.randn_f32(1);
    assert_eq!(
        next[0].to_bits(),
        reference.values("seed42.f64.then_f32")[0].to_bits()
    );
}
