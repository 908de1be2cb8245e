"""The Prometheus exporter over a real registry-backed run of the daemon with two workers
(tests/helpers/metrics.py): a scrape parsed with prometheus_client's text parser, totals
against the audit log, upstream's metric names, background download, restarts, processes."""

import collections

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.metrics import audit_records

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


@pytest.fixture
def counted(tmp_path):
    """Metrics on in this process, the audit file and the log under tmp_path."""
    from loguru import logger

    from overlaybd import audit, log, metrics
    metrics.enable(1)
    log.setup_logging(str(tmp_path / "overlaybd.log"))        # (removes every sink: first)
    audit.configure(False, "")
    audit.configure(True, str(tmp_path / "audit.log"))
    yield tmp_path
    metrics.disable()
    audit.configure(False, "")
    logger.remove()
    import sys
    logger.add(sys.stderr)


def test_registry_errors_by_kind_are_counted_and_logged(counted, registry_basic):
    from overlaybd import metrics
    from overlaybd.errors import RemoteError
    from overlaybd.registry.blob import RegistryBlob, RegistryContext
    from overlaybd.registry.client import HttpClient
    from overlaybd.registry.creds import CredentialProvider
    url = registry_basic.push(b"z" * 5000, "err/r")
    cred = registry_basic.cred_file(str(counted / "cred.json"))
    ctx = RegistryContext(HttpClient(timeout=2.0),
                          CredentialProvider.from_config(type("C", (), {"mode": "file", "path": cred,
                                                                        "timeout": 1})()))
    with pytest.raises(RemoteError):
        RegistryBlob(url.rsplit("/", 1)[0] + "/sha256:" + "0" * 64, ctx)        # 404
    registry_basic.cred_file(cred, password="wrong")
    with pytest.raises(RemoteError):
        RegistryBlob(url, ctx)                                                  # 401
    with pytest.raises(RemoteError):
        RegistryBlob("http://127.0.0.1:9/v2/x/blobs/sha256:" + "1" * 64, ctx)   # nothing listens
    errors = metrics.totals()[metrics.key(metrics.ERRORS)]
    got = {k: errors[i] for i, k in enumerate(metrics.ERROR_KINDS) if errors[i]}
    assert got["not_found"] == 2 and got["auth"] == 2 and got["connection"] >= 1   # one re-try each
    assert set(got) == {"not_found", "auth", "connection"}
    assert metrics.totals()[metrics.key(metrics.GLOBAL)][metrics.G_GAVE_UP] == 3
    lines = [ln for ln in (counted / "overlaybd.log").read_text().splitlines()
             if "registry request failed:" in ln]
    kinds = [ln.split("kind=")[1].split()[0] for ln in lines]
    assert kinds.count("not_found") == 2 and kinds.count("auth") == 2
    assert len(kinds) == sum(got.values())


def test_eviction_counts_what_the_audit_line_says(counted):
    from overlaybd import metrics
    from overlaybd.cache import eviction
    d = counted / "cache"
    d.mkdir()
    for name in ("a", "b", "c"):
        (d / name).write_bytes(b"x" * 200_000)
    store = eviction.CacheStore(str(d), capacity=300_000, interval=0)
    freed = store.evict_pass()
    g = metrics.totals()[metrics.key(metrics.GLOBAL)]
    [line] = (counted / "audit.log").read_text().splitlines()
    target = int(line.split("[actualEvict=")[1].split("]")[0])
    assert g[metrics.G_EVICT_PASSES] == 1 and g[metrics.G_EVICT_TARGET] == target > 0
    assert g[metrics.G_EVICT_BYTES] == freed >= target
