//! GPU kernels by family; each file holds the GPU entry point and its CPU reference.

pub mod categorical;
pub mod context;
pub mod gae;
pub mod gather;
pub mod linear;
pub mod optim;
pub mod ppo_loss;
pub mod stats;

/// Floats per rollout record row: log-prob, value, advantage, return, action.
pub const RECORD: usize = 5;
/// Field indices of a record row.
pub mod record {
    pub const LOGPROB: usize = 0;
    pub const VALUE: usize = 1;
    pub const ADVANTAGE: usize = 2;
    pub const RETURN: usize = 3;
    pub const ACTION: usize = 4;
}

/// Fails unless `value` fits the 32-bit indices the kernels use.
pub(crate) fn fits_u32(op: &str, what: &str, value: usize) -> crate::Result<u32> {
    u32::try_from(value).map_err(|_| {
        crate::Error::config(
            format!("{op}.{what}"),
            value,
            "exceeds 2^32 - 1, the largest index a kernel can address",
        )
    })
}

/// One field of every row of records [rows][RECORD], widened to f64.
pub fn record_column(records: &[f32], field: usize) -> Vec<f64> {
    records.chunks(RECORD).map(|r| r[field] as f64).collect()
}
