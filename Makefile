# overlaybd in Python.  `make demo` and `make test` work on a fresh Debian 12 machine as root.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: help deps venv install install-service deb test unit lint conf bench demo stress soak clean smp-kernel

help:
	@echo "make install  - create $(VENV) and install overlaybd and its tools into it"
	@echo "make install-service - install under /opt/overlaybd, /etc/overlaybd and the systemd unit"
	@echo "                       (ROOT=DIR: everything under DIR instead, for a trial)"
	@echo "make deb      - build dist/overlaybd_<version>_<arch>.deb (a bundled venv of Debian's python3;"
	@echo "               DEB_VERSION=V, DEB_OUT=DIR, DEB_WHEELS=DIR offline); apt install ./dist/overlaybd_*.deb"
	@echo "make deps     - install system packages the tests need (apt, UML kernel, registry)"
	@echo "make test     - deps + install, then run every test (unit, registry, real kernel)"
	@echo "make unit     - only the tests that need neither the kernel nor the registry"
	@echo "make bench    - benchmarks, printed as ratios against baselines from the same run"
	@echo "make demo     - install the service under .cache/demo, serve the golden image through"
	@echo "               its overlaybd-tcmu in a real kernel"
	@echo "make stress   - full-stack stress (~3 min): real kernel, registry, faults; report in .cache/stress"
	@echo "make soak     - the same, 15 minutes"
	@echo "make lint     - ruff"
	@echo "make conf     - write conf/overlaybd.json from the settings table (overlaybd/image/settings.py)"
	@echo "make smp-kernel - build and cache the SMP UML kernel (once, 10-20 min) for"
	@echo "               python3 -m bench tcmu_bench --ncpus 2 (benchmarks only; make test keeps 6.1)"

deps:
	bash scripts/install-deps.sh

$(PY):
	bash scripts/make-venv.sh $(PYTHON) $(VENV)

venv: $(PY)

install: $(PY)
	$(PY) -m pip install -q -e '.[test]'

install-service:
	bash scripts/install-service.sh $(if $(ROOT),--root $(ROOT))

deb:
	bash scripts/build-deb.sh --out $(or $(DEB_OUT),dist) $(if $(DEB_VERSION),--version $(DEB_VERSION)) \
	    $(if $(DEB_WHEELS),--wheels $(DEB_WHEELS))

test: deps install
	$(PY) -m pytest -q -ra $(PYTEST_ARGS) tests

unit: install
	$(PY) -m pytest -q -ra -m "not vm and not registry" $(PYTEST_ARGS) tests

lint: install
	$(PY) -m ruff check overlaybd tests bench stress

conf: install
	$(PY) -c 'from overlaybd.image.settings import shipped_config; print(shipped_config(), end="")' \
	    > conf/overlaybd.json

bench: deps install
	$(PY) -m bench $(BENCH_ARGS)

smp-kernel:
	bash scripts/uml/build-smp-uml.sh

stress: deps install
	$(PY) -m stress.fullstack run --profile stress --out .cache/stress

soak: deps install
	$(PY) -m stress.fullstack run --profile soak --out .cache/soak

demo: deps
	bash scripts/demo.sh

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis .cache
