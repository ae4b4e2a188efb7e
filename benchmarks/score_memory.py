"""Bytes per token of the score pass (`isograd.lm.score`): peak resident memory of one pair of
T tokens, at two lengths, each in a fresh process; the slope is what `isograd.lm.memory`'s
`BYTES_PER_TOKEN_UNIT` is calibrated from.

    OMP_NUM_THREADS=1 python benchmarks/score_memory.py            # the embedded SmolLM2
    OMP_NUM_THREADS=1 python benchmarks/score_memory.py --tiny     # a tiny Llama (CI-sized)
"""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = """
import json, resource, sys, torch
torch.set_num_threads(1)
from isograd.lm import load_model, score
from isograd.lm.memory import per_token_units
tiny, n = sys.argv[1] == "tiny", int(sys.argv[2])
if tiny:
    sys.path.insert(0, ".")
    from tests.lm.tiny_lm import tiny_model, tiny_tokenizer
    model, tok = tiny_model("llama", dtype=torch.float32), tiny_tokenizer()
else:
    model, tok = load_model(dtype="fp32", device="cpu")
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
prompt = " ".join(["word"] * n)
if n:
    score(model, tok, [prompt], [" yes"], batch_size=1)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
ids = tok(prompt + " yes", add_special_tokens=False)["input_ids"]
print(json.dumps({"tokens": len(ids) if n else 0, "peak_kib": peak, "base_kib": base,
                  "units": per_token_units(model)}))
"""


def measure(kind: str, n: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, kind, str(n)], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    kind = "tiny" if "--tiny" in sys.argv else "smollm2"
    lengths = (100, 400) if kind == "tiny" else (400, 1600)
    a, b = (measure(kind, n) for n in lengths)
    slope = (b["peak_kib"] - a["peak_kib"]) * 1024 / (b["tokens"] - a["tokens"])
    print(json.dumps({"model": kind, "short": a, "long": b, "bytes_per_token": slope,
                      "bytes_per_unit": slope / a["units"]}, indent=1))


if __name__ == "__main__":
    main()
