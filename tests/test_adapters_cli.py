"""samunet_adapters: the parameter table agrees with the adapters it describes."""
from __future__ import annotations

import json

import pytest

from samunet.adapters import ADAPTER_NAMES, build_adapter_from_parts
from samunet.adapters.cli import main
from samunet.modeling import build_sam


def test_json_table_matches_built_adapters(capsys):
    main(["--backbone", "tiny", "--input-size", "64", "--num-classes", "4", "--json"])
    table = json.loads(capsys.readouterr().out)
    assert table["weights"] == "random init" and table["num_classes"] == 4
    rows = {r["adapter"]: r for r in table["adapters"]}
    assert list(rows) == list(ADAPTER_NAMES)
    samed = build_adapter_from_parts("samed", build_sam("tiny", 64), 4).parameter_counts()
    assert rows["samed"]["trainable"] == samed["trainable"] and rows["samed"]["total"] == samed["total"]
    assert rows["ssam"]["trainable"] < rows["samed"]["trainable"] < rows["full"]["trainable"]
    assert rows["full"]["fraction_of_total"] > 0.99


def test_table_text_and_user_errors(capsys):
    main(["--backbone", "tiny", "--input-size", "64"])
    out = capsys.readouterr().out
    assert "tiny @ 64 px" in out and all(name in out for name in ADAPTER_NAMES)
    for argv in (["--backbone", "vit_z", "--input-size", "64"], ["--backbone", "tiny", "--input-size", "60"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 1
        assert "samunet_adapters:" in capsys.readouterr().err
