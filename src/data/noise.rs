//! Gaussian noise augmentation: `clamp(x + N(0, (sigma/255)^2), 0, 1)`.

use burn::tensor::Tensor;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

/// Adds Gaussian noise of standard deviation `sigma / 255` to every pixel and clamps to
/// `[0, 1]`; the draw is fixed by `seed`. `sigma = 0` returns the input unchanged.
pub fn add_gaussian_noise(pixels: &[f32], sigma: f32, seed: u64) -> Vec<f32> {
    if sigma == 0.0 {
        return pixels.to_vec();
    }
    let std = sigma / 255.0;
    let mut rng = StdRng::seed_from_u64(seed);
    pixels
        .iter()
        .map(|&p| {
            let z: f32 = StandardNormal.sample(&mut rng);
            (p + std * z).clamp(0.0, 1.0)
        })
        .collect()
}

/// [`add_gaussian_noise`] for a tensor batch (the noise is drawn on the CPU with the seed, so
/// it is the same on every backend).
pub fn add_gaussian_noise_tensor(x: Tensor<4>, sigma: f32, seed: u64) -> Tensor<4> {
    if sigma == 0.0 {
        return x;
    }
    let dims = x.dims();
    let device = x.device();
    let n: usize = dims.iter().product();
    let std = sigma / 255.0;
    let mut rng = StdRng::seed_from_u64(seed);
    let noise: Vec<f32> = (0..n)
        .map(|_| std * <StandardNormal as Distribution<f32>>::sample(&StandardNormal, &mut rng))
        .collect();
    let noise = crate::util::tensor4(noise, dims, &device);
    (x + noise).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_statistics() {
        let x = vec![0.5f32; 100_000];
        let y = add_gaussian_noise(&x, 40.0, 3);
        let mean = y.iter().sum::<f32>() / y.len() as f32;
        let var = y.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / y.len() as f32;
        assert!((mean - 0.5).abs() < 2e-3, "mean {mean}");
        assert!(
            (var.sqrt() - 40.0 / 255.0).abs() < 2e-3,
            "std {}",
            var.sqrt()
        );
        assert!(y.iter().all(|v| (0.0..=1.0).contains(v)));
        assert_eq!(y, add_gaussian_noise(&x, 40.0, 3));
        assert_eq!(add_gaussian_noise(&x[..10], 0.0, 3), x[..10].to_vec());
    }
}
