# Two commands: `make demo` (the main job on the synthetic world) and `make test`.
# Both set up .venv from requirements/constraints.txt and system ffmpeg when missing;
# a stamp file makes a rerun on an up-to-date machine skip the install.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo_out
# Two test processes: many tests mostly wait on subprocesses (ffmpeg, torchrun, a Ray head,
# an S3 server), so on two cores two workers run the suite in ~12 min instead of ~16.
PYTEST_WORKERS ?= 2
PYTEST_ARGS ?=

.PHONY: demo demo-real test setup ffmpeg clean

setup: $(STAMP) ffmpeg

$(STAMP): requirements/constraints.txt setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c requirements/constraints.txt -e '.[ray,s3,test]'
	@touch $(STAMP)

ffmpeg:
	@command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || { \
	  echo "installing system ffmpeg (Debian package)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq ffmpeg >/dev/null; }

test: setup
	$(PY) -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

demo: setup
	$(PY) -m apps.demo --output $(DEMO_OUT)

demo-real: setup
	@test -n "$(VIDEOS)" || { echo "error: say which videos: make demo-real VIDEOS=DIR" >&2; exit 2; }
	$(PY) -m apps.demo_real --videos "$(VIDEOS)" --output $(DEMO_OUT)/real

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
