# The two commands of the README: `make demo` and `make test`.
# Everything is installed into .venv from the package registry; nothing is assumed on the machine
# beyond python3 (3.11+), gcc and the Python headers (pyradiomics-bhklab builds from source).
# .venv gets the dev extra: both roles, the simulation engine (Ray), the test oracles and `build`. A site
# or a coordinator installs only its own extra (docs/site-guide.md) or runs the image (`make images`).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fedradval-installed

# No phone-home from Flower or MLflow, in anything make starts.
export FLWR_TELEMETRY_ENABLED := 0
export FLWR_DISABLE_UPDATE_CHECK := 1
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION := 1
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true

.PHONY: test demo venv images clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# pytest exits 5 when no test ran: make treats it as a failure, so an empty run never passes silently.
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# A whole study on this machine: SuperLink + one SuperNode per site on loopback, results in work/demo.
# Options: make demo DEMO_ARGS='--sites 4 --cases-per-site 60 --rounds 20 --seed 20261123 --work work/demo'
demo: $(STAMP)
	$(VENV)/bin/coordinator demo $(DEMO_ARGS)

# The site and coordinator container images (docs/containers.md); BUILD_ARGS e.g. '--local-base' without a registry.
images:
	deploy/build-images.sh $(BUILD_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
