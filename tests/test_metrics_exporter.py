"""The Prometheus exporter over a real registry-backed run of the daemon with two workers
(tests/metrics_fixtures.py): a scrape parsed with prometheus_client's text parser, totals
against the audit log, upstream's metric names, background download, restarts, processes."""

import collections

import pytest
from metrics_fixtures import *  # noqa: F401,F403 -- fixtures
from metrics_fixtures import audit_records
from prometheus_client.parser import text_string_to_metric_families
from registry_fixtures import *  # noqa: F401,F403 -- fixtures

pytestmark = pytest.mark.registry


def samples(text):
    """{(sample name, frozenset(labels)): value} of a scrape."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def total(smp, name, **labels):
    want = set(labels.items())
    return sum(v for (n, lb), v in smp.items() if n == name and want <= lb)


def audit_sums(path):
    sums = collections.defaultdict(lambda: [0, 0, 0])      # event -> count, bytes, max latency
    for event, f in audit_records(path):
        s = sums[event]
        s[0] += 1
        s[1] += int(f.get("size", 0))
        s[2] = max(s[2], int(f.get("latency", 0)))
    return sums


def close(a, b):
    return abs(a - b) <= 0.01 * max(a, b)


def test_scrape_totals_equal_the_audit_log(served_run):
    run = served_run
    assert run.content_type.startswith("text/plain; version=0.0.4")
    smp = samples(run.text)
    audit = audit_sums(run.audit)
    assert len(list(run.audit.parent.glob("audit.log.*"))) >= 2      # a rotated set was read
    dl, bk = audit["download"], audit["bk_download"]
    assert dl[0] > 0 and bk[0] > 0
    # upstream's download meter: every registry read (refills and background download)
    assert close(total(smp, "OverlayBD_Count", node="download"), dl[1] + bk[1])
    for event, (count, nbytes, _) in (("download", dl), ("bk_download", bk)):
        assert close(total(smp, "overlaybd_layer_registry_bytes_total", event=event), nbytes)
        assert close(total(smp, "overlaybd_layer_registry_reads_total", event=event), count)
        assert close(total(smp, "overlaybd_registry_read_duration_seconds_count", event=event), count)
    # one window covered every read: its max latency is the largest audited one
    assert total(smp, "OverlayBD_MaxLatency", node="download") == max(dl[2], bk[2])
    assert total(smp, "OverlayBD_QPS", node="download") > 0
    # the cache layer: refills are what the download lines fetched for it
    assert close(total(smp, "overlaybd_layer_refill_bytes_total"), dl[1])
    pread = total(smp, "OverlayBD_Count", node="pread")
    assert pread == total(smp, "overlaybd_layer_read_bytes_total") > 0
    assert 0 < total(smp, "overlaybd_layer_cache_hit_bytes_total") < pread
    assert total(smp, "OverlayBD_Read_Throughtput", node="pread") > 0


def test_every_process_counted_into_its_own_slab(served_run):
    supervisor, w0, w1 = served_run.slabs
    assert supervisor > 0 and w0 > 0 and w1 > 0


def test_upstream_names_and_labels(served_run):
    smp = samples(served_run.text)
    names = {n for n, _ in smp}
    for n in ("OverlayBD_Alive", "OverlayBD_Read_Throughtput", "OverlayBD_QPS",
              "OverlayBD_MaxLatency", "OverlayBD_Count"):
        assert n in names
    [(_, alive)] = [(lb, v) for (n, lb), v in smp.items() if n == "OverlayBD_Alive"]
    assert alive == 1
    for n in ("OverlayBD_Read_Throughtput", "OverlayBD_QPS", "OverlayBD_MaxLatency"):
        assert {dict(lb)["node"] for (m, lb) in smp if m == n} == {"pread", "download"}
        assert all(set(dict(lb)) == {"node", "type", "mode"} for (m, lb) in smp if m == n)
    assert served_run.other_status == 404


def test_per_layer_background_download_and_processes(served_run):
    run = served_run
    j = run.json
    digests = {lo["digest"]: lo["size"] for lo in run.lowers}
    assert {row["layer"] for row in j["layers"]} == set(digests)
    for row in j["layers"]:
        assert row["config"] == run.config
        bk = row["background_download"]
        assert bk["size"] == digests[row["layer"]] == bk["done_bytes"] and bk["completed"] == 1
        assert row["registry"]["download"]["bytes"] > 0
    assert j["devices"] == [{"device": "obd0", "config": run.config, "uio": 0, "dev_id": "9"}]
    procs = {(p["process"], p["worker"]): p for p in j["processes"]}
    assert set(procs) == {("supervisor", ""), ("worker", "0"), ("worker", "1")}
    assert [procs[("worker", w)]["pid"] for w in "01"] == run.worker_pids
    assert procs[("worker", "1")]["restarts"] == 1 and procs[("worker", "0")]["restarts"] == 0
    assert all(p["rss_bytes"] > 0 and p["fds"] > 0 and p["threads"] > 0 for p in procs.values())
    smp = samples(run.text)
    assert total(smp, "overlaybd_worker_restarts_total", worker="1") == 1
    assert total(smp, "overlaybd_registry_errors_total") == 0
    assert total(smp, "overlaybd_inflight_commands") == 0
