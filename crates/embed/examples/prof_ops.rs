//! Times the main ops of a MiniLM forward in isolation (profiling aid).
use candle_core::{Device, Tensor};
use std::time::Instant;

fn time<F: FnMut() -> candle_core::Result<Tensor>>(
    name: &str,
    n: usize,
    mut f: F,
) -> candle_core::Result<()> {
    f()?;
    let t = Instant::now();
    for _ in 0..n {
        f()?;
    }
    println!(
        "{name:40} {:8.3} ms",
        t.elapsed().as_secs_f64() * 1e3 / n as f64
    );
    Ok(())
}

fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let tok = 32 * 60;
    let x = Tensor::randn(0f32, 1.0, (tok, 384), &dev)?;
    let w = Tensor::randn(0f32, 1.0, (1536, 384), &dev)?;
    let wt = w.t()?.contiguous()?;
    let b = Tensor::randn(0f32, 1.0, 1536, &dev)?;
    let h = Tensor::randn(0f32, 1.0, (tok, 1536), &dev)?;
    time("matmul x @ w.t() (strided)", 10, || x.matmul(&w.t()?))?;
    time("matmul x @ wt (contiguous)", 10, || x.matmul(&wt))?;
    time("broadcast_add bias [tok,1536]", 10, || h.broadcast_add(&b))?;
    time("gelu_erf [tok,1536]", 10, || h.gelu_erf())?;
    time("gelu (tanh) [tok,1536]", 10, || h.gelu())?;
    let ln_w = Tensor::ones(384, candle_core::DType::F32, &dev)?;
    let ln_b = Tensor::zeros(384, candle_core::DType::F32, &dev)?;
    time("layer_norm [tok,384]", 10, || {
        candle_nn::ops::layer_norm(&x, &ln_w, &ln_b, 1e-12)
    })?;
    time("add [tok,384]", 10, || &x + &x)?;
    let s = Tensor::randn(0f32, 1.0, (32, 12, 60, 60), &dev)?;
    time("softmax_last_dim [32,12,60,60]", 10, || {
        candle_nn::ops::softmax_last_dim(&s)
    })?;
    let q = Tensor::randn(0f32, 1.0, (32, 12, 60, 32), &dev)?;
    time("q@k^T [32,12,60,32]", 10, || q.matmul(&q.t()?))?;
    time("p@v", 10, || s.matmul(&q))?;
    let qkv = Tensor::randn(0f32, 1.0, (tok, 1152), &dev)?;
    time("qkv permute+contiguous", 10, || {
        let p = qkv.reshape((32, 60, 3, 12, 32))?.permute((2, 0, 3, 1, 4))?;
        p.get(0)?.contiguous()
    })?;
    Ok(())
}
