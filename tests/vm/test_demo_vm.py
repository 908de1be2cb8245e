"""make demo's first part, the product's story: an ext4 image built with the project's own
tools as three tar-wrapped lz4 ZFile layers, pushed to a token-auth registry, served by the
installed overlaybd-tcmu before it is downloaded (scripts/demo-lazy-guest.sh, UML 6.1)."""

import json
import re

import pytest

from tests.helpers.uml import need_uml, run_in_uml

pytestmark = [pytest.mark.vm, pytest.mark.registry]


@pytest.fixture(scope="module")
def report(tmp_path_factory, installed, say):
    need_uml()
    out = tmp_path_factory.mktemp("demo-lazy")
    p = run_in_uml(["env", "-u", "PYTHONPATH", "bash", "scripts/demo-lazy-guest.sh", installed.root],
                   rw=[out], timeout=600, env={"OBD_DEMO_OUT": str(out)})
    if p.returncode != 0 or not (out / "lazy.json").exists():
        pytest.fail(f"demo failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-2000:]}")
    for line in p.stdout.splitlines():
        if line.startswith("  time to") or line.startswith("  fetched"):
            say(f"[demo]{line}")
    return json.loads((out / "lazy.json").read_text()), out


def test_the_file_read_from_the_lazy_device_is_what_was_written(report):
    r, _ = report
    assert r["files_equal"] and r["result"] == "success"
    assert r["registry_errors"] == 0


def test_reading_fetches_less_than_the_image(report):
    r, out = report
    assert 0 < r["fetched_bytes"] < r["image_bytes"]
    audited = sum(int(m.group(1)) for m in re.finditer(r"\|download\[.*?\]\[size=(\d+)\]",
                                                          (out / "audit.log").read_text()))
    assert audited and abs(audited - r["fetched_bytes"]) <= 0.01 * r["fetched_bytes"]
    assert r["time_to_first_byte_s"] <= r["time_to_mount_s"] <= r["time_to_file_s"]
