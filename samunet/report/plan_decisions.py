"""The plans' main decisions for a model folder, each with the reason the planner wrote."""
from __future__ import annotations

from dataclasses import dataclass

from samunet.core.plans import Plans


@dataclass
class Decision:
    name: str
    value: str
    reason: str


def _size(values) -> str:
    return " x ".join(str(v) for v in values)


def _split_reason(reason: str, words: tuple[str, ...]) -> tuple[str, str]:
    """(the "; "-separated parts of a section's reason that mention one of ``words``, the other parts): one reason
    covers several decisions (the model section's backbone and input size); each row shows its own part."""
    parts = [p for p in reason.split("; ") if p]
    mine = [p for p in parts if any(w in p for w in words)]
    rest = [p for p in parts if p not in mine]
    if not mine or not rest:
        return reason, reason
    return "; ".join(mine), "; ".join(rest)


def plan_decisions(plans: Plans, adapter: str | None) -> list[Decision]:
    """Backbone, input size, patch, slicing, adapter, batch, budget (and resampling, normalisation, packing)."""
    model, training = plans.model, plans.training
    trained = adapter or model.adapter
    config = plans.adapters.get(trained)
    adapter_reason = model.adapter_reason if trained == model.adapter else \
        f"trained instead of the planned {model.adapter}"
    if config is not None and config.reason:
        adapter_reason = f"{adapter_reason}; {config.reason}" if adapter_reason else config.reason
    budget = f"{training.epochs} epochs x {training.iterations_per_epoch} iterations"
    if training.time_budget_min is not None:
        budget += f", at most {training.time_budget_min:g} min per fold"
    budget_reason, batch_reason = _split_reason(training.reason, ("budget", "iterations", "epochs"))
    input_reason, backbone_reason = _split_reason(model.reason, ("input",))
    if plans.cost is not None:
        budget += f" (predicted {plans.cost.predicted_minutes_per_fold:.1f} min, {plans.cost.source})"
        budget_reason = "; ".join(r for r in (budget_reason, plans.cost.reason) if r)
    axes = "zyx"
    slicing = (f"along {axes[plans.slicing.transpose[0]]} (transpose {plans.slicing.transpose}), "
               f"{plans.slicing.mode} slices")
    normalisation = ", ".join(f"{n.name}: {n.scheme}" for n in plans.normalization)
    return [
        Decision("backbone", model.backbone + (f" ({model.checkpoint})" if model.checkpoint else ""), backbone_reason),
        Decision("input size", f"{model.input_size} px", input_reason),
        Decision("patch", f"{_size(plans.crop.patch_size)} px" + (", cropped to nonzero" if plans.crop.crop_to_nonzero
                                                                    else ""), plans.crop.reason),
        Decision("slicing", slicing, plans.slicing.reason),
        Decision("adapter", trained + (f" (lr {config.learning_rate:g}, {config.optimizer})" if config else ""),
                 adapter_reason),
        Decision("batch", str(training.batch_size), batch_reason),
        Decision("budget", budget, budget_reason),
        Decision("resampling", f"target spacing {_size(plans.resampling.target_spacing)} mm", plans.resampling.reason),
        Decision("normalisation", normalisation, "; ".join(n.reason for n in plans.normalization if n.reason)),
        Decision("packing", f"{plans.packing.mode} ({plans.packing.num_channels} channel(s))", plans.packing.reason),
    ]
