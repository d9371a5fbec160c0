# The two set-up commands of the README: `make demo` and `make test`. Each creates .venv when it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.pathotune-installed
# The torch build that runs here (a CUDA build that also runs on CPUs); override for other machines.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
export HF_HUB_OFFLINE ?= 1

.PHONY: demo test install bench clean chromium

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[dev,export,text]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/pathotune demo --out demo-out

test: $(STAMP) chromium
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m pytest -q

# The report tests open pages in headless Chromium (Debian's package): installed here when missing and this is root.
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" -eq 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || \
		echo "chromium is missing: apt-get install -y chromium (as root); the report tests need it" >&2

# hs2p (the peer tiler the benchmark compares `tile` with) lives in a venv of its own: it pulls wandb, opencv
# and pandas, which pathotune does not need. `pip install -e ".[bench]"` puts it in one venv instead.
HS2P_VENV ?= .venv-hs2p
HS2P_STAMP := $(HS2P_VENV)/.installed

$(HS2P_STAMP):
	test -x $(HS2P_VENV)/bin/python || python3 -m venv $(HS2P_VENV)
	$(HS2P_VENV)/bin/python -m pip install --quiet "hs2p[openslide,tifffile]==6.1.0"
	touch $(HS2P_STAMP)

bench: $(STAMP) $(HS2P_STAMP)
	PATHOTUNE_HS2P_PYTHON=$(HS2P_VENV)/bin/python $(PY) -m benchmarks

clean:
	rm -rf demo-out .pytest_cache $(HS2P_VENV)
