"""Write the bf16 fallback of this folder's model: the same shape with N layers and no MXFP4.

For a GPU where vLLM cannot serve the MXFP4 experts with dummy weights: every expert in bf16
(about 6.4 GB a layer), as deep as one GPU holds (16 layers, ~103 GB, on an H200).

    python3 examples/gpt-oss-120b-shape/bf16_variant.py 16 /tmp/gpt-oss-bf16-16
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def write_variant(layers: int, out: Path) -> Path:
    """The released config at ``layers`` layers (the attention pattern kept), unquantized."""
    if layers < 1:
        raise ValueError(f"layers must be >= 1, got {layers}")
    config = json.loads((HERE / "config.json").read_text())
    config.pop("quantization_config", None)
    config["num_hidden_layers"] = layers
    config["layer_types"] = config["layer_types"][:layers]
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(HERE / name, out / name)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3 or not sys.argv[1].isdigit():
        sys.exit("usage: bf16_variant.py LAYERS OUT")
    print(write_variant(int(sys.argv[1]), Path(sys.argv[2])))
