"""ZeRO-3 partitioned loading (zero.Init + ``from_pretrained``) of a saved model, in one process.

s1ray's training workers load a model folder under ZeRO-3 through transformers'
``HfDeepSpeedConfig`` (``s1ray.train.loop._load_model``): each parameter is created partitioned
and filled from the files, so a 32B model never sits whole in one process. This runs that exact
path at world size 1 (no Ray) and checks that (1) the parameters are ZeRO-3 parameters and the
large ones hold no local data, (2) gathered, they equal the files, (3) a ZeRO-3 engine over the
partitioned model gives the loss of the same model loaded plainly. Prints one JSON line; exit
status 1 on a failed check. The CPU suite runs it with ``--device cpu`` (gloo), tests/gpu with
``--device cuda`` (NCCL).

    python tests/gpu/zero3_from_pretrained.py FOLDER --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder")
    parser.add_argument("--device", choices=["cpu", "cuda"], required=True)
    args = parser.parse_args()
    use_gpu = args.device == "cuda"
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
                       "MASTER_ADDR": "127.0.0.1"}.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))

    from s1ray.train.accelerator import select_deepspeed_accelerator

    select_deepspeed_accelerator(use_gpu)
    import deepspeed
    import torch
    from safetensors.torch import load_file

    from s1ray.models.loading import load_model
    from s1ray.train.config import TrainConfig
    from s1ray.train.deepspeed_config import build_ds_config
    from s1ray.train.loop import _load_model

    dtype = "bfloat16" if use_gpu else "float32"
    cfg = TrainConfig.model_validate({
        "data": {"name": "x", "path": "x.jsonl"}, "model": args.folder, "global_batch_size": 1, "num_workers": 1,
        "use_gpu": use_gpu, "dtype": dtype, "deepspeed": {"zero_stage": 3, "zero_with_one_worker": True}})
    ds_config = build_ds_config(cfg, dtype)
    assert ds_config["zero_optimization"]["stage"] == 3
    ds_config = {k: v for k, v in ds_config.items() if k not in ("optimizer", "scheduler")}  # forward only
    device = torch.device("cuda", 0) if use_gpu else torch.device("cpu")
    deepspeed.init_distributed(dist_backend="nccl" if use_gpu else "gloo")

    torch.manual_seed(0)
    ids = torch.randint(0, 1000, (2, 24))
    plain = load_model(args.folder, dtype=dtype).to(device).eval()
    with torch.no_grad():
        plain_loss = float(plain(input_ids=ids.to(device), labels=ids.to(device)).loss)
    del plain

    model, hf_ds_config = _load_model(cfg, build_ds_config(cfg, dtype), dtype, vocab_size=0, source=args.folder)
    params = dict(model.named_parameters())
    threshold = ds_config["zero_optimization"]["stage3_param_persistence_threshold"]
    not_zero3 = [n for n, p in params.items() if not hasattr(p, "ds_id")]
    large = {n: p for n, p in params.items() if p.ds_numel >= threshold}
    whole = [n for n, p in large.items() if p.numel() != 0]
    files = {}
    for name in sorted(os.listdir(args.folder)):
        if name.endswith(".safetensors"):
            files.update(load_file(os.path.join(args.folder, name)))
    differ = []
    with deepspeed.zero.GatheredParameters(list(params.values())):
        for n, p in params.items():
            if n in files and not torch.equal(p.detach().cpu().to(files[n].dtype), files[n]):
                differ.append(n)
        compared = sum(n in files for n in params)
    engine, *_ = deepspeed.initialize(model=model, config=ds_config, dist_init_required=False)
    engine.eval()
    with torch.no_grad():
        zero3_loss = float(engine(input_ids=ids.to(device), labels=ids.to(device)).loss)
    tolerance = 2e-2 if dtype == "bfloat16" else 1e-4
    report = {"device": args.device, "dtype": dtype, "parameters": len(params), "partitioned": len(large),
              "compared_with_files": compared, "not_zero3": not_zero3, "whole_in_process": whole, "differ": differ,
              "plain_loss": plain_loss, "zero3_loss": zero3_loss, "hf_ds_config": hf_ds_config is not None}
    ok = (not not_zero3 and large and not whole and not differ and compared >= len(params) // 2
          and abs(zero3_loss - plain_loss) <= tolerance * max(1.0, abs(plain_loss)))
    print(json.dumps({**report, "ok": bool(ok)}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
