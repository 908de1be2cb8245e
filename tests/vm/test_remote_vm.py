"""A remote image in the real kernel: tar-wrapped lz4 ZFile layers pushed to a token-auth
registry, served by overlaybd-tcmu from the registry through the cache; the device must read
byte for byte what overlaybd-export makes of local copies of the same blobs."""

import hashlib
import io
import json

import pytest

from overlaybd import tar
from overlaybd.tools import export
from tests.helpers.env import GOLDEN
from tests.helpers.uml import need_uml, run_in_uml

pytestmark = [pytest.mark.vm, pytest.mark.registry]


@pytest.fixture(scope="module")
def guest(tmp_path_factory):
    need_uml()
    w = tmp_path_factory.mktemp("vm-remote")
    (w / "blobs").mkdir()
    digests = []
    for i in (1, 2, 3):
        out = io.BytesIO()
        tar.wrap(io.BytesIO((GOLDEN / f"layer{i}.lz4.zfile").read_bytes()), out)
        (w / "blobs" / f"layer{i}.tar").write_bytes(out.getvalue())
        digests.append("sha256:" + hashlib.sha256(out.getvalue()).hexdigest())
    local = {"lowers": [{"file": str(w / "blobs" / f"layer{i}.tar")} for i in (1, 2, 3)]}
    (w / "local.json").write_text(json.dumps(local))
    assert export.main([str(w / "local.json"), str(w / "local.raw")]) == 0
    h = hashlib.sha256()
    with open(w / "local.raw", "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    p = run_in_uml(["bash", "tests/vm/guest_remote.sh", w], rw=[w], timeout=300)
    out = w / "out"
    if p.returncode != 0:
        pytest.fail(f"guest script failed ({p.returncode}):\n{p.stderr[-4000:]}")
    return out, h.hexdigest(), digests


def rec(out, key):
    f = out / key
    assert f.exists(), f"the guest recorded no {key}: {(out / 'steps.err').read_text() if (out / 'steps.err').exists() else ''}"
    return f.read_text()


def test_remote_device_reads_like_export_of_local_copies(guest, golden_manifest):
    out, local_sha, digests = guest
    assert rec(out, "create_rc") == "0" and rec(out, "result") == "success"
    assert local_sha == golden_manifest["merged"]["sha256"]
    assert rec(out, "sha") == local_sha
    assert rec(out, "cached").split() == sorted(digests)


def test_registry_served_ranges_and_audit(guest):
    out, _, digests = guest
    lines = (out / "audit.log").read_text().splitlines()
    fetched = {ln.split("download[pathname=", 1)[1].split("]", 1)[0].rsplit("/", 1)[1]
               for ln in lines if "|download[pathname=" in ln}
    assert fetched == set(digests)


def test_missing_blob_fails_enable_with_reason(guest):
    out, _, _ = guest
    assert rec(out, "missing_rc") != "0"
    assert rec(out, "missing.result").startswith("failed:failed to open remote file ")
    assert rec(out, "missing.result").endswith("No such file or directory")
    assert rec(out, "stop_rc") == "0"


def test_exporter_of_the_real_daemon_matches_its_audit(guest):
    """overlaybd-tcmu with exporterConfig, two workers, the real kernel: a scrape parsed with
    prometheus_client equals the audit log's sums; overlaybd-logstat reads the same files."""
    from prometheus_client.parser import text_string_to_metric_families

    from overlaybd.tools import logstat
    out, _, digests = guest
    smp = {(s.name, tuple(sorted(s.labels.items()))): s.value
           for fam in text_string_to_metric_families(rec(out, "metrics")) for s in fam.samples}
    sizes = [int(ln.split("[size=")[1].split("]")[0]) for ln in (out / "audit.log").read_text().splitlines()
             if "|download[pathname=" in ln]
    assert smp[("OverlayBD_Count", (("node", "download"), ("type", "")))] == sum(sizes) > 0
    assert sum(v for (n, lb), v in smp.items() if n == "overlaybd_layer_registry_reads_total") == len(sizes)
    assert [v for (n, _), v in smp.items() if n == "OverlayBD_Alive"] == [1]
    j = json.loads(rec(out, "metrics.json"))
    assert sorted(row["layer"] for row in j["layers"]) == sorted(digests)
    assert [p["worker"] for p in j["processes"]] == ["", "0", "1"]
    assert all(p["rss_bytes"] > 0 for p in j["processes"])
    a = logstat.build_parser().parse_args(["--json", str(out / "daemon.log"), str(out / "audit.log")])
    s = logstat.collect(a)
    assert s["audit"]["download"]["count"] == len(sizes) and s["audit"]["download"]["bytes"] == sum(sizes)
    [dev] = s["devices"].values()
    assert sorted(b.rsplit("/", 1)[1] for b in dev["blobs"]) == sorted(digests)
