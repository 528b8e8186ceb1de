"""Manual check (not CI): load an exported GGUF in llama.cpp (llama-cpp-python) and compare its logits with
bitcpm's forward of the same run.

    pip install llama-cpp-python          # builds llama.cpp from source
    python -m bitcpm.export gguf RUN model.gguf
    python tests/manual/gguf_llama_cpp.py RUN model.gguf

Prints the max |logit difference| over a fixed prompt and whether greedy continuations agree.
"""

from __future__ import annotations

import sys

import numpy as np


def main(run: str, gguf_path: str, steps: int = 8) -> int:
    from llama_cpp import Llama

    from bitcpm.export.hf import probe_tokens
    from bitcpm.export.source import open_source
    from bitcpm.export.weights import greedy, megatron_logits

    source = open_source(run)
    prompt = probe_tokens(source.job.model.vocab_size)
    llm = Llama(model_path=gguf_path, n_ctx=256, logits_all=True, n_threads=1, verbose=False)

    def cpp_logits(tokens) -> np.ndarray:
        llm.reset()
        llm.eval(tokens[0].tolist())
        return np.asarray(llm.scores[: tokens.shape[1]], dtype=np.float32)

    theirs = cpp_logits(prompt)
    ours = megatron_logits(source.model, prompt)[0].numpy()
    diff = float(np.abs(theirs - ours).max())
    scale = float(np.abs(ours).max())
    import torch

    same = greedy(lambda t: torch.from_numpy(cpp_logits(t))[None], prompt, steps) == greedy(
        lambda t: megatron_logits(source.model, t), prompt, steps
    )
    print(f"llama.cpp vs bitcpm: max |logit diff| {diff:.3e} (max |logit| {scale:.2f}); greedy identical: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
