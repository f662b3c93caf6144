"""examples/custom_loop.py: a user's own TorchRL loop trains VMBPO, and MBPO or MPO by swapping one block."""

import difflib
import math
import re
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "custom_loop.py"
BLOCK = re.compile(r"    # >>> algorithm: (\w+)\n.*?    # <<< algorithm\n", re.S)
SMALL = dict(
    steps=300,
    hidden=(16, 16),
    init_random=100,
    batch_size=32,
    rollouts=16,
    model_every=100,
    model_epochs=2,
    ratio_steps=5,
    eval_steps=20,
)


def variant(algo: str) -> str:
    """The script with its algorithm block replaced by the commented block for ``algo`` at its end."""
    source = SCRIPT.read_text()
    if algo == "VMBPO":
        return source
    alternative = re.search(rf"# >>> algorithm: {algo}\n(.*?)# <<< algorithm\n", source, re.S).group(1)
    block = f"    # >>> algorithm: {algo}\n" + re.sub(r"^# ", "", alternative, flags=re.M) + "    # <<< algorithm\n"
    return BLOCK.sub(lambda _: block, source, count=1)


@pytest.mark.parametrize("algo", ["MBPO", "MPO"])
def test_switching_algorithm_changes_at_most_ten_lines(algo):
    diff = difflib.unified_diff(variant("VMBPO").splitlines(), variant(algo).splitlines(), n=0, lineterm="")
    changed = [line for line in diff if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    removed, added = sum(line[0] == "-" for line in changed), sum(line[0] == "+" for line in changed)
    assert 0 < max(removed, added) <= 10, changed


@pytest.mark.parametrize("algo", ["VMBPO", "MBPO", "MPO"])
def test_the_custom_loop_trains_a_few_hundred_steps(algo):
    namespace = {"__name__": "custom_loop"}
    exec(compile(variant(algo), str(SCRIPT), "exec"), namespace)
    out = namespace["train"](**SMALL)
    assert out["updates"] >= SMALL["steps"] - SMALL["init_random"]  # one per real step after the random ones
    assert all(math.isfinite(v) for v in out.values()), out
    expected = {
        "VMBPO": {"loss_qvalue", "loss_value", "loss_actor", "loss_policy"},
        "MBPO": {"loss_qvalue", "loss_actor", "loss_alpha"},
        "MPO": {"loss_policy"},
    }[algo]
    assert expected <= set(out), out
