//! The arithmetic of a BERT forward pass on row-major `f32` rows: matrix
//! products by `gemm` (the kernels candle used, AVX-512 where the CPU has
//! it), and the element-wise steps between them written as plain loops the
//! compiler vectorizes, compiled for the widest vector unit the CPU has
//! ([`widest_simd!`]) and run on every core by rayon. Candle ran those
//! steps on one thread, GELU by a scalar `erf`: they were half of a pass.

use gemm::Parallelism;
use rayon::prelude::*;

/// Defines `fn $name` with its body compiled three times (for AVX-512, for
/// AVX2 with FMA, and for the baseline x86-64 or other target), each call
/// running the widest the CPU has: the release build targets the baseline,
/// whose 4-float vectors would leave most of a modern core idle.
macro_rules! widest_simd {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512($($arg: $ty),*) {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has the features `avx512` was compiled for.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has the features `avx2` was compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}
pub(super) use widest_simd;

/// A dense layer: `outputs × inputs` weights (PyTorch's layout) and a bias.
pub(super) struct Linear {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub inputs: usize,
    pub outputs: usize,
}

/// Rows handed to one rayon task at a time: enough work to outweigh the hand-off.
const ROWS_PER_TASK: usize = 16;

impl Linear {
    /// `dst = src · weightᵀ + bias (+ residual)`, for the `src.len() / inputs` rows of `src`.
    pub fn apply(&self, src: &[f32], residual: Option<&[f32]>, dst: &mut [f32]) {
        let rows = src.len() / self.inputs;
        // What the unsafe product below relies on: checked, not assumed.
        assert_eq!(src.len(), rows * self.inputs, "a dense layer's input is not whole rows");
        assert_eq!(dst.len(), rows * self.outputs, "a dense layer's output has room for other than its rows");
        assert_eq!((self.weight.len(), self.bias.len()), (self.outputs * self.inputs, self.outputs));
        // The bias (and the residual) first; the product is then added onto it.
        dst.par_chunks_mut(self.outputs * ROWS_PER_TASK).enumerate().for_each(|(task, out)| {
            for (r, row) in out.chunks_exact_mut(self.outputs).enumerate() {
                row.copy_from_slice(&self.bias);
                if let Some(residual) = residual {
                    let at = (task * ROWS_PER_TASK + r) * self.outputs;
                    row.iter_mut().zip(&residual[at..at + self.outputs]).for_each(|(y, x)| *y += x);
                }
            }
        });
        let threads = rayon::current_num_threads();
        let parallelism = if threads > 1 { Parallelism::Rayon(threads) } else { Parallelism::None };
        // SAFETY: the three matrices are the slices above, whose lengths the
        // strides stay within: dst is rows × outputs (row stride `outputs`),
        // src rows × inputs (row stride `inputs`), and the weight read as its
        // transpose, inputs × outputs (element (k, j) at j·inputs + k).
        unsafe {
            gemm::gemm(
                rows,
                self.outputs,
                self.inputs,
                dst.as_mut_ptr(),
                1,
                self.outputs as isize,
                true,
                src.as_ptr(),
                1,
                self.inputs as isize,
                self.weight.as_ptr(),
                self.inputs as isize,
                1,
                1.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            );
        }
    }
}

/// Layer normalisation's scale and shift.
pub(super) struct Norm {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub eps: f32,
}

impl Norm {
    /// Normalises each row of `rows` (of `weight.len()` values) in place.
    pub fn apply(&self, rows: &mut [f32]) {
        let width = self.weight.len();
        rows.par_chunks_mut(width * ROWS_PER_TASK).for_each(|rows| normalize_rows(self, rows));
    }

    #[inline(always)]
    pub fn apply_row(&self, row: &mut [f32]) {
        let n = row.len() as f32;
        let mean = row.iter().sum::<f32>() / n;
        let variance = row.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / n;
        let scale = 1.0 / (variance + self.eps).sqrt();
        for ((x, w), b) in row.iter_mut().zip(&self.weight).zip(&self.bias) {
            *x = (*x - mean) * scale * w + b;
        }
    }
}

widest_simd! {
    fn normalize_rows(norm: &Norm, rows: &mut [f32]) {
        for row in rows.chunks_exact_mut(norm.weight.len()) {
            norm.apply_row(row);
        }
    }
}

/// The feed-forward activation, by the name in `config.json`'s `hidden_act`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Activation {
    /// `gelu`: x·Φ(x), with the error function (BERT's and MiniLM's).
    Gelu,
    /// `gelu_new`, `gelu_pytorch_tanh`: GELU's tanh approximation.
    GeluTanh,
    Relu,
}

impl Activation {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(Self::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Some(Self::GeluTanh),
            "relu" => Some(Self::Relu),
            _ => None,
        }
    }

    /// Applies the activation to every value, in place, on every core.
    pub fn apply(self, values: &mut [f32]) {
        values.par_chunks_mut(4096).for_each(|values| activate(self, values));
    }
}

