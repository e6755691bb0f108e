"""The generic table (``--table runs``): mean metrics per sampler setting and degradation, for
runs made for no table of the report."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from ddrm_exp.report.comparison import Comparison, render_comparison
from ddrm_exp.report.records import Record
from ddrm_exp.report.spec import TableResult, TableSpec


def sampler_setting(r: Record) -> str:
    """The sampler and every one of its settings, e.g. ``mcg eta=0.85 grad_scale=1.0 ...``."""
    return r.sampler + "".join(
        f" {k}={v}" for k, v in sorted(r.params.items()) if k not in ("timesteps",)
    )


def differing_setting(records: list[Record]) -> Callable[[Record], str]:
    """A method label naming the sampler and only those of its settings the runs vary."""
    varying = {
        k
        for k in {k for r in records for k in r.params}
        if k != "timesteps" and len({repr(r.params.get(k)) for r in records}) > 1
    }

    def label(r: Record) -> str:
        return r.sampler + "".join(f" {k}={v}" for k, v in sorted(r.params.items()) if k in varying)

    return label


# σ_y is not part of the method: a σ_y sweep splits the columns instead, so each column's H⁺y
# baseline is that of its own noise level.
LAYOUT = Comparison(
    method_of=sampler_setting, column_of=lambda r: r.degradation, reference_method=""
)


def render(spec: TableSpec, records: list[Record]) -> TableResult:
    # The label names only the settings that differ between the runs.
    return render_comparison(spec, replace(LAYOUT, method_of=differing_setting(records)), records)


SPEC = TableSpec(
    name="runs", title="Mean metrics per sampler setting and degradation", render=render
)
