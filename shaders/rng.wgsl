// rng: the counter-based hash every device draw goes through (library module,
// no entry point; prepended to the kernels that draw). PCG hash (Jarzynski &
// Olano 2020): a good 32-bit mix, cheap on every backend, the same on every
// adapter. CPU reference: ops::categorical::pcg_hash.

fn pcg_hash(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}
