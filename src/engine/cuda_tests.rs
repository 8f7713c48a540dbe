//! The CUDA build against the CPU: the same model files and inputs on both devices, their
//! outputs compared. Compiled only with `--features cuda`; run on a machine with a GPU
//! (`cargo test --release --features cuda cuda_tests`).

use candle_core::Device;

use super::embedder::Embedder;
use super::llama::LlamaModel;
use super::testing::{
    SMOLLM2_PROMPT as PROMPT, chat_gguf, embedder_dir, max_abs_diff, model_lock, top_k,
};

fn cuda() -> Device {
    Device::new_cuda(0).expect("CUDA device 0")
}

/// How far the GPU's logits may be from the CPU's, in units of how far the CPU's own logits
/// move when the same weights run through another correct kernel (re-quantized to Q8_0,
/// activations rounded to 8 bits differently). Every kernel differs on the GPU, not only the
/// matmuls, and rounding compounds over the 30 layers: on an H200 the largest logit
/// difference was 1.0–3.1 of those units over 43 steps (1.2–3.4 in logits), and the greedy
/// token agreed wherever the CPU's lead was over twice the difference. A wrong kernel gives
/// differences of the logits' own size (the CUDA re-quantization bug: NaNs).
struct Tolerance {
    scale: f32,
}

impl Tolerance {
    fn check(&self, step: &str, cpu: &[f32], gpu: &[f32], failures: &mut Vec<String>) {
        assert_eq!(cpu.len(), gpu.len(), "{step}");
        if !gpu.iter().all(|v| v.is_finite()) {
            failures.push(format!("{step}: non-finite GPU logits"));
            return;
        }
        let diff = max_abs_diff(cpu, gpu);
        let (c, g) = (top_k(cpu, 2), top_k(gpu, 1));
        let lead = cpu[c[0] as usize] - cpu[c[1] as usize];
        eprintln!(
            "{step}: max |cpu - gpu| {diff:.3} (allowed {:.3}), top-1 cpu {} gpu {} (cpu lead {lead:.3})",
            self.scale, c[0], g[0]
        );
        if diff > self.scale {
            failures.push(format!("{step}: logits differ by {diff}"));
        }
        // The greedy token must agree wherever the CPU's lead exceeds the rounding.
        if lead > 2.0 * diff && c[0] != g[0] {
            failures.push(format!(
                "{step}: greedy tokens differ: {} vs {}",
                c[0], g[0]
            ));
        }
    }
}

#[test]
fn the_chat_model_on_cuda_gives_the_cpus_logits() {
    let _lock = model_lock();
    let Some(path) = chat_gguf("the_chat_model_on_cuda_gives_the_cpus_logits") else {
        return;
    };
    // The file's own Q4_1 on both: a CUDA build never re-quantizes.
    let cpu = LlamaModel::open(&path, &Device::Cpu, false).unwrap();
    let gpu = LlamaModel::open(&path, &cuda(), true).unwrap();
    let q8 = LlamaModel::open(&path, &Device::Cpu, true).unwrap();
    let (mut cpu_cache, mut gpu_cache, mut q8_cache) =
        (cpu.new_cache(), gpu.new_cache(), q8.new_cache());
    let mut c = cpu.prefill(&PROMPT, &mut cpu_cache).unwrap();
    let mut g = gpu.prefill(&PROMPT, &mut gpu_cache).unwrap();
    let mut q = q8.prefill(&PROMPT, &mut q8_cache).unwrap();
    let mut failures = Vec::new();
    // Greedy on the CPU's choice, all three fed the same tokens; the cache grows past its
    // first reservation on the way.
    for step in 0..=40 {
        let tolerance = Tolerance {
            scale: 4.0 * max_abs_diff(&c, &q) + 0.5,
        };
        let name = match step {
            0 => "prefill".to_owned(),
            n => format!("decode {n}"),
        };
        tolerance.check(&name, &c, &g, &mut failures);
        let next = top_k(&c, 1)[0];
        c = cpu
            .decode_batch(&[next], &mut [&mut cpu_cache])
            .unwrap()
            .remove(0);
        g = gpu
            .decode_batch(&[next], &mut [&mut gpu_cache])
            .unwrap()
            .remove(0);
        q = q8
            .decode_batch(&[next], &mut [&mut q8_cache])
            .unwrap()
            .remove(0);
    }

    // Continuous batching on the GPU: a fresh sequence's prompt beside the running one's
    // next token, in one pass, against each fed alone on the CPU.
    let tolerance = Tolerance {
        scale: 4.0 * max_abs_diff(&c, &q) + 0.5,
    };
    let next = top_k(&c, 1)[0];
    let fresh_prompt = &PROMPT[..20];
    let (mut fresh_gpu, mut fresh_cpu) = (gpu.new_cache(), cpu.new_cache());
    let mut both = gpu
        .step(
            &[&[next], fresh_prompt],
            &mut [&mut gpu_cache, &mut fresh_gpu],
        )
        .unwrap();
    let running = cpu
        .decode_batch(&[next], &mut [&mut cpu_cache])
        .unwrap()
        .remove(0);
    let fresh = cpu.prefill(fresh_prompt, &mut fresh_cpu).unwrap();
    tolerance.check(
        "batched: fresh prompt",
        &fresh,
        &both.remove(1),
        &mut failures,
    );
    tolerance.check("batched: running", &running, &both.remove(0), &mut failures);
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn the_embedder_on_cuda_gives_the_cpus_vectors() {
    let _lock = model_lock();
    let Some(dir) = embedder_dir("the_embedder_on_cuda_gives_the_cpus_vectors") else {
        return;
    };
    let texts = [
        "A man is playing a guitar.",
        "the broken window",
        "猫が好きです",
        "Prices rose 3.5% in October, the fastest pace this year.",
    ];
    let (cpu, _) = Embedder::load(&dir, &Device::Cpu)
        .unwrap()
        .embed(&texts)
        .unwrap();
    let (gpu, _) = Embedder::load(&dir, &cuda())
        .unwrap()
        .embed(&texts)
        .unwrap();
    for ((a, b), text) in cpu.iter().zip(&gpu).zip(texts) {
        let cos: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        assert!(cos >= 0.9999, "{text}: cosine {cos} between CPU and GPU");
    }
}
