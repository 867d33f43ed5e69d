"""Strategies that keep one adapter per stage: O-LoRA and an adapter per task.

O-LoRA (Wang et al. 2023, "Orthogonal Subspace Learning for Language Model Continual Learning"):
stage t adds a new LoRA `s<t>` beside the earlier ones, which stay frozen (bit-identical) and active,
and penalises the overlap of the new down-projections A_t (r x d) with every earlier A_j (r_j x d):

    L = L_task + lambda1 * sum over layers, j < t of sum_{k,l} |(A_j A_t^T)_{kl}|
               + lambda2 * sum over the new adapter's tensors W (A_t and B_t of every layer) of ||W||_2

as published (paper eq. for L_orth: absolute values, not squares, not normalised) and as the official
code computes it (cmnfriend/O-LoRA, src/uie_trainer_lora.py: `orthogonal_loss += |lora_A @
loranew_A^T|.sum()`, the old A's concatenated per layer, which is the same sum over j; `l2_loss +=
torch.norm(loranew_param, p=2)`, the Frobenius norm of each new tensor, not squared). lambda1 is the
strategy's `weight` (paper: 0.5), lambda2 its `lambda2` (official default 0). The sum is zero exactly
when the subspaces are orthogonal, and grows with the number of layers, earlier stages and the A's
scale: users report it reaching thousands and swamping the task loss (O-LoRA issue #33).

Adapter per task: each stage trains a fresh LoRA from the base model; task i is scored with its own
adapter, which needs the task's identity at inference (said in the output), and tasks not yet learnt
with the base model. Earlier adapters are never touched.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..train import Callback
from ..train.view import RunView
from .stages import Stage


def orthogonality(a_new: torch.Tensor, a_olds: list[torch.Tensor]) -> torch.Tensor:
    """sum over j of sum_{k,l} |(A_j A_new^T)_{kl}|: A_new (r, d), each A_j (r_j, d), A_j A_new^T (r_j, r)."""
    terms = [(a.to(a_new.dtype) @ a_new.T).abs().sum() for a in a_olds]
    return torch.stack(terms).sum() if terms else a_new.sum() * 0


class _PerStage:
    """Shared by both: where each stage's adapter is kept, and the stage's own start."""
    needs_same_format = False

    def __init__(self, scfg, folder: Path):
        self.s, self.folder = scfg, folder

    def adapter_dir(self, t: int) -> Path:
        return self.folder / "adapters" / str(t)

    def train_rows(self, t: int, stage: Stage, rows: list[dict]) -> list[dict]:
        return rows

    def _check_lora(self, cfg) -> None:
        if cfg.method.name != "lora":
            from ..errors import ConfigError

            raise ConfigError(f"strategy {self.s.name} keeps one LoRA per stage. Fix: base.method.name: lora")


class AdapterPerTask(_PerStage):
    def stage_config(self, t: int, raw: dict, prev: Path | None) -> dict:
        return raw                      # every stage from the base model

    def start_model(self, t: int, cfg):
        self._check_lora(cfg)
        return None

    def callbacks(self, t: int, stage: Stage) -> list:
        return []

    def after_stage(self, t: int, stage: Stage, model, cfg, tok) -> None:
        pass                            # each stage's final/ is its adapter

    def eval_model(self, t: int, i: int, final_model, load):
        """Task i with its own adapter once learnt (the task identity is used), else the base model."""
        if i + 1 == t:
            return final_model
        return load(i) if i + 1 < t else load(None)


class OLoRA(_PerStage):
    def stage_config(self, t: int, raw: dict, prev: Path | None) -> dict:
        return raw                      # the model is built by start_model from the saved adapters

    def start_model(self, t: int, cfg):
        """Stage 1: a plain LoRA (method.apply). Stage t: the earlier adapters loaded, frozen and active,
        and a new one `s<t>` with the same settings, the only trainable part."""
        self._check_lora(cfg)
        if t == 1:
            return None
        from peft import PeftConfig

        model = self.stack(cfg, t - 1)
        lcfg = PeftConfig.from_pretrained(str(self.adapter_dir(1)))
        lcfg.inference_mode = False
        model.add_adapter(f"s{t}", lcfg)
        model.base_model.set_adapter([f"s{j}" for j in range(1, t + 1)])
        for n, p in model.named_parameters():
            p.requires_grad_(f".s{t}." in n)
        return model

    def stack(self, cfg, upto: int):
        """The base model with adapters 1..upto loaded, frozen and active."""
        from peft import PeftModel

        from ..build import MARK, load_base

        base, _ = load_base(cfg)
        model = PeftModel.from_pretrained(base, str(self.adapter_dir(1)), adapter_name="s1")
        for j in range(2, upto + 1):
            model.load_adapter(str(self.adapter_dir(j)), adapter_name=f"s{j}")
        model.base_model.set_adapter([f"s{j}" for j in range(1, upto + 1)])
        model.requires_grad_(False)
        setattr(model, MARK, "lora")
        return model

    def callbacks(self, t: int, stage: Stage) -> list:
        return [] if t == 1 else [Orthogonal(f"s{t}", self.s.weight, self.s.lambda2)]

    def after_stage(self, t: int, stage: Stage, model, cfg, tok) -> None:
        """Keep this stage's adapter alone, in PEFT's format, for the stages after it."""
        import shutil

        name = "default" if t == 1 else f"s{t}"
        tmp = self.adapter_dir(t).with_name(f".{t}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(str(tmp), selected_adapters=[name])
        src = tmp if name == "default" else tmp / name       # PEFT puts non-default adapters in a subfolder
        shutil.rmtree(self.adapter_dir(t), ignore_errors=True)
        src.rename(self.adapter_dir(t))
        shutil.rmtree(tmp, ignore_errors=True)

    def eval_model(self, t: int, i: int, final_model, load):
        return final_model


class Orthogonal(Callback):
    """O-LoRA's extra loss for the new adapter `new`: lambda1 * sum over layers of orthogonality(A_new,
    earlier A's) + lambda2 * sum over the new adapter's A and B of ||W||_2 (the module docstring)."""

    def __init__(self, new: str, weight: float, lambda2: float = 0.0):
        self.new, self.weight, self.lambda2, self.pairs = new, weight, lambda2, []

    def on_start(self, run: RunView) -> None:
        """Per LoRA layer: (A_new, B_new, [earlier A's]), the live parameters (not copies)."""
        self.pairs = []
        for m in run.model.modules():
            a, b = getattr(m, "lora_A", None), getattr(m, "lora_B", None)
            if a is not None and self.new in a:
                self.pairs.append((a[self.new].weight, b[self.new].weight, [a[k].weight for k in a if k != self.new]))

    def extra_loss(self, run: RunView):
        """The penalty as a tensor (train/callbacks.py's one loss seam: logged as `extra_loss`)."""
        if not self.pairs:
            return None
        orth = torch.stack([orthogonality(a, olds) for a, _, olds in self.pairs]).sum()
        l2 = torch.stack([a.norm(p=2) + b.norm(p=2) for a, b, _ in self.pairs]).sum()   # Frobenius, not squared
        # (its gradient at B = 0, where a new adapter starts, is 0 in torch, not 0/0)
        return self.weight * orth + self.lambda2 * l2 if self.lambda2 else self.weight * orth   # (0: not built)
