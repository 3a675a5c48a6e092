"""Times a prefill of 8,192 tokens of a Llama-3-8B-shaped model (random bf16 weights) with PyTorch, the baseline
the marketplace's import competes with. Prints the versions used, then: prefill: tokens=N median_ms=M device=NAME."""
import inspect
import statistics
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

TOKENS = 8192

config = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256, max_position_embeddings=TOKENS,
                     rope_theta=500000.0, torch_dtype=torch.bfloat16)
torch.manual_seed(0)
with torch.device("cuda"):
    model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
ids = torch.randint(0, config.vocab_size, (1, TOKENS), device="cuda")
# Only the last position's logits are needed; the argument's name changed across transformers versions, and an
# unknown one is swallowed by **kwargs, which would time 8,192 x 128,256 logits as well.
params = inspect.signature(model.forward).parameters
keep = next((name for name in ("logits_to_keep", "num_logits_to_keep") if name in params), None)
extra = {keep: 1} if keep else {}
print(f"prefill: torch={torch.__version__} last_logits_only={keep or 'unsupported'}", flush=True)

times = []
with torch.inference_mode():
    for i in range(6):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        # The KV cache is built (use_cache) as a serving engine's prefill would; only the last logits are needed.
        model(ids, use_cache=True, **extra)
        torch.cuda.synchronize()
        if i >= 2:
            times.append((time.perf_counter() - t0) * 1e3)
print(f"prefill: tokens={TOKENS} median_ms={statistics.median(times):.2f} "
      f"device={torch.cuda.get_device_name().replace(' ', '_')}")