widest_simd! {
    fn activate(activation: Activation, values: &mut [f32]) {
        match activation {
            Activation::Gelu => {
                values.iter_mut().for_each(|x| *x = 0.5 * *x * (1.0 + erf(*x * std::f32::consts::FRAC_1_SQRT_2)))
            }
            Activation::GeluTanh => values.iter_mut().for_each(|x| {
                const SQRT_2_OVER_PI: f32 = 0.797_884_6;
                *x = 0.5 * *x * (1.0 + (SQRT_2_OVER_PI * (*x + 0.044_715 * *x * *x * *x)).tanh());
            }),
            Activation::Relu => values.iter_mut().for_each(|x| *x = x.max(0.0)),
        }
    }
}

/// The error function in single precision, as a rational function of `x`
/// clamped to [-4, 4] (beyond, erf is ±1 in `f32`): Eigen's and XLA's
/// `erf` for floats. Branch-free, so a loop over it vectorizes, where the
/// scalar `erff` of libm does not.
#[inline(always)]
pub(super) fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906_3e-4;
    p = x2 * p + -2.954_6e-3;
    p = x2 * p + -1.609_603_3e-2;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329e-3;
    q = x2 * q + -1.426_474e-2;
    x * p / q
}

/// Softmax of `scores` in place.
#[inline(always)]
pub(super) fn softmax(scores: &mut [f32]) {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    let inverse = 1.0 / sum;
    scores.iter_mut().for_each(|s| *s *= inverse);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_product_is_the_naive_one_plus_bias_and_residual() {
        let (rows, inputs, outputs) = (37, 19, 23);
        let value = |i: usize| ((i * 7919) % 97) as f32 / 97.0 - 0.5;
        let linear = Linear {
            weight: (0..outputs * inputs).map(value).collect(),
            bias: (0..outputs).map(|i| value(i + 5)).collect(),
            inputs,
            outputs,
        };
        let src: Vec<f32> = (0..rows * inputs).map(|i| value(i + 11)).collect();
        let residual: Vec<f32> = (0..rows * outputs).map(|i| value(i + 3)).collect();
        for with_residual in [false, true] {
            let mut dst = vec![f32::NAN; rows * outputs];
            linear.apply(&src, with_residual.then_some(&residual[..]), &mut dst);
            for r in 0..rows {
                for j in 0..outputs {
                    let mut expected = linear.bias[j] + if with_residual { residual[r * outputs + j] } else { 0.0 };
                    for k in 0..inputs {
                        expected += src[r * inputs + k] * linear.weight[j * inputs + k];
                    }
                    let got = dst[r * outputs + j];
                    assert!((got - expected).abs() < 1e-5, "row {r}, column {j}: {got} against {expected}");
                }
            }
        }
    }

    /// erf by its series (x < 3) and its asymptotic expansion, in f64.
    fn erf_reference(x: f64) -> f64 {
        if x.abs() >= 3.0 {
            let t = 1.0 / (x * x);
            let tail = (-x * x).exp() / (x.abs() * std::f64::consts::PI.sqrt()) * (1.0 - t / 2.0 + 3.0 * t * t / 4.0);
            return x.signum() * (1.0 - tail);
        }
        let (mut term, mut sum) = (x, x);
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn erf_is_within_float_precision_of_the_series() {
        let mut worst = 0f64;
        for i in -6000..=6000 {
            let x = i as f64 / 1000.0;
            worst = worst.max((f64::from(erf(x as f32)) - erf_reference(x)).abs());
        }
        assert!(worst < 1e-6, "largest error {worst}");
        assert_eq!(erf(0.0), 0.0);
        // Clamped, so infinities (an overflowing activation) stay finite.
        assert!((erf(f32::INFINITY) - 1.0).abs() < 1e-6 && (erf(f32::NEG_INFINITY) + 1.0).abs() < 1e-6);
    }

    #[test]
    fn layer_norm_gives_zero_mean_unit_variance_before_scale_and_shift() {
        let norm = Norm { weight: vec![2.0; 5], bias: vec![1.0; 5], eps: 1e-12 };
        let mut row = [1.0, 2.0, 3.0, 4.0, 5.0];
        norm.apply_row(&mut row);
        let plain: Vec<f32> = row.iter().map(|y| (y - 1.0) / 2.0).collect();
        let mean = plain.iter().sum::<f32>() / 5.0;
        let variance = plain.iter().map(|x| x * x).sum::<f32>() / 5.0;
        assert!(mean.abs() < 1e-6 && (variance - 1.0).abs() < 1e-5, "mean {mean}, variance {variance}");
    }

    #[test]
    fn softmax_sums_to_one_and_survives_large_scores() {
        let mut scores = [1000.0, 1000.0, f32::MIN];
        softmax(&mut scores);
        assert_eq!(scores, [0.5, 0.5, 0.0]);
    }
}
