"""Which weights are prunable, declared per model family by name patterns.

Names are relative to the base model (``model.base_model``), so they are the same for every
task head. Each family also says how its prunable weights split into groups that are ranked
separately (mT5: encoder and decoder).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn
from transformers.pytorch_utils import Conv1D

from polyticket.errors import UserError
from polyticket.pruning import Ranking

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    prunable: str  # regex over base-model parameter names
    pooler: str | None = None
    group: str | None = None  # regex whose first group names the ranking group

    def group_of(self, name: str) -> str:
        if self.group is None:
            return "all"
        match = re.match(self.group, name)
        return match.group(1) if match else "all"


_T5_FF = r"DenseReluDense\.(wi|wi_0|wi_1|wo)"

FAMILIES: tuple[Family, ...] = (
    Family(
        name="bert",
        model_types=("bert", "roberta", "xlm-roberta", "camembert", "electra", "xlm-roberta-xl"),
        prunable=r"encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense"
        r"|intermediate\.dense|output\.dense)\.weight",
        pooler=r"pooler\.dense\.weight",
    ),
    Family(
        name="distilbert",
        model_types=("distilbert",),
        prunable=r"transformer\.layer\.\d+\.(attention\.(q_lin|k_lin|v_lin|out_lin)|ffn\.(lin1|lin2))"
        r"\.weight",
    ),
    Family(
        name="t5",
        model_types=("t5", "mt5", "umt5"),
        prunable=r"(encoder|decoder)\.block\.\d+\.layer\.\d+\.((SelfAttention|EncDecAttention)"
        rf"\.(q|k|v|o)|{_T5_FF})\.weight",
        group=r"(encoder|decoder)\.",
    ),
    Family(
        name="gpt2",
        model_types=("gpt2",),
        prunable=r"h\.\d+\.(attn\.(c_attn|c_proj)|mlp\.(c_fc|c_proj))\.weight",
    ),
    Family(
        name="llama",
        model_types=("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2"),
        prunable=r"layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)"
        r"|mlp\.(gate_proj|up_proj|down_proj))\.weight",
    ),
    Family(  # Llama's matrices, q/k/v and gate/up fused
        name="phi3",
        model_types=("phi3",),
        prunable=r"layers\.\d+\.(self_attn\.(qkv_proj|o_proj)|mlp\.(gate_up_proj|down_proj))\.weight",
    ),
)


def family_of(model_type: str) -> Family | None:
    return next((f for f in FAMILIES if model_type in f.model_types), None)


@dataclass(frozen=True)
class PruneScope:
    """User overrides of the family's default prunable set."""

    prune_pooler: bool = False
    include: Sequence[str] = field(default_factory=tuple)
    exclude: Sequence[str] = field(default_factory=tuple)

    @classmethod
    def of(cls, model_args: Any) -> PruneScope:
        """The scope a config's model knobs set (``--prune-pooler``, ``--prune-include``,
        ``--prune-exclude``)."""
        return cls(model_args.prune_pooler, model_args.prune_include, model_args.prune_exclude)


@dataclass(frozen=True)
class Prunable:
    """The prunable weights of one model: base-model name -> parameter, and their groups."""

    params: dict[str, nn.Parameter]
    groups: dict[str, str]  # name -> ranking group
    input_axes: dict[str, int] = field(default_factory=dict)  # GPT-2's Conv1D: 0 (in, out)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(p.shape) for name, p in self.params.items()}

    def ranking(self, scope: str) -> Ranking:
        """How these weights are ranked with ``scope`` (mT5's stacks apart)."""
        return Ranking(scope, self.groups, self.input_axes)


def _block_weights(base: nn.Module) -> list[str]:
    """Every Linear/Conv1D weight inside a ModuleList: the repeated transformer blocks."""
    names = []
    for list_name, module in base.named_modules():
        if not isinstance(module, nn.ModuleList):
            continue
        for sub_name, sub in module.named_modules():
            if isinstance(sub, nn.Linear | Conv1D) and sub_name:
                names.append(f"{list_name}.{sub_name}.weight")
    return names


def find_prunable(model: nn.Module, scope: PruneScope = PruneScope()) -> Prunable:
    """The weights to prune in ``model`` (a base model or one with a task head)."""
    base = getattr(model, "base_model", model)
    params = dict(base.named_parameters())
    model_type = getattr(getattr(model, "config", None), "model_type", "")
    family = family_of(model_type)

    for pattern in (*scope.include, *scope.exclude):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise UserError(f"invalid prune pattern {pattern!r}: {exc}") from None

    if scope.include:
        names = [n for n in params if any(re.fullmatch(p, n) for p in scope.include)]
    elif family is not None:
        names = [n for n in params if re.fullmatch(family.prunable, n)]
        # a version of the model that renames or fuses matrices would leave them dense unseen
        missed = [n for n in _block_weights(base) if n not in names]
        if missed:
            log.warning(
                "%d weight matrices in %s's blocks are not in its family's prunable set and "
                "stay dense (first: %s; use --prune-include to choose)",
                len(missed), model_type, missed[0],
            )  # fmt: skip
        if scope.prune_pooler and family.pooler:
            names += [n for n in params if re.fullmatch(family.pooler, n)]
    else:
        log.warning(
            "model type %r has no declared prunable set; pruning every Linear/Conv1D weight "
            "inside its repeated blocks (use --prune-include to choose)",
            model_type,
        )
        names = _block_weights(base)
    names = [n for n in names if not any(re.fullmatch(p, n) for p in scope.exclude)]
    if not names:
        patterns = ", ".join(repr(p) for p in (*scope.include, *scope.exclude))
        raise UserError(
            f"no prunable weights found in model type {model_type!r}"
            + (f" with {patterns} (each must match a whole parameter name)" if patterns else "")
        )
    family = family or Family(name="generic", model_types=(), prunable="")
    return Prunable(
        params={n: params[n] for n in names},
        groups={n: family.group_of(n) for n in names},
        input_axes={n: 0 for n in names if isinstance(_owner(base, n), Conv1D)},
    )


def _owner(base: nn.Module, name: str) -> nn.Module:
    """The module a parameter belongs to."""
    return base.get_submodule(name.rpartition(".")[0])
