#!/usr/bin/env bash
# The GPU check, run on a GPU machine from the repository root (see docs/gpu.md):
#   1. the CUDA unit tests of kvmarket-native and kvmarket-nvlink (skipped as assumptions where no GPU),
#   2. the cross-process import benchmark (gpu-summary line),
#   3. a PyTorch prefill of the same 8,192 tokens, and import time / prefill time.
# Expects .device/ from benchmarks/gpu/stage.sh. Writes logs under $OUT (or ./gpu-out). Each phase has a time
# limit of its own, so one that hangs leaves the others their time.
set -uo pipefail
out=${OUT:-gpu-out}
mkdir -p "$out"
tar xzf .device/jre17.tgz -C /tmp
# The machine's CUDA runtime first; the one stage.sh carried where the machine has none there.
export PATH=/tmp/kvm-jre17/bin:$PATH
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$PWD/.device/cudart${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
gpu=yes
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt" || gpu=no
date -u +%Y-%m-%dT%H:%MZ | tee -a "$out/gpu.txt"
ldconfig -p | grep -E 'libcuda\.so\.1|libcudart\.so' | tee -a "$out/gpu.txt"
ls /usr/local/cuda/lib64/libcudart.so* 2>&1 | tee -a "$out/gpu.txt"

echo "== unit tests"
jars=$(ls .device/lib/*.jar | tr '\n' ':')
# One plain class path, so the tests' child JVMs (java.class.path) see the same classes.
timeout 150 java -cp ".device/test-classes/kvmarket-native:.device/test-classes/kvmarket-nvlink:${jars}.device/junit/junit-platform-console-standalone.jar" \
  org.junit.platform.console.ConsoleLauncher execute \
  --select-package io.kvmarket.nativecopy --select-package io.kvmarket.nvlink --details=tree 2>&1 | tee "$out/tests.log"
# With a GPU only the four tests that assume none may abort: more means CUDA did not come up.
aborted=$(sed -n 's/.*\[ *\([0-9]*\) tests aborted.*/\1/p' "$out/tests.log" | tail -1)
if [ "$gpu" = yes ] && [ "${aborted:-0}" -gt 4 ]; then
  echo "gpu-tests: CUDA DID NOT COME UP: $aborted tests aborted where at most 4 (those that assume no GPU) may" \
    | tee -a "$out/tests.log"
  grep -m 3 -E 'unavailable|cannot load' "$out/tests.log"
fi

echo "== import benchmark"
timeout 200 java -cp "$jars" io.kvmarket.benchmarks.gpu.GpuImportBenchmark 2>&1 | tee "$out/import.log"

echo "== PyTorch prefill"
if python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" 2>&1 | tee "$out/prefill.log"; then
  timeout 150 python3 benchmarks/gpu/prefill_llama.py 2>&1 | tee -a "$out/prefill.log"
else
  echo "prefill: skipped (PyTorch or transformers missing on this machine)" | tee -a "$out/prefill.log"
fi

import_ms=$(sed -n 's/^paged_import(best): method=[a-z_]* median_ms=\([0-9.]*\).*/\1/p' "$out/import.log")
prefill_ms=$(sed -n 's/^prefill: tokens=[0-9]* median_ms=\([0-9.]*\).*/\1/p' "$out/prefill.log")
if [ -n "$import_ms" ] && [ -n "$prefill_ms" ]; then
  python3 -c "print(f'import_vs_prefill: paged_import_ms=$import_ms prefill_ms=$prefill_ms ratio={$import_ms/$prefill_ms:.5f}')" | tee "$out/ratio.txt"
fi
grep '^gpu-summary' "$out/import.log"
