//! CleanRL's initialization: orthogonal weights with a gain per layer
//! (√2 for hidden layers, 0.01 for the policy head, 1 for the value head),
//! zero biases.

use rand::Rng;
use rand_distr::StandardNormal;

use crate::nn::LayerLayout;

/// A `rows × cols` matrix (row-major) with orthonormal rows or columns
/// (whichever are fewer), times `gain`: PyTorch's `nn.init.orthogonal_` —
/// QR of a standard normal matrix with the signs of R's diagonal folded in
/// (modified Gram-Schmidt gives that diagonal positive).
pub fn orthogonal(rows: usize, cols: usize, gain: f64, rng: &mut impl Rng) -> Vec<f64> {
    let (tall, short) = (rows.max(cols), rows.min(cols));
    // `short` vectors of length `tall`, orthonormalized in turn.
    let mut basis: Vec<Vec<f64>> = Vec::with_capacity(short);
    while basis.len() < short {
        let mut v: Vec<f64> = (0..tall)
            .map(|_| rng.sample::<f64, _>(StandardNormal))
            .collect();
        for _ in 0..2 {
            // Two passes of projection keep the basis orthogonal to f64 precision.
            for b in &basis {
                let dot: f64 = v.iter().zip(b).map(|(x, y)| x * y).sum();
                v.iter_mut().zip(b).for_each(|(x, y)| *x -= dot * y);
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        // A (measure-zero) dependent draw is simply redrawn.
        if norm > 1e-6 {
            basis.push(v.into_iter().map(|x| x / norm).collect());
        }
    }
    let mut out = vec![0.0; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            // Rows ≤ cols: the basis vectors are the rows; else they are the columns.
            out[r * cols + c] = gain
                * if rows <= cols {
                    basis[r][c]
                } else {
                    basis[c][r]
                };
        }
    }
    out
}

/// Writes CleanRL-initialized layers into one agent's parameter slice:
/// hidden layers with gain √2, the last layer with `output_gain`, zero biases.
pub fn init_mlp(layers: &[LayerLayout], output_gain: f64, params: &mut [f32], rng: &mut impl Rng) {
    for (i, layer) in layers.iter().enumerate() {
        let gain = if i + 1 == layers.len() {
            output_gain
        } else {
            2f64.sqrt()
        };
        let weights = orthogonal(layer.out_dim, layer.in_dim, gain, rng);
        for (slot, w) in params[layer.w_offset..layer.w_offset + weights.len()]
            .iter_mut()
            .zip(&weights)
        {
            *slot = *w as f32;
        }
        params[layer.b_offset..layer.b_offset + layer.out_dim].fill(0.0);
    }
}
