"""One record schema for the runner's writers and the report's loader (issue 18)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ddrm_exp.report.records import (
    ResultLine,
    RunSummary,
    SchemaError,
    decode,
    encode,
    load_records,
)


def test_encode_keeps_the_writers_order_and_refuses_undeclared_fields() -> None:
    fields = {"index": 3, "name": "a", "sampler": "ddrm", "kernel": {"assumed": "gt"}}
    line = encode(ResultLine, fields)
    assert list(line) == list(fields) and line == fields
    with pytest.raises(SchemaError, match="psnr_gain.*ResultLine"):
        encode(ResultLine, {**fields, "psnr_gain": 1.0})
    # Nested parts have their own schema: a kernel or temporal key is declared as well.
    with pytest.raises(SchemaError, match="kernel.sharpness"):
        encode(ResultLine, {**fields, "kernel": {"sharpness": 2.0}})
    with pytest.raises(SchemaError, match="temporal.jitter"):
        encode(ResultLine, {**fields, "temporal": {"jitter": 0.1}})
    assert encode(RunSummary, {"count": 2, "config_hash": "x"}) == {"count": 2, "config_hash": "x"}
    with pytest.raises(SchemaError, match="RunSummary"):
        encode(RunSummary, {"count": 2, "index": 0})


def test_decode_reads_declared_fields_and_skips_what_is_not_a_line() -> None:
    assert decode(ResultLine, {"index": 1, "name": "a", "stale_field": 4}) == {
        "index": 1,
        "name": "a",
    }
    assert decode(ResultLine, {"name": "no index"}) is None
    assert decode(ResultLine, [1, 2]) is None
    assert decode(RunSummary, {"count": 1, "index": 0}) == {"count": 1}


def test_the_loader_reads_what_a_writer_encoded(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    line = encode(
        ResultLine,
        {
            "index": 0,
            "name": "img",
            "degradation": "sr4",
            "sampler": "ddrm",
            "sampler_params": {"timesteps": 4},
            "degradation_params": {},
            "sigma_y": 0.05,
            "seed": 7,
            "nfe": 4,
            "seconds": 0.5,
            "restored": {"psnr": 20.0},
            "baseline": {"psnr": 15.0},
            "temporal": {"name": "all", "kernel_propagated": True},
        },
    )
    text = json.dumps(line) + "\n" + json.dumps({**line, "index": 1, "unknown": 1}) + "\n"
    (run / "results.jsonl").write_text(text + '{"index": 2, "na')  # a torn last line
    records = load_records([tmp_path])
    assert [r.index for r in records] == [0, 1]
    assert records[0].raw == line and "unknown" not in records[1].raw
    assert records[0].values == {"psnr": 20.0, "baseline_psnr": 15.0}
    assert records[0].seed == 7 and records[0].params == {"timesteps": 4}
