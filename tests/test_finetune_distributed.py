"""A 2-process DDP run (gloo, CPU, via torchrun) logs the same losses and held-out bits per byte
as one process stepping through the same global batches."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

import factories
from transtok import finetune as ft

pytestmark = pytest.mark.slow

SEQ = 32

DDP_SCRIPT = """
import json, sys
from transtok.finetune import FinetuneConfig, finetune
kw = json.loads(sys.argv[1])
result = finetune(FinetuneConfig(**kw))
import torch.distributed as dist
if not dist.is_initialized() or dist.get_rank() == 0:
    print("LOSSES", json.dumps([r["loss"] for r in result.history if "loss" in r]))
    print("BPB", json.dumps([b for _, b in result.eval_curve]))
"""


def _run(cmd: list[str], tmp_path: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(ft.__file__).parents[1]), "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = {line.split(" ", 1)[0]: json.loads(line.split(" ", 1)[1]) for line in done.stdout.splitlines()
             if line.startswith(("LOSSES ", "BPB "))}
    return lines


def test_two_process_ddp_matches_one_process_of_the_same_global_batch(cipher_pairs, target_tokenizer, tmp_path):
    texts = [t for _, t in cipher_pairs]
    (tmp_path / "train.txt").write_text("\n".join(texts[:1300]) + "\n", encoding="utf-8")
    (tmp_path / "eval.txt").write_text("\n".join(texts[1300:1400]) + "\n", encoding="utf-8")
    config = AutoConfig.for_model("llama", vocab_size=len(target_tokenizer), tie_word_embeddings=False,
                                  **{**factories.TINY["llama"], "num_hidden_layers": 6})
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "untied")
    target_tokenizer.save_pretrained(tmp_path / "untied")
    workdir = tmp_path
    script = tmp_path / "run.py"
    script.write_text(DDP_SCRIPT)
    common = dict(model=str(workdir / "untied"), train=[str(workdir / "train.txt")], eval=[str(workdir / "eval.txt")],
                  seq_len=SEQ, lr=1e-2, warmup=1, log_every=1, precision="fp32", stage="2x2", eval_every=3,
                  max_tokens=SEQ * 4 * 6)
    single = _run([sys.executable, str(script), json.dumps({**common, "batch_size": 4,
                                                             "output": str(tmp_path / "one")})], tmp_path)
    double = _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
                   str(script), json.dumps({**common, "batch_size": 2, "output": str(tmp_path / "two")})], tmp_path)
    assert len(single["LOSSES"]) == len(double["LOSSES"]) == 6
    np.testing.assert_allclose(double["LOSSES"], single["LOSSES"], rtol=1e-4)
    np.testing.assert_allclose(double["BPB"], single["BPB"], rtol=1e-4)
    assert single["LOSSES"][-1] < single["LOSSES"][0]
