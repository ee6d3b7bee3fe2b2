"""`python -m training.inspect`: the stage program of an architecture as JSON or a table."""

from __future__ import annotations

import json

import pytest

from training.inspect import describe, main
from tests.test_zoo_contract import single_thread  # noqa: F401 (autouse fixture)


def test_describe_anytimenet_table_one():
    info = describe("anytimenet", 43, {"widths": [4, 8, 8], "iteration_bn": "shared"}, input_size=16)
    assert [e["anytime_blocks"]["Total"] for e in info["exits"]] == [5, 12, 18, 24, 29, 34, 38]
    assert [e["anytime_steps"] for e in info["exits"]] == [5, 9, 13, 16, 19, 21, 23]
    last = info["exits"][-1]
    assert last["apriori_params"] == info["params"] and last["apriori_flops"] < last["anytime_flops"]
    assert info["graphs"]["out"]["steps"] == [f"it{j}_out" for j in range(1, 8)]


def test_cli_json_and_table(capsys):
    kwargs = json.dumps({"blocks": 3, "width": 6, "num_subnets": 3, "bottleneck": 2, "cardinality": 3,
                         "hierarchical": True})
    assert main(["--arch", "is-resnext", "--arch-kwargs", kwargs, "--input-size", "16", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_exits"] == 3 and info["exits"][2]["apriori_steps"] == ["slice1", "slice2", "slice3", "head3"]
    assert info["exits"][0]["coarse_tensor"] == "coarse1"
    assert main(["--arch", "eann", "--arch-kwargs", '{"base_units": 1, "width": 4}', "--input-size", "16"]) == 0
    assert "ann2_exit" in capsys.readouterr().out


def test_cli_errors(capsys):
    assert main(["--arch", "anytimnet"]) == 2
    assert "Did you mean 'anytimenet'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--arch", "eann", "--arch-kwargs", "[1]"])
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
