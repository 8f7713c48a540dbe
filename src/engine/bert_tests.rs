//! Unit tests of `bert`.

use super::*;

/// erf to f64 precision by its Maclaurin series (|x| ≤ 3) or its asymptotic expansion.
fn erf_f64(x: f64) -> f64 {
    let a = x.abs();
    let value = if a <= 3.0 {
        let mut term = a;
        let mut sum = a;
        for n in 1..200 {
            term *= -a * a / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc(a) ≈ e^(−a²)/(a√π) · (1 − 1/(2a²) + 3/(4a⁴) − 15/(8a⁶)), ample at a > 3.
        let a2 = a * a;
        let series = 1.0 - 1.0 / (2.0 * a2) + 3.0 / (4.0 * a2 * a2) - 15.0 / (8.0 * a2 * a2 * a2);
        1.0 - (-a2).exp() / (a * std::f64::consts::PI.sqrt()) * series
    };
    value.copysign(x)
}

#[test]
fn erf_is_within_5e_7_of_the_exact_value() {
    let mut worst = 0f64;
    for i in -80_000..=80_000 {
        let x = i as f64 / 10_000.0;
        worst = worst.max((f64::from(erf(x as f32)) - erf_f64(x)).abs());
    }
    assert!(worst < 5e-7, "max error {worst}");
}

/// The fused CPU ops against candle's own ops (the path other devices take).
#[test]
fn fused_linear_steps_match_candle_ops() {
    let device = candle_core::Device::Cpu;
    let ramp = |n: usize, scale: f64, shift: f64| {
        Tensor::arange(0u32, n as u32, &device)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .affine(scale, shift)
            .unwrap()
    };
    let linear = Linear {
        weight: ramp(12 * 8, 0.01, -0.5).reshape((12, 8)).unwrap(),
        bias: ramp(12, 0.1, -0.6),
    };
    let x = ramp(100 * 8, 0.004, -1.6).reshape((100, 8)).unwrap();
    let residual = ramp(100 * 12, -0.002, 1.0).reshape((100, 12)).unwrap();
    let plain = x
        .matmul(&linear.weight.t().unwrap())
        .unwrap()
        .broadcast_add(&linear.bias)
        .unwrap();
    let close = |ours: Tensor, theirs: Tensor| {
        let diff = (ours - theirs)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap();
        let diff = diff.to_scalar::<f32>().unwrap();
        assert!(diff < 1e-6, "differs by {diff}");
    };
    close(linear.forward(&x).unwrap(), plain.clone());
    close(linear.forward_gelu(&x).unwrap(), plain.gelu_erf().unwrap());
    close(
        linear.forward_residual(&x, &residual).unwrap(),
        (&plain + &residual).unwrap(),
    );
}
